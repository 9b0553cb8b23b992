//! The one interface every model backend implements.
//!
//! A [`Backend`] takes a parsed, normalized request ([`ChatRequest`], [`EmbeddingsRequest`])
//! and the name the backend knows the model by, and answers with typed values: a whole
//! [`Completion`], a [`ChunkStream`] of typed chunks, or [`Embeddings`]. The router treats every
//! kind alike — an OpenAI-compatible server, the embedded models, Bedrock — for eligibility,
//! retries and fallback; what a backend kind needs of its own (HTTP, a worker thread, request
//! signing) stays inside its implementation.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use enclave_api::{ChatRequest, Chunk, Completion, Embeddings, EmbeddingsRequest, ErrorBody};
use enclave_label::Accreditation;
use futures_core::Stream;
use tokio::time::Instant;

/// A boxed future, as trait objects return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A streamed answer: typed chunks, then the end (`None`) — or an error, after which nothing
/// follows. A stream that ends without its backend's end marker ends with an error.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, BackendError>> + Send>>;

/// A chat answer.
pub enum ChatAnswer {
    /// The whole answer at once.
    Whole(Completion),
    /// The answer as it is generated.
    Stream(ChunkStream),
}

impl fmt::Debug for ChatAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatAnswer::Whole(c) => f.debug_tuple("Whole").field(c).finish(),
            ChatAnswer::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

/// What a backend is told about the request besides its body.
#[derive(Clone, Debug)]
pub struct Call {
    /// The request id (for answer ids and logs).
    pub request_id: String,
    /// When the backend must have started answering.
    pub deadline: Instant,
}

/// What the configuration says of any backend.
#[derive(Clone, Debug)]
pub struct BackendSpec {
    /// Unique name (in logs, metrics and errors).
    pub name: String,
    /// `(name clients use, name the backend knows)` pairs.
    pub models: Vec<(String, String)>,
    /// The highest label it may process and who operates it.
    pub accreditation: Accreditation,
    /// Lower is tried first.
    pub priority: u32,
    /// Share among backends of equal priority.
    pub weight: u32,
}

impl BackendSpec {
    /// The backend's name for a client-facing model name, if it serves that model.
    pub fn upstream_model(&self, model: &str) -> Option<&str> {
        self.models
            .iter()
            .find(|(name, _)| name == model)
            .map(|(_, up)| up.as_str())
    }
}

/// A model backend.
pub trait Backend: Send + Sync + fmt::Debug {
    /// What the configuration says of it.
    fn spec(&self) -> &BackendSpec;

    /// Its kind: `openai`, `local` or `bedrock`.
    fn kind(&self) -> &'static str;

    /// Where it is, for the start-up message (`openai at https://…`, `local, in-process`).
    fn describe(&self) -> String;

    /// Answers a chat request, the model named as the backend knows it.
    fn chat<'a>(
        &'a self,
        req: &'a ChatRequest,
        model: &'a str,
        call: &'a Call,
    ) -> BoxFuture<'a, Result<ChatAnswer, BackendError>>;

    /// Embeds the request's texts.
    fn embed<'a>(
        &'a self,
        req: &'a EmbeddingsRequest,
        model: &'a str,
        call: &'a Call,
    ) -> BoxFuture<'a, Result<Embeddings, BackendError>>;
}

/// Why a backend did not answer. The variants say what may be done next: only what certainly
/// did not run ([`NotSent`](BackendError::NotSent)) or was refused before running
/// ([`Throttled`](BackendError::Throttled)) is ever sent again.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The request never reached the backend (no connection, or its queue was full): it may
    /// be tried again, here or on another eligible backend.
    #[error("not sent: {reason}")]
    NotSent {
        /// What happened.
        reason: String,
        /// The backend was saturated (its queue full) rather than unreachable.
        overloaded: bool,
    },
    /// The backend asked to slow down (429) without running the request.
    #[error("throttled by the backend")]
    Throttled {
        /// How long it asked to wait.
        retry_after: Option<Duration>,
    },
    /// The deadline passed before the backend answered.
    #[error("no answer before the deadline")]
    Deadline,
    /// The request reached the backend and failed (5xx, a lost connection, an unreadable or
    /// truncated answer). It may have run, so it is never sent again.
    #[error("failed: {reason}")]
    Failed {
        /// What happened (for the operator's log; never shown to callers).
        reason: String,
    },
    /// The backend refused Enclave's own credentials (401 or 403).
    #[error("the backend refused Enclave's credentials ({status})")]
    Credentials {
        /// The status it answered.
        status: u16,
    },
    /// The backend refused the request itself (another 4xx): the caller sees its error.
    #[error("refused by the backend ({status})")]
    Rejected {
        /// The status it answered.
        status: u16,
        /// Its error object.
        body: ErrorBody,
    },
    /// The request asks for something this backend cannot do (a parameter out of its range,
    /// a prompt over its context): refused with this code before anything ran.
    #[error("{message}")]
    Invalid {
        /// The stable API error code (`invalid_request`, `context_length_exceeded`).
        code: &'static str,
        /// What is wrong and what to do.
        message: String,
        /// The request field at fault.
        param: Option<String>,
    },
}

impl BackendError {
    /// Whether the request may be sent again (to this backend after a pause, or to the next
    /// eligible one): only when it certainly did not run.
    pub fn may_resend(&self) -> bool {
        matches!(
            self,
            BackendError::NotSent { .. } | BackendError::Throttled { .. }
        )
    }

    /// An invalid-request refusal naming `param`.
    pub fn invalid(param: &str, message: impl Into<String>) -> BackendError {
        BackendError::Invalid {
            code: "invalid_request",
            message: message.into(),
            param: Some(param.to_owned()),
        }
    }
}
