//! Fact extraction for long-term memory (`[memory] extractor`): after a remembered turn, the
//! memory worker asks the configured model, with a fixed prompt, for the facts about the user
//! that the turn states, and which older fact each one replaces — the update step of Mem0 and
//! of AgentCore's semantic strategy.
//!
//! The call goes through the [`Router`] like chat: only a backend accredited for the turn's
//! label is ever sent the turn (SECURITY: never higher-labelled text to a lower backend); with
//! none, nothing is extracted and the statement alone is kept.
//!
//! Every call is in the audit log like a request (route `memory_extract`, request id
//! `mx_<statement id>`): a decision entry, durable before the turn is sent (none is sent while
//! the log cannot write), and an outcome entry with the backend, status, tokens and keyed
//! digests of what was sent and answered; a turn no accredited backend may receive gets one
//! entry saying so.
//!
//! The model's answer is hostile input. [`parse_facts`] accepts exactly
//! `{"facts": [{"text": "...", "replaces": "..." | null}]}` (optionally inside one Markdown code
//! fence), bounded in size, count and length; anything else is refused whole and nothing of it
//! is stored.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use enclave_api::json::Json;
use enclave_api::{ChatRequest, ContentPolicy};
use enclave_audit::{Decision, Event, KeyedDigest, Phase, RequestEvent, TokenCounts};
use enclave_label::Label;
use enclave_models::{Call, ChatAnswer, RouteError, Router};
use enclave_store::AuditLog;
use enclave_store::install::AuditDigestKeys;
use tokio::time::Instant;

/// Longest extractor answer read, in bytes.
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024;

/// Most facts taken from one turn.
pub const MAX_FACTS: usize = 8;

/// Longest fact (and `replaces` description), in characters.
pub const MAX_FACT_CHARS: usize = 500;

/// Longest part of the turn (statement, answer) shown to the extractor, in characters.
const MAX_TURN_CHARS: usize = 8000;

/// How long one extraction may take.
const EXTRACT_TIMEOUT: Duration = Duration::from_secs(60);

/// The fixed instructions sent with every turn.
const PROMPT: &str = "You extract durable facts about the user from one conversation turn, for \
the user's long-term memory. Answer with JSON only, exactly of this form: \
{\"facts\": [{\"text\": \"<one short fact about the user, in the third person>\", \
\"replaces\": \"<a short description of the older fact this one updates or contradicts, or null>\"}]}. \
Only facts the user states or confirms about themselves, their work, plans and preferences; \
no questions, no facts about the assistant, nothing the turn does not say. At most 8 facts, \
each under 300 characters. When nothing is worth remembering, answer {\"facts\": []}.";

/// One extracted fact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fact {
    /// The fact, as one sentence.
    pub text: String,
    /// What older fact it updates, as the model described it.
    pub replaces: Option<String>,
}

/// Why an extractor answer was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FactsError {
    /// Longer than [`MAX_OUTPUT_BYTES`].
    #[error("the answer is longer than {MAX_OUTPUT_BYTES} bytes")]
    TooLong,
    /// Not JSON (or duplicate keys, or nested too deep).
    #[error("the answer is not JSON")]
    NotJson,
    /// JSON of another shape.
    #[error("the answer is not of the form {{\"facts\": [...]}}: {0}")]
    Shape(&'static str),
    /// More than [`MAX_FACTS`] facts.
    #[error("the answer has more than {MAX_FACTS} facts")]
    TooMany,
}

