//! `POST /v1/responses` and `POST /v1/conversations[/{id}/items]` requests: the OpenAI
//! Responses and Conversations APIs, parsed strictly into a typed view, and the items Enclave
//! stores and returns.
//!
//! Enclave keeps the state itself and runs each turn through a backend's chat interface, so
//! only what it can translate to chat messages is accepted: message items whose content is
//! text (`input_text`, `output_text`, `text`, or a plain string). Images, files, audio, tool
//! calls and item references are refused as `unsupported_content` rather than dropped. Other
//! unknown fields are ignored, but every string the body carries is still scanned (`text`).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::chat::Role;
use crate::error::RequestError;
use crate::json::{Json, push_paragraph};
use crate::read::{self, path};

/// A `POST /v1/responses` request.
#[derive(Clone, Debug, PartialEq)]
pub struct ResponsesRequest {
    /// The model (required unless `previous_response_id` names a response whose model is
    /// reused).
    pub model: Option<String>,
    /// The new input, in order (a string `input` is one user message).
    pub input: Vec<Item>,
    /// `instructions`: a system message for this turn only (not carried over).
    pub instructions: Option<String>,
    /// Whether the answer is streamed as Responses server-sent events.
    pub stream: bool,
    /// Whether the response is stored (default true).
    pub store: bool,
    /// The stored response this turn continues.
    pub previous_response_id: Option<String>,
    /// The stored conversation this turn belongs to (its items are the context; the turn is
    /// appended).
    pub conversation: Option<String>,
    /// `max_output_tokens`.
    pub max_output_tokens: Option<u64>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    pub top_p: Option<f64>,
    /// `metadata`, kept as sent.
    pub metadata: Option<serde_json::Value>,
    /// Every string of the body except `model`, each as its own paragraph (for the marking
    /// scanner and the safety stack).
    pub text: String,
}

/// A `POST /v1/conversations` or `POST /v1/conversations/{id}/items` request.
#[derive(Clone, Debug, PartialEq)]
pub struct ItemsRequest {
    /// The items to add, in order.
    pub items: Vec<Item>,
    /// `metadata` (conversations only), kept as sent.
    pub metadata: Option<serde_json::Value>,
    /// Every string of the body, each as its own paragraph.
    pub text: String,
}

/// A `POST /v1/conversations/{id}` request: the conversation's new metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct ConversationUpdate {
    /// The metadata that replaces the stored one (an object; `null` clears it to `{}`).
    pub metadata: serde_json::Value,
    /// Every string of the body, each as its own paragraph.
    pub text: String,
}

/// Most keys a conversation's `metadata` may hold (OpenAI's limit).
const MAX_METADATA_KEYS: usize = 16;

/// Longest key of a conversation's `metadata`, in characters (OpenAI's limit).
const MAX_METADATA_KEY_CHARS: usize = 64;

/// Longest value of a conversation's `metadata`, in characters (OpenAI's limit).
const MAX_METADATA_VALUE_CHARS: usize = 512;

/// A message item as Enclave stores and returns it (the Responses API's message item).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// `msg_…`, assigned by Enclave when stored.
    #[serde(default)]
    pub id: String,
    /// Always `message`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `user`, `assistant`, `system` or `developer`.
    pub role: String,
    /// The text parts.
    pub content: Vec<ContentPart>,
    /// `completed`.
    #[serde(default = "completed")]
    pub status: String,
}

/// A text part of an item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentPart {
    /// `input_text` (user, system, developer) or `output_text` (assistant).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    pub text: String,
    /// `[]` for output text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Vec<serde_json::Value>>,
}

fn completed() -> String {
    "completed".to_owned()
}

impl Item {
    /// A message item of `role` with one text part (`output_text` for the assistant,
    /// `input_text` otherwise).
    pub fn message(role: Role, text: impl Into<String>) -> Item {
        let assistant = role == Role::Assistant;
        Item {
            id: String::new(),
            kind: "message".to_owned(),
            role: role.as_str().to_owned(),
            content: vec![ContentPart {
                kind: if assistant {
                    "output_text"
                } else {
                    "input_text"
                }
                .to_owned(),
                text: text.into(),
                annotations: assistant.then(Vec::new),
            }],
            status: completed(),
        }
    }

    /// The item's role as a chat role (`user` for anything unexpected in stored data).
    pub fn chat_role(&self) -> Role {
        match self.role.as_str() {
            "assistant" => Role::Assistant,
            "system" => Role::System,
            "developer" => Role::Developer,
            _ => Role::User,
        }
    }

