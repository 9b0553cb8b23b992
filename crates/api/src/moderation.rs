//! `POST /v1/moderations` requests.
//!
//! OpenAI's reference accepts `input` as a string, an array of strings, or an array of
//! multi-modal parts (`{"type": "text", "text"}`, `{"type": "image_url", "image_url": {"url"}}`).
//! Enclave screens text only: an image part cannot be inspected and is refused with
//! `unsupported_content` (fail closed), never scored as if it were harmless.

use bytes::Bytes;

use crate::error::RequestError;
use crate::json::{Json, push_paragraph};
use crate::read::{self, path};

/// The most texts one moderation request may carry.
pub const MAX_MODERATION_INPUTS: usize = 256;

/// A moderation request: the texts to screen, one result each.
#[derive(Clone, Debug, PartialEq)]
pub struct ModerationRequest {
    /// The model asked for (`None`: the default). Enclave answers with its own screen whatever
    /// the name; the name is echoed back.
    pub model: Option<String>,
    /// The texts, in order: one result per text. An array of multi-modal parts is one input
    /// whose text parts are joined by blank lines.
    pub inputs: Vec<String>,
    /// Every string except `model`, as paragraphs, for the marking scanner.
    pub text: String,
}

impl ModerationRequest {
    /// Parses a request body.
    ///
    /// # Errors
    ///
    /// `invalid_json` for a body that is not one JSON object without duplicate keys,
    /// `invalid_request` naming the field for a missing or mistyped one, and
    /// `unsupported_content` for an image part.
    pub fn parse(raw: &Bytes) -> Result<ModerationRequest, RequestError> {
        let text = read::utf8(raw)?;
        let json = Json::parse(text).map_err(RequestError::json)?;
        let members = read::body_members(&json)?;
        let mut req = ModerationRequest {
            model: None,
            inputs: Vec::new(),
            text: String::with_capacity(raw.len()),
        };
        let mut saw_input = false;
        for (key, value) in members {
            match key.as_ref() {
                "model" => {
                    req.model = read::opt_string(value, "model")?;
                    continue;
                }
                "input" => {
                    saw_input = true;
                    req.inputs = inputs(value)?;
                }
                _ => {}
            }
            push_paragraph(&mut req.text, key);
            value.push_text(&mut req.text);
        }
        if !saw_input {
            return Err(RequestError::invalid(
                "input",
                "`input` is required: a string, an array of strings, or an array of text parts.",
            ));
        }
        Ok(req)
    }
}

fn inputs(v: &Json<'_>) -> Result<Vec<String>, RequestError> {
    let items = match v {
        Json::String(s) => return Ok(vec![s.to_string()]),
        Json::Array(items) => items,
        other => {
            return Err(RequestError::wrong_type(
                "input",
                "a string or an array",
                other.kind(),
            ));
        }
    };
    if items.is_empty() {
        return Err(RequestError::invalid("input", "`input` must not be empty."));
    }
    if items.len() > MAX_MODERATION_INPUTS {
        return Err(RequestError::invalid(
            "input",
            format!(
                "`input` holds {} items; at most {MAX_MODERATION_INPUTS} are allowed.",
                items.len()
            ),
        ));
    }
    if matches!(items.first(), Some(Json::String(_))) {
        return items
            .iter()
            .enumerate()
            .map(|(i, t)| read::string(t, &path("input", i)))
            .collect();
    }
    // Multi-modal parts: one input made of its text parts.
    let mut joined = String::new();
    for (i, item) in items.iter().enumerate() {
        let at = path("input", i);
        let Json::Object(_) = item else {
            return Err(RequestError::wrong_type(
                &at,
                "a string or a content part object",
                item.kind(),
            ));
        };
        let kind = item
            .get("type")
            .ok_or_else(|| RequestError::invalid(format!("{at}.type"), "`type` is required."))?;
        match kind.as_str() {
            Some("text") => {
                let text = item.get("text").ok_or_else(|| {
                    RequestError::invalid(format!("{at}.text"), "`text` is required.")
                })?;
                push_paragraph(&mut joined, &read::string(text, &format!("{at}.text"))?);
            }
            Some("image_url") => {
                // SECURITY: an image cannot be screened; refusing it is the only answer that
                // does not vouch for content nobody looked at.
                return Err(RequestError::unsupported(
                    at,
                    "Image inputs are not screened by Enclave's moderation; send text only.",
                ));
            }
            Some(other) => {
                return Err(RequestError::invalid(
                    format!("{at}.type"),
                    format!("Unknown content part type `{other}`: use `text`."),
                ));
            }
            None => {
                return Err(RequestError::wrong_type(
                    &format!("{at}.type"),
                    "a string",
                    kind.kind(),
                ));
            }
        }
    }
    Ok(vec![joined])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ModerationRequest, RequestError> {
        ModerationRequest::parse(&Bytes::from(body.to_owned()))
    }

    #[test]
    fn strings_lists_and_text_parts() {
        let r = parse(r#"{"input":"hello"}"#).unwrap();
        assert_eq!(r.inputs, ["hello"]);
        assert_eq!(r.model, None);
        let r = parse(r#"{"model":"omni-moderation-latest","input":["a","b"]}"#).unwrap();
        assert_eq!(r.inputs, ["a", "b"]);
        assert_eq!(r.model.as_deref(), Some("omni-moderation-latest"));
        let r =
            parse(r#"{"input":[{"type":"text","text":"x"},{"type":"text","text":"y"}]}"#).unwrap();
        assert_eq!(r.inputs, ["x\n\ny"]);
        assert!(r.text.contains('x') && r.text.contains('y'));
    }

    #[test]
    fn images_are_refused_not_scored() {
        let e =
            parse(r#"{"input":[{"type":"image_url","image_url":{"url":"data:x"}}]}"#).unwrap_err();
        assert_eq!(e.kind.code(), "unsupported_content");
        assert_eq!(e.param.as_deref(), Some("input[0]"));
    }

    #[test]
    fn malformed_bodies_name_the_field() {
        for (body, param) in [
            (r#"{}"#, "input"),
            (r#"{"input":[]}"#, "input"),
            (r#"{"input":3}"#, "input"),
            (r#"{"input":["a",3]}"#, "input[1]"),
            (r#"{"input":[{"text":"a"}]}"#, "input[0].type"),
            (r#"{"input":[{"type":"audio"}]}"#, "input[0].type"),
            (r#"{"input":[{"type":"text"}]}"#, "input[0].text"),
            (r#"{"input":"a","model":5}"#, "model"),
        ] {
            let e = parse(body).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}");
        }
        let e = parse(r#"{"input":"a","input":"b"}"#).unwrap_err();
        assert_eq!(e.kind.code(), "invalid_json");
        let e = parse("[1]").unwrap_err();
        assert_eq!(e.kind.code(), "invalid_request");
    }

    #[test]
    fn too_many_inputs_are_refused() {
        let many = vec!["\"a\""; MAX_MODERATION_INPUTS + 1].join(",");
        let e = parse(&format!(r#"{{"input":[{many}]}}"#)).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input"));
    }
}
