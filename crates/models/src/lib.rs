//! Model backends for Enclave and the router that picks one.
//!
//! Every backend kind implements one trait, [`Backend`], over a parsed, normalized request
//! (`enclave_api::ChatRequest`, `enclave_api::EmbeddingsRequest`) and answers with typed values
//! (a whole completion, a stream of typed chunks, or embeddings):
//!
//! - [`OpenAiBackend`] (`kind = "openai"`): OpenAI-compatible servers over HTTP(S);
//! - [`LocalBackend`] (`kind = "local"`): the embedded models on their worker threads
//!   ([`local::LocalEngine`]);
//! - [`BedrockBackend`] (`kind = "bedrock"`): Amazon Bedrock's Converse, ConverseStream and
//!   InvokeModel APIs, signed with SigV4 ([`bedrock`]).
//!
//! A [`Router`] holds them all and treats them alike: [`Router::candidates`] keeps only the
//! backends that serve the model and whose accreditation permits the request's label (through
//! [`enclave_policy::eligible`]); [`Router::send`] tries those candidates in order, retrying
//! and falling back only for what certainly did not run (no connection, a full queue, a 429).
//! Because the candidate list is built from eligible backends only, no retry or fallback can
//! ever reach a backend accredited lower.
//!
//! The crate owns the `[[backends]]` section of the configuration file ([`config`]): each
//! entry's kind, models and aliases, accreditation and operators, and the rule that refuses
//! `http://` to a host that is not loopback unless the entry sets `allow_cleartext`.
//!
//! This crate is I/O (hyper, rustls, worker threads); it knows nothing of the server side of
//! HTTP, authentication or storage.

mod backend;
pub mod bedrock;
pub mod config;
pub mod local;
mod local_backend;
mod openai;
mod pool;
mod router;

pub use backend::{Backend, BackendError, BackendSpec, BoxFuture, Call, ChatAnswer, ChunkStream};
pub use bedrock::{BedrockBackend, BedrockParams};
pub use config::{ApiKey, BackendConfig, BackendKind, BedrockConfig, Guardrail, ModelAlias};
pub use local_backend::LocalBackend;
pub use openai::{HttpClient, MAX_ANSWER_BYTES, OpenAiBackend, http_client};
pub use router::{Candidate, ModelInfo, RetryPolicy, RouteError, Router, SendFailure, Sent};
