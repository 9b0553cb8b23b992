//! Choosing accredited backends and sending to them with retries and fallback.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use enclave_label::Label;
use enclave_policy::{Denied, eligible};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::pool::{self, SendError};
use crate::upstream::{HttpClient, Upstream};

/// How hard to try.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Retries per backend after the first attempt (connect errors, 5xx, 429).
    pub max_retries: u32,
    /// First backoff; doubles per retry, with jitter.
    pub base_backoff: Duration,
    /// Longest single backoff (also caps an upstream's `Retry-After`).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_retries: 2,
            base_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// The backends configured, and how to reach them.
#[derive(Debug)]
pub struct Router {
    upstreams: Vec<Upstream>,
    client: HttpClient,
    connect_timeout: Duration,
    id: u64,
    policy: RetryPolicy,
    seed: AtomicU64,
}

static ROUTER_IDS: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// One connection pool per thread and router, so that a request and the upstream connection
    /// it uses stay on the thread (and single-threaded runtime) that accepted it.
    static CLIENTS: std::cell::RefCell<Vec<(u64, HttpClient)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A backend that may receive a request: its position in the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate(usize);

/// A model a caller may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    /// The model name clients send.
    pub id: String,
    /// The backend that serves it (the first eligible one).
    pub backend: String,
}

/// Why no backend was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// No configured backend serves the model at all.
    UnknownModel(String),
    /// Backends serve the model, but none is accredited for the label.
    NotAccredited(Denied),
}

/// Why sending failed after every retry and fallback.
#[derive(Debug)]
pub enum UpstreamError {
    /// The last failure, per backend tried: `backend: what happened`.
    Exhausted(Vec<String>),
    /// The deadline passed before any backend answered.
    Deadline(Vec<String>),
}

impl UpstreamError {
    /// The failures, one per attempt, oldest first.
    pub fn attempts(&self) -> &[String] {
        match self {
            UpstreamError::Exhausted(a) | UpstreamError::Deadline(a) => a,
        }
    }
}

/// A response from a backend.
#[derive(Debug)]
pub struct Sent {
    /// The backend that answered.
    pub backend: String,
    /// Its response; the body streams as it arrives.
    pub response: Response<Incoming>,
    /// Failed attempts before this one (retries and fallbacks).
    pub failed_attempts: Vec<String>,
}

impl Router {
    /// A router over these upstreams.
    pub fn new(
        upstreams: Vec<Upstream>,
        client: HttpClient,
        connect_timeout: Duration,
        policy: RetryPolicy,
    ) -> Router {
        Router {
            upstreams,
            client,
            connect_timeout,
            id: ROUTER_IDS.fetch_add(1, Ordering::Relaxed),
            policy,
            seed: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
        }
    }

    /// The configured upstreams.
    pub fn upstreams(&self) -> &[Upstream] {
        &self.upstreams
    }

    /// The upstream behind a candidate.
    pub fn upstream(&self, c: Candidate) -> &Upstream {
        &self.upstreams[c.0]
    }

    /// The models a request at `label` may use, each once, in configuration order.
    pub fn models_for(&self, label: &Label) -> Vec<ModelInfo> {
        let Ok(ok) = eligible(&self.upstreams, label) else {
            return Vec::new();
        };
        let mut out: Vec<ModelInfo> = Vec::new();
        for u in ok {
            for (name, _) in &u.spec().models {
                if !out.iter().any(|m| &m.id == name) {
                    out.push(ModelInfo {
                        id: name.clone(),
                        backend: u.name().to_owned(),
                    });
                }
            }
        }
        out
    }

