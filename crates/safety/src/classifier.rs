//! The interfaces between the screen and the models that score text.
//!
//! The crate is pure: model weights are loaded at the edge (the gateway or the CLI reads the
//! files and hands their bytes to the constructors here), and the sentence embedding model —
//! which runs on the embedded-model worker threads — is reached through [`Embed`], which the
//! caller implements.

use crate::category::Scores;

/// A stage that scores a whole text for every category it knows (the others stay 0).
///
/// Implementations read the **whole** text — windows over long inputs, never truncation: an
/// attacker appends — and return calibrated probabilities.
pub trait Classifier: Send + Sync {
    /// The stage's name (`ngram`, `static-embedding`, `contextual`), for logs and evaluation.
    fn name(&self) -> &'static str;

    /// Scores `text`.
    fn score(&self, text: &str) -> Scores;
}

/// Sentence embeddings (all-MiniLM-L6-v2, 384 dimensions, L2-normalized), provided by the
/// caller. Blocking: the screen calls it only for the contextual stage and for denied topics.
pub trait Embed: Send + Sync {
    /// One vector per text.
    ///
    /// # Errors
    ///
    /// A message when the model failed (the screen then fails closed).
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String>;
}
