//! The remember stage: what is stored of a turn.
//!
//! A seam until the stateful runtime lands (issue 14): it will store the turn and queue memory
//! extraction, labeled with the request's label (`ctx.label`), encrypted with the tenant's key.

use enclave_api::ChatRequest;

use crate::ctx::RequestCtx;

/// Stores what is kept of the turn (nothing yet).
pub(crate) fn run(_ctx: &mut RequestCtx, _req: &ChatRequest) {}
