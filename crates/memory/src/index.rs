//! The per-tenant memory index and the search over it.

use std::collections::HashMap;
use std::sync::Arc;

use enclave_label::Label;

use crate::dense;
use crate::lexical::{Lexical, ScopeKey};
use crate::text;
use crate::visible::Visible;

/// Longest content indexed, in bytes; a longer record is refused (the gateway bounds bodies
/// well below this).
pub const MAX_CONTENT_BYTES: usize = 64 * 1024;

/// Most results one search returns.
pub const MAX_LIMIT: usize = 100;

/// One memory record as the index holds it (the decrypted row).
#[derive(Clone, Debug, PartialEq)]
pub struct Memory {
    /// Its id, unique in its tenant.
    pub id: String,
    /// The tenant that owns it.
    pub tenant: String,
    /// The principal that wrote it.
    pub principal: String,
    /// A namespace shared within the tenant, if it has one.
    pub namespace: Option<String>,
    /// The label of the session that wrote it (session ⊔ content markings).
    pub label: Label,
    /// When it was written (any monotonic unit; the gateway uses Unix milliseconds).
    pub created_at: i64,
    /// The id of the memory this one replaces, if it said so.
    pub supersedes: Option<String>,
    /// The text.
    pub content: String,
    /// Its metadata as the caller gave it (JSON text, kept byte for byte; not interpreted).
    pub metadata: Option<String>,
}

/// Who reads: a principal of the index's tenant at a session label.
#[derive(Clone, Copy, Debug)]
pub struct Viewer<'a> {
    /// The reading principal.
    pub principal: &'a str,
    /// The session label: only memories whose label it dominates are visible.
    pub label: &'a Label,
    /// For search: the shared namespace to search instead of the principal's own memories.
    pub namespace: Option<&'a str>,
}

/// Which retrieval signals a search uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retrieval {
    /// Embeddings only (records without one are not found).
    Dense,
    /// BM25 and embeddings, fused.
    Hybrid,
    /// BM25 only.
    Lexical,
}

/// How the two ranked lists are fused.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fusion {
    /// A weighted sum of min-max normalized scores: `weight` on the dense score.
    Blend {
        /// Weight of the dense score, 0..=1.
        weight: f32,
    },
    /// Reciprocal rank fusion with constant `k`.
    Rrf {
        /// The RRF constant (60 in the original paper).
        k: f32,
    },
}

/// Tunables of ranking (the defaults are the measured configuration; see docs/BENCHMARKS.md).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// Which signals to use.
    pub retrieval: Retrieval,
    /// How to fuse them.
    pub fusion: Fusion,
    /// Candidates taken from each list before fusion.
    pub depth: usize,
    /// Multiplicative boost for the newest candidate (0 for none; older ones get less,
    /// linearly by age rank among the candidates).
    pub recency: f32,
    /// Similarity (cosine of embeddings; token overlap without them) above which an older
    /// candidate is taken as restated by a newer one of the same scope.
    pub supersede_similarity: f32,
    /// Share of the superseding memory's score an older, restated memory keeps at most.
    pub supersede_keep: f32,
    /// Factor on the score of a memory that asks the assistant something (a question or an
    /// instruction) rather than states something (1 for none).
    pub request_weight: f32,
    /// The recency boost instead of `recency` when the query asks for the present state
    /// ("now", "currently", "these days").
    pub present_recency: f32,
    /// Factor on the score of a memory marked superseded ([`Memories::supersede`]: an update
    /// replaced it), whether or not its successor is among the candidates (1 for none).
    pub superseded_weight: f32,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            retrieval: Retrieval::Hybrid,
            fusion: Fusion::Blend { weight: 0.6 },
            depth: 100,
            recency: 0.05,
            supersede_similarity: 0.5,
            supersede_keep: 0.97,
            request_weight: 0.8,
            present_recency: 0.2,
            superseded_weight: 0.5,
        }
    }
}

/// What a search asks.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    /// The text, for BM25.
    pub text: &'a str,
    /// Its embedding, for dense retrieval (`None`: lexical only).
    pub embedding: Option<&'a [f32]>,
    /// How many results at most (capped at [`MAX_LIMIT`]).
    pub limit: usize,
}

/// One search result.
#[derive(Clone, Debug)]
pub struct Hit {
    /// The memory.
    pub memory: Arc<Memory>,
    /// Its final score (higher is better; comparable only within one search).
    pub score: f32,
}

