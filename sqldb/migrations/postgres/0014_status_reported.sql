-- A device's status is now only the health it reported (ok, warn, alarm,
-- or empty for none yet); whether it is connected is online. Disconnects
-- used to write 'offline' over the reported status, which is lost: those
-- rows become empty, as if the device had reported nothing. The change
-- takes this transaction's rev (see 0002), so that a state cache of a
-- process still running reads it.
ALTER TABLE devices ALTER COLUMN status SET DEFAULT '';
UPDATE devices SET status = '', rev = CAST(pg_current_xact_id()::text AS BIGINT) WHERE status = 'offline';
