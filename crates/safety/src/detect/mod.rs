//! Deterministic detectors: rules that find PII, secrets, prompt-injection phrases and
//! classification markings in text and report each with its byte span.
//!
//! Every rule is a `regex` (linear time: no backtracking, no look-around) or a small hand-written
//! check on a regex candidate (Luhn, SSN validity, a JWT header that decodes to JSON). Each
//! [`Kind`] has a stable `snake_case` name; `docs/SAFETY.md` lists every rule and its known
//! limits.
//!
//! Spans are byte offsets into the text given to [`detect`], always on character boundaries,
//! also when a rule matched a folded copy of the text (injection phrases are matched after
//! look-alike letters are folded and invisible characters dropped).

mod injection;
mod marking;
mod pii;
mod secrets;

use std::fmt;
use std::ops::Range;

use crate::category::Category;

/// What a rule found: its kind (and so its category), where, and how sure the rule is.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// Which rule fired.
    pub kind: Kind,
    /// Byte span in the scanned text, on character boundaries.
    pub span: Range<usize>,
    /// How likely the span is a true instance of the kind, in `0.0..=1.0`: a fixed figure per
    /// rule (and per variant of a rule), not a trained probability.
    pub confidence: f32,
}

impl Finding {
    /// The category the kind belongs to.
    pub fn category(&self) -> Category {
        self.kind.category()
    }
}

/// The kind of a finding. The names are stable wire names: never rename one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// An AWS access key id (`AKIA…`, `ASIA…`).
    AwsAccessKey,
    /// A 40-character AWS secret access key near an access key id or a naming word.
    AwsSecretKey,
    /// The token after `Authorization: Bearer` (or a bare `Bearer` with a token-shaped value).
    BearerToken,
    /// The password in a URL `scheme://user:password@host`.
    ConnectionStringPassword,
    /// A DoD ID number (EDIPI): ten digits with `EDIPI`/`DoD ID` nearby.
    DodId,
    /// An e-mail address.
    Email,
    /// A GitHub token (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`).
    GithubToken,
    /// A Google API key (`AIza…`).
    GoogleApiKey,
    /// A hidden instruction addressed to the model inside content (`<!-- AI: …`,
    /// `IMPORTANT: the assistant must …`).
    InjectionHiddenInstruction,
    /// "Ignore (all) previous instructions" and its variants.
    InjectionIgnoreInstructions,
    /// A role-play jailbreak preamble (`you are DAN`, `developer mode enabled`).
    InjectionJailbreakRoleplay,
    /// An attempt to install a new system prompt.
    InjectionNewSystemPrompt,
    /// A request to print or reveal the system prompt.
    InjectionPromptLeak,
    /// An IPv4 address (each octet `0..=255`, no leading zeros).
    Ipv4,
    /// An IPv6 address (validated by the standard library's parser).
    Ipv6,
    /// A JSON Web Token: three base64url parts whose header decodes to JSON with `alg`.
    Jwt,
    /// A classification marking that marks the text (banner, portion mark).
    MarkingAsserted,
    /// A classification marking talked about in a sentence.
    MarkingMentioned,
    /// The value of `password=…` (and `api_key=`, `client_secret=`, …) in key-value text.
    PasswordAssignment,
    /// A payment card number (Luhn-valid, known issuer prefix and length).
    PaymentCard,
    /// A phone number: NANP with validity rules, or international `+CC`.
    Phone,
    /// A PEM private key block.
    PrivateKey,
    /// A Slack token (`xoxb-`, `xoxp-`, …).
    SlackToken,
    /// A U.S. street address (number, street name, suffix).
    StreetAddress,
    /// A U.S. passport number with `passport` nearby.
    UsPassport,
    /// A U.S. Social Security number that passes the SSA validity rules.
    UsSsn,
}

impl Kind {
    /// Every kind, in name order.
    pub const ALL: [Kind; 26] = [
        Kind::AwsAccessKey,
        Kind::AwsSecretKey,
        Kind::BearerToken,
        Kind::ConnectionStringPassword,
        Kind::DodId,
        Kind::Email,
        Kind::GithubToken,
        Kind::GoogleApiKey,
        Kind::InjectionHiddenInstruction,
        Kind::InjectionIgnoreInstructions,
        Kind::InjectionJailbreakRoleplay,
        Kind::InjectionNewSystemPrompt,
        Kind::InjectionPromptLeak,
        Kind::Ipv4,
        Kind::Ipv6,
        Kind::Jwt,
        Kind::MarkingAsserted,
        Kind::MarkingMentioned,
        Kind::PasswordAssignment,
        Kind::PaymentCard,
        Kind::Phone,
        Kind::PrivateKey,
        Kind::SlackToken,
        Kind::StreetAddress,
        Kind::UsPassport,
        Kind::UsSsn,
    ];

