//! Everything a request needs, built once from the configuration.

use std::path::Path;
use std::sync::Arc;

use enclave_models::local::LocalEngine;
use enclave_models::{
    Backend, BackendSpec, BedrockBackend, BedrockParams, LocalBackend, OpenAiBackend, RetryPolicy,
    Router, http_client,
};
use enclave_store::install::AuditDigestKeys;
use enclave_store::{AuditLog, AuditLogConfig, Store};

use crate::config::{ApiKey, BackendKind, Config, is_cleartext_remote};
use crate::identity::Authenticator;
use crate::limits::{Admission, RateLimiter};
use crate::metrics::Metrics;

/// Shared state of a running gateway.
#[derive(Debug)]
pub struct App {
    /// The configuration it was built from.
    pub config: Config,
    /// The database.
    pub store: Store,
    /// The audit log's writer (group commit, tree, checkpoints).
    pub audit: AuditLog,
    /// The per-tenant keys of the audit entries' prompt and output digests.
    pub digest_keys: AuditDigestKeys,
    /// Credentials.
    pub auth: Authenticator,
    /// Backends (shared with the memory extractor).
    pub router: Arc<Router>,
    /// Metrics.
    pub metrics: Metrics,
    /// Per-key limits.
    pub limiter: RateLimiter,
    /// Concurrency bound.
    pub admission: Admission,
    /// Open connections, capped in total and per client address.
    pub connections: Arc<crate::conn::Connections>,
    /// The embedded models, when a `kind = "local"` backend is configured.
    pub local: Option<Arc<LocalEngine>>,
    /// The safety screen of each tenant's policy pack.
    pub screens: crate::stage::screen::Screens,
    /// Long-term memory: the in-memory index and its background worker.
    pub memory: Arc<crate::memory_api::MemoryService>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory or its keys.
    #[error("data directory {path}: {message}")]
    DataDir {
        /// The directory.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The database.
    #[error("storage {url}: {message}")]
    Storage {
        /// The URL, without credentials.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A backend, OIDC or TLS setting that only fails when used.
    #[error("{0}")]
    Setup(String),
    /// Binding the listener.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

impl App {
    /// Prepares the data directory (keys on first start), opens the store, and builds the
    /// router, authenticator and limits.
    ///
    /// # Errors
    ///
    /// [`StartError`] naming what failed.
    pub async fn build(config: Config) -> Result<Arc<App>, StartError> {
        let sources = config.keys.sources(|name| std::env::var(name).ok());
        let install =
            enclave_store::install::prepare_with(&config.data_dir, &sources).map_err(|e| {
                StartError::DataDir {
                    path: config.data_dir.display().to_string(),
                    message: e.to_string(),
                }
            })?;
        for created in &install.created {
            tracing::info!(path = %created.display(), "created");
        }
        let store = Store::open(config.storage.url.expose(), install.master_key())
            .await
            .map_err(|e| StartError::Storage {
                url: config.storage.url.to_string(),
                message: e.to_string(),
            })?;
        // A master key created just now next to a database that already holds API keys means
        // the old master key was lost: every stored key would silently stop working.
        let master_created = install.created.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| n == enclave_store::install::MASTER_KEY_FILE)
        });
        if master_created {
            let keys = store.list_keys().await.map_err(|e| StartError::Storage {
                url: config.storage.url.to_string(),
                message: e.to_string(),
            })?;
            if !keys.is_empty() {
                return Err(StartError::DataDir {
                    path: config.data_dir.display().to_string(),
                    message: format!(
                        "{} was missing and has just been created, but the database holds {} API keys made with the old one. Restore the original {} (all replicas must share it), or revoke and re-issue the keys.",
                        enclave_store::install::MASTER_KEY_FILE,
                        keys.len(),
                        enclave_store::install::MASTER_KEY_FILE
                    ),
                });
            }
        }
        // Every pack is read and checked before anything else starts: a bad pack stops the
        // start rather than screening with a default.
        let screens = crate::stage::screen::Screens::load(
            &config.safety,
            contextual_embedder(&config).map_err(StartError::Setup)?,
        )
        .map_err(StartError::Setup)?;
        tracing::info!(
            pack = screens.default_pack(),
            contextual = screens.contextual(),
            "safety screen loaded"
        );
        let audit = start_audit(&config, &install, store.clone()).await?;
        let mut local: Option<Arc<LocalEngine>> = None;
        let client = http_client(config.limits.connect_timeout)
            .map_err(|e| StartError::Setup(format!("TLS roots for upstream connections: {e}")))?;
        let mut backends: Vec<Arc<dyn Backend>> = Vec::new();
        for b in &config.backends {
            let spec = BackendSpec {
                name: b.name.clone(),
                models: b
                    .models
                    .iter()
                    .map(|m| (m.name.clone(), m.upstream.clone()))
                    .collect(),
                accreditation: b.accreditation.clone(),
                priority: b.priority,
                weight: b.weight,
            };
            let backend: Arc<dyn Backend> = match b.kind {
                BackendKind::OpenAi => {
                    if let (Some(var), None) = (&b.api_key_env, &b.api_key) {
                        tracing::warn!(backend = %b.name, env = %var, "the upstream API key variable is not set; sending requests without a key");
                    }
                    let base_url = b.base_url.clone().unwrap_or_default();
                    if b.allow_cleartext && is_cleartext_remote(&base_url) {
                        tracing::warn!(backend = %b.name, base_url = %base_url, "allow_cleartext: prompts and the upstream key cross the network unencrypted");
                    }
                    Arc::new(
                        OpenAiBackend::new(
                            spec,
                            &base_url,
                            b.api_key.as_ref().map(ApiKey::expose),
                            config.limits.connect_timeout,
                            client.clone(),
                        )
                        .map_err(StartError::Setup)?,
                    )
                }
                BackendKind::Local => {
                    let engine = match &local {
                        Some(e) => Arc::clone(e),
                        None => {
                            let dir = &config.models_dir;
                            let models: Vec<String> =
                                b.models.iter().map(|m| m.upstream.clone()).collect();
                            let started = std::time::Instant::now();
                            let engine =
                                LocalEngine::start(dir, &models, config.limits.local_queue)
                                    .map_err(|e| {
                                        StartError::Setup(format!("backend {}: {e}", b.name))
                                    })?;
                            tracing::info!(backend = %b.name, models = ?models, ms = started.elapsed().as_millis() as u64, "embedded models loaded");
                            let engine = Arc::new(engine);
                            local = Some(Arc::clone(&engine));
                            engine
                        }
                    };
                    Arc::new(LocalBackend::new(spec, engine))
                }
                BackendKind::Bedrock => {
                    // The loader fills both in for every bedrock entry it accepts.
                    let Some(bedrock) = &b.bedrock else {
                        return Err(StartError::Setup(format!(
                            "backend {}: no Bedrock settings",
                            b.name
                        )));
                    };
                    let Some(credentials) = &bedrock.credentials else {
                        return Err(StartError::Setup(format!(
                            "backend {}: no AWS credentials",
                            b.name
                        )));
                    };
                    if b.allow_cleartext && is_cleartext_remote(&bedrock.endpoint_url) {
                        tracing::warn!(backend = %b.name, endpoint_url = %bedrock.endpoint_url, "allow_cleartext: prompts cross the network unencrypted");
                    }
                    Arc::new(BedrockBackend::new(
                        spec,
                        BedrockParams {
                            region: bedrock.region.clone(),
                            endpoint_url: bedrock.endpoint_url.clone(),
                            credentials: Arc::clone(credentials),
                            guardrail: bedrock.guardrail.clone(),
                        },
                        config.limits.connect_timeout,
                        client.clone(),
                    ))
                }
            };
            backends.push(backend);
        }
        let router = Arc::new(Router::new(
            backends,
            RetryPolicy {
                max_retries: config.limits.max_retries,
                ..RetryPolicy::default()
            },
        ));
        let oidc = match &config.oidc {
            Some(o) => Some(
                enclave_auth::oidc::OidcVerifier::new(o.clone())
                    .await
                    .map_err(|e| StartError::Setup(format!("oidc: {e}")))?,
            ),
            None => None,
        };
        let extractor = config.memory.extractor.as_ref().map(|model| {
            crate::extract::Extractor::new(
                Arc::clone(&router),
                model.clone(),
                audit.clone(),
                install.master_key().audit_digest_keys(),
            )
        });
        let memory = crate::memory_api::MemoryService::start(
            store.clone(),
            config.memory.clone(),
            config.models_dir.clone(),
            extractor,
        )
        .await
        .map_err(|e| StartError::Storage {
            url: config.storage.url.to_string(),
            message: e,
        })?;
        let limits = &config.limits;
        let app = App {
            memory,
            local,
            screens,
            auth: Authenticator::new(store.clone(), oidc),
            store,
            audit,
            digest_keys: install.master_key().audit_digest_keys(),
            router,
            metrics: Metrics::default(),
            limiter: RateLimiter::new(limits.requests_per_minute, limits.tokens_per_minute),
            connections: crate::conn::Connections::new(
                limits.max_connections,
                limits.max_connections_per_ip,
            ),
            admission: Admission::new(
                limits.max_concurrency,
                limits.max_queue,
                limits.queue_timeout,
            ),
            config,
        };
        Ok(Arc::new(app))
    }

