//! The edges of the request pipeline, attacked over real sockets (issue 16): content Enclave
//! cannot inspect, labels beyond the clearance, ambiguous requests, oversize and slow bodies,
//! readers that never read, connection floods, cleartext upstreams, the metrics endpoint,
//! token charging and re-sending a request that may have run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail on broken machinery"
)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Gateway, backend, code};
use enclave_gateway::config::Config;
use enclave_test_support::{Behavior, MockUpstream};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn mock() -> MockUpstream {
    MockUpstream::start(Behavior::default()).await.unwrap()
}

fn chat_body(content: Value) -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": content}]})
}

/// Reads one HTTP/1.1 response from a raw socket: status, head and body (by Content-Length,
/// or to the end of the stream).
async fn read_response(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> (u16, String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut chunk))
            .await
            .expect("a response within 20 s")
            .expect("the connection stays readable");
        assert!(
            n > 0,
            "the connection closed before a response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head[9..12].parse().unwrap();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(usize::MAX);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        match tokio::time::timeout(Duration::from_secs(20), stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => body.extend_from_slice(&chunk[..n]),
            Ok(Err(_)) => break,
        }
    }
    (status, head, body)
}

fn post_head(addr: SocketAddr, key: &str, extra: &str, len: usize) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn content_enclave_cannot_inspect_is_refused_unless_the_route_allows_it() {
    let up = mock().await;
    let gw = Gateway::start(&backend("u", &up.base_url(), "SECRET", "USA", "[\"m\"]")).await;
    let key = gw.user("alice", "t1", "SECRET", "USA").await;
    let image = json!([
        {"type": "text", "text": "what is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    ]);
    for (content, param) in [
        (image.clone(), "messages[0].content[1].type"),
        (
            json!([{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]),
            "messages[0].content[0].type",
        ),
        (
            json!([{"type": "file", "file": {"file_data": "JVBERi0=", "filename": "x.pdf"}}]),
            "messages[0].content[0].type",
        ),
        (
            json!([{"type": "hologram", "data": "?"}]),
            "messages[0].content[0].type",
        ),
    ] {
        let (s, _, v) = gw
            .post(
                "/v1/chat/completions",
                &key,
                Some("SECRET"),
                &chat_body(content),
            )
            .await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::BAD_REQUEST, "unsupported_content"),
            "{v}"
        );
        assert_eq!(v["error"]["param"], param);
    }
    // Token arrays to embeddings cannot be scanned either.
    for input in [json!([1, 2, 3]), json!([[1, 2], [3]])] {
        let (s, _, v) = gw
            .post(
                "/v1/embeddings",
                &key,
                None,
                &json!({"model": "m", "input": input}),
            )
            .await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::BAD_REQUEST, "unsupported_content"),
            "{v}"
        );
    }
    assert_eq!(up.requests(), 0, "nothing uninspected was sent");
    gw.stop().await;

    // An operator may allow images on chat; the request then carries its session label, and
    // its text parts are still scanned.
    let cfg = format!(
        "{}[policy.chat_completions]\nallow_parts = [\"image_url\"]\n",
        backend("u", &up.base_url(), "SECRET", "USA", "[\"m\"]")
    );
    let gw = Gateway::start(&cfg).await;
    let key = gw.user("alice", "t1", "SECRET", "USA").await;
    let (s, h, v) = gw
        .post(
            "/v1/chat/completions",
            &key,
            Some("SECRET"),
            &chat_body(image),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(h["x-enclave-classification"], "SECRET");
    let marked = json!([
        {"type": "text", "text": "(S) the plan"},
        {"type": "image_url", "image_url": {"url": "https://example.org/a.png"}}
    ]);
    let (s, _, v) = gw
        .post("/v1/chat/completions", &key, None, &chat_body(marked))
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::FORBIDDEN, "spillage_detected"),
        "{v}"
    );
    assert_eq!(up.requests(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn content_beyond_the_callers_clearance_is_never_sent() {
    // A NOFORN-accredited, U.S.-operated backend: the kind of place the joined label routes to.
    let up = mock().await;
    let gw = Gateway::start(&backend(
        "us",
        &up.base_url(),
        "SECRET//NOFORN",
        "USA",
        "[\"m\"]",
    ))
    .await;
    let gbr = gw.user("nigel", "t1", "SECRET", "GBR").await;
    // The session itself is within the clearance and releasable to GBR...
    let (s, _, v) = gw
        .chat(&gbr, Some("SECRET//REL TO USA, GBR"), "m", "hello")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // ...but pasted NOFORN text makes the request NOFORN, which a GBR national may not hold.
    let (s, _, v) = gw
        .chat(
            &gbr,
            Some("SECRET//REL TO USA, GBR"),
            "m",
            "(S//NF) the source is...",
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::FORBIDDEN, "classification_exceeds_clearance"),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("NOFORN"),
        "{v}"
    );
    // A compartment the caller is not read into, inside the session's level: also refused.
    let us = gw.user("alice", "t1", "SECRET", "USA").await;
    let (s, _, v) = gw
        .chat(&us, Some("SECRET"), "m", "(S//HCS) the source")
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(up.requests(), 1, "only the clean request was sent");
    gw.stop().await;
}

#[tokio::test]
async fn ambiguous_requests_are_refused_naming_the_field() {
    let up = mock().await;
    let gw = Gateway::start(&backend("u", &up.base_url(), "SECRET", "USA", "[\"m\"]")).await;
    let key = gw.user("alice", "t1", "SECRET", "USA").await;
    let body = Bytes::from(serde_json::to_vec(&chat_body(json!("hi"))).unwrap());
    // Two session headers.
    let (s, _, b) = gw
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&key),
            &[
                ("x-enclave-classification", "UNCLASSIFIED"),
                ("x-enclave-classification", "SECRET"),
            ],
            Some(body.clone()),
        )
        .await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_request"),
        "{v}"
    );
    assert_eq!(v["error"]["param"], "X-Enclave-Classification");
    // Two credentials.
    let (s, _, b) = gw
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&key),
            &[("authorization", "Bearer enk_other")],
            Some(body.clone()),
        )
        .await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_request"),
        "{v}"
    );
    assert_eq!(v["error"]["param"], "Authorization");
    // A duplicate JSON key (an upstream could read the other `model`).
    let dup = br#"{"model":"m","model":"(S) hidden","messages":[{"role":"user","content":"hi"}]}"#;
    let (s, _, b) = gw
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&key),
            &[],
            Some(Bytes::from_static(dup)),
        )
        .await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_json"),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("duplicate key `model`"),
        "{v}"
    );
    // Wrong types, each named.
    for (body, param) in [
        (json!({"model": "m", "messages": "hi"}), "messages"),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}),
            "stream",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": {"text": "hi"}}]}),
            "messages[0].content",
        ),
        (
            json!({"model": ["m"], "messages": [{"role": "user", "content": "hi"}]}),
            "model",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "10"}),
            "max_tokens",
        ),
    ] {
        let (s, _, v) = gw.post("/v1/chat/completions", &key, None, &body).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{body}: {v}"
        );
        assert_eq!(v["error"]["param"], param, "{v}");
    }
    assert_eq!(up.requests(), 0);
    gw.stop().await;
}

