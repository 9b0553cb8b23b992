//! The schema migrations, embedded in the binary.
//!
//! One SQL dialect serves SQLite and PostgreSQL (TEXT and BIGINT columns only) where it can; a
//! change that the two databases make differently (SQLite cannot alter a constraint) has one file
//! per database under the same version. sqlx records the applied versions in `_sqlx_migrations`;
//! the highest one is the schema version. Migrations are never edited once released (sqlx checks
//! their checksums); a change is a new file.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType};

/// A migration's SQL: one script for both databases, or one each.
#[derive(Clone, Copy, Debug)]
enum Sql {
    Both(&'static str),
    Each {
        sqlite: &'static str,
        postgres: &'static str,
    },
}

/// Every migration: version, description, SQL. Versions increase by one.
const MIGRATIONS: &[(i64, &str, Sql)] = &[
    (
        1,
        "identities",
        Sql::Both(include_str!("../migrations/0001_identities.sql")),
    ),
    (
        2,
        "key format",
        Sql::Both(include_str!("../migrations/0002_key_format.sql")),
    ),
    (
        3,
        "audit",
        Sql::Both(include_str!("../migrations/0003_audit.sql")),
    ),
    (
        4,
        "metrics role",
        Sql::Each {
            sqlite: include_str!("../migrations/0004_metrics_role_sqlite.sql"),
            postgres: include_str!("../migrations/0004_metrics_role_postgres.sql"),
        },
    ),
    (
        5,
        "tenant keys and stored state",
        Sql::Each {
            sqlite: include_str!("../migrations/0005_state_sqlite.sql"),
            postgres: include_str!("../migrations/0005_state_postgres.sql"),
        },
    ),
    (
        6,
        "memories",
        Sql::Each {
            sqlite: include_str!("../migrations/0006_memories_sqlite.sql"),
            postgres: include_str!("../migrations/0006_memories_postgres.sql"),
        },
    ),
    (
        7,
        "memory superseded by",
        Sql::Both(include_str!("../migrations/0007_memory_superseded_by.sql")),
    ),
    (
        8,
        "memory change feed",
        Sql::Each {
            sqlite: include_str!("../migrations/0008_memory_changes_sqlite.sql"),
            postgres: include_str!("../migrations/0008_memory_changes_postgres.sql"),
        },
    ),
    (
        9,
        "audit keys as rowid",
        Sql::Each {
            sqlite: include_str!("../migrations/0009_audit_rowid_sqlite.sql"),
            postgres: include_str!("../migrations/0009_audit_rowid_postgres.sql"),
        },
    ),
];

/// The schema version this build creates and expects: the highest migration version.
pub const SCHEMA_VERSION: i64 = 9;

/// The embedded migrations as a sqlx migration source, in the dialect of one database.
#[derive(Debug)]
pub(crate) struct Embedded {
    /// Whether the database is PostgreSQL (else SQLite).
    pub(crate) postgres: bool,
}

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        let postgres = self.postgres;
        Box::pin(async move {
            Ok(MIGRATIONS
                .iter()
                .map(|&(version, description, sql)| {
                    let sql = match sql {
                        Sql::Both(sql) => sql,
                        Sql::Each { postgres: pg, .. } if postgres => pg,
                        Sql::Each { sqlite, .. } => sqlite,
                    };
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_from_one_to_the_schema_version() {
        for (i, (version, _, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i64::try_from(i).unwrap() + 1);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.0), Some(SCHEMA_VERSION));
    }
}
