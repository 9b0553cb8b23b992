//! The authenticate stage: who is calling, and whether their rate limit lets them in.

use http::{HeaderMap, header};

use crate::ctx::RequestCtx;
use crate::error::ApiError;
use crate::identity::PeerCert;

/// Authenticates the caller (bearer API key or JWT, else the client certificate) and takes one
/// request from its rate limit.
///
/// # Errors
///
/// 400 `invalid_request` for two `Authorization` headers; 401 `invalid_api_key` for missing or
/// bad credentials; 403 `missing_claim` for an identity without a required claim; 429
/// `rate_limited`.
pub(crate) async fn run(
    ctx: &mut RequestCtx,
    headers: &HeaderMap,
    peer: &PeerCert,
) -> Result<(), ApiError> {
    // SECURITY: two credentials in one request could be read differently by a proxy in front
    // and by Enclave; refuse rather than pick one.
    if headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            "The request has more than one Authorization header; send exactly one.",
        )
        .param("Authorization"));
    }
    let caller = ctx.app.auth.authenticate(headers, peer).await?;
    ctx.span
        .record("tenant", caller.principal.tenant.as_str())
        .record("principal", caller.principal.id.as_str())
        .record("auth", caller.method);
    ctx.decide("authenticate", "allow", caller.method);
    ctx.app.limiter.admit(&caller.rate_key)?;
    ctx.caller = Some(caller);
    Ok(())
}
