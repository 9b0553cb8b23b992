//! An open-loop HTTP/1.1 load generator for the load script (tests and benchmarks only).
//!
//! ```text
//! loadgen --url URL --connections C --rate R --duration SECS [--warmup SECS]
//!         [--header 'K: V']... [--body-file F] [--method M] [--drain-timeout SECS]
//! ```
//!
//! Requests go out on a fixed schedule whatever the server does: request `n` (counting from 0
//! over all connections) is due at `t0 + n/R` on keep-alive connection `n mod C`, so each
//! connection sends at `R/C` per second, staggered by `1/R` from its neighbour. A dispatcher
//! thread wakes at each due time (`nanosleep`, not tokio's 1 ms timer wheel) and hands the due
//! time to its connection; a connection still busy with an earlier request queues it. Latency is
//! measured from the **due** time to the end of the response body, so a stalled connection is
//! charged for the requests it could not send (coordinated omission corrected, as in wrk2).
//!
//! Requests due during the first `--warmup` seconds are sent but not counted. After the last
//! due time the connections get `--drain-timeout` seconds (default 10) to finish what they have
//! queued; requests still unanswered then count as errors (`unfinished`).
//!
//! Prints one JSON line: the requested and achieved rate (measured responses / the longer of
//! the measured window and the time to the last of them), completed responses (any status),
//! errors (non-2xx, I/O, unfinished), latency percentiles p50, p90, p99, p99.9 and max in ms,
//! `total_responses` including the warm-up (for CPU time per request over the whole run), and
//! the dispatcher's own lateness (`dispatch_lag_*`), which bounds what the generator adds.
//! Everything runs on one thread plus the dispatcher; if the achieved rate falls short of the
//! requested one while latencies stay low, the generator is the bottleneck.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const USAGE: &str = "usage: loadgen --url URL --connections C --rate R --duration SECS \
[--warmup SECS] [--header 'K: V']... [--body-file F] [--method M] [--drain-timeout SECS]";

/// The parsed command line.
#[derive(Debug)]
struct Args {
    url: Uri,
    connections: usize,
    rate: f64,
    duration: f64,
    warmup: f64,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    method: Method,
    drain_timeout: f64,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut url = None;
    let mut connections = 64usize;
    let mut rate = None;
    let mut duration: f64 = 10.0;
    let mut warmup: f64 = 0.0;
    let mut headers = Vec::new();
    let mut body_file = None;
    let mut method = None;
    let mut drain_timeout: f64 = 10.0;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--url" => url = Some(value()?),
            "--connections" | "-c" => connections = number(flag, &value()?)?,
            "--rate" | "-R" => rate = Some(number::<f64>(flag, &value()?)?),
            "--duration" | "-d" => duration = number(flag, &value()?)?,
            "--warmup" => warmup = number(flag, &value()?)?,
            "--drain-timeout" => drain_timeout = number(flag, &value()?)?,
            "--header" | "-H" => {
                let h = value()?;
                let (k, v) = h
                    .split_once(':')
                    .ok_or_else(|| format!("--header {h:?}: expected 'Name: value'"))?;
                let name = HeaderName::from_bytes(k.trim().as_bytes())
                    .map_err(|e| format!("--header {h:?}: {e}"))?;
                let value =
                    HeaderValue::from_str(v.trim()).map_err(|e| format!("--header {h:?}: {e}"))?;
                headers.push((name, value));
            }
            "--body-file" => body_file = Some(value()?),
            "--method" | "-X" => {
                let m = value()?;
                method = Some(
                    Method::from_bytes(m.as_bytes()).map_err(|e| format!("--method {m:?}: {e}"))?,
                );
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let url: Uri = url
        .ok_or("--url is required")?
        .parse()
        .map_err(|e| format!("--url: {e}"))?;
    if url.scheme_str() != Some("http") || url.authority().is_none() {
        return Err(format!(
            "--url {url}: only http://host[:port]/path is supported"
        ));
    }
    let rate = rate.ok_or("--rate is required")?;
    if !(rate.is_finite() && rate > 0.0) {
        return Err("--rate must be a positive number of requests per second".into());
    }
    if connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    for (name, v) in [
        ("--duration", duration),
        ("--warmup", warmup),
        ("--drain-timeout", drain_timeout),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(format!("{name} must be a non-negative number of seconds"));
        }
    }
    let body = match &body_file {
        Some(f) => Bytes::from(std::fs::read(f).map_err(|e| format!("--body-file {f}: {e}"))?),
        None => Bytes::new(),
    };
    let method = method.unwrap_or(if body_file.is_some() {
        Method::POST
    } else {
        Method::GET
    });
    Ok(Args {
        url,
        connections,
        rate,
        duration,
        warmup,
        headers,
        body,
        method,
        drain_timeout,
    })
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.parse().map_err(|e| format!("{flag} {v:?}: {e}"))
}

