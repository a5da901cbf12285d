-- The history is written in time order. Keyed by (device_id, ts), each
-- commit of readings from a thousand devices landed on a thousand different
-- leaf pages, every one rewritten into the WAL at commit (about a page per
-- reading, and more as the history grew). Now rows go in arrival order and
-- the unique key is (ts, device_id): a commit's readings, from many devices
-- at about the same time, fill a few pages at the end of each. The pair is
-- still unique, so a reading sent again is stored once. (A device's history
-- over a long span is then a range of time filtered by device; when herd
-- serves such reads, readings older than a few minutes should move in bulk
-- into a table ordered by device, where they are written densely once.)
CREATE TABLE readings_new (
    id          INTEGER PRIMARY KEY,
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
    status      TEXT,
    firmware    TEXT,
    extra       TEXT
);
INSERT INTO readings_new (device_id, ts, tenant_id, received_at, temperature, humidity, pressure, voltage, current, power, battery, rssi, uptime_s, error_count, status, firmware, extra)
SELECT device_id, ts, tenant_id, received_at, temperature, humidity, pressure, voltage, current, power, battery, rssi, uptime_s, error_count, status, firmware, extra
FROM readings ORDER BY received_at, device_id, ts;
DROP TABLE readings;
ALTER TABLE readings_new RENAME TO readings;
CREATE UNIQUE INDEX readings_ts_device ON readings (ts, device_id);
