//! ConverseStream's events as OpenAI-style chunks.
//!
//! [`Translator`] is a synchronous state machine: it takes one decoded event-stream
//! [`Message`] at a time and returns the chunks it means — `messageStart` a first chunk with
//! the role; `contentBlockStart` of a tool use the call's id and name; `contentBlockDelta` more
//! text or more argument text; `messageStop` the finish reason; `metadata` the usage (when the
//! client asked for it). An exception or error message ends the stream with an error.
//! [`ConverseStream`] drives it over a response body.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use enclave_api::{Chunk, Delta, FinishReason, ToolCallDelta, Usage};
use futures_core::Stream;
use http_body::Body as _;
use hyper::body::Incoming;
use serde_json::Value;

use super::converse::{finish_reason, usage};
use super::eventstream::{Decoder, Message};
use crate::backend::BackendError;
use crate::openai::error_chain;

/// Turns ConverseStream events into chunks.
#[derive(Debug)]
pub(crate) struct Translator {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    /// `(content block index, tool call index)` of each tool-use block started.
    tools: Vec<(u64, u32)>,
    /// `messageStop` arrived.
    finished: bool,
}

impl Translator {
    pub(crate) fn new(id: String, model: String, created: u64, include_usage: bool) -> Translator {
        Translator {
            id,
            model,
            created,
            include_usage,
            tools: Vec::new(),
            finished: false,
        }
    }

    /// Whether the answer's last chunk (with its finish reason) was produced.
    pub(crate) fn finished(&self) -> bool {
        self.finished
    }

    /// The chunks one event means.
    ///
    /// # Errors
    ///
    /// [`BackendError::Failed`] for an exception or error message, or an event whose payload
    /// is not what its type promises.
    pub(crate) fn event(&mut self, m: &Message) -> Result<Vec<Chunk>, BackendError> {
        match m.header_str(":message-type") {
            Some("event") => {}
            Some("exception") => {
                let name = m.header_str(":exception-type").unwrap_or("exception");
                return Err(BackendError::Failed {
                    reason: format!("Bedrock failed mid-stream: {name}"),
                });
            }
            Some("error") => {
                let code = m.header_str(":error-code").unwrap_or("error");
                return Err(BackendError::Failed {
                    reason: format!("Bedrock failed mid-stream: {code}"),
                });
            }
            other => {
                return Err(BackendError::Failed {
                    reason: format!(
                        "unexpected event-stream message type {:?}",
                        other.unwrap_or("<none>")
                    ),
                });
            }
        }
        let kind = m.header_str(":event-type").unwrap_or_default();
        let payload: Value =
            serde_json::from_slice(&m.payload).map_err(|e| BackendError::Failed {
                reason: format!("unreadable {kind} event: {e}"),
            })?;
        Ok(match kind {
            "messageStart" => self.one(Delta {
                role: Some("assistant".to_owned()),
                content: Some(String::new()),
                ..Delta::default()
            }),
            "contentBlockStart" => {
                let block = payload
                    .get("contentBlockIndex")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                let Some(tool) = payload.pointer("/start/toolUse") else {
                    return Ok(Vec::new());
                };
                let index = u32::try_from(self.tools.len()).unwrap_or(u32::MAX);
                self.tools.push((block, index));
                let s = |k: &str| tool.get(k).and_then(Value::as_str).map(str::to_owned);
                self.one(Delta {
                    tool_calls: vec![ToolCallDelta {
                        index,
                        id: s("toolUseId"),
                        name: s("name"),
                        arguments: Some(String::new()),
                    }],
                    ..Delta::default()
                })
            }
            "contentBlockDelta" => {
                let block = payload
                    .get("contentBlockIndex")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                if let Some(text) = payload.pointer("/delta/text").and_then(Value::as_str) {
                    self.one(Delta {
                        content: Some(text.to_owned()),
                        ..Delta::default()
                    })
                } else if let Some(input) = payload
                    .pointer("/delta/toolUse/input")
                    .and_then(Value::as_str)
                {
                    let Some(&(_, index)) = self.tools.iter().find(|(b, _)| *b == block) else {
                        return Err(BackendError::Failed {
                            reason: format!(
                                "a tool-use delta for content block {block}, which did not start"
                            ),
                        });
                    };
                    self.one(Delta {
                        tool_calls: vec![ToolCallDelta {
                            index,
                            arguments: Some(input.to_owned()),
                            ..ToolCallDelta::default()
                        }],
                        ..Delta::default()
                    })
                } else {
                    // Reasoning and other block kinds are not part of an OpenAI answer.
                    Vec::new()
                }
            }
            "messageStop" => {
                self.finished = true;
                let stop = payload
                    .get("stopReason")
                    .and_then(Value::as_str)
                    .map_or(FinishReason::Stop, finish_reason);
                self.one(Delta {
                    finish_reason: Some(stop),
                    ..Delta::default()
                })
            }
            "metadata" => match payload.get("usage") {
                Some(u) if self.include_usage => vec![self.chunk(Vec::new(), Some(usage(u)))],
                _ => Vec::new(),
            },
            // contentBlockStop, and event types added later.
            _ => Vec::new(),
        })
    }

    fn one(&self, delta: Delta) -> Vec<Chunk> {
        vec![self.chunk(vec![delta], None)]
    }

    fn chunk(&self, deltas: Vec<Delta>, usage: Option<Usage>) -> Chunk {
        Chunk {
            id: self.id.clone(),
            created: self.created,
            model: self.model.clone(),
            deltas,
            usage,
            raw: None,
        }
    }
}

/// A ConverseStream response body as typed chunks.
pub(crate) struct ConverseStream {
    body: Incoming,
    decoder: Decoder,
    translator: Translator,
    pending: VecDeque<Chunk>,
    over: bool,
}

