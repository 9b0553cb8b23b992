//! The remember stage: what is kept of a turn as long-term memory.
//!
//! When memory is on for the request, the turn's user statement (its last user message) is
//! queued to be stored as a memory of the caller, labeled with the request's label
//! (`ctx.label`: session ⊔ content ⊔ recalled), sealed with the tenant's key. Storing and
//! embedding run on the memory worker, off the request path; a full queue drops the statement
//! and logs it rather than delay the answer.
//!
//! With `[memory] extractor` set, the worker then asks that model for facts about the user
//! from the turn — the statement and, for a whole (not streamed) answer, the screened answer —
//! and stores them as memories that update older ones (`crate::extract`).

use enclave_api::{ChatRequest, Completion};

use crate::ctx::RequestCtx;
use crate::stage::recall::last_user_text;

/// Queues the turn's user statement as a memory when `memory_on`, with the turn's `answer`
/// text when it is known (for the extractor).
pub(crate) fn run(ctx: &mut RequestCtx, req: &ChatRequest, memory_on: bool, answer: Option<&str>) {
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
        answer,
    );
    ctx.decide(
        "remember",
        if queued { "allow" } else { "flag" },
        if queued { "queued" } else { "queue_full" },
    );
}

/// The text of an answer's first choice, if it has any.
pub(crate) fn answer_text(c: &Completion) -> Option<&str> {
    c.choices
        .first()
        .and_then(|c| c.content.as_deref())
        .filter(|t| !t.trim().is_empty())
}
