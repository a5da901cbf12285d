-- Commands sent to devices. device_id has no foreign key: a deleted
-- device's commands stay, as its history does. (token_id, idempotency_key)
-- is unique, so a retried create finds the first command even when the
-- process died before it could answer.
CREATE TABLE commands (
    id              INTEGER PRIMARY KEY,
    tenant_id       BIGINT NOT NULL REFERENCES tenants (id),
    device_id       BIGINT NOT NULL,
    device_key      TEXT NOT NULL,
    path            TEXT NOT NULL,
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
CREATE UNIQUE INDEX commands_token_key ON commands (token_id, idempotency_key);
CREATE INDEX commands_device ON commands (device_id, id);
CREATE INDEX commands_open ON commands (expires_at) WHERE status IN ('pending', 'delivered');

-- Idempotency keys of API requests, per tenant, token and route: the
-- request's hash, whether it is still running, and its answer, kept 24 h.
CREATE TABLE idempotency_keys (
    scope           TEXT NOT NULL,
    key             TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    status          TEXT NOT NULL, -- running or done
    response_status INTEGER NOT NULL DEFAULT 0,
    response_body   TEXT NOT NULL DEFAULT '',
    locked_until    BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);
