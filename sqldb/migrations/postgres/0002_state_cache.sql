-- rev orders the changes to device rows for the in-memory state cache (see
-- statecache): every statement that writes a device row sets it, and a
-- cache catches up by reading the rows whose rev is past what it has seen.
-- On PostgreSQL it is the writing transaction's 64-bit id
-- (pg_current_xact_id). Transactions commit out of id order, so a cache
-- reads from the oldest transaction still running when it last looked
-- (pg_snapshot_xmin), never from the newest id it saw.
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
