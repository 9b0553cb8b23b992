//! Closed-loop load: each connection sends its next request as soon as the last one is answered.

use std::net::SocketAddr;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::http::Conn;
use crate::stats::{Summary, nanos};

/// A request that takes longer than this counts as an error (and its connection is reopened).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a closed-loop run measured.
#[derive(Debug, Default)]
pub(crate) struct ClosedRun {
    /// Responses received (any status).
    pub(crate) responses: u64,
    /// Responses outside 200–299, failed exchanges and timeouts.
    pub(crate) errors: u64,
    /// The first error, for the report.
    pub(crate) first_error: Option<String>,
    /// From the common start to the end of the last response.
    pub(crate) wall: Duration,
    /// Latency of each response: from sending the request to the end of its body.
    pub(crate) latency: Summary,
}

impl ClosedRun {
    /// Responses per second.
    pub(crate) fn rate(&self) -> f64 {
        per_second(self.responses, self.wall)
    }
}

/// Responses per second over a wall time.
pub(crate) fn per_second(n: u64, wall: Duration) -> f64 {
    #[expect(
        clippy::cast_precision_loss,
        reason = "request counts stay far below 2^52"
    )]
    let n = n as f64;
    n / wall.as_secs_f64().max(1e-9)
}

/// Per-thread results.
#[derive(Default)]
struct Part {
    latencies: Vec<u64>,
    responses: u64,
    errors: u64,
    first_error: Option<String>,
    last_end: Option<Instant>,
}

/// Runs `connections` keep-alive connections on `threads` threads (each its own single-threaded
/// runtime) for `duration`, all starting together once every connection is open.
pub(crate) fn run(
    addr: SocketAddr,
    request: Arc<[u8]>,
    connections: usize,
    threads: usize,
    duration: Duration,
) -> anyhow::Result<ClosedRun> {
    let threads = threads.clamp(1, connections.max(1));
    let barrier = Arc::new(Barrier::new(threads + 1));
    let start_at = Arc::new(Mutex::new(None::<Instant>));
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let share = connections / threads + usize::from(t < connections % threads);
        let (barrier, start_at, request) = (barrier.clone(), start_at.clone(), request.clone());
        handles.push(std::thread::spawn(move || -> anyhow::Result<Part> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let conns = rt.block_on(async {
                let mut v = Vec::with_capacity(share);
                for _ in 0..share {
                    v.push(Conn::connect(addr, None).await);
                }
                v.into_iter().collect::<anyhow::Result<Vec<_>>>()
            });
            // Reach the barrier even after a failure, or the other threads wait forever.
            barrier.wait();
            let conns = conns?;
            let start = start_at
                .lock()
                .ok()
                .and_then(|s| *s)
                .context("no start time")?;
            let end = start + duration;
            rt.block_on(async move {
                let mut tasks = Vec::with_capacity(conns.len());
                for conn in conns {
                    tasks.push(tokio::spawn(drive(addr, conn, request.clone(), end)));
                }
                let mut part = Part::default();
                for task in tasks {
                    let p = task.await?;
                    part.latencies.extend(p.latencies);
                    part.responses += p.responses;
                    part.errors += p.errors;
                    part.last_end = part.last_end.max(p.last_end);
                    if part.first_error.is_none() {
                        part.first_error = p.first_error;
                    }
                }
                Ok(part)
            })
        }));
    }
    let start = Instant::now() + Duration::from_millis(5);
    if let Ok(mut s) = start_at.lock() {
        *s = Some(start);
    }
    barrier.wait();
    let mut all = Part::default();
    for h in handles {
        let p = h
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        all.latencies.extend(p.latencies);
        all.responses += p.responses;
        all.errors += p.errors;
        all.last_end = all.last_end.max(p.last_end);
        if all.first_error.is_none() {
            all.first_error = p.first_error;
        }
    }
    Ok(ClosedRun {
        responses: all.responses,
        errors: all.errors,
        first_error: all.first_error,
        wall: all
            .last_end
            .map_or(duration, |e| e.saturating_duration_since(start)),
        latency: Summary::of(all.latencies),
    })
}

/// One connection's loop until `end`.
async fn drive(addr: SocketAddr, conn: Conn, request: Arc<[u8]>, end: Instant) -> Part {
    let mut part = Part {
        latencies: Vec::with_capacity(1 << 16),
        ..Part::default()
    };
    let mut conn = Some(conn);
    while Instant::now() < end {
        let t = Instant::now();
        let attempt = async {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => conn.insert(Conn::connect(addr, None).await?),
            };
            c.exchange(&request).await
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, attempt).await {
            Ok(Ok(r)) => {
                let done = Instant::now();
                part.latencies.push(nanos(done - t));
                part.responses += 1;
                part.last_end = Some(done);
                if !(200..300).contains(&r.status) {
                    part.errors += 1;
                    part.first_error
                        .get_or_insert_with(|| format!("status {}", r.status));
                }
                if !r.keep_alive {
                    conn = None;
                }
            }
            Ok(Err(e)) => {
                part.errors += 1;
                part.first_error.get_or_insert_with(|| format!("{e:#}"));
                conn = None;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => {
                part.errors += 1;
                part.first_error
                    .get_or_insert_with(|| format!("no answer within {REQUEST_TIMEOUT:?}"));
                conn = None;
            }
        }
    }
    part
}
