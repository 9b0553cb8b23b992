//! The audit writer's own SQLite connection: appends on the writer's thread, with no other
//! thread in between.
//!
//! sqlx runs every SQLite connection on a worker thread of its own, so an append through the
//! pool is handed to that thread and the caller is woken with the result. With one request at
//! a time every request waits for its own commit, and each thread woken costs tens of
//! microseconds of CPU on a virtual machine: at concurrency 1 the pool's hops were most of the
//! audit log's cost per request (docs/BENCHMARKS.md). The group-commit writer of a SQLite
//! store therefore opens one more connection to the same file, [`SqliteAppender`], and
//! appends through it synchronously on its own thread.
//!
//! The transaction is the one [`Store::append_audit`](crate::Store::append_audit) runs: the
//! write lock first (`BEGIN IMMEDIATE`, waiting under the busy timeout), the head read under
//! it, the entries numbered from the head, inserted, the head moved past them, one commit with
//! `synchronous = FULL`. So this connection, the pool's and other processes sharing the file
//! (`enclave` admin commands) sequence entries alike: gap-free, never a duplicate index.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::audit::{AppendBatch, NewAuditEntry, encode_entries};
use crate::{StoreError, store::SQLITE_BUSY_TIMEOUT_MS};

/// A connection that appends audit entries to a SQLite store's file, for the one thread that
/// owns it (the group-commit writer).
pub struct SqliteAppender {
    conn: Connection,
}

impl SqliteAppender {
    /// Opens the existing database file at `path` (made and migrated by
    /// [`Store::open`](crate::Store::open)) for appending, with the store's settings:
    /// `synchronous = FULL` and its busy timeout.
    ///
    /// # Errors
    ///
    /// [`StoreError::AuditLog`] when the file cannot be opened or configured, or its journal
    /// is not WAL (the store sets WAL when it opens a file).
    pub fn open(path: &Path) -> Result<SqliteAppender, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(sqlite("opening"))?;
        conn.busy_timeout(Duration::from_millis(u64::from(SQLITE_BUSY_TIMEOUT_MS)))
            .map_err(sqlite("configuring"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite("configuring"))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .map_err(sqlite("configuring"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::AuditLog(format!(
                "the audit writer's SQLite connection found the `{mode}` journal mode instead of WAL"
            )));
        }
        Ok(SqliteAppender { conn })
    }

    /// Appends `entries` in one transaction after the last stored entry, as
    /// [`Store::append_audit`](crate::Store::append_audit) does; they are durable when this
    /// returns `Ok`.
    ///
    /// # Errors
    ///
    /// [`StoreError::AuditLog`] when the transaction fails (then nothing was appended).
    pub fn append(&mut self, entries: Vec<NewAuditEntry>) -> Result<AppendBatch, StoreError> {
        let fail = sqlite("appending to");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&fail)?;
        // Cached statements: preparing them again for every commit cost more than running them.
        let head: i64 = tx
            .prepare_cached("SELECT size FROM audit_head WHERE id = 0")
            .and_then(|mut select| select.query_row([], |row| row.get(0)))
            .map_err(&fail)?;
        let first = u64::try_from(head)
            .map_err(|_| StoreError::AuditLog(format!("negative size {head} in the audit head")))?;
        let encoded = encode_entries(first, entries)?;
        if !encoded.rows.is_empty() {
            let mut insert = tx
                .prepare_cached("INSERT INTO audit_entries (idx, entry) VALUES (?1, ?2)")
                .map_err(&fail)?;
            for (idx, text) in &encoded.rows {
                insert.execute((idx, text.as_str())).map_err(&fail)?;
            }
            drop(insert);
            tx.prepare_cached("UPDATE audit_head SET size = ?1 WHERE id = 0")
                .and_then(|mut update| update.execute([encoded.next]))
                .map_err(&fail)?;
        }
        tx.commit().map_err(&fail)?;
        Ok(AppendBatch {
            first,
            results: encoded.results,
        })
    }
}

impl std::fmt::Debug for SqliteAppender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteAppender").finish_non_exhaustive()
    }
}

/// Wraps a SQLite error with what was being done to the audit log.
fn sqlite(doing: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::AuditLog(format!("{doing} the audit log's SQLite file: {e}"))
}
