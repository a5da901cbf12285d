-- Rollouts and their members. A rollout keeps its spec as the JSON it was
-- created with, and the controller's state in columns: the state, the wave
-- being sent, when that wave's bake began, the gates' last evaluations
-- (JSON), how many members were offline when it started (the reboot
-- budget counts those offline beyond them) and the lease of the process
-- that drives it. Its members are
-- chosen once, at creation, from the target's scope by the store; ord is
-- their order (spread across sites), wave the wave they fall in. A member
-- goes with its device (ON DELETE CASCADE). prev_* is what a rollback gives
-- the device back, read when the member is queued.
CREATE TABLE rollouts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id       BIGINT NOT NULL REFERENCES tenants (id),
    node_id         BIGINT NOT NULL REFERENCES nodes (id),
    path            TEXT NOT NULL,
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL,
    spec            TEXT NOT NULL,
    target_version  TEXT NOT NULL,
    profile_id      BIGINT REFERENCES config_profiles (id),
    firmware_id     BIGINT REFERENCES firmware (id),
    state           TEXT NOT NULL,
    wave            INTEGER NOT NULL DEFAULT 0,
    bake_started_at BIGINT,
    reason          TEXT NOT NULL DEFAULT '',
    members         BIGINT NOT NULL DEFAULT 0,
    offline_base    BIGINT NOT NULL DEFAULT 0,
    gate_evals      TEXT NOT NULL DEFAULT '[]',
    lease_owner     TEXT NOT NULL DEFAULT '',
    lease_until     BIGINT NOT NULL DEFAULT 0,
    start_at        BIGINT,
    created_at      BIGINT NOT NULL,
    started_at      BIGINT,
    finished_at     BIGINT
);
CREATE INDEX rollouts_tenant ON rollouts (tenant_id, id);
CREATE INDEX rollouts_active ON rollouts (state, lease_until);

CREATE TABLE rollout_members (
    rollout_id      BIGINT NOT NULL REFERENCES rollouts (id),
    tenant_id       BIGINT NOT NULL REFERENCES tenants (id),
    device_id       BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    ord             BIGINT NOT NULL,
    wave            INTEGER NOT NULL DEFAULT 0,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    revert_attempts BIGINT NOT NULL DEFAULT 0,
    due_at          BIGINT,
    told_at         BIGINT,
    answered_at     BIGINT,
    error           TEXT NOT NULL DEFAULT '',
    ota_state       TEXT NOT NULL DEFAULT '',
    ota_at          BIGINT,
    prev_profile_id BIGINT,
    prev_version    BIGINT,
    prev_firmware   TEXT,
    prev_firmware_id BIGINT REFERENCES firmware (id),
    PRIMARY KEY (rollout_id, ord)
);
CREATE UNIQUE INDEX rollout_members_device ON rollout_members (rollout_id, device_id);
CREATE INDEX rollout_members_state ON rollout_members (rollout_id, state, ord);
CREATE INDEX rollout_members_by_device ON rollout_members (tenant_id, device_id);
