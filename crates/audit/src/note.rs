//! Signed notes (c2sp.org/signed-note) with Ed25519 keys: the envelope of audit checkpoints.
//!
//! A note is a text ending in a newline, a blank line, and one or more signature lines
//! `— <key name> <base64(4-byte key id ‖ signature)>`. The key id is the first four bytes of
//! `SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ 32-byte Ed25519 public key)`.
//!
//! Keys travel as text: a verifier key is `name+keyid+base64(0x01 ‖ public key)`, a signer key
//! `PRIVATE+KEY+name+keyid+base64(0x01 ‖ seed)`, with the key id as eight lowercase hex digits.
//! The audit signing key of an installation is an Ed25519 PKCS#8 v2 document
//! (`audit-signing.key`); [`Signer::from_pkcs8`] reads it.
//!
//! Parsing is strict: a note must be UTF-8 with no control character but the newline, at most
//! [`MAX_NOTE_BYTES`] long, with at most [`MAX_SIGNATURES`] signature lines, each with a valid key
//! name and canonical base64. Whatever parses renders back to the same bytes.

use std::fmt;
use std::str::FromStr;

use ring::digest::{SHA256, digest};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::encoding::{base64_decode, base64_encode, hex_decode};
use crate::error::NoteError;

/// The longest note [`Note::parse`] reads, in bytes: room for the 16 signatures the specification
/// asks verifiers to accept even if they are post-quantum ones of nearly 5 kB (Enclave's own are
/// Ed25519, 64 bytes).
pub const MAX_NOTE_BYTES: usize = 128 * 1024;

/// The most signature lines a note may carry (the specification asks verifiers to accept at
/// least 16).
pub const MAX_SIGNATURES: usize = 16;

/// The signature type byte of Ed25519 in signed notes.
const ALG_ED25519: u8 = 0x01;
/// The em dash and space that open a signature line.
const SIG_PREFIX: &str = "\u{2014} ";

/// A parsed signed note. Parsing checks the syntax only; [`Verifiers::open`] checks signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<NoteSignature>,
}

/// One signature line of a note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    name: String,
    key_id: u32,
    signature: Vec<u8>,
}

/// A trusted public key: a key name, its key id and an Ed25519 public key.
///
/// `FromStr` and `Display` use the verifier key text `name+keyid+base64(0x01 ‖ public key)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    key_id: u32,
    public_key: [u8; 32],
}

/// An Ed25519 signing key with its key name. `Debug` shows only the public side.
pub struct Signer {
    name: String,
    key_id: u32,
    key_pair: Ed25519KeyPair,
}

/// The set of trusted verifier keys. Several keys (of one name or several) make key rotation
/// work: checkpoints signed by the old and by the new key both open.
#[derive(Clone, Debug, Default)]
pub struct Verifiers {
    keys: Vec<VerifierKey>,
}

/// A note whose signatures were checked: at least one by a trusted key, none by a trusted key
/// failing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedNote {
    note: Note,
    signed_by: Vec<VerifierKey>,
}

// === impl Note ===

impl Note {
    /// Reads a signed note.
    ///
    /// # Errors
    ///
    /// [`NoteError::TooLarge`], [`NoteError::TooManySignatures`], or
    /// [`NoteError::MalformedNote`] for anything that is not a note per c2sp.org/signed-note:
    /// non-UTF-8, control characters, no blank line before the signatures, a signature block not
    /// ending in a newline, a line that is not `— name base64`, an invalid key name, base64 that
    /// is not canonical, a signature shorter than five bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        if bytes.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge {
                max: MAX_NOTE_BYTES,
            });
        }
        let msg = std::str::from_utf8(bytes).map_err(|_| NoteError::MalformedNote("not UTF-8"))?;
        if !is_note_text(msg) {
            return Err(NoteError::MalformedNote(
                "control characters other than newline",
            ));
        }
        let split = msg.rfind("\n\n").ok_or(NoteError::MalformedNote(
            "no blank line before the signatures",
        ))?;
        let (text, rest) = msg.split_at(split + 1);
        let sigs = rest.strip_prefix('\n').unwrap_or(rest);
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(NoteError::MalformedNote(
                "the signature lines must end with a newline",
            ));
        }
        let mut signatures = Vec::new();
        for line in sigs.split_terminator('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures {
                    max: MAX_SIGNATURES,
                });
            }
            signatures.push(NoteSignature::parse_line(line)?);
        }
        Ok(Self {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The signed text, final newline included.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signature lines, in order.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }
}