    /// One line per backend, for the start-up message.
    pub fn describe_backends(&self) -> Vec<String> {
        self.router
            .backends()
            .map(|b| {
                let s = b.spec();
                let ops: Vec<&str> = s
                    .accreditation
                    .operators()
                    .iter()
                    .map(|c| c.code())
                    .collect();
                let models: Vec<&str> = s.models.iter().map(|(m, _)| m.as_str()).collect();
                format!(
                    "{} ({}; accredited {}; operators {}; models {})",
                    s.name,
                    b.describe(),
                    s.accreditation.label().banner(),
                    ops.join(","),
                    models.join(", ")
                )
            })
            .collect()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }
}

/// Starts the audit log's writer with the install's signing key, named after `[audit] origin`.
async fn start_audit(
    config: &Config,
    install: &enclave_store::install::Install,
    store: Store,
) -> Result<AuditLog, StartError> {
    let audit = &config.audit;
    let signer = enclave_audit::Signer::from_pkcs8(&audit.origin, install.signing_key_pkcs8())
        .map_err(|e| {
            StartError::Setup(format!(
                "audit signing key {}: {e}",
                install.signing_key_source()
            ))
        })?;
    let log_config = AuditLogConfig {
        origin: audit.origin.clone(),
        checkpoint_interval: audit.checkpoint_interval,
        checkpoint_dir: audit.checkpoint_dir.clone(),
        checkpoint_command: audit.checkpoint_command.clone(),
        previous_verifier_keys: audit.previous_verifier_keys.clone(),
        commit_delay: audit.commit_delay,
    };
    let log = AuditLog::start(store, signer, log_config)
        .await
        .map_err(|e| StartError::Storage {
            url: config.storage.url.to_string(),
            message: e.to_string(),
        })?;
    tracing::info!(
        origin = %audit.origin,
        size = log.tree().len(),
        verifier_key = %log.verifier_key(),
        "audit log ready"
    );
    Ok(log)
}

