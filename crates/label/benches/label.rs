//! Benchmarks of the label core's hot paths: parsing markings, the lattice, and scanning text
//! for markings (which runs on every request). Figures go in `docs/BENCHMARKS.md`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "benchmark setup; criterion macros generate undocumented items"
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use enclave_label::{Label, Mode, parse_marking, scan};

/// About `bytes` of English prose with no markings, the common case.
fn prose(bytes: usize) -> String {
    const WORDS: &[&str] = &[
        "the",
        "committee",
        "reviewed",
        "quarterly",
        "logistics",
        "report",
        "and",
        "asked",
        "for",
        "a",
        "summary",
        "of",
        "fuel",
        "deliveries",
        "to",
        "forward",
        "sites",
        "during",
        "winter",
        "months",
        "including",
        "costs",
        "(estimated)",
        "delays",
        "weather",
        "impacts",
        "https://example.gov/reports/2024",
        "contract",
        "numbers",
        "S-1234",
        "C-17",
        "U.S.",
    ];
    let mut out = String::with_capacity(bytes + 100);
    let mut i = 0usize;
    while out.len() < bytes {
        let w = WORDS[(i * 7 + i / 13) % WORDS.len()];
        out.push_str(w);
        i += 1;
        out.push(if i.is_multiple_of(97) { '\n' } else { ' ' });
        if i.is_multiple_of(211) {
            out.push_str("\n\n");
        }
    }
    out
}

/// About `bytes` of a densely marked document: a banner, then every paragraph portion-marked.
fn marked(bytes: usize) -> String {
    const PARAS: &[&str] = &[
        "(S//NF) The convoy departs at dawn from the northern staging area.",
        "(U) Weather is expected to be clear with light winds.",
        "(TS//SI//NF) Intercepts indicate the adversary is repositioning assets.",
        "(C//REL TO USA, GBR) Coordination with partner liaison officers continues.",
        "(S//REL TO USA, FVEY) Satellite imagery confirms construction activity.",
    ];
    let mut out = String::from("TOP SECRET//SI//NOFORN\n\n");
    let mut i = 0;
    while out.len() < bytes {
        out.push_str(PARAS[i % PARAS.len()]);
        out.push('\n');
        i += 1;
    }
    out.push_str("TOP SECRET//SI//NOFORN\n");
    out
}

/// Densely marked, but no portion mark repeats (each names its own unpublished SCI system), so
/// the scanner's per-document cache cannot help: the worst case.
fn marked_distinct(bytes: usize) -> String {
    const PARTNERS: &[&str] = &["AUS", "CAN", "DEU", "FRA", "GBR", "ITA", "JPN", "NZL"];
    let mut out = String::from("SECRET//REL TO USA, GBR\n\n");
    let mut i = 0usize;
    while out.len() < bytes {
        let a = PARTNERS[i % PARTNERS.len()];
        let level = ["S", "C", "TS"][i % 3];
        out.push_str(&format!(
            "({level}//X{i}//REL TO USA, {a}) Paragraph {i} of the coalition plan.\n"
        ));
        i += 1;
    }
    out
}

fn bench_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    for (name, m) in [
        ("banner_simple", "SECRET//NOFORN"),
        (
            "banner_complex",
            "TOP SECRET//SI-G ABCD/TK//RSEN/ORCON/REL TO USA, AUS, CAN, GBR, NZL",
        ),
        ("portion", "(TS//SI//NF)"),
        ("lenient_messy", "top secret // si / tk // noforn"),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| parse_marking(black_box(m), Mode::Lenient, None).unwrap())
        });
    }
    g.finish();
}

fn bench_lattice(c: &mut Criterion) {
    let a: Label = "TOP SECRET//SI/TK//REL TO USA, AUS, GBR".parse().unwrap();
    let b: Label = "(S//HCS-P//NF)".parse().unwrap();
    let d: Label = "(C//REL TO USA, FVEY)".parse().unwrap();
    let (aa, ba) = (a.access(), d.access());
    let mut g = c.benchmark_group("lattice");
    g.bench_function("dominates_labels", |bch| {
        bch.iter(|| black_box(&a).dominates(black_box(&d)))
    });
    g.bench_function("dominates_access_classes", |bch| {
        bch.iter(|| black_box(&aa).dominates(black_box(&ba)))
    });
    g.bench_function("join", |bch| bch.iter(|| black_box(&a).join(black_box(&b))));
    g.bench_function("join_rel_to_intersection", |bch| {
        bch.iter(|| black_box(&a).join(black_box(&d)))
    });
    g.finish();
}

fn bench_scan(c: &mut Criterion) {
    let mut g = c.benchmark_group("scan");
    let clean = prose(1 << 20);
    let dense = marked(1 << 20);
    let unicode = prose(1 << 20).replace("the ", "thé ").replace("and", "ånd");
    let distinct = marked_distinct(1 << 20);
    assert!(scan(&clean).markings.is_empty());
    assert!(scan(&dense).markings.len() > 10_000);
    for (name, text) in [
        ("prose_no_markings", &clean),
        ("dense_markings", &dense),
        ("dense_distinct_markings", &distinct),
        ("prose_non_ascii", &unicode),
    ] {
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(name, |b| b.iter(|| scan(black_box(text))));
    }
    g.finish();
}

criterion_group!(benches, bench_parse, bench_lattice, bench_scan);
criterion_main!(benches);
