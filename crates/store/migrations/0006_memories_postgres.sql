-- Long-term memories. PostgreSQL spelling: binary columns are BYTEA (SQLite: BLOB); otherwise
-- identical.
--
-- The text, metadata and embedding of a memory live only in the `*_sealed` columns:
-- AES-256-GCM under the tenant's data key (see 0005), with the table, tenant, id and column as
-- associated data. The plain columns are what access control and ordering need. No search
-- structure is stored: the gateway keeps its index in memory and rebuilds it at start.

CREATE TABLE memories (
    id               TEXT PRIMARY KEY,
    tenant           TEXT NOT NULL,
    principal        TEXT NOT NULL,
    namespace        TEXT,
    label            TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    supersedes       TEXT,
    content_sealed   BYTEA NOT NULL,
    embedding_sealed BYTEA,
    metadata_sealed  BYTEA
);
CREATE INDEX memories_tenant ON memories (tenant, id);
