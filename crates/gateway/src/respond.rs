//! Answers as responses: whole JSON bodies, and streamed answers as server-sent events that end
//! the request's context when they end (the last events wait until the outcome's audit entry
//! is durable).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use enclave_api::{
    AnswerToolCall, Choice, Chunk, Completion, DONE_EVENT, Delta, FinishReason, ToolCallDelta,
    Usage,
};
use enclave_models::{BackendError, ChunkStream};
use enclave_store::Receipt;
use futures_core::Stream;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::body::BodyError;
use crate::ctx::{Outcome, RequestCtx};
use crate::error::ApiError;
use crate::responses::StreamTurn;
use crate::stage::screen::OutputScreen;

/// How a stream's chunks are sent.
pub(crate) enum Format {
    /// As chat completion chunks, `[DONE]` at the end (`/v1/chat/completions`).
    Chat,
    /// As the Responses API's events; the turn is stored before its closing events
    /// (`/v1/responses`).
    Responses(Box<StreamTurn>),
}

/// The async end of a Responses stream: stores the turn, then gives the context back with the
/// closing events (or the error that ends the stream).
type Closing = Pin<Box<dyn Future<Output = (RequestCtx, Result<Bytes, ApiError>)> + Send>>;

/// A streamed answer as the response body: each chunk screened and forwarded as it arrives,
/// tokens charged as they go, `[DONE]` at the end (for the Responses API: the turn stored,
/// then its closing events) — or an error event, after which the stream ends. The request's
/// context travels inside and is finished when the stream ends (or, if the client goes away
/// first, when the body is dropped).
pub(crate) struct SseBody {
    ctx: Option<RequestCtx>,
    stream: ChunkStream,
    screen: OutputScreen,
    format: Format,
    /// The backend's stream ended well and the turn is to be stored once every delta is sent
    /// (Responses).
    store_turn: bool,
    /// The turn being stored, with the context moved into it.
    storing: Option<Closing>,
    pending: VecDeque<Bytes>,
    done: bool,
    outcome: Option<Outcome>,
    /// The outcome entry's receipt, awaited before the last events are sent.
    closing: Option<Receipt>,
    usage: Option<Usage>,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    end_timer: Pin<Box<Sleep>>,
}

impl SseBody {
    /// A body for `stream`, bounded by the context's limits: the backend may stay silent at
    /// most `limits.stream_idle_timeout`, the whole request may last at most
    /// `limits.max_request`.
    pub(crate) fn new(
        ctx: RequestCtx,
        stream: ChunkStream,
        screen: OutputScreen,
        mut format: Format,
    ) -> SseBody {
        let limits = &ctx.app.config.limits;
        let idle = limits.stream_idle_timeout;
        let end = ctx.start + limits.max_request;
        let mut pending = VecDeque::new();
        if let Format::Responses(turn) = &mut format {
            pending.push_back(turn.head());
        }
        SseBody {
            idle,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
            end_timer: Box::pin(tokio::time::sleep_until(end)),
            ctx: Some(ctx),
            stream,
            screen,
            format,
            store_turn: false,
            storing: None,
            pending,
            done: false,
            outcome: None,
            closing: None,
            usage: None,
        }
    }

    /// A screened chunk as the events of the stream's format (none for a chunk without text
    /// in a Responses stream).
    fn send(&mut self, chunk: &Chunk) {
        match &mut self.format {
            Format::Chat => self.pending.push_back(chunk.event()),
            Format::Responses(turn) => {
                if let Some(b) = turn.chunk(chunk) {
                    self.pending.push_back(b);
                }
            }
        }
    }

    /// Ends the stream well with its closing `events`.
    fn end(&mut self, events: Bytes) {
        self.pending.push_back(events);
        self.outcome = Some(Outcome {
            status: 200,
            code: None,
            complete: true,
            usage: self.usage,
        });
        self.done = true;
    }

    /// Ends the stream with an error event.
    fn fail(&mut self, e: &ApiError) {
        self.pending.push_back(error_event(e));
        self.outcome = Some(Outcome {
            status: e.status.as_u16(),
            code: Some(e.code.clone()),
            complete: false,
            usage: self.usage,
        });
        self.done = true;
    }
}

