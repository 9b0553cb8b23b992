//! The Converse API's JSON, both ways: a typed chat request becomes a Converse body; a
//! Converse answer becomes a [`Completion`]; Bedrock's errors become [`BackendError`]s.
//!
//! Pure functions over values: no I/O.

use enclave_api::{
    AnswerToolCall, ChatRequest, Choice, Completion, ErrorBody, FinishReason, Part, Role, Usage,
};
use serde_json::{Map, Value, json};

use crate::backend::BackendError;
use crate::config::Guardrail;

/// The Converse request body for `req`.
///
/// # Errors
///
/// [`BackendError::Invalid`] naming the field Bedrock cannot take: content parts other than
/// text, the deprecated `function` role, `n` above 1, tool-call arguments that are not a JSON
/// object, or a tool message without `tool_call_id`.
pub(crate) fn request_body(
    req: &ChatRequest,
    guardrail: Option<&Guardrail>,
) -> Result<Value, BackendError> {
    if req.n.is_some_and(|n| n != 1) {
        return Err(BackendError::invalid(
            "n",
            "Bedrock returns one choice: n must be 1.",
        ));
    }
    let mut system: Vec<Value> = Vec::new();
    let mut messages: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let mut blocks = Vec::new();
        for (j, part) in m.content.iter().enumerate() {
            match part {
                Part::Text(t) | Part::Refusal(t) => {
                    if !t.is_empty() {
                        blocks.push(json!({"text": t}));
                    }
                }
                Part::Uninspected(_) => {
                    return Err(BackendError::invalid(
                        &format!("{at}.content[{j}]"),
                        "Bedrock backends take text content parts only.",
                    ));
                }
            }
        }
        let role = match m.role {
            Role::System | Role::Developer => {
                system.extend(blocks);
                continue;
            }
            Role::User => "user",
            Role::Assistant => {
                for (j, call) in m.tool_calls.iter().enumerate() {
                    let input: Value = match serde_json::from_str(&call.arguments) {
                        Ok(v @ Value::Object(_)) => v,
                        _ if call.arguments.trim().is_empty() => json!({}),
                        _ => {
                            return Err(BackendError::invalid(
                                &format!("{at}.tool_calls[{j}].function.arguments"),
                                "Tool-call arguments must be a JSON object for Bedrock.",
                            ));
                        }
                    };
                    blocks.push(json!({"toolUse": {
                        "toolUseId": call.id, "name": call.name, "input": input}}));
                }
                "assistant"
            }
            Role::Tool => {
                let Some(id) = &m.tool_call_id else {
                    return Err(BackendError::invalid(
                        &format!("{at}.tool_call_id"),
                        "A tool message needs the `tool_call_id` of the call it answers.",
                    ));
                };
                let text = m.text();
                let content = if text.is_empty() {
                    Vec::new()
                } else {
                    vec![json!({"text": text})]
                };
                blocks = vec![json!({"toolResult": {"toolUseId": id, "content": content}})];
                "user"
            }
            Role::Function => {
                return Err(BackendError::invalid(
                    &format!("{at}.role"),
                    "The deprecated `function` role is not supported by Bedrock backends: send tool messages.",
                ));
            }
        };
        // Converse wants roles to alternate: consecutive messages of one role (tool results
        // followed by a user turn, say) become one message.
        match messages.last_mut() {
            Some((last, content)) if *last == role => content.extend(blocks),
            _ => messages.push((role, blocks)),
        }
    }
    let mut body = Map::new();
    body.insert(
        "messages".into(),
        Value::Array(
            messages
                .into_iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect(),
        ),
    );
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    let mut inference = Map::new();
    if let Some(n) = req.max_tokens {
        inference.insert("maxTokens".into(), json!(n));
    }
    if let Some(t) = req.temperature {
        inference.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        inference.insert("topP".into(), json!(p));
    }
    if !req.stop.is_empty() {
        inference.insert("stopSequences".into(), json!(req.stop));
    }
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }
    // `tool_choice: "none"` has no Converse equivalent: the tools are left out, unless the
    // conversation already holds tool calls or results, which Converse accepts only with a
    // toolConfig (then the tools are offered and the model decides, as with `auto`).
    let has_tool_blocks = req
        .messages
        .iter()
        .any(|m| !m.tool_calls.is_empty() || m.role == Role::Tool);
    let none = matches!(&req.tool_choice, Some(Value::String(s)) if s == "none");
    if !req.tools.is_empty() && (has_tool_blocks || !none) {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut spec = Map::new();
                spec.insert("name".into(), json!(t.name));
                if let Some(d) = &t.description {
                    spec.insert("description".into(), json!(d));
                }
                let schema = t
                    .parameters
                    .clone()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
                spec.insert("inputSchema".into(), json!({"json": schema}));
                json!({"toolSpec": spec})
            })
            .collect();
        let mut config = Map::new();
        config.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = tool_choice(req.tool_choice.as_ref())? {
            config.insert("toolChoice".into(), choice);
        }
        body.insert("toolConfig".into(), Value::Object(config));
    }
    if let Some(g) = guardrail {
        body.insert(
            "guardrailConfig".into(),
            json!({"guardrailIdentifier": g.identifier, "guardrailVersion": g.version}),
        );
    }
    Ok(Value::Object(body))
}

