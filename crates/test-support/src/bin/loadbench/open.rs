//! Open-loop load: requests go out on a fixed schedule whatever the server does.
//!
//! Request `n` (counting from 0 over all connections) is due at `t0 + n/R` on connection
//! `n mod C`, so each connection sends at `R/C` per second, staggered by `1/R` from its neighbour.
//! A dispatcher thread wakes at each due time (`nanosleep`, not tokio's 1 ms timer wheel) and
//! hands the due time to its connection; a connection still busy with an earlier request queues
//! it. Latency runs from the **due** time to the end of the response body, so a stalled
//! connection is charged for the requests it could not send (coordinated omission corrected, as
//! in wrk2). After the last due time the connections get `drain` to finish what they have
//! queued; requests still unanswered then count as errors (`unfinished`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::closed::per_second;
use crate::http::Conn;
use crate::stats::{Summary, nanos, percentile};

/// An open-loop run to make.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// Where to send.
    pub(crate) addr: SocketAddr,
    /// The request, serialized.
    pub(crate) request: Arc<[u8]>,
    /// Keep-alive connections (or lanes, with `reconnect`).
    pub(crate) connections: usize,
    /// Requests per second over all connections.
    pub(crate) rate: f64,
    /// How long requests are scheduled.
    pub(crate) duration: Duration,
    /// How long queued requests may take to finish after the last due time.
    pub(crate) drain: Duration,
    /// Open a new connection for every request (and close it after the response).
    pub(crate) reconnect: bool,
}

/// What an open-loop run measured.
#[derive(Debug, Default)]
pub(crate) struct OpenRun {
    /// Responses received (any status).
    pub(crate) responses: u64,
    /// Responses outside 200–299.
    pub(crate) non2xx: u64,
    /// Failed exchanges (connect, send, receive, protocol).
    pub(crate) io_errors: u64,
    /// Requests still unanswered at the drain deadline.
    pub(crate) unfinished: u64,
    /// The first error, for the report.
    pub(crate) first_error: Option<String>,
    /// From the first due time to the end of the last response (at least the scheduled span).
    pub(crate) wall: Duration,
    /// Latency from each request's due time to the end of its response, any status.
    pub(crate) latency: Summary,
    /// How late the dispatcher handed requests to their connections: p99 and max, ms.
    pub(crate) dispatch_lag_p99_ms: f64,
    pub(crate) dispatch_lag_max_ms: f64,
}

impl OpenRun {
    /// Every kind of failure.
    pub(crate) fn errors(&self) -> u64 {
        self.non2xx + self.io_errors + self.unfinished
    }

    /// Responses per second achieved.
    pub(crate) fn rate(&self) -> f64 {
        per_second(self.responses, self.wall)
    }
}

/// What one connection saw.
#[derive(Debug, Default)]
struct ConnStats {
    latencies: Vec<u64>,
    responses: u64,
    non2xx: u64,
    io_errors: u64,
    unfinished: u64,
    last_end: Option<Instant>,
    first_error: Option<String>,
}

/// Runs the plan on a thread of its own (one single-threaded runtime) plus the dispatcher.
pub(crate) fn run(plan: &Plan) -> anyhow::Result<OpenRun> {
    let plan = plan.clone();
    std::thread::spawn(move || -> anyhow::Result<OpenRun> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(run_async(plan))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the open-loop thread panicked"))?
}

async fn run_async(plan: Plan) -> anyhow::Result<OpenRun> {
    // Open every connection before the clock starts.
    let mut conns = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        conns.push(if plan.reconnect {
            None
        } else {
            Some(Conn::connect(plan.addr, None).await?)
        });
    }
    let t0 = Instant::now() + Duration::from_millis(20);
    let deadline = tokio::time::Instant::from_std(t0 + plan.duration + plan.drain);
    let mut senders = Vec::with_capacity(plan.connections);
    let mut tasks = Vec::with_capacity(plan.connections);
    for conn in conns {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        tasks.push(tokio::spawn(connection(
            plan.addr,
            plan.request.clone(),
            plan.reconnect,
            conn,
            rx,
            deadline,
        )));
    }
    let (rate, duration) = (plan.rate, plan.duration);
    let dispatcher = tokio::task::spawn_blocking(move || dispatch(senders, t0, rate, duration));
    let mut all = ConnStats::default();
    for task in tasks {
        let st = task.await?;
        all.latencies.extend(st.latencies);
        all.responses += st.responses;
        all.non2xx += st.non2xx;
        all.io_errors += st.io_errors;
        all.unfinished += st.unfinished;
        all.last_end = all.last_end.max(st.last_end);
        if all.first_error.is_none() {
            all.first_error = st.first_error;
        }
    }
    let mut lags = dispatcher.await?;
    lags.sort_unstable();
    let lag_ms =
        |p| percentile(&lags, p).map_or(0.0, |n| Duration::from_nanos(n).as_secs_f64() * 1e3);
    Ok(OpenRun {
        responses: all.responses,
        non2xx: all.non2xx,
        io_errors: all.io_errors,
        unfinished: all.unfinished,
        first_error: all.first_error,
        wall: all
            .last_end
            .map_or(duration, |e| e.saturating_duration_since(t0).max(duration)),
        latency: Summary::of(all.latencies),
        dispatch_lag_p99_ms: lag_ms(99.0),
        dispatch_lag_max_ms: lag_ms(100.0),
    })
}

