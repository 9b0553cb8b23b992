//! The screen stages: the safety stack (`enclave-safety`) over a request's input and its answer,
//! with the policy pack of the caller's tenant (`[safety]` in the configuration).
//!
//! - `input` screens every string the request carries before anything is sent anywhere. A
//!   category whose action is `block` ends the request with 400 `policy_violation` naming the
//!   categories; `review` with 400 `pending_review` (until a review queue exists it holds the
//!   request by refusing it); `flag` is recorded (categories and scores, never text) and
//!   counted; `redact` on input also refuses (Enclave does not rewrite prompts: the caller is
//!   told which categories to remove).
//! - `OutputScreen` screens a streamed answer chunk by chunk through the engine's streaming
//!   screen (a holdback window of a few hundred bytes per choice, so a redaction or a block
//!   sees text across chunk boundaries), and a whole answer at once. A block mid-stream ends
//!   the stream with an error event whose code is `policy_violation`.
//! - `moderate` answers `POST /v1/moderations` with the same engine.
//!
//! Every decision lands in the request's audit entry (`safety_input`, `safety_output`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use enclave_api::{Chunk, Completion, Delta};
use enclave_models::local::LocalEngine;
use enclave_safety::{
    Action, Category, Direction, Embed, Engine, Pack, StreamScreen, StreamStep, Verdict,
};
use http::StatusCode;

use crate::config::{PackSource, SafetyConfig};
use crate::ctx::RequestCtx;
use crate::error::ApiError;

/// The model name `/v1/moderations` answers with when the request names none.
pub(crate) const MODERATION_MODEL: &str = "enclave-screen";

/// Texts longer than this are screened on the blocking pool rather than the event loop (the
/// inline stages cost about a millisecond per 2,000 characters).
const INLINE_BYTES: usize = 32 * 1024;

/// The engines of the configured packs: one for every tenant without its own pack, one per
/// distinct pack of the others.
#[derive(Debug)]
pub struct Screens {
    default: Engine,
    tenants: HashMap<String, Engine>,
}

impl Screens {
    /// Loads and checks every pack the configuration names (pack files are read here, once).
    ///
    /// # Errors
    ///
    /// A message naming the key path and what is wrong with the pack.
    pub fn load(config: &SafetyConfig, embed: Option<Arc<dyn Embed>>) -> Result<Screens, String> {
        let mut built: Vec<(PackSource, Engine)> = Vec::new();
        let mut engine_for = |source: &PackSource, at: &str| -> Result<Engine, String> {
            if let Some((_, e)) = built.iter().find(|(s, _)| s == source) {
                return Ok(e.clone());
            }
            let pack = match source {
                PackSource::Builtin(name) => Pack::builtin(name),
                PackSource::File(path) => {
                    let text = std::fs::read_to_string(path).map_err(|e| {
                        format!("{at}: cannot read pack file {}: {e}", path.display())
                    })?;
                    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("pack");
                    Pack::from_toml(name, &text)
                }
            }
            .map_err(|e| format!("{at}: {e}"))?;
            // A pack that denies topics without the sentence model is refused
            // (`TopicsUnscored`): a topic the officer denied is never silently unscored.
            let engine = Engine::with_committed(pack, embed.clone()).map_err(|e| {
                format!("{at}: {e} (the models directory lacks all-MiniLM-L6-v2, or [safety] contextual = \"off\")")
            })?;
            built.push((source.clone(), engine.clone()));
            Ok(engine)
        };
        let default = engine_for(&config.pack, "safety.pack")?;
        let mut tenants = HashMap::new();
        for (tenant, source) in &config.tenants {
            let engine = engine_for(source, &format!("safety.tenants.{tenant}"))?;
            tenants.insert(tenant.clone(), engine);
        }
        Ok(Screens { default, tenants })
    }

    /// The engine of `tenant`'s pack.
    pub fn for_tenant(&self, tenant: &str) -> &Engine {
        self.tenants.get(tenant).unwrap_or(&self.default)
    }

    /// The default pack's name.
    pub fn default_pack(&self) -> &str {
        self.default.pack().name()
    }

