//! Long-term memory: the `/v1/memories` routes and the service behind them and behind the
//! recall and remember stages.
//!
//! - `POST /v1/memories` `{"content", "metadata"?}` stores a memory of the caller (tenant and
//!   principal), labeled with the request's label (session ⊔ the markings in its content and
//!   metadata), sealed with the tenant's key, and indexes it at once for lexical search; its
//!   embedding follows off the request path.
//! - `POST /v1/memories/search` `{"query", "limit"?, "namespace"?}` returns the caller's
//!   memories (or, with `namespace`, that namespace's memories in the tenant) whose label the
//!   session label dominates, best first.
//! - `GET` / `DELETE /v1/memories/{id}`: the caller's own memory or one in a namespace of its
//!   tenant, if the session label dominates its label.
//!
//! SECURITY: another tenant's id, another principal's unshared memory and a memory above the
//! session label all answer 404 `not_found` with the same message as an id that never
//! existed; search filters before ranking, so what is hidden changes no score and no count.
//!
//! The index ([`enclave_memory::Memories`]) lives in memory only; it is rebuilt from the
//! decrypted store at start, so no plaintext search structure is written to disk.
//!
//! Several replicas may share one database, each with its own index. Every store write that
//! changes a memory appends to the store's change feed (`memory_changes`, ids only); a thread
//! of each service reads the feed every `[memory] sync_interval_ms` and applies each change to
//! its index — put, embed and supersede re-read the row and insert or replace it, delete
//! removes it — so what another replica adds, updates, deletes, purges or shreds is found (or
//! gone) here within an interval or two. Its own changes come back too and change nothing.
//! SECURITY: fail closed. When the feed has not been read for more than
//! [`STALE_AFTER_INTERVALS`] intervals, search, `GET` and `DELETE` answer 503
//! `memory_unavailable` and recall is skipped (recorded on the request), since the index may
//! still hold what another replica deleted.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use enclave_api::json::Json;
use enclave_label::Label;
use enclave_local::embed::Precision;
use enclave_local::weights::ModelsDir;
use enclave_memory::{DIMENSIONS, Hit, Memories, Memory, Params, Query, Viewer};
use enclave_models::local::{EMBED_MODEL, LocalEngine, PendingEmbedding};
use enclave_store::{
    MEMORY_CHANGE_PAGE, MemoryChange, MemoryChangeKind, Store, StoreError, StoredMemory,
};
use http::{Method, StatusCode};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::mpsc;

use crate::config::{MemoryConfig, RetentionConfig};
use crate::ctx::RequestCtx;
use crate::error::ApiError;
use crate::extract::{Extracted, Extractor, Fact};
use crate::stage;

/// Longest memory content accepted, in bytes.
pub const MAX_CONTENT_BYTES: usize = 32 * 1024;

/// Longest serialized metadata accepted, in bytes.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// Longest namespace, in bytes.
const MAX_NAMESPACE_BYTES: usize = 128;

/// The precision of memory's embedding model. A query is embedded on the request path, and a
/// short text's time is mostly the pass over the layers' weights: at f16 they are half the
/// bytes, and a query after a pause took 3.0–3.5 ms instead of 3.7–5.2 ms (`local_bench
/// embed`, `query_idle_f16_ms`, 2026-12-07); the copy holds 46 MB instead of 108 MB, and the
/// vectors are within cosine 0.999999 of f32's. Memory has an engine of its own (never the
/// local backend's, whose `/v1/embeddings` answers stay f32) so that every stored vector comes
/// from one precision, whatever backends a replica configures.
const MEMORY_PRECISION: Precision = Precision::F16;

/// How long recall waits for a query embedding before searching lexically only.
const RECALL_EMBED_WAIT: Duration = Duration::from_millis(250);

/// Sync intervals without a successful read of the change feed after which the index counts
/// as stale: search, `GET` and `DELETE` answer 503 `memory_unavailable`, recall is skipped.
pub const STALE_AFTER_INTERVALS: u32 = 10;

/// How long a change-feed row may become visible after rows with higher seqs (a PostgreSQL
/// sequence value is taken at insert, not at commit): every read re-reads the changes of this
/// trailing window and applies those it has not applied yet.
const LATE_COMMIT: Duration = Duration::from_secs(30);

/// How long the store keeps change-feed rows; a replica that has not read the feed for half
/// of it rebuilds its whole index instead (what it missed may be pruned).
const CHANGE_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// The long-term memory service: the in-memory index and the queue of work done after the
/// request (storing remembered statements, computing embeddings).
pub struct MemoryService {
    index: RwLock<Memories>,
    /// When the service started: the origin of `synced_ms`.
    started: Instant,
    /// Milliseconds after `started` of the last successful read of the change feed (or of
    /// the rebuild).
    synced_ms: AtomicU64,
    /// Counts removals from the index by requests and retention, so a sync that read a row
    /// before such a removal does not put it back (it re-reads instead).
    removals: AtomicU64,
    store: Store,
    config: MemoryConfig,
    jobs: mpsc::Sender<Job>,
    /// The embedding model, loaded on first use (see [`MemoryService::engine_blocking`]).
    engine: OnceLock<Option<Arc<LocalEngine>>>,
    models_dir: ModelsDir,
    rng: SystemRandom,
    /// `[memory] extractor`: the model asked for facts after each remembered turn.
    extractor: Option<Extractor>,
    /// The extractor's own queue (with an extractor only): a slow or hung extractor holds up
    /// fact extraction, never the storing and embedding of statements.
    extractions: Option<mpsc::Sender<Extraction>>,
    /// What the background work did, for `/metrics`.
    stats: MemoryStats,
}

/// Counters of the work done off the request path, rendered at `/metrics`: work that is
/// dropped or fails there is otherwise seen only in the log.
#[derive(Debug, Default)]
struct MemoryStats {
    /// Jobs queued, by kind.
    queued_remember: AtomicU64,
    queued_embed: AtomicU64,
    /// Jobs refused because the queue was full (their work is lost).
    dropped: AtomicU64,
    /// Turns whose fact extraction was skipped because the extractor's queue was full (the
    /// statement itself is kept).
    extractions_dropped: AtomicU64,
    /// Statements stored by the worker, and those the store refused.
    stored: AtomicU64,
    store_errors: AtomicU64,
    /// Embeddings computed and stored, and those that failed.
    embedded: AtomicU64,
    embed_errors: AtomicU64,
    /// Extractor calls by outcome.
    extract_facts: AtomicU64,
    extract_failed: AtomicU64,
    extract_no_backend: AtomicU64,
    /// Facts stored, facts dropped as marked above their turn, memories superseded.
    facts_stored: AtomicU64,
    facts_errors: AtomicU64,
    facts_spilled: AtomicU64,
    superseded: AtomicU64,
    /// Time in extractor calls, in microseconds.
    extract_micros: AtomicU64,
}

impl MemoryStats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for MemoryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryService")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The service's reading of the change feed: what is applied, and from where to re-read.
#[derive(Debug)]
struct SyncState {
    /// Every change with a seq at or below this is applied (or was in the store at rebuild).
    floor: i64,
    /// Seqs above `floor` already applied.
    applied: BTreeSet<i64>,
    /// When each read ran and the highest seq applied by then: `floor` advances to the
    /// highest seq of a read at least [`LATE_COMMIT`] old.
    marks: VecDeque<(Instant, i64)>,
    /// When the feed was last read successfully.
    last_ok: Instant,
}

