-- Idempotency keys carry their tenant in a column of their own, first in
-- the primary key, and every query of them names it (sqldb/idempotency.go):
-- a key of one tenant cannot be read, replayed or even collided with from
-- another, whatever the scope string says. Super-admins' keys, which belong
-- to no tenant, have tenant 0. Existing rows take the tenant from the
-- scope's first field ("<tenant>/<token>/<route>").
ALTER TABLE idempotency_keys ADD COLUMN tenant_id BIGINT NOT NULL DEFAULT 0;
UPDATE idempotency_keys SET tenant_id = CAST(split_part(scope, '/', 1) AS BIGINT) WHERE scope ~ '^[0-9]+/';
ALTER TABLE idempotency_keys ALTER COLUMN tenant_id DROP DEFAULT;
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (tenant_id, scope, key);
