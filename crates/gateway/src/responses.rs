//! The OpenAI Responses and Conversations APIs over the stored state: what the pipeline's
//! stage sequences for those routes (see `crate::pipeline`) call between the stages.
//!
//! Enclave keeps the state itself and runs each turn through the backend's chat interface: the
//! turn's context (a previous response's history, or a conversation's items), its
//! `instructions` and its input become one chat request, parsed by the same strict parser as
//! `/v1/chat/completions`, so every backend kind serves the Responses API and every stage
//! sees the same typed request.
//!
//! Access: a stored object is used only by a caller of its tenant whose session label
//! dominates the object's label; anything else — another tenant's id, a higher object, a
//! lowered session header, an expired or deleted object, an id that never existed — is the
//! same 404 `not_found`, with the same message. A turn that reads an object joins the
//! object's label into the request's label, and what it writes is labeled with the request's
//! label; a conversation's label is the high-water mark of its writes.
//!
//! Text is stored only sealed with the tenant's data key (see `enclave_store::crypt`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use enclave_api::{
    ChatRequest, Chunk, Completion, ContentPolicy, ConversationUpdate, FinishReason, Item,
    ItemsRequest, ResponsesRequest, Role,
};
use enclave_label::Label;
use enclave_store::StoreError;
use enclave_store::state::{NewItem, StoredConversation, StoredResponse};
use http::StatusCode;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};

use crate::app::App;
use crate::ctx::RequestCtx;
use crate::error::ApiError;

/// What a turn continues: the loaded context and what it came from.
#[derive(Debug, Default)]
pub(crate) struct Context {
    /// The items before this turn's input, in order.
    pub(crate) history: Vec<Item>,
    /// The model of the previous response (used when the request names none).
    pub(crate) previous_model: Option<String>,
    /// The conversation the turn is appended to.
    pub(crate) conversation: Option<String>,
}

/// The caller's tenant and principal (after authentication).
fn who(ctx: &RequestCtx) -> Result<(String, String), ApiError> {
    let Some(caller) = ctx.caller() else {
        tracing::error!("a stored-state route ran before authentication");
        return Err(ApiError::internal());
    };
    Ok((
        caller.principal.tenant.as_str().to_owned(),
        caller.principal.id.as_str().to_owned(),
    ))
}

/// The session label (after the label stage).
fn session(ctx: &RequestCtx) -> Result<Label, ApiError> {
    match &ctx.session {
        Some(s) => Ok(s.label().clone()),
        None => {
            tracing::error!("a stored-state route ran before the session was opened");
            Err(ApiError::internal())
        }
    }
}

/// 404 `not_found` for an object of `kind` (`response`, `conversation`, `item`): the same
/// answer whether it never existed, belongs to another tenant, is above the session, expired
/// or was deleted. Recorded as a decision (the audit entry) and logged with the reason.
pub(crate) fn not_found(ctx: &mut RequestCtx, kind: &'static str, param: Option<&str>) -> ApiError {
    ctx.decide("state", "deny", "not_found");
    tracing::info!(object = kind, "stored object not found for this caller");
    let e = ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "No {kind} with that id was found. Check the id, your tenant and your session's classification."
        ),
    );
    match param {
        Some(p) => e.param(p),
        None => e,
    }
}

/// A store failure as the API error the caller sees (its detail only in the log).
fn store_failed(e: &StoreError) -> ApiError {
    tracing::error!(error = %e, "stored state failed");
    match e {
        StoreError::Conflict(_) => ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "The object changed under a concurrent request; retry.",
        ),
        _ => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "The stored state could not be read or written; retry later.",
        ),
    }
}

/// A fresh id: `prefix` and 24 random bytes in hex.
pub(crate) fn new_id(prefix: &str) -> Result<String, ApiError> {
    let mut bytes = [0u8; 24];
    SystemRandom::new().fill(&mut bytes).map_err(|_| {
        tracing::error!("the system RNG failed");
        ApiError::internal()
    })?;
    let mut id = String::with_capacity(prefix.len() + 48);
    id.push_str(prefix);
    for b in bytes {
        id.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        id.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    Ok(id)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn expiry(now: i64, keep: Option<Duration>) -> Option<i64> {
    keep.map(|d| now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)))
}

