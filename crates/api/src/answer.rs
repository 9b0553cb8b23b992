//! What a backend answers: whole completions, streamed chunks and embeddings, each typed, and
//! rendered in the OpenAI shapes.
//!
//! An answer read from an OpenAI-compatible backend keeps the backend's exact bytes (`raw`)
//! beside its typed view, so that it can be forwarded unchanged when nothing on the way changed
//! it; an answer made by Enclave (the embedded model, a translated Bedrock answer) has no raw
//! bytes and is rendered.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

/// Token counts of an answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Tokens generated.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Their sum (as the backend reported it).
    #[serde(default)]
    pub total_tokens: u64,
}

/// Why generation stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// A content filter stopped it.
    ContentFilter,
    /// A (deprecated) function call.
    FunctionCall,
    /// `max_tokens` or the context window.
    Length,
    /// A natural end or a stop sequence.
    Stop,
    /// The model called tools.
    ToolCalls,
    /// Anything else a backend said.
    Other(String),
}

impl FinishReason {
    /// The reason's name on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::ContentFilter => "content_filter",
            FinishReason::FunctionCall => "function_call",
            FinishReason::Length => "length",
            FinishReason::Stop => "stop",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::Other(s) => s,
        }
    }

    /// The reason a wire name means.
    pub fn parse(s: &str) -> FinishReason {
        match s {
            "content_filter" => FinishReason::ContentFilter,
            "function_call" => FinishReason::FunctionCall,
            "length" => FinishReason::Length,
            "stop" => FinishReason::Stop,
            "tool_calls" => FinishReason::ToolCalls,
            other => FinishReason::Other(other.to_owned()),
        }
    }
}

/// A tool call in a whole answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnswerToolCall {
    /// The call's id.
    pub id: String,
    /// The function called.
    pub name: String,
    /// Its arguments (JSON text).
    pub arguments: String,
}

/// One choice of a whole answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Choice {
    /// Its index.
    pub index: u32,
    /// The text, if any.
    pub content: Option<String>,
    /// A refusal, if the model refused.
    pub refusal: Option<String>,
    /// Calls the model made.
    pub tool_calls: Vec<AnswerToolCall>,
    /// Why it ended.
    pub finish_reason: Option<FinishReason>,
}

/// A whole (not streamed) chat completion.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Completion {
    /// The answer's id.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The model as the client named it.
    pub model: String,
    /// The choices.
    pub choices: Vec<Choice>,
    /// Token counts, if known.
    pub usage: Option<Usage>,
    /// The backend's exact body, when it was read from one.
    pub raw: Option<Bytes>,
}

/// The change one streamed chunk makes to one choice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// The choice.
    pub index: u32,
    /// `assistant` on the first chunk.
    pub role: Option<String>,
    /// More text.
    pub content: Option<String>,
    /// More refusal text.
    pub refusal: Option<String>,
    /// Pieces of tool calls.
    pub tool_calls: Vec<ToolCallDelta>,
    /// Set on the choice's last chunk.
    pub finish_reason: Option<FinishReason>,
}

/// A piece of a streamed tool call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolCallDelta {
    /// Which call (position in the choice's list).
    pub index: u32,
    /// The call's id (first piece).
    pub id: Option<String>,
    /// The function's name (first piece).
    pub name: Option<String>,
    /// More argument text.
    pub arguments: Option<String>,
}

/// One streamed chunk (`chat.completion.chunk`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chunk {
    /// The answer's id.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The model.
    pub model: String,
    /// Changes per choice (empty on a usage-only chunk).
    pub deltas: Vec<Delta>,
    /// Token counts (on the last chunk, when asked for).
    pub usage: Option<Usage>,
    /// The server-sent event exactly as the backend sent it, terminator included, when it was
    /// read from one.
    pub raw: Option<Bytes>,
}

/// An embeddings answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Embeddings {
    /// The model as the client named it.
    pub model: String,
    /// One vector per input, in order (empty when `raw` is forwarded unread).
    pub vectors: Vec<Vec<f32>>,
    /// Tokens read.
    pub usage: Option<Usage>,
    /// Return vectors as base64 of little-endian f32s.
    pub base64: bool,
    /// The backend's exact body, when it was read from one.
    pub raw: Option<Bytes>,
}

/// An error object an OpenAI-compatible backend answered with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorBody {
    /// Its message.
    pub message: String,
    /// Its `type`.
    pub kind: Option<String>,
    /// Its `code`.
    pub code: Option<String>,
    /// Its `param`.
    pub param: Option<String>,
}

/// Why a backend's answer could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unreadable answer from the backend: {0}")]
pub struct AnswerError(pub String);

// === impl Completion ===

