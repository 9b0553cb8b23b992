//! The remember stage: what is kept of a turn as long-term memory.
//!
//! When memory is on for the request, the turn's user statement (its last user message) is
//! queued to be stored as a memory of the caller, labeled with the request's label
//! (`ctx.label`: session ⊔ content ⊔ recalled), sealed with the tenant's key. Storing and
//! embedding run on the memory worker, off the request path; a full queue drops the statement
//! and logs it rather than delay the answer.

use enclave_api::ChatRequest;

use crate::ctx::RequestCtx;
use crate::stage::recall::last_user_text;

/// Queues the turn's user statement as a memory when `memory_on`.
pub(crate) fn run(ctx: &mut RequestCtx, req: &ChatRequest, memory_on: bool) {
    if !memory_on {
        return;
    }
    let Some(caller) = ctx.caller.clone() else {
        return;
    };
    let Some(text) = last_user_text(req) else {
        return;
    };
    let label = ctx.answer_label();
    let queued = ctx.app.memory.remember(
        caller.principal.tenant.as_str(),
        caller.principal.id.as_str(),
        &label,
        &text,
    );
    ctx.decide(
        "remember",
        if queued { "allow" } else { "flag" },
        if queued { "queued" } else { "queue_full" },
    );
}