/// Joins a stored object's label into the request's label.
fn join_label(ctx: &mut RequestCtx, banner: &str) -> Result<(), ApiError> {
    let Ok(stored) = banner.parse::<Label>() else {
        tracing::error!("a stored object's label does not parse");
        return Err(ApiError::internal());
    };
    let label = ctx.answer_label().join(&stored);
    ctx.label = Some(label);
    Ok(())
}

/// Loads what the turn continues (`previous_response_id` or `conversation`) if the caller may
/// see it, and joins its label into the request's label.
///
/// # Errors
///
/// 404 `not_found` (see the module documentation); 503 when the store fails.
pub(crate) async fn load_context(
    ctx: &mut RequestCtx,
    req: &ResponsesRequest,
) -> Result<Context, ApiError> {
    let (tenant, _) = who(ctx)?;
    let session = session(ctx)?;
    let store = ctx.app.store.clone();
    let mut out = Context::default();
    if let Some(id) = &req.previous_response_id {
        let found = store
            .response(&tenant, id, &session)
            .await
            .map_err(|e| store_failed(&e))?;
        let Some(prev) = found else {
            return Err(not_found(ctx, "response", Some("previous_response_id")));
        };
        join_label(ctx, &prev.label)?;
        let doc: Value = serde_json::from_slice(&prev.body).map_err(|e| {
            tracing::error!(error = %e, "a stored response does not parse");
            ApiError::internal()
        })?;
        out.history = serde_json::from_value(doc["history"].clone()).unwrap_or_default();
        out.previous_model = doc["response"]["model"].as_str().map(str::to_owned);
        ctx.decide("state", "allow", "previous_response");
    }
    if let Some(id) = &req.conversation {
        let found = store
            .conversation_items(&tenant, id, &session)
            .await
            .map_err(|e| store_failed(&e))?;
        let Some(items) = found else {
            return Err(not_found(ctx, "conversation", Some("conversation")));
        };
        let conv = store
            .conversation(&tenant, id, &session)
            .await
            .map_err(|e| store_failed(&e))?;
        let Some(conv) = conv else {
            return Err(not_found(ctx, "conversation", Some("conversation")));
        };
        join_label(ctx, &conv.label)?;
        for item in items {
            match serde_json::from_slice::<Item>(&item.body) {
                Ok(i) => out.history.push(i),
                Err(e) => {
                    tracing::error!(error = %e, "a stored conversation item does not parse");
                    return Err(ApiError::internal());
                }
            }
        }
        out.conversation = Some(id.clone());
        ctx.decide("state", "allow", "conversation");
    }
    Ok(out)
}