    /// The item's text parts, concatenated.
    pub fn text(&self) -> String {
        self.content.iter().map(|p| p.text.as_str()).collect()
    }
}

impl ResponsesRequest {
    /// Parses a request body.
    ///
    /// # Errors
    ///
    /// [`RequestError`]: `invalid_json` for a body that is not UTF-8 JSON or has duplicate
    /// keys; `invalid_request` naming the field for a missing field, a wrong type, or both
    /// `previous_response_id` and `conversation`; `unsupported_content` for input Enclave cannot
    /// run through a chat backend (images, files, audio, tool calls, item references).
    pub fn parse(raw: &Bytes) -> Result<ResponsesRequest, RequestError> {
        let text = read::utf8(raw)?;
        let json = Json::parse(text).map_err(RequestError::json)?;
        let members = read::body_members(&json)?;
        let mut req = ResponsesRequest {
            model: None,
            input: Vec::new(),
            instructions: None,
            stream: false,
            store: true,
            previous_response_id: None,
            conversation: None,
            max_output_tokens: None,
            temperature: None,
            top_p: None,
            metadata: None,
            text: String::with_capacity(raw.len()),
        };
        let mut saw_input = false;
        for (key, value) in members {
            match key.as_ref() {
                // The model name is routing, not content.
                "model" => {
                    req.model = read::opt_string(value, "model")?;
                    continue;
                }
                "input" => {
                    saw_input = true;
                    req.input = match value {
                        Json::String(s) => vec![Item::message(Role::User, s.as_ref())],
                        other => items(other, "input")?,
                    };
                }
                "instructions" => req.instructions = read::opt_string(value, "instructions")?,
                "stream" => req.stream = read::opt_bool(value, "stream")?.unwrap_or(false),
                "store" => req.store = read::opt_bool(value, "store")?.unwrap_or(true),
                "previous_response_id" => {
                    req.previous_response_id = read::opt_string(value, "previous_response_id")?;
                }
                "conversation" => req.conversation = conversation_id(value)?,
                "max_output_tokens" => {
                    req.max_output_tokens = read::opt_u64(value, "max_output_tokens")?;
                }
                "temperature" => req.temperature = read::opt_f64(value, "temperature")?,
                "top_p" => req.top_p = read::opt_f64(value, "top_p")?,
                "metadata" => req.metadata = metadata(value)?,
                _ => {}
            }
            push_paragraph(&mut req.text, key);
            value.push_text(&mut req.text);
        }
        if !saw_input || req.input.is_empty() {
            return Err(RequestError::invalid(
                "input",
                "`input` is required: a string or a non-empty array of message items.",
            ));
        }
        if req.previous_response_id.is_some() && req.conversation.is_some() {
            return Err(RequestError::invalid(
                "previous_response_id",
                "Send `previous_response_id` or `conversation`, not both.",
            ));
        }
        if req.model.is_none() && req.previous_response_id.is_none() {
            return Err(RequestError::invalid("model", "`model` is required."));
        }
        Ok(req)
    }
}

impl ItemsRequest {
    /// Parses the body of `POST /v1/conversations` (`items` optional, `metadata`) or, with
    /// `items_required`, of `POST /v1/conversations/{id}/items` (`items` required, non-empty).
    /// An empty body is an empty request when items are optional.
    ///
    /// # Errors
    ///
    /// As [`ResponsesRequest::parse`].
    pub fn parse(raw: &Bytes, items_required: bool) -> Result<ItemsRequest, RequestError> {
        let mut req = ItemsRequest {
            items: Vec::new(),
            metadata: None,
            text: String::new(),
        };
        if raw.iter().all(u8::is_ascii_whitespace) && !items_required {
            return Ok(req);
        }
        let text = read::utf8(raw)?;
        let json = Json::parse(text).map_err(RequestError::json)?;
        let members = read::body_members(&json)?;
        for (key, value) in members {
            match key.as_ref() {
                "items" if !value.is_null() => req.items = items(value, "items")?,
                "metadata" => req.metadata = conversation_metadata(value)?,
                _ => {}
            }
            push_paragraph(&mut req.text, key);
            value.push_text(&mut req.text);
        }
        if items_required && req.items.is_empty() {
            return Err(RequestError::invalid(
                "items",
                "`items` is required: a non-empty array of message items.",
            ));
        }
        Ok(req)
    }
}

