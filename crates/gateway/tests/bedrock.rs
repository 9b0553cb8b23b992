//! End-to-end on `kind = "bedrock"` backends: the real gateway against a mock Bedrock runtime
//! (`bedrock_mock.py`) that checks every request's SigV4 signature with botocore and frames
//! ConverseStream answers with its own encoder, checked against botocore's decoder.
//!
//! Needs `python3` with `botocore`. Skipped (with a message) when that is missing, unless
//! `ENCLAVE_REQUIRE_BOTOCORE=1` (CI installs botocore and sets it).

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers fail the test on broken machinery"
)]

mod common;

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{Gateway, code};
use http::{Method, StatusCode};
use serde_json::{Value, json};

/// The secret key of the GovCloud profile: it must never appear anywhere Enclave writes.
const PLANTED_SECRET: &str = "PLANTEDsecret/Key+bedrock0123456789abcdefXYZ";
const PLANTED_TOKEN: &str = "PLANTEDsessionToken0123456789";
const GOV_KEY_ID: &str = "AKIAGOVEXAMPLE000001";
const COMMERCIAL_KEY_ID: &str = "AKIACOMEXAMPLE000002";
const COMMERCIAL_SECRET: &str = "commercial/secret+key";

/// A running mock, killed when dropped.
struct Mock {
    child: Child,
    url: String,
    client: common::HttpClient,
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn botocore_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import botocore.auth, botocore.eventstream"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("ENCLAVE_REQUIRE_BOTOCORE").as_deref() == Ok("1") {
            panic!(
                "ENCLAVE_REQUIRE_BOTOCORE=1 but python3 cannot import botocore: pip install botocore"
            );
        }
        eprintln!(
            "skipping Bedrock end-to-end tests: python3 cannot import botocore (pip install botocore)"
        );
    }
    ok
}

impl Mock {
    fn start(region: &str, key_id: &str, secret: &str, token: Option<&str>) -> Mock {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bedrock_mock.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).args([
            "--region",
            region,
            "--access-key",
            key_id,
            "--secret-key",
            secret,
        ]);
        if let Some(t) = token {
            cmd.args(["--session-token", t]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("mock said {line:?}"))
            .to_owned();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(hyper_util::client::legacy::connect::HttpConnector::new());
        Mock {
            child,
            url: format!("http://{addr}"),
            client,
        }
    }

    async fn stats(&self) -> Value {
        use http_body_util::BodyExt;
        let req = http::Request::get(format!("{}/__stats", self.url))
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        let resp = self.client.request(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&body).unwrap()
    }

