//! The configuration file: one TOML document, read into typed values.
//!
//! Every key is checked: unknown keys are rejected, and *all* problems in a file are reported at
//! once, each with its key path (`backends[1].accreditation: …`), so an operator fixes a file in
//! one pass. Everything but `[[backends]]` has a safe default, and no file at all is a valid
//! configuration (the embedded defaults).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use enclave_auth::{OidcConfig, TlsConfig};
use enclave_label::{Accreditation, Country, Mode, parse_marking};

/// A whole, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the server listens.
    pub listen: SocketAddr,
    /// Where keys, the SQLite database and other state live.
    pub data_dir: PathBuf,
    /// Where the unzipped model wheels live, when set.
    pub models_dir: Option<PathBuf>,
    /// The database.
    pub storage: Storage,
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
    /// The audit log's checkpoints (`[audit]`).
    pub audit: AuditConfig,
    /// Where the master key and the audit signing key come from (`[keys]`).
    pub keys: KeysConfig,
    /// Where the file was read from (`None` for the embedded defaults).
    pub source: Option<PathBuf>,
}

/// Per-route content policy: which uninspectable content (images, audio, files, token
/// arrays) a route accepts. The default accepts none (`unsupported_content`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyConfig {
    /// `[policy.chat_completions] allow_parts`.
    pub chat_completions: enclave_api::ContentPolicy,
    /// `[policy.embeddings] allow_token_arrays`.
    pub embeddings: enclave_api::ContentPolicy,
}

/// The `/metrics` endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Require credentials with the `metrics`, `auditor` or `admin` role (default: open, as
    /// `/healthz`).
    pub require_auth: bool,
}

/// The audit log: the name and key of its checkpoints and where copies of them go (`[audit]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// `origin`: the log's name in its signed checkpoints, also the signing key's name.
    pub origin: String,
    /// `checkpoint_interval_secs`: how often a checkpoint is signed when the log grew.
    pub checkpoint_interval: Duration,
    /// `checkpoint_dir`: a directory each new checkpoint is also written to.
    pub checkpoint_dir: Option<PathBuf>,
    /// `checkpoint_command`: a program and its arguments (no shell) each new checkpoint is
    /// piped to; empty for none.
    pub checkpoint_command: Vec<String>,
    /// `previous_verifier_keys`: verifier keys of earlier signing keys, still trusted.
    pub previous_verifier_keys: Vec<enclave_audit::VerifierKey>,
}

/// The default `[audit] origin`.
pub const DEFAULT_AUDIT_ORIGIN: &str = "enclave.local/audit";

impl Default for AuditConfig {
    fn default() -> AuditConfig {
        AuditConfig {
            origin: DEFAULT_AUDIT_ORIGIN.to_owned(),
            checkpoint_interval: Duration::from_secs(60),
            checkpoint_dir: None,
            checkpoint_command: Vec::new(),
            previous_verifier_keys: Vec::new(),
        }
    }
}

/// Where the install's secrets come from besides the data directory (`[keys]`); the
/// environment variables `ENCLAVE_MASTER_KEY` and `ENCLAVE_AUDIT_SIGNING_KEY` take precedence.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeysConfig {
    /// `master_key_file`: the 32-byte master key, shared by every replica.
    pub master_key_file: Option<PathBuf>,
    /// `audit_signing_key_file`: the Ed25519 PKCS#8 key that signs audit checkpoints.
    pub audit_signing_key_file: Option<PathBuf>,
}

impl KeysConfig {
    /// These files and the environment's keys (read through `lookup`), for
    /// [`enclave_store::install::prepare_with`].
    pub fn sources(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> enclave_store::install::KeySources {
        enclave_store::install::KeySources {
            master_key_file: self.master_key_file.clone(),
            audit_signing_key_file: self.audit_signing_key_file.clone(),
            ..enclave_store::install::KeySources::default()
        }
        .with_env(lookup)
    }
}

/// The database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Storage {
    /// `sqlite://path` or `postgres://user@host/db`.
    pub url: String,
}

/// Request limits and timeouts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body accepted (bytes); larger gets 413.
    pub max_body_bytes: usize,
    /// Requests processed at once; past it requests wait in a bounded queue.
    pub max_concurrency: usize,
    /// Requests allowed to wait for a slot; past it requests are shed with 503 `overloaded`.
    pub max_queue: usize,
    /// How long a queued request may wait for a slot before it is shed.
    pub queue_timeout: Duration,
    /// Deadline for one whole request to an upstream, retries included (until headers arrive).
    pub request_timeout: Duration,
    /// Connect timeout to an upstream.
    pub connect_timeout: Duration,
    /// Retries per backend on connect errors, 5xx and 429.
    pub max_retries: u32,
    /// Time allowed for in-flight requests at shutdown.
    pub shutdown_grace: Duration,
    /// Default per-key request rate (requests per minute; 0 = unlimited).
    pub requests_per_minute: u32,
    /// Default per-key token rate (tokens per minute; 0 = unlimited).
    pub tokens_per_minute: u32,
    /// Requests waiting for each embedded model; past it: 503 `overloaded`.
    pub local_queue: usize,
    /// Server threads, each with its own event loop (0 = one per CPU core).
    pub worker_threads: usize,
    /// Longest wait for a request's headers (also bounds an idle keep-alive connection).
    pub header_read_timeout: Duration,
    /// Longest time to receive a whole request body.
    pub body_read_timeout: Duration,
    /// A connection that makes no progress either way for this long is closed (a client that
    /// stops reading a stream, a stalled upload).
    pub idle_timeout: Duration,
    /// Longest silence from a backend in the middle of a streamed answer.
    pub stream_idle_timeout: Duration,
    /// Longest whole request, streamed answer included.
    pub max_request: Duration,
    /// Open connections at most; past it new ones get 503 `overloaded` and are closed.
    pub max_connections: usize,
    /// Open connections per client IP address at most.
    pub max_connections_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: 32 * 1024 * 1024,
            max_concurrency: 256,
            max_queue: 1024,
            queue_timeout: Duration::from_millis(250),
            request_timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(5),
            max_retries: 2,
            shutdown_grace: Duration::from_secs(30),
            requests_per_minute: 0,
            tokens_per_minute: 0,
            local_queue: 16,
            worker_threads: 0,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            stream_idle_timeout: Duration::from_secs(120),
            max_request: Duration::from_secs(30 * 60),
            max_connections: 4096,
            max_connections_per_ip: 256,
        }
    }
}