#[tokio::test]
async fn an_oversized_body_gets_its_413_before_the_connection_closes() {
    let up = mock().await;
    let cfg = format!(
        "{}[limits]\nmax_body_bytes = \"64KiB\"\n",
        backend("u", &up.base_url(), "SECRET", "USA", "[\"m\"]")
    );
    let gw = Gateway::start(&cfg).await;
    let key = gw.user("alice", "t1", "SECRET", "USA").await;
    // Declared too large, and sent anyway (as SDKs do): the client reads a 413, not a reset.
    let len = 4 * 1024 * 1024;
    let (mut r, mut w) = TcpStream::connect(gw.addr).await.unwrap().into_split();
    w.write_all(post_head(gw.addr, &key, "", len).as_bytes())
        .await
        .unwrap();
    let body = vec![b' '; len];
    let ((), (status, _, body)) = tokio::join!(
        async {
            // The server may stop reading once it has answered; that is fine.
            let _ = w.write_all(&body).await;
        },
        read_response(&mut r)
    );
    assert_eq!(status, 413);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(code(&v), "request_too_large");
    // Chunked, no length announced.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {key}\r\ntransfer-encoding: chunked\r\n\r\n",
        gw.addr
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 8192, " ".repeat(8192));
    let mut sent = 0;
    while sent < 200 * 1024 {
        if s.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
        sent += 8192;
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let (status, _, _) = read_response(&mut s).await;
    assert_eq!(status, 413);
    // `Expect: 100-continue`: refused from the header, the body never sent.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(post_head(gw.addr, &key, "expect: 100-continue\r\n", len).as_bytes())
        .await
        .unwrap();
    let (status, head, _) = read_response(&mut s).await;
    assert_eq!(status, 413, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_eq!(up.requests(), 0);
    gw.stop().await;
}

#[tokio::test]
async fn a_slow_body_holds_no_slot_and_is_cut_off_in_time() {
    let up = mock().await;
    let cfg = format!(
        "{}[limits]\nmax_concurrency = 1\nmax_queue = 0\nbody_read_timeout_ms = 600\n",
        backend("u", &up.base_url(), "SECRET", "USA", "[\"m\"]")
    );
    let gw = Gateway::start(&cfg).await;
    let key = gw.user("alice", "t1", "SECRET", "USA").await;
    let mut slow = TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(post_head(gw.addr, &key, "", 1000).as_bytes())
        .await
        .unwrap();
    slow.write_all(b"{\"model\"").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The only admission slot is free while the slow body trickles.
    let (s, _, v) = gw.chat(&key, Some("SECRET"), "m", "hello").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let started = Instant::now();
    let (status, head, body) = read_response(&mut slow).await;
    assert_eq!(status, 400, "{head}");
    assert!(String::from_utf8_lossy(&body).contains("did not arrive within"));
    assert!(started.elapsed() < Duration::from_secs(5));
    gw.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_loses_its_stream_and_frees_its_slot() {
    let up = MockUpstream::start(Behavior {
        endless: true,
        ..Behavior::default()
    })
    .await
    .unwrap();
    let cfg = format!(
        "{}[limits]\nmax_concurrency = 1\nmax_queue = 0\nidle_timeout_ms = 500\n",
        backend("u", &up.base_url(), "SECRET", "USA", "[\"m\"]")
    );
    let gw = Gateway::start(&cfg).await;
    let key = gw.user("alice", "t1", "SECRET", "USA").await;
    let body = serde_json::to_vec(&json!({"model": "m", "stream": true,
        "messages": [{"role": "user", "content": "go on forever"}]}))
    .unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(gw.addr).await.unwrap();
    stalled
        .write_all(post_head(gw.addr, &key, "", body.len()).as_bytes())
        .await
        .unwrap();
    stalled.write_all(&body).await.unwrap();
    // It never reads. While it holds the only slot, others are shed...
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (s, _, v) = gw.chat(&key, None, "m", "hello").await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        "{v}"
    );
    // ...until its connection is closed for making no progress, which frees the slot and
    // cancels the upstream stream.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (s, _, v) = gw.chat(&key, None, "m", "hello").await;
        if s == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled stream still holds the slot: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (started, cancelled, _) = up.streams();
    assert_eq!((started, cancelled), (1, 1));
    drop(stalled);
    gw.stop().await;
}

#[tokio::test]
async fn connections_are_capped_per_address_and_idle_ones_closed() {
    let up = mock().await;
    let cfg = format!(
        // The header timeout leaves the third connection ample time to arrive while the first
        // two still hold their places, also on a loaded machine (at 400 ms a slow run saw them
        // closed before the third connected, which then got no answer at all).
        "{}[limits]\nmax_connections_per_ip = 2\nheader_read_timeout_ms = 2000\n",
        backend("u", &up.base_url(), "SECRET", "USA", "[\"m\"]")
    );
    let gw = Gateway::start(&cfg).await;
    let a = TcpStream::connect(gw.addr).await.unwrap();
    let b = TcpStream::connect(gw.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut c = TcpStream::connect(gw.addr).await.unwrap();
    let (status, _, body) = read_response(&mut c).await;
    assert_eq!(status, 503);
    assert_eq!(code(&serde_json::from_slice(&body).unwrap()), "overloaded");
    // Connections that send nothing are closed after the header read timeout, which frees
    // their places.
    let mut a = a;
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), a.read(&mut byte)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "idle connection closed: {closed:?}"
    );
    drop(b);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (s, _, _) = gw.call(Method::GET, "/healthz", None, &[], None).await;
    assert_eq!(s, StatusCode::OK);
    gw.stop().await;
}

