//! The audit log's rows: entries appended without gaps, the signed checkpoints, and the Merkle
//! tree of their leaves kept in memory beside them.
//!
//! Three tables (migration `0003_audit.sql`): `audit_entries (idx, entry)` holds each entry's
//! exact canonical bytes, `audit_head` the number of entries ever appended, and
//! `audit_checkpoints (seq, size, note)` the signed checkpoints in the order they were made.
//!
//! # Sequencing
//!
//! An entry's index is written inside its bytes, so it must be known before they are encoded.
//! [`Store::append_audit`] therefore assigns indices inside the transaction that inserts the
//! entries, after locking the head row: `UPDATE audit_head … RETURNING size` is the first
//! statement, which takes a row lock on PostgreSQL (another replica's append waits for the
//! commit, then reads the new size) and the write lock on SQLite (the busy timeout applies).
//! The entries are encoded with the indices that follow, inserted, and the head moved past
//! them before the commit. So indices are gap-free across every process that shares the
//! database, and the committed entries are always a prefix `[0, size)`.
//!
//! [`Store::write_audit_checkpoint`] signs under the same lock, so checkpoint sizes never
//! decrease in creation order (a lagging replica cannot store a smaller checkpoint after a
//! larger one).
//!
//! [`AuditReader`] reads the same tables without a master key and without migrating, for
//! `enclave audit verify` and auditors' tools.

use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use enclave_audit::{
    AuditEntry, Checkpoint, EntryError, Event, Hash, ProofError, Signer, Timestamp, Tree, hash_leaf,
};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::{Store, StoreError};

/// Rows per `INSERT` statement (two parameters each; SQLite allows 32,766 per statement).
const ROWS_PER_INSERT: usize = 500;

/// Rows read per query when catching the tree up or verifying.
pub const READ_PAGE: u64 = 10_000;

/// An event to append, with the time it happened; the store gives it its index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAuditEntry {
    /// When the request ended or the action took effect.
    pub time: Timestamp,
    /// What happened.
    pub event: Event,
}

impl NewAuditEntry {
    /// An entry for `event` stamped with the current time.
    pub fn now(event: Event) -> NewAuditEntry {
        NewAuditEntry {
            time: now_timestamp(),
            event,
        }
    }
}

/// An entry that was appended: its index and its Merkle leaf hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The entry's index in the log.
    pub index: u64,
    /// The leaf hash of its bytes.
    pub leaf: Hash,
}

/// The result of one [`Store::append_audit`] call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendBatch {
    /// The index of the first appended entry (the log's size before the call).
    pub first: u64,
    /// One result per entry given, in order. The appended ones have consecutive indices from
    /// `first`; an entry that could not be encoded (longer than the entry limit) was skipped
    /// and took no index.
    pub results: Vec<Result<Appended, EntryError>>,
}

/// One stored entry: its row index and its exact bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    /// The row's `idx`.
    pub index: u64,
    /// The `entry` column: the entry's canonical bytes.
    pub entry: String,
}

/// One stored checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Its place in creation order, from 1.
    pub seq: u64,
    /// The log size it signs.
    pub size: u64,
    /// The signed note (C2SP `tlog-checkpoint` inside a `signed-note`).
    pub note: String,
    /// When it was made (unix seconds).
    pub created_at: i64,
}

/// The Merkle tree over the log's leaves, held in memory and shared between the writer and the
/// readers that serve proofs.
///
/// It only ever grows by runs of leaves that start at or below its length
/// ([`LeafTree::extend`]), so it is always the tree of a prefix of the log.
#[derive(Debug, Default)]
pub struct LeafTree {
    tree: Mutex<Tree>,
}

/// The audit tables read without the rest of the store: no master key, no migration, and a
/// read-only connection for SQLite.
#[derive(Clone, Debug)]
pub struct AuditReader {
    pool: AnyPool,
}

// === impl Store ===

