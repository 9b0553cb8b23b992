//! The request path: route, admit, authenticate, rate-limit, open the session, read the body,
//! check its markings for spillage, route to an accredited backend and stream the answer back.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use enclave_label::{Label, scan};
use enclave_models::{RouteError, UpstreamError};
use enclave_policy::{Denied, Session, check_content, open_session, open_session_at};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::{Instrument, Span, field};

use crate::app::App;
use crate::body::{self, Body, Observed, Observer};
use crate::error::ApiError;
use crate::identity::{Caller, PeerCert};

/// The request header that sets the session label.
pub const CLASSIFICATION_HEADER: &str = "x-enclave-classification";

/// [`CLASSIFICATION_HEADER`] as a header name: looking a header up by `&str` parses the name
/// on every call.
const CLASSIFICATION: HeaderName = HeaderName::from_static(CLASSIFICATION_HEADER);

/// The request id header, named once for the same reason.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(1);

/// Serves one request. Never fails: every problem becomes an OpenAI-style error response.
pub async fn handle(
    app: Arc<App>,
    peer: Arc<PeerCert>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let id = request_id(req.headers());
    let route = route_name(req.method(), req.uri().path());
    let span = tracing::info_span!(
        "request",
        id = %id,
        method = %req.method(),
        route,
        tenant = field::Empty,
        principal = field::Empty,
        auth = field::Empty,
        session = field::Empty,
        content = field::Empty,
        backend = field::Empty,
    );
    let mut outcome = Outcome {
        app: Arc::clone(&app),
        route,
        start,
        span: span.clone(),
        backend: String::new(),
        id: id.clone(),
    };
    let result = dispatch(&app, &peer, req, &mut outcome)
        .instrument(span.clone())
        .await;
    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            if e.status != StatusCode::NOT_FOUND || route != "other" {
                app.metrics.denial(e.code);
            }
            let status = e.status.as_u16();
            let _enter = span.enter();
            if e.status.is_server_error() {
                tracing::warn!(status, code = e.code, "request refused");
            } else {
                tracing::info!(status, code = e.code, "request refused");
            }
            outcome.finish(status, false);
            let mut r = e.into_response();
            r.headers_mut()
                .insert(CLASSIFICATION, HeaderValue::from_static("UNCLASSIFIED"));
            r
        }
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    if !resp.headers().contains_key(CLASSIFICATION) {
        resp.headers_mut()
            .insert(CLASSIFICATION, HeaderValue::from_static("UNCLASSIFIED"));
    }
    Ok(resp)
}

/// What to record when a response ends (for streamed bodies, when the stream ends).
struct Outcome {
    app: Arc<App>,
    route: &'static str,
    start: Instant,
    span: Span,
    backend: String,
    id: String,
}

impl Outcome {
    fn finish(&self, status: u16, log: bool) {
        let elapsed = self.start.elapsed();
        self.app
            .metrics
            .request(self.route, status, &self.backend, elapsed);
        if log {
            let _enter = self.span.enter();
            tracing::info!(
                status,
                ms = elapsed.as_secs_f64() * 1000.0,
                "request finished"
            );
        }
    }
}

fn route_name(method: &Method, path: &str) -> &'static str {
    match (method, path) {
        (_, "/healthz") => "healthz",
        (_, "/readyz") => "readyz",
        (_, "/metrics") => "metrics",
        (_, "/v1/models") => "models",
        (_, "/v1/chat/completions") => "chat_completions",
        (_, "/v1/embeddings") => "embeddings",
        _ => "other",
    }
}

fn request_id(headers: &HeaderMap) -> String {
    if let Some(v) = headers.get(REQUEST_ID).and_then(|v| v.to_str().ok())
        && !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return v.to_owned();
    }
    let n = REQUEST_SEQ.fetch_add(1, Ordering::Relaxed);
    // `req_<pid>_<n>` in hex, written by hand: `format!` cost more than the rest of this.
    let mut id = String::with_capacity(4 + 8 + 1 + 16);
    id.push_str("req_");
    push_hex(&mut id, u64::from(process_id()));
    id.push('_');
    push_hex(&mut id, n);
    id
}

/// This process's id, asked of the kernel once: `std::process::id` is a system call each time.
fn process_id() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// Appends `n` in lower-case hex without leading zeros, as `{:x}` writes it.
fn push_hex(out: &mut String, n: u64) {
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        let d = ((n >> (i * 4)) & 0xf) as u8;
        out.push(char::from(if d < 10 { b'0' + d } else { b'a' + d - 10 }));
    }
}

