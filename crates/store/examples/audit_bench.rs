//! Audit log figures for docs/BENCHMARKS.md (run with `--release`):
//!
//! ```text
//! audit_bench append URL ENTRIES CONCURRENCY   # group-commit appends/s and CPU per entry
//! audit_bench fill URL ENTRIES                 # grow the log to ENTRIES (big batches) + checkpoint
//! audit_bench verify URL                       # enclave audit verify's loop over the whole log
//! audit_bench read URL                         # the same reads without verifying (the share of I/O)
//! audit_bench proofs URL SAMPLES               # tree load time; inclusion/consistency proof p50/p99
//! ```
//!
//! `URL` is `sqlite://PATH` (the file is created) or `postgres://…`. Entries look like the
//! gateway's: a chat request with labels, four decisions, tokens and two keyed digests.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark program: it prints figures and stops on broken machinery"
)]

use std::time::{Duration, Instant};

use enclave_audit::{
    Decision, Event, KeyedDigest, LogVerifier, RequestEvent, Signer, TokenCounts, Verifiers,
};
use enclave_store::install::MasterKey;
use enclave_store::{
    AuditLog, AuditLogConfig, AuditReader, LeafTree, NewAuditEntry, READ_PAGE, Store,
};

const ORIGIN: &str = "bench.example/audit";

fn signer() -> Signer {
    Signer::from_seed(ORIGIN, &[3; 32]).unwrap()
}

fn event(n: u64) -> Event {
    let key = [7u8; 32];
    Event::Request(RequestEvent {
        auth_method: Some("api_key".into()),
        backend: Some("gov-secret".into()),
        content_label: Some("UNCLASSIFIED".into()),
        decisions: vec![
            Decision {
                code: Some("api_key".into()),
                outcome: "allow".into(),
                stage: "authenticate".into(),
            },
            Decision {
                code: Some("within_session".into()),
                outcome: "allow".into(),
                stage: "label".into(),
            },
            Decision {
                code: Some("accredited_backend".into()),
                outcome: "allow".into(),
                stage: "route".into(),
            },
        ],
        error: None,
        latency_ms: 180 + n % 50,
        model: Some("gpt-4o".into()),
        output_hmac: Some(KeyedDigest::compute(&key, format!("out {n}").as_bytes())),
        phase: None,
        principal: Some("alice".into()),
        prompt_hmac: Some(KeyedDigest::compute(&key, format!("in {n}").as_bytes())),
        request_id: format!("req_1f2e_{n:x}"),
        route: "chat_completions".into(),
        session_label: Some("SECRET//NOFORN".into()),
        status: 200,
        tenant: Some("agency-a".into()),
        tokens: Some(TokenCounts {
            input: 412,
            output: 96,
        }),
    })
}

async fn open(url: &str) -> Store {
    if let Some(path) = url.strip_prefix("sqlite://")
        && let Some(dir) = std::path::Path::new(path).parent()
    {
        std::fs::create_dir_all(dir).unwrap();
    }
    Store::open(url, &MasterKey::from_bytes([1; 32]))
        .await
        .unwrap()
}

/// User + system CPU time of this process so far (Linux `/proc/self/stat`, clock ticks of
/// 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(0).as_str() {
        "append" => append(&arg(1), arg(2).parse().unwrap(), arg(3).parse().unwrap()).await,
        "fill" => fill(&arg(1), arg(2).parse().unwrap()).await,
        "verify" => verify(&arg(1), true).await,
        "read" => verify(&arg(1), false).await,
        "proofs" => proofs(&arg(1), arg(2).parse().unwrap()).await,
        _ => eprintln!("usage: audit_bench append|fill|verify|proofs URL [N] [CONCURRENCY]"),
    }
}