impl Store {
    /// Appends `entries` to the audit log in one transaction, with consecutive indices after
    /// the last entry of any writer sharing the database (see the module documentation). The
    /// entries are durable when this returns `Ok`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the transaction fails; then nothing was appended.
    pub async fn append_audit(
        &self,
        entries: Vec<NewAuditEntry>,
    ) -> Result<AppendBatch, StoreError> {
        let action = "appending to the audit log";
        let db = StoreError::database(action);
        let mut tx = self.pool().begin().await.map_err(db)?;
        let first = lock_head(&mut tx, action).await?;
        let Encoded {
            rows,
            results,
            next,
        } = encode_entries(first, entries)?;
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut sql = String::with_capacity(48 + chunk.len() * 16);
            sql.push_str("INSERT INTO audit_entries (idx, entry) VALUES ");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("(${}, ${})", 2 * i + 1, 2 * i + 2));
            }
            let mut query = sqlx::query(&sql);
            for (idx, text) in chunk {
                query = query.bind(*idx).bind(text.as_str());
            }
            query
                .execute(&mut *tx)
                .await
                .map_err(StoreError::database(action))?;
        }
        if !rows.is_empty() {
            sqlx::query("UPDATE audit_head SET size = $1 WHERE id = 0")
                .bind(next)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::database(action))?;
        }
        tx.commit().await.map_err(StoreError::database(action))?;
        Ok(AppendBatch { first, results })
    }

    /// The number of entries ever appended (the head row).
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the query fails.
    pub async fn audit_size(&self) -> Result<u64, StoreError> {
        head(self.pool()).await
    }

    /// Up to `limit` entries from index `from` on, in index order.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the query fails.
    pub async fn audit_rows(&self, from: u64, limit: u64) -> Result<Vec<AuditRow>, StoreError> {
        rows(self.pool(), from, limit).await
    }

    /// The entry at `index`, if there is one.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the query fails.
    pub async fn audit_entry(&self, index: u64) -> Result<Option<String>, StoreError> {
        let mut found = rows(self.pool(), index, 1).await?;
        Ok(found.pop().filter(|r| r.index == index).map(|r| r.entry))
    }

    /// Every stored checkpoint, in creation order.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the query fails.
    pub async fn audit_checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        checkpoints(self.pool()).await
    }

    /// The checkpoint made last, if any.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the query fails.
    pub async fn latest_audit_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        latest_checkpoint(self.pool()).await
    }

    /// The latest checkpoint whose size is `size`, if one was stored.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the query fails.
    pub async fn audit_checkpoint_of_size(
        &self,
        size: u64,
    ) -> Result<Option<StoredCheckpoint>, StoreError> {
        let action = "reading an audit checkpoint";
        sqlx::query(
            "SELECT seq, size, note, created_at FROM audit_checkpoints WHERE size = $1 \
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(to_i64(size)?)
        .fetch_optional(self.pool())
        .await
        .map_err(StoreError::database(action))?
        .map(|row| checkpoint_from_row(&row, action))
        .transpose()
    }

    /// Reads the entries `tree` does not hold yet (all of them on the first call) and adds
    /// their leaves; the tree's new length.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when a query fails; [`StoreError::AuditLog`] when a row is
    /// missing below the last one (the log has a gap).
    pub async fn sync_audit_tree(&self, tree: &LeafTree) -> Result<u64, StoreError> {
        loop {
            let from = tree.len();
            let page = rows(self.pool(), from, READ_PAGE).await?;
            let got = page.len() as u64;
            let leaves = leaves_of(&page, from)?;
            tree.extend(from, &leaves);
            if got < READ_PAGE {
                return Ok(tree.len());
            }
        }
    }

    /// Makes a checkpoint of the whole log, signed by `signers` under `origin`, unless the last
    /// stored checkpoint already has this size. Runs under the head lock (see the module
    /// documentation): the size is fixed, `tree` is brought up to it from the rows, and the
    /// checkpoint is stored as the next in creation order.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the transaction fails; [`StoreError::AuditLog`] when the
    /// rows have a gap or the checkpoint cannot be made (a bad origin).
    pub async fn write_audit_checkpoint(
        &self,
        tree: &LeafTree,
        origin: &str,
        signers: &[&Signer],
    ) -> Result<Option<StoredCheckpoint>, StoreError> {
        let action = "writing an audit checkpoint";
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(StoreError::database(action))?;
        let size = lock_head(&mut tx, action).await?;
        let latest = sqlx::query(
            "SELECT seq, size, note, created_at FROM audit_checkpoints ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::database(action))?
        .map(|row| checkpoint_from_row(&row, action))
        .transpose()?;
        if latest.as_ref().is_some_and(|c| c.size == size) {
            tx.rollback().await.map_err(StoreError::database(action))?;
            return Ok(None);
        }
        while tree.len() < size {
            let from = tree.len();
            let want = (size - from).min(READ_PAGE);
            let page = rows(&mut *tx, from, want).await?;
            if page.is_empty() {
                return Err(StoreError::AuditLog(format!(
                    "the audit head says {size} entries but entry {from} is missing: run \
                     `enclave audit verify`"
                )));
            }
            let leaves = leaves_of(&page, from)?;
            tree.extend(from, &leaves);
        }
        let root = tree.root_at(size).map_err(audit_problem)?;
        let note = Checkpoint::new(origin, size, root)
            .and_then(|c| c.sign(signers))
            .map_err(audit_problem)?;
        let seq = latest.map_or(1, |c| c.seq + 1);
        let created_at = unix_seconds();
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq, size, note, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(to_i64(seq)?)
        .bind(to_i64(size)?)
        .bind(note.as_str())
        .bind(created_at)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::database(action))?;
        tx.commit().await.map_err(StoreError::database(action))?;
        Ok(Some(StoredCheckpoint {
            seq,
            size,
            note,
            created_at,
        }))
    }
}

