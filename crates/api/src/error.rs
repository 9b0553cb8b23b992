//! Why a request body was refused.

use std::fmt;

/// A request body Enclave will not process: malformed, ambiguous, of the wrong shape, or
/// carrying content it cannot inspect.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// Which kind of problem (each maps to one stable API error code).
    pub kind: RequestErrorKind,
    /// What is wrong and what to do, naming the field.
    pub message: String,
    /// The field at fault as a path (`messages[2].content[0].type`), if one is.
    pub param: Option<String>,
}

/// The kinds of [`RequestError`], one per API error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestErrorKind {
    /// The body is not one JSON value, not UTF-8, or has duplicate keys (`invalid_json`).
    InvalidJson,
    /// The JSON is well formed but a field is missing or of the wrong type or value
    /// (`invalid_request`).
    InvalidRequest,
    /// A content part or input Enclave cannot inspect for markings — images, audio, files,
    /// token arrays — and the route's policy does not allow (`unsupported_content`).
    UnsupportedContent,
}

impl RequestErrorKind {
    /// The stable API error code.
    pub fn code(self) -> &'static str {
        match self {
            RequestErrorKind::InvalidJson => "invalid_json",
            RequestErrorKind::InvalidRequest => "invalid_request",
            RequestErrorKind::UnsupportedContent => "unsupported_content",
        }
    }
}

impl RequestError {
    /// A body that is not valid JSON.
    pub(crate) fn json(e: impl fmt::Display) -> RequestError {
        RequestError {
            kind: RequestErrorKind::InvalidJson,
            message: format!("The request body is not valid JSON: {e}."),
            param: None,
        }
    }

    /// A field of the wrong type or value.
    pub(crate) fn invalid(param: impl Into<String>, message: impl Into<String>) -> RequestError {
        RequestError {
            kind: RequestErrorKind::InvalidRequest,
            message: message.into(),
            param: Some(param.into()),
        }
    }

    /// A field that must be `expected` but is `found` (a JSON type name).
    pub(crate) fn wrong_type(param: &str, expected: &str, found: &str) -> RequestError {
        RequestError::invalid(param, format!("`{param}` must be {expected}, not {found}."))
    }

    /// Content that cannot be inspected.
    pub(crate) fn unsupported(
        param: impl Into<String>,
        message: impl Into<String>,
    ) -> RequestError {
        RequestError {
            kind: RequestErrorKind::UnsupportedContent,
            message: message.into(),
            param: Some(param.into()),
        }
    }
}
