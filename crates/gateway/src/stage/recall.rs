//! The recall stage: memories the session may see, joined into the request.
//!
//! A seam until the stateful runtime lands (issue 14): it will add the caller's memories whose
//! label the session label dominates to the request, screen them like retrieved content, and
//! join their labels into the request's label (`ctx.label`) before routing.

use enclave_api::ChatRequest;

use crate::ctx::RequestCtx;
use crate::error::ApiError;

/// Adds recalled memories to `req` (nothing yet).
pub(crate) fn run(_ctx: &mut RequestCtx, _req: &mut ChatRequest) -> Result<(), ApiError> {
    Ok(())
}
