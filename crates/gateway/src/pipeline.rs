//! The request pipeline: every request enters at [`handle`], passes the stages of its route in
//! order, and leaves through `finish` — the one exit, which maps an error to its OpenAI-shaped
//! body, puts the labels and receipts on the response, and records the outcome.
//!
//! ```text
//! handle ─ route ─┬─ healthz, readyz ───────────────────────────────────────────┐
//!                 ├─ metrics ─ (authenticate, when required) ────────────────────┤
//!                 ├─ models ─ authenticate ─ label(session) ─────────────────────┤
//!                 ├─ audit receipts ─ authenticate ─ label(session) ─ role ──────┤
//!                 ├─ moderations ─ authenticate ─ label(session) ─ read body ─ admit │
//!                 │    ─ parse ─ label(content) ─ authorize ─ screen (the answer) ───┤
//!                 ├─ memories ─ authenticate ─ label(session) ─ body ─ admit ────┤
//!                 └─ chat, embeddings ─ authenticate ─ label(session) ─ read body │
//!                      ─ admit ─ parse ─ label(content) ─ authorize ─ screen input │
//!                      ─ recall ─ route ─ generate ─ screen output ─ remember ────┤
//!                                                                               finish ─ audit
//! ```
//!
//! A stage returns `Err(ApiError)` to end the request; a panic anywhere in a stage is caught
//! and answered 500; a client that goes away mid-request ends it through the context's `Drop`
//! (see the `ctx` module). A streamed answer's context travels in its body and is finished when
//! the stream ends.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use enclave_api::{
    ChatRequest, EmbeddingsRequest, ItemsRequest, ModerationRequest, ResponsesRequest,
};
use enclave_label::Label;
use enclave_models::ChatAnswer;
use enclave_policy::Role;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use tracing::{Instrument, field};

use enclave_store::Receipt;

use crate::app::App;
use crate::audit_api;
use crate::body::{self, Body};
use crate::ctx::{Outcome, RequestCtx};
use crate::error::ApiError;
use crate::identity::PeerCert;
use crate::memory_api;
use crate::respond::{self, Format, Replay, SseBody};
use crate::responses;
use crate::route::{PathId, Route};
use crate::stage::label::CLASSIFICATION;
use crate::stage::screen::OutputScreen;
use crate::stage::{self, audit};

/// The request id header.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The audit receipt header.
const AUDIT_INDEX: HeaderName = HeaderName::from_static("x-enclave-audit-index");

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(1);

/// What a route answers when it succeeds.
#[expect(
    clippy::large_enum_variant,
    reason = "one reply per request, moved once into the response"
)]
enum Reply {
    /// A whole body.
    Whole {
        status: StatusCode,
        content_type: &'static str,
        body: Bytes,
        /// The label of what it returns (`None`: UNCLASSIFIED, it carries no content).
        label: Option<Label>,
        /// Token counts, for the rate limit and the record.
        usage: Option<enclave_api::Usage>,
    },
    /// A stream of server-sent events.
    Stream {
        stream: enclave_models::ChunkStream,
        screen: OutputScreen,
        format: Format,
    },
}

/// Why a route ended early.
struct Exit {
    error: ApiError,
    /// Unread request body remains: the connection must close after the answer.
    close: bool,
}

impl From<ApiError> for Exit {
    fn from(error: ApiError) -> Exit {
        Exit {
            error,
            close: false,
        }
    }
}

/// Serves one request. Never fails: every problem becomes an OpenAI-style error response.
pub async fn handle(
    app: Arc<App>,
    peer: Arc<PeerCert>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let id = request_id(req.headers());
    let route = Route::parse(req.method(), req.uri().path());
    let span = tracing::info_span!(
        "request",
        id = %id,
        method = %req.method(),
        route = route.name(),
        tenant = field::Empty,
        principal = field::Empty,
        auth = field::Empty,
        session = field::Empty,
        content = field::Empty,
        model = field::Empty,
        backend = field::Empty,
    );
    let mut ctx = RequestCtx::new(app, id, route, span.clone());
    let result = {
        let run = std::pin::pin!(run(&mut ctx, &peer, req));
        CatchPanic(run).instrument(span.clone()).await
    };
    let result = result.unwrap_or_else(|panic| {
        let _enter = span.enter();
        tracing::error!(panic = %panic, "a pipeline stage panicked");
        Err(Exit::from(ApiError::internal()))
    });
    Ok(finish(ctx, result).instrument(span).await)
}

