//! `enclave init`, `enclave principal …` and `enclave key …`: preparing an install and managing
//! the identities that may call the gateway.
//!
//! Every command reads the configuration (`--config FILE`, or the embedded defaults) for the
//! data directory and the storage URL, then works on the store through `enclave-store`. Store
//! errors keep their own message; the exit code says whose fault it was (1: the input, 2: the
//! machinery).
//!
//! Each change (`principal add`, `key create`, `key revoke`) appends an `admin` entry to the
//! audit log through the store, like the gateway's entries (gap-free, even while a server
//! runs), with the actor `cli:<login name>`. The entry is appended after the change; if it
//! cannot be written, the command fails (exit 2) saying that the change was made unlogged.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use clap::Subcommand;
use enclave_audit::{AdminEvent, Event};
use enclave_gateway::config::{Config, STARTER_CONFIG};
use enclave_store::install::{self, Install, KeySource, MASTER_KEY_FILE};
use enclave_store::{KeyRecord, NewAuditEntry, NewPrincipal, PrincipalRecord, Store, StoreError};

use crate::{Failure, Outcome};

/// The configuration `enclave init` writes when no `--config` is given.
const DEFAULT_CONFIG_FILE: &str = "enclave.toml";

/// `enclave principal …`
#[derive(Debug, Subcommand)]
pub(crate) enum PrincipalCommand {
    /// Add a principal: who may call the gateway, with tenant, clearance, nationality and role.
    Add {
        /// Unique name: 1-64 characters of A-Z a-z 0-9 . _ @ -
        name: String,
        /// The tenant the principal belongs to (same characters as the name).
        #[arg(long)]
        tenant: String,
        /// The clearance as a banner marking, e.g. 'SECRET//NOFORN'.
        #[arg(long, value_name = "BANNER")]
        clearance: String,
        /// Nationality as a country trigraph.
        #[arg(long, default_value = "USA", value_name = "TRIGRAPH")]
        nationality: String,
        /// user, admin, auditor or metrics (reads /metrics only).
        #[arg(long, default_value = "user")]
        role: String,
    },
    /// List principals: name, tenant, role, nationality, clearance.
    List,
}

/// `enclave key …`
#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// Create an API key for a principal and print it (alone, once: it is not stored).
    Create {
        /// The principal's name.
        principal: String,
    },
    /// List API keys: id, principal, created, revoked.
    List,
    /// Revoke an API key, named by its id (see `enclave key list`) or by the whole key.
    Revoke {
        /// The key id or the whole key.
        #[arg(value_name = "ID_OR_KEY")]
        id_or_key: String,
    },
}

/// `enclave tenant …`
#[derive(Debug, Subcommand)]
pub(crate) enum TenantCommand {
    /// Crypto-shred a tenant: destroy its data key first (its stored responses and
    /// conversations become unreadable at once, backups included), then delete its rows.
    /// Principals, API keys and the audit log stay. Audited as `tenant.shred`.
    Shred {
        /// The tenant.
        tenant: String,
    },
}

/// `enclave tenant …`
pub(crate) fn tenant(cmd: TenantCommand, config_path: Option<&Path>) -> Outcome {
    match cmd {
        TenantCommand::Shred { tenant } => {
            let report = with_store(config_path, async |store, _| {
                let report = store.shred_tenant(&tenant).await?;
                let mut details = BTreeMap::from([(
                    "key_destroyed".to_owned(),
                    report.key_destroyed.to_string(),
                )]);
                for (table, n) in &report.rows_deleted {
                    details.insert(format!("rows.{table}"), n.to_string());
                }
                log_admin(store, "tenant.shred", &tenant, Some(&tenant), details).await?;
                Ok(report)
            })?;
            let key = if report.key_destroyed {
                "data key destroyed"
            } else {
                "no data key existed"
            };
            Ok(format!(
                "shredded tenant {tenant}: {key}, {} rows deleted\n",
                report.total_rows()
            ))
        }
    }
}

