//! API errors: one type, and the one place every other crate's refusals and failures become
//! one.
//!
//! `{"error": {"message", "type", "code", "param"}}` with the stable codes of DESIGN.md. Causes
//! that only an operator should see (database errors, upstream details) go to the log, not to
//! the caller. Each `From` impl matches its source exhaustively, so a new variant does not
//! compile until someone picks its status and code.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use enclave_api::{RequestError, RequestErrorKind};
use enclave_models::{BackendError, RouteError, SendFailure};
use enclave_policy::Denied;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{self, Body};

/// A refusal or failure, ready to send.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The stable code (`spillage_detected`, …). Owned only when a backend's own 4xx code is
    /// passed through.
    pub code: Cow<'static, str>,
    /// What happened and what to do.
    pub message: String,
    /// The request field at fault, if any (`messages[0].content`).
    pub param: Option<String>,
    /// For 429 and 503: when to try again.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: Cow::Borrowed(code),
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    /// Names the request field at fault.
    pub fn param(mut self, param: impl Into<String>) -> ApiError {
        self.param = Some(param.into());
        self
    }

    /// Adds a `Retry-After`.
    pub fn retry_after(mut self, after: Duration) -> ApiError {
        self.retry_after = Some(after);
        self
    }

    /// 401 `invalid_api_key`.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", message)
    }

    /// 403 `missing_claim`: an identity lacks (or has an unusable value for) a claim Enclave
    /// needs to decide anything; `claim` names it.
    pub fn missing_claim(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "missing_claim", message)
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 500 `internal_error`; the cause must already be logged.
    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Enclave failed to process the request; the operator's log has the details.",
        )
    }

    /// 503 `overloaded` with `Retry-After: 1`.
    pub fn overloaded(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
            .retry_after(Duration::from_secs(1))
    }

    /// 503 `audit_unavailable` with `Retry-After: 1`: the audit log cannot write, so nothing is
    /// answered (fail closed).
    pub fn audit_unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            "The audit log cannot record requests right now, so Enclave answers none. Retry later; the operator has been alerted (see the server log).",
        )
        .retry_after(Duration::from_secs(1))
    }

    /// 413 `request_too_large`.
    pub fn too_large(max: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("The request body is larger than this server's limit of {max} bytes."),
        )
    }

    /// The code as a metric label: Enclave's own codes as they are; a code a backend sent is
    /// counted as `upstream_rejected` (label values never carry what others chose).
    pub fn metric_code(&self) -> &'static str {
        match &self.code {
            Cow::Borrowed(c) => c,
            Cow::Owned(_) => "upstream_rejected",
        }
    }

    /// The OpenAI error `type` for this status.
    pub fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            409 => "conflict_error",
            400 | 405 | 413 | 422 => "invalid_request_error",
            429 => "rate_limit_error",
            502..=504 => "api_error",
            _ => "server_error",
        }
    }

    /// The error object's JSON bytes.
    pub fn json(&self) -> Vec<u8> {
        let json = serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind(),
                "code": self.code,
                "param": self.param,
            }
        });
        serde_json::to_vec(&json).unwrap_or_default()
    }

    /// The response.
    pub fn into_response(self) -> Response<Body> {
        let mut resp = Response::new(body::full(Bytes::from(self.json())));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(after) = self.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        resp
    }
}

// === From: policy decisions ===

impl From<&Denied> for ApiError {
    fn from(d: &Denied) -> ApiError {
        match d {
            Denied::InvalidMarking(e) => ApiError::bad_request(
                "invalid_marking",
                format!("X-Enclave-Classification is not a valid marking: {e}"),
            ),
            Denied::ClassificationExceedsClearance { requested, why } => ApiError::new(
                StatusCode::FORBIDDEN,
                "classification_exceeds_clearance",
                format!(
                    "The session label {requested} exceeds your clearance ({}); ask for a session at or below your clearance.",
                    denial_text(why)
                ),
            ),
            Denied::SpillageDetected {
                session, content, ..
            } => ApiError::new(
                StatusCode::FORBIDDEN,
                "spillage_detected",
                format!(
                    "The request contains markings ({content}) above its session label ({session}). It was not sent anywhere. Report the spillage to your security officer; do not resend it at this label."
                ),
            ),
            Denied::NoAccreditedBackend { label } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_accredited_backend",
                format!(
                    "No backend for this model is accredited for {label} (level, compartments and releasability to its operators). The request was not sent anywhere."
                ),
            ),
        }
    }
}

