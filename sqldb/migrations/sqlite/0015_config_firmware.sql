-- Config profiles (a JSON Schema each) and their immutable versions,
-- firmware metadata, and each device's desired and reported config.
-- Profiles and firmware belong to a tenant, as users do. A profile's
-- latest_version is the counter its versions are numbered by: the next
-- version takes it plus one in the UPDATE that advances it, so two
-- concurrent creates get two numbers. A device's config row goes with the
-- device (ON DELETE CASCADE).
CREATE TABLE config_profiles (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id      BIGINT NOT NULL REFERENCES tenants (id),
    name           TEXT NOT NULL,
    schema         TEXT NOT NULL,
    latest_version BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL
);
CREATE UNIQUE INDEX config_profiles_name ON config_profiles (tenant_id, name);

CREATE TABLE config_versions (
    tenant_id  BIGINT NOT NULL REFERENCES tenants (id),
    profile_id BIGINT NOT NULL REFERENCES config_profiles (id),
    version    BIGINT NOT NULL,
    document   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (profile_id, version)
);

CREATE TABLE firmware (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id  BIGINT NOT NULL REFERENCES tenants (id),
    model      TEXT NOT NULL,
    version    TEXT NOT NULL,
    url        TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    size       BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX firmware_model_version ON firmware (tenant_id, model, version);

CREATE TABLE device_configs (
    device_id        BIGINT PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    tenant_id        BIGINT NOT NULL REFERENCES tenants (id),
    profile_id       BIGINT REFERENCES config_profiles (id),
    desired_version  BIGINT,
    desired_at       BIGINT,
    reported_version BIGINT,
    reported_status  TEXT,
    reported_error   TEXT NOT NULL DEFAULT '',
    reported_at      BIGINT
);