impl ConversationUpdate {
    /// Parses the body of `POST /v1/conversations/{id}`: `metadata` is required (an object
    /// within OpenAI's limits, or `null`); other fields are ignored but still scanned.
    ///
    /// # Errors
    ///
    /// As [`ResponsesRequest::parse`]; 400 naming `metadata` when it is missing or outside the
    /// limits.
    pub fn parse(raw: &Bytes) -> Result<ConversationUpdate, RequestError> {
        let text = read::utf8(raw)?;
        let json = Json::parse(text).map_err(RequestError::json)?;
        let members = read::body_members(&json)?;
        let mut update = ConversationUpdate {
            metadata: serde_json::Value::Object(serde_json::Map::new()),
            text: String::with_capacity(raw.len()),
        };
        let mut saw_metadata = false;
        for (key, value) in members {
            if key == "metadata" {
                saw_metadata = true;
                if let Some(m) = conversation_metadata(value)? {
                    update.metadata = m;
                }
            }
            push_paragraph(&mut update.text, key);
            value.push_text(&mut update.text);
        }
        if !saw_metadata {
            return Err(RequestError::invalid(
                "metadata",
                "`metadata` is required: an object of at most 16 string values.",
            ));
        }
        Ok(update)
    }
}

/// A conversation's `metadata`: `null`, or an object of at most [`MAX_METADATA_KEYS`] keys of
/// at most [`MAX_METADATA_KEY_CHARS`] characters, each with a string value of at most
/// [`MAX_METADATA_VALUE_CHARS`] characters, as OpenAI accepts. The errors name no key: a key
/// is caller text that has not been screened yet.
fn conversation_metadata(v: &Json<'_>) -> Result<Option<serde_json::Value>, RequestError> {
    let Some(members) = read::opt_object(v, "metadata")? else {
        return Ok(None);
    };
    if members.len() > MAX_METADATA_KEYS {
        return Err(RequestError::invalid(
            "metadata",
            format!("`metadata` holds at most {MAX_METADATA_KEYS} keys."),
        ));
    }
    for (key, value) in members {
        if key.chars().count() > MAX_METADATA_KEY_CHARS {
            return Err(RequestError::invalid(
                "metadata",
                format!("A `metadata` key is at most {MAX_METADATA_KEY_CHARS} characters long."),
            ));
        }
        let Json::String(value) = value else {
            return Err(RequestError::invalid(
                "metadata",
                "`metadata` values must be strings.",
            ));
        };
        if value.chars().count() > MAX_METADATA_VALUE_CHARS {
            return Err(RequestError::invalid(
                "metadata",
                format!(
                    "A `metadata` value is at most {MAX_METADATA_VALUE_CHARS} characters long."
                ),
            ));
        }
    }
    Ok(Some(read::to_value(v)))
}

/// `conversation`: an id string or `{"id": …}`.
fn conversation_id(v: &Json<'_>) -> Result<Option<String>, RequestError> {
    match v {
        Json::Null => Ok(None),
        Json::String(s) => Ok(Some(s.to_string())),
        Json::Object(_) => match v.get("id") {
            Some(id) => read::string(id, "conversation.id").map(Some),
            None => Err(RequestError::invalid(
                "conversation.id",
                "`conversation` must be an id or an object with an `id`.",
            )),
        },
        other => Err(RequestError::wrong_type(
            "conversation",
            "a string or an object",
            other.kind(),
        )),
    }
}

/// `metadata`: an object (kept as sent) or `null`.
fn metadata(v: &Json<'_>) -> Result<Option<serde_json::Value>, RequestError> {
    Ok(read::opt_object(v, "metadata")?.map(|_| read::to_value(v)))
}

/// An array of message items.
fn items(v: &Json<'_>, param: &str) -> Result<Vec<Item>, RequestError> {
    let Json::Array(list) = v else {
        return Err(RequestError::wrong_type(
            param,
            "a string or an array of items",
            v.kind(),
        ));
    };
    list.iter()
        .enumerate()
        .map(|(i, item)| message_item(item, &path(param, i)))
        .collect()
}

