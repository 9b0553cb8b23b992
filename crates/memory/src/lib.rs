//! Long-term memory retrieval for Enclave: an in-memory index per tenant, searched with BM25
//! over normalized terms and cosine over sentence embeddings (all-MiniLM-L6-v2, 384
//! dimensions, computed by the caller), fused, then re-ranked with recency and supersession
//! so that a newer statement of a fact ranks above the one it replaced.
//!
//! Every search is filtered **before** ranking: a record of another tenant is in another
//! index, and a record whose label the session label does not dominate, or of another
//! principal (outside a shared namespace), gets no score at all — it can neither be returned
//! nor move another record's rank or normalization.
//!
//! What this crate is not: storage. The index holds decrypted records in memory only; the
//! gateway rebuilds it from the encrypted store at start and keeps it in step with every
//! write, so no plaintext search structure ever reaches the disk. It does no I/O, no async,
//! and reads no clock: times are given.
//!
//! ```
//! use enclave_label::Label;
//! use enclave_memory::{Memories, Memory, Params, Query, Viewer};
//!
//! let mut memories = Memories::new(3);
//! let secret: Label = "SECRET".parse().unwrap();
//! memories.insert(Memory {
//!     id: "mem_1".into(), tenant: "agency-a".into(), principal: "alice".into(),
//!     namespace: None, label: secret.clone(), created_at: 1, supersedes: None,
//!     content: "The quarterly assessment is due 9 August.".into(), metadata: None,
//! }, None).unwrap();
//!
//! let query = Query { text: "when is the assessment due", embedding: None, limit: 5 };
//! let at = |label| Viewer { principal: "alice", label, namespace: None };
//! let found = memories.search("agency-a", &at(&secret), &query, &Params::default());
//! assert_eq!(found[0].memory.id, "mem_1");
//! // Below the record's label, or in another tenant, it does not exist.
//! let unclassified = Label::unclassified();
//! assert!(memories.search("agency-a", &at(&unclassified), &query, &Params::default()).is_empty());
//! assert!(memories.search("agency-b", &at(&secret), &query, &Params::default()).is_empty());
//! ```

mod dense;
mod index;
mod lexical;
pub mod text;
mod visible;

pub use index::{
    Fusion, Hit, IndexError, MAX_CONTENT_BYTES, MAX_LIMIT, Memories, Memory, Params, Query,
    Retrieval, Viewer,
};

/// Length of an all-MiniLM-L6-v2 embedding, the dimensions the gateway's index uses.
pub const DIMENSIONS: usize = 384;