    /// The requests it received for a model id, and no bad signature among all.
    async fn requests_for(&self, model: &str) -> Vec<Value> {
        let s = self.stats().await;
        assert_eq!(s["bad_signatures"], 0, "{s}");
        s["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["model"] == model)
            .cloned()
            .collect()
    }
}

/// Two mocks (GovCloud and commercial), a credentials file with one profile each, and the
/// gateway with one backend per region serving the same client-facing models.
struct Setup {
    gov: Mock,
    commercial: Mock,
    gw: Gateway,
    key: String,
    _files: tempfile::TempDir,
}

const GOV_MODEL: &str = "us-gov.anthropic.claude-3-5-sonnet-20240620-v1:0";
const COMMERCIAL_MODEL: &str = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20240620-v1:0";

async fn setup() -> Option<Setup> {
    if !botocore_available() {
        return None;
    }
    let gov = Mock::start(
        "us-gov-west-1",
        GOV_KEY_ID,
        PLANTED_SECRET,
        Some(PLANTED_TOKEN),
    );
    let commercial = Mock::start("us-east-1", COMMERCIAL_KEY_ID, COMMERCIAL_SECRET, None);
    let files = tempfile::tempdir().unwrap();
    let creds = files.path().join("credentials");
    let mut f = std::fs::File::create(&creds).unwrap();
    write!(
        f,
        "[govcloud]\naws_access_key_id = {GOV_KEY_ID}\naws_secret_access_key = {PLANTED_SECRET}\naws_session_token = {PLANTED_TOKEN}\n\n[commercial]\naws_access_key_id = {COMMERCIAL_KEY_ID}\naws_secret_access_key = {COMMERCIAL_SECRET}\n"
    )
    .unwrap();
    let models = |upstream: &str| {
        format!(
            "[{{ name = \"claude\", upstream = \"{upstream}\" }}, {{ name = \"tools\", upstream = \"{upstream}-tools\" }}, {{ name = \"bad-request\", upstream = \"invalid-model\" }}, {{ name = \"denied\", upstream = \"denied-model\" }}, {{ name = \"busy\", upstream = \"throttle-model\" }}, {{ name = \"corrupt\", upstream = \"badcrc-model\" }}, {{ name = \"broken\", upstream = \"midstream-model\" }}, {{ name = \"titan\", upstream = \"amazon.titan-embed-text-v2:0\" }}]"
        )
    };
    let toml = format!(
        "[limits]\nmax_retries = 1\n\n\
         [[backends]]\nname = \"bedrock-commercial\"\nkind = \"bedrock\"\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\nprofile = \"commercial\"\nmodels = {}\naccreditation = \"UNCLASSIFIED\"\npriority = 1\n\n\
         [[backends]]\nname = \"bedrock-govcloud\"\nkind = \"bedrock\"\nregion = \"us-gov-west-1\"\nendpoint_url = \"{}\"\nprofile = \"govcloud\"\nmodels = {}\naccreditation = \"CUI\"\noperators = \"USA\"\npriority = 2\n",
        commercial.url,
        models(COMMERCIAL_MODEL),
        gov.url,
        models(GOV_MODEL),
    );
    let mut vars: HashMap<&str, OsString> = HashMap::new();
    vars.insert("AWS_SHARED_CREDENTIALS_FILE", creds.into_os_string());
    vars.insert(
        "AWS_CONFIG_FILE",
        files.path().join("absent").into_os_string(),
    );
    let env = move |name: &str| vars.get(name).cloned();
    let gw = Gateway::start_with_env(&toml, &env).await;
    let key = gw.user("alice", "t1", "SECRET", "USA").await;
    Some(Setup {
        gov,
        commercial,
        gw,
        key,
        _files: files,
    })
}

/// The JSON of each `data:` event of an SSE body, and whether it ended with `[DONE]`.
fn sse(body: &[u8]) -> (Vec<Value>, bool) {
    let text = std::str::from_utf8(body).unwrap();
    let mut events = Vec::new();
    let mut done = false;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
        } else {
            events.push(serde_json::from_str(data).unwrap());
        }
    }
    (events, done)
}

