//! BM25 over normalized terms ([`crate::text::terms`]): an inverted index from term to the
//! slots that hold it, updated on every insert and delete, so a memory is found lexically as
//! soon as it is added. Each term's postings are kept per scope (owner, and namespace for a
//! shared memory), so a search walks only the postings of the scope it reads; document
//! frequencies and lengths stay those of the whole tenant.

use std::collections::HashMap;

use crate::visible::Visible;

/// BM25's term-frequency saturation.
const K1: f32 = 1.2;
/// BM25's length normalization.
const B: f32 = 0.75;

/// Which postings a search walks: those of one owner's memories, or of one namespace's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ScopeKey {
    /// The memories a principal wrote (interned name).
    Owner(u32),
    /// The memories of a namespace (interned name).
    Namespace(u32),
}

/// The inverted index of one tenant.
#[derive(Debug, Default)]
pub(crate) struct Lexical {
    /// Term → its postings.
    postings: HashMap<String, Postings>,
    /// Per slot, the document's length in terms (0 for a free slot): read for every posting a
    /// search walks, so it lives apart from the documents.
    lens: Vec<u32>,
    /// Sum of the lengths (in terms) of the live documents.
    total_len: u64,
    /// Live documents.
    docs: u64,
}

/// The postings of one term.
#[derive(Debug, Default)]
struct Postings {
    /// Live documents of the tenant that hold the term.
    df: u32,
    /// Scope → (slot, term frequency), in insertion order.
    by_scope: HashMap<ScopeKey, Vec<(u32, u32)>>,
}

impl Lexical {
    /// Indexes `terms` (the document's terms, repeats kept) under `slot`, in `scopes`; returns
    /// the distinct terms, which [`Lexical::remove`] needs back.
    pub(crate) fn add(&mut self, slot: u32, terms: &[String], scopes: &[ScopeKey]) -> Vec<String> {
        let mut tf: HashMap<&str, u32> = HashMap::new();
        for t in terms {
            *tf.entry(t.as_str()).or_default() += 1;
        }
        let len = u32::try_from(terms.len()).unwrap_or(u32::MAX);
        let at = slot as usize;
        if self.lens.len() <= at {
            self.lens.resize(at + 1, 0);
        }
        if let Some(l) = self.lens.get_mut(at) {
            *l = len;
        }
        let mut distinct = Vec::with_capacity(tf.len());
        for (t, n) in tf {
            let postings = self.postings.entry(t.to_owned()).or_default();
            postings.df += 1;
            for &scope in scopes {
                postings.by_scope.entry(scope).or_default().push((slot, n));
            }
            distinct.push(t.to_owned());
        }
        self.total_len += terms.len() as u64;
        self.docs += 1;
        distinct
    }

    /// Removes `slot`, which was added with `distinct` terms, `len` terms in all, in `scopes`.
    pub(crate) fn remove(&mut self, slot: u32, distinct: &[String], len: u32, scopes: &[ScopeKey]) {
        for t in distinct {
            let Some(postings) = self.postings.get_mut(t) else {
                continue;
            };
            postings.df = postings.df.saturating_sub(1);
            for scope in scopes {
                if let Some(list) = postings.by_scope.get_mut(scope) {
                    list.retain(|&(s, _)| s != slot);
                    if list.is_empty() {
                        postings.by_scope.remove(scope);
                    }
                }
            }
            if postings.df == 0 {
                self.postings.remove(t);
            }
        }
        if let Some(l) = self.lens.get_mut(slot as usize) {
            *l = 0;
        }
        self.total_len = self.total_len.saturating_sub(u64::from(len));
        self.docs = self.docs.saturating_sub(1);
    }

    /// BM25 scores of the slots of `scope` in `visible`, for the distinct `query` terms,
    /// accumulated into `scores` (indexed by slot; its length is the slot count). Returns the
    /// slots that got a score, each once.
    pub(crate) fn score(
        &self,
        query: &[String],
        scope: ScopeKey,
        visible: &Visible,
        scores: &mut [f32],
    ) -> Vec<u32> {
        let mut touched = Vec::new();
        if self.docs == 0 {
            return touched;
        }
        let n = self.docs as f32;
        let avg = (self.total_len as f32 / n).max(1.0);
        let mut seen: Vec<&str> = Vec::with_capacity(query.len());
        for t in query {
            if seen.contains(&t.as_str()) {
                continue;
            }
            seen.push(t);
            let Some(postings) = self.postings.get(t) else {
                continue;
            };
            let df = postings.df as f32;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            let list = postings.by_scope.get(&scope).map_or(&[][..], Vec::as_slice);
            for &(slot, tf) in list {
                // SECURITY: invisible documents get no score at all, so they cannot take a
                // place in the ranking or influence normalization.
                if !visible.contains(slot) {
                    continue;
                }
                let (Some(s), Some(&len)) =
                    (scores.get_mut(slot as usize), self.lens.get(slot as usize))
                else {
                    continue;
                };
                let tf = tf as f32;
                let len = len as f32;
                let add = idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / avg));
                if *s == 0.0 {
                    touched.push(slot);
                }
                *s += add;
            }
        }
        touched
    }
}
