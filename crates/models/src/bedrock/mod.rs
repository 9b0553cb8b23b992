//! Amazon Bedrock as a [`Backend`] (`kind = "bedrock"`).
//!
//! - Chat goes through the Converse API (`POST /model/{modelId}/converse`), streamed chat
//!   through ConverseStream (`/model/{modelId}/converse-stream`), whose answer is AWS's binary
//!   event stream ([`eventstream`]) turned into OpenAI-style chunks (`stream.rs`). The typed
//!   request is translated (`converse.rs`); nothing of the client's raw body is forwarded.
//! - Embeddings go through InvokeModel (`/model/{modelId}/invoke`): Titan text embeddings
//!   (`{"inputText"}`, one call per input) and Cohere embed (`{"texts"}`, one call).
//! - Every request is signed with SigV4 ([`sigv4`]) for service `bedrock` with credentials
//!   from the environment or the shared files ([`credentials`]). The model id (or ARN) is one
//!   path segment, percent-encoded (`:` → `%3A`, `/` → `%2F`).
//! - Errors are classified as the router needs: throttling and a model not ready are
//!   re-sendable, everything that may have run is not (`converse::classify`).
//!
//! SECURITY: the secret key never leaves [`credentials::Credentials`]; only signatures derived
//! from it are sent, and no `Debug` impl or error shows it.

mod converse;
pub mod credentials;
pub mod eventstream;
pub mod sigv4;
mod stream;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use enclave_api::{ChatRequest, Embeddings, EmbeddingsRequest, Usage};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, header};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::time::Instant;

use self::credentials::CredentialProvider;
use self::sigv4::{ContentHashHeader, Scope};
use crate::backend::{Backend, BackendError, BackendSpec, BoxFuture, Call, ChatAnswer};
use crate::config::Guardrail;
use crate::openai::{
    BACKEND_IDS, HttpClient, MAX_ANSWER_BYTES, error_chain, host_header, read_bounded, retry_after,
    thread_client,
};
use crate::pool::{self, SendError};

/// The service name SigV4 signs Bedrock runtime requests for.
const SERVICE: &str = "bedrock";

/// The largest error body read.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// An Amazon Bedrock backend.
pub struct BedrockBackend {
    spec: BackendSpec,
    region: String,
    /// Scheme and authority (and any base path), without a trailing `/`.
    endpoint: String,
    plain_http: bool,
    credentials: Arc<CredentialProvider>,
    guardrail: Option<Guardrail>,
    /// This backend's key in the thread-local pools.
    id: u64,
    connect_timeout: Duration,
    fallback_client: HttpClient,
}

impl fmt::Debug for BedrockBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SECURITY: the credentials' own Debug redacts the secret key and token.
        f.debug_struct("BedrockBackend")
            .field("spec", &self.spec)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("credentials", &self.credentials)
            .field("guardrail", &self.guardrail)
            .finish_non_exhaustive()
    }
}

/// What a Bedrock backend is built from, besides what every backend has.
#[derive(Debug)]
pub struct BedrockParams {
    /// The region (also the signing region).
    pub region: String,
    /// The endpoint (`https://bedrock-runtime.us-gov-west-1.amazonaws.com`).
    pub endpoint_url: String,
    /// Where credentials come from.
    pub credentials: Arc<CredentialProvider>,
    /// A guardrail for every request.
    pub guardrail: Option<Guardrail>,
}

impl BedrockBackend {
    /// A backend for `params.region` at `params.endpoint_url`.
    pub fn new(
        spec: BackendSpec,
        params: BedrockParams,
        connect_timeout: Duration,
        fallback_client: HttpClient,
    ) -> BedrockBackend {
        let endpoint = params.endpoint_url.trim_end_matches('/').to_owned();
        let plain_http = endpoint
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
        BedrockBackend {
            spec,
            region: params.region,
            endpoint,
            plain_http,
            credentials: params.credentials,
            guardrail: params.guardrail,
            id: BACKEND_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            connect_timeout,
            fallback_client,
        }
    }

