//! The store's public API, run against SQLite always and PostgreSQL when
//! `ENCLAVE_TEST_POSTGRES_URL` is set (see `backends.rs`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod audit;
mod backends;
mod crypt;
mod install;
mod key_formats;
mod keys;
mod memories;
mod principals;
mod state;