impl HttpBody for SseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            if this.store_turn
                && this.pending.is_empty()
                && let (Some(mut ctx), Format::Responses(turn)) = (
                    this.ctx.take(),
                    std::mem::replace(&mut this.format, Format::Chat),
                )
            {
                // Every delta is out (and in the output digest): store the turn, with the
                // context, before the closing events.
                this.store_turn = false;
                let usage = this.usage;
                this.storing = Some(Box::pin(async move {
                    let closing = turn.finish(&mut ctx, usage).await;
                    (ctx, closing)
                }));
            }
            if let Some(storing) = this.storing.as_mut() {
                let Poll::Ready((ctx, closing)) = storing.as_mut().poll(cx) else {
                    return Poll::Pending;
                };
                this.storing = None;
                this.ctx = Some(ctx);
                match closing {
                    Ok(events) => this.end(events),
                    Err(e) => this.fail(&e),
                }
                continue;
            }
            if this.done
                && let (Some(mut ctx), Some(outcome)) = (this.ctx.take(), this.outcome.take())
            {
                // The stream has ended: its outcome entry (with the digest of everything the
                // client is sent, these last events included) must be durable before the last
                // events go out, so that a client that saw `[DONE]` has a complete record.
                for bytes in &this.pending {
                    ctx.trail.output(bytes);
                }
                this.screen.record(&mut ctx);
                this.closing = ctx.finish(&outcome);
            }
            if let Some(receipt) = this.closing.as_mut() {
                match Pin::new(receipt).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(_)) => this.closing = None,
                    Poll::Ready(Err(e)) => {
                        tracing::warn!(error = %e, "stream cut short: its outcome entry could not be written");
                        this.closing = None;
                        this.pending.clear();
                        this.pending
                            .push_back(error_event(&ApiError::audit_unavailable()));
                    }
                }
            }
            if let Some(bytes) = this.pending.pop_front() {
                if let Some(ctx) = this.ctx.as_mut() {
                    // The output digest covers exactly the bytes sent.
                    ctx.trail.output(&bytes);
                }
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            if this.end_timer.as_mut().poll(cx).is_ready() {
                tracing::warn!("a streamed answer reached the request's time limit");
                this.fail(&ApiError::new(
                    http::StatusCode::BAD_GATEWAY,
                    "upstream_error",
                    "The answer took longer than this server allows for one request; it was cut off.",
                ));
                continue;
            }
            match this.stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(mut chunk))) => {
                    if let Some(ctx) = this.ctx.as_mut() {
                        // Tokens count against the caller's limit as they are generated
                        // (before the screen holds any back).
                        let text = chunk.text().len() as u64;
                        ctx.charge(text.div_ceil(4));
                    }
                    let deadline = Instant::now() + this.idle;
                    this.idle_timer.as_mut().reset(deadline);
                    if let Err(e) = this.screen.chunk(&mut chunk) {
                        this.fail(&e);
                        continue;
                    }
                    if let Some(u) = chunk.usage {
                        this.usage = Some(u);
                    }
                    // A chunk whose text the screen holds back entirely carries nothing: it is
                    // not sent (its text goes out with a later one).
                    if !crate::stage::screen::is_empty(&chunk) {
                        this.send(&chunk);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(error = %e, "the backend failed mid-stream");
                    this.fail(&mid_stream(&e));
                }
                Poll::Ready(None) => match this.screen.end() {
                    Ok(held) => {
                        for c in &held {
                            this.send(c);
                        }
                        if let Format::Responses(_) = this.format {
                            this.store_turn = true;
                            continue;
                        }
                        this.end(Bytes::from_static(DONE_EVENT));
                    }
                    Err(e) => this.fail(&e),
                },
                Poll::Pending => {
                    if this.idle_timer.as_mut().poll(cx).is_ready() {
                        tracing::warn!(
                            idle_ms = this.idle.as_millis() as u64,
                            "the backend went silent mid-stream"
                        );
                        this.fail(&ApiError::new(
                            http::StatusCode::BAD_GATEWAY,
                            "upstream_error",
                            "The model backend stopped sending in the middle of the answer.",
                        ));
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The API error for a backend that failed after the stream had started.
fn mid_stream(e: &BackendError) -> ApiError {
    match e {
        BackendError::Invalid {
            code,
            message,
            param,
        } => {
            let mut err = ApiError::bad_request(code, message.clone());
            err.param = param.clone();
            err
        }
        _ => ApiError::new(
            http::StatusCode::BAD_GATEWAY,
            "upstream_error",
            "The model backend failed in the middle of the answer; the operator's log has the details.",
        ),
    }
}

/// An error as a server-sent event (the OpenAI SDKs raise it as an API error).
pub(crate) fn error_event(e: &ApiError) -> Bytes {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&e.json());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// A whole answer as the chunks a stream of it would have had (for a client that asked for a
/// stream from a backend that answered at once).
pub(crate) fn chunks_of(c: &Completion, include_usage: bool) -> Vec<Chunk> {
    let chunk = |deltas: Vec<Delta>, usage: Option<Usage>| Chunk {
        id: c.id.clone(),
        created: c.created,
        model: c.model.clone(),
        deltas,
        usage,
        raw: None,
    };
    let mut out = Vec::new();
    for choice in &c.choices {
        out.push(chunk(
            vec![Delta {
                index: choice.index,
                role: Some("assistant".to_owned()),
                content: Some(String::new()),
                ..Delta::default()
            }],
            None,
        ));
        out.push(chunk(
            vec![Delta {
                index: choice.index,
                content: choice.content.clone(),
                refusal: choice.refusal.clone(),
                tool_calls: choice
                    .tool_calls
                    .iter()
                    .enumerate()
                    .map(|(i, t)| ToolCallDelta {
                        index: u32::try_from(i).unwrap_or(u32::MAX),
                        id: Some(t.id.clone()),
                        name: Some(t.name.clone()),
                        arguments: Some(t.arguments.clone()),
                    })
                    .collect(),
                ..Delta::default()
            }],
            None,
        ));
        out.push(chunk(
            vec![Delta {
                index: choice.index,
                finish_reason: Some(choice.finish_reason.clone().unwrap_or(FinishReason::Stop)),
                ..Delta::default()
            }],
            None,
        ));
    }
    if include_usage && let Some(u) = c.usage {
        out.push(chunk(Vec::new(), Some(u)));
    }
    out
}

/// A stream over chunks already made.
pub(crate) struct Replay(pub(crate) VecDeque<Chunk>);

impl Stream for Replay {
    type Item = Result<Chunk, BackendError>;

    fn poll_next(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.get_mut().0.pop_front().map(Ok))
    }
}

/// Reads a whole stream into one completion (for a client that asked for a whole answer from
/// a backend that streamed).
pub(crate) async fn collect(mut stream: ChunkStream) -> Result<Completion, BackendError> {
    let mut c = Completion::default();
    while let Some(item) = std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await {
        let chunk = item?;
        if c.id.is_empty() {
            c.id = chunk.id.clone();
            c.created = chunk.created;
            c.model = chunk.model.clone();
        }
        if chunk.usage.is_some() {
            c.usage = chunk.usage;
        }
        for d in chunk.deltas {
            let at = match c.choices.iter().position(|x| x.index == d.index) {
                Some(at) => at,
                None => {
                    c.choices.push(Choice {
                        index: d.index,
                        ..Choice::default()
                    });
                    c.choices.len() - 1
                }
            };
            let Some(choice) = c.choices.get_mut(at) else {
                continue;
            };
            if let Some(t) = d.content {
                choice.content.get_or_insert_with(String::new).push_str(&t);
            }
            if let Some(t) = d.refusal {
                choice.refusal.get_or_insert_with(String::new).push_str(&t);
            }
            for t in d.tool_calls {
                let i = t.index as usize;
                while choice.tool_calls.len() <= i {
                    choice.tool_calls.push(AnswerToolCall::default());
                }
                if let Some(call) = choice.tool_calls.get_mut(i) {
                    if let Some(id) = t.id {
                        call.id = id;
                    }
                    if let Some(n) = t.name {
                        call.name.push_str(&n);
                    }
                    if let Some(a) = t.arguments {
                        call.arguments.push_str(&a);
                    }
                }
            }
            if d.finish_reason.is_some() {
                choice.finish_reason = d.finish_reason;
            }
        }
    }
    Ok(c)
}
