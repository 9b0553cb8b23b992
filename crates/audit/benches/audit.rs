//! Criterion benchmarks of the audit core: appending a leaf, encoding an entry, generating
//! proofs in a tree of 1,000,000 leaves, and verifying a log of 1,000,000 entries.
//!
//! `nice -n 10 cargo bench -p enclave-audit`; the proof latency percentiles come from
//! `cargo run --release -p enclave-audit --example audit_figures`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "benchmark setup; criterion macros generate undocumented items"
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use enclave_audit::{AuditEntry, LogVerifier, Tree, hash_leaf, verify_inclusion};

#[path = "support/mod.rs"]
mod support;

const MILLION: u64 = 1_000_000;

fn million_leaf_tree() -> Tree {
    let mut tree = Tree::with_capacity(MILLION as usize);
    for i in 0..MILLION {
        tree.push(hash_leaf(&i.to_le_bytes()));
    }
    tree
}

/// A xorshift generator: proof positions spread over the whole tree, no dependency.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn append(c: &mut Criterion) {
    let entry = support::realistic_entry(4242);
    let bytes = entry.to_canonical_bytes();
    let mut tree = million_leaf_tree();
    c.bench_function("append/leaf hash + push (tree of 1M)", |b| {
        b.iter(|| tree.push(hash_leaf(black_box(&bytes))))
    });
    c.bench_function("append/root (tree of 1M+)", |b| {
        b.iter(|| black_box(&tree).root())
    });
    c.bench_function("append/leaf hash + push + root (tree of 1M+)", |b| {
        b.iter(|| {
            tree.push(hash_leaf(black_box(&bytes)));
            tree.root()
        })
    });
    c.bench_function("entry/build + 2 digests + encode + leaf hash", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            hash_leaf(&support::realistic_entry(black_box(i)).to_canonical_bytes())
        })
    });
    c.bench_function("entry/encode", |b| {
        b.iter(|| black_box(&entry).to_canonical_bytes())
    });
    c.bench_function("entry/strict parse", |b| {
        b.iter(|| AuditEntry::from_canonical_bytes(black_box(&bytes)))
    });
}

fn proofs(c: &mut Criterion) {
    let tree = million_leaf_tree();
    let root = tree.root();
    let mut state = 0x9e37_79b9_7f4a_7c15;
    c.bench_function("proof/inclusion at 1M", |b| {
        b.iter(|| tree.inclusion_proof(next(&mut state) % MILLION, MILLION))
    });
    c.bench_function("proof/consistency to 1M", |b| {
        b.iter(|| tree.consistency_proof(1 + next(&mut state) % MILLION, MILLION))
    });
    c.bench_function("proof/verify inclusion at 1M", |b| {
        let index = 123_457;
        let leaf = tree.leaf(index).unwrap();
        let proof = tree.inclusion_proof(index, MILLION).unwrap();
        b.iter(|| verify_inclusion(index, MILLION, &leaf, black_box(&proof), &root))
    });
}

fn verify(c: &mut Criterion) {
    let log = support::log(MILLION, 100_000);
    let mut group = c.benchmark_group("verify");
    group.sample_size(10);
    group.throughput(Throughput::Elements(MILLION));
    group.bench_function("1M entries, 10 checkpoints", |b| {
        b.iter(|| {
            let mut verifier = LogVerifier::new(&log.trusted, None, &log.notes).unwrap();
            for i in 0..MILLION {
                verifier.push(i, log.entry(i as usize)).unwrap();
            }
            verifier.finish().unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, append, proofs, verify);
criterion_main!(benches);