/// OpenAI's `tool_choice` as Converse's `toolChoice` (`none`, when the tools must be sent
/// anyway, as `auto`).
fn tool_choice(choice: Option<&Value>) -> Result<Option<Value>, BackendError> {
    let Some(choice) = choice else {
        return Ok(None);
    };
    match choice {
        Value::String(s) if s == "auto" || s == "none" => Ok(Some(json!({"auto": {}}))),
        Value::String(s) if s == "required" => Ok(Some(json!({"any": {}}))),
        Value::Object(_) => match choice.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => Ok(Some(json!({"tool": {"name": name}}))),
            None => Err(BackendError::invalid(
                "tool_choice",
                "tool_choice must be \"auto\", \"none\", \"required\" or name a function.",
            )),
        },
        _ => Err(BackendError::invalid(
            "tool_choice",
            "tool_choice must be \"auto\", \"none\", \"required\" or name a function.",
        )),
    }
}

/// A Converse answer as a completion for the client's `model`.
///
/// # Errors
///
/// [`BackendError::Failed`] when the body is not a Converse answer.
pub(crate) fn completion(
    body: &[u8],
    id: String,
    model: &str,
    created: u64,
) -> Result<Completion, BackendError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| BackendError::Failed {
        reason: format!("unreadable Converse answer: {e}"),
    })?;
    let Some(content) = v
        .pointer("/output/message/content")
        .and_then(Value::as_array)
    else {
        return Err(BackendError::Failed {
            reason: "the Converse answer has no output.message.content".to_owned(),
        });
    };
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for block in content {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.get_or_insert_with(String::new).push_str(t);
        } else if let Some(u) = block.get("toolUse") {
            tool_calls.push(AnswerToolCall {
                id: str_at(u, "toolUseId"),
                name: str_at(u, "name"),
                arguments: u
                    .get("input")
                    .map_or_else(|| "{}".to_owned(), Value::to_string),
            });
        }
    }
    if text.is_none() && tool_calls.is_empty() {
        text = Some(String::new());
    }
    let finish = v
        .get("stopReason")
        .and_then(Value::as_str)
        .map(finish_reason);
    Ok(Completion {
        id,
        created,
        model: model.to_owned(),
        choices: vec![Choice {
            index: 0,
            content: text,
            refusal: None,
            tool_calls,
            finish_reason: finish,
        }],
        usage: v.get("usage").map(usage),
        raw: None,
    })
}

