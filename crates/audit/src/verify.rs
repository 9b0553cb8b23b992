//! The streaming verifier behind `enclave audit verify`.
//!
//! Give [`LogVerifier::new`] the trusted keys and every stored checkpoint note, in the order they
//! were made; then [`LogVerifier::push`] every entry in index order (its row index and its exact
//! stored bytes); then [`LogVerifier::finish`]. Memory stays `O(log n)` whatever the log's size.
//!
//! The contract (what is checked, what is reported) is on [`LogVerifier`].

use crate::checkpoint::Checkpoint;
use crate::entry::AuditEntry;
use crate::error::Tampered;
use crate::merkle::{CompactRange, Hash, hash_leaf};
use crate::note::Verifiers;

/// The log is intact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The number of entries.
    pub size: u64,
    /// The root of the tree over all entries.
    pub root: Hash,
    /// The number of checkpoints checked.
    pub checkpoints: usize,
    /// The largest checkpoint size: entries `[0, signed_size)` are covered by a signature.
    pub signed_size: u64,
}

/// The streaming verifier: give [`LogVerifier::new`] the trusted keys and every stored checkpoint
/// note, in the order they were made; then [`LogVerifier::push`] every entry in index order;
/// then [`LogVerifier::finish`]. Memory stays `O(log n)` whatever the size of the log.
///
/// # What is checked, and what is reported
///
/// The checkpoints are checked first, as a whole, before any entry; a problem with them is
/// reported with no index ([`Tampered::index`] is `None`):
///
/// - every note opens with the trusted keys (at least one trusted signature, no trusted one
///   failing) and its text is a checkpoint;
/// - all checkpoints name the same origin (the expected one, if given);
/// - sizes never decrease from one checkpoint to the next (a smaller size is a rollback), and two
///   checkpoints of one size have one root (two roots are a fork).
///
/// Then each entry, in order; the first problem ends the run and is reported with an index:
///
/// - its row index is its position `n` (no gap, no repeat), its bytes read as an entry in
///   canonical form, and the `index` written in it is `n`. A mismatch is reported at `n` —
///   except when the entry repeats an earlier index `m` that no checkpoint has confirmed yet:
///   then the entry at `m` may be the forged one (an inserted entry pushes the original down one
///   place), and `m` is reported;
/// - when the entries read reach a checkpoint's size, the root recomputed over them must be the
///   checkpoint's root. If it is not, some entry since the last checkpoint that matched was
///   edited and re-encoded canonically with its index intact: which one cannot be known without
///   the original, so the report names the first index the failing checkpoint covers beyond that
///   last good checkpoint (`0` if there is none), and the range in its text.
///
/// At the end, a checkpoint whose size exceeds the number of entries means the log was cut
/// short: the report names the first missing index, the number of entries.
///
/// Entries after the last checkpoint are checked for form and order but are not covered by any
/// signature yet; [`Verified::signed_size`] says how far the signatures reach.
#[derive(Debug)]
pub struct LogVerifier {
    /// The checkpoints, in the order given (sizes non-decreasing), with their ordinal from 1.
    checkpoints: Vec<(usize, Checkpoint)>,
    /// The next checkpoint to compare, as a position in `checkpoints`.
    next: usize,
    range: CompactRange,
    /// The size of the last checkpoint whose root matched.
    covered: u64,
}