    /// POSTs a signed JSON body to `/model/{model}/{action}` and returns the response head
    /// (a success), before `deadline`.
    async fn post(
        &self,
        model: &str,
        action: &str,
        accept: &'static str,
        body: Bytes,
        deadline: Instant,
    ) -> Result<Response<Incoming>, BackendError> {
        let not_sent = |reason: String| BackendError::NotSent {
            reason,
            overloaded: false,
        };
        let path = format!("/model/{}/{action}", sigv4::encode_segment(model));
        let uri = Uri::try_from(format!("{}{path}", self.endpoint))
            .map_err(|e| not_sent(format!("invalid Bedrock URL: {e}")))?;
        let host = host_header(&uri).ok_or_else(|| not_sent("no host in the endpoint".into()))?;
        // The path as sent (the endpoint may carry a base path, as a proxy might need).
        let sent_path = uri.path().to_owned();
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, host);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
        let credentials = self.credentials.current();
        sigv4::sign(
            &Method::POST,
            &sent_path,
            uri.query().unwrap_or_default(),
            &mut headers,
            &body,
            &credentials,
            Scope {
                region: &self.region,
                service: SERVICE,
                time: SystemTime::now(),
                // As botocore does for bedrock-runtime: the payload's hash is signed in the
                // canonical request but not sent as a header (only S3 requires that).
                content_hash: ContentHashHeader::Omit,
            },
        );
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        let attempt = async {
            if self.plain_http {
                pool::send((self.id, 0), req, self.connect_timeout).await
            } else {
                thread_client(self.id, self.connect_timeout, &self.fallback_client)
                    .request(req)
                    .await
                    .map_err(SendError::from)
            }
        };
        let resp = match tokio::time::timeout_at(deadline, attempt).await {
            Err(_) => return Err(BackendError::Deadline),
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) if e.is_connect() => {
                return Err(not_sent(format!("cannot connect: {}", error_chain(&e))));
            }
            // SECURITY: the request may have reached Bedrock; it is never sent again.
            Ok(Err(e)) => {
                return Err(BackendError::Failed {
                    reason: error_chain(&e),
                });
            }
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(refusal(resp, deadline).await)
    }

    async fn chat_inner(
        &self,
        req: &ChatRequest,
        model: &str,
        call: &Call,
    ) -> Result<ChatAnswer, BackendError> {
        let body = converse::request_body(req, self.guardrail.as_ref())?;
        let body = Bytes::from(serde_json::to_vec(&body).map_err(|e| BackendError::Failed {
            reason: e.to_string(),
        })?);
        let id = format!("chatcmpl-{}", call.request_id);
        if req.stream {
            let resp = self
                .post(
                    model,
                    "converse-stream",
                    "application/vnd.amazon.eventstream",
                    body,
                    call.deadline,
                )
                .await?;
            let translator =
                stream::Translator::new(id, req.model.clone(), now(), req.include_usage);
            return Ok(ChatAnswer::Stream(Box::pin(stream::ConverseStream::new(
                resp.into_body(),
                translator,
            ))));
        }
        let resp = self
            .post(model, "converse", "application/json", body, call.deadline)
            .await?;
        let body = read_bounded(resp.into_body(), MAX_ANSWER_BYTES, call.deadline).await?;
        Ok(ChatAnswer::Whole(converse::completion(
            &body,
            id,
            &req.model,
            now(),
        )?))
    }

    async fn embed_inner(
        &self,
        req: &EmbeddingsRequest,
        model: &str,
        call: &Call,
    ) -> Result<Embeddings, BackendError> {
        if req.token_input {
            return Err(BackendError::invalid(
                "input",
                "Bedrock embedding models take text: send strings, not token arrays.",
            ));
        }
        let mut vectors = Vec::with_capacity(req.input.len());
        let mut tokens = 0u64;
        if model.starts_with("cohere.") || model.contains("cohere.embed") {
            let body = json!({"texts": req.input, "input_type": "search_document"});
            let answer = self.invoke(model, &body, call.deadline).await?;
            let Some(rows) = answer.get("embeddings").and_then(Value::as_array) else {
                return Err(unreadable("no `embeddings` in the Cohere answer"));
            };
            for row in rows {
                vectors.push(floats(row)?);
            }
        } else {
            // Titan text embeddings: one text per call.
            for text in &req.input {
                let mut body = json!({"inputText": text});
                if let Some(d) = req.dimensions {
                    body["dimensions"] = json!(d);
                }
                let answer = self.invoke(model, &body, call.deadline).await?;
                let Some(row) = answer.get("embedding") else {
                    return Err(unreadable("no `embedding` in the Titan answer"));
                };
                vectors.push(floats(row)?);
                tokens += answer
                    .get("inputTextTokenCount")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
            }
        }
        if vectors.len() != req.input.len() {
            return Err(unreadable(
                "the number of embeddings differs from the inputs",
            ));
        }
        Ok(Embeddings {
            model: req.model.clone(),
            vectors,
            usage: Some(Usage {
                prompt_tokens: tokens,
                completion_tokens: 0,
                total_tokens: tokens,
            }),
            base64: req.base64,
            raw: None,
        })
    }

    async fn invoke(
        &self,
        model: &str,
        body: &Value,
        deadline: Instant,
    ) -> Result<Value, BackendError> {
        let bytes = Bytes::from(serde_json::to_vec(body).map_err(|e| BackendError::Failed {
            reason: e.to_string(),
        })?);
        let resp = self
            .post(model, "invoke", "application/json", bytes, deadline)
            .await?;
        let answer = read_bounded(resp.into_body(), MAX_ANSWER_BYTES, deadline).await?;
        serde_json::from_slice(&answer).map_err(|e| unreadable(&e.to_string()))
    }
}