async fn connection(
    addr: SocketAddr,
    request: Arc<[u8]>,
    reconnect: bool,
    mut conn: Option<Conn>,
    mut jobs: mpsc::UnboundedReceiver<Instant>,
    deadline: tokio::time::Instant,
) -> ConnStats {
    let mut st = ConnStats {
        latencies: Vec::with_capacity(1 << 12),
        ..ConnStats::default()
    };
    while let Some(due) = jobs.recv().await {
        let attempt = async {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => conn.insert(Conn::connect(addr, None).await?),
            };
            c.exchange(&request).await
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(r)) => {
                let end = Instant::now();
                st.responses += 1;
                st.latencies.push(nanos(end.saturating_duration_since(due)));
                st.last_end = Some(end);
                if !(200..300).contains(&r.status) {
                    st.non2xx += 1;
                    st.first_error
                        .get_or_insert_with(|| format!("status {}", r.status));
                }
                if reconnect || !r.keep_alive {
                    conn = None;
                }
            }
            Ok(Err(e)) => {
                conn = None;
                st.io_errors += 1;
                st.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(_) => {
                // Past the drain deadline: this request and everything still queued is lost.
                jobs.close();
                let mut lost = 1;
                while jobs.try_recv().is_ok() {
                    lost += 1;
                }
                st.unfinished += lost;
                st.first_error
                    .get_or_insert_with(|| "unanswered at the drain deadline".to_owned());
                break;
            }
        }
    }
    st
}

/// Hands each request's due time to its connection on schedule; returns how late (ns) each
/// hand-over was.
fn dispatch(
    senders: Vec<mpsc::UnboundedSender<Instant>>,
    t0: Instant,
    rate: f64,
    end: Duration,
) -> Vec<u64> {
    let mut lags = Vec::new();
    let mut n: u64 = 0;
    let conns = senders.len().max(1) as u64;
    loop {
        #[expect(
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
        let i = usize::try_from(n % conns).unwrap_or(0);
        if let Some(tx) = senders.get(i) {
            // A connection that gave up (past its deadline) no longer listens; nothing to do.
            let _ = tx.send(due);
        }
        lags.push(nanos(Instant::now().saturating_duration_since(due)));
        n += 1;
    }
    lags
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request_bytes;

    #[test]
    fn dispatch_staggers_requests_over_connections() {
        let (txs, mut rxs): (Vec<_>, Vec<_>) = (0..4).map(|_| mpsc::unbounded_channel()).unzip();
        let t0 = Instant::now();
        let lags = dispatch(txs, t0, 1000.0, Duration::from_millis(40));
        assert_eq!(lags.len(), 40);
        for (i, rx) in rxs.iter_mut().enumerate() {
            let mut k = 0;
            while let Ok(due) = rx.try_recv() {
                let want = Duration::from_secs_f64((i + 4 * k) as f64 / 1000.0);
                let got = due.duration_since(t0);
                assert!(
                    got.abs_diff(want) < Duration::from_micros(1),
                    "{got:?} vs {want:?}"
                );
                k += 1;
            }
            assert_eq!(k, 10);
        }
    }

    #[test]
    fn drives_a_server_on_schedule_with_and_without_keep_alive() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mock = rt
            .block_on(enclave_test_support::MockUpstream::start(
                enclave_test_support::Behavior::default(),
            ))
            .unwrap();
        let request: Arc<[u8]> =
            request_bytes("GET", &mock.addr().to_string(), "/v1/models", &[], b"").into();
        for reconnect in [false, true] {
            let plan = Plan {
                addr: mock.addr(),
                request: request.clone(),
                connections: 4,
                rate: 200.0,
                duration: Duration::from_millis(500),
                drain: Duration::from_secs(5),
                reconnect,
            };
            let r = run(&plan).unwrap();
            assert_eq!(r.errors(), 0, "{r:?}");
            assert_eq!(r.responses, 100, "{r:?}");
            assert!(r.latency.p99 > 0.0, "{r:?}");
        }
        assert_eq!(mock.requests(), 200);
    }
}
