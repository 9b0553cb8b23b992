//! Property tests of the Merkle proofs: for random trees every inclusion and consistency proof
//! the tree produces verifies, and changing any one byte of a proof, the leaf or a root makes
//! verification fail.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use enclave_audit::{CompactRange, Hash, Tree, hash_leaf, verify_consistency, verify_inclusion};
use proptest::prelude::*;

fn tree(size: u64) -> Tree {
    Tree::from_leaves((0..size).map(|i| hash_leaf(&i.to_le_bytes())))
}

fn flip(hash: &Hash, byte: usize, bit: u8) -> Hash {
    let mut bytes = *hash.as_bytes();
    bytes[byte % 32] ^= 1 << (bit % 8);
    Hash::new(bytes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_inclusion_proof_verifies_and_any_flipped_byte_fails(
        size in 1u64..2000,
        pick in any::<u64>(),
        byte in any::<usize>(),
        bit in any::<u8>(),
    ) {
        let tree = tree(size);
        let index = pick % size;
        let leaf = tree.leaf(index).unwrap();
        let root = tree.root();
        let proof = tree.inclusion_proof(index, size).unwrap();
        prop_assert!(verify_inclusion(index, size, &leaf, &proof, &root).is_ok());

        prop_assert!(verify_inclusion(index, size, &flip(&leaf, byte, bit), &proof, &root).is_err());
        prop_assert!(verify_inclusion(index, size, &leaf, &proof, &flip(&root, byte, bit)).is_err());
        for i in 0..proof.len() {
            let mut bad = proof.clone();
            bad[i] = flip(&bad[i], byte, bit);
            prop_assert!(verify_inclusion(index, size, &leaf, &bad, &root).is_err(), "proof[{}]", i);
        }
        // A wrong index, or a proof one hash too short or too long, fails too. (A wrong size may
        // not: trees of sizes 9 and 10 share the proofs of leaves 0..8; the checkpoint binds the
        // size to the root.)
        if size > 1 {
            let other = (index + 1 + pick % (size - 1)) % size;
            prop_assert!(verify_inclusion(other, size, &leaf, &proof, &root).is_err());
        }
        let mut longer = proof.clone();
        longer.push(root);
        prop_assert!(verify_inclusion(index, size, &leaf, &longer, &root).is_err());
        if !proof.is_empty() {
            prop_assert!(verify_inclusion(index, size, &leaf, &proof[1..], &root).is_err());
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_any_flipped_byte_fails(
        to in 1u64..2000,
        pick in any::<u64>(),
        byte in any::<usize>(),
        bit in any::<u8>(),
    ) {
        let tree = tree(to);
        let from = 1 + pick % to;
        let old = tree.root_at(from).unwrap();
        let new = tree.root();
        let proof = tree.consistency_proof(from, to).unwrap();
        prop_assert!(verify_consistency(from, to, &proof, &old, &new).is_ok());

        prop_assert!(verify_consistency(from, to, &proof, &flip(&old, byte, bit), &new).is_err());
        prop_assert!(verify_consistency(from, to, &proof, &old, &flip(&new, byte, bit)).is_err());
        for i in 0..proof.len() {
            let mut bad = proof.clone();
            bad[i] = flip(&bad[i], byte, bit);
            prop_assert!(verify_consistency(from, to, &bad, &old, &new).is_err(), "proof[{}]", i);
        }
        if from < to {
            prop_assert!(verify_consistency(from, to, &proof, &new, &old).is_err());
            prop_assert!(verify_consistency(from, to, &proof[1..], &old, &new).is_err());
        }
    }

    #[test]
    fn tree_roots_match_the_streaming_root_at_every_size(size in 0u64..600) {
        let tree = tree(size);
        let mut range = CompactRange::new();
        for i in 0..size {
            prop_assert_eq!(range.root(), tree.root_at(i).unwrap());
            range.push(tree.leaf(i).unwrap());
        }
        prop_assert_eq!(range.root(), tree.root());
    }
}
