//! Backends that speak the OpenAI API over HTTP (`kind = "openai"`): OpenAI itself in a
//! government region, or any compatible server.
//!
//! The request's exact bytes are sent (only `model` is rewritten when the backend knows the
//! model by another name), so fields Enclave does not model pass through. Answers are read into
//! typed values that keep the backend's bytes: a whole completion is read (bounded) and
//! parsed; a stream is read event by event with [`SseParser`] and each event forwarded as it
//! arrived. Plain-HTTP upstreams use a thread-local keep-alive pool ([`crate::pool`]); HTTPS
//! upstreams a per-thread hyper-util client with rustls and the system roots.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use enclave_api::{
    ChatRequest, Chunk, Completion, Embeddings, EmbeddingsRequest, ErrorBody, SseParser,
};
use futures_core::Stream;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use crate::backend::{Backend, BackendError, BackendSpec, BoxFuture, Call, ChatAnswer};
use crate::pool::{self, SendError};

/// The HTTP client for HTTPS upstreams: HTTP/1.1, keep-alive pool, TCP_NODELAY, TLS by rustls
/// (ring) with the system's root certificates.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The largest whole answer read from a backend (a streamed answer is bounded per event).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// The largest error body read from a backend.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// Builds an HTTPS-capable client.
///
/// # Errors
///
/// When the system's root certificates cannot be read at all.
pub fn http_client(connect_timeout: Duration) -> Result<HttpClient, std::io::Error> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let provider = rustls::crypto::ring::default_provider();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider)?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(https))
}

/// An OpenAI-compatible backend.
pub struct OpenAiBackend {
    spec: BackendSpec,
    base_url: String,
    /// `Bearer <key>`, marked sensitive (hyper never logs it; `Debug` does not show it).
    authorization: Option<HeaderValue>,
    /// The API paths every request uses, with their URL and `Host` header prepared once:
    /// formatting and parsing them per request cost more than the rest of building it.
    endpoints: Vec<(&'static str, Endpoint)>,
    /// `base_url` starts with `http://`.
    plain_http: bool,
    /// This backend's key in the thread-local pools.
    id: u64,
    connect_timeout: Duration,
    /// The client used when a thread's own cannot be built.
    fallback_client: HttpClient,
}

/// A prepared API URL, or why the base URL and path do not make one.
type Endpoint = Result<(Uri, Option<HeaderValue>), String>;

/// The paths [`OpenAiBackend::new`] prepares.
const PREPARED_PATHS: [&str; 2] = ["/chat/completions", "/embeddings"];

pub(crate) static BACKEND_IDS: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// One HTTPS client per thread and backend, so a request and its upstream connection stay
    /// on the thread (and single-threaded runtime) that accepted it.
    static CLIENTS: std::cell::RefCell<Vec<(u64, HttpClient)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl fmt::Debug for OpenAiBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SECURITY: the upstream key never appears in a log line or a panic message.
        f.debug_struct("OpenAiBackend")
            .field("spec", &self.spec)
            .field("base_url", &self.base_url)
            .field(
                "api_key",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl OpenAiBackend {
    /// A backend at `base_url` (including `/v1`), sending `api_key` as a bearer token.
    ///
    /// # Errors
    ///
    /// When the API key cannot be sent as an HTTP header value.
    pub fn new(
        spec: BackendSpec,
        base_url: &str,
        api_key: Option<&str>,
        connect_timeout: Duration,
        fallback_client: HttpClient,
    ) -> Result<OpenAiBackend, String> {
        let authorization = match api_key {
            Some(k) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {k}")).map_err(|_| {
                    format!(
                        "backend {}: the API key has characters not allowed in a header",
                        spec.name
                    )
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let base_url = base_url.trim_end_matches('/').to_owned();
        let plain_http = base_url
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
        let mut backend = OpenAiBackend {
            spec,
            base_url,
            authorization,
            endpoints: Vec::new(),
            plain_http,
            id: BACKEND_IDS.fetch_add(1, Ordering::Relaxed),
            connect_timeout,
            fallback_client,
        };
        backend.endpoints = PREPARED_PATHS
            .iter()
            .map(|&path| (path, backend.prepare(path)))
            .collect();
        Ok(backend)
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn endpoint(&self, path: &str) -> Endpoint {
        match self.endpoints.iter().find(|(p, _)| *p == path) {
            Some((_, prepared)) => prepared.clone(),
            None => self.prepare(path),
        }
    }

    fn prepare(&self, path: &str) -> Endpoint {
        let uri = Uri::try_from(format!("{}{path}", self.base_url)).map_err(|e| e.to_string())?;
        let host = host_header(&uri);
        Ok((uri, host))
    }

    /// POSTs `body` to `path` and returns the response head, before `deadline`.
    async fn post(
        &self,
        path: &str,
        body: Bytes,
        deadline: Instant,
    ) -> Result<Response<Incoming>, BackendError> {
        let (uri, host) = self.endpoint(path).map_err(|e| BackendError::NotSent {
            reason: format!("invalid upstream URL: {e}"),
            overloaded: false,
        })?;
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        let headers = req.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        if let Some(auth) = &self.authorization {
            headers.insert(header::AUTHORIZATION, auth.clone());
        }
        if let Some(host) = host {
            headers.insert(header::HOST, host);
        }
        let attempt = async {
            if self.plain_http {
                pool::send((self.id, 0), req, self.connect_timeout).await
            } else {
                self.thread_client()
                    .request(req)
                    .await
                    .map_err(SendError::from)
            }
        };
        let resp = match tokio::time::timeout_at(deadline, attempt).await {
            Err(_) => return Err(BackendError::Deadline),
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) if e.is_connect() => {
                return Err(BackendError::NotSent {
                    reason: format!("cannot connect: {}", error_chain(&e)),
                    overloaded: false,
                });
            }
            // SECURITY: the request may have reached the backend; it is never sent again.
            Ok(Err(e)) => {
                return Err(BackendError::Failed {
                    reason: error_chain(&e),
                });
            }
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        Err(refusal(resp, deadline).await)
    }

    /// This thread's client for this backend (made on first use; the shared one if that
    /// fails).
    fn thread_client(&self) -> HttpClient {
        thread_client(self.id, self.connect_timeout, &self.fallback_client)
    }
}

/// This thread's HTTPS client for backend `id` (made on first use; `fallback` if that fails).
pub(crate) fn thread_client(
    id: u64,
    connect_timeout: Duration,
    fallback: &HttpClient,
) -> HttpClient {
    CLIENTS.with(|cell| {
        let mut clients = cell.borrow_mut();
        if let Some((_, c)) = clients.iter().find(|(i, _)| *i == id) {
            return c.clone();
        }
        let c = http_client(connect_timeout).unwrap_or_else(|_| fallback.clone());
        clients.push((id, c.clone()));
        c
    })
}

impl Backend for OpenAiBackend {
    fn spec(&self) -> &BackendSpec {
        &self.spec
    }

    fn kind(&self) -> &'static str {
        "openai"
    }

    fn describe(&self) -> String {
        format!("openai at {}", self.base_url)
    }

    fn chat<'a>(
        &'a self,
        req: &'a ChatRequest,
        model: &'a str,
        call: &'a Call,
    ) -> BoxFuture<'a, Result<ChatAnswer, BackendError>> {
        Box::pin(async move {
            let resp = self
                .post("/chat/completions", req.body_for(model), call.deadline)
                .await?;
            let event_stream = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.starts_with("text/event-stream"));
            if event_stream {
                return Ok(ChatAnswer::Stream(Box::pin(EventStream::new(
                    resp.into_body(),
                ))));
            }
            let body = read_bounded(resp.into_body(), MAX_ANSWER_BYTES, call.deadline).await?;
            let completion = Completion::parse(body).map_err(|e| BackendError::Failed {
                reason: e.to_string(),
            })?;
            Ok(ChatAnswer::Whole(completion))
        })
    }