/// A database URL with any password removed, for messages.
pub use enclave_store::redact_url;

/// Texts that may wait for the safety screen's sentence model (one worker); beyond it an
/// uncertain text is refused with 503 `overloaded` (`stage::screen`). Not `limits.local_queue`:
/// that bounds the chat model's work, and a screen is milliseconds.
const SCREEN_EMBED_QUEUE: usize = 64;

/// The sentence model of the safety screen's contextual stage, as `[safety] contextual` says:
/// `auto` loads it when the models directory has it (and says so when it does not), `on`
/// requires it, `off` never loads it.
fn contextual_embedder(config: &Config) -> Result<Option<Arc<dyn enclave_safety::Embed>>, String> {
    use crate::config::ContextualMode;
    let mode = config.safety.contextual;
    if mode == ContextualMode::Off {
        return Ok(None);
    }
    let started = std::time::Instant::now();
    match LocalEngine::start(
        &config.models_dir,
        &[enclave_models::local::EMBED_MODEL.to_owned()],
        SCREEN_EMBED_QUEUE,
    ) {
        Ok(engine) => {
            tracing::info!(
                ms = started.elapsed().as_millis() as u64,
                "safety contextual stage: all-MiniLM-L6-v2 loaded"
            );
            Ok(Some(Arc::new(crate::stage::screen::LocalEmbed(Arc::new(
                engine,
            )))))
        }
        Err(e) if mode == ContextualMode::On => Err(format!("safety.contextual = \"on\": {e}")),
        Err(e) => {
            tracing::warn!(error = %e, "safety contextual stage off: the sentence model is not in the models directory (inline stages only; run scripts/fetch-models)");
            Ok(None)
        }
    }
}
