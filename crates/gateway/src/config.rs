//! The configuration file: one TOML document, read into typed values.
//!
//! Every key is checked: unknown keys are refused, and *all* problems in a file are reported
//! at once, each with its key path (`backends[1].accreditation: …`), so an operator fixes a
//! file in one pass. A TOML syntax error is reported alone, with its line and column.
//! Everything but `[[backends]]` has a safe default, and no file at all is a valid
//! configuration (the embedded defaults).
//!
//! ## How it is read
//!
//! Each crate owns its section: a `Raw…` struct as written in the file (serde,
//! `deny_unknown_fields`, every field documented) and a `from_raw` that checks it into the
//! type the rest of the code uses:
//!
//! | section | raw | checked | crate |
//! |---|---|---|---|
//! | `listen`, `data_dir`, `models_dir` | [`RawConfig`] | [`Config`] | here |
//! | `[storage]` | [`RawStorage`] | [`StorageConfig`] | `enclave-store` |
//! | `[limits]` | [`RawLimits`] | [`Limits`] | here |
//! | `[[backends]]` | [`RawBackend`] | [`BackendConfig`] | `enclave-models` |
//! | `[oidc]` | [`RawOidc`] | [`OidcConfig`] | `enclave-auth` |
//! | `[tls]` | [`RawTls`] | [`TlsConfig`] | `enclave-auth` |
//! | `[policy]` | [`RawPolicy`] | [`PolicyConfig`] | here |
//! | `[metrics]` | [`RawMetrics`] | [`MetricsConfig`] | here |
//! | `[audit]` | [`RawAudit`] | [`AuditConfig`] | here |
//! | `[keys]` | [`RawKeys`] | [`KeysConfig`] | here |
//! | `[safety]` | [`RawSafety`] | [`SafetyConfig`] | here |
//! | `[retention]` | [`RawRetention`] | [`RetentionConfig`] | here |
//! | `[memory]` | [`RawMemory`] | [`MemoryConfig`] | here |
//!
//! [`Config::parse`] parses the text, deserializes the whole [`RawConfig`] through `walk` (a
//! serde `Deserializer` over the parsed document that records every unknown key in every
//! table and every value of the wrong type with its key path, sets each bad value aside and
//! goes on), then [`Config::from_raw`] runs every section's `from_raw` (ranges, markings,
//! URLs, rules across keys and entries) and reads the environment ([`Config::from_raw`]'s
//! `env`, the one place that does). Problems come out sorted by key path.
//!
//! ## Adding a section
//!
//! 1. In the crate that uses it: `RawAudit` (`#[derive(Clone, Debug, Default, Deserialize)]`,
//!    `#[serde(deny_unknown_fields)]`, every field `Option<_>` or `#[serde(default)]` and
//!    documented; no `flatten`, aliases or untagged enums), the checked `AuditConfig`, and
//!    `AuditConfig::from_raw(raw, at: &str) -> Result<AuditConfig, Vec<P>>` reporting every
//!    problem as key path `{at}.key` and what is wrong and allowed. A section of this crate
//!    uses `Problem` and the `Section` helper (see `config/limits.rs`); another crate its own
//!    problem type, with a `From` into `Problem` at the bottom of this file.
//! 2. Here: `pub audit: Option<RawAudit>` in [`RawConfig`], `pub audit: AuditConfig` in
//!    [`Config`] (and in [`Config::defaults`]), and one line in `Config::check` (behind
//!    [`Config::from_raw`]):
//!    `let audit = p.check(AuditConfig::from_raw(raw.audit.unwrap_or_default(), "audit")).unwrap_or_default();`
//!
//! Unknown keys, wrong types and key paths need nothing more; the starter-config tests below
//! check that every key of `starter.toml` is read and that a misspelling of each is refused.

mod audit;
mod limits;
mod memory;
mod policy;
mod retention;
mod safety;
mod walk;

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use audit::{
    AuditConfig, DEFAULT_AUDIT_ORIGIN, DEFAULT_COMMIT_DELAY, KeysConfig, RawAudit, RawKeys,
};
pub use enclave_auth::config::{RawCertMapping, RawClaims, RawOidc, RawTls};
pub use enclave_auth::{OidcConfig, TlsConfig};
pub use enclave_local::weights::{ModelsDir, ModelsDirSource};
use enclave_models::bedrock::credentials::CredentialProvider;
pub use enclave_models::config::{
    ApiKey, BackendConfig, BackendKind, ModelAlias, RawBackend, is_cleartext_remote,
};
pub use enclave_store::config::{DatabaseUrl, RawStorage, StorageConfig};
pub use limits::{Limits, RawLimits, Size};
pub use memory::{MemoryConfig, RawMemory};
pub use policy::{
    MetricsConfig, PolicyConfig, RawChatPolicy, RawEmbeddingsPolicy, RawMetrics, RawPolicy,
};
pub use retention::{RawRetention, RawTenantRetention, RetentionConfig, TenantRetention};
pub use safety::{ContextualMode, DEFAULT_PACK, PackSource, RawSafety, SafetyConfig};
use serde::Deserialize;
use walk::Problem;

