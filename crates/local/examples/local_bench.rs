//! Measures Enclave's embedded models and prints one JSON line per measurement, in the shape
//! `bench/llama-cpp` prints for llama.cpp, so `scripts/bench-models` can put both side by side.
//!
//! ```sh
//! RAYON_NUM_THREADS=2 cargo run --release -p enclave-local --example local_bench -- chat models 2
//! cargo run --release -p enclave-local --example local_bench -- embed models
//! ```
//!
//! `chat DIR [THREADS] [GEN] [REPS]`: load time, prompt tokens/s, time to first token and
//! generation tokens/s (greedy, `GEN` tokens past the first, end-of-turn ignored), medians of
//! `REPS` runs, and resident memory. `embed DIR`: milliseconds per call and embeddings/s at batch
//! 1 and 32 for a 30-token text, a 10-piece query back to back (`query_ms`) and after 30 ms of
//! rest (`query_idle_ms`, as a server's lone request finds the caches), both again in half
//! precision (`query_f16_ms`, `query_idle_f16_ms`), and resident memory (also once the f16 copy
//! is loaded beside the f32 one). `batch DIR [N] [GEN]`: generation tokens/s of N sequences
//! stepped together against the same N one after another.
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a measurement tool that prints its results and stops on broken input"
)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use enclave_local::chat::{ChatModel, GenerationParams};
use enclave_local::embed::{Embedder, Precision};
use enclave_local::weights::ModelsDir;

/// The prompt `bench/llama-cpp` also uses: ChatML with SmolLM2's default system prompt.
const PROMPT: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained \
                      by Hugging Face<|im_end|>\n<|im_start|>user\nWrite a short story about a \
                      lighthouse keeper who finds a message in a bottle. Describe the sea, the \
                      weather and the keeper's feelings in detail.<|im_end|>\n<|im_start|>\
                      assistant\n";

/// 30 word pieces with `[CLS]` and `[SEP]` (the issue's "one 30-token embedding").
const EMBED_TEXT: &str = "Enclave screens every prompt before it reaches a model, and it \
                          records each decision in a tamper-evident audit log for the operators \
                          today.";

