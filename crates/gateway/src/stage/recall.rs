//! The recall stage: memories the session may see, joined into the request.
//!
//! When memory is on for the request (`[memory] default`, overridden by `X-Enclave-Memory:
//! on|off`), the caller's memories most relevant to its last user message — only those whose
//! label the session label dominates, only of its tenant and principal — are added as one
//! system message, each with its portion marking, and their labels are joined into the
//! request's label (`ctx.label`) before routing, so the request goes only to a backend
//! accredited for what it now carries.
//!
//! Recalled text is screened like retrieved content: a memory in which the tenant's safety
//! engine's inline stage (detectors and inline classifiers) scores `prompt-injection` at or
//! above the pack's threshold for input is left out of the context, recorded as a decision on
//! the request and logged by id, never with its text.
//!
//! When this replica's memory index is stale (its change feed unread for too long, see
//! `memory_api`), nothing is recalled: the request goes on without memories, with the decision
//! `recall`/`deny`/`memory_unavailable` on it.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use enclave_api::json::Json;
use enclave_api::{ChatRequest, Message, Part, Role};
use enclave_memory::Viewer;
use enclave_safety::{Category, Direction};
use http::{HeaderMap, HeaderName};

use crate::ctx::RequestCtx;
use crate::error::ApiError;
use crate::memory_api::QueryEmbedding;

/// The request header that turns memory on or off for one request.
pub const MEMORY_HEADER: &str = "x-enclave-memory";

const MEMORY: HeaderName = HeaderName::from_static(MEMORY_HEADER);

/// Whether memory is on for this request: the header if present, else the configured default.
///
/// # Errors
///
/// 400 `invalid_request` for two headers or a value other than `on` / `off`.
pub(crate) fn memory_on(ctx: &RequestCtx, headers: &HeaderMap) -> Result<bool, ApiError> {
    let mut values = headers.get_all(&MEMORY).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "The request has more than one X-Enclave-Memory header; send exactly one.",
        )
        .param("X-Enclave-Memory"));
    }
    match first.map(|v| v.as_bytes()) {
        None => Ok(ctx.app.memory.config().default_on),
        Some(b"on") => Ok(true),
        Some(b"off") => Ok(false),
        Some(_) => Err(ApiError::bad_request(
            "invalid_request",
            "X-Enclave-Memory must be `on` or `off`.",
        )
        .param("X-Enclave-Memory")),
    }
}

/// What the recall stage settles before the input screen: whether memory is on for the request,
/// and the embedding of its query, already under way on the model's worker while the screen
/// runs (a screen that refuses the request drops it: a job the worker has not reached is
/// skipped).
#[derive(Debug)]
pub(crate) struct Recall {
    on: bool,
    query: Option<(String, QueryEmbedding)>,
}

/// Whether memory is on and, if so, starts embedding the last user message.
///
/// # Errors
///
/// As [`memory_on`].
pub(crate) fn begin(
    ctx: &RequestCtx,
    headers: &HeaderMap,
    req: &ChatRequest,
) -> Result<Recall, ApiError> {
    if !memory_on(ctx, headers)? {
        return Ok(Recall {
            on: false,
            query: None,
        });
    }
    let query = last_user_text(req).map(|text| {
        let embedding = ctx.app.memory.begin_query(&text);
        (text, embedding)
    });
    Ok(Recall { on: true, query })
}

