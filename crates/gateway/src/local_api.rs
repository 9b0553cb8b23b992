//! The OpenAI API over the embedded models: requests are read here, run on the local engine's
//! worker threads, and answered in the OpenAI shapes (JSON or SSE chunks).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use enclave_local::chat::{FinishReason, Generation, GenerationParams, Message};
use enclave_models::local::{ChatEvent, LocalEngine, LocalError};
use http::{HeaderValue, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::body::{self, Body, BodyError};
use crate::error::ApiError;

/// Tokens generated when the request names no limit.
const DEFAULT_MAX_TOKENS: usize = 256;

/// `POST /v1/chat/completions` on the local chat model.
///
/// # Errors
///
/// 400 for unsupported or out-of-range parameters and prompts over the context window;
/// 503 `overloaded` when the queue is full; 500 when the model fails.
pub async fn chat(
    engine: &LocalEngine,
    model: &str,
    req: &Value,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let messages = read_messages(req)?;
    let (prompt, prompt_tokens) = engine.prompt(&messages).map_err(local_error)?;
    let context = engine.context_length().unwrap_or(0);
    let room = context.saturating_sub(prompt_tokens);
    let max_tokens = match req
        .get("max_completion_tokens")
        .or_else(|| req.get("max_tokens"))
    {
        None | Some(Value::Null) => DEFAULT_MAX_TOKENS.min(room),
        Some(v) => v
            .as_u64()
            .filter(|n| *n >= 1)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| invalid("max_tokens must be a positive integer", "max_tokens"))?,
    };
    if max_tokens == 0 || prompt_tokens + max_tokens > context {
        return Err(ApiError::bad_request(
            "context_length_exceeded",
            format!(
                "This model's context is {context} tokens; the prompt has {prompt_tokens} and max_tokens asks for {max_tokens}. Shorten the messages or lower max_tokens."
            ),
        )
        .param("messages"));
    }
    let temperature = number(req, "temperature", 1.0, 0.0, 2.0)?;
    let top_p = number(req, "top_p", 1.0, f64::MIN_POSITIVE, 1.0)?;
    if req.get("n").and_then(Value::as_u64).is_some_and(|n| n != 1) {
        return Err(invalid(
            "the local model returns one choice: n must be 1",
            "n",
        ));
    }
    let seed = match req.get("seed") {
        None | Some(Value::Null) => fresh_seed(),
        Some(v) => v
            .as_i64()
            .map(i64::cast_unsigned)
            .or_else(|| v.as_u64())
            .ok_or_else(|| invalid("seed must be an integer", "seed"))?,
    };
    let stop = match req.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.len() <= 4 && a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect(),
        Some(_) => return Err(invalid("stop must be a string or up to 4 strings", "stop")),
    };
    let stop: Vec<String> = stop.into_iter().filter(|s| !s.is_empty()).collect();
    let params = GenerationParams {
        max_tokens,
        temperature,
        top_p,
        seed,
        stop,
    };
    let stream = matches!(req.get("stream"), Some(Value::Bool(true)));
    let include_usage = req
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let events = engine
        .chat(prompt, prompt_tokens, params)
        .map_err(local_error)?;
    let created = now();
    let id = format!("chatcmpl-{id}");
    if stream {
        let sse = Sse {
            events,
            id,
            model: model.to_owned(),
            created,
            include_usage,
            started: false,
            done: false,
        };
        let mut resp = Response::new(sse.boxed_unsync());
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return Ok(resp);
    }
    let mut events = events;
    let mut text = String::new();
    let generation = loop {
        match events.recv().await {
            Some(ChatEvent::Piece(p)) => text.push_str(&p),
            Some(ChatEvent::Done(g)) => break g,
            Some(ChatEvent::Failed(e)) => {
                tracing::error!(error = %e, "local chat model failed");
                return Err(ApiError::internal());
            }
            None => {
                tracing::error!("local chat worker ended without an answer");
                return Err(ApiError::internal());
            }
        }
    };
    let answer = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null},
            "logprobs": null,
            "finish_reason": finish(&generation),
        }],
        "usage": usage(&generation),
        "system_fingerprint": null,
    });
    Ok(json_body(&answer))
}

