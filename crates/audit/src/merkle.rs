//! RFC 6962 / RFC 9162 Merkle tree hashing, an append-only in-memory tree that serves proofs, a
//! streaming root computer, and the two proof verifiers.
//!
//! Hashing (RFC 9162 §2.1.1), with SHA-256:
//!
//! - the root of the empty tree is `SHA-256("")`;
//! - a leaf is `SHA-256(0x00 ‖ data)`;
//! - an inner node is `SHA-256(0x01 ‖ left ‖ right)`, and a tree of `n > 1` leaves splits at the
//!   largest power of two smaller than `n`.
//!
//! [`Tree`] keeps every level of the perfect subtrees it has completed (level 0 holds the leaf
//! hashes, level `h` the roots of the aligned subtrees of `2^h` leaves), 64 bytes per leaf in all.
//! An append adds one leaf and on average one inner node; the root at any size and every proof
//! step then needs only `O(log n)` hashes, because every perfect subtree's hash is a lookup.
//!
//! [`CompactRange`] is the verifier's side: it folds a stream of leaves into the `O(log n)`
//! roots of the perfect subtrees that make up the prefix read so far, enough for the root at the
//! current size.

use std::fmt;
use std::str::FromStr;

use ring::digest::{Context, SHA256};

use crate::encoding::{base64_decode, base64_encode, hex_decode, hex_encode};
use crate::error::ProofError;

/// The number of bytes of a [`Hash`](struct@Hash).
pub const HASH_BYTES: usize = 32;

/// An upper bound on the hashes of any proof and on the levels of any tree: sizes are `u64`, so
/// a tree has at most 64 levels.
const MAX_PROOF_LEN: usize = 64;

/// A SHA-256 value: a leaf hash, an inner node or a tree root.
///
/// `Display` and `FromStr` use lowercase hex; [`Hash::to_base64`] and [`Hash::from_base64`] the
/// standard base64 that checkpoints and proofs carry.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash([u8; HASH_BYTES]);

impl Hash {
    /// Wraps 32 bytes.
    pub const fn new(bytes: [u8; HASH_BYTES]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; HASH_BYTES] {
        &self.0
    }

    /// Standard base64 with padding (44 characters).
    pub fn to_base64(&self) -> String {
        base64_encode(&self.0)
    }

    /// Reads standard base64 of exactly 32 bytes.
    ///
    /// # Errors
    ///
    /// [`ProofError::MalformedHash`] when `text` is not canonical base64 or not 32 bytes long.
    pub fn from_base64(text: &str) -> Result<Self, ProofError> {
        let bytes = base64_decode(text).ok_or(ProofError::MalformedHash)?;
        Self::try_from(bytes.as_slice())
    }
}

impl From<[u8; HASH_BYTES]> for Hash {
    fn from(bytes: [u8; HASH_BYTES]) -> Self {
        Self(bytes)
    }
}

impl TryFrom<&[u8]> for Hash {
    type Error = ProofError;

    fn try_from(bytes: &[u8]) -> Result<Self, ProofError> {
        <[u8; HASH_BYTES]>::try_from(bytes)
            .map(Self)
            .map_err(|_| ProofError::MalformedHash)
    }
}

impl AsRef<[u8]> for Hash {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_encode(&self.0))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

impl FromStr for Hash {
    type Err = ProofError;

    /// Reads 64 lowercase hex digits.
    fn from_str(text: &str) -> Result<Self, ProofError> {
        hex_decode::<HASH_BYTES>(text)
            .map(Self)
            .ok_or(ProofError::MalformedHash)
    }
}

/// The root of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    digest(&[&[]])
}

/// The leaf hash of `data`: `SHA-256(0x00 ‖ data)`.
pub fn hash_leaf(data: &[u8]) -> Hash {
    digest(&[&[0x00], data])
}

/// The hash of an inner node: `SHA-256(0x01 ‖ left ‖ right)`.
pub fn hash_children(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 1 + 2 * HASH_BYTES];
    let (prefix, rest) = buf.split_at_mut(1);
    let (l, r) = rest.split_at_mut(HASH_BYTES);
    prefix.fill(0x01);
    l.copy_from_slice(&left.0);
    r.copy_from_slice(&right.0);
    digest(&[&buf])
}

