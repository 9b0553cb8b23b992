//! The screen: detectors and trained classifiers score a text, the policy pack turns the scores
//! into a [`Verdict`]; and the streaming screen over an answer that arrives in chunks.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::action::{Action, Direction};
use crate::category::{Category, Scores};
use crate::classifier::{Classifier, Embed};
use crate::contextual::{ContextualModel, MAX_WINDOWS, segments};
use crate::detect::{Finding, detect, floor_boundary};
use crate::ngram::{ModelError, NgramModel};
use crate::pack::{Pack, PackError};
use crate::redact::{StreamRedactor, redact};

/// The committed n-gram model (`crates/safety/models/ngram.bin`, made by
/// `enclave safety train`).
pub const BUILTIN_NGRAM_MODEL: &[u8] = include_bytes!("../models/ngram.bin");

/// The committed contextual heads (`crates/safety/models/contextual.bin`, made by
/// `enclave safety train --models …`): they need the sentence model, which the caller loads.
pub const BUILTIN_CONTEXTUAL_MODEL: &[u8] = include_bytes!("../models/contextual.bin");

/// The streaming screen classifies at most the last this many bytes of the stream each time it
/// releases text (the n-gram model's window).
pub const STREAM_WINDOW_BYTES: usize = 2 * crate::ngram::BLOCK_BYTES;

/// Each screening of a stream covers the text received since the previous screening and this
/// many bytes before it (so a phrase cut by a screening boundary is seen whole), within
/// [`STREAM_WINDOW_BYTES`].
pub const STREAM_CONTEXT_BYTES: usize = 1024;

/// Why an engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The policy pack is invalid.
    #[error(transparent)]
    Pack(#[from] PackError),
    /// The model weights are invalid.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The contextual heads are invalid.
    #[error(transparent)]
    Contextual(#[from] crate::contextual::ContextualError),
    /// The sentence model could not embed the pack's denied topics.
    #[error("embedding the pack's denied topics: {0}")]
    Embed(String),
    /// The pack denies topics but there is no sentence model to score them with: a topic the
    /// officer denied is never silently unscored.
    #[error("the pack denies topics, which need the contextual stage's sentence model")]
    TopicsUnscored,
}

/// What the screen decided about a text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verdict {
    /// Calibrated score per category (detectors and classifiers combined by maximum).
    pub scores: Scores,
    /// Whether any category fired with an action other than `allow`.
    pub flagged: bool,
    /// The categories that fired (score at or over the pack's threshold, action not `allow`),
    /// in wire order.
    pub categories: Vec<Category>,
    /// The strictest action over the fired categories (`allow` when none fired).
    pub action: Action,
    /// The deterministic detectors' findings, with byte spans in the screened text (empty in a
    /// streaming verdict, whose spans would point into text already released).
    pub findings: Vec<Finding>,
    /// The fired categories whose action is `redact` (apply with [`Verdict::redacted`]).
    pub redact: Vec<Category>,
    /// The pack's denied topics that fired (similarity at or over the topic's threshold), with
    /// their similarity.
    pub topics: Vec<(String, f32)>,
    /// The contextual stage was needed but its sentence model failed (busy or broken): the
    /// uncertain categories were scored 1 and every denied topic fired. A caller that can say
    /// "try again" (the gateway: 503) should, rather than present this as a policy decision.
    pub unchecked: bool,
}

impl Verdict {
    /// Whether the text must not be served (`block` or `review`).
    pub fn stops(&self) -> bool {
        self.action.stops()
    }

    /// `text` (the text this verdict was made for) with the findings of the categories the pack
    /// redacts replaced by `[REDACTED:<kind>]`; the text unchanged when none.
    pub fn redacted(&self, text: &str) -> String {
        if self.redact.is_empty() {
            return text.to_owned();
        }
        redact(text, &self.findings, &self.redact)
    }

    /// OpenAI's `categories` object: every category name → whether it fired.
    pub fn categories_json(&self) -> Map<String, Value> {
        Category::ALL
            .into_iter()
            .map(|c| {
                (
                    c.as_str().to_owned(),
                    Value::Bool(self.categories.contains(&c)),
                )
            })
            .collect()
    }