/// `enclave init`: writes a starter configuration where none exists, prepares the data
/// directory and its keys, and creates or migrates the database. Never overwrites a file.
pub(crate) fn init(config_path: Option<&Path>) -> Outcome {
    let mut report = Report::default();
    let config_file =
        config_path.map_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE), Path::to_path_buf);
    if write_new(&config_file, STARTER_CONFIG)? {
        report.created(&config_file.display().to_string());
    } else {
        report.exists(&config_file.display().to_string());
    }
    // Without `--config`, the other commands use the embedded defaults (not `./enclave.toml`);
    // prepare what they will use, which is also what the starter file says.
    let config = load_config(config_path)?;

    let sources = config.keys.sources(|name| std::env::var(name).ok());
    let install = install::prepare_with(&config.data_dir, &sources).map_err(store_failure)?;
    let shown_source = |source: &KeySource| match source {
        KeySource::DataDir(path) => path.clone(),
        KeySource::File(path) => path.clone(),
        KeySource::Env(name) => PathBuf::from(format!("${name}")),
    };
    for path in [
        config.data_dir.clone(),
        shown_source(install.master_key_source()),
        shown_source(install.signing_key_source()),
    ] {
        let shown = path.display().to_string();
        if install.created.contains(&path) {
            report.created(&shown);
        } else {
            report.exists(&shown);
        }
    }

    let sqlite_file = sqlite_path(config.storage.url.expose());
    let db_existed = sqlite_file.as_deref().is_some_and(Path::exists);
    let master = install.master_key();
    let (backend, version) = runtime()?.block_on(async {
        let store = Store::open(config.storage.url.expose(), master)
            .await
            .map_err(store_failure)?;
        let version = store.schema_version().await.map_err(store_failure);
        store.close().await;
        Ok::<_, Failure>((store.backend_name(), version?))
    })?;
    let db = match &sqlite_file {
        Some(file) => format!("{} ({backend}, schema version {version})", file.display()),
        None => format!(
            "{} ({backend}, schema version {version})",
            config.storage.url
        ),
    };
    match (&sqlite_file, db_existed) {
        (Some(_), false) => report.created(&db),
        (Some(_), true) => report.exists(&db),
        // A server database is never created by us, only migrated.
        (None, _) => report.ready(&db),
    }

    let config_arg = format!(
        "--config {}",
        shell_word(&config_file.display().to_string())
    );
    let mut out = report.out;
    let _ = writeln!(
        out,
        "next: enclave {config_arg} principal add alice --tenant agency-a --clearance 'SECRET//NOFORN'"
    );
    let _ = writeln!(out, "then: enclave {config_arg} key create alice");
    let _ = writeln!(out, "then: enclave {config_arg} serve");
    Ok(out)
}

/// `enclave principal …`
pub(crate) fn principal(cmd: PrincipalCommand, config_path: Option<&Path>) -> Outcome {
    match cmd {
        PrincipalCommand::Add {
            name,
            tenant,
            clearance,
            nationality,
            role,
        } => {
            let new = NewPrincipal {
                name,
                tenant,
                clearance,
                nationality,
                role,
            };
            let p = with_store(config_path, async |store, _| {
                let p = store.add_principal(&new).await?;
                let details = BTreeMap::from([
                    ("clearance".to_owned(), p.clearance.clone()),
                    ("nationality".to_owned(), p.nationality.clone()),
                    ("role".to_owned(), p.role.clone()),
                ]);
                log_admin(store, "principal.add", &p.name, Some(&p.tenant), details).await?;
                Ok(p)
            })?;
            Ok(format!(
                "added principal {} (tenant {}, role {}, nationality {}, clearance {})\n",
                p.name, p.tenant, p.role, p.nationality, p.clearance
            ))
        }
        PrincipalCommand::List => {
            let list = with_store(config_path, async |store, _| store.list_principals().await)?;
            Ok(principal_table(&list))
        }
    }
}

