//! The `[retention]` section: how long stored responses and conversations are kept, and how
//! often the background purge runs.

use std::time::Duration;

use serde::Deserialize;

use super::{Problem, Section};

/// `[retention]` as written in the file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    /// Days a stored response is kept (1..36500, default 30).
    pub responses_days: Option<i64>,
    /// Days a conversation is kept after it is created (0: until deleted, the default;
    /// 0..36500).
    pub conversations_days: Option<i64>,
    /// How often expired objects are purged, in seconds (1..86400, default 3600).
    pub purge_interval_secs: Option<i64>,
}

/// How long stored state is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionConfig {
    /// `responses_days`: how long a stored response is kept.
    pub responses: Duration,
    /// `conversations_days`: how long a conversation is kept (`None`: until deleted).
    pub conversations: Option<Duration>,
    /// `purge_interval_secs`: how often expired objects are purged.
    pub purge_interval: Duration,
}

const DAY: u64 = 24 * 3600;

impl Default for RetentionConfig {
    fn default() -> RetentionConfig {
        RetentionConfig {
            responses: Duration::from_secs(30 * DAY),
            conversations: None,
            purge_interval: Duration::from_secs(3600),
        }
    }
}

impl RetentionConfig {
    /// Checks the section found at key path `at` (`retention`).
    ///
    /// # Errors
    ///
    /// Every problem, each with its key path.
    pub(super) fn from_raw(raw: RawRetention, at: &str) -> Result<RetentionConfig, Vec<Problem>> {
        let mut r = RetentionConfig::default();
        let mut p = Section::new(at);
        if let Some(days) = p.int_in("responses_days", raw.responses_days, 1, 36500) {
            r.responses = Duration::from_secs(days * DAY);
        }
        if let Some(days) = p.int_in("conversations_days", raw.conversations_days, 0, 36500) {
            r.conversations = (days > 0).then(|| Duration::from_secs(days * DAY));
        }
        if let Some(secs) = p.int_in("purge_interval_secs", raw.purge_interval_secs, 1, 86400) {
            r.purge_interval = Duration::from_secs(secs);
        }
        p.finish(r)
    }
}