fn message_item(v: &Json<'_>, param: &str) -> Result<Item, RequestError> {
    let Some(members) = read::opt_object(v, param)? else {
        return Err(RequestError::wrong_type(param, "an object", "null"));
    };
    let field = |name: &str| members.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    if let Some(kind) = field("type") {
        let kind = read::string(kind, &format!("{param}.type"))?;
        if kind != "message" {
            return Err(RequestError::unsupported(
                format!("{param}.type"),
                format!(
                    "Items of type `{}` are not supported: Enclave stores and runs message items \
                     with text content only.",
                    kind.escape_default()
                ),
            ));
        }
    }
    let role_param = format!("{param}.role");
    let role = match field("role") {
        Some(r) => read::string(r, &role_param)?,
        None => return Err(RequestError::invalid(&role_param, "`role` is required.")),
    };
    let role = match role.as_str() {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "system" => Role::System,
        "developer" => Role::Developer,
        _ => {
            return Err(RequestError::invalid(
                &role_param,
                "`role` must be user, assistant, system or developer.",
            ));
        }
    };
    let content_param = format!("{param}.content");
    let text = match field("content") {
        Some(Json::String(s)) => s.to_string(),
        Some(Json::Array(parts)) => {
            let mut text = String::new();
            for (i, part) in parts.iter().enumerate() {
                text.push_str(&part_text(part, &path(&content_param, i))?);
            }
            text
        }
        Some(other) => {
            return Err(RequestError::wrong_type(
                &content_param,
                "a string or an array of parts",
                other.kind(),
            ));
        }
        None => {
            return Err(RequestError::invalid(
                &content_param,
                "`content` is required.",
            ));
        }
    };
    Ok(Item::message(role, text))
}