/// `enclave key …`
pub(crate) fn key(cmd: KeyCommand, config_path: Option<&Path>) -> Outcome {
    match cmd {
        KeyCommand::Create { principal } => {
            let (_, key) = with_store(config_path, async |store, _| {
                let (record, key) = store.create_key(&principal).await?;
                let details = BTreeMap::from([("principal".to_owned(), record.principal.clone())]);
                let tenant = store.principal(&record.principal).await?.map(|p| p.tenant);
                log_admin(store, "key.create", &record.id, tenant.as_deref(), details).await?;
                Ok((record, key))
            })?;
            // The key alone on stdout, so scripts can capture it.
            Ok(format!("{key}\n"))
        }
        KeyCommand::List => {
            let list = with_store(config_path, async |store, _| store.list_keys().await)?;
            Ok(key_table(&list))
        }
        KeyCommand::Revoke { id_or_key } => {
            // A whole key is `enk_<id>_<secret>`: show (and log) only the id.
            let id = id_or_key
                .strip_prefix("enk_")
                .and_then(|rest| rest.get(..16))
                .unwrap_or(&id_or_key)
                .to_owned();
            let revoked = with_store(config_path, async |store, _| {
                if !store.revoke_key(&id_or_key).await? {
                    return Ok(false);
                }
                let record = store.list_keys().await?.into_iter().find(|k| k.id == id);
                let mut details = BTreeMap::new();
                let mut tenant = None;
                if let Some(record) = record {
                    tenant = store.principal(&record.principal).await?.map(|p| p.tenant);
                    details.insert("principal".to_owned(), record.principal);
                }
                log_admin(store, "key.revoke", &id, tenant.as_deref(), details).await?;
                Ok(true)
            })?;
            if !revoked {
                // SECURITY: the input may be a whole key; it is not echoed.
                return Err(Failure::invalid(
                    "no active API key matches the given id or key: see `enclave key list`",
                ));
            }
            Ok(format!("revoked key {id}\n"))
        }
    }
}

// === helpers ===

/// Appends the `admin` audit entry of a change made from the command line.
async fn log_admin(
    store: &Store,
    action: &str,
    target: &str,
    tenant: Option<&str>,
    details: BTreeMap<String, String>,
) -> Result<u64, StoreError> {
    let event = Event::Admin(AdminEvent {
        action: action.to_owned(),
        actor: cli_actor(),
        details,
        request_id: None,
        target: Some(target.to_owned()),
        tenant: tenant.map(str::to_owned),
    });
    let unlogged = |why: String| {
        StoreError::AuditLog(format!(
            "`{action}` of `{target}` was made, but its audit entry could not be written \
             ({why}): record it by hand and fix the database"
        ))
    };
    let batch = store
        .append_audit(vec![NewAuditEntry::now(event)])
        .await
        .map_err(|e| unlogged(e.to_string()))?;
    match batch.results.into_iter().next() {
        Some(Ok(appended)) => Ok(appended.index),
        Some(Err(e)) => Err(unlogged(e.to_string())),
        None => Err(unlogged("no result".to_owned())),
    }
}

/// `cli:<login name>`, the actor of command-line changes.
fn cli_actor() -> String {
    let user = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok())
        .filter(|u| !u.is_empty() && u.len() <= 64 && u.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or_else(|| "unknown".to_owned());
    format!("cli:{user}")
}

/// Loads the configuration, or the embedded defaults without `--config`.
pub(crate) fn load_config(path: Option<&Path>) -> Result<Config, Failure> {
    Config::load(path).map_err(|e| Failure::invalid(e.to_string()))
}

/// Runs one store operation on the configured, initialized install.
pub(crate) fn with_store<T>(
    config_path: Option<&Path>,
    op: impl AsyncFnOnce(&Store, &Install) -> Result<T, StoreError>,
) -> Result<T, Failure> {
    let config = load_config(config_path)?;
    let sources = config.keys.sources(|name| std::env::var(name).ok());
    // Creating a fresh master key here would silently invalidate every existing API key (and a
    // typo in data_dir would scatter installs around): only `enclave init` creates one.
    let master = config.data_dir.join(MASTER_KEY_FILE);
    if sources.master_key_env.is_none() && sources.master_key_file.is_none() && !master.is_file() {
        return Err(Failure::invalid(format!(
            "`{}` does not exist: run `enclave init`{} first",
            master.display(),
            config_path.map_or_else(String::new, |p| format!(
                " --config {}",
                shell_word(&p.display().to_string())
            ))
        )));
    }
    let install = install::prepare_with(&config.data_dir, &sources).map_err(store_failure)?;
    let master = install.master_key();
    runtime()?.block_on(async {
        let store = Store::open(config.storage.url.expose(), master)
            .await
            .map_err(store_failure)?;
        let out = op(&store, &install).await.map_err(store_failure);
        store.close().await;
        out
    })
}

