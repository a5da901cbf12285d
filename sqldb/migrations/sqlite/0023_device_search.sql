-- Search over device metadata (issue 15 part 5). Matching is on case-folded
-- text, folded by herd (herd.FoldText, Unicode case folding) when a row is
-- written, so that both stores answer alike whatever their collation: the
-- folded copies live beside the rows they fold and a match is a plain LIKE
-- on them. Rows written before this migration are folded by the Go step
-- that runs with it (sqldb/search_backfill.go).
--
-- nodes.name_fold is a node's folded name: q matches the devices under a
-- node whose name holds a word.
ALTER TABLE nodes ADD COLUMN name_fold TEXT NOT NULL DEFAULT '';
-- device_labels.value_fold is the folded value, NULL when folding leaves
-- the value as it is (most label values are lowercase already).
ALTER TABLE device_labels ADD COLUMN value_fold TEXT;
-- device_search holds a device's folded name, key, model and firmware, and
-- its folded label values in key order joined by newlines: a row a device,
-- written when these change, never by a reading that does not change the
-- firmware. It goes with its device (ON DELETE CASCADE).
CREATE TABLE device_search (
    device_id INTEGER PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    name      TEXT NOT NULL,
    key       TEXT NOT NULL,
    model     TEXT NOT NULL,
    firmware  TEXT NOT NULL,
    labels    TEXT NOT NULL
);
-- The trigram index over it: FTS5's trigram tokenizer finds the rows whose
-- text holds a phrase of three characters or more. It indexes the folded
-- text as it is (case_sensitive 1: the folding is herd's). External
-- content: the text is kept once, in device_search. The triggers keep the
-- index in step with its updates and deletes; the rows of new devices the
-- store writes itself, one statement a batch (Tx.insertSearch): FTS5
-- flushes its pending terms to a new segment at every statement's
-- savepoint, so a trigger on the chunked inserts of a batch of 1,000
-- devices made fifteen segments and the merges after them, which cost
-- more than the rest of the devices' rows together. detail = none keeps no
-- positions and no columns, a quarter of a labelled device's cost to
-- create: a text is then asked as the AND of its trigrams, in any column
-- (Tx.searchCandidates), which finds every row holding it and a few more,
-- and the page tests each exactly.
CREATE VIRTUAL TABLE device_search_fts USING fts5 (
    name, key, model, firmware, labels, tenant_id UNINDEXED,
    content = 'device_search', content_rowid = 'device_id',
    tokenize = 'trigram case_sensitive 1', detail = none
);
CREATE TRIGGER device_search_ad AFTER DELETE ON device_search BEGIN
    INSERT INTO device_search_fts (device_search_fts, rowid, name, key, model, firmware, labels, tenant_id)
    VALUES ('delete', old.device_id, old.name, old.key, old.model, old.firmware, old.labels, old.tenant_id);
END;
CREATE TRIGGER device_search_au AFTER UPDATE ON device_search BEGIN
    INSERT INTO device_search_fts (device_search_fts, rowid, name, key, model, firmware, labels, tenant_id)
    VALUES ('delete', old.device_id, old.name, old.key, old.model, old.firmware, old.labels, old.tenant_id);
    INSERT INTO device_search_fts (rowid, name, key, model, firmware, labels, tenant_id)
    VALUES (new.device_id, new.name, new.key, new.model, new.firmware, new.labels, new.tenant_id);
END;
