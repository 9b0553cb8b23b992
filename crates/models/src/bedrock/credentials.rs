//! AWS credentials from the sources that need no network: environment variables and the shared
//! credentials and config files with profiles.
//!
//! The order is the AWS SDKs': a backend that names no `profile` takes `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`) from the environment when they are set;
//! otherwise the profile (`profile` in the configuration, else `AWS_PROFILE`, else `default`)
//! is read from the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, default
//! `~/.aws/credentials`), then from the config file (`AWS_CONFIG_FILE`, default
//! `~/.aws/config`, where a profile's section is `[profile NAME]`). Profiles that need a
//! network call or a process (`role_arn`, `sso_*`, `credential_process`,
//! `web_identity_token_file`) are refused with a message saying so.
//!
//! The environment is read through a lookup function, so tests pass a map. Credentials read
//! from files are read again by [`CredentialProvider::current`] when older than
//! [`FILE_REFRESH`], so rotated keys are picked up without a restart.
//!
//! SECURITY: the secret key and the session token never appear in `Debug` output or in errors.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often credentials read from files are read again.
pub const FILE_REFRESH: Duration = Duration::from_secs(300);

/// A set of AWS credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

/// Why no credentials could be found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// Only one of the access key id and the secret key is set.
    #[error("{present} is set but {missing} is not: set both, or neither to use a profile")]
    HalfSet {
        /// The one that is set.
        present: &'static str,
        /// The one that is missing.
        missing: &'static str,
    },
    /// The profile was found nowhere.
    #[error(
        "no AWS credentials: profile `{profile}` has no aws_access_key_id and aws_secret_access_key in {looked}, and AWS_ACCESS_KEY_ID is not set"
    )]
    NotFound {
        /// The profile.
        profile: String,
        /// The files read.
        looked: String,
    },
    /// The profile needs a source this build does not read.
    #[error(
        "profile `{profile}` uses `{key}`, which needs a network call or a process: give the profile static keys, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )]
    Unsupported {
        /// The profile.
        profile: String,
        /// The key that names the source.
        key: String,
    },
    /// A file exists but cannot be read.
    #[error("cannot read {path}: {message}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

/// Where credentials came from, and how to read them again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    /// The process environment (read once).
    Environment,
    /// A profile in the shared files.
    Profile {
        /// The profile's name.
        name: String,
        /// The shared credentials file.
        credentials_file: Option<PathBuf>,
        /// The config file.
        config_file: Option<PathBuf>,
    },
    /// Given directly (tests).
    Static,
}

/// Credentials and their source; reads files again when they are old.
pub struct CredentialProvider {
    source: CredentialSource,
    current: Mutex<(Arc<Credentials>, Instant)>,
}

