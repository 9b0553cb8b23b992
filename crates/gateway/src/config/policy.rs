//! The `[policy]` section (what each route accepts that Enclave cannot inspect) and the
//! `[metrics]` section.

use enclave_api::{ContentPolicy, PartKind};
use serde::Deserialize;

use super::{Problem, Section};

/// `[policy]` as written in the file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// `[policy.chat_completions]`.
    pub chat_completions: Option<RawChatPolicy>,
    /// `[policy.embeddings]`.
    pub embeddings: Option<RawEmbeddingsPolicy>,
}

/// `[policy.chat_completions]` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChatPolicy {
    /// Content part types accepted although Enclave cannot inspect them: `image_url`,
    /// `input_audio`, `file` (default none).
    pub allow_parts: Option<Vec<String>>,
}

/// `[policy.embeddings]` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmbeddingsPolicy {
    /// Accept token arrays as `input` (default false).
    pub allow_token_arrays: Option<bool>,
}

/// Per-route content policy: which uninspectable content (images, audio, files, token
/// arrays) a route accepts. The default accepts none (`unsupported_content`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyConfig {
    /// `[policy.chat_completions] allow_parts`.
    pub chat_completions: ContentPolicy,
    /// `[policy.embeddings] allow_token_arrays`.
    pub embeddings: ContentPolicy,
}

impl PolicyConfig {
    /// Checks the section found at key path `at` (`policy`).
    ///
    /// # Errors
    ///
    /// Every problem, each with its key path.
    pub(super) fn from_raw(raw: RawPolicy, at: &str) -> Result<PolicyConfig, Vec<Problem>> {
        let mut policy = PolicyConfig::default();
        let mut p = Section::new(at);
        let parts = raw.chat_completions.and_then(|c| c.allow_parts);
        for part in parts.unwrap_or_default() {
            match PartKind::from_type(&part) {
                Some(PartKind::Image) => policy.chat_completions.images = true,
                Some(PartKind::Audio) => policy.chat_completions.audio = true,
                Some(PartKind::File) => policy.chat_completions.files = true,
                None => p.push(
                    "chat_completions.allow_parts",
                    &format!(
                        "unknown part type {part:?}: expected \"image_url\", \"input_audio\" or \"file\""
                    ),
                ),
            }
        }
        if let Some(e) = raw.embeddings {
            policy.embeddings.token_arrays = e.allow_token_arrays.unwrap_or(false);
        }
        p.finish(policy)
    }
}

/// `[metrics]` as written in the file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Require credentials with the `metrics`, `auditor` or `admin` role (default false).
    pub require_auth: Option<bool>,
}

/// The `/metrics` endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Require credentials with the `metrics`, `auditor` or `admin` role (default: open, as
    /// `/healthz`).
    pub require_auth: bool,
}

impl MetricsConfig {
    /// Reads the section (nothing in it can be wrong once deserialized).
    ///
    /// # Errors
    ///
    /// None today; the signature is every section's.
    pub(super) fn from_raw(raw: RawMetrics, _at: &str) -> Result<MetricsConfig, Vec<Problem>> {
        Ok(MetricsConfig {
            require_auth: raw.require_auth.unwrap_or(false),
        })
    }
}
