-- Identities: principals and the API keys that authenticate them.
--
-- One dialect for SQLite and PostgreSQL: TEXT and BIGINT only, no backend-specific types.
-- Times are unix seconds. The applied version is recorded in `_sqlx_migrations`; later
-- migrations (conversations, memories, audit rows) get the next numbers.

CREATE TABLE principals (
    name        TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    clearance   TEXT NOT NULL,
    nationality TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('user', 'admin', 'auditor')),
    created_at  BIGINT NOT NULL
);

CREATE INDEX principals_tenant ON principals (tenant);

-- SECURITY: `hash` is HMAC-SHA256 (hex) of the whole key under a key derived from the install's
-- master key; the key itself is never stored.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    principal   TEXT NOT NULL REFERENCES principals (name),
    hash        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE INDEX api_keys_principal ON api_keys (principal);
