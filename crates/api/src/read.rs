//! Reading typed fields out of a [`Json`] tree, with errors that name the field.

use crate::error::RequestError;
use crate::json::{Json, Members};

/// `base[i]`, for error paths.
pub(crate) fn path(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

/// The body as UTF-8 text.
pub(crate) fn utf8(raw: &[u8]) -> Result<&str, RequestError> {
    std::str::from_utf8(raw).map_err(|e| {
        RequestError::json(format_args!(
            "it is not UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })
}

/// The members of a request body, which must be a JSON object.
pub(crate) fn body_members<'j, 'a>(json: &'j Json<'a>) -> Result<&'j Members<'a>, RequestError> {
    match json {
        Json::Object(members) => Ok(members),
        other => Err(RequestError::invalid(
            "",
            format!(
                "The request body must be a JSON object, not {}.",
                other.kind()
            ),
        )),
    }
}

/// A required string.
pub(crate) fn string(v: &Json<'_>, param: &str) -> Result<String, RequestError> {
    match v {
        Json::String(s) => Ok(s.to_string()),
        other => Err(RequestError::wrong_type(param, "a string", other.kind())),
    }
}

/// A string or `null`.
pub(crate) fn opt_string(v: &Json<'_>, param: &str) -> Result<Option<String>, RequestError> {
    match v {
        Json::Null => Ok(None),
        other => string(other, param).map(Some),
    }
}

/// A boolean or `null`.
pub(crate) fn opt_bool(v: &Json<'_>, param: &str) -> Result<Option<bool>, RequestError> {
    match v {
        Json::Null => Ok(None),
        Json::Bool(b) => Ok(Some(*b)),
        other => Err(RequestError::wrong_type(param, "a boolean", other.kind())),
    }
}

/// A non-negative integer or `null`.
pub(crate) fn opt_u64(v: &Json<'_>, param: &str) -> Result<Option<u64>, RequestError> {
    match v {
        Json::Null => Ok(None),
        Json::Number(n) => n.as_u64().map(Some).ok_or_else(|| {
            RequestError::invalid(param, format!("`{param}` must be a non-negative integer."))
        }),
        other => Err(RequestError::wrong_type(param, "an integer", other.kind())),
    }
}

/// An integer or `null`.
pub(crate) fn opt_i64(v: &Json<'_>, param: &str) -> Result<Option<i64>, RequestError> {
    match v {
        Json::Null => Ok(None),
        Json::Number(n) => n.as_i64().map(Some).ok_or_else(|| {
            RequestError::invalid(param, format!("`{param}` must be a 64-bit integer."))
        }),
        other => Err(RequestError::wrong_type(param, "an integer", other.kind())),
    }
}

/// A number or `null`.
pub(crate) fn opt_f64(v: &Json<'_>, param: &str) -> Result<Option<f64>, RequestError> {
    match v {
        Json::Null => Ok(None),
        Json::Number(n) => n
            .as_f64()
            .map(Some)
            .ok_or_else(|| RequestError::invalid(param, format!("`{param}` must be a number."))),
        other => Err(RequestError::wrong_type(param, "a number", other.kind())),
    }
}

/// An object's members, or `None` for `null`.
pub(crate) fn opt_object<'j, 'a>(
    v: &'j Json<'a>,
    param: &str,
) -> Result<Option<&'j Members<'a>>, RequestError> {
    match v {
        Json::Null => Ok(None),
        Json::Object(m) => Ok(Some(m)),
        other => Err(RequestError::wrong_type(param, "an object", other.kind())),
    }
}

/// `stop`: a string, an array of strings, or `null`.
pub(crate) fn stop(v: &Json<'_>) -> Result<Vec<String>, RequestError> {
    match v {
        Json::Null => Ok(Vec::new()),
        Json::String(s) => Ok(vec![s.to_string()]),
        Json::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, s)| string(s, &path("stop", i)))
            .collect(),
        other => Err(RequestError::wrong_type(
            "stop",
            "a string or an array of strings",
            other.kind(),
        )),
    }
}

/// A tree as a `serde_json::Value` (for fields kept whole, such as a tool's schema).
pub(crate) fn to_value(v: &Json<'_>) -> serde_json::Value {
    match v {
        Json::Null => serde_json::Value::Null,
        Json::Bool(b) => serde_json::Value::Bool(*b),
        Json::Number(n) => serde_json::Value::Number(n.clone()),
        Json::String(s) => serde_json::Value::String(s.to_string()),
        Json::Array(items) => serde_json::Value::Array(items.iter().map(to_value).collect()),
        Json::Object(members) => serde_json::Value::Object(
            members
                .iter()
                .map(|(k, v)| (k.to_string(), to_value(v)))
                .collect(),
        ),
    }
}