/// The one exit: the response for `result`, with the request's label, id and audit receipt,
/// and the outcome recorded (for a stream, when it ends).
///
/// SECURITY: nothing leaves before its audit entry is durable. A whole answer (or a refusal)
/// waits for its entry; a stream waits for its decision entry before its head is sent. When the
/// entry cannot be written, 503 `audit_unavailable` is sent instead.
async fn finish(mut ctx: RequestCtx, result: Result<Reply, Exit>) -> Response<Body> {
    let id = ctx.id.clone();
    let app = Arc::clone(&ctx.app);
    let mut resp = match result {
        Ok(Reply::Whole {
            status,
            content_type,
            body,
            label,
            usage,
        }) => {
            if ctx.route.is_model() || ctx.route.is_state() {
                audit::output(&mut ctx, &body);
            }
            let mut resp = Response::new(body::full(body));
            *resp.status_mut() = status;
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            set_label(&mut resp, label.as_ref());
            let receipt = ctx.finish(&Outcome {
                status: status.as_u16(),
                code: None,
                complete: true,
                usage,
            });
            receipted(&app, resp, receipt).await
        }
        Ok(Reply::Stream {
            stream,
            screen,
            format,
        }) => {
            let label = ctx.answer_label();
            let index = match audit::decision(&mut ctx) {
                None => None,
                Some(receipt) => match receipt.await {
                    Ok(index) => Some(index),
                    Err(e) => {
                        tracing::warn!(error = %e, "stream refused: its decision entry could not be written");
                        // The backend's stream is dropped unread: nothing of it is sent.
                        drop(stream);
                        ctx.permit = None;
                        let _queued = ctx.finish(&Outcome {
                            status: 503,
                            code: Some("audit_unavailable".into()),
                            complete: true,
                            usage: None,
                        });
                        app.metrics.denial("audit_unavailable");
                        return with_request_id(unlogged(), &id);
                    }
                },
            };
            let mut resp = Response::new(SseBody::new(ctx, stream, screen, format).boxed_unsync());
            let headers = resp.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            set_label(&mut resp, Some(&label));
            set_index(&mut resp, index);
            resp
        }
        Err(Exit { error, close }) => {
            // Unknown paths are not counted as denials (scanners probe them all day).
            if ctx.route != Route::NotFound {
                ctx.app.metrics.denial(error.metric_code());
            }
            let outcome = Outcome {
                status: error.status.as_u16(),
                code: Some(error.code.clone()),
                complete: true,
                usage: None,
            };
            ctx.permit = None;
            let receipt = ctx.finish(&outcome);
            let mut resp = error.into_response();
            if close {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            // Errors carry no content: their label is UNCLASSIFIED.
            set_label(&mut resp, None);
            receipted(&app, resp, receipt).await
        }
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

/// `resp` with the index of its durable audit entry, once `receipt` says it is durable; 503
/// `audit_unavailable` in its place when the entry could not be written.
async fn receipted(
    app: &App,
    mut resp: Response<Body>,
    receipt: Option<Receipt>,
) -> Response<Body> {
    let Some(receipt) = receipt else {
        return resp;
    };
    match receipt.await {
        Ok(index) => {
            set_index(&mut resp, Some(index));
            resp
        }
        Err(e) => {
            tracing::warn!(error = %e, "answer withheld: its audit entry could not be written");
            app.metrics.denial("audit_unavailable");
            unlogged()
        }
    }
}

/// The answer that replaces one whose audit entry could not be written.
fn unlogged() -> Response<Body> {
    let mut resp = ApiError::audit_unavailable().into_response();
    set_label(&mut resp, None);
    resp
}

fn with_request_id(mut resp: Response<Body>, id: &str) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

/// Runs the stages of the request's route.
async fn run(
    ctx: &mut RequestCtx,
    peer: &PeerCert,
    req: Request<hyper::body::Incoming>,
) -> Result<Reply, Exit> {
    // SECURITY: while the audit log is known not to write, nothing starts that could not be
    // recorded: refuse before any stage runs or any backend is called.
    if ctx.route.is_audited() && ctx.app.audit.is_unavailable() {
        return Err(ApiError::audit_unavailable().into());
    }
    match ctx.route {
        Route::AuditCheckpoint
        | Route::AuditConsistency
        | Route::AuditEntries
        | Route::AuditInclusion => {
            let (content_type, body) = audit_api::run(ctx, &req, peer).await?;
            Ok(Reply::Whole {
                status: StatusCode::OK,
                content_type,
                body,
                label: None,
                usage: None,
            })
        }
        Route::Health => Ok(json(
            StatusCode::OK,
            &serde_json::json!({"status": "ok"}),
            None,
        )),
        Route::Ready => ready(ctx).await,
        Route::Metrics => metrics(ctx, req.headers(), peer).await,
        Route::Models => models(ctx, req.headers(), peer).await,
        Route::ChatCompletions => chat(ctx, peer, req).await,
        Route::Embeddings => embeddings(ctx, peer, req).await,
        Route::Moderations => moderations(ctx, peer, req).await,
        Route::Memories | Route::MemorySearch | Route::Memory => memories(ctx, peer, req).await,
        // --- stored state (Responses, Conversations) ---
        Route::CreateResponse => create_response(ctx, peer, req).await,
        Route::CreateConversation => create_conversation(ctx, peer, req).await,
        Route::AddItems(id) => add_items(ctx, peer, req, id).await,
        Route::UpdateConversation(id) => update_conversation(ctx, peer, req, id).await,
        Route::GetResponse(_)
        | Route::DeleteResponse(_)
        | Route::ListInputItems(_)
        | Route::GetConversation(_)
        | Route::DeleteConversation(_)
        | Route::ListItems(_)
        | Route::GetItem(..)
        | Route::DeleteItem(..) => state_read(ctx, peer, &req).await,
        // --- end of stored state ---
        Route::MethodNotAllowed(allowed) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} accepts {allowed} only.", req.uri().path()),
        )
        .into()),
        Route::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "No route {} {}: see the OpenAI API reference for the routes Enclave serves.",
                req.method(),
                truncate(req.uri().path(), 200)
            ),
        )
        .into()),
    }
}

