//! Runs the memory engine over a LoCoMo-shaped data set (`data/memory/memory_dev.json`) and
//! writes the rankings `data/memory/memory_recall.py` scores, one JSONL file per retrieval
//! mode (hybrid, BM25 only, dense only).
//!
//! ```text
//! ENCLAVE_MODELS_DIR=~/.cache/enclave/models \
//!   cargo run --release -p enclave-memory --example eval_memory -- \
//!   data/memory/memory_dev.json target/memory-eval
//! python3 data/memory/memory_recall.py data/memory/memory_dev.json \
//!   target/memory-eval/hybrid.jsonl --by-category
//! ```
//!
//! Each conversation is one tenant (`sample.tenant` is `<tenant>/<principal>`); every turn of
//! the user (`speaker_a`) becomes one memory labeled with the turn's label, as the gateway's
//! remember stage stores each user statement (`--all-turns` adds the assistant's turns too).
//! Each question is searched by the tenant's principal at the asker's clearance. Embeddings
//! come from the in-process all-MiniLM-L6-v2 (`enclave-local`); their time is reported apart.

#![expect(
    clippy::print_stdout,
    reason = "a command-line harness reports on stdout"
)]
#![expect(clippy::expect_used, reason = "a harness fails loudly on bad input")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use enclave_label::Label;
use enclave_local::embed::{Embedder, Precision};
use enclave_local::weights::ModelsDir;
use enclave_memory::{DIMENSIONS, Fusion, Memories, Memory, Params, Query, Retrieval, Viewer};
use serde_json::Value;

struct Turn {
    id: String,
    text: String,
    label: Label,
    at: i64,
}

struct Question {
    id: String,
    text: String,
    clearance: Label,
}

struct Sample {
    tenant: String,
    principal: String,
    turns: Vec<Turn>,
    questions: Vec<Question>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let all_turns = args.iter().any(|a| a == "--all-turns");
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let dataset = pos.first().map_or_else(
        || PathBuf::from("data/memory/memory_dev.json"),
        PathBuf::from,
    );
    let out = pos
        .get(1)
        .map_or_else(|| PathBuf::from("target/memory-eval"), PathBuf::from);
    std::fs::create_dir_all(&out).expect("creating the output directory");

    let samples = load(&dataset, all_turns);
    let models = ModelsDir::locate(None, Path::new("enclave-data"));
    // Half-precision layers, as the gateway's memory service loads them (`MEMORY_PRECISION`).
    let embedder = Embedder::load_with(
        &models.minilm().expect("all-MiniLM-L6-v2 files"),
        Precision::F16,
    )
    .expect("loading all-MiniLM-L6-v2");

    let t0 = Instant::now();
    let mut memories = Memories::new(DIMENSIONS);
    let mut stored = 0usize;
    for s in &samples {
        let texts: Vec<&str> = s.turns.iter().map(|t| t.text.as_str()).collect();
        let vectors = embedder.embed(&texts).expect("embedding turns");
        for (t, v) in s.turns.iter().zip(vectors) {
            memories
                .insert(
                    Memory {
                        id: t.id.clone(),
                        tenant: s.tenant.clone(),
                        principal: s.principal.clone(),
                        namespace: None,
                        label: t.label.clone(),
                        created_at: t.at,
                        supersedes: None,
                        content: t.text.clone(),
                        metadata: None,
                    },
                    Some(&v),
                )
                .expect("indexing a turn");
            stored += 1;
        }
    }
    let index_secs = t0.elapsed().as_secs_f64();

    let mut query_vectors = Vec::new();
    let t1 = Instant::now();
    let mut n_questions = 0usize;
    for s in &samples {
        let texts: Vec<&str> = s.questions.iter().map(|q| q.text.as_str()).collect();
        n_questions += texts.len();
        query_vectors.push(embedder.embed(&texts).expect("embedding questions"));
    }
    let embed_ms = t1.elapsed().as_secs_f64() * 1000.0 / n_questions.max(1) as f64;
    println!(
        "{stored} memories embedded and indexed in {index_secs:.1} s; query embedding {embed_ms:.2} ms per question"
    );

    let configs: Vec<(String, Params)> = configs_from_env();
    for (name, params) in configs {
        let path = out.join(format!("{name}.jsonl"));
        let mut file = std::fs::File::create(&path).expect("creating a results file");
        let start = Instant::now();
        for (s, vectors) in samples.iter().zip(&query_vectors) {
            for (q, v) in s.questions.iter().zip(vectors) {
                let viewer = Viewer {
                    principal: &s.principal,
                    label: &q.clearance,
                    namespace: None,
                };
                let query = Query {
                    text: &q.text,
                    embedding: Some(v),
                    limit: 10,
                };
                let ranked: Vec<String> = memories
                    .search(&s.tenant, &viewer, &query, &params)
                    .into_iter()
                    .map(|h| h.memory.id.clone())
                    .collect();
                let line = serde_json::json!({"question_id": q.id, "ranked": ranked});
                writeln!(file, "{line}").expect("writing a result");
            }
        }
        let us = start.elapsed().as_secs_f64() * 1e6 / n_questions.max(1) as f64;
        println!("{name}: {} ({us:.0} µs per search)", path.display());
    }
}