/// Why the index refused a record or a vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexError {
    /// The content is longer than [`MAX_CONTENT_BYTES`].
    ContentTooLong,
    /// The embedding's length differs from the index's dimensions.
    Dimensions {
        /// The index's dimensions.
        expected: usize,
        /// The vector's length.
        got: usize,
    },
    /// The embedding is zero or not finite.
    DegenerateEmbedding,
}

impl std::fmt::Display for IndexError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IndexError::ContentTooLong => {
                write!(f, "memory content is longer than {MAX_CONTENT_BYTES} bytes")
            }
            IndexError::Dimensions { expected, got } => write!(
                f,
                "embedding has {got} dimensions, the index expects {expected}"
            ),
            IndexError::DegenerateEmbedding => write!(f, "embedding is zero or not finite"),
        }
    }
}

impl std::error::Error for IndexError {}

/// The memories of every tenant, each tenant in its own index: a search never looks at
/// another tenant's records.
#[derive(Debug)]
pub struct Memories {
    dims: usize,
    tenants: HashMap<String, TenantIndex>,
}

impl Memories {
    /// An empty set of indexes for embeddings of `dims` dimensions.
    pub fn new(dims: usize) -> Memories {
        Memories {
            dims,
            tenants: HashMap::new(),
        }
    }

    /// Adds (or replaces, by id) a memory, with its embedding if it has one. It is searchable
    /// lexically at once.
    ///
    /// # Errors
    ///
    /// [`IndexError`] when the content is too long or the embedding unusable; nothing changes.
    pub fn insert(&mut self, memory: Memory, embedding: Option<&[f32]>) -> Result<(), IndexError> {
        let dims = self.dims;
        let index = self
            .tenants
            .entry(memory.tenant.clone())
            .or_insert_with(|| TenantIndex::new(dims));
        index.insert(memory, embedding)
    }

    /// Sets the embedding of memory `id` of `tenant` (when dense indexing lags the insert).
    /// Returns whether the memory exists.
    ///
    /// # Errors
    ///
    /// [`IndexError`] when the vector is unusable.
    pub fn set_embedding(
        &mut self,
        tenant: &str,
        id: &str,
        embedding: &[f32],
    ) -> Result<bool, IndexError> {
        match self.tenants.get_mut(tenant) {
            Some(index) => index.set_embedding(id, embedding),
            None => Ok(false),
        }
    }

    /// Marks memory `id` of `tenant` as replaced by memory `by` (an update of the same fact):
    /// it stays readable by id, and ranks below current memories unless the query asks about
    /// the past. Returns whether the memory exists.
    pub fn supersede(&mut self, tenant: &str, id: &str, by: &str) -> bool {
        self.tenants
            .get_mut(tenant)
            .is_some_and(|index| index.supersede(id, by))
    }

    /// The memory that replaced memory `id` of `tenant`, if one did and `viewer` may read
    /// it (an update above the session is not mentioned).
    pub fn superseded_by(&self, tenant: &str, id: &str, viewer: &Viewer<'_>) -> Option<String> {
        let index = self.tenants.get(tenant)?;
        let slot = *index.by_id.get(id)?;
        let doc = index.slots.get(slot as usize)?.as_ref()?;
        let by = doc.superseded_by.as_deref()?;
        index.get(by, viewer).map(|_| by.to_owned())
    }

    /// Removes memory `id` of `tenant`; returns it if it was there.
    pub fn remove(&mut self, tenant: &str, id: &str) -> Option<Arc<Memory>> {
        self.tenants.get_mut(tenant)?.remove(id)
    }

    /// Removes every memory of `tenant`.
    pub fn remove_tenant(&mut self, tenant: &str) {
        self.tenants.remove(tenant);
    }

    /// Memory `id` of `tenant`, if `viewer` may read it (its label dominated; its own, or in a
    /// namespace). An invisible memory and a missing one both give `None`.
    pub fn get(&self, tenant: &str, id: &str, viewer: &Viewer<'_>) -> Option<Arc<Memory>> {
        self.tenants.get(tenant)?.get(id, viewer)
    }

    /// The memories of `tenant` that `viewer` may see that best answer `query`.
    pub fn search(
        &self,
        tenant: &str,
        viewer: &Viewer<'_>,
        query: &Query<'_>,
        params: &Params,
    ) -> Vec<Hit> {
        match self.tenants.get(tenant) {
            Some(index) => index.search(viewer, query, params),
            None => Vec::new(),
        }
    }

