-- The memory change feed. PostgreSQL spelling: `seq` is a BIGSERIAL (SQLite: an AUTOINCREMENT
-- rowid); otherwise identical. A sequence value is taken when the row is inserted, not when its
-- transaction commits, so a reader can see seq 7 before seq 6: readers re-read a trailing
-- window (see the gateway's memory sync).
--
-- Several gateway replicas share one database, and each keeps its own in-memory memory index.
-- Every store operation that changes a memory appends one row here per memory, in the same
-- transaction: the replicas poll the feed and apply each change to their index, so a memory
-- added, updated or deleted through one replica is found (or no longer found) on all of them.
-- Ids only: never content (the memory itself stays sealed in `memories`). Rows older than a
-- bound are pruned by the retention task.

CREATE TABLE memory_changes (
    seq        BIGSERIAL PRIMARY KEY,
    tenant     TEXT NOT NULL,
    memory_id  TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('put', 'delete', 'supersede', 'embed')),
    changed_at BIGINT NOT NULL
);
CREATE INDEX memory_changes_changed_at ON memory_changes (changed_at);