/// Parses an extractor's answer strictly.
///
/// # Errors
///
/// [`FactsError`] for anything but the expected object within the bounds.
pub fn parse_facts(answer: &str) -> Result<Vec<Fact>, FactsError> {
    if answer.len() > MAX_OUTPUT_BYTES {
        return Err(FactsError::TooLong);
    }
    let json = Json::parse(unfence(answer)).map_err(|_| FactsError::NotJson)?;
    let Json::Object(members) = &json else {
        return Err(FactsError::Shape("not an object"));
    };
    let [(key, Json::Array(items))] = members.as_slice() else {
        return Err(FactsError::Shape(
            "expected exactly one member, `facts`, an array",
        ));
    };
    if key != "facts" {
        return Err(FactsError::Shape(
            "expected exactly one member, `facts`, an array",
        ));
    }
    if items.len() > MAX_FACTS {
        return Err(FactsError::TooMany);
    }
    let mut facts = Vec::with_capacity(items.len());
    for item in items {
        let Json::Object(fields) = item else {
            return Err(FactsError::Shape("a fact is not an object"));
        };
        let (mut text, mut replaces) = (None, None);
        for (k, v) in fields {
            match (&**k, v) {
                ("text", Json::String(s)) => text = Some(bounded(s)?),
                ("replaces", Json::Null) => {}
                ("replaces", Json::String(s)) if s.trim().is_empty() => {}
                ("replaces", Json::String(s)) => replaces = Some(bounded(s)?),
                ("text" | "replaces", _) => {
                    return Err(FactsError::Shape("`text` and `replaces` must be strings"));
                }
                _ => return Err(FactsError::Shape("a fact has an unknown member")),
            }
        }
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            return Err(FactsError::Shape("a fact has no `text`"));
        };
        facts.push(Fact { text, replaces });
    }
    Ok(facts)
}

/// The text without surrounding whitespace and one Markdown code fence around it, if any.
fn unfence(answer: &str) -> &str {
    let t = answer.trim();
    let Some(inner) = t.strip_prefix("```").and_then(|r| r.strip_suffix("```")) else {
        return t;
    };
    let inner = inner.strip_prefix("json").unwrap_or(inner);
    inner.trim()
}

/// A fact's string: trimmed, within [`MAX_FACT_CHARS`], without control characters.
fn bounded(s: &str) -> Result<String, FactsError> {
    let s = s.trim();
    if s.chars().count() > MAX_FACT_CHARS {
        return Err(FactsError::Shape("a fact is too long"));
    }
    if s.chars().any(char::is_control) {
        return Err(FactsError::Shape("a fact has control characters"));
    }
    Ok(s.to_owned())
}

/// The configured extractor: a model reached through the router.
#[derive(Debug)]
pub struct Extractor {
    router: Arc<Router>,
    model: String,
    audit: AuditLog,
    digest_keys: AuditDigestKeys,
}

/// Whose turn is extracted, for its audit entries.
#[derive(Clone, Copy, Debug)]
pub struct Turn<'a> {
    /// The remembered statement's id.
    pub id: &'a str,
    /// Its tenant.
    pub tenant: &'a str,
    /// Its principal.
    pub principal: &'a str,
}

/// What asking the extractor gave.
#[derive(Debug)]
pub enum Extracted {
    /// The facts (possibly none).
    Facts(Vec<Fact>),
    /// No backend that serves the model is accredited for the turn's label: not sent.
    NoAccreditedBackend,
    /// Sent, but no usable answer (logged).
    Failed,
}

impl Extractor {
    /// An extractor asking `model` through `router`, recording each call in `audit` with
    /// digests under the tenants' keys from `digest_keys`.
    pub fn new(
        router: Arc<Router>,
        model: String,
        audit: AuditLog,
        digest_keys: AuditDigestKeys,
    ) -> Extractor {
        Extractor {
            router,
            model,
            audit,
            digest_keys,
        }
    }

