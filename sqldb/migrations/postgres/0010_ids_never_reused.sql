-- Ids are never handed out twice. PostgreSQL's identity columns never go
-- back, so, unlike SQLite's (see the SQLite migration of the same number),
-- no table needs building again.
--
-- Commands lose their path: they are read with their device's current
-- path, so a device's move takes its commands along (who may read them,
-- and the path of their later events). They gain a foreign key to their
-- device, with ON DELETE CASCADE: a device's commands go with it. Commands
-- left by a device that is gone belonged to nobody any longer and are
-- dropped.
DELETE FROM commands c WHERE NOT EXISTS (
    SELECT 1 FROM devices d WHERE d.id = c.device_id AND d.tenant_id = c.tenant_id AND d.key = c.device_key);
ALTER TABLE commands DROP COLUMN path;
ALTER TABLE commands ADD CONSTRAINT commands_device_id_fkey FOREIGN KEY (device_id) REFERENCES devices (id) ON DELETE CASCADE;