    /// Whether the contextual stage runs.
    pub fn contextual(&self) -> bool {
        self.default.has_contextual()
    }
}

/// The embedded sentence model behind the contextual stage.
#[derive(Debug)]
pub struct LocalEmbed(pub Arc<LocalEngine>);

impl Embed for LocalEmbed {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        self.0.embed_blocking(texts).map_err(|e| e.to_string())
    }
}

/// The engine for the request's caller (the default pack before authentication).
fn engine(ctx: &RequestCtx) -> Engine {
    let screens = &ctx.app.screens;
    match ctx.caller() {
        Some(c) => screens.for_tenant(c.principal.tenant.as_str()).clone(),
        None => screens.default.clone(),
    }
}

/// The words of the OpenAI request schema (object keys and role names) that the request's text
/// carries as paragraphs of their own for the marking scanner ("messages", "content", "role",
/// "user", …). The screen leaves them out: they say nothing about what is asked, and the
/// learned stages, trained on prose, read a prompt wrapped in them as a different text. A
/// paragraph is dropped only when it is exactly one such word, so no content is lost.
const SCHEMA_WORDS: [&str; 24] = [
    "messages",
    "content",
    "role",
    "user",
    "assistant",
    "system",
    "developer",
    "tool",
    "type",
    "text",
    "name",
    "tool_calls",
    "tool_call_id",
    "function",
    "arguments",
    "tools",
    "parameters",
    "properties",
    "description",
    "input",
    "instructions",
    "input_text",
    "output_text",
    "refusal",
];

/// `text` (paragraphs) without the paragraphs that are a schema word.
fn content_of(text: &str) -> String {
    text.split("\n\n")
        .filter(|p| !SCHEMA_WORDS.contains(&p.trim()))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Screens `texts`: the inline stages on the event loop when they are short, the contextual
/// stage (when the inline stages leave some text uncertain, from where they left off) and long
/// texts on the blocking pool.
async fn screen_all(
    engine: Engine,
    texts: Vec<String>,
    direction: Direction,
) -> Result<Vec<Verdict>, ApiError> {
    if texts.iter().map(String::len).sum::<usize>() > INLINE_BYTES {
        return blocking(move || texts.iter().map(|t| engine.screen(t, direction)).collect()).await;
    }
    let inline: Vec<_> = texts.iter().map(|t| engine.inline(t)).collect();
    if inline.iter().all(|i| !i.uncertain) {
        return Ok(inline
            .into_iter()
            .map(|i| engine.decide(i.scores, i.findings, direction))
            .collect());
    }
    blocking(move || {
        texts
            .iter()
            .zip(inline)
            .map(|(t, i)| engine.complete(t, i, direction))
            .collect()
    })
    .await
}

/// [`screen_all`] of one text.
async fn screen_text(
    engine: Engine,
    text: &str,
    direction: Direction,
) -> Result<Verdict, ApiError> {
    let mut verdicts = screen_all(engine, vec![text.to_owned()], direction).await?;
    verdicts.pop().ok_or_else(ApiError::internal)
}

/// The refusal of a text the contextual stage had to see but could not (its sentence model busy
/// or failed): 503 `overloaded` with `Retry-After` — refused, as fail-closed demands, but not
/// presented as a policy decision.
fn unchecked() -> ApiError {
    tracing::warn!("the safety screen's sentence model could not run: refused unscreened");
    ApiError::overloaded(
        "The safety screen could not complete (its sentence model is busy or unavailable); nothing was sent to a model. Try again.",
    )
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "the safety screen failed");
        ApiError::internal()
    })
}

/// Screens the request's text (every string it carries, as paragraphs).
///
/// # Errors
///
/// 400 `policy_violation` (or `pending_review`) naming the categories that fired.
pub(crate) async fn input(ctx: &mut RequestCtx, text: &str) -> Result<(), ApiError> {
    let engine = engine(ctx);
    let verdict = screen_text(engine.clone(), &content_of(text), Direction::Input).await?;
    record(ctx, &engine, Direction::Input, &verdict);
    if verdict.unchecked {
        return Err(unchecked());
    }
    // SECURITY: a prompt is never rewritten, so `redact` on input cannot be honoured by
    // sending a changed prompt: it is refused like a block, naming what to remove.
    if verdict.stops() || verdict.action == Action::Redact {
        return Err(refusal(&verdict, Direction::Input));
    }
    Ok(())
}

