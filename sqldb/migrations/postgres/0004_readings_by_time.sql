-- The history's key is (ts, device_id) rather than (device_id, ts): a
-- commit's readings, from many devices at about the same time, then land
-- on a few index pages at the end instead of one page per device, which
-- PostgreSQL would dirty and write to its WAL (a full page after each
-- checkpoint) for every reading. The pair is still unique, so a reading
-- sent again is stored once.
ALTER TABLE readings DROP CONSTRAINT readings_pkey, ADD PRIMARY KEY (ts, device_id);
