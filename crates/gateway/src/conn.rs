//! Connections: how many may be open, and how long one may stall.
//!
//! - [`Connections`] bounds open connections in total and per client address; a connection
//!   over either cap is answered 503 `overloaded` and closed before any request is read.
//! - [`Watched`] wraps a connection's socket and fails a write that makes no progress for the
//!   idle bound: a client that stops reading a stream (its receive window full) loses its
//!   connection, and with it the stream's admission slot and backend request, instead of
//!   holding them forever. Reads are bounded elsewhere (hyper's header read timeout, the
//!   request body's read deadline).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Open connections, counted in total and per client address.
#[derive(Debug)]
pub struct Connections {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_total: usize,
    max_per_ip: usize,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Slot {
    owner: Arc<Connections>,
    ip: IpAddr,
}

impl Connections {
    /// Caps of `max_total` connections, `max_per_ip` from one address.
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Connections> {
        Arc::new(Connections {
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            max_total,
            max_per_ip,
        })
    }

    /// Admits a connection from `ip`.
    ///
    /// # Errors
    ///
    /// What to tell the client when a cap is reached.
    pub fn admit(self: &Arc<Connections>, ip: IpAddr) -> Result<Slot, &'static str> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(
                "Enclave has as many open connections as it allows. Retry after the time in the Retry-After header.",
            );
        }
        let mut map = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            drop(map);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(
                "Too many open connections from your address. Reuse connections (keep-alive) or close idle ones.",
            );
        }
        *n += 1;
        Ok(Slot {
            owner: Arc::clone(self),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self
            .owner
            .per_ip
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
        drop(map);
        self.owner.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A socket whose writes fail after `idle` without progress.
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    idle: Duration,
    /// Armed while a write is pending; its deadline is the stall's start plus `idle`.
    stall: Option<Pin<Box<Sleep>>>,
}

impl<S> Watched<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, idle: Duration) -> Watched<S> {
        Watched {
            inner,
            idle,
            stall: None,
        }
    }

    /// A write made progress: the stall (if any) is over.
    fn progressed(&mut self) {
        self.stall = None;
    }

    /// A write is pending: fails once it has been pending for `idle`.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let idle = self.idle;
        let timer = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + idle)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing for the idle timeout",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.progressed();
                Poll::Ready(r)
            }
            Poll::Pending => this.stalled(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                this.progressed();
                Poll::Ready(r)
            }
            Poll::Pending => this.stalled(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(r) => {
                this.progressed();
                Poll::Ready(r)
            }
            Poll::Pending => this.stalled(cx).map(Err),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => this.stalled(cx).map(Err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_in_total_and_per_address() {
        let c = Connections::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let s1 = c.admit(a).unwrap();
        let _s2 = c.admit(a).unwrap();
        assert!(c.admit(a).is_err(), "per-address cap");
        let _s3 = c.admit(b).unwrap();
        assert!(c.admit(b).is_err(), "total cap");
        assert_eq!(c.open(), 3);
        drop(s1);
        assert_eq!(c.open(), 2);
        assert!(c.admit(a).is_ok());
    }

    #[tokio::test]
    async fn a_write_that_never_progresses_fails_after_the_idle_bound() {
        use tokio::io::AsyncWriteExt;
        // A pipe whose reader never reads: writes block once its buffer is full.
        let (w, _r) = tokio::io::duplex(64);
        let mut watched = Watched::new(w, Duration::from_millis(100));
        let started = Instant::now();
        let err = watched.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(100));
    }
}