/// Which implementation serves a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// An OpenAI-compatible HTTP server.
    OpenAi,
    /// The models embedded in the binary.
    Local,
    /// Amazon Bedrock.
    Bedrock,
}

/// A model name clients use and the name the upstream knows it by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelAlias {
    /// What clients send in `model`.
    pub name: String,
    /// What is sent upstream.
    pub upstream: String,
}

/// One `[[backends]]` entry.
#[derive(Clone, Debug)]
pub struct BackendConfig {
    /// Unique name (in metrics, logs and errors).
    pub name: String,
    /// Implementation.
    pub kind: BackendKind,
    /// Base URL including `/v1` (for `openai`).
    pub base_url: Option<String>,
    /// Environment variable holding the upstream API key.
    pub api_key_env: Option<String>,
    /// Models served.
    pub models: Vec<ModelAlias>,
    /// The highest label the backend may process (`accreditation`) and the nationalities of
    /// who operates it (`operators`, default `USA`).
    pub accreditation: Accreditation,
    /// Lower is tried first (default 100).
    pub priority: u32,
    /// Share of traffic among backends of equal priority (default 1).
    pub weight: u32,
    /// Allow `http://` to a host that is not loopback (default false: refused, since prompts
    /// and the upstream key would cross the network in clear).
    pub allow_cleartext: bool,
}

/// Every problem found in a configuration file, each with its key path.
#[derive(Debug)]
pub struct ConfigError {
    /// The file, if any.
    pub source: Option<PathBuf>,
    /// `key.path: what is wrong`, in file order.
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

/// The starter configuration `enclave init` writes: every key with its default, commented.
pub const STARTER_CONFIG: &str = include_str!("starter.toml");

impl Config {
    /// Reads and validates the file at `path`, or returns the embedded defaults when `None`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] listing every problem (unreadable file, TOML syntax, unknown keys, wrong
    /// types, invalid markings, duplicate backend names, …).
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::defaults());
        };
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source: Some(path.to_path_buf()),
            problems: vec![format!("cannot read the file: {e}")],
        })?;
        let mut config = Config::parse(&text).map_err(|mut e| {
            e.source = Some(path.to_path_buf());
            e
        })?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// The embedded defaults: `127.0.0.1:8080`, `./enclave-data`, SQLite, no backends.
    pub fn defaults() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./enclave-data"),
            models_dir: None,
            storage: Storage {
                url: "sqlite://./enclave-data/enclave.db".into(),
            },
            limits: Limits::default(),
            backends: Vec::new(),
            oidc: None,
            tls: None,
            policy: PolicyConfig::default(),
            metrics: MetricsConfig::default(),
            audit: AuditConfig::default(),
            keys: KeysConfig::default(),
            source: None,
        }
    }

    /// Parses configuration text.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] listing every problem.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
            source: None,
            problems: vec![format!("TOML syntax: {}", e.to_string().trim_end())],
        })?;
        let mut r = Reader::default();
        let mut config = Config::defaults();
        let root = Obj::new(&table, "");

        if let Some(v) = r.string(&root, "listen") {
            match v.parse::<SocketAddr>() {
                Ok(a) => config.listen = a,
                Err(_) => r.problem("listen", "expected an address like \"127.0.0.1:8080\""),
            }
        }
        let data_dir_set = root.table.contains_key("data_dir");
        if let Some(v) = r.path(&root, "data_dir") {
            config.data_dir = v;
        }
        config.models_dir = r.path(&root, "models_dir");
        if let Some(storage) = r.table(&root, "storage") {
            if let Some(url) = r.string(&storage, "url") {
                if url.starts_with("sqlite:")
                    || url.starts_with("postgres://")
                    || url.starts_with("postgresql://")
                {
                    config.storage.url = url;
                } else {
                    r.problem(
                        "storage.url",
                        "expected sqlite://PATH or postgres://USER@HOST/DB",
                    );
                }
            }
            r.unknown(&storage, &["url"]);
        } else if data_dir_set {
            config.storage.url =
                format!("sqlite://{}", config.data_dir.join("enclave.db").display());
        }
        if let Some(limits) = r.table(&root, "limits") {
            read_limits(&mut r, &limits, &mut config.limits);
        }
        if let Some(list) = r.array_of_tables(&root, "backends") {
            for b in &list {
                if let Some(backend) = read_backend(&mut r, b) {
                    config.backends.push(backend);
                }
            }
        }
        if config
            .backends
            .iter()
            .filter(|b| b.kind == BackendKind::Local)
            .count()
            > 1
        {
            r.problem(
                "backends",
                "at most one kind = \"local\" backend: the embedded models are loaded once",
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, b) in config.backends.iter().enumerate() {
            if !seen.insert(b.name.clone()) {
                r.problem(
                    &format!("backends[{i}].name"),
                    &format!("duplicate backend name {:?}", b.name),
                );
            }
        }
        if let Some(oidc) = r.table(&root, "oidc") {
            config.oidc = read_oidc(&mut r, &oidc);
        }
        if let Some(tls) = r.table(&root, "tls") {
            config.tls = read_tls(&mut r, &tls);
        }
        if let Some(policy) = r.table(&root, "policy") {
            config.policy = read_policy(&mut r, &policy);
        }
        if let Some(metrics) = r.table(&root, "metrics") {
            if let Some(v) = r.bool(&metrics, "require_auth") {
                config.metrics.require_auth = v;
            }
            r.unknown(&metrics, &["require_auth"]);
        }
        if let Some(audit) = r.table(&root, "audit") {
            config.audit = read_audit(&mut r, &audit);
        }
        if let Some(keys) = r.table(&root, "keys") {
            config.keys = read_keys(&mut r, &keys);
        }
        r.unknown(
            &root,
            &[
                "listen",
                "data_dir",
                "models_dir",
                "storage",
                "limits",
                "backends",
                "oidc",
                "tls",
                "policy",
                "metrics",
                "audit",
                "keys",
            ],
        );
        if r.problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                source: None,
                problems: r.problems,
            })
        }
    }
}