    /// The model's client-facing name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Asks for the facts of one turn at `label` (the turn's label: statement, answer and what
    /// was recalled into it).
    pub async fn extract(
        &self,
        turn: Turn<'_>,
        label: &Label,
        statement: &str,
        answer: Option<&str>,
    ) -> Extracted {
        let started = Instant::now();
        let mut entry = RequestEvent {
            auth_method: Some("internal".to_owned()),
            model: Some(self.model.clone()),
            principal: Some(turn.principal.to_owned()),
            request_id: format!("mx_{}", turn.id),
            route: "memory_extract".to_owned(),
            session_label: Some(label.banner()),
            tenant: Some(turn.tenant.to_owned()),
            ..RequestEvent::default()
        };
        // SECURITY: the only path to a backend is through `candidates`, which keeps only the
        // backends whose accreditation dominates the label.
        let candidates = match self.router.candidates(&self.model, label) {
            Ok(c) => c,
            Err(RouteError::NotAccredited(_)) => {
                entry
                    .decisions
                    .push(decision("routing", "deny", "not_accredited"));
                entry.status = 403;
                entry.error = Some("not_accredited".to_owned());
                self.record(entry).await;
                return Extracted::NoAccreditedBackend;
            }
            Err(RouteError::UnknownModel(_)) => {
                tracing::error!(model = %self.model, "the memory extractor's model has no backend");
                return Extracted::Failed;
            }
        };
        let Some((req, raw)) = self.request(statement, answer) else {
            return Extracted::Failed;
        };
        let key = self.digest_keys.tenant_key(turn.tenant);
        entry.prompt_hmac = Some(KeyedDigest::compute(&key, &raw));
        entry
            .decisions
            .push(decision("memory_extract", "allow", "send"));
        // The decision is durable before the turn leaves; while the log cannot write, nothing
        // is sent (fail closed, as for requests).
        let mut first = entry.clone();
        first.phase = Some(Phase::Decision);
        first.status = 200;
        if self.audit.is_unavailable() || !self.record(first).await {
            tracing::warn!("the audit log cannot write: the memory extractor was not asked");
            return Extracted::Failed;
        }
        entry.phase = Some(Phase::Outcome);
        let deadline = Instant::now() + EXTRACT_TIMEOUT;
        let call = Call {
            request_id: entry.request_id.clone(),
            deadline,
        };
        let sent = self
            .router
            .send(&candidates, &self.model, deadline, |backend, model| {
                backend.chat(&req, model, &call)
            });
        let outcome = match tokio::time::timeout(EXTRACT_TIMEOUT, sent).await {
            Ok(Ok(s)) => {
                entry.backend = Some(s.backend.clone());
                match s.answer {
                    ChatAnswer::Whole(c) => Ok(c),
                    ChatAnswer::Stream(st) => crate::respond::collect(st).await.map_err(|e| {
                        tracing::warn!(error = %e, "the memory extractor failed mid-answer");
                    }),
                }
            }
            Ok(Err(f)) => {
                entry.backend = Some(f.backend.clone());
                tracing::warn!(backend = %f.backend, error = %f.last, "the memory extractor failed");
                Err(())
            }
            Err(_) => {
                tracing::warn!("the memory extractor did not answer in time");
                Err(())
            }
        };
        let Ok(completion) = outcome else {
            entry.status = 502;
            entry.error = Some("upstream_error".to_owned());
            entry.latency_ms = elapsed_ms(started);
            self.record(entry).await;
            return Extracted::Failed;
        };
        let text = completion
            .choices
            .first()
            .and_then(|c| c.content.as_deref())
            .unwrap_or_default();
        entry.output_hmac = Some(KeyedDigest::compute(&key, text.as_bytes()));
        entry.tokens = completion.usage.map(|u| TokenCounts {
            input: u.prompt_tokens,
            output: u.completion_tokens,
        });
        entry.latency_ms = elapsed_ms(started);
        let parsed = parse_facts(text);
        entry.status = if parsed.is_ok() { 200 } else { 502 };
        if parsed.is_err() {
            entry.error = Some("unusable_answer".to_owned());
        }
        self.record(entry).await;
        match parsed {
            Ok(facts) => Extracted::Facts(facts),
            Err(e) => {
                // Sizes and the reason only: never the model's text.
                tracing::warn!(error = %e, bytes = text.len(), "the memory extractor's answer was refused; only the statement is kept");
                Extracted::Failed
            }
        }
    }

    /// Appends `entry` and waits until it is durable; whether it was written.
    async fn record(&self, entry: RequestEvent) -> bool {
        match self.audit.append(Event::Request(entry)).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "the memory extractor's audit entry could not be written");
                false
            }
        }
    }

    /// The chat request (the fixed prompt, then the turn) and its bytes.
    fn request(&self, statement: &str, answer: Option<&str>) -> Option<(ChatRequest, Bytes)> {
        let clip = |s: &str| s.chars().take(MAX_TURN_CHARS).collect::<String>();
        let mut turn = format!("User: {}", clip(statement));
        if let Some(a) = answer {
            turn.push_str("\n\nAssistant: ");
            turn.push_str(&clip(a));
        }
        let body = serde_json::json!({
            "model": self.model,
            "messages": [
                {"role": "system", "content": PROMPT},
                {"role": "user", "content": turn},
            ],
            "stream": false,
            "temperature": 0,
        });
        let raw = Bytes::from(serde_json::to_vec(&body).ok()?);
        match ChatRequest::parse(raw.clone(), &ContentPolicy::default()) {
            Ok(r) => Some((r, raw)),
            Err(e) => {
                tracing::error!(error = %e, "the memory extractor's request did not parse");
                None
            }
        }
    }
}