#[test]
fn cleartext_upstreams_are_refused_unless_allowed() {
    let cfg = |url: &str, extra: &str| {
        format!(
            "[[backends]]\nname = \"b\"\nkind = \"openai\"\nbase_url = \"{url}\"\nmodels = [\"m\"]\naccreditation = \"SECRET\"\n{extra}"
        )
    };
    for url in [
        "http://10.0.0.5:8000/v1",
        "http://api.example.gov/v1",
        "http://[2001:db8::1]/v1",
        "http://user@127.0.0.1.evil.example/v1",
    ] {
        let e = Config::parse(&cfg(url, "")).unwrap_err().to_string();
        assert!(
            e.contains("backends[0].base_url") && e.contains("allow_cleartext"),
            "{url}: {e}"
        );
        assert!(
            Config::parse(&cfg(url, "allow_cleartext = true\n")).is_ok(),
            "{url}"
        );
    }
    for url in [
        "http://127.0.0.1:9000/v1",
        "http://localhost:9000/v1",
        "http://[::1]:9000/v1",
        "https://api.example.gov/v1",
    ] {
        assert!(Config::parse(&cfg(url, "")).is_ok(), "{url}");
    }
}

#[tokio::test]
async fn metrics_can_require_an_operator_role() {
    let up = mock().await;
    let cfg = format!(
        "{}[metrics]\nrequire_auth = true\n",
        backend("u", &up.base_url(), "SECRET", "USA", "[\"m\"]")
    );
    let gw = Gateway::start(&cfg).await;
    let user = gw.user("alice", "t1", "SECRET", "USA").await;
    gw.app
        .store
        .add_principal(&enclave_store::NewPrincipal {
            name: "prometheus".into(),
            tenant: "ops".into(),
            clearance: "UNCLASSIFIED".into(),
            nationality: "USA".into(),
            role: "metrics".into(),
        })
        .await
        .unwrap();
    let scraper = gw.app.store.create_key("prometheus").await.unwrap().1;
    let (s, _, _) = gw.call(Method::GET, "/metrics", None, &[], None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = gw
        .call(Method::GET, "/metrics", Some(&user), &[], None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, b) = gw
        .call(Method::GET, "/metrics", Some(&scraper), &[], None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(String::from_utf8_lossy(&b).contains("enclave_"));
    // The scraper's key reads metrics and nothing of value.
    let (s, _, b) = gw
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&scraper),
            &[("x-enclave-classification", "UNCLASSIFIED")],
            Some(Bytes::from_static(
                br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            )),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&b).contains("permission_denied"));
    let (s, _, _) = gw.call(Method::GET, "/healthz", None, &[], None).await;
    assert_eq!(s, StatusCode::OK, "health stays open");
    gw.stop().await;
}

