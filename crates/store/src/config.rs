//! The `[storage]` section of the configuration file, owned by this crate.
//!
//! [`RawStorage`] is the section as written (deserialized by the gateway's loader, which reports
//! unknown keys and wrong types); [`StorageConfig::from_raw`] checks it and reports every
//! problem with its key path. The database URL may hold a password, so it lives in a
//! [`DatabaseUrl`], whose `Debug` and `Display` hide it.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

/// `[storage]` as written in the file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// `sqlite://PATH` (default: `enclave.db` in the data directory) or
    /// `postgres://USER@HOST/DB`.
    pub url: Option<DatabaseUrl>,
}

/// The checked `[storage]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageConfig {
    /// The database.
    pub url: DatabaseUrl,
}

/// One problem in the `[storage]` section: the key path and what is wrong and allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigProblem {
    /// The key path, e.g. `storage.url`.
    pub key: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl StorageConfig {
    /// SQLite in `enclave.db` in `data_dir`: the default when the file has no `[storage]`
    /// section or no `url`.
    pub fn sqlite_in(data_dir: &Path) -> StorageConfig {
        StorageConfig {
            url: DatabaseUrl::new(format!(
                "sqlite://{}",
                data_dir.join("enclave.db").display()
            )),
        }
    }

    /// Checks the section found at key path `at` (`storage`); a missing `url` means SQLite in
    /// `data_dir`.
    ///
    /// # Errors
    ///
    /// Every problem, each with its key path.
    pub fn from_raw(
        raw: RawStorage,
        at: &str,
        data_dir: &Path,
    ) -> Result<StorageConfig, Vec<ConfigProblem>> {
        let Some(url) = raw.url else {
            return Ok(StorageConfig::sqlite_in(data_dir));
        };
        let u = url.expose();
        if u.starts_with("sqlite:")
            || u.starts_with("postgres://")
            || u.starts_with("postgresql://")
        {
            Ok(StorageConfig { url })
        } else {
            Err(vec![ConfigProblem {
                key: format!("{at}.url"),
                message: "expected sqlite://PATH or postgres://USER@HOST/DB".into(),
            }])
        }
    }
}

/// A database URL that may hold a password: `Debug` and `Display` show it with the password
/// replaced by `***` ([`redact_url`]); [`DatabaseUrl::expose`] gives the whole URL to the code
/// that connects.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> DatabaseUrl {
        DatabaseUrl(url.into())
    }

    /// The whole URL, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SECURITY: the URL's password never reaches a log line or a panic message.
        f.debug_tuple("DatabaseUrl")
            .field(&redact_url(&self.0))
            .finish()
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// A database URL with its passwords replaced by `***`, for messages: the one in the user
/// information (`postgres://user:***@host/db`) and any `password=` query parameter. When in
/// doubt (an `@` in the query) it hides more, never less.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return redact_query(url);
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let hidden = if user.len() == userinfo.len() {
                ""
            } else {
                ":***"
            };
            format!("{scheme}://{user}{hidden}@{}", redact_query(host))
        }
        None => format!("{scheme}://{}", redact_query(rest)),
    }
}

/// `text` with the value of every `password=` query parameter replaced by `***`.
fn redact_query(text: &str) -> String {
    let Some((base, query)) = text.split_once('?') else {
        return text.to_owned();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => p.to_owned(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_in_debug_display_and_messages() {
        let url = DatabaseUrl::new("postgres://enclave:hunter2@db.example:5432/enclave");
        for shown in [format!("{url:?}"), url.to_string()] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(
                shown.contains("enclave:***@db.example:5432/enclave"),
                "{shown}"
            );
        }
        assert_eq!(
            url.expose(),
            "postgres://enclave:hunter2@db.example:5432/enclave"
        );
        assert_eq!(
            redact_url("postgres://u@h/db?sslmode=require&password=hunter2"),
            "postgres://u@h/db?sslmode=require&password=***"
        );
        assert_eq!(
            redact_url("postgres://u:p@ss@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            redact_url("postgres://u:pa?ss@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("sqlite://./x.db"), "sqlite://./x.db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn the_url_must_name_sqlite_or_postgres_and_defaults_to_the_data_dir() {
        let check = |url: Option<&str>| {
            StorageConfig::from_raw(
                RawStorage {
                    url: url.map(DatabaseUrl::new),
                },
                "storage",
                Path::new("/var/lib/enclave"),
            )
        };
        assert_eq!(
            check(None).unwrap().url.expose(),
            "sqlite:///var/lib/enclave/enclave.db"
        );
        for ok in [
            "sqlite://x.db",
            "sqlite::memory:",
            "postgres://u@h/d",
            "postgresql://h/d",
        ] {
            assert_eq!(check(Some(ok)).unwrap().url.expose(), ok);
        }
        let e = check(Some("mysql://x")).unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "storage.url: expected sqlite://PATH or postgres://USER@HOST/DB"
        );
    }
}
