//! The generate stage: the answer, from the first candidate backend that gives one.

use std::sync::Arc;

use enclave_api::{ChatRequest, Embeddings, EmbeddingsRequest};
use enclave_models::{BackendError, Call, Candidate, ChatAnswer, SendFailure, Sent};
use tokio::time::Instant;

use crate::ctx::RequestCtx;
use crate::error::ApiError;
use crate::stage;

/// Sends a chat request to the candidates in turn (retries and fallback only for what did not
/// run) and returns the first answer.
///
/// # Errors
///
/// The API error for the failure that ended the attempts.
pub(crate) async fn chat(
    ctx: &mut RequestCtx,
    candidates: &[Candidate],
    req: &ChatRequest,
) -> Result<ChatAnswer, ApiError> {
    let app = Arc::clone(&ctx.app);
    let call = call(ctx);
    // The prompt counts against the caller's tokens per minute as soon as it is sent (about
    // four bytes a token; the backend's own count settles it at the end).
    ctx.charge((req.text.len() / 4) as u64);
    // No audit commit waits for this request while the backend works.
    let sending = app
        .router
        .send(candidates, &req.model, call.deadline, |backend, model| {
            backend.chat(req, model, &call)
        });
    let sent = stage::audit::away(ctx, sending).await;
    settle(ctx, sent)
}

/// Sends an embeddings request to the candidates in turn.
///
/// # Errors
///
/// The API error for the failure that ended the attempts.
pub(crate) async fn embed(
    ctx: &mut RequestCtx,
    candidates: &[Candidate],
    req: &EmbeddingsRequest,
) -> Result<Embeddings, ApiError> {
    let app = Arc::clone(&ctx.app);
    let call = call(ctx);
    ctx.charge((req.text.len() / 4) as u64);
    // No audit commit waits for this request while the backend works.
    let sending = app
        .router
        .send(candidates, &req.model, call.deadline, |backend, model| {
            backend.embed(req, model, &call)
        });
    let sent = stage::audit::away(ctx, sending).await;
    settle(ctx, sent)
}

fn call(ctx: &RequestCtx) -> Call {
    Call {
        request_id: ctx.id.clone(),
        deadline: Instant::now() + ctx.app.config.limits.request_timeout,
    }
}

/// Records which backend answered (or what failed) and maps a failure to its API error.
fn settle<T>(ctx: &mut RequestCtx, sent: Result<Sent<T>, SendFailure>) -> Result<T, ApiError> {
    let attempts = match &sent {
        Ok(s) => &s.failed_attempts,
        Err(f) => &f.attempts,
    };
    for attempt in attempts {
        let backend = attempt.split(':').next().unwrap_or_default();
        ctx.app.metrics.upstream_error(backend);
        tracing::warn!(attempt = %attempt, "backend attempt failed");
    }
    match sent {
        Ok(s) => {
            ctx.span.record("backend", s.backend.as_str());
            ctx.decide("generate", "allow", s.kind);
            ctx.backend = Some(s.backend);
            Ok(s.answer)
        }
        Err(f) => {
            ctx.backend = Some(f.backend.clone());
            if let BackendError::Credentials { status } = &f.last {
                tracing::error!(backend = %f.backend, status, "the backend rejected Enclave's upstream credentials");
            }
            let e = ApiError::from(&f);
            ctx.decide("generate", "deny", e.code.clone());
            Err(e)
        }
    }
}
