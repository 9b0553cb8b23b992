//! The label stage: the session label, the content label and the request's label.
//!
//! - **Session**: `X-Enclave-Classification` (default UNCLASSIFIED), read leniently, must be
//!   within the caller's clearance (level, compartments, nationality).
//! - **Content**: every string of the request is scanned for markings. Markings that mark the
//!   content (banner lines, portion marks that start a paragraph or list item, disguised
//!   markings) roll up into the content label; content above the session label is spillage.
//!   Markings merely discussed in a sentence are an indicator: logged and counted as a
//!   `classified-marking` flag, not spillage.
//! - **Request label**: session ⊔ content. It, too, must be within the clearance and releasable
//!   to the caller's nationality: content the caller may not hold is never sent anywhere.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};

use enclave_label::{Label, Mode, parse_marking, scan};
use enclave_policy::{CLASSIFIED_MARKING_FLAG, Denied, check_content, open_session_at};
use http::{HeaderMap, HeaderName, StatusCode};
use tracing::field;

use crate::ctx::RequestCtx;
use crate::error::{ApiError, denial_text};

/// The request header that sets the session label.
pub const CLASSIFICATION_HEADER: &str = "x-enclave-classification";

/// [`CLASSIFICATION_HEADER`] as a header name.
pub(crate) const CLASSIFICATION: HeaderName = HeaderName::from_static(CLASSIFICATION_HEADER);

/// Opens the session: the header's label within the caller's clearance.
///
/// # Errors
///
/// 400 `invalid_request` for two headers, 400 `invalid_marking` for a bad marking, 403
/// `classification_exceeds_clearance`.
pub(crate) fn session(ctx: &mut RequestCtx, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(caller) = ctx.caller.clone() else {
        tracing::error!("the label stage ran before authentication");
        return Err(ApiError::internal());
    };
    let mut values = headers.get_all(&CLASSIFICATION).iter();
    let first = values.next();
    // SECURITY: two session headers could be read differently along the way; refuse.
    if values.next().is_some() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "The request has more than one X-Enclave-Classification header; send exactly one.",
        )
        .param("X-Enclave-Classification"));
    }
    let label = match first {
        None => Label::unclassified(),
        Some(v) => {
            let text = v.to_str().map_err(|_| {
                ApiError::bad_request(
                    "invalid_marking",
                    "X-Enclave-Classification must be a banner marking in ASCII, e.g. `SECRET//NOFORN`.",
                )
            })?;
            parse_header(text).map_err(|e| ApiError::from(&Denied::InvalidMarking(e)))?
        }
    };
    // SECURITY: only the parse is cached; the clearance check runs on every request.
    let session = open_session_at(&caller.principal, label).map_err(|d| {
        ctx.decide("label", "deny", d.code());
        ApiError::from(&d)
    })?;
    ctx.span.record("session", field::display(session.label()));
    ctx.label = Some(session.label().clone());
    ctx.session = Some(session);
    Ok(())
}

/// Labels the request's content (`text`: every string it carries, as paragraphs) and checks
/// the result against the session and the clearance.
///
/// # Errors
///
/// 403 `spillage_detected` for content marked above the session label; 403
/// `classification_exceeds_clearance` when the content carries a label the caller's clearance
/// does not cover or that is not releasable to the caller's nationality.
pub(crate) fn content(ctx: &mut RequestCtx, text: &str) -> Result<(), ApiError> {
    let (Some(caller), Some(session)) = (ctx.caller.clone(), ctx.session.clone()) else {
        tracing::error!("the content label was read before the session was opened");
        return Err(ApiError::internal());
    };
    let found = scan(text);
    let label = match check_content(&session, &found) {
        Ok(label) => label,
        Err(denied) => {
            if let Denied::SpillageDetected {
                session: s,
                content,
                disguised,
            } = &denied
            {
                // Labels only: never the marked text.
                tracing::warn!(
                    principal = %caller.principal.id,
                    tenant = %caller.principal.tenant,
                    session = %s,
                    content = %content,
                    disguised,
                    "spillage detected: request content is marked above its session label"
                );
            }
            ctx.decide("label", "deny", denied.code());
            return Err(ApiError::from(&denied));
        }
    };
    ctx.span.record("content", field::display(&found.label));
    // SECURITY: the joined label is what travels to a backend and back to the caller; the
    // caller must be cleared for all of it (a GBR national in a REL TO USA, GBR session who
    // pastes NOFORN text must not get it processed).
    if let Err(why) = caller.principal.clearance.check(&label) {
        tracing::warn!(
            principal = %caller.principal.id,
            tenant = %caller.principal.tenant,
            label = %label,
            "request content is marked beyond the caller's clearance"
        );
        ctx.decide("label", "deny", "classification_exceeds_clearance");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "classification_exceeds_clearance",
            format!(
                "The request's content is marked {label}, which exceeds your clearance ({}). It was not sent anywhere; remove that content.",
                denial_text(&why)
            ),
        ));
    }
    if let Some(mentioned) = &found.mentioned {
        // An indicator, not spillage: a marking discussed in a sentence. Its label only — never
        // the text around it.
        tracing::info!(
            principal = %caller.principal.id,
            tenant = %caller.principal.tenant,
            mentioned = %mentioned,
            "a classification marking is discussed in the request"
        );
        ctx.app.metrics.flag(CLASSIFIED_MARKING_FLAG);
        ctx.decide("label", "flag", CLASSIFIED_MARKING_FLAG);
    }
    ctx.content = Some(found.label.clone());
    ctx.label = Some(label);
    ctx.decide("label", "allow", "within_session");
    Ok(())
}

/// The label a session header names, parsed once per distinct header text: clients send the
/// same few headers on every request. Parsing is a pure function of the text, so the cache
/// holds no caller's data; it is cleared when it grows past 1,024 entries.
fn parse_header(text: &str) -> Result<Label, enclave_label::MarkingError> {
    type Cache = HashMap<String, Result<Label, enclave_label::MarkingError>>;
    static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(Default::default);
    if let Some(hit) = CACHE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(text)
    {
        return hit.clone();
    }
    let parsed = parse_marking(text, Mode::Lenient, None).map(|m| m.label);
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    if cache.len() >= 1024 {
        cache.clear();
    }
    cache.insert(text.to_owned(), parsed.clone());
    parsed
}
