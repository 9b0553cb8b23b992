//! Test-only helpers: a scriptable mock of an OpenAI-compatible upstream.
//!
//! Mocks are for upstream model providers in tests only; nothing in Enclave's own request path
//! is mocked. The mock answers `POST /v1/chat/completions` (JSON or SSE), `POST /v1/embeddings`
//! and `GET /v1/models`, records what it received, and can be told to fail, rate-limit, stall
//! or stream slowly, so tests can check retries, fallback, streaming and cancellation.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// How the mock answers.
#[derive(Clone, Debug)]
pub struct Behavior {
    /// Answer this status (with an OpenAI-style error body) to every request, if set.
    pub fail_with: Option<u16>,
    /// Answer 500 to this many requests first, then succeed.
    pub fail_first: u64,
    /// Chunks in a streamed answer (one word each), before the final chunk.
    pub chunks: usize,
    /// Pause before each streamed chunk.
    pub chunk_delay: Duration,
    /// Stream forever (until the client goes away).
    pub endless: bool,
    /// Pause before answering at all.
    pub answer_delay: Duration,
    /// Stream the last message's text back in pieces of this many bytes (cut at character
    /// boundaries) instead of `chunks` numbered words.
    pub stream_echo: Option<usize>,
    /// Answer a whole (not streamed) chat request with this text instead of `echo: <last
    /// message>` (a canned answer, such as an extractor's JSON).
    pub reply: Option<String>,
}

impl Default for Behavior {
    fn default() -> Behavior {
        Behavior {
            fail_with: None,
            fail_first: 0,
            chunks: 3,
            chunk_delay: Duration::ZERO,
            endless: false,
            answer_delay: Duration::ZERO,
            stream_echo: None,
            reply: None,
        }
    }
}

/// A request the mock received.
#[derive(Clone, Debug)]
pub struct Received {
    /// Path.
    pub path: String,
    /// `Authorization` header, if any.
    pub authorization: Option<String>,
    /// Body as JSON (`Null` if it was not JSON).
    pub body: Value,
}

#[derive(Debug, Default)]
struct Shared {
    behavior: Mutex<Behavior>,
    received: Mutex<Vec<Received>>,
    requests: AtomicU64,
    streams_started: AtomicU64,
    streams_cancelled: AtomicU64,
    streams_completed: AtomicU64,
}

/// A running mock upstream on 127.0.0.1.
#[derive(Clone, Debug)]
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl MockUpstream {
    /// Starts a mock on an ephemeral loopback port.
    ///
    /// # Errors
    ///
    /// When it cannot bind.
    pub async fn start(behavior: Behavior) -> std::io::Result<MockUpstream> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), behavior).await
    }

    /// Starts a mock on `addr`.
    ///
    /// # Errors
    ///
    /// When it cannot bind.
    pub async fn start_on(addr: SocketAddr, behavior: Behavior) -> std::io::Result<MockUpstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            behavior: Mutex::new(behavior),
            ..Shared::default()
        });
        let s = Arc::clone(&shared);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(Arc::clone(&s), req));
                    let _ = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(MockUpstream { addr, shared })
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes how it answers from now on.
    pub fn set_behavior(&self, b: Behavior) {
        *lock(&self.shared.behavior) = b;
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
    }

    /// Requests received so far (including failed ones).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Streams started, cancelled by the client, and completed.
    pub fn streams(&self) -> (u64, u64, u64) {
        (
            self.shared.streams_started.load(Ordering::SeqCst),
            self.shared.streams_cancelled.load(Ordering::SeqCst),
            self.shared.streams_completed.load(Ordering::SeqCst),
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

type MockBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(
    s: Arc<Shared>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let n = s.requests.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_owned();
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    lock(&s.received).push(Received {
        path: path.clone(),
        authorization,
        body: body.clone(),
    });
    let b = lock(&s.behavior).clone();
    if !b.answer_delay.is_zero() {
        tokio::time::sleep(b.answer_delay).await;
    }
    if let Some(status) = b.fail_with {
        return Ok(error(status));
    }
    if n < b.fail_first {
        return Ok(error(500));
    }
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock")
        .to_owned();
    let resp = match path.as_str() {
        "/v1/models" => json_resp(
            &json!({"object": "list", "data": [{"id": "mock", "object": "model", "created": 0, "owned_by": "mock"}]}),
        ),
        "/v1/embeddings" => json_resp(&json!({
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5, 0.75]}],
            "model": model,
            "usage": {"prompt_tokens": 4, "total_tokens": 4}
        })),
        "/v1/chat/completions" => {
            let last = body
                .get("messages")
                .and_then(Value::as_array)
                .and_then(|m| m.last())
                .and_then(|m| m.get("content"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if body.get("stream") == Some(&Value::Bool(true)) {
                s.streams_started.fetch_add(1, Ordering::SeqCst);
                let usage = body
                    .pointer("/stream_options/include_usage")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let echo = b.stream_echo.map(|n| pieces(&last, n.max(1)));
                let stream = Sse {
                    echo,
                    shared: Arc::clone(&s),
                    model,
                    sent: 0,
                    chunks: b.stream_echo.map_or(b.chunks, |_| usize::MAX),
                    endless: b.endless,
                    usage,
                    delay: b.chunk_delay,
                    sleep: None,
                    done: false,
                };
                let mut r = Response::new(stream.boxed());
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/event-stream"),
                );
                r
            } else {
                json_resp(&json!({
                    "id": "chatcmpl-mock",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": b.reply.clone().unwrap_or_else(|| format!("echo: {last}"))}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
                }))
            }
        }
        _ => error(404),
    };
    Ok(resp)
}

fn json_resp(v: &Value) -> Response<MockBody> {
    let mut r = Response::new(
        http_body_util::Full::new(Bytes::from(serde_json::to_vec(v).unwrap_or_default())).boxed(),
    );
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: u16) -> Response<MockBody> {
    let mut r = json_resp(
        &json!({"error": {"message": "mock failure", "type": "server_error", "code": null, "param": null}}),
    );
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r
}

/// `text` cut into pieces of about `n` bytes, at character boundaries.
fn pieces(text: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        if cur.len() + c.len_utf8() > n && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A streamed chat answer; counts a cancellation when dropped before the end.
struct Sse {
    /// The pieces of an echoed answer (`Behavior::stream_echo`), sent instead of words.
    echo: Option<Vec<String>>,
    shared: Arc<Shared>,
    model: String,
    sent: usize,
    chunks: usize,
    endless: bool,
    usage: bool,
    delay: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    done: bool,
}

impl Body for Sse {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if !self.delay.is_zero() {
            let delay = self.delay;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        let i = self.sent;
        self.sent += 1;
        let piece = match &self.echo {
            Some(pieces) => pieces.get(i).cloned(),
            None => (self.endless || i < self.chunks).then(|| format!("word{i} ")),
        };
        let text = if let Some(piece) = piece {
            let chunk = json!({
                "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": self.model,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": piece}, "finish_reason": null}]
            });
            format!("data: {chunk}\n\n")
        } else {
            let mut last = json!({
                "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": self.model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]
            });
            if self.usage {
                let n = self.sent.saturating_sub(1);
                last["usage"] =
                    json!({"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n});
            }
            self.done = true;
            self.shared.streams_completed.fetch_add(1, Ordering::SeqCst);
            format!("data: {last}\n\ndata: [DONE]\n\n")
        };
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(text)))))
    }
}

impl Drop for Sse {
    fn drop(&mut self) {
        if !self.done {
            self.shared.streams_cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

use std::future::Future as _;
