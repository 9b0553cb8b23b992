//! The store: one connection pool to SQLite or PostgreSQL, and the queries on it.
//!
//! Both backends run through sqlx's `Any` driver with one set of SQL statements (`$N`
//! placeholders work on both), so every query is written once and tested on both.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::rand::SystemRandom;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row};

use crate::StoreError;
use crate::crypt::{KeyCache, Wrapper};
use crate::install::MasterKey;
use crate::key::{self, KeyFormat, KeyHasher, KeyLookup, KeyRecord, KeyShape};
use crate::migrations::Embedded;
use crate::principal::{NewPrincipal, PrincipalRecord};

/// How long a caller waits for a connection (or a new one to be opened) before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long SQLite waits for another writer's lock before failing with "database is locked".
pub(crate) const SQLITE_BUSY_TIMEOUT_MS: u32 = 5000;

/// Persistence for principals and API keys on SQLite or PostgreSQL.
///
/// Cheap to clone (the clones share one connection pool) and safe to share between tasks.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The SQLite database's file, when the store is one file another connection can open.
    sqlite_file: Option<PathBuf>,
    hasher: KeyHasher,
    pub(crate) rng: SystemRandom,
    /// Wraps the tenants' data keys (derived from the master key).
    pub(crate) wrapper: Wrapper,
    /// The tenants' unwrapped data keys, shared by the clones.
    pub(crate) keys: KeyCache,
}

/// Which database the store talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Postgres,
    Sqlite,
}