// === Tree ===

/// An append-only Merkle tree of leaf hashes held in memory.
///
/// It answers for every size up to its length: the root ([`Tree::root_at`]), inclusion proofs
/// ([`Tree::inclusion_proof`]) and consistency proofs ([`Tree::consistency_proof`]), so a store
/// can keep one `Tree` beside its table of entries and serve proofs for any checkpoint it has
/// signed. Memory: 64 bytes per leaf (the leaf hash plus, amortized, one inner node).
#[derive(Clone, Debug, Default)]
pub struct Tree {
    /// `levels[h][i]` is the root of the perfect subtree of leaves `[i·2^h, (i+1)·2^h)`.
    /// INVARIANT: `levels[h].len() == len >> h` for every `h`, and `levels[0].len() == len`.
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty tree with room for `leaves` leaves before it reallocates.
    pub fn with_capacity(leaves: usize) -> Self {
        Self {
            levels: vec![Vec::with_capacity(leaves)],
        }
    }

    /// Builds a tree from leaf hashes in order.
    pub fn from_leaves(leaves: impl IntoIterator<Item = Hash>) -> Self {
        let mut tree = Self::new();
        for leaf in leaves {
            tree.push(leaf);
        }
        tree
    }

    /// The number of leaves.
    pub fn len(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    /// Whether the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a leaf hash (see [`hash_leaf`]) and returns its index. `O(1)` amortized.
    pub fn push(&mut self, leaf: Hash) -> u64 {
        let index = self.len();
        let mut node = leaf;
        let mut height = 0;
        loop {
            if self.levels.len() == height {
                self.levels.push(Vec::new());
            }
            let Some(level) = self.levels.get_mut(height) else {
                break;
            };
            level.push(node);
            // A level of even length has just completed a pair: its parent is complete too.
            let len = level.len();
            if len % 2 != 0 {
                break;
            }
            let (Some(left), Some(right)) = (level.get(len - 2), level.get(len - 1)) else {
                break;
            };
            node = hash_children(left, right);
            height += 1;
        }
        index
    }

    /// Appends the leaf hash of `data` and returns its index.
    pub fn push_data(&mut self, data: &[u8]) -> u64 {
        self.push(hash_leaf(data))
    }

    /// The leaf hash at `index`, if the tree has one.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        let index = usize::try_from(index).ok()?;
        self.levels.first()?.get(index).copied()
    }

    /// Drops every leaf from `size` on (no effect if the tree is not longer). A store uses this
    /// to undo appends whose write did not commit.
    pub fn truncate(&mut self, size: u64) {
        if size >= self.len() {
            return;
        }
        for (height, level) in self.levels.iter_mut().enumerate() {
            let keep = usize::try_from(size >> height).unwrap_or(usize::MAX);
            level.truncate(keep);
        }
        while self.levels.len() > 1 && self.levels.last().is_some_and(Vec::is_empty) {
            self.levels.pop();
        }
    }