/// The configuration file as written: the top-level keys and each section's raw struct.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where the server listens, `"127.0.0.1:8080"` (default).
    pub listen: Option<String>,
    /// Where keys, the SQLite database and other state live (default `./enclave-data`).
    pub data_dir: Option<String>,
    /// Where the unzipped model wheels live (default: `ENCLAVE_MODELS_DIR`, else
    /// `<data_dir>/models`).
    pub models_dir: Option<String>,
    /// `[storage]`: the database.
    pub storage: Option<RawStorage>,
    /// `[limits]`: request limits and timeouts.
    pub limits: Option<RawLimits>,
    /// `[[backends]]`: upstream and local model backends.
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    /// `[oidc]`: bearer JWTs from an OpenID Connect provider.
    pub oidc: Option<RawOidc>,
    /// `[tls]`: TLS and client certificates.
    pub tls: Option<RawTls>,
    /// `[policy]`: what each route accepts that Enclave cannot inspect.
    pub policy: Option<RawPolicy>,
    /// `[metrics]`: the `/metrics` endpoint.
    pub metrics: Option<RawMetrics>,
    /// `[audit]`: the audit log's checkpoints.
    pub audit: Option<RawAudit>,
    /// `[keys]`: where the install's secrets come from when replicas share them.
    pub keys: Option<RawKeys>,
    /// `[safety]`: the policy pack of each tenant.
    pub safety: Option<RawSafety>,
    /// `[retention]`: how long stored responses, conversations and memories are kept.
    pub retention: Option<RawRetention>,
    /// `[memory]`: long-term memory.
    pub memory: Option<RawMemory>,
}

/// A whole, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the server listens.
    pub listen: SocketAddr,
    /// Where keys, the SQLite database and other state live.
    pub data_dir: PathBuf,
    /// Where the embedded models' weights live: `models_dir` from the file, else
    /// `ENCLAVE_MODELS_DIR`, else `<data_dir>/models` (see [`ModelsDir::source`]).
    pub models_dir: ModelsDir,
    /// The database.
    pub storage: StorageConfig,
    /// Request limits.
    pub limits: Limits,
    /// Upstream and local model backends, in the order written.
    pub backends: Vec<BackendConfig>,
    /// Bearer JWTs from an OpenID Connect provider, when configured.
    pub oidc: Option<OidcConfig>,
    /// TLS and client certificates, when configured.
    pub tls: Option<TlsConfig>,
    /// What each route accepts that Enclave cannot inspect.
    pub policy: PolicyConfig,
    /// The `/metrics` endpoint.
    pub metrics: MetricsConfig,
    /// The audit log's checkpoints.
    pub audit: AuditConfig,
    /// Where the install's secrets come from besides the data directory.
    pub keys: KeysConfig,
    /// The policy pack of each tenant.
    pub safety: SafetyConfig,
    /// How long stored responses and conversations are kept.
    pub retention: RetentionConfig,
    /// `[memory]`: long-term memory.
    pub memory: MemoryConfig,
    /// Where the file was read from (`None` for the embedded defaults).
    pub source: Option<PathBuf>,
}