/// A current-thread runtime for the store's async API.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::io("starting the async runtime", e))
}

/// Maps a store error to an exit code: the caller's input is 1, broken machinery is 2.
pub(crate) fn store_failure(e: StoreError) -> Failure {
    let line = e.to_string();
    match e {
        StoreError::Conflict(_) | StoreError::Invalid(_) | StoreError::NotFound(_) => {
            Failure::invalid(line)
        }
        StoreError::AuditLog(_)
        | StoreError::CorruptKeyFile { .. }
        | StoreError::Crypto(_)
        | StoreError::Database { .. }
        | StoreError::Io { .. }
        | StoreError::Migration(_)
        | StoreError::Random(_) => Failure::machinery(line),
    }
}

/// Writes `text` to `path` only if nothing is there; `Ok(false)` if something already is.
fn write_new(path: &Path, text: &str) -> Result<bool, Failure> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        // The file may come to hold a database URL with a password.
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let context = || format!("writing the configuration `{}`", path.display());
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(text.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| Failure::io(&context(), e))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Failure::io(&context(), e)),
    }
}

/// The database file of a `sqlite:` URL (`None` for PostgreSQL and in-memory databases).
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split_once('?').map_or(rest, |(p, _)| p);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// `s` quoted for a POSIX shell when it needs quoting.
fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What `init` found: one line per file or directory.
#[derive(Default)]
struct Report {
    out: String,
}

impl Report {
    fn created(&mut self, what: &str) {
        let _ = writeln!(self.out, "created  {what}");
    }

    fn exists(&mut self, what: &str) {
        let _ = writeln!(self.out, "exists   {what}");
    }

    fn ready(&mut self, what: &str) {
        let _ = writeln!(self.out, "ready    {what}");
    }
}

fn principal_table(list: &[PrincipalRecord]) -> String {
    let rows: Vec<[&str; 5]> = list
        .iter()
        .map(|p| {
            [
                p.name.as_str(),
                p.tenant.as_str(),
                p.role.as_str(),
                p.nationality.as_str(),
                p.clearance.as_str(),
            ]
        })
        .collect();
    table(
        ["NAME", "TENANT", "ROLE", "NATIONALITY", "CLEARANCE"],
        &rows,
    )
}

fn key_table(list: &[KeyRecord]) -> String {
    let cells: Vec<[String; 4]> = list
        .iter()
        .map(|k| {
            [
                k.id.clone(),
                k.principal.clone(),
                utc(k.created_at),
                k.revoked_at.map_or_else(|| "-".to_owned(), utc),
            ]
        })
        .collect();
    let rows: Vec<[&str; 4]> = cells
        .iter()
        .map(|[a, b, c, d]| [a.as_str(), b.as_str(), c.as_str(), d.as_str()])
        .collect();
    table(["ID", "PRINCIPAL", "CREATED", "REVOKED"], &rows)
}

/// A left-aligned table with a header row, columns two spaces apart, no trailing spaces.
fn table<const N: usize>(header: [&str; N], rows: &[[&str; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(widths) {
            let _ = write!(line, "{cell:<w$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn table_aligns_columns() {
        let out = table(["A", "BB"], &[["xxx", "y"], ["z", "SECRET//NOFORN"]]);
        assert_eq!(out, "A    BB\nxxx  y\nz    SECRET//NOFORN\n");
    }

    #[test]
    fn sqlite_paths_and_shell_words() {
        assert_eq!(
            sqlite_path("sqlite://./d/e.db?mode=rwc"),
            Some(PathBuf::from("./d/e.db"))
        );
        assert_eq!(sqlite_path("sqlite:e.db"), Some(PathBuf::from("e.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://u@h/db"), None);
        assert_eq!(shell_word("./enclave.toml"), "./enclave.toml");
        assert_eq!(shell_word("my file's.toml"), r"'my file'\''s.toml'");
    }
}
