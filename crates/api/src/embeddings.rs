//! `POST /v1/embeddings` requests.

use bytes::Bytes;

use crate::chat::body_with_model;
use crate::error::RequestError;
use crate::json::{Json, push_paragraph};
use crate::policy::ContentPolicy;
use crate::read::{self, path};

/// The most texts one embeddings request may carry (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

/// An embeddings request.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingsRequest {
    /// The model the client asked for.
    pub model: String,
    /// The texts to embed; empty when the input was token arrays (allowed by policy).
    pub input: Vec<String>,
    /// Whether the input was token arrays (not inspected: the policy allowed them).
    pub token_input: bool,
    /// `encoding_format`: base64 instead of float arrays.
    pub base64: bool,
    /// `dimensions`, if asked for.
    pub dimensions: Option<u64>,
    /// Every string except `model`, as paragraphs (see [`crate::ChatRequest::text`]).
    pub text: String,
    /// The body exactly as received.
    pub raw: Bytes,
}

impl EmbeddingsRequest {
    /// Parses a request body.
    ///
    /// # Errors
    ///
    /// [`RequestError`] as for chat: `invalid_json`, `invalid_request` naming the field, and
    /// `unsupported_content` for token-array input the policy does not allow.
    pub fn parse(raw: Bytes, policy: &ContentPolicy) -> Result<EmbeddingsRequest, RequestError> {
        let text = read::utf8(&raw)?;
        let json = Json::parse(text).map_err(RequestError::json)?;
        let members = read::body_members(&json)?;
        let mut req = EmbeddingsRequest {
            model: String::new(),
            input: Vec::new(),
            token_input: false,
            base64: false,
            dimensions: None,
            text: String::with_capacity(raw.len()),
            raw: Bytes::new(),
        };
        let mut saw_input = false;
        for (key, value) in members {
            match key.as_ref() {
                "model" => {
                    req.model = read::string(value, "model")?;
                    continue;
                }
                "input" => {
                    saw_input = true;
                    (req.input, req.token_input) = input(value, policy)?;
                }
                "encoding_format" => {
                    req.base64 = match read::opt_string(value, "encoding_format")?.as_deref() {
                        None | Some("float") => false,
                        Some("base64") => true,
                        Some(_) => {
                            return Err(RequestError::invalid(
                                "encoding_format",
                                "`encoding_format` must be \"float\" or \"base64\".",
                            ));
                        }
                    };
                }
                "dimensions" => req.dimensions = read::opt_u64(value, "dimensions")?,
                _ => {}
            }
            push_paragraph(&mut req.text, key);
            value.push_text(&mut req.text);
        }
        if req.model.is_empty() {
            return Err(RequestError::invalid(
                "model",
                "`model` is required and must be a non-empty string.",
            ));
        }
        if !saw_input {
            return Err(RequestError::invalid(
                "input",
                "`input` is required: a string or an array of strings.",
            ));
        }
        req.raw = raw;
        Ok(req)
    }

    /// The body for a backend that knows the model as `upstream_model`.
    pub fn body_for(&self, upstream_model: &str) -> Bytes {
        body_with_model(&self.raw, &self.model, upstream_model)
    }
}

/// The texts of `input`, or an empty list and `true` for token arrays the policy allows.
fn input(v: &Json<'_>, policy: &ContentPolicy) -> Result<(Vec<String>, bool), RequestError> {
    let items = match v {
        Json::String(s) => return Ok((vec![s.to_string()], false)),
        Json::Array(items) => items,
        other => {
            return Err(RequestError::wrong_type(
                "input",
                "a string or an array of strings",
                other.kind(),
            ));
        }
    };
    if items.is_empty() {
        return Err(RequestError::invalid("input", "`input` must not be empty."));
    }
    if items.len() > MAX_INPUTS {
        return Err(RequestError::invalid(
            "input",
            format!(
                "`input` holds {} items; at most {MAX_INPUTS} are allowed.",
                items.len()
            ),
        ));
    }
    let tokens = |t: &Json<'_>| matches!(t, Json::Number(n) if n.as_u64().is_some());
    let token_array = items.iter().all(tokens)
        || items
            .iter()
            .all(|i| matches!(i, Json::Array(a) if !a.is_empty() && a.iter().all(tokens)));
    if token_array {
        // SECURITY: token ids are text Enclave would have to decode with the backend's own
        // tokenizer to scan; without that they are uninspectable and refused by default.
        if !policy.token_arrays {
            return Err(RequestError::unsupported(
                "input",
                "Token arrays as `input` are not accepted: Enclave cannot inspect them for classification markings. Send the text instead.",
            ));
        }
        return Ok((Vec::new(), true));
    }
    let texts = items
        .iter()
        .enumerate()
        .map(|(i, t)| read::string(t, &path("input", i)))
        .collect::<Result<Vec<String>, _>>()?;
    Ok((texts, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str, policy: &ContentPolicy) -> Result<EmbeddingsRequest, RequestError> {
        EmbeddingsRequest::parse(Bytes::from(body.to_owned()), policy)
    }

    #[test]
    fn strings_and_lists_of_strings() {
        let p = ContentPolicy::default();
        let r = parse(
            r#"{"model":"e","input":"one","encoding_format":"base64"}"#,
            &p,
        )
        .unwrap();
        assert_eq!(r.input, vec!["one".to_owned()]);
        assert!(r.base64);
        let r = parse(
            r#"{"model":"e","input":["a","(S) b"],"dimensions":384}"#,
            &p,
        )
        .unwrap();
        assert_eq!(r.input.len(), 2);
        assert!(r.text.contains("(S) b"));
        assert_eq!(r.dimensions, Some(384));
    }

    #[test]
    fn token_arrays_are_refused_unless_allowed() {
        let p = ContentPolicy::default();
        for body in [
            r#"{"model":"e","input":[1,2,3]}"#,
            r#"{"model":"e","input":[[1,2],[3]]}"#,
        ] {
            let e = parse(body, &p).unwrap_err();
            assert_eq!(e.kind.code(), "unsupported_content", "{body}");
            let allowed = ContentPolicy {
                token_arrays: true,
                ..p
            };
            let r = parse(body, &allowed).unwrap();
            assert!(r.token_input && r.input.is_empty());
        }
    }

    #[test]
    fn malformed_input_names_the_field() {
        let p = ContentPolicy::default();
        for (body, param) in [
            (r#"{"model":"e","input":[]}"#, "input"),
            (r#"{"model":"e","input":5}"#, "input"),
            (r#"{"model":"e","input":["a",1]}"#, "input[1]"),
            (r#"{"model":"e","input":[[1],"a"]}"#, "input[0]"),
            (r#"{"model":"e"}"#, "input"),
            (r#"{"input":"a"}"#, "model"),
            (
                r#"{"model":"e","input":"a","encoding_format":"hex"}"#,
                "encoding_format",
            ),
        ] {
            let e = parse(body, &p).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {e}");
        }
        assert_eq!(
            parse(r#"{"model":"e","input":"a","input":"b"}"#, &p)
                .unwrap_err()
                .kind
                .code(),
            "invalid_json"
        );
    }
}
