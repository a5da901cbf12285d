-- Idempotency keys carry their tenant in a column of their own, first in
-- the primary key, and every query of them names it (sqldb/idempotency.go):
-- a key of one tenant cannot be read, replayed or even collided with from
-- another, whatever the scope string says. Super-admins' keys, which belong
-- to no tenant, have tenant 0. Existing rows take the tenant from the
-- scope's first field ("<tenant>/<token>/<route>"). SQLite cannot change a
-- primary key in place: the table is built again.
CREATE TABLE idempotency_keys_new (
    tenant_id       INTEGER NOT NULL,
    scope           TEXT NOT NULL,
    key             TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    status          TEXT NOT NULL, -- running or done
    response_status INTEGER NOT NULL DEFAULT 0,
    response_body   TEXT NOT NULL DEFAULT '',
    locked_until    BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, scope, key)
);
INSERT INTO idempotency_keys_new (tenant_id, scope, key, request_hash, status, response_status, response_body, locked_until, expires_at)
SELECT CAST(substr(scope, 1, instr(scope, '/') - 1) AS INTEGER), scope, key, request_hash, status, response_status, response_body, locked_until, expires_at
FROM idempotency_keys;
DROP TABLE idempotency_keys;
ALTER TABLE idempotency_keys_new RENAME TO idempotency_keys;
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);
