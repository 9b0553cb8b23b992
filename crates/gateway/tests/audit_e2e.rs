//! The audit stage over a real socket: every response carries a durable receipt, entries hold
//! digests and never the prompt, the log fails closed, and the receipts API proves entries to
//! their principals.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: broken machinery fails the test"
)]

mod common;

use bytes::Bytes;
use common::{Gateway, backend, code};
use enclave_audit::{
    AuditEntry, Checkpoint, Event, Hash, KeyedDigest, Phase, RequestEvent, Verifiers, hash_leaf,
    verify_consistency, verify_inclusion,
};
use enclave_store::NewPrincipal;
use enclave_test_support::{Behavior, MockUpstream};
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

const CANARY: &str = "canary-7f3a9c1e-do-not-store";

async fn gateway() -> (MockUpstream, Gateway) {
    let up = MockUpstream::start(Behavior::default()).await.unwrap();
    let gw = Gateway::start(&backend(
        "s",
        &up.base_url(),
        "SECRET//NOFORN",
        "USA",
        "[\"m\"]",
    ))
    .await;
    (up, gw)
}

fn index(h: &HeaderMap) -> u64 {
    h.get("x-enclave-audit-index")
        .unwrap_or_else(|| panic!("no X-Enclave-Audit-Index in {h:?}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The request entry at `index`.
async fn entry(gw: &Gateway, index: u64) -> RequestEvent {
    let text = gw.app.store.audit_entry(index).await.unwrap().unwrap();
    let entry = AuditEntry::from_canonical_bytes(text.as_bytes()).unwrap();
    assert_eq!(entry.index, index);
    match entry.event {
        Event::Request(r) => r,
        Event::Admin(a) => panic!("entry {index} is an admin entry: {a:?}"),
    }
}

/// Every request entry, with its index.
async fn all_entries(gw: &Gateway) -> Vec<(u64, String, RequestEvent)> {
    let mut out = Vec::new();
    for row in gw.app.store.audit_rows(0, 100_000).await.unwrap() {
        let e = AuditEntry::from_canonical_bytes(row.entry.as_bytes()).unwrap();
        if let Event::Request(r) = e.event {
            out.push((row.index, row.entry, r));
        }
    }
    out
}

async fn auditor(gw: &Gateway, name: &str) -> String {
    gw.app
        .store
        .add_principal(&NewPrincipal {
            name: name.into(),
            tenant: "oversight".into(),
            clearance: "SECRET".into(),
            nationality: "USA".into(),
            role: "auditor".into(),
        })
        .await
        .unwrap();
    gw.app.store.create_key(name).await.unwrap().1
}

async fn get(gw: &Gateway, path: &str, key: &str) -> (StatusCode, HeaderMap, Bytes) {
    gw.call(Method::GET, path, Some(key), &[], None).await
}

#[tokio::test]
async fn every_response_carries_the_index_of_a_durable_entry_without_the_prompt() {
    let (_up, gw) = gateway().await;
    let alice = gw.user("alice", "agency-a", "SECRET//NOFORN", "USA").await;
    let tenant_key = gw.app.digest_keys.tenant_key("agency-a");

    // A success, with a canary in the prompt; its exact body bytes are digested.
    let body = Bytes::from(
        serde_json::to_vec(
            &json!({"model": "m", "messages": [{"role": "user", "content": format!("hello {CANARY}")}]}),
        )
        .unwrap(),
    );
    let (s, h, answer) = gw
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&alice),
            &[
                ("x-request-id", "ok-1"),
                ("x-enclave-classification", "SECRET"),
            ],
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let ok = entry(&gw, index(&h)).await;
    assert_eq!(ok.request_id, "ok-1");
    assert_eq!((ok.status, ok.error.as_deref()), (200, None));
    assert_eq!(ok.route, "chat_completions");
    assert_eq!(ok.tenant.as_deref(), Some("agency-a"));
    assert_eq!(ok.principal.as_deref(), Some("alice"));
    assert_eq!(ok.auth_method.as_deref(), Some("api_key"));
    assert_eq!(ok.session_label.as_deref(), Some("SECRET"));
    assert_eq!(ok.model.as_deref(), Some("m"));
    assert_eq!(ok.backend.as_deref(), Some("s"));
    assert_eq!(ok.tokens.map(|t| (t.input, t.output)), Some((7, 3)));
    assert!(
        ok.decisions
            .iter()
            .any(|d| d.stage == "route" && d.outcome == "allow")
    );
    assert_eq!(
        ok.prompt_hmac,
        Some(KeyedDigest::compute(&tenant_key, &body))
    );
    assert_eq!(
        ok.output_hmac,
        Some(KeyedDigest::compute(&tenant_key, &answer))
    );

    // 403 spillage: refused before anything is sent, recorded with its decision.
    let (s, h, v) = gw
        .chat(
            &alice,
            Some("UNCLASSIFIED"),
            "m",
            "(S) The convoy leaves at dawn.",
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "spillage_detected"));
    let spill = entry(&gw, index(&h)).await;
    assert_eq!(
        (spill.status, spill.error.as_deref()),
        (403, Some("spillage_detected"))
    );
    assert!(spill.decisions.iter().any(|d| d.stage == "label"
        && d.outcome == "deny"
        && d.code.as_deref() == Some("spillage_detected")));
    assert!(spill.prompt_hmac.is_some() && spill.output_hmac.is_none());

    // 401: no principal, no tenant.
    let (s, h, _) = gw
        .call(Method::GET, "/v1/models", Some("enk_nope"), &[], None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let denied = entry(&gw, index(&h)).await;
    assert_eq!(
        (denied.status, denied.error.as_deref()),
        (401, Some("invalid_api_key"))
    );
    assert_eq!((denied.tenant, denied.principal), (None, None));

    // 404 for a path that does not exist, and 405.
    let (s, h, _) = gw.call(Method::GET, "/v1/nothing", None, &[], None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(entry(&gw, index(&h)).await.status, 404);
    let (s, h, _) = gw
        .call(Method::GET, "/v1/chat/completions", None, &[], None)
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(entry(&gw, index(&h)).await.status, 405);

    // /v1/models.
    let (s, h, _) = get(&gw, "/v1/models", &alice).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(entry(&gw, index(&h)).await.route, "models");

    // A stream: the header is its decision entry; the outcome entry is durable by the time the
    // last byte arrived, and digests exactly the bytes received.
    let stream_body = Bytes::from(
        serde_json::to_vec(&json!({"model": "m", "stream": true,
            "messages": [{"role": "user", "content": CANARY}]}))
        .unwrap(),
    );
    let (s, h, sse) = gw
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&alice),
            &[("x-request-id", "stream-1")],
            Some(stream_body.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(sse.ends_with(b"data: [DONE]\n\n"));
    let decision = entry(&gw, index(&h)).await;
    assert_eq!(
        (
            decision.request_id.as_str(),
            decision.phase,
            decision.status
        ),
        ("stream-1", Some(Phase::Decision), 200)
    );
    assert_eq!(decision.output_hmac, None);
    let outcome = all_entries(&gw)
        .await
        .into_iter()
        .find(|(_, _, r)| r.request_id == "stream-1" && r.phase == Some(Phase::Outcome))
        .expect("the stream's outcome entry")
        .2;
    assert_eq!(outcome.status, 200);
    assert_eq!(
        outcome.prompt_hmac,
        Some(KeyedDigest::compute(&tenant_key, &stream_body))
    );
    assert_eq!(
        outcome.output_hmac,
        Some(KeyedDigest::compute(&tenant_key, &sse))
    );

    // The operator's probes need no entry.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (s, h, _) = gw.call(Method::GET, path, None, &[], None).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert!(!h.contains_key("x-enclave-audit-index"), "{path}");
    }

    // No entry holds the prompt's text, and neither does any database file.
    let entries = all_entries(&gw).await;
    assert!(entries.len() >= 8, "{}", entries.len());
    for (i, text, _) in &entries {
        assert!(!text.contains(CANARY), "entry {i} holds the prompt");
        assert!(!text.contains("convoy"), "entry {i} holds the prompt");
    }
    let data = gw.dir.path().join("data");
    for file in std::fs::read_dir(&data).unwrap() {
        let path = file.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
                "{} holds the canary",
                path.display()
            );
        }
    }
    gw.stop().await;
}