/// Adds recalled memories to `req` when memory is on ([`begin`]); returns whether it is (the
/// remember stage stores the turn only then).
///
/// # Errors
///
/// 500 when the session is not open (a bug in the pipeline's order).
pub(crate) async fn run(
    ctx: &mut RequestCtx,
    recall: Recall,
    req: &mut ChatRequest,
) -> Result<bool, ApiError> {
    if !recall.on {
        return Ok(false);
    }
    let (Some(caller), Some(session)) = (ctx.caller.clone(), ctx.session.clone()) else {
        tracing::error!("the recall stage ran before the session was opened");
        return Err(ApiError::internal());
    };
    let Some((query, embedding)) = recall.query else {
        return Ok(true);
    };
    let service = Arc::clone(&ctx.app.memory);
    let config = service.config();
    // SECURITY: the viewer is the session, not the request's label: recall never reads above
    // what the caller opened the session at.
    let viewer = Viewer {
        principal: caller.principal.id.as_str(),
        label: session.label(),
        namespace: None,
    };
    let Ok(hits) = service
        .search_with(
            caller.principal.tenant.as_str(),
            &viewer,
            &query,
            embedding,
            config.recall_limit,
        )
        .await
    else {
        // SECURITY: a stale index may still hold what another replica deleted: nothing is
        // recalled rather than that; the request goes on without memories, and says so.
        ctx.decide("recall", "deny", "memory_unavailable");
        return Ok(true);
    };
    if hits.is_empty() {
        ctx.decide("recall", "allow", "nothing_recalled");
        return Ok(true);
    }
    let mut text = String::from(
        "Memories of this user from earlier conversations, newest facts first where they \
         conflict, each with its classification marking. Use them only where relevant:\n",
    );
    let mut label = ctx.answer_label();
    let mut used = 0usize;
    let engine = ctx.app.screens.for_tenant(caller.principal.tenant.as_str());
    let injection = engine
        .pack()
        .rule(Direction::Input, Category::PromptInjection)
        .threshold;
    let mut omitted = 0usize;
    for h in &hits {
        let line = format!("- {} {}\n", h.memory.label.portion(), h.memory.content);
        if text.len() + line.len() > config.recall_max_chars && used > 0 {
            break;
        }
        // SECURITY: a stored memory is text someone wrote earlier, not the caller's prompt
        // now: one that reads as an injection is not put in front of the model (whatever the
        // pack does with an injection in a prompt, which the caller sees and answers for).
        // What no longer fits the recall budget is not screened at all.
        let score = engine
            .inline(&h.memory.content)
            .scores
            .get(Category::PromptInjection);
        if score >= injection {
            tracing::warn!(
                memory = %h.memory.id,
                category = Category::PromptInjection.as_str(),
                score,
                "a recalled memory reads as a prompt injection: left out of the context"
            );
            omitted += 1;
            continue;
        }
        // INVARIANT: the session dominates every hit (the index filtered by it), so the join
        // stays within the clearance the session was checked against.
        label.join_assign(&h.memory.label);
        text.push_str(&line);
        used += 1;
    }
    if omitted > 0 {
        ctx.decide("recall", "deny", "prompt_injection");
    }
    if used == 0 {
        ctx.decide("recall", "allow", "nothing_recalled");
        return Ok(true);
    }
    inject(req, &text)?;
    ctx.label = Some(label);
    ctx.decide("recall", "allow", "recalled");
    tracing::debug!(recalled = used, omitted, "memories recalled");
    Ok(true)
}

/// The text of the last user message, if it has any.
pub(crate) fn last_user_text(req: &ChatRequest) -> Option<String> {
    let m = req.messages.iter().rev().find(|m| m.role == Role::User)?;
    let text = m.text();
    (!text.trim().is_empty()).then_some(text)
}

/// Adds `text` as a system message after the leading system/developer messages, in the typed
/// request and in the bytes sent to backends that speak the format.
fn inject(req: &mut ChatRequest, text: &str) -> Result<(), ApiError> {
    let at = req
        .messages
        .iter()
        .take_while(|m| matches!(m.role, Role::System | Role::Developer))
        .count();
    let raw = std::str::from_utf8(&req.raw).map_err(|_| ApiError::internal())?;
    let mut json = Json::parse(raw).map_err(|_| ApiError::internal())?;
    let Json::Object(members) = &mut json else {
        return Err(ApiError::internal());
    };
    let Some((_, Json::Array(messages))) = members.iter_mut().find(|(k, _)| k == "messages") else {
        return Err(ApiError::internal());
    };
    let message = Json::Object(vec![
        (Cow::Borrowed("role"), Json::String(Cow::Borrowed("system"))),
        (Cow::Borrowed("content"), Json::String(Cow::Borrowed(text))),
    ]);
    messages.insert(at.min(messages.len()), message);
    let bytes = Bytes::from(json.to_vec());
    req.raw = bytes;
    req.messages.insert(
        at,
        Message {
            role: Role::System,
            content: vec![Part::Text(text.to_owned())],
            name: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
        },
    );
    enclave_api::json::push_paragraph(&mut req.text, text);
    Ok(())
}