    /// How many memories `tenant` has (all labels and principals: for operators, not callers).
    pub fn len(&self, tenant: &str) -> usize {
        self.tenants.get(tenant).map_or(0, TenantIndex::len)
    }

    /// Whether no tenant has any memory.
    pub fn is_empty(&self) -> bool {
        self.tenants.values().all(|t| t.len() == 0)
    }
}

/// The index of one tenant.
#[derive(Debug)]
struct TenantIndex {
    dims: usize,
    slots: Vec<Option<Doc>>,
    free: Vec<u32>,
    by_id: HashMap<String, u32>,
    lexical: Lexical,
    /// Distinct labels, interned: a search checks dominance once per label, not per record.
    labels: Vec<Label>,
    label_ids: HashMap<Label, u32>,
    /// Principals and namespaces, interned.
    names: HashMap<String, u32>,
    /// The memories of each owner, and of each namespace: a search reads its viewer's scope
    /// only, not the whole tenant.
    owned: HashMap<u32, Scope>,
    shared: HashMap<u32, Scope>,
    /// Per slot, what visibility reads.
    meta: Vec<SlotMeta>,
    /// The slots that have a vector, one bit each.
    with_vector: Vec<u64>,
    /// Words (of 64 bits) in a sign code.
    words: usize,
    /// Byte codes, `dims` per slot, and per slot their scale and error bound
    /// ([`dense::Bytes`]; zeros where a slot has no vector).
    bytes: Vec<i8>,
    bounds: Vec<(f32, f32)>,
    live: usize,
}

/// No name (a memory without a namespace; a viewer the index has never seen).
const NONE: u32 = u32::MAX;

/// Whose a slot is: the scopes that list it.
#[derive(Clone, Copy, Debug)]
struct SlotMeta {
    owner: u32,
    namespace: u32,
}

impl SlotMeta {
    /// The scopes that list the slot: its owner's, and its namespace's if it has one.
    fn scope_keys(self) -> Vec<ScopeKey> {
        let mut keys = vec![ScopeKey::Owner(self.owner)];
        if self.namespace != NONE {
            keys.push(ScopeKey::Namespace(self.namespace));
        }
        keys
    }
}

const EMPTY: SlotMeta = SlotMeta {
    owner: NONE,
    namespace: NONE,
};

#[derive(Debug)]
struct Doc {
    memory: Arc<Memory>,
    label: u32,
    terms: Vec<String>,
    len: u32,
    vector: Option<Box<[f32]>>,
    /// The text asks rather than states ([`text::is_request`]).
    request: bool,
    /// The memory that replaced it.
    superseded_by: Option<String>,
}

impl TenantIndex {
    fn new(dims: usize) -> TenantIndex {
        TenantIndex {
            dims,
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            lexical: Lexical::default(),
            labels: Vec::new(),
            label_ids: HashMap::new(),
            names: HashMap::new(),
            owned: HashMap::new(),
            shared: HashMap::new(),
            meta: Vec::new(),
            with_vector: Vec::new(),
            words: dims.div_ceil(64),
            bytes: Vec::new(),
            bounds: Vec::new(),
            live: 0,
        }
    }

    fn len(&self) -> usize {
        self.live
    }

    fn vector_of(&self, embedding: Option<&[f32]>) -> Result<Option<Box<[f32]>>, IndexError> {
        let Some(e) = embedding else {
            return Ok(None);
        };
        if e.len() != self.dims {
            return Err(IndexError::Dimensions {
                expected: self.dims,
                got: e.len(),
            });
        }
        dense::normalized(e)
            .map(|v| Some(v.into_boxed_slice()))
            .ok_or(IndexError::DegenerateEmbedding)
    }