fn read_limits(r: &mut Reader, t: &Obj<'_>, l: &mut Limits) {
    if let Some(v) = r.size(t, "max_body_bytes") {
        l.max_body_bytes = v;
    }
    if let Some(v) = r.uint(t, "max_concurrency", 1, 1_000_000) {
        l.max_concurrency = v as usize;
    }
    if let Some(v) = r.uint(t, "max_queue", 0, 10_000_000) {
        l.max_queue = v as usize;
    }
    if let Some(v) = r.millis(t, "queue_timeout_ms") {
        l.queue_timeout = v;
    }
    if let Some(v) = r.millis(t, "request_timeout_ms") {
        l.request_timeout = v;
    }
    if let Some(v) = r.millis(t, "connect_timeout_ms") {
        l.connect_timeout = v;
    }
    if let Some(v) = r.uint(t, "max_retries", 0, 10) {
        l.max_retries = v as u32;
    }
    if let Some(v) = r.millis(t, "shutdown_grace_ms") {
        l.shutdown_grace = v;
    }
    if let Some(v) = r.uint(t, "requests_per_minute", 0, u64::from(u32::MAX)) {
        l.requests_per_minute = v as u32;
    }
    if let Some(v) = r.uint(t, "tokens_per_minute", 0, u64::from(u32::MAX)) {
        l.tokens_per_minute = v as u32;
    }
    if let Some(v) = r.uint(t, "local_queue", 1, 100_000) {
        l.local_queue = v as usize;
    }
    if let Some(v) = r.uint(t, "worker_threads", 0, 1024) {
        l.worker_threads = v as usize;
    }
    for (key, slot) in [
        ("header_read_timeout_ms", &mut l.header_read_timeout),
        ("body_read_timeout_ms", &mut l.body_read_timeout),
        ("idle_timeout_ms", &mut l.idle_timeout),
        ("stream_idle_timeout_ms", &mut l.stream_idle_timeout),
        ("max_request_ms", &mut l.max_request),
    ] {
        if let Some(v) = r.millis(t, key) {
            if v.is_zero() {
                // SECURITY: zero would mean "no bound"; every wait has one.
                r.problem(&t.key(key), "expected a positive number of milliseconds");
            } else {
                *slot = v;
            }
        }
    }
    if let Some(v) = r.uint(t, "max_connections", 1, 10_000_000) {
        l.max_connections = v as usize;
    }
    if let Some(v) = r.uint(t, "max_connections_per_ip", 1, 10_000_000) {
        l.max_connections_per_ip = v as usize;
    }
    r.unknown(
        t,
        &[
            "max_body_bytes",
            "max_concurrency",
            "max_queue",
            "queue_timeout_ms",
            "request_timeout_ms",
            "connect_timeout_ms",
            "max_retries",
            "shutdown_grace_ms",
            "requests_per_minute",
            "tokens_per_minute",
            "local_queue",
            "worker_threads",
            "header_read_timeout_ms",
            "body_read_timeout_ms",
            "idle_timeout_ms",
            "stream_idle_timeout_ms",
            "max_request_ms",
            "max_connections",
            "max_connections_per_ip",
        ],
    );
}