    /// OpenAI's `category_scores` object: every category name → its score.
    pub fn category_scores_json(&self) -> Map<String, Value> {
        self.scores
            .iter()
            .map(|(c, p)| (c.as_str().to_owned(), Value::from(round(p))))
            .collect()
    }

    /// The categories and denied topics (as `topic:<name>`) that fired.
    pub fn fired_names(&self) -> Vec<String> {
        self.categories
            .iter()
            .map(|c| c.as_str().to_owned())
            .chain(self.topics.iter().map(|(t, _)| format!("topic:{t}")))
            .collect()
    }

    /// The categories that fired, by wire name.
    pub fn category_names(&self) -> Vec<&'static str> {
        self.categories.iter().map(|c| c.as_str()).collect()
    }
}

/// Scores rounded to six decimals: the JSON stays short and stable across platforms.
fn round(p: f32) -> f64 {
    (f64::from(p) * 1e6).round() / 1e6
}

struct Inner {
    pack: Pack,
    classifiers: Vec<Box<dyn Classifier>>,
    contextual: Option<Contextual>,
}

/// The contextual stage: its heads, the sentence model that feeds them, and the embedded
/// definitions and examples of the pack's denied topics.
struct Contextual {
    model: ContextualModel,
    embed: Arc<dyn Embed>,
    /// Per denied topic (in pack order), the vectors of its definition and examples.
    topics: Vec<Vec<Vec<f32>>>,
}

/// The inline stages' scores of a text, before the contextual stage (see [`Engine::inline`]).
#[derive(Clone, Debug)]
pub struct Inline {
    /// Detector and inline-classifier scores combined by maximum.
    pub scores: Scores,
    /// The detectors' scores alone.
    detector_scores: Scores,
    /// The detectors' findings.
    pub findings: Vec<Finding>,
    /// Whether the contextual stage must see the text (configured, and some category with a
    /// head scored inside its uncertainty band).
    pub uncertain: bool,
}