    fn insert(&mut self, memory: Memory, embedding: Option<&[f32]>) -> Result<(), IndexError> {
        if memory.content.len() > MAX_CONTENT_BYTES {
            return Err(IndexError::ContentTooLong);
        }
        let vector = self.vector_of(embedding)?;
        self.remove(&memory.id);
        let label = match self.label_ids.get(&memory.label) {
            Some(&l) => l,
            None => {
                let l = u32::try_from(self.labels.len()).unwrap_or(u32::MAX);
                self.labels.push(memory.label.clone());
                self.label_ids.insert(memory.label.clone(), l);
                l
            }
        };
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.meta.push(EMPTY);
                if self.with_vector.len() * 64 < self.slots.len() {
                    self.with_vector.push(0);
                }
                self.bytes.extend(std::iter::repeat_n(0, self.dims));
                self.bounds.push((0.0, 0.0));
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let all = text::terms(&memory.content);
        let len = u32::try_from(all.len()).unwrap_or(u32::MAX);
        self.by_id.insert(memory.id.clone(), slot);
        let owner = self.intern(&memory.principal);
        let namespace = memory.namespace.as_deref().map_or(NONE, |n| self.intern(n));
        let meta = SlotMeta { owner, namespace };
        let terms = self.lexical.add(slot, &all, &meta.scope_keys());
        let words = self.words;
        self.owned.entry(owner).or_default().add(slot, label, words);
        if namespace != NONE {
            self.shared
                .entry(namespace)
                .or_default()
                .add(slot, label, words);
        }
        if let Some(m) = self.meta.get_mut(slot as usize) {
            *m = meta;
        }
        let request = text::is_request(&memory.content);
        let doc = Doc {
            memory: Arc::new(memory),
            label,
            terms,
            len,
            vector: None,
            request,
            superseded_by: None,
        };
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = Some(doc);
        }
        self.live += 1;
        if let Some(v) = vector {
            self.put_vector(slot, v);
        }
        Ok(())
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&n) = self.names.get(name) {
            return n;
        }
        let n = u32::try_from(self.names.len()).unwrap_or(NONE - 1);
        self.names.insert(name.to_owned(), n);
        n
    }

    fn put_vector(&mut self, slot: u32, v: Box<[f32]>) {
        if let Some(w) = self.with_vector.get_mut(slot as usize / 64) {
            *w |= 1 << (slot % 64);
        }
        let code = dense::sign_code(&v);
        if let Some(m) = self.meta.get(slot as usize) {
            for (scopes, key) in [(&mut self.owned, m.owner), (&mut self.shared, m.namespace)] {
                if let Some(scope) = scopes.get_mut(&key) {
                    scope.set_code(slot, &code);
                }
            }
        }
        let bytes = dense::to_bytes(&v);
        let start = slot as usize * self.dims;
        if let Some(dst) = self.bytes.get_mut(start..start + self.dims) {
            dst.copy_from_slice(&bytes.codes);
        }
        if let Some(b) = self.bounds.get_mut(slot as usize) {
            *b = (bytes.scale, bytes.error);
        }
        if let Some(Some(doc)) = self.slots.get_mut(slot as usize) {
            doc.vector = Some(v);
        }
    }

    fn set_embedding(&mut self, id: &str, embedding: &[f32]) -> Result<bool, IndexError> {
        let v = self
            .vector_of(Some(embedding))?
            .ok_or(IndexError::DegenerateEmbedding)?;
        let Some(&slot) = self.by_id.get(id) else {
            return Ok(false);
        };
        self.put_vector(slot, v);
        Ok(true)
    }

    fn supersede(&mut self, id: &str, by: &str) -> bool {
        let Some(&slot) = self.by_id.get(id) else {
            return false;
        };
        match self.slots.get_mut(slot as usize) {
            Some(Some(doc)) => {
                doc.superseded_by = Some(by.to_owned());
                true
            }
            _ => false,
        }
    }

    fn remove(&mut self, id: &str) -> Option<Arc<Memory>> {
        let slot = self.by_id.remove(id)?;
        let doc = self.slots.get_mut(slot as usize)?.take()?;
        if let Some(m) = self.meta.get(slot as usize) {
            self.lexical
                .remove(slot, &doc.terms, doc.len, &m.scope_keys());
        }
        if let Some(m) = self.meta.get_mut(slot as usize) {
            for (scopes, key) in [(&mut self.owned, m.owner), (&mut self.shared, m.namespace)] {
                if let Some(scope) = scopes.get_mut(&key) {
                    scope.remove(slot, self.words);
                    if scope.slots.is_empty() {
                        scopes.remove(&key);
                    }
                }
            }
            *m = EMPTY;
        }
        if let Some(w) = self.with_vector.get_mut(slot as usize / 64) {
            *w &= !(1 << (slot % 64));
        }
        let start = slot as usize * self.dims;
        if let Some(dst) = self.bytes.get_mut(start..start + self.dims) {
            dst.fill(0);
        }
        if let Some(b) = self.bounds.get_mut(slot as usize) {
            *b = (0.0, 0.0);
        }
        self.free.push(slot);
        self.live -= 1;
        Some(doc.memory)
    }

    fn get(&self, id: &str, viewer: &Viewer<'_>) -> Option<Arc<Memory>> {
        let slot = *self.by_id.get(id)?;
        let doc = self.slots.get(slot as usize)?.as_ref()?;
        let label = self.labels.get(doc.label as usize)?;
        let m = &doc.memory;
        // SECURITY: a memory above the session label, or another principal's unshared one,
        // is answered exactly like a missing id.
        let mine = m.principal == viewer.principal || m.namespace.is_some();
        (mine && viewer.label.dominates(label)).then(|| Arc::clone(m))
    }

    /// The scope a search by `viewer` reads: its own memories, or the namespace it searches.
    fn scope(&self, viewer: &Viewer<'_>) -> Option<(ScopeKey, &Scope)> {
        // SECURITY: a viewer or namespace the index has never seen has no scope.
        match viewer.namespace {
            None => {
                let n = *self.names.get(viewer.principal)?;
                Some((ScopeKey::Owner(n), self.owned.get(&n)?))
            }
            Some(ns) => {
                let n = *self.names.get(ns)?;
                Some((ScopeKey::Namespace(n), self.shared.get(&n)?))
            }
        }
    }

    /// The slots `viewer` may see in a search: those of its scope with a label its session
    /// label dominates.
    fn visible(&self, viewer: &Viewer<'_>, scope: Option<&Scope>) -> Visible {
        let mut visible = Visible::new(self.slots.len());
        let Some(scope) = scope else {
            return visible;
        };
        let allowed: Vec<bool> = self
            .labels
            .iter()
            .map(|l| viewer.label.dominates(l))
            .collect();
        for (&slot, &label) in scope.slots.iter().zip(&scope.labels) {
            if allowed.get(label as usize).copied().unwrap_or(false) {
                visible.insert(slot);
            }
        }
        visible
    }

    fn search(&self, viewer: &Viewer<'_>, query: &Query<'_>, params: &Params) -> Vec<Hit> {
        let limit = query.limit.clamp(1, MAX_LIMIT);
        let scope = self.scope(viewer);
        let visible = self.visible(viewer, scope.map(|(_, s)| s));
        let depth = params.depth.max(limit);
        let lexical = match scope {
            Some((key, _)) if params.retrieval != Retrieval::Dense => {
                self.lexical_top(query.text, key, &visible, depth)
            }
            _ => Vec::new(),
        };
        let dense = match (params.retrieval, query.embedding) {
            (Retrieval::Lexical, _) | (_, None) => Vec::new(),
            (_, Some(q)) => match dense::normalized(q).filter(|q| q.len() == self.dims) {
                Some(q) => self.dense_top(&q, scope.map(|(_, s)| s), &visible, depth),
                None => Vec::new(),
            },
        };
        let mut fused = fuse(&lexical, &dense, params.fusion);
        self.rerank(&mut fused, params, text::tense(query.text), &visible);
        fused.truncate(limit);
        fused
            .into_iter()
            .filter_map(|(slot, score)| {
                let doc = self.slots.get(slot as usize)?.as_ref()?;
                Some(Hit {
                    memory: Arc::clone(&doc.memory),
                    score,
                })
            })
            .collect()
    }

    fn lexical_top(
        &self,
        text: &str,
        scope: ScopeKey,
        visible: &Visible,
        depth: usize,
    ) -> Vec<(u32, f32)> {
        let terms = text::terms(text);
        if terms.is_empty() {
            return Vec::new();
        }
        let mut scores = vec![0.0f32; self.slots.len()];
        let touched = self.lexical.score(&terms, scope, visible, &mut scores);
        let scored = touched
            .into_iter()
            .map(|s| (s, scores.get(s as usize).copied().unwrap_or(0.0)))
            .collect();
        top(scored, depth)
    }

    /// The `depth` best visible slots by cosine to the unit vector `q`, best first; `scope`
    /// is the one `visible` was made from.
    fn dense_top(
        &self,
        q: &[f32],
        scope: Option<&Scope>,
        visible: &Visible,
        depth: usize,
    ) -> Vec<(u32, f32)> {
        let vector = |slot: u32| -> Option<&[f32]> {
            match self.slots.get(slot as usize) {
                Some(Some(d)) => d.vector.as_deref(),
                _ => None,
            }
        };
        let has_vector = |s: u32| {
            self.with_vector
                .get(s as usize / 64)
                .is_some_and(|w| w & (1 << (s % 64)) != 0)
        };
        // SECURITY: only visible slots are ranked; an invisible vector is never looked at.
        let mut candidates: Vec<u32> = if self.live <= dense::EXACT_UP_TO {
            visible.iter().filter(|&s| has_vector(s)).collect()
        } else {
            let code = dense::sign_code(q);
            // (distance, slot) packed in one word, so that selecting on the word orders by
            // distance, then slot. The scope's codes are read front to back.
            let mut near: Vec<u64> = Vec::new();
            if let Some(scope) = scope {
                let codes = scope.codes.chunks_exact(self.words.max(1));
                for (&s, c) in scope.slots.iter().zip(codes) {
                    if visible.contains(s) && has_vector(s) {
                        near.push((u64::from(dense::hamming(c, &code)) << 32) | u64::from(s));
                    }
                }
            }
            let keep = dense::RESCORE.max(depth);
            if near.len() > keep {
                near.select_nth_unstable(keep);
                near.truncate(keep);
            }
            near.into_iter().map(|k| (k & 0xffff_ffff) as u32).collect()
        };
        // In slot order, so the codes and vectors are read in address order.
        candidates.sort_unstable();
        let exact = |s: u32| vector(s).map(|v| (s, dense::dot(q, v)));
        let Some(nth) = depth.checked_sub(1) else {
            return Vec::new();
        };
        if candidates.len() <= depth {
            return top(candidates.into_iter().filter_map(exact).collect(), depth);
        }
        // Each candidate's exact score lies in [low, high]. At least `depth` candidates score
        // at least `tau`, the depth-th best low, so one whose high is below it cannot be among
        // the `depth` best: only the others are scored exactly.
        let row = |s: u32| {
            let start = s as usize * self.dims;
            let codes = self.bytes.get(start..start + self.dims)?;
            Some((codes, *self.bounds.get(s as usize)?))
        };
        let mut bounds: Vec<(u32, f32, f32)> = Vec::with_capacity(candidates.len());
        let mut push = |s: u32, scored: Option<(f32, (f32, f32))>| {
            bounds.push(match scored {
                Some((dot, (scale, error))) => {
                    let approx = scale * dot;
                    let e = error + dense::SLACK;
                    (s, approx - e, approx + e)
                }
                None => (s, f32::NEG_INFINITY, f32::INFINITY),
            });
        };
        let one = |s: u32| row(s).map(|(codes, b)| (dense::dot_bytes(q, codes), b));
        let groups = candidates.chunks_exact(4);
        for &s in groups.remainder() {
            push(s, one(s));
        }
        for group in groups {
            let &[s0, s1, s2, s3] = group else {
                continue;
            };
            // Four rows at a time, so that their cache misses overlap.
            if let (Some(r0), Some(r1), Some(r2), Some(r3)) = (row(s0), row(s1), row(s2), row(s3)) {
                let [d0, d1, d2, d3] = dense::dot_bytes4(q, [r0.0, r1.0, r2.0, r3.0]);
                push(s0, Some((d0, r0.1)));
                push(s1, Some((d1, r1.1)));
                push(s2, Some((d2, r2.1)));
                push(s3, Some((d3, r3.1)));
            } else {
                for s in [s0, s1, s2, s3] {
                    push(s, one(s));
                }
            }
        }
        let mut lows: Vec<f32> = bounds.iter().map(|b| b.1).collect();
        let (_, &mut tau, _) = lows.select_nth_unstable_by(nth, |a, b| b.total_cmp(a));
        let scored = bounds
            .into_iter()
            .filter(|&(_, _, high)| high >= tau)
            .filter_map(|(s, _, _)| exact(s))
            .collect();
        top(scored, depth)
    }

    /// Recency and supersession over the fused candidates (sorted best first on return).
    fn rerank(
        &self,
        fused: &mut [(u32, f32)],
        params: &Params,
        tense: text::Tense,
        visible: &Visible,
    ) {
        let doc = |slot: u32| self.slots.get(slot as usize).and_then(Option::as_ref);
        if params.request_weight != 1.0 {
            for (s, score) in fused.iter_mut() {
                if doc(*s).is_some_and(|d| d.request) {
                    *score *= params.request_weight;
                }
            }
        }
        // A memory an update replaced ranks lower, unless the question is about the past.
        // SECURITY: only when the viewer may see the update: a lower session learns nothing
        // of a higher one from its ranking.
        if params.superseded_weight != 1.0 && tense != text::Tense::Past {
            for (s, score) in fused.iter_mut() {
                let by = doc(*s).and_then(|d| d.superseded_by.as_deref());
                if by
                    .and_then(|id| self.by_id.get(id))
                    .is_some_and(|&b| visible.contains(b))
                {
                    *score *= params.superseded_weight;
                }
            }
        }
        // A question about the past wants what was replaced: no recency, no supersession.
        let recency = match tense {
            text::Tense::Present => params.present_recency,
            text::Tense::Unmarked => params.recency,
            text::Tense::Past => 0.0,
        };
        if recency > 0.0 && fused.len() > 1 {
            let mut by_age: Vec<(i64, u32)> = fused
                .iter()
                .filter_map(|&(s, _)| doc(s).map(|d| (d.memory.created_at, s)))
                .collect();
            by_age.sort_unstable();
            let n = by_age.len().max(2) as f32 - 1.0;
            let rank: HashMap<u32, f32> = by_age
                .iter()
                .enumerate()
                .map(|(i, &(_, s))| (s, i as f32 / n))
                .collect();
            for (s, score) in fused.iter_mut() {
                *score *= 1.0 + recency * rank.get(s).copied().unwrap_or(0.0);
            }
        }
        sort_best_first(fused);
        if tense == text::Tense::Past {
            return;
        }
        // Supersession: among the leading candidates, an older memory restated by a newer one
        // of the same scope ranks below it.
        let head = fused.len().min(SUPERSEDE_WINDOW);
        let mut changed = false;
        for i in 0..head {
            for j in 0..head {
                let (Some(&(si, _)), Some(&(sj, sj_score))) = (fused.get(i), fused.get(j)) else {
                    continue;
                };
                if i == j {
                    continue;
                }
                let (Some(old), Some(new)) = (doc(si), doc(sj)) else {
                    continue;
                };
                if !self.restates(new, old, params) {
                    continue;
                }
                let cap = sj_score * params.supersede_keep;
                if let Some(entry) = fused.get_mut(i)
                    && entry.1 > cap
                {
                    entry.1 = cap;
                    changed = true;
                }
            }
        }
        if changed {
            sort_best_first(fused);
        }
    }

    /// Whether `new` restates (supersedes) `old`: explicitly, or newer, of the same scope and
    /// similar enough.
    fn restates(&self, new: &Doc, old: &Doc, params: &Params) -> bool {
        let (n, o) = (&new.memory, &old.memory);
        if n.supersedes.as_deref() == Some(o.id.as_str())
            || old.superseded_by.as_deref() == Some(n.id.as_str())
        {
            return true;
        }
        if n.created_at <= o.created_at || n.principal != o.principal || n.namespace != o.namespace
        {
            return false;
        }
        let sim = match (&new.vector, &old.vector) {
            (Some(a), Some(b)) => dense::dot(a, b),
            _ => overlap(&new.terms, &old.terms),
        };
        sim >= params.supersede_similarity
    }
}

