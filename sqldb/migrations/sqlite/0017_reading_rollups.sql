-- Rollups of the telemetry history, maintained in the transaction that
-- commits the readings: per tenant, resolution (res: the bucket's width in
-- milliseconds, 60000 or 3600000), bucket (its start, unix milliseconds,
-- aligned to UTC), node (the node the device was under when it reported),
-- model and firmware (the device's when it reported), one row whose stats
-- hold, for each numeric field the readings carried, how many (n), their
-- sum, min and max, and a DDSketch of their values, from which quantiles
-- merge across nodes and buckets (sqldb/rollup.go has the encoding). A
-- fleet aggregate reads these, never the readings of every device in its
-- scope. One row for all fields, not one per field: a batch of readings from
-- many sites writes a row per site and bucket, a quarter of the rows for
-- devices that report four fields. The key leads with the tenant and the
-- bucket, so that one aggregate is one range of the key;
-- reading_rollups_res_bucket serves the retention, which drops old buckets
-- of all tenants.
CREATE TABLE reading_rollups (
    tenant_id BIGINT NOT NULL,
    res       BIGINT NOT NULL,
    bucket    BIGINT NOT NULL,
    node_id   BIGINT NOT NULL,
    model     TEXT NOT NULL,
    firmware  TEXT NOT NULL,
    stats     BLOB NOT NULL,
    PRIMARY KEY (tenant_id, res, bucket, node_id, model, firmware)
) WITHOUT ROWID;
CREATE INDEX reading_rollups_res_bucket ON reading_rollups (res, bucket);

-- One device's history is a range of its readings in time order: the
-- history's key is by time (so a commit's readings land on a few pages), and
-- this index is by device. It costs each reading one more index entry, on
-- the page of its device (bench/README.md, "history").
CREATE INDEX readings_device_ts ON readings (device_id, ts);
