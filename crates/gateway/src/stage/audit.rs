//! The audit stage: one entry in the tamper-evident log per request, on every exit.
//!
//! `record` is called exactly once per request by `RequestCtx::finish` or its `Drop`, whatever
//! the exit — an answer, a refusal, a failure, a panic, a client that went away — and `decision`
//! before the first byte of a stream (its outcome entry follows when the stream ends). Both queue an
//! [`enclave_audit::RequestEvent`] on the group-commit writer and return its [`Receipt`]: the
//! pipeline awaits it before it sends a whole answer or the head of a stream, and puts the index
//! in `X-Enclave-Audit-Index`. The `Drop` path cannot wait; its entry is queued all the same.
//!
//! Which requests: every route except the operator's probes (`/healthz`, `/readyz`,
//! `/metrics`), see [`Route::is_audited`](crate::route::Route::is_audited).
//!
//! What an entry holds: who (tenant, principal, how they authenticated), at which labels
//! (session, content), what (route, model, backend), the decisions taken with their codes, the
//! outcome (status, error code, latency, tokens), and — never the text — HMAC-SHA256 digests of
//! the request body and of the bytes of the answer sent, under the tenant's digest key
//! ([`enclave_store::install::AuditDigestKeys::tenant_key`]). An auditor given the text and the
//! tenant's key can confirm a digest; nobody else learns anything from it.

use enclave_api::Usage;
use enclave_audit::{Decision, Event, KeyedDigest, Phase, RequestEvent, TokenCounts};
use enclave_store::{Expected, Receipt};
use ring::hmac;

use crate::ctx::{Outcome, RequestCtx};

/// What the audit entry keeps of a request's content: keyed digests, never the text.
#[derive(Default)]
pub(crate) struct Trail {
    /// The tenant's digest key, once the tenant is known.
    key: Option<hmac::Key>,
    /// The digest of the request body.
    prompt: Option<KeyedDigest>,
    /// The running digest of the answer's bytes, as they are sent.
    output: Option<hmac::Context>,
    /// A stream's decision entry was queued: the next entry is its outcome.
    streamed: bool,
    /// The announcement that this request's entry is coming (see [`expect`]).
    expected: Option<Expected>,
}

impl std::fmt::Debug for Trail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trail")
            .field("prompt", &self.prompt)
            .field("streamed", &self.streamed)
            .finish_non_exhaustive()
    }
}

impl Trail {
    /// Adds `bytes` of the answer, as sent, to the output digest (nothing before the tenant's
    /// key is known: no answer is sent before authentication).
    pub(crate) fn output(&mut self, bytes: &[u8]) {
        if let Some(ctx) = &mut self.output {
            ctx.update(bytes);
        } else if let Some(key) = &self.key {
            let mut ctx = hmac::Context::with_key(key);
            ctx.update(bytes);
            self.output = Some(ctx);
        }
    }
}

/// Digests the request body under the caller's tenant key (call once, after authentication,
/// with the exact bytes received).
pub(crate) fn prompt(ctx: &mut RequestCtx, body: &[u8]) {
    let Some(caller) = ctx.caller.as_deref() else {
        return;
    };
    let key = hmac::Key::new(
        hmac::HMAC_SHA256,
        &ctx.app
            .digest_keys
            .tenant_key(caller.principal.tenant.as_str()),
    );
    ctx.trail.prompt = Some(digest(hmac::sign(&key, body)));
    ctx.trail.key = Some(key);
}

/// Announces to the audit writer that this request's entry is coming soon (after admission,
/// and again after a wait on a backend): a commit may then wait a moment for it, so that one
/// disk flush serves several requests ([`enclave_store::AuditLog::expect`]).
pub(crate) fn expect(ctx: &mut RequestCtx) {
    if ctx.route.is_audited() && ctx.trail.expected.is_none() {
        ctx.trail.expected = Some(ctx.app.audit.expect());
    }
}

/// Awaits `work` (a backend's answer) with the request's announcement withdrawn, so that no
/// commit waits for the request meanwhile, and announces it again after.
pub(crate) async fn away<F: std::future::Future>(ctx: &mut RequestCtx, work: F) -> F::Output {
    ctx.trail.expected = None;
    let out = work.await;
    expect(ctx);
    out
}

