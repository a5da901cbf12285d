-- Search over device metadata (issue 15 part 5). Matching is on case-folded
-- text, folded by herd (herd.FoldText, Unicode case folding) when a row is
-- written, so that both stores answer alike whatever their collation or
-- ctype: the folded copies live beside the rows they fold and a match is a
-- plain LIKE on them. Rows written before this migration are folded by the
-- Go step that runs with it (sqldb/search_backfill.go).
--
-- nodes.name_fold is a node's folded name: q matches the devices under a
-- node whose name holds a word.
ALTER TABLE nodes ADD COLUMN name_fold TEXT COLLATE "C" NOT NULL DEFAULT '';
-- device_labels.value_fold is the folded value, NULL when folding leaves
-- the value as it is (most label values are lowercase already).
ALTER TABLE device_labels ADD COLUMN value_fold TEXT COLLATE "C";
-- device_search holds a device's folded name, key, model and firmware, and
-- its folded label values in key order joined by newlines: a row a device,
-- written when these change, never by a reading that does not change the
-- firmware (a separate table, so that the trigram index is not touched by
-- the updates every reading makes to devices). It goes with its device.
CREATE TABLE device_search (
    device_id BIGINT PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    name      TEXT COLLATE "C" NOT NULL,
    key       TEXT COLLATE "C" NOT NULL,
    model     TEXT COLLATE "C" NOT NULL,
    firmware  TEXT COLLATE "C" NOT NULL,
    labels    TEXT COLLATE "C" NOT NULL
);
-- The trigram index: pg_trgm's GIN operator class answers LIKE '%text%'
-- for text of three characters or more, over every field of the row at
-- once (the fields joined by newlines, which no search text holds). The
-- extension is made in a schema of its own, herd_ext, shared by every herd
-- schema of the database, unless the database has it already, wherever it
-- is; pg_trgm is a trusted extension, so the owner of the database may
-- create it without being a superuser.
DO $$
DECLARE
    ext_schema text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE SCHEMA IF NOT EXISTS herd_ext;
        CREATE EXTENSION pg_trgm WITH SCHEMA herd_ext;
    END IF;
    SELECT n.nspname INTO ext_schema FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm';
    EXECUTE format('CREATE INDEX device_search_trgm ON device_search USING gin ((name || ''
'' || key || ''
'' || model || ''
'' || firmware || ''
'' || labels) %I.gin_trgm_ops)', ext_schema);
END
$$;