/// The index rebuilt from the store.
struct Loaded {
    index: Memories,
    /// Memories without a usable embedding: tenant, id, content.
    missing: Vec<(String, String, String)>,
    /// Where to start reading the change feed.
    floor: i64,
    /// The feed's highest seq, read before the rebuild.
    watermark: i64,
}

/// A remembered turn waiting for the extractor: the stored statement and, when known, the
/// answer.
struct Extraction {
    statement: StoredMemory,
    answer: Option<String>,
}

/// Work done off the request path.
enum Job {
    /// Store, index and embed a statement from a chat turn, then hand the turn (the
    /// statement and, when known, the answer) to the extractor's queue.
    Remember {
        statement: StoredMemory,
        answer: Option<String>,
    },
    /// Compute, store and index the embedding of a stored memory.
    Embed {
        tenant: String,
        id: String,
        content: String,
    },
}

/// A query's embedding under way ([`MemoryService::begin_query`]); none when the model is not
/// loaded or its queue is full, and the search is then lexical only.
#[derive(Debug)]
pub struct QueryEmbedding(Option<PendingEmbedding>);

impl QueryEmbedding {
    /// The vector, if the model answers within [`RECALL_EMBED_WAIT`] of this call.
    async fn finish(self) -> Option<Vec<f32>> {
        let job = self.0?.wait();
        match tokio::time::timeout(RECALL_EMBED_WAIT, job).await {
            Ok(Ok((mut v, _))) => v.pop(),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "query embedding failed; searching lexically");
                None
            }
            Err(_) => None,
        }
    }
}

