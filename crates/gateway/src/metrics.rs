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

impl Histogram {
    fn observe(&mut self, secs: f64) {
        self.count += 1;
        self.sum += secs;
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
    }
}

/// All metrics of one server.
#[derive(Debug, Default)]
pub struct Metrics {
    /// By route and status, then backend: a request for a backend already seen finds its
    /// histogram without allocating the backend's name.
    requests: Mutex<BTreeMap<(&'static str, u16), ByBackend>>,
    denials: Mutex<BTreeMap<&'static str, u64>>,
    flags: Mutex<BTreeMap<&'static str, u64>>,
    upstream_errors: Mutex<BTreeMap<String, u64>>,
}

/// Latency histograms by backend name.
type ByBackend = BTreeMap<String, Histogram>;

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
        let by_backend = map.entry((route, status)).or_default();
        match by_backend.get_mut(backend) {
            Some(h) => h.observe(secs),
            None => {
                let mut h = Histogram::default();
                h.observe(secs);
                by_backend.insert(backend.to_owned(), h);
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

    /// Records an indicator raised on a request that was not refused (`classified-marking`).
    pub fn flag(&self, flag: &'static str) {
        let mut map = self
            .flags
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *map.entry(flag).or_default() += 1;
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
        let requests: Vec<(&str, u16, &str, &Histogram)> = requests
            .iter()
            .flat_map(|(&(route, status), by_backend)| {
                by_backend
                    .iter()
                    .map(move |(backend, h)| (route, status, backend.as_str(), h))
            })
            .collect();
        for &(route, status, backend, h) in &requests {
            let _ = writeln!(
                out,
                "enclave_requests_total{{route=\"{route}\",status=\"{status}\",backend=\"{backend}\"}} {}",
                h.count
            );
        }
        out.push_str("# HELP enclave_request_duration_seconds Time to the end of the response, by route, status and backend.\n");
        out.push_str("# TYPE enclave_request_duration_seconds histogram\n");
        for &(route, status, backend, h) in &requests {
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
        out.push_str(
            "# HELP enclave_flags_total Indicators raised on requests that were served, by flag.\n",
        );
        out.push_str("# TYPE enclave_flags_total counter\n");
        for (flag, n) in self
            .flags
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(out, "enclave_flags_total{{flag=\"{flag}\"}} {n}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_rendered_in_route_status_backend_order() {
        let m = Metrics::default();
        let ms = Duration::from_millis(3);
        m.request("chat_completions", 200, "b", ms);
        m.request("chat_completions", 200, "a", ms);
        m.request("chat_completions", 200, "b", ms);
        m.request("chat_completions", 502, "", ms);
        m.request("models", 200, "", ms);
        let out = m.render();
        let totals: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("enclave_requests_total{"))
            .collect();
        assert_eq!(
            totals,
            [
                r#"enclave_requests_total{route="chat_completions",status="200",backend="a"} 1"#,
                r#"enclave_requests_total{route="chat_completions",status="200",backend="b"} 2"#,
                r#"enclave_requests_total{route="chat_completions",status="502",backend=""} 1"#,
                r#"enclave_requests_total{route="models",status="200",backend=""} 1"#,
            ]
        );
        assert!(out.contains(
            r#"enclave_request_duration_seconds_bucket{route="chat_completions",status="200",backend="b",le="0.005"} 2"#
        ));
        assert!(out.contains(
            r#"enclave_request_duration_seconds_bucket{route="chat_completions",status="200",backend="b",le="0.0025"} 0"#
        ));
    }
}