/// The chat request a turn runs as: `instructions` as a system message, then the history and
/// the new input; streamed from the backend (with its token counts) when the turn is, so its
/// text reaches the client as it is generated and screened.
///
/// # Errors
///
/// 400 when no model is named; the chat parser's errors (which the built body never has).
pub(crate) fn chat_request(
    req: &ResponsesRequest,
    context: &Context,
) -> Result<ChatRequest, ApiError> {
    let Some(model) = req.model.clone().or_else(|| context.previous_model.clone()) else {
        return Err(
            ApiError::bad_request("invalid_request", "`model` is required.").param("model"),
        );
    };
    let mut messages = Vec::new();
    if let Some(instructions) = &req.instructions {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    for item in context.history.iter().chain(&req.input) {
        let role = match item.chat_role() {
            // Chat backends do not all know `developer`; it means what `system` means.
            Role::Developer | Role::System => "system",
            Role::Assistant => "assistant",
            _ => "user",
        };
        messages.push(json!({"role": role, "content": item.text()}));
    }
    let mut body = json!({"model": model, "messages": messages, "stream": req.stream});
    if req.stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    if let Some(n) = req.max_output_tokens {
        body["max_tokens"] = json!(n);
    }
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(p) = req.top_p {
        body["top_p"] = json!(p);
    }
    let raw = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    ChatRequest::parse(raw, &ContentPolicy::default()).map_err(ApiError::from)
}

/// The outcome of a turn: the response object and the label it carries.
pub(crate) struct Turn {
    /// The response object (OpenAI's `response`).
    pub(crate) response: Value,
    /// The request's label, which the stored objects carry.
    pub(crate) label: Label,
}

/// The ids and creation time of a turn's response, chosen before its answer (a streamed turn
/// names them in its first events).
#[derive(Clone, Debug)]
pub(crate) struct TurnIds {
    /// The response's id (`resp_…`).
    pub(crate) response: String,
    /// The output message's id (`msg_…`).
    pub(crate) message: String,
    /// Unix seconds.
    pub(crate) created_at: i64,
}

impl TurnIds {
    /// Fresh random ids, created now.
    ///
    /// # Errors
    ///
    /// 500 when the system RNG fails.
    pub(crate) fn new() -> Result<TurnIds, ApiError> {
        Ok(TurnIds {
            response: new_id("resp_")?,
            message: new_id("msg_")?,
            created_at: unix_now(),
        })
    }
}

/// The response object (OpenAI's `response`) of a turn, with `output`, `status` and `usage`
/// as given.
fn response_object(
    req: &ResponsesRequest,
    model: &str,
    conversation: Option<&String>,
    ids: &TurnIds,
    output: Value,
    status: &str,
    usage: Value,
) -> Value {
    json!({
        "id": ids.response,
        "object": "response",
        "created_at": ids.created_at,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": if status == "incomplete" { json!({"reason": "max_output_tokens"}) } else { Value::Null },
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": req.previous_response_id,
        "conversation": conversation.map(|c| json!({"id": c})),
        "reasoning": {"effort": null, "summary": null},
        "store": req.store,
        "temperature": req.temperature,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": req.top_p,
        "truncation": "disabled",
        "usage": usage,
        "user": null,
        "metadata": req.metadata.clone().unwrap_or_else(|| json!({})),
    })
}

/// Builds the response object for `answer`, stores it (unless `store` is false) and appends
/// the turn to its conversation.
///
/// # Errors
///
/// 404 when the conversation went away (or rose above the session) during the turn; 503 when
/// the store fails.
pub(crate) async fn finish_turn(
    ctx: &mut RequestCtx,
    req: &ResponsesRequest,
    chat: &ChatRequest,
    context: Context,
    ids: &TurnIds,
    answer: &Completion,
) -> Result<Turn, ApiError> {
    let (tenant, principal) = who(ctx)?;
    let label = ctx.answer_label();
    let now = ids.created_at;
    let id = ids.response.clone();
    let mut output = Item::message(Role::Assistant, answer.text());
    output.id = ids.message.clone();
    let mut input = req.input.clone();
    for item in &mut input {
        item.id = new_id("msg_")?;
    }
    let incomplete = answer
        .choices
        .first()
        .and_then(|c| c.finish_reason.as_ref())
        .is_some_and(|r| *r == FinishReason::Length);
    let usage = answer.usage.map_or(Value::Null, |u| {
        json!({
            "input_tokens": u.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": u.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": u.total_tokens.max(u.prompt_tokens + u.completion_tokens),
        })
    });
    let response = response_object(
        req,
        &chat.model,
        context.conversation.as_ref(),
        ids,
        json!([output]),
        if incomplete {
            "incomplete"
        } else {
            "completed"
        },
        usage,
    );
    let store = ctx.app.store.clone();
    if let Some(conv) = &context.conversation {
        let session = session(ctx)?;
        let mut items = Vec::with_capacity(input.len() + 1);
        for item in input.iter().chain(std::iter::once(&output)) {
            items.push(NewItem {
                id: item.id.clone(),
                body: serde_json::to_vec(item).unwrap_or_default(),
            });
        }
        let raised = store
            .append_items(&tenant, conv, &session, &principal, &label, &items)
            .await
            .map_err(|e| store_failed(&e))?;
        if raised.is_none() {
            return Err(not_found(ctx, "conversation", Some("conversation")));
        }
    }
    if req.store {
        let mut history = context.history;
        history.extend(input);
        history.push(output);
        let doc = json!({"response": response, "history": history});
        let keep = ctx.app.config.retention.for_tenant(&tenant).responses;
        store
            .put_response(&StoredResponse {
                id,
                tenant,
                principal,
                label: label.banner(),
                previous_response_id: req.previous_response_id.clone(),
                conversation_id: context.conversation.clone(),
                body: serde_json::to_vec(&doc).unwrap_or_default(),
                created_at: now,
                expires_at: expiry(now, Some(keep)),
            })
            .await
            .map_err(|e| store_failed(&e))?;
        ctx.decide("state", "allow", "stored");
    }
    Ok(Turn { response, label })
}

/// A streamed turn (`"stream": true`): the Responses API's server-sent events, in the order the
/// `openai` SDK's `responses.create(stream=True)` expects — created, in progress, the output
/// item and its text part added ([`StreamTurn::head`]); the text as deltas while the backend
/// generates it and the output screen releases it ([`StreamTurn::chunk`]); then, once the turn
/// is stored, the text, part and item done and completed ([`StreamTurn::finish`]).
pub(crate) struct StreamTurn {
    req: ResponsesRequest,
    chat: ChatRequest,
    context: Context,
    memory_on: bool,
    ids: TurnIds,
    /// The events' next `sequence_number`.
    seq: u64,
    /// The text sent so far.
    text: String,
    finish_reason: Option<FinishReason>,
}

impl StreamTurn {
    /// A streamed turn of `req`, run as `chat` over `context`.
    ///
    /// # Errors
    ///
    /// 500 when the system RNG fails.
    pub(crate) fn new(
        req: ResponsesRequest,
        chat: ChatRequest,
        context: Context,
        memory_on: bool,
    ) -> Result<StreamTurn, ApiError> {
        Ok(StreamTurn {
            req,
            chat,
            context,
            memory_on,
            ids: TurnIds::new()?,
            seq: 0,
            text: String::new(),
            finish_reason: None,
        })
    }

    /// One event: `event: <kind>` and `data` with its type and sequence number.
    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(&serde_json::to_vec(&data).unwrap_or_default());
        out.extend_from_slice(b"\n\n");
    }

    /// The events before any text: the response created and in progress, its message item
    /// and text part added.
    pub(crate) fn head(&mut self) -> Bytes {
        let start = response_object(
            &self.req,
            &self.chat.model,
            self.context.conversation.as_ref(),
            &self.ids,
            json!([]),
            "in_progress",
            Value::Null,
        );
        let item = json!({"id": self.ids.message, "type": "message", "role": "assistant",
                          "status": "in_progress", "content": []});
        let mut out = Vec::new();
        self.emit(&mut out, "response.created", json!({"response": start}));
        self.emit(&mut out, "response.in_progress", json!({"response": start}));
        self.emit(
            &mut out,
            "response.output_item.added",
            json!({"output_index": 0, "item": item}),
        );
        let part = json!({"type": "output_text", "text": "", "annotations": []});
        self.emit(
            &mut out,
            "response.content_part.added",
            json!({"item_id": self.ids.message, "output_index": 0, "content_index": 0, "part": part}),
        );
        Bytes::from(out)
    }

    /// A screened chunk of the backend's answer as a text delta (its first choice's text);
    /// `None` when it carries no text.
    pub(crate) fn chunk(&mut self, chunk: &Chunk) -> Option<Bytes> {
        let delta = chunk.deltas.iter().find(|d| d.index == 0)?;
        if delta.finish_reason.is_some() {
            self.finish_reason.clone_from(&delta.finish_reason);
        }
        let text = delta.content.as_deref().filter(|t| !t.is_empty())?;
        self.text.push_str(text);
        let mut out = Vec::new();
        let event = json!({"item_id": self.ids.message, "output_index": 0, "content_index": 0,
                           "delta": text, "logprobs": []});
        self.emit(&mut out, "response.output_text.delta", event);
        Some(Bytes::from(out))
    }

    /// Ends the turn once the backend's stream has ended and every delta is sent: the remember
    /// stage, the response stored and appended to its conversation ([`finish_turn`]), then
    /// the closing events.
    ///
    /// # Errors
    ///
    /// As [`finish_turn`].
    pub(crate) async fn finish(
        mut self,
        ctx: &mut RequestCtx,
        usage: Option<enclave_api::Usage>,
    ) -> Result<Bytes, ApiError> {
        let answer = Completion {
            id: self.ids.response.clone(),
            created: u64::try_from(self.ids.created_at).unwrap_or(0),
            model: self.chat.model.clone(),
            choices: vec![enclave_api::Choice {
                index: 0,
                content: Some(std::mem::take(&mut self.text)),
                finish_reason: self.finish_reason.clone(),
                ..enclave_api::Choice::default()
            }],
            usage,
            ..Completion::default()
        };
        crate::stage::remember::run(
            ctx,
            &self.chat,
            self.memory_on,
            crate::stage::remember::answer_text(&answer),
        );
        let context = std::mem::take(&mut self.context);
        let turn = finish_turn(ctx, &self.req, &self.chat, context, &self.ids, &answer).await?;
        let response = turn.response;
        let item = response["output"][0].clone();
        let part = &item["content"][0];
        let item_id = self.ids.message.clone();
        let mut out = Vec::new();
        self.emit(
            &mut out,
            "response.output_text.done",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": part["text"], "logprobs": []}),
        );
        self.emit(
            &mut out,
            "response.content_part.done",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": part}),
        );
        self.emit(
            &mut out,
            "response.output_item.done",
            json!({"output_index": 0, "item": item}),
        );
        let done = if response["status"] == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.emit(&mut out, done, json!({"response": response}));
        Ok(Bytes::from(out))
    }
}

