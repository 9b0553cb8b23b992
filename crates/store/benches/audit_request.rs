//! The audit stage's CPU per gateway request, without I/O: what `stage::audit` does (derive the
//! tenant's digest key, HMAC the request body and the answer, build the entry) and what the
//! writer does per entry before the database (encode with its index, hash the leaf).
//!
//! `cargo bench -p enclave-store --bench audit_request`

#![allow(
    clippy::unwrap_used,
    missing_docs,
    reason = "a benchmark: broken machinery stops it"
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use enclave_audit::{
    AuditEntry, Decision, Event, KeyedDigest, RequestEvent, Timestamp, TokenCounts, hash_leaf,
};
use enclave_store::install::MasterKey;
use ring::hmac;

/// A chat request body and answer of about 1 KiB each.
fn body(tag: &str) -> Vec<u8> {
    let mut b =
        format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{tag} "#).into_bytes();
    b.resize(1024 - 4, b'x');
    b.extend_from_slice(b"\"}]}");
    b
}

/// As `stage::audit` turns a tag into a digest (table hex, one allocation).
fn digest(tag: hmac::Tag) -> KeyedDigest {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for b in tag.as_ref() {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    hex.parse().unwrap()
}

/// The request event the stage builds (strings copied out of the context, as it does).
fn event(prompt: KeyedDigest, output: KeyedDigest) -> RequestEvent {
    let decisions = [
        ("authenticate", "allow", "api_key"),
        ("label", "allow", "within_session"),
        ("route", "allow", "accredited_backend"),
    ];
    RequestEvent {
        auth_method: Some("api_key".to_owned()),
        backend: Some("gov-secret".to_owned()),
        content_label: Some("UNCLASSIFIED".to_owned()),
        decisions: decisions
            .iter()
            .map(|(stage, outcome, code)| Decision {
                code: Some((*code).to_owned()),
                outcome: (*outcome).to_owned(),
                stage: (*stage).to_owned(),
            })
            .collect(),
        error: None,
        latency_ms: 183,
        model: Some("gpt-4o".to_owned()),
        output_hmac: Some(output),
        phase: None,
        principal: Some("alice".to_owned()),
        prompt_hmac: Some(prompt),
        request_id: "req_1f2e_3c4d".to_owned(),
        route: "chat_completions".to_owned(),
        session_label: Some("SECRET//NOFORN".to_owned()),
        status: 200,
        tenant: Some("agency-a".to_owned()),
        tokens: Some(TokenCounts {
            input: 412,
            output: 96,
        }),
    }
}

fn bench(c: &mut Criterion) {
    let keys = MasterKey::from_bytes([9; 32]).audit_digest_keys();
    let request = body("question");
    let answer = body("answer");
    let time = Timestamp::from_unix_millis(1_795_512_600_125).unwrap();
    let mut group = c.benchmark_group("audit_per_request");
    group.throughput(Throughput::Elements(1));
    group.bench_function("digests (tenant key, 1 KiB prompt, 1 KiB answer)", |b| {
        b.iter(|| {
            let key = hmac::Key::new(hmac::HMAC_SHA256, &keys.tenant_key(black_box("agency-a")));
            let p = digest(hmac::sign(&key, black_box(&request)));
            let mut ctx = hmac::Context::with_key(&key);
            ctx.update(black_box(&answer));
            (p, digest(ctx.sign()))
        });
    });
    let prompt = KeyedDigest::compute(b"k", &request);
    let output = KeyedDigest::compute(b"k", &answer);
    group.bench_function("build, encode and hash one entry", |b| {
        b.iter(|| {
            let entry = AuditEntry {
                index: black_box(123_456),
                time,
                event: Event::Request(event(prompt.clone(), output.clone())),
            };
            let bytes = entry.encode().unwrap();
            hash_leaf(&bytes)
        });
    });
    group.bench_function("all of it", |b| {
        b.iter(|| {
            let key = hmac::Key::new(hmac::HMAC_SHA256, &keys.tenant_key(black_box("agency-a")));
            let p = digest(hmac::sign(&key, black_box(&request)));
            let mut ctx = hmac::Context::with_key(&key);
            ctx.update(black_box(&answer));
            let entry = AuditEntry {
                index: black_box(123_456),
                time,
                event: Event::Request(event(p, digest(ctx.sign()))),
            };
            let bytes = entry.encode().unwrap();
            hash_leaf(&bytes)
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
