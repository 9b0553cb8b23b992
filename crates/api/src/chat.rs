//! `POST /v1/chat/completions` requests: parsed strictly into a typed, normalized view.
//!
//! The typed view is what every check reads and what backends that do not speak the OpenAI
//! wire format (the embedded model, Bedrock) translate from. The body's exact bytes are kept
//! beside it: an OpenAI-compatible backend receives them unchanged (unknown fields pass
//! through), and only after the typed view was read from them without ambiguity.

use std::borrow::Cow;

use bytes::Bytes;

use crate::error::RequestError;
use crate::json::{Json, push_paragraph};
use crate::policy::{ContentPolicy, PartKind};
use crate::read::{self, path};

/// A chat completion request.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    /// The model the client asked for (its client-facing name).
    pub model: String,
    /// The conversation, in order; never empty.
    pub messages: Vec<Message>,
    /// Whether the answer is streamed as server-sent events.
    pub stream: bool,
    /// `stream_options.include_usage`: a final chunk with token counts.
    pub include_usage: bool,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<u64>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    pub top_p: Option<f64>,
    /// Choices to generate.
    pub n: Option<u64>,
    /// Sampling seed.
    pub seed: Option<i64>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Functions the model may call.
    pub tools: Vec<Tool>,
    /// `tool_choice` as sent (`"auto"`, `"none"`, `"required"` or an object).
    pub tool_choice: Option<serde_json::Value>,
    /// Content parts that were accepted without inspection because the route's policy allows
    /// their kind (their payload was not scanned for markings).
    pub uninspected: Vec<PartKind>,
    /// Every string the request carries except `model` — message text, content parts, tool
    /// definitions, each tool call's argument values, unknown fields and object keys — each as
    /// its own paragraph, for the marking scanner and the safety stack.
    pub text: String,
    /// The body exactly as received.
    pub raw: Bytes,
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its content: a string body is one [`Part::Text`].
    pub content: Vec<Part>,
    /// The participant's `name`, if given.
    pub name: Option<String>,
    /// Calls the assistant made.
    pub tool_calls: Vec<ToolCall>,
    /// For a `tool` message: the call it answers.
    pub tool_call_id: Option<String>,
}

/// The author of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The model's answer.
    Assistant,
    /// Instructions from the application's developer (newer name for `system`).
    Developer,
    /// A function result (deprecated form of `tool`).
    Function,
    /// Instructions.
    System,
    /// A tool's result.
    Tool,
    /// The end user.
    User,
}

/// A part of a message's content.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    /// Text.
    Text(String),
    /// An assistant's refusal.
    Refusal(String),
    /// A part Enclave did not inspect (allowed by policy); its payload stays in the raw body.
    Uninspected(PartKind),
}

/// A function call made by the assistant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCall {
    /// The call's id.
    pub id: String,
    /// The function's name.
    pub name: String,
    /// The arguments as the model wrote them (JSON text).
    pub arguments: String,
}

/// A function the model may call.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// Its parameters' JSON schema.
    pub parameters: Option<serde_json::Value>,
}

impl Role {
    /// The role's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Assistant => "assistant",
            Role::Developer => "developer",
            Role::Function => "function",
            Role::System => "system",
            Role::Tool => "tool",
            Role::User => "user",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "assistant" => Role::Assistant,
            "developer" => Role::Developer,
            "function" => Role::Function,
            "system" => Role::System,
            "tool" => Role::Tool,
            "user" => Role::User,
            _ => return None,
        })
    }
}

impl Message {
    /// The message's text parts, concatenated.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for p in &self.content {
            if let Part::Text(t) | Part::Refusal(t) = p {
                out.push_str(t);
            }
        }
        out
    }
}

