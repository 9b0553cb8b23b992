//! Audit entries and their canonical JSON bytes.
//!
//! An entry's exact bytes are one leaf of the Merkle tree, so they must be one fixed function of
//! its contents: [`AuditEntry::to_canonical_bytes`] writes JSON with object keys sorted by their
//! bytes, no whitespace, integers only, absent optional fields (and empty lists and maps)
//! omitted, and strings escaped minimally (`"` `\` and control characters only; `\b \t \n \f \r`
//! short, other control characters as `\u00xx` with lowercase hex; everything else as UTF-8).
//! For the values entries hold, this is the JSON Canonicalization Scheme of RFC 8785.
//!
//! [`AuditEntry::from_canonical_bytes`] is the strict inverse: it reads the entry, rejects unknown
//! and duplicate fields, and then re-encodes it and accepts the bytes only if they are identical.
//! An edited row therefore cannot hide behind a different spelling of the same values
//! (whitespace, key order, escapes, `1.0` for `1`, a `null` for an absent field).
//!
//! An entry is one of two kinds:
//!
//! ```text
//! {"index":7,"kind":"request","request":{…},"time":"2026-11-24T09:30:00.125Z","v":1}
//! {"admin":{…},"index":8,"kind":"admin","time":"2026-11-24T09:30:01.000Z","v":1}
//! ```
//!
//! Entries never hold prompt or output text: only [`keyed_digest`]s of them, made with a
//! per-tenant key, so an auditor who is given the text and the key can confirm it, and nobody
//! else learns anything from the log.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::str::FromStr;

use ring::hmac;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::encoding::{hex_encode, is_lower_hex};
use crate::error::EntryError;
use crate::merkle::{Hash, hash_leaf};
use crate::timestamp::Timestamp;

/// The entry format version this crate writes and reads (field `v`).
pub const FORMAT_VERSION: u64 = 1;

/// The longest entry [`AuditEntry::from_canonical_bytes`] reads, in bytes.
pub const MAX_ENTRY_BYTES: usize = 1 << 20;

/// One record of the audit log.
///
/// Build the [`Event`] where it happens, then the store gives it its index when it appends it:
/// `AuditEntry { index, time, event }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// The entry's position in the log, from 0, without gaps. Written into the entry itself, so
    /// a deleted, inserted or swapped row shows at the first position whose entry carries
    /// another index. JSON field `index`.
    pub index: u64,
    /// When the request ended or the action took effect (UTC, milliseconds). JSON field `time`.
    pub time: Timestamp,
    /// What happened. JSON fields `kind` (`"request"` or `"admin"`) and the record under the key
    /// of the same name.
    pub event: Event,
}

/// What an entry records.
#[derive(Clone, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every entry is a request; boxing it would cost an allocation per request for \
              the sake of the rare admin entry"
)]
pub enum Event {
    /// An administrative action (kind `admin`).
    Admin(AdminEvent),
    /// A request to the API, whatever its outcome (kind `request`).
    Request(RequestEvent),
}

/// A request to the API: who asked, at which label, where it went, what was decided and how it
/// ended. Every exit of the request path writes one (a streamed response writes a
/// [`Phase::Decision`] entry before its first byte and a [`Phase::Outcome`] entry at its end).
///
/// Fields are declared in the order of their JSON keys, which is the canonical order; optional
/// fields that are `None` (and empty lists) are left out of the JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestEvent {
    /// How the principal authenticated (`api_key`, `mtls`, `oidc`, …); absent if it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<String>,
    /// The backend that served the request; absent if none was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// The label of the request's content and recalled data (a banner marking), if any was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_label: Option<String>,
    /// The decisions taken on the way, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<Decision>,
    /// The error code of the response (`classification_exceeds_clearance`, …); absent on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Milliseconds from the request's arrival to this entry.
    pub latency_ms: u64,
    /// The model asked for, if the request named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The keyed digest of the output sent back (see [`keyed_digest`]), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_hmac: Option<KeyedDigest>,
    /// For a streamed response, which of its two entries this is; absent for a request recorded
    /// in one entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The authenticated principal; absent if authentication failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The keyed digest of the prompt (the request's input), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_hmac: Option<KeyedDigest>,
    /// The request id, as sent back in `X-Request-Id`.
    pub request_id: String,
    /// The API operation (`chat.completions`, `responses`, `embeddings`, …).
    pub route: String,
    /// The session label (a banner marking), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_label: Option<String>,
    /// The HTTP status of the response (or of the stream's end).
    pub status: u16,
    /// The principal's tenant, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Token counts, when a model ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenCounts>,
}

