//! Response bodies: whole buffers for Enclave's own answers, and upstream bodies streamed
//! frame by frame as they arrive (never buffered), with a hook that sees each frame and the end.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;

/// Errors a response body can end with.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response Enclave sends.
pub type Body = UnsyncBoxBody<Bytes, BodyError>;

/// A body holding `bytes`.
pub fn full(bytes: Bytes) -> Body {
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Sees a streamed body's frames and learns how it ended.
pub trait Observer: Send + 'static {
    /// A data frame passed through.
    fn frame(&mut self, data: &Bytes);
    /// The body ended: `complete` is false when the upstream failed or the client went away.
    fn end(&mut self, complete: bool);
}

/// A body streamed from upstream with an [`Observer`] watching.
pub struct Observed<B: HttpBody, O: Observer> {
    inner: B,
    observer: Option<O>,
}

impl<B: HttpBody, O: Observer> Observed<B, O> {
    /// Wraps `inner`.
    pub fn new(inner: B, observer: O) -> Observed<B, O> {
        Observed {
            inner,
            observer: Some(observer),
        }
    }
}

impl<B, O> HttpBody for Observed<B, O>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BodyError>,
    O: Observer + Unpin,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(o)) = (frame.data_ref(), this.observer.as_mut()) {
                    o.frame(data);
                }
                // A sized body is done after its last frame; hyper may never poll again.
                if this.inner.is_end_stream()
                    && let Some(mut o) = this.observer.take()
                {
                    o.end(true);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(mut o) = this.observer.take() {
                    o.end(false);
                }
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                if let Some(mut o) = this.observer.take() {
                    o.end(true);
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: HttpBody, O: Observer> Drop for Observed<B, O> {
    fn drop(&mut self) {
        // Dropped before the end: the client disconnected. Dropping `inner` (the upstream body)
        // closes the upstream connection, which cancels the upstream request.
        let complete = self.inner.is_end_stream();
        if let Some(mut o) = self.observer.take() {
            o.end(complete);
        }
    }
}
