//! Per-key rate limits and admission control.
//!
//! Rate limits are token buckets per caller (API key id or principal), refilled continuously:
//! requests per minute are taken when a request starts, tokens per minute are charged when its
//! answer ends (from the upstream's `usage`, or estimated at four bytes per token when the
//! upstream sends none). Admission bounds the requests processed at once; past that, a bounded
//! queue waits a short while and then sheds load with 503 `overloaded` instead of letting
//! latency grow without bound. Buckets are per replica.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::ApiError;

/// Token buckets, one per caller.
#[derive(Debug)]
pub struct RateLimiter {
    requests_per_minute: u32,
    tokens_per_minute: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    requests: f64,
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// Limits per caller; 0 means unlimited.
    pub fn new(requests_per_minute: u32, tokens_per_minute: u32) -> RateLimiter {
        RateLimiter {
            requests_per_minute,
            tokens_per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any limit is set.
    pub fn enabled(&self) -> bool {
        self.requests_per_minute > 0 || self.tokens_per_minute > 0
    }

    /// Takes one request from `caller`'s bucket.
    ///
    /// # Errors
    ///
    /// 429 `rate_limited` with `Retry-After` when the caller has no requests or tokens left.
    pub fn admit(&self, caller: &str) -> Result<(), ApiError> {
        if !self.enabled() {
            return Ok(());
        }
        let now = Instant::now();
        let mut map = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() > 100_000 {
            // Forget callers idle for a minute (their buckets are full again anyway).
            map.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(60));
        }
        let b = map.entry(caller.to_owned()).or_insert(Bucket {
            requests: f64::from(self.requests_per_minute),
            tokens: f64::from(self.tokens_per_minute),
            at: now,
        });
        self.refill(b, now);
        if self.requests_per_minute > 0 && b.requests < 1.0 {
            let wait = (1.0 - b.requests) * 60.0 / f64::from(self.requests_per_minute);
            return Err(limited(
                format!(
                    "Rate limit reached: {} requests per minute for this key. Retry after the time in the Retry-After header.",
                    self.requests_per_minute
                ),
                wait,
            ));
        }
        if self.tokens_per_minute > 0 && b.tokens < 1.0 {
            let wait = (1.0 - b.tokens) * 60.0 / f64::from(self.tokens_per_minute);
            return Err(limited(
                format!(
                    "Rate limit reached: {} tokens per minute for this key. Retry after the time in the Retry-After header.",
                    self.tokens_per_minute
                ),
                wait,
            ));
        }
        if self.requests_per_minute > 0 {
            b.requests -= 1.0;
        }
        Ok(())
    }

    /// Charges `tokens` used by a finished request to `caller`.
    pub fn charge(&self, caller: &str, tokens: u64) {
        if self.tokens_per_minute == 0 {
            return;
        }
        let now = Instant::now();
        let mut map = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(b) = map.get_mut(caller) {
            self.refill(b, now);
            b.tokens -= tokens as f64;
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let minutes = now.duration_since(b.at).as_secs_f64() / 60.0;
        b.at = now;
        b.requests = (b.requests + minutes * f64::from(self.requests_per_minute))
            .min(f64::from(self.requests_per_minute));
        b.tokens = (b.tokens + minutes * f64::from(self.tokens_per_minute))
            .min(f64::from(self.tokens_per_minute));
    }
}

fn limited(message: String, wait_secs: f64) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        .retry_after(Duration::from_secs_f64(wait_secs.clamp(0.001, 3600.0)))
}

/// Bounds the requests processed at once, with a short bounded queue in front.
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_queue: usize,
    queue_timeout: Duration,
}

impl Admission {
    /// `max_concurrency` slots, `max_queue` waiters, each waiting at most `queue_timeout`.
    pub fn new(max_concurrency: usize, max_queue: usize, queue_timeout: Duration) -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(max_concurrency)),
            waiting: AtomicUsize::new(0),
            max_queue,
            queue_timeout,
        }
    }

    /// A slot, held until the response body ends.
    ///
    /// # Errors
    ///
    /// 503 `overloaded` with `Retry-After` when the queue is full or the wait times out.
    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        if let Ok(p) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(p);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(overloaded());
        }
        let got =
            tokio::time::timeout(self.queue_timeout, Arc::clone(&self.slots).acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match got {
            Ok(Ok(p)) => Ok(p),
            _ => Err(overloaded()),
        }
    }
}

fn overloaded() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "Enclave is at capacity and shed this request. Retry after the time in the Retry-After header.",
    )
    .retry_after(Duration::from_secs(1))
}