async fn stream(s: &Setup, label: &str, body: &Value) -> (StatusCode, Vec<Value>, bool) {
    let (status, _, bytes) =
        s.gw.call(
            Method::POST,
            "/v1/chat/completions",
            Some(&s.key),
            &[("x-enclave-classification", label)],
            Some(Bytes::from(serde_json::to_vec(body).unwrap())),
        )
        .await;
    let (events, done) = sse(&bytes);
    (status, events, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_and_streamed_chat_through_converse() {
    let Some(s) = setup().await else { return };
    let (status, headers, v) =
        s.gw.chat(&s.key, Some("CUI"), "claude", "Hello, Bedrock")
            .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(headers["x-enclave-classification"], "CUI");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from us-gov-west-1: you said: Hello, Bedrock"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["total_tokens"], 18);
    assert_eq!(v["model"], "claude");

    let body = json!({"model": "claude", "stream": true, "stream_options": {"include_usage": true},
        "max_tokens": 64, "temperature": 0.5, "top_p": 0.9, "stop": ["STOP"],
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": "streamed hello"}]});
    let (status, events, done) = stream(&s, "CUI", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert!(done, "{events:?}");
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello from us-gov-west-1: you said: streamed hello");
    let finish: Vec<&Value> = events
        .iter()
        .map(|e| &e["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("stop")]);
    assert_eq!(events.last().unwrap()["usage"]["completion_tokens"], 7);

    // What Bedrock received: system blocks, inferenceConfig; the model id's `:` encoded in the
    // path (the mock decodes it) and every signature right.
    let got = s.gov.requests_for(GOV_MODEL).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["action"], "converse");
    assert_eq!(got[1]["action"], "converse-stream");
    assert_eq!(got[1]["body"]["system"], json!([{"text": "be brief"}]));
    assert_eq!(
        got[1]["body"]["inferenceConfig"],
        json!({"maxTokens": 64, "temperature": 0.5, "topP": 0.9, "stopSequences": ["STOP"]})
    );

    // Embeddings through Titan.
    let (status, _, v) =
        s.gw.post(
            "/v1/embeddings",
            &s.key,
            None,
            &json!({"model": "titan", "input": ["one two", "three"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    // An UNCLASSIFIED request may use the commercial backend (tried first), whose model id is
    // an ARN with `/` and `:` in one path segment.
    let (status, _, v) = s.gw.chat(&s.key, None, "claude", "hi").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from us-east-1: you said: hi"
    );
    assert_eq!(s.commercial.requests_for(COMMERCIAL_MODEL).await.len(), 1);
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_round_trip() {
    let Some(s) = setup().await else { return };
    let tools = json!([{"type": "function", "function": {"name": "weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let first = json!({"model": "tools", "tools": tools,
        "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    let (status, _, v) =
        s.gw.post("/v1/chat/completions", &s.key, Some("CUI"), &first)
            .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let message = &v["choices"][0]["message"];
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &message["tool_calls"][0];
    assert_eq!(call["id"], "tooluse_mock1");
    assert_eq!(call["function"]["name"], "weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));

    // The same, streamed: the call arrives in pieces.
    let mut streamed = first.clone();
    streamed["stream"] = json!(true);
    let (status, events, done) = stream(&s, "CUI", &streamed).await;
    assert_eq!(status, StatusCode::OK);
    assert!(done);
    let calls: Vec<&Value> = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(calls[0]["id"], "tooluse_mock1");
    let streamed_args: String = calls
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&streamed_args).unwrap(),
        json!({"city": "Paris"})
    );

    // The result goes back; the answer uses it.
    let second = json!({"model": "tools", "tools": tools, "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "tooluse_mock1", "content": "sunny, 24 C"}]});
    let (status, _, v) =
        s.gw.post("/v1/chat/completions", &s.key, Some("CUI"), &second)
            .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "The weather in Paris: sunny, 24 C."
    );
    let got = s.gov.requests_for(&format!("{GOV_MODEL}-tools")).await;
    let last = &got.last().unwrap()["body"];
    assert_eq!(
        last["messages"][1]["content"][0]["toolUse"],
        json!({"toolUseId": "tooluse_mock1", "name": "weather", "input": {"city": "Paris"}})
    );
    assert_eq!(
        last["messages"][2]["content"][0]["toolResult"]["toolUseId"],
        "tooluse_mock1"
    );
    assert_eq!(
        last["toolConfig"]["tools"][0]["toolSpec"]["name"],
        "weather"
    );
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrock_errors_map_to_enclave_codes_and_only_throttling_is_resent() {
    let Some(s) = setup().await else { return };
    // ValidationException: the caller's 400, with Bedrock's message.
    let (status, _, v) = s.gw.chat(&s.key, Some("CUI"), "bad-request", "x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(code(&v), "invalid_request");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mock ValidationException"),
        "{v}"
    );
    // AccessDeniedException: the operator's problem, sent once.
    let (status, _, v) = s.gw.chat(&s.key, Some("CUI"), "denied", "x").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{v}");
    assert_eq!(code(&v), "upstream_error");
    assert_eq!(s.gov.requests_for("denied-model").await.len(), 1);
    // ThrottlingException: retried (max_retries = 1), then 429 rate_limited; never to the
    // commercial backend, which is not accredited for CUI.
    let (status, headers, v) = s.gw.chat(&s.key, Some("CUI"), "busy", "x").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(code(&v), "rate_limited");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(s.gov.requests_for("throttle-model").await.len(), 2);
    assert!(s.commercial.requests_for("throttle-model").await.is_empty());
    // A corrupted CRC and a mid-stream exception end the stream with an error, no [DONE].
    for model in ["corrupt", "broken"] {
        let body = json!({"model": model, "stream": true,
            "messages": [{"role": "user", "content": "x"}]});
        let (status, events, done) = stream(&s, "CUI", &body).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!done, "{model}: {events:?}");
        assert_eq!(
            events.last().unwrap()["error"]["code"],
            "upstream_error",
            "{model}: {events:?}"
        );
    }
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cui_goes_to_govcloud_and_never_to_the_commercial_backend() {
    let Some(s) = setup().await else { return };
    for i in 0..6 {
        let (status, _, v) =
            s.gw.chat(&s.key, Some("CUI"), "claude", &format!("cui {i}"))
                .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(
            v["choices"][0]["message"]["content"],
            format!("Hello from us-gov-west-1: you said: cui {i}")
        );
    }
    // A CUI marking in the text of an UNCLASSIFIED-session request is refused as spillage or
    // raised to CUI: either way it never reaches the commercial backend.
    let (_, _, _) =
        s.gw.chat(
            &s.key,
            None,
            "claude",
            "CUI\n\n(CUI) The contract terms are controlled.",
        )
        .await;
    assert!(s.commercial.requests_for(COMMERCIAL_MODEL).await.is_empty());
    assert!(s.gov.requests_for(GOV_MODEL).await.len() >= 6);
    // Above CUI, no Bedrock backend is accredited.
    let (status, _, v) = s.gw.chat(&s.key, Some("SECRET"), "claude", "x").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(code(&v), "no_accredited_backend");
    s.gw.stop().await;
}

/// A log sink shared with the test.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn files_containing(dir: &Path, needle: &[u8], out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_containing(&path, needle, out);
        } else if let Ok(bytes) = std::fs::read(&path)
            && (needle.is_empty() || bytes.windows(needle.len()).any(|w| w == needle))
        {
            out.push(path.display().to_string());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_key_never_appears_in_logs_errors_or_the_data_directory() {
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // Each test runs in its own process under nextest: the global default is this test's.
    let _ = tracing::subscriber::set_global_default(subscriber);
    let Some(s) = setup().await else { return };
    let mut answers = Vec::new();
    for model in ["claude", "bad-request", "denied", "busy"] {
        let (_, _, v) = s.gw.chat(&s.key, Some("CUI"), model, "hello").await;
        answers.push(v.to_string());
    }
    let (_, events, _) = stream(
        &s,
        "CUI",
        &json!({"model": "corrupt", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    answers.push(format!("{events:?}"));
    answers.push(format!("{:?}", s.gw.app.router));
    answers.push(format!("{:?}", s.gw.app.config));
    let log = String::from_utf8_lossy(&sink.0.lock().unwrap()).into_owned();
    assert!(log.contains("bedrock"), "the log captured nothing: {log}");
    for secret in [PLANTED_SECRET, PLANTED_TOKEN] {
        assert!(!log.contains(secret), "in the log: {log}");
        for a in &answers {
            assert!(!a.contains(secret), "in an answer or Debug: {a}");
        }
    }
    // Stopped (so the audit log and database are flushed) but not yet removed: then every
    // file the gateway wrote is searched.
    let mut gw = s.gw;
    gw.trigger_stop();
    if let Some(task) = gw.task.take() {
        task.await.unwrap();
    }
    let mut written = Vec::new();
    files_containing(gw.dir.path(), b"", &mut written);
    assert!(written.len() > 2, "{written:?}");
    for secret in [PLANTED_SECRET, PLANTED_TOKEN] {
        let mut found = Vec::new();
        files_containing(gw.dir.path(), secret.as_bytes(), &mut found);
        assert!(found.is_empty(), "{secret} in {found:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_key_is_caught_by_the_mock_s_botocore_check() {
    if !botocore_available() {
        return;
    }
    let mock = Mock::start("us-gov-west-1", GOV_KEY_ID, PLANTED_SECRET, None);
    // Credentials from the environment (no profile named), with the wrong secret.
    let mut vars: HashMap<&str, OsString> = HashMap::new();
    vars.insert("AWS_ACCESS_KEY_ID", GOV_KEY_ID.into());
    vars.insert("AWS_SECRET_ACCESS_KEY", "not-the-secret".into());
    let env = move |name: &str| vars.get(name).cloned();
    let toml = format!(
        "[[backends]]\nname = \"gov\"\nkind = \"bedrock\"\nregion = \"us-gov-west-1\"\nendpoint_url = \"{}\"\nmodels = [\"m\"]\naccreditation = \"CUI\"\n",
        mock.url
    );
    let gw = Gateway::start_with_env(&toml, &env).await;
    let key = gw.user("alice", "t1", "SECRET", "USA").await;
    let (status, _, v) = gw.chat(&key, Some("CUI"), "m", "x").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{v}");
    assert_eq!(code(&v), "upstream_error");
    let stats = mock.stats().await;
    assert_eq!(stats["bad_signatures"], 1, "{stats}");
    assert_eq!(stats["requests"], json!([]));
    gw.stop().await;
}