/// One decision of the request path: which stage, what it decided, and its reason code.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// The reason code (`classification_exceeds_clearance`, a safety category such as
    /// `violence`, …); absent when the outcome needs none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// What the stage decided: `allow`, `deny`, `block`, `redact`, `flag`, …
    pub outcome: String,
    /// The stage: `clearance`, `spillage`, `authorization`, `safety_input`, `safety_output`,
    /// `route`, …
    pub stage: String,
}

/// Which of a streamed request's two entries this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Written (and durable) before the first byte of the response: the decisions.
    Decision,
    /// Written when the stream ends: status, tokens, output digest.
    Outcome,
}

/// Token counts of a model call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCounts {
    /// Tokens read (the prompt).
    pub input: u64,
    /// Tokens generated.
    pub output: u64,
}

/// An administrative action: who did what to what.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminEvent {
    /// The action, `noun.verb`: `principal.add`, `key.revoke`, `config.reload`,
    /// `policy.change`, `review.decide`, `tenant.shred`, …
    pub action: String,
    /// Who did it: a principal, or `cli:<os user>` for the command line.
    pub actor: String,
    /// Further facts (old and new values, reasons), as text; left out when empty. Never secrets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
    /// The request id, when the action came through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// What it was done to (a principal, key id, tenant, file), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The tenant concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// An HMAC-SHA256 of some text under a per-tenant key, as 64 lowercase hex digits.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyedDigest(String);

impl KeyedDigest {
    /// HMAC-SHA256 of `data` under `key`.
    pub fn compute(key: &[u8], data: &[u8]) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, key);
        Self(hex_encode(hmac::sign(&key, data).as_ref()))
    }

    /// The 64 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// HMAC-SHA256 of `data` under `key`, as 64 lowercase hex digits: the digest entries keep of a
/// prompt or an output instead of its text. `key` is the tenant's audit digest key.
pub fn keyed_digest(key: &[u8], data: &[u8]) -> String {
    KeyedDigest::compute(key, data).0
}

// === impl AuditEntry ===

impl AuditEntry {
    /// The entry's canonical JSON bytes, checked against [`MAX_ENTRY_BYTES`]: what the store
    /// appends (column `entry`) and computes the Merkle leaf over.
    ///
    /// # Errors
    ///
    /// [`EntryError::TooLarge`] when the encoding is longer than [`MAX_ENTRY_BYTES`]: the parser
    /// would refuse it, so the log could no longer be verified. The store must not append it.
    pub fn encode(&self) -> Result<Vec<u8>, EntryError> {
        let bytes = self.to_canonical_bytes();
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(EntryError::TooLarge {
                max: MAX_ENTRY_BYTES,
            });
        }
        Ok(bytes)
    }

    /// The entry's canonical JSON bytes, whatever their length (see [`AuditEntry::encode`]).
    pub fn to_canonical_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(1024);
        #[expect(
            clippy::expect_used,
            reason = "serializing into a Vec cannot fail for these types: string map keys only, \
                      no floats, no custom errors (every unit test encodes entries)"
        )]
        self.write_canonical(&mut bytes)
            .expect("audit entries always serialize");
        bytes
    }

    /// Writes the canonical bytes to `out`.
    fn write_canonical<W: io::Write>(&self, out: W) -> serde_json::Result<()> {
        let (admin, request) = match &self.event {
            Event::Admin(admin) => (Some(admin), None),
            Event::Request(request) => (None, Some(request)),
        };
        let wire = WireEntryRef {
            admin,
            index: self.index,
            kind: self.kind(),
            request,
            time: self.time,
            v: FORMAT_VERSION,
        };
        serde_json::to_writer(out, &wire)
    }

    /// The Merkle leaf hash of the entry's canonical bytes.
    pub fn leaf_hash(&self) -> Hash {
        hash_leaf(&self.to_canonical_bytes())
    }

    /// Reads an entry from its canonical bytes, and only from them.
    ///
    /// # Errors
    ///
    /// [`EntryError::TooLarge`] beyond [`MAX_ENTRY_BYTES`]; [`EntryError::Malformed`] for bytes
    /// that are not UTF-8 JSON of the entry's shape (unknown or duplicate fields included);
    /// [`EntryError::UnsupportedVersion`], [`EntryError::KindMismatch`],
    /// [`EntryError::MalformedTime`], [`EntryError::MalformedDigest`] for bad values; and
    /// [`EntryError::NotCanonical`] when the entry reads but its canonical encoding differs from
    /// `bytes`.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Self, EntryError> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(EntryError::TooLarge {
                max: MAX_ENTRY_BYTES,
            });
        }
        // Checking UTF-8 once up front lets the JSON reader skip checking each string.
        let text = std::str::from_utf8(bytes)
            .map_err(|e| EntryError::Malformed(format!("not UTF-8: {e}")))?;
        let wire: WireEntry = serde_json::from_str(text).map_err(malformed)?;
        if wire.v != FORMAT_VERSION {
            return Err(EntryError::UnsupportedVersion {
                found: wire.v,
                supported: FORMAT_VERSION,
            });
        }
        let event = match (wire.kind, wire.admin, wire.request) {
            (Kind::Admin, Some(admin), None) => Event::Admin(admin),
            (Kind::Request, None, Some(request)) => Event::Request(request),
            (kind, _, _) => {
                return Err(EntryError::KindMismatch {
                    kind: kind.as_str(),
                });
            }
        };
        let entry = Self {
            index: wire.index,
            time: wire.time,
            event,
        };
        // SECURITY: the leaf is computed over the stored bytes; accept them only if they are the
        // one encoding of what they say, so two different byte strings never read as one entry.
        let mut canonical = Vec::with_capacity(bytes.len());
        if entry.write_canonical(&mut canonical).is_err() || canonical != bytes {
            let at = canonical
                .iter()
                .zip(bytes)
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| canonical.len().min(bytes.len()));
            return Err(EntryError::NotCanonical { at });
        }
        Ok(entry)
    }

    /// `"request"` or `"admin"`.
    pub fn kind_name(&self) -> &'static str {
        self.kind().as_str()
    }

    fn kind(&self) -> Kind {
        match self.event {
            Event::Admin(_) => Kind::Admin,
            Event::Request(_) => Kind::Request,
        }
    }
}