async fn ready(ctx: &mut RequestCtx) -> Result<Reply, Exit> {
    if ctx.app.audit.is_unavailable() {
        return Err(ApiError::audit_unavailable().into());
    }
    match ctx.app.store.ping().await {
        Ok(()) => Ok(json(
            StatusCode::OK,
            &serde_json::json!({"status": "ready"}),
            None,
        )),
        Err(e) => {
            tracing::error!(error = %e, "store not ready");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "The database is not reachable.",
            )
            .into())
        }
    }
}

async fn metrics(
    ctx: &mut RequestCtx,
    headers: &HeaderMap,
    peer: &PeerCert,
) -> Result<Reply, Exit> {
    if ctx.app.config.metrics.require_auth {
        stage::authenticate::run(ctx, headers, peer).await?;
        let role = ctx.caller().map(|c| c.principal.role);
        // SECURITY: metrics reveal traffic by route, code and backend; only operators read them
        // when the config says so.
        if !matches!(role, Some(Role::Admin | Role::Auditor | Role::Metrics)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "permission_denied",
                "Reading /metrics needs the `metrics`, `auditor` or `admin` role.",
            )
            .into());
        }
    }
    Ok(Reply::Whole {
        status: StatusCode::OK,
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        body: Bytes::from({
            let mut out = ctx.app.metrics.render();
            audit_api::render_metrics(&ctx.app.audit, &mut out);
            ctx.app.memory.render_metrics(&mut out);
            out
        }),
        label: None,
        usage: None,
    })
}