/// The memories of one owner, or of one namespace: their slots ascending, and beside each
/// what a search reads first — its label, and its sign code (`words` per slot; zeros until
/// it has a vector) — so that a search reads its scope front to back.
#[derive(Debug, Default)]
struct Scope {
    slots: Vec<u32>,
    labels: Vec<u32>,
    codes: Vec<u64>,
}

impl Scope {
    fn add(&mut self, slot: u32, label: u32, words: usize) {
        let Err(at) = self.slots.binary_search(&slot) else {
            return;
        };
        self.slots.insert(at, slot);
        self.labels.insert(at, label);
        let start = (at * words).min(self.codes.len());
        self.codes
            .splice(start..start, std::iter::repeat_n(0, words));
    }

    fn remove(&mut self, slot: u32, words: usize) {
        let Ok(at) = self.slots.binary_search(&slot) else {
            return;
        };
        self.slots.remove(at);
        self.labels.remove(at);
        let start = at * words;
        if start + words <= self.codes.len() {
            self.codes.drain(start..start + words);
        }
    }

    fn set_code(&mut self, slot: u32, code: &[u64]) {
        let Ok(at) = self.slots.binary_search(&slot) else {
            return;
        };
        let start = at * code.len();
        if let Some(dst) = self.codes.get_mut(start..start + code.len()) {
            dst.copy_from_slice(code);
        }
    }
}