/// Every problem found in a configuration file, each with its key path.
#[derive(Debug)]
pub struct ConfigError {
    /// The file, if any.
    pub source: Option<PathBuf>,
    /// `key.path: what is wrong`, sorted by key path.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(p) => write!(f, "invalid configuration {}", p.display())?,
            None => f.write_str("invalid configuration")?,
        }
        let n = self.problems.len();
        write!(f, " ({n} problem{}):", if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Where the loader reads environment variables: [`process_env`] when serving, a map in tests.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// The process's environment, for [`Config::load_with_env`] and friends.
pub fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// The starter configuration `enclave init` writes: every key with its default, commented.
pub const STARTER_CONFIG: &str = include_str!("starter.toml");

impl Config {
    /// Reads and validates the file at `path`, or returns the embedded defaults when `None`,
    /// with the environment of the process.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] listing every problem (unreadable file, TOML syntax, unknown keys, wrong
    /// types, invalid markings, duplicate backend names, …).
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_with_env(path, &process_env)
    }

    /// [`Config::load`] with the environment read through `env`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] listing every problem.
    pub fn load_with_env(path: Option<&Path>, env: Env<'_>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Config::from_raw(RawConfig::default(), env);
        };
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source: Some(path.to_path_buf()),
            problems: vec![format!("cannot read the file: {e}")],
        })?;
        let mut config = Config::parse_with_env(&text, env).map_err(|mut e| {
            e.source = Some(path.to_path_buf());
            e
        })?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// The embedded defaults: `127.0.0.1:8080`, `./enclave-data`, SQLite in it, no backends
    /// (the environment is not read).
    pub fn defaults() -> Config {
        let data_dir = PathBuf::from("./enclave-data");
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            models_dir: ModelsDir::locate_with_env(None, &data_dir, |_| None),
            storage: StorageConfig::sqlite_in(&data_dir),
            data_dir,
            limits: Limits::default(),
            backends: Vec::new(),
            oidc: None,
            tls: None,
            policy: PolicyConfig::default(),
            metrics: MetricsConfig::default(),
            audit: AuditConfig::default(),
            keys: KeysConfig::default(),
            safety: SafetyConfig::default(),
            retention: RetentionConfig::default(),
            memory: MemoryConfig::default(),
            source: None,
        }
    }

    /// Parses configuration text, with the environment of the process.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] listing every problem.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_with_env(text, &process_env)
    }

    /// [`Config::parse`] with the environment read through `env`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] listing every problem.
    pub fn parse_with_env(text: &str, env: Env<'_>) -> Result<Config, ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
            source: None,
            problems: vec![syntax_error(text, &e)],
        })?;
        Config::from_table(table, env)
    }

    /// Deserializes and checks a parsed document.
    fn from_table(table: toml::Table, env: Env<'_>) -> Result<Config, ConfigError> {
        let (raw, problems, set_aside) = walk::read::<RawConfig>(&toml::Value::Table(table));
        let p = Problems {
            list: problems,
            set_aside,
        };
        match raw {
            Some(raw) => Config::check(raw, env, p),
            None => Err(p.into_error().unwrap_or_else(|| ConfigError {
                source: None,
                problems: vec!["the file cannot be read as a configuration".into()],
            })),
        }
    }

    /// Checks every section of `raw` and reads the environment through `env` (the models
    /// directory, each backend's `api_key_env`).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] listing every problem, sorted by key path.
    pub fn from_raw(raw: RawConfig, env: Env<'_>) -> Result<Config, ConfigError> {
        Config::check(raw, env, Problems::default())
    }

    /// [`Config::from_raw`] after the problems deserializing found.
    fn check(raw: RawConfig, env: Env<'_>, mut p: Problems) -> Result<Config, ConfigError> {
        let d = Config::defaults();
        let listen = match raw.listen {
            None => d.listen,
            Some(s) => s.parse().unwrap_or_else(|_| {
                p.push("listen", "expected an address like \"127.0.0.1:8080\"");
                d.listen
            }),
        };
        let data_dir = p.path("data_dir", raw.data_dir).unwrap_or(d.data_dir);
        let models_dir = p.path("models_dir", raw.models_dir);
        // One line per section. A section with problems leaves its default here, never
        // used: the file is then refused.
        let storage = p
            .check(StorageConfig::from_raw(
                raw.storage.unwrap_or_default(),
                "storage",
                &data_dir,
            ))
            .unwrap_or(d.storage);
        let limits = p
            .check(Limits::from_raw(raw.limits.unwrap_or_default(), "limits"))
            .unwrap_or_default();
        let backends = p.check(enclave_models::config::backends_from_raw(
            raw.backends,
            "backends",
        ));
        let backends_valid = backends.is_some();
        let backends = backends.unwrap_or_default();
        let oidc = raw
            .oidc
            .and_then(|r| p.check(OidcConfig::from_raw(r, "oidc")));
        let tls = raw.tls.and_then(|r| p.check(TlsConfig::from_raw(r, "tls")));
        let policy = p
            .check(PolicyConfig::from_raw(
                raw.policy.unwrap_or_default(),
                "policy",
            ))
            .unwrap_or_default();
        let metrics = p
            .check(MetricsConfig::from_raw(
                raw.metrics.unwrap_or_default(),
                "metrics",
            ))
            .unwrap_or_default();
        let audit = p
            .check(AuditConfig::from_raw(
                raw.audit.unwrap_or_default(),
                "audit",
            ))
            .unwrap_or_default();
        let keys = p
            .check(KeysConfig::from_raw(raw.keys.unwrap_or_default(), "keys"))
            .unwrap_or_default();
        let safety = p
            .check(SafetyConfig::from_raw(
                raw.safety.unwrap_or_default(),
                "safety",
            ))
            .unwrap_or_default();
        let retention = p
            .check(RetentionConfig::from_raw(
                raw.retention.unwrap_or_default(),
                "retention",
            ))
            .unwrap_or_default();
        let memory = p
            .check(MemoryConfig::from_raw(
                raw.memory.unwrap_or_default(),
                "memory",
            ))
            .unwrap_or_default();
        // The extractor is called through the router like chat, so a backend must serve it.
        if let Some(m) = &memory.extractor
            && backends_valid
            && !backends
                .iter()
                .any(|b| b.models.iter().any(|a| &a.name == m))
        {
            p.push(
                "memory.extractor",
                &format!(
                    "no backend serves the model `{m}`: name one listed in a backend's `models`"
                ),
            );
        }
        let mut config = Config {
            listen,
            models_dir: d.models_dir,
            data_dir,
            storage,
            limits,
            backends,
            oidc,
            tls,
            policy,
            metrics,
            audit,
            keys,
            safety,
            retention,
            memory,
            source: None,
        };
        config.read_env(models_dir.as_deref(), env, &mut p);
        match p.into_error() {
            Some(e) => Err(e),
            None => Ok(config),
        }
    }

    /// Everything the configuration takes from the environment, read through `env` and nowhere
    /// else: the models directory when the file names none (`ENCLAVE_MODELS_DIR`), and the
    /// upstream key of each backend that names an `api_key_env`.
    fn read_env(&mut self, models_dir: Option<&Path>, env: Env<'_>, p: &mut Problems) {
        self.models_dir = ModelsDir::locate_with_env(models_dir, &self.data_dir, env);
        // Backends are only here when every entry was valid, so the indices are the file's.
        for (i, b) in self.backends.iter_mut().enumerate() {
            if let Some(bedrock) = &mut b.bedrock {
                // Non-UTF-8 values are read as absent: AWS's own tools cannot use them either.
                let lookup = |name: &str| env(name).and_then(|v| v.into_string().ok());
                match CredentialProvider::resolve(bedrock.profile.as_deref(), &lookup) {
                    Ok(c) => bedrock.credentials = Some(std::sync::Arc::new(c)),
                    Err(e) => {
                        let key = if bedrock.profile.is_some() {
                            format!("backends[{i}].profile")
                        } else {
                            format!("backends[{i}]")
                        };
                        p.push(&key, &e.to_string());
                    }
                }
            }
            let Some(var) = &b.api_key_env else { continue };
            match env(var).map(OsString::into_string) {
                Some(Ok(key)) if !key.is_empty() => b.api_key = Some(ApiKey::new(key)),
                // Unset or empty: the backend is called without a key (logged at start).
                None | Some(Ok(_)) => {}
                Some(Err(_)) => p.push(
                    &format!("backends[{i}].api_key_env"),
                    &format!("the environment variable {var} is set but not valid UTF-8"),
                ),
            }
        }
    }
}

