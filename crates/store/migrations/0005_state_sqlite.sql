-- Encryption at rest and the OpenAI-compatible stored state (responses, conversations and their
-- items). SQLite spelling: binary columns are BLOB (PostgreSQL: BYTEA); otherwise identical.
--
-- `tenant_keys.wrapped` is the tenant's 256-bit data key sealed (AES-256-GCM) under a key
-- derived from the install's master key. Deleting the row destroys the tenant's data
-- (crypto-shredding): every `sealed` column below is AES-256-GCM under that data key, with the
-- table, tenant and row id as associated data so ciphertext cannot be moved between rows.
--
-- Text (message content, instructions, output, metadata) lives only in `sealed` columns. The
-- plain columns are what access control and retention need: tenant, principal, label (the
-- canonical banner; it only rises), times.

CREATE TABLE tenant_keys (
    tenant     TEXT PRIMARY KEY,
    wrapped    BLOB NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE responses (
    id                   TEXT PRIMARY KEY,
    tenant               TEXT NOT NULL,
    principal            TEXT NOT NULL,
    label                TEXT NOT NULL,
    previous_response_id TEXT,
    conversation_id      TEXT,
    sealed               BLOB NOT NULL,
    created_at           BIGINT NOT NULL,
    expires_at           BIGINT
);
CREATE INDEX responses_tenant ON responses (tenant);
CREATE INDEX responses_expires ON responses (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE conversations (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    principal  TEXT NOT NULL,
    label      TEXT NOT NULL,
    next_seq   BIGINT NOT NULL DEFAULT 0,
    sealed     BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT
);
CREATE INDEX conversations_tenant ON conversations (tenant);
CREATE INDEX conversations_expires ON conversations (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE conversation_items (
    id              TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    tenant          TEXT NOT NULL,
    principal       TEXT NOT NULL,
    label           TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    sealed          BLOB NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT,
    UNIQUE (conversation_id, seq)
);
CREATE INDEX conversation_items_tenant ON conversation_items (tenant);