impl Store {
    /// Connects to `url` (`sqlite://PATH` or `postgres://USER@HOST/DB`) and brings the schema
    /// up to date.
    ///
    /// A SQLite database file is created if missing (its directory must exist) and opened in
    /// WAL mode with `synchronous = FULL`, a busy timeout and foreign keys on. Migrations run
    /// every time; on an up-to-date database they do nothing. `master` is the install's master
    /// key: the API-key hash ([`MasterKey::api_key_hasher`]) and the key that wraps the tenants'
    /// data keys (see [`crate::crypt`]) derive from it, so API keys and stored data made under
    /// one master key are unusable under another.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for an unsupported URL or a missing SQLite directory,
    /// [`StoreError::Database`] when the database cannot be reached or configured,
    /// [`StoreError::Migration`] when the schema cannot be migrated (for example a database
    /// written by a newer version).
    pub async fn open(url: &str, master: &MasterKey) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let hasher = master.api_key_hasher();
        let wrapper = Wrapper::derive(master)?;
        let backend = Backend::of_url(url)?;
        let (connect_url, max_connections) = match backend {
            Backend::Postgres => (url.to_owned(), 16),
            Backend::Sqlite => sqlite_url(url)?,
        };
        // SECURITY: the URL may hold a password; it is never put into an error or log line.
        let options = AnyConnectOptions::from_str(&connect_url)
            .map_err(StoreError::database("reading the storage url"))?;
        let mut pool_options = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT);
        if backend == Backend::Sqlite {
            if max_connections == 1 {
                // An in-memory database lives as long as its one connection.
                pool_options = pool_options
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None);
            }
            pool_options = pool_options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    for pragma in [
                        "PRAGMA foreign_keys = ON".to_owned(),
                        "PRAGMA synchronous = FULL".to_owned(),
                        format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}"),
                    ] {
                        sqlx::query(&pragma).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            });
        }
        let pool = pool_options
            .connect_with(options)
            .await
            .map_err(StoreError::database("connecting to the database"))?;
        if backend == Backend::Sqlite && max_connections > 1 {
            // WAL is a property of the file; set it once, before the pool opens more
            // connections (switching modes needs an exclusive lock no busy timeout waits for).
            let mode: String = sqlx::query("PRAGMA journal_mode = WAL")
                .fetch_one(&pool)
                .await
                .and_then(|row| row.try_get(0))
                .map_err(StoreError::database("switching SQLite to WAL mode"))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Invalid(format!(
                    "the SQLite database stayed in `{mode}` journal mode instead of WAL: put it on \
                     a local file system"
                )));
            }
        }
        let migrator = Migrator::new(Embedded {
            postgres: backend == Backend::Postgres,
        })
        .await
        .map_err(StoreError::Migration)?;
        migrator.run(&pool).await.map_err(StoreError::Migration)?;
        Ok(Store {
            pool,
            backend,
            sqlite_file: match backend {
                Backend::Sqlite => sqlite_file(url),
                Backend::Postgres => None,
            },
            hasher,
            rng: SystemRandom::new(),
            wrapper,
            keys: KeyCache::default(),
        })
    }

    /// The file of a SQLite store, for a connection of its own (the audit writer's,
    /// [`crate::SqliteAppender`]); `None` for PostgreSQL, a database in memory, a read-only URL
    /// or a percent-encoded path.
    pub fn sqlite_file(&self) -> Option<&Path> {
        self.sqlite_file.as_deref()
    }

    /// The connection pool (for the other modules' queries).
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }

    /// The schema version of the database: the highest migration applied. After a successful
    /// [`Store::open`] it equals [`SCHEMA_VERSION`](crate::SCHEMA_VERSION).
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the query fails.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        sqlx::query("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&self.pool)
            .await
            .and_then(|row| row.try_get::<Option<i64>, _>(0))
            .map(Option::unwrap_or_default)
            .map_err(StoreError::database("reading the schema version"))
    }

    /// Adds a principal after checking every field (see [`NewPrincipal`]); the clearance is
    /// stored as its canonical banner.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] naming the first bad field, [`StoreError::Conflict`] when the
    /// name is taken, [`StoreError::Database`] when the database fails.
    pub async fn add_principal(&self, p: &NewPrincipal) -> Result<PrincipalRecord, StoreError> {
        let p = p.validate()?;
        let created_at = now();
        let inserted = sqlx::query(
            "INSERT INTO principals (name, tenant, clearance, nationality, role, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&p.name)
        .bind(&p.tenant)
        .bind(&p.clearance)
        .bind(&p.nationality)
        .bind(&p.role)
        .bind(created_at)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!(
                    "principal `{}` already exists: choose another name",
                    p.name
                )));
            }
            Err(e) => return Err(StoreError::database("adding a principal")(e)),
        }
        Ok(PrincipalRecord {
            name: p.name,
            tenant: p.tenant,
            clearance: p.clearance,
            nationality: p.nationality,
            role: p.role,
            created_at,
        })
    }

    /// The principal named `name`, if there is one.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the database fails.
    pub async fn principal(&self, name: &str) -> Result<Option<PrincipalRecord>, StoreError> {
        let action = "reading a principal";
        sqlx::query(
            "SELECT name, tenant, clearance, nationality, role, created_at \
             FROM principals WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .and_then(|row| row.as_ref().map(principal_from_row).transpose())
        .map_err(StoreError::database(action))
    }

    /// Every principal, by name.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the database fails.
    pub async fn list_principals(&self) -> Result<Vec<PrincipalRecord>, StoreError> {
        sqlx::query(
            "SELECT name, tenant, clearance, nationality, role, created_at \
             FROM principals ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .and_then(|rows| rows.iter().map(principal_from_row).collect())
        .map_err(StoreError::database("listing principals"))
    }

    /// Creates an API key for the existing principal `principal`, in the tagged format (see
    /// [`KeyShape`]). Returns the record and the key itself, which is shown once: only its id and
    /// keyed hash are stored.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when there is no such principal, [`StoreError::Random`] when the
    /// system RNG fails (or keeps repeating ids), [`StoreError::Database`] when the database
    /// fails.
    pub async fn create_key(&self, principal: &str) -> Result<(KeyRecord, String), StoreError> {
        let unknown = || {
            StoreError::NotFound(format!(
                "unknown principal `{}`: add it first with `enclave principal add`",
                principal.escape_default()
            ))
        };
        if self.principal(principal).await?.is_none() {
            return Err(unknown());
        }
        self.insert_key(principal, KeyFormat::Tagged, unknown).await
    }

    /// Creates an API key in the legacy format (no check tag), as versions before schema
    /// version 2 did. Only for tests of the upgrade path: real installs never need one.
    ///
    /// # Errors
    ///
    /// As [`Store::create_key`].
    #[cfg(feature = "danger-legacy-keys")]
    pub async fn danger_create_legacy_key(
        &self,
        principal: &str,
    ) -> Result<(KeyRecord, String), StoreError> {
        let unknown = || StoreError::NotFound(format!("unknown principal `{principal}`"));
        self.insert_key(principal, KeyFormat::Legacy, unknown).await
    }

    /// Generates a key of `format` for `principal` and stores its id, hash and format.
    async fn insert_key(
        &self,
        principal: &str,
        format: KeyFormat,
        unknown: impl Fn() -> StoreError,
    ) -> Result<(KeyRecord, String), StoreError> {
        // A random 64-bit id collides with an existing one about never; retry a little anyway
        // rather than fail on it.
        for _ in 0..3 {
            let new = match format {
                KeyFormat::Tagged => key::generate(&self.rng, &self.hasher)?,
                #[cfg(feature = "danger-legacy-keys")]
                KeyFormat::Legacy => key::generate_legacy(&self.rng)?,
                #[cfg(not(feature = "danger-legacy-keys"))]
                KeyFormat::Legacy => {
                    return Err(StoreError::Invalid(
                        "legacy API keys are no longer made: create a tagged key".to_owned(),
                    ));
                }
            };
            let created_at = now();
            let inserted = sqlx::query(
                "INSERT INTO api_keys (id, principal, hash, created_at, format) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&new.id)
            .bind(principal)
            .bind(self.hasher.hash(&new.key))
            .bind(created_at)
            .bind(format.as_str())
            .execute(&self.pool)
            .await;
            match inserted {
                Ok(_) => {
                    let record = KeyRecord {
                        id: new.id,
                        principal: principal.to_owned(),
                        created_at,
                        revoked_at: None,
                        format,
                    };
                    return Ok((record, new.key));
                }
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => continue,
                Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                    return Err(unknown());
                }
                Err(e) => return Err(StoreError::database("creating an API key")(e)),
            }
        }
        Err(StoreError::Random("picking an unused API key id"))
    }

    /// Every API key (revoked ones too), oldest first.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the database fails.
    pub async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        sqlx::query(
            "SELECT id, principal, created_at, revoked_at, format FROM api_keys \
             ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await
        .and_then(|rows| rows.iter().map(key_from_row).collect())
        .map_err(StoreError::database("listing API keys"))
    }

    /// Revokes a key, named by its id (as [`Store::list_keys`] shows it) or by the whole key.
    /// `Ok(false)` when nothing matched: no such key, already revoked, malformed input, or a
    /// whole key whose secret is wrong.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the database fails.
    pub async fn revoke_key(&self, id_or_key: &str) -> Result<bool, StoreError> {
        let action = "revoking an API key";
        let id = if let Some(id) = key::parse(id_or_key) {
            // SECURITY: a whole key must be the real one; otherwise anyone who saw an id could
            // present "its key" with any secret.
            let stored: Option<String> =
                sqlx::query("SELECT hash FROM api_keys WHERE id = $1 AND revoked_at IS NULL")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .and_then(|row| row.map(|r| r.try_get("hash")).transpose())
                    .map_err(StoreError::database(action))?;
            match stored {
                Some(hash) if self.hasher.verify(id_or_key, &hash) => id,
                _ => return Ok(false),
            }
        } else if key::is_id(id_or_key) {
            id_or_key
        } else {
            return Ok(false);
        };
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now())
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(StoreError::database(action))?;
        Ok(done.rows_affected() > 0)
    }

    /// What a presented bearer key is, from its text alone: no database access (see
    /// [`KeyHasher::shape`]). The gateway uses it to refuse made-up keys cheaply.
    pub fn key_shape<'a>(&self, presented: &'a str) -> KeyShape<'a> {
        self.hasher.shape(presented)
    }

    /// The key record and principal for a presented bearer key, if the key exists, is not
    /// revoked and its secret is right. Malformed or hostile input is `Ok(None)`, never an
    /// error. [`Store::look_up_key`] says why a key is refused.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the database fails.
    pub async fn authenticate_key(
        &self,
        presented: &str,
    ) -> Result<Option<(KeyRecord, PrincipalRecord)>, StoreError> {
        Ok(match self.look_up_key(presented).await? {
            KeyLookup::Found(key, principal) => Some((key, principal)),
            KeyLookup::Revoked | KeyLookup::Unknown | KeyLookup::WrongSecret => None,
        })
    }

    /// Looks a presented bearer key up: valid (with its record and principal), revoked,
    /// unknown or with a wrong secret. A malformed key is [`KeyLookup::Unknown`] without a
    /// query. A key whose check tag does not verify matches only a legacy key, and a tagged
    /// key only a tagged one.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the database fails.
    pub async fn look_up_key(&self, presented: &str) -> Result<KeyLookup, StoreError> {
        let action = "authenticating an API key";
        // SECURITY: nothing that is not exactly a well-formed key reaches the database.
        let (id, format) = match self.hasher.shape(presented) {
            KeyShape::Malformed => return Ok(KeyLookup::Unknown),
            KeyShape::Tagged { id } => (id, KeyFormat::Tagged),
            KeyShape::Untagged { id } => (id, KeyFormat::Legacy),
        };
        let row = sqlx::query(
            "SELECT k.id, k.principal, k.hash, k.created_at AS key_created_at, k.revoked_at, \
             k.format, p.name, p.tenant, p.clearance, p.nationality, p.role, p.created_at \
             FROM api_keys k JOIN principals p ON p.name = k.principal \
             WHERE k.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::database(action))?;
        let Some(row) = row else {
            return Ok(KeyLookup::Unknown);
        };
        let read = || -> Result<_, sqlx::Error> {
            let hash: String = row.try_get("hash")?;
            let record = KeyRecord {
                id: row.try_get("id")?,
                principal: row.try_get("principal")?,
                created_at: row.try_get("key_created_at")?,
                revoked_at: row.try_get("revoked_at")?,
                format: format_from_row(&row)?,
            };
            Ok((hash, record, principal_from_row(&row)?))
        };
        let (hash, record, principal) = read().map_err(StoreError::database(action))?;
        if record.revoked_at.is_some() {
            return Ok(KeyLookup::Revoked);
        }
        // SECURITY: constant-time comparison of the keyed hash (see `KeyHasher::verify`). The
        // format must match too: a key whose tag does not verify is never a tagged key.
        if record.format != format || !self.hasher.verify(presented, &hash) {
            return Ok(KeyLookup::WrongSecret);
        }
        Ok(KeyLookup::Found(record, principal))
    }

    /// The ids of the unrevoked legacy keys (made before check tags), sorted. The gateway
    /// refuses an untagged key whose id is not among them without a lookup.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the database fails.
    pub async fn unrevoked_legacy_key_ids(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query(
            "SELECT id FROM api_keys WHERE format = 'legacy' AND revoked_at IS NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .and_then(|rows| rows.iter().map(|r| r.try_get("id")).collect())
        .map_err(StoreError::database("listing legacy API keys"))
    }

    /// Checks that the database answers (for readiness probes).
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when it does not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(StoreError::database("pinging the database"))
    }

    /// Closes every connection; later calls fail. Dropping the last clone does the same, but
    /// without waiting.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend_name())
            .finish_non_exhaustive()
    }
}

