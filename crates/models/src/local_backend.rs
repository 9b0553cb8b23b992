//! The embedded models as a [`Backend`] (`kind = "local"`): the typed request becomes a chat
//! template prompt or a list of texts for [`LocalEngine`], and its events become typed chunks.
//! The router treats it like any other backend: eligibility by accreditation, retries when its
//! queue is full, fallback to the next candidate.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use enclave_api::{
    ChatRequest, Choice, Chunk, Completion, Delta, Embeddings, EmbeddingsRequest, FinishReason,
    Part, Role, Usage,
};
use enclave_local::chat::{FinishReason as LocalFinish, Generation, GenerationParams, Message};
use futures_core::Stream;
use tokio::sync::mpsc;

use crate::backend::{Backend, BackendError, BackendSpec, BoxFuture, Call, ChatAnswer};
use crate::local::{CHAT_MODEL, ChatEvent, EMBED_MODEL, LocalEngine, LocalError};

/// Tokens generated when the request names no limit.
const DEFAULT_MAX_TOKENS: u64 = 256;

/// Stop sequences the local model accepts at most.
const MAX_STOP: usize = 4;

/// The embedded models behind one backend entry.
#[derive(Debug)]
pub struct LocalBackend {
    spec: BackendSpec,
    engine: Arc<LocalEngine>,
}

impl LocalBackend {
    /// A backend over a started engine.
    pub fn new(spec: BackendSpec, engine: Arc<LocalEngine>) -> LocalBackend {
        LocalBackend { spec, engine }
    }

    /// The engine (for other stages that embed in-process, such as memory).
    pub fn engine(&self) -> &Arc<LocalEngine> {
        &self.engine
    }

    async fn chat_inner(
        &self,
        req: &ChatRequest,
        model: &str,
        call: &Call,
    ) -> Result<ChatAnswer, BackendError> {
        if model != CHAT_MODEL {
            return Err(BackendError::invalid(
                "model",
                format!(
                    "The model `{}` does not serve /v1/chat/completions.",
                    req.model
                ),
            ));
        }
        let messages = messages(req)?;
        let prompt = self.engine.prompt(messages).await.map_err(local_error)?;
        let prompt_tokens = prompt.tokens();
        let context = self.engine.context_length().unwrap_or(0) as u64;
        let room = context.saturating_sub(prompt_tokens as u64);
        let max_tokens = req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS.min(room));
        if max_tokens == 0 || prompt_tokens as u64 + max_tokens > context {
            return Err(BackendError::Invalid {
                code: "context_length_exceeded",
                message: format!(
                    "This model's context is {context} tokens; the prompt has {prompt_tokens} and max_tokens asks for {max_tokens}. Shorten the messages or lower max_tokens."
                ),
                param: Some("messages".to_owned()),
            });
        }
        let params = params(req, max_tokens)?;
        let events = self.engine.chat(prompt, params).map_err(local_error)?;
        let mut stream = LocalStream {
            events,
            id: format!("chatcmpl-{}", call.request_id),
            model: req.model.clone(),
            created: now(),
            include_usage: req.include_usage,
            started: false,
            pending: VecDeque::new(),
            over: false,
        };
        if req.stream {
            return Ok(ChatAnswer::Stream(Box::pin(stream)));
        }
        let mut text = String::new();
        let generation = loop {
            match stream.events.recv().await {
                Some(ChatEvent::Piece(p)) => text.push_str(&p),
                Some(ChatEvent::Done(g)) => break g,
                Some(ChatEvent::Failed(e)) => return Err(BackendError::Failed { reason: e }),
                None => {
                    return Err(BackendError::Failed {
                        reason: "the chat worker ended without an answer".to_owned(),
                    });
                }
            }
        };
        Ok(ChatAnswer::Whole(Completion {
            id: stream.id,
            created: stream.created,
            model: stream.model,
            choices: vec![Choice {
                index: 0,
                content: Some(text),
                refusal: None,
                tool_calls: Vec::new(),
                finish_reason: Some(finish(&generation)),
            }],
            usage: Some(usage(&generation)),
            raw: None,
        }))
    }

    async fn embed_inner(
        &self,
        req: &EmbeddingsRequest,
        model: &str,
    ) -> Result<Embeddings, BackendError> {
        if model != EMBED_MODEL {
            return Err(BackendError::invalid(
                "model",
                format!("The model `{}` does not serve /v1/embeddings.", req.model),
            ));
        }
        if req.token_input {
            return Err(BackendError::invalid(
                "input",
                "The local model embeds text only: send strings, not token arrays.",
            ));
        }
        if let Some(d) = req.dimensions
            && d != enclave_local::embed::DIMENSIONS as u64
        {
            return Err(BackendError::invalid(
                "dimensions",
                format!(
                    "This model's embeddings have {} dimensions.",
                    enclave_local::embed::DIMENSIONS
                ),
            ));
        }
        let (vectors, tokens) = self
            .engine
            .embed(req.input.clone())
            .await
            .map_err(local_error)?;
        Ok(Embeddings {
            model: req.model.clone(),
            vectors,
            usage: Some(Usage {
                prompt_tokens: tokens as u64,
                completion_tokens: 0,
                total_tokens: tokens as u64,
            }),
            base64: req.base64,
            raw: None,
        })
    }
}

impl Backend for LocalBackend {
    fn spec(&self) -> &BackendSpec {
        &self.spec
    }

