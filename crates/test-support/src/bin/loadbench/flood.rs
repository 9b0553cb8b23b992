//! The slow-body flood: connections that send a request head announcing a large body, then
//! trickle the body a byte at a time (or never send it), to hold the server's slots.
//!
//! Each connection binds its own loopback source address (`127.0.0.2`, `127.0.0.3`, …: all of
//! 127/8 is loopback on Linux), so a per-IP connection cap meets many clients, not one. What
//! the flood records per connection is what an attacker sees: whether the connection opened,
//! whether the server answered something (a status line), and when the server closed it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpSocket;
use tokio::sync::watch;

/// How long a flood connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A flood to start.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// The server.
    pub(crate) target: SocketAddr,
    /// How many connections.
    pub(crate) connections: usize,
    /// Source addresses, used round-robin.
    pub(crate) sources: Vec<Ipv4Addr>,
    /// The request head (ending in the blank line), announcing a body it does not send at once.
    pub(crate) head: Arc<[u8]>,
    /// Send one body byte this often; `None`: never send any.
    pub(crate) trickle: Option<Duration>,
}

/// How one flood connection ended (or did not).
#[derive(Clone, Debug)]
pub(crate) enum Fate {
    /// It could not be opened (refused, reset or timed out): why.
    NotOpened(String),
    /// The server closed it (FIN, reset, or a failed write) this long after the flood began;
    /// with the status it answered first, if any.
    Closed(Duration, Option<u16>),
    /// Still open when the flood stopped; with the status it answered, if any.
    Open(Option<u16>),
}

/// A running flood.
pub(crate) struct Flood {
    stop: watch::Sender<bool>,
    thread: std::thread::JoinHandle<anyhow::Result<Vec<Fate>>>,
    /// When the connections started opening.
    pub(crate) started: Instant,
    opened: Arc<std::sync::atomic::AtomicUsize>,
}

impl Flood {
    /// Starts the flood on a thread of its own (one single-threaded runtime).
    pub(crate) fn start(plan: &Plan) -> Flood {
        let (stop, stopped) = watch::channel(false);
        let started = Instant::now();
        let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (plan, counter) = (plan.clone(), opened.clone());
        let thread = std::thread::spawn(move || -> anyhow::Result<Vec<Fate>> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let mut tasks = Vec::with_capacity(plan.connections);
                for i in 0..plan.connections {
                    let source = plan
                        .sources
                        .get(i % plan.sources.len().max(1))
                        .copied()
                        .unwrap_or(Ipv4Addr::LOCALHOST);
                    tasks.push(tokio::spawn(connection(
                        plan.clone(),
                        source,
                        started,
                        stopped.clone(),
                        counter.clone(),
                    )));
                }
                let mut fates = Vec::with_capacity(tasks.len());
                for t in tasks {
                    fates.push(t.await?);
                }
                Ok(fates)
            })
        });
        Flood {
            stop,
            thread,
            started,
            opened,
        }
    }

    /// Waits until every connection has been tried (opened or failed), up to `limit`.
    pub(crate) fn wait_opened(&self, connections: usize, limit: Duration) -> usize {
        let end = Instant::now() + limit;
        loop {
            let n = self.opened.load(std::sync::atomic::Ordering::Relaxed);
            if n >= connections || Instant::now() >= end {
                return n;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the flood (closing what is still open) and returns each connection's fate.
    pub(crate) fn stop(self) -> anyhow::Result<Vec<Fate>> {
        let _ = self.stop.send(true);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the flood thread panicked"))?
    }
}

async fn connection(
    plan: Plan,
    source: Ipv4Addr,
    started: Instant,
    mut stop: watch::Receiver<bool>,
    tried: Arc<std::sync::atomic::AtomicUsize>,
) -> Fate {
    let opened = async {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((source, 0)))?;
        let stream = socket.connect(plan.target).await?;
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(stream)
    };
    let opened = tokio::time::timeout(CONNECT_TIMEOUT, opened).await;
    tried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut stream = match opened {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Fate::NotOpened(e.kind().to_string()),
        Err(_) => return Fate::NotOpened("timed out".to_owned()),
    };
    let closed = |status| Fate::Closed(started.elapsed(), status);
    if stream.write_all(&plan.head).await.is_err() {
        return closed(None);
    }
    let mut status = None;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let mut next_byte = plan.trickle.map(|t| tokio::time::Instant::now() + t);
    let (mut rd, mut wr) = stream.split();
    loop {
        let at = next_byte;
        let tick = async move {
            match at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.changed() => return Fate::Open(status),
            r = rd.read(&mut buf) => match r {
                Ok(0) | Err(_) => return closed(status),
                Ok(n) => {
                    if status.is_none() && seen.len() < 64 {
                        seen.extend_from_slice(buf.get(..n).unwrap_or_default());
                        status = status_of(&seen);
                    }
                }
            },
            () = tick => {
                if wr.write_all(b" ").await.is_err() {
                    return closed(status);
                }
                next_byte = plan.trickle.map(|t| tokio::time::Instant::now() + t);
            }
        }
    }
}

/// The status code of a response that starts with `HTTP/1.x NNN`.
fn status_of(b: &[u8]) -> Option<u16> {
    let code = b.get(9..12)?;
    if !b.starts_with(b"HTTP/1.") {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// The `n`-th loopback source address from 127.0.0.2 on.
pub(crate) fn source_address(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 2)).saturating_add(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_and_counts_sources() {
        assert_eq!(status_of(b"HTTP/1.1 408 Request Timeout\r\n"), Some(408));
        assert_eq!(status_of(b"HTTP/1.1 4"), None);
        assert_eq!(source_address(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_address(254), Ipv4Addr::new(127, 0, 1, 0));
    }

    #[test]
    fn flood_sees_a_server_that_closes_and_one_that_holds() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        // A server that answers 408 and closes after the head, and one that reads forever.
        let (closer, holder) = rt.block_on(async {
            let closer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let holder = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            (closer, holder)
        });
        let (closer_addr, holder_addr) =
            (closer.local_addr().unwrap(), holder.local_addr().unwrap());
        rt.spawn(async move {
            loop {
                let (mut s, _) = closer.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut b = [0u8; 256];
                    let _ = s.read(&mut b).await;
                    let _ = s.write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n").await;
                });
            }
        });
        rt.spawn(async move {
            loop {
                let (mut s, _) = holder.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut b = [0u8; 256];
                    while s.read(&mut b).await.is_ok_and(|n| n > 0) {}
                });
            }
        });
        let plan = |target| Plan {
            target,
            connections: 6,
            // Tests keep to 127.0.0.1; the benchmark spreads over 127.0.0.2 and up.
            sources: vec![Ipv4Addr::LOCALHOST],
            head: Arc::from(&b"POST / HTTP/1.1\r\ncontent-length: 100\r\n\r\n"[..]),
            trickle: Some(Duration::from_millis(50)),
        };
        let f = Flood::start(&plan(closer_addr));
        assert_eq!(f.wait_opened(6, Duration::from_secs(5)), 6);
        std::thread::sleep(Duration::from_millis(300));
        let fates = f.stop().unwrap();
        assert!(
            fates
                .iter()
                .all(|f| matches!(f, Fate::Closed(_, Some(408)))),
            "{fates:?}"
        );
        let f = Flood::start(&plan(holder_addr));
        assert_eq!(f.wait_opened(6, Duration::from_secs(5)), 6);
        std::thread::sleep(Duration::from_millis(300));
        let fates = f.stop().unwrap();
        assert!(
            fates.iter().all(|f| matches!(f, Fate::Open(None))),
            "{fates:?}"
        );
    }
}