async fn dispatch(
    app: &Arc<App>,
    peer: &PeerCert,
    req: Request<hyper::body::Incoming>,
    outcome: &mut Outcome,
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    let allowed: &[Method] = match outcome.route {
        "healthz" | "readyz" | "metrics" | "models" => &[Method::GET],
        "chat_completions" | "embeddings" => &[Method::POST],
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "No route {} {}: see the OpenAI API reference for the routes Enclave serves.",
                    method,
                    req.uri().path()
                ),
            ));
        }
    };
    if !allowed.contains(&method) {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} accepts {} only.", req.uri().path(), allowed[0]),
        ));
    }
    match outcome.route {
        "healthz" => {
            outcome.finish(200, false);
            return Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({"status": "ok"}),
                None,
            ));
        }
        "readyz" => {
            return match app.store.ping().await {
                Ok(()) => {
                    outcome.finish(200, false);
                    Ok(json_response(
                        StatusCode::OK,
                        &serde_json::json!({"status": "ready"}),
                        None,
                    ))
                }
                Err(e) => {
                    tracing::error!(error = %e, "store not ready");
                    Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "storage_unavailable",
                        "The database is not reachable.",
                    ))
                }
            };
        }
        "metrics" => {
            outcome.finish(200, false);
            let mut r = Response::new(body::full(Bytes::from(app.metrics.render())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            return Ok(r);
        }
        _ => {}
    }

    let permit = app.admission.enter().await?;
    let (parts, incoming) = req.into_parts();
    let caller = app.auth.authenticate(&parts.headers, peer).await?;
    let span = &outcome.span;
    span.record("tenant", caller.principal.tenant.as_str());
    span.record("principal", caller.principal.id.as_str());
    span.record("auth", caller.method);
    app.limiter.admit(&caller.rate_key)?;
    let session = open(&caller, &parts.headers)?;
    span.record("session", field::display(session.label()));

    if outcome.route == "models" {
        let data: Vec<Value> = app
            .router
            .models_for(session.label())
            .into_iter()
            .map(|m| serde_json::json!({"id": m.id, "object": "model", "created": 0, "owned_by": m.backend}))
            .collect();
        outcome.finish(200, true);
        return Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"object": "list", "data": data}),
            Some(session.label()),
        ));
    }

    let raw = read_body(app, &parts.headers, incoming).await?;
    let summary = crate::request::summarize(&raw).map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            ApiError::bad_request(
                "invalid_request",
                format!("The request body must be a JSON object: {e}."),
            )
        } else {
            ApiError::bad_request(
                "invalid_json",
                format!("The request body is not valid JSON: {e}."),
            )
        }
    })?;
    let model = match summary.model {
        Some(m) if !m.is_empty() => m,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "`model` is required and must be a string.",
            )
            .param("model"));
        }
    };
    let stream = summary.stream;
    // The JSON tree, only for the routes that need it (aliases, the local model).
    let tree = || -> Result<Value, ApiError> {
        serde_json::from_slice(&raw).map_err(|e| {
            ApiError::bad_request(
                "invalid_json",
                format!("The request body is not valid JSON: {e}."),
            )
        })
    };

    // The content label: every marking in every string of the request, rolled up.
    let text = summary.text;
    let found = scan(&text);
    let label = match check_content(&session, &found) {
        Ok(label) => label,
        Err(denied) => {
            if let Denied::SpillageDetected {
                session: s,
                content,
                disguised,
            } = &denied
            {
                tracing::warn!(
                    principal = %caller.principal.id,
                    tenant = %caller.principal.tenant,
                    session = %s,
                    content = %content,
                    disguised,
                    "spillage detected: request content is marked above its session label"
                );
            }
            return Err(denied_error(&denied));
        }
    };
    span.record("content", field::display(&found.label));

    let candidates = app.router.candidates(&model, &label).map_err(|e| match e {
        RouteError::UnknownModel(m) => ApiError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!("The model {m:?} is not served here; GET /v1/models lists the models you may use at your session label."),
        )
        .param("model"),
        RouteError::NotAccredited(d) => denied_error(&d),
    })?;

    let first = app.router.upstream(candidates[0]);
    if first.spec().local {
        let Some(engine) = app.local.as_ref() else {
            tracing::error!(
                backend = first.name(),
                "a local backend is configured but its engine is not loaded"
            );
            return Err(ApiError::internal());
        };
        let wanted = if outcome.route == "embeddings" {
            enclave_models::local::EMBED_MODEL
        } else {
            enclave_models::local::CHAT_MODEL
        };
        if first.upstream_model(&model) != Some(wanted) {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!(
                    "The model {model:?} does not serve {}.",
                    req_path(outcome.route)
                ),
            )
            .param("model"));
        }
        let backend = first.name().to_owned();
        span.record("backend", backend.as_str());
        outcome.backend.clone_from(&backend);
        let mut resp = if outcome.route == "embeddings" {
            crate::local_api::embeddings(engine, &model, &tree()?).await?
        } else {
            crate::local_api::chat(engine, &model, &tree()?, &outcome.id).await?
        };
        set_label(&mut resp, &label);
        let status = resp.status().as_u16();
        let body = std::mem::replace(resp.body_mut(), body::full(Bytes::new()));
        *resp.body_mut() = watch(
            app,
            outcome,
            backend,
            status,
            &caller,
            raw.len(),
            permit,
            body,
        );
        return Ok(resp);
    }

    let path = if outcome.route == "embeddings" {
        "/embeddings"
    } else {
        "/chat/completions"
    };
    let deadline = Instant::now() + app.config.limits.request_timeout;
    let sent = app
        .router
        .send(
            &candidates,
            &model,
            path,
            |upstream_model| {
                if upstream_model == model {
                    raw.clone()
                } else {
                    let mut v = tree().unwrap_or(Value::Null);
                    v["model"] = Value::String(upstream_model.to_owned());
                    Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
                }
            },
            deadline,
        )
        .await;
    let sent = match sent {
        Ok(s) => s,
        Err(e) => return Err(upstream_failed(app, &e)),
    };
    for failure in &sent.failed_attempts {
        let backend = failure.split(':').next().unwrap_or_default();
        app.metrics.upstream_error(backend);
        tracing::warn!(attempt = %failure, "upstream attempt failed; retried or fell back");
    }
    span.record("backend", sent.backend.as_str());
    outcome.backend.clone_from(&sent.backend);

    let status = sent.response.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        app.metrics.upstream_error(&sent.backend);
        tracing::error!(backend = %sent.backend, status = status.as_u16(), "the backend rejected Enclave's upstream credentials");
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            "The model backend rejected Enclave's credentials; the operator has been told (see the server log).",
        ));
    }
    let (up_parts, up_body) = sent.response.into_parts();
    let mut resp = Response::new(body::full(Bytes::new()));
    *resp.status_mut() = status;
    if let Some(ct) = up_parts.headers.get(header::CONTENT_TYPE) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
    }
    if stream {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    set_label(&mut resp, &label);
    *resp.body_mut() = watch(
        app,
        outcome,
        sent.backend,
        status.as_u16(),
        &caller,
        raw.len(),
        permit,
        up_body,
    );
    Ok(resp)
}

