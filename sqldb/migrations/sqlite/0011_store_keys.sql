-- Secrets a store keeps for every process that opens it. The first is the
-- key that signs cursors ("cursor"), made by the first process to open the
-- store (sqldb/cursorkey.go): a cursor one process issues, another takes,
-- and an edited one, or one from another store, is refused.
CREATE TABLE store_keys (
    name       TEXT PRIMARY KEY,
    secret     BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
