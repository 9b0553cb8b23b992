//! End-to-end: the real gateway on an ephemeral loopback port, mock upstreams, and attacks on
//! every rule of the request path.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers fail the test on broken machinery"
)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Gateway, backend, code};
use enclave_test_support::{Behavior, MockUpstream};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

async fn mock() -> MockUpstream {
    MockUpstream::start(Behavior::default()).await.unwrap()
}

fn failing(status: u16) -> Behavior {
    Behavior {
        fail_with: Some(status),
        ..Behavior::default()
    }
}

#[tokio::test]
async fn health_ready_and_metrics_need_no_key() {
    let gw = Gateway::start("").await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (s, h, _) = gw.call(Method::GET, path, None, &[], None).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert!(h.contains_key("x-enclave-classification"));
    }
    gw.stop().await;
}

#[tokio::test]
async fn every_auth_failure_is_401_invalid_api_key() {
    let up = mock().await;
    let gw = Gateway::start(&backend(
        "u",
        &up.base_url(),
        "UNCLASSIFIED",
        "USA",
        "[\"m\"]",
    ))
    .await;
    let key = gw.user("alice", "t1", "SECRET", "USA").await;
    let body = Some(Bytes::from_static(br#"{"model":"m","messages":[]}"#));
    let bad_keys = [
        None,
        Some("enk_0000000000000000_".to_owned() + &"0".repeat(64)),
        Some(key.replace(&key[key.len() - 4..], "ffff")),
        Some("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.".to_owned()),
        Some("' OR 1=1 --".to_owned()),
        Some("x".repeat(10_000)),
    ];
    for k in &bad_keys {
        let (s, h, b) = gw
            .call(
                Method::POST,
                "/v1/chat/completions",
                k.as_deref(),
                &[],
                body.clone(),
            )
            .await;
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{k:?}");
        assert_eq!(code(&v), "invalid_api_key");
        assert_eq!(v.pointer("/error/type").unwrap(), "authentication_error");
        assert!(h.contains_key("x-enclave-classification"));
    }
    // A malformed Authorization header.
    let (s, _, _) = gw
        .call(
            Method::POST,
            "/v1/chat/completions",
            None,
            &[("authorization", "Basic abc")],
            body.clone(),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // A revoked key (never used before, so not cached) is refused at once.
    let key2 = gw.app.store.create_key("alice").await.unwrap();
    assert!(gw.app.store.revoke_key(&key2.0.id).await.unwrap());
    let (s, _, _) = gw.chat(&key2.1, None, "m", "hi").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        up.requests(),
        0,
        "nothing unauthenticated reached the upstream"
    );
    let (s, _, _) = gw.chat(&key, None, "m", "hi").await;
    assert_eq!(s, StatusCode::OK);
    gw.stop().await;
}

#[tokio::test]
async fn the_session_is_bounded_by_the_clearance() {
    let up = mock().await;
    let gw = Gateway::start(&backend(
        "ts",
        &up.base_url(),
        "TOP SECRET//SI//NOFORN",
        "USA",
        "[\"m\"]",
    ))
    .await;
    let alice = gw.user("alice", "t1", "SECRET//NOFORN", "USA").await;
    let brit = gw
        .user("brit", "t1", "SECRET//REL TO USA, GBR", "GBR")
        .await;
    for label in ["TOP SECRET", "SECRET//SI", "TOP SECRET//SI//NOFORN"] {
        let (s, h, v) = gw.chat(&alice, Some(label), "m", "hello").await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::FORBIDDEN, "classification_exceeds_clearance"),
            "{label}"
        );
        assert_eq!(h["x-enclave-classification"], "UNCLASSIFIED");
    }
    let (_, _, v) = gw.chat(&alice, Some("TOP SECRET"), "m", "hello").await;
    let msg = v.pointer("/error/message").unwrap().as_str().unwrap();
    assert!(msg.contains("classification level is higher"), "{msg}");
    let (_, _, v) = gw.chat(&alice, Some("SECRET//SI"), "m", "hello").await;
    let msg = v.pointer("/error/message").unwrap().as_str().unwrap();
    assert!(
        msg.contains("compartments you are not read into: SI"),
        "{msg}"
    );
    // A foreign national cannot open a NOFORN session, even at a level within the clearance.
    let (s, _, v) = gw.chat(&brit, Some("SECRET//NOFORN"), "m", "hello").await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::FORBIDDEN, "classification_exceeds_clearance")
    );
    // Invalid markings name their reason code.
    for bad in [
        "SECRET//NOFORN//NOFORN",
        "",
        "SECRET//REL TO",
        "SEKRET",
        "SECRET//NOFORN//NOFORN//",
        "SECRET//NOFORN/REL TO USA, GBR",
    ] {
        let (s, _, v) = gw.chat(&alice, Some(bad), "m", "hello").await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_marking"),
            "{bad:?}"
        );
        assert_eq!(v.pointer("/error/type").unwrap(), "invalid_request_error");
    }
    let (_, _, v) = gw
        .chat(&alice, Some("SECRET//NOFORN//NOFORN"), "m", "hello")
        .await;
    assert!(
        v.pointer("/error/message")
            .unwrap()
            .as_str()
            .unwrap()
            .contains("DUPLICATE_TOKEN"),
        "{v}"
    );
    assert_eq!(up.requests(), 0);
    // Within the clearance: allowed, and the answer carries the session label.
    let (s, h, v) = gw.chat(&alice, Some("SECRET//NOFORN"), "m", "hello").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(h["x-enclave-classification"], "SECRET//NOFORN");
    let (s, h, _) = gw.chat(&alice, None, "m", "hello").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["x-enclave-classification"], "UNCLASSIFIED");
    gw.stop().await;
}