// === wire format ===

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Admin,
    Request,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Admin => "admin",
            Kind::Request => "request",
        }
    }
}

/// The JSON object of an entry, fields in key order.
#[derive(Serialize)]
struct WireEntryRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    admin: Option<&'a AdminEvent>,
    index: u64,
    kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<&'a RequestEvent>,
    time: Timestamp,
    v: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEntry {
    #[serde(default)]
    admin: Option<AdminEvent>,
    index: u64,
    kind: Kind,
    #[serde(default)]
    request: Option<RequestEvent>,
    time: Timestamp,
    v: u64,
}

impl FromStr for KeyedDigest {
    type Err = EntryError;

    /// Reads 64 lowercase hex digits; anything else is [`EntryError::MalformedDigest`].
    fn from_str(text: &str) -> Result<Self, EntryError> {
        if !is_lower_hex(text, 64) {
            return Err(EntryError::MalformedDigest);
        }
        Ok(Self(text.to_owned()))
    }
}

impl Serialize for KeyedDigest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for KeyedDigest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DigestVisitor;

        impl Visitor<'_> for DigestVisitor {
            type Value = KeyedDigest;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 lowercase hex digits")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<KeyedDigest, E> {
                text.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_str(DigestVisitor)
    }
}

impl fmt::Debug for KeyedDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyedDigest({})", self.0)
    }
}

