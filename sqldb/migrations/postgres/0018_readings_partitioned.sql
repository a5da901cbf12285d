-- readings becomes a table partitioned by range of ts, one partition per
-- UTC day (readings_pYYYYMMDD), so that the retention drops a whole day at
-- a time instead of deleting (and vacuuming) every row (at 20,000
-- readings/s, 1.7 billion a day). The partition manager
-- (sqldb/partitions.go) creates the days ahead and drops those past the
-- retention.
--
-- The rows already stored stay where they are, without a copy: the old
-- table, renamed readings_legacy, becomes the partition of everything
-- before tomorrow (UTC), and the partition manager deletes its rows in
-- chunks as they pass the retention, then drops it once its range has.
-- Attaching it reads it once, here, to check its rows are in range (a
-- sequential scan under the migration's lock). It is not made the DEFAULT
-- partition, though that would attach with no scan at all: PostgreSQL
-- checks that a new partition's range holds no rows of the default by
-- reading the whole default, under a lock that stops ingest, and with the
-- old rows in the default that would happen at every new day for as long
-- as the retention keeps them. The DEFAULT partition is a new, empty
-- table: it takes the rare reading whose day has no partition (a device
-- whose clock is far off), so ingest never fails for lack of a partition,
-- and stays small. The old table's readings after today (such clocks
-- again) move there first.
--
-- The key and the by-device index are the same as before: the old table's
-- own attach to the parent's (same columns, same order), and every new
-- partition gets its own.
ALTER TABLE readings RENAME TO readings_legacy;
ALTER INDEX readings_pkey RENAME TO readings_legacy_pkey;
ALTER INDEX readings_device_ts RENAME TO readings_legacy_device_ts;
CREATE TABLE readings (
    device_id   BIGINT NOT NULL,
    ts          BIGINT NOT NULL,
    tenant_id   BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    temperature DOUBLE PRECISION,
    humidity    DOUBLE PRECISION,
    pressure    DOUBLE PRECISION,
    voltage     DOUBLE PRECISION,
    current     DOUBLE PRECISION,
    power       DOUBLE PRECISION,
    battery     DOUBLE PRECISION,
    rssi        BIGINT,
    uptime_s    BIGINT,
    error_count BIGINT,
    status      TEXT COLLATE "C",
    firmware    TEXT COLLATE "C",
    extra       TEXT COLLATE "C",
    PRIMARY KEY (ts, device_id)
) PARTITION BY RANGE (ts);
CREATE INDEX readings_device_ts ON readings (device_id, ts);
CREATE TABLE readings_default PARTITION OF readings DEFAULT;
DO $$
DECLARE
    -- The start of tomorrow, UTC, in unix milliseconds.
    tomorrow BIGINT := (extract(epoch FROM date_trunc('day', now() AT TIME ZONE 'UTC')) * 1000)::BIGINT + 86400000;
BEGIN
    INSERT INTO readings_default SELECT * FROM readings_legacy WHERE ts >= tomorrow;
    DELETE FROM readings_legacy WHERE ts >= tomorrow;
    EXECUTE format('ALTER TABLE readings ATTACH PARTITION readings_legacy FOR VALUES FROM (MINVALUE) TO (%s)', tomorrow);
END $$;