impl MemoryService {
    /// Rebuilds the index from the store and starts the background worker.
    ///
    /// # Errors
    ///
    /// A message when the store cannot be read or the worker cannot start.
    pub async fn start(
        store: Store,
        config: MemoryConfig,
        models_dir: ModelsDir,
        extractor: Option<Extractor>,
    ) -> Result<Arc<MemoryService>, String> {
        let loaded = load(&store).await?;
        let sync = SyncState {
            floor: loaded.floor,
            applied: BTreeSet::new(),
            marks: VecDeque::from([(Instant::now(), loaded.watermark)]),
            last_ok: Instant::now(),
        };
        let missing = loaded.missing;
        let index = loaded.index;
        let (tx, rx) = mpsc::channel(config.queue);
        let (extractions, extraction_rx) = match extractor {
            Some(_) => {
                let (tx, rx) = mpsc::channel(config.queue);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let service = Arc::new(MemoryService {
            index: RwLock::new(index),
            started: Instant::now(),
            synced_ms: AtomicU64::new(0),
            removals: AtomicU64::new(0),
            store,
            config,
            jobs: tx,
            engine: OnceLock::new(),
            models_dir,
            rng: SystemRandom::new(),
            extractor,
            extractions,
            stats: MemoryStats::default(),
        });
        let worker = Arc::downgrade(&service);
        spawn_worker("enclave-memory", move |rt| run_worker(rt, &worker, rx))?;
        if let Some(rx) = extraction_rx {
            let worker = Arc::downgrade(&service);
            spawn_worker("enclave-memory-extract", move |rt| {
                run_extraction_worker(rt, &worker, rx);
            })?;
        }
        let syncer = Arc::downgrade(&service);
        spawn_worker("enclave-memory-sync", move |rt| run_sync(rt, &syncer, sync))?;
        if service.config.embeddings {
            for (tenant, id, content) in missing {
                service.enqueue(Job::Embed {
                    tenant,
                    id,
                    content,
                });
            }
        }
        Ok(service)
    }

    /// The settings.
    pub fn config(&self) -> &MemoryConfig {
        &self.config
    }

    /// How many memories `tenant` has in the index (for operators and tests, never callers).
    pub fn len(&self, tenant: &str) -> usize {
        self.index_read().len(tenant)
    }

    /// Whether the embedding model is loaded (dense retrieval on; for operators and tests).
    pub fn embeddings_loaded(&self) -> bool {
        self.loaded_engine().is_some()
    }

    /// The memories `viewer` of `tenant` may see that best answer `text` (with its embedding
    /// when the model is loaded and answers within a bound).
    ///
    /// # Errors
    ///
    /// [`Stale`] when the index may no longer match the store (see [`MemoryService::fresh`]).
    pub async fn search(
        &self,
        tenant: &str,
        viewer: &Viewer<'_>,
        text: &str,
        limit: usize,
    ) -> Result<Vec<Hit>, Stale> {
        let embedding = self.begin_query(text);
        self.search_with(tenant, viewer, text, embedding, limit)
            .await
    }

    /// Starts embedding the query `text` on the model's worker, if the model is loaded, so
    /// that the caller can do other work meanwhile; [`MemoryService::search_with`] takes it.
    pub fn begin_query(&self, text: &str) -> QueryEmbedding {
        let job = self.loaded_engine().and_then(|engine| {
            engine
                .enqueue(vec![text.to_owned()])
                .map_err(|e| tracing::debug!(error = %e, "query embedding not queued; searching lexically"))
                .ok()
        });
        QueryEmbedding(job)
    }

    /// [`MemoryService::search`] with the query's embedding begun earlier (for `text`).
    ///
    /// # Errors
    ///
    /// As [`MemoryService::search`].
    pub async fn search_with(
        &self,
        tenant: &str,
        viewer: &Viewer<'_>,
        text: &str,
        embedding: QueryEmbedding,
        limit: usize,
    ) -> Result<Vec<Hit>, Stale> {
        self.fresh()?;
        let embedding = embedding.finish().await;
        let query = Query {
            text,
            embedding: embedding.as_deref(),
            limit,
        };
        Ok(self
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .search(tenant, viewer, &query, &Params::default()))
    }

    /// Whether the index is known to match the store to within a few sync intervals: the
    /// change feed was read successfully within [`STALE_AFTER_INTERVALS`] intervals.
    ///
    /// # Errors
    ///
    /// [`Stale`] otherwise (logged).
    pub fn fresh(&self) -> Result<(), Stale> {
        let synced = Duration::from_millis(self.synced_ms.load(Ordering::Acquire));
        let since = self.started.elapsed().saturating_sub(synced);
        if since > self.config.sync_interval * STALE_AFTER_INTERVALS {
            tracing::warn!(
                since_ms = u64::try_from(since.as_millis()).unwrap_or(u64::MAX),
                "the memory index has not been synced with the store: memory reads refused"
            );
            return Err(Stale);
        }
        Ok(())
    }

    /// Reads the change feed once and applies what it has not applied yet; returns how many
    /// changes it applied.
    async fn sync_once(&self, state: &mut SyncState) -> Result<usize, StoreError> {
        if state.last_ok.elapsed() > CHANGE_RETENTION / 2 {
            // What this replica missed may be pruned from the feed: start over.
            let loaded = load(&self.store).await.map_err(StoreError::Invalid)?;
            self.removals.fetch_add(1, Ordering::AcqRel);
            *self.index_write() = loaded.index;
            *state = SyncState {
                floor: loaded.floor,
                applied: BTreeSet::new(),
                marks: VecDeque::from([(Instant::now(), loaded.watermark)]),
                last_ok: Instant::now(),
            };
            tracing::warn!("the memory index was rebuilt after a long time without syncing");
        }
        // INVARIANT: reads start at `floor`, not at the highest seq applied. On PostgreSQL a
        // sequence value is taken when a change row is inserted but becomes visible only when
        // its transaction commits, so seq 7 can be read before seq 6 exists for us; starting
        // past 7 would lose 6 for good. Every read therefore re-reads the trailing window of
        // `LATE_COMMIT` (ids only, cheap) and applies just the seqs not applied yet; applying
        // one again would be harmless anyway, as each change re-reads the row's current state.
        let mut cursor = state.floor;
        let mut applied = 0usize;
        loop {
            let page = self
                .store
                .memory_changes_after(cursor, MEMORY_CHANGE_PAGE)
                .await?;
            // A row re-read after the page was read is at least as new as every change in the
            // page: one read per memory and page is enough.
            let mut refreshed: HashSet<(String, String)> = HashSet::new();
            for c in &page {
                cursor = c.seq;
                if c.seq <= state.floor || state.applied.contains(&c.seq) {
                    continue;
                }
                let key = (c.tenant.clone(), c.memory_id.clone());
                if !refreshed.contains(&key) {
                    self.apply(c).await?;
                    refreshed.insert(key);
                }
                state.applied.insert(c.seq);
                applied += 1;
            }
            if page.len() < usize::try_from(MEMORY_CHANGE_PAGE).unwrap_or(usize::MAX) {
                break;
            }
        }
        let now = Instant::now();
        let high = state
            .applied
            .last()
            .copied()
            .unwrap_or(state.floor)
            .max(state.floor);
        state.marks.push_back((now, high));
        while let Some(&(at, seq)) = state.marks.front() {
            if now.duration_since(at) < LATE_COMMIT {
                break;
            }
            state.floor = state.floor.max(seq);
            state.marks.pop_front();
        }
        let floor = state.floor;
        state.applied.retain(|&seq| seq > floor);
        state.last_ok = now;
        Ok(applied)
    }

    /// Applies one change to the index: a delete removes the memory; anything else re-reads
    /// the row and inserts or replaces it (with its embedding and supersession), or removes
    /// it when the row is gone or no longer opens (its tenant was shredded).
    async fn apply(&self, c: &MemoryChange) -> Result<(), StoreError> {
        let (tenant, id) = (c.tenant.as_str(), c.memory_id.as_str());
        if c.kind == MemoryChangeKind::Delete {
            self.index_write().remove(tenant, id);
            return Ok(());
        }
        for _ in 0..3 {
            let removals = self.removals.load(Ordering::Acquire);
            let row = match self.store.memory(tenant, id).await {
                Ok(row) => row,
                Err(StoreError::Crypto(_)) => {
                    tracing::warn!(memory = %id, "a changed memory no longer opens: left out of the index");
                    None
                }
                Err(e) => return Err(e),
            };
            let mut index = self.index_write();
            // A request or the retention task removed something while the row was read: it
            // may have been this one (deleted after the read), so read again.
            if self.removals.load(Ordering::Acquire) != removals {
                continue;
            }
            let Some(m) = row else {
                index.remove(tenant, id);
                return Ok(());
            };
            let embedding = m.embedding.clone().filter(|v| v.len() == DIMENSIONS);
            let superseded_by = m.superseded_by.clone();
            let Some(memory) = to_memory(m) else {
                index.remove(tenant, id);
                return Ok(());
            };
            match index.insert(memory, embedding.as_deref()) {
                Ok(()) => {
                    if let Some(by) = superseded_by {
                        index.supersede(tenant, id, &by);
                    }
                }
                Err(e) => {
                    index.remove(tenant, id);
                    tracing::warn!(error = %e, memory = %id, "a changed memory was not indexed");
                }
            }
            return Ok(());
        }
        Err(StoreError::Invalid(
            "memories kept being removed while a change was applied".to_owned(),
        ))
    }

    fn mark_synced(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.synced_ms.store(ms, Ordering::Release);
    }

    /// Removes a memory from the index on behalf of a request or the retention task.
    fn remove_indexed(&self, tenant: &str, id: &str) {
        let mut index = self.index_write();
        self.removals.fetch_add(1, Ordering::AcqRel);
        index.remove(tenant, id);
    }

    /// Deletes the memories that `retention` no longer keeps at `now_ms` (Unix milliseconds):
    /// those written at or before `now_ms` less their tenant's `memories_days`. They leave the
    /// store and then the index, as with `DELETE /v1/memories/{id}`, so search and recall stop
    /// finding them. Returns how many were deleted.
    ///
    /// # Errors
    ///
    /// The store's failure; what it did not delete is tried again on the next run.
    pub async fn purge_expired(
        &self,
        retention: &RetentionConfig,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let cutoff = |tenant: &str| {
            let keep = retention.for_tenant(tenant).memories?;
            Some(now_ms.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX)))
        };
        let purged = self.store.purge_memories(cutoff).await?;
        for (tenant, id) in &purged {
            self.remove_indexed(tenant, id);
        }
        // The change feed's old rows go with the expired memories; every replica has read
        // them long since (one that has not rebuilds instead).
        let before =
            now_ms.saturating_sub(i64::try_from(CHANGE_RETENTION.as_millis()).unwrap_or(i64::MAX));
        let pruned = self.store.prune_memory_changes(before).await?;
        if pruned > 0 {
            tracing::debug!(pruned, "pruned the memory change feed");
        }
        Ok(purged.len())
    }

    /// Queues a statement to be remembered after the turn, with the turn's answer when known
    /// (for the extractor); `false` when the queue is full (the statement is dropped and
    /// logged).
    pub fn remember(
        &self,
        tenant: &str,
        principal: &str,
        label: &Label,
        content: &str,
        answer: Option<&str>,
    ) -> bool {
        let Some(id) = self.new_id() else {
            return false;
        };
        self.enqueue(Job::Remember {
            statement: StoredMemory {
                id,
                tenant: tenant.to_owned(),
                principal: principal.to_owned(),
                namespace: None,
                label: label.banner(),
                created_at: now_ms(),
                supersedes: None,
                superseded_by: None,
                content: content.to_owned(),
                metadata: None,
                embedding: None,
            },
            // Only read when an extractor will be asked.
            answer: self.extractor.as_ref().and(answer).map(str::to_owned),
        })
    }

    /// Whether remembered turns are given their answers (an extractor is configured).
    pub fn reads_answers(&self) -> bool {
        self.extractor.is_some()
    }