impl Completion {
    /// Reads a backend's `chat.completion` JSON body (kept as `raw`).
    ///
    /// # Errors
    ///
    /// [`AnswerError`] when the body is not a completion object.
    pub fn parse(raw: Bytes) -> Result<Completion, AnswerError> {
        let wire: WireCompletion<'_> =
            serde_json::from_slice(&raw).map_err(|e| AnswerError(e.to_string()))?;
        let choices = wire
            .choices
            .into_iter()
            .map(|c| {
                let m = c.message.unwrap_or_default();
                Choice {
                    index: c.index,
                    content: m.content.map(Cow::into_owned),
                    refusal: m.refusal.map(Cow::into_owned),
                    tool_calls: m
                        .tool_calls
                        .into_iter()
                        .map(|t| {
                            let f = t.function.unwrap_or_default();
                            AnswerToolCall {
                                id: t.id.map(Cow::into_owned).unwrap_or_default(),
                                name: f.name.map(Cow::into_owned).unwrap_or_default(),
                                arguments: f.arguments.map(Cow::into_owned).unwrap_or_default(),
                            }
                        })
                        .collect(),
                    finish_reason: c.finish_reason.as_deref().map(FinishReason::parse),
                }
            })
            .collect();
        Ok(Completion {
            id: wire.id.map(Cow::into_owned).unwrap_or_default(),
            created: wire.created.unwrap_or(0),
            model: wire.model.map(Cow::into_owned).unwrap_or_default(),
            choices,
            usage: wire.usage,
            raw: Some(raw),
        })
    }

    /// The body to send: the backend's bytes when it had some, else the rendered JSON.
    pub fn body(&self) -> Bytes {
        match &self.raw {
            Some(raw) => raw.clone(),
            None => self.render(),
        }
    }

    /// Renders the completion as OpenAI's `chat.completion` JSON.
    pub fn render(&self) -> Bytes {
        let choices: Vec<Value> = self
            .choices
            .iter()
            .map(|c| {
                let mut message = serde_json::Map::new();
                message.insert("role".into(), json!("assistant"));
                message.insert("content".into(), json!(c.content));
                message.insert("refusal".into(), json!(c.refusal));
                if !c.tool_calls.is_empty() {
                    let calls: Vec<Value> = c
                        .tool_calls
                        .iter()
                        .map(|t| {
                            json!({"id": t.id, "type": "function",
                                   "function": {"name": t.name, "arguments": t.arguments}})
                        })
                        .collect();
                    message.insert("tool_calls".into(), Value::Array(calls));
                }
                json!({
                    "index": c.index,
                    "message": message,
                    "logprobs": null,
                    "finish_reason": c.finish_reason.as_ref().map(FinishReason::as_str),
                })
            })
            .collect();
        let v = json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": self.usage.map(usage_json),
            "system_fingerprint": null,
        });
        Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
    }

    /// All the text of the answer (content, refusals and tool-call arguments), for screening
    /// and accounting.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.choices {
            for t in [&c.content, &c.refusal].into_iter().flatten() {
                out.push_str(t);
            }
            for t in &c.tool_calls {
                out.push_str(&t.arguments);
            }
        }
        out
    }
}

// === impl Chunk ===

impl Chunk {
    /// Reads the `data` of a server-sent event as a `chat.completion.chunk`; `raw` is the
    /// whole event's bytes.
    ///
    /// # Errors
    ///
    /// [`AnswerError`] when the data is not a chunk object. (An error object is read by
    /// [`ErrorBody::from_event`] first.)
    pub fn parse(data: &str, raw: Option<Bytes>) -> Result<Chunk, AnswerError> {
        let wire: WireChunk<'_> =
            serde_json::from_str(data).map_err(|e| AnswerError(e.to_string()))?;
        let deltas = wire
            .choices
            .into_iter()
            .map(|c| {
                let d = c.delta.unwrap_or_default();
                Delta {
                    index: c.index,
                    role: d.role.map(Cow::into_owned),
                    content: d.content.map(Cow::into_owned),
                    refusal: d.refusal.map(Cow::into_owned),
                    tool_calls: d
                        .tool_calls
                        .into_iter()
                        .map(|t| {
                            let f = t.function.unwrap_or_default();
                            ToolCallDelta {
                                index: t.index,
                                id: t.id.map(Cow::into_owned),
                                name: f.name.map(Cow::into_owned),
                                arguments: f.arguments.map(Cow::into_owned),
                            }
                        })
                        .collect(),
                    finish_reason: c.finish_reason.as_deref().map(FinishReason::parse),
                }
            })
            .collect();
        Ok(Chunk {
            id: wire.id.map(Cow::into_owned).unwrap_or_default(),
            created: wire.created.unwrap_or(0),
            model: wire.model.map(Cow::into_owned).unwrap_or_default(),
            deltas,
            usage: wire.usage,
            raw,
        })
    }