fn part_text(v: &Json<'_>, param: &str) -> Result<String, RequestError> {
    let type_param = format!("{param}.type");
    let kind = match v.get("type") {
        Some(k) => read::string(k, &type_param)?,
        None if matches!(v, Json::Object(_)) => {
            return Err(RequestError::invalid(&type_param, "`type` is required."));
        }
        None => return Err(RequestError::wrong_type(param, "an object", v.kind())),
    };
    match kind.as_str() {
        "input_text" | "output_text" | "text" => match v.get("text") {
            Some(t) => read::string(t, &format!("{param}.text")),
            None => Err(RequestError::invalid(
                format!("{param}.text"),
                "`text` is required.",
            )),
        },
        "refusal" => match v.get("refusal") {
            Some(t) => read::string(t, &format!("{param}.refusal")),
            None => Ok(String::new()),
        },
        other => Err(RequestError::unsupported(
            type_param,
            format!(
                "Content parts of type `{}` cannot be inspected for markings and are refused; \
                 send text.",
                other.escape_default()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use super::*;

    fn parse(body: &str) -> Result<ResponsesRequest, RequestError> {
        ResponsesRequest::parse(&Bytes::copy_from_slice(body.as_bytes()))
    }

    #[test]
    fn string_input_is_one_user_message() {
        let r = parse(r#"{"model":"m","input":"Hello","instructions":"Be brief"}"#).unwrap();
        assert_eq!(r.model.as_deref(), Some("m"));
        assert_eq!(r.input, vec![Item::message(Role::User, "Hello")]);
        assert_eq!(r.instructions.as_deref(), Some("Be brief"));
        assert!(r.store && !r.stream);
        assert!(r.text.contains("Hello") && r.text.contains("Be brief"));
        assert!(!r.text.contains("\n\nm\n"));
    }

    #[test]
    fn item_input_with_parts_and_conversation_objects() {
        let r = parse(
            r#"{"model":"m","store":false,"stream":true,"conversation":{"id":"conv_1"},
               "input":[{"role":"user","content":[{"type":"input_text","text":"a"},{"type":"input_text","text":"b"}]},
                        {"type":"message","role":"assistant","content":"c"}],
               "unknown":{"deep":"scanned"}}"#,
        )
        .unwrap();
        assert_eq!(r.conversation.as_deref(), Some("conv_1"));
        assert_eq!(r.input.len(), 2);
        assert_eq!(r.input[0].text(), "ab");
        assert_eq!(r.input[1].content[0].kind, "output_text");
        assert!(!r.store && r.stream);
        assert!(
            r.text.contains("scanned"),
            "unknown fields are still scanned"
        );
    }

    #[test]
    fn hostile_and_unsupported_bodies_are_refused() {
        for (body, code, param) in [
            (r#"{"model":"m"}"#, "invalid_request", Some("input")),
            (
                r#"{"model":"m","input":[]}"#,
                "invalid_request",
                Some("input"),
            ),
            (r#"{"input":"x"}"#, "invalid_request", Some("model")),
            (
                r#"{"model":"m","input":"x","input":"y"}"#,
                "invalid_json",
                None,
            ),
            (
                r#"{"model":"m","input":7}"#,
                "invalid_request",
                Some("input"),
            ),
            (
                r#"{"model":"m","input":"x","previous_response_id":"resp_1","conversation":"conv_1"}"#,
                "invalid_request",
                Some("previous_response_id"),
            ),
            (
                r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_image","image_url":"x"}]}]}"#,
                "unsupported_content",
                Some("input[0].content[0].type"),
            ),
            (
                r#"{"model":"m","input":[{"type":"function_call_output","call_id":"c","output":"x"}]}"#,
                "unsupported_content",
                Some("input[0].type"),
            ),
            (
                r#"{"model":"m","input":[{"role":"root","content":"x"}]}"#,
                "invalid_request",
                Some("input[0].role"),
            ),
            (
                r#"{"model":"m","input":[null]}"#,
                "invalid_request",
                Some("input[0]"),
            ),
            (r#"[1]"#, "invalid_request", Some("")),
            ("{\"model\":\"m\",\"input\":\"\u{0}\"", "invalid_json", None),
        ] {
            let err = parse(body).unwrap_err();
            assert_eq!(err.kind.code(), code, "{body}");
            assert_eq!(err.param.as_deref(), param, "{body}");
        }
        let err = ResponsesRequest::parse(&Bytes::from_static(b"\xff")).unwrap_err();
        assert_eq!(err.kind.code(), "invalid_json");
    }

    #[test]
    fn items_requests() {
        let empty = ItemsRequest::parse(&Bytes::new(), false).unwrap();
        assert!(empty.items.is_empty());
        assert!(ItemsRequest::parse(&Bytes::new(), true).is_err());
        let r = ItemsRequest::parse(
            &Bytes::from_static(
                br#"{"items":[{"role":"user","content":"hi"}],"metadata":{"k":"v"}}"#,
            ),
            false,
        )
        .unwrap();
        assert_eq!(r.items[0].text(), "hi");
        assert_eq!(r.metadata, Some(serde_json::json!({"k": "v"})));
        assert!(ItemsRequest::parse(&Bytes::from_static(br#"{"items":[]}"#), true).is_err());
        assert!(ItemsRequest::parse(&Bytes::from_static(br#"{"metadata":[]}"#), false).is_err());
    }

    #[test]
    fn conversation_metadata_keeps_to_openai_limits() {
        let parse = |v: serde_json::Value| {
            let raw = Bytes::from(serde_json::to_vec(&v).unwrap());
            (
                ItemsRequest::parse(&raw, false).map(|r| r.metadata),
                ConversationUpdate::parse(&raw).map(|u| Some(u.metadata)),
            )
        };
        let full: serde_json::Map<String, serde_json::Value> = (0..16)
            .map(|i| (format!("{i:0>64}"), serde_json::json!("v".repeat(512))))
            .collect();
        let full = serde_json::Value::Object(full);
        let (create, update) = parse(serde_json::json!({"metadata": full}));
        assert_eq!(create.unwrap(), Some(full.clone()));
        assert_eq!(update.unwrap(), Some(full));
        // Characters, not bytes.
        let wide = serde_json::json!({"metadata": {"é".repeat(64): "ü".repeat(512)}});
        assert!(parse(wide.clone()).0.is_ok() && parse(wide).1.is_ok());
        let many: serde_json::Map<String, serde_json::Value> = (0..17)
            .map(|i| (i.to_string(), serde_json::json!("v")))
            .collect();
        for bad in [
            serde_json::json!({"metadata": many}),
            serde_json::json!({"metadata": {"k".repeat(65): "v"}}),
            serde_json::json!({"metadata": {"k": "v".repeat(513)}}),
            serde_json::json!({"metadata": {"k": 1}}),
            serde_json::json!({"metadata": {"k": {"nested": "v"}}}),
            serde_json::json!({"metadata": "k"}),
        ] {
            let (create, update) = parse(bad.clone());
            for e in [create.unwrap_err(), update.unwrap_err()] {
                assert_eq!(e.param.as_deref(), Some("metadata"), "{bad}");
            }
        }
        // An update must say what the metadata becomes; `null` clears it.
        let missing = ConversationUpdate::parse(&Bytes::from_static(b"{}")).unwrap_err();
        assert_eq!(missing.param.as_deref(), Some("metadata"));
        let cleared = ConversationUpdate::parse(&Bytes::from_static(br#"{"metadata":null}"#));
        assert_eq!(cleared.unwrap().metadata, serde_json::json!({}));
        let u = ConversationUpdate::parse(&Bytes::from_static(br#"{"metadata":{"k":"SECRET"}}"#))
            .unwrap();
        assert!(u.text.contains("SECRET"), "{}", u.text);
    }

    #[test]
    fn items_round_trip_through_json() {
        let item = Item::message(Role::Assistant, "answer");
        let json = serde_json::to_value(&item).unwrap();
        assert_eq!(
            json["content"][0],
            serde_json::json!({"type":"output_text","text":"answer","annotations":[]})
        );
        let back: Item = serde_json::from_value(json).unwrap();
        assert_eq!(back, item);
    }
}
