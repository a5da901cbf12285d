-- Per-device rollups of the telemetry history, for one device's stepped
-- read (GET /v1/devices/{id}/readings?step=): per device and quarter hour
-- (bucket: its start, unix milliseconds, aligned to UTC), for each numeric
-- field its readings carried, how many (n), their sum, min and max and the
-- newest value with its ts (sqldb/device_rollup.go has the encoding). A
-- quarter hour, so that steps from a local midnight of every time zone in
-- use (+05:30, +05:45) are whole buckets. Unlike reading_rollups they are
-- not written by ingest: a background refresh computes each bucket from
-- the readings once it is GraceDeviceRollups old (device_rollup_span says
-- how far it has got), and ingest records in device_rollup_stale the
-- buckets a late reading lands in, which the read takes from the readings
-- until the refresh computes them again. The key leads with the device, so
-- a device's 30 days is one range of 2,880 rows; device_rollups_bucket
-- serves the retention.
CREATE TABLE device_rollups (
    device_id BIGINT NOT NULL,
    bucket    BIGINT NOT NULL,
    tenant_id BIGINT NOT NULL,
    stats     BLOB NOT NULL,
    PRIMARY KEY (device_id, bucket)
) WITHOUT ROWID;
CREATE INDEX device_rollups_bucket ON device_rollups (bucket);

-- The buckets of device_rollups a reading committed after their refresh
-- (or during it) has changed: until the refresh computes them again, a read
-- takes them from the readings. seq counts the marks of the bucket: the
-- refresh, which reads the readings outside its write, takes the mark away
-- only if no reading marked it again meanwhile.
CREATE TABLE device_rollup_stale (
    device_id BIGINT NOT NULL,
    bucket    BIGINT NOT NULL,
    tenant_id BIGINT NOT NULL,
    seq       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, bucket)
) WITHOUT ROWID;
CREATE INDEX device_rollup_stale_bucket ON device_rollup_stale (bucket);

-- [lo, hi): the buckets the refresh has computed for every device. NULL
-- until its first run, which starts both at the newest whole bucket old
-- enough; hi then follows the clock and lo goes back to the oldest reading.
CREATE TABLE device_rollup_span (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    lo BIGINT,
    hi BIGINT
);
INSERT INTO device_rollup_span (id) VALUES (1);