impl Backend for BedrockBackend {
    fn spec(&self) -> &BackendSpec {
        &self.spec
    }

    fn kind(&self) -> &'static str {
        "bedrock"
    }

    fn describe(&self) -> String {
        format!("bedrock {} at {}", self.region, self.endpoint)
    }

    fn chat<'a>(
        &'a self,
        req: &'a ChatRequest,
        model: &'a str,
        call: &'a Call,
    ) -> BoxFuture<'a, Result<ChatAnswer, BackendError>> {
        Box::pin(self.chat_inner(req, model, call))
    }

    fn embed<'a>(
        &'a self,
        req: &'a EmbeddingsRequest,
        model: &'a str,
        call: &'a Call,
    ) -> BoxFuture<'a, Result<Embeddings, BackendError>> {
        Box::pin(self.embed_inner(req, model, call))
    }
}

/// What a non-2xx answer means for the request.
async fn refusal(resp: Response<Incoming>, deadline: Instant) -> BackendError {
    let status = resp.status().as_u16();
    let header = resp
        .headers()
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let wait = retry_after(&resp);
    let body = read_bounded(resp.into_body(), MAX_ERROR_BYTES, deadline)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let name = converse::exception_name(header.as_deref(), &body);
    let message = converse::error_message(&body);
    match converse::classify(status, &name, &message) {
        BackendError::Throttled { .. } => BackendError::Throttled { retry_after: wait },
        other => other,
    }
}

fn floats(row: &Value) -> Result<Vec<f32>, BackendError> {
    let Some(items) = row.as_array() else {
        return Err(unreadable("an embedding is not an array"));
    };
    items
        .iter()
        .map(|x| {
            x.as_f64()
                .map(|f| f as f32)
                .ok_or_else(|| unreadable("an embedding holds a value that is not a number"))
        })
        .collect()
}

