//! The Enclave safety stack: text (or a stream of chunks) in, a [`Verdict`] out.
//!
//! It scores the [`Category`] set — OpenAI's moderation categories plus Enclave's contract
//! categories (`surveillance/us-persons`, `weapons/autonomous-targeting`), `weapons/cbrn`,
//! `cyber/offensive`, `prompt-injection`, `pii`, `secrets` and `classified-marking` — with a
//! cascade: deterministic detectors and cheap trained models on every text (inline), the
//! sentence-embedding model with trained heads only on what the inline stages leave uncertain
//! (contextual). A policy pack turns scores into actions (`allow`, `flag`, `redact`, `block`,
//! `review`).
//!
//! Pure: no I/O, no async, no clock. Model weights and packs are parsed from bytes and text the
//! caller read; the sentence embedding model is reached through [`Embed`].

#![deny(clippy::indexing_slicing)]

mod category;
mod classifier;

pub use category::{Category, Scores};
pub use classifier::{Classifier, Embed};

/// What the screen decided about a text (filled in by the engine).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verdict {
    /// Calibrated score per category.
    pub scores: Scores,
}