async fn models(ctx: &mut RequestCtx, headers: &HeaderMap, peer: &PeerCert) -> Result<Reply, Exit> {
    stage::authenticate::run(ctx, headers, peer).await?;
    stage::label::session(ctx, headers)?;
    let label = ctx.answer_label();
    let data: Vec<serde_json::Value> = ctx
        .app
        .router
        .models_for(&label)
        .into_iter()
        .map(|m| serde_json::json!({"id": m.id, "object": "model", "created": 0, "owned_by": m.backend}))
        .collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"object": "list", "data": data}),
        Some(label),
    ))
}

async fn chat(
    ctx: &mut RequestCtx,
    peer: &PeerCert,
    req: Request<hyper::body::Incoming>,
) -> Result<Reply, Exit> {
    let (parts, incoming) = req.into_parts();
    let raw = enter(ctx, peer, &parts.headers, incoming).await?;
    let policy = stage::authorize::content_policy(&ctx.app, ctx.route);
    let mut request = ChatRequest::parse(raw, &policy).map_err(ApiError::from)?;
    ctx.span.record("model", request.model.as_str());
    ctx.model = Some(request.model.clone());
    stage::label::content(ctx, &request.text)?;
    stage::authorize::run(ctx, &request.uninspected)?;
    let recall = stage::recall::begin(ctx, &parts.headers, &request)?;
    stage::screen::input(ctx, &request.text).await?;
    let memory_on = stage::recall::run(ctx, recall, &mut request).await?;
    let candidates = stage::routing::run(ctx, &request.model)?;
    let answer = stage::generate::chat(ctx, &candidates, &request).await?;
    let mut screen = OutputScreen::new(ctx);
    // What the remember stage's extractor reads besides the statement (whole answers only).
    let mut answer_text = None;
    let reply = match (answer, request.stream) {
        (ChatAnswer::Stream(stream), true) => Reply::Stream {
            stream,
            screen,
            format: Format::Chat,
        },
        (ChatAnswer::Whole(whole), true) => {
            let chunks = respond::chunks_of(&whole, request.include_usage);
            Reply::Stream {
                stream: Box::pin(Replay(VecDeque::from(chunks))),
                screen,
                format: Format::Chat,
            }
        }
        (answer, false) => {
            let mut whole = whole_answer(ctx, answer).await?;
            screen.whole(ctx, &mut whole).await?;
            // Copied only for the extractor (the answer moves into the reply below).
            if memory_on && ctx.app.memory.reads_answers() {
                answer_text = stage::remember::answer_text(&whole).map(str::to_owned);
            }
            Reply::Whole {
                status: StatusCode::OK,
                content_type: "application/json",
                body: whole.body(),
                label: Some(ctx.answer_label()),
                usage: whole.usage,
            }
        }
    };
    stage::remember::run(ctx, &request, memory_on, answer_text.as_deref());
    Ok(reply)
}

async fn embeddings(
    ctx: &mut RequestCtx,
    peer: &PeerCert,
    req: Request<hyper::body::Incoming>,
) -> Result<Reply, Exit> {
    let (parts, incoming) = req.into_parts();
    let raw = enter(ctx, peer, &parts.headers, incoming).await?;
    let policy = stage::authorize::content_policy(&ctx.app, ctx.route);
    let request = EmbeddingsRequest::parse(raw, &policy).map_err(ApiError::from)?;
    ctx.span.record("model", request.model.as_str());
    ctx.model = Some(request.model.clone());
    stage::label::content(ctx, &request.text)?;
    stage::authorize::run(ctx, &[])?;
    stage::screen::input(ctx, &request.text).await?;
    let candidates = stage::routing::run(ctx, &request.model)?;
    let answer = stage::generate::embed(ctx, &candidates, &request).await?;
    Ok(Reply::Whole {
        status: StatusCode::OK,
        content_type: "application/json",
        body: answer.body(),
        label: Some(ctx.answer_label()),
        usage: answer.usage,
    })
}

// === stored state: Responses and Conversations (see `crate::responses`) ===

