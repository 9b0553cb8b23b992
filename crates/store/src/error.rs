//! What can go wrong in the store and the install secrets.

use std::io;
use std::path::PathBuf;

/// A failed store or install operation.
///
/// Variants a caller handles differently are separate: [`StoreError::Conflict`],
/// [`StoreError::Invalid`] and [`StoreError::NotFound`] are the caller's input; the rest are
/// broken machinery (an unreachable database, an unreadable or corrupt file).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The audit tables are inconsistent (a missing entry row) or a checkpoint could not be
    /// made.
    #[error("audit log: {0}")]
    AuditLog(String),

    /// Something with that name already exists (a principal).
    #[error("{0}")]
    Conflict(String),

    /// A key file exists but does not hold a valid key; it is never replaced silently.
    #[error(
        "corrupt key file `{}`: {problem}: restore it from a backup (replacing it makes existing \
         API keys or audit signatures unverifiable)",
        path.display()
    )]
    CorruptKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },

    /// Encryption at rest failed: a stored value or data key did not authenticate (altered,
    /// moved between rows, or written under another master key).
    #[error("{0}")]
    Crypto(String),

    /// The database failed or could not be reached.
    #[error("database error while {action}: {source}")]
    Database {
        /// What the store was doing (`adding a principal`).
        action: &'static str,
        /// The driver's error.
        source: sqlx::Error,
    },

    /// Invalid input: a malformed name, an unknown role, nationality or marking, a bad URL.
    #[error("{0}")]
    Invalid(String),

    /// Reading or writing a file or directory failed.
    #[error("{action} `{}`: {source}", path.display())]
    Io {
        /// What was being done (`creating the data directory`).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },

    /// The schema migrations failed (or the database was migrated by a newer version).
    #[error(
        "migrating the database schema: {0}: check that this binary is not older than the database"
    )]
    Migration(#[source] sqlx::migrate::MigrateError),

    /// The thing named does not exist (a principal).
    #[error("{0}")]
    NotFound(String),

    /// The system random number generator failed.
    #[error("the system random number generator failed while {0}: check the operating system")]
    Random(&'static str),
}

impl StoreError {
    /// Wraps a database error with what the store was doing.
    pub(crate) fn database(action: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Database { action, source }
    }

    /// Wraps an I/O error with what was being done and where.
    pub(crate) fn io(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.to_path_buf();
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    }
}
