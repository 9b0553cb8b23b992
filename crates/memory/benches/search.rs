//! Search latency at 100,000 memories in one tenant (embedding time excluded: vectors are
//! given). Synthetic text from a Zipf-like vocabulary of 5,000 words, random unit vectors,
//! four principals, one in ten memories SECRET, the viewer at SECRET.
//!
//! ```text
//! cargo bench -p enclave-memory --bench search
//! ```
//!
//! Besides criterion's figures it prints p50/p99 over 2,000 searches per mode, which is what
//! docs/BENCHMARKS.md records.

#![expect(
    clippy::print_stdout,
    reason = "the bench reports percentiles on stdout"
)]
#![expect(clippy::unwrap_used, reason = "a bench fails loudly")]
#![expect(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use enclave_label::Label;
use enclave_memory::{DIMENSIONS, Memories, Memory, Params, Query, Retrieval, Viewer};

const N: usize = 100_000;

/// A small deterministic generator (xorshift64*), so runs compare.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// A word index, Zipf-like over `n` words.
    fn word(&mut self, n: usize) -> usize {
        let u = self.unit().max(1e-6);
        ((n as f32).powf(u) as usize).saturating_sub(1).min(n - 1)
    }
    fn vector(&mut self) -> Vec<f32> {
        (0..DIMENSIONS).map(|_| self.unit() - 0.5).collect()
    }
}

fn vocabulary() -> Vec<String> {
    let syll = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa"];
    (0..5000)
        .map(|i| {
            let mut w = String::new();
            let mut x = i + 10;
            while x > 0 {
                w.push_str(syll[x % 10]);
                x /= 10;
            }
            w
        })
        .collect()
}

fn sentence(rng: &mut Rng, vocab: &[String], words: usize) -> String {
    (0..words)
        .map(|_| vocab[rng.word(vocab.len())].as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

fn build() -> (Memories, Vec<(String, Vec<f32>)>) {
    let vocab = vocabulary();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut index = Memories::new(DIMENSIONS);
    let secret: Label = "SECRET".parse().unwrap();
    let principals = ["alice", "bob", "carol", "dave"];
    for i in 0..N {
        let words = 8 + (rng.next() % 16) as usize;
        let memory = Memory {
            id: format!("mem_{i:08x}"),
            tenant: "agency-a".into(),
            // Alice owns a quarter of the tenant's memories: her searches filter the rest.
            principal: principals[i % 4].into(),
            namespace: None,
            label: if i % 10 == 0 {
                secret.clone()
            } else {
                Label::unclassified()
            },
            created_at: i as i64,
            supersedes: None,
            content: sentence(&mut rng, &vocab, words),
            metadata: None,
        };
        let v = rng.vector();
        index.insert(memory, Some(&v)).unwrap();
    }
    let queries = (0..256)
        .map(|_| (sentence(&mut rng, &vocab, 6), rng.vector()))
        .collect();
    (index, queries)
}

fn percentiles(index: &Memories, queries: &[(String, Vec<f32>)], params: &Params, name: &str) {
    let secret: Label = "SECRET".parse().unwrap();
    let viewer = Viewer {
        principal: "alice",
        label: &secret,
        namespace: None,
    };
    let mut times = Vec::with_capacity(2000);
    // A digest of the rankings (ids, then scores bit for bit) of every query, so that two
    // builds can show they rank alike.
    let (mut ids, mut scores) = (Fnv::default(), Fnv::default());
    for i in 0..2000 {
        let (text, v) = &queries[i % queries.len()];
        let q = Query {
            text,
            embedding: Some(v),
            limit: 10,
        };
        let start = Instant::now();
        let hits = black_box(index.search("agency-a", &viewer, &q, params));
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        if i < queries.len() {
            for h in &hits {
                ids.add(h.memory.id.as_bytes());
                scores.add(&h.score.to_bits().to_le_bytes());
            }
        }
    }
    times.sort_by(f64::total_cmp);
    let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "{name} at {N} memories: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms \
         (rankings {:016x}, scores {:016x})",
        p(0.5),
        p(0.9),
        p(0.99),
        p(1.0),
        ids.0,
        scores.0,
    );
}

/// FNV-1a, 64 bits.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn add(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so that [ab, c] and [a, bc] differ.
        self.0 = (self.0 ^ 0xff).wrapping_mul(0x0100_0000_01b3);
    }
}

fn bench(c: &mut Criterion) {
    let start = Instant::now();
    let (index, queries) = build();
    println!(
        "indexed {N} memories with vectors in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let modes = [
        ("hybrid", Params::default()),
        (
            "bm25",
            Params {
                retrieval: Retrieval::Lexical,
                ..Params::default()
            },
        ),
        (
            "dense",
            Params {
                retrieval: Retrieval::Dense,
                ..Params::default()
            },
        ),
    ];
    for (name, params) in &modes {
        percentiles(&index, &queries, params, name);
    }
    let secret: Label = "SECRET".parse().unwrap();
    let viewer = Viewer {
        principal: "alice",
        label: &secret,
        namespace: None,
    };
    let mut group = c.benchmark_group("memory_search_100k");
    for (name, params) in &modes {
        let mut i = 0;
        group.bench_function(*name, |b| {
            b.iter(|| {
                let (text, v) = &queries[i % queries.len()];
                i += 1;
                let q = Query {
                    text,
                    embedding: Some(v),
                    limit: 10,
                };
                black_box(index.search("agency-a", &viewer, &q, params))
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50);
    targets = bench
}
criterion_main!(benches);
