-- A node's children in name order (GET /v1/nodes/{id}/children): the index
-- serves the order and the keyset position, so a page of a node with
-- thousands of children reads its rows and no more.
CREATE INDEX nodes_tenant_parent_name ON nodes (tenant_id, parent_id, name, id);
