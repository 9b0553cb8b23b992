//! API keys: their text format, generation, check tag and keyed hash.
//!
//! A key reads `enk_<16 hex id>_<64 hex secret>`. The id names the key in listings and logs.
//! In keys made since schema version 2 ("tagged" keys) the secret is 48 hex digits (24 bytes)
//! from the system RNG followed by a 16-hex-digit check tag: the first 8 bytes of
//! HMAC-SHA256(tag key, `enk_<id>_<48 hex>`), under a key derived from the install's master key.
//! The tag lets the gateway refuse a made-up key with one HMAC, without asking the database;
//! it is a filter, not the credential: a key is accepted only when the database holds its id
//! and the keyed hash of the whole key. Keys made before ("legacy" keys) have 64 random hex
//! digits and no tag; they keep working, and the store records each key's format.
//!
//! The store keeps the id and an HMAC-SHA256 of the whole key under another key derived from
//! the master key, so a copy of the database alone neither reveals keys nor lets anyone check
//! guesses offline.

use std::fmt;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use crate::{PrincipalRecord, StoreError};

/// What every API key starts with.
const PREFIX: &str = "enk_";
/// Hex digits of the id.
const ID_HEX: usize = 16;
/// Hex digits of the secret.
const SECRET_HEX: usize = 64;
/// Hex digits of the check tag at the end of a tagged key's secret (8 bytes: a made-up key
/// passes with probability 2^-64).
const TAG_HEX: usize = 16;
/// Length of a whole key: prefix, id, `_`, secret.
const KEY_LEN: usize = PREFIX.len() + ID_HEX + 1 + SECRET_HEX;

/// The label that separates the API-key hash key from other keys derived from the master key.
const HASH_KEY_LABEL: &[u8] = b"enclave api-key hash v1";
/// The label of the key that makes the check tags of tagged keys.
const TAG_KEY_LABEL: &[u8] = b"enclave api-key tag v1";

/// How a stored key was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    /// Before schema version 2: 64 random hex digits, no check tag. Such a key can only be
    /// checked against the database.
    Legacy,
    /// 48 random hex digits and a check tag (see the module documentation).
    Tagged,
}

impl KeyFormat {
    /// The name stored in the `format` column.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            KeyFormat::Legacy => "legacy",
            KeyFormat::Tagged => "tagged",
        }
    }

    /// The format named in the `format` column.
    pub(crate) fn from_column(name: &str) -> Option<KeyFormat> {
        match name {
            "legacy" => Some(KeyFormat::Legacy),
            "tagged" => Some(KeyFormat::Tagged),
            _ => None,
        }
    }
}

/// What a presented bearer key is, told from its text alone, without the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyShape<'a> {
    /// Not an Enclave API key at all (wrong length, prefix or characters).
    Malformed,
    /// A well-formed key whose check tag verifies: made by an install with this master key.
    Tagged {
        /// The key's id.
        id: &'a str,
    },
    /// A well-formed key whose check tag does not verify: a legacy key, or a made-up one.
    Untagged {
        /// The key's id.
        id: &'a str,
    },
}

/// A stored API key: its id and state, never the key itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// The id: the 16 hex digits after `enk_` in the key.
    pub id: String,
    /// The principal the key authenticates.
    pub principal: String,
    /// When it was created (unix seconds).
    pub created_at: i64,
    /// When it was revoked (unix seconds), if it was.
    pub revoked_at: Option<i64>,
    /// How it was made.
    pub format: KeyFormat,
}

/// What the database says about a presented key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "made once per database lookup and consumed at once; boxing would only add an allocation"
)]
pub enum KeyLookup {
    /// The key is valid: its record and the principal it authenticates.
    Found(KeyRecord, PrincipalRecord),
    /// The key was revoked. Revocation is final, so this holds for any key with that id.
    Revoked,
    /// No key has that id, or the text is not a well-formed key.
    Unknown,
    /// A key has that id, but the presented secret (or its format) is not that key's.
    WrongSecret,
}

/// The keyed hash and check tag of API keys: HMAC-SHA256 under two keys derived from the
/// install's master key.
///
/// Get one from [`MasterKey::api_key_hasher`](crate::install::MasterKey::api_key_hasher).
/// Cheap to clone; `Debug` does not show the keys.
#[derive(Clone)]
pub struct KeyHasher {
    key: hmac::Key,
    tag: hmac::Key,
}