/// The safety engine: a policy pack and the loaded classifiers. Cheap to clone and share
/// (`Send + Sync`, one `Arc` inside); build it once at start.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("pack", &self.inner.pack.name())
            .field("contextual", &self.inner.contextual.is_some())
            .field(
                "classifiers",
                &self
                    .inner
                    .classifiers
                    .iter()
                    .map(|c| c.name())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Engine {
    /// The default pack (`us-federal`) with the committed n-gram model.
    ///
    /// # Errors
    ///
    /// [`EngineError`] if the embedded pack or weights do not parse (the crate's tests check
    /// they do).
    pub fn builtin() -> Result<Engine, EngineError> {
        Engine::with_pack(Pack::builtin("us-federal")?)
    }

    /// `pack` with the committed n-gram model.
    ///
    /// # Errors
    ///
    /// [`EngineError::Model`] if the embedded weights do not parse.
    pub fn with_pack(pack: Pack) -> Result<Engine, EngineError> {
        let model = NgramModel::from_bytes(BUILTIN_NGRAM_MODEL)?;
        Ok(Engine::new(pack, vec![Box::new(model)]))
    }

    /// `pack` with the committed weights: the n-gram model, and with `embed` the contextual
    /// stage's heads ([`BUILTIN_CONTEXTUAL_MODEL`]) over it.
    ///
    /// # Errors
    ///
    /// [`EngineError::TopicsUnscored`] when the pack denies topics and `embed` is `None`;
    /// [`EngineError::Model`] or [`EngineError::Contextual`] if the embedded weights do not
    /// parse; [`EngineError::Embed`] when
    /// the topics cannot be embedded.
    pub fn with_committed(
        pack: Pack,
        embed: Option<Arc<dyn Embed>>,
    ) -> Result<Engine, EngineError> {
        let ngram = NgramModel::from_bytes(BUILTIN_NGRAM_MODEL)?;
        let heads = ContextualModel::from_bytes(BUILTIN_CONTEXTUAL_MODEL)?;
        Engine::with_weights(pack, ngram, heads, embed)
    }

    /// `pack` with these weights: the n-gram model, and with `embed` the contextual stage's
    /// `heads` over it (without `embed` the heads go unused).
    ///
    /// # Errors
    ///
    /// [`EngineError::TopicsUnscored`] when the pack denies topics and `embed` is `None`;
    /// [`EngineError::Embed`] when the topics cannot be embedded.
    pub fn with_weights(
        pack: Pack,
        ngram: NgramModel,
        heads: ContextualModel,
        embed: Option<Arc<dyn Embed>>,
    ) -> Result<Engine, EngineError> {
        match embed {
            Some(embed) => Engine::with_contextual(pack, vec![Box::new(ngram)], heads, embed),
            None if !pack.denied_topics().is_empty() => Err(EngineError::TopicsUnscored),
            None => Ok(Engine::new(pack, vec![Box::new(ngram)])),
        }
    }

    /// `pack` with these classifiers (their scores are combined with the detectors' by maximum).
    pub fn new(pack: Pack, classifiers: Vec<Box<dyn Classifier>>) -> Engine {
        Engine {
            inner: Arc::new(Inner {
                pack,
                classifiers,
                contextual: None,
            }),
        }
    }

    /// `pack` with these inline classifiers and the contextual stage: `model`'s heads over
    /// `embed`'s sentence embeddings, asked only about texts the inline stages leave uncertain
    /// — and about every text when the pack has denied topics, whose definitions and examples
    /// are embedded here, once.
    ///
    /// # Errors
    ///
    /// [`EngineError::Embed`] when the sentence model cannot embed the denied topics.
    pub fn with_contextual(
        pack: Pack,
        classifiers: Vec<Box<dyn Classifier>>,
        model: ContextualModel,
        embed: Arc<dyn Embed>,
    ) -> Result<Engine, EngineError> {
        let mut topics = Vec::new();
        for t in pack.denied_topics() {
            let texts: Vec<&str> = std::iter::once(t.definition.as_str())
                .chain(t.examples.iter().map(String::as_str))
                .collect();
            topics.push(embed.embed(&texts).map_err(EngineError::Embed)?);
        }
        Ok(Engine {
            inner: Arc::new(Inner {
                pack,
                classifiers,
                contextual: Some(Contextual {
                    model,
                    embed,
                    topics,
                }),
            }),
        })
    }

    /// Whether this engine has a contextual stage.
    pub fn has_contextual(&self) -> bool {
        self.inner.contextual.is_some()
    }

    /// The policy pack.
    pub fn pack(&self) -> &Pack {
        &self.inner.pack
    }

    /// Scores `text` with the detectors and the inline classifiers only (microseconds; never
    /// blocks), and says whether the contextual stage must see it.
    pub fn inline(&self, text: &str) -> Inline {
        let findings = detect(text);
        let mut detector_scores = Scores::default();
        for f in &findings {
            let c = f.category();
            if f.confidence > detector_scores.get(c) {
                detector_scores.set(c, f.confidence);
            }
        }
        let mut scores = detector_scores;
        for classifier in &self.inner.classifiers {
            scores = scores.max(&classifier.score(text));
        }
        let uncertain = self
            .inner
            .contextual
            .as_ref()
            .is_some_and(|c| !c.topics.is_empty() || c.model.uncertain(&scores));
        Inline {
            scores,
            detector_scores,
            findings,
            uncertain,
        }
    }

    /// Completes `inline` (made by [`Engine::inline`] for `text`) into a verdict for
    /// `direction`: the contextual stage when the text is uncertain (see
    /// [`Engine::contextual`]), then the pack's rules and denied topics.
    pub fn complete(&self, text: &str, inline: Inline, direction: Direction) -> Verdict {
        let (scores, findings, topics, unchecked) = self.contextual_topics(text, inline);
        let mut v = self.decide(scores, findings, direction);
        v.unchecked = unchecked;
        for (name, sim) in topics {
            if let Some(t) = self
                .inner
                .pack
                .denied_topics()
                .iter()
                .find(|t| t.name == name)
            {
                v.action = v.action.max(t.action);
                v.flagged |= t.action != Action::Allow;
                v.topics.push((name, sim));
            }
        }
        v
    }

    /// Completes `inline` (made by [`Engine::inline`] for `text`): when it is uncertain, the
    /// contextual stage embeds the text's windows (blocking: milliseconds per window) and its
    /// fused scores replace the inline ones of the categories it has heads for, except where the
    /// inline stages were already sure of a positive (a detector's finding still counts at its
    /// confidence). If the sentence model fails, every uncertain category scores 1 — a text that
    /// cannot be checked is not let through. Denied topics are left out: [`Engine::complete`]
    /// and [`Engine::screen`] apply them.
    pub fn contextual(&self, text: &str, inline: Inline) -> (Scores, Vec<Finding>) {
        let (scores, findings, _, _) = self.contextual_topics(text, inline);
        (scores, findings)
    }

    fn contextual_topics(
        &self,
        text: &str,
        inline: Inline,
    ) -> (Scores, Vec<Finding>, Vec<(String, f32)>, bool) {
        let Some(ctx) = self.inner.contextual.as_ref().filter(|_| inline.uncertain) else {
            return (inline.scores, inline.findings, Vec::new(), false);
        };
        let mut wins = segments(text);
        if wins.len() > MAX_WINDOWS {
            // Too long to embed whole: the segments the inline classifiers find most suspect
            // (for the categories with heads), in text order.
            let heads: Vec<Category> = ctx.model.heads().iter().map(|h| h.category).collect();
            let mut ranked: Vec<(usize, f32)> = wins
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let mut s = Scores::default();
                    for classifier in &self.inner.classifiers {
                        s = s.max(&classifier.score(w));
                    }
                    (i, heads.iter().map(|c| s.get(*c)).fold(0f32, f32::max))
                })
                .collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut keep: Vec<usize> = ranked.iter().take(MAX_WINDOWS).map(|r| r.0).collect();
            keep.sort_unstable();
            wins = keep.iter().filter_map(|&i| wins.get(i).copied()).collect();
        }
        let topics = self.inner.pack.denied_topics();
        match ctx.embed.embed(&wins) {
            Ok(vectors) => {
                let mut fired = Vec::new();
                for (t, tv) in topics.iter().zip(&ctx.topics) {
                    let sim = vectors
                        .iter()
                        .flat_map(|v| tv.iter().map(move |e| cosine(v, e)))
                        .fold(f32::NEG_INFINITY, f32::max);
                    if sim >= t.threshold {
                        fired.push((t.name.clone(), sim));
                    }
                }
                let scores = if ctx.model.uncertain(&inline.scores) {
                    ctx.model
                        .fuse(&inline.scores, &vectors)
                        .max(&inline.detector_scores)
                } else {
                    inline.scores
                };
                (scores, inline.findings, fired, false)
            }
            Err(_) => {
                let mut s = inline.scores;
                for h in ctx.model.heads() {
                    let p = s.get(h.category);
                    if ctx.model.in_band(h, p) {
                        s.set(h.category, 1.0);
                    }
                }
                let fired = topics.iter().map(|t| (t.name.clone(), 1.0)).collect();
                (s, inline.findings, fired, true)
            }
        }
    }

    /// Scores `text` with every stage (the contextual one when the inline stages leave the text
    /// uncertain), without applying the pack.
    pub fn score(&self, text: &str) -> (Scores, Vec<Finding>) {
        let inline = self.inline(text);
        self.contextual(text, inline)
    }

    /// Screens a whole text flowing in `direction` with every stage (and the pack's denied
    /// topics, when the contextual stage is there to score them).
    pub fn screen(&self, text: &str, direction: Direction) -> Verdict {
        let inline = self.inline(text);
        self.complete(text, inline, direction)
    }

    /// Applies the pack to scores.
    pub fn decide(&self, scores: Scores, findings: Vec<Finding>, direction: Direction) -> Verdict {
        let pack = &self.inner.pack;
        let mut categories = Vec::new();
        let mut action = Action::Allow;
        let mut redact_cats = Vec::new();
        for (c, p) in scores.iter() {
            let rule = pack.rule(direction, c);
            if rule.action == Action::Allow || p < rule.threshold {
                continue;
            }
            categories.push(c);
            action = action.max(rule.action);
            if rule.action == Action::Redact {
                redact_cats.push(c);
            }
        }
        Verdict {
            scores,
            flagged: !categories.is_empty(),
            categories,
            action,
            findings,
            redact: redact_cats,
            topics: Vec::new(),
            unchecked: false,
        }
    }

    /// A streaming screen for an answer (direction `output`) that arrives in chunks.
    pub fn stream(&self) -> StreamScreen {
        self.stream_in(Direction::Output)
    }

    /// A streaming screen for text flowing in `direction`.
    pub fn stream_in(&self, direction: Direction) -> StreamScreen {
        StreamScreen {
            engine: self.clone(),
            direction,
            redactor: StreamRedactor::new(&self.inner.pack.redacted(direction)),
            tail: String::new(),
            verdict: Verdict::default(),
            screened_to: 0,
            stopped: false,
        }
    }
}

