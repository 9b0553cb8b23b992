//! The crate's errors, one enum per concept. Messages are lowercase and never contain key
//! material; entry values appear only as field names and positions.

use std::fmt;

use thiserror::Error;

/// A Merkle proof could not be produced or does not verify.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ProofError {
    /// A consistency proof from the empty tree was asked for or given: every tree extends the
    /// empty tree, so such a proof proves nothing and is refused.
    #[error("a consistency proof must start from a non-empty tree")]
    FromEmptyTree,
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is not inside a tree of size {size}")]
    IndexBeyondSize {
        /// The leaf index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A hash is not 32 bytes or not canonical base64 / hex.
    #[error("a hash must be 32 bytes in canonical base64 or lowercase hex")]
    MalformedHash,
    /// The hashes of the proof do not lead to the expected root.
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
    /// A size is larger than the tree the proof was asked of.
    #[error("size {size} is beyond the tree's {len} leaves")]
    SizeBeyondTree {
        /// The size asked for.
        size: u64,
        /// The tree's length.
        len: u64,
    },
    /// The first size is larger than the second.
    #[error("size {size1} is larger than size {size2}: a log only grows")]
    SizesOutOfOrder {
        /// The first (older) size.
        size1: u64,
        /// The second (newer) size.
        size2: u64,
    },
    /// The proof has the wrong number of hashes for the sizes given.
    #[error("the proof has {got} hashes where the tree's shape needs {expected}")]
    WrongProofLength {
        /// The number of hashes given.
        got: usize,
        /// The number the sizes call for.
        expected: usize,
    },
}

/// A signed note, checkpoint or key is malformed, or a signature does not verify.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum NoteError {
    /// Two trusted verifier keys have the same name and key id.
    #[error("two trusted keys are both `{key}`: remove one")]
    AmbiguousKey {
        /// The key's `name+keyid`.
        key: String,
    },
    /// The checkpoint body (the note text) does not follow c2sp.org/tlog-checkpoint.
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
    /// A signer or verifier key text is malformed or its key id does not match its key.
    #[error("malformed key: {0}")]
    MalformedKey(&'static str),
    /// The note does not follow c2sp.org/signed-note.
    #[error("malformed note: {0}")]
    MalformedNote(&'static str),
    /// The note carries no signature from a trusted key.
    #[error("the note has no signature by a trusted key")]
    NoTrustedSignature,
    /// The checkpoint was issued by another log than the one expected.
    #[error("the checkpoint's origin is `{found}`, expected `{expected}`")]
    OriginMismatch {
        /// The origin the caller expects.
        expected: String,
        /// The origin in the checkpoint.
        found: String,
    },
    /// A signature by a trusted key (matching name and key id) does not verify.
    #[error("the signature by trusted key `{key}` does not verify")]
    SignatureInvalid {
        /// The key's `name+keyid`.
        key: String,
    },
    /// The note carries more signatures than the limit.
    #[error("the note has more than {max} signatures")]
    TooManySignatures {
        /// The limit.
        max: usize,
    },
    /// The note is longer than the limit.
    #[error("the note is longer than {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
}

/// An audit entry could not be read from its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum EntryError {
    /// The `kind` field does not match the record the entry carries.
    #[error("entry kind `{kind}` needs exactly one `{kind}` record and no other")]
    KindMismatch {
        /// The kind the entry states.
        kind: &'static str,
    },
    /// The bytes are not a JSON object of the entry format (syntax, types, unknown or duplicate
    /// fields).
    #[error("not an audit entry: {0}")]
    Malformed(String),
    /// A keyed digest is not 64 lowercase hex digits.
    #[error("a keyed digest must be 64 lowercase hex digits")]
    MalformedDigest,
    /// A time is not of the form `2026-11-24T09:30:00.125Z`.
    #[error("a time must look like `2026-11-24T09:30:00.125Z` (UTC, milliseconds)")]
    MalformedTime,
    /// The bytes parse, but are not the entry's canonical encoding.
    #[error("not in canonical form: first difference at byte {at}")]
    NotCanonical {
        /// The offset of the first byte that differs from the canonical encoding.
        at: usize,
    },
    /// A time at or after the year 10000.
    #[error("a time must be before the year 10000")]
    TimeOutOfRange,
    /// The entry is longer than the limit.
    #[error("the entry is longer than {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// The entry's format version is not one this crate reads.
    #[error("entry format version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version in the entry.
        found: u64,
        /// The version this crate writes and reads.
        supported: u64,
    },
}

/// An export could not be rendered or read back.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ExportError {
    /// An entry's bytes contain a newline, so they cannot be one JSON Lines line.
    #[error("the entry at index {index} contains a newline and cannot be one JSON line")]
    EntryHasNewline {
        /// The entry's index.
        index: u64,
    },
    /// A line of the export is empty.
    #[error("line {line} of the export is empty")]
    EmptyLine {
        /// The line number, from 1.
        line: u64,
    },
    /// The last line of the export has no final newline: the file was cut short.
    #[error("line {line} of the export has no final newline: the file is cut short")]
    UnterminatedLine {
        /// The line number, from 1.
        line: u64,
    },
}

/// The audit log has been changed: where and how (the result of [`crate::LogVerifier`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tampered {
    /// The first bad entry index, or `None` for a problem with the checkpoints themselves.
    pub index: Option<u64>,
    /// What is wrong, in words.
    pub what: String,
}

impl fmt::Display for Tampered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(index) => write!(f, "first bad entry {index}: {}", self.what),
            None => f.write_str(&self.what),
        }
    }
}

impl std::error::Error for Tampered {}