impl fmt::Display for Note {
    /// The note as it is stored and sent: text, blank line, signature lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        f.write_str("\n")?;
        for signature in &self.signatures {
            writeln!(f, "{signature}")?;
        }
        Ok(())
    }
}

// === impl NoteSignature ===

impl NoteSignature {
    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The signature bytes (after the key id).
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    fn parse_line(line: &str) -> Result<Self, NoteError> {
        let rest = line
            .strip_prefix(SIG_PREFIX)
            .ok_or(NoteError::MalformedNote(
                "a signature line must start with an em dash and a space",
            ))?;
        let (name, b64) = rest.split_once(' ').ok_or(NoteError::MalformedNote(
            "a signature line needs a key name and a signature",
        ))?;
        if !is_valid_name(name) {
            return Err(NoteError::MalformedNote("invalid key name"));
        }
        let raw = base64_decode(b64).ok_or(NoteError::MalformedNote(
            "the signature is not canonical base64",
        ))?;
        let (Some(id), Some(signature)) = (raw.get(..4), raw.get(4..)) else {
            return Err(NoteError::MalformedNote("the signature is too short"));
        };
        if signature.is_empty() {
            return Err(NoteError::MalformedNote("the signature is too short"));
        }
        Ok(Self {
            name: name.to_owned(),
            key_id: be_u32(id),
            signature: signature.to_vec(),
        })
    }
}

impl fmt::Display for NoteSignature {
    /// The signature line without its newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = Vec::with_capacity(4 + self.signature.len());
        raw.extend_from_slice(&self.key_id.to_be_bytes());
        raw.extend_from_slice(&self.signature);
        write!(f, "{SIG_PREFIX}{} {}", self.name, base64_encode(&raw))
    }
}

// === impl VerifierKey ===

impl VerifierKey {
    /// The verifier key of an Ed25519 public key under `name`.
    ///
    /// # Errors
    ///
    /// [`NoteError::MalformedKey`] for an invalid key name (empty, spaces, `+`, control
    /// characters).
    pub fn new(name: &str, public_key: [u8; 32]) -> Result<Self, NoteError> {
        if !is_valid_name(name) {
            return Err(NoteError::MalformedKey("invalid key name"));
        }
        Ok(Self {
            key_id: key_id(name, &public_key),
            name: name.to_owned(),
            public_key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// `name+keyid`, how errors and reports name the key.
    pub fn label(&self) -> String {
        format!("{}+{:08x}", self.name, self.key_id)
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.public_key)
            .verify(message, signature)
            .is_ok()
    }
}

impl FromStr for VerifierKey {
    type Err = NoteError;

    /// Reads `name+keyid+base64(0x01 ‖ public key)` and checks the key id.
    fn from_str(text: &str) -> Result<Self, NoteError> {
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::MalformedKey(
                "a verifier key is `name+keyid+base64`",
            ));
        };
        let public_key: [u8; 32] = decode_key(b64)?;
        let key = Self::new(name, public_key)?;
        if parse_key_id(id)? != key.key_id {
            return Err(NoteError::MalformedKey("the key id does not match the key"));
        }
        Ok(key)
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = Vec::with_capacity(33);
        raw.push(ALG_ED25519);
        raw.extend_from_slice(&self.public_key);
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            base64_encode(&raw)
        )
    }
}

// === impl Signer ===

