//! The schema migrations, embedded in the binary.
//!
//! One SQL dialect serves SQLite and PostgreSQL (TEXT and BIGINT columns only). sqlx records the
//! applied versions in `_sqlx_migrations`; the highest one is the schema version. Migrations are
//! never edited once released (sqlx checks their checksums); a change is a new file.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType};

/// Every migration: version, description, SQL. Versions increase by one.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "identities",
        include_str!("../migrations/0001_identities.sql"),
    ),
    (
        2,
        "key format",
        include_str!("../migrations/0002_key_format.sql"),
    ),
    (3, "audit", include_str!("../migrations/0003_audit.sql")),
];

/// The schema version this build creates and expects: the highest migration version.
pub const SCHEMA_VERSION: i64 = 3;

/// The embedded migrations as a sqlx migration source.
#[derive(Debug)]
pub(crate) struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|&(version, description, sql)| {
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
