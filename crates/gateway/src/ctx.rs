//! What a request carries through the pipeline, and how its outcome is recorded — once, on
//! every exit.
//!
//! A [`RequestCtx`] is made when a request arrives and travels through the stages, which fill
//! it in: the caller, the session label, the content label, the request's label, the model and
//! backend, and the decisions taken. It is consumed by exactly one [`RequestCtx::finish`]: for
//! an immediate answer when the answer is sent, for a stream when the stream ends. If it is
//! dropped unfinished — the client went away and hyper dropped the request's future, or the
//! stream's body was dropped mid-way — its `Drop` records the outcome as `499` (the client
//! closed the request), so no exit goes unrecorded. (`Drop` cannot wait: its audit entry is
//! queued and written with the next commit.)

use std::borrow::Cow;
use std::sync::Arc;

use enclave_api::Usage;
use enclave_label::Label;
use enclave_policy::Session;
use enclave_store::Receipt;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::Span;

use crate::app::App;
use crate::identity::Caller;
use crate::route::Route;
use crate::stage;

/// A request on its way through the pipeline.
pub(crate) struct RequestCtx {
    /// The application.
    pub(crate) app: Arc<App>,
    /// The request id (`x-request-id`).
    pub(crate) id: String,
    /// What it asks for.
    pub(crate) route: Route,
    /// When it arrived.
    pub(crate) start: Instant,
    /// Its trace span.
    pub(crate) span: Span,
    /// Who sent it (after `authenticate`).
    pub(crate) caller: Option<Arc<Caller>>,
    /// The session, opened within the clearance (after `label`).
    pub(crate) session: Option<Session>,
    /// The roll-up of the markings its content asserts (after `label`).
    pub(crate) content: Option<Label>,
    /// The request's label: session ⊔ content (⊔ what it recalled); what its answer carries
    /// and what routing checks accreditation against.
    pub(crate) label: Option<Label>,
    /// The model asked for.
    pub(crate) model: Option<String>,
    /// The backend that answered.
    pub(crate) backend: Option<String>,
    /// The decisions taken on the way, in order.
    pub(crate) decisions: Vec<Decision>,
    /// The admission slot, held until the answer ends.
    pub(crate) permit: Option<OwnedSemaphorePermit>,
    /// Tokens already charged to the caller's rate limit.
    pub(crate) charged_tokens: u64,
    /// The digests its audit entry keeps of its content.
    pub(crate) trail: stage::audit::Trail,
    finished: bool,
}

/// A decision a stage took (for logs, metrics and the audit entry): never content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Decision {
    /// The stage (`label`, `authorize`, `screen_input`, …).
    pub(crate) stage: &'static str,
    /// What it decided (`allow`, `deny`, `flag`).
    pub(crate) outcome: &'static str,
    /// Why: a stable code (`spillage_detected`, `classified-marking`, …).
    pub(crate) code: Cow<'static, str>,
}

/// How a request ended.
#[derive(Clone, Debug)]
pub(crate) struct Outcome {
    /// The HTTP status sent (499 when the client went away first).
    pub(crate) status: u16,
    /// The error code, when it was refused or failed.
    pub(crate) code: Option<Cow<'static, str>>,
    /// Whether the whole answer was delivered.
    pub(crate) complete: bool,
    /// Token counts, when known.
    pub(crate) usage: Option<Usage>,
}

impl RequestCtx {
    /// A context for a request that just arrived.
    pub(crate) fn new(app: Arc<App>, id: String, route: Route, span: Span) -> RequestCtx {
        RequestCtx {
            app,
            id,
            route,
            start: Instant::now(),
            span,
            caller: None,
            session: None,
            content: None,
            label: None,
            model: None,
            backend: None,
            decisions: Vec::new(),
            permit: None,
            charged_tokens: 0,
            trail: stage::audit::Trail::default(),
            finished: false,
        }
    }

    /// Records a decision.
    pub(crate) fn decide(
        &mut self,
        stage: &'static str,
        outcome: &'static str,
        code: impl Into<Cow<'static, str>>,
    ) {
        self.decisions.push(Decision {
            stage,
            outcome,
            code: code.into(),
        });
    }

    /// The caller, once authenticated.
    pub(crate) fn caller(&self) -> Option<&Caller> {
        self.caller.as_deref()
    }

    /// The request's label, or its session label, or UNCLASSIFIED (what an answer carries).
    pub(crate) fn answer_label(&self) -> Label {
        self.label
            .clone()
            .or_else(|| self.session.as_ref().map(|s| s.label().clone()))
            .unwrap_or_else(Label::unclassified)
    }

    /// Charges `tokens` to the caller's tokens-per-minute bucket now.
    pub(crate) fn charge(&mut self, tokens: u64) {
        if tokens == 0 || !self.app.limiter.enabled() {
            return;
        }
        if let Some(c) = &self.caller {
            self.app.limiter.charge(&c.rate_key, tokens);
            self.charged_tokens += tokens;
        }
    }

    /// Records how the request ended — metrics, the log line, the audit stage — and releases
    /// its admission slot. The receipt of its audit entry, if the route is audited: await it
    /// for the index once the entry is durable.
    pub(crate) fn finish(mut self, outcome: &Outcome) -> Option<Receipt> {
        self.record(outcome)
    }

    fn record(&mut self, outcome: &Outcome) -> Option<Receipt> {
        if self.finished {
            return None;
        }
        self.finished = true;
        // Tokens not yet charged as the answer went (a backend's final count is the truth).
        if let Some(u) = outcome.usage {
            let total = u.total_tokens.max(u.prompt_tokens + u.completion_tokens);
            if total > self.charged_tokens {
                self.charge(total - self.charged_tokens);
            }
        }
        let elapsed = self.start.elapsed();
        let backend = self.backend.as_deref().unwrap_or("");
        self.app
            .metrics
            .request(self.route.name(), outcome.status, backend, elapsed);
        let receipt = stage::audit::record(self, outcome);
        let _enter = self.span.enter();
        let ms = elapsed.as_secs_f64() * 1000.0;
        match &outcome.code {
            Some(code) if outcome.status >= 500 => {
                tracing::warn!(status = outcome.status, code = %code, ms, "request refused");
            }
            Some(code) => {
                tracing::info!(status = outcome.status, code = %code, ms, "request refused");
            }
            None if !outcome.complete => {
                tracing::info!(status = outcome.status, ms, "request ended early");
            }
            None if self.route.is_model() || self.route == Route::Models => {
                tracing::info!(status = outcome.status, ms, "request finished");
            }
            None => {}
        }
        self.permit = None;
        receipt
    }
}

impl Drop for RequestCtx {
    fn drop(&mut self) {
        if !self.finished {
            // The client went away before the answer ended (hyper dropped the request's
            // future or its body).
            self.record(&Outcome {
                status: 499,
                code: None,
                complete: false,
                usage: None,
            });
        }
    }
}