    /// The bytes to send: the backend's event when it had one, else the rendered event.
    pub fn event(&self) -> Bytes {
        match &self.raw {
            Some(raw) => raw.clone(),
            None => self.render(),
        }
    }

    /// Renders the chunk as one server-sent event: `data: {json}\n\n`.
    pub fn render(&self) -> Bytes {
        let choices: Vec<Value> = self
            .deltas
            .iter()
            .map(|d| {
                let mut delta = serde_json::Map::new();
                if let Some(r) = &d.role {
                    delta.insert("role".into(), json!(r));
                }
                if let Some(c) = &d.content {
                    delta.insert("content".into(), json!(c));
                }
                if let Some(r) = &d.refusal {
                    delta.insert("refusal".into(), json!(r));
                }
                if !d.tool_calls.is_empty() {
                    let calls: Vec<Value> = d
                        .tool_calls
                        .iter()
                        .map(|t| {
                            let mut call = serde_json::Map::new();
                            call.insert("index".into(), json!(t.index));
                            if let Some(id) = &t.id {
                                call.insert("id".into(), json!(id));
                                call.insert("type".into(), json!("function"));
                            }
                            let mut f = serde_json::Map::new();
                            if let Some(n) = &t.name {
                                f.insert("name".into(), json!(n));
                            }
                            if let Some(a) = &t.arguments {
                                f.insert("arguments".into(), json!(a));
                            }
                            call.insert("function".into(), Value::Object(f));
                            Value::Object(call)
                        })
                        .collect();
                    delta.insert("tool_calls".into(), Value::Array(calls));
                }
                json!({
                    "index": d.index,
                    "delta": delta,
                    "logprobs": null,
                    "finish_reason": d.finish_reason.as_ref().map(FinishReason::as_str),
                })
            })
            .collect();
        let mut v = serde_json::Map::new();
        v.insert("id".into(), json!(self.id));
        v.insert("object".into(), json!("chat.completion.chunk"));
        v.insert("created".into(), json!(self.created));
        v.insert("model".into(), json!(self.model));
        v.insert("choices".into(), Value::Array(choices));
        if let Some(u) = self.usage {
            v.insert("usage".into(), usage_json(u));
        }
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&serde_json::to_vec(&v).unwrap_or_default());
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }

    /// The text this chunk adds (content, refusal and tool-call arguments).
    pub fn text(&self) -> String {
        let mut out = String::new();
        for d in &self.deltas {
            for t in [&d.content, &d.refusal].into_iter().flatten() {
                out.push_str(t);
            }
            for t in &d.tool_calls {
                if let Some(a) = &t.arguments {
                    out.push_str(a);
                }
            }
        }
        out
    }
}

/// The event that ends an OpenAI stream.
pub const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

// === impl Embeddings ===

impl Embeddings {
    /// Reads a backend's embeddings body for its usage only (the vectors are forwarded as
    /// received, in `raw`).
    ///
    /// # Errors
    ///
    /// [`AnswerError`] when the body is not an embeddings list.
    pub fn parse(model: &str, raw: Bytes) -> Result<Embeddings, AnswerError> {
        let wire: WireEmbeddings =
            serde_json::from_slice(&raw).map_err(|e| AnswerError(e.to_string()))?;
        Ok(Embeddings {
            model: model.to_owned(),
            vectors: Vec::new(),
            usage: wire.usage,
            base64: false,
            raw: Some(raw),
        })
    }

    /// The body to send.
    pub fn body(&self) -> Bytes {
        match &self.raw {
            Some(raw) => raw.clone(),
            None => self.render(),
        }
    }

    /// Renders the vectors as OpenAI's embeddings list.
    pub fn render(&self) -> Bytes {
        let data: Vec<Value> = self
            .vectors
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let embedding = if self.base64 {
                    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                    Value::String(base64(&bytes))
                } else {
                    json!(v)
                };
                json!({"object": "embedding", "index": i, "embedding": embedding})
            })
            .collect();
        let usage = self.usage.unwrap_or_default();
        let v = json!({
            "object": "list",
            "data": data,
            "model": self.model,
            "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total_tokens},
        });
        Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
    }
}

// === impl ErrorBody ===

impl ErrorBody {
    /// Reads `{"error": {...}}` from a backend's error answer; a body that is not one gives an
    /// empty message.
    pub fn parse(raw: &[u8]) -> ErrorBody {
        serde_json::from_slice::<WireErrorEnvelope<'_>>(raw)
            .ok()
            .and_then(|e| e.error)
            .map(WireError::into_body)
            .unwrap_or_default()
    }

