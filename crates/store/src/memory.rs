//! Long-term memories: one row each in `memories`, their text, metadata and embedding sealed
//! with the tenant's data key (AES-256-GCM, associated data = table, tenant, id and the
//! column), so neither the database nor its WAL ever holds them in the clear.
//!
//! The plain columns are what access control, ordering and retention need: tenant, principal,
//! namespace, label (the canonical banner), time and the id of a superseded memory. Search
//! structures are not stored: the gateway rebuilds its in-memory index at start from
//! [`Store::memories_page`].
//!
//! Every write that changes a memory (add, embedding, supersession, delete, retention purge,
//! tenant shred) appends one row per memory to the change feed `memory_changes` in the same
//! transaction (ids only, never content): gateway replicas sharing the database poll it
//! ([`Store::memory_changes_after`]) and apply each change to their own index.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::StoreError;
use crate::crypt::{TenantCipher, row_aad};
use crate::store::Store;

/// Most rows one [`Store::memories_page`] call returns.
pub const MEMORY_PAGE: i64 = 512;

/// A memory as stored (decrypted).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredMemory {
    /// Its id, unique in the table.
    pub id: String,
    /// The owning tenant.
    pub tenant: String,
    /// The principal that wrote it.
    pub principal: String,
    /// A namespace shared within the tenant.
    pub namespace: Option<String>,
    /// The canonical banner of its label.
    pub label: String,
    /// When it was written, in Unix milliseconds.
    pub created_at: i64,
    /// The memory it replaces.
    pub supersedes: Option<String>,
    /// The memory that replaced it (set later, by [`Store::supersede_memory`]).
    pub superseded_by: Option<String>,
    /// The text.
    pub content: String,
    /// Its metadata, JSON text exactly as given.
    pub metadata: Option<String>,
    /// Its embedding, once computed.
    pub embedding: Option<Vec<f32>>,
}

/// One page of memories for rebuilding the index.
#[derive(Debug, Default)]
pub struct MemoryPage {
    /// The readable memories, ordered by tenant then id.
    pub memories: Vec<StoredMemory>,
    /// Ids of rows that failed authentication (altered, or sealed under another key).
    pub unreadable: Vec<(String, String)>,
    /// Where the next page starts (`None`: this was the last).
    pub next: Option<(String, String)>,
}

/// What a change-feed row says happened to a memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemoryChangeKind {
    /// The memory was added.
    Put,
    /// The memory was deleted (by the API, retention or a tenant shred).
    Delete,
    /// The memory was marked superseded by another.
    Supersede,
    /// The memory's embedding was set.
    Embed,
}

impl MemoryChangeKind {
    /// The value in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryChangeKind::Put => "put",
            MemoryChangeKind::Delete => "delete",
            MemoryChangeKind::Supersede => "supersede",
            MemoryChangeKind::Embed => "embed",
        }
    }

    fn from_column(s: &str) -> Option<MemoryChangeKind> {
        Some(match s {
            "put" => MemoryChangeKind::Put,
            "delete" => MemoryChangeKind::Delete,
            "supersede" => MemoryChangeKind::Supersede,
            "embed" => MemoryChangeKind::Embed,
            _ => return None,
        })
    }
}

/// One row of the memory change feed: which memory changed, how, and when (no content).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryChange {
    /// Its position in the feed: increasing, but with gaps, and on PostgreSQL not committed in
    /// order (a reader may see seq 7 before seq 6).
    pub seq: i64,
    /// The memory's tenant.
    pub tenant: String,
    /// The memory's id.
    pub memory_id: String,
    /// What happened.
    pub kind: MemoryChangeKind,
    /// When, in Unix milliseconds (the writer's clock).
    pub changed_at: i64,
}

/// Most rows one [`Store::memory_changes_after`] call returns.
pub const MEMORY_CHANGE_PAGE: i64 = 1000;

const COLUMNS: &str = "id, tenant, principal, namespace, label, created_at, supersedes, \
                       superseded_by, content_sealed, embedding_sealed, metadata_sealed";