fn read_policy(r: &mut Reader, t: &Obj<'_>) -> PolicyConfig {
    let mut p = PolicyConfig::default();
    if let Some(chat) = r.table(t, "chat_completions") {
        let key = chat.key("allow_parts");
        match chat.table.get("allow_parts") {
            None => {}
            Some(toml::Value::Array(items)) => {
                for item in items {
                    match item.as_str().and_then(enclave_api::PartKind::from_type) {
                        Some(enclave_api::PartKind::Image) => p.chat_completions.images = true,
                        Some(enclave_api::PartKind::Audio) => p.chat_completions.audio = true,
                        Some(enclave_api::PartKind::File) => p.chat_completions.files = true,
                        None => r.problem(
                            &key,
                            &format!(
                                "unknown part type {item:?}: expected \"image_url\", \"input_audio\" or \"file\""
                            ),
                        ),
                    }
                }
            }
            Some(_) => r.problem(&key, "expected a list of part types"),
        }
        r.unknown(&chat, &["allow_parts"]);
    }
    if let Some(emb) = r.table(t, "embeddings") {
        if let Some(v) = r.bool(&emb, "allow_token_arrays") {
            p.embeddings.token_arrays = v;
        }
        r.unknown(&emb, &["allow_token_arrays"]);
    }
    r.unknown(t, &["chat_completions", "embeddings"]);
    p
}

fn read_backend(r: &mut Reader, b: &Obj<'_>) -> Option<BackendConfig> {
    let before = r.problems.len();
    let name = r.required_string(b, "name");
    if let Some(n) = &name
        && (n.is_empty()
            || n.len() > 64
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
    {
        r.problem(
            &b.key("name"),
            "expected 1-64 characters of A-Z a-z 0-9 . _ -",
        );
    }
    let kind = match r.required_string(b, "kind").as_deref() {
        Some("openai") => Some(BackendKind::OpenAi),
        Some("local") => Some(BackendKind::Local),
        Some("bedrock") => Some(BackendKind::Bedrock),
        Some(other) => {
            r.problem(
                &b.key("kind"),
                &format!("unknown kind {other:?}: expected \"openai\", \"local\" or \"bedrock\""),
            );
            None
        }
        None => None,
    };
    let base_url = r.string(b, "base_url");
    if let Some(u) = &base_url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        r.problem(&b.key("base_url"), "expected an http:// or https:// URL");
    }
    if kind == Some(BackendKind::OpenAi) && base_url.is_none() {
        r.problem(&b.key("base_url"), "required for kind = \"openai\"");
    }
    if kind == Some(BackendKind::Bedrock) {
        r.problem(
            &b.key("kind"),
            "kind = \"bedrock\" is not available in this build yet",
        );
    }
    if kind == Some(BackendKind::Local) && base_url.is_some() {
        r.problem(
            &b.key("base_url"),
            "not used by kind = \"local\" (the models run in-process)",
        );
    }
    let api_key_env = r.string(b, "api_key_env");
    let models = read_models(r, b);
    if kind == Some(BackendKind::Local) {
        let known = [
            enclave_models::local::CHAT_MODEL,
            enclave_models::local::EMBED_MODEL,
        ];
        for m in &models {
            if !known.contains(&m.upstream.as_str()) {
                r.problem(
                    &b.key("models"),
                    &format!(
                        "the local backend serves {:?} and {:?}, not {:?}",
                        known[0], known[1], m.upstream
                    ),
                );
            }
        }
    }
    let accreditation_label =
        r.required_string(b, "accreditation").and_then(|s| {
            match parse_marking(&s, Mode::Lenient, None) {
                Ok(m) => Some(m.label),
                Err(e) => {
                    r.problem(
                        &b.key("accreditation"),
                        &format!("not a valid marking ({e})"),
                    );
                    None
                }
            }
        });
    let operators = read_operators(r, b);
    let priority = r
        .uint(b, "priority", 0, 1_000_000)
        .map_or(100, |v| v as u32);
    let weight = r.uint(b, "weight", 1, 1_000_000).map_or(1, |v| v as u32);
    let allow_cleartext = r.bool(b, "allow_cleartext").unwrap_or(false);
    if let Some(u) = &base_url
        && !allow_cleartext
        && is_cleartext_remote(u)
    {
        // SECURITY: prompts at the backend's label and the upstream key would cross a network
        // unencrypted.
        r.problem(
            &b.key("base_url"),
            "http:// to a host that is not loopback sends prompts and the API key in clear: use https://, or set allow_cleartext = true if the network is protected otherwise",
        );
    }
    r.unknown(
        b,
        &[
            "name",
            "kind",
            "base_url",
            "api_key_env",
            "models",
            "accreditation",
            "operators",
            "priority",
            "weight",
            "allow_cleartext",
        ],
    );
    if r.problems.len() != before {
        return None;
    }
    Some(BackendConfig {
        name: name?,
        kind: kind?,
        base_url: base_url.map(|u| u.trim_end_matches('/').to_owned()),
        api_key_env,
        models,
        accreditation: Accreditation::new(accreditation_label?, operators?),
        priority,
        weight,
        allow_cleartext,
    })
}

/// Whether `url` is `http://` to a host other than a loopback address or `localhost`.
pub fn is_cleartext_remote(url: &str) -> bool {
    let Some(rest) = url
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("http://"))
        .and_then(|_| url.get(7..))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    if host.eq_ignore_ascii_case("localhost") {
        return false;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => !ip.is_loopback(),
        Err(_) => true,
    }
}

