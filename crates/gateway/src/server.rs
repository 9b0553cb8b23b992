//! The listener: plain TCP or TLS (optionally with client certificates), HTTP/1.1 with
//! keep-alive and TCP_NODELAY, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::app::{App, StartError};
use crate::config::Config;
use crate::conn::Watched;
use crate::identity::{self, PeerCert};
use crate::pipeline;

/// A bound, ready gateway.
pub struct Server {
    listener: TcpListener,
    app: Arc<App>,
    tls: Option<(TlsAcceptor, Arc<enclave_auth::mtls::ServerTls>)>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Builds the application from `config` and binds its listen address (port 0 picks one).
    ///
    /// # Errors
    ///
    /// [`StartError`] naming what failed.
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        let tls = match &config.tls {
            Some(t) => Some(
                identity::tls_listener(t).map_err(|e| StartError::Setup(format!("tls: {e}")))?,
            ),
            None => None,
        };
        let listen = config.listen;
        let app = App::build(config).await?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: listen,
                source,
            })?;
        Ok(Server { listener, app, tls })
    }

    /// The address actually bound.
    ///
    /// # Errors
    ///
    /// When the socket cannot say.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The shared application state (metrics, store) — for tests and the start-up message.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Whether the listener speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves on the current runtime until `shutdown` completes, then stops accepting and lets
    /// in-flight requests finish within the configured grace period.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server { listener, app, tls } = self;
        accept_loop(listener, Arc::clone(&app), tls.map(Arc::new), shutdown).await;
        stop_local_models(&app);
        // Write the queued audit entries and a final checkpoint, then close the database so
        // nothing durable is left in flight.
        app.audit.shutdown().await;
        app.store.close().await;
    }
}

/// The period of each event loop's heartbeat timer (see `accept_loop`).
const HEARTBEAT: Duration = Duration::from_secs(1);

type Tls = Arc<(TlsAcceptor, Arc<enclave_auth::mtls::ServerTls>)>;

/// Accepts connections on `listener` until `shutdown`, then drains them.
async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        // Bounds the wait for a request's headers, and so an idle keep-alive connection.
        .header_read_timeout(app.config.limits.header_read_timeout);
    let builder = Arc::new(builder);
    // Every proxied request arms a timer (its deadline, minutes away). Tokio wakes its own
    // event loop through an eventfd whenever a new timer is due before the earliest one it
    // planned for, which, with no other timer pending, is every request at concurrency 1: a
    // system call and a spurious event each. A timer that is always due within a second keeps
    // the plan short, for one wake-up per second.
    let heartbeat = tokio::spawn(async {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
        }
    });
    // Retention: expired responses, conversations and memories are purged in the background.
    let purge = tokio::spawn(crate::responses::purge_loop(Arc::clone(&app)));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                // SECURITY: every connection holds memory and a task; their number is bounded
                // in total and per client address.
                let slot = match app.connections.admit(remote.ip()) {
                    Ok(slot) => slot,
                    Err(why) => {
                        app.metrics.denial("overloaded");
                        tokio::spawn(refuse_connection(stream, why));
                        continue;
                    }
                };
                let app = Arc::clone(&app);
                let builder = Arc::clone(&builder);
                let tls = tls.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    serve_connection(stream, remote, app, builder, tls, watcher).await;
                    drop(slot);
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    heartbeat.abort();
    purge.abort();
    let grace = app.config.limits.shutdown_grace;
    tracing::debug!(
        grace_ms = grace.as_millis() as u64,
        "no new connections; finishing in-flight requests"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing the remaining connections");
    }
}

async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    app: Arc<App>,
    builder: Arc<http1::Builder>,
    tls: Option<Tls>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let idle = app.config.limits.idle_timeout;
    match tls {
        None => {
            let peer = Arc::new(PeerCert::default());
            let svc =
                service_fn(move |req| pipeline::handle(Arc::clone(&app), Arc::clone(&peer), req));
            let conn = builder.serve_connection(TokioIo::new(Watched::new(stream, idle)), svc);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        }
        Some(tls) => {
            let (acceptor, identify) = &*tls;
            let handshake =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await;
            let stream = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let peer = Arc::new(identity::peer_cert(stream.get_ref().1, identify, remote));
            let svc =
                service_fn(move |req| pipeline::handle(Arc::clone(&app), Arc::clone(&peer), req));
            let conn = builder.serve_connection(TokioIo::new(Watched::new(stream, idle)), svc);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        }
    }
}