/// `TOML syntax: line 3, column 7: invalid key`.
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    // SECURITY: the offending line is not repeated: it may hold a password or a key.
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("TOML syntax: line {line}, column {column}: {message}")
        }
        None => format!("TOML syntax: {message}"),
    }
}

/// The problems found so far in a file.
#[derive(Default)]
struct Problems {
    list: Vec<Problem>,
    /// Values of the wrong shape: reported, then read as absent. A section's own problem
    /// with such a value (`required`) would only repeat it, so it is not listed.
    set_aside: HashSet<String>,
}

impl Problems {
    fn push(&mut self, path: &str, message: &str) {
        self.list.push(Problem {
            path: path.to_owned(),
            message: message.to_owned(),
        });
    }

    /// The section's value, or `None` after taking its problems.
    fn check<T, P: Into<Problem>>(&mut self, result: Result<T, Vec<P>>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(problems) => {
                for p in problems.into_iter().map(Into::into) {
                    if !self.set_aside.contains(&p.path) {
                        self.list.push(p);
                    }
                }
                None
            }
        }
    }

    fn path(&mut self, key: &str, value: Option<String>) -> Option<PathBuf> {
        match value? {
            s if s.is_empty() => {
                self.push(key, "expected a path, found an empty string");
                None
            }
            s => Some(PathBuf::from(s)),
        }
    }

    /// The error listing every problem, sorted by key path (array indices by number); `None`
    /// when there is none.
    fn into_error(mut self) -> Option<ConfigError> {
        if self.list.is_empty() {
            return None;
        }
        self.list
            .sort_by(|a, b| segments(&a.path).cmp(&segments(&b.path)));
        Some(ConfigError {
            source: None,
            problems: self
                .list
                .into_iter()
                .map(|p| {
                    if p.path.is_empty() {
                        p.message
                    } else {
                        format!("{}: {}", p.path, p.message)
                    }
                })
                .collect(),
        })
    }
}

/// The problems of one section of this crate, with its key path.
struct Section {
    at: String,
    list: Vec<Problem>,
}

impl Section {
    fn new(at: &str) -> Section {
        Section {
            at: at.to_owned(),
            list: Vec::new(),
        }
    }

    fn push(&mut self, key: &str, message: &str) {
        self.list.push(Problem {
            path: format!("{}.{key}", self.at),
            message: message.to_owned(),
        });
    }

    /// `value` when it is from `min` to `max`.
    fn int_in(&mut self, key: &str, value: Option<i64>, min: u64, max: u64) -> Option<u64> {
        let v = value?;
        match u64::try_from(v) {
            Ok(v) if (min..=max).contains(&v) => Some(v),
            _ => {
                self.push(key, &format!("expected an integer from {min} to {max}"));
                None
            }
        }
    }

    fn finish<T>(self, value: T) -> Result<T, Vec<Problem>> {
        if self.list.is_empty() {
            Ok(value)
        } else {
            Err(self.list)
        }
    }
}

/// A piece of a key path, in the order problems are listed.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Segment<'a> {
    Key(&'a str),
    Index(u64),
}

/// `backends[10].models[0].name` → `backends`, 10, `models`, 0, `name`.
fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            rest = r;
        } else if let Some(r) = rest.strip_prefix('[') {
            let (n, r) = r.split_once(']').unwrap_or((r, ""));
            out.push(Segment::Index(n.parse().unwrap_or(u64::MAX)));
            rest = r;
        } else {
            let end = if rest.starts_with('"') {
                // A quoted key runs to its closing quote (walk::child_key escapes inner ones).
                let mut escaped = false;
                rest.char_indices()
                    .skip(1)
                    .find(|&(_, c)| {
                        let close = c == '"' && !escaped;
                        escaped = c == '\\' && !escaped;
                        close
                    })
                    .map_or(rest.len(), |(i, _)| i + 1)
            } else {
                rest.find(['.', '[']).unwrap_or(rest.len())
            };
            let (key, r) = rest.split_at(end);
            out.push(Segment::Key(key));
            rest = r;
        }
    }
    out
}

impl From<enclave_auth::config::ConfigProblem> for Problem {
    fn from(p: enclave_auth::config::ConfigProblem) -> Problem {
        Problem {
            path: p.key,
            message: p.message,
        }
    }
}

impl From<enclave_models::config::ConfigProblem> for Problem {
    fn from(p: enclave_models::config::ConfigProblem) -> Problem {
        Problem {
            path: p.key,
            message: p.message,
        }
    }
}