// === impl LeafTree ===

impl LeafTree {
    /// An empty tree.
    pub fn new() -> LeafTree {
        LeafTree::default()
    }

    /// The number of leaves held.
    pub fn len(&self) -> u64 {
        self.lock().len()
    }

    /// Whether it holds no leaf.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds the leaves of the run that starts at index `start`, skipping those it already
    /// holds. `false` (and nothing added) when the run starts beyond its length: the leaves in
    /// between must be read first.
    pub fn extend(&self, start: u64, leaves: &[Hash]) -> bool {
        let mut tree = self.lock();
        let len = tree.len();
        if start > len {
            return false;
        }
        let skip = usize::try_from(len - start).unwrap_or(usize::MAX);
        for leaf in leaves.iter().skip(skip) {
            tree.push(*leaf);
        }
        true
    }

    /// The root of the first `size` leaves.
    ///
    /// # Errors
    ///
    /// [`ProofError::SizeBeyondTree`] when it holds fewer leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        self.lock().root_at(size)
    }

    /// Runs `f` on the tree (to compute proofs), under its lock.
    pub fn with<R>(&self, f: impl FnOnce(&Tree) -> R) -> R {
        f(&self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tree> {
        // A panic while holding the lock cannot leave a half-pushed leaf (`Tree::push` keeps its
        // invariant at every step), so a poisoned lock is still a valid tree.
        self.tree.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl AuditReader ===

impl AuditReader {
    /// Connects to `url` (`sqlite://PATH`, opened read-only, or `postgres://…`) without running
    /// migrations.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for an unsupported URL or a missing SQLite file,
    /// [`StoreError::Database`] when the database cannot be reached.
    pub async fn connect(url: &str) -> Result<AuditReader, StoreError> {
        sqlx::any::install_default_drivers();
        let connect_url = if url.starts_with("sqlite:") {
            let rest = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .unwrap_or(url);
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            if !path.contains('%') && !std::path::Path::new(path).is_file() {
                return Err(StoreError::Invalid(format!(
                    "the SQLite database `{path}` does not exist: give the data directory or the \
                     database url of an install"
                )));
            }
            if query.split('&').any(|p| p.starts_with("mode=")) {
                url.to_owned()
            } else if query.is_empty() {
                format!("{url}?mode=ro")
            } else {
                format!("{url}&mode=ro")
            }
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            url.to_owned()
        } else {
            let scheme = url.split_once(':').map_or("", |(s, _)| s);
            return Err(StoreError::Invalid(format!(
                "unsupported database url scheme `{}`: use sqlite://PATH or postgres://USER@HOST/DB",
                scheme.escape_default()
            )));
        };
        // SECURITY: the URL may hold a password; it is never put into an error or log line.
        let options = AnyConnectOptions::from_str(&connect_url)
            .map_err(StoreError::database("reading the database url"))?;
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(StoreError::database("connecting to the database"))?;
        Ok(AuditReader { pool })
    }

    /// The number of entries the head row records.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the query fails (a database without the audit tables).
    pub async fn size(&self) -> Result<u64, StoreError> {
        head(&self.pool).await
    }

    /// Up to `limit` entries from index `from` on, in index order.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the query fails.
    pub async fn rows(&self, from: u64, limit: u64) -> Result<Vec<AuditRow>, StoreError> {
        rows(&self.pool, from, limit).await
    }

    /// Every stored checkpoint, in creation order.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the query fails.
    pub async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        checkpoints(&self.pool).await
    }

    /// Closes the connections.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Entries encoded for insertion with consecutive indices.
pub(crate) struct Encoded {
    /// The `(idx, entry)` rows to insert, in order.
    pub(crate) rows: Vec<(i64, String)>,
    /// One result per entry given; see [`AppendBatch::results`].
    pub(crate) results: Vec<Result<Appended, EntryError>>,
    /// The log's size after the rows.
    pub(crate) next: i64,
}

/// Encodes `entries` with consecutive indices from `first` (an entry longer than the entry
/// limit is skipped and takes no index).
pub(crate) fn encode_entries(
    first: u64,
    entries: Vec<NewAuditEntry>,
) -> Result<Encoded, StoreError> {
    let mut results = Vec::with_capacity(entries.len());
    let mut rows: Vec<(i64, String)> = Vec::with_capacity(entries.len());
    let mut next = first;
    for NewAuditEntry { time, event } in entries {
        let entry = AuditEntry {
            index: next,
            time,
            event,
        };
        let bytes = match entry.encode() {
            Ok(bytes) => bytes,
            Err(e) => {
                results.push(Err(e));
                continue;
            }
        };
        let leaf = hash_leaf(&bytes);
        let text = String::from_utf8(bytes)
            .map_err(|_| StoreError::AuditLog("an encoded audit entry is not UTF-8".to_owned()))?;
        rows.push((to_i64(next)?, text));
        results.push(Ok(Appended { index: next, leaf }));
        next += 1;
    }
    Ok(Encoded {
        rows,
        results,
        next: to_i64(next)?,
    })
}

// === queries ===

/// Locks the head row for the rest of the transaction and returns the log's size.
async fn lock_head(tx: &mut Transaction<'_, Any>, action: &'static str) -> Result<u64, StoreError> {
    // SECURITY: this must be the transaction's first statement. On SQLite a write as the first
    // statement takes the database's write lock (waiting under the busy timeout) instead of
    // starting a read snapshot that could not be upgraded; on PostgreSQL it takes the row lock
    // that serializes appenders on every replica.
    let size: i64 = sqlx::query("UPDATE audit_head SET size = size WHERE id = 0 RETURNING size")
        .fetch_one(&mut **tx)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(StoreError::database(action))?;
    from_i64(size)
}

async fn head<'e, E>(db: E) -> Result<u64, StoreError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let size: i64 = sqlx::query("SELECT size FROM audit_head WHERE id = 0")
        .fetch_one(db)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(StoreError::database("reading the audit log's size"))?;
    from_i64(size)
}

async fn rows<'e, E>(db: E, from: u64, limit: u64) -> Result<Vec<AuditRow>, StoreError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let action = "reading audit entries";
    let rows =
        sqlx::query("SELECT idx, entry FROM audit_entries WHERE idx >= $1 ORDER BY idx LIMIT $2")
            .bind(to_i64(from)?)
            .bind(to_i64(limit)?)
            .fetch_all(db)
            .await
            .map_err(StoreError::database(action))?;
    rows.iter()
        .map(|row| {
            let index: i64 = row.try_get("idx").map_err(StoreError::database(action))?;
            let entry: String = row.try_get("entry").map_err(StoreError::database(action))?;
            Ok(AuditRow {
                index: from_i64(index)?,
                entry,
            })
        })
        .collect()
}

async fn checkpoints<'e, E>(db: E) -> Result<Vec<StoredCheckpoint>, StoreError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let action = "reading audit checkpoints";
    sqlx::query("SELECT seq, size, note, created_at FROM audit_checkpoints ORDER BY seq")
        .fetch_all(db)
        .await
        .map_err(StoreError::database(action))?
        .iter()
        .map(|row| checkpoint_from_row(row, action))
        .collect()
}