impl std::fmt::Debug for StreamTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamTurn")
            .field("response", &self.ids.response)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// The stored response `id`'s object, if the caller may see it, and its label.
///
/// # Errors
///
/// 404 `not_found`; 503 when the store fails.
pub(crate) async fn get_response(
    ctx: &mut RequestCtx,
    id: &str,
) -> Result<(Value, Label), ApiError> {
    let (doc, label) = visible_response(ctx, id).await?;
    Ok((doc["response"].clone(), label))
}

/// The stored document of response `id` and its label, if the caller may see it.
///
/// # Errors
///
/// 404 `not_found`; 503 when the store fails.
async fn visible_response(ctx: &mut RequestCtx, id: &str) -> Result<(Value, Label), ApiError> {
    let (tenant, _) = who(ctx)?;
    let session = session(ctx)?;
    let found = ctx
        .app
        .store
        .response(&tenant, id, &session)
        .await
        .map_err(|e| store_failed(&e))?;
    let Some(r) = found else {
        return Err(not_found(ctx, "response", None));
    };
    let doc: Value = serde_json::from_slice(&r.body).map_err(|e| {
        tracing::error!(error = %e, "a stored response does not parse");
        ApiError::internal()
    })?;
    let label = r.label.parse::<Label>().map_err(|_| ApiError::internal())?;
    Ok((doc, label))
}