/// A decision of an extractor call's audit entry.
fn decision(stage: &str, outcome: &str, code: &str) -> Decision {
    Decision {
        code: Some(code.to_owned()),
        outcome: outcome.to_owned(),
        stage: stage.to_owned(),
    }
}

/// Milliseconds since `start`.
fn elapsed_ms(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_facts_are_read() {
        let facts = parse_facts(
            r#"{"facts": [{"text": " The user lives in Boston. ", "replaces": "lives in Denver"},
                          {"text": "The user likes tea", "replaces": null},
                          {"text": "Works nights", "replaces": ""}]}"#,
        )
        .unwrap();
        assert_eq!(
            facts,
            [
                Fact {
                    text: "The user lives in Boston.".into(),
                    replaces: Some("lives in Denver".into())
                },
                Fact {
                    text: "The user likes tea".into(),
                    replaces: None
                },
                Fact {
                    text: "Works nights".into(),
                    replaces: None
                },
            ]
        );
        assert_eq!(parse_facts("{\"facts\": []}").unwrap(), []);
        let fenced = "```json\n{\"facts\": [{\"text\": \"x\"}]}\n```";
        assert_eq!(parse_facts(fenced).unwrap().len(), 1);
    }

    #[test]
    fn hostile_extractor_answers_are_refused_whole() {
        let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let deep_object = format!(
            "{{\"facts\": [{{\"text\": \"a\", \"replaces\": {}1{}}}]}}",
            "[".repeat(5000),
            "]".repeat(5000)
        );
        let huge = format!("{{\"facts\": [{{\"text\": \"{}\"}}]}}", "a".repeat(20_000));
        let long_fact = format!(
            "{{\"facts\": [{{\"text\": \"{}\"}}]}}",
            "é".repeat(MAX_FACT_CHARS + 1)
        );
        let many = format!(
            "{{\"facts\": [{}]}}",
            ["{\"text\": \"x\"}"; MAX_FACTS + 1].join(",")
        );
        let cases: Vec<(&str, String)> = vec![
            ("prose", "The user lives in Boston.".into()),
            ("empty", String::new()),
            ("truncated", "{\"facts\": [{\"text\": \"a\"}".into()),
            ("nested arrays", nested),
            ("nested in a fact", deep_object),
            ("huge", huge),
            ("long fact", long_fact),
            ("too many", many),
            ("array top", "[{\"text\": \"a\"}]".into()),
            ("string top", "\"facts\"".into()),
            ("facts not array", "{\"facts\": {\"text\": \"a\"}}".into()),
            ("facts string", "{\"facts\": \"a\"}".into()),
            ("extra member", "{\"facts\": [], \"note\": 1}".into()),
            ("other key", "{\"memories\": []}".into()),
            ("duplicate key", "{\"facts\": [], \"facts\": []}".into()),
            ("fact number", "{\"facts\": [5]}".into()),
            ("text number", "{\"facts\": [{\"text\": 5}]}".into()),
            ("text array", "{\"facts\": [{\"text\": [\"a\"]}]}".into()),
            (
                "replaces object",
                "{\"facts\": [{\"text\": \"a\", \"replaces\": {}}]}".into(),
            ),
            ("no text", "{\"facts\": [{\"replaces\": \"a\"}]}".into()),
            ("blank text", "{\"facts\": [{\"text\": \"  \"}]}".into()),
            (
                "unknown field",
                "{\"facts\": [{\"text\": \"a\", \"id\": \"mem_1\"}]}".into(),
            ),
            (
                "control chars",
                "{\"facts\": [{\"text\": \"a\\u0000b\"}]}".into(),
            ),
            ("two documents", "{\"facts\": []} {\"facts\": []}".into()),
            ("half fenced", "```json\n{\"facts\": []}".into()),
        ];
        for (name, input) in cases {
            assert!(parse_facts(&input).is_err(), "{name} was accepted");
        }
    }
}