/// A Converse `stopReason` as OpenAI's `finish_reason`.
pub(crate) fn finish_reason(stop: &str) -> FinishReason {
    match stop {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// Converse's `usage` object as token counts.
pub(crate) fn usage(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let (prompt, completion) = (n("inputTokens"), n("outputTokens"));
    let total = match n("totalTokens") {
        0 => prompt + completion,
        t => t,
    };
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: total,
    }
}

fn str_at(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// What a Bedrock error answer means for the request: `status`, the exception's name (from
/// `x-amzn-ErrorType` or the body's `__type`), and its message.
///
/// Only what certainly did not run may be sent again: throttling and a model that is not
/// ready yet (both 429). Credentials refused (401/403) are the operator's problem and never
/// re-sent; a validation error is the caller's and shown to them; anything else (5xx, model
/// errors and timeouts) may have run.
pub(crate) fn classify(status: u16, exception: &str, message: &str) -> BackendError {
    match (exception, status) {
        ("ThrottlingException" | "ModelNotReadyException", _) | (_, 429) => {
            BackendError::Throttled { retry_after: None }
        }
        (
            "AccessDeniedException"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "ExpiredTokenException"
            | "IncompleteSignatureException",
            _,
        )
        | (_, 401 | 403) => BackendError::Credentials { status },
        ("ValidationException", _) | (_, 400 | 413 | 422) => BackendError::Rejected {
            status: if status == 413 { 413 } else { 400 },
            body: ErrorBody {
                message: format!(
                    "The model backend refused the request: {}",
                    truncate(message, 500)
                ),
                kind: Some("invalid_request_error".to_owned()),
                code: Some(
                    if status == 413 {
                        "request_too_large"
                    } else {
                        "invalid_request"
                    }
                    .to_owned(),
                ),
                param: None,
            },
        },
        (name, _) => BackendError::Failed {
            reason: format!(
                "Bedrock answered {status} {}: {}",
                if name.is_empty() {
                    "(no exception name)"
                } else {
                    name
                },
                truncate(message, 300)
            ),
        },
    }
}

/// The exception name in `x-amzn-ErrorType` (`ValidationException:http://…`) or a body's
/// `__type` (`com.amazon…#ValidationException`).
pub(crate) fn exception_name(header: Option<&str>, body: &Value) -> String {
    let raw = header
        .map(str::to_owned)
        .or_else(|| {
            body.get("__type")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let name = raw.split(':').next().unwrap_or_default();
    name.rsplit('#').next().unwrap_or_default().to_owned()
}

/// An error body's message (`message` or `Message`).
pub(crate) fn error_message(body: &Value) -> String {
    body.get("message")
        .or_else(|| body.get("Message"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => s.get(..i).unwrap_or(s),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use enclave_api::ContentPolicy;

    use super::*;

    fn parse(body: &str) -> ChatRequest {
        ChatRequest::parse(Bytes::from(body.to_owned()), &ContentPolicy::default()).unwrap()
    }

    #[test]
    fn messages_parameters_and_tools_map_to_converse() {
        let req = parse(
            r#"{"model":"m","max_tokens":50,"temperature":0.2,"top_p":0.9,"stop":["END"],
            "tool_choice":"required",
            "tools":[{"type":"function","function":{"name":"weather","description":"d","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],
            "messages":[{"role":"system","content":"be brief"},
                        {"role":"developer","content":"and kind"},
                        {"role":"user","content":"weather in Paris?"},
                        {"role":"assistant","content":null,"tool_calls":[{"id":"t1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}}]},
                        {"role":"tool","tool_call_id":"t1","content":"sunny"},
                        {"role":"user","content":"thanks"}]}"#,
        );
        let g = Guardrail {
            identifier: "gr-1".into(),
            version: "2".into(),
        };
        let v = request_body(&req, Some(&g)).unwrap();
        assert_eq!(
            v,
            json!({
                "system": [{"text": "be brief"}, {"text": "and kind"}],
                "messages": [
                    {"role": "user", "content": [{"text": "weather in Paris?"}]},
                    {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "weather", "input": {"city": "Paris"}}}]},
                    {"role": "user", "content": [
                        {"toolResult": {"toolUseId": "t1", "content": [{"text": "sunny"}]}},
                        {"text": "thanks"}]},
                ],
                "inferenceConfig": {"maxTokens": 50, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
                "toolConfig": {
                    "tools": [{"toolSpec": {"name": "weather", "description": "d",
                        "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}}}}],
                    "toolChoice": {"any": {}},
                },
                "guardrailConfig": {"guardrailIdentifier": "gr-1", "guardrailVersion": "2"},
            })
        );
    }

    #[test]
    fn tool_choice_none_leaves_the_tools_out_unless_the_history_needs_them() {
        let tools = r#""tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"none""#;
        let fresh = parse(&format!(
            r#"{{"model":"m",{tools},"messages":[{{"role":"user","content":"x"}}]}}"#
        ));
        assert!(
            request_body(&fresh, None)
                .unwrap()
                .get("toolConfig")
                .is_none()
        );
        let after_call = parse(&format!(
            r#"{{"model":"m",{tools},"messages":[{{"role":"user","content":"x"}},
            {{"role":"assistant","tool_calls":[{{"id":"a","function":{{"name":"f","arguments":"{{}}"}}}}]}},
            {{"role":"tool","tool_call_id":"a","content":"r"}}]}}"#
        ));
        let v = request_body(&after_call, None).unwrap();
        assert_eq!(v["toolConfig"]["toolChoice"], json!({"auto": {}}));
    }

    #[test]
    fn what_bedrock_cannot_take_is_refused_naming_the_field() {
        for (body, param) in [
            (
                r#"{"model":"m","n":2,"messages":[{"role":"user","content":"x"}]}"#,
                "n",
            ),
            (
                r#"{"model":"m","messages":[{"role":"function","name":"f","content":"x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#,
                "messages[0].tool_call_id",
            ),
            (
                r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"a","function":{"name":"f","arguments":"[1]"}}]}]}"#,
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                r#"{"model":"m","tool_choice":{"type":"function"},"tools":[{"type":"function","function":{"name":"f"}}],"messages":[{"role":"user","content":"x"}]}"#,
                "tool_choice",
            ),
        ] {
            let e = request_body(&parse(body), None).unwrap_err();
            assert!(
                matches!(&e, BackendError::Invalid { param: Some(p), .. } if p == param),
                "{body}: {e:?}"
            );
        }
    }

    #[test]
    fn a_converse_answer_becomes_a_completion() {
        let body = br#"{"output":{"message":{"role":"assistant","content":[
            {"text":"Let me check."},
            {"toolUse":{"toolUseId":"tooluse_1","name":"weather","input":{"city":"Paris"}}}]}},
            "stopReason":"tool_use","usage":{"inputTokens":12,"outputTokens":7,"totalTokens":19},
            "metrics":{"latencyMs":100}}"#;
        let c = completion(body, "chatcmpl-r1".into(), "claude", 5).unwrap();
        let choice = &c.choices[0];
        assert_eq!(choice.content.as_deref(), Some("Let me check."));
        assert_eq!(choice.tool_calls[0].id, "tooluse_1");
        assert_eq!(choice.tool_calls[0].arguments, r#"{"city":"Paris"}"#);
        assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(
            c.usage,
            Some(Usage {
                prompt_tokens: 12,
                completion_tokens: 7,
                total_tokens: 19
            })
        );
        assert!(completion(b"{}", String::new(), "m", 0).is_err());
        assert!(completion(b"not json", String::new(), "m", 0).is_err());
    }

    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        for (stop, finish) in [
            ("end_turn", FinishReason::Stop),
            ("stop_sequence", FinishReason::Stop),
            ("max_tokens", FinishReason::Length),
            ("tool_use", FinishReason::ToolCalls),
            ("guardrail_intervened", FinishReason::ContentFilter),
            ("content_filtered", FinishReason::ContentFilter),
            ("other", FinishReason::Other("other".into())),
        ] {
            assert_eq!(finish_reason(stop), finish, "{stop}");
        }
    }

    #[test]
    fn only_throttling_may_be_resent() {
        let cases = [
            (429, "ThrottlingException", true, "throttled"),
            (429, "ModelNotReadyException", true, "throttled"),
            (400, "ValidationException", false, "rejected"),
            (403, "AccessDeniedException", false, "credentials"),
            (403, "UnrecognizedClientException", false, "credentials"),
            (400, "ExpiredTokenException", false, "credentials"),
            (503, "ServiceUnavailableException", false, "failed"),
            (500, "InternalServerException", false, "failed"),
            (424, "ModelErrorException", false, "failed"),
            (408, "ModelTimeoutException", false, "failed"),
            (404, "ResourceNotFoundException", false, "failed"),
        ];
        for (status, name, resend, kind) in cases {
            let e = classify(status, name, "msg");
            assert_eq!(e.may_resend(), resend, "{name}");
            let got = match &e {
                BackendError::Throttled { .. } => "throttled",
                BackendError::Rejected { .. } => "rejected",
                BackendError::Credentials { .. } => "credentials",
                BackendError::Failed { .. } => "failed",
                _ => "other",
            };
            assert_eq!(got, kind, "{name}");
        }
        let BackendError::Rejected { status, body } = classify(400, "ValidationException", "bad")
        else {
            panic!()
        };
        assert_eq!(status, 400);
        assert_eq!(body.code.as_deref(), Some("invalid_request"));
        assert!(body.message.ends_with("bad"));
    }

    #[test]
    fn exception_names_are_read_from_header_or_body() {
        assert_eq!(
            exception_name(
                Some("ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
                &Value::Null
            ),
            "ValidationException"
        );
        assert_eq!(
            exception_name(
                None,
                &json!({"__type": "com.amazon.coral.service#AccessDeniedException"})
            ),
            "AccessDeniedException"
        );
        assert_eq!(exception_name(None, &json!({})), "");
        assert_eq!(error_message(&json!({"Message": "m"})), "m");
    }
}