/// The configurations to run: hybrid (the defaults), BM25 only and dense only (each with the
/// same re-ranking), and the three without re-ranking (`-plain`); `EVAL_SWEEP=1` adds the
/// variants the defaults were chosen among.
fn configs_from_env() -> Vec<(String, Params)> {
    let base = Params::default();
    let mut v = vec![
        ("hybrid".to_owned(), base),
        (
            "bm25".to_owned(),
            Params {
                retrieval: Retrieval::Lexical,
                ..base
            },
        ),
        (
            "dense".to_owned(),
            Params {
                retrieval: Retrieval::Dense,
                ..base
            },
        ),
    ];
    // The baselines without any re-ranking (what BM25 or embeddings alone give).
    let plain = Params {
        recency: 0.0,
        present_recency: 0.0,
        supersede_similarity: f32::INFINITY,
        request_weight: 1.0,
        ..base
    };
    v.push((
        "bm25-plain".into(),
        Params {
            retrieval: Retrieval::Lexical,
            ..plain
        },
    ));
    v.push((
        "dense-plain".into(),
        Params {
            retrieval: Retrieval::Dense,
            ..plain
        },
    ));
    v.push(("hybrid-plain".into(), plain));
    if std::env::var_os("EVAL_SWEEP").is_some() {
        v.push((
            "hybrid-rrf".into(),
            Params {
                fusion: Fusion::Rrf { k: 60.0 },
                ..base
            },
        ));
        v.push((
            "hybrid-no-rerank".into(),
            Params {
                recency: 0.0,
                supersede_similarity: f32::INFINITY,
                ..base
            },
        ));
        v.push((
            "hybrid-no-supersede".into(),
            Params {
                supersede_similarity: f32::INFINITY,
                ..base
            },
        ));
        v.push((
            "hybrid-no-recency".into(),
            Params {
                recency: 0.0,
                ..base
            },
        ));
        for w in [0.3f32, 0.4, 0.5, 0.7, 0.8] {
            v.push((
                format!("hybrid-w{w}"),
                Params {
                    fusion: Fusion::Blend { weight: w },
                    ..base
                },
            ));
        }
        for r in [1.0f32, 0.9, 0.7, 0.6] {
            v.push((
                format!("hybrid-req{r}"),
                Params {
                    request_weight: r,
                    ..base
                },
            ));
        }
        for r in [0.05f32, 0.1, 0.3, 0.5] {
            v.push((
                format!("hybrid-present{r}"),
                Params {
                    present_recency: r,
                    ..base
                },
            ));
        }
        for t in [0.4f32, 0.45, 0.55, 0.6, 0.7] {
            v.push((
                format!("hybrid-sup{t}"),
                Params {
                    supersede_similarity: t,
                    ..base
                },
            ));
        }
    }
    v
}

fn load(path: &Path, all_turns: bool) -> Vec<Sample> {
    let raw = std::fs::read_to_string(path).expect("reading the data set");
    let data: Value = serde_json::from_str(&raw).expect("parsing the data set");
    let mut out = Vec::new();
    for sample in data.as_array().expect("a list of samples") {
        let sid = sample["sample_id"].as_str().expect("sample_id");
        let owner = sample["tenant"].as_str().unwrap_or(sid);
        let (tenant, principal) = owner.split_once('/').unwrap_or((owner, "user"));
        let conv = &sample["conversation"];
        let speaker_a = conv["speaker_a"].as_str().unwrap_or("");
        let mut turns = Vec::new();
        for n in 1.. {
            let Some(session) = conv.get(format!("session_{n}")).and_then(Value::as_array) else {
                break;
            };
            let date = conv
                .get(format!("session_{n}_date_time"))
                .and_then(Value::as_str)
                .and_then(parse_date)
                .unwrap_or(i64::from(n) * 86_400);
            for (i, t) in session.iter().enumerate() {
                if !all_turns && t["speaker"].as_str() != Some(speaker_a) {
                    continue;
                }
                turns.push(Turn {
                    // Ids are unique per tenant: several conversations share one tenant (each
                    // its own principal), so the turn id is qualified by the sample.
                    id: format!("{sid}/{}", t["dia_id"].as_str().expect("dia_id")),
                    text: t["text"].as_str().unwrap_or("").to_owned(),
                    label: t["label"]
                        .as_str()
                        .unwrap_or("UNCLASSIFIED")
                        .parse()
                        .expect("a turn label"),
                    // One minute per turn after the session's start.
                    at: date * 1000 + i as i64 * 60_000,
                });
            }
        }
        let questions = sample["qa"]
            .as_array()
            .map(|qa| {
                qa.iter()
                    .enumerate()
                    .map(|(i, q)| Question {
                        id: format!("{sid}#{i}"),
                        text: q["question"].as_str().unwrap_or("").to_owned(),
                        clearance: q["asker_clearance"]
                            .as_str()
                            .unwrap_or("UNCLASSIFIED")
                            .parse()
                            .expect("an asker clearance"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Sample {
            tenant: tenant.to_owned(),
            principal: principal.to_owned(),
            turns,
            questions,
        });
    }
    out
}

/// Seconds since 1970 of `"1:00 pm on 2 June, 2025"` (LoCoMo's session date format).
fn parse_date(s: &str) -> Option<i64> {
    let (time, date) = s.split_once(" on ")?;
    let (hm, ampm) = time.trim().split_once(' ')?;
    let (h, m) = hm.split_once(':')?;
    let mut hour: i64 = h.parse().ok()?;
    let minute: i64 = m.parse().ok()?;
    if ampm.eq_ignore_ascii_case("pm") && hour != 12 {
        hour += 12;
    } else if ampm.eq_ignore_ascii_case("am") && hour == 12 {
        hour = 0;
    }
    let mut parts = date.split([' ', ',']).filter(|p| !p.is_empty());
    let day: i64 = parts.next()?.parse().ok()?;
    let month = [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ]
    .iter()
    .position(|m| m.eq_ignore_ascii_case(parts.clone().next().unwrap_or("")))?
        as i64
        + 1;
    parts.next();
    let year: i64 = parts.next()?.parse().ok()?;
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