    /// Appends the memory service's metrics to `out` in the text exposition format: the
    /// queue (depth, capacity, work queued and dropped), the worker's stores and embeddings,
    /// the extractor's calls by outcome and their time, and how long ago the index last read
    /// the store's change feed.
    pub fn render_metrics(&self, out: &mut String) {
        let st = &self.stats;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let depth = self.jobs.max_capacity() - self.jobs.capacity();
        let _ = writeln!(
            out,
            "# HELP enclave_memory_queue_depth Jobs waiting for the memory worker.\n\
             # TYPE enclave_memory_queue_depth gauge\n\
             enclave_memory_queue_depth {depth}\n\
             # HELP enclave_memory_queue_capacity The memory queue's bound ([memory] queue).\n\
             # TYPE enclave_memory_queue_capacity gauge\n\
             enclave_memory_queue_capacity {}\n\
             # HELP enclave_memory_jobs_total Jobs queued for the memory worker, by kind.\n\
             # TYPE enclave_memory_jobs_total counter\n\
             enclave_memory_jobs_total{{job=\"remember\"}} {}\n\
             enclave_memory_jobs_total{{job=\"embed\"}} {}\n\
             # HELP enclave_memory_jobs_dropped_total Jobs refused because the memory queue was full (their work is lost).\n\
             # TYPE enclave_memory_jobs_dropped_total counter\n\
             enclave_memory_jobs_dropped_total {}\n\
             # HELP enclave_memory_writes_total Writes of the memory worker, by what and outcome.\n\
             # TYPE enclave_memory_writes_total counter\n\
             enclave_memory_writes_total{{what=\"statement\",outcome=\"ok\"}} {}\n\
             enclave_memory_writes_total{{what=\"statement\",outcome=\"error\"}} {}\n\
             enclave_memory_writes_total{{what=\"embedding\",outcome=\"ok\"}} {}\n\
             enclave_memory_writes_total{{what=\"embedding\",outcome=\"error\"}} {}\n\
             enclave_memory_writes_total{{what=\"fact\",outcome=\"ok\"}} {}\n\
             enclave_memory_writes_total{{what=\"fact\",outcome=\"error\"}} {}\n\
             enclave_memory_writes_total{{what=\"fact\",outcome=\"marked_above_turn\"}} {}\n\
             enclave_memory_writes_total{{what=\"supersession\",outcome=\"ok\"}} {}\n\
             # HELP enclave_memory_extractions_total Calls of the memory extractor, by outcome.\n\
             # TYPE enclave_memory_extractions_total counter\n\
             enclave_memory_extractions_total{{outcome=\"facts\"}} {}\n\
             enclave_memory_extractions_total{{outcome=\"failed\"}} {}\n\
             enclave_memory_extractions_total{{outcome=\"no_accredited_backend\"}} {}\n\
             # HELP enclave_memory_extractions_dropped_total Turns whose facts were not extracted because the extractor's queue was full (their statements are kept).\n\
             # TYPE enclave_memory_extractions_dropped_total counter\n\
             enclave_memory_extractions_dropped_total {}\n\
             # HELP enclave_memory_extraction_seconds_total Time spent in memory extractor calls.\n\
             # TYPE enclave_memory_extraction_seconds_total counter\n\
             enclave_memory_extraction_seconds_total {:.6}",
            self.jobs.max_capacity(),
            n(&st.queued_remember),
            n(&st.queued_embed),
            n(&st.dropped),
            n(&st.stored),
            n(&st.store_errors),
            n(&st.embedded),
            n(&st.embed_errors),
            n(&st.facts_stored),
            n(&st.facts_errors),
            n(&st.facts_spilled),
            n(&st.superseded),
            n(&st.extract_facts),
            n(&st.extract_failed),
            n(&st.extract_no_backend),
            n(&st.extractions_dropped),
            n(&st.extract_micros) as f64 / 1e6,
        );
        if let Some(tx) = &self.extractions {
            let _ = writeln!(
                out,
                "# HELP enclave_memory_extraction_queue_depth Remembered turns waiting for the extractor.\n\
                 # TYPE enclave_memory_extraction_queue_depth gauge\n\
                 enclave_memory_extraction_queue_depth {}",
                tx.max_capacity() - tx.capacity()
            );
        }
        let synced = Duration::from_millis(self.synced_ms.load(Ordering::Acquire));
        let age = self.started.elapsed().saturating_sub(synced);
        let _ = writeln!(
            out,
            "# HELP enclave_memory_sync_age_seconds Time since the memory index last read the store's change feed (memory reads are refused past {} intervals).\n\
             # TYPE enclave_memory_sync_age_seconds gauge\n\
             enclave_memory_sync_age_seconds {:.3}",
            STALE_AFTER_INTERVALS,
            age.as_secs_f64()
        );
    }

    fn enqueue(&self, job: Job) -> bool {
        let counter = match job {
            Job::Remember { .. } => &self.stats.queued_remember,
            Job::Embed { .. } => &self.stats.queued_embed,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {
                MemoryStats::bump(counter);
                true
            }
            Err(_) => {
                // Logged once; the count is at /metrics.
                if self.stats.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!("the memory queue is full: work is being dropped");
                }
                false
            }
        }
    }

    fn new_id(&self) -> Option<String> {
        let mut bytes = [0u8; 16];
        if self.rng.fill(&mut bytes).is_err() {
            tracing::error!("the system random number generator failed: no memory id");
            return None;
        }
        let mut id = String::with_capacity(36);
        id.push_str("mem_");
        for b in bytes {
            let _ = write!(id, "{b:02x}");
        }
        Some(id)
    }

    /// The embedding model, if it is loaded (never waits for it to load).
    fn loaded_engine(&self) -> Option<&Arc<LocalEngine>> {
        self.engine.get().and_then(Option::as_ref)
    }

    /// Loads the embedding model on the worker thread, once, from the models directory, with
    /// its layers' weights in half precision ([`MEMORY_PRECISION`]).
    fn engine_blocking(&self) -> Option<&Arc<LocalEngine>> {
        if !self.config.embeddings {
            return None;
        }
        self.engine
            .get_or_init(|| {
                let models = [EMBED_MODEL.to_owned()];
                match LocalEngine::start_with(&self.models_dir, &models, 64, MEMORY_PRECISION) {
                    Ok(e) => {
                        tracing::info!("memory embeddings: all-MiniLM-L6-v2 loaded");
                        Some(Arc::new(e))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "memory embeddings unavailable: retrieval is lexical only");
                        None
                    }
                }
            })
            .as_ref()
    }

    fn index_write(&self) -> std::sync::RwLockWriteGuard<'_, Memories> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn index_read(&self) -> std::sync::RwLockReadGuard<'_, Memories> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The memory index may no longer match the store: its replica has not read the change feed
/// for [`STALE_AFTER_INTERVALS`] sync intervals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stale;

impl Stale {
    /// 503 `memory_unavailable` with `Retry-After`.
    pub(crate) fn error(self) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "memory_unavailable",
            "Long-term memory cannot be read right now: this server has lost track of the memory store. Retry later; the operator has been alerted (see the server log).",
        )
        .retry_after(Duration::from_secs(1))
    }
}

