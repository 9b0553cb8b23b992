//! Keep-alive connections to plain-HTTP upstreams, one pool per thread.
//!
//! The gateway runs one single-threaded runtime per core, so a request, its upstream connection
//! and that connection's task always share a thread. hyper-util's pooled client is built for
//! the general case instead: every request locks a shared pool and hashes the upstream's scheme
//! and authority three times with SipHash (about a tenth of the instructions Enclave spends per
//! proxied request). This pool is a short thread-local list of hyper's connection-level senders,
//! keyed by router and backend: no lock, no hashing. HTTPS upstreams keep the hyper-util client
//! (TLS handshakes dominate there anyway).
//!
//! A connection goes back into the list as soon as its response head has arrived and is taken
//! again once hyper says it is ready for another request (its previous response body fully
//! read); closed connections and connections idle for [`IDLE_TIMEOUT`] are dropped on the way.
//! A request that hyper hands back unsent (the connection closed under it) is sent again on a
//! new connection, as hyper-util's client does.

use std::cell::RefCell;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long an unused connection is kept.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Connections kept per backend and thread at most (busy or idle); past this, a request's new
/// connection closes after its response.
const MAX_PER_KEY: usize = 256;

/// Which backend a connection belongs to: the router's id and the backend's index in it.
pub(crate) type Key = (u64, usize);

struct Pooled {
    key: Key,
    sender: http1::SendRequest<Full<Bytes>>,
    /// When it last carried a request.
    used: Instant,
}

thread_local! {
    static CONNECTIONS: RefCell<Vec<Pooled>> = const { RefCell::new(Vec::new()) };
}

/// Why a request could not be sent or answered.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be opened (nothing was sent).
    Connect(std::io::Error),
    /// The URL has no host to connect to.
    NoHost,
    /// The exchange failed once the connection was open.
    Http(hyper::Error),
    /// hyper-util's client (HTTPS upstreams) failed.
    Client(hyper_util::client::legacy::Error),
}

impl From<hyper_util::client::legacy::Error> for SendError {
    fn from(e: hyper_util::client::legacy::Error) -> SendError {
        SendError::Client(e)
    }
}

impl SendError {
    /// Whether nothing reached the upstream because it could not be connected to.
    pub(crate) fn is_connect(&self) -> bool {
        match self {
            SendError::Connect(_) => true,
            SendError::Client(e) => e.is_connect(),
            SendError::NoHost | SendError::Http(_) => false,
        }
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "connection failed: {e}"),
            SendError::NoHost => f.write_str("the upstream URL has no host"),
            SendError::Http(e) => write!(f, "{e}"),
            SendError::Client(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Connect(e) => e.source(),
            SendError::NoHost => None,
            SendError::Http(e) => std::error::Error::source(e),
            SendError::Client(e) => std::error::Error::source(e),
        }
    }
}

/// Sends `req` (an absolute `http://` URI and a `Host` header) to the backend `key` on a pooled
/// connection of this thread, or a new one opened within `connect_timeout`.
pub(crate) async fn send(
    key: Key,
    mut req: Request<Full<Bytes>>,
    connect_timeout: Duration,
) -> Result<Response<Incoming>, SendError> {
    // On a connection the request line carries the path only; the host and port matter only
    // when a new connection has to be opened.
    let origin = match req.uri().path_and_query() {
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    };
    let absolute = std::mem::replace(req.uri_mut(), origin);
    while let Some(mut sender) = checkout(key) {
        match sender.try_send_request(req).await {
            Ok(resp) => {
                checkin(key, sender);
                return Ok(resp);
            }
            Err(mut e) => match e.take_message() {
                // Not sent: that connection is gone; try the next one.
                Some(unsent) => req = unsent,
                None => return Err(SendError::Http(e.into_error())),
            },
        }
    }
    let host = absolute.host().ok_or(SendError::NoHost)?;
    // `[::1]` in a URL is `::1` to connect to.
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = absolute.port_u16().unwrap_or(80);
    let stream = tokio::time::timeout(connect_timeout, TcpStream::connect((host, port)))
        .await
        .map_err(|_| {
            SendError::Connect(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {} ms", connect_timeout.as_millis()),
            ))
        })?
        .map_err(SendError::Connect)?;
    stream.set_nodelay(true).map_err(SendError::Connect)?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(SendError::Http)?;
    // The connection's task: reads and writes for the sender until either side closes. A
    // response body dropped before its end closes the connection (how a client's disconnect
    // reaches the upstream).
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    let resp = sender.send_request(req).await.map_err(SendError::Http)?;
    checkin(key, sender);
    Ok(resp)
}

