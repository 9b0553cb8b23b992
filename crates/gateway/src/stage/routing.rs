//! The route stage: the backends that may receive the request.

use enclave_label::Label;
use enclave_models::Candidate;

use crate::ctx::RequestCtx;
use crate::error::ApiError;

/// The backends serving `model` whose accreditation permits the request's label, in the order
/// to try them.
///
/// # Errors
///
/// 404 `model_not_found` when no backend serves the model; 503 `no_accredited_backend` when
/// none of those is accredited for the label.
pub(crate) fn run(ctx: &mut RequestCtx, model: &str) -> Result<Vec<Candidate>, ApiError> {
    // SECURITY: the label routed on is the request's whole label (session ⊔ content ⊔
    // recalled), never the session label alone.
    let label = ctx.label.clone().unwrap_or_else(Label::unclassified);
    match ctx.app.router.candidates(model, &label) {
        Ok(c) => {
            ctx.decide("route", "allow", "accredited_backend");
            Ok(c)
        }
        Err(e) => {
            let e = ApiError::from(e);
            ctx.decide("route", "deny", e.code.clone());
            Err(e)
        }
    }
}
