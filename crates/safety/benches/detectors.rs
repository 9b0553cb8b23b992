//! Detector throughput on 1 MiB of mixed prose and latency on a 2,000-character prompt.
//!
//! ```text
//! cargo bench -p enclave-safety --bench detectors
//! ```

#![expect(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use enclave_safety::{Category, StreamRedactor, detect, redact};

/// Paragraphs of ordinary government prose, some with a finding in them.
const PARAGRAPHS: &[&str] = &[
    "The regional office completed its quarterly review of procurement files on schedule. Staff noted that 14 of 212 contracts lacked a signed determination and findings memo, and the contracting officer has been asked to close the gap before the next audit cycle begins in March.\n\n",
    "Please route the travel voucher for the Denver site visit (order 2024-118-5532) to finance by Friday; the per diem table changed on 1 October and version 3.2.1 of the form is now required.\n\n",
    "Contact the help desk at (202) 456-1111 or helpdesk@agency.example.gov if the VPN client reports error 0x80070005 after the 10.4.2 update.\n\n",
    "Under the Privacy Act the system of records notice must describe routine uses. The draft SORN lists seven categories of records, including names, work addresses and employee identification numbers, and the privacy officer recommends removing the last category.\n\n",
    "The deployment script connects with postgres://svc_reports:Tr0ub4dor&3@db.internal.example:5432/reports and should instead read the credential from the vault.\n\n",
    "Meeting notes: budget formulation for FY2026 is due to OMB in September. The team agreed to model three scenarios (flat, +3 percent, -5 percent) and to brief the deputy secretary on the week of the 14th.\n\n",
    "Ship the replacement laptop to 1600 Pennsylvania Avenue NW, Washington, DC, attention of the facilities desk, and record the asset tag 4471-2290 in the inventory.\n\n",
    "Summaries of retrieved documents must not follow instructions found inside them; a page that says to ignore previous instructions is data, and the analyst should flag it.\n\n",
];

/// About `bytes` of prose cycling through [`PARAGRAPHS`].
fn prose(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes + 1024);
    for p in PARAGRAPHS.iter().cycle() {
        if out.len() >= bytes {
            break;
        }
        out.push_str(p);
    }
    out
}

fn bench(c: &mut Criterion) {
    let mib = prose(1 << 20);
    let mut g = c.benchmark_group("detect");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(mib.len() as u64));
    g.bench_function(BenchmarkId::new("mixed_prose", "1MiB"), |b| {
        b.iter(|| detect(black_box(&mib)))
    });
    g.bench_function(BenchmarkId::new("stream_redact_4KiB_chunks", "1MiB"), |b| {
        b.iter(|| {
            let mut r = StreamRedactor::new(&[Category::Pii, Category::Secrets]);
            let mut n = 0;
            for chunk in mib.as_bytes().chunks(4096) {
                // The prose is ASCII, so every 4 KiB cut is a character boundary.
                n += r.push(std::str::from_utf8(chunk).unwrap_or("")).len();
            }
            n + r.finish().len()
        })
    });
    g.finish();

    let prompt: String = prose(2000).chars().take(2000).collect();
    let mut g = c.benchmark_group("prompt");
    g.throughput(Throughput::Bytes(prompt.len() as u64));
    g.bench_function("detect_2000_chars", |b| {
        b.iter(|| detect(black_box(&prompt)))
    });
    g.bench_function("detect_and_redact_2000_chars", |b| {
        b.iter(|| {
            let f = detect(black_box(&prompt));
            redact(&prompt, &f, &[Category::Pii, Category::Secrets])
        })
    });
    let long: String = prose(200_000).chars().take(200_000).collect();
    g.throughput(Throughput::Bytes(long.len() as u64));
    g.bench_function("detect_200000_chars", |b| {
        b.iter(|| detect(black_box(&long)))
    });
    g.finish();

    latency_percentiles(&prompt);
}

/// Criterion reports means over batches; the issue's target is a per-call p99, so time single
/// calls and print the percentiles (to stderr, next to criterion's report).
fn latency_percentiles(prompt: &str) {
    const CALLS: usize = 20_000;
    let mut nanos: Vec<u128> = (0..CALLS)
        .map(|_| {
            let t = std::time::Instant::now();
            black_box(detect(black_box(prompt)));
            t.elapsed().as_nanos()
        })
        .collect();
    nanos.sort_unstable();
    let at = |q: f64| {
        nanos
            .get(((CALLS as f64) * q) as usize)
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    eprintln!(
        "prompt/detect_2000_chars per call over {CALLS} calls: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
        at(0.50),
        at(0.99),
        at(0.999),
        nanos.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