    fn embed<'a>(
        &'a self,
        req: &'a EmbeddingsRequest,
        model: &'a str,
        call: &'a Call,
    ) -> BoxFuture<'a, Result<Embeddings, BackendError>> {
        Box::pin(async move {
            let resp = self
                .post("/embeddings", req.body_for(model), call.deadline)
                .await?;
            let body = read_bounded(resp.into_body(), MAX_ANSWER_BYTES, call.deadline).await?;
            Embeddings::parse(&req.model, body).map_err(|e| BackendError::Failed {
                reason: e.to_string(),
            })
        })
    }
}

/// What a non-2xx answer means for the request.
async fn refusal(resp: Response<Incoming>, deadline: Instant) -> BackendError {
    let status = resp.status();
    if status == StatusCode::TOO_MANY_REQUESTS {
        return BackendError::Throttled {
            retry_after: retry_after(&resp),
        };
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return BackendError::Credentials {
            status: status.as_u16(),
        };
    }
    if status.is_server_error() || !status.is_client_error() {
        // SECURITY: a 5xx may come after the work ran (and was billed, or acted on): never
        // re-sent, to this backend or another.
        return BackendError::Failed {
            reason: format!("answered {status}"),
        };
    }
    let body = read_bounded(resp.into_body(), MAX_ERROR_BYTES, deadline)
        .await
        .unwrap_or_default();
    let mut error = ErrorBody::parse(&body);
    if error.message.is_empty() {
        error.message = format!("The model backend refused the request ({status}).");
    }
    BackendError::Rejected {
        status: status.as_u16(),
        body: error,
    }
}