/// Digests a whole answer's body.
pub(crate) fn output(ctx: &mut RequestCtx, body: &[u8]) {
    ctx.trail.output(body);
}

/// Queues the entry of a request's outcome; its receipt, or `None` for a route that is not
/// audited.
pub(crate) fn record(ctx: &mut RequestCtx, outcome: &Outcome) -> Option<Receipt> {
    if !ctx.route.is_audited() {
        return None;
    }
    let phase = ctx.trail.streamed.then_some(Phase::Outcome);
    let output = ctx.trail.output.take().map(|c| digest(c.sign()));
    let event = event(
        ctx,
        outcome.status,
        outcome.code.as_deref(),
        outcome.usage,
        phase,
        output,
    );
    Some(queue(ctx, event))
}

/// Queues the decision entry of a streamed answer, to be awaited before its first byte.
pub(crate) fn decision(ctx: &mut RequestCtx) -> Option<Receipt> {
    if !ctx.route.is_audited() {
        return None;
    }
    ctx.trail.streamed = true;
    let event = event(ctx, 200, None, None, Some(Phase::Decision), None);
    // The outcome entry comes when the stream ends, which may be long: not announced.
    Some(queue(ctx, event))
}

/// Queues `event`, ending the request's announcement of it.
fn queue(ctx: &mut RequestCtx, event: RequestEvent) -> Receipt {
    let expected = ctx.trail.expected.take();
    ctx.app
        .audit
        .append_expected(Event::Request(event), expected)
}

/// The entry of `ctx` as it stands.
fn event(
    ctx: &RequestCtx,
    status: u16,
    code: Option<&str>,
    usage: Option<Usage>,
    phase: Option<Phase>,
    output_hmac: Option<KeyedDigest>,
) -> RequestEvent {
    let caller = ctx.caller();
    RequestEvent {
        auth_method: caller.map(|c| c.method.to_owned()),
        backend: ctx.backend.clone(),
        content_label: ctx.content.as_ref().map(enclave_label::Label::banner),
        decisions: ctx
            .decisions
            .iter()
            .map(|d| Decision {
                code: Some(d.code.clone().into_owned()),
                outcome: d.outcome.to_owned(),
                stage: d.stage.to_owned(),
            })
            .collect(),
        error: code.map(str::to_owned),
        latency_ms: u64::try_from(ctx.start.elapsed().as_millis()).unwrap_or(u64::MAX),
        model: ctx.model.clone(),
        output_hmac,
        phase,
        principal: caller.map(|c| c.principal.id.as_str().to_owned()),
        prompt_hmac: ctx.trail.prompt.clone(),
        request_id: ctx.id.clone(),
        route: ctx.route.name().to_owned(),
        session_label: ctx.session.as_ref().map(|s| s.label().banner()),
        status,
        tenant: caller.map(|c| c.principal.tenant.as_str().to_owned()),
        tokens: usage.map(|u| TokenCounts {
            input: u.prompt_tokens,
            output: u.completion_tokens,
        }),
    }
}

/// An HMAC tag as the entry's digest (64 lowercase hex digits).
fn digest(tag: hmac::Tag) -> KeyedDigest {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for b in tag.as_ref() {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    #[expect(
        clippy::expect_used,
        reason = "an HMAC-SHA256 tag is 32 bytes, so this is 64 lowercase hex digits (unit test)"
    )]
    hex.parse().expect("64 lowercase hex digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_the_audit_crate_s_keyed_digests() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"tenant key");
        assert_eq!(
            digest(hmac::sign(&key, b"the question")),
            KeyedDigest::compute(b"tenant key", b"the question")
        );
        // A running digest over pieces is the digest of the whole.
        let mut trail = Trail {
            key: Some(key),
            ..Trail::default()
        };
        trail.output(b"the ");
        trail.output(b"answer");
        assert_eq!(
            digest(trail.output.take().unwrap().sign()),
            KeyedDigest::compute(b"tenant key", b"the answer")
        );
    }
}