/// `concurrency` tasks, each appending and awaiting its receipt in a loop, like requests.
async fn append(url: &str, entries: u64, concurrency: u64) {
    let store = open(url).await;
    let config = AuditLogConfig {
        origin: ORIGIN.into(),
        checkpoint_interval: Duration::from_secs(3600),
        checkpoint_dir: None,
        checkpoint_command: Vec::new(),
        previous_verifier_keys: Vec::new(),
        commit_delay: Duration::ZERO,
    };
    let log = AuditLog::start(store.clone(), signer(), config)
        .await
        .unwrap();
    let before = store.audit_size().await.unwrap();
    let cpu0 = cpu_time();
    let started = Instant::now();
    let per_task = entries / concurrency;
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            for i in 0..per_task {
                let t0 = Instant::now();
                log.append(event(t * per_task + i)).await.unwrap();
                worst = worst.max(t0.elapsed());
            }
            worst
        }));
    }
    let mut worst = Duration::ZERO;
    for t in tasks {
        worst = worst.max(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    let cpu = cpu_time().saturating_sub(cpu0);
    let done = per_task * concurrency;
    log.shutdown().await;
    assert_eq!(store.audit_size().await.unwrap(), before + done);
    println!(
        "{} appends, {concurrency} concurrent: {:.2} s, {:.0} appends/s, CPU {:.1} µs/entry (whole process), slowest receipt {:.1} ms",
        done,
        elapsed.as_secs_f64(),
        done as f64 / elapsed.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / done as f64,
        worst.as_secs_f64() * 1e3
    );
}

async fn fill(url: &str, entries: u64) {
    let store = open(url).await;
    let mut size = store.audit_size().await.unwrap();
    let started = Instant::now();
    while size < entries {
        let n = (entries - size).min(4096);
        let batch: Vec<NewAuditEntry> = (size..size + n)
            .map(|i| NewAuditEntry::now(event(i)))
            .collect();
        store.append_audit(batch).await.unwrap();
        size += n;
    }
    let tree = LeafTree::new();
    store
        .write_audit_checkpoint(&tree, ORIGIN, &[&signer()])
        .await
        .unwrap();
    println!(
        "log of {size} entries, checkpoint signed ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
}

/// What `enclave audit verify URL` does: read the checkpoints, then every row in pages, through
/// the streaming verifier.
async fn verify(url: &str, check: bool) {
    let started = Instant::now();
    let reader = AuditReader::connect(url).await.unwrap();
    let notes: Vec<String> = reader
        .checkpoints()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.note)
        .collect();
    let trusted = Verifiers::new([signer().verifier_key()]).unwrap();
    let mut verifier = LogVerifier::new(&trusted, None, &notes).unwrap();
    // As the CLI does: the next page is read on another task while this one is checked.
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let producer = {
        let reader = reader.clone();
        tokio::spawn(async move {
            let mut from = 0;
            loop {
                let page = reader.rows(from, READ_PAGE).await.unwrap();
                let more = page.len() as u64 == READ_PAGE;
                if let Some(last) = page.last() {
                    from = last.index + 1;
                }
                if tx.send(page).await.is_err() || !more {
                    return from;
                }
            }
        })
    };
    while let Some(page) = rx.recv().await {
        if check {
            for row in &page {
                verifier.push(row.index, row.entry.as_bytes()).unwrap();
            }
        }
    }
    let from = producer.await.unwrap();
    let cpu = cpu_time();
    if !check {
        println!(
            "read {from} rows in {:.2} s (CPU {:.2} s)",
            started.elapsed().as_secs_f64(),
            cpu.as_secs_f64()
        );
        return;
    }
    let verified = verifier.finish().unwrap();
    println!(
        "verified {} entries ({} checkpoints, signed size {}) in {:.2} s (CPU {:.2} s)",
        verified.size,
        verified.checkpoints,
        verified.signed_size,
        started.elapsed().as_secs_f64(),
        cpu.as_secs_f64()
    );
}

/// The server's start-up tree load, then proofs as the receipts API makes them.
async fn proofs(url: &str, samples: usize) {
    let store = open(url).await;
    let tree = LeafTree::new();
    let t0 = Instant::now();
    let size = store.sync_audit_tree(&tree).await.unwrap();
    println!(
        "tree of {size} leaves loaded from the database in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut inclusion = Vec::with_capacity(samples);
    let mut consistency = Vec::with_capacity(samples);
    for _ in 0..samples {
        let index = next() % size;
        let t = Instant::now();
        let proof = tree.with(|t| t.inclusion_proof(index, size)).unwrap();
        inclusion.push(t.elapsed());
        assert!(!proof.is_empty() || size == 1);
        let from = 1 + next() % (size - 1);
        let t = Instant::now();
        tree.with(|t| t.consistency_proof(from, size)).unwrap();
        consistency.push(t.elapsed());
    }
    for (name, mut v) in [("inclusion", inclusion), ("consistency", consistency)] {
        v.sort();
        println!(
            "{name} proofs at size {size}: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs ({samples} samples)",
            percentile(&v, 0.5).as_secs_f64() * 1e6,
            percentile(&v, 0.99).as_secs_f64() * 1e6,
            v.last().unwrap().as_secs_f64() * 1e6
        );
    }
}