    /// The root of the whole tree.
    pub fn root(&self) -> Hash {
        #[expect(
            clippy::expect_used,
            reason = "INVARIANT of `levels`: the tree holds every perfect subtree within its own \
                      length, so its root at its own length always exists"
        )]
        let root = self
            .root_at(self.len())
            .expect("a tree has a root at its own length");
        root
    }

    /// The root of the tree made of the first `size` leaves.
    ///
    /// # Errors
    ///
    /// [`ProofError::SizeBeyondTree`] when `size` exceeds the tree's length.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        self.check_size(size)?;
        if size == 0 {
            return Ok(empty_root());
        }
        self.range_hash(0, size)
    }

    /// The inclusion proof of leaf `index` in the tree of the first `size` leaves
    /// (RFC 9162 §2.1.3.1), ordered from the leaf's sibling up to the root's child.
    ///
    /// # Errors
    ///
    /// [`ProofError::SizeBeyondTree`] when `size` exceeds the tree's length,
    /// [`ProofError::IndexBeyondSize`] when `index >= size`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(size)?;
        if index >= size {
            return Err(ProofError::IndexBeyondSize { index, size });
        }
        let mut proof = Vec::with_capacity(MAX_PROOF_LEN);
        let (mut lo, mut hi) = (0, size);
        while hi - lo > 1 {
            let k = split_point(hi - lo);
            if index < lo + k {
                proof.push(self.range_hash(lo + k, hi)?);
                hi = lo + k;
            } else {
                proof.push(self.range_hash(lo, lo + k)?);
                lo += k;
            }
        }
        proof.reverse();
        Ok(proof)
    }

    /// The consistency proof from the tree of the first `from` leaves to the tree of the first
    /// `to` leaves (RFC 9162 §2.1.4.1). Empty when `from == to`.
    ///
    /// # Errors
    ///
    /// [`ProofError::SizeBeyondTree`] when `to` exceeds the tree's length,
    /// [`ProofError::SizesOutOfOrder`] when `from > to`, [`ProofError::FromEmptyTree`] when
    /// `from == 0` (every tree extends the empty one; there is nothing to prove).
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(to)?;
        if from > to {
            return Err(ProofError::SizesOutOfOrder {
                size1: from,
                size2: to,
            });
        }
        if from == 0 {
            return Err(ProofError::FromEmptyTree);
        }
        let mut proof = Vec::with_capacity(MAX_PROOF_LEN);
        // SUBPROOF(m, D[lo:hi], b) of RFC 9162, unrolled; `m` counts from `lo`.
        let (mut m, mut lo, mut hi, mut whole) = (from, 0, to, true);
        while m != hi - lo {
            let k = split_point(hi - lo);
            if m <= k {
                proof.push(self.range_hash(lo + k, hi)?);
                hi = lo + k;
            } else {
                proof.push(self.range_hash(lo, lo + k)?);
                m -= k;
                lo += k;
                whole = false;
            }
        }
        if !whole {
            proof.push(self.range_hash(lo, hi)?);
        }
        proof.reverse();
        Ok(proof)
    }

    fn check_size(&self, size: u64) -> Result<(), ProofError> {
        let len = self.len();
        if size > len {
            return Err(ProofError::SizeBeyondTree { size, len });
        }
        Ok(())
    }

    /// The Merkle tree hash of leaves `[lo, hi)`, for ranges that occur in RFC 9162's recursion:
    /// `lo` is a multiple of the largest power of two not above `hi - lo`. An empty range or one
    /// beyond the tree is an error.
    fn range_hash(&self, lo: u64, hi: u64) -> Result<Hash, ProofError> {
        if hi <= lo {
            return Err(ProofError::SizeBeyondTree {
                size: hi,
                len: self.len(),
            });
        }
        // Walk down the right border: perfect left parts are lookups, the remainder recurses.
        let mut lefts: [Hash; MAX_PROOF_LEN] = [Hash([0; HASH_BYTES]); MAX_PROOF_LEN];
        let mut count = 0;
        let mut lo = lo;
        let right = loop {
            let n = hi - lo;
            if n.is_power_of_two() {
                break self.perfect(lo, n)?;
            }
            let k = split_point(n);
            let slot = lefts.get_mut(count).ok_or(ProofError::SizeBeyondTree {
                size: hi,
                len: self.len(),
            })?;
            *slot = self.perfect(lo, k)?;
            count += 1;
            lo += k;
        };
        let mut acc = right;
        for left in lefts.iter().take(count).rev() {
            acc = hash_children(left, &acc);
        }
        Ok(acc)
    }

    /// The root of the perfect subtree of `width` (a power of two) leaves starting at `lo`.
    fn perfect(&self, lo: u64, width: u64) -> Result<Hash, ProofError> {
        let height = width.trailing_zeros() as usize;
        let found = usize::try_from(lo >> height)
            .ok()
            .and_then(|i| self.levels.get(height)?.get(i).copied());
        found.ok_or(ProofError::SizeBeyondTree {
            size: lo + width,
            len: self.len(),
        })
    }
}

// === CompactRange ===

