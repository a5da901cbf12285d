-- device_labels and device_search lose their foreign keys to tenants. Each
-- row's device_id already references devices, whose tenant_id references
-- tenants, and herd writes a row's tenant_id from its device in the same
-- statement; the tenant key checked nothing more, and on PostgreSQL it was a
-- query per row: a device created with three labels ran four of them, about
-- a sixth of its time (bench/README.md, "Creating devices and ingest with
-- the search index").
ALTER TABLE device_labels DROP CONSTRAINT device_labels_tenant_id_fkey;
ALTER TABLE device_search DROP CONSTRAINT device_search_tenant_id_fkey;