/// Rebuilds the index from the store, after reading where to start the change feed.
async fn load(store: &Store) -> Result<Loaded, String> {
    // Read BEFORE the rebuild: a change made during it is then read (again) from the feed
    // and applied, never lost between the two.
    let watermark = store
        .memory_changes_max_seq()
        .await
        .map_err(|e| format!("reading the memory change feed: {e}"))?;
    // A change with a lower seq may still commit (PostgreSQL): start the feed where the
    // trailing window of late commits starts.
    let since = now_ms().saturating_sub(i64::try_from(LATE_COMMIT.as_millis()).unwrap_or(0));
    let first = store
        .memory_changes_first_since(since)
        .await
        .map_err(|e| format!("reading the memory change feed: {e}"))?;
    let floor = first.map_or(watermark, |f| watermark.min(f.saturating_sub(1)));
    let mut index = Memories::new(DIMENSIONS);
    let mut missing = Vec::new();
    let mut after: Option<(String, String)> = None;
    let (mut loaded, mut unreadable) = (0usize, 0usize);
    loop {
        let page = store
            .memories_page(after.as_ref().map(|(t, i)| (t.as_str(), i.as_str())))
            .await
            .map_err(|e| format!("reading memories: {e}"))?;
        unreadable += page.unreadable.len();
        for m in page.memories {
            let embedding = m.embedding.clone();
            let (tenant, id, content) = (m.tenant.clone(), m.id.clone(), m.content.clone());
            let superseded = m
                .superseded_by
                .clone()
                .map(|by| (m.tenant.clone(), m.id.clone(), by));
            let Some(memory) = to_memory(m) else {
                unreadable += 1;
                continue;
            };
            let v = embedding.filter(|v| v.len() == DIMENSIONS);
            if v.is_none() {
                missing.push((tenant, id, content));
            }
            if index.insert(memory, v.as_deref()).is_ok() {
                loaded += 1;
                if let Some((tenant, id, by)) = superseded {
                    index.supersede(&tenant, &id, &by);
                }
            }
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    if unreadable > 0 {
        tracing::error!(
            unreadable,
            "memories that failed authentication were left out of the index"
        );
    }
    tracing::info!(loaded, "memory index rebuilt");
    Ok(Loaded {
        index,
        missing,
        floor,
        watermark,
    })
}

/// The sync thread: reads the change feed every interval, on its own thread (never on a
/// request's event loop). A failed read is logged and tried again at the next interval. Ends
/// when the service is gone.
fn run_sync(
    runtime: &tokio::runtime::Runtime,
    service: &std::sync::Weak<MemoryService>,
    mut state: SyncState,
) {
    runtime.block_on(async move {
        let mut failures = 0u32;
        loop {
            let interval = match service.upgrade() {
                Some(s) => s.config.sync_interval,
                None => return,
            };
            tokio::time::sleep(interval).await;
            let Some(s) = service.upgrade() else { return };
            match s.sync_once(&mut state).await {
                Ok(applied) => {
                    s.mark_synced();
                    if failures > 0 {
                        tracing::info!(failures, "the memory change feed is readable again");
                    }
                    failures = 0;
                    if applied > 0 {
                        tracing::debug!(applied, "memory changes applied");
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    if failures == STALE_AFTER_INTERVALS {
                        tracing::error!(error = %e, failures, "the memory change feed cannot be read: memory reads are refused until it can");
                    } else {
                        tracing::warn!(error = %e, failures, "reading the memory change feed failed; retrying");
                    }
                }
            }
        }
    });
}

/// Starts one of the memory service's background threads, named `name`, with a runtime of
/// its own built first: a runtime or thread that cannot start stops the server's start
/// (a worker that never ran would drop memory writes unseen).
fn spawn_worker(
    name: &str,
    work: impl FnOnce(&tokio::runtime::Runtime) + Send + 'static,
) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting {name}: {e}"))?;
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || work(&runtime))
        .map(|_| ())
        .map_err(|e| format!("starting {name}: {e}"))
}

/// The background worker: stores remembered statements and computes embeddings, one job at a
/// time, on its own thread (never on a request's event loop). Ends when the service is gone.
fn run_worker(
    runtime: &tokio::runtime::Runtime,
    service: &std::sync::Weak<MemoryService>,
    mut rx: mpsc::Receiver<Job>,
) {
    runtime.block_on(async move {
        while let Some(job) = rx.recv().await {
            let Some(s) = service.upgrade() else { return };
            match job {
                Job::Remember { statement, answer } => {
                    if let Err(e) = s.store.add_memory(&statement).await {
                        MemoryStats::bump(&s.stats.store_errors);
                        tracing::error!(error = %e, "a remembered statement could not be stored");
                        continue;
                    }
                    MemoryStats::bump(&s.stats.stored);
                    let m = statement.clone();
                    let (tenant, id, content) = (m.tenant.clone(), m.id.clone(), m.content.clone());
                    if let Some(memory) = to_memory(m)
                        && let Err(e) = s.index_write().insert(memory, None)
                    {
                        tracing::warn!(error = %e, "a remembered statement was not indexed");
                    }
                    embed_one(&s, &tenant, &id, &content).await;
                    s.queue_extraction(statement, answer);
                }
                Job::Embed {
                    tenant,
                    id,
                    content,
                } => embed_one(&s, &tenant, &id, &content).await,
            }
        }
    });
}

impl MemoryService {
    /// Hands a stored statement to the extraction worker (with an extractor); when its queue
    /// is full the turn's facts are not extracted — counted and logged — and the statement
    /// stays remembered.
    fn queue_extraction(&self, statement: StoredMemory, answer: Option<String>) {
        let Some(tx) = &self.extractions else {
            return;
        };
        if tx.try_send(Extraction { statement, answer }).is_err()
            // Logged once, as a full memory queue is; the count is at /metrics.
            && self.stats.extractions_dropped.fetch_add(1, Ordering::Relaxed) == 0
        {
            tracing::warn!(
                "the memory extractor's queue is full: a turn's facts are not extracted (its statement is kept)"
            );
        }
    }
}

/// The extraction worker: asks the extractor for each remembered turn's facts, one turn at a
/// time and in order (a later fact supersedes an earlier one), on its own thread, so that
/// the main worker keeps storing and embedding statements while the extractor is slow.
fn run_extraction_worker(
    runtime: &tokio::runtime::Runtime,
    service: &std::sync::Weak<MemoryService>,
    mut rx: mpsc::Receiver<Extraction>,
) {
    runtime.block_on(async move {
        while let Some(job) = rx.recv().await {
            let Some(s) = service.upgrade() else { return };
            if let Some(extractor) = &s.extractor {
                extract_facts(&s, extractor, &job.statement, job.answer.as_deref()).await;
            }
        }
    });
}

async fn embed_one(s: &MemoryService, tenant: &str, id: &str, content: &str) {
    let Some(engine) = s.engine_blocking() else {
        return;
    };
    let vector = match engine.embed_blocking(&[content]) {
        Ok(mut v) => match v.pop() {
            Some(v) => v,
            None => return,
        },
        Err(e) => {
            MemoryStats::bump(&s.stats.embed_errors);
            tracing::warn!(error = %e, "a memory embedding failed");
            return;
        }
    };
    match s.store.set_memory_embedding(tenant, id, &vector).await {
        Ok(true) => {
            MemoryStats::bump(&s.stats.embedded);
            if let Err(e) = s.index_write().set_embedding(tenant, id, &vector) {
                tracing::warn!(error = %e, "a memory embedding was not indexed");
            }
        }
        // Deleted meanwhile.
        Ok(false) => {}
        Err(e) => {
            MemoryStats::bump(&s.stats.embed_errors);
            tracing::error!(error = %e, "a memory embedding could not be stored");
        }
    }
}

/// Most older memories one extracted fact supersedes.
const MAX_SUPERSEDED_PER_FACT: usize = 3;

/// Memories looked at as what a fact may supersede.
const SUPERSEDE_CANDIDATES: usize = 10;

/// Similarity from which an older memory is the one a fact's `replaces` describes: cosine of
/// embeddings, or (without embeddings) the share of the shorter text's terms in the other.
const REPLACES_COSINE: f32 = 0.6;
const REPLACES_OVERLAP: f32 = 0.5;

/// Similarity from which an older memory is the same fact restated (no `replaces` needed).
const RESTATED_COSINE: f32 = 0.9;
const RESTATED_OVERLAP: f32 = 1.0;

/// Asks the extractor for the facts of a remembered turn and stores each one as a memory of
/// the turn's owner, labeled with the turn's label, marking what it updates as superseded.
/// Any failure leaves the statement record alone.
async fn extract_facts(
    s: &MemoryService,
    extractor: &Extractor,
    statement: &StoredMemory,
    answer: Option<&str>,
) {
    let Ok(label) = statement.label.parse::<Label>() else {
        return;
    };
    let turn = crate::extract::Turn {
        id: &statement.id,
        tenant: &statement.tenant,
        principal: &statement.principal,
    };
    let started = Instant::now();
    let extracted = extractor
        .extract(turn, &label, &statement.content, answer)
        .await;
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    s.stats.extract_micros.fetch_add(micros, Ordering::Relaxed);
    let facts = match extracted {
        Extracted::Facts(f) => {
            MemoryStats::bump(&s.stats.extract_facts);
            f
        }
        Extracted::NoAccreditedBackend => {
            MemoryStats::bump(&s.stats.extract_no_backend);
            tracing::warn!(
                model = %extractor.model(),
                label = %statement.label,
                "no backend serving the memory extractor is accredited for the turn's label: facts not extracted"
            );
            return;
        }
        Extracted::Failed => {
            MemoryStats::bump(&s.stats.extract_failed);
            return;
        }
    };
    let metadata =
        serde_json::json!({"source": "extractor", "model": extractor.model()}).to_string();
    let (tenant, principal) = (&statement.tenant, &statement.principal);
    let mut this_turn = vec![statement.id.clone()];
    let (mut stored, mut superseded) = (0usize, 0usize);
    for fact in facts {
        // SECURITY: a fact marked above its turn (the model wrote a marking the turn's label
        // does not dominate) is spillage, not memory: dropped, like such a POST is refused.
        let marked = enclave_label::scan(&fact.text).label;
        if !label.dominates(&marked) {
            MemoryStats::bump(&s.stats.facts_spilled);
            tracing::warn!(
                label = %statement.label,
                marked = %marked,
                "an extracted fact is marked above its turn's label: dropped"
            );
            continue;
        }
        let Some(id) = s.new_id() else {
            return;
        };
        let targets = superseded_targets(s, statement, &label, &fact, &this_turn).await;
        let m = StoredMemory {
            id: id.clone(),
            tenant: tenant.clone(),
            principal: principal.clone(),
            namespace: None,
            // SECURITY: the turn's label, never lower: the fact was read from the turn.
            label: statement.label.clone(),
            created_at: now_ms().max(statement.created_at + 1),
            supersedes: targets.first().cloned(),
            superseded_by: None,
            content: fact.text.clone(),
            metadata: Some(metadata.clone()),
            embedding: None,
        };
        if let Err(e) = s.store.add_memory(&m).await {
            MemoryStats::bump(&s.stats.facts_errors);
            tracing::error!(error = %e, "an extracted fact could not be stored");
            continue;
        }
        stored += 1;
        MemoryStats::bump(&s.stats.facts_stored);
        if let Some(memory) = to_memory(m)
            && let Err(e) = s.index_write().insert(memory, None)
        {
            tracing::warn!(error = %e, "an extracted fact was not indexed");
        }
        for old in &targets {
            match s.store.supersede_memory(tenant, old, &id).await {
                Ok(true) => {
                    s.index_write().supersede(tenant, old, &id);
                    superseded += 1;
                    MemoryStats::bump(&s.stats.superseded);
                }
                // Deleted meanwhile.
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "a superseded memory could not be marked"),
            }
        }
        embed_one(s, tenant, &id, &fact.text).await;
        this_turn.push(id);
    }
    tracing::info!(facts = stored, superseded, "memory facts extracted");
}