    /// The stable `snake_case` name (`us_ssn`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AwsAccessKey => "aws_access_key",
            Kind::AwsSecretKey => "aws_secret_key",
            Kind::BearerToken => "bearer_token",
            Kind::ConnectionStringPassword => "connection_string_password",
            Kind::DodId => "dod_id",
            Kind::Email => "email",
            Kind::GithubToken => "github_token",
            Kind::GoogleApiKey => "google_api_key",
            Kind::InjectionHiddenInstruction => "injection_hidden_instruction",
            Kind::InjectionIgnoreInstructions => "injection_ignore_instructions",
            Kind::InjectionJailbreakRoleplay => "injection_jailbreak_roleplay",
            Kind::InjectionNewSystemPrompt => "injection_new_system_prompt",
            Kind::InjectionPromptLeak => "injection_prompt_leak",
            Kind::Ipv4 => "ipv4",
            Kind::Ipv6 => "ipv6",
            Kind::Jwt => "jwt",
            Kind::MarkingAsserted => "marking_asserted",
            Kind::MarkingMentioned => "marking_mentioned",
            Kind::PasswordAssignment => "password_assignment",
            Kind::PaymentCard => "payment_card",
            Kind::Phone => "phone",
            Kind::PrivateKey => "private_key",
            Kind::SlackToken => "slack_token",
            Kind::StreetAddress => "street_address",
            Kind::UsPassport => "us_passport",
            Kind::UsSsn => "us_ssn",
        }
    }

    /// The kind a name names.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The category findings of this kind count for.
    pub fn category(self) -> Category {
        match self {
            Kind::DodId
            | Kind::Email
            | Kind::Ipv4
            | Kind::Ipv6
            | Kind::PaymentCard
            | Kind::Phone
            | Kind::StreetAddress
            | Kind::UsPassport
            | Kind::UsSsn => Category::Pii,
            Kind::AwsAccessKey
            | Kind::AwsSecretKey
            | Kind::BearerToken
            | Kind::ConnectionStringPassword
            | Kind::GithubToken
            | Kind::GoogleApiKey
            | Kind::Jwt
            | Kind::PasswordAssignment
            | Kind::PrivateKey
            | Kind::SlackToken => Category::Secrets,
            Kind::InjectionHiddenInstruction
            | Kind::InjectionIgnoreInstructions
            | Kind::InjectionJailbreakRoleplay
            | Kind::InjectionNewSystemPrompt
            | Kind::InjectionPromptLeak => Category::PromptInjection,
            Kind::MarkingAsserted | Kind::MarkingMentioned => Category::ClassifiedMarking,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Runs every detector over `text` and returns the findings ordered by span start, then end,
/// then kind. Findings of different kinds may overlap (a JWT after `Bearer` is both a
/// `bearer_token` and a `jwt`); [`crate::redact`] merges overlapping spans.
///
/// Cost is linear in the length of `text`.
///
/// ```
/// use enclave_safety::{detect, Kind};
/// let found = detect("My SSN is 536-22-8714, mail me at ana@example.gov");
/// let kinds: Vec<Kind> = found.iter().map(|f| f.kind).collect();
/// assert_eq!(kinds, [Kind::UsSsn, Kind::Email]);
/// assert_eq!(&"My SSN is 536-22-8714"[found[0].span.clone()], "536-22-8714");
/// ```
pub fn detect(text: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    pii::detect(text, &mut out);
    secrets::detect(text, &mut out);
    injection::detect(text, &mut out);
    marking::detect(text, &mut out);
    out.sort_by_key(|a| (a.span.start, a.span.end, a.kind));
    out.dedup_by(|a, b| a.kind == b.kind && a.span == b.span);
    out
}

/// Whether `text` has one of `words` (lowercase ASCII) within `before` bytes before `at` or
/// `after` bytes after `end`, ignoring ASCII case. Windows are clamped to character
/// boundaries.
fn context_has(
    text: &str,
    at: usize,
    end: usize,
    before: usize,
    after: usize,
    words: &[&str],
) -> bool {
    let lo = floor_boundary(text, at.saturating_sub(before));
    let hi = ceil_boundary(text, end.saturating_add(after));
    let (Some(left), Some(right)) = (text.get(lo..at), text.get(end..hi)) else {
        return false;
    };
    words
        .iter()
        .any(|w| contains_ignore_case(left, w) || contains_ignore_case(right, w))
}

/// Whether `hay` contains `needle` (lowercase ASCII), ignoring ASCII case.
fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    let n = needle.as_bytes();
    if n.is_empty() {
        return true;
    }
    hay.as_bytes()
        .windows(n.len())
        .any(|w| w.eq_ignore_ascii_case(n))
}

/// The largest character boundary of `text` at or below `i`.
pub(crate) fn floor_boundary(text: &str, i: usize) -> usize {
    let mut i = i.min(text.len());
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The smallest character boundary of `text` at or above `i`.
pub(crate) fn ceil_boundary(text: &str, i: usize) -> usize {
    let mut i = i.min(text.len());
    while i < text.len() && !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// Compiles a pattern written in this crate.
#[expect(
    clippy::expect_used,
    reason = "every pattern is a literal in this crate, compiled by the unit tests"
)]
fn compile(pattern: &str) -> regex::Regex {
    regex::Regex::new(pattern).expect("detector pattern compiles")
}

/// Compiles a set of patterns written in this crate.
#[expect(
    clippy::expect_used,
    reason = "every pattern is a literal in this crate, compiled by the unit tests"
)]
fn compile_set(patterns: &[&str]) -> regex::RegexSet {
    regex::RegexSet::new(patterns).expect("detector patterns compile")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
            assert!(
                k.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
            );
        }
        let mut sorted = Kind::ALL;
        sorted.sort_by_key(|k| k.as_str());
        assert_eq!(sorted, Kind::ALL);
    }

    #[test]
    fn context_windows_clamp_to_char_boundaries() {
        let t = "ééé SSN ééé 123";
        let at = t.find("123").unwrap();
        assert!(context_has(t, at, t.len(), 11, 0, &["ssn"]));
        assert!(!context_has(t, at, t.len(), 10, 0, &["ssn"]));
        // 2 bytes back is inside an `é`: the window starts at the character instead.
        assert!(!context_has(t, at, t.len(), 2, 0, &["ssn"]));
    }
}