/// The input items of the stored response `id` (a page of them), if the caller may see the
/// response, and the response's label.
///
/// As OpenAI's, these are the items the response was generated from: the context it
/// continued (the previous response's items or the conversation's, as they were when it ran)
/// and the turn's own input, oldest first — not its output, nor its `instructions`.
///
/// # Errors
///
/// 404 `not_found`; 503 when the store fails.
pub(crate) async fn list_input_items(
    ctx: &mut RequestCtx,
    id: &str,
    page: &Page,
) -> Result<(Value, Label), ApiError> {
    let (doc, label) = visible_response(ctx, id).await?;
    let mut history: Vec<Item> = serde_json::from_value(doc["history"].clone()).map_err(|e| {
        tracing::error!(error = %e, "a stored response's history does not parse");
        ApiError::internal()
    })?;
    // The stored history ends with the response's output items: what is left is its input.
    let outputs = doc["response"]["output"].as_array().map_or(0, Vec::len);
    history.truncate(history.len().saturating_sub(outputs));
    Ok((page.list(history), label))
}

/// Deletes the stored response `id` if the caller may see it.
///
/// # Errors
///
/// 404 `not_found`; 503 when the store fails.
pub(crate) async fn delete_response(ctx: &mut RequestCtx, id: &str) -> Result<Value, ApiError> {
    let (tenant, _) = who(ctx)?;
    let session = session(ctx)?;
    let deleted = ctx
        .app
        .store
        .delete_response(&tenant, id, &session)
        .await
        .map_err(|e| store_failed(&e))?;
    if !deleted {
        return Err(not_found(ctx, "response", None));
    }
    ctx.decide("state", "allow", "deleted");
    Ok(json!({"id": id, "object": "response.deleted", "deleted": true}))
}

fn conversation_object(c: &StoredConversation) -> Value {
    let metadata: Value = serde_json::from_slice(&c.body).unwrap_or_else(|_| json!({}));
    json!({
        "id": c.id,
        "object": "conversation",
        "created_at": c.created_at,
        "metadata": if metadata.is_object() { metadata } else { json!({}) },
    })
}

fn items_list(items: &[Item], has_more: bool) -> Value {
    json!({
        "object": "list",
        "data": items,
        "first_id": items.first().map(|i| i.id.clone()),
        "last_id": items.last().map(|i| i.id.clone()),
        "has_more": has_more,
    })
}

