//! The `[retention]` section: how long stored responses, conversations and memories are kept,
//! for every tenant and for the tenants named in `[retention.tenants.<tenant>]`, and how often
//! the background purge runs.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::walk::child_key;
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
    /// Days a memory is kept after it is written (0: until deleted, the default; 0..36500).
    pub memories_days: Option<i64>,
    /// How often expired objects are purged, in seconds (1..86400, default 3600).
    pub purge_interval_secs: Option<i64>,
    /// `[retention.tenants.<tenant>]`: a tenant's own retention; a key it leaves out is the
    /// global one.
    pub tenants: Option<BTreeMap<String, RawTenantRetention>>,
}

/// `[retention.tenants.<tenant>]` as written in the file: the same `*_days` keys as
/// `[retention]`, with the same ranges.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenantRetention {
    /// Days this tenant's stored responses are kept (1..36500).
    pub responses_days: Option<i64>,
    /// Days this tenant's conversations are kept (0: until deleted; 0..36500).
    pub conversations_days: Option<i64>,
    /// Days this tenant's memories are kept (0: until deleted; 0..36500).
    pub memories_days: Option<i64>,
}

/// How long stored state is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionConfig {
    /// `responses_days`: how long a stored response is kept.
    pub responses: Duration,
    /// `conversations_days`: how long a conversation is kept (`None`: until deleted).
    pub conversations: Option<Duration>,
    /// `memories_days`: how long a memory is kept (`None`: until deleted).
    pub memories: Option<Duration>,
    /// `purge_interval_secs`: how often expired objects are purged.
    pub purge_interval: Duration,
    /// `[retention.tenants.<tenant>]`: the tenants with retention of their own, with the
    /// global values filled in for the keys they leave out.
    pub tenants: BTreeMap<String, TenantRetention>,
}

/// How long one tenant's stored state is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TenantRetention {
    /// How long a stored response is kept.
    pub responses: Duration,
    /// How long a conversation is kept (`None`: until deleted).
    pub conversations: Option<Duration>,
    /// How long a memory is kept (`None`: until deleted).
    pub memories: Option<Duration>,
}

const DAY: u64 = 24 * 3600;

impl Default for RetentionConfig {
    fn default() -> RetentionConfig {
        RetentionConfig {
            responses: Duration::from_secs(30 * DAY),
            conversations: None,
            memories: None,
            purge_interval: Duration::from_secs(3600),
            tenants: BTreeMap::new(),
        }
    }
}

impl RetentionConfig {
    /// The retention of `tenant`: its own section's, else the global one.
    pub fn for_tenant(&self, tenant: &str) -> TenantRetention {
        self.tenants
            .get(tenant)
            .copied()
            .unwrap_or_else(|| self.global())
    }

    /// The global retention (of every tenant without a section of its own).
    pub fn global(&self) -> TenantRetention {
        TenantRetention {
            responses: self.responses,
            conversations: self.conversations,
            memories: self.memories,
        }
    }

    /// Checks the section found at key path `at` (`retention`).
    ///
    /// # Errors
    ///
    /// Every problem, each with its key path.
    pub(super) fn from_raw(raw: RawRetention, at: &str) -> Result<RetentionConfig, Vec<Problem>> {
        let mut r = RetentionConfig::default();
        let mut p = Section::new(at);
        let mut global = r.global();
        let given = [
            raw.responses_days,
            raw.conversations_days,
            raw.memories_days,
        ];
        days(&mut p, &mut global, given);
        r.responses = global.responses;
        r.conversations = global.conversations;
        r.memories = global.memories;
        if let Some(secs) = p.int_in("purge_interval_secs", raw.purge_interval_secs, 1, 86400) {
            r.purge_interval = Duration::from_secs(secs);
        }
        let tenants_at = child_key(at, "tenants");
        let mut tenant_problems = Vec::new();
        for (tenant, section) in raw.tenants.unwrap_or_default() {
            if tenant.trim().is_empty() {
                p.push("tenants", "a tenant name must not be empty");
                continue;
            }
            let mut t = Section::new(&child_key(&tenants_at, &tenant));
            let mut own = global;
            let given = [
                section.responses_days,
                section.conversations_days,
                section.memories_days,
            ];
            days(&mut t, &mut own, given);
            match t.finish(own) {
                Ok(own) => {
                    r.tenants.insert(tenant, own);
                }
                Err(problems) => tenant_problems.extend(problems),
            }
        }
        match p.finish(r) {
            Ok(r) if tenant_problems.is_empty() => Ok(r),
            Ok(_) => Err(tenant_problems),
            Err(mut problems) => {
                problems.extend(tenant_problems);
                Err(problems)
            }
        }
    }
}

/// Reads a section's `responses_days`, `conversations_days` and `memories_days` (in that order
/// in `given`) into `into`, each only when it is given and in its range (a problem otherwise).
fn days(p: &mut Section, into: &mut TenantRetention, given: [Option<i64>; 3]) {
    let [responses, conversations, memories] = given;
    if let Some(days) = p.int_in("responses_days", responses, 1, 36500) {
        into.responses = Duration::from_secs(days * DAY);
    }
    if let Some(days) = p.int_in("conversations_days", conversations, 0, 36500) {
        into.conversations = (days > 0).then(|| Duration::from_secs(days * DAY));
    }
    if let Some(days) = p.int_in("memories_days", memories, 0, 36500) {
        into.memories = (days > 0).then(|| Duration::from_secs(days * DAY));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawRetention {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn tenants_inherit_what_they_leave_out() {
        let r = RetentionConfig::from_raw(
            raw("memories_days = 90\nconversations_days = 7\n\
                 [tenants.agency-a]\nmemories_days = 1\n\
                 [tenants.agency-b]\nresponses_days = 2\nmemories_days = 0\n"),
            "retention",
        )
        .unwrap();
        assert_eq!(r.memories, Some(Duration::from_secs(90 * DAY)));
        let a = r.for_tenant("agency-a");
        assert_eq!(a.memories, Some(Duration::from_secs(DAY)));
        assert_eq!(a.responses, Duration::from_secs(30 * DAY));
        assert_eq!(a.conversations, Some(Duration::from_secs(7 * DAY)));
        let b = r.for_tenant("agency-b");
        assert_eq!(b.memories, None, "0 keeps them until deleted");
        assert_eq!(b.responses, Duration::from_secs(2 * DAY));
        assert_eq!(r.for_tenant("other"), r.global());
        assert_eq!(RetentionConfig::default().memories, None);
    }

    #[test]
    fn every_bad_value_is_reported_with_its_key_path() {
        let problems = RetentionConfig::from_raw(
            raw("memories_days = 36501\n\
                 [tenants.agency-a]\nmemories_days = -1\nresponses_days = 0\n\
                 [tenants.\"odd name\"]\nconversations_days = 40000\n"),
            "retention",
        )
        .unwrap_err();
        let mut paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(
            paths,
            [
                "retention.memories_days",
                "retention.tenants.\"odd name\".conversations_days",
                "retention.tenants.agency-a.memories_days",
                "retention.tenants.agency-a.responses_days",
            ]
        );
    }
}