/// What the streaming screen says after a chunk.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamStep {
    /// Send this text on (possibly empty: it is held back for now), redacted where the pack
    /// redacts.
    Emit(String),
    /// End the stream: a category whose action is `block` or `review` fired. Nothing more is
    /// released; the verdict names the categories (send `policy_violation`).
    Stop(Verdict),
}

/// The streaming screen: feed chunks with [`StreamScreen::push`], end with
/// [`StreamScreen::finish`]. Text is released behind a holdback window (the
/// [`StreamRedactor`]'s: 256–512 bytes); before any text is released, the text received since
/// the previous screening is screened with [`STREAM_CONTEXT_BYTES`] before it (released and held
/// text), so the released text has been screened together with what follows it.
pub struct StreamScreen {
    engine: Engine,
    direction: Direction,
    redactor: StreamRedactor,
    /// The last received text (at most `2 × STREAM_WINDOW_BYTES`).
    tail: String,
    /// The running verdict: scores are the maximum over screened windows.
    verdict: Verdict,
    /// Where in `tail` the last screening ended.
    screened_to: usize,
    stopped: bool,
}

impl std::fmt::Debug for StreamScreen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamScreen")
            .field("direction", &self.direction)
            .field("verdict", &self.verdict)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

impl StreamScreen {
    /// Takes the next chunk.
    pub fn push(&mut self, chunk: &str) -> StreamStep {
        if self.stopped {
            return StreamStep::Stop(self.verdict.clone());
        }
        self.tail.push_str(chunk);
        let out = self.redactor.push(chunk);
        if out.is_empty() {
            self.trim_tail();
            return StreamStep::Emit(out);
        }
        let step = self.check(out);
        self.trim_tail();
        step
    }