/// `POST /v1/responses`: authenticate ─ label(session) ─ read body ─ admit ─ parse ─
/// label(content) ─ load the previous response or conversation (404 unless visible; its label
/// joins the request's) ─ authorize ─ screen input ─ recall ─ route ─ generate (the backend's
/// chat interface) ─ screen output ─ remember ─ store the response and append to the
/// conversation. A streamed response is sent as the Responses event sequence while the backend
/// generates it (screened as chat streams are), and stored before its closing events.
async fn create_response(
    ctx: &mut RequestCtx,
    peer: &PeerCert,
    req: Request<hyper::body::Incoming>,
) -> Result<Reply, Exit> {
    let (parts, incoming) = req.into_parts();
    let raw = enter(ctx, peer, &parts.headers, incoming).await?;
    let request = ResponsesRequest::parse(&raw).map_err(ApiError::from)?;
    if let Some(model) = &request.model {
        ctx.span.record("model", model.as_str());
    }
    stage::label::content(ctx, &request.text)?;
    let context = responses::load_context(ctx, &request).await?;
    let mut chat = responses::chat_request(&request, &context)?;
    ctx.model = Some(chat.model.clone());
    stage::authorize::run(ctx, &chat.uninspected)?;
    let recall = stage::recall::begin(ctx, &parts.headers, &chat)?;
    stage::screen::input(ctx, &chat.text).await?;
    let memory_on = stage::recall::run(ctx, recall, &mut chat).await?;
    let candidates = stage::routing::run(ctx, &chat.model)?;
    let answer = stage::generate::chat(ctx, &candidates, &chat).await?;
    if request.stream {
        let stream: enclave_models::ChunkStream = match answer {
            ChatAnswer::Stream(stream) => stream,
            ChatAnswer::Whole(whole) => {
                Box::pin(Replay(VecDeque::from(respond::chunks_of(&whole, true))))
            }
        };
        let screen = OutputScreen::new(ctx);
        let turn = responses::StreamTurn::new(request, chat, context, memory_on)?;
        return Ok(Reply::Stream {
            stream,
            screen,
            format: Format::Responses(Box::new(turn)),
        });
    }
    let mut whole = whole_answer(ctx, answer).await?;
    OutputScreen::new(ctx).whole(ctx, &mut whole).await?;
    stage::remember::run(ctx, &chat, memory_on, stage::remember::answer_text(&whole));
    let ids = responses::TurnIds::new()?;
    let turn = responses::finish_turn(ctx, &request, &chat, context, &ids, &whole).await?;
    let usage = whole.usage;
    let mut reply = json(StatusCode::OK, &turn.response, Some(turn.label));
    if let Reply::Whole { usage: u, .. } = &mut reply {
        *u = usage;
    }
    Ok(reply)
}

/// The stages every write to stored state runs on its parsed request's `text`, in order:
/// label (content markings; spillage refused), authorize (`state_role`), screen input.
async fn state_write_stages(ctx: &mut RequestCtx, text: &str) -> Result<(), Exit> {
    stage::label::content(ctx, text)?;
    state_role(ctx)?;
    stage::screen::input(ctx, text).await?;
    Ok(())
}

/// Refuses the `metrics` role (a scraper's identity) on the stored-state routes that do not
/// pass the authorize stage.
fn state_role(ctx: &mut RequestCtx) -> Result<(), ApiError> {
    if ctx.caller().map(|c| c.principal.role) == Some(Role::Metrics) {
        ctx.decide("authorize", "deny", "metrics role");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_denied",
            "The `metrics` role reads /metrics only; it may not use stored state.",
        ));
    }
    ctx.decide("authorize", "allow", ctx.route.name());
    Ok(())
}

/// `POST /v1/conversations`: authenticate ─ label(session) ─ read body ─ admit ─ parse ─
/// label(content) ─ authorize ─ screen input ─ store, labeled with the request's label.
async fn create_conversation(
    ctx: &mut RequestCtx,
    peer: &PeerCert,
    req: Request<hyper::body::Incoming>,
) -> Result<Reply, Exit> {
    let (parts, incoming) = req.into_parts();
    let raw = enter(ctx, peer, &parts.headers, incoming).await?;
    let request = ItemsRequest::parse(&raw, false).map_err(ApiError::from)?;
    state_write_stages(ctx, &request.text).await?;
    let (object, label) = responses::create_conversation(ctx, &request).await?;
    Ok(json(StatusCode::OK, &object, Some(label)))
}