// === impl Backend ===

impl Backend {
    fn of_url(url: &str) -> Result<Backend, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            // SECURITY: only the scheme is shown; the rest may hold a password.
            let scheme = url.split_once(':').map_or("", |(s, _)| s);
            Err(StoreError::Invalid(format!(
                "unsupported storage url scheme `{}`: use sqlite://PATH or \
                 postgres://USER@HOST/DB",
                scheme.escape_default()
            )))
        }
    }
}

// === helpers ===

/// The URL to connect with (creating the file if missing) and the pool size for a SQLite URL.
fn sqlite_url(url: &str) -> Result<(String, u32), StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let in_memory = path == ":memory:" || query.split('&').any(|p| p == "mode=memory");
    if in_memory {
        return Ok((url.to_owned(), 1));
    }
    if path.is_empty() {
        return Err(StoreError::Invalid(
            "the SQLite url names no file: use sqlite://PATH, e.g. sqlite://./enclave-data/enclave.db"
                .to_owned(),
        ));
    }
    // Percent-encoded paths are left for SQLite to report.
    if !path.contains('%')
        && let Some(dir) = Path::new(path).parent()
        && !dir.as_os_str().is_empty()
        && !dir.is_dir()
    {
        return Err(StoreError::Invalid(format!(
            "the directory `{}` of the SQLite database does not exist: run `enclave init` or \
             fix `storage.url`",
            dir.display()
        )));
    }
    let has_mode = query.split('&').any(|p| p.starts_with("mode="));
    let connect_url = match (has_mode, query.is_empty()) {
        (true, _) => url.to_owned(),
        (false, true) => format!("{url}?mode=rwc"),
        (false, false) => format!("{url}&mode=rwc"),
    };
    Ok((connect_url, 8))
}