impl Signer {
    /// A signer from a 32-byte Ed25519 seed (the private key of RFC 8032).
    ///
    /// # Errors
    ///
    /// [`NoteError::MalformedKey`] for an invalid key name.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        let key_pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| NoteError::MalformedKey("not an Ed25519 seed"))?;
        Self::with_key_pair(name, key_pair)
    }

    /// A signer from an Ed25519 private key in PKCS#8 v2 (as `enclave init` writes
    /// `audit-signing.key`).
    ///
    /// # Errors
    ///
    /// [`NoteError::MalformedKey`] for an invalid key name or a document that is not an Ed25519
    /// PKCS#8 v2 key whose public key matches its private key.
    pub fn from_pkcs8(name: &str, pkcs8: &[u8]) -> Result<Self, NoteError> {
        let key_pair = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|_| NoteError::MalformedKey("not an Ed25519 PKCS#8 v2 private key"))?;
        Self::with_key_pair(name, key_pair)
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The matching verifier key, to publish and to trust.
    pub fn verifier_key(&self) -> VerifierKey {
        let mut public_key = [0u8; 32];
        public_key.copy_from_slice(self.key_pair.public_key().as_ref());
        VerifierKey {
            name: self.name.clone(),
            key_id: self.key_id,
            public_key,
        }
    }

    /// Signs `text` and returns the signed note (text, blank line, this key's signature line).
    ///
    /// # Errors
    ///
    /// [`NoteError::MalformedNote`] when `text` is empty, does not end in a newline or holds a
    /// control character other than newline; [`NoteError::TooLarge`] when the note would exceed
    /// [`MAX_NOTE_BYTES`].
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        sign_note(text, &[self])
    }

    fn signature_line(&self, text: &str) -> NoteSignature {
        NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature: self.key_pair.sign(text.as_bytes()).as_ref().to_vec(),
        }
    }

    fn with_key_pair(name: &str, key_pair: Ed25519KeyPair) -> Result<Self, NoteError> {
        if !is_valid_name(name) {
            return Err(NoteError::MalformedKey("invalid key name"));
        }
        let mut public_key = [0u8; 32];
        public_key.copy_from_slice(key_pair.public_key().as_ref());
        Ok(Self {
            key_id: key_id(name, &public_key),
            name: name.to_owned(),
            key_pair,
        })
    }
}

impl FromStr for Signer {
    type Err = NoteError;

    /// Reads `PRIVATE+KEY+name+keyid+base64(0x01 ‖ seed)` and checks the key id against the
    /// public key derived from the seed.
    fn from_str(text: &str) -> Result<Self, NoteError> {
        let mut parts = text.splitn(5, '+');
        let (Some("PRIVATE"), Some("KEY"), Some(name), Some(id), Some(b64)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(NoteError::MalformedKey(
                "a signer key is `PRIVATE+KEY+name+keyid+base64`",
            ));
        };
        let seed: [u8; 32] = decode_key(b64)?;
        let signer = Self::from_seed(name, &seed)?;
        if parse_key_id(id)? != signer.key_id {
            return Err(NoteError::MalformedKey("the key id does not match the key"));
        }
        Ok(signer)
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SECURITY: the private key never reaches a log line.
        f.debug_struct("Signer")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .finish_non_exhaustive()
    }
}

/// Signs `text` with every signer, in order, and returns the signed note. Signing with the old
/// and the new key during a rotation lets verifiers that trust either one open the note.
///
/// # Errors
///
/// As [`Signer::sign`]; also [`NoteError::MalformedNote`] with no signers and
/// [`NoteError::TooManySignatures`] with more than [`MAX_SIGNATURES`].
pub fn sign_note(text: &str, signers: &[&Signer]) -> Result<String, NoteError> {
    if text.is_empty() || !text.ends_with('\n') {
        return Err(NoteError::MalformedNote(
            "the text must be non-empty and end with a newline",
        ));
    }
    if !is_note_text(text) {
        return Err(NoteError::MalformedNote(
            "control characters other than newline",
        ));
    }
    if signers.is_empty() {
        return Err(NoteError::MalformedNote(
            "a note needs at least one signature",
        ));
    }
    if signers.len() > MAX_SIGNATURES {
        return Err(NoteError::TooManySignatures {
            max: MAX_SIGNATURES,
        });
    }
    let note = Note {
        text: text.to_owned(),
        signatures: signers.iter().map(|s| s.signature_line(text)).collect(),
    };
    let rendered = note.to_string();
    if rendered.len() > MAX_NOTE_BYTES {
        return Err(NoteError::TooLarge {
            max: MAX_NOTE_BYTES,
        });
    }
    Ok(rendered)
}

// === impl Verifiers ===

impl Verifiers {
    /// The set of trusted keys.
    ///
    /// # Errors
    ///
    /// [`NoteError::AmbiguousKey`] when two keys share a name and a key id (a collision, or
    /// someone tampered with the list): a signature could not be attributed.
    pub fn new(keys: impl IntoIterator<Item = VerifierKey>) -> Result<Self, NoteError> {
        let mut set = Self::default();
        for key in keys {
            set.add(key)?;
        }
        Ok(set)
    }