/// Wraps an answer's body so that its end records metrics, the log line and the token charge,
/// and releases the admission slot.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site per backend kind; a struct would only rename them"
)]
fn watch<B>(
    app: &Arc<App>,
    outcome: &Outcome,
    backend: String,
    status: u16,
    caller: &Arc<Caller>,
    request_bytes: usize,
    permit: OwnedSemaphorePermit,
    body: B,
) -> Body
where
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<crate::body::BodyError>,
{
    let watcher = Watcher {
        outcome: Outcome {
            app: Arc::clone(app),
            route: outcome.route,
            start: outcome.start,
            span: outcome.span.clone(),
            backend,
            id: outcome.id.clone(),
        },
        status,
        caller: Arc::clone(caller),
        request_bytes: request_bytes as u64,
        response_bytes: 0,
        tail: BytesMut::new(),
        _permit: permit,
    };
    Observed::new(body, watcher).boxed_unsync()
}

fn req_path(route: &str) -> &'static str {
    if route == "embeddings" {
        "/v1/embeddings"
    } else {
        "/v1/chat/completions"
    }
}

fn open(caller: &Caller, headers: &HeaderMap) -> Result<Session, ApiError> {
    let requested = match headers.get(CLASSIFICATION) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::bad_request(
                "invalid_marking",
                "X-Enclave-Classification must be a banner marking in ASCII, e.g. `SECRET//NOFORN`.",
            )
        })?),
    };
    let Some(text) = requested else {
        return open_session(&caller.principal, None).map_err(|d| denied_error(&d));
    };
    let label = parse_header(text).map_err(|e| denied_error(&Denied::InvalidMarking(e)))?;
    // SECURITY: only the parse is cached; the clearance check runs on every request.
    open_session_at(&caller.principal, label).map_err(|d| denied_error(&d))
}