/// The older memories `fact` updates: among the owner's own memories (not shared ones) that
/// the turn's session may see, those similar enough to what the extractor said it replaces
/// (or, without that, to the fact itself: a restatement), best first.
async fn superseded_targets(
    s: &MemoryService,
    statement: &StoredMemory,
    label: &Label,
    fact: &Fact,
    this_turn: &[String],
) -> Vec<String> {
    let (probe, cosine_min, overlap_min) = match &fact.replaces {
        Some(r) => (r.as_str(), REPLACES_COSINE, REPLACES_OVERLAP),
        None => (fact.text.as_str(), RESTATED_COSINE, RESTATED_OVERLAP),
    };
    // SECURITY: searched as the turn's session: nothing above its label, nothing of another
    // principal, so a fact never touches what its turn could not see.
    let viewer = Viewer {
        principal: &statement.principal,
        label,
        namespace: None,
    };
    let hits: Vec<Hit> = s
        .search(&statement.tenant, &viewer, probe, SUPERSEDE_CANDIDATES)
        .await
        // A stale index: no supersession (the fact is stored all the same).
        .unwrap_or_default()
        .into_iter()
        .filter(|h| {
            h.memory.namespace.is_none()
                && h.memory.principal == statement.principal
                && !this_turn.contains(&h.memory.id)
        })
        .collect();
    if hits.is_empty() {
        return Vec::new();
    }
    let mut texts = vec![probe];
    texts.extend(hits.iter().map(|h| h.memory.content.as_str()));
    let vectors = s
        .engine_blocking()
        .and_then(|e| e.embed_blocking(&texts).ok())
        .filter(|v| v.len() == texts.len());
    let similarity: Vec<(f32, f32)> = match &vectors {
        Some(v) => v
            .iter()
            .skip(1)
            .map(|x| {
                (
                    cosine(v.first().map_or(&[][..], Vec::as_slice), x),
                    cosine_min,
                )
            })
            .collect(),
        None => {
            let p = enclave_memory::text::terms(probe);
            hits.iter()
                .map(|h| {
                    let t = enclave_memory::text::terms(&h.memory.content);
                    (overlap(&p, &t), overlap_min)
                })
                .collect()
        }
    };
    hits.iter()
        .zip(similarity)
        .filter(|(_, (sim, min))| sim >= min)
        .map(|(h, _)| h.memory.id.clone())
        .take(MAX_SUPERSEDED_PER_FACT)
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na * nb)
}

