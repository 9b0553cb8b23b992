//! The audit stage: one record per request, on every exit.
//!
//! A seam until the tamper-evident audit log lands (issue 12): [`record`] is called exactly
//! once per request by [`RequestCtx::finish`](crate::ctx::RequestCtx::finish) or its `Drop`,
//! whatever the exit — an answer, a refusal, a failure, a panic, a client that went away — and
//! [`decision`] before the first byte of a stream. Both return the audit entry's index when one
//! is written, for the `X-Enclave-Audit-Index` receipt.

use crate::ctx::{Outcome, RequestCtx};

/// Records a request's outcome; the entry's index, once the log exists.
pub(crate) fn record(_ctx: &RequestCtx, _outcome: &Outcome) -> Option<u64> {
    None
}

/// Records the decision to stream an answer, before its first byte; the entry's index, once
/// the log exists.
pub(crate) fn decision(_ctx: &RequestCtx) -> Option<u64> {
    None
}
