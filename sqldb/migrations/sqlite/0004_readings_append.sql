-- The history is written in arrival order. Keyed by (device_id, ts), each
-- batch of readings from a thousand devices landed on a thousand different
-- leaf pages, every one rewritten into the WAL at commit (about a page per
-- reading). In arrival order a batch fills a few pages at the end of the
-- table, and only the small (device_id, ts) index entries scatter; that
-- index still keeps one reading per device and time, and serves a device's
-- history in time order. PostgreSQL's heap is in arrival order already.
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
CREATE UNIQUE INDEX readings_device_ts ON readings (device_id, ts);