async fn latest_checkpoint<'e, E>(db: E) -> Result<Option<StoredCheckpoint>, StoreError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let action = "reading the latest audit checkpoint";
    sqlx::query(
        "SELECT seq, size, note, created_at FROM audit_checkpoints ORDER BY seq DESC LIMIT 1",
    )
    .fetch_optional(db)
    .await
    .map_err(StoreError::database(action))?
    .map(|row| checkpoint_from_row(&row, action))
    .transpose()
}

fn checkpoint_from_row(
    row: &sqlx::any::AnyRow,
    action: &'static str,
) -> Result<StoredCheckpoint, StoreError> {
    let read = || -> Result<(i64, i64, String, i64), sqlx::Error> {
        Ok((
            row.try_get("seq")?,
            row.try_get("size")?,
            row.try_get("note")?,
            row.try_get("created_at")?,
        ))
    };
    let (seq, size, note, created_at) = read().map_err(StoreError::database(action))?;
    Ok(StoredCheckpoint {
        seq: from_i64(seq)?,
        size: from_i64(size)?,
        note,
        created_at,
    })
}

/// The leaf hashes of a page of rows that must start at `from` and have no gap.
fn leaves_of(page: &[AuditRow], from: u64) -> Result<Vec<Hash>, StoreError> {
    let mut leaves = Vec::with_capacity(page.len());
    for (expected, row) in (from..).zip(page) {
        if row.index != expected {
            return Err(StoreError::AuditLog(format!(
                "audit entry {expected} is missing (the next row is {}): run `enclave audit verify`",
                row.index
            )));
        }
        leaves.push(hash_leaf(row.entry.as_bytes()));
    }
    Ok(leaves)
}