fn read_models(r: &mut Reader, b: &Obj<'_>) -> Vec<ModelAlias> {
    let key = b.key("models");
    let Some(value) = b.table.get("models") else {
        r.problem(&key, "required: the model names this backend serves");
        return Vec::new();
    };
    let Some(items) = value.as_array() else {
        r.problem(
            &key,
            "expected an array of names or { name, upstream } tables",
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (j, item) in items.iter().enumerate() {
        let path = format!("{key}[{j}]");
        match item {
            toml::Value::String(s) if valid_model(s) => out.push(ModelAlias {
                name: s.clone(),
                upstream: s.clone(),
            }),
            toml::Value::Table(t) => {
                let o = Obj::new(t, &path);
                let name = r.required_string(&o, "name");
                let upstream = r.string(&o, "upstream");
                r.unknown(&o, &["name", "upstream"]);
                if let Some(name) = name {
                    if valid_model(&name) {
                        out.push(ModelAlias {
                            upstream: upstream.unwrap_or_else(|| name.clone()),
                            name,
                        });
                    } else {
                        r.problem(
                            &o.key("name"),
                            "expected 1-128 printable characters without spaces",
                        );
                    }
                }
            }
            _ => r.problem(
                &path,
                "expected a model name (1-128 printable characters) or { name, upstream }",
            ),
        }
    }
    if items.is_empty() {
        r.problem(&key, "lists no models");
    }
    out
}

fn valid_model(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_graphic())
}

fn read_operators(r: &mut Reader, b: &Obj<'_>) -> Option<Vec<Country>> {
    let key = b.key("operators");
    let codes: Vec<String> = match b.table.get("operators") {
        None => return Some(vec![enclave_label::USA]),
        Some(toml::Value::String(s)) => s.split(',').map(|c| c.trim().to_owned()).collect(),
        Some(toml::Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned).unwrap_or_default())
            .collect(),
        Some(_) => {
            r.problem(
                &key,
                "expected a trigraph like \"USA\" or a list of trigraphs",
            );
            return None;
        }
    };
    let mut out = Vec::new();
    for c in codes {
        match Country::from_code(&c) {
            Some(country) => out.push(country),
            None => r.problem(
                &key,
                &format!("unknown country code {c:?}: expected trigraphs like \"USA\", \"GBR\""),
            ),
        }
    }
    if out.is_empty() {
        r.problem(&key, "lists no operators");
        return None;
    }
    Some(out)
}

fn read_oidc(r: &mut Reader, t: &Obj<'_>) -> Option<OidcConfig> {
    let before = r.problems.len();
    let issuer = r.required_string(t, "issuer");
    let audience = r.required_string(t, "audience");
    let file = r.path(t, "jwks_file");
    let url = r.string(t, "jwks_url");
    let jwks = match (file, url) {
        (Some(f), None) => Some(enclave_auth::JwksSource::File(f)),
        (None, Some(u)) if u.starts_with("http://") || u.starts_with("https://") => {
            Some(enclave_auth::JwksSource::Url(u))
        }
        (None, Some(_)) => {
            r.problem(&t.key("jwks_url"), "expected an http:// or https:// URL");
            None
        }
        _ => {
            r.problem(
                &t.key("jwks_file"),
                "set exactly one of jwks_file and jwks_url",
            );
            None
        }
    };
    let mut claims = enclave_auth::ClaimMap::default();
    if let Some(c) = r.table(t, "claims") {
        for (field, slot) in [
            ("principal", &mut claims.principal),
            ("tenant", &mut claims.tenant),
            ("clearance", &mut claims.clearance),
            ("nationality", &mut claims.nationality),
            ("role", &mut claims.role),
        ] {
            if let Some(v) = r.string(&c, field) {
                *slot = v;
            }
        }
        r.unknown(
            &c,
            &["principal", "tenant", "clearance", "nationality", "role"],
        );
    }
    let leeway = r.millis(t, "leeway_ms").unwrap_or(Duration::from_secs(60));
    let refresh_interval = r.uint(t, "refresh_interval_secs", 30, 24 * 3600);
    if refresh_interval.is_some() && matches!(jwks, Some(enclave_auth::JwksSource::File(_))) {
        r.problem(
            &t.key("refresh_interval_secs"),
            "applies to jwks_url only: a jwks_file is read again whenever it changes",
        );
    }
    r.unknown(
        t,
        &[
            "issuer",
            "audience",
            "jwks_file",
            "jwks_url",
            "claims",
            "leeway_ms",
            "refresh_interval_secs",
        ],
    );
    if r.problems.len() != before {
        return None;
    }
    Some(OidcConfig {
        issuer: issuer?,
        audience: audience?,
        jwks: jwks?,
        claims,
        leeway,
        refresh_interval: Duration::from_secs(refresh_interval.unwrap_or(300)),
    })
}

