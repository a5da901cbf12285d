-- A device's status is now only the health it reported (ok, warn, alarm,
-- or empty for none yet); whether it is connected is online. Disconnects
-- used to write 'offline' over the reported status, which is lost: those
-- rows become empty, as if the device had reported nothing. The change
-- takes a new rev, so that a state cache of a process still running reads
-- it. (The column's DEFAULT 'offline' stays: SQLite cannot change a
-- default without rebuilding the table, and every insert names status.)
UPDATE counters SET value = value + 1 WHERE name = 'device_rev';
UPDATE devices SET status = '', rev = (SELECT value FROM counters WHERE name = 'device_rev') WHERE status = 'offline';