    /// Adds a trusted key.
    ///
    /// # Errors
    ///
    /// [`NoteError::AmbiguousKey`] when a key of the same name and key id is already trusted.
    pub fn add(&mut self, key: VerifierKey) -> Result<(), NoteError> {
        if self.find(&key.name, key.key_id).is_some() {
            return Err(NoteError::AmbiguousKey { key: key.label() });
        }
        self.keys.push(key);
        Ok(())
    }

    /// The trusted keys.
    pub fn keys(&self) -> &[VerifierKey] {
        &self.keys
    }

    /// Parses a note and checks its signatures: signatures by unknown keys (another name or
    /// another key id) are ignored; every signature by a trusted key must verify; at least one
    /// must be there.
    ///
    /// # Errors
    ///
    /// The errors of [`Note::parse`]; [`NoteError::SignatureInvalid`] when a signature by a
    /// trusted key does not verify; [`NoteError::NoTrustedSignature`] when no trusted key signed.
    pub fn open(&self, bytes: &[u8]) -> Result<VerifiedNote, NoteError> {
        let note = Note::parse(bytes)?;
        let mut signed_by: Vec<VerifierKey> = Vec::new();
        for signature in &note.signatures {
            let Some(key) = self.find(&signature.name, signature.key_id) else {
                continue;
            };
            // SECURITY: a known name and key id whose signature fails rejects the whole note
            // (signed-note: clients SHOULD reject), rather than trusting the other signatures.
            if !key.verify(note.text.as_bytes(), &signature.signature) {
                return Err(NoteError::SignatureInvalid { key: key.label() });
            }
            if !signed_by.contains(key) {
                signed_by.push(key.clone());
            }
        }
        if signed_by.is_empty() {
            return Err(NoteError::NoTrustedSignature);
        }
        Ok(VerifiedNote { note, signed_by })
    }

    fn find(&self, name: &str, key_id: u32) -> Option<&VerifierKey> {
        self.keys
            .iter()
            .find(|k| k.key_id == key_id && k.name == name)
    }
}

// === impl VerifiedNote ===

impl VerifiedNote {
    /// The signed text.
    pub fn text(&self) -> &str {
        &self.note.text
    }

    /// The whole note.
    pub fn note(&self) -> &Note {
        &self.note
    }

    /// The trusted keys whose signatures verified.
    pub fn signed_by(&self) -> &[VerifierKey] {
        &self.signed_by
    }
}

/// The key id of an Ed25519 key: `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4]`, big-endian.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let mut input = Vec::with_capacity(name.len() + 2 + 32);
    input.extend_from_slice(name.as_bytes());
    input.push(b'\n');
    input.push(ALG_ED25519);
    input.extend_from_slice(public_key);
    be_u32(digest(&SHA256, &input).as_ref())
}

/// A key name: non-empty, no Unicode space, no `+`, no control character.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

/// No ASCII control character other than newline (signed-note's rule for the whole note).
pub(crate) fn is_note_text(text: &str) -> bool {
    !text.bytes().any(|b| b < 0x20 && b != b'\n')
}

fn parse_key_id(text: &str) -> Result<u32, NoteError> {
    hex_decode::<4>(text)
        .map(u32::from_be_bytes)
        .ok_or(NoteError::MalformedKey(
            "the key id must be eight lowercase hex digits",
        ))
}

fn decode_key(b64: &str) -> Result<[u8; 32], NoteError> {
    let raw =
        base64_decode(b64).ok_or(NoteError::MalformedKey("the key is not canonical base64"))?;
    let Some((&alg, key)) = raw.split_first() else {
        return Err(NoteError::MalformedKey("the key is empty"));
    };
    if alg != ALG_ED25519 {
        return Err(NoteError::MalformedKey(
            "only Ed25519 keys (type 0x01) are supported",
        ));
    }
    <[u8; 32]>::try_from(key).map_err(|_| NoteError::MalformedKey("an Ed25519 key is 32 bytes"))
}