fn read_tls(r: &mut Reader, t: &Obj<'_>) -> Option<TlsConfig> {
    let before = r.problems.len();
    let cert = r.required_path(t, "cert");
    let key = r.required_path(t, "key");
    let client_ca = r.path(t, "client_ca");
    let mut crl_files = Vec::new();
    match t.table.get("crl_files") {
        None => {}
        Some(toml::Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(path) if !path.is_empty() => crl_files.push(PathBuf::from(path)),
                    _ => r.problem(
                        &format!("{}[{i}]", t.key("crl_files")),
                        "expected the path of a CRL file (PEM or DER)",
                    ),
                }
            }
        }
        Some(other) => r.problem(
            &t.key("crl_files"),
            &format!(
                "expected an array of CRL file paths, found {}",
                other.type_str()
            ),
        ),
    }
    let mut client_map = Vec::new();
    if let Some(list) = r.array_of_tables(t, "client_map") {
        for m in &list {
            let subject = r.string(m, "subject");
            let common_name = r.string(m, "common_name");
            let san = r.string(m, "san");
            let issuer = r.path(m, "issuer");
            let principal = r.required_string(m, "principal");
            r.unknown(m, &["subject", "common_name", "san", "issuer", "principal"]);
            let matcher = match (subject, common_name, san) {
                (Some(s), None, None) => match s.parse::<enclave_auth::dn::DistinguishedName>() {
                    Ok(dn) => Some(enclave_auth::CertMatch::Subject(dn)),
                    Err(e) => {
                        let hint = if s.contains('=') {
                            ""
                        } else {
                            " (for a common name alone, write common_name = \"...\")"
                        };
                        r.problem(&m.key("subject"), &format!("{e}{hint}"));
                        None
                    }
                },
                (None, Some(cn), None) => Some(enclave_auth::CertMatch::CommonName(cn)),
                (None, None, Some(s)) => Some(enclave_auth::CertMatch::San(s)),
                _ => {
                    r.problem(
                        &m.key("subject"),
                        "set exactly one of subject, common_name and san",
                    );
                    None
                }
            };
            if let (Some(matcher), Some(principal)) = (matcher, principal) {
                client_map.push(enclave_auth::CertMapping {
                    matcher,
                    issuer,
                    principal,
                });
            }
        }
    }
    if client_ca.is_none() {
        if !client_map.is_empty() {
            r.problem(
                &t.key("client_ca"),
                "required when client_map is set: client certificates must chain to it",
            );
        }
        if !crl_files.is_empty() {
            r.problem(
                &t.key("client_ca"),
                "required when crl_files is set: the CRLs apply to client certificates",
            );
        }
    }
    r.unknown(t, &["cert", "key", "client_ca", "crl_files", "client_map"]);
    if r.problems.len() != before {
        return None;
    }
    Some(TlsConfig {
        cert: cert?,
        key: key?,
        client_ca,
        crl_files,
        client_map,
    })
}

fn read_audit(r: &mut Reader, t: &Obj<'_>) -> AuditConfig {
    let mut audit = AuditConfig::default();
    if let Some(origin) = r.string(t, "origin") {
        // The origin is also the signing key's name: both rules apply.
        let valid = enclave_audit::Checkpoint::new(&origin, 0, enclave_audit::empty_root())
            .and_then(|_| enclave_audit::Signer::from_seed(&origin, &[0; 32]))
            .is_ok();
        if valid {
            audit.origin = origin;
        } else {
            r.problem(
                &t.key("origin"),
                "expected a log name without spaces, `+` or control characters, e.g. \"enclave.example.gov/audit\"",
            );
        }
    }
    if let Some(secs) = r.uint(t, "checkpoint_interval_secs", 1, 24 * 3600) {
        audit.checkpoint_interval = Duration::from_secs(secs);
    }
    audit.checkpoint_dir = r.path(t, "checkpoint_dir");
    if let Some(value) = t.table.get("checkpoint_command") {
        let key = t.key("checkpoint_command");
        match value.as_array() {
            Some(items) if !items.is_empty() => {
                for item in items {
                    match item.as_str() {
                        Some(s) if !s.is_empty() => audit.checkpoint_command.push(s.to_owned()),
                        _ => {
                            r.problem(&key, "expected non-empty strings");
                            audit.checkpoint_command.clear();
                            break;
                        }
                    }
                }
            }
            _ => r.problem(
                &key,
                "expected a program and its arguments, e.g. [\"/usr/local/bin/publish\", \"--log\"]",
            ),
        }
    }
    if let Some(value) = t.table.get("previous_verifier_keys") {
        let key = t.key("previous_verifier_keys");
        match value.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    match item.as_str().map(str::parse::<enclave_audit::VerifierKey>) {
                        Some(Ok(k)) => audit.previous_verifier_keys.push(k),
                        _ => r.problem(
                            &format!("{key}[{i}]"),
                            "expected a verifier key `name+keyid+base64` (see `enclave audit key`)",
                        ),
                    }
                }
            }
            None => r.problem(&key, "expected an array of verifier keys"),
        }
    }
    r.unknown(
        t,
        &[
            "origin",
            "checkpoint_interval_secs",
            "checkpoint_dir",
            "checkpoint_command",
            "previous_verifier_keys",
        ],
    );
    audit
}

fn read_keys(r: &mut Reader, t: &Obj<'_>) -> KeysConfig {
    let keys = KeysConfig {
        master_key_file: r.path(t, "master_key_file"),
        audit_signing_key_file: r.path(t, "audit_signing_key_file"),
    };
    r.unknown(t, &["master_key_file", "audit_signing_key_file"]);
    keys
}

/// A table and its key path.
struct Obj<'a> {
    table: &'a toml::Table,
    path: String,
}

impl<'a> Obj<'a> {
    fn new(table: &'a toml::Table, path: &str) -> Obj<'a> {
        Obj {
            table,
            path: path.to_owned(),
        }
    }

    fn key(&self, k: &str) -> String {
        if self.path.is_empty() {
            k.to_owned()
        } else {
            format!("{}.{k}", self.path)
        }
    }
}

/// Collects problems while reading values.
#[derive(Default)]
struct Reader {
    problems: Vec<String>,
}

impl Reader {
    fn problem(&mut self, path: &str, what: &str) {
        self.problems.push(format!("{path}: {what}"));
    }

