-- Principals may have the `metrics` role: they read the operator surfaces (`/metrics`) and
-- nothing else. SQLite cannot change a CHECK constraint in place, and inside the migration's
-- transaction `PRAGMA foreign_keys = OFF` does nothing, so both tables are rebuilt in an order
-- that never leaves a key without its principal: the new key table refers to the new principal
-- table, the old key table goes before the old principal table, and renaming the new principal
-- table rewrites the new key table's reference to the final name.

CREATE TABLE principals_next (
    name        TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    clearance   TEXT NOT NULL,
    nationality TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('user', 'admin', 'auditor', 'metrics')),
    created_at  BIGINT NOT NULL
);
INSERT INTO principals_next (name, tenant, clearance, nationality, role, created_at)
    SELECT name, tenant, clearance, nationality, role, created_at FROM principals;

CREATE TABLE api_keys_next (
    id          TEXT PRIMARY KEY,
    principal   TEXT NOT NULL REFERENCES principals_next (name),
    hash        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    format      TEXT NOT NULL DEFAULT 'legacy' CHECK (format IN ('legacy', 'tagged'))
);
INSERT INTO api_keys_next (id, principal, hash, created_at, revoked_at, format)
    SELECT id, principal, hash, created_at, revoked_at, format FROM api_keys;

DROP TABLE api_keys;
DROP TABLE principals;
ALTER TABLE principals_next RENAME TO principals;
ALTER TABLE api_keys_next RENAME TO api_keys;

CREATE INDEX principals_tenant ON principals (tenant);
CREATE INDEX api_keys_principal ON api_keys (principal);
CREATE INDEX api_keys_unrevoked_legacy ON api_keys (id)
    WHERE format = 'legacy' AND revoked_at IS NULL;