/// The first four bytes of `bytes`, big-endian (zero-padded if shorter; callers pass four).
fn be_u32(bytes: &[u8]) -> u32 {
    let mut id = [0u8; 4];
    for (dst, src) in id.iter_mut().zip(bytes) {
        *dst = *src;
    }
    u32::from_be_bytes(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEUMANN_SIGNER: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const NEUMANN_VERIFIER: &str =
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const NEUMANN_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                                then you don't know what your problem is.\n";
    const NEUMANN_LINE: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=";
    const EXAMPLE_VERIFIER: &str =
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";

    fn neumann() -> Signer {
        NEUMANN_SIGNER.parse().unwrap()
    }

    fn trusting(keys: &[&VerifierKey]) -> Verifiers {
        Verifiers::new(keys.iter().map(|k| (*k).clone())).unwrap()
    }

    #[test]
    fn the_specification_example_verifier_key_parses_and_renders_back() {
        let key: VerifierKey = EXAMPLE_VERIFIER.parse().unwrap();
        assert_eq!(key.name(), "example.com/foo");
        assert_eq!(key.key_id(), 0x530d_903a);
        assert_eq!(key.to_string(), EXAMPLE_VERIFIER);
    }

    #[test]
    fn signing_the_neumann_text_gives_the_known_signature_line() {
        let signer = neumann();
        assert_eq!(signer.key_id(), 0xc74f_20a3);
        assert_eq!(signer.verifier_key().to_string(), NEUMANN_VERIFIER);
        let note = signer.sign(NEUMANN_TEXT).unwrap();
        assert_eq!(note, format!("{NEUMANN_TEXT}\n{NEUMANN_LINE}\n"));
        let key: VerifierKey = NEUMANN_VERIFIER.parse().unwrap();
        let opened = trusting(&[&key]).open(note.as_bytes()).unwrap();
        assert_eq!(opened.text(), NEUMANN_TEXT);
        assert_eq!(opened.signed_by(), &[key]);
    }

    #[test]
    fn signatures_by_unknown_keys_are_ignored_and_one_trusted_is_needed() {
        let neumann_key: VerifierKey = NEUMANN_VERIFIER.parse().unwrap();
        let other = Signer::from_seed("example.com/other", &[7; 32]).unwrap();
        let note = sign_note(NEUMANN_TEXT, &[&other, &neumann()]).unwrap();
        let opened = trusting(&[&neumann_key]).open(note.as_bytes()).unwrap();
        assert_eq!(opened.signed_by().len(), 1);
        assert_eq!(
            trusting(&[]).open(note.as_bytes()),
            Err(NoteError::NoTrustedSignature)
        );
        // Same name, another key id: unknown, ignored.
        let impostor = Signer::from_seed("PeterNeumann", &[9; 32]).unwrap();
        let note = impostor.sign(NEUMANN_TEXT).unwrap();
        assert_eq!(
            trusting(&[&neumann_key]).open(note.as_bytes()),
            Err(NoteError::NoTrustedSignature)
        );
    }

    #[test]
    fn a_failing_signature_by_a_trusted_key_rejects_the_note() {
        let neumann_key: VerifierKey = NEUMANN_VERIFIER.parse().unwrap();
        let other = Signer::from_seed("example.com/other", &[7; 32]).unwrap();
        let note = sign_note(NEUMANN_TEXT, &[&other, &neumann()]).unwrap();
        let edited = note.replacen("answer", "ANSWER", 1);
        let keys = trusting(&[&neumann_key, &other.verifier_key()]);
        assert_eq!(
            keys.open(edited.as_bytes()),
            Err(NoteError::SignatureInvalid {
                key: "example.com/other+".to_owned() + &format!("{:08x}", other.key_id())
            })
        );
    }

    #[test]
    fn rotation_trusts_old_and_new_keys() {
        let old = Signer::from_seed("enclave.test/audit", &[1; 32]).unwrap();
        let new = Signer::from_seed("enclave.test/audit", &[2; 32]).unwrap();
        assert_ne!(old.key_id(), new.key_id());
        let keys = trusting(&[&old.verifier_key(), &new.verifier_key()]);
        for signer in [&old, &new] {
            let note = signer
                .sign("enclave.test/audit\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n")
                .unwrap();
            assert!(keys.open(note.as_bytes()).is_ok());
        }
        assert_eq!(
            Verifiers::new([old.verifier_key(), old.verifier_key()]).map(|_| ()),
            Err(NoteError::AmbiguousKey {
                key: old.verifier_key().label()
            })
        );
    }

    #[test]
    fn pkcs8_keys_from_ring_sign() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let signer = Signer::from_pkcs8("enclave.test/audit", pkcs8.as_ref()).unwrap();
        let note = signer.sign("hello\n").unwrap();
        assert!(
            trusting(&[&signer.verifier_key()])
                .open(note.as_bytes())
                .is_ok()
        );
        assert!(Signer::from_pkcs8("enclave.test/audit", b"not a key").is_err());
        assert!(format!("{signer:?}").contains("enclave.test/audit"));
    }

    #[test]
    fn malformed_notes_are_rejected() {
        let good = neumann().sign(NEUMANN_TEXT).unwrap();
        let line = NEUMANN_LINE;
        let b64 = line.rsplit(' ').next().unwrap();
        let many = format!(
            "{NEUMANN_TEXT}\n{}",
            format!("{line}\n").repeat(MAX_SIGNATURES + 1)
        );
        let cases: Vec<(Vec<u8>, NoteError)> = vec![
            (
                good.trim_end().into(),
                NoteError::MalformedNote("the signature lines must end with a newline"),
            ),
            (
                good.replace("\n\n", "\n").into(),
                NoteError::MalformedNote("no blank line before the signatures"),
            ),
            (
                format!("{NEUMANN_TEXT}\n").into(),
                NoteError::MalformedNote("the signature lines must end with a newline"),
            ),
            (
                good.replace("— ", "-- ").into(),
                NoteError::MalformedNote("a signature line must start with an em dash and a space"),
            ),
            (
                good.replace("— ", "—").into(),
                NoteError::MalformedNote("a signature line must start with an em dash and a space"),
            ),
            (
                good.replace(" x08", "x08").into(),
                NoteError::MalformedNote("a signature line needs a key name and a signature"),
            ),
            (
                good.replace("PeterNeumann", "Peter+Neumann").into(),
                NoteError::MalformedNote("invalid key name"),
            ),
            (
                good.replace("PeterNeumann", "Peter\u{a0}Neumann").into(),
                NoteError::MalformedNote("invalid key name"),
            ),
            (
                good.replace(b64, &b64[..b64.len() - 1]).into(),
                NoteError::MalformedNote("the signature is not canonical base64"),
            ),
            (
                good.replace(b64, &format!("{b64} ")).into(),
                NoteError::MalformedNote("the signature is not canonical base64"),
            ),
            (
                good.replace(b64, "AAAAAA==").into(),
                NoteError::MalformedNote("the signature is too short"),
            ),
            (
                good.replace("problem,", "problem,\r").into(),
                NoteError::MalformedNote("control characters other than newline"),
            ),
            (
                good.replace("problem,", "problem,\t").into(),
                NoteError::MalformedNote("control characters other than newline"),
            ),
            (
                [good.as_bytes(), b"\xff"].concat(),
                NoteError::MalformedNote("not UTF-8"),
            ),
            (
                many.into(),
                NoteError::TooManySignatures {
                    max: MAX_SIGNATURES,
                },
            ),
            (
                vec![b'a'; MAX_NOTE_BYTES + 1],
                NoteError::TooLarge {
                    max: MAX_NOTE_BYTES,
                },
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                Note::parse(&bytes),
                Err(want),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
        }
        assert_eq!(Note::parse(good.as_bytes()).unwrap().to_string(), good);
    }

    #[test]
    fn malformed_keys_are_rejected() {
        for bad in [
            "",
            "PeterNeumann",
            "PeterNeumann+c74f20a3",
            "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+Apc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+AhpcQcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW=",
        ] {
            assert!(bad.parse::<VerifierKey>().is_err(), "{bad}");
        }
        for bad in [
            "PRIVATE+KEY+PeterNeumann+c74f20a4+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
            "PRIVATE+KEYS+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
            "PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        ] {
            assert!(bad.parse::<Signer>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sign_refuses_texts_that_are_not_note_texts() {
        let signer = neumann();
        assert!(signer.sign("").is_err());
        assert!(signer.sign("no newline").is_err());
        assert!(signer.sign("tab\there\n").is_err());
        assert!(sign_note("ok\n", &[]).is_err());
    }
}
