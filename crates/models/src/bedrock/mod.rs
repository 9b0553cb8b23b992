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
