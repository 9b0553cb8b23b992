//! Prometheus metrics, rendered in the text exposition format at `/metrics`.
//!
//! Requests and their latency by route, status and backend; denials by code; upstream errors
//! by backend; rate-limit and load-shedding counts. Label values are Enclave's own names
//! (routes, codes, backend names), never anything a caller sent.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0,
];

/// All metrics of one server.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16, String), Histogram>>,
    denials: Mutex<BTreeMap<&'static str, u64>>,
    upstream_errors: Mutex<BTreeMap<String, u64>>,
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    /// Records a finished request.
    pub fn request(&self, route: &'static str, status: u16, backend: &str, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut map = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let h = map.entry((route, status, backend.to_owned())).or_default();
        h.count += 1;
        h.sum += secs;
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
    }

    /// Records a refusal by its code.
    pub fn denial(&self, code: &'static str) {
        let mut map = self
            .denials
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *map.entry(code).or_default() += 1;
    }

    /// Records a failed upstream attempt.
    pub fn upstream_error(&self, backend: &str) {
        let mut map = self
            .upstream_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get_mut(backend) {
            Some(n) => *n += 1,
            None => {
                map.insert(backend.to_owned(), 1);
            }
        }
    }

    /// How many times `code` was refused (for tests and health checks).
    pub fn denials_of(&self, code: &str) -> u64 {
        let map = self
            .denials
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(code).copied().unwrap_or(0)
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str(
            "# HELP enclave_requests_total Requests answered, by route, status and backend.\n",
        );
        out.push_str("# TYPE enclave_requests_total counter\n");
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for ((route, status, backend), h) in &requests {
            let _ = writeln!(
                out,
                "enclave_requests_total{{route=\"{route}\",status=\"{status}\",backend=\"{backend}\"}} {}",
                h.count
            );
        }
        out.push_str("# HELP enclave_request_duration_seconds Time to the end of the response, by route, status and backend.\n");
        out.push_str("# TYPE enclave_request_duration_seconds histogram\n");
        for ((route, status, backend), h) in &requests {
            let labels = format!("route=\"{route}\",status=\"{status}\",backend=\"{backend}\"");
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "enclave_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "enclave_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "enclave_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "enclave_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        out.push_str("# HELP enclave_denials_total Requests refused, by error code.\n");
        out.push_str("# TYPE enclave_denials_total counter\n");
        for (code, n) in self
            .denials
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(out, "enclave_denials_total{{code=\"{code}\"}} {n}");
        }
        out.push_str("# HELP enclave_upstream_errors_total Failed upstream attempts (connect errors, 5xx, 429, deadline), by backend.\n");
        out.push_str("# TYPE enclave_upstream_errors_total counter\n");
        for (backend, n) in self
            .upstream_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "enclave_upstream_errors_total{{backend=\"{backend}\"}} {n}"
            );
        }
        out
    }
}