#[tokio::test]
async fn tokens_count_against_the_limit_while_the_stream_goes() {
    let up = MockUpstream::start(Behavior {
        chunks: 400,
        chunk_delay: Duration::from_millis(5),
        ..Behavior::default()
    })
    .await
    .unwrap();
    let cfg = format!(
        "{}[limits]\ntokens_per_minute = 100\n",
        backend("u", &up.base_url(), "SECRET", "USA", "[\"m\"]")
    );
    let gw = Gateway::start(&cfg).await;
    let key = gw.user("alice", "t1", "SECRET", "USA").await;
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let req = Request::post(gw.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
        .unwrap();
    let resp = gw.client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut stream = resp.into_body();
    // Read a good part of the answer (400 words of ~6 bytes, two tokens each by Enclave's
    // estimate: ~800 tokens in all, charged as the backend generates them, before the output
    // screen holds any back; each chunk is ~150 bytes of SSE), but not its end: the stream is
    // still open.
    let mut read = 0;
    while read < 15_000 {
        let f = stream.frame().await.unwrap().unwrap();
        read += f.into_data().unwrap().len();
    }
    let (s, h, v) = gw.chat(&key, None, "m", "hello").await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        "{v}"
    );
    assert!(h.contains_key("retry-after"));
    drop(stream);
    gw.stop().await;
}

