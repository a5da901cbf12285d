-- Password links (herd.PasswordLink): one-time secrets with which a person
-- sets their password without signing in. Only a hash of the secret is
-- kept; using a link deletes its row, and a new link of a user deletes the
-- user's others.
CREATE TABLE password_links (
    hash       TEXT PRIMARY KEY,
    tenant_id  BIGINT NOT NULL REFERENCES tenants (id),
    user_id    BIGINT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX password_links_user ON password_links (tenant_id, user_id);
