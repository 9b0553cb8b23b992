//! BM25 over normalized terms ([`crate::text::terms`]): an inverted index from term to the
//! slots that hold it, updated on every insert and delete, so a memory is found lexically as
//! soon as it is added.

use std::collections::HashMap;

use crate::visible::Visible;

/// BM25's term-frequency saturation.
const K1: f32 = 1.2;
/// BM25's length normalization.
const B: f32 = 0.75;

/// The inverted index of one tenant.
#[derive(Debug, Default)]
pub(crate) struct Lexical {
    /// Term → (slot, term frequency), in insertion order.
    postings: HashMap<String, Vec<(u32, u32)>>,
    /// Per slot, the document's length in terms (0 for a free slot): read for every posting a
    /// search walks, so it lives apart from the documents.
    lens: Vec<u32>,
    /// Sum of the lengths (in terms) of the live documents.
    total_len: u64,
    /// Live documents.
    docs: u64,
}

impl Lexical {
    /// Indexes `terms` (the document's terms, repeats kept) under `slot`; returns the distinct
    /// terms, which [`Lexical::remove`] needs back.
    pub(crate) fn add(&mut self, slot: u32, terms: &[String]) -> Vec<String> {
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
            self.postings
                .entry(t.to_owned())
                .or_default()
                .push((slot, n));
            distinct.push(t.to_owned());
        }
        self.total_len += terms.len() as u64;
        self.docs += 1;
        distinct
    }

    /// Removes `slot`, which was added with `distinct` terms and `len` terms in all.
    pub(crate) fn remove(&mut self, slot: u32, distinct: &[String], len: u32) {
        for t in distinct {
            if let Some(list) = self.postings.get_mut(t) {
                list.retain(|&(s, _)| s != slot);
                if list.is_empty() {
                    self.postings.remove(t);
                }
            }
        }
        if let Some(l) = self.lens.get_mut(slot as usize) {
            *l = 0;
        }
        self.total_len = self.total_len.saturating_sub(u64::from(len));
        self.docs = self.docs.saturating_sub(1);
    }

    /// BM25 scores of the slots in `visible`, for the distinct `query` terms, accumulated
    /// into `scores` (indexed by slot; its length is the slot count). Returns the slots that
    /// got a score, each once.
    pub(crate) fn score(
        &self,
        query: &[String],
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
            let Some(list) = self.postings.get(t) else {
                continue;
            };
            let df = list.len() as f32;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
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