impl Credentials {
    /// Credentials from their parts.
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Credentials {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: session_token.filter(|t| !t.is_empty()),
        }
    }

    /// The access key id (not secret: it names the key in the `Authorization` header).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The secret key: only for deriving the signing key.
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// The session token, for temporary credentials.
    pub fn session_token(&self) -> Option<&str> {
        self.session_token.as_deref()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SECURITY: the secret key and token never appear in a log line or a panic message;
        // the key id is shortened to its prefix (enough to tell keys apart in a log).
        let id: String = self.access_key_id.chars().take(4).collect();
        f.debug_struct("Credentials")
            .field("access_key_id", &format_args!("{id}…"))
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl CredentialProvider {
    /// Finds credentials for a backend naming `profile` (or none), reading the environment
    /// through `env` and the shared files it points to.
    ///
    /// # Errors
    ///
    /// [`CredentialsError`] when no source has credentials, a source is half set, or a profile
    /// needs a source this build does not read.
    pub fn resolve(
        profile: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<CredentialProvider, CredentialsError> {
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        if profile.is_none() {
            match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
                (Some(id), Some(secret)) => {
                    let creds = Credentials::new(id, secret, var("AWS_SESSION_TOKEN"));
                    return Ok(CredentialProvider::with_source(
                        creds,
                        CredentialSource::Environment,
                    ));
                }
                (Some(_), None) => {
                    return Err(CredentialsError::HalfSet {
                        present: "AWS_ACCESS_KEY_ID",
                        missing: "AWS_SECRET_ACCESS_KEY",
                    });
                }
                (None, Some(_)) => {
                    return Err(CredentialsError::HalfSet {
                        present: "AWS_SECRET_ACCESS_KEY",
                        missing: "AWS_ACCESS_KEY_ID",
                    });
                }
                (None, None) => {}
            }
        }
        let name = profile
            .map(str::to_owned)
            .or_else(|| var("AWS_PROFILE"))
            .unwrap_or_else(|| "default".to_owned());
        let home = var("HOME").map(PathBuf::from);
        let file = |var_name: &str, default: &str| {
            var(var_name)
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))
        };
        let source = CredentialSource::Profile {
            name,
            credentials_file: file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
            config_file: file("AWS_CONFIG_FILE", "config"),
        };
        let creds = read_source(&source)?;
        Ok(CredentialProvider::with_source(creds, source))
    }

    /// A provider over fixed credentials.
    pub fn fixed(credentials: Credentials) -> CredentialProvider {
        CredentialProvider::with_source(credentials, CredentialSource::Static)
    }

    fn with_source(credentials: Credentials, source: CredentialSource) -> CredentialProvider {
        CredentialProvider {
            source,
            current: Mutex::new((Arc::new(credentials), Instant::now())),
        }
    }

    /// Where the credentials come from.
    pub fn source(&self) -> &CredentialSource {
        &self.source
    }

    /// The credentials to sign with now: those read from files are read again when older than
    /// [`FILE_REFRESH`]; when that fails, the previous ones are kept (and the failure logged).
    pub fn current(&self) -> Arc<Credentials> {
        // A panic while holding the lock cannot leave the pair half written (each field is
        // replaced whole), so a poisoned lock is used as it is.
        let mut guard = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if matches!(self.source, CredentialSource::Profile { .. })
            && guard.1.elapsed() >= FILE_REFRESH
        {
            guard.1 = Instant::now();
            match read_source(&self.source) {
                Ok(c) => guard.0 = Arc::new(c),
                Err(e) => {
                    tracing::warn!(error = %e, "re-reading AWS credentials failed; keeping the previous ones");
                }
            }
        }
        Arc::clone(&guard.0)
    }
}

impl fmt::Debug for CredentialProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialProvider")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Keys of a profile that name a source needing the network or a process.
const UNSUPPORTED_KEYS: &[&str] = &[
    "role_arn",
    "credential_process",
    "web_identity_token_file",
    "sso_session",
    "sso_start_url",
    "sso_account_id",
    "credential_source",
];

fn read_source(source: &CredentialSource) -> Result<Credentials, CredentialsError> {
    let CredentialSource::Profile {
        name,
        credentials_file,
        config_file,
    } = source
    else {
        return Err(CredentialsError::NotFound {
            profile: String::new(),
            looked: "nothing".to_owned(),
        });
    };
    let mut looked = Vec::new();
    let mut unsupported = None;
    let sections = [
        (credentials_file, name.clone()),
        (
            config_file,
            if name == "default" {
                "default".to_owned()
            } else {
                format!("profile {name}")
            },
        ),
    ];
    for (file, section) in sections {
        let Some(path) = file else { continue };
        looked.push(path.display().to_string());
        let Some(text) = read_optional(path)? else {
            continue;
        };
        let keys = ini_section(&text, &section);
        let get = |k: &str| {
            keys.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        if let (Some(id), Some(secret)) = (get("aws_access_key_id"), get("aws_secret_access_key")) {
            let token = get("aws_session_token").or_else(|| get("aws_security_token"));
            return Ok(Credentials::new(id, secret, token));
        }
        if unsupported.is_none() {
            unsupported = UNSUPPORTED_KEYS
                .iter()
                .find(|k| get(k).is_some())
                .map(|k| (*k).to_owned());
        }
    }
    if let Some(key) = unsupported {
        return Err(CredentialsError::Unsupported {
            profile: name.clone(),
            key,
        });
    }
    Err(CredentialsError::NotFound {
        profile: name.clone(),
        looked: if looked.is_empty() {
            "no file (HOME is not set)".to_owned()
        } else {
            looked.join(" and ")
        },
    })
}

/// A file's text, or `None` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, CredentialsError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CredentialsError::Unreadable {
            path: path.display().to_string(),
            message: e.to_string(),
        }),
    }
}

