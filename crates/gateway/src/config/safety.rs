//! The `[safety]` section: which policy pack screens each tenant's requests.
//!
//! ```toml
//! [safety]
//! pack = "us-federal"                  # a built-in pack's name, or a path to a pack file
//! contextual = "auto"                  # the sentence-model stage: "auto", "on" or "off"
//!
//! [safety.tenants]                     # per-tenant packs (the others use `pack`)
//! agency-b = "/etc/enclave/packs/agency-b.toml"
//! ```
//!
//! A value that ends in `.toml` or holds a `/` is a file; anything else names a built-in pack.
//! Files are read and every pack is checked when the server starts (`App::new`), so a bad pack
//! stops the start with its key path instead of screening with a default.
//!
//! `contextual`: the safety stack's contextual stage (all-MiniLM-L6-v2 with trained heads, run
//! only on texts the inline stages leave uncertain). `auto` (the default) uses it when the
//! models directory holds the sentence model and says at start which it chose; `on` refuses to
//! start without it; `off` screens with the inline stages alone.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{Problem, Section};

/// The pack used when the file names none.
pub const DEFAULT_PACK: &str = "us-federal";

/// `[safety]` as written in the file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSafety {
    /// The pack for every tenant without its own: a built-in pack's name (default
    /// `us-federal`) or the path of a pack file.
    pub pack: Option<String>,
    /// `[safety.tenants]`: tenant name → built-in pack name or pack file path.
    pub tenants: Option<BTreeMap<String, String>>,
    /// `auto` (default), `on` or `off`: the contextual stage.
    pub contextual: Option<String>,
}

/// Whether the screen runs its contextual stage (`[safety] contextual`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ContextualMode {
    /// When the sentence model is in the models directory.
    #[default]
    Auto,
    /// Always: the start fails without the sentence model.
    On,
    /// Never.
    Off,
}

/// Where a policy pack comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PackSource {
    /// A pack built into the binary, by name.
    Builtin(String),
    /// A pack file, read at start.
    File(PathBuf),
}

impl PackSource {
    fn parse(text: &str) -> Option<PackSource> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        Some(
            if text.ends_with(".toml") || text.contains('/') || text.contains('\\') {
                PackSource::File(PathBuf::from(text))
            } else {
                PackSource::Builtin(text.to_owned())
            },
        )
    }
}

/// The checked `[safety]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafetyConfig {
    /// The pack of every tenant without its own.
    pub pack: PackSource,
    /// Per-tenant packs.
    pub tenants: BTreeMap<String, PackSource>,
    /// The contextual stage.
    pub contextual: ContextualMode,
}

impl Default for SafetyConfig {
    fn default() -> SafetyConfig {
        SafetyConfig {
            pack: PackSource::Builtin(DEFAULT_PACK.to_owned()),
            tenants: BTreeMap::new(),
            contextual: ContextualMode::Auto,
        }
    }
}

impl SafetyConfig {
    /// Checks the section found at key path `at` (`safety`).
    ///
    /// # Errors
    ///
    /// Every problem, each with its key path.
    pub(super) fn from_raw(raw: RawSafety, at: &str) -> Result<SafetyConfig, Vec<Problem>> {
        let mut config = SafetyConfig::default();
        let mut p = Section::new(at);
        if let Some(pack) = raw.pack {
            match PackSource::parse(&pack) {
                Some(source) => config.pack = source,
                None => p.push(
                    "pack",
                    "must name a built-in pack (\"us-federal\") or a pack file",
                ),
            }
        }
        match raw.contextual.as_deref().map(str::trim) {
            None | Some("auto") => {}
            Some("on") => config.contextual = ContextualMode::On,
            Some("off") => config.contextual = ContextualMode::Off,
            Some(_) => p.push("contextual", "must be \"auto\", \"on\" or \"off\""),
        }
        for (tenant, pack) in raw.tenants.unwrap_or_default() {
            if tenant.trim().is_empty() {
                p.push("tenants", "a tenant name must not be empty");
                continue;
            }
            match PackSource::parse(&pack) {
                Some(source) => {
                    config.tenants.insert(tenant, source);
                }
                None => p.push(
                    &format!("tenants.{tenant}"),
                    "must name a built-in pack or a pack file",
                ),
            }
        }
        p.finish(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_files() {
        assert_eq!(
            PackSource::parse("us-federal"),
            Some(PackSource::Builtin("us-federal".into()))
        );
        assert_eq!(
            PackSource::parse("packs/a.toml"),
            Some(PackSource::File("packs/a.toml".into()))
        );
        assert_eq!(
            PackSource::parse("strict.toml"),
            Some(PackSource::File("strict.toml".into()))
        );
        assert_eq!(PackSource::parse("  "), None);
    }
}
