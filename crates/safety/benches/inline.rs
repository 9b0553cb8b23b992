//! The inline stages (detectors + n-gram model + pack) on a 2,000-character prompt and a
//! 200,000-character input, and the streaming screen over a 64 KiB answer.
//!
//! ```text
//! cargo bench -p enclave-safety --bench inline
//! ```

#![expect(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use enclave_safety::{Direction, Engine, NgramModel, StreamStep};

/// Ordinary prose with a few findings, cycled to length.
const PARAGRAPHS: &[&str] = &[
    "The regional office completed its quarterly review of procurement files on schedule. Staff noted that 14 of 212 contracts lacked a signed determination and findings memo, and the contracting officer has been asked to close the gap before the next audit cycle begins in March.\n\n",
    "Please route the travel voucher for the Denver site visit to finance by Friday; the per diem table changed on 1 October and the new form is now required.\n\n",
    "Contact the help desk at (202) 456-1111 or helpdesk@agency.example.gov if the VPN client reports an error after the update.\n\n",
    "Under the Privacy Act the system of records notice must describe routine uses. The draft lists seven categories of records, and the privacy officer recommends removing the last category.\n\n",
    "Meeting notes: budget formulation for FY2026 is due in September. The team agreed to model three scenarios and to brief the deputy secretary on the week of the 14th.\n\n",
];

fn prose(chars: usize) -> String {
    let mut out = String::new();
    for p in PARAGRAPHS.iter().cycle() {
        if out.len() >= chars {
            break;
        }
        out.push_str(p);
    }
    out.chars().take(chars).collect()
}

fn bench(c: &mut Criterion) {
    let Ok(engine) = Engine::builtin() else {
        eprintln!("the built-in engine does not load");
        return;
    };
    let Ok(model) = NgramModel::from_bytes(enclave_safety::BUILTIN_NGRAM_MODEL) else {
        return;
    };
    let prompt = prose(2000);
    let long = prose(200_000);
    let mut g = c.benchmark_group("inline");
    g.throughput(Throughput::Bytes(prompt.len() as u64));
    g.bench_function("ngram_2000_chars", |b| {
        b.iter(|| model.score_heads(black_box(&prompt)))
    });
    g.bench_function("screen_2000_chars", |b| {
        b.iter(|| engine.screen(black_box(&prompt), Direction::Input))
    });
    g.throughput(Throughput::Bytes(long.len() as u64));
    g.sample_size(20);
    g.bench_function("screen_200000_chars", |b| {
        b.iter(|| engine.screen(black_box(&long), Direction::Input))
    });
    let answer = prose(65_536);
    g.throughput(Throughput::Bytes(answer.len() as u64));
    g.bench_function("stream_64KiB_in_16_byte_chunks", |b| {
        b.iter(|| {
            let mut s = engine.stream();
            let mut n = 0;
            for chunk in answer.as_bytes().chunks(16) {
                if let StreamStep::Emit(t) = s.push(std::str::from_utf8(chunk).unwrap_or("")) {
                    n += t.len();
                }
            }
            if let StreamStep::Emit(t) = s.finish() {
                n += t.len();
            }
            n
        })
    });
    g.finish();

    const CALLS: usize = 20_000;
    let mut nanos: Vec<u128> = (0..CALLS)
        .map(|_| {
            let t = std::time::Instant::now();
            black_box(engine.screen(black_box(&prompt), Direction::Input));
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
        "inline/screen_2000_chars per call over {CALLS} calls: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
        at(0.50),
        at(0.99),
        at(0.999),
        nanos.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