#[tokio::test]
async fn spillage_is_refused_counted_and_never_sent() {
    let up = mock().await;
    let gw = Gateway::start(&backend(
        "ts",
        &up.base_url(),
        "TOP SECRET//SI/TK//NOFORN",
        "USA",
        "[\"m\"]",
    ))
    .await;
    let alice = gw
        .user("alice", "t1", "TOP SECRET//SI/TK//NOFORN", "USA")
        .await;
    let spills = [
        ("UNCLASSIFIED", "(S) The convoy leaves at dawn."),
        (
            "SECRET",
            "TOP SECRET//SI//NOFORN\n\nSummary of the intercept.",
        ),
        ("SECRET//NOFORN", "Notes:\n\n(TS//SI//NF) Source reporting."),
        ("TOP SECRET//SI//NOFORN", "(TS//SI/TK//NF) Imagery shows..."),
        // Disguised: Cyrillic letters and a zero-width space.
        ("UNCLASSIFIED", "\u{0405}ECRET//NOFORN\n\nbody"),
        ("UNCLASSIFIED", "SEC\u{200b}RET//NOFORN\n\nbody"),
    ];
    for (i, (session, text)) in spills.iter().enumerate() {
        let (s, h, v) = gw.chat(&alice, Some(session), "m", text).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::FORBIDDEN, "spillage_detected"),
            "case {i}: {v}"
        );
        assert_eq!(h["x-enclave-classification"], "UNCLASSIFIED");
        let msg = v.pointer("/error/message").unwrap().as_str().unwrap();
        assert!(
            !msg.contains("convoy") && !msg.contains("intercept"),
            "the error never echoes content"
        );
    }
    // Markings hidden in other places of the request count too.
    let hidden = json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "(S//NF) in a part"}]}]});
    let (s, _, v) = gw
        .post(
            "/v1/chat/completions",
            &alice,
            Some("UNCLASSIFIED"),
            &hidden,
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "spillage_detected"));
    let tool = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "description": "SECRET//NOFORN"}}]});
    let (s, _, _) = gw.post("/v1/chat/completions", &alice, None, &tool).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // ... and so do keys: an unknown field or a schema property name is forwarded upstream.
    let keyed = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "metadata": {"(S//NF) the plan": "x"}});
    let (s, _, v) = gw.post("/v1/chat/completions", &alice, None, &keyed).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::FORBIDDEN, "spillage_detected"),
        "{v}"
    );
    assert_eq!(up.requests(), 0, "no spilled request reached a backend");
    assert_eq!(
        gw.app.metrics.denials_of("spillage_detected"),
        spills.len() as u64 + 3
    );
    let (_, _, metrics) = gw.call(Method::GET, "/metrics", None, &[], None).await;
    assert!(
        String::from_utf8_lossy(&metrics)
            .contains("enclave_denials_total{code=\"spillage_detected\"} 9")
    );
    // Content at or below the session label passes, and releasability-only markings raise the
    // answer's label instead of refusing.
    let (s, h, _) = gw
        .chat(&alice, Some("SECRET"), "m", "(S) fine\n\n(U) also fine")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["x-enclave-classification"], "SECRET");
    let (s, h, _) = gw.chat(&alice, Some("SECRET"), "m", "(S//NF) fine").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["x-enclave-classification"], "SECRET//NOFORN");
    gw.stop().await;
}