    /// The backends that may receive a request for `model` at `label`, in the order to try
    /// them: by priority, and among equal priorities in a weighted random order.
    ///
    /// # Errors
    ///
    /// [`RouteError::UnknownModel`] when no backend serves the model;
    /// [`RouteError::NotAccredited`] when some do but none is accredited for the label.
    pub fn candidates(&self, model: &str, label: &Label) -> Result<Vec<Candidate>, RouteError> {
        if !self
            .upstreams
            .iter()
            .any(|u| u.upstream_model(model).is_some())
        {
            return Err(RouteError::UnknownModel(model.to_owned()));
        }
        // SECURITY: the only path to a backend goes through `eligible`, so fallback can never
        // reach a backend whose accreditation does not dominate the label.
        let all = eligible(&self.upstreams, label).map_err(RouteError::NotAccredited)?;
        let mut ok: Vec<(u32, u64, Candidate)> = Vec::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            if u.upstream_model(model).is_none() {
                continue;
            }
            let c = Candidate(i);
            if all.iter().any(|e| std::ptr::eq(*e, u)) {
                let w = u64::from(u.spec().weight.max(1));
                // Weighted random order (Efraimidis–Spirakis with an integer key): a larger
                // weight makes a smaller key more likely.
                let key = self.next_random() / w;
                ok.push((u.spec().priority, key, c));
            }
        }
        if ok.is_empty() {
            return Err(RouteError::NotAccredited(Denied::NoAccreditedBackend {
                label: Box::new(label.clone()),
            }));
        }
        ok.sort_by_key(|(p, k, _)| (*p, *k));
        Ok(ok.into_iter().map(|(_, _, c)| c).collect())
    }

    /// POSTs `body(upstream_model)` to `path` on each candidate in turn until one answers
    /// with a response that is neither 5xx nor 429, retrying each with backoff, all before
    /// `deadline`. `model` is the client-facing model name.
    ///
    /// # Errors
    ///
    /// [`UpstreamError`] listing what every attempt got.
    pub async fn send(
        &self,
        candidates: &[Candidate],
        model: &str,
        path: &str,
        body: impl Fn(&str) -> Bytes,
        deadline: Instant,
    ) -> Result<Sent, UpstreamError> {
        let mut failures: Vec<String> = Vec::new();
        for &c in candidates {
            let u = &self.upstreams[c.0];
            if u.spec().local {
                continue; // served in-process by the caller, never over HTTP
            }
            let upstream_model = u.upstream_model(model).unwrap_or(model);
            let bytes = body(upstream_model);
            for attempt in 0..=self.policy.max_retries {
                let req = match build_request(u, path, bytes.clone()) {
                    Ok(r) => r,
                    Err(e) => {
                        failures.push(format!("{}: {e}", u.name()));
                        break;
                    }
                };
                let attempt_fut = async {
                    if u.is_plain_http() {
                        pool::send((self.id, c.0), req, self.connect_timeout).await
                    } else {
                        let client = self.thread_client();
                        client.request(req).await.map_err(SendError::from)
                    }
                };
                let result = match tokio::time::timeout_at(deadline, attempt_fut).await {
                    Ok(r) => r,
                    Err(_) => {
                        failures.push(format!("{}: no answer before the deadline", u.name()));
                        return Err(UpstreamError::Deadline(failures));
                    }
                };
                let retry_after = match result {
                    Ok(resp) if !retryable(resp.status()) => {
                        return Ok(Sent {
                            backend: u.name().to_owned(),
                            response: resp,
                            failed_attempts: failures,
                        });
                    }
                    Ok(resp) => {
                        failures.push(format!("{}: answered {}", u.name(), resp.status()));
                        retry_after(&resp)
                    }
                    Err(e) if e.is_connect() => {
                        failures.push(format!(
                            "{}: cannot connect ({})",
                            u.name(),
                            error_chain(&e)
                        ));
                        None
                    }
                    Err(e) => {
                        // The request may have reached the backend; do not repeat it there.
                        failures.push(format!("{}: {}", u.name(), error_chain(&e)));
                        break;
                    }
                };
                if attempt == self.policy.max_retries {
                    break;
                }
                let wait = self.backoff(attempt, retry_after);
                if Instant::now() + wait >= deadline {
                    return Err(UpstreamError::Deadline(failures));
                }
                tokio::time::sleep(wait).await;
            }
        }
        Err(UpstreamError::Exhausted(failures))
    }

    /// This thread's client for this router (made on first use; the shared one if that fails).
    fn thread_client(&self) -> HttpClient {
        CLIENTS.with(|cell| {
            let mut clients = cell.borrow_mut();
            if let Some((_, c)) = clients.iter().find(|(id, _)| *id == self.id) {
                return c.clone();
            }
            let c = crate::upstream::http_client(self.connect_timeout)
                .unwrap_or_else(|_| self.client.clone());
            clients.push((self.id, c.clone()));
            c
        })
    }

    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let base = self
            .policy
            .base_backoff
            .saturating_mul(1 << attempt.min(16));
        let jitter = Duration::from_micros(self.next_random() % (base.as_micros().max(1) as u64));
        let wait = retry_after.unwrap_or(base / 2 + jitter / 2);
        wait.min(self.policy.max_backoff)
    }

    fn next_random(&self) -> u64 {
        // SplitMix64 over an atomic counter: cheap, lock-free, good enough for load spreading
        // and jitter (not for secrets).
        let mut z = self
            .seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn build_request(u: &Upstream, path: &str, body: Bytes) -> Result<Request<Full<Bytes>>, String> {
    let (uri, host) = u
        .endpoint(path)
        .map_err(|e| format!("invalid upstream URL: {e}"))?;
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
    if let Some(auth) = u.authorization() {
        headers.insert(header::AUTHORIZATION, auth.clone());
    }
    if let Some(host) = host {
        headers.insert(header::HOST, host);
    }
    Ok(req)
}

fn retryable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

fn retry_after<B>(resp: &Response<B>) -> Option<Duration> {
    let v = resp.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}