/// The label a session header names, parsed once per distinct header text: clients send the
/// same few headers on every request. Parsing is a pure function of the text, so the cache
/// holds no caller's data; it is cleared when it grows past 1,024 entries.
fn parse_header(text: &str) -> Result<Label, enclave_label::MarkingError> {
    static CACHE: std::sync::LazyLock<
        std::sync::Mutex<
            std::collections::HashMap<String, Result<Label, enclave_label::MarkingError>>,
        >,
    > = std::sync::LazyLock::new(Default::default);
    if let Some(hit) = CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(text)
    {
        return hit.clone();
    }
    let parsed =
        enclave_label::parse_marking(text, enclave_label::Mode::Lenient, None).map(|m| m.label);
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if cache.len() >= 1024 {
        cache.clear();
    }
    cache.insert(text.to_owned(), parsed.clone());
    parsed
}

/// The API error for a policy denial.
pub fn denied_error(d: &Denied) -> ApiError {
    match d {
        Denied::InvalidMarking(e) => ApiError::bad_request(
            "invalid_marking",
            format!("X-Enclave-Classification is not a valid marking: {e}"),
        ),
        Denied::ClassificationExceedsClearance { requested, why } => ApiError::new(
            StatusCode::FORBIDDEN,
            "classification_exceeds_clearance",
            format!(
                "The session label {requested} exceeds your clearance ({}); ask for a session at or below your clearance.",
                denial_text(why)
            ),
        ),
        Denied::SpillageDetected {
            session, content, ..
        } => ApiError::new(
            StatusCode::FORBIDDEN,
            "spillage_detected",
            format!(
                "The request contains markings ({content}) above its session label ({session}). It was not sent anywhere. Report the spillage to your security officer; do not resend it at this label."
            ),
        ),
        Denied::NoAccreditedBackend { label } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_accredited_backend",
            format!(
                "No backend for this model is accredited for {label} (level, compartments and releasability to its operators). The request was not sent anywhere."
            ),
        ),
    }
}

/// Which part of a clearance a label exceeds, in words.
fn denial_text(why: &enclave_label::Denial) -> String {
    match why {
        enclave_label::Denial::Level => "its classification level is higher".to_owned(),
        enclave_label::Denial::Compartments(c) => format!(
            "it needs compartments you are not read into: {}",
            c.join(", ")
        ),
        enclave_label::Denial::Releasability => {
            "it is not releasable to your nationality".to_owned()
        }
    }
}

fn upstream_failed(app: &App, e: &UpstreamError) -> ApiError {
    for failure in e.attempts() {
        let backend = failure.split(':').next().unwrap_or_default();
        app.metrics.upstream_error(backend);
        tracing::warn!(attempt = %failure, "upstream attempt failed");
    }
    let what = match e {
        UpstreamError::Deadline(_) => "did not answer before the request deadline",
        UpstreamError::Exhausted(_) => "failed",
    };
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "upstream_error",
        format!(
            "Every accredited backend for this model {what} ({} attempts). Retry later; the operator's log has the details.",
            e.attempts().len()
        ),
    )
}

async fn read_body(
    app: &App,
    headers: &HeaderMap,
    incoming: hyper::body::Incoming,
) -> Result<Bytes, ApiError> {
    let max = app.config.limits.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("The request body is larger than this server's limit of {max} bytes."),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max as u64
    {
        return Err(too_large());
    }
    if incoming.size_hint().lower() > max as u64 {
        return Err(too_large());
    }
    match Limited::new(incoming, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::bad_request(
            "invalid_request",
            format!("Could not read the request body: {e}."),
        )),
    }
}

fn set_label(resp: &mut Response<Body>, label: &Label) {
    if let Some(v) = banner_header(label) {
        resp.headers_mut().insert(CLASSIFICATION, v);
    }
}