/// Share of the smaller term set found in the other (0..=1).
fn overlap(a: &[String], b: &[String]) -> f32 {
    let small = a.len().min(b.len());
    if small == 0 {
        return 0.0;
    }
    let common = a.iter().filter(|t| b.contains(t)).count();
    common as f32 / small as f32
}

/// The index's view of a stored memory (`None` when its label does not parse, which the
/// store's own writes never produce).
fn to_memory(m: StoredMemory) -> Option<Memory> {
    let label: Label = m.label.parse().ok()?;
    Some(Memory {
        id: m.id,
        tenant: m.tenant,
        principal: m.principal,
        namespace: m.namespace,
        label,
        created_at: m.created_at,
        supersedes: m.supersedes,
        content: m.content,
        metadata: m.metadata,
    })
}

/// The clock in Unix milliseconds, the unit of a memory's `created_at`.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

// === the routes ===

/// What a memory route answers: status, JSON body, and the label of what it returns.
pub(crate) type Answer = (StatusCode, Bytes, Label);

/// Serves a memory route for an authenticated request whose session is open; `raw` is the
/// body (empty for `GET` and `DELETE`).
///
/// # Errors
///
/// The request's refusal.
pub(crate) async fn run(
    ctx: &mut RequestCtx,
    method: &Method,
    path: &str,
    raw: Bytes,
) -> Result<Answer, ApiError> {
    let Some(caller) = ctx.caller.clone() else {
        tracing::error!("a memory route ran before authentication");
        return Err(ApiError::internal());
    };
    let service = Arc::clone(&ctx.app.memory);
    let tenant = caller.principal.tenant.as_str().to_owned();
    let principal = caller.principal.id.as_str().to_owned();
    match (method, path) {
        (&Method::POST, "/v1/memories") => {
            let (content, metadata, namespace) = parse_add(&raw)?;
            let mut text = content.clone();
            if let Some(md) = &metadata {
                // Metadata strings are scanned for markings like the content.
                if let Ok(json) = Json::parse(md) {
                    json.push_text(&mut text);
                }
            }
            stage::label::content(ctx, &text)?;
            let label = ctx.answer_label();
            let Some(id) = service.new_id() else {
                return Err(ApiError::internal());
            };
            let stored = StoredMemory {
                id,
                tenant: tenant.clone(),
                principal,
                namespace,
                label: label.banner(),
                created_at: now_ms(),
                supersedes: None,
                superseded_by: None,
                content,
                metadata,
                embedding: None,
            };
            service.store.add_memory(&stored).await.map_err(|e| {
                tracing::error!(error = %e, "a memory could not be stored");
                ApiError::internal()
            })?;
            let memory = to_memory(stored).ok_or_else(ApiError::internal)?;
            let body = memory_json(&memory, None, None);
            let (id, content) = (memory.id.clone(), memory.content.clone());
            // SECURITY: lexically searchable before the answer leaves (DESIGN: found by search
            // as soon as its POST has returned).
            if let Err(e) = service.index_write().insert(memory, None) {
                tracing::warn!(error = %e, "a stored memory was not indexed");
            }
            if service.config.embeddings {
                service.enqueue(Job::Embed {
                    tenant,
                    id,
                    content,
                });
            }
            Ok((StatusCode::OK, body, label))
        }
        (&Method::POST, "/v1/memories/search") => {
            let (query, limit, namespace) = parse_search(&raw)?;
            stage::label::content(ctx, &query)?;
            let session = ctx.answer_label();
            let viewer = Viewer {
                principal: &principal,
                label: &session,
                namespace: namespace.as_deref(),
            };
            let hits = service
                .search(&tenant, &viewer, &query, limit)
                .await
                .map_err(|stale| {
                    ctx.decide("memory", "deny", "memory_unavailable");
                    stale.error()
                })?;
            let mut label = session.clone();
            let mut body = String::from("{\"object\":\"list\",\"data\":[");
            for (i, h) in hits.iter().enumerate() {
                label.join_assign(&h.memory.label);
                if i > 0 {
                    body.push(',');
                }
                let by = service
                    .index_read()
                    .superseded_by(&tenant, &h.memory.id, &viewer);
                let item = memory_json(&h.memory, Some(h.score), by.as_deref());
                body.push_str(&String::from_utf8_lossy(&item));
            }
            body.push_str("]}");
            Ok((StatusCode::OK, Bytes::from(body), label))
        }
        (m, _) => {
            let Some(id) = path.strip_prefix("/v1/memories/") else {
                return Err(not_found());
            };
            // SECURITY: a stale index may still hold what another replica deleted.
            if let Err(stale) = service.fresh() {
                ctx.decide("memory", "deny", "memory_unavailable");
                return Err(stale.error());
            }
            let session = ctx.answer_label();
            let viewer = Viewer {
                principal: &principal,
                label: &session,
                namespace: None,
            };
            let Some(memory) = service.index_read().get(&tenant, id, &viewer) else {
                ctx.decide("memory", "deny", "not_found");
                return Err(not_found());
            };
            let label = session.join(&memory.label);
            if *m == Method::DELETE {
                let deleted = service
                    .store
                    .delete_memory(&tenant, id)
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "a memory could not be deleted");
                        ApiError::internal()
                    })?;
                service.remove_indexed(&tenant, id);
                if !deleted {
                    return Err(not_found());
                }
                let body = format!(
                    "{{\"id\":{},\"object\":\"memory.deleted\",\"deleted\":true}}",
                    json_string(id)
                );
                return Ok((StatusCode::OK, Bytes::from(body), label));
            }
            let by = service.index_read().superseded_by(&tenant, id, &viewer);
            Ok((
                StatusCode::OK,
                memory_json(&memory, None, by.as_deref()),
                label,
            ))
        }
    }
}

/// 404 `not_found`, the same for a missing id, another tenant's, and one the session may not
/// see.
fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "No memory with that id: check the id (memories are visible only to their tenant, principal or namespace, at a session label that dominates theirs).",
    )
}

fn invalid(param: &str, message: &str) -> ApiError {
    ApiError::bad_request("invalid_request", message.to_owned()).param(param.to_owned())
}

/// The body as a strict JSON object (duplicate keys refused at any depth).
fn object(raw: &[u8]) -> Result<Json<'_>, ApiError> {
    let text = std::str::from_utf8(raw)
        .map_err(|_| ApiError::bad_request("invalid_json", "The request body is not UTF-8."))?;
    let json = Json::parse(text).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("The request body is not valid JSON: {e}."),
        )
    })?;
    match json {
        Json::Object(_) => Ok(json),
        other => Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "The request body must be a JSON object, not {}.",
                other.kind()
            ),
        )),
    }
}

type Added = (String, Option<String>, Option<String>);