/// `POST /v1/conversations/{id}/items`: as creating one, then appended if the conversation
/// is visible (404 otherwise); the conversation's label rises to the request's.
async fn add_items(
    ctx: &mut RequestCtx,
    peer: &PeerCert,
    req: Request<hyper::body::Incoming>,
    id: PathId,
) -> Result<Reply, Exit> {
    let path = req.uri().path().to_owned();
    let (parts, incoming) = req.into_parts();
    let raw = enter(ctx, peer, &parts.headers, incoming).await?;
    let request = ItemsRequest::parse(&raw, true).map_err(ApiError::from)?;
    state_write_stages(ctx, &request.text).await?;
    let (object, label) = responses::add_items(ctx, id.of(&path), &request).await?;
    Ok(json(StatusCode::OK, &object, Some(label)))
}

/// `POST /v1/conversations/{id}`: as adding items, with the new metadata as the content.
async fn update_conversation(
    ctx: &mut RequestCtx,
    peer: &PeerCert,
    req: Request<hyper::body::Incoming>,
    id: PathId,
) -> Result<Reply, Exit> {
    let path = req.uri().path().to_owned();
    let (parts, incoming) = req.into_parts();
    let raw = enter(ctx, peer, &parts.headers, incoming).await?;
    let request = enclave_api::ConversationUpdate::parse(&raw).map_err(ApiError::from)?;
    state_write_stages(ctx, &request.text).await?;
    let (object, label) = responses::update_conversation(ctx, id.of(&path), &request).await?;
    Ok(json(StatusCode::OK, &object, Some(label)))
}

/// The stored-state routes without a body: authenticate ─ label(session) ─ authorize ─ read
/// or delete (404 unless visible). An answer carries the object's label.
async fn state_read(
    ctx: &mut RequestCtx,
    peer: &PeerCert,
    req: &Request<hyper::body::Incoming>,
) -> Result<Reply, Exit> {
    stage::authenticate::run(ctx, req.headers(), peer).await?;
    stage::label::session(ctx, req.headers())?;
    state_role(ctx)?;
    let path = req.uri().path();
    let session = ctx.answer_label();
    let (object, label) = match ctx.route {
        Route::GetResponse(id) => responses::get_response(ctx, id.of(path)).await?,
        Route::DeleteResponse(id) => (responses::delete_response(ctx, id.of(path)).await?, session),
        Route::ListInputItems(id) => {
            let page = responses::Page::parse(req.uri().query().unwrap_or_default())?;
            responses::list_input_items(ctx, id.of(path), &page).await?
        }
        Route::GetConversation(id) => responses::get_conversation(ctx, id.of(path)).await?,
        Route::DeleteConversation(id) => (
            responses::delete_conversation(ctx, id.of(path)).await?,
            session,
        ),
        Route::ListItems(id) => {
            let page = responses::Page::parse(req.uri().query().unwrap_or_default())?;
            responses::list_items(ctx, id.of(path), None, &page).await?
        }
        Route::GetItem(id, item) => {
            let all = responses::Page::default();
            responses::list_items(ctx, id.of(path), Some(item.of(path)), &all).await?
        }
        Route::DeleteItem(id, item) => {
            responses::delete_item(ctx, id.of(path), item.of(path)).await?
        }
        _ => {
            tracing::error!("a stored-state handler was called for another route");
            return Err(ApiError::internal().into());
        }
    };
    Ok(json(StatusCode::OK, &object, Some(label)))
}

// === end of stored state ===

