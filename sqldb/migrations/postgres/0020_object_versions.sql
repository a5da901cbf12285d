-- Every tenant, node, user and device gets a version: 1 when created, one
-- more on every change of its metadata by an update (PATCH), never by
-- telemetry, connectivity or a move. It is the ETag of the HTTP API and
-- what If-Match compares. devices.rev cannot serve: it is the state
-- cache's change counter, stamped by every write of the row, telemetry
-- included, and on PostgreSQL it is a transaction id, not a count. Rows
-- that exist are at version 1. A constant default adds the column without
-- rewriting the table (PostgreSQL 11 and later; SQLite always).
ALTER TABLE tenants ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE nodes ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE users ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE devices ADD COLUMN version BIGINT NOT NULL DEFAULT 1;

-- A disabled user keeps its tokens and grants, and none of its tokens
-- authenticates until it is enabled again.
ALTER TABLE users ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT false;