    /// Ends the stream: screens what is held and releases the rest (or stops).
    pub fn finish(&mut self) -> StreamStep {
        if self.stopped {
            return StreamStep::Stop(self.verdict.clone());
        }
        let out = self.redactor.finish();
        self.check(out)
    }

    /// The verdict so far: scores are the maximum over every window screened.
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    fn check(&mut self, out: String) -> StreamStep {
        let start = floor_boundary(
            &self.tail,
            self.tail
                .len()
                .saturating_sub(STREAM_WINDOW_BYTES)
                .max(self.screened_to.saturating_sub(STREAM_CONTEXT_BYTES)),
        );
        let window = self.tail.get(start..).unwrap_or_default();
        self.screened_to = self.tail.len();
        // Inline stages only: a stream is screened every few hundred bytes, on the event loop.
        let scores = self.engine.inline(window).scores;
        let merged = self.verdict.scores.max(&scores);
        self.verdict = self.engine.decide(merged, Vec::new(), self.direction);
        if self.verdict.stops() {
            self.stopped = true;
            return StreamStep::Stop(self.verdict.clone());
        }
        StreamStep::Emit(out)
    }

    fn trim_tail(&mut self) {
        if self.tail.len() > 2 * STREAM_WINDOW_BYTES {
            let cut = floor_boundary(&self.tail, self.tail.len() - STREAM_WINDOW_BYTES);
            self.tail.drain(..cut);
            self.screened_to = self.screened_to.saturating_sub(cut);
        }
    }
}

/// Cosine similarity of two vectors (the sentence model's are unit length, but a caller's
/// `Embed` need not be).
fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}