/// A short chat question, 10 word pieces with `[CLS]` and `[SEP]`: what memory recall embeds.
const QUERY_TEXT: &str = "Who is my supervisor on Harbor Watch?";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().map_or("chat", String::as_str);
    let dir = PathBuf::from(args.get(1).map_or("models", String::as_str));
    let num = |i: usize, default: usize| -> usize {
        args.get(i)
            .map_or(default, |s| s.parse().expect("a number"))
    };
    match what {
        "chat" => {
            let threads = num(2, 0);
            if threads > 0 && !threads_set(threads) {
                return rerun_with_threads(threads);
            }
            chat(&dir, num(3, 128), num(4, 3));
        }
        "embed" => embed(&dir),
        "batch" => batch(&dir, num(2, 4), num(3, 64)),
        other => {
            eprintln!("usage: local_bench chat|embed DIR [THREADS] [GEN] [REPS] (not `{other}`)");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

fn chat(dir: &std::path::Path, gen_tokens: usize, reps: usize) {
    let path = ModelsDir::new(dir).smollm2_gguf().expect("SmolLM2 weights");
    let rss_start = rss_mib();
    let start = Instant::now();
    let model = ChatModel::load(&path).expect("model loads");
    let load = start.elapsed();
    let rss_loaded = rss_mib();
    let prompt_tokens = model.tokenizer().encode(PROMPT).len();

    let mut prefill = Vec::new();
    let mut ttft = Vec::new();
    let mut generation = Vec::new();
    let mut tokens = Vec::new();
    let mut text = String::new();
    for _ in 0..reps.max(1) {
        // Prompt processing alone: the forward pass that yields the first token's logits.
        let t = Instant::now();
        let mut first = None;
        model
            .generate(PROMPT, &greedy(1), &mut |_| {
                first.get_or_insert(t.elapsed());
                true
            })
            .expect("generates");
        let one = t.elapsed();
        prefill.push(one);
        ttft.push(first.unwrap_or(one));
        // Generation: the same prompt, then `gen_tokens` more tokens one at a time.
        let t = Instant::now();
        let out = model
            .generate_ignoring_eos(PROMPT, &greedy(gen_tokens + 1))
            .expect("generates");
        let total = t.elapsed();
        let generated = out.completion_tokens.saturating_sub(1).max(1);
        generation.push(generated as f64 / total.saturating_sub(one).as_secs_f64());
        tokens = out.tokens;
        text = out.text;
    }
    let median_d = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let prefill = median_d(&mut prefill);
    let ttft = median_d(&mut ttft);
    generation.sort_by(f64::total_cmp);
    let gen_tps = generation[generation.len() / 2];
    let first: Vec<u32> = tokens.iter().take(16).copied().collect();
    let snippet: String = text.chars().take(100).collect();
    println!(
        "{}",
        serde_json::json!({
            "engine": "enclave",
            "threads": model.threads(),
            "prompt_tokens": prompt_tokens,
            "gen_tokens": gen_tokens,
            "load_ms": round(load.as_secs_f64() * 1e3),
            "prompt_tps": round(prompt_tokens as f64 / prefill.as_secs_f64()),
            "ttft_ms": round(ttft.as_secs_f64() * 1e3),
            "gen_tps": round(gen_tps),
            "rss_mib_start": rss_start,
            "rss_mib_after_load": rss_loaded,
            "rss_mib_after_gen": rss_mib(),
            "weight_mib": round(model.weight_bytes() as f64 / (1024.0 * 1024.0)),
            "first_tokens": first,
            "text": snippet,
        })
    );
}

/// Generation throughput of `n` concurrent sequences stepped together against the same `n`
/// run one after another (up to `gen` tokens each, sampled with a seed per sequence).
fn batch(dir: &std::path::Path, n: usize, gen_tokens: usize) {
    let path = ModelsDir::new(dir).smollm2_gguf().expect("SmolLM2 weights");
    let model = ChatModel::load(&path).expect("model loads");
    let params = GenerationParams {
        max_tokens: gen_tokens,
        temperature: 0.8,
        ..GenerationParams::default()
    };
    let run = |batched: bool| -> (f64, usize) {
        let mut seqs: Vec<_> = (0..n)
            .map(|i| {
                let p = GenerationParams {
                    seed: i as u64,
                    ..params.clone()
                };
                model.begin(PROMPT, &p).expect("starts")
            })
            .collect();
        let start = Instant::now();
        if batched {
            while seqs.iter().any(|s| !s.is_finished()) {
                let mut refs: Vec<_> = seqs.iter_mut().collect();
                model.step(&mut refs).expect("steps");
            }
        } else {
            for s in &mut seqs {
                while !s.is_finished() {
                    model.step(&mut [s]).expect("steps");
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let tokens = seqs
            .into_iter()
            .map(|s| s.into_generation().completion_tokens)
            .sum();
        (secs, tokens)
    };
    let (one_s, one_t) = run(false);
    let (all_s, all_t) = run(true);
    println!(
        "{}",
        serde_json::json!({
            "engine": "enclave",
            "sequences": n,
            "threads": model.threads(),
            "sequential_tok_s": round(one_t as f64 / one_s),
            "batched_tok_s": round(all_t as f64 / all_s),
            "tokens": [one_t, all_t],
        })
    );
}

fn embed(dir: &std::path::Path) {
    let files = ModelsDir::new(dir).minilm().expect("MiniLM weights");
    let rss_start = rss_mib();
    let start = Instant::now();
    let embedder = Embedder::load(&files).expect("model loads");
    let load = start.elapsed();
    let one = hot(&embedder, EMBED_TEXT, 1, 101);
    let batch = hot(&embedder, EMBED_TEXT, 32, 11);
    let query = hot(&embedder, QUERY_TEXT, 1, 101);
    let query_idle = idle_query(&embedder);
    let rss_after = rss_mib();
    // The same query with the layers in half precision, as long-term memory loads them.
    let half = Embedder::load_with(&files, Precision::F16).expect("model loads");
    let rss_with_f16 = rss_mib();
    let query_f16 = hot(&half, QUERY_TEXT, 1, 101);
    let query_idle_f16 = idle_query(&half);
    println!(
        "{}",
        serde_json::json!({
            "engine": "enclave",
            "model": "all-minilm-l6-v2",
            "tokens": embedder.count_tokens(EMBED_TEXT),
            "load_ms": round(load.as_secs_f64() * 1e3),
            "batch1_ms": round(one.as_secs_f64() * 1e3),
            "batch1_per_s": round(1.0 / one.as_secs_f64()),
            "query_tokens": embedder.count_tokens(QUERY_TEXT),
            "query_ms": round(query.as_secs_f64() * 1e3),
            "query_idle_ms": round(query_idle.as_secs_f64() * 1e3),
            "query_f16_ms": round(query_f16.as_secs_f64() * 1e3),
            "query_idle_f16_ms": round(query_idle_f16.as_secs_f64() * 1e3),
            "batch32_ms": round(batch.as_secs_f64() * 1e3),
            "batch32_per_s": round(32.0 / batch.as_secs_f64()),
            "rss_mib_start": rss_start,
            "rss_mib_after": rss_after,
            "rss_mib_after_f16_copy": rss_with_f16,
        })
    );
}

fn greedy(max_tokens: usize) -> GenerationParams {
    GenerationParams {
        max_tokens,
        ..GenerationParams::default()
    }
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Whether `RAYON_NUM_THREADS` (read by the model's pool at load) already says `threads`.
fn threads_set(threads: usize) -> bool {
    std::env::var("RAYON_NUM_THREADS").ok().as_deref() == Some(threads.to_string().as_str())
}

/// Runs this program again with `RAYON_NUM_THREADS` set (edition 2024 makes `set_var` unsafe,
/// and the crate keeps `unsafe` to its kernels).
fn rerun_with_threads(threads: usize) -> ExitCode {
    let status = std::process::Command::new(std::env::current_exe().expect("own path"))
        .args(std::env::args().skip(1))
        .env("RAYON_NUM_THREADS", threads.to_string())
        .status()
        .expect("re-runs itself");
    ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1))
}

fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

/// The median time to embed `batch` copies of `text` back to back, after one warm-up call.
fn hot(embedder: &Embedder, text: &str, batch: usize, rounds: usize) -> Duration {
    let texts = vec![text; batch];
    embedder.embed(&texts).expect("embeds");
    let mut runs: Vec<Duration> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            embedder.embed(&texts).expect("embeds");
            t.elapsed()
        })
        .collect();
    runs.sort();
    runs[runs.len() / 2]
}

/// The median time to embed the query after 30 ms of rest, as a server sees a lone request:
/// the pool's threads asleep and the weights out of the caches.
fn idle_query(embedder: &Embedder) -> Duration {
    let mut runs: Vec<Duration> = (0..101)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(30));
            let t = Instant::now();
            embedder.embed(&[QUERY_TEXT]).expect("embeds");
            t.elapsed()
        })
        .collect();
    runs.sort();
    runs[runs.len() / 2]
}