    fn unknown(&mut self, o: &Obj<'_>, known: &[&str]) {
        for k in o.table.keys() {
            if !known.contains(&k.as_str()) {
                let hint = known.join(", ");
                self.problem(&o.key(k), &format!("unknown key (expected one of: {hint})"));
            }
        }
    }

    fn string(&mut self, o: &Obj<'_>, k: &str) -> Option<String> {
        match o.table.get(k)? {
            toml::Value::String(s) => Some(s.clone()),
            other => {
                self.problem(
                    &o.key(k),
                    &format!("expected a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn bool(&mut self, o: &Obj<'_>, k: &str) -> Option<bool> {
        match o.table.get(k)? {
            toml::Value::Boolean(b) => Some(*b),
            other => {
                self.problem(
                    &o.key(k),
                    &format!("expected true or false, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn required_string(&mut self, o: &Obj<'_>, k: &str) -> Option<String> {
        if !o.table.contains_key(k) {
            self.problem(&o.key(k), "required");
            return None;
        }
        self.string(o, k)
    }

    fn path(&mut self, o: &Obj<'_>, k: &str) -> Option<PathBuf> {
        let s = self.string(o, k)?;
        if s.is_empty() {
            self.problem(&o.key(k), "expected a path, found an empty string");
            return None;
        }
        Some(PathBuf::from(s))
    }

    fn required_path(&mut self, o: &Obj<'_>, k: &str) -> Option<PathBuf> {
        if !o.table.contains_key(k) {
            self.problem(&o.key(k), "required");
            return None;
        }
        self.path(o, k)
    }

    fn uint(&mut self, o: &Obj<'_>, k: &str, min: u64, max: u64) -> Option<u64> {
        match o.table.get(k)? {
            toml::Value::Integer(i) if *i >= 0 && (min..=max).contains(&i.unsigned_abs()) => {
                Some(i.unsigned_abs())
            }
            toml::Value::Integer(_) => {
                self.problem(
                    &o.key(k),
                    &format!("expected an integer from {min} to {max}"),
                );
                None
            }
            other => {
                self.problem(
                    &o.key(k),
                    &format!("expected an integer, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn millis(&mut self, o: &Obj<'_>, k: &str) -> Option<Duration> {
        self.uint(o, k, 1, 24 * 3600 * 1000)
            .map(Duration::from_millis)
    }

    /// Bytes as an integer or a string with a unit (`"32MiB"`, `"512KiB"`).
    fn size(&mut self, o: &Obj<'_>, k: &str) -> Option<usize> {
        const MAX: u64 = 1 << 32;
        let n = match o.table.get(k)? {
            toml::Value::Integer(i) if *i > 0 => Some(i.unsigned_abs()),
            toml::Value::String(s) => parse_size(s),
            _ => None,
        };
        match n {
            Some(n) if (1..=MAX).contains(&n) => usize::try_from(n).ok(),
            _ => {
                self.problem(
                    &o.key(k),
                    "expected a size in bytes up to 4GiB, e.g. 33554432 or \"32MiB\"",
                );
                None
            }
        }
    }

    fn table<'a>(&mut self, o: &Obj<'a>, k: &str) -> Option<Obj<'a>> {
        match o.table.get(k)? {
            toml::Value::Table(t) => Some(Obj::new(t, &o.key(k))),
            other => {
                self.problem(
                    &o.key(k),
                    &format!("expected a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn array_of_tables<'a>(&mut self, o: &Obj<'a>, k: &str) -> Option<Vec<Obj<'a>>> {
        let v = o.table.get(k)?;
        let Some(items) = v.as_array() else {
            self.problem(
                &o.key(k),
                &format!(
                    "expected an array of tables ([[{k}]]), found {}",
                    v.type_str()
                ),
            );
            return None;
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{}[{i}]", o.key(k));
            match item.as_table() {
                Some(t) => out.push(Obj::new(t, &path)),
                None => self.problem(
                    &path,
                    &format!("expected a table, found {}", item.type_str()),
                ),
            }
        }
        Some(out)
    }
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn the_minimal_config_of_the_design_works_as_written() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.storage.url, "sqlite://./enclave-data/enclave.db");
        assert_eq!(c.limits.max_body_bytes, 32 * 1024 * 1024);
        let b = &c.backends[0];
        assert_eq!(b.kind, BackendKind::OpenAi);
        assert_eq!(b.accreditation.label().banner(), "SECRET//NOFORN");
        assert_eq!(b.models[0].upstream, "gpt-4o");
        assert_eq!((b.priority, b.weight), (100, 1));
    }

    #[test]
    fn the_design_example_with_models_dir_and_the_starter_config_parse() {
        let with_models = MINIMAL.replace(
            "data_dir = \"./enclave-data\"",
            "data_dir = \"./enclave-data\"\nmodels_dir = \"./models\"",
        );
        assert_eq!(
            Config::parse(&with_models).unwrap().models_dir,
            Some(PathBuf::from("./models"))
        );
        let starter = Config::parse(STARTER_CONFIG).unwrap();
        assert!(starter.backends.is_empty());
        // Every commented example in the starter config is valid once uncommented.
        let uncommented: String = STARTER_CONFIG
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
            .join("\n");
        let c = Config::parse(&uncommented).unwrap_or_else(|e| panic!("{e}"));
        let gov = c.backends.iter().find(|b| b.name == "gov-secret").unwrap();
        assert_eq!(gov.models[1].upstream, "gpt-4o-mini");
        let local = c
            .backends
            .iter()
            .find(|b| b.kind == BackendKind::Local)
            .unwrap();
        assert_eq!(local.models.len(), 2);
        assert!(c.oidc.is_some() && c.tls.is_some());
        assert_eq!(c.audit.checkpoint_command.len(), 1);
        assert!(c.keys.master_key_file.is_some() && c.keys.audit_signing_key_file.is_some());
    }

    #[test]
    fn audit_and_keys_sections_are_read_and_checked() {
        let signer = enclave_audit::Signer::from_seed("old.example/audit", &[1; 32]).unwrap();
        let c = Config::parse(&format!(
            "[audit]\norigin = \"enclave.example.gov/audit\"\ncheckpoint_interval_secs = 5\n\
             checkpoint_dir = \"/var/cp\"\ncheckpoint_command = [\"/bin/publish\", \"-x\"]\n\
             previous_verifier_keys = [\"{}\"]\n[keys]\nmaster_key_file = \"/run/m.key\"\n",
            signer.verifier_key()
        ))
        .unwrap();
        assert_eq!(c.audit.origin, "enclave.example.gov/audit");
        assert_eq!(c.audit.checkpoint_interval, Duration::from_secs(5));
        assert_eq!(c.audit.checkpoint_dir, Some(PathBuf::from("/var/cp")));
        assert_eq!(c.audit.checkpoint_command, ["/bin/publish", "-x"]);
        assert_eq!(c.audit.previous_verifier_keys, [signer.verifier_key()]);
        assert_eq!(c.keys.master_key_file, Some(PathBuf::from("/run/m.key")));
        assert_eq!(c.keys.audit_signing_key_file, None);
        assert_eq!(Config::defaults().audit, AuditConfig::default());

        let e = Config::parse(
            "[audit]\norigin = \"a b\"\ncheckpoint_interval_secs = 0\ncheckpoint_command = []\n\
             previous_verifier_keys = [\"nope\"]\nextra = 1\n[keys]\nmaster_key_file = 3\n",
        )
        .unwrap_err();
        for want in [
            "audit.origin:",
            "audit.checkpoint_interval_secs:",
            "audit.checkpoint_command:",
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
        let c = Config::parse("data_dir = \"/var/lib/enclave\"").unwrap();
        assert_eq!(c.storage.url, "sqlite:///var/lib/enclave/enclave.db");
        assert_eq!(
            Config::load(None).unwrap().data_dir,
            PathBuf::from("./enclave-data")
        );
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
models = ["m"]
accreditation = "SECRET"
"#;
        let e = Config::parse(bad).unwrap_err();
        let text = e.to_string();
        for want in [
            "listen:",
            "colour: unknown key",
            "storage.url:",
            "limits.max_body_bytes:",
            "limits.max_concurrency:",
            "backends[0].name:",
            "backends[0].kind: unknown kind",
            "backends[0].models: lists no models",
            "backends[0].accreditation: not a valid marking (DUPLICATE_TOKEN",
            "backends[0].operators: unknown country code \"XYZ\"",
            "backends[0].extra: unknown key",
            "backends[1].base_url: required",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert_eq!(e.problems.len(), 12, "{text}");
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
            "listen = \"127.0.0.1:99999\"",
            "[limits]\nmax_body_bytes = -1",
            "[limits]\nmax_body_bytes = \"99999999999999999999GiB\"",
            "[limits]\nrequest_timeout_ms = 1e9",
            "[oidc]\nissuer = \"x\"",
            "[tls]\nclient_map = [{ subject = \"CN=x\" }]",
            "\u{feff}listen = \"127.0.0.1:1\"",
            &"[a]\n".repeat(10_000),
            &format!("x = {}", "[".repeat(100_000)),
        ] {
            let _ = Config::parse(text);
        }
        assert!(Config::parse("[[backends]]").unwrap_err().problems.len() >= 3);
        let dup = format!(
            "{}\n{}",
            MINIMAL,
            &MINIMAL[MINIMAL.find("[[backends]]").unwrap()..]
        );
        let e = Config::parse(&dup).unwrap_err();
        assert!(
            e.to_string()
                .contains("backends[1].name: duplicate backend name"),
            "{e}"
        );
        let e = Config::load(Some(Path::new("/nonexistent/enclave.toml"))).unwrap_err();
        assert!(e.to_string().contains("cannot read the file"));
    }

    #[test]
    fn sizes_aliases_operators_and_auth_sections() {
        let c = Config::parse(
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
"#,
        )
        .unwrap();
        assert_eq!(c.limits.max_body_bytes, 1 << 20);
        let b = &c.backends[0];
        assert_eq!(b.base_url.as_deref(), Some("https://example.invalid/v1"));
        assert_eq!(b.accreditation.label().banner(), "SECRET//REL TO USA, GBR");
        assert_eq!(b.accreditation.operators().len(), 2);
        assert_eq!((b.priority, b.weight), (5, 3));
        let o = c.oidc.unwrap();
        assert_eq!(o.claims.tenant, "org");
        assert_eq!(o.claims.principal, "sub");
        assert_eq!(c.tls.unwrap().client_map[0].principal, "jdoe");
    }
}