/// Answers a connection over the caps with 503 `overloaded` and closes it.
async fn refuse_connection(mut stream: TcpStream, why: &'static str) {
    use tokio::io::AsyncWriteExt;
    let body = crate::error::ApiError::overloaded(why).json();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nx-enclave-classification: UNCLASSIFIED\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// Runs a gateway for `config` until Ctrl-C or SIGTERM, on `threads` threads (0 = one per
/// CPU core). Blocks the calling thread, which must not be inside an async runtime.
///
/// Each thread runs its own single-threaded runtime and accepts on the shared listener, so a
/// connection, its request tasks and the upstream connections it uses stay on one thread (the
/// model of nginx's workers): no work stealing, no cross-thread wake-ups on the request path.
/// Shared state (the store, limits, metrics, the embedded models) is in one `Arc<App>`.
///
/// # Errors
///
/// [`StartError`] when it cannot start.
pub fn serve(config: Config, threads: usize) -> Result<(), StartError> {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    } else {
        threads
    };
    let runtime = single_thread_runtime()
        .map_err(|e| StartError::Setup(format!("starting the runtime: {e}")))?;
    let server = runtime.block_on(Server::bind(config))?;
    let signals = runtime
        .block_on(async { ShutdownSignals::install() })
        .map_err(|e| StartError::Setup(format!("installing signal handlers: {e}")))?;
    let addr = server
        .local_addr()
        .map_err(|e| StartError::Setup(e.to_string()))?;
    announce(&server, addr, threads);
    let Server { listener, app, tls } = server;
    let tls = tls.map(Arc::new);
    let std_listener = {
        let _guard = runtime.enter();
        listener
            .into_std()
            .map_err(|e| StartError::Setup(format!("listener: {e}")))?
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for i in 1..threads {
        let listener = std_listener
            .try_clone()
            .map_err(|e| StartError::Setup(format!("listener: {e}")))?;
        let app = Arc::clone(&app);
        let tls = tls.clone();
        let stop = stop_rx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("enclave-{i}"))
            .spawn(move || {
                let runtime = match single_thread_runtime() {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "worker runtime failed to start");
                        return;
                    }
                };
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(l) => accept_loop(l, app, tls, stopped(stop)).await,
                        Err(e) => tracing::error!(error = %e, "worker listener failed"),
                    }
                });
                // The grace is over: drop what is left (connections past it, a tokenizing
                // task on the blocking pool) instead of waiting for it.
                runtime.shutdown_background();
            })
            .map_err(|e| StartError::Setup(format!("starting worker thread: {e}")))?;
        workers.push(handle);
    }
    runtime.block_on(async {
        let listener = TcpListener::from_std(std_listener)
            .map_err(|e| StartError::Setup(format!("listener: {e}")))?;
        tokio::spawn(async move {
            signals.recv().await;
            tracing::info!("shutting down: no new connections; finishing in-flight requests");
            let _ = stop_tx.send(true);
        });
        accept_loop(listener, Arc::clone(&app), tls, stopped(stop_rx)).await;
        Ok::<(), StartError>(())
    })?;
    for w in workers {
        let _ = w.join();
    }
    stop_local_models(&app);
    runtime.block_on(async {
        app.audit.shutdown().await;
        app.store.close().await;
    });
    // Nothing left here may hold the exit past the grace: the embedded models' worker threads
    // are never joined (the process ends them), and tasks still on the blocking pool are left.
    runtime.shutdown_timeout(Duration::from_millis(100));
    tracing::info!("stopped");
    Ok(())
}

/// After the grace period: ends every local generation still running (connections past the
/// grace were dropped, and with them their clients) so the chat worker stops spending steps.
fn stop_local_models(app: &App) {
    if let Some(local) = &app.local {
        local.shutdown();
    }
}

fn single_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn announce(server: &Server, addr: SocketAddr, threads: usize) {
    let scheme = if server.is_tls() { "https" } else { "http" };
    let app = server.app();
    let source = app.config.source.as_ref().map_or_else(
        || "embedded defaults".to_owned(),
        |p| p.display().to_string(),
    );
    tracing::info!(
        url = %format!("{scheme}://{addr}/v1"),
        config = %source,
        data_dir = %app.data_dir().display(),
        storage = app.store.backend_name(),
        threads,
        "Enclave is listening"
    );
    let backends = app.describe_backends();
    if backends.is_empty() {
        tracing::warn!(
            "no backends configured: /v1/models lists nothing and model requests get 404 model_not_found; add [[backends]] to the config"
        );
    }
    for b in backends {
        tracing::info!(backend = %b, "backend");
    }
}

/// The shutdown signals (SIGINT/Ctrl-C and SIGTERM), installed when this is created, so a
/// signal that arrives before the server waits for it still shuts it down gracefully.
pub struct ShutdownSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Installs the handlers. Must run inside a runtime.
    ///
    /// # Errors
    ///
    /// When the handlers cannot be installed.
    pub fn install() -> std::io::Result<ShutdownSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(ShutdownSignals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignals {})
    }

    /// Completes when a signal arrives.
    pub async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => tracing::info!("interrupt received"),
            _ = self.term.recv() => tracing::info!("SIGTERM received"),
        }
        #[cfg(not(unix))]
        {
            let _ = &mut self;
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("interrupt received");
        }
    }
}
