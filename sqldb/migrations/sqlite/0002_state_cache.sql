-- rev orders the changes to device rows for the in-memory state cache (see
-- statecache): every statement that writes a device row sets it, and a
-- cache catches up by reading the rows whose rev is past what it has seen.
-- On SQLite it comes from the counter below, advanced once by each writing
-- transaction; there is one writer, so revs commit in order.
ALTER TABLE devices ADD COLUMN rev BIGINT NOT NULL DEFAULT 0;
CREATE INDEX devices_tenant_rev ON devices (tenant_id, rev);

-- A deleted device leaves no row to read, so its deletion is recorded here,
-- with the rev of the deleting transaction.
CREATE TABLE device_tombstones (
    tenant_id  BIGINT NOT NULL REFERENCES tenants (id),
    device_id  BIGINT NOT NULL,
    rev        BIGINT NOT NULL,
    deleted_at BIGINT NOT NULL
);
CREATE INDEX device_tombstones_tenant_rev ON device_tombstones (tenant_id, rev);

CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('device_rev', 0);