/// The database file a SQLite URL names, when another connection can open it for writing as
/// it is: not in memory, not read-only, not percent-encoded.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let plain = !path.is_empty() && path != ":memory:" && !path.contains('%');
    let writable = query
        .split('&')
        .all(|p| !p.starts_with("mode=") || p == "mode=rwc" || p == "mode=rw");
    (plain && writable).then(|| PathBuf::from(path))
}

fn principal_from_row(row: &AnyRow) -> Result<PrincipalRecord, sqlx::Error> {
    Ok(PrincipalRecord {
        name: row.try_get("name")?,
        tenant: row.try_get("tenant")?,
        clearance: row.try_get("clearance")?,
        nationality: row.try_get("nationality")?,
        role: row.try_get("role")?,
        created_at: row.try_get("created_at")?,
    })
}

fn key_from_row(row: &AnyRow) -> Result<KeyRecord, sqlx::Error> {
    Ok(KeyRecord {
        id: row.try_get("id")?,
        principal: row.try_get("principal")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
        format: format_from_row(row)?,
    })
}

fn format_from_row(row: &AnyRow) -> Result<KeyFormat, sqlx::Error> {
    let name: String = row.try_get("format")?;
    KeyFormat::from_column(&name).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: "format".to_owned(),
        source: format!("unknown API key format `{}`", name.escape_default()).into(),
    })
}

