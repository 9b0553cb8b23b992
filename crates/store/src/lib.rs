//! Persistence for Enclave: principals, API keys and the audit log on SQLite (the default) or
//! PostgreSQL (several gateway replicas sharing one database), and the install's secrets.
//!
//! This crate is the I/O edge for identities. It checks what it stores (names, roles,
//! nationalities, clearance markings) but makes no access decisions: the gateway and
//! `enclave-policy` do that with the records it returns.
//!
//! - [`install::prepare`] creates the data directory, the master key and the audit signing key
//!   once, and reads them afterwards; it never overwrites a key file.
//! - [`Store::open`] connects, creates a missing SQLite file and runs the embedded migrations.
//! - The audit log ([`Store::append_audit`], the group-commit writer [`AuditLog`], checkpoints,
//!   [`AuditReader`] for verification): entries get gap-free indices even when several
//!   replicas append at once; see the `audit` module's notes on sequencing.
//! - API keys look like `enk_<16 hex id>_<64 hex secret>`; the secret of keys made since
//!   schema version 2 ends in a check tag, so [`Store::key_shape`] refuses a made-up key
//!   without the database. Only the id, the format and an HMAC-SHA256 of the key, under a key
//!   derived from the master key, are stored; keys are compared in constant time and never
//!   logged.
//!
//! ```no_run
//! # async fn demo() -> Result<(), enclave_store::StoreError> {
//! use enclave_store::{NewPrincipal, Store, install};
//!
//! let install = install::prepare("./enclave-data".as_ref())?;
//! let store = Store::open("sqlite://./enclave-data/enclave.db", install.master_key()).await?;
//! store
//!     .add_principal(&NewPrincipal {
//!         name: "alice".into(),
//!         tenant: "agency-a".into(),
//!         clearance: "SECRET//NOFORN".into(),
//!         nationality: "USA".into(),
//!         role: "user".into(),
//!     })
//!     .await?;
//! let (_record, key) = store.create_key("alice").await?;
//! let (_, principal) = store.authenticate_key(&key).await?.expect("a fresh key is valid");
//! assert_eq!(principal.clearance, "SECRET//NOFORN");
//! # Ok(())
//! # }
//! ```
//!
//! The crate owns the `[storage]` section of the configuration file ([`config`]); a database
//! URL with a password is a [`DatabaseUrl`], whose `Debug` hides it.
//!
//! It is deliberately not a general query layer: each operation the gateway needs is one method
//! with SQL written once for both backends.

mod audit;
mod audit_direct;
mod audit_log;
pub mod config;
pub mod crypt;
mod error;
pub mod install;
mod key;
mod memory;
mod migrations;
mod principal;
pub mod state;
mod store;

pub use audit::{
    AppendBatch, Appended, AuditReader, AuditRow, LeafTree, NewAuditEntry, READ_PAGE,
    StoredCheckpoint, now_timestamp,
};
pub use audit_direct::SqliteAppender;
pub use audit_log::{
    AppendError, AuditLog, AuditLogConfig, AuditStats, Expected, MAX_BATCH, Receipt,
};
pub use config::{DatabaseUrl, StorageConfig, redact_url};
pub use crypt::{ShredReport, TenantCipher};
pub use error::StoreError;
pub use key::{KeyFormat, KeyHasher, KeyLookup, KeyRecord, KeyShape};
pub use memory::{
    MEMORY_CHANGE_PAGE, MEMORY_PAGE, MemoryChange, MemoryChangeKind, MemoryPage, StoredMemory,
};
pub use migrations::SCHEMA_VERSION;
pub use principal::{NewPrincipal, PrincipalRecord};
pub use store::Store;
