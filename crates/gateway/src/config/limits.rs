//! The `[limits]` section: request limits and timeouts.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::{Problem, Section};

/// `[limits]` as written in the file. Sizes are bytes or a string with a unit (`"32MiB"`);
/// `*_ms` keys are milliseconds, 1 to 86400000.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Largest request body accepted, up to 4GiB (default `"32MiB"`).
    pub max_body_bytes: Option<Size>,
    /// Requests processed at once, 1 to 1000000 (default 256).
    pub max_concurrency: Option<i64>,
    /// Requests waiting for a slot, 0 to 10000000 (default 1024).
    pub max_queue: Option<i64>,
    /// Longest wait for a slot (default 250).
    pub queue_timeout_ms: Option<i64>,
    /// Deadline for an upstream answer, retries included (default 600000).
    pub request_timeout_ms: Option<i64>,
    /// Connect timeout to an upstream (default 5000).
    pub connect_timeout_ms: Option<i64>,
    /// Retries per backend, 0 to 10 (default 2).
    pub max_retries: Option<i64>,
    /// Time allowed for in-flight requests at shutdown (default 30000).
    pub shutdown_grace_ms: Option<i64>,
    /// Default per-key request rate per minute, 0 = unlimited (default 0).
    pub requests_per_minute: Option<i64>,
    /// Default per-key token rate per minute, 0 = unlimited (default 0).
    pub tokens_per_minute: Option<i64>,
    /// Requests waiting for each embedded model, 1 to 100000 (default 16).
    pub local_queue: Option<i64>,
    /// Server threads, 0 to 1024; 0 = one per CPU core (default 0).
    pub worker_threads: Option<i64>,
    /// Longest wait for a request's headers (default 10000).
    pub header_read_timeout_ms: Option<i64>,
    /// Longest time to receive a whole request body (default 30000).
    pub body_read_timeout_ms: Option<i64>,
    /// A connection without progress either way is closed after this (default 60000).
    pub idle_timeout_ms: Option<i64>,
    /// Longest silence from a backend in a streamed answer (default 120000).
    pub stream_idle_timeout_ms: Option<i64>,
    /// Longest whole request, streamed answer included (default 1800000).
    pub max_request_ms: Option<i64>,
    /// Open connections at most, 1 to 10000000 (default 4096).
    pub max_connections: Option<i64>,
    /// Open connections per client IP address at most, 1 to 10000000 (default 256).
    pub max_connections_per_ip: Option<i64>,
}

/// A size as written: bytes, or a string with a unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Size {
    /// `33554432`.
    Bytes(i64),
    /// `"32MiB"`.
    Text(String),
}

/// Request limits and timeouts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body accepted (bytes); larger gets 413.
    pub max_body_bytes: usize,
    /// Requests processed at once; past it requests wait in a bounded queue.
    pub max_concurrency: usize,
    /// Requests allowed to wait for a slot; past it requests are shed with 503 `overloaded`.
    pub max_queue: usize,
    /// How long a queued request may wait for a slot before it is shed.
    pub queue_timeout: Duration,
    /// Deadline for one whole request to an upstream, retries included (until headers arrive).
    pub request_timeout: Duration,
    /// Connect timeout to an upstream.
    pub connect_timeout: Duration,
    /// Retries per backend on connect errors, 5xx and 429.
    pub max_retries: u32,
    /// Time allowed for in-flight requests at shutdown.
    pub shutdown_grace: Duration,
    /// Default per-key request rate (requests per minute; 0 = unlimited).
    pub requests_per_minute: u32,
    /// Default per-key token rate (tokens per minute; 0 = unlimited).
    pub tokens_per_minute: u32,
    /// Requests waiting for each embedded model; past it: 503 `overloaded`.
    pub local_queue: usize,
    /// Server threads, each with its own event loop (0 = one per CPU core).
    pub worker_threads: usize,
    /// Longest wait for a request's headers (also bounds an idle keep-alive connection).
    pub header_read_timeout: Duration,
    /// Longest time to receive a whole request body.
    pub body_read_timeout: Duration,
    /// A connection that makes no progress either way for this long is closed (a client that
    /// stops reading a stream, a stalled upload).
    pub idle_timeout: Duration,
    /// Longest silence from a backend in the middle of a streamed answer.
    pub stream_idle_timeout: Duration,
    /// Longest whole request, streamed answer included.
    pub max_request: Duration,
    /// Open connections at most; past it new ones get 503 `overloaded` and are closed.
    pub max_connections: usize,
    /// Open connections per client IP address at most.
    pub max_connections_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: 32 * 1024 * 1024,
            max_concurrency: 256,
            max_queue: 1024,
            queue_timeout: Duration::from_millis(250),
            request_timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(5),
            max_retries: 2,
            shutdown_grace: Duration::from_secs(30),
            requests_per_minute: 0,
            tokens_per_minute: 0,
            local_queue: 16,
            worker_threads: 0,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            stream_idle_timeout: Duration::from_secs(120),
            max_request: Duration::from_secs(30 * 60),
            max_connections: 4096,
            max_connections_per_ip: 256,
        }
    }
}

/// Largest `max_body_bytes`.
const MAX_SIZE: u64 = 1 << 32;
/// Longest `*_ms` value: a day.
const MAX_MS: u64 = 24 * 3600 * 1000;