#[tokio::test]
async fn a_secret_request_never_reaches_an_unclassified_backend_even_when_every_secret_backend_fails()
 {
    let low = mock().await;
    let high1 = MockUpstream::start(failing(500)).await.unwrap();
    let high2 = MockUpstream::start(failing(503)).await.unwrap();
    let down = "http://127.0.0.1:9/v1"; // discard port: connection refused
    let cfg = [
        backend("low", &low.base_url(), "UNCLASSIFIED", "USA", "[\"m\"]"),
        backend(
            "high1",
            &high1.base_url(),
            "SECRET//NOFORN",
            "USA",
            "[\"m\"]",
        ),
        backend("high2", &high2.base_url(), "TOP SECRET", "USA", "[\"m\"]"),
        backend("high3", down, "SECRET", "USA", "[\"m\"]"),
        "[limits]\nmax_retries = 1\n".to_owned(),
    ]
    .concat();
    let gw = Gateway::start(&cfg).await;
    let key = gw.user("alice", "t1", "SECRET//NOFORN", "USA").await;
    for label in ["SECRET", "SECRET//NOFORN", "CONFIDENTIAL"] {
        let (s, _, v) = gw.chat(&key, Some(label), "m", "hello").await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::BAD_GATEWAY, "upstream_error"),
            "{label}: {v}"
        );
    }
    // Unmarked session, but the content is SECRET: the content label decides the route.
    let (s, _, _) = gw.chat(&key, None, "m", "not spilled? (U) hi").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        low.requests(),
        1,
        "only the UNCLASSIFIED request reached the UNCLASSIFIED backend"
    );
    // A 5xx may come after the work ran: never re-sent, so each request reached one of the
    // failing SECRET backends exactly once (the unreachable one is skipped over).
    assert_eq!(high1.requests() + high2.requests(), 3);
    // No backend at all for TS//SI: 503, nothing sent.
    gw.stop().await;
    let only_low = backend("low", &low.base_url(), "UNCLASSIFIED", "USA", "[\"m\"]");
    let gw = Gateway::start(&only_low).await;
    let key = gw.user("alice", "t1", "SECRET", "USA").await;
    let (s, _, v) = gw.chat(&key, Some("SECRET"), "m", "hello").await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "no_accredited_backend")
    );
    assert_eq!(low.requests(), 1);
    let (s, _, v) = gw
        .chat(&key, Some("UNCLASSIFIED"), "m", "(C) the plan")
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "spillage_detected"));
    gw.stop().await;
}