/// The paging of `GET /v1/conversations/{id}/items` and `GET /v1/responses/{id}/input_items`:
/// `order` (`asc` or `desc`, the default,
/// newest first, as OpenAI's), `limit` (1..=100, default 20) and `after` (an item id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Page {
    /// Oldest first.
    pub(crate) ascending: bool,
    /// At most this many items.
    pub(crate) limit: usize,
    /// Start after this item.
    pub(crate) after: Option<String>,
}

impl Default for Page {
    /// Every item, oldest first (for internal reads).
    fn default() -> Page {
        Page {
            ascending: true,
            limit: usize::MAX,
            after: None,
        }
    }
}

impl Page {
    /// The list object of this page of `items` (given oldest first): OpenAI's `object: "list"`
    /// with `first_id`, `last_id` and `has_more`. An `after` id that is not among the items
    /// gives an empty page.
    fn list(&self, mut items: Vec<Item>) -> Value {
        if !self.ascending {
            items.reverse();
        }
        if let Some(after) = &self.after {
            match items.iter().position(|i| &i.id == after) {
                Some(at) => drop(items.drain(..=at)),
                None => items.clear(),
            }
        }
        let has_more = items.len() > self.limit;
        items.truncate(self.limit);
        items_list(&items, has_more)
    }

    /// Reads the query string (unknown parameters are ignored).
    ///
    /// # Errors
    ///
    /// 400 `invalid_request` naming a parameter with a bad value.
    pub(crate) fn parse(query: &str) -> Result<Page, ApiError> {
        let mut page = Page {
            ascending: false,
            limit: 20,
            after: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "order" => {
                    page.ascending = match value {
                        "asc" => true,
                        "desc" => false,
                        _ => {
                            return Err(ApiError::bad_request(
                                "invalid_request",
                                "`order` must be `asc` or `desc`.",
                            )
                            .param("order"));
                        }
                    };
                }
                "limit" => {
                    page.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=100).contains(n))
                        .ok_or_else(|| {
                            ApiError::bad_request(
                                "invalid_request",
                                "`limit` must be an integer from 1 to 100.",
                            )
                            .param("limit")
                        })?;
                }
                "after" if !value.is_empty() => page.after = Some(value.to_owned()),
                _ => {}
            }
        }
        Ok(page)
    }
}

fn new_items(items: &[Item]) -> Result<(Vec<Item>, Vec<NewItem>), ApiError> {
    let mut stored = Vec::with_capacity(items.len());
    let mut rows = Vec::with_capacity(items.len());
    for item in items {
        let mut item = item.clone();
        item.id = new_id("msg_")?;
        rows.push(NewItem {
            id: item.id.clone(),
            body: serde_json::to_vec(&item).unwrap_or_default(),
        });
        stored.push(item);
    }
    Ok((stored, rows))
}

/// Creates a conversation with the request's items, labeled with the request's label.
///
/// # Errors
///
/// 503 when the store fails.
pub(crate) async fn create_conversation(
    ctx: &mut RequestCtx,
    req: &ItemsRequest,
) -> Result<(Value, Label), ApiError> {
    let (tenant, principal) = who(ctx)?;
    let label = ctx.answer_label();
    let now = unix_now();
    let keep = ctx.app.config.retention.for_tenant(&tenant).conversations;
    let conv = StoredConversation {
        id: new_id("conv_")?,
        tenant,
        principal,
        label: label.banner(),
        body: serde_json::to_vec(&req.metadata.clone().unwrap_or_else(|| json!({})))
            .unwrap_or_default(),
        created_at: now,
        expires_at: expiry(now, keep),
    };
    let (_, rows) = new_items(&req.items)?;
    ctx.app
        .store
        .create_conversation(&conv, &rows)
        .await
        .map_err(|e| store_failed(&e))?;
    ctx.decide("state", "allow", "stored");
    Ok((conversation_object(&conv), label))
}

/// The conversation `id`, if the caller may see it, and its label.
///
/// # Errors
///
/// 404 `not_found`; 503 when the store fails.
pub(crate) async fn get_conversation(
    ctx: &mut RequestCtx,
    id: &str,
) -> Result<(Value, Label), ApiError> {
    let (tenant, _) = who(ctx)?;
    let session = session(ctx)?;
    let found = ctx
        .app
        .store
        .conversation(&tenant, id, &session)
        .await
        .map_err(|e| store_failed(&e))?;
    let Some(c) = found else {
        return Err(not_found(ctx, "conversation", None));
    };
    let label = c.label.parse::<Label>().map_err(|_| ApiError::internal())?;
    Ok((conversation_object(&c), label))
}