    /// The error object in a streamed event's data, if it holds one.
    pub fn from_event(data: &str) -> Option<ErrorBody> {
        if !data.contains("\"error\"") {
            return None;
        }
        serde_json::from_str::<WireErrorEnvelope<'_>>(data)
            .ok()?
            .error
            .map(WireError::into_body)
    }
}

fn usage_json(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    })
}

/// Standard base64 with padding.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b0 = chunk.first().copied().unwrap_or(0);
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        for i in 0..4 {
            if i <= chunk.len() {
                let six = ((n >> (18 - 6 * i)) & 63) as usize;
                out.push(char::from(ALPHABET.get(six).copied().unwrap_or(b'=')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// === wire shapes ===

#[derive(Deserialize)]
struct WireCompletion<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    created: Option<u64>,
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    choices: Vec<WireChoice<'a>>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct WireChoice<'a> {
    #[serde(default)]
    index: u32,
    #[serde(borrow)]
    message: Option<WireMessage<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Default, Deserialize)]
struct WireMessage<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Vec<WireToolCall<'a>>,
}

#[derive(Deserialize)]
struct WireToolCall<'a> {
    #[serde(default)]
    index: u32,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    function: Option<WireFunction<'a>>,
}

#[derive(Default, Deserialize)]
struct WireFunction<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct WireChunk<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    created: Option<u64>,
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    choices: Vec<WireChunkChoice<'a>>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct WireChunkChoice<'a> {
    #[serde(default)]
    index: u32,
    #[serde(borrow)]
    delta: Option<WireDelta<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Default, Deserialize)]
struct WireDelta<'a> {
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Vec<WireToolCall<'a>>,
}

#[derive(Deserialize)]
struct WireEmbeddings {
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct WireErrorEnvelope<'a> {
    #[serde(borrow)]
    error: Option<WireError<'a>>,
}

#[derive(Deserialize)]
struct WireError<'a> {
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
    #[serde(default, rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    code: Option<Value>,
    #[serde(default)]
    param: Option<Value>,
}

impl WireError<'_> {
    fn into_body(self) -> ErrorBody {
        let text = |v: Option<Value>| match v {
            Some(Value::String(s)) => Some(s),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        ErrorBody {
            message: self.message.map(Cow::into_owned).unwrap_or_default(),
            kind: self.kind.map(Cow::into_owned),
            code: text(self.code),
            param: text(self.param),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completion_round_trips_through_render_and_parse() {
        let c = Completion {
            id: "chatcmpl-1".into(),
            created: 7,
            model: "m".into(),
            choices: vec![Choice {
                index: 0,
                content: Some("hi \"there\"".into()),
                refusal: None,
                tool_calls: vec![AnswerToolCall {
                    id: "c".into(),
                    name: "f".into(),
                    arguments: "{}".into(),
                }],
                finish_reason: Some(FinishReason::ToolCalls),
            }],
            usage: Some(Usage {
                prompt_tokens: 1,
                completion_tokens: 2,
                total_tokens: 3,
            }),
            raw: None,
        };
        let rendered = c.render();
        let back = Completion::parse(rendered.clone()).unwrap();
        assert_eq!(back.raw, Some(rendered));
        assert_eq!(Completion { raw: None, ..back }, c);
        assert_eq!(c.text(), "hi \"there\"{}");
    }

    #[test]
    fn a_chunk_round_trips_and_keeps_raw_bytes() {
        let c = Chunk {
            id: "x".into(),
            created: 1,
            model: "m".into(),
            deltas: vec![Delta {
                index: 0,
                content: Some("piece".into()),
                tool_calls: vec![ToolCallDelta {
                    index: 0,
                    id: Some("c".into()),
                    name: Some("f".into()),
                    arguments: Some("{\"a\"".into()),
                }],
                ..Delta::default()
            }],
            usage: None,
            raw: None,
        };
        let event = c.render();
        let data = std::str::from_utf8(&event[6..event.len() - 2]).unwrap();
        let back = Chunk::parse(data, Some(event.clone())).unwrap();
        assert_eq!(back.event(), event);
        assert_eq!(Chunk { raw: None, ..back }, c);
    }

    #[test]
    fn error_bodies_are_read_leniently() {
        let e = ErrorBody::parse(br#"{"error":{"message":"too long","type":"invalid_request_error","code":"context_length_exceeded","param":"messages"}}"#);
        assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
        assert_eq!(ErrorBody::parse(b"<html>").message, "");
        assert!(ErrorBody::from_event(r#"{"choices":[]}"#).is_none());
        assert_eq!(
            ErrorBody::from_event(r#"{"error":{"message":"boom","code":500}}"#)
                .unwrap()
                .code
                .as_deref(),
            Some("500")
        );
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&1.0f32.to_le_bytes()), "AACAPw==");
    }
}
