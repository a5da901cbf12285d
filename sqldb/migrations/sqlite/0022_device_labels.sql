-- A device's labels (issue 15 part 4): string keys to string values, one
-- row a label. The primary key reads one device's labels (a page's in one
-- IN list) and one device's value of a key (the label filters and sort
-- test a device so); the (tenant_id, key, value, device_id) index finds the
-- devices with a label: a range on (key, value), or on key. Labels go with
-- their device (ON DELETE CASCADE).
CREATE TABLE device_labels (
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    device_id BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (device_id, key)
);
CREATE INDEX device_labels_tenant_key_value ON device_labels (tenant_id, key, value, device_id);