impl KeyHasher {
    /// Derives the hash and tag keys from master key material: HMAC-SHA256(master, label). The
    /// master key is uniformly random, so this single expand step is a sound KDF (HKDF-Expand
    /// with one block).
    pub(crate) fn derive(master: &[u8]) -> KeyHasher {
        let master = hmac::Key::new(hmac::HMAC_SHA256, master);
        let derive = |label: &[u8]| {
            let derived = hmac::sign(&master, label);
            hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())
        };
        KeyHasher {
            key: derive(HASH_KEY_LABEL),
            tag: derive(TAG_KEY_LABEL),
        }
    }

    /// What `presented` is, from its text alone: one HMAC over at most 85 bytes, no database.
    ///
    /// ```
    /// use enclave_store::KeyShape;
    /// use enclave_store::install::MasterKey;
    ///
    /// let hasher = MasterKey::from_bytes([7; 32]).api_key_hasher();
    /// let made_up = format!("enk_{}_{}", "0".repeat(16), "0".repeat(64));
    /// assert_eq!(hasher.shape(&made_up), KeyShape::Untagged { id: "0000000000000000" });
    /// assert_eq!(hasher.shape("sk-not-ours"), KeyShape::Malformed);
    /// ```
    pub fn shape<'a>(&self, presented: &'a str) -> KeyShape<'a> {
        let Some((id, secret)) = parse_parts(presented) else {
            return KeyShape::Malformed;
        };
        let Some((random, tag)) = secret.split_at_checked(SECRET_HEX - TAG_HEX) else {
            return KeyShape::Malformed;
        };
        let Some(tag) = unhex(tag) else {
            return KeyShape::Malformed;
        };
        let expected = self.tag_of(id, random);
        // SECURITY: constant-time comparison, so the tag cannot be learned byte by byte.
        if bool::from(expected.as_slice().ct_eq(tag.as_slice())) {
            KeyShape::Tagged { id }
        } else {
            KeyShape::Untagged { id }
        }
    }

    /// The stored form of a key: the hex HMAC of the whole key text.
    pub(crate) fn hash(&self, key: &str) -> String {
        hex(hmac::sign(&self.key, key.as_bytes()).as_ref())
    }

    /// Whether `key` hashes to `stored` (hex).
    pub(crate) fn verify(&self, key: &str, stored: &str) -> bool {
        let Some(tag) = unhex(stored) else {
            return false;
        };
        // SECURITY: `hmac::verify` compares in constant time.
        hmac::verify(&self.key, key.as_bytes(), &tag).is_ok()
    }

    /// The check tag of a key with this id and random part: the first `TAG_HEX / 2` bytes of
    /// HMAC(tag key, `enk_<id>_<random>`).
    fn tag_of(&self, id: &str, random: &str) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.tag);
        for part in [PREFIX, id, "_", random] {
            ctx.update(part.as_bytes());
        }
        let full = ctx.sign();
        full.as_ref().iter().take(TAG_HEX / 2).copied().collect()
    }
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHasher(..)")
    }
}

/// A freshly generated key: its id and the whole key text (shown once, never stored).
pub(crate) struct NewKey {
    /// The id part.
    pub(crate) id: String,
    /// The whole key.
    pub(crate) key: String,
}

/// Generates a tagged key.
pub(crate) fn generate(rng: &SystemRandom, hasher: &KeyHasher) -> Result<NewKey, StoreError> {
    let mut id = [0u8; ID_HEX / 2];
    let mut random = [0u8; (SECRET_HEX - TAG_HEX) / 2];
    rng.fill(&mut id)
        .and_then(|()| rng.fill(&mut random))
        .map_err(|_| StoreError::Random("generating an API key"))?;
    let id = hex(&id);
    let random = hex(&random);
    let tag = hex(&hasher.tag_of(&id, &random));
    let key = format!("{PREFIX}{id}_{random}{tag}");
    Ok(NewKey { id, key })
}

/// Generates a key in the legacy format (no check tag), as keys were made before schema
/// version 2: for tests of the upgrade path only.
#[cfg(feature = "danger-legacy-keys")]
pub(crate) fn generate_legacy(rng: &SystemRandom) -> Result<NewKey, StoreError> {
    let mut id = [0u8; ID_HEX / 2];
    let mut secret = [0u8; SECRET_HEX / 2];
    rng.fill(&mut id)
        .and_then(|()| rng.fill(&mut secret))
        .map_err(|_| StoreError::Random("generating an API key"))?;
    let id = hex(&id);
    let key = format!("{PREFIX}{id}_{}", hex(&secret));
    Ok(NewKey { id, key })
}

/// The id of a well-formed key, or `None` for anything else (any length, any bytes).
pub(crate) fn parse(key: &str) -> Option<&str> {
    parse_parts(key).map(|(id, _)| id)
}