fn unreadable(what: &str) -> BackendError {
    BackendError::Failed {
        reason: format!("unreadable Bedrock answer: {what}"),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex;

    use enclave_api::{ContentPolicy, FinishReason};
    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::eventstream::{Header, HeaderValue as EsValue, Message};
    use super::*;
    use crate::ChunkStream;
    use crate::openai::http_client;

    /// What the test server received: path, headers, body.
    type Seen = Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>;

    fn frame(kind: &str, payload: &str) -> Vec<u8> {
        let s = |v: &str| EsValue::String(v.to_owned());
        Message {
            headers: vec![
                Header {
                    name: ":message-type".into(),
                    value: s("event"),
                },
                Header {
                    name: ":event-type".into(),
                    value: s(kind),
                },
            ],
            payload: Bytes::from(payload.to_owned()),
        }
        .encode()
    }

    fn stream_bytes(corrupt: bool) -> Vec<u8> {
        let mut out = frame("messageStart", r#"{"role":"assistant"}"#);
        let mut delta = frame(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#,
        );
        if corrupt {
            let last = delta.len() - 1;
            delta[last] ^= 0xff;
        }
        out.extend(delta);
        out.extend(frame("messageStop", r#"{"stopReason":"max_tokens"}"#));
        out
    }

    /// A Bedrock stand-in on loopback: the model id picks the answer.
    async fn server() -> (String, Seen) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Seen = Arc::default();
        let record = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let record = Arc::clone(&record);
                        async move {
                            let path = req.uri().path().to_owned();
                            let headers = req.headers().clone();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            record.lock().unwrap().push((path.clone(), headers, body));
                            let (status, error, body): (u16, Option<&str>, Vec<u8>) = if path
                                .contains("throttle")
                            {
                                (429, Some("ThrottlingException"), b"{}".to_vec())
                            } else if path.contains("denied") {
                                (403, Some("AccessDeniedException"), b"{}".to_vec())
                            } else if path.contains("invalid") {
                                (
                                    400,
                                    Some("ValidationException"),
                                    br#"{"message":"bad temperature"}"#.to_vec(),
                                )
                            } else if path.ends_with("/converse-stream") {
                                (200, None, stream_bytes(path.contains("corrupt")))
                            } else {
                                (200, None, br#"{"output":{"message":{"role":"assistant","content":[{"text":"Hello"}]}},"stopReason":"end_turn","usage":{"inputTokens":2,"outputTokens":1,"totalTokens":3}}"#.to_vec())
                            };
                            let mut resp = Response::new(Full::new(Bytes::from(body)));
                            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            if let Some(e) = error {
                                resp.headers_mut().insert(
                                    "x-amzn-errortype",
                                    HeaderValue::from_str(&format!(
                                        "{e}:http://internal.amazon.com/"
                                    ))
                                    .unwrap(),
                                );
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (url, seen)
    }

    fn backend(url: &str) -> BedrockBackend {
        BedrockBackend::new(
            BackendSpec {
                name: "gov".into(),
                models: Vec::new(),
                accreditation: enclave_label::Accreditation::new(
                    enclave_label::Label::unclassified(),
                    [],
                ),
                priority: 0,
                weight: 1,
            },
            BedrockParams {
                region: "us-gov-west-1".into(),
                endpoint_url: url.to_owned(),
                credentials: Arc::new(CredentialProvider::fixed(credentials::Credentials::new(
                    "AKIDTEST",
                    "planted-secret",
                    Some("planted-token".into()),
                ))),
                guardrail: None,
            },
            Duration::from_secs(2),
            http_client(Duration::from_secs(2)).unwrap(),
        )
    }

    fn chat(stream: bool) -> ChatRequest {
        let body = format!(
            r#"{{"model":"claude","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
        );
        ChatRequest::parse(Bytes::from(body), &ContentPolicy::default()).unwrap()
    }

    fn call() -> Call {
        Call {
            request_id: "r1".into(),
            deadline: Instant::now() + Duration::from_secs(5),
        }
    }

    async fn collect(mut s: ChunkStream) -> Vec<Result<enclave_api::Chunk, BackendError>> {
        let mut out = Vec::new();
        while let Some(item) =
            std::future::poll_fn(|cx| futures_core::Stream::poll_next(s.as_mut(), cx)).await
        {
            out.push(item);
        }
        out
    }

    #[tokio::test]
    async fn a_converse_call_is_signed_and_its_model_id_encoded() {
        let (url, seen) = server().await;
        let b = backend(&url);
        let ChatAnswer::Whole(c) = b
            .chat(&chat(false), "us.anthropic.claude-v2:1", &call())
            .await
            .unwrap()
        else {
            panic!("expected a whole answer")
        };
        assert_eq!(c.choices[0].content.as_deref(), Some("Hello"));
        assert_eq!(c.model, "claude");
        assert_eq!(c.id, "chatcmpl-r1");
        let seen = seen.lock().unwrap();
        let (path, headers, body) = &seen[0];
        assert_eq!(path, "/model/us.anthropic.claude-v2%3A1/converse");
        let auth = headers["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
                && auth.contains("/us-gov-west-1/bedrock/aws4_request, SignedHeaders=accept;content-type;host;x-amz-date;x-amz-security-token, Signature="),
            "{auth}"
        );
        assert_eq!(headers["x-amz-security-token"], "planted-token");
        assert!(!headers.contains_key("x-amz-content-sha256"));
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(
            v,
            json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]})
        );
        assert!(!format!("{b:?}").contains("planted-secret"));
    }

    #[tokio::test]
    async fn a_converse_stream_becomes_chunks_and_a_bad_crc_ends_it() {
        let (url, _) = server().await;
        let b = backend(&url);
        let ChatAnswer::Stream(s) = b.chat(&chat(true), "m", &call()).await.unwrap() else {
            panic!("expected a stream")
        };
        let chunks: Vec<_> = collect(s).await.into_iter().map(Result::unwrap).collect();
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1].deltas[0].content.as_deref(), Some("Hi"));
        assert_eq!(
            chunks[2].deltas[0].finish_reason,
            Some(FinishReason::Length)
        );

        let ChatAnswer::Stream(s) = b.chat(&chat(true), "corrupt", &call()).await.unwrap() else {
            panic!("expected a stream")
        };
        let items = collect(s).await;
        assert_eq!(items.len(), 2, "{items:?}");
        assert!(items[0].is_ok());
        assert!(
            matches!(&items[1], Err(BackendError::Failed { reason }) if reason.contains("checksum")),
            "{items:?}"
        );
    }

    #[tokio::test]
    async fn error_answers_are_classified() {
        let (url, _) = server().await;
        let b = backend(&url);
        for (model, want) in [
            ("throttle", "throttled"),
            ("denied", "credentials"),
            ("invalid", "rejected"),
        ] {
            let e = b.chat(&chat(false), model, &call()).await.unwrap_err();
            let got = match &e {
                BackendError::Throttled { .. } => "throttled",
                BackendError::Credentials { status: 403 } => "credentials",
                BackendError::Rejected { status: 400, body } => {
                    assert!(body.message.contains("bad temperature"), "{body:?}");
                    "rejected"
                }
                _ => "other",
            };
            assert_eq!(got, want, "{model}: {e:?}");
        }
        // Nothing listens here: not sent, so it may be tried elsewhere.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = backend(&format!("http://127.0.0.1:{port}"))
            .chat(&chat(false), "m", &call())
            .await
            .unwrap_err();
        assert!(e.may_resend(), "{e:?}");
    }
}
