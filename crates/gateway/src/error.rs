//! API errors: one type, turned into an OpenAI-shaped response in one place.
//!
//! `{"error": {"message", "type", "code", "param"}}` with the stable codes of DESIGN.md. Causes
//! that only an operator should see (database errors, upstream details) go to the log, not to
//! the caller.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{self, Body};

/// A refusal or failure, ready to send.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The stable code (`spillage_detected`, …).
    pub code: &'static str,
    /// What happened and what to do.
    pub message: String,
    /// The request field at fault, if any.
    pub param: Option<&'static str>,
    /// For 429 and 503: when to try again.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    /// Names the request field at fault.
    pub fn param(mut self, param: &'static str) -> ApiError {
        self.param = Some(param);
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

    /// 400 `invalid_request_error`-typed problems with the request body.
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

    /// The OpenAI error `type` for this status.
    pub fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            409 => "conflict_error",
            413 | 400 | 405 | 422 => "invalid_request_error",
            429 => "rate_limit_error",
            502..=504 => "api_error",
            _ => "server_error",
        }
    }

    /// The response.
    pub fn into_response(self) -> Response<Body> {
        let json = serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind(),
                "code": self.code,
                "param": self.param,
            }
        });
        let bytes = serde_json::to_vec(&json).unwrap_or_default();
        let mut resp = Response::new(body::full(Bytes::from(bytes)));
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