/// The `key = value` pairs of `[section]` in an INI text as AWS writes them: `#` and `;` start
/// comment lines; indented lines continue a nested value and are skipped; a section appearing
/// twice is read as one.
fn ini_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let indented = line.starts_with([' ', '\t']);
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.split_whitespace().collect::<Vec<_>>().join(" ") == section;
            continue;
        }
        if !inside || indented {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_environment_comes_first_when_no_profile_is_named() {
        let env = env_of(&[
            ("AWS_ACCESS_KEY_ID", "AKIAENV"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            ("AWS_SESSION_TOKEN", "env-token"),
            ("HOME", "/nonexistent"),
        ]);
        let p = CredentialProvider::resolve(None, &env).unwrap();
        assert_eq!(p.source(), &CredentialSource::Environment);
        let c = p.current();
        assert_eq!(c.access_key_id(), "AKIAENV");
        assert_eq!(c.secret_access_key(), "env-secret");
        assert_eq!(c.session_token(), Some("env-token"));

        let half = env_of(&[("AWS_ACCESS_KEY_ID", "AKIAENV")]);
        let e = CredentialProvider::resolve(None, &half).unwrap_err();
        assert!(
            e.to_string().contains("AWS_SECRET_ACCESS_KEY is not"),
            "{e}"
        );
    }

    #[test]
    fn profiles_are_read_from_the_credentials_then_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        let config = dir.path().join("config");
        std::fs::write(
            &creds,
            "# comment\n[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = default-secret\n\n[gov]\naws_access_key_id=AKIAGOV\naws_secret_access_key=gov-secret\naws_session_token = gov-token\n",
        )
        .unwrap();
        std::fs::write(
            &config,
            "[default]\nregion = us-east-1\n[profile cfg]\nregion = us-gov-west-1\ns3 =\n  max_concurrent_requests = 4\naws_access_key_id = AKIACFG\naws_secret_access_key = cfg-secret\n[profile assume]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = default\n",
        )
        .unwrap();
        let env = env_of(&[
            ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
            ("AWS_CONFIG_FILE", config.to_str().unwrap()),
            // Ignored: a profile is named.
            ("AWS_ACCESS_KEY_ID", "AKIAENV"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
        ]);
        let gov = CredentialProvider::resolve(Some("gov"), &env).unwrap();
        assert_eq!(gov.current().access_key_id(), "AKIAGOV");
        assert_eq!(gov.current().session_token(), Some("gov-token"));
        let cfg = CredentialProvider::resolve(Some("cfg"), &env).unwrap();
        assert_eq!(cfg.current().secret_access_key(), "cfg-secret");
        let e = CredentialProvider::resolve(Some("assume"), &env).unwrap_err();
        assert!(e.to_string().contains("`role_arn`"), "{e}");
        let e = CredentialProvider::resolve(Some("absent"), &env).unwrap_err();
        assert!(
            matches!(&e, CredentialsError::NotFound { profile, .. } if profile == "absent"),
            "{e}"
        );
        assert!(e.to_string().contains("credentials and"), "{e}");

        // AWS_PROFILE chooses the profile when the environment has no keys.
        let env = env_of(&[
            ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
            ("AWS_PROFILE", "gov"),
        ]);
        let p = CredentialProvider::resolve(None, &env).unwrap();
        assert_eq!(p.current().access_key_id(), "AKIAGOV");
        // And `default` otherwise, from ~/.aws.
        let aws = dir.path().join(".aws");
        std::fs::create_dir(&aws).unwrap();
        std::fs::copy(&creds, aws.join("credentials")).unwrap();
        let env = env_of(&[("HOME", dir.path().to_str().unwrap())]);
        let p = CredentialProvider::resolve(None, &env).unwrap();
        assert_eq!(p.current().access_key_id(), "AKIADEFAULT");
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let p = CredentialProvider::fixed(Credentials::new(
            "AKIAPLANTEDID",
            "planted-secret-key",
            Some("planted-session-token".to_owned()),
        ));
        for text in [format!("{p:?}"), format!("{:?}", p.current())] {
            assert!(!text.contains("planted-secret-key"), "{text}");
            assert!(!text.contains("planted-session-token"), "{text}");
            assert!(!text.contains("AKIAPLANTEDID"), "{text}");
        }
        assert!(format!("{:?}", p.current()).contains("<redacted>"));
    }
}
