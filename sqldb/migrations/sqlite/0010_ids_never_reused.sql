-- Ids are never handed out twice. A rowid table without AUTOINCREMENT
-- gives a new row the largest id plus one, so deleting the row with the
-- largest id freed that id for the next row of any tenant: a new device
-- took the commands of a deleted one, a new token its apps feed and
-- idempotency records. AUTOINCREMENT keeps the largest id ever given in
-- sqlite_sequence and never goes back. A table cannot be altered to it, so
-- every table whose ids leave the process is built again, with its data,
-- indexes and foreign keys, as SQLite's ALTER TABLE page describes. The
-- migration runs with foreign keys off (see migrate in db.go): dropping a
-- table would otherwise cascade to the rows that refer to it. References
-- by name (REFERENCES devices) point at the new table once it is renamed.
--
-- Commands lose their path: they are read with their device's current
-- path, so a device's move takes its commands along (who may read them,
-- and the path of their later events). They gain a foreign key to their
-- device, with ON DELETE CASCADE: a device's commands go with it. Commands
-- left by a device that is gone, or whose id another device has taken
-- since, belonged to nobody any longer and are dropped.

-- The counters start past the largest id the store still remembers, in
-- its own rows or in rows that refer to it: a device deleted before this
-- migration left its id in commands, tombstones, readings and events.
CREATE TEMP TABLE id_floor (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
INSERT INTO id_floor (name, seq) SELECT 'tenants', COALESCE(MAX(id), 0) FROM tenants;
INSERT INTO id_floor (name, seq) SELECT 'nodes', COALESCE(MAX(m), 0) FROM (
    SELECT MAX(id) AS m FROM nodes
    UNION ALL SELECT MAX(subject_id) FROM events WHERE subject_type = 'node');
INSERT INTO id_floor (name, seq) SELECT 'devices', COALESCE(MAX(m), 0) FROM (
    SELECT MAX(id) AS m FROM devices
    UNION ALL SELECT MAX(device_id) FROM commands
    UNION ALL SELECT MAX(device_id) FROM device_tombstones
    UNION ALL SELECT MAX(device_id) FROM readings
    UNION ALL SELECT MAX(subject_id) FROM events WHERE subject_type = 'device');
INSERT INTO id_floor (name, seq) SELECT 'users', COALESCE(MAX(m), 0) FROM (
    SELECT MAX(id) AS m FROM users
    UNION ALL SELECT MAX(subject_id) FROM events WHERE subject_type = 'user');
INSERT INTO id_floor (name, seq) SELECT 'tokens', COALESCE(MAX(m), 0) FROM (
    SELECT MAX(id) AS m FROM tokens
    UNION ALL SELECT MAX(token_id) FROM commands
    UNION ALL SELECT MAX(subject_id) FROM events WHERE subject_type = 'token');
INSERT INTO id_floor (name, seq) SELECT 'admin_tokens', COALESCE(MAX(id), 0) FROM admin_tokens;
INSERT INTO id_floor (name, seq) SELECT 'grants', COALESCE(MAX(m), 0) FROM (
    SELECT MAX(id) AS m FROM grants
    UNION ALL SELECT MAX(subject_id) FROM events WHERE subject_type = 'grant');
INSERT INTO id_floor (name, seq) SELECT 'events', COALESCE(MAX(m), 0) FROM (
    SELECT MAX(id) AS m FROM events
    UNION ALL SELECT MAX(event_id) FROM webhook_deliveries
    UNION ALL SELECT MAX(event_id) FROM processed_events);
INSERT INTO id_floor (name, seq) SELECT 'webhooks', COALESCE(MAX(m), 0) FROM (
    SELECT MAX(id) AS m FROM webhooks
    UNION ALL SELECT MAX(subject_id) FROM events WHERE subject_type = 'webhook');
INSERT INTO id_floor (name, seq) SELECT 'webhook_deliveries', COALESCE(MAX(id), 0) FROM webhook_deliveries;
INSERT INTO id_floor (name, seq) SELECT 'commands', COALESCE(MAX(m), 0) FROM (
    SELECT MAX(id) AS m FROM commands
    UNION ALL SELECT MAX(subject_id) FROM events WHERE subject_type = 'command');
INSERT INTO id_floor (name, seq) SELECT 'readings', COALESCE(MAX(id), 0) FROM readings;

CREATE TABLE tenants_new (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL,
    root_node_id INTEGER,
    event_seq    INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL
);
INSERT INTO tenants_new (id, name, root_node_id, event_seq, created_at)
SELECT id, name, root_node_id, event_seq, created_at FROM tenants;
DROP TABLE tenants;
ALTER TABLE tenants_new RENAME TO tenants;

CREATE TABLE nodes_new (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    INTEGER NOT NULL REFERENCES tenants (id),
    parent_id    INTEGER REFERENCES nodes (id),
    kind         TEXT NOT NULL,
    name         TEXT NOT NULL,
    path         TEXT NOT NULL,
    device_count BIGINT NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL
);
INSERT INTO nodes_new (id, tenant_id, parent_id, kind, name, path, device_count, created_at)
SELECT id, tenant_id, parent_id, kind, name, path, device_count, created_at FROM nodes;
DROP TABLE nodes;
ALTER TABLE nodes_new RENAME TO nodes;
CREATE INDEX nodes_tenant_path ON nodes (tenant_id, path);
CREATE INDEX nodes_parent ON nodes (parent_id);

CREATE TABLE devices_new (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id      INTEGER NOT NULL REFERENCES tenants (id),
    node_id        INTEGER NOT NULL REFERENCES nodes (id),
    path           TEXT NOT NULL,
    key            TEXT NOT NULL,
    name           TEXT NOT NULL,
    model          TEXT NOT NULL DEFAULT '',
    firmware       TEXT NOT NULL DEFAULT '',
    status         TEXT NOT NULL DEFAULT 'offline',
    online         BOOLEAN NOT NULL DEFAULT false,
    last_seen      INTEGER,
    temperature    REAL,
    humidity       REAL,
    pressure       REAL,
    voltage        REAL,
    current        REAL,
    power          REAL,
    battery        REAL,
    rssi           INTEGER,
    uptime_s       INTEGER,
    error_count    INTEGER NOT NULL DEFAULT 0,
    config_version INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    rev            BIGINT NOT NULL DEFAULT 0,
    reading_ts     BIGINT
);
INSERT INTO devices_new (id, tenant_id, node_id, path, key, name, model, firmware, status, online, last_seen,
    temperature, humidity, pressure, voltage, current, power, battery, rssi, uptime_s, error_count, config_version, created_at, rev, reading_ts)
SELECT id, tenant_id, node_id, path, key, name, model, firmware, status, online, last_seen,
    temperature, humidity, pressure, voltage, current, power, battery, rssi, uptime_s, error_count, config_version, created_at, rev, reading_ts
FROM devices;
DROP TABLE devices;
ALTER TABLE devices_new RENAME TO devices;
CREATE UNIQUE INDEX devices_key ON devices (key);
CREATE INDEX devices_tenant_path ON devices (tenant_id, path, id);
CREATE INDEX devices_tenant_id ON devices (tenant_id, id, path);
CREATE INDEX devices_tenant_name ON devices (tenant_id, name, id, path);
CREATE INDEX devices_tenant_key ON devices (tenant_id, key, id, path);
CREATE INDEX devices_tenant_firmware ON devices (tenant_id, firmware, id, path);
CREATE INDEX devices_tenant_status ON devices (tenant_id, status, id, path);
CREATE INDEX devices_tenant_last_seen ON devices (tenant_id, last_seen, id, path);
CREATE INDEX devices_tenant_created_at ON devices (tenant_id, created_at, id, path);
CREATE INDEX devices_tenant_status_path ON devices (tenant_id, status, path, id);
CREATE INDEX devices_tenant_rev ON devices (tenant_id, rev);

CREATE TABLE users_new (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id  INTEGER NOT NULL REFERENCES tenants (id),
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
INSERT INTO users_new (id, tenant_id, name, created_at) SELECT id, tenant_id, name, created_at FROM users;
DROP TABLE users;
ALTER TABLE users_new RENAME TO users;
CREATE INDEX users_tenant ON users (tenant_id);

CREATE TABLE tokens_new (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id  INTEGER NOT NULL REFERENCES tenants (id),
    user_id    INTEGER NOT NULL REFERENCES users (id),
    hash       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
INSERT INTO tokens_new (id, tenant_id, user_id, hash, created_at) SELECT id, tenant_id, user_id, hash, created_at FROM tokens;
DROP TABLE tokens;
ALTER TABLE tokens_new RENAME TO tokens;
CREATE UNIQUE INDEX tokens_hash ON tokens (hash);
CREATE INDEX tokens_user ON tokens (user_id);

CREATE TABLE admin_tokens_new (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    hash       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
INSERT INTO admin_tokens_new (id, hash, created_at) SELECT id, hash, created_at FROM admin_tokens;
DROP TABLE admin_tokens;
ALTER TABLE admin_tokens_new RENAME TO admin_tokens;
CREATE UNIQUE INDEX admin_tokens_hash ON admin_tokens (hash);

CREATE TABLE grants_new (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id  INTEGER NOT NULL REFERENCES tenants (id),
    user_id    INTEGER NOT NULL REFERENCES users (id),
    node_id    INTEGER NOT NULL REFERENCES nodes (id),
    role       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
INSERT INTO grants_new (id, tenant_id, user_id, node_id, role, created_at) SELECT id, tenant_id, user_id, node_id, role, created_at FROM grants;
DROP TABLE grants;
ALTER TABLE grants_new RENAME TO grants;
CREATE UNIQUE INDEX grants_user_node ON grants (user_id, node_id);
CREATE INDEX grants_node ON grants (node_id);

CREATE TABLE events_new (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    INTEGER NOT NULL REFERENCES tenants (id),
    seq          INTEGER NOT NULL,
    type         TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    subject_id   INTEGER NOT NULL,
    path         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
INSERT INTO events_new (id, tenant_id, seq, type, subject_type, subject_id, path, payload, created_at)
SELECT id, tenant_id, seq, type, subject_type, subject_id, path, payload, created_at FROM events;
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
CREATE UNIQUE INDEX events_tenant_seq ON events (tenant_id, seq);

CREATE TABLE webhooks_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id       BIGINT NOT NULL REFERENCES tenants (id),
    node_id         BIGINT NOT NULL REFERENCES nodes (id),
    url             TEXT NOT NULL,
    event_types     TEXT NOT NULL,
    secret          TEXT NOT NULL,
    status          TEXT NOT NULL,
    disabled_reason TEXT NOT NULL DEFAULT '',
    failing_since   BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    deleted         BOOLEAN NOT NULL DEFAULT false
);
INSERT INTO webhooks_new (id, tenant_id, node_id, url, event_types, secret, status, disabled_reason, failing_since, created_at, deleted)
SELECT id, tenant_id, node_id, url, event_types, secret, status, disabled_reason, failing_since, created_at, deleted FROM webhooks;
DROP TABLE webhooks;
ALTER TABLE webhooks_new RENAME TO webhooks;
CREATE INDEX webhooks_tenant ON webhooks (tenant_id, id);

CREATE TABLE webhook_deliveries_new (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id   BIGINT NOT NULL REFERENCES webhooks (id),
    event_id     BIGINT NOT NULL REFERENCES events (id),
    event_type   TEXT NOT NULL,
    status       TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      BIGINT NOT NULL,
    claim_owner  TEXT NOT NULL DEFAULT '',
    last_status  INTEGER NOT NULL DEFAULT 0,
    last_reason  TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    retry_from   BIGINT NOT NULL,
    delivered_at BIGINT
);
INSERT INTO webhook_deliveries_new (id, webhook_id, event_id, event_type, status, attempts, next_at, claim_owner, last_status, last_reason, created_at, retry_from, delivered_at)
SELECT id, webhook_id, event_id, event_type, status, attempts, next_at, claim_owner, last_status, last_reason, created_at, retry_from, delivered_at FROM webhook_deliveries;
DROP TABLE webhook_deliveries;
ALTER TABLE webhook_deliveries_new RENAME TO webhook_deliveries;
CREATE UNIQUE INDEX webhook_deliveries_webhook_event ON webhook_deliveries (webhook_id, event_id);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_webhook_status ON webhook_deliveries (webhook_id, status, id);
CREATE INDEX webhook_deliveries_dead ON webhook_deliveries (id) WHERE status = 'dead';

CREATE TABLE commands_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id       BIGINT NOT NULL REFERENCES tenants (id),
    device_id       BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    device_key      TEXT NOT NULL,
    name            TEXT NOT NULL,
    args            TEXT NOT NULL,
    ttl_s           BIGINT NOT NULL,
    status          TEXT NOT NULL,
    result          TEXT,
    error           TEXT NOT NULL DEFAULT '',
    token_id        BIGINT NOT NULL,
    idempotency_key TEXT,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    delivered_at    BIGINT,
    completed_at    BIGINT
);
INSERT INTO commands_new (id, tenant_id, device_id, device_key, name, args, ttl_s, status, result, error, token_id, idempotency_key, created_at, expires_at, delivered_at, completed_at)
SELECT c.id, c.tenant_id, c.device_id, c.device_key, c.name, c.args, c.ttl_s, c.status, c.result, c.error, c.token_id, c.idempotency_key, c.created_at, c.expires_at, c.delivered_at, c.completed_at
FROM commands c JOIN devices d ON d.id = c.device_id AND d.tenant_id = c.tenant_id AND d.key = c.device_key;
DROP TABLE commands;
ALTER TABLE commands_new RENAME TO commands;
CREATE UNIQUE INDEX commands_token_key ON commands (token_id, idempotency_key);
CREATE INDEX commands_device ON commands (device_id, id);
CREATE INDEX commands_open ON commands (expires_at) WHERE status IN ('pending', 'delivered');

CREATE TABLE readings_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
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
INSERT INTO readings_new (id, device_id, ts, tenant_id, received_at, temperature, humidity, pressure, voltage, current, power, battery, rssi, uptime_s, error_count, status, firmware, extra)
SELECT id, device_id, ts, tenant_id, received_at, temperature, humidity, pressure, voltage, current, power, battery, rssi, uptime_s, error_count, status, firmware, extra FROM readings;
DROP TABLE readings;
ALTER TABLE readings_new RENAME TO readings;
CREATE UNIQUE INDEX readings_ts_device ON readings (ts, device_id);

-- Copying the rows set each counter to its table's largest id; the floor
-- raises it past the ids that only other rows remember.
UPDATE sqlite_sequence SET seq = MAX(seq, (SELECT f.seq FROM id_floor f WHERE f.name = sqlite_sequence.name))
WHERE name IN (SELECT name FROM id_floor);
INSERT INTO sqlite_sequence (name, seq)
SELECT f.name, f.seq FROM id_floor f WHERE f.seq > 0 AND NOT EXISTS (SELECT 1 FROM sqlite_sequence s WHERE s.name = f.name);
DROP TABLE id_floor;
