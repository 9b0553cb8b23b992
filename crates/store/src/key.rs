//! API keys: their text format, generation and keyed hash.
//!
//! A key reads `enk_<16 hex id>_<64 hex secret>`. The id names the key in listings and logs;
//! the secret is 32 bytes from the system RNG. The store keeps the id and an HMAC-SHA256 of the
//! whole key under a key derived from the install's master key, so a copy of the database alone
//! neither reveals keys nor lets anyone check guesses offline.

use std::fmt;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::StoreError;

/// What every API key starts with.
const PREFIX: &str = "enk_";
/// Hex digits of the id.
const ID_HEX: usize = 16;
/// Hex digits of the secret.
const SECRET_HEX: usize = 64;
/// Length of a whole key: prefix, id, `_`, secret.
const KEY_LEN: usize = PREFIX.len() + ID_HEX + 1 + SECRET_HEX;

/// The label that separates the API-key hash key from other keys derived from the master key.
const HASH_KEY_LABEL: &[u8] = b"enclave api-key hash v1";

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
}

/// The keyed hash of API keys: HMAC-SHA256 under a key derived from the install's master key.
///
/// Get one from [`MasterKey::api_key_hasher`](crate::install::MasterKey::api_key_hasher).
/// Cheap to clone; `Debug` does not show the key.
#[derive(Clone)]
pub struct KeyHasher {
    key: hmac::Key,
}

impl KeyHasher {
    /// Derives the hash key from master key material: HMAC-SHA256(master, label). The master key
    /// is uniformly random, so this single expand step is a sound KDF (HKDF-Expand with one
    /// block).
    pub(crate) fn derive(master: &[u8]) -> KeyHasher {
        let master = hmac::Key::new(hmac::HMAC_SHA256, master);
        let derived = hmac::sign(&master, HASH_KEY_LABEL);
        KeyHasher {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
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

/// Generates a key.
pub(crate) fn generate(rng: &SystemRandom) -> Result<NewKey, StoreError> {
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
    if key.len() != KEY_LEN {
        return None;
    }
    let rest = key.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (is_id(id) && secret.len() == SECRET_HEX && is_lower_hex(secret)).then_some(id)
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
    fn generated_keys_have_the_documented_format() {
        let rng = SystemRandom::new();
        let k = generate(&rng).unwrap();
        assert_eq!(k.key.len(), KEY_LEN);
        assert!(k.key.starts_with("enk_"));
        assert_eq!(parse(&k.key), Some(k.id.as_str()));
        assert!(is_id(&k.id));
        let other = generate(&rng).unwrap();
        assert_ne!(k.key, other.key);
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
}