impl fmt::Display for KeyedDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn malformed(error: serde_json::Error) -> EntryError {
    EntryError::Malformed(error.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_request(index: u64) -> AuditEntry {
        AuditEntry {
            index,
            time: Timestamp::from_unix_millis(1_795_512_600_125 + index).unwrap(),
            event: Event::Request(RequestEvent {
                auth_method: Some("api_key".into()),
                backend: Some("local".into()),
                content_label: Some("SECRET".into()),
                decisions: vec![
                    Decision {
                        code: None,
                        outcome: "allow".into(),
                        stage: "clearance".into(),
                    },
                    Decision {
                        code: Some("violence".into()),
                        outcome: "flag".into(),
                        stage: "safety_input".into(),
                    },
                ],
                error: None,
                latency_ms: 812,
                model: Some("smollm2".into()),
                output_hmac: Some(KeyedDigest::compute(b"tenant key", b"the answer")),
                phase: None,
                principal: Some("alice".into()),
                prompt_hmac: Some(KeyedDigest::compute(b"tenant key", b"the question")),
                request_id: format!("req_{index:08}"),
                route: "chat.completions".into(),
                session_label: Some("SECRET//NOFORN".into()),
                status: 200,
                tenant: Some("acme".into()),
                tokens: Some(TokenCounts {
                    input: 12,
                    output: 80,
                }),
            }),
        }
    }

    pub(crate) fn sample_admin(index: u64) -> AuditEntry {
        AuditEntry {
            index,
            time: Timestamp::from_unix_millis(1_795_512_601_000).unwrap(),
            event: Event::Admin(AdminEvent {
                action: "key.revoke".into(),
                actor: "cli:root".into(),
                details: BTreeMap::from([("reason".into(), "lost \"laptop\"\n".into())]),
                request_id: None,
                target: Some("key_7".into()),
                tenant: Some("acme".into()),
            }),
        }
    }

    /// Keys sorted, no whitespace: serde_json's `Value` keeps objects in a `BTreeMap`, so its
    /// compact output is the sorted form of whatever it read.
    fn sorted_compact(bytes: &[u8]) -> Vec<u8> {
        let value: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn canonical_bytes_have_sorted_keys_and_no_whitespace() {
        for entry in [sample_request(3), sample_admin(4)] {
            let bytes = entry.to_canonical_bytes();
            assert_eq!(sorted_compact(&bytes), bytes);
            assert_eq!(AuditEntry::from_canonical_bytes(&bytes), Ok(entry));
        }
        let minimal = AuditEntry {
            index: 0,
            time: Timestamp::from_unix_millis(0).unwrap(),
            event: Event::Request(RequestEvent {
                request_id: "r".into(),
                route: "models".into(),
                status: 401,
                ..RequestEvent::default()
            }),
        };
        assert_eq!(
            String::from_utf8(minimal.to_canonical_bytes()).unwrap(),
            r#"{"index":0,"kind":"request","request":{"latency_ms":0,"request_id":"r","route":"models","status":401},"time":"1970-01-01T00:00:00.000Z","v":1}"#
        );
    }

    #[test]
    fn admin_entry_has_the_documented_shape() {
        assert_eq!(
            String::from_utf8(sample_admin(4).to_canonical_bytes()).unwrap(),
            r#"{"admin":{"action":"key.revoke","actor":"cli:root","details":{"reason":"lost \"laptop\"\n"},"target":"key_7","tenant":"acme"},"index":4,"kind":"admin","time":"2026-11-24T09:30:01.000Z","v":1}"#
        );
    }

    #[test]
    fn strings_are_escaped_minimally() {
        let mut entry = sample_admin(0);
        let Event::Admin(admin) = &mut entry.event else {
            unreachable!()
        };
        admin.target = Some("é/\u{1}\u{7f}\t\u{2028}😀".into());
        let bytes = entry.to_canonical_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains(r#""target":"é/\u0001"#), "{text}");
        assert!(text.contains("\u{7f}\\t\u{2028}😀\""), "{text}");
        assert_eq!(AuditEntry::from_canonical_bytes(&bytes), Ok(entry));
    }

    #[test]
    fn other_spellings_of_the_same_entry_are_rejected() {
        let canonical = String::from_utf8(sample_request(9).to_canonical_bytes()).unwrap();
        let variants = [
            canonical.replacen("{\"index\"", "{ \"index\"", 1),
            canonical.replacen("\"index\":9", "\"index\": 9", 1),
            format!("{canonical}\n"),
            format!(" {canonical}"),
            canonical.replacen("\"alice\"", "\"\\u0061lice\"", 1),
            canonical.replacen("\"local\"", "\"loc\\u0061l\"", 1),
            canonical.replacen("chat.completions", "chat\\u002ecompletions", 1),
            canonical.replacen("SECRET//NOFORN", "SECRET\\/\\/NOFORN", 1),
            canonical.replacen("\"latency_ms\":812", "\"latency_ms\":812.0", 1),
            canonical.replacen("\"latency_ms\":812", "\"latency_ms\":8.12e2", 1),
            canonical.replacen("\"index\":9", "\"index\":09", 1),
            canonical.replacen("\"principal\"", "\"phase\":null,\"principal\"", 1),
            canonical.replacen("\"latency_ms\"", "\"error\":null,\"latency_ms\"", 1),
            canonical.replacen("\"tokens\":{", "\"tokens\":{ ", 1),
            canonical
                .replacen("\"backend\":\"local\",", "", 1)
                .replacen(
                    "\"auth_method\":\"api_key\",",
                    "\"auth_method\":\"api_key\",\"backend\":null,",
                    1,
                ),
            // Keys out of order.
            canonical.replacen(
                "\"index\":9,\"kind\":\"request\"",
                "\"kind\":\"request\",\"index\":9",
                1,
            ),
        ];
        for variant in &variants {
            assert_ne!(*variant, canonical, "the variant must differ");
            let got = AuditEntry::from_canonical_bytes(variant.as_bytes());
            assert!(got.is_err(), "accepted {variant}");
        }
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let canonical = String::from_utf8(sample_request(1).to_canonical_bytes()).unwrap();
        let doubled = canonical.replacen("\"index\":1,", "\"index\":1,\"index\":1,", 1);
        assert!(matches!(
            AuditEntry::from_canonical_bytes(doubled.as_bytes()),
            Err(EntryError::Malformed(m)) if m.contains("duplicate field")
        ));
        let admin = String::from_utf8(sample_admin(1).to_canonical_bytes()).unwrap();
        let doubled = admin.replacen("{\"reason\":", "{\"reason\":\"x\",\"reason\":", 1);
        assert!(AuditEntry::from_canonical_bytes(doubled.as_bytes()).is_err());
    }

    #[test]
    fn malformed_entries_are_rejected_with_a_reason() {
        let canonical = String::from_utf8(sample_request(1).to_canonical_bytes()).unwrap();
        type Check = fn(&EntryError) -> bool;
        let cases: [(&[u8], Check); 8] = [
            (b"", |e| matches!(e, EntryError::Malformed(_))),
            (b"\xff\xfe", |e| matches!(e, EntryError::Malformed(_))),
            (b"[]", |e| matches!(e, EntryError::Malformed(_))),
            (
                br#"{"index":0,"kind":"admin","request":{"latency_ms":0,"request_id":"r","route":"m","status":1},"time":"1970-01-01T00:00:00.000Z","v":1}"#,
                |e| matches!(e, EntryError::KindMismatch { kind: "admin" }),
            ),
            (
                br#"{"index":0,"kind":"request","time":"1970-01-01T00:00:00.000Z","v":1}"#,
                |e| matches!(e, EntryError::KindMismatch { kind: "request" }),
            ),
            (
                br#"{"index":0,"kind":"request","request":{"latency_ms":0,"request_id":"r","route":"m","status":1},"time":"1970-01-01T00:00:00.000Z","v":2}"#,
                |e| matches!(e, EntryError::UnsupportedVersion { found: 2, .. }),
            ),
            (
                br#"{"extra":1,"index":0,"kind":"request","request":{"latency_ms":0,"request_id":"r","route":"m","status":1},"time":"1970-01-01T00:00:00.000Z","v":1}"#,
                |e| matches!(e, EntryError::Malformed(m) if m.contains("unknown field")),
            ),
            (
                br#"{"index":0,"kind":"request","request":{"latency_ms":0,"request_id":"r","route":"m","status":1},"time":"1970-01-01T00:00:00Z","v":1}"#,
                |e| matches!(e, EntryError::Malformed(_)),
            ),
        ];
        for (bytes, expected) in cases {
            let err = AuditEntry::from_canonical_bytes(bytes).unwrap_err();
            assert!(
                expected(&err),
                "{}: {err:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let upper = canonical.replacen(
            &KeyedDigest::compute(b"tenant key", b"the answer").to_string(),
            &KeyedDigest::compute(b"tenant key", b"the answer")
                .to_string()
                .to_uppercase(),
            1,
        );
        assert!(AuditEntry::from_canonical_bytes(upper.as_bytes()).is_err());
        let too_big = vec![b' '; MAX_ENTRY_BYTES + 1];
        assert_eq!(
            AuditEntry::from_canonical_bytes(&too_big),
            Err(EntryError::TooLarge {
                max: MAX_ENTRY_BYTES
            })
        );
    }

    #[test]
    fn encode_refuses_entries_the_parser_would_refuse() {
        let mut entry = sample_admin(0);
        assert_eq!(entry.encode(), Ok(entry.to_canonical_bytes()));
        let Event::Admin(admin) = &mut entry.event else {
            unreachable!()
        };
        admin.target = Some("x".repeat(MAX_ENTRY_BYTES));
        assert_eq!(
            entry.encode(),
            Err(EntryError::TooLarge {
                max: MAX_ENTRY_BYTES
            })
        );
    }

    #[test]
    fn keyed_digest_is_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            keyed_digest(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(keyed_digest(b"k", b"d").parse::<KeyedDigest>().is_ok());
        assert_eq!(
            "00".parse::<KeyedDigest>(),
            Err(EntryError::MalformedDigest)
        );
    }
}