/// `POST /v1/moderations`: the safety screen's verdict on each input, as OpenAI's moderation
/// endpoint answers. The texts pass the same label stages as a prompt (marked content above the
/// session is spillage, refused before it is screened); the screen is the answer, so it never
/// blocks here.
async fn moderations(
    ctx: &mut RequestCtx,
    peer: &PeerCert,
    req: Request<hyper::body::Incoming>,
) -> Result<Reply, Exit> {
    let (parts, incoming) = req.into_parts();
    let raw = enter(ctx, peer, &parts.headers, incoming).await?;
    let request = ModerationRequest::parse(&raw).map_err(ApiError::from)?;
    let model = request
        .model
        .clone()
        .unwrap_or_else(|| stage::screen::MODERATION_MODEL.to_owned());
    ctx.span.record("model", model.as_str());
    ctx.model = Some(model.clone());
    stage::label::content(ctx, &request.text)?;
    stage::authorize::run(ctx, &[])?;
    let body = stage::screen::moderate(ctx, request.inputs, &model).await?;
    Ok(Reply::Whole {
        status: StatusCode::OK,
        content_type: "application/json",
        body,
        label: Some(ctx.answer_label()),
        usage: None,
    })
}

/// The long-term memory routes (`crate::memory_api`): authenticate, session label, body,
/// admission, then the route.
async fn memories(
    ctx: &mut RequestCtx,
    peer: &PeerCert,
    req: Request<hyper::body::Incoming>,
) -> Result<Reply, Exit> {
    let (parts, incoming) = req.into_parts();
    stage::authenticate::run(ctx, &parts.headers, peer).await?;
    stage::label::session(ctx, &parts.headers)?;
    let raw = if parts.method == http::Method::POST {
        let raw = read_body(ctx, &parts.headers, incoming).await?;
        audit::prompt(ctx, &raw);
        raw
    } else {
        Bytes::new()
    };
    admit(ctx).await?;
    let (status, body, label) = memory_api::run(ctx, &parts.method, parts.uri.path(), raw).await?;
    Ok(Reply::Whole {
        status,
        content_type: "application/json",
        body,
        label: Some(label),
        usage: None,
    })
}

/// A backend's answer as one completion: a stream is collected (a failure in the middle is
/// 502 `upstream_error`); the audit writer is not kept waiting meanwhile.
async fn whole_answer(
    ctx: &mut RequestCtx,
    answer: ChatAnswer,
) -> Result<enclave_api::Completion, ApiError> {
    match answer {
        ChatAnswer::Whole(w) => Ok(w),
        ChatAnswer::Stream(s) => {
            let whole = audit::away(ctx, respond::collect(s)).await;
            whole.map_err(|e| {
                tracing::warn!(error = %e, "the backend failed mid-stream");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_error",
                    "The model backend failed in the middle of the answer; the operator's log has the details.",
                )
            })
        }
    }
}

/// The stages every route with a request body starts with: authenticate ─ label(session) ─
/// read body (bounded) ─ digest it for the audit entry ─ admit. Returns the body.
async fn enter(
    ctx: &mut RequestCtx,
    peer: &PeerCert,
    headers: &HeaderMap,
    incoming: hyper::body::Incoming,
) -> Result<Bytes, Exit> {
    stage::authenticate::run(ctx, headers, peer).await?;
    stage::label::session(ctx, headers)?;
    let raw = read_body(ctx, headers, incoming).await?;
    audit::prompt(ctx, &raw);
    admit(ctx).await?;
    Ok(raw)
}

/// Reads the body within `limits.max_body_bytes` and `limits.body_read_timeout`.
async fn read_body(
    ctx: &RequestCtx,
    headers: &HeaderMap,
    incoming: hyper::body::Incoming,
) -> Result<Bytes, Exit> {
    let limits = &ctx.app.config.limits;
    body::read(
        headers,
        incoming,
        limits.max_body_bytes,
        limits.body_read_timeout,
    )
    .await
    .map_err(|r| Exit {
        error: r.error,
        close: r.close,
    })
}

/// Takes an admission slot (held until the answer ends), after the caller is known and the
/// body has arrived: a slow client never holds one.
async fn admit(ctx: &mut RequestCtx) -> Result<(), ApiError> {
    let permit = ctx.app.admission.enter().await?;
    ctx.permit = Some(permit);
    audit::expect(ctx);
    Ok(())
}

fn json(status: StatusCode, v: &serde_json::Value, label: Option<Label>) -> Reply {
    Reply::Whole {
        status,
        content_type: "application/json",
        body: Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
        label,
        usage: None,
    }
}