/// The id and secret of a well-formed key.
fn parse_parts(key: &str) -> Option<(&str, &str)> {
    if key.len() != KEY_LEN {
        return None;
    }
    let rest = key.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (is_id(id) && secret.len() == SECRET_HEX && is_lower_hex(secret)).then_some((id, secret))
}

/// Whether `s` has the form of a key id (16 lowercase hex digits).
pub(crate) fn is_id(s: &str) -> bool {
    s.len() == ID_HEX && is_lower_hex(s)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    fn digit(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        }
    }
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks_exact(2)
        .map(|pair| match pair {
            [hi, lo] => Some(digit(*hi)? << 4 | digit(*lo)?),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_format_and_a_valid_tag() {
        let rng = SystemRandom::new();
        let h = KeyHasher::derive(&[1; 32]);
        let k = generate(&rng, &h).unwrap();
        assert_eq!(k.key.len(), KEY_LEN);
        assert!(k.key.starts_with("enk_"));
        assert_eq!(parse(&k.key), Some(k.id.as_str()));
        assert!(is_id(&k.id));
        assert_eq!(h.shape(&k.key), KeyShape::Tagged { id: &k.id });
        let other = generate(&rng, &h).unwrap();
        assert_ne!(k.key, other.key);
    }

    #[test]
    fn a_tag_verifies_only_under_its_master_key_and_for_its_own_text() {
        let rng = SystemRandom::new();
        let h = KeyHasher::derive(&[1; 32]);
        let k = generate(&rng, &h).unwrap();
        let id = k.id.as_str();
        // Another install's key looks untagged here.
        let foreign = KeyHasher::derive(&[2; 32]);
        assert_eq!(foreign.shape(&k.key), KeyShape::Untagged { id });
        // Any change to the random part, the tag or the id breaks the tag.
        for i in 4..KEY_LEN {
            if i == 4 + ID_HEX {
                continue; // the `_`
            }
            let mut bytes = k.key.clone().into_bytes();
            bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
            let changed = String::from_utf8(bytes).unwrap();
            let changed_id = &changed[4..4 + ID_HEX];
            assert_eq!(
                h.shape(&changed),
                KeyShape::Untagged { id: changed_id },
                "position {i}"
            );
        }
        // A legacy-style key (64 random hex digits) is untagged; garbage is malformed.
        let legacy = format!("enk_{}_{}", "a".repeat(16), "b".repeat(64));
        assert_eq!(
            h.shape(&legacy),
            KeyShape::Untagged {
                id: "aaaaaaaaaaaaaaaa"
            }
        );
        assert_eq!(h.shape("enk_x"), KeyShape::Malformed);
        assert_eq!(h.shape(&k.key.to_uppercase()), KeyShape::Malformed);
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        let good = format!("enk_{}_{}", "a".repeat(16), "b".repeat(64));
        assert!(parse(&good).is_some());
        for bad in [
            String::new(),
            "enk_".into(),
            good.to_uppercase(),
            good.replace("enk_", "sk-_"),
            format!("{good}0"),
            good[..good.len() - 1].to_owned(),
            format!("enk_{}_{}", "a".repeat(15), "b".repeat(65)),
            format!("enk_{}-{}", "a".repeat(16), "b".repeat(64)),
            format!("enk_{}_{}", "g".repeat(16), "b".repeat(64)),
            format!("enk_{}_{}'", "a".repeat(16), "b".repeat(63)),
            format!("enk_{}_{}é", "a".repeat(16), "b".repeat(62)),
        ] {
            assert_eq!(parse(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hash_verifies_only_the_same_key_under_the_same_master() {
        let h = KeyHasher::derive(&[1; 32]);
        let stored = h.hash("enk_x");
        assert_eq!(stored.len(), 64);
        assert!(h.verify("enk_x", &stored));
        assert!(!h.verify("enk_y", &stored));
        assert!(!KeyHasher::derive(&[2; 32]).verify("enk_x", &stored));
        assert!(!h.verify("enk_x", "zz"));
        assert!(!h.verify("enk_x", ""));
    }

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&bytes)), Some(bytes));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("AB"), None);
    }

    #[test]
    fn debug_does_not_show_the_key() {
        assert_eq!(
            format!("{:?}", KeyHasher::derive(&[1; 32])),
            "KeyHasher(..)"
        );
    }

    #[test]
    fn key_formats_round_trip_through_their_column_names() {
        assert_eq!(KeyFormat::from_column("tagged"), Some(KeyFormat::Tagged));
        assert_eq!(
            KeyFormat::from_column(KeyFormat::Legacy.as_str()),
            Some(KeyFormat::Legacy)
        );
        assert_eq!(KeyFormat::from_column("other"), None);
    }
}