/// Now, in unix seconds.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pragma(store: &Store, name: &str) -> String {
        let row = sqlx::query(&format!("PRAGMA {name}"))
            .fetch_one(&store.pool)
            .await
            .unwrap();
        row.try_get::<String, _>(0)
            .or_else(|_| row.try_get::<i64, _>(0).map(|v| v.to_string()))
            .unwrap()
    }

    #[tokio::test]
    async fn sqlite_connections_are_durable_and_enforce_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("enclave.db").display());
        let store = Store::open(&url, &MasterKey::from_bytes([1; 32]))
            .await
            .unwrap();
        assert_eq!(pragma(&store, "journal_mode").await, "wal");
        // 2 = FULL
        assert_eq!(pragma(&store, "synchronous").await, "2");
        assert_eq!(pragma(&store, "foreign_keys").await, "1");
        assert_eq!(pragma(&store, "busy_timeout").await, "5000");
        let orphan = sqlx::query(
            "INSERT INTO api_keys (id, principal, hash, created_at) VALUES ('x', 'nobody', 'h', 0)",
        )
        .execute(&store.pool)
        .await
        .unwrap_err();
        assert!(
            matches!(&orphan, sqlx::Error::Database(e) if e.is_foreign_key_violation()),
            "{orphan:?}"
        );
    }

    #[test]
    fn sqlite_urls_get_create_mode_unless_they_set_one() {
        let dir = tempfile::tempdir().unwrap();
        let base = format!("sqlite://{}/e.db", dir.path().display());
        assert_eq!(sqlite_url(&base).unwrap(), (format!("{base}?mode=rwc"), 8));
        assert_eq!(
            sqlite_url(&format!("{base}?cache=private")).unwrap().0,
            format!("{base}?cache=private&mode=rwc")
        );
        assert_eq!(
            sqlite_url(&format!("{base}?mode=ro")).unwrap().0,
            format!("{base}?mode=ro")
        );
        assert_eq!(sqlite_url("sqlite::memory:").unwrap().1, 1);
        assert_eq!(sqlite_file(&base), Some(dir.path().join("e.db")));
        assert_eq!(
            sqlite_file(&format!("{base}?mode=rwc&cache=private")),
            Some(dir.path().join("e.db"))
        );
        for no_file in [
            "sqlite::memory:".to_owned(),
            "sqlite://:memory:".to_owned(),
            "sqlite://".to_owned(),
            format!("{base}?mode=ro"),
            format!("{base}?mode=memory"),
            "sqlite://a%20b.db".to_owned(),
            "postgres://u@h/db".to_owned(),
        ] {
            assert_eq!(sqlite_file(&no_file), None, "{no_file}");
        }
        assert!(sqlite_url("sqlite://").is_err());
    }
}