/// Candidates looked at for supersession (pairs among them are compared).
const SUPERSEDE_WINDOW: usize = 30;

/// Share of the smaller term set found in the other (0..=1).
fn overlap(a: &[String], b: &[String]) -> f32 {
    let small = a.len().min(b.len());
    if small == 0 {
        return 0.0;
    }
    let common = a.iter().filter(|t| b.contains(t)).count();
    common as f32 / small as f32
}

fn sort_best_first(v: &mut [(u32, f32)]) {
    v.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
}

/// The `n` best of `scored`, best first.
fn top(mut scored: Vec<(u32, f32)>, n: usize) -> Vec<(u32, f32)> {
    if scored.len() > n {
        scored.select_nth_unstable_by(n, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(n);
    }
    sort_best_first(&mut scored);
    scored
}

/// One list from the lexical and dense lists (each best first), best first.
fn fuse(lexical: &[(u32, f32)], dense: &[(u32, f32)], fusion: Fusion) -> Vec<(u32, f32)> {
    let mut out: HashMap<u32, f32> = HashMap::new();
    match fusion {
        Fusion::Rrf { k } => {
            for list in [lexical, dense] {
                for (rank, &(s, _)) in list.iter().enumerate() {
                    *out.entry(s).or_default() += 1.0 / (k + rank as f32 + 1.0);
                }
            }
        }
        Fusion::Blend { weight } => {
            let weight = weight.clamp(0.0, 1.0);
            let w = |list: &[(u32, f32)]| {
                if list.is_empty() {
                    0.0
                } else if std::ptr::eq(list, dense) {
                    if lexical.is_empty() { 1.0 } else { weight }
                } else if dense.is_empty() {
                    1.0
                } else {
                    1.0 - weight
                }
            };
            for list in [lexical, dense] {
                let wl = w(list);
                let max = list.first().map_or(0.0, |x| x.1);
                let min = list.last().map_or(0.0, |x| x.1);
                // Lexical scores are normalized by the best one (a lone match keeps its full
                // weight); cosine scores min-max over the candidates.
                let (lo, span) = if std::ptr::eq(list, dense) {
                    (min, (max - min).max(1e-6))
                } else {
                    (0.0, max.max(1e-6))
                };
                for &(s, score) in list {
                    *out.entry(s).or_default() += wl * ((score - lo) / span);
                }
            }
        }
    }
    let mut v: Vec<(u32, f32)> = out.into_iter().collect();
    sort_best_first(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(x: &mut u64, dims: usize) -> Vec<f32> {
        (0..dims)
            .map(|_| {
                *x ^= *x >> 12;
                *x ^= *x << 25;
                *x ^= *x >> 27;
                (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn pruned_rescoring_ranks_exactly_like_scoring_every_candidate() {
        let dims = 384;
        let mut x = 0x0123_4567_89AB_CDEFu64;
        let mut index = TenantIndex::new(dims);
        let label = Label::unclassified();
        for i in 0..3000 {
            let memory = Memory {
                id: format!("m{i}"),
                tenant: "t".into(),
                principal: if i % 3 == 0 { "bob" } else { "alice" }.into(),
                namespace: None,
                label: label.clone(),
                created_at: i,
                supersedes: None,
                content: format!("memory {i}"),
                metadata: None,
            };
            let v = unit(&mut x, dims);
            index.insert(memory, Some(&v)).unwrap();
        }
        // Near-duplicates, so that bounds overlap and ties in the codes occur.
        let base = unit(&mut x, dims);
        for i in 0..50 {
            let mut v = base.clone();
            v[i] += 0.001;
            let id = format!("m{i}");
            index.set_embedding(&id, &v).unwrap();
        }
        let viewer = Viewer {
            principal: "alice",
            label: &label,
            namespace: None,
        };
        let scope = index.scope(&viewer).map(|(_, s)| s);
        let visible = index.visible(&viewer, scope);
        for (k, q) in (0..20)
            .map(|_| unit(&mut x, dims))
            .chain([base])
            .enumerate()
        {
            let q = dense::normalized(&q).unwrap();
            for depth in [1, 10, 100, 2000, 5000] {
                let all: Vec<(u32, f32)> = visible
                    .iter()
                    .filter_map(|s| {
                        let doc = index.slots[s as usize].as_ref()?;
                        Some((s, dense::dot(&q, doc.vector.as_deref()?)))
                    })
                    .collect();
                assert_eq!(
                    index.dense_top(&q, scope, &visible, depth),
                    top(all, depth),
                    "query {k}, depth {depth}"
                );
            }
        }
    }
}
