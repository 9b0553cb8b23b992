//! One helper that runs a test once per backend: SQLite in a temporary directory always, and
//! PostgreSQL when `ENCLAVE_TEST_POSTGRES_URL` is set, each run in a fresh schema of its own
//! (through `search_path`) that is dropped afterwards, so tests neither see each other's rows nor
//! those of earlier runs.

use std::borrow::Cow;
use std::future::Future;

use enclave_store::Store;
use enclave_store::install::MasterKey;
use ring::rand::{SecureRandom, SystemRandom};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Connection, PgConnection};
use tempfile::TempDir;

/// The variable naming the PostgreSQL server to test against.
const POSTGRES_ENV: &str = "ENCLAVE_TEST_POSTGRES_URL";

/// One database to run a test against.
#[derive(Clone, Debug)]
pub(crate) struct Db {
    /// `sqlite` or `postgres`.
    pub(crate) backend: &'static str,
    /// The storage URL.
    pub(crate) url: String,
}

impl Db {
    /// Opens the store with the test master key.
    pub(crate) async fn open(&self) -> Store {
        self.open_with(master(1)).await
    }

    /// Opens the store with another master key.
    pub(crate) async fn open_with(&self, master: MasterKey) -> Store {
        let store = Store::open(&self.url, &master)
            .await
            .unwrap_or_else(|e| panic!("opening the {} store: {e}", self.backend));
        assert_eq!(store.backend_name(), self.backend);
        store
    }
}

/// The first migrations of the schema, as an older release ran them: version, description, SQL.
pub(crate) const V1: (i64, &str, &str) = (
    1,
    "identities",
    include_str!("../../migrations/0001_identities.sql"),
);
pub(crate) const V2: (i64, &str, &str) = (
    2,
    "key format",
    include_str!("../../migrations/0002_key_format.sql"),
);
pub(crate) const V3: (i64, &str, &str) =
    (3, "audit", include_str!("../../migrations/0003_audit.sql"));

/// Connects to `db` and runs only `migrations` — the schema an older release left — so that a
/// test can write rows as that release did before [`Db::open`] upgrades them.
pub(crate) async fn old_schema(
    db: &Db,
    migrations: &[(i64, &'static str, &'static str)],
) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let url = if db.backend == "sqlite" {
        format!("{}?mode=rwc", db.url)
    } else {
        db.url.clone()
    };
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let old = Migrator {
        migrations: Cow::Owned(
            migrations
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
                .collect(),
        ),
        ..Migrator::DEFAULT
    };
    old.run(&pool).await.unwrap();
    pool
}

/// A master key filled with `byte`.
pub(crate) fn master(byte: u8) -> MasterKey {
    MasterKey::from_bytes([byte; 32])
}

/// What to clean up after a test.
enum Owned {
    Sqlite(TempDir),
    Postgres { admin_url: String, schema: String },
}

/// Runs `test` once per backend. A panic in the test fails it after its database is cleaned up.
pub(crate) async fn each_backend<F, Fut>(test: F)
where
    F: Fn(Db) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut dbs = vec![sqlite()];
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.is_empty() => dbs.push(postgres(&url).await),
        _ => eprintln!("skipping PostgreSQL store tests: {POSTGRES_ENV} is not set"),
    }
    for (db, owned) in dbs {
        let result = tokio::spawn(test(db.clone())).await;
        cleanup(owned).await;
        if let Err(e) = result {
            match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => panic!("{} test did not finish: {e}", db.backend),
            }
        }
    }
}

fn sqlite() -> (Db, Owned) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("enclave.db").display());
    let db = Db {
        backend: "sqlite",
        url,
    };
    (db, Owned::Sqlite(dir))
}

async fn postgres(admin_url: &str) -> (Db, Owned) {
    let mut nonce = [0u8; 8];
    SystemRandom::new().fill(&mut nonce).unwrap();
    let schema: String = std::iter::once("enclave_test_".to_owned())
        .chain(nonce.iter().map(|b| format!("{b:02x}")))
        .collect();
    let mut admin = PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("{POSTGRES_ENV} is set but PostgreSQL is not reachable: {e}"));
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let sep = if admin_url.contains('?') { '&' } else { '?' };
    let url = format!("{admin_url}{sep}options=-c%20search_path%3D{schema}");
    let db = Db {
        backend: "postgres",
        url,
    };
    (
        db,
        Owned::Postgres {
            admin_url: admin_url.to_owned(),
            schema,
        },
    )
}

async fn cleanup(owned: Owned) {
    match owned {
        Owned::Sqlite(dir) => drop(dir),
        Owned::Postgres { admin_url, schema } => {
            let mut admin = PgConnection::connect(&admin_url).await.unwrap();
            sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&mut admin)
                .await
                .unwrap();
            admin.close().await.unwrap();
        }
    }
}

/// The SQLite directory of a `sqlite://` URL, to look at the files.
pub(crate) fn sqlite_dir(db: &Db) -> std::path::PathBuf {
    let path = db.url.strip_prefix("sqlite://").unwrap();
    std::path::Path::new(path).parent().unwrap().to_path_buf()
}
