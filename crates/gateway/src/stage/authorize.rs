//! The authorize stage: may this caller use this route with this content?
//!
//! Today it decides about content Enclave cannot inspect. Image, audio and file parts and
//! token-array input are refused while the request body is read (`unsupported_content`) unless
//! the route's policy (`[policy.chat_completions] allow_parts`, `[policy.embeddings]
//! allow_token_arrays`) allows them; when it does, the request keeps at least its declared
//! session label (its content label cannot see into those parts, so it is never lower), and
//! the decision is recorded here for the audit entry.

use enclave_api::{ContentPolicy, PartKind};
use enclave_policy::Role;
use http::StatusCode;

use crate::app::App;
use crate::ctx::RequestCtx;
use crate::error::ApiError;
use crate::route::Route;

/// Which uninspectable content `route` accepts.
pub(crate) fn content_policy(app: &App, route: Route) -> ContentPolicy {
    match route {
        Route::ChatCompletions => app.config.policy.chat_completions,
        Route::Embeddings => app.config.policy.embeddings,
        _ => ContentPolicy::default(),
    }
}

/// Authorizes the request.
///
/// # Errors
///
/// 403 `permission_denied` when a `metrics` principal (a scraper's identity) asks for a model:
/// that role reads the operator surfaces and nothing else.
pub(crate) fn run(ctx: &mut RequestCtx, uninspected: &[PartKind]) -> Result<(), ApiError> {
    if ctx.route.is_model() && ctx.caller().map(|c| c.principal.role) == Some(Role::Metrics) {
        ctx.decide("authorize", "deny", "metrics role");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_denied",
            "The `metrics` role reads /metrics only; it may not use the models.",
        ));
    }
    for kind in uninspected {
        // SECURITY: allowed by the operator's policy; the request's label stays at least the
        // session label (see `label::session`), never lower.
        ctx.decide("authorize", "allow", kind.as_str());
    }
    ctx.decide("authorize", "allow", ctx.route.name());
    Ok(())
}
