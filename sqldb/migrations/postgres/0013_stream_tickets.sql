-- Single-use tickets that open one WebSocket for a browser, which cannot
-- send an Authorization header (POST /v1/stream/tickets). Only a hash of
-- the ticket is kept. A ticket is bound to the token it was issued to by
-- that token's hash (tokens.hash, or admin_tokens.hash when tenant_id is
-- 0), not by its id: spending it reads the token again by that hash, so a
-- ticket of a revoked or deleted token fails, and no later token that gets
-- the same id can inherit it. Spending a ticket deletes its row; rows of
-- tickets never used are swept by the next issue after they expire.
CREATE TABLE stream_tickets (
    hash       TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    tenant_id  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX stream_tickets_expiry ON stream_tickets (expires_at);
