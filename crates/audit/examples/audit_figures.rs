//! Prints the figures behind docs/BENCHMARKS.md for the audit core, from simple timing loops:
//! proof generation latency (p50/p99/max) in a tree of 1,000,000 leaves, appends per second,
//! and the time to verify a log of 1,000,000 realistic entries, split into its parts.
//!
//! `cargo run --release -p enclave-audit --example audit_figures`

#![expect(
    clippy::print_stdout,
    reason = "printing the figures is this example's job"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a measuring tool, not product code"
)]

use std::time::{Duration, Instant};

use enclave_audit::{AuditEntry, CompactRange, LogVerifier, Tree, hash_leaf};

#[path = "../benches/support/mod.rs"]
mod support;

const MILLION: u64 = 1_000_000;
const SAMPLES: usize = 100_000;

fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// This process's CPU time (user + system) so far, from `/proc/self/stat` (Linux; 10 ms ticks):
/// on a busy machine, wall time overstates what the work costs on one core.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after_name
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 of the file (utime, stime) are the 12th and 13th after the name.
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    format!(
        "p50 {:>6.1} µs  p99 {:>6.1} µs  max {:>7.1} µs",
        at(0.50).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
        at(1.0).as_secs_f64() * 1e6
    )
}

fn main() {
    // Appends.
    let started = Instant::now();
    let mut tree = Tree::with_capacity(MILLION as usize);
    for i in 0..MILLION {
        tree.push(hash_leaf(&i.to_le_bytes()));
    }
    let took = started.elapsed();
    println!(
        "append 1M leaves (leaf hash + push): {:.3} s, {:.0} appends/s",
        took.as_secs_f64(),
        MILLION as f64 / took.as_secs_f64()
    );

    // Proof latency at 1M leaves, one timing per proof.
    let mut state = 0x9e37_79b9_7f4a_7c15;
    let mut inclusion = Vec::with_capacity(SAMPLES);
    let mut consistency = Vec::with_capacity(SAMPLES);
    let mut lengths = 0;
    for _ in 0..SAMPLES {
        let index = next(&mut state) % MILLION;
        let t = Instant::now();
        let proof = tree.inclusion_proof(index, MILLION).unwrap();
        inclusion.push(t.elapsed());
        lengths += proof.len();
        let from = 1 + next(&mut state) % MILLION;
        let t = Instant::now();
        let proof = tree.consistency_proof(from, MILLION).unwrap();
        consistency.push(t.elapsed());
        lengths += proof.len();
    }
    println!(
        "inclusion proof at 1M   ({SAMPLES} random leaves): {}",
        percentiles(inclusion)
    );
    println!(
        "consistency proof to 1M ({SAMPLES} random sizes):  {}",
        percentiles(consistency)
    );
    println!(
        "  (average proof length {:.1} hashes)",
        lengths as f64 / (2 * SAMPLES) as f64
    );

    // Verification of 1M realistic entries.
    let started = Instant::now();
    let log = support::log(MILLION, 100_000);
    println!(
        "generate 1M realistic entries: {:.2} s, {:.0} MB, {:.0} bytes per entry",
        started.elapsed().as_secs_f64(),
        log.bytes.len() as f64 / 1e6,
        log.bytes.len() as f64 / MILLION as f64
    );

    let started = Instant::now();
    let cpu = cpu_time();
    let mut verifier = LogVerifier::new(&log.trusted, None, &log.notes).unwrap();
    for i in 0..MILLION {
        verifier.push(i, log.entry(i as usize)).unwrap();
    }
    let verified = verifier.finish().unwrap();
    let took = started.elapsed();
    let cpu = cpu_time() - cpu;
    println!(
        "verify 1M entries, {} checkpoints: {:.2} s wall, {:.2} s CPU ({:.2} µs CPU per entry), \
         root {}",
        verified.checkpoints,
        took.as_secs_f64(),
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / MILLION as f64,
        verified.root
    );

    let cpu = cpu_time();
    for i in 0..MILLION as usize {
        AuditEntry::from_canonical_bytes(log.entry(i)).unwrap();
    }
    let parse = cpu_time() - cpu;
    let cpu = cpu_time();
    let mut range = CompactRange::new();
    for i in 0..MILLION as usize {
        range.push(hash_leaf(log.entry(i)));
    }
    let hash = cpu_time() - cpu;
    println!(
        "  of which (CPU) strict parse + re-encode {:.2} s, leaf hashes + tree {:.2} s",
        parse.as_secs_f64(),
        hash.as_secs_f64()
    );
}
