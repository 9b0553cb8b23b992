-- The tamper-evident audit log: one row per entry, and the signed checkpoints.
--
-- One dialect for SQLite and PostgreSQL: TEXT and BIGINT only.
--
-- `audit_entries.entry` holds the entry's exact canonical bytes (UTF-8 JSON): the Merkle leaf is
-- computed over them, so auditors read this column directly. The entry's index is written
-- inside those bytes as well as in `idx`.
--
-- `audit_head` is one row holding the number of entries ever appended. Every append updates it
-- first, in the transaction that inserts the entries: the update takes the write lock (a row
-- lock on PostgreSQL, the database's write lock on SQLite), so appenders from several replicas
-- are serialized and indices are handed out without gaps. A row removed from `audit_entries`
-- later leaves a gap below the head that `enclave audit verify` reports.
--
-- `audit_checkpoints.seq` counts checkpoints from 1 in the order they were made; a checkpoint
-- is made under the same lock, so sizes never decrease along `seq`.

CREATE TABLE audit_entries (
    idx   BIGINT PRIMARY KEY,
    entry TEXT NOT NULL
);

CREATE TABLE audit_head (
    id   BIGINT PRIMARY KEY CHECK (id = 0),
    size BIGINT NOT NULL CHECK (size >= 0)
);

INSERT INTO audit_head (id, size) VALUES (0, 0);

CREATE TABLE audit_checkpoints (
    seq        BIGINT PRIMARY KEY,
    size       BIGINT NOT NULL,
    note       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