fn parse_add(raw: &[u8]) -> Result<Added, ApiError> {
    let json = object(raw)?;
    let content = match json.get("content") {
        Some(Json::String(s)) => s.to_string(),
        Some(other) => {
            return Err(invalid(
                "content",
                &format!("`content` must be a string, not {}.", other.kind()),
            ));
        }
        None => {
            return Err(invalid(
                "content",
                "`content` is required: the text to remember.",
            ));
        }
    };
    if content.trim().is_empty() {
        return Err(invalid("content", "`content` must not be empty."));
    }
    if content.len() > MAX_CONTENT_BYTES {
        return Err(invalid(
            "content",
            &format!("`content` is longer than {MAX_CONTENT_BYTES} bytes."),
        ));
    }
    let (metadata, namespace) = match json.get("metadata") {
        None | Some(Json::Null) => (None, None),
        Some(md @ Json::Object(_)) => {
            let text = String::from_utf8(md.to_vec()).unwrap_or_default();
            if text.len() > MAX_METADATA_BYTES {
                return Err(invalid(
                    "metadata",
                    &format!("`metadata` is longer than {MAX_METADATA_BYTES} bytes."),
                ));
            }
            let namespace = match md.get("namespace") {
                None | Some(Json::Null) => None,
                Some(Json::String(ns)) if valid_namespace(ns) => Some(ns.to_string()),
                Some(_) => {
                    return Err(invalid(
                        "metadata.namespace",
                        &format!(
                            "`metadata.namespace` must be a string of 1 to {MAX_NAMESPACE_BYTES} printable characters."
                        ),
                    ));
                }
            };
            (Some(text), namespace)
        }
        Some(other) => {
            return Err(invalid(
                "metadata",
                &format!("`metadata` must be an object, not {}.", other.kind()),
            ));
        }
    };
    Ok((content, metadata, namespace))
}

fn valid_namespace(ns: &str) -> bool {
    !ns.is_empty() && ns.len() <= MAX_NAMESPACE_BYTES && !ns.chars().any(char::is_control)
}

type Search = (String, usize, Option<String>);

fn parse_search(raw: &[u8]) -> Result<Search, ApiError> {
    let json = object(raw)?;
    let query = match json.get("query") {
        Some(Json::String(s)) if !s.trim().is_empty() => s.to_string(),
        Some(Json::String(_)) => return Err(invalid("query", "`query` must not be empty.")),
        Some(other) => {
            return Err(invalid(
                "query",
                &format!("`query` must be a string, not {}.", other.kind()),
            ));
        }
        None => return Err(invalid("query", "`query` is required.")),
    };
    if query.len() > MAX_CONTENT_BYTES {
        return Err(invalid(
            "query",
            &format!("`query` is longer than {MAX_CONTENT_BYTES} bytes."),
        ));
    }
    let limit = match json.get("limit") {
        None | Some(Json::Null) => 10,
        Some(Json::Number(n)) => match n.as_u64() {
            Some(l @ 1..=100) => usize::try_from(l).unwrap_or(10),
            _ => {
                return Err(invalid(
                    "limit",
                    "`limit` must be an integer from 1 to 100.",
                ));
            }
        },
        Some(_) => {
            return Err(invalid(
                "limit",
                "`limit` must be an integer from 1 to 100.",
            ));
        }
    };
    let namespace = match json.get("namespace") {
        None | Some(Json::Null) => None,
        Some(Json::String(ns)) if valid_namespace(ns) => Some(ns.to_string()),
        Some(_) => {
            return Err(invalid(
                "namespace",
                &format!(
                    "`namespace` must be a string of 1 to {MAX_NAMESPACE_BYTES} printable characters."
                ),
            ));
        }
    };
    Ok((query, limit, namespace))
}

/// A memory as the API shows it; `metadata` is spliced in exactly as stored; `superseded_by`
/// names the update that replaced it, when the reader may see that update.
fn memory_json(m: &Memory, score: Option<f32>, superseded_by: Option<&str>) -> Bytes {
    let mut s = String::with_capacity(m.content.len() + 256);
    s.push_str("{\"id\":");
    s.push_str(&json_string(&m.id));
    s.push_str(",\"object\":\"memory\",\"content\":");
    s.push_str(&json_string(&m.content));
    if let Some(score) = score {
        let score = if score.is_finite() { score } else { 0.0 };
        let _ = write!(s, ",\"score\":{score}");
    }
    s.push_str(",\"metadata\":");
    s.push_str(m.metadata.as_deref().unwrap_or("null"));
    s.push_str(",\"classification\":");
    s.push_str(&json_string(&m.label.banner()));
    let _ = write!(s, ",\"created_at\":{}", m.created_at.div_euclid(1000));
    if let Some(by) = superseded_by {
        s.push_str(",\"superseded_by\":");
        s.push_str(&json_string(by));
    }
    s.push('}');
    Bytes::from(s)
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_bodies_are_refused_with_their_field() {
        let code = |r: Result<Added, ApiError>| {
            let e = r.unwrap_err();
            (e.code.to_string(), e.param)
        };
        assert_eq!(code(parse_add(b"[]")).0, "invalid_request");
        assert_eq!(
            code(parse_add(b"{\"content\":\"a\",\"content\":\"b\"}")).0,
            "invalid_json"
        );
        assert_eq!(code(parse_add(b"\xff")).0, "invalid_json");
        assert_eq!(code(parse_add(b"{}")).1.as_deref(), Some("content"));
        assert_eq!(
            code(parse_add(b"{\"content\":5}")).1.as_deref(),
            Some("content")
        );
        assert_eq!(
            code(parse_add(b"{\"content\":\"  \"}")).1.as_deref(),
            Some("content")
        );
        let long = format!("{{\"content\":\"{}\"}}", "a".repeat(MAX_CONTENT_BYTES + 1));
        assert_eq!(
            code(parse_add(long.as_bytes())).1.as_deref(),
            Some("content")
        );
        assert_eq!(
            code(parse_add(b"{\"content\":\"a\",\"metadata\":[1]}"))
                .1
                .as_deref(),
            Some("metadata")
        );
        assert_eq!(
            code(parse_add(
                b"{\"content\":\"a\",\"metadata\":{\"namespace\":7}}"
            ))
            .1
            .as_deref(),
            Some("metadata.namespace")
        );
        assert_eq!(
            code(parse_add(
                b"{\"content\":\"a\",\"metadata\":{\"x\":{\"y\":1,\"y\":2}}}"
            ))
            .0,
            "invalid_json"
        );
        let (c, md, ns) =
            parse_add(br#"{"content":"hi","metadata":{"b":1.5,"a":[true],"namespace":"team"}}"#)
                .unwrap();
        assert_eq!(c, "hi");
        assert_eq!(
            md.as_deref(),
            Some(r#"{"b":1.5,"a":[true],"namespace":"team"}"#)
        );
        assert_eq!(ns.as_deref(), Some("team"));
        for bad in [
            &b"{\"query\":\"x\",\"limit\":0}"[..],
            b"{\"query\":\"x\",\"limit\":101}",
            b"{\"query\":\"x\",\"limit\":1.5}",
            b"{\"query\":\"x\",\"limit\":\"3\"}",
        ] {
            assert_eq!(
                parse_search(bad).unwrap_err().param.as_deref(),
                Some("limit")
            );
        }
        assert_eq!(
            parse_search(b"{}").unwrap_err().param.as_deref(),
            Some("query")
        );
        assert_eq!(parse_search(b"{\"query\":\"x\"}").unwrap().1, 10);
    }
}