/// Whether a screened chunk carries nothing a client needs (no text, role, tool call, end or
/// usage).
pub(crate) fn is_empty(chunk: &Chunk) -> bool {
    chunk.usage.is_none()
        && chunk.deltas.iter().all(|d| {
            d.content.as_deref().is_none_or(str::is_empty)
                && d.role.is_none()
                && d.refusal.is_none()
                && d.tool_calls.is_empty()
                && d.finish_reason.is_none()
        })
}

/// The stage name of a direction in decisions and logs.
fn stage_of(direction: Direction) -> &'static str {
    match direction {
        Direction::Input => "safety_input",
        Direction::Output => "safety_output",
    }
}

/// Records a verdict's fired categories (with the action `engine`'s pack takes on them) as
/// decisions, logs and counts them — categories and scores only, never the text.
fn record_fired(ctx: &mut RequestCtx, engine: &Engine, direction: Direction, verdict: &Verdict) {
    let stage = stage_of(direction);
    for category in &verdict.categories {
        // A marking in a prompt is the label stage's to judge and count (spillage, or a
        // `classified-marking` flag for one discussed in prose): not counted twice.
        if *category == Category::ClassifiedMarking && direction == Direction::Input {
            continue;
        }
        let action = engine.pack().rule(direction, *category).action;
        ctx.app.metrics.flag(category.as_str());
        tracing::info!(
            stage,
            category = category.as_str(),
            score = verdict.scores.get(*category),
            action = action.as_str(),
            "safety category fired"
        );
        ctx.decide(stage, action.as_str(), category.as_str());
    }
    for (topic, similarity) in &verdict.topics {
        let action = engine
            .pack()
            .denied_topics()
            .iter()
            .find(|t| &t.name == topic)
            .map_or("block", |t| t.action.as_str());
        ctx.app.metrics.flag("denied-topic");
        tracing::info!(stage, topic = %topic, similarity, action, "denied topic fired");
        ctx.decide(stage, action, format!("topic:{topic}"));
    }
}

/// Records one verdict: its fired categories, or `allow` when none fired.
fn record(ctx: &mut RequestCtx, engine: &Engine, direction: Direction, verdict: &Verdict) {
    record_fired(ctx, engine, direction, verdict);
    if verdict.categories.is_empty() && verdict.topics.is_empty() {
        ctx.decide(stage_of(direction), "allow", "none");
    }
}