fn set_label(resp: &mut Response<Body>, label: Option<&Label>) {
    let value = label
        .and_then(banner_header)
        .unwrap_or(HeaderValue::from_static("UNCLASSIFIED"));
    resp.headers_mut().insert(CLASSIFICATION, value);
}

fn set_index(resp: &mut Response<Body>, index: Option<u64>) {
    if let Some(i) = index {
        resp.headers_mut().insert(AUDIT_INDEX, HeaderValue::from(i));
    }
}

/// The `X-Enclave-Classification` value for a label, rendered once per distinct label on each
/// thread: answers carry the same few labels over and over. The banner is a pure function of
/// the label, so the cache holds no caller's data; it is cleared when it grows past 32
/// entries. `None` when the banner cannot be a header value.
fn banner_header(label: &Label) -> Option<HeaderValue> {
    // A short list compared by equality: hashing a label cost more than rendering half of it,
    // and a different label usually differs in its first fields.
    thread_local! {
        static BANNERS: std::cell::RefCell<Vec<(Label, Option<HeaderValue>)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    BANNERS.with(|cell| {
        let mut cache = cell.borrow_mut();
        if let Some((_, hit)) = cache.iter().find(|(l, _)| l == label) {
            return hit.clone();
        }
        let value = HeaderValue::from_str(&label.banner()).ok();
        if cache.len() >= 32 {
            cache.clear();
        }
        cache.push((label.clone(), value.clone()));
        value
    })
}

fn request_id(headers: &HeaderMap) -> String {
    if let Some(v) = headers.get(REQUEST_ID).and_then(|v| v.to_str().ok())
        && !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return v.to_owned();
    }
    let n = REQUEST_SEQ.fetch_add(1, Ordering::Relaxed);
    // `req_<pid>_<n>` in hex, written by hand: `format!` cost more than the rest of this.
    let mut id = String::with_capacity(4 + 8 + 1 + 16);
    id.push_str("req_");
    push_hex(&mut id, u64::from(process_id()));
    id.push('_');
    push_hex(&mut id, n);
    id
}

/// This process's id, asked of the kernel once: `std::process::id` is a system call each time.
fn process_id() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// Appends `n` in lower-case hex without leading zeros, as `{:x}` writes it.
fn push_hex(out: &mut String, n: u64) {
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        let d = ((n >> (i * 4)) & 0xf) as u8;
        out.push(char::from(if d < 10 { b'0' + d } else { b'a' + d - 10 }));
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// Polls a future, turning a panic inside it into an error value (the panic's message).
struct CatchPanic<F>(F);

impl<F: Future + Unpin> Future for CatchPanic<F> {
    type Output = Result<F::Output, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.get_mut().0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_request_ids_read_as_formatted_hex() {
        for n in [
            0,
            1,
            9,
            10,
            15,
            16,
            255,
            4096,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut s = String::new();
            push_hex(&mut s, n);
            assert_eq!(s, format!("{n:x}"));
        }
        let id = request_id(&HeaderMap::new());
        let pid = format!("req_{:x}_", std::process::id());
        assert!(id.starts_with(&pid), "{id}");
        assert!(u64::from_str_radix(&id[pid.len()..], 16).is_ok(), "{id}");
    }

    #[test]
    fn cached_banners_match_the_rendered_ones() {
        for text in [
            "SECRET",
            "SECRET//NOFORN",
            "TOP SECRET//SI//REL TO USA, GBR",
            "SECRET",
        ] {
            let label: Label = text.parse().unwrap();
            let expected = HeaderValue::from_str(&label.banner()).ok();
            assert_eq!(banner_header(&label), expected, "{text}");
            assert_eq!(banner_header(&label), expected, "{text} (cached)");
        }
    }

    #[test]
    fn a_panic_becomes_a_value() {
        let caught = futures_executor_block_on(CatchPanic(Box::pin(async {
            panic!("stage broke");
        })));
        assert_eq!(caught, Err::<(), _>("stage broke".to_owned()));
    }

    fn futures_executor_block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }
}