fn to_i64(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::AuditLog(format!("index {n} is out of range")))
}

fn from_i64(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| {
        StoreError::AuditLog(format!("negative index or size {n} in the audit tables"))
    })
}

fn audit_problem(e: impl std::fmt::Display) -> StoreError {
    StoreError::AuditLog(e.to_string())
}

/// Now, in unix seconds.
fn unix_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Now, as an entry's time (the epoch if the clock is before it; the last representable
/// instant if after).
pub fn now_timestamp() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Timestamp::from_unix_millis(millis).unwrap_or_else(|_| latest_timestamp())
}

#[expect(
    clippy::expect_used,
    reason = "9999-12-31T23:59:59.999Z is the latest instant a Timestamp holds (unit test)"
)]
fn latest_timestamp() -> Timestamp {
    Timestamp::from_unix_millis(253_402_300_799_999).expect("the last instant of 9999")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_timestamp_is_representable() {
        assert_eq!(latest_timestamp().unix_millis(), 253_402_300_799_999);
        assert!(now_timestamp().unix_millis() > 1_700_000_000_000);
    }

    #[test]
    fn a_run_extends_the_tree_only_from_its_end() {
        let tree = LeafTree::new();
        let leaves: Vec<Hash> = (0u8..6).map(|i| hash_leaf(&[i])).collect();
        assert!(!tree.extend(1, &leaves[1..3]));
        assert!(tree.extend(0, &leaves[0..2]));
        assert!(tree.extend(1, &leaves[1..4]));
        assert!(tree.extend(2, &leaves[2..3]));
        assert_eq!(tree.len(), 4);
        assert!(tree.extend(4, &leaves[4..6]));
        assert_eq!(
            tree.root_at(6).unwrap(),
            Tree::from_leaves(leaves.iter().copied()).root()
        );
    }
}
