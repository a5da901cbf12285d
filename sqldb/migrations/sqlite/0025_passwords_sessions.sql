-- People's passwords and sessions (the dashboard's sign-in). A session is
-- a row of tokens (one id sequence with API tokens, so what is keyed by a
-- token id, idempotency keys, rate limits, stream tickets, works for it as
-- it is) marked session, with the time it ends; API tokens have no end.
ALTER TABLE tokens ADD COLUMN session BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE tokens ADD COLUMN expires_at BIGINT;
-- A user's password: the argon2id hash in the PHC string format (package
-- password), and login, the user's name case-folded, by which they sign in:
-- unique in the tenant, so that a name and password pick one user (user
-- names themselves need not be unique). A rename moves the login with it.
CREATE TABLE user_passwords (
    user_id    BIGINT PRIMARY KEY REFERENCES users (id),
    tenant_id  BIGINT NOT NULL REFERENCES tenants (id),
    login      TEXT NOT NULL,
    hash       TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX user_passwords_login ON user_passwords (tenant_id, login);
