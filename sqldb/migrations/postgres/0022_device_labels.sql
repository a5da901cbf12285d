-- A device's labels (issue 15 part 4): string keys to string values, one
-- row a label. The primary key reads one device's labels (a page's in one
-- IN list); the (tenant_id, key, value, device_id) index serves the label
-- filters: eq and in are a range on (key, value), exists a range on key,
-- and each EXISTS probe of a page walk is one lookup in it. Labels go with
-- their device (ON DELETE CASCADE). On PostgreSQL, key and value compare
-- bytewise (COLLATE "C"), as every text column of herd does.
CREATE TABLE device_labels (
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    device_id BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    key       TEXT COLLATE "C" NOT NULL,
    value     TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (device_id, key)
);
CREATE INDEX device_labels_tenant_key_value ON device_labels (tenant_id, key, value, device_id);