impl Limits {
    /// Checks the section found at key path `at` (`limits`); what it does not set keeps its
    /// default.
    ///
    /// # Errors
    ///
    /// Every problem, each with its key path.
    pub(super) fn from_raw(raw: RawLimits, at: &str) -> Result<Limits, Vec<Problem>> {
        let mut l = Limits::default();
        let mut p = Section::new(at);
        if let Some(size) = raw.max_body_bytes {
            match size.bytes().filter(|n| (1..=MAX_SIZE).contains(n)) {
                Some(n) => l.max_body_bytes = usize::try_from(n).unwrap_or(usize::MAX),
                None => p.push(
                    "max_body_bytes",
                    "expected a size in bytes up to 4GiB, e.g. 33554432 or \"32MiB\"",
                ),
            }
        }
        let mut count = |key: &str, value: Option<i64>, min: u64, max: u64, slot: &mut usize| {
            if let Some(v) = p.int_in(key, value, min, max) {
                *slot = usize::try_from(v).unwrap_or(usize::MAX);
            }
        };
        count(
            "max_concurrency",
            raw.max_concurrency,
            1,
            1_000_000,
            &mut l.max_concurrency,
        );
        count("max_queue", raw.max_queue, 0, 10_000_000, &mut l.max_queue);
        count(
            "local_queue",
            raw.local_queue,
            1,
            100_000,
            &mut l.local_queue,
        );
        count(
            "worker_threads",
            raw.worker_threads,
            0,
            1024,
            &mut l.worker_threads,
        );
        count(
            "max_connections",
            raw.max_connections,
            1,
            10_000_000,
            &mut l.max_connections,
        );
        count(
            "max_connections_per_ip",
            raw.max_connections_per_ip,
            1,
            10_000_000,
            &mut l.max_connections_per_ip,
        );
        let max_u32 = u64::from(u32::MAX);
        for (key, value, min, max, slot) in [
            ("max_retries", raw.max_retries, 0, 10, &mut l.max_retries),
            (
                "requests_per_minute",
                raw.requests_per_minute,
                0,
                max_u32,
                &mut l.requests_per_minute,
            ),
            (
                "tokens_per_minute",
                raw.tokens_per_minute,
                0,
                max_u32,
                &mut l.tokens_per_minute,
            ),
        ] {
            if let Some(v) = p.int_in(key, value, min, max) {
                *slot = u32::try_from(v).unwrap_or(u32::MAX);
            }
        }
        for (key, value, slot) in [
            (
                "queue_timeout_ms",
                raw.queue_timeout_ms,
                &mut l.queue_timeout,
            ),
            (
                "request_timeout_ms",
                raw.request_timeout_ms,
                &mut l.request_timeout,
            ),
            (
                "connect_timeout_ms",
                raw.connect_timeout_ms,
                &mut l.connect_timeout,
            ),
            (
                "shutdown_grace_ms",
                raw.shutdown_grace_ms,
                &mut l.shutdown_grace,
            ),
        ] {
            if let Some(v) = p.int_in(key, value, 1, MAX_MS) {
                *slot = Duration::from_millis(v);
            }
        }
        for (key, value, slot) in [
            (
                "header_read_timeout_ms",
                raw.header_read_timeout_ms,
                &mut l.header_read_timeout,
            ),
            (
                "body_read_timeout_ms",
                raw.body_read_timeout_ms,
                &mut l.body_read_timeout,
            ),
            ("idle_timeout_ms", raw.idle_timeout_ms, &mut l.idle_timeout),
            (
                "stream_idle_timeout_ms",
                raw.stream_idle_timeout_ms,
                &mut l.stream_idle_timeout,
            ),
            ("max_request_ms", raw.max_request_ms, &mut l.max_request),
        ] {
            if value == Some(0) {
                // SECURITY: zero would mean "no bound"; every wait has one.
                p.push(
                    key,
                    &format!("expected a positive number of milliseconds, up to {MAX_MS}: every wait has a bound"),
                );
            } else if let Some(v) = p.int_in(key, value, 1, MAX_MS) {
                *slot = Duration::from_millis(v);
            }
        }
        p.finish(l)
    }
}

impl Size {
    /// The number of bytes, when it is one.
    fn bytes(&self) -> Option<u64> {
        match self {
            Size::Bytes(n) => u64::try_from(*n).ok(),
            Size::Text(s) => parse_size(s),
        }
    }
}

/// `"32MiB"`, `"512 KiB"`, `"1024"` → bytes.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes up to 4GiB, e.g. 33554432 or \"32MiB\"")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Size, E> {
                Ok(Size::Bytes(n))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Size, E> {
                Ok(Size::Bytes(i64::try_from(n).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Size, E> {
                Ok(Size::Text(s.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_a_unit() {
        for (text, bytes) in [
            ("32MiB", Some(32 << 20)),
            ("512 KiB", Some(512 << 10)),
            ("1024", Some(1024)),
            ("1G", Some(1 << 30)),
            ("lots", None),
            ("99999999999999999999GiB", None),
            ("-1", None),
        ] {
            assert_eq!(parse_size(text), bytes, "{text}");
        }
    }
}
