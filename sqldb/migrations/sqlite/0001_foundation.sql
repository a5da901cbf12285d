-- Every id and foreign-key column is 64-bit (BIGINT on PostgreSQL; INTEGER,
-- which is 64-bit, on SQLite). Times are unix milliseconds in BIGINT columns
-- so that both engines compare, sort and index them the same way.

CREATE TABLE tenants (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL,
    root_node_id INTEGER,
    event_seq    INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL
);

CREATE TABLE nodes (
    id         INTEGER PRIMARY KEY,
    tenant_id  INTEGER NOT NULL REFERENCES tenants (id),
    parent_id  INTEGER REFERENCES nodes (id),
    kind       TEXT NOT NULL,
    name       TEXT NOT NULL,
    path       TEXT NOT NULL,
    -- device_count is the number of devices in the subtree, kept in the
    -- transaction of every device change; the query planner of herd reads it.
    device_count BIGINT NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE INDEX nodes_tenant_path ON nodes (tenant_id, path);
CREATE INDEX nodes_parent ON nodes (parent_id);

-- devices is the device record and its latest-state projection in one row:
-- the scoped query reads only this table. path is copied from the node.
CREATE TABLE devices (
    id             INTEGER PRIMARY KEY,
    tenant_id      INTEGER NOT NULL REFERENCES tenants (id),
    node_id        INTEGER NOT NULL REFERENCES nodes (id),
    path             TEXT NOT NULL,
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
    created_at     INTEGER NOT NULL
);
CREATE UNIQUE INDEX devices_key ON devices (key);
-- The scope index: "under node N" is a range on path.
CREATE INDEX devices_tenant_path ON devices (tenant_id, path, id);
-- An index per column that dashboards sort on, with id as the tie-break, so
-- keyset pages over large scopes walk an index instead of sorting the scope.
-- Each ends with path: the scope test is then made on the index entry, and
-- only rows in scope are fetched from the table. Columns that every reading
-- rewrites (humidity, voltage, rssi, ...) have none: each index is paid for
-- by every ingest write, and a sort on them reads the scope instead.
CREATE INDEX devices_tenant_id ON devices (tenant_id, id, path);
CREATE INDEX devices_tenant_name ON devices (tenant_id, name, id, path);
CREATE INDEX devices_tenant_key ON devices (tenant_id, key, id, path);
CREATE INDEX devices_tenant_firmware ON devices (tenant_id, firmware, id, path);
CREATE INDEX devices_tenant_status ON devices (tenant_id, status, id, path);
CREATE INDEX devices_tenant_last_seen ON devices (tenant_id, last_seen, id, path);
CREATE INDEX devices_tenant_temperature ON devices (tenant_id, temperature, id, path);
CREATE INDEX devices_tenant_battery ON devices (tenant_id, battery, id, path);
CREATE INDEX devices_tenant_created_at ON devices (tenant_id, created_at, id, path);
-- Status is the filter every fleet board applies. This index finds the rows
-- of one status under a subtree as one range and counts them without
-- touching the table; the next lets "status = alarm sorted by temperature"
-- walk only the alarm rows.
CREATE INDEX devices_tenant_status_path ON devices (tenant_id, status, path, id);
CREATE INDEX devices_tenant_status_temperature ON devices (tenant_id, status, temperature, id, path);

CREATE TABLE users (
    id         INTEGER PRIMARY KEY,
    tenant_id  INTEGER NOT NULL REFERENCES tenants (id),
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX users_tenant ON users (tenant_id);

-- Tokens are stored as the SHA-256 of the secret; the secret is shown once.
CREATE TABLE tokens (
    id         INTEGER PRIMARY KEY,
    tenant_id  INTEGER NOT NULL REFERENCES tenants (id),
    user_id    INTEGER NOT NULL REFERENCES users (id),
    hash       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX tokens_hash ON tokens (hash);
CREATE INDEX tokens_user ON tokens (user_id);

CREATE TABLE admin_tokens (
    id         INTEGER PRIMARY KEY,
    hash       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX admin_tokens_hash ON admin_tokens (hash);

-- A grant's path is not stored: it is read from its node, so a grant follows
-- its node through moves without being rewritten.
CREATE TABLE grants (
    id         INTEGER PRIMARY KEY,
    tenant_id  INTEGER NOT NULL REFERENCES tenants (id),
    user_id    INTEGER NOT NULL REFERENCES users (id),
    node_id    INTEGER NOT NULL REFERENCES nodes (id),
    role       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX grants_user_node ON grants (user_id, node_id);
CREATE INDEX grants_node ON grants (node_id);

-- events is the transactional outbox: written in the same transaction as
-- the change it describes, with the tenant's gapless sequence number.
CREATE TABLE events (
    id           INTEGER PRIMARY KEY,
    tenant_id    INTEGER NOT NULL REFERENCES tenants (id),
    seq          INTEGER NOT NULL,
    type         TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    subject_id   INTEGER NOT NULL,
    path           TEXT NOT NULL,
    payload      TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE UNIQUE INDEX events_tenant_seq ON events (tenant_id, seq);
