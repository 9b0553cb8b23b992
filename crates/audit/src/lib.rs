//! The tamper-evident audit log of Enclave, as pure functions over values.
//!
//! Every request and every administrative action becomes an [`AuditEntry`] whose canonical JSON
//! bytes are one leaf of an RFC 6962 / RFC 9162 Merkle tree. Signed checkpoints (C2SP
//! `tlog-checkpoint` notes with an Ed25519 key) fix the tree's root at a size, so an auditor can
//! prove offline, without trusting the operator, that no entry was edited, removed, inserted,
//! reordered or cut off:
//!
//! - entries: [`AuditEntry`] with its [`Event`] ([`RequestEvent`] or [`AdminEvent`]), its
//!   canonical bytes and strict parser; [`keyed_digest`] for the prompt and output digests that
//!   stand in for their text;
//! - the tree: [`hash_leaf`], [`hash_children`], the in-memory [`Tree`] that serves roots and
//!   proofs at any size, the streaming [`CompactRange`], [`verify_inclusion`] and
//!   [`verify_consistency`];
//! - signatures: signed notes ([`Note`]), [`Signer`] (seed, PKCS#8 v2 or signer key text),
//!   [`VerifierKey`], the trusted set [`Verifiers`] (several keys for key rotation), and
//!   [`Checkpoint`];
//! - verification: [`LogVerifier`] streams a whole log and names the first bad entry;
//! - export: JSON Lines ([`render_jsonl`], [`read_jsonl`]) and OCSF API Activity events
//!   ([`to_ocsf`]).
//!
//! What it is not: storage, clocks and I/O. The crate reads no file, no environment and no
//! clock and spawns nothing; the store keeps the rows (table `audit_entries`, column `entry`
//! holding each entry's exact bytes) and a [`Tree`] beside them, assigns the indices, and passes
//! times and keys in. The gateway builds the [`Event`]s; the CLI feeds [`LogVerifier`].
//!
//! ```
//! use enclave_audit::{
//!     AuditEntry, Checkpoint, Event, KeyedDigest, LogVerifier, RequestEvent, Signer, Timestamp,
//!     Tree, Verifiers, verify_inclusion,
//! };
//!
//! // The store appends an entry: its canonical bytes go in the row and in the tree.
//! let entry = AuditEntry {
//!     index: 0,
//!     time: Timestamp::from_unix_millis(1_795_512_600_125)?,
//!     event: Event::Request(RequestEvent {
//!         request_id: "req_1".into(),
//!         route: "chat.completions".into(),
//!         status: 200,
//!         prompt_hmac: Some(KeyedDigest::compute(b"tenant key", b"Hello")),
//!         ..RequestEvent::default()
//!     }),
//! };
//! let bytes = entry.encode()?;
//! let mut tree = Tree::new();
//! tree.push_data(&bytes);
//!
//! // A checkpoint signs the root; a proof shows the entry is in it.
//! let signer = Signer::from_seed("enclave.example/audit", &[7; 32])?;
//! let note = Checkpoint::new("enclave.example/audit", tree.len(), tree.root())?.sign(&[&signer])?;
//! let proof = tree.inclusion_proof(0, 1)?;
//! verify_inclusion(0, 1, &tree.leaf(0).unwrap(), &proof, &tree.root())?;
//!
//! // An auditor verifies the whole log with the public key only.
//! let trusted = Verifiers::new([signer.verifier_key()])?;
//! let mut verifier = LogVerifier::new(&trusted, None, [note.as_bytes()])?;
//! verifier.push(0, &bytes)?;
//! let verified = verifier.finish()?;
//! assert_eq!((verified.size, verified.signed_size), (1, 1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(clippy::indexing_slicing)]

mod checkpoint;
mod encoding;
mod entry;
mod error;
mod export;
mod merkle;
mod note;
mod ocsf;
mod timestamp;
mod verify;

pub use checkpoint::Checkpoint;
pub use entry::{
    AdminEvent, AuditEntry, Decision, Event, FORMAT_VERSION, KeyedDigest, MAX_ENTRY_BYTES, Phase,
    RequestEvent, TokenCounts, keyed_digest,
};
pub use error::{EntryError, ExportError, NoteError, ProofError, Tampered};
pub use export::{
    CHECKPOINTS_DIR, ENTRIES_FILE, JsonlRows, append_jsonl, checkpoint_file_name, read_jsonl,
    render_jsonl,
};
pub use merkle::{
    CompactRange, HASH_BYTES, Hash, Tree, empty_root, hash_children, hash_leaf, verify_consistency,
    verify_inclusion,
};
pub use note::{
    MAX_NOTE_BYTES, MAX_SIGNATURES, Note, NoteSignature, Signer, VerifiedNote, VerifierKey,
    Verifiers, key_id, sign_note,
};
pub use ocsf::{OCSF_VERSION, to_ocsf};
pub use timestamp::Timestamp;
pub use verify::{LogVerifier, Verified};
