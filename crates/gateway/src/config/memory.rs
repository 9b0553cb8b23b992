//! The `[memory]` section: long-term memory (recall into chat, the remember queue, search).

use std::time::Duration;

use serde::Deserialize;

use super::{Problem, Section};

/// `[memory]` as written in the file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMemory {
    /// Whether chat requests recall and remember by default: `"on"` or `"off"` (default
    /// `"off"`); a request's `X-Enclave-Memory: on|off` header overrides it.
    pub default: Option<String>,
    /// Most memories recalled into one chat request (1..50, default 5).
    pub recall_limit: Option<i64>,
    /// Most characters of recalled text added to one request (100..100000, default 4000).
    pub recall_max_chars: Option<i64>,
    /// Memories waiting to be stored or embedded before new ones are dropped (1..1000000,
    /// default 10000).
    pub queue: Option<i64>,
    /// Compute embeddings with the in-process all-MiniLM-L6-v2 (default true); without them
    /// retrieval is lexical only.
    pub embeddings: Option<bool>,
    /// A model (its client-facing name, served by a configured backend) asked after each
    /// remembered turn for facts about the user, which update or supersede older memories.
    /// Unset: only the user's statements are remembered.
    pub extractor: Option<String>,
    /// How often this replica reads the store's memory change feed and applies what other
    /// replicas (sharing its database) changed to its index, in milliseconds (100..60000,
    /// default 1000). Search and recall refuse to serve a stale index: after 10 intervals
    /// without a successful read, search answers 503 `memory_unavailable` and recall is
    /// skipped.
    pub sync_interval_ms: Option<i64>,
}

/// Long-term memory settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryConfig {
    /// `default = "on"`: chat requests recall and remember unless their header says off.
    pub default_on: bool,
    /// `recall_limit`.
    pub recall_limit: usize,
    /// `recall_max_chars`.
    pub recall_max_chars: usize,
    /// `queue`.
    pub queue: usize,
    /// `embeddings`.
    pub embeddings: bool,
    /// `extractor`: the model that extracts facts (checked against the backends by the
    /// caller, which knows them).
    pub extractor: Option<String>,
    /// `sync_interval_ms`.
    pub sync_interval: Duration,
}

impl Default for MemoryConfig {
    fn default() -> MemoryConfig {
        MemoryConfig {
            default_on: false,
            recall_limit: 5,
            recall_max_chars: 4000,
            queue: 10_000,
            embeddings: true,
            extractor: None,
            sync_interval: Duration::from_millis(1000),
        }
    }
}

impl MemoryConfig {
    /// Checks the section found at key path `at` (`memory`).
    ///
    /// # Errors
    ///
    /// Every problem, each with its key path.
    pub(super) fn from_raw(raw: RawMemory, at: &str) -> Result<MemoryConfig, Vec<Problem>> {
        let mut c = MemoryConfig::default();
        let mut p = Section::new(at);
        match raw.default.as_deref() {
            None | Some("off") => {}
            Some("on") => c.default_on = true,
            Some(_) => p.push("default", "expected \"on\" or \"off\""),
        }
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        if let Some(v) = p.int_in("recall_limit", raw.recall_limit, 1, 50) {
            c.recall_limit = size(v);
        }
        if let Some(v) = p.int_in("recall_max_chars", raw.recall_max_chars, 100, 100_000) {
            c.recall_max_chars = size(v);
        }
        if let Some(v) = p.int_in("queue", raw.queue, 1, 1_000_000) {
            c.queue = size(v);
        }
        if let Some(v) = p.int_in("sync_interval_ms", raw.sync_interval_ms, 100, 60_000) {
            c.sync_interval = Duration::from_millis(v);
        }
        if let Some(e) = raw.embeddings {
            c.embeddings = e;
        }
        match raw.extractor {
            Some(m) if m.trim().is_empty() => {
                p.push("extractor", "expected the name of a model a backend serves");
            }
            m => c.extractor = m,
        }
        p.finish(c)
    }
}