impl LogVerifier {
    /// Opens and cross-checks the checkpoint notes, in the order they were made.
    ///
    /// `origin` pins the log's name; with `None`, the checkpoints must merely agree on one.
    /// Creation order must also be size order: where several gateway replicas share a database,
    /// the checkpoint should be made in the transaction that fixes its size, so that a lagging
    /// replica cannot store a smaller checkpoint after a larger one (that reads as a rollback).
    ///
    /// # Errors
    ///
    /// [`Tampered`] with no index for a checkpoint that does not open or that contradicts an
    /// earlier one; with index 0 for a size-0 checkpoint whose root is not the empty root.
    pub fn new<I>(trusted: &Verifiers, origin: Option<&str>, notes: I) -> Result<Self, Tampered>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut checkpoints: Vec<(usize, Checkpoint)> = Vec::new();
        let mut origin = origin.map(str::to_owned);
        for (i, note) in notes.into_iter().enumerate() {
            let ordinal = i + 1;
            let checkpoint = Checkpoint::open(note.as_ref(), trusted)
                .map_err(|e| unindexed(format!("checkpoint #{ordinal}: {e}")))?;
            match &origin {
                Some(expected) if expected != checkpoint.origin() => {
                    return Err(unindexed(format!(
                        "checkpoint #{ordinal} is of log `{}`, not `{expected}`",
                        checkpoint.origin()
                    )));
                }
                Some(_) => {}
                None => origin = Some(checkpoint.origin().to_owned()),
            }
            if let Some((before, previous)) = checkpoints.last() {
                if checkpoint.size() < previous.size() {
                    return Err(unindexed(format!(
                        "checkpoint #{ordinal} has size {} after checkpoint #{before} had size {}: \
                         the log was rolled back",
                        checkpoint.size(),
                        previous.size()
                    )));
                }
                if checkpoint.size() == previous.size() && checkpoint.root() != previous.root() {
                    return Err(unindexed(format!(
                        "checkpoints #{before} and #{ordinal} both have size {} but different \
                         roots: the log forked",
                        checkpoint.size()
                    )));
                }
            }
            checkpoints.push((ordinal, checkpoint));
        }
        let mut verifier = Self {
            checkpoints,
            next: 0,
            range: CompactRange::new(),
            covered: 0,
        };
        verifier.check_reached()?;
        Ok(verifier)
    }

    /// Checks the next entry: `row` is the index its storage gives it (the database row's index
    /// or the export's line number from 0), `bytes` its exact stored bytes.
    ///
    /// # Errors
    ///
    /// [`Tampered`] naming the first bad index; see [`LogVerifier`].
    pub fn push(&mut self, row: u64, bytes: &[u8]) -> Result<(), Tampered> {
        let n = self.range.size();
        if row != n {
            return Err(self.misplaced(n, row, "is stored as row"));
        }
        let entry = AuditEntry::from_canonical_bytes(bytes).map_err(|e| Tampered {
            index: Some(n),
            what: format!("entry {n} is not a canonical audit entry: {e}"),
        })?;
        if entry.index != n {
            return Err(self.misplaced(n, entry.index, "carries index"));
        }
        self.range.push(hash_leaf(bytes));
        self.check_reached()
    }

    /// The number of entries pushed.
    pub fn size(&self) -> u64 {
        self.range.size()
    }

    /// Ends the run.
    ///
    /// # Errors
    ///
    /// [`Tampered`] when a checkpoint signs more entries than were pushed: the tail of the log
    /// was removed; the index is the first missing one.
    pub fn finish(self) -> Result<Verified, Tampered> {
        let n = self.range.size();
        if let Some((ordinal, checkpoint)) = self.checkpoints.get(self.next) {
            return Err(Tampered {
                index: Some(n),
                what: format!(
                    "checkpoint #{ordinal} signs {} entries but the log ends after {n}: \
                     entries {n}..{} were removed",
                    checkpoint.size(),
                    checkpoint.size()
                ),
            });
        }
        Ok(Verified {
            size: n,
            root: self.range.root(),
            checkpoints: self.checkpoints.len(),
            signed_size: self.covered,
        })
    }

    /// Compares the root with every checkpoint of the current size.
    fn check_reached(&mut self) -> Result<(), Tampered> {
        let n = self.range.size();
        while let Some((ordinal, checkpoint)) = self.checkpoints.get(self.next) {
            if checkpoint.size() != n {
                break;
            }
            if self.range.root() != *checkpoint.root() {
                let from = self.covered;
                return Err(Tampered {
                    index: Some(from),
                    what: format!(
                        "checkpoint #{ordinal} (size {n}) does not match the entries: an entry in \
                         {from}..{n} was changed"
                    ),
                });
            }
            self.covered = n;
            self.next += 1;
        }
        Ok(())
    }

    /// The report for position `n` holding the entry `found` (a row number or written index).
    fn misplaced(&self, n: u64, found: u64, how: &str) -> Tampered {
        if found > n {
            return Tampered {
                index: Some(n),
                what: format!(
                    "entry {n} is missing: the entry at position {n} {how} {found} (entries \
                     removed or reordered)"
                ),
            };
        }
        // An index seen before: the earlier holder may be the forgery, unless a checkpoint has
        // already vouched for it.
        let index = if found >= self.covered { found } else { n };
        Tampered {
            index: Some(index),
            what: format!(
                "the entry at position {n} {how} {found}, which position {found} already had: \
                 an entry was inserted or copied"
            ),
        }
    }
}

fn unindexed(what: String) -> Tampered {
    Tampered { index: None, what }
}