#[tokio::test]
async fn noforn_data_never_reaches_a_backend_with_foreign_operators() {
    let allied = mock().await;
    let us = MockUpstream::start(failing(500)).await.unwrap();
    let cfg = [
        backend(
            "allied",
            &allied.base_url(),
            "TOP SECRET//SI",
            "GBR",
            "[\"m\"]",
        ),
        backend(
            "joint",
            &allied.base_url(),
            "TOP SECRET",
            "USA, GBR",
            "[\"m\"]",
        ),
        backend("us", &us.base_url(), "SECRET//NOFORN", "USA", "[\"m\"]"),
    ]
    .concat();
    let gw = Gateway::start(&cfg).await;
    let key = gw
        .user("alice", "t1", "TOP SECRET//SI//NOFORN", "USA")
        .await;
    // NOFORN session: only the U.S.-operated backend is eligible, and it fails.
    let (s, _, v) = gw.chat(&key, Some("SECRET//NOFORN"), "m", "hello").await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_GATEWAY, "upstream_error"));
    // A SECRET session whose content carries NOFORN is raised to NOFORN: same result.
    let (s, _, v) = gw
        .chat(&key, Some("SECRET"), "m", "(S//NF) from a NOFORN report")
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_GATEWAY, "upstream_error"));
    // ORCON, FISA and DISPLAY ONLY are not releasable to foreign operators either.
    for label in [
        "SECRET//ORCON/NOFORN",
        "SECRET//FISA",
        "SECRET//DISPLAY ONLY GBR",
    ] {
        let (s, _, _) = gw.chat(&key, Some(label), "m", "hello").await;
        assert!(
            s == StatusCode::BAD_GATEWAY || s == StatusCode::SERVICE_UNAVAILABLE,
            "{label}: {s}"
        );
    }
    assert_eq!(
        allied.requests(),
        0,
        "nothing NOFORN reached a foreign-operated backend"
    );
    // REL TO USA, GBR may go to the joint and the allied backend.
    let (s, _, _) = gw
        .chat(&key, Some("SECRET//REL TO USA, GBR"), "m", "hello")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(allied.requests(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn retries_then_fallback_within_the_eligible_set() {
    // A 429 means the backend did not run the request: retried, then the next candidate.
    let limited = MockUpstream::start(failing(429)).await.unwrap();
    let good = mock().await;
    let cfg = [
        backend("limited", &limited.base_url(), "SECRET", "USA", "[\"m\"]"),
        "priority = 1\n".to_owned(),
        backend("good", &good.base_url(), "SECRET", "USA", "[\"m\"]"),
        "priority = 2\n".to_owned(),
    ]
    .concat();
    let gw = Gateway::start(&cfg).await;
    let key = gw.user("alice", "t1", "SECRET", "USA").await;
    let (s, _, v) = gw.chat(&key, Some("SECRET"), "m", "hello").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(limited.requests(), 3);
    assert_eq!(good.requests(), 1);
    let (_, _, metrics) = gw.call(Method::GET, "/metrics", None, &[], None).await;
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    assert!(
        metrics.contains("enclave_upstream_errors_total{backend=\"limited\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "enclave_requests_total{route=\"chat_completions\",status=\"200\",backend=\"good\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("enclave_request_duration_seconds_bucket{route=\"chat_completions\",status=\"200\",backend=\"good\",le=\"+Inf\"} 1"));
    // The audit writer's counters: at least the chat's entry (and the user's creation) was
    // committed, none failed, and nobody is announced once the requests are answered.
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert!(value("enclave_audit_commits_total") >= 1.0, "{metrics}");
    assert!(
        value("enclave_audit_committed_entries_total") >= value("enclave_audit_commits_total"),
        "{metrics}"
    );
    assert!(value("enclave_audit_entries") >= 1.0, "{metrics}");
    assert_eq!(
        value("enclave_audit_failed_commits_total"),
        0.0,
        "{metrics}"
    );
    assert_eq!(value("enclave_audit_expected_entries"), 0.0, "{metrics}");
    gw.stop().await;
}

#[tokio::test]
async fn requests_pass_through_with_aliases_unknown_fields_and_the_upstream_key() {
    let up = mock().await;
    let cfg = format!(
        "{}api_key_env = \"ENCLAVE_TEST_UPSTREAM_KEY_UNSET\"\n",
        backend(
            "u",
            &up.base_url(),
            "SECRET",
            "USA",
            "[\"gpt-4o\", { name = \"fast\", upstream = \"gpt-4o-mini\" }]"
        )
    );
    let gw = Gateway::start(&cfg).await;
    let key = gw.user("alice", "t1", "SECRET", "USA").await;
    let body = json!({
        "model": "fast",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        "response_format": {"type": "json_object"},
        "some_future_field": {"x": 1}
    });
    let (s, _, v) = gw.post("/v1/chat/completions", &key, None, &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hi");
    let got = &up.received()[0];
    assert_eq!(got.body["model"], "gpt-4o-mini");
    assert_eq!(got.body["some_future_field"], json!({"x": 1}));
    assert_eq!(got.body["tools"], body["tools"]);
    assert_eq!(got.body["response_format"], body["response_format"]);
    assert!(
        got.authorization.is_none(),
        "no key is sent when its variable is unset"
    );
    // Embeddings route the same way.
    let (s, h, v) = gw
        .post(
            "/v1/embeddings",
            &key,
            Some("SECRET"),
            &json!({"model": "gpt-4o", "input": "hello"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(h["x-enclave-classification"], "SECRET");
    assert_eq!(v["data"][0]["embedding"][1], -0.5);
    let (s, _, v) = gw
        .post(
            "/v1/embeddings",
            &key,
            Some("CONFIDENTIAL"),
            &json!({"model": "gpt-4o", "input": ["(S) hi"]}),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "spillage_detected"));
    gw.stop().await;
}

#[tokio::test]
async fn models_are_listed_only_at_labels_their_backends_may_process() {
    let up = mock().await;
    let cfg = [
        backend("low", &up.base_url(), "UNCLASSIFIED", "USA", "[\"small\"]"),
        backend(
            "high",
            &up.base_url(),
            "SECRET//NOFORN",
            "USA",
            "[\"big\", \"small\"]",
        ),
        backend("allied", &up.base_url(), "SECRET", "GBR", "[\"allied\"]"),
    ]
    .concat();
    let gw = Gateway::start(&cfg).await;
    let key = gw.user("alice", "t1", "SECRET//NOFORN", "USA").await;
    let list = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let get = |label: Option<&'static str>| {
        let headers: Vec<(&str, &str)> = label
            .map(|l| vec![("x-enclave-classification", l)])
            .unwrap_or_default();
        let gw = &gw;
        let key = key.clone();
        async move {
            let (s, h, b) = gw
                .call(Method::GET, "/v1/models", Some(&key), &headers, None)
                .await;
            assert_eq!(s, StatusCode::OK);
            (h, serde_json::from_slice::<Value>(&b).unwrap())
        }
    };
    let (h, v) = get(None).await;
    assert_eq!(list(&v), ["small", "big", "allied"]);
    assert_eq!(h["x-enclave-classification"], "UNCLASSIFIED");
    let (_, v) = get(Some("SECRET//REL TO USA, GBR")).await;
    assert_eq!(list(&v), ["big", "small", "allied"]);
    let (_, v) = get(Some("SECRET//NOFORN")).await;
    assert_eq!(list(&v), ["big", "small"]);
    assert_eq!(v["object"], "list");
    let (s, _, v) = gw.chat(&key, None, "no-such-model", "hi").await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "model_not_found"));
    let (s, _, v) = gw.chat(&key, Some("SECRET//NOFORN"), "allied", "hi").await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "no_accredited_backend")
    );
    gw.stop().await;
}

#[tokio::test]
async fn malformed_and_oversized_bodies_get_clear_errors() {
    let up = mock().await;
    let cfg = format!(
        "{}[limits]\nmax_body_bytes = \"64KiB\"\n",
        backend("u", &up.base_url(), "SECRET", "USA", "[\"m\"]")
    );
    let gw = Gateway::start(&cfg).await;
    let key = gw.user("alice", "t1", "SECRET", "USA").await;
    let post = |body: Vec<u8>| {
        let gw = &gw;
        let key = key.clone();
        async move {
            let (s, _, b) = gw
                .call(
                    Method::POST,
                    "/v1/chat/completions",
                    Some(&key),
                    &[],
                    Some(Bytes::from(body)),
                )
                .await;
            (s, serde_json::from_slice::<Value>(&b).unwrap())
        }
    };
    let (s, v) = post(vec![b'x'; 100 * 1024]).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large")
    );
    let (s, v) = post(b"{\"model\": \"m\", \"messages\": [".to_vec()).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_json"));
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 1 column"),
        "{v}"
    );
    for body in [
        &b"[]"[..],
        b"\"text\"",
        b"{}",
        b"{\"model\": 5}",
        b"{\"model\": \"\"}",
    ] {
        let (s, v) = post(body.to_vec()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    }
    let (s, v) = post(vec![0xff, 0xfe, 0x00]).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_json"));
    // Deeply nested JSON is refused by the parser's recursion limit, not a stack overflow.
    let mut deep = b"{\"model\":\"m\",\"x\":".to_vec();
    deep.extend(std::iter::repeat_n(b'[', 10_000));
    let (s, _) = post(deep).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Chunked (no Content-Length) oversize bodies are cut off too.
    let req = http::Request::post(gw.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .body(Chunks(100))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Unknown routes and wrong methods.
    let (s, _, b) = gw
        .call(Method::GET, "/v1/nope", Some(&key), &[], None)
        .await;
    assert_eq!(
        (s, code(&serde_json::from_slice(&b).unwrap())),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (s, _, _) = gw
        .call(Method::GET, "/v1/chat/completions", Some(&key), &[], None)
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(up.requests(), 0);
    gw.stop().await;
}

/// A chunked body of `n` frames of 4 KiB, with no length announced.
struct Chunks(usize);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.0 == 0 {
            return std::task::Poll::Ready(None);
        }
        self.0 -= 1;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(vec![
            b' ';
            4096
        ])))))
    }
}

