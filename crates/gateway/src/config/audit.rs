//! The `[audit]` section (the audit log's checkpoints) and the `[keys]` section (where the
//! install's secrets come from when replicas share them).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Problem, Section};

/// The default `[audit] origin`.
pub const DEFAULT_AUDIT_ORIGIN: &str = "enclave.local/audit";

/// The default `[audit] commit_delay_us`.
pub const DEFAULT_COMMIT_DELAY: Duration = Duration::from_micros(500);

/// `[audit]` as written in the file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// The log's name in its signed checkpoints, also the signing key's name (default
    /// `enclave.local/audit`).
    pub origin: Option<String>,
    /// How often a checkpoint is signed when the log grew, in seconds (1..86400, default 60).
    pub checkpoint_interval_secs: Option<i64>,
    /// A directory each new checkpoint is also written to.
    pub checkpoint_dir: Option<String>,
    /// A program and its arguments (no shell) each new checkpoint is piped to.
    pub checkpoint_command: Option<Vec<String>>,
    /// Verifier keys of earlier signing keys, still trusted (`name+keyid+base64`).
    pub previous_verifier_keys: Option<Vec<String>>,
    /// How long a commit may wait for the entries of requests already in the pipeline, in
    /// microseconds (0..=10000, default 500; 0: commit at once).
    pub commit_delay_us: Option<i64>,
}

/// The audit log: the name and key of its checkpoints and where copies of them go.
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
    /// `commit_delay_us`: how long a commit may wait for the entries of requests already in
    /// the pipeline (group commit gathers more entries per disk flush; a request alone never
    /// waits).
    pub commit_delay: Duration,
}

impl Default for AuditConfig {
    fn default() -> AuditConfig {
        AuditConfig {
            origin: DEFAULT_AUDIT_ORIGIN.to_owned(),
            checkpoint_interval: Duration::from_secs(60),
            checkpoint_dir: None,
            checkpoint_command: Vec::new(),
            previous_verifier_keys: Vec::new(),
            commit_delay: DEFAULT_COMMIT_DELAY,
        }
    }
}

impl AuditConfig {
    /// Checks the section found at key path `at` (`audit`).
    ///
    /// # Errors
    ///
    /// Every problem, each with its key path.
    pub(super) fn from_raw(raw: RawAudit, at: &str) -> Result<AuditConfig, Vec<Problem>> {
        let mut audit = AuditConfig::default();
        let mut p = Section::new(at);
        if let Some(origin) = raw.origin {
            // The origin is also the signing key's name: both rules apply.
            let valid = enclave_audit::Checkpoint::new(&origin, 0, enclave_audit::empty_root())
                .and_then(|_| enclave_audit::Signer::from_seed(&origin, &[0; 32]))
                .is_ok();
            if valid {
                audit.origin = origin;
            } else {
                p.push(
                    "origin",
                    "expected a log name without spaces, `+` or control characters, e.g. \"enclave.example.gov/audit\"",
                );
            }
        }
        if let Some(secs) = p.int_in(
            "checkpoint_interval_secs",
            raw.checkpoint_interval_secs,
            1,
            24 * 3600,
        ) {
            audit.checkpoint_interval = Duration::from_secs(secs);
        }
        if let Some(us) = p.int_in("commit_delay_us", raw.commit_delay_us, 0, 10_000) {
            audit.commit_delay = Duration::from_micros(us);
        }
        match raw.checkpoint_dir {
            Some(d) if d.is_empty() => {
                p.push("checkpoint_dir", "expected a path, found an empty string");
            }
            Some(d) => audit.checkpoint_dir = Some(PathBuf::from(d)),
            None => {}
        }
        if let Some(command) = raw.checkpoint_command {
            if command.is_empty() || command.iter().any(String::is_empty) {
                p.push(
                    "checkpoint_command",
                    "expected a program and its arguments as non-empty strings, e.g. [\"/usr/local/bin/publish\", \"--log\"]",
                );
            } else {
                audit.checkpoint_command = command;
            }
        }
        for (i, key) in raw
            .previous_verifier_keys
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            match key.parse::<enclave_audit::VerifierKey>() {
                Ok(k) => audit.previous_verifier_keys.push(k),
                Err(_) => p.push(
                    &format!("previous_verifier_keys[{i}]"),
                    "expected a verifier key `name+keyid+base64` (see `enclave audit key`)",
                ),
            }
        }
        p.finish(audit)
    }
}

/// `[keys]` as written in the file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    /// The 32-byte master key file, shared by every replica (default
    /// `<data_dir>/master.key`).
    pub master_key_file: Option<String>,
    /// The Ed25519 PKCS#8 key that signs audit checkpoints (default
    /// `<data_dir>/audit-signing.key`).
    pub audit_signing_key_file: Option<String>,
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
    /// Checks the section found at key path `at` (`keys`).
    ///
    /// # Errors
    ///
    /// Every problem, each with its key path.
    pub(super) fn from_raw(raw: RawKeys, at: &str) -> Result<KeysConfig, Vec<Problem>> {
        let mut p = Section::new(at);
        let mut path = |key: &str, v: Option<String>| match v {
            Some(s) if s.is_empty() => {
                p.push(key, "expected a path, found an empty string");
                None
            }
            other => other.map(PathBuf::from),
        };
        let keys = KeysConfig {
            master_key_file: path("master_key_file", raw.master_key_file),
            audit_signing_key_file: path("audit_signing_key_file", raw.audit_signing_key_file),
        };
        p.finish(keys)
    }

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