#[tokio::test]
async fn a_request_that_may_have_run_is_never_sent_again() {
    let broken = MockUpstream::start(Behavior {
        fail_with: Some(500),
        ..Behavior::default()
    })
    .await
    .unwrap();
    let good = mock().await;
    let cfg = [
        backend("broken", &broken.base_url(), "SECRET", "USA", "[\"m\"]"),
        "priority = 1\n".to_owned(),
        backend("good", &good.base_url(), "SECRET", "USA", "[\"m\"]"),
        "priority = 2\n".to_owned(),
    ]
    .concat();
    let gw = Gateway::start(&cfg).await;
    let key = gw.user("alice", "t1", "SECRET", "USA").await;
    let (s, _, v) = gw
        .chat(&key, Some("SECRET"), "m", "transfer the funds")
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_GATEWAY, "upstream_error"),
        "{v}"
    );
    assert_eq!(broken.requests(), 1, "a 500 is not retried");
    assert_eq!(good.requests(), 0, "nor sent to another backend");
    gw.stop().await;

    // A backend that cannot be reached never got the request: fall back.
    let cfg = [
        backend("down", "http://127.0.0.1:9/v1", "SECRET", "USA", "[\"m\"]"),
        "priority = 1\n".to_owned(),
        backend("good", &good.base_url(), "SECRET", "USA", "[\"m\"]"),
        "priority = 2\n".to_owned(),
        "[limits]\nmax_retries = 1\n".to_owned(),
    ]
    .concat();
    let gw = Gateway::start(&cfg).await;
    let key = gw.user("alice", "t1", "SECRET", "USA").await;
    let (s, _, v) = gw.chat(&key, Some("SECRET"), "m", "hello").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(good.requests(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_is_recorded() {
    let up = MockUpstream::start(Behavior {
        endless: true,
        chunk_delay: Duration::from_millis(20),
        ..Behavior::default()
    })
    .await
    .unwrap();
    let gw = Gateway::start(&backend("u", &up.base_url(), "SECRET", "USA", "[\"m\"]")).await;
    let key = gw.user("alice", "t1", "SECRET", "USA").await;
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let req = Request::post(gw.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
        .unwrap();
    let resp = gw.client.request(req).await.unwrap();
    let mut stream = resp.into_body();
    let _ = stream.frame().await.unwrap().unwrap();
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, m) = gw.call(Method::GET, "/metrics", None, &[], None).await;
        let m = String::from_utf8_lossy(&m).into_owned();
        if m.contains("route=\"chat_completions\",status=\"499\"") {
            break;
        }
        assert!(Instant::now() < deadline, "no 499 recorded: {m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_marking_discussed_in_a_sentence_is_flagged_not_refused() {
    let up = mock().await;
    let gw = Gateway::start(&backend(
        "u",
        &up.base_url(),
        "UNCLASSIFIED",
        "USA",
        "[\"m\"]",
    ))
    .await;
    let key = gw.user("alice", "t1", "SECRET//NOFORN", "USA").await;
    let (s, h, v) = gw
        .chat(
            &key,
            None,
            "m",
            "What does SECRET//NOFORN mean on a document?",
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(h["x-enclave-classification"], "UNCLASSIFIED");
    for spilled in [
        "SECRET//NOFORN\n\nThe plan is set.",
        "• (S) The plan is set.",
        "\"(S) The plan is set.\"",
        "a) (S) The plan is set.",
        "What does SΕCRET//NOFORN mean?", // a Greek capital epsilon: disguised
    ] {
        let (s, _, v) = gw.chat(&key, None, "m", spilled).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::FORBIDDEN, "spillage_detected"),
            "{spilled:?}: {v}"
        );
    }
    assert_eq!(up.requests(), 1);
    let (_, _, m) = gw.call(Method::GET, "/metrics", None, &[], None).await;
    let m = String::from_utf8_lossy(&m).into_owned();
    // Counted twice: the prompt's mention (the label stage) and the answer that echoes it (the
    // output screen).
    assert!(
        m.contains("enclave_flags_total{flag=\"classified-marking\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("enclave_denials_total{code=\"spillage_detected\"} 5"),
        "{m}"
    );
    gw.stop().await;
}