impl From<enclave_store::config::ConfigProblem> for Problem {
    fn from(p: enclave_store::config::ConfigProblem) -> Problem {
        Problem {
            path: p.key,
            message: p.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const MINIMAL: &str = r#"
listen = "127.0.0.1:8080"
data_dir = "./enclave-data"

[storage]
url = "sqlite://./enclave-data/enclave.db"   # or postgres://user@host/db

[[backends]]
name = "gov-secret"
kind = "openai"
base_url = "http://127.0.0.1:9001/v1"
api_key_env = "GOV_SECRET_KEY"
models = ["gpt-4o"]
accreditation = "SECRET//NOFORN"
operators = "USA"
"#;

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_with_env(text, &no_env)
    }

    /// The starter config with every commented example uncommented.
    fn uncommented_starter() -> String {
        STARTER_CONFIG
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|r| {
                        r.starts_with('[')
                            || r.split_once(" = ").is_some_and(|(k, _)| {
                                k.trim_end()
                                    .chars()
                                    .all(|c| c.is_ascii_lowercase() || c == '_')
                            })
                    })
                    .unwrap_or(l)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The key path of the part of `problem` before its message.
    fn path_of(problem: &str) -> &str {
        problem.split_once(": ").map_or(problem, |(p, _)| p)
    }

    #[test]
    fn the_minimal_config_of_the_design_works_as_written() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.storage.url.expose(), "sqlite://./enclave-data/enclave.db");
        assert_eq!(c.limits, Limits::default());
        let b = &c.backends[0];
        assert_eq!(b.kind, BackendKind::OpenAi);
        assert_eq!(b.accreditation.label().banner(), "SECRET//NOFORN");
        assert_eq!(b.models[0].upstream, "gpt-4o");
        assert_eq!((b.priority, b.weight), (100, 1));
        assert!(b.api_key.is_none());
        assert_eq!(c.models_dir.path(), Path::new("./enclave-data/models"));
    }

    #[test]
    fn the_design_example_with_models_dir_and_the_starter_config_parse() {
        let with_models = MINIMAL.replace(
            "data_dir = \"./enclave-data\"",
            "data_dir = \"./enclave-data\"\nmodels_dir = \"./models\"",
        );
        let c = parse(&with_models).unwrap();
        assert_eq!(c.models_dir.path(), Path::new("./models"));
        assert_eq!(c.models_dir.source(), ModelsDirSource::Config);
        let starter = parse(STARTER_CONFIG).unwrap();
        assert!(starter.backends.is_empty());
        // Every commented example in the starter config is valid once uncommented, and every
        // value it shows is the default.
        let c = parse(&uncommented_starter()).unwrap_or_else(|e| panic!("{e}"));
        let gov = c.backends.iter().find(|b| b.name == "gov-secret").unwrap();
        assert_eq!(gov.models[1].upstream, "gpt-4o-mini");
        let local = c
            .backends
            .iter()
            .find(|b| b.kind == BackendKind::Local)
            .unwrap();
        assert_eq!(local.models.len(), 2);
        assert_eq!(c.limits, Limits::default());
        let oidc = c.oidc.unwrap();
        assert_eq!(oidc.claims, enclave_auth::ClaimMap::default());
        assert_eq!(oidc.leeway, std::time::Duration::from_secs(60));
        assert_eq!(c.tls.unwrap().client_map.len(), 3);
    }

    #[test]
    fn every_key_of_the_starter_config_is_read_and_each_misspelling_refused_with_its_path() {
        let table: toml::Table = uncommented_starter().parse().unwrap();
        // Every key path in the file, with a way to reach its table.
        fn keys(t: &toml::Table, at: &[Step], out: &mut Vec<Vec<Step>>) {
            for (k, v) in t {
                let mut here = at.to_vec();
                here.push(Step::Key(k.clone()));
                out.push(here.clone());
                walk_value(v, &here, out);
            }
        }
        fn walk_value(v: &toml::Value, at: &[Step], out: &mut Vec<Vec<Step>>) {
            match v {
                toml::Value::Table(t) => keys(t, at, out),
                toml::Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let mut here = at.to_vec();
                        here.push(Step::Index(i));
                        walk_value(item, &here, out);
                    }
                }
                _ => {}
            }
        }
        #[derive(Clone, Debug)]
        enum Step {
            Key(String),
            Index(usize),
        }
        fn rename(v: &mut toml::Value, path: &[Step], to: &str) {
            match (path, v) {
                ([Step::Key(last)], toml::Value::Table(t)) => {
                    let value = t.remove(last).unwrap();
                    t.insert(to.to_owned(), value);
                }
                ([Step::Key(k), rest @ ..], toml::Value::Table(t)) => {
                    rename(t.get_mut(k).unwrap(), rest, to);
                }
                ([Step::Index(i), rest @ ..], toml::Value::Array(a)) => {
                    rename(&mut a[*i], rest, to);
                }
                (p, v) => panic!("{p:?} in {v:?}"),
            }
        }
        let mut paths = Vec::new();
        keys(&table, &[], &mut paths);
        assert!(paths.len() > 60, "{}", paths.len());
        for path in &paths {
            let Some(Step::Key(last)) = path.last() else {
                unreachable!()
            };
            let mut first = last.chars();
            let capital: String = first
                .next()
                .map(|c| c.to_ascii_uppercase())
                .into_iter()
                .chain(first)
                .collect();
            for wrong in [
                format!("{last}s"),
                last[..last.len() - 1].to_owned(),
                capital,
            ] {
                let mut t = toml::Value::Table(table.clone());
                rename(&mut t, path, &wrong);
                let toml::Value::Table(t) = t else {
                    unreachable!()
                };
                let mut shown = String::new();
                for step in &path[..path.len() - 1] {
                    match step {
                        Step::Key(k) if shown.is_empty() => shown.push_str(k),
                        Step::Key(k) => shown.push_str(&format!(".{k}")),
                        Step::Index(i) => shown.push_str(&format!("[{i}]")),
                    }
                }
                let want = walk::child_key(&shown, &wrong);
                let e = Config::from_table(t, &no_env).unwrap_err();
                assert!(
                    e.problems
                        .iter()
                        .any(|p| p.starts_with(&format!("{want}: unknown key (expected one of: "))),
                    "{want}: {e}"
                );
            }
        }
    }

    #[test]
    fn audit_and_keys_sections_are_read_and_checked() {
        let signer = enclave_audit::Signer::from_seed("old.example/audit", &[1; 32]).unwrap();
        let c = parse(&format!(
            "[audit]\norigin = \"enclave.example.gov/audit\"\ncheckpoint_interval_secs = 5\n\
             commit_delay_us = 250\ncheckpoint_dir = \"/var/cp\"\ncheckpoint_command = [\"/bin/publish\", \"-x\"]\n\
             previous_verifier_keys = [\"{}\"]\n[keys]\nmaster_key_file = \"/run/m.key\"\n",
            signer.verifier_key()
        ))
        .unwrap();
        assert_eq!(c.audit.origin, "enclave.example.gov/audit");
        assert_eq!(
            c.audit.checkpoint_interval,
            std::time::Duration::from_secs(5)
        );
        assert_eq!(c.audit.commit_delay, std::time::Duration::from_micros(250));
        assert_eq!(c.audit.checkpoint_dir, Some(PathBuf::from("/var/cp")));
        assert_eq!(c.audit.checkpoint_command, ["/bin/publish", "-x"]);
        assert_eq!(c.audit.previous_verifier_keys, [signer.verifier_key()]);
        assert_eq!(c.keys.master_key_file, Some(PathBuf::from("/run/m.key")));
        assert_eq!(c.keys.audit_signing_key_file, None);
        assert_eq!(Config::defaults().audit, AuditConfig::default());

        let e = parse(
            "[audit]\norigin = \"a b\"\ncheckpoint_interval_secs = 0\ncheckpoint_command = []\n\
             commit_delay_us = 10001\n\
             previous_verifier_keys = [\"nope\"]\nextra = 1\n[keys]\nmaster_key_file = 3\n",
        )
        .unwrap_err();
        for want in [
            "audit.origin:",
            "audit.checkpoint_interval_secs:",
            "audit.checkpoint_command:",
            "audit.commit_delay_us:",
            "audit.previous_verifier_keys[0]:",
            "audit.extra: unknown key",
            "keys.master_key_file:",
        ] {
            assert!(
                e.problems.iter().any(|p| p.starts_with(want)),
                "missing {want:?} in {:?}",
                e.problems
            );
        }
    }

    #[test]
    fn no_storage_section_puts_sqlite_in_the_data_dir() {
        let c = parse("data_dir = \"/var/lib/enclave\"").unwrap();
        assert_eq!(
            c.storage.url.expose(),
            "sqlite:///var/lib/enclave/enclave.db"
        );
        let c = parse("data_dir = \"/var/lib/enclave\"\n[storage]").unwrap();
        assert_eq!(
            c.storage.url.expose(),
            "sqlite:///var/lib/enclave/enclave.db"
        );
        assert_eq!(
            Config::load(None).unwrap().data_dir,
            PathBuf::from("./enclave-data")
        );
    }

    #[test]
    fn the_memory_extractor_must_be_a_model_a_backend_serves() {
        let backend = "[[backends]]\nname = \"gov\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodels = [\"m\", { name = \"facts\", upstream = \"x\" }]\naccreditation = \"SECRET\"\noperators = \"USA\"\n";
        let c = parse(&format!("{backend}[memory]\nextractor = \"facts\"\n")).unwrap();
        assert_eq!(c.memory.extractor.as_deref(), Some("facts"));
        let e = parse(&format!("{backend}[memory]\nextractor = \"gpt-9\"\n")).unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        assert!(
            e.problems[0].starts_with("memory.extractor: no backend serves the model `gpt-9`"),
            "{e}"
        );
        let e = parse("[memory]\nextractor = \" \"\n").unwrap_err();
        assert!(
            e.problems[0].starts_with("memory.extractor: expected"),
            "{e}"
        );
    }

    #[test]
    fn the_memory_sync_interval_has_a_default_and_bounds() {
        use std::time::Duration;
        assert_eq!(
            parse("").unwrap().memory.sync_interval,
            Duration::from_millis(1000)
        );
        let c = parse("[memory]\nsync_interval_ms = 100\n").unwrap();
        assert_eq!(c.memory.sync_interval, Duration::from_millis(100));
        for bad in ["99", "60001", "-1"] {
            let e = parse(&format!("[memory]\nsync_interval_ms = {bad}\n")).unwrap_err();
            assert_eq!(
                e.problems,
                vec!["memory.sync_interval_ms: expected an integer from 100 to 60000".to_owned()],
                "{bad}"
            );
        }
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key_path() {
        let bad = r#"
listen = "localhost"
colour = "blue"
[storage]
url = "mysql://x"
[limits]
max_body_bytes = "lots"
max_concurrency = 0
flavour = "salty"
texture = 1
queue_timeout_ms = "soon"
[[backends]]
name = "a b"
kind = "magic"
models = []
accreditation = "SECRET//BOGUS//NOFORN//NOFORN"
operators = "USA, XYZ"
extra = 1
[[backends]]
name = "ok"
kind = "openai"
models = ["m", { name = "fast", upstrem = "x" }]
accreditation = "SECRET"
priority = "high"
weight = 0
bogus = true
[oidc]
issuer = "https://idp"
[oidc.claims]
tenant = 5
group = "g"
"#;
        let e = parse(bad).unwrap_err();
        let text = e.to_string();
        let want = [
            "backends[0].accreditation: not a valid marking (DUPLICATE_TOKEN",
            "backends[0].extra: unknown key",
            "backends[0].kind: unknown kind \"magic\"",
            "backends[0].models: lists no models",
            "backends[0].name: expected 1-64 characters",
            "backends[0].operators: unknown country code \"XYZ\"",
            "backends[1].base_url: required for kind = \"openai\"",
            "backends[1].bogus: unknown key",
            "backends[1].models[1].upstrem: unknown key (expected one of: name, upstream)",
            "backends[1].priority: expected an integer, found string",
            "backends[1].weight: expected an integer from 1 to 1000000",
            "colour: unknown key",
            "limits.flavour: unknown key",
            "limits.max_body_bytes: expected a size in bytes up to 4GiB",
            "limits.max_concurrency: expected an integer from 1 to 1000000",
            "limits.queue_timeout_ms: expected an integer, found string",
            "limits.texture: unknown key",
            "listen: expected an address",
            "oidc.audience: required",
            "oidc.claims.group: unknown key",
            "oidc.claims.tenant: expected a string, found integer 5",
            "oidc.jwks_file: set exactly one of jwks_file and jwks_url",
            "storage.url: expected sqlite://PATH or postgres://USER@HOST/DB",
        ];
        for (got, want) in e.problems.iter().zip(want) {
            assert!(got.starts_with(want), "{want:?} in:\n{text}");
        }
        assert_eq!(e.problems.len(), want.len(), "{text}");
        assert!(text.starts_with("invalid configuration (23 problems):\n  backends[0]"));
    }

    #[test]
    fn problems_are_sorted_by_key_path_with_indices_by_number() {
        let mut backends = String::new();
        for i in 0..12 {
            backends.push_str(&format!(
                "[[backends]]\nname = \"b{i}\"\nkind = \"openai\"\nbase_url = \"https://x/v1\"\nmodels = [\"m\"]\naccreditation = \"SECRET\"\n{}",
                if i % 5 == 0 { "weight = 0\n" } else { "" }
            ));
        }
        let e = parse(&format!("zz = 1\n{backends}")).unwrap_err();
        let paths: Vec<&str> = e.problems.iter().map(|p| path_of(p)).collect();
        assert_eq!(
            paths,
            [
                "backends[0].weight",
                "backends[5].weight",
                "backends[10].weight",
                "zz"
            ]
        );
    }

    #[test]
    fn hostile_and_malformed_files_get_errors_not_panics() {
        for text in [
            "",
            "=",
            "[[backends]]",
            "backends = 5",
            "backends = [1, \"x\"]",
            "[storage]\nurl = 5",
            "storage = [\"sqlite://x.db\"]",
            "listen = \"127.0.0.1:99999\"",
            "listen = 1979-05-27T07:32:00Z",
            "[limits]\nmax_body_bytes = -1",
            "[limits]\nmax_body_bytes = \"99999999999999999999GiB\"",
            "[limits]\nrequest_timeout_ms = 1e9",
            "[limits]\nidle_timeout_ms = 0",
            "[oidc]\nissuer = \"x\"",
            "[tls]\nclient_map = [{ subject = \"CN=x\" }]",
            "[tls]\nclient_map = \"CN=x\"",
            "[policy]\nchat_completions = [1]",
            "\u{feff}listen = \"127.0.0.1:1\"",
            &"[a]\n".repeat(10_000),
            &format!("x = {}", "[".repeat(100_000)),
            &format!("backends = [{}]", vec!["{ name = 1 }"; 1_000].join(", ")),
        ] {
            if let Err(e) = parse(text) {
                assert!(!e.problems.is_empty(), "{text:.40}");
                assert!(e.problems.len() <= 201, "{text:.40}: {}", e.problems.len());
            }
        }
        let e = parse("[[backends]]").unwrap_err();
        assert_eq!(e.problems.len(), 4, "{e}");
        let e = parse("storage = [\"mysql://x\"]").unwrap_err();
        assert_eq!(e.problems, ["storage: expected a table, found array"]);
        let e = parse("[limits]\nidle_timeout_ms = 0").unwrap_err();
        assert!(
            e.problems[0].starts_with("limits.idle_timeout_ms: expected a positive number"),
            "{e}"
        );
        let e = parse("=").unwrap_err();
        assert!(
            e.problems[0].starts_with("TOML syntax: line 1, column 1: "),
            "{e}"
        );
        let e = parse("listen = \"127.0.0.1:1\"\n[storage]\nurl = \"postgres://u:hunter2@h/d")
            .unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        assert!(
            e.problems[0].starts_with("TOML syntax: line 3, column "),
            "{e}"
        );
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let dup = format!(
            "{}\n{}",
            MINIMAL,
            &MINIMAL[MINIMAL.find("[[backends]]").unwrap()..]
        );
        let e = parse(&dup).unwrap_err();
        assert_eq!(
            e.problems,
            ["backends[1].name: duplicate backend name \"gov-secret\""]
        );
        let e = Config::load(Some(Path::new("/nonexistent/enclave.toml"))).unwrap_err();
        assert!(e.to_string().contains("cannot read the file"));
    }

    #[test]
    fn sizes_aliases_operators_and_auth_sections() {
        let c = parse(
            r#"
[limits]
max_body_bytes = "1MiB"
[[backends]]
name = "allied"
kind = "openai"
base_url = "https://example.invalid/v1/"
models = [{ name = "fast", upstream = "gpt-4o-mini" }, "gpt-4o"]
accreditation = "secret//rel to usa, gbr"
operators = ["USA", "GBR"]
priority = 5
weight = 3
[oidc]
issuer = "https://idp"
audience = "enclave"
jwks_url = "https://idp/jwks"
[oidc.claims]
tenant = "org"
[tls]
cert = "c.pem"
key = "k.pem"
client_ca = "ca.pem"
[[tls.client_map]]
san = "1234567890@mil"
principal = "jdoe"
[policy.chat_completions]
allow_parts = ["image_url", "file"]
[policy.embeddings]
allow_token_arrays = true
[metrics]
require_auth = true
"#,
        )
        .unwrap();
        assert_eq!(c.limits.max_body_bytes, 1 << 20);
        let b = &c.backends[0];
        assert_eq!(b.base_url.as_deref(), Some("https://example.invalid/v1"));
        assert_eq!(b.accreditation.label().banner(), "SECRET//REL TO USA, GBR");
        assert_eq!(b.accreditation.operators().len(), 2);
        assert_eq!((b.priority, b.weight), (5, 3));
        assert_eq!(b.models[0].upstream, "gpt-4o-mini");
        assert_eq!(b.models[1].name, "gpt-4o");
        let o = c.oidc.unwrap();
        assert_eq!(o.claims.tenant, "org");
        assert_eq!(o.claims.principal, "sub");
        assert_eq!(c.tls.unwrap().client_map[0].principal, "jdoe");
        let chat = c.policy.chat_completions;
        assert!(chat.images && chat.files && !chat.audio);
        assert!(c.policy.embeddings.token_arrays);
        assert!(c.metrics.require_auth);
        let e = parse(
            "[[backends]]\nname = \"x\"\nkind = \"openai\"\nbase_url = \"https://x/v1\"\nmodels = \"gpt-4o\"\naccreditation = \"SECRET\"\noperators = 5\n[policy.chat_completions]\nallow_parts = [\"video\"]\n",
        )
        .unwrap_err();
        assert_eq!(
            e.problems,
            [
                "backends[0].models: expected an array of model names or { name, upstream } tables, found string",
                "backends[0].operators: expected a trigraph like \"USA\" or a list of trigraphs, found integer 5",
                "policy.chat_completions.allow_parts: unknown part type \"video\": expected \"image_url\", \"input_audio\" or \"file\"",
            ]
        );
    }

    #[test]
    fn the_environment_is_read_through_one_lookup() {
        let vars = BTreeMap::from([
            ("ENCLAVE_MODELS_DIR", "/srv/models"),
            ("GOV_SECRET_KEY", "sk-planted-secret"),
        ]);
        let env = |name: &str| vars.get(name).map(OsString::from);
        let c = Config::parse_with_env(MINIMAL, &env).unwrap();
        assert_eq!(c.models_dir.path(), Path::new("/srv/models"));
        assert_eq!(c.models_dir.source(), ModelsDirSource::Env);
        let key = c.backends[0].api_key.as_ref().unwrap();
        assert_eq!(key.expose(), "sk-planted-secret");
        let shown = format!("{c:?}");
        assert!(!shown.contains("sk-planted-secret"), "{shown}");
        // The file's models_dir comes first; no file at all still reads the environment.
        let c = Config::parse_with_env("models_dir = \"./m\"", &env).unwrap();
        assert_eq!(c.models_dir.source(), ModelsDirSource::Config);
        let c = Config::load_with_env(None, &env).unwrap();
        assert_eq!(c.models_dir.path(), Path::new("/srv/models"));
        // An empty variable is no key.
        let empty = |name: &str| (name == "GOV_SECRET_KEY").then(OsString::new);
        assert!(
            Config::parse_with_env(MINIMAL, &empty).unwrap().backends[0]
                .api_key
                .is_none()
        );
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            let bad = |name: &str| {
                (name == "GOV_SECRET_KEY").then(|| OsString::from_vec(vec![0x73, 0xff]))
            };
            let e = Config::parse_with_env(MINIMAL, &bad).unwrap_err();
            assert_eq!(
                e.problems,
                [
                    "backends[0].api_key_env: the environment variable GOV_SECRET_KEY is set but not valid UTF-8"
                ]
            );
        }
    }

    #[test]
    fn a_database_password_never_shows_in_debug_or_the_summary() {
        let c = parse("[storage]\nurl = \"postgres://enclave:hunter2@db/enclave\"").unwrap();
        assert_eq!(
            c.storage.url.expose(),
            "postgres://enclave:hunter2@db/enclave"
        );
        let shown = format!("{c:?} {}", c.storage.url);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("postgres://enclave:***@db/enclave"),
            "{shown}"
        );
    }
}