#[tokio::test]
async fn streams_pass_through_as_they_arrive_and_cancel_upstream_on_disconnect() {
    // Ten pieces of 200 bytes, 100 ms apart: the output screen holds back a few hundred bytes
    // (a finding to redact may straddle pieces), so text flows after the first pieces and
    // long before the end.
    let up = MockUpstream::start(Behavior {
        stream_echo: Some(200),
        chunk_delay: Duration::from_millis(100),
        ..Behavior::default()
    })
    .await
    .unwrap();
    let gw = Gateway::start(&backend("u", &up.base_url(), "SECRET", "USA", "[\"m\"]")).await;
    let key = gw.user("alice", "t1", "SECRET", "USA").await;
    let prose = "The committee met on Tuesday to review the quarterly budget and agreed to move the staff training to the spring. ".repeat(18);
    let body = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": prose}]});
    let req = http::Request::post(gw.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .header("x-enclave-classification", "SECRET")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
        .unwrap();
    let start = std::time::Instant::now();
    let resp = gw.client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-enclave-classification"], "SECRET");
    let mut body = resp.into_body();
    // The first event names the role; the first text follows within a few pieces.
    let mut first = Vec::new();
    while !String::from_utf8_lossy(&first).contains("The committee met") {
        first.extend_from_slice(&body.frame().await.unwrap().unwrap().into_data().unwrap());
    }
    let first_at = start.elapsed();
    let mut rest = Vec::new();
    while let Some(f) = body.frame().await {
        rest.extend_from_slice(&f.unwrap().into_data().unwrap());
    }
    let total = start.elapsed();
    assert!(String::from_utf8_lossy(&rest).ends_with("data: [DONE]\n\n"));
    assert!(
        total - first_at >= Duration::from_millis(400),
        "the first text arrived before the rest was produced ({first_at:?} of {total:?})"
    );
    assert_eq!(up.streams(), (1, 0, 1));

    // Cancellation: an endless stream, the client reads one chunk and goes away.
    up.set_behavior(Behavior {
        endless: true,
        chunk_delay: Duration::from_millis(20),
        ..Behavior::default()
    });
    let req = http::Request::post(gw.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::from(
            serde_json::to_vec(&json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]})).unwrap(),
        )))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let resp = client.request(req).await.unwrap();
    let mut body = resp.into_body();
    let _ = body.frame().await.unwrap().unwrap();
    drop(body);
    drop(client);
    let mut cancelled = false;
    for _ in 0..100 {
        if up.streams().1 == 1 {
            cancelled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        cancelled,
        "the upstream stream was cancelled: {:?}",
        up.streams()
    );
    gw.stop().await;
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let up = mock().await;
    let cfg = format!(
        "{}[limits]\nrequests_per_minute = 2\n",
        backend("u", &up.base_url(), "SECRET", "USA", "[\"m\"]")
    );
    let gw = Gateway::start(&cfg).await;
    let a = gw.user("alice", "t1", "SECRET", "USA").await;
    let b = gw.user("bob", "t1", "SECRET", "USA").await;
    assert_eq!(gw.chat(&a, None, "m", "1").await.0, StatusCode::OK);
    assert_eq!(gw.chat(&a, None, "m", "2").await.0, StatusCode::OK);
    let (s, h, v) = gw.chat(&a, None, "m", "3").await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    let after: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&after), "{after}");
    assert_eq!(
        gw.chat(&b, None, "m", "1").await.0,
        StatusCode::OK,
        "limits are per key"
    );
    gw.stop().await;

    let cfg = format!(
        "{}[limits]\ntokens_per_minute = 15\n",
        backend("u", &up.base_url(), "SECRET", "USA", "[\"m\"]")
    );
    let gw = Gateway::start(&cfg).await;
    let a = gw.user("alice", "t1", "SECRET", "USA").await;
    assert_eq!(gw.chat(&a, None, "m", "1").await.0, StatusCode::OK); // 10 tokens
    assert_eq!(gw.chat(&a, None, "m", "2").await.0, StatusCode::OK); // 20: over
    let (s, h, v) = gw.chat(&a, None, "m", "3").await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        "{v}"
    );
    assert!(h.contains_key("retry-after"));
    gw.stop().await;
}