/// The streaming root computer: the roots of the perfect subtrees that make up the leaves
/// `[0, n)` read so far, largest first — at most 64 hashes whatever `n` is.
///
/// Push every leaf hash in order; [`CompactRange::root`] gives the tree's root at the current
/// size at any time.
#[derive(Clone, Debug, Default)]
pub struct CompactRange {
    size: u64,
    /// INVARIANT: one hash per set bit of `size`, from the highest bit to the lowest.
    peaks: Vec<Hash>,
}

impl CompactRange {
    /// The range of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of leaves pushed.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Adds the next leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = leaf;
        // Each trailing one bit of the old size is a peak of the same height as `node`: merge.
        let mut merges = self.size.trailing_ones();
        while merges > 0 {
            let Some(left) = self.peaks.pop() else {
                break;
            };
            node = hash_children(&left, &node);
            merges -= 1;
        }
        self.peaks.push(node);
        self.size += 1;
    }

    /// The root of the tree of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(mut acc) = peaks.next().copied() else {
            return empty_root();
        };
        for left in peaks {
            acc = hash_children(left, &acc);
        }
        acc
    }
}

// === verification ===

/// Checks that `proof` shows leaf `leaf` at `index` in the tree of `size` leaves whose root is
/// `root` (RFC 9162 §2.1.3.2).
///
/// # Errors
///
/// [`ProofError::IndexBeyondSize`] when `index >= size`, [`ProofError::WrongProofLength`] when
/// the proof has too few or too many hashes for the shape of the tree,
/// [`ProofError::RootMismatch`] when the hashes do not lead to `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexBeyondSize { index, size });
    }
    let expected = inclusion_proof_len(index, size);
    if proof.len() != expected {
        return Err(ProofError::WrongProofLength {
            got: proof.len(),
            expected,
        });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(ProofError::WrongProofLength {
                got: proof.len(),
                expected,
            });
        }
        if f & 1 == 1 || f == s {
            r = hash_children(p, &r);
            // Skip the levels where this node is a right-border node with no sibling.
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = hash_children(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongProofLength {
            got: proof.len(),
            expected,
        });
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Checks that `proof` shows the tree of `size2` leaves with root `root2` extends the tree of
/// `size1` leaves with root `root1` (RFC 9162 §2.1.4.2).
///
/// Edge rules, as the transparency-dev test vectors expect: a proof from the empty tree
/// (`size1 == 0`) is rejected, whatever `size2` is; equal sizes need an empty proof and identical
/// roots.
///
/// # Errors
///
/// [`ProofError::SizesOutOfOrder`] when `size1 > size2`, [`ProofError::FromEmptyTree`] when
/// `size1 == 0`, [`ProofError::WrongProofLength`] for a proof of the wrong length,
/// [`ProofError::RootMismatch`] when the hashes do not lead to both roots.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> Result<(), ProofError> {
    if size1 > size2 {
        return Err(ProofError::SizesOutOfOrder { size1, size2 });
    }
    if size1 == 0 {
        return Err(ProofError::FromEmptyTree);
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::WrongProofLength {
                got: proof.len(),
                expected: 0,
            });
        }
        if root1 != root2 {
            return Err(ProofError::RootMismatch);
        }
        return Ok(());
    }
    // `size1` is a power of two: its root is the first node of the path, given by `root1`.
    let seeded = size1.is_power_of_two();
    let expected = consistency_proof_len(size1, size2);
    if proof.len() != expected {
        return Err(ProofError::WrongProofLength {
            got: proof.len(),
            expected,
        });
    }
    let (first, rest) = if seeded {
        (root1, proof)
    } else {
        let Some((first, rest)) = proof.split_first() else {
            return Err(ProofError::WrongProofLength { got: 0, expected });
        };
        (first, rest)
    };
    let (mut f, mut s) = (size1 - 1, size2 - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s == 0 {
            return Err(ProofError::WrongProofLength {
                got: proof.len(),
                expected,
            });
        }
        if f & 1 == 1 || f == s {
            fr = hash_children(c, &fr);
            sr = hash_children(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = hash_children(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongProofLength {
            got: proof.len(),
            expected,
        });
    }
    if fr != *root1 || sr != *root2 {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The number of hashes in the inclusion proof of `index` in a tree of `size > index` leaves:
/// the levels below the point where the paths to `index` and to `size - 1` part, plus one per
/// left sibling on the right border above it.
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let inner = 64 - (index ^ (size - 1)).leading_zeros();
    // `inner` reaches 64 for trees of more than 2^63 leaves; shifting by 64 leaves nothing.
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// The number of hashes in the consistency proof from `size1` to `size2`,
/// `0 < size1 < size2`.
fn consistency_proof_len(size1: u64, size2: u64) -> usize {
    let index = size1 - 1;
    let inner = 64 - (index ^ (size2 - 1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    let shift = size1.trailing_zeros();
    let seeded = size1.is_power_of_two();
    // `shift < inner` whenever `size1 < size2`; saturate rather than trust it.
    (inner.saturating_sub(shift) + border) as usize + usize::from(!seeded)
}

/// The largest power of two smaller than `n`, for `n > 1`.
fn split_point(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

fn digest(parts: &[&[u8]]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    for part in parts {
        ctx.update(part);
    }
    let mut out = [0u8; HASH_BYTES];
    out.copy_from_slice(ctx.finish().as_ref());
    Hash(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9162's recursive definitions, written the obvious way, to compare against.
    fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                hash_children(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    fn reference_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = split_point(n as u64) as usize;
        if m < k {
            let mut p = reference_path(m, &leaves[..k]);
            p.push(reference_root(&leaves[k..]));
            p
        } else {
            let mut p = reference_path(m - k, &leaves[k..]);
            p.push(reference_root(&leaves[..k]));
            p
        }
    }

    fn reference_subproof(m: usize, leaves: &[Hash], whole: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if whole {
                Vec::new()
            } else {
                vec![reference_root(leaves)]
            };
        }
        let k = split_point(n as u64) as usize;
        if m <= k {
            let mut p = reference_subproof(m, &leaves[..k], whole);
            p.push(reference_root(&leaves[k..]));
            p
        } else {
            let mut p = reference_subproof(m - k, &leaves[k..], false);
            p.push(reference_root(&leaves[..k]));
            p
        }
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| hash_leaf(&(i as u64).to_be_bytes()))
            .collect()
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn empty_root_is_the_sha256_of_nothing() {
        assert_eq!(
            empty_root().to_string(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Tree::new().root(), empty_root());
        assert_eq!(CompactRange::new().root(), empty_root());
    }

    #[test]
    fn eight_leaf_reference_tree_has_the_known_root() {
        let data = [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ];
        let mut tree = Tree::new();
        let mut range = CompactRange::new();
        for d in data {
            let leaf = hash_leaf(&hex(d));
            tree.push(leaf);
            range.push(leaf);
        }
        let want = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328";
        assert_eq!(tree.root().to_string(), want);
        assert_eq!(range.root().to_string(), want);
        assert_eq!(tree.root_at(8).unwrap().to_string(), want);
    }

    #[test]
    fn tree_and_compact_range_agree_with_the_recursive_definition() {
        let all = leaves(70);
        let tree = Tree::from_leaves(all.iter().copied());
        let mut range = CompactRange::new();
        for n in 0..=all.len() {
            let want = reference_root(&all[..n]);
            assert_eq!(tree.root_at(n as u64).unwrap(), want, "size {n}");
            assert_eq!(range.root(), want, "size {n}");
            assert_eq!(range.size(), n as u64);
            if let Some(leaf) = all.get(n) {
                range.push(*leaf);
            }
        }
    }

    #[test]
    fn proofs_equal_the_recursive_definition_and_verify() {
        let all = leaves(40);
        let tree = Tree::from_leaves(all.iter().copied());
        for size in 1..=all.len() {
            let root = reference_root(&all[..size]);
            for index in 0..size {
                let proof = tree.inclusion_proof(index as u64, size as u64).unwrap();
                assert_eq!(proof, reference_path(index, &all[..size]), "{index}/{size}");
                verify_inclusion(index as u64, size as u64, &all[index], &proof, &root).unwrap();
            }
            for from in 1..=size {
                let proof = tree.consistency_proof(from as u64, size as u64).unwrap();
                assert_eq!(
                    proof,
                    reference_subproof(from, &all[..size], true),
                    "{from}->{size}"
                );
                let old = reference_root(&all[..from]);
                verify_consistency(from as u64, size as u64, &proof, &old, &root).unwrap();
            }
        }
    }

    #[test]
    fn proofs_beyond_the_tree_are_refused() {
        let tree = Tree::from_leaves(leaves(5));
        assert_eq!(
            tree.inclusion_proof(5, 5),
            Err(ProofError::IndexBeyondSize { index: 5, size: 5 })
        );
        assert_eq!(
            tree.inclusion_proof(0, 6),
            Err(ProofError::SizeBeyondTree { size: 6, len: 5 })
        );
        assert_eq!(tree.consistency_proof(0, 3), Err(ProofError::FromEmptyTree));
        assert_eq!(
            tree.consistency_proof(4, 3),
            Err(ProofError::SizesOutOfOrder { size1: 4, size2: 3 })
        );
        assert_eq!(tree.consistency_proof(3, 3), Ok(Vec::new()));
        assert!(tree.root_at(6).is_err());
        assert_eq!(tree.leaf(4), Some(leaves(5)[4]));
        assert_eq!(tree.leaf(5), None);
    }

    #[test]
    fn truncate_forgets_the_tail_and_appends_again() {
        let all = leaves(37);
        let mut tree = Tree::from_leaves(all.iter().copied());
        tree.truncate(13);
        assert_eq!(tree.len(), 13);
        assert_eq!(tree.root(), reference_root(&all[..13]));
        for leaf in &all[13..] {
            tree.push(*leaf);
        }
        assert_eq!(tree.root(), reference_root(&all));
        tree.truncate(0);
        assert!(tree.is_empty());
        assert_eq!(tree.root(), empty_root());
    }

    #[test]
    fn consistency_edge_rules() {
        let a = hash_leaf(b"a");
        let b = hash_leaf(b"b");
        assert_eq!(
            verify_consistency(0, 0, &[], &a, &a),
            Err(ProofError::FromEmptyTree)
        );
        assert_eq!(
            verify_consistency(0, 3, &[], &a, &b),
            Err(ProofError::FromEmptyTree)
        );
        assert_eq!(verify_consistency(1, 1, &[], &a, &a), Ok(()));
        assert_eq!(
            verify_consistency(1, 1, &[], &a, &b),
            Err(ProofError::RootMismatch)
        );
        assert!(verify_consistency(1, 1, &[a], &a, &a).is_err());
        assert!(verify_consistency(2, 1, &[], &a, &b).is_err());
    }

    /// Found by the `audit` fuzz target: for sizes above 2^63 the proof-length arithmetic
    /// shifted a `u64` by 64 bits.
    #[test]
    fn proofs_for_trees_beyond_two_to_the_63_are_refused_without_overflow() {
        let h = hash_leaf(b"x");
        assert_eq!(
            verify_inclusion(0, u64::MAX, &h, &[], &h),
            Err(ProofError::WrongProofLength {
                got: 0,
                expected: 64
            })
        );
        assert!(verify_consistency(1, u64::MAX, &[h], &h, &h).is_err());
        assert!(verify_consistency(u64::MAX - 1, u64::MAX, &[h, h], &h, &h).is_err());
        assert!(verify_inclusion(u64::MAX - 1, u64::MAX, &h, &[h; 64], &h).is_err());
    }

    #[test]
    fn hash_text_forms_round_trip() {
        let h = hash_leaf(b"x");
        assert_eq!(h.to_string().parse::<Hash>(), Ok(h));
        assert_eq!(Hash::from_base64(&h.to_base64()), Ok(h));
        assert_eq!(
            Hash::from_base64("V3JvbmdSb290"),
            Err(ProofError::MalformedHash)
        );
        assert!(
            "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
                .parse::<Hash>()
                .is_err()
        );
    }
}