    fn kind(&self) -> &'static str {
        "local"
    }

    fn describe(&self) -> String {
        "local, in-process".to_owned()
    }

    fn chat<'a>(
        &'a self,
        req: &'a ChatRequest,
        model: &'a str,
        call: &'a Call,
    ) -> BoxFuture<'a, Result<ChatAnswer, BackendError>> {
        Box::pin(self.chat_inner(req, model, call))
    }

    fn embed<'a>(
        &'a self,
        req: &'a EmbeddingsRequest,
        model: &'a str,
        _call: &'a Call,
    ) -> BoxFuture<'a, Result<Embeddings, BackendError>> {
        Box::pin(self.embed_inner(req, model))
    }
}

/// The request's messages as the chat template reads them: text only.
fn messages(req: &ChatRequest) -> Result<Vec<Message>, BackendError> {
    let mut out = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        if m.content.iter().any(|p| matches!(p, Part::Uninspected(_))) {
            return Err(BackendError::invalid(
                &format!("messages[{i}].content"),
                "The local model reads text content parts only.",
            ));
        }
        let role = match m.role {
            Role::System | Role::Developer => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool | Role::Function => "tool",
        };
        out.push(Message {
            role: role.to_owned(),
            content: m.text(),
        });
    }
    Ok(out)
}

fn params(req: &ChatRequest, max_tokens: u64) -> Result<GenerationParams, BackendError> {
    let temperature = req.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(BackendError::invalid(
            "temperature",
            "temperature must be a number from 0 to 2",
        ));
    }
    let top_p = req.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(BackendError::invalid(
            "top_p",
            "top_p must be a number above 0 and at most 1",
        ));
    }
    if req.n.is_some_and(|n| n != 1) {
        return Err(BackendError::invalid(
            "n",
            "the local model returns one choice: n must be 1",
        ));
    }
    if req.stop.len() > MAX_STOP {
        return Err(BackendError::invalid(
            "stop",
            "stop must be a string or up to 4 strings",
        ));
    }
    let seed = req.seed.map_or_else(fresh_seed, i64::cast_unsigned);
    Ok(GenerationParams {
        max_tokens: usize::try_from(max_tokens).unwrap_or(usize::MAX),
        temperature,
        top_p,
        seed,
        stop: req.stop.iter().filter(|s| !s.is_empty()).cloned().collect(),
    })
}

fn local_error(e: LocalError) -> BackendError {
    match e {
        LocalError::Overloaded => BackendError::NotSent {
            reason: "the local model's queue is full".to_owned(),
            overloaded: true,
        },
        LocalError::ContextLength { .. } => BackendError::Invalid {
            code: "context_length_exceeded",
            message: format!("{e}: shorten the messages or lower max_tokens."),
            param: Some("messages".to_owned()),
        },
        LocalError::PromptTooLong { context } => BackendError::Invalid {
            code: "context_length_exceeded",
            message: format!(
                "The prompt has more tokens than this model's whole context of {context} tokens. Shorten the messages."
            ),
            param: Some("messages".to_owned()),
        },
        LocalError::NotServed(m) => BackendError::invalid(
            "model",
            format!("The model {m:?} is not loaded by the local backend."),
        ),
        LocalError::Failed(reason) => BackendError::Failed { reason },
    }
}

fn finish(g: &Generation) -> FinishReason {
    match g.finish_reason {
        LocalFinish::Length => FinishReason::Length,
        LocalFinish::Stop | LocalFinish::Cancelled => FinishReason::Stop,
    }
}

fn usage(g: &Generation) -> Usage {
    Usage {
        prompt_tokens: g.prompt_tokens as u64,
        completion_tokens: g.completion_tokens as u64,
        total_tokens: (g.prompt_tokens + g.completion_tokens) as u64,
    }
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

/// A generation's events as typed chunks, in OpenAI's order: a first chunk with the role, one
/// per piece of text, a last one with the finish reason, and the usage when asked for.
struct LocalStream {
    events: mpsc::Receiver<ChatEvent>,
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    started: bool,
    pending: VecDeque<Chunk>,
    over: bool,
}

impl LocalStream {
    fn chunk(&self, delta: Delta, usage: Option<Usage>) -> Chunk {
        Chunk {
            id: self.id.clone(),
            created: self.created,
            model: self.model.clone(),
            deltas: if usage.is_some() {
                Vec::new()
            } else {
                vec![delta]
            },
            usage,
            raw: None,
        }
    }
}

impl Stream for LocalStream {
    type Item = Result<Chunk, BackendError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(c) = this.pending.pop_front() {
            return Poll::Ready(Some(Ok(c)));
        }
        if this.over {
            return Poll::Ready(None);
        }
        if !this.started {
            this.started = true;
            let first = this.chunk(
                Delta {
                    role: Some("assistant".to_owned()),
                    content: Some(String::new()),
                    ..Delta::default()
                },
                None,
            );
            return Poll::Ready(Some(Ok(first)));
        }
        match this.events.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(ChatEvent::Piece(p))) => {
                let c = this.chunk(
                    Delta {
                        content: Some(p),
                        ..Delta::default()
                    },
                    None,
                );
                Poll::Ready(Some(Ok(c)))
            }
            Poll::Ready(Some(ChatEvent::Done(g))) => {
                this.over = true;
                let last = this.chunk(
                    Delta {
                        finish_reason: Some(finish(&g)),
                        ..Delta::default()
                    },
                    None,
                );
                if this.include_usage {
                    let u = this.chunk(Delta::default(), Some(usage(&g)));
                    this.pending.push_back(u);
                }
                Poll::Ready(Some(Ok(last)))
            }
            Poll::Ready(Some(ChatEvent::Failed(e))) => {
                this.over = true;
                Poll::Ready(Some(Err(BackendError::Failed { reason: e })))
            }
            Poll::Ready(None) => {
                this.over = true;
                Poll::Ready(Some(Err(BackendError::Failed {
                    reason: "the local chat worker stopped".to_owned(),
                })))
            }
        }
    }
}
