//! Choosing accredited backends and sending to them with retries and fallback.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use enclave_label::{Accreditation, Label};
use enclave_policy::{Accredited, Denied, eligible};
use tokio::time::Instant;

use crate::backend::{Backend, BackendError, BoxFuture};

/// How hard to try.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Retries per backend after the first attempt, for what certainly did not run (no
    /// connection, a full queue, a 429).
    pub max_retries: u32,
    /// First backoff; doubles per retry, with jitter.
    pub base_backoff: Duration,
    /// Longest single backoff (also caps a backend's `Retry-After`).
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

/// The configured backends, of every kind, and how to choose among them.
#[derive(Debug)]
pub struct Router {
    backends: Vec<Entry>,
    policy: RetryPolicy,
    seed: AtomicU64,
}

/// A backend as the eligibility check sees it.
#[derive(Debug)]
struct Entry(Arc<dyn Backend>);

impl Accredited for Entry {
    fn accreditation(&self) -> &Accreditation {
        &self.0.spec().accreditation
    }
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

/// An answer, and which backend gave it.
#[derive(Debug)]
pub struct Sent<T> {
    /// The backend's name.
    pub backend: String,
    /// Its kind (`openai`, `local`, `bedrock`).
    pub kind: &'static str,
    /// The answer.
    pub answer: T,
    /// Failed attempts before it (`backend: what happened`), oldest first.
    pub failed_attempts: Vec<String>,
}

/// Why sending failed: the last backend's error, and every attempt.
#[derive(Debug)]
pub struct SendFailure {
    /// The error that ended the attempts: either one that forbids sending again, or the last
    /// of the retries and fallbacks.
    pub last: BackendError,
    /// The backend that gave `last`.
    pub backend: String,
    /// Every failed attempt (`backend: what happened`), oldest first.
    pub attempts: Vec<String>,
}

impl Router {
    /// A router over these backends, in configuration order.
    pub fn new(backends: Vec<Arc<dyn Backend>>, policy: RetryPolicy) -> Router {
        Router {
            backends: backends.into_iter().map(Entry).collect(),
            policy,
            seed: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
        }
    }

    /// The configured backends.
    pub fn backends(&self) -> impl Iterator<Item = &Arc<dyn Backend>> {
        self.backends.iter().map(|e| &e.0)
    }

    /// The backend behind a candidate.
    pub fn backend(&self, c: Candidate) -> Option<&Arc<dyn Backend>> {
        self.backends.get(c.0).map(|e| &e.0)
    }

    /// The models a request at `label` may use, each once, in configuration order.
    pub fn models_for(&self, label: &Label) -> Vec<ModelInfo> {
        let Ok(ok) = eligible(&self.backends, label) else {
            return Vec::new();
        };
        let mut out: Vec<ModelInfo> = Vec::new();
        for e in ok {
            for (name, _) in &e.0.spec().models {
                if !out.iter().any(|m| &m.id == name) {
                    out.push(ModelInfo {
                        id: name.clone(),
                        backend: e.0.spec().name.clone(),
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
            .backends
            .iter()
            .any(|e| e.0.spec().upstream_model(model).is_some())
        {
            return Err(RouteError::UnknownModel(model.to_owned()));
        }
        // SECURITY: the only path to a backend goes through `eligible`, so fallback can never
        // reach a backend whose accreditation does not dominate the label.
        let all = eligible(&self.backends, label).map_err(RouteError::NotAccredited)?;
        let mut ok: Vec<(u32, u64, Candidate)> = Vec::new();
        for (i, e) in self.backends.iter().enumerate() {
            let spec = e.0.spec();
            if spec.upstream_model(model).is_none() || !all.iter().any(|a| std::ptr::eq(*a, e)) {
                continue;
            }
            let w = u64::from(spec.weight.max(1));
            // Weighted random order (Efraimidis–Spirakis with an integer key): a larger
            // weight makes a smaller key more likely.
            let key = self.next_random() / w;
            ok.push((spec.priority, key, Candidate(i)));
        }
        if ok.is_empty() {
            return Err(RouteError::NotAccredited(Denied::NoAccreditedBackend {
                label: Box::new(label.clone()),
            }));
        }
        ok.sort_by_key(|(p, k, _)| (*p, *k));
        Ok(ok.into_iter().map(|(_, _, c)| c).collect())
    }

    /// Runs `attempt` on each candidate in turn — with the model named as that backend knows
    /// it — until one answers. What certainly did not run (no connection, a full queue, a 429)
    /// is retried on the same backend with backoff and then falls back to the next candidate,
    /// all before `deadline`; any other error ends the attempts at once, because the request
    /// may have run.
    ///
    /// # Errors
    ///
    /// [`SendFailure`] with the error that ended the attempts and every attempt made.
    pub async fn send<'a, T, F>(
        &'a self,
        candidates: &[Candidate],
        model: &'a str,
        deadline: Instant,
        attempt: F,
    ) -> Result<Sent<T>, SendFailure>
    where
        F: Fn(&'a dyn Backend, &'a str) -> BoxFuture<'a, Result<T, BackendError>>,
    {
        let mut attempts: Vec<String> = Vec::new();
        let mut last = BackendError::NotSent {
            reason: "no candidate backend".to_owned(),
            overloaded: false,
        };
        let mut last_backend = String::new();
        for &c in candidates {
            let Some(entry) = self.backends.get(c.0) else {
                continue;
            };
            let backend: &'a dyn Backend = entry.0.as_ref();
            let name = backend.spec().name.as_str();
            let upstream_model = backend.spec().upstream_model(model).unwrap_or(model);
            for n in 0..=self.policy.max_retries {
                let error = match attempt(backend, upstream_model).await {
                    Ok(answer) => {
                        return Ok(Sent {
                            backend: name.to_owned(),
                            kind: backend.kind(),
                            answer,
                            failed_attempts: attempts,
                        });
                    }
                    Err(e) => e,
                };
                attempts.push(format!("{name}: {error}"));
                last_backend = name.to_owned();
                if !error.may_resend() {
                    return Err(SendFailure {
                        last: error,
                        backend: last_backend,
                        attempts,
                    });
                }
                let retry_after = match &error {
                    BackendError::Throttled { retry_after } => *retry_after,
                    _ => None,
                };
                last = error;
                if n == self.policy.max_retries {
                    break;
                }
                let wait = self.backoff(n, retry_after);
                if Instant::now() + wait >= deadline {
                    return Err(SendFailure {
                        last: BackendError::Deadline,
                        backend: last_backend,
                        attempts,
                    });
                }
                tokio::time::sleep(wait).await;
            }
        }
        Err(SendFailure {
            last,
            backend: last_backend,
            attempts,
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