/// The `X-Enclave-Classification` value for a label, rendered once per distinct label on each
/// thread: answers carry the same few labels over and over. The banner is a pure function of
/// the label, so the cache holds no caller's data; it is cleared when it grows past 32
/// entries. `None` when the banner cannot be a header value.
fn banner_header(label: &Label) -> Option<HeaderValue> {
    // A short list compared by equality: hashing a label cost more than rendering half of it,
    // and a different label usually differs in its first fields.
    thread_local! {
        static BANNERS: std::cell::RefCell<Vec<(Label, Option<HeaderValue>)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    BANNERS.with(|cell| {
        let mut cache = cell.borrow_mut();
        if let Some((_, hit)) = cache.iter().find(|(l, _)| l == label) {
            return hit.clone();
        }
        let value = HeaderValue::from_str(&label.banner()).ok();
        if cache.len() >= 32 {
            cache.clear();
        }
        cache.push((label.clone(), value.clone()));
        value
    })
}

fn json_response(status: StatusCode, v: &Value, label: Option<&Label>) -> Response<Body> {
    let mut r = Response::new(body::full(Bytes::from(
        serde_json::to_vec(v).unwrap_or_default(),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    match label {
        Some(l) => set_label(&mut r, l),
        None => {
            r.headers_mut()
                .insert(CLASSIFICATION, HeaderValue::from_static("UNCLASSIFIED"));
        }
    }
    r
}

/// Watches a streamed answer: counts tokens for the rate limit, records metrics and the log
/// line when it ends, and holds the admission slot until then.
struct Watcher {
    outcome: Outcome,
    status: u16,
    caller: Arc<Caller>,
    request_bytes: u64,
    response_bytes: u64,
    tail: BytesMut,
    _permit: OwnedSemaphorePermit,
}

const TAIL: usize = 4096;

impl Observer for Watcher {
    fn frame(&mut self, data: &Bytes) {
        self.response_bytes += data.len() as u64;
        if self.outcome.app.limiter.enabled() {
            self.tail.extend_from_slice(data);
            if self.tail.len() > 2 * TAIL {
                let cut = self.tail.len() - TAIL;
                let _ = self.tail.split_to(cut);
            }
        }
    }

    fn end(&mut self, complete: bool) {
        if self.outcome.app.limiter.enabled() {
            let tokens =
                usage_total(&self.tail).unwrap_or((self.request_bytes + self.response_bytes) / 4);
            self.outcome
                .app
                .limiter
                .charge(&self.caller.rate_key, tokens);
        }
        let status = if complete { self.status } else { 499 };
        self.outcome.finish(status, true);
    }
}

/// The last `"total_tokens": N` in an answer's tail (JSON body or the final SSE chunk).
fn usage_total(tail: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(tail).ok().or_else(|| {
        (0..4).find_map(|skip| tail.get(skip..).and_then(|t| std::str::from_utf8(t).ok()))
    })?;
    let at = text.rfind("\"total_tokens\"")?;
    let rest = text[at + "\"total_tokens\"".len()..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_request_ids_read_as_formatted_hex() {
        for n in [
            0,
            1,
            9,
            10,
            15,
            16,
            255,
            4096,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut s = String::new();
            push_hex(&mut s, n);
            assert_eq!(s, format!("{n:x}"));
        }
        let id = request_id(&HeaderMap::new());
        let pid = format!("req_{:x}_", std::process::id());
        assert!(id.starts_with(&pid), "{id}");
        assert!(u64::from_str_radix(&id[pid.len()..], 16).is_ok(), "{id}");
    }

    #[test]
    fn cached_banners_match_the_rendered_ones() {
        for text in [
            "SECRET",
            "SECRET//NOFORN",
            "TOP SECRET//SI//REL TO USA, GBR",
            "SECRET",
        ] {
            let label: Label = text.parse().unwrap();
            let expected = HeaderValue::from_str(&label.banner()).ok();
            assert_eq!(banner_header(&label), expected, "{text}");
            assert_eq!(banner_header(&label), expected, "{text} (cached)");
        }
    }

    #[test]
    fn usage_is_read_from_the_tail() {
        assert_eq!(
            usage_total(br#"{"usage":{"prompt_tokens":3,"total_tokens": 42}}"#),
            Some(42)
        );
        assert_eq!(usage_total(b"data: [DONE]"), None);
    }
}