impl ConverseStream {
    pub(crate) fn new(body: Incoming, translator: Translator) -> ConverseStream {
        ConverseStream {
            body,
            decoder: Decoder::default(),
            translator,
            pending: VecDeque::new(),
            over: false,
        }
    }

    fn fail(&mut self, e: BackendError) -> Poll<Option<Result<Chunk, BackendError>>> {
        self.over = true;
        self.pending.clear();
        Poll::Ready(Some(Err(e)))
    }
}

impl Stream for ConverseStream {
    type Item = Result<Chunk, BackendError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(c) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(c)));
            }
            if this.over {
                return Poll::Ready(None);
            }
            match this.decoder.next_message() {
                Err(e) => {
                    return this.fail(BackendError::Failed {
                        reason: e.to_string(),
                    });
                }
                Ok(Some(m)) => {
                    match this.translator.event(&m) {
                        Ok(chunks) => this.pending.extend(chunks),
                        Err(e) => return this.fail(e),
                    }
                    continue;
                }
                Ok(None) => {}
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.decoder.push(&data);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    return this.fail(BackendError::Failed {
                        reason: format!("reading the stream: {}", error_chain(&e)),
                    });
                }
                Poll::Ready(None) => {
                    if let Err(e) = this.decoder.finish() {
                        return this.fail(BackendError::Failed {
                            reason: e.to_string(),
                        });
                    }
                    if !this.translator.finished() {
                        return this.fail(BackendError::Failed {
                            reason: "the stream ended before messageStop".to_owned(),
                        });
                    }
                    this.over = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::bedrock::eventstream::{Header, HeaderValue};

    fn msg(kind: &str, name: &str, payload: &str) -> Message {
        let s = |v: &str| HeaderValue::String(v.to_owned());
        let type_header = match kind {
            "event" => ":event-type",
            _ => ":exception-type",
        };
        Message {
            headers: vec![
                Header {
                    name: ":message-type".into(),
                    value: s(kind),
                },
                Header {
                    name: type_header.into(),
                    value: s(name),
                },
            ],
            payload: Bytes::from(payload.to_owned()),
        }
    }

    #[test]
    fn a_tool_call_stream_becomes_openai_chunks() {
        let mut t = Translator::new("id".into(), "m".into(), 1, true);
        let events = [
            msg("event", "messageStart", r#"{"role":"assistant"}"#),
            msg(
                "event",
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":"Checking"}}"#,
            ),
            msg("event", "contentBlockStop", r#"{"contentBlockIndex":0}"#),
            msg(
                "event",
                "contentBlockStart",
                r#"{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"tu1","name":"weather"}}}"#,
            ),
            msg(
                "event",
                "contentBlockDelta",
                r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"city\":"}}}"#,
            ),
            msg(
                "event",
                "contentBlockDelta",
                r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"\"Paris\"}"}}}"#,
            ),
            msg("event", "contentBlockStop", r#"{"contentBlockIndex":1}"#),
            msg("event", "messageStop", r#"{"stopReason":"tool_use"}"#),
            msg(
                "event",
                "metadata",
                r#"{"usage":{"inputTokens":3,"outputTokens":4,"totalTokens":7},"metrics":{"latencyMs":1}}"#,
            ),
        ];
        let chunks: Vec<Chunk> = events.iter().flat_map(|e| t.event(e).unwrap()).collect();
        assert!(t.finished());
        assert_eq!(chunks.len(), 7);
        assert_eq!(chunks[0].deltas[0].role.as_deref(), Some("assistant"));
        assert_eq!(chunks[1].deltas[0].content.as_deref(), Some("Checking"));
        let call = &chunks[2].deltas[0].tool_calls[0];
        assert_eq!(
            (call.index, call.id.as_deref(), call.name.as_deref()),
            (0, Some("tu1"), Some("weather"))
        );
        let args: String = chunks[3..5]
            .iter()
            .filter_map(|c| c.deltas[0].tool_calls[0].arguments.clone())
            .collect();
        assert_eq!(args, r#"{"city":"Paris"}"#);
        assert_eq!(
            chunks[5].deltas[0].finish_reason,
            Some(FinishReason::ToolCalls)
        );
        assert_eq!(chunks[6].usage.map(|u| u.total_tokens), Some(7));
        assert!(chunks[6].deltas.is_empty());
        // Rendered as OpenAI's SSE.
        let text = String::from_utf8(chunks[2].render().to_vec()).unwrap();
        assert!(text.contains(r#""id":"tu1""#), "{text}");
    }

    #[test]
    fn exceptions_and_unknown_messages_end_the_stream() {
        let mut t = Translator::new("id".into(), "m".into(), 1, false);
        let e = t
            .event(&msg(
                "exception",
                "throttlingException",
                r#"{"message":"slow"}"#,
            ))
            .unwrap_err();
        assert!(
            matches!(&e, BackendError::Failed { reason } if reason.contains("throttlingException")),
            "{e:?}"
        );
        assert!(!e.may_resend(), "a stream that started may have run");
        assert!(t.event(&msg("bogus", "x", "{}")).is_err());
        assert!(t.event(&msg("event", "messageStart", "not json")).is_err());
        assert!(
            t.event(&msg(
                "event",
                "contentBlockDelta",
                r#"{"contentBlockIndex":4,"delta":{"toolUse":{"input":"x"}}}"#
            ))
            .is_err()
        );
        // Usage is only sent when asked for.
        assert!(
            t.event(&msg("event", "metadata", r#"{"usage":{"inputTokens":1}}"#))
                .unwrap()
                .is_empty()
        );
    }
}