/// The refusal for a verdict that stops a request.
fn refusal(verdict: &Verdict, direction: Direction) -> ApiError {
    let names = verdict.fired_names().join(", ");
    let (code, message) = match (verdict.action, direction) {
        (Action::Review, _) => (
            "pending_review",
            format!(
                "The request needs a human review under this deployment's safety policy ({names}); it was not sent to a model."
            ),
        ),
        (Action::Redact, Direction::Input) => (
            "policy_violation",
            format!(
                "The request carries content this deployment's safety policy removes ({names}); remove it and send again."
            ),
        ),
        (_, Direction::Input) => (
            "policy_violation",
            format!(
                "The request was refused by this deployment's safety policy ({names}); it was not sent to a model."
            ),
        ),
        (_, Direction::Output) => (
            "policy_violation",
            format!("The answer was stopped by this deployment's safety policy ({names})."),
        ),
    };
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

/// Screens one answer as it goes: one streaming screen per choice's text and per tool call's
/// arguments.
#[derive(Debug)]
pub(crate) struct OutputScreen {
    engine: Engine,
    /// (choice index, tool call index or `None` for the text) → its screen.
    streams: BTreeMap<(u32, Option<u32>), StreamScreen>,
    /// The last chunk's id, created and model, for chunks made of held-back text.
    last: Option<(String, u64, String)>,
    /// The categories that fired, with their worst score, for the record.
    fired: Vec<Verdict>,
}

impl OutputScreen {
    /// A screen for the answer to `ctx`'s request.
    pub(crate) fn new(ctx: &RequestCtx) -> OutputScreen {
        OutputScreen {
            engine: engine(ctx),
            streams: BTreeMap::new(),
            last: None,
            fired: Vec::new(),
        }
    }

    fn step(&mut self, key: (u32, Option<u32>), text: &str, end: bool) -> Result<String, ApiError> {
        let engine = &self.engine;
        let screen = self
            .streams
            .entry(key)
            .or_insert_with(|| engine.stream_in(Direction::Output));
        let first = if text.is_empty() {
            StreamStep::Emit(String::new())
        } else {
            screen.push(text)
        };
        let mut out = match first {
            StreamStep::Emit(s) => s,
            StreamStep::Stop(verdict) => return Err(self.stopped(verdict)),
        };
        if end {
            match screen.finish() {
                StreamStep::Emit(s) => out.push_str(&s),
                StreamStep::Stop(verdict) => return Err(self.stopped(verdict)),
            }
        }
        if end {
            let verdict = screen.verdict().clone();
            if !verdict.categories.is_empty() {
                self.fired.push(verdict);
            }
        }
        Ok(out)
    }

    /// The refusal for a stream the screen stopped, the verdict kept for the record.
    fn stopped(&mut self, verdict: Verdict) -> ApiError {
        let e = refusal(&verdict, Direction::Output);
        self.fired.push(verdict);
        e
    }

    /// Screens a streamed chunk, which it may change (text held back, redacted, or released
    /// from earlier chunks). A choice's held text is released in the chunk that ends it.
    ///
    /// # Errors
    ///
    /// A refusal that ends the stream with an error event.
    pub(crate) fn chunk(&mut self, chunk: &mut Chunk) -> Result<(), ApiError> {
        self.last = Some((chunk.id.clone(), chunk.created, chunk.model.clone()));
        let mut changed = false;
        for delta in &mut chunk.deltas {
            let end = delta.finish_reason.is_some();
            if delta.content.is_some() || end {
                let text = delta.content.take().unwrap_or_default();
                let out = self.step((delta.index, None), &text, end)?;
                changed |= out != text;
                if !(out.is_empty() && text.is_empty()) {
                    delta.content = Some(out);
                }
            }
            for call in &mut delta.tool_calls {
                let key = (delta.index, Some(call.index));
                if let Some(args) = call.arguments.take() {
                    let out = self.step(key, &args, false)?;
                    changed |= out != args;
                    call.arguments = Some(out);
                }
            }
            if end {
                // Arguments held back for this choice's tool calls are released with its end.
                let keys: Vec<_> = self
                    .streams
                    .keys()
                    .filter(|(i, t)| *i == delta.index && t.is_some())
                    .copied()
                    .collect();
                for key in keys {
                    let rest = self.step(key, "", true)?;
                    self.streams.remove(&key);
                    if !rest.is_empty() {
                        changed = true;
                        if let Some(call) =
                            delta.tool_calls.iter_mut().find(|c| Some(c.index) == key.1)
                        {
                            call.arguments
                                .get_or_insert_with(String::new)
                                .push_str(&rest);
                        } else {
                            delta.tool_calls.push(enclave_api::ToolCallDelta {
                                index: key.1.unwrap_or_default(),
                                id: None,
                                name: None,
                                arguments: Some(rest),
                            });
                        }
                    }
                }
                self.streams.remove(&(delta.index, None));
            }
        }
        if changed {
            // Rendered again from the typed chunk: the backend's bytes no longer match.
            chunk.raw = None;
        }
        Ok(())
    }

    /// The end of a stream: text still held back (a choice that never sent its end), released.
    ///
    /// # Errors
    ///
    /// A refusal that ends the stream with an error event.
    pub(crate) fn end(&mut self) -> Result<Vec<Chunk>, ApiError> {
        let keys: Vec<_> = self.streams.keys().copied().collect();
        let mut deltas: Vec<Delta> = Vec::new();
        for key in keys {
            let rest = self.step(key, "", true)?;
            if rest.is_empty() {
                continue;
            }
            let mut delta = Delta {
                index: key.0,
                ..Delta::default()
            };
            match key.1 {
                None => delta.content = Some(rest),
                Some(t) => delta.tool_calls.push(enclave_api::ToolCallDelta {
                    index: t,
                    id: None,
                    name: None,
                    arguments: Some(rest),
                }),
            }
            deltas.push(delta);
        }
        self.streams.clear();
        if deltas.is_empty() {
            return Ok(Vec::new());
        }
        let (id, created, model) = self.last.clone().unwrap_or_default();
        Ok(vec![Chunk {
            id,
            created,
            model,
            deltas,
            usage: None,
            raw: None,
        }])
    }

    /// Screens a whole answer, which it may change (redactions), and records what fired into
    /// the request's decisions.
    ///
    /// # Errors
    ///
    /// A refusal sent instead of the answer.
    pub(crate) async fn whole(
        &mut self,
        ctx: &mut RequestCtx,
        answer: &mut Completion,
    ) -> Result<(), ApiError> {
        let screened = self.screen_whole(answer).await;
        self.record(ctx);
        screened
    }

    async fn screen_whole(&mut self, answer: &mut Completion) -> Result<(), ApiError> {
        let mut changed = false;
        for choice in &mut answer.choices {
            let texts = choice
                .content
                .iter_mut()
                .chain(choice.tool_calls.iter_mut().map(|c| &mut c.arguments));
            for text in texts {
                let verdict = screen_text(self.engine.clone(), text, Direction::Output).await?;
                if verdict.unchecked {
                    return Err(unchecked());
                }
                if verdict.stops() {
                    return Err(self.stopped(verdict));
                }
                let redacted = verdict.redacted(text);
                if redacted != *text {
                    *text = redacted;
                    changed = true;
                }
                if !verdict.categories.is_empty() {
                    self.fired.push(verdict);
                }
            }
        }
        if changed {
            answer.raw = None;
        }
        Ok(())
    }

    /// Records what fired in the answer into the request's decisions (call once, at its end).
    pub(crate) fn record(&mut self, ctx: &mut RequestCtx) {
        let fired = std::mem::take(&mut self.fired);
        if fired.is_empty() {
            ctx.decide("safety_output", "allow", "none");
        }
        for verdict in &fired {
            record_fired(ctx, &self.engine, Direction::Output, verdict);
        }
    }
}

/// Answers `POST /v1/moderations`: one result per input, in OpenAI's shape, with Enclave's
/// categories added and the pack's action beside each.
///
/// # Errors
///
/// 500 when the screen could not run.
pub(crate) async fn moderate(
    ctx: &mut RequestCtx,
    inputs: Vec<String>,
    model: &str,
) -> Result<Bytes, ApiError> {
    let engine = engine(ctx);
    let verdicts = screen_all(engine.clone(), inputs, Direction::Input).await?;
    if verdicts.iter().any(|v| v.unchecked) {
        return Err(unchecked());
    }
    let applied: serde_json::Map<String, serde_json::Value> = Category::ALL
        .into_iter()
        .map(|c| (c.as_str().to_owned(), serde_json::json!(["text"])))
        .collect();
    let mut results = Vec::with_capacity(verdicts.len());
    for verdict in &verdicts {
        record(ctx, &engine, Direction::Input, verdict);
        results.push(serde_json::json!({
            "flagged": verdict.flagged,
            "categories": verdict.categories_json(),
            "category_scores": verdict.category_scores_json(),
            "category_applied_input_types": applied,
            "action": verdict.action.as_str(),
        }));
    }
    let body = serde_json::json!({
        "id": format!("modr-{}", ctx.id),
        "model": model,
        "results": results,
    });
    serde_json::to_vec(&body).map(Bytes::from).map_err(|e| {
        tracing::error!(error = %e, "rendering a moderation answer failed");
        ApiError::internal()
    })
}

#[cfg(test)]
mod schema_tests {
    use super::content_of;

    #[test]
    fn schema_words_are_dropped_and_content_is_kept() {
        let text = "messages\n\ncontent\n\nTrack my neighbour.\n\nrole\n\nuser\n\nuser data";
        assert_eq!(content_of(text), "Track my neighbour.\n\nuser data");
        assert_eq!(content_of("role"), "");
        assert_eq!(content_of("a\n\nb"), "a\n\nb");
    }
}
