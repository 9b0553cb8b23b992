//! Bodies: the response body type, and reading a request body within its size and time bounds.
//!
//! A request body larger than `limits.max_body_bytes` is answered 413 — and the rest of it is
//! read and discarded first (within bounds), so that the client, which is still sending, reads
//! the 413 instead of a connection reset that SDKs retry as a network error. A client that asked
//! `Expect: 100-continue` never sends a body Enclave refuses from its `Content-Length`.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, header};
use http_body::Body as _;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use tokio::time::Instant;

use crate::error::ApiError;

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

/// The most bytes of an over-limit body read and discarded so that the 413 reaches the client.
const MAX_DRAIN_BYTES: u64 = 256 * 1024 * 1024;

/// How a body read ended when it did not give a body.
#[derive(Debug)]
pub(crate) struct Refused {
    /// The error to answer.
    pub(crate) error: ApiError,
    /// Whether the connection must close after the answer (unread body bytes remain).
    pub(crate) close: bool,
}

/// Reads a request body of at most `max` bytes, all of it within `timeout`.
///
/// # Errors
///
/// 413 `request_too_large` (after draining what fits the bounds); 400 `invalid_request` when
/// the body did not arrive in time or could not be read.
pub(crate) async fn read(
    headers: &HeaderMap,
    mut incoming: hyper::body::Incoming,
    max: usize,
    timeout: Duration,
) -> Result<Bytes, Refused> {
    let deadline = Instant::now() + timeout;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared
        && len > max as u64
    {
        // SECURITY: the body is refused from its declared length; nothing of it is kept.
        let expects_continue = headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if expects_continue {
            // The client waits for `100 Continue` before sending; it never comes, so nothing
            // is in flight.
            return Err(Refused {
                error: ApiError::too_large(max),
                close: true,
            });
        }
        let drained =
            len <= MAX_DRAIN_BYTES && drain(&mut incoming, MAX_DRAIN_BYTES, deadline).await;
        return Err(Refused {
            error: ApiError::too_large(max),
            close: !drained,
        });
    }
    let mut out = BytesMut::with_capacity(declared.map_or(0, |l| l as usize));
    loop {
        let frame = match tokio::time::timeout_at(deadline, incoming.frame()).await {
            Err(_) => {
                return Err(Refused {
                    error: slow_body(timeout),
                    close: true,
                });
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(Refused {
                    error: ApiError::bad_request(
                        "invalid_request",
                        format!("Could not read the request body: {e}."),
                    ),
                    close: true,
                });
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if out.len() + data.len() > max {
            let drained = drain(&mut incoming, MAX_DRAIN_BYTES, deadline).await;
            return Err(Refused {
                error: ApiError::too_large(max),
                close: !drained,
            });
        }
        out.extend_from_slice(&data);
    }
    Ok(out.freeze())
}

/// Reads and discards the rest of a body, at most `max` bytes before `deadline`. Whether it
/// reached the end.
async fn drain(incoming: &mut hyper::body::Incoming, max: u64, deadline: Instant) -> bool {
    let mut seen = 0u64;
    loop {
        if incoming.is_end_stream() {
            return true;
        }
        match tokio::time::timeout_at(deadline, incoming.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    seen += d.len() as u64;
                    if seen > max {
                        return false;
                    }
                }
            }
            Ok(None) => return true,
            Ok(Some(Err(_))) | Err(_) => return false,
        }
    }
}

fn slow_body(timeout: Duration) -> ApiError {
    ApiError::bad_request(
        "invalid_request",
        format!(
            "The request body did not arrive within {} ms. Send the whole body at once.",
            timeout.as_millis()
        ),
    )
}
