-- outbox_cursors says how far each tenant's events have reached the event
-- bus, and which relay holds the tenant. A relay publishes a tenant's
-- events in sequence order and then moves published_seq, so a cursor per
-- tenant is the mark: no row of events is rewritten. A relay holds a tenant
-- by a lease (owner, until in unix ms): one relay per tenant at a time keeps
-- the tenant's order, and a relay that dies loses its tenants when the lease
-- runs out.
CREATE TABLE outbox_cursors (
    tenant_id     INTEGER PRIMARY KEY REFERENCES tenants (id),
    published_seq BIGINT NOT NULL DEFAULT 0,
    pruned_seq    BIGINT NOT NULL DEFAULT 0, -- events up to here were deleted past the retention
    lease_owner   TEXT NOT NULL DEFAULT '',
    lease_until   BIGINT NOT NULL DEFAULT 0
);
INSERT INTO outbox_cursors (tenant_id) SELECT id FROM tenants;

-- processed_events is the idempotent consumers' memory: a consumer inserts
-- (consumer, event_id) in the transaction of its effect, and an event whose
-- row is there already is a duplicate. Rows live longer than the stream
-- keeps events, so a replay of the whole stream finds them all.
CREATE TABLE processed_events (
    consumer     TEXT NOT NULL,
    event_id     BIGINT NOT NULL,
    processed_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX processed_events_at ON processed_events (processed_at);
