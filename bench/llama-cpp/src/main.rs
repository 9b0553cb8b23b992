//! `llama-cpp-bench`: bench-only tool that measures llama.cpp (through the `llama-cpp-2`
//! bindings) on the SmolLM2 GGUF file Enclave's embedded chat model uses, with the same
//! ChatML prompt as Enclave's own measurement, so the two engines can be compared in one
//! run. Never part of the main build or CI; see `scripts/bench-llama-cpp`.
//!
//! Usage: `llama-cpp-bench --model PATH --threads N [--gen 128] [--reps 3] [--no-mmap] [--verbose]`
//!
//! By default llama.cpp mmaps the file, so `load_ms` excludes reading the weights (they fault
//! in during the first decode); `--no-mmap` reads them all at load, as Enclave does.
//!
//! Prints the prompt token count and llama.cpp's system info on stderr and one JSON line
//! on stdout. llama.cpp's own log is discarded unless `--verbose` (then it goes to stderr).

use std::ffi::CStr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

/// The exact prompt Enclave's own measurement renders (SmolLM2's ChatML template, default
/// system message).
const PROMPT: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWrite a short story about a lighthouse keeper who finds a message in a bottle. Describe the sea, the weather and the keeper's feelings in detail.<|im_end|>\n<|im_start|>assistant\n";

const N_CTX: u32 = 2048;
const FIRST_IDS: usize = 16;
const TEXT_CHARS: usize = 100;

struct Args {
    model: PathBuf,
    threads: i32,
    gen_tokens: usize,
    reps: usize,
    verbose: bool,
    mmap: bool,
}

fn usage() -> String {
    "usage: llama-cpp-bench --model PATH --threads N [--gen 128] [--reps 3] [--no-mmap] [--verbose]"
        .into()
}

fn parse_args() -> Result<Args, String> {
    let mut model = None;
    let mut threads = None;
    let mut gen_tokens = 128usize;
    let mut reps = 3usize;
    let mut verbose = false;
    let mut mmap = true;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value\n{}", usage()))
        };
        match a.as_str() {
            "--model" => model = Some(PathBuf::from(value("--model")?)),
            "--threads" => {
                threads = Some(
                    value("--threads")?
                        .parse::<i32>()
                        .map_err(|e| format!("--threads: {e}"))?,
                )
            }
            "--gen" => gen_tokens = value("--gen")?.parse().map_err(|e| format!("--gen: {e}"))?,
            "--reps" => {
                reps = value("--reps")?
                    .parse()
                    .map_err(|e| format!("--reps: {e}"))?
            }
            "--verbose" => verbose = true,
            "--no-mmap" => mmap = false,
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        }
    }
    let model = model.ok_or_else(|| format!("--model is required\n{}", usage()))?;
    let threads = threads.ok_or_else(|| format!("--threads is required\n{}", usage()))?;
    if threads < 1 || reps < 1 || gen_tokens < 1 {
        return Err("--threads, --gen and --reps must be at least 1".into());
    }
    Ok(Args {
        model,
        threads,
        gen_tokens,
        reps,
        verbose,
        mmap,
    })
}

/// VmRSS (or another `Vm*` field) of this process, in MiB.
fn proc_status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_f(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "null".into()
    }
}

fn json_arr(v: &[f64]) -> String {
    format!(
        "[{}]",
        v.iter().map(|x| json_f(*x)).collect::<Vec<_>>().join(",")
    )
}

struct Rep {
    pp_secs: f64,
    ttft_secs: f64,
    gen_secs: f64,
    tokens: Vec<LlamaToken>,
}

/// One repetition on a fresh context: prompt in one batch (logits for the last token only),
/// greedy first token, then `gen_tokens` more, one per decode, EOS not treated specially.
fn run_once(
    ctx: &mut LlamaContext<'_>,
    prompt: &[LlamaToken],
    gen_tokens: usize,
) -> Result<Rep, String> {
    let mut sampler = LlamaSampler::greedy();
    let mut batch = LlamaBatch::new(prompt.len().max(1), 1);
    let last = prompt.len() - 1;
    for (i, t) in prompt.iter().enumerate() {
        batch
            .add(*t, i as i32, &[0], i == last)
            .map_err(|e| e.to_string())?;
    }

    let t0 = Instant::now();
    ctx.decode(&mut batch)
        .map_err(|e| format!("prompt decode: {e}"))?;
    ctx.synchronize();
    let pp_secs = t0.elapsed().as_secs_f64();
    let first = sampler.sample(ctx, batch.n_tokens() - 1);
    let ttft_secs = t0.elapsed().as_secs_f64();

    let mut tokens = Vec::with_capacity(gen_tokens + 1);
    tokens.push(first);
    let mut pos = prompt.len() as i32;
    let mut next = first;
    let t1 = Instant::now();
    for _ in 0..gen_tokens {
        batch.clear();
        batch
            .add(next, pos, &[0], true)
            .map_err(|e| e.to_string())?;
        ctx.decode(&mut batch)
            .map_err(|e| format!("decode at {pos}: {e}"))?;
        pos += 1;
        next = sampler.sample(ctx, 0);
        tokens.push(next);
    }
    let gen_secs = t1.elapsed().as_secs_f64();
    Ok(Rep {
        pp_secs,
        ttft_secs,
        gen_secs,
        tokens,
    })
}

