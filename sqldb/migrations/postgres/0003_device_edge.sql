-- A device authenticates to the MQTT gateway with its key and a token whose
-- SHA-256 is kept here; the token is shown once. One credential per device:
-- issuing a new one replaces the old.
CREATE TABLE device_credentials (
    device_id  BIGINT PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    tenant_id  BIGINT NOT NULL REFERENCES tenants (id),
    hash       TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL
);

-- readings is the telemetry history: one row per reading, the time the
-- device gave it (ts) and the time it arrived. A reading the device sends
-- again (a QoS 1 retry after a lost PUBACK) carries the same ts and is
-- stored once.
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
    PRIMARY KEY (device_id, ts)
);

-- reading_ts is the ts of the reading the projection's values come from: a
-- late reading (a device sending a backlog) goes into the history but does
-- not overwrite newer values.
ALTER TABLE devices ADD COLUMN reading_ts BIGINT;