/// A connection to `key` ready for a request, dropping closed and expired ones on the way.
fn checkout(key: Key) -> Option<http1::SendRequest<Full<Bytes>>> {
    CONNECTIONS.with(|cell| {
        let mut list = cell.borrow_mut();
        let mut now = None;
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            let p = &list[i];
            if p.key != key {
                continue;
            }
            if p.sender.is_closed() {
                list.swap_remove(i);
                continue;
            }
            if p.sender.is_ready() {
                let now = *now.get_or_insert_with(Instant::now);
                let pooled = list.swap_remove(i);
                if now.saturating_duration_since(pooled.used) < IDLE_TIMEOUT {
                    return Some(pooled.sender);
                }
                // Idle too long: the upstream may be about to close it. Dropping the sender
                // closes the connection.
            }
        }
        None
    })
}

/// Keeps `sender` for later requests to `key`, unless this thread already keeps enough.
fn checkin(key: Key, sender: http1::SendRequest<Full<Bytes>>) {
    if sender.is_closed() {
        return;
    }
    CONNECTIONS.with(|cell| {
        let mut list = cell.borrow_mut();
        if list.iter().filter(|p| p.key == key).count() < MAX_PER_KEY {
            list.push(Pooled {
                key,
                sender,
                used: Instant::now(),
            });
        }
    });
}

/// Connections this thread keeps for `key` (for tests).
#[cfg(test)]
pub(crate) fn kept(key: Key) -> usize {
    CONNECTIONS.with(|cell| cell.borrow().iter().filter(|p| p.key == key).count())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;

    /// A keep-alive HTTP/1.1 server on loopback that counts its connections; a request to
    /// `/close` is answered with `Connection: close`, one to `/slow` with a body that never ends.
    async fn server() -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = service_fn(|req: Request<Incoming>| async move {
                        let mut resp = Response::new(http_body_util::Either::Left(Full::new(
                            Bytes::from_static(b"ok"),
                        )));
                        match req.uri().path() {
                            "/close" => {
                                resp.headers_mut().insert(
                                    http::header::CONNECTION,
                                    http::HeaderValue::from_static("close"),
                                );
                            }
                            "/slow" => *resp.body_mut() = http_body_util::Either::Right(Never),
                            _ => {}
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (port, accepted)
    }

    /// A response body that never ends.
    struct Never;

    impl http_body::Body for Never {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Pending
        }
    }

    fn request(port: u16, path: &str) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(Bytes::from_static(b"{}")));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = format!("http://127.0.0.1:{port}{path}").parse().unwrap();
        req.headers_mut().insert(
            http::header::HOST,
            http::HeaderValue::from_str(&format!("127.0.0.1:{port}")).unwrap(),
        );
        req
    }

    async fn body(resp: Response<Incoming>) -> Bytes {
        resp.into_body().collect().await.unwrap().to_bytes()
    }

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        let (port, accepted) = server().await;
        let key = (u64::MAX, 1);
        for _ in 0..5 {
            let resp = send(key, request(port, "/v1/x"), TIMEOUT).await.unwrap();
            assert_eq!(body(resp).await, "ok");
            tokio::task::yield_now().await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(kept(key), 1);
    }

    #[tokio::test]
    async fn a_closed_or_abandoned_connection_is_replaced() {
        let (port, accepted) = server().await;
        let key = (u64::MAX, 2);
        // The server closes after this response: the next request needs a new connection.
        let resp = send(key, request(port, "/close"), TIMEOUT).await.unwrap();
        assert_eq!(body(resp).await, "ok");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let resp = send(key, request(port, "/"), TIMEOUT).await.unwrap();
        assert_eq!(body(resp).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // A body dropped before its end closes its connection (a client went away): the
        // stream reuses the second connection, and the request after it needs a third.
        let resp = send(key, request(port, "/slow"), TIMEOUT).await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        drop(resp);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let resp = send(key, request(port, "/"), TIMEOUT).await.unwrap();
        assert_eq!(body(resp).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        assert_eq!(kept(key), 1);
    }

    #[tokio::test]
    async fn concurrent_requests_open_their_own_connections() {
        let (port, accepted) = server().await;
        let key = (u64::MAX, 3);
        let (a, b) = tokio::join!(
            send(key, request(port, "/"), TIMEOUT),
            send(key, request(port, "/"), TIMEOUT)
        );
        assert_eq!(body(a.unwrap()).await, "ok");
        assert_eq!(body(b.unwrap()).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        tokio::task::yield_now().await;
        // Both are kept and reused.
        for _ in 0..4 {
            let resp = send(key, request(port, "/"), TIMEOUT).await.unwrap();
            assert_eq!(body(resp).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = send((u64::MAX, 4), request(port, "/"), TIMEOUT)
            .await
            .unwrap_err();
        assert!(err.is_connect(), "{err}");
        let mut no_host = request(port, "/");
        *no_host.uri_mut() = Uri::from_static("/relative");
        let err = send((u64::MAX, 5), no_host, TIMEOUT).await.unwrap_err();
        assert!(matches!(err, SendError::NoHost), "{err}");
    }
}
