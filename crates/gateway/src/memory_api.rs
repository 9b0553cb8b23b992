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

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use enclave_api::json::Json;
use enclave_label::Label;
use enclave_local::weights::ModelsDir;
use enclave_memory::{DIMENSIONS, Hit, Memories, Memory, Params, Query, Viewer};
use enclave_models::local::{EMBED_MODEL, LocalEngine};
use enclave_store::{Store, StoreError, StoredMemory};
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

/// How long recall waits for a query embedding before searching lexically only.
const RECALL_EMBED_WAIT: Duration = Duration::from_millis(250);

/// The long-term memory service: the in-memory index and the queue of work done after the
/// request (storing remembered statements, computing embeddings).
pub struct MemoryService {
    index: RwLock<Memories>,
    store: Store,
    config: MemoryConfig,
    jobs: mpsc::Sender<Job>,
    /// The embedding model: the local backend's, or one loaded on first use.
    engine: OnceLock<Option<Arc<LocalEngine>>>,
    shared_engine: Option<Arc<LocalEngine>>,
    models_dir: ModelsDir,
    dropped: AtomicBool,
    rng: SystemRandom,
    /// `[memory] extractor`: the model asked for facts after each remembered turn.
    extractor: Option<Extractor>,
}

impl std::fmt::Debug for MemoryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryService")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Work done off the request path.
enum Job {
    /// Store and index a statement from a chat turn, then extract facts from the turn (the
    /// statement and, when known, the answer).
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
        local: Option<Arc<LocalEngine>>,
        extractor: Option<Extractor>,
    ) -> Result<Arc<MemoryService>, String> {
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
        let (tx, rx) = mpsc::channel(config.queue);
        let service = Arc::new(MemoryService {
            index: RwLock::new(index),
            store,
            config,
            jobs: tx,
            engine: OnceLock::new(),
            shared_engine: local,
            models_dir,
            dropped: AtomicBool::new(false),
            rng: SystemRandom::new(),
            extractor,
        });
        let worker = Arc::downgrade(&service);
        std::thread::Builder::new()
            .name("enclave-memory".into())
            .spawn(move || run_worker(&worker, rx))
            .map_err(|e| format!("starting the memory worker: {e}"))?;
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
    pub async fn search(
        &self,
        tenant: &str,
        viewer: &Viewer<'_>,
        text: &str,
        limit: usize,
    ) -> Vec<Hit> {
        let embedding = self.embed_query(text).await;
        let query = Query {
            text,
            embedding: embedding.as_deref(),
            limit,
        };
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .search(tenant, viewer, &query, &Params::default())
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
        if !purged.is_empty() {
            let mut index = self.index_write();
            for (tenant, id) in &purged {
                index.remove(tenant, id);
            }
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

    fn enqueue(&self, job: Job) -> bool {
        match self.jobs.try_send(job) {
            Ok(()) => true,
            Err(_) => {
                if !self.dropped.swap(true, Ordering::Relaxed) {
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

    async fn embed_query(&self, text: &str) -> Option<Vec<f32>> {
        let engine = self.loaded_engine()?;
        let job = engine.embed(vec![text.to_owned()]);
        match tokio::time::timeout(RECALL_EMBED_WAIT, job).await {
            Ok(Ok((mut v, _))) => v.pop(),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "query embedding failed; searching lexically");
                None
            }
            Err(_) => None,
        }
    }

    /// Loads the embedding model on the worker thread, once: the local backend's if it
    /// serves embeddings, else one of its own from the models directory.
    fn engine_blocking(&self) -> Option<&Arc<LocalEngine>> {
        if !self.config.embeddings {
            return None;
        }
        self.engine
            .get_or_init(|| {
                if let Some(e) = &self.shared_engine
                    && e.embed_blocking(&["probe"]).is_ok()
                {
                    return Some(Arc::clone(e));
                }
                match LocalEngine::start(&self.models_dir, &[EMBED_MODEL.to_owned()], 64) {
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

/// The background worker: stores remembered statements and computes embeddings, one job at a
/// time, on its own thread (never on a request's event loop). Ends when the service is gone.
fn run_worker(service: &std::sync::Weak<MemoryService>, mut rx: mpsc::Receiver<Job>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "the memory worker could not start");
            return;
        }
    };
    runtime.block_on(async move {
        while let Some(job) = rx.recv().await {
            let Some(s) = service.upgrade() else { return };
            match job {
                Job::Remember { statement, answer } => {
                    if let Err(e) = s.store.add_memory(&statement).await {
                        tracing::error!(error = %e, "a remembered statement could not be stored");
                        continue;
                    }
                    let m = statement.clone();
                    let (tenant, id, content) = (m.tenant.clone(), m.id.clone(), m.content.clone());
                    if let Some(memory) = to_memory(m)
                        && let Err(e) = s.index_write().insert(memory, None)
                    {
                        tracing::warn!(error = %e, "a remembered statement was not indexed");
                    }
                    embed_one(&s, &tenant, &id, &content).await;
                    if let Some(extractor) = &s.extractor {
                        extract_facts(&s, extractor, &statement, answer.as_deref()).await;
                    }
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
            tracing::warn!(error = %e, "a memory embedding failed");
            return;
        }
    };
    match s.store.set_memory_embedding(tenant, id, &vector).await {
        Ok(true) => {
            if let Err(e) = s.index_write().set_embedding(tenant, id, &vector) {
                tracing::warn!(error = %e, "a memory embedding was not indexed");
            }
        }
        // Deleted meanwhile.
        Ok(false) => {}
        Err(e) => tracing::error!(error = %e, "a memory embedding could not be stored"),
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
    let facts = match extractor.extract(&label, &statement.content, answer).await {
        Extracted::Facts(f) => f,
        Extracted::NoAccreditedBackend => {
            tracing::warn!(
                model = %extractor.model(),
                label = %statement.label,
                "no backend serving the memory extractor is accredited for the turn's label: facts not extracted"
            );
            return;
        }
        Extracted::Failed => return,
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
            tracing::error!(error = %e, "an extracted fact could not be stored");
            continue;
        }
        stored += 1;
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
            let hits = service.search(&tenant, &viewer, &query, limit).await;
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
                service.index_write().remove(&tenant, id);
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