/// Replaces the metadata of conversation `id` if the caller may see it; the conversation's
/// label rises to the request's (session ⊔ the markings in the metadata), as for any write.
/// Returns the conversation object and its label.
///
/// # Errors
///
/// 404 `not_found`; 503 when the store fails.
pub(crate) async fn update_conversation(
    ctx: &mut RequestCtx,
    id: &str,
    req: &ConversationUpdate,
) -> Result<(Value, Label), ApiError> {
    let (tenant, _) = who(ctx)?;
    let session = session(ctx)?;
    let label = ctx.answer_label();
    let body = serde_json::to_vec(&req.metadata).map_err(|e| {
        tracing::error!(error = %e, "metadata does not serialize");
        ApiError::internal()
    })?;
    let updated = ctx
        .app
        .store
        .update_conversation(&tenant, id, &session, &label, &body)
        .await
        .map_err(|e| store_failed(&e))?;
    let Some(conv) = updated else {
        return Err(not_found(ctx, "conversation", None));
    };
    let raised = conv
        .label
        .parse::<Label>()
        .map_err(|_| ApiError::internal())?;
    ctx.decide("state", "allow", "stored");
    Ok((conversation_object(&conv), raised))
}

/// Deletes the conversation `id` and its items if the caller may see it.
///
/// # Errors
///
/// 404 `not_found`; 503 when the store fails.
pub(crate) async fn delete_conversation(ctx: &mut RequestCtx, id: &str) -> Result<Value, ApiError> {
    let (tenant, _) = who(ctx)?;
    let session = session(ctx)?;
    let deleted = ctx
        .app
        .store
        .delete_conversation(&tenant, id, &session)
        .await
        .map_err(|e| store_failed(&e))?;
    if !deleted {
        return Err(not_found(ctx, "conversation", None));
    }
    ctx.decide("state", "allow", "deleted");
    Ok(json!({"id": id, "object": "conversation.deleted", "deleted": true}))
}

/// The items of conversation `id` (all of them, `item`: only that one), if the caller may see
/// the conversation, and the conversation's label.
///
/// # Errors
///
/// 404 `not_found`; 503 when the store fails.
pub(crate) async fn list_items(
    ctx: &mut RequestCtx,
    id: &str,
    item: Option<&str>,
    page: &Page,
) -> Result<(Value, Label), ApiError> {
    let (tenant, _) = who(ctx)?;
    let session = session(ctx)?;
    let store = ctx.app.store.clone();
    let Some(conv) = store
        .conversation(&tenant, id, &session)
        .await
        .map_err(|e| store_failed(&e))?
    else {
        return Err(not_found(ctx, "conversation", None));
    };
    let Some(rows) = store
        .conversation_items(&tenant, id, &session)
        .await
        .map_err(|e| store_failed(&e))?
    else {
        return Err(not_found(ctx, "conversation", None));
    };
    let label = conv
        .label
        .parse::<Label>()
        .map_err(|_| ApiError::internal())?;
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        if item.is_some_and(|want| want != row.id) {
            continue;
        }
        let parsed: Item = serde_json::from_slice(&row.body).map_err(|e| {
            tracing::error!(error = %e, "a stored conversation item does not parse");
            ApiError::internal()
        })?;
        items.push(parsed);
    }
    match item {
        None => Ok((page.list(items), label)),
        Some(_) => match items.into_iter().next() {
            Some(one) => Ok((serde_json::to_value(one).unwrap_or_default(), label)),
            None => Err(not_found(ctx, "item", None)),
        },
    }
}

/// Appends the request's items to conversation `id`, raising its label to the request's.
///
/// # Errors
///
/// 404 `not_found`; 503 when the store fails.
pub(crate) async fn add_items(
    ctx: &mut RequestCtx,
    id: &str,
    req: &ItemsRequest,
) -> Result<(Value, Label), ApiError> {
    let (tenant, principal) = who(ctx)?;
    let session = session(ctx)?;
    let label = ctx.answer_label();
    let (items, rows) = new_items(&req.items)?;
    let raised = ctx
        .app
        .store
        .append_items(&tenant, id, &session, &principal, &label, &rows)
        .await
        .map_err(|e| store_failed(&e))?;
    let Some(raised) = raised else {
        return Err(not_found(ctx, "conversation", None));
    };
    ctx.decide("state", "allow", "stored");
    Ok((items_list(&items, false), raised))
}

