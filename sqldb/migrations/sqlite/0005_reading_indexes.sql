-- Readings rewrite temperature and battery on every message. Their indexes
-- (and status + temperature) cost every reading a delete and an insert in
-- each, on pages scattered over the whole fleet: a third of SQLite's time
-- per reading at 10,000 devices, and on PostgreSQL three more entries for
-- every row version. The sorts and filters they served are answered by the
-- state cache in large scopes (see sqldb/statecache.go) and by reading the
-- scope in small ones.
DROP INDEX devices_tenant_temperature;
DROP INDEX devices_tenant_battery;
DROP INDEX devices_tenant_status_temperature;