#[tokio::test]
async fn past_saturation_load_is_shed_fast_and_health_stays_responsive() {
    let up = MockUpstream::start(Behavior {
        answer_delay: Duration::from_millis(800),
        ..Behavior::default()
    })
    .await
    .unwrap();
    let cfg = format!(
        "{}[limits]\nmax_concurrency = 2\nmax_queue = 2\nqueue_timeout_ms = 100\n",
        backend("u", &up.base_url(), "SECRET", "USA", "[\"m\"]")
    );
    let gw = std::sync::Arc::new(Gateway::start(&cfg).await);
    let key = gw.user("alice", "t1", "SECRET", "USA").await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let gw = std::sync::Arc::clone(&gw);
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let start = std::time::Instant::now();
            let (s, h, v) = gw.chat(&key, None, "m", &format!("{i}")).await;
            (
                s,
                h.get("retry-after").is_some(),
                code(&v).to_owned(),
                start.elapsed(),
            )
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = std::time::Instant::now();
    let (s, _, _) = gw.call(Method::GET, "/healthz", None, &[], None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "health answered while saturated"
    );
    let mut ok = 0;
    let mut shed = 0;
    for t in tasks {
        let (s, retry_after, code, took) = t.await.unwrap();
        if s == StatusCode::OK {
            ok += 1;
        } else {
            assert_eq!(
                (s, code.as_str()),
                (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
            );
            assert!(retry_after);
            assert!(
                took < Duration::from_millis(600),
                "shed fast, not after the upstream's delay: {took:?}"
            );
            shed += 1;
        }
    }
    assert!(ok >= 2 && shed >= 10, "ok {ok}, shed {shed}");
}

#[tokio::test]
async fn shutdown_lets_in_flight_streams_finish() {
    let up = MockUpstream::start(Behavior {
        chunks: 4,
        chunk_delay: Duration::from_millis(150),
        ..Behavior::default()
    })
    .await
    .unwrap();
    let mut gw = Gateway::start(&backend("u", &up.base_url(), "SECRET", "USA", "[\"m\"]")).await;
    let key = gw.user("alice", "t1", "SECRET", "USA").await;
    let req = http::Request::post(gw.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::from(
            serde_json::to_vec(&json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]})).unwrap(),
        )))
        .unwrap();
    let resp = gw.client.request(req).await.unwrap();
    gw.trigger_stop();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).ends_with("data: [DONE]\n\n"));
    let task = gw.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    // The listener is closed.
    assert!(tokio::net::TcpStream::connect(gw.addr).await.is_err());
}