/// The value at percentile `p` (0–100) of sorted samples, by the nearest-rank method: the
/// smallest sample with at least `p` % of the samples at or below it.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    // Exact for the sample counts a benchmark produces (well below 2^52).
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "p is clamped to 0..=100 and n is far below 2^52"
    )]
    // The tiny allowance keeps decimal percentiles such as 99.9 % of 1000 (999.000…01 in
    // binary floating point) from rounding up to the next rank.
    let rank = (p.clamp(0.0, 100.0) * n as f64 / 100.0 - 1e-9).ceil() as usize;
    sorted.get(rank.clamp(1, n) - 1).copied()
}

/// One scheduled request: when it was due, and whether it falls in the measured window.
#[derive(Clone, Copy, Debug)]
struct Job {
    due: Instant,
    measured: bool,
}

/// What one connection saw.
#[derive(Debug, Default)]
struct ConnStats {
    /// Latencies (ms, from the due time) of measured responses, any status.
    latencies_ms: Vec<f64>,
    /// Responses received, including warm-up ones.
    total_responses: u64,
    /// Measured responses with a status outside 200–299.
    non2xx: u64,
    /// Measured requests that failed with a connection or protocol error.
    io_errors: u64,
    /// Measured requests not answered by the drain deadline.
    unfinished: u64,
    /// When the last measured response ended.
    last_end: Option<Instant>,
    /// The first error message, for the report.
    first_error: Option<String>,
}

/// What the request looks like, shared by all connections.
struct Target {
    authority: String,
    host: HeaderValue,
    path: Uri,
    method: Method,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl Target {
    fn request(&self) -> Result<Request<Full<Bytes>>, String> {
        let mut req = Request::builder()
            .method(self.method.clone())
            .uri(self.path.clone())
            .body(Full::new(self.body.clone()))
            .map_err(|e| e.to_string())?;
        let h = req.headers_mut();
        h.insert(header::HOST, self.host.clone());
        for (k, v) in &self.headers {
            h.append(k.clone(), v.clone());
        }
        Ok(req)
    }
}

async fn connect(target: &Target) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(&target.authority)
        .await
        .map_err(|e| format!("connect {}: {e}", target.authority))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        // Errors surface on the next `send_request`.
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one request and reads its body to the end; returns the status.
async fn exchange(sender: &mut SendRequest<Full<Bytes>>, target: &Target) -> Result<u16, String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(target.request()?)
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        frame.map_err(|e| e.to_string())?;
    }
    Ok(status)
}

async fn run_connection(
    target: std::sync::Arc<Target>,
    mut sender: Option<SendRequest<Full<Bytes>>>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    deadline: tokio::time::Instant,
) -> ConnStats {
    let mut st = ConnStats::default();
    while let Some(job) = jobs.recv().await {
        let attempt = async {
            let s = match sender.as_mut() {
                Some(s) if !s.is_closed() => s,
                _ => sender.insert(connect(&target).await?),
            };
            exchange(s, &target).await
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(result) => {
                let end = Instant::now();
                match result {
                    Ok(status) => {
                        st.total_responses += 1;
                        if job.measured {
                            st.latencies_ms
                                .push(end.duration_since(job.due).as_secs_f64() * 1000.0);
                            st.last_end = Some(end);
                            if !(200..300).contains(&status) {
                                st.non2xx += 1;
                                st.first_error
                                    .get_or_insert_with(|| format!("status {status}"));
                            }
                        }
                    }
                    Err(e) => {
                        sender = None;
                        if job.measured {
                            st.io_errors += 1;
                            st.first_error.get_or_insert(e);
                        }
                    }
                }
            }
            Err(_) => {
                // Past the drain deadline: this request and everything still queued is lost.
                jobs.close();
                let mut lost = u64::from(job.measured);
                while let Ok(j) = jobs.try_recv() {
                    lost += u64::from(j.measured);
                }
                st.unfinished += lost;
                if lost > 0 {
                    st.first_error
                        .get_or_insert_with(|| "unanswered at the drain deadline".to_owned());
                }
                break;
            }
        }
    }
    st
}