/// Which part of a clearance a label exceeds, in words.
pub(crate) fn denial_text(why: &enclave_label::Denial) -> String {
    match why {
        enclave_label::Denial::Level => "its classification level is higher".to_owned(),
        enclave_label::Denial::Compartments(c) => format!(
            "it needs compartments you are not read into: {}",
            c.join(", ")
        ),
        enclave_label::Denial::Releasability => {
            "it is not releasable to your nationality".to_owned()
        }
    }
}

// === From: request bodies ===

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> ApiError {
        let code = match e.kind {
            RequestErrorKind::InvalidJson => "invalid_json",
            RequestErrorKind::InvalidRequest => "invalid_request",
            RequestErrorKind::UnsupportedContent => "unsupported_content",
        };
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: Cow::Borrowed(code),
            message: e.message,
            param: e.param.filter(|p| !p.is_empty()),
            retry_after: None,
        }
    }
}

// === From: routing and backends ===

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> ApiError {
        match e {
            RouteError::UnknownModel(m) => ApiError::new(
                StatusCode::NOT_FOUND,
                "model_not_found",
                format!(
                    "The model {m:?} is not served here; GET /v1/models lists the models you may use at your session label."
                ),
            )
            .param("model"),
            RouteError::NotAccredited(d) => ApiError::from(&d),
        }
    }
}

impl From<&SendFailure> for ApiError {
    fn from(f: &SendFailure) -> ApiError {
        let tried = f.attempts.len();
        match &f.last {
            BackendError::NotSent { overloaded: true, .. } => ApiError::overloaded(
                "Every accredited backend for this model is at capacity. Retry after the time in the Retry-After header.",
            ),
            BackendError::NotSent { .. } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                format!(
                    "No accredited backend for this model could be reached ({tried} attempts). Retry later; the operator's log has the details."
                ),
            ),
            BackendError::Throttled { retry_after } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "The model backend is rate-limiting Enclave. Retry after the time in the Retry-After header.",
            )
            .retry_after(retry_after.unwrap_or(Duration::from_secs(1))),
            BackendError::Deadline => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "The model backend did not answer before the request deadline. Retry later; the operator's log has the details.",
            ),
            BackendError::Failed { .. } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "The model backend failed while handling the request. It was not sent again, because it may have run. Retry if that is safe; the operator's log has the details.",
            ),
            BackendError::Credentials { .. } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "The model backend rejected Enclave's credentials; the operator has been told (see the server log).",
            ),
            BackendError::Rejected { status, body } => ApiError {
                status: StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
                code: match &body.code {
                    Some(c) => Cow::Owned(c.clone()),
                    None => Cow::Borrowed("invalid_request"),
                },
                message: body.message.clone(),
                param: body.param.clone(),
                retry_after: None,
            },
            BackendError::Invalid {
                code,
                message,
                param,
            } => ApiError {
                status: StatusCode::BAD_REQUEST,
                code: Cow::Borrowed(code),
                message: message.clone(),
                param: param.clone(),
                retry_after: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_codes_are_counted_under_one_name() {
        let e = ApiError {
            code: Cow::Owned("caller_chosen".into()),
            ..ApiError::internal()
        };
        assert_eq!(e.metric_code(), "upstream_rejected");
        assert_eq!(ApiError::internal().metric_code(), "internal_error");
    }

    #[test]
    fn the_wire_shape_is_openai_s() {
        let e = ApiError::bad_request("invalid_request", "bad").param("messages[0]");
        let v: serde_json::Value = serde_json::from_slice(&e.json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"message": "bad", "type": "invalid_request_error",
                                         "code": "invalid_request", "param": "messages[0]"}})
        );
    }
}
