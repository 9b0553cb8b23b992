//! Model backends for Enclave and the router that picks one.
//!
//! A [`Router`] holds the configured [`Upstream`]s (OpenAI-compatible servers) and sends a
//! request only to backends accredited for its label: [`Router::candidates`] filters by model
//! and accreditation (through [`enclave_policy::eligible`]), and [`Router::send`] tries those
//! candidates in order — retrying connect errors, 5xx and 429 with backoff, then falling back to
//! the next candidate — within one deadline. Because the candidate list is built from eligible
//! backends only, no retry or fallback can ever reach a backend accredited lower.
//!
//! This crate is I/O (hyper, rustls); it knows nothing of HTTP routing on the server side,
//! authentication or storage.

pub mod local;
mod pool;
mod router;
mod upstream;

pub use router::{Candidate, ModelInfo, RetryPolicy, RouteError, Router, Sent, UpstreamError};
pub use upstream::{HttpClient, Upstream, UpstreamSpec, http_client};
