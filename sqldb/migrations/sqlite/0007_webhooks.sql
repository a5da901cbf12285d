-- Webhook subscriptions. The secret signs deliveries, so it is kept as it
-- was issued (a hash could not sign); the API shows it only once. The scope
-- is a node: its current path is read when an event is queued, so a moved
-- node takes its subscriptions with it.
CREATE TABLE webhooks (
    id              INTEGER PRIMARY KEY,
    tenant_id       BIGINT NOT NULL REFERENCES tenants (id),
    node_id         BIGINT NOT NULL REFERENCES nodes (id),
    url             TEXT NOT NULL,
    event_types     TEXT NOT NULL, -- JSON array of patterns
    secret          TEXT NOT NULL,
    status          TEXT NOT NULL,
    disabled_reason TEXT NOT NULL DEFAULT '',
    failing_since   BIGINT NOT NULL DEFAULT 0, -- unix ms; 0 while the last attempt succeeded
    created_at      BIGINT NOT NULL,
    deleted         BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX webhooks_tenant ON webhooks (tenant_id, id);

-- One row per (subscription, event): the unique key makes queueing an
-- event twice a no-op. The body is the event row, joined when sent.
CREATE TABLE webhook_deliveries (
    id           INTEGER PRIMARY KEY,
    webhook_id   BIGINT NOT NULL REFERENCES webhooks (id),
    event_id     BIGINT NOT NULL REFERENCES events (id),
    event_type   TEXT NOT NULL,
    status       TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      BIGINT NOT NULL, -- the next attempt; while claimed, when the claim runs out
    claim_owner  TEXT NOT NULL DEFAULT '', -- the dispatcher that claimed it last
    last_status  INTEGER NOT NULL DEFAULT 0,
    last_reason  TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    retry_from   BIGINT NOT NULL, -- the retry window starts here: created_at, or the last redrive
    delivered_at BIGINT
);
CREATE UNIQUE INDEX webhook_deliveries_webhook_event ON webhook_deliveries (webhook_id, event_id);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_webhook_status ON webhook_deliveries (webhook_id, status, id);
CREATE INDEX webhook_deliveries_dead ON webhook_deliveries (id) WHERE status = 'dead';