impl ChatRequest {
    /// Parses a request body. `policy` says which content parts that Enclave cannot inspect
    /// are accepted anyway.
    ///
    /// # Errors
    ///
    /// [`RequestError`]: `invalid_json` for a body that is not UTF-8 JSON or has duplicate
    /// keys; `invalid_request` naming the field for a missing field or a wrong type;
    /// `unsupported_content` for a content part of a kind the policy does not allow or does
    /// not know.
    pub fn parse(raw: Bytes, policy: &ContentPolicy) -> Result<ChatRequest, RequestError> {
        let text = read::utf8(&raw)?;
        let json = Json::parse(text).map_err(RequestError::json)?;
        let members = read::body_members(&json)?;
        let mut req = ChatRequest {
            model: String::new(),
            messages: Vec::new(),
            stream: false,
            include_usage: false,
            max_tokens: None,
            temperature: None,
            top_p: None,
            n: None,
            seed: None,
            stop: Vec::new(),
            tools: Vec::new(),
            tool_choice: None,
            uninspected: Vec::new(),
            text: String::with_capacity(raw.len()),
            raw: Bytes::new(),
        };
        let mut saw_messages = false;
        let mut max_completion = None;
        let mut max_legacy = None;
        for (key, value) in members {
            match key.as_ref() {
                // The model name is routing, not content: it is never sent as text.
                "model" => {
                    req.model = read::string(value, "model")?;
                    continue;
                }
                "messages" => {
                    saw_messages = true;
                    push_paragraph(&mut req.text, key);
                    req.messages = messages(value, policy, &mut req.uninspected, &mut req.text)?;
                    continue;
                }
                "stream" => req.stream = read::opt_bool(value, "stream")?.unwrap_or(false),
                "stream_options" => {
                    if let Some(opts) = read::opt_object(value, "stream_options")? {
                        req.include_usage = match opts.iter().find(|(k, _)| k == "include_usage") {
                            Some((_, v)) => {
                                read::opt_bool(v, "stream_options.include_usage")?.unwrap_or(false)
                            }
                            None => false,
                        };
                    }
                }
                "max_completion_tokens" => {
                    max_completion = read::opt_u64(value, "max_completion_tokens")?;
                }
                "max_tokens" => max_legacy = read::opt_u64(value, "max_tokens")?,
                "temperature" => req.temperature = read::opt_f64(value, "temperature")?,
                "top_p" => req.top_p = read::opt_f64(value, "top_p")?,
                "n" => req.n = read::opt_u64(value, "n")?,
                "seed" => req.seed = read::opt_i64(value, "seed")?,
                "stop" => req.stop = read::stop(value)?,
                "tools" => req.tools = tools(value)?,
                "tool_choice" => {
                    if !matches!(value, Json::Null | Json::String(_) | Json::Object(_)) {
                        return Err(RequestError::wrong_type(
                            "tool_choice",
                            "a string or an object",
                            value.kind(),
                        ));
                    }
                    req.tool_choice = (!value.is_null()).then(|| read::to_value(value));
                }
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
        if !saw_messages {
            return Err(RequestError::invalid(
                "messages",
                "`messages` is required: an array of message objects.",
            ));
        }
        req.max_tokens = max_completion.or(max_legacy);
        req.raw = raw;
        Ok(req)
    }

    /// The body to send to an OpenAI-compatible backend that knows the model as
    /// `upstream_model`: the exact bytes received when the name is the same, else the body with
    /// only `model` replaced.
    pub fn body_for(&self, upstream_model: &str) -> Bytes {
        body_with_model(&self.raw, &self.model, upstream_model)
    }
}

/// `raw` with its top-level `model` replaced by `upstream_model` (the same bytes when the
/// name does not change).
pub(crate) fn body_with_model(raw: &Bytes, model: &str, upstream_model: &str) -> Bytes {
    if upstream_model == model {
        return raw.clone();
    }
    // The body parsed once already; parsing it again cannot fail.
    let Ok(text) = std::str::from_utf8(raw) else {
        return raw.clone();
    };
    let Ok(mut json) = Json::parse(text) else {
        return raw.clone();
    };
    json.set("model", Json::String(Cow::Borrowed(upstream_model)));
    Bytes::from(json.to_vec())
}

fn messages(
    value: &Json<'_>,
    policy: &ContentPolicy,
    uninspected: &mut Vec<PartKind>,
    text: &mut String,
) -> Result<Vec<Message>, RequestError> {
    let Json::Array(items) = value else {
        return Err(RequestError::wrong_type(
            "messages",
            "an array of message objects",
            value.kind(),
        ));
    };
    if items.is_empty() {
        return Err(RequestError::invalid(
            "messages",
            "`messages` must hold at least one message.",
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = path("messages", i);
        let Json::Object(members) = item else {
            return Err(RequestError::wrong_type(
                &at,
                "a message object",
                item.kind(),
            ));
        };
        let mut role = None;
        let mut content = None;
        let mut msg = Message {
            role: Role::User,
            content: Vec::new(),
            name: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
        };
        for (key, v) in members {
            push_paragraph(text, key);
            match key.as_ref() {
                "role" => {
                    let s = read::string(v, &format!("{at}.role"))?;
                    role = Some(Role::parse(&s).ok_or_else(|| {
                        RequestError::invalid(
                            format!("{at}.role"),
                            format!(
                                "`{at}.role` must be one of system, developer, user, assistant, tool, function."
                            ),
                        )
                    })?);
                    push_paragraph(text, &s);
                }
                "content" => {
                    content = Some(parts(
                        v,
                        &format!("{at}.content"),
                        policy,
                        uninspected,
                        text,
                    )?);
                }
                "name" => {
                    msg.name = read::opt_string(v, &format!("{at}.name"))?;
                    v.push_text(text);
                }
                "tool_call_id" => {
                    msg.tool_call_id = read::opt_string(v, &format!("{at}.tool_call_id"))?;
                    v.push_text(text);
                }
                "tool_calls" => msg.tool_calls = tool_calls(v, &format!("{at}.tool_calls"), text)?,
                _ => v.push_text(text),
            }
        }
        let Some(role) = role else {
            return Err(RequestError::invalid(
                format!("{at}.role"),
                format!("`{at}.role` is required."),
            ));
        };
        msg.role = role;
        match content {
            Some(Some(parts)) => msg.content = parts,
            // Only an assistant message may leave its content out (it made tool calls or
            // refused).
            _ if role == Role::Assistant => {}
            _ => {
                return Err(RequestError::invalid(
                    format!("{at}.content"),
                    format!("`{at}.content` is required: a string or an array of content parts."),
                ));
            }
        }
        out.push(msg);
    }
    Ok(out)
}

/// A message's `content`: `Some(parts)`, or `None` for `null`.
fn parts(
    value: &Json<'_>,
    at: &str,
    policy: &ContentPolicy,
    uninspected: &mut Vec<PartKind>,
    text: &mut String,
) -> Result<Option<Vec<Part>>, RequestError> {
    match value {
        Json::Null => Ok(None),
        Json::String(s) => {
            push_paragraph(text, s);
            Ok(Some(vec![Part::Text(s.to_string())]))
        }
        Json::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let at = path(at, i);
                out.push(part(item, &at, policy, uninspected, text)?);
            }
            Ok(Some(out))
        }
        other => Err(RequestError::wrong_type(
            at,
            "a string or an array of content parts",
            other.kind(),
        )),
    }
}

fn part(
    item: &Json<'_>,
    at: &str,
    policy: &ContentPolicy,
    uninspected: &mut Vec<PartKind>,
    text: &mut String,
) -> Result<Part, RequestError> {
    let Json::Object(members) = item else {
        return Err(RequestError::wrong_type(
            at,
            "a content part object",
            item.kind(),
        ));
    };
    let kind = match item.get("type") {
        Some(Json::String(t)) => t.as_ref(),
        Some(other) => {
            return Err(RequestError::wrong_type(
                &format!("{at}.type"),
                "a string",
                other.kind(),
            ));
        }
        None => {
            return Err(RequestError::invalid(
                format!("{at}.type"),
                format!("`{at}.type` is required."),
            ));
        }
    };
    let field = |name: &str| -> Result<String, RequestError> {
        match item.get(name) {
            Some(v) => read::string(v, &format!("{at}.{name}")),
            None => Err(RequestError::invalid(
                format!("{at}.{name}"),
                format!("`{at}.{name}` is required for a `{kind}` part."),
            )),
        }
    };
    let part = match kind {
        "text" | "input_text" => Part::Text(field("text")?),
        "refusal" => Part::Refusal(field("refusal")?),
        other => {
            let Some(k) = PartKind::from_type(other) else {
                return Err(RequestError::unsupported(
                    format!("{at}.type"),
                    format!(
                        "Content parts of type `{}` are not supported: send text parts.",
                        crate::json::truncate(other, 40)
                    ),
                ));
            };
            // SECURITY: a part Enclave cannot read could carry anything past the marking
            // check; only the route's policy can let it through (and then the request keeps
            // at least its declared session label).
            if !policy.allows(k) {
                return Err(RequestError::unsupported(
                    format!("{at}.type"),
                    format!(
                        "This server does not accept `{}` content: Enclave cannot inspect it for classification markings. Send the content as text, or ask the operator to allow `{}` parts for this route.",
                        k.as_str(),
                        k.as_str()
                    ),
                ));
            }
            uninspected.push(k);
            // The payload (image URL or data, audio, file data) is not text to scan; the rest
            // of the part (file names, detail) is.
            for (key, v) in members {
                if k.payload_keys().contains(&key.as_ref()) {
                    continue;
                }
                push_paragraph(text, key);
                match v {
                    Json::Object(inner) => {
                        for (ik, iv) in inner {
                            if k.payload_keys().contains(&ik.as_ref()) {
                                continue;
                            }
                            push_paragraph(text, ik);
                            iv.push_text(text);
                        }
                    }
                    other => other.push_text(text),
                }
            }
            return Ok(Part::Uninspected(k));
        }
    };
    item.push_text(text);
    Ok(part)
}

fn tool_calls(
    value: &Json<'_>,
    at: &str,
    text: &mut String,
) -> Result<Vec<ToolCall>, RequestError> {
    let items = match value {
        Json::Null => return Ok(Vec::new()),
        Json::Array(items) => items,
        other => {
            return Err(RequestError::wrong_type(
                at,
                "an array of tool calls",
                other.kind(),
            ));
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = path(at, i);
        let Json::Object(members) = item else {
            return Err(RequestError::wrong_type(
                &at,
                "a tool call object",
                item.kind(),
            ));
        };
        let mut call = ToolCall {
            id: String::new(),
            name: String::new(),
            arguments: String::new(),
        };
        for (key, v) in members {
            push_paragraph(text, key);
            match key.as_ref() {
                "id" => {
                    call.id = read::string(v, &format!("{at}.id"))?;
                    v.push_text(text);
                }
                "function" => {
                    let Json::Object(f) = v else {
                        return Err(RequestError::wrong_type(
                            &format!("{at}.function"),
                            "an object with `name` and `arguments`",
                            v.kind(),
                        ));
                    };
                    for (fk, fv) in f {
                        push_paragraph(text, fk);
                        match fk.as_ref() {
                            "name" => {
                                call.name = read::string(fv, &format!("{at}.function.name"))?;
                                fv.push_text(text);
                            }
                            "arguments" => {
                                call.arguments =
                                    read::string(fv, &format!("{at}.function.arguments"))?;
                                push_arguments(&call.arguments, text);
                            }
                            _ => fv.push_text(text),
                        }
                    }
                }
                _ => v.push_text(text),
            }
        }
        out.push(call);
    }
    Ok(out)
}

/// A tool call's arguments: JSON text whose string values are each a paragraph of their own
/// (so a portion mark at the start of one is at a paragraph start, as in a document). Text that
/// is not JSON is one paragraph.
pub(crate) fn push_arguments(arguments: &str, text: &mut String) {
    match Json::parse(arguments) {
        Ok(json) => json.push_text(text),
        Err(_) => push_paragraph(text, arguments),
    }
}

fn tools(value: &Json<'_>) -> Result<Vec<Tool>, RequestError> {
    let items = match value {
        Json::Null => return Ok(Vec::new()),
        Json::Array(items) => items,
        other => {
            return Err(RequestError::wrong_type(
                "tools",
                "an array of tools",
                other.kind(),
            ));
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = path("tools", i);
        if !matches!(item, Json::Object(_)) {
            return Err(RequestError::wrong_type(&at, "a tool object", item.kind()));
        }
        let Some(f) = item.get("function") else {
            return Err(RequestError::invalid(
                format!("{at}.function"),
                format!("`{at}.function` is required (Enclave serves function tools)."),
            ));
        };
        if !matches!(f, Json::Object(_)) {
            return Err(RequestError::wrong_type(
                &format!("{at}.function"),
                "an object",
                f.kind(),
            ));
        }
        let name = match f.get("name") {
            Some(v) => read::string(v, &format!("{at}.function.name"))?,
            None => {
                return Err(RequestError::invalid(
                    format!("{at}.function.name"),
                    format!("`{at}.function.name` is required."),
                ));
            }
        };
        let description = match f.get("description") {
            Some(v) => read::opt_string(v, &format!("{at}.function.description"))?,
            None => None,
        };
        let parameters = match f.get("parameters") {
            None | Some(Json::Null) => None,
            Some(v @ Json::Object(_)) => Some(read::to_value(v)),
            Some(v) => {
                return Err(RequestError::wrong_type(
                    &format!("{at}.function.parameters"),
                    "a JSON schema object",
                    v.kind(),
                ));
            }
        };
        out.push(Tool {
            name,
            description,
            parameters,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ChatRequest, RequestError> {
        ChatRequest::parse(Bytes::from(body.to_owned()), &ContentPolicy::default())
    }

    #[test]
    fn a_plain_request_reads_into_the_typed_view() {
        let r = parse(
            r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"max_tokens":5,
            "temperature":0.5,"stop":"END","seed":-3,"user":"(S) in an unknown field",
            "messages":[{"role":"system","content":"be brief"},
                        {"role":"user","content":[{"type":"text","text":"hello"},{"type":"text","text":" there"}]}]}"#,
        )
        .unwrap();
        assert_eq!(r.model, "gpt-4o");
        assert!(r.stream && r.include_usage);
        assert_eq!(r.max_tokens, Some(5));
        assert_eq!(r.stop, vec!["END".to_owned()]);
        assert_eq!(r.seed, Some(-3));
        assert_eq!(r.messages.len(), 2);
        assert_eq!(r.messages[1].text(), "hello there");
        assert!(r.text.contains("(S) in an unknown field") && r.text.contains("be brief"));
        assert!(!r.text.contains("gpt-4o"), "the model name is not content");
        assert_eq!(r.body_for("gpt-4o"), r.raw);
    }

    #[test]
    fn tool_call_arguments_are_scanned_value_by_value() {
        let r = parse(
            r#"{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[
               {"id":"c1","type":"function","function":{"name":"f","arguments":"{\"note\":\"(S//NF) the plan\",\"n\":1}"}}]},
               {"role":"tool","tool_call_id":"c1","content":"ok"}],
               "tools":[{"type":"function","function":{"name":"f","description":"TOP SECRET//SI","parameters":{"type":"object"}}}]}"#,
        )
        .unwrap();
        assert_eq!(r.messages[0].tool_calls[0].name, "f");
        assert!(r.text.contains("\n\n(S//NF) the plan"), "{:?}", r.text);
        assert!(r.text.contains("TOP SECRET//SI"));
        assert_eq!(r.tools[0].name, "f");
    }

    #[test]
    fn wrong_types_name_the_field() {
        for (body, param) in [
            (r#"{"model":"m","messages":"hi"}"#, "messages"),
            (r#"{"model":"m","messages":[]}"#, "messages"),
            (r#"{"model":"m","messages":["hi"]}"#, "messages[0]"),
            (
                r#"{"model":"m","messages":[{"content":"x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"model":"m","messages":[{"role":"king","content":"x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":5}]}"#,
                "messages[0].content",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}]}"#,
                "messages[0].content",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]}"#,
                "messages[0].content[0].text",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":[{"text":"x"}]}]}"#,
                "messages[0].content[0].type",
            ),
            (
                r#"{"model":"m","stream":"true","messages":[{"role":"user","content":"x"}]}"#,
                "stream",
            ),
            (
                r#"{"model":5,"messages":[{"role":"user","content":"x"}]}"#,
                "model",
            ),
            (r#"{"messages":[{"role":"user","content":"x"}]}"#, "model"),
            (r#"{"model":"m"}"#, "messages"),
            (
                r#"{"model":"m","max_tokens":-1,"messages":[{"role":"user","content":"x"}]}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"m","max_tokens":1.5,"messages":[{"role":"user","content":"x"}]}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"m","temperature":"hot","messages":[{"role":"user","content":"x"}]}"#,
                "temperature",
            ),
            (
                r#"{"model":"m","stop":[1],"messages":[{"role":"user","content":"x"}]}"#,
                "stop[0]",
            ),
            (
                r#"{"model":"m","tools":[{"type":"function"}],"messages":[{"role":"user","content":"x"}]}"#,
                "tools[0].function",
            ),
            (
                r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":{}}}]}]}"#,
                "messages[0].tool_calls[0].function.arguments",
            ),
        ] {
            let e = parse(body).unwrap_err();
            assert_eq!(e.kind.code(), "invalid_request", "{body}: {e}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {e}");
            assert!(e.message.contains(param), "{body}: {e}");
        }
    }

    #[test]
    fn ambiguous_or_malformed_bodies_are_invalid_json() {
        for body in [
            r#"{"model":"m","model":"n","messages":[]}"#,
            r#"{"model":"m","messages":[{"role":"user","role":"system","content":"x"}]}"#,
            "{",
            "",
        ] {
            assert_eq!(
                parse(body).unwrap_err().kind.code(),
                "invalid_json",
                "{body}"
            );
        }
        let bytes = Bytes::from_static(b"{\"model\":\"m\xff\"}");
        let e = ChatRequest::parse(bytes, &ContentPolicy::default()).unwrap_err();
        assert_eq!(e.kind.code(), "invalid_json");
        assert_eq!(parse("[1]").unwrap_err().kind.code(), "invalid_request");
    }

    #[test]
    fn parts_enclave_cannot_read_are_refused_unless_allowed() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":[
            {"type":"text","text":"what is this?"},
            {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA","detail":"high"}}]}]}"#;
        let e = parse(body).unwrap_err();
        assert_eq!(e.kind.code(), "unsupported_content");
        assert_eq!(e.param.as_deref(), Some("messages[0].content[1].type"));
        let allowed = ContentPolicy {
            images: true,
            ..ContentPolicy::default()
        };
        let r = ChatRequest::parse(Bytes::from(body), &allowed).unwrap();
        assert_eq!(r.uninspected, vec![PartKind::Image]);
        assert!(!r.text.contains("base64,AAAA") && r.text.contains("high"));
        for kind in ["input_audio", "file", "video", "x"] {
            let body = format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":[{{"type":"{kind}"}}]}}]}}"#
            );
            assert_eq!(
                parse(&body).unwrap_err().kind.code(),
                "unsupported_content",
                "{kind}"
            );
        }
    }

    #[test]
    fn an_alias_replaces_only_the_model() {
        let r = parse(
            r#"{"model":"m","extra":{"k":[1,2]},"messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.body_for("upstream-m")).unwrap();
        assert_eq!(v["model"], "upstream-m");
        assert_eq!(v["extra"]["k"][1], 2);
    }
}
