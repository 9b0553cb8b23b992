//! The Enclave HTTP gateway: the OpenAI-compatible API, authentication, the label checks of
//! the request path, routing to accredited backends, rate limits and metrics.
//!
//! The request path, in order (see ARCHITECTURE.md): route → admission (bounded concurrency,
//! load shedding) → authenticate (API key, OIDC JWT or client certificate) → rate limit →
//! session label from `X-Enclave-Classification` within the clearance → body (size limit, JSON)
//! → content label from the markings in every string, spillage check → accredited backends
//! only → retries and fallback → the answer streamed back with its label.
//!
//! ```no_run
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = enclave_gateway::config::Config::load(None)?;
//! enclave_gateway::server::serve(config, 0)?; // one thread per core, until SIGTERM
//! # Ok(()) }
//! ```

pub mod api;
pub mod app;
pub mod body;
pub mod config;
pub mod error;
pub mod identity;
pub mod limits;
pub mod local_api;
pub mod metrics;
pub mod request;
pub mod server;