/// Deletes item `item` of conversation `id`; the conversation object.
///
/// # Errors
///
/// 404 `not_found`; 503 when the store fails.
pub(crate) async fn delete_item(
    ctx: &mut RequestCtx,
    id: &str,
    item: &str,
) -> Result<(Value, Label), ApiError> {
    let (tenant, _) = who(ctx)?;
    let session = session(ctx)?;
    let deleted = ctx
        .app
        .store
        .delete_item(&tenant, id, item, &session)
        .await
        .map_err(|e| store_failed(&e))?;
    if !deleted {
        return Err(not_found(ctx, "item", None));
    }
    ctx.decide("state", "allow", "deleted");
    get_conversation(ctx, id).await
}

/// Purges expired responses, conversations and memories every `[retention]
/// purge_interval_secs`, for as long as the task runs.
pub(crate) async fn purge_loop(app: Arc<App>) {
    let retention = &app.config.retention;
    let mut tick = tokio::time::interval(retention.purge_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        match app.store.purge_expired(unix_now()).await {
            Ok(p) if p.responses + p.conversations > 0 => tracing::info!(
                responses = p.responses,
                conversations = p.conversations,
                "purged expired stored state"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "purging expired stored state failed"),
        }
        match app
            .memory
            .purge_expired(retention, crate::memory_api::now_ms())
            .await
        {
            Ok(0) => {}
            Ok(memories) => tracing::info!(memories, "purged expired memories"),
            Err(e) => tracing::warn!(error = %e, "purging expired memories failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_pages_follow_the_reference_defaults() {
        let p = Page::parse("").unwrap();
        assert_eq!((p.ascending, p.limit, p.after), (false, 20, None));
        let p = Page::parse("order=asc&limit=100&after=msg_1&x=y").unwrap();
        assert_eq!(
            (p.ascending, p.limit, p.after.as_deref()),
            (true, 100, Some("msg_1"))
        );
        for bad in ["order=up", "limit=0", "limit=101", "limit=-1", "limit=x"] {
            assert_eq!(
                Page::parse(bad).unwrap_err().code,
                "invalid_request",
                "{bad}"
            );
        }
    }

    #[test]
    fn ids_are_prefixed_random_hex() {
        let a = new_id("resp_").unwrap();
        let b = new_id("resp_").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 5 + 48);
        assert!(a[5..].bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn a_streamed_turn_opens_with_the_responses_head_and_numbers_its_events() {
        let req = ResponsesRequest::parse(&Bytes::from_static(
            br#"{"model":"m","input":"hi","stream":true}"#,
        ))
        .unwrap();
        let chat = chat_request(&req, &Context::default()).unwrap();
        assert!(chat.stream, "a streamed turn streams from the backend");
        let mut turn = StreamTurn::new(req, chat, Context::default(), false).unwrap();
        let chunk = |content: Option<&str>, finish: Option<FinishReason>| Chunk {
            id: "c".into(),
            created: 0,
            model: "m".into(),
            deltas: vec![enclave_api::Delta {
                index: 0,
                content: content.map(str::to_owned),
                finish_reason: finish,
                ..enclave_api::Delta::default()
            }],
            usage: None,
            raw: None,
        };
        let mut text = String::from_utf8(turn.head().to_vec()).unwrap();
        for c in [
            chunk(Some("hello "), None),
            chunk(Some(""), None),
            chunk(None, None),
            chunk(Some("there"), Some(FinishReason::Stop)),
        ] {
            if let Some(b) = turn.chunk(&c) {
                text.push_str(std::str::from_utf8(&b).unwrap());
            }
        }
        let kinds: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
            ]
        );
        let datas: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        for (i, d) in datas.iter().enumerate() {
            assert_eq!(d["sequence_number"], i);
        }
        assert_eq!(datas[0]["response"]["status"], "in_progress");
        assert_eq!(datas[0]["response"]["id"], turn.ids.response);
        assert_eq!(datas[2]["item"]["id"], turn.ids.message);
        assert_eq!(datas[5]["delta"], "there");
        assert_eq!(turn.text, "hello there");
        assert_eq!(turn.finish_reason, Some(FinishReason::Stop));
    }
}