/// Reads a whole body of at most `max` bytes before `deadline`.
pub(crate) async fn read_bounded(
    mut body: Incoming,
    max: usize,
    deadline: Instant,
) -> Result<Bytes, BackendError> {
    let mut out = bytes::BytesMut::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BackendError::Deadline),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(BackendError::Failed {
                    reason: format!("reading the answer: {}", error_chain(&e)),
                });
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > max {
                return Err(BackendError::Failed {
                    reason: format!("the answer is larger than {max} bytes"),
                });
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

/// A backend's event stream read as typed chunks; each keeps its event's exact bytes.
struct EventStream {
    body: Incoming,
    parser: SseParser,
    /// `[DONE]` arrived.
    done: bool,
    /// A chunk with a finish reason arrived (a stream that then ends without `[DONE]` is
    /// accepted as complete).
    finished: bool,
    /// Nothing more will be yielded.
    over: bool,
}

impl EventStream {
    fn new(body: Incoming) -> EventStream {
        EventStream {
            body,
            parser: SseParser::new(enclave_api::sse::MAX_EVENT_BYTES),
            done: false,
            finished: false,
            over: false,
        }
    }

    fn fail(&mut self, reason: String) -> Poll<Option<Result<Chunk, BackendError>>> {
        self.over = true;
        Poll::Ready(Some(Err(BackendError::Failed { reason })))
    }
}

impl Stream for EventStream {
    type Item = Result<Chunk, BackendError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.over {
                return Poll::Ready(None);
            }
            match this.parser.next_event() {
                Err(e) => return this.fail(e.to_string()),
                Ok(Some(event)) => {
                    if this.done {
                        continue; // nothing is read after [DONE]
                    }
                    let data = event.data.trim();
                    if data == "[DONE]" {
                        this.done = true;
                        continue;
                    }
                    if let Some(error) = ErrorBody::from_event(data) {
                        let code = error.code.unwrap_or_default();
                        return this.fail(format!("the backend failed mid-stream ({code})"));
                    }
                    match Chunk::parse(data, Some(event.raw)) {
                        Ok(chunk) => {
                            if chunk.deltas.iter().any(|d| d.finish_reason.is_some()) {
                                this.finished = true;
                            }
                            return Poll::Ready(Some(Ok(chunk)));
                        }
                        Err(e) => return this.fail(e.to_string()),
                    }
                }
                Ok(None) => {}
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data()
                        && let Err(e) = this.parser.push(&data)
                    {
                        return this.fail(e.to_string());
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    return this.fail(format!("reading the stream: {}", error_chain(&e)));
                }
                Poll::Ready(None) => {
                    if let Err(e) = this.parser.finish() {
                        return this.fail(e.to_string());
                    }
                    if !this.done && !this.finished {
                        return this.fail("the stream ended before its last chunk".to_owned());
                    }
                    this.over = true;
                    return Poll::Ready(None);
                }
            }
        }
    }
}

/// The `Host` header hyper-util's client would add for `uri`: the host, with the port unless it
/// is the scheme's default. (Sending it ourselves spares the client formatting it per request;
/// the client leaves a `Host` header it is given alone.)
pub(crate) fn host_header(uri: &Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let secure = matches!(uri.scheme_str(), Some("https" | "wss"));
    match uri.port() {
        Some(port) if !matches!((port.as_u16(), secure), (443, true) | (80, false)) => {
            HeaderValue::from_str(&format!("{host}:{port}")).ok()
        }
        _ => HeaderValue::from_str(host).ok(),
    }
}

pub(crate) fn retry_after<B>(resp: &Response<B>) -> Option<Duration> {
    let v = resp.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(base_url: &str) -> OpenAiBackend {
        OpenAiBackend::new(
            BackendSpec {
                name: "b".to_owned(),
                models: Vec::new(),
                accreditation: enclave_label::Accreditation::new(
                    enclave_label::Label::unclassified(),
                    [],
                ),
                priority: 0,
                weight: 1,
            },
            base_url,
            Some("sk-planted-secret"),
            Duration::from_secs(1),
            http_client(Duration::from_secs(1)).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn prepared_endpoints_equal_parsing_the_url_each_time() {
        for (base, host) in [
            ("http://127.0.0.1:8080/v1", Some("127.0.0.1:8080")),
            ("http://example.com:80/v1", Some("example.com")),
            ("https://api.example.com/v1", Some("api.example.com")),
            ("https://api.example.com:443/v1", Some("api.example.com")),
            ("https://api.example.com:8443", Some("api.example.com:8443")),
            ("http://[::1]:9000/v1/", Some("[::1]:9000")),
        ] {
            let u = backend(base);
            for path in ["/chat/completions", "/embeddings", "/other"] {
                let (uri, h) = u.endpoint(path).unwrap();
                let expected = format!("{}{path}", base.trim_end_matches('/'));
                assert_eq!(uri, Uri::try_from(expected).unwrap(), "{base}{path}");
                assert_eq!(h.as_ref().and_then(|h| h.to_str().ok()), host, "{base}");
            }
        }
        assert!(
            backend("http://exa mple/v1")
                .endpoint("/chat/completions")
                .is_err()
        );
    }

    #[test]
    fn the_api_key_never_shows_in_debug() {
        let b = backend("https://api.example.com/v1");
        let text = format!("{b:?}");
        assert!(!text.contains("sk-planted-secret"), "{text}");
        assert!(text.contains("<redacted>"));
    }
}