fn run(args: &Args) -> Result<String, String> {
    let mut backend = LlamaBackend::init().map_err(|e| format!("backend init: {e}"))?;
    if !args.verbose {
        backend.void_logs();
    }
    // SAFETY: returns a pointer to a static NUL-terminated string owned by llama.cpp.
    let system_info = unsafe { CStr::from_ptr(llama_cpp_sys_2::llama_print_system_info()) }
        .to_string_lossy()
        .trim()
        .to_string();
    eprintln!("llama.cpp system info: {system_info}");

    let rss_before_load = proc_status_mib("VmRSS");
    let t = Instant::now();
    let model = LlamaModel::load_from_file(
        &backend,
        &args.model,
        &LlamaModelParams::default().with_use_mmap(args.mmap),
    )
    .map_err(|e| format!("loading {}: {e}", args.model.display()))?;
    let load_secs = t.elapsed().as_secs_f64();
    let rss_after_load = proc_status_mib("VmRSS");

    let vocab = model.vocab();
    // add_special=false: no BOS beyond what the text has; parse_special=true: <|im_start|> is one token.
    let prompt = vocab.tokenize(PROMPT.as_bytes(), false, true);
    if prompt.is_empty() {
        return Err("prompt tokenized to nothing".into());
    }
    eprintln!("prompt tokens: {} (first: {})", prompt.len(), prompt[0].0);
    if prompt.len() + args.gen_tokens + 1 > N_CTX as usize {
        return Err(format!("prompt + --gen exceed the {N_CTX}-token context"));
    }

    let mut reps = Vec::with_capacity(args.reps);
    let mut rss_after_gen = f64::NAN;
    for r in 0..args.reps {
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(N_CTX))
            .with_n_batch(N_CTX)
            .with_n_threads(args.threads)
            .with_n_threads_batch(args.threads);
        let mut ctx = model
            .new_context(&backend, params)
            .map_err(|e| format!("new context: {e}"))?;
        let rep = run_once(&mut ctx, &prompt, args.gen_tokens)?;
        rss_after_gen = proc_status_mib("VmRSS");
        eprintln!(
            "rep {}: pp {:.1} tok/s, ttft {:.1} ms, gen {:.1} tok/s",
            r + 1,
            prompt.len() as f64 / rep.pp_secs,
            rep.ttft_secs * 1e3,
            args.gen_tokens as f64 / rep.gen_secs
        );
        reps.push(rep);
    }

    let pp: Vec<f64> = reps
        .iter()
        .map(|r| prompt.len() as f64 / r.pp_secs)
        .collect();
    let ttft_ms: Vec<f64> = reps.iter().map(|r| r.ttft_secs * 1e3).collect();
    let gen_rate: Vec<f64> = reps
        .iter()
        .map(|r| args.gen_tokens as f64 / r.gen_secs)
        .collect();
    let same_output = reps.iter().all(|r| r.tokens == reps[0].tokens);

    let tokens = &reps[0].tokens;
    let mut bytes = Vec::new();
    for t in tokens {
        bytes.extend(vocab.token_to_piece(*t, true, None));
    }
    let text: String = String::from_utf8_lossy(&bytes)
        .chars()
        .take(TEXT_CHARS)
        .collect();
    let first_ids: Vec<String> = tokens
        .iter()
        .take(FIRST_IDS)
        .map(|t| t.0.to_string())
        .collect();

    Ok(format!(
        concat!(
            "{{\"engine\":\"llama.cpp\",\"llama_cpp_2\":\"0.1.160\",\"mmap\":{},\"threads\":{},\"prompt_tokens\":{},",
            "\"gen_tokens\":{},\"reps\":{},\"load_ms\":{},\"prompt_tok_s\":{},\"ttft_ms\":{},",
            "\"gen_tok_s\":{},\"rss_before_load_mib\":{},\"rss_after_load_mib\":{},",
            "\"rss_after_gen_mib\":{},\"peak_rss_mib\":{},\"prompt_tok_s_reps\":{},\"ttft_ms_reps\":{},",
            "\"gen_tok_s_reps\":{},\"same_output_all_reps\":{},\"first_ids\":[{}],\"text\":{},",
            "\"system_info\":{}}}"
        ),
        args.mmap,
        args.threads,
        prompt.len(),
        args.gen_tokens,
        args.reps,
        json_f(load_secs * 1e3),
        json_f(median(&pp)),
        json_f(median(&ttft_ms)),
        json_f(median(&gen_rate)),
        json_f(rss_before_load),
        json_f(rss_after_load),
        json_f(rss_after_gen),
        json_f(proc_status_mib("VmHWM").max(rss_after_gen)),
        json_arr(&pp),
        json_arr(&ttft_ms),
        json_arr(&gen_rate),
        same_output,
        first_ids.join(","),
        json_str(&text),
        json_str(&system_info),
    ))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if !args.model.is_file() {
        eprintln!("model file not found: {}", args.model.display());
        return ExitCode::from(1);
    }
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("llama-cpp-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
