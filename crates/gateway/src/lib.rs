//! The Enclave HTTP gateway: the OpenAI-compatible API, authentication, the label checks of
//! the request path, routing to accredited backends, rate limits and metrics.
//!
//! The request path is a pipeline of named stages (see [`pipeline`] and [`stage`]):
//! authenticate → label → authorize → screen input → recall → route → generate → screen
//! output → remember → audit. Every exit leaves through one place that records the outcome and
//! maps the error to its OpenAI-shaped body ([`error::ApiError`]); nothing is answered before its
//! audit entry is durable ([`stage::audit`]), and [`audit_api`] serves the log's receipts.
//!
//! ```no_run
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = enclave_gateway::config::Config::load(None)?;
//! enclave_gateway::server::serve(config, 0)?; // one thread per core, until SIGTERM
//! # Ok(()) }
//! ```

pub mod app;
pub mod audit_api;
pub mod body;
pub mod config;
pub mod conn;
mod ctx;
pub mod error;
pub mod extract;
pub mod identity;
pub mod limits;
pub mod memory_api;
pub mod metrics;
pub mod pipeline;
mod respond;
mod responses;
pub mod route;
pub mod server;
pub mod stage;