#[tokio::test]
async fn when_the_audit_log_cannot_write_nothing_is_answered_and_nothing_is_sent_upstream() {
    let (up, gw) = gateway().await;
    let alice = gw.user("alice", "agency-a", "SECRET//NOFORN", "USA").await;
    let (s, _, _) = gw.chat(&alice, None, "m", "before").await;
    assert_eq!(s, StatusCode::OK);

    // The audit table disappears under the running server.
    let db = format!(
        "sqlite://{}",
        gw.dir.path().join("data/enclave.db").display()
    );
    exec(
        &db,
        "ALTER TABLE audit_entries RENAME TO audit_entries_away",
    )
    .await;

    // The answer that was made cannot be logged: it is withheld.
    let (s, h, v) = gw.chat(&alice, None, "m", "during").await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable")
    );
    assert!(!h.contains_key("x-enclave-audit-index"));
    assert!(
        v.to_string().find("echo").is_none(),
        "no part of the answer: {v}"
    );
    // Now it is known: requests are refused before any backend is called, streams too.
    let sent = up.requests();
    let (s, _, v) = gw.chat(&alice, None, "m", "refused").await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable")
    );
    let stream =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let (s, _, v) = gw.post("/v1/chat/completions", &alice, None, &stream).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable")
    );
    assert_eq!(up.requests(), sent, "nothing reached the backend");
    let (s, _, _) = gw.call(Method::GET, "/readyz", None, &[], None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);

    // The table comes back: the next refusal's entry is written, and requests flow again.
    exec(
        &db,
        "ALTER TABLE audit_entries_away RENAME TO audit_entries",
    )
    .await;
    let mut recovered = false;
    for _ in 0..3 {
        let (s, h, _) = gw.chat(&alice, None, "m", "after").await;
        if s == StatusCode::OK {
            index(&h);
            recovered = true;
            break;
        }
    }
    assert!(recovered);

    // The log has no gap: the failed commits took no index.
    let reader = enclave_store::AuditReader::connect(&db).await.unwrap();
    let rows = reader.rows(0, 1000).await.unwrap();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.index, i as u64);
    }
    assert_eq!(reader.size().await.unwrap(), rows.len() as u64);
    reader.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_principal_proves_its_own_entries_against_a_signed_checkpoint() {
    let (_up, gw) = gateway().await;
    let alice = gw.user("alice", "agency-a", "SECRET//NOFORN", "USA").await;
    let bob = gw.user("bob", "agency-b", "SECRET//NOFORN", "USA").await;
    let carol = auditor(&gw, "carol").await;
    let (_, h, _) = gw.chat(&alice, None, "m", "one").await;
    let mine = index(&h);
    let (_, h, _) = gw.chat(&bob, None, "m", "two").await;
    let bobs = index(&h);
    let first = gw.app.audit.checkpoint_now().await.unwrap().unwrap();

    // The checkpoint, to any authenticated caller.
    let (s, h, note) = get(&gw, "/v1/audit/checkpoint", &bob).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h.contains_key("x-enclave-audit-index"));
    assert_eq!(note, first.note.as_bytes());
    let trusted = Verifiers::new([gw.app.audit.verifier_key().clone()]).unwrap();
    let checkpoint = Checkpoint::open(&note, &trusted).unwrap();
    assert_eq!(checkpoint.size(), first.size);
    let (s, _, _) = gw
        .call(Method::GET, "/v1/audit/checkpoint", None, &[], None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Alice's own entry, proved against the checkpoint's root.
    let (s, _, body) = get(
        &gw,
        &format!("/v1/audit/proof/inclusion?index={mine}"),
        &alice,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let proof: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(proof["size"], first.size);
    assert_eq!(proof["checkpoint"], first.note.as_str());
    let hashes: Vec<Hash> = proof["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| Hash::from_base64(h.as_str().unwrap()).unwrap())
        .collect();
    let entry_text = proof["entry"].as_str().unwrap();
    let leaf = hash_leaf(entry_text.as_bytes());
    verify_inclusion(mine, checkpoint.size(), &leaf, &hashes, checkpoint.root()).unwrap();
    let e = AuditEntry::from_canonical_bytes(entry_text.as_bytes()).unwrap();
    assert_eq!(e.index, mine);

    // Bob's entry is not Alice's: 404, as for an index that does not exist.
    for path in [
        format!("/v1/audit/proof/inclusion?index={bobs}"),
        "/v1/audit/proof/inclusion?index=999999".to_owned(),
    ] {
        let (s, _, body) = get(&gw, &path, &alice).await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (s, code(&v)),
            (StatusCode::NOT_FOUND, "not_found"),
            "{path}"
        );
    }
    // An auditor may prove any entry, at an explicit size.
    let size = gw.app.audit.tree().len();
    let (s, _, _) = get(
        &gw,
        &format!("/v1/audit/proof/inclusion?index={bobs}&size={size}"),
        &carol,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, body) = get(&gw, "/v1/audit/proof/inclusion?index=0&index=1", &carol).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_request"));

    // Consistency between two checkpoints.
    gw.chat(&alice, None, "m", "three").await;
    let second = gw.app.audit.checkpoint_now().await.unwrap().unwrap();
    let (s, _, body) = get(
        &gw,
        &format!(
            "/v1/audit/proof/consistency?from={}&to={}",
            first.size, second.size
        ),
        &bob,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let c: Value = serde_json::from_slice(&body).unwrap();
    let later = Checkpoint::open(second.note.as_bytes(), &trusted).unwrap();
    let hashes: Vec<Hash> = c["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| Hash::from_base64(h.as_str().unwrap()).unwrap())
        .collect();
    verify_consistency(
        first.size,
        second.size,
        &hashes,
        checkpoint.root(),
        later.root(),
    )
    .unwrap();

    // Entries are for auditors only.
    let (s, _, body) = get(&gw, "/v1/audit/entries", &alice).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "permission_denied"));
    let (s, _, body) = get(&gw, "/v1/audit/entries?from=1&limit=2", &carol).await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["index"], 1);
    let text = data[0]["entry"].as_str().unwrap();
    assert_eq!(
        gw.app.store.audit_entry(1).await.unwrap().as_deref(),
        Some(text)
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_still_gets_its_outcome_entry() {
    use http_body_util::{BodyExt, Full};

    let up = MockUpstream::start(Behavior {
        endless: true,
        chunk_delay: std::time::Duration::from_millis(20),
        ..Behavior::default()
    })
    .await
    .unwrap();
    let gw = Gateway::start(&backend("u", &up.base_url(), "SECRET", "USA", "[\"m\"]")).await;
    let key = gw.user("alice", "t1", "SECRET", "USA").await;
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let req = http::Request::post(gw.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .header("x-request-id", "leaver")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
        .unwrap();
    let resp = gw.client.request(req).await.unwrap();
    let decision = index(resp.headers());
    let mut stream = resp.into_body();
    let _ = stream.frame().await.unwrap().unwrap();
    drop(stream);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let outcome = loop {
        let found = all_entries(&gw)
            .await
            .into_iter()
            .find(|(_, _, r)| r.request_id == "leaver" && r.phase == Some(Phase::Outcome));
        if let Some((i, _, r)) = found {
            assert!(i > decision);
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "no outcome entry");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!((outcome.status, outcome.error), (499, None));
    assert!(outcome.output_hmac.is_some(), "what was sent is digested");
    gw.stop().await;
}

async fn exec(url: &str, sql: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    sqlx::query(sql).execute(&pool).await.unwrap();
    pool.close().await;
}