impl Store {
    /// Stores a memory, sealing its content, metadata and embedding with the tenant's key.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for an empty id, tenant or principal, [`StoreError::Conflict`]
    /// when the id exists, [`StoreError::Database`] or a key error otherwise.
    pub async fn add_memory(&self, m: &StoredMemory) -> Result<(), StoreError> {
        if m.id.is_empty() || m.tenant.is_empty() || m.principal.is_empty() {
            return Err(StoreError::Invalid(
                "a memory needs an id, a tenant and a principal".to_owned(),
            ));
        }
        let cipher = self.tenant_cipher(&m.tenant).await?;
        let content = cipher.seal(&aad(&m.tenant, &m.id, "content"), m.content.as_bytes());
        let metadata = m
            .metadata
            .as_ref()
            .map(|md| cipher.seal(&aad(&m.tenant, &m.id, "metadata"), md.as_bytes()));
        let embedding = m.embedding.as_ref().map(|v| seal_vector(&cipher, m, v));
        let action = "adding a memory";
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(StoreError::database(action))?;
        let inserted = sqlx::query(
            "INSERT INTO memories (id, tenant, principal, namespace, label, created_at, \
             supersedes, superseded_by, content_sealed, embedding_sealed, metadata_sealed) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&m.id)
        .bind(&m.tenant)
        .bind(&m.principal)
        .bind(m.namespace.as_deref())
        .bind(&m.label)
        .bind(m.created_at)
        .bind(m.supersedes.as_deref())
        .bind(m.superseded_by.as_deref())
        .bind(content)
        .bind(embedding)
        .bind(metadata)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(
                    "a memory with that id already exists".to_owned(),
                ));
            }
            Err(e) => return Err(StoreError::database(action)(e)),
        }
        record_change(&mut tx, &m.tenant, &m.id, MemoryChangeKind::Put)
            .await
            .map_err(StoreError::database(action))?;
        tx.commit().await.map_err(StoreError::database(action))
    }

    /// Sets the embedding of memory `id` of `tenant`; `false` when there is no such memory
    /// (it was deleted meanwhile).
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] or a key error.
    pub async fn set_memory_embedding(
        &self,
        tenant: &str,
        id: &str,
        embedding: &[f32],
    ) -> Result<bool, StoreError> {
        let cipher = self.tenant_cipher(tenant).await?;
        let sealed = cipher.seal(&aad(tenant, id, "embedding"), &vector_bytes(embedding));
        let query =
            sqlx::query("UPDATE memories SET embedding_sealed = $1 WHERE id = $2 AND tenant = $3")
                .bind(sealed)
                .bind(id)
                .bind(tenant);
        self.change_row(
            "storing a memory's embedding",
            query,
            tenant,
            id,
            MemoryChangeKind::Embed,
        )
        .await
    }

    /// Marks memory `id` of `tenant` as replaced by memory `by` (an update of the same fact);
    /// `false` when there is no such memory. The row stays: it is history, readable by id.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`].
    pub async fn supersede_memory(
        &self,
        tenant: &str,
        id: &str,
        by: &str,
    ) -> Result<bool, StoreError> {
        let query =
            sqlx::query("UPDATE memories SET superseded_by = $1 WHERE id = $2 AND tenant = $3")
                .bind(by)
                .bind(id)
                .bind(tenant);
        self.change_row(
            "marking a memory superseded",
            query,
            tenant,
            id,
            MemoryChangeKind::Supersede,
        )
        .await
    }

    /// Memory `id` of `tenant`, decrypted; `None` when the tenant has no such memory. Access
    /// by label and principal is the caller's decision.
    ///
    /// # Errors
    ///
    /// [`StoreError::Crypto`] when the row does not authenticate, [`StoreError::Database`].
    pub async fn memory(&self, tenant: &str, id: &str) -> Result<Option<StoredMemory>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM memories WHERE id = $1 AND tenant = $2"
        ))
        .bind(id)
        .bind(tenant)
        .fetch_optional(self.pool())
        .await
        .map_err(StoreError::database("reading a memory"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let cipher = self.tenant_cipher(tenant).await?;
        open_row(&cipher, &row).map(Some)
    }

    /// Deletes memory `id` of `tenant`; `false` when there was none.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`].
    pub async fn delete_memory(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let query = sqlx::query("DELETE FROM memories WHERE id = $1 AND tenant = $2")
            .bind(id)
            .bind(tenant);
        self.change_row(
            "deleting a memory",
            query,
            tenant,
            id,
            MemoryChangeKind::Delete,
        )
        .await
    }

    /// Runs `query`, which changes at most row `id` of `tenant`, and — when it changed it —
    /// appends the change to the feed, in one transaction; whether a row changed.
    async fn change_row<'q>(
        &self,
        action: &'static str,
        query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
        tenant: &str,
        id: &str,
        kind: MemoryChangeKind,
    ) -> Result<bool, StoreError> {
        let run = async {
            let mut tx = self.pool().begin().await?;
            let changed = query.execute(&mut *tx).await?.rows_affected() > 0;
            if changed {
                record_change(&mut tx, tenant, id, kind).await?;
            }
            tx.commit().await?;
            Ok(changed)
        };
        run.await.map_err(StoreError::database(action))
    }

    /// Deletes, for the retention task, every memory written at or before the cutoff that
    /// `cutoff` gives for its tenant (Unix milliseconds; `None`: that tenant's memories are
    /// kept until deleted). Returns the tenant and id of each memory it deleted, for the
    /// caller's index.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`].
    pub async fn purge_memories(
        &self,
        cutoff: impl Fn(&str) -> Option<i64>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let action = "purging expired memories";
        let tenants = sqlx::query("SELECT DISTINCT tenant FROM memories")
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::database(action))?;
        let mut purged = Vec::new();
        for row in &tenants {
            let tenant: String = row
                .try_get("tenant")
                .map_err(StoreError::database(action))?;
            let Some(before) = cutoff(&tenant) else {
                continue;
            };
            let ids = self
                .delete_memories_where(&tenant, Some(before))
                .await
                .map_err(StoreError::database(action))?;
            purged.extend(ids.into_iter().map(|id| (tenant.clone(), id)));
        }
        Ok(purged)
    }

    /// Deletes the memories of `tenant` (only those written at or before `before`, when
    /// given) with a `delete` change row for each, in one transaction; returns their ids.
    pub(crate) async fn delete_memories_where(
        &self,
        tenant: &str,
        before: Option<i64>,
    ) -> Result<Vec<String>, sqlx::Error> {
        let mut tx = self.pool().begin().await?;
        // The ids come from the DELETE itself, so a row a concurrent writer adds between two
        // statements is either deleted and recorded, or neither.
        let rows = match before {
            Some(before) => {
                sqlx::query(
                    "DELETE FROM memories WHERE tenant = $1 AND created_at <= $2 RETURNING id",
                )
                .bind(tenant)
                .bind(before)
                .fetch_all(&mut *tx)
                .await?
            }
            None => {
                sqlx::query("DELETE FROM memories WHERE tenant = $1 RETURNING id")
                    .bind(tenant)
                    .fetch_all(&mut *tx)
                    .await?
            }
        };
        let mut ids = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            record_change(&mut tx, tenant, &id, MemoryChangeKind::Delete).await?;
            ids.push(id);
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// The changes after `after` in seq order, at most `limit` (capped at
    /// [`MEMORY_CHANGE_PAGE`]). On PostgreSQL a change with a lower seq may still commit later:
    /// see [`MemoryChange::seq`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`], also for a row whose kind this version does not know.
    pub async fn memory_changes_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<MemoryChange>, StoreError> {
        let action = "reading the memory change feed";
        let rows = sqlx::query(
            "SELECT seq, tenant, memory_id, kind, changed_at FROM memory_changes \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit.clamp(1, MEMORY_CHANGE_PAGE))
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database(action))?;
        rows.iter()
            .map(|row| {
                let kind: String = row.try_get("kind")?;
                Ok(MemoryChange {
                    seq: row.try_get("seq")?,
                    tenant: row.try_get("tenant")?,
                    memory_id: row.try_get("memory_id")?,
                    kind: MemoryChangeKind::from_column(&kind).ok_or_else(|| {
                        sqlx::Error::ColumnDecode {
                            index: "kind".to_owned(),
                            source: format!("unknown memory change `{}`", kind.escape_default())
                                .into(),
                        }
                    })?,
                    changed_at: row.try_get("changed_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::database(action))
    }

    /// The highest seq in the change feed (0 when it is empty).
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`].
    pub async fn memory_changes_max_seq(&self) -> Result<i64, StoreError> {
        sqlx::query("SELECT MAX(seq) FROM memory_changes")
            .fetch_one(self.pool())
            .await
            .and_then(|row| row.try_get::<Option<i64>, _>(0))
            .map(Option::unwrap_or_default)
            .map_err(StoreError::database("reading the memory change feed"))
    }

    /// The lowest seq of a change made at or after `since` (Unix milliseconds), if any: where
    /// a reader that must not miss a late-committing change starts.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`].
    pub async fn memory_changes_first_since(&self, since: i64) -> Result<Option<i64>, StoreError> {
        sqlx::query("SELECT MIN(seq) FROM memory_changes WHERE changed_at >= $1")
            .bind(since)
            .fetch_one(self.pool())
            .await
            .and_then(|row| row.try_get::<Option<i64>, _>(0))
            .map_err(StoreError::database("reading the memory change feed"))
    }

    /// Deletes the changes made before `before` (Unix milliseconds); returns how many.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`].
    pub async fn prune_memory_changes(&self, before: i64) -> Result<u64, StoreError> {
        sqlx::query("DELETE FROM memory_changes WHERE changed_at < $1")
            .bind(before)
            .execute(self.pool())
            .await
            .map(|done| done.rows_affected())
            .map_err(StoreError::database("pruning the memory change feed"))
    }

    /// The memories after `after` (tenant, id), at most [`MEMORY_PAGE`], decrypted: what the
    /// gateway rebuilds its index from. Rows that fail authentication are listed apart.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] or a key error.
    pub async fn memories_page(
        &self,
        after: Option<(&str, &str)>,
    ) -> Result<MemoryPage, StoreError> {
        let (tenant, id) = after.unwrap_or(("", ""));
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM memories WHERE tenant > $1 OR (tenant = $1 AND id > $2) \
             ORDER BY tenant, id LIMIT $3"
        ))
        .bind(tenant)
        .bind(id)
        .bind(MEMORY_PAGE)
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database("listing memories"))?;
        let mut page = MemoryPage::default();
        let mut cipher: Option<TenantCipher> = None;
        for row in &rows {
            let tenant: String = row
                .try_get("tenant")
                .map_err(StoreError::database("listing memories"))?;
            let id: String = row
                .try_get("id")
                .map_err(StoreError::database("listing memories"))?;
            if cipher.as_ref().is_none_or(|c| c.tenant() != tenant) {
                cipher = Some(self.tenant_cipher(&tenant).await?);
            }
            let Some(c) = &cipher else { continue };
            match open_row(c, row) {
                Ok(m) => page.memories.push(m),
                Err(StoreError::Crypto(_)) => page.unreadable.push((tenant.clone(), id.clone())),
                Err(e) => return Err(e),
            }
            page.next = Some((tenant, id));
        }
        if rows.len() < usize::try_from(MEMORY_PAGE).unwrap_or(usize::MAX) {
            page.next = None;
        }
        Ok(page)
    }
}

/// Appends one change row in `tx` (the transaction of the write it records).
async fn record_change(
    tx: &mut Transaction<'_, Any>,
    tenant: &str,
    id: &str,
    kind: MemoryChangeKind,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO memory_changes (tenant, memory_id, kind, changed_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(tenant)
    .bind(id)
    .bind(kind.as_str())
    .bind(now_ms())
    .execute(&mut **tx)
    .await
    .map(|_| ())
}

/// Now, in Unix milliseconds.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The associated data of one sealed column of one row.
fn aad(tenant: &str, id: &str, column: &str) -> Vec<u8> {
    let mut a = row_aad("memories", tenant, id);
    a.extend_from_slice(column.as_bytes());
    a
}

fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn seal_vector(cipher: &TenantCipher, m: &StoredMemory, v: &[f32]) -> Vec<u8> {
    cipher.seal(&aad(&m.tenant, &m.id, "embedding"), &vector_bytes(v))
}

fn open_row(cipher: &TenantCipher, row: &AnyRow) -> Result<StoredMemory, StoreError> {
    let get = |e| StoreError::database("reading a memory")(e);
    let id: String = row.try_get("id").map_err(get)?;
    let tenant: String = row.try_get("tenant").map_err(get)?;
    let content: Vec<u8> = row.try_get("content_sealed").map_err(get)?;
    let metadata: Option<Vec<u8>> = row.try_get("metadata_sealed").map_err(get)?;
    let embedding: Option<Vec<u8>> = row.try_get("embedding_sealed").map_err(get)?;
    let text = |bytes: Vec<u8>| {
        String::from_utf8(bytes)
            .map_err(|_| StoreError::Crypto("a sealed memory field is not UTF-8".to_owned()))
    };
    let content = text(cipher.open(&aad(&tenant, &id, "content"), &content)?)?;
    let metadata = match metadata {
        Some(m) => Some(text(cipher.open(&aad(&tenant, &id, "metadata"), &m)?)?),
        None => None,
    };
    let embedding = match embedding {
        Some(e) => {
            let bytes = cipher.open(&aad(&tenant, &id, "embedding"), &e)?;
            if bytes.len() % 4 != 0 {
                return Err(StoreError::Crypto(
                    "a sealed memory embedding has a partial component".to_owned(),
                ));
            }
            Some(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )
        }
        None => None,
    };
    Ok(StoredMemory {
        principal: row.try_get("principal").map_err(get)?,
        namespace: row.try_get("namespace").map_err(get)?,
        label: row.try_get("label").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        supersedes: row.try_get("supersedes").map_err(get)?,
        superseded_by: row.try_get("superseded_by").map_err(get)?,
        id,
        tenant,
        content,
        metadata,
        embedding,
    })
}