/// Hands each request's due time to its connection on schedule; returns how late (ms) each
/// hand-over was.
fn dispatch(
    senders: Vec<mpsc::UnboundedSender<Job>>,
    t0: Instant,
    rate: f64,
    warmup: Duration,
    end: Duration,
) -> Vec<f64> {
    let mut lags = Vec::new();
    let mut n: u64 = 0;
    let conns = senders.len() as u64;
    loop {
        #[allow(
            clippy::cast_precision_loss,
            reason = "request counts stay far below 2^52"
        )]
        let offset = Duration::from_secs_f64(n as f64 / rate);
        if offset >= end {
            break;
        }
        let due = t0 + offset;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        #[allow(
            clippy::cast_possible_truncation,
            reason = "n mod the connection count fits usize"
        )]
        let i = (n % conns) as usize;
        if let Some(tx) = senders.get(i) {
            // A connection that gave up (past its deadline) no longer listens; nothing to do.
            let _ = tx.send(Job {
                due,
                measured: offset >= warmup,
            });
        }
        lags.push(Instant::now().duration_since(due).as_secs_f64() * 1000.0);
        n += 1;
    }
    lags
}

async fn run(args: Args) -> Result<serde_json::Value, String> {
    let authority = args.url.authority().ok_or("--url has no host")?;
    let addr = if authority.port().is_some() {
        authority.as_str().to_owned()
    } else {
        format!("{}:80", authority.as_str())
    };
    let path = args
        .url
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse::<Uri>()
        .map_err(|e| e.to_string())?;
    let target = std::sync::Arc::new(Target {
        host: HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?,
        authority: addr,
        path,
        method: args.method,
        headers: args.headers,
        body: args.body,
    });

    // Open every connection before the clock starts.
    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        conns.push(connect(&target).await?);
    }
    let warmup = Duration::from_secs_f64(args.warmup);
    let end = warmup + Duration::from_secs_f64(args.duration);
    let t0 = Instant::now() + Duration::from_millis(20);
    let deadline =
        tokio::time::Instant::from_std(t0 + end) + Duration::from_secs_f64(args.drain_timeout);

    let mut senders = Vec::with_capacity(args.connections);
    let mut tasks = Vec::with_capacity(args.connections);
    for sender in conns {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        tasks.push(tokio::spawn(run_connection(
            target.clone(),
            Some(sender),
            rx,
            deadline,
        )));
    }
    let rate = args.rate;
    let dispatcher = tokio::task::spawn_blocking(move || dispatch(senders, t0, rate, warmup, end));

    let mut all = ConnStats::default();
    for task in tasks {
        let st = task.await.map_err(|e| format!("connection task: {e}"))?;
        all.latencies_ms.extend(st.latencies_ms);
        all.total_responses += st.total_responses;
        all.non2xx += st.non2xx;
        all.io_errors += st.io_errors;
        all.unfinished += st.unfinished;
        all.last_end = all.last_end.max(st.last_end);
        if all.first_error.is_none() {
            all.first_error = st.first_error;
        }
    }
    let mut lags = dispatcher.await.map_err(|e| format!("dispatcher: {e}"))?;

    let window_start = t0 + warmup;
    let window = (t0 + end).duration_since(window_start);
    let elapsed = all
        .last_end
        .map_or(window, |e| e.duration_since(window_start).max(window));
    let mut lat = all.latencies_ms;
    lat.sort_by(f64::total_cmp);
    lags.sort_by(f64::total_cmp);
    #[allow(
        clippy::cast_precision_loss,
        reason = "request counts stay far below 2^52"
    )]
    let achieved = lat.len() as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    let completed = lat.len() as u64;
    let round = |v: Option<f64>| v.map(|v| (v * 1000.0).round() / 1000.0);
    Ok(json!({
        "url": args.url.to_string(),
        "connections": args.connections,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "requested_rate": args.rate,
        "achieved_rate": (achieved * 10.0).round() / 10.0,
        "completed": completed,
        "errors": all.non2xx + all.io_errors + all.unfinished,
        "non2xx": all.non2xx,
        "io_errors": all.io_errors,
        "unfinished": all.unfinished,
        "first_error": all.first_error,
        "total_responses": all.total_responses,
        "p50_ms": round(percentile(&lat, 50.0)),
        "p90_ms": round(percentile(&lat, 90.0)),
        "p99_ms": round(percentile(&lat, 99.0)),
        "p999_ms": round(percentile(&lat, 99.9)),
        "max_ms": round(lat.last().copied()),
        "dispatch_lag_p99_ms": round(percentile(&lags, 99.0)),
        "dispatch_lag_max_ms": round(lags.last().copied()),
    }))
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "-h" || a == "--help") {
        let _ = writeln!(std::io::stdout().lock(), "{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(std::io::stderr().lock(), "loadgen: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(v) => {
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{v}").and_then(|()| out.flush()).is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr().lock(), "loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 90.0), Some(90.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 99.9), Some(100.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
        let w: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&w, 99.9), Some(999.0));
    }

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_arguments() {
        let a = parse_args(&argv(
            "--url http://127.0.0.1:8080/v1/x --connections 8 --rate 100 --duration 2 --header X-A:b",
        ))
        .unwrap();
        assert_eq!(a.connections, 8);
        assert_eq!(a.method, Method::GET);
        assert_eq!(a.headers.len(), 1);
        assert!(parse_args(&argv("--url http://h/ --rate 0")).is_err());
        assert!(parse_args(&argv("--url https://h/ --rate 10")).is_err());
        assert!(parse_args(&argv("--rate 10")).is_err());
        assert!(parse_args(&argv("--url http://h/ --rate 10 --bogus")).is_err());
    }

    #[test]
    fn dispatch_staggers_requests_over_connections() {
        let (txs, mut rxs): (Vec<_>, Vec<_>) = (0..4).map(|_| mpsc::unbounded_channel()).unzip();
        let t0 = Instant::now();
        let lags = dispatch(
            txs,
            t0,
            1000.0,
            Duration::from_millis(10),
            Duration::from_millis(40),
        );
        assert_eq!(lags.len(), 40);
        for (i, rx) in rxs.iter_mut().enumerate() {
            let mut k = 0;
            while let Ok(job) = rx.try_recv() {
                let want = Duration::from_secs_f64((i + 4 * k) as f64 / 1000.0);
                let got = job.due.duration_since(t0);
                assert!(
                    got.abs_diff(want) < Duration::from_micros(1),
                    "{got:?} vs {want:?}"
                );
                assert_eq!(job.measured, got >= Duration::from_millis(10));
                k += 1;
            }
            assert_eq!(k, 10);
        }
    }

    #[tokio::test]
    async fn drives_a_server_on_schedule() {
        let mock =
            enclave_test_support::MockUpstream::start(enclave_test_support::Behavior::default())
                .await
                .unwrap();
        let url = format!("http://{}/v1/models", mock.addr());
        let args = parse_args(&argv(&format!(
            "--url {url} --connections 4 --rate 200 --duration 0.5 --warmup 0.1"
        )))
        .unwrap();
        let v = run(args).await.unwrap();
        assert_eq!(v["errors"], 0, "{v}");
        assert_eq!(v["completed"], 100, "{v}");
        assert_eq!(v["total_responses"], 120, "{v}");
        assert_eq!(mock.requests(), 120);
        assert!(v["p99_ms"].as_f64().unwrap() > 0.0, "{v}");
    }
}