/// `POST /v1/embeddings` on the local embedding model.
///
/// # Errors
///
/// 400 for malformed `input` or `encoding_format`; 503 `overloaded`; 500 on model failure.
pub async fn embeddings(
    engine: &LocalEngine,
    model: &str,
    req: &Value,
) -> Result<Response<Body>, ApiError> {
    let texts: Vec<String> = match req.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a))
            if !a.is_empty() && a.len() <= 2048 && a.iter().all(Value::is_string) =>
        {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        }
        Some(Value::Array(a)) if a.is_empty() => {
            return Err(invalid("input must not be empty", "input"));
        }
        _ => {
            return Err(invalid(
                "input must be a string or an array of up to 2048 strings (token arrays are not accepted by the local model)",
                "input",
            ));
        }
    };
    let base64 = match req.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Err(invalid(
                "encoding_format must be \"float\" or \"base64\"",
                "encoding_format",
            ));
        }
    };
    if let Some(d) = req.get("dimensions").filter(|d| !d.is_null())
        && d.as_u64() != Some(enclave_local::embed::DIMENSIONS as u64)
    {
        return Err(invalid(
            "this model's embeddings have 384 dimensions",
            "dimensions",
        ));
    }
    let (vectors, tokens) = engine.embed(texts).await.map_err(local_error)?;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(base64_encode(&bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(json_body(&json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

fn read_messages(req: &Value) -> Result<Vec<Message>, ApiError> {
    let Some(list) = req
        .get("messages")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
    else {
        return Err(invalid("messages must be a non-empty array", "messages"));
    };
    let mut out = Vec::with_capacity(list.len());
    for m in list {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let role = match role {
            "system" | "developer" => "system",
            "user" | "assistant" | "tool" => role,
            _ => {
                return Err(invalid(
                    "each message needs a role: system, developer, user, assistant or tool",
                    "messages",
                ));
            }
        };
        let content = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => {
                let mut text = String::new();
                for p in parts {
                    match (
                        p.get("type").and_then(Value::as_str),
                        p.get("text").and_then(Value::as_str),
                    ) {
                        (Some("text"), Some(t)) => text.push_str(t),
                        _ => {
                            return Err(invalid(
                                "the local model reads text content parts only",
                                "messages",
                            ));
                        }
                    }
                }
                text
            }
            None | Some(Value::Null) => String::new(),
            Some(_) => {
                return Err(invalid(
                    "message content must be a string or an array of text parts",
                    "messages",
                ));
            }
        };
        out.push(Message {
            role: role.to_owned(),
            content,
        });
    }
    Ok(out)
}

fn number(
    req: &Value,
    key: &'static str,
    default: f64,
    min: f64,
    max: f64,
) -> Result<f64, ApiError> {
    match req.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .filter(|x| (min..=max).contains(x))
            .ok_or_else(|| invalid(&format!("{key} must be a number from {min} to {max}"), key)),
    }
}

fn invalid(message: &str, param: &'static str) -> ApiError {
    ApiError::bad_request("invalid_request", message.to_owned()).param(param)
}

fn local_error(e: LocalError) -> ApiError {
    match e {
        LocalError::Overloaded => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "The local model is busy and its queue is full. Retry after the time in the Retry-After header.",
        )
        .retry_after(std::time::Duration::from_secs(1)),
        LocalError::ContextLength { .. } => {
            ApiError::bad_request("context_length_exceeded", format!("{e}: shorten the messages or lower max_tokens.")).param("messages")
        }
        LocalError::NotServed(m) => ApiError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!("The model {m:?} is not loaded by the local backend."),
        ),
        LocalError::Failed(e) => {
            tracing::error!(error = %e, "local model failed");
            ApiError::internal()
        }
    }
}

fn finish(g: &Generation) -> &'static str {
    match g.finish_reason {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
}

fn usage(g: &Generation) -> Value {
    json!({
        "prompt_tokens": g.prompt_tokens,
        "completion_tokens": g.completion_tokens,
        "total_tokens": g.prompt_tokens + g.completion_tokens,
    })
}

fn json_body(v: &Value) -> Response<Body> {
    let mut r = Response::new(body::full(Bytes::from(
        serde_json::to_vec(v).unwrap_or_default(),
    )));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn fresh_seed() -> u64 {
    let mut b = [0u8; 8];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        return now();
    }
    u64::from_le_bytes(b)
}

/// Standard base64 with padding (for `encoding_format: "base64"`).
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A streamed chat answer as OpenAI SSE chunks.
struct Sse {
    events: mpsc::Receiver<ChatEvent>,
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    started: bool,
    done: bool,
}

impl Sse {
    fn chunk(&self, delta: &Value, finish: Option<&str>) -> String {
        let c = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        format!("data: {c}\n\n")
    }
}

impl http_body::Body for Sse {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if !self.started {
            self.started = true;
            let first = self.chunk(&json!({"role": "assistant", "content": ""}), None);
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(first)))));
        }
        match self.events.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(ChatEvent::Piece(p))) => {
                let c = self.chunk(&json!({"content": p}), None);
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(c)))))
            }
            Poll::Ready(Some(ChatEvent::Done(g))) => {
                self.done = true;
                let mut out = self.chunk(&json!({}), Some(finish(&g)));
                if self.include_usage {
                    let u = json!({
                        "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [], "usage": usage(&g),
                    });
                    out.push_str(&format!("data: {u}\n\n"));
                }
                out.push_str("data: [DONE]\n\n");
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
            }
            Poll::Ready(Some(ChatEvent::Failed(e))) => {
                self.done = true;
                tracing::error!(error = %e, "local chat model failed mid-stream");
                Poll::Ready(Some(Err("the local model failed".into())))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Err("the local chat worker stopped".into())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(&1.0f32.to_le_bytes()), "AACAPw==");
    }
}
