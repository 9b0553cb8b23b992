//! The `[[backends]]` section of the configuration file, owned by this crate.
//!
//! [`RawBackend`] is one entry as written (deserialized by the gateway's loader, which reports
//! unknown keys and wrong types with their key paths); [`backends_from_raw`] checks every entry
//! and the rules across entries, and reports every problem with its key path
//! (``backends[1].accreditation: not a valid marking (…)``). The result is the
//! [`BackendConfig`] list the gateway builds its router from.

use std::collections::BTreeMap;
use std::fmt;

use enclave_label::{Accreditation, Country, Mode, parse_marking};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// One `[[backends]]` entry as written in the file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    /// Unique name, 1-64 characters of `A-Z a-z 0-9 . _ -` (in metrics, logs and errors).
    pub name: Option<String>,
    /// `openai`, `local` or `bedrock`.
    pub kind: Option<String>,
    /// Base URL including `/v1` (required for `openai`, refused for `local`).
    pub base_url: Option<String>,
    /// Environment variable holding the upstream API key.
    pub api_key_env: Option<String>,
    /// Models served: names, or `{ name, upstream }` tables for an alias.
    pub models: Option<RawModels>,
    /// The highest label the backend may process, a banner marking.
    pub accreditation: Option<String>,
    /// Nationalities of who operates it: `"USA, GBR"` or `["USA", "GBR"]` (default `USA`).
    pub operators: Option<RawOperators>,
    /// Lower is tried first, 0 to 1000000 (default 100).
    pub priority: Option<i64>,
    /// Share of traffic among backends of equal priority, 1 to 1000000 (default 1).
    pub weight: Option<i64>,
    /// Allow `http://` to a host that is not loopback (default false).
    pub allow_cleartext: Option<bool>,
    /// AWS region of a `bedrock` backend (`us-gov-west-1`); also the signing region.
    pub region: Option<String>,
    /// Endpoint of a `bedrock` backend instead of `https://bedrock-runtime.<region>.…`: a
    /// FIPS or VPC endpoint, or a test server.
    pub endpoint_url: Option<String>,
    /// AWS profile whose credentials a `bedrock` backend signs with (default: the environment's
    /// keys, else `AWS_PROFILE`, else `default`).
    pub profile: Option<String>,
    /// Bedrock guardrail applied to every request of a `bedrock` backend (id or ARN).
    pub guardrail_identifier: Option<String>,
    /// Version of `guardrail_identifier` (`1`, `DRAFT`).
    pub guardrail_version: Option<String>,
}

/// The `models` list of a backend as written.
#[derive(Clone, Debug, Default)]
pub struct RawModels(pub Vec<RawModel>);

/// One entry of `models`: a name, or a `{ name, upstream }` table.
#[derive(Clone, Debug)]
pub enum RawModel {
    /// A name clients use and the upstream knows.
    Name(String),
    /// A `{ name, upstream }` table.
    Alias(RawModelAlias),
}

/// A `{ name, upstream }` entry of `models`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModelAlias {
    /// What clients send in `model`.
    pub name: Option<String>,
    /// What is sent upstream (default: `name`).
    pub upstream: Option<String>,
}

/// The keys of [`RawModelAlias`], which a `{ name, upstream }` table may hold.
const MODEL_ALIAS_KEYS: &[&str] = &["name", "upstream"];

/// `operators` as written: one string of comma-separated trigraphs, or a list.
#[derive(Clone, Debug)]
pub struct RawOperators(pub Vec<String>);

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

/// An upstream API key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    /// The key itself: only for the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SECURITY: the upstream key never appears in a log line or a panic message.
        f.write_str("ApiKey(<redacted>)")
    }
}

/// One checked `[[backends]]` entry.
#[derive(Clone, Debug)]
pub struct BackendConfig {
    /// Unique name (in metrics, logs and errors).
    pub name: String,
    /// Implementation.
    pub kind: BackendKind,
    /// Base URL including `/v1`, without a trailing `/` (for `openai`).
    pub base_url: Option<String>,
    /// Environment variable holding the upstream API key.
    pub api_key_env: Option<String>,
    /// The key read from `api_key_env` (filled in by the gateway's loader, which reads the
    /// environment; `None` when unset or empty).
    pub api_key: Option<ApiKey>,
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
    /// What a `bedrock` backend needs besides the common keys.
    pub bedrock: Option<BedrockConfig>,
}

/// The keys of a `kind = "bedrock"` entry.
#[derive(Clone, Debug)]
pub struct BedrockConfig {
    /// AWS region (also the signing region).
    pub region: String,
    /// Where requests go, without a trailing `/`: `endpoint_url`, else the region's
    /// `bedrock-runtime` endpoint.
    pub endpoint_url: String,
    /// The profile named in the file, if any.
    pub profile: Option<String>,
    /// Guardrail id or ARN and version.
    pub guardrail: Option<Guardrail>,
    /// The credentials (filled in by the gateway's loader, which reads the environment and
    /// the shared files; `None` until then).
    pub credentials: Option<std::sync::Arc<crate::bedrock::credentials::CredentialProvider>>,
}

/// A Bedrock guardrail applied to every request of a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guardrail {
    /// Its id or ARN.
    pub identifier: String,
    /// Its version (`1`, `DRAFT`).
    pub version: String,
}

/// One problem in the `[[backends]]` section: the key path and what is wrong and allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigProblem {
    /// The key path, e.g. `backends[1].accreditation`.
    pub key: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

/// Checks every `[[backends]]` entry (found at key path `at`, `backends`) and the rules
/// across entries: names are unique, and at most one backend is `kind = "local"`.
///
/// # Errors
///
/// Every problem of every entry, each with its key path.
pub fn backends_from_raw(
    raw: Vec<RawBackend>,
    at: &str,
) -> Result<Vec<BackendConfig>, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    let mut names = BTreeMap::new();
    let mut locals = 0;
    let mut out = Vec::new();
    for (i, b) in raw.into_iter().enumerate() {
        let here = format!("{at}[{i}]");
        if let Some(name) = &b.name
            && names.insert(name.clone(), i).is_some()
        {
            problems.push(problem(
                &here,
                "name",
                format!("duplicate backend name {name:?}"),
            ));
        }
        if b.kind.as_deref() == Some("local") {
            locals += 1;
        }
        match BackendConfig::from_raw(b, &here) {
            Ok(b) => out.push(b),
            Err(p) => problems.extend(p),
        }
    }
    if locals > 1 {
        problems.push(ConfigProblem {
            key: at.to_owned(),
            message: "at most one kind = \"local\" backend: the embedded models are loaded once"
                .into(),
        });
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

impl BackendConfig {
    /// Checks one entry found at key path `at` (`backends[1]`).
    ///
    /// # Errors
    ///
    /// Every problem of the entry, each with its key path.
    pub fn from_raw(raw: RawBackend, at: &str) -> Result<BackendConfig, Vec<ConfigProblem>> {
        let mut p = Vec::new();
        let name = required(&mut p, at, "name", raw.name);
        if let Some(n) = &name
            && !valid_backend_name(n)
        {
            p.push(problem(
                at,
                "name",
                "expected 1-64 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        let kind = match required(&mut p, at, "kind", raw.kind).as_deref() {
            Some("openai") => Some(BackendKind::OpenAi),
            Some("local") => Some(BackendKind::Local),
            Some("bedrock") => Some(BackendKind::Bedrock),
            Some(other) => {
                p.push(problem(
                    at,
                    "kind",
                    format!(
                        "unknown kind {other:?}: expected \"openai\", \"local\" or \"bedrock\""
                    ),
                ));
                None
            }
            None => None,
        };
        let base_url = raw.base_url;
        if let Some(u) = &base_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            p.push(problem(
                at,
                "base_url",
                "expected an http:// or https:// URL",
            ));
        }
        if kind == Some(BackendKind::OpenAi) && base_url.is_none() {
            p.push(problem(at, "base_url", "required for kind = \"openai\""));
        }
        if kind == Some(BackendKind::Bedrock) && base_url.is_some() {
            p.push(problem(
                at,
                "base_url",
                "not used by kind = \"bedrock\": set region, and endpoint_url for a FIPS or VPC endpoint",
            ));
        }
        if kind == Some(BackendKind::Bedrock) && raw.api_key_env.is_some() {
            p.push(problem(
                at,
                "api_key_env",
                "not used by kind = \"bedrock\": requests are signed with AWS credentials (environment or profile)",
            ));
        }
        let bedrock = bedrock_from_raw(
            &mut p,
            at,
            kind,
            BedrockKeys {
                region: raw.region,
                endpoint_url: raw.endpoint_url,
                profile: raw.profile,
                guardrail_identifier: raw.guardrail_identifier,
                guardrail_version: raw.guardrail_version,
            },
            raw.allow_cleartext.unwrap_or(false),
        );
        if kind == Some(BackendKind::Local) && base_url.is_some() {
            p.push(problem(
                at,
                "base_url",
                "not used by kind = \"local\" (the models run in-process)",
            ));
        }
        if let Some(var) = &raw.api_key_env
            && (var.is_empty() || var.contains(['=', '\0']))
        {
            p.push(problem(
                at,
                "api_key_env",
                "expected the name of an environment variable",
            ));
        }
        let models = models_from_raw(&mut p, at, raw.models);
        if kind == Some(BackendKind::Local) {
            let known = [crate::local::CHAT_MODEL, crate::local::EMBED_MODEL];
            for m in &models {
                if !known.contains(&m.upstream.as_str()) {
                    p.push(problem(
                        at,
                        "models",
                        format!(
                            "the local backend serves {:?} and {:?}, not {:?}",
                            known[0], known[1], m.upstream
                        ),
                    ));
                }
            }
        }
        let label = required(&mut p, at, "accreditation", raw.accreditation).and_then(|s| {
            match parse_marking(&s, Mode::Lenient, None) {
                Ok(m) => Some(m.label),
                Err(e) => {
                    p.push(problem(
                        at,
                        "accreditation",
                        format!("not a valid marking ({e})"),
                    ));
                    None
                }
            }
        });
        let operators = operators_from_raw(&mut p, at, raw.operators);
        let priority = int_in(&mut p, at, "priority", raw.priority, 0, 1_000_000).unwrap_or(100);
        let weight = int_in(&mut p, at, "weight", raw.weight, 1, 1_000_000).unwrap_or(1);
        let allow_cleartext = raw.allow_cleartext.unwrap_or(false);
        if let Some(u) = &base_url
            && !allow_cleartext
            && is_cleartext_remote(u)
        {
            // SECURITY: prompts at the backend's label and the upstream key would cross a
            // network unencrypted.
            p.push(problem(
                at,
                "base_url",
                "http:// to a host that is not loopback sends prompts and the API key in clear: use https://, or set allow_cleartext = true if the network is protected otherwise",
            ));
        }
        match (name, kind, label, operators) {
            (Some(name), Some(kind), Some(label), Some(operators)) if p.is_empty() => {
                Ok(BackendConfig {
                    name,
                    kind,
                    base_url: base_url.map(|u| u.trim_end_matches('/').to_owned()),
                    api_key_env: raw.api_key_env,
                    api_key: None,
                    models,
                    accreditation: Accreditation::new(label, operators),
                    priority,
                    weight,
                    allow_cleartext,
                    bedrock,
                })
            }
            _ => Err(p),
        }
    }
}

/// The Bedrock keys of an entry, checked together.
struct BedrockKeys {
    region: Option<String>,
    endpoint_url: Option<String>,
    profile: Option<String>,
    guardrail_identifier: Option<String>,
    guardrail_version: Option<String>,
}

/// Checks the Bedrock keys: required and valid for `kind = "bedrock"`, refused for the others.
fn bedrock_from_raw(
    p: &mut Vec<ConfigProblem>,
    at: &str,
    kind: Option<BackendKind>,
    keys: BedrockKeys,
    allow_cleartext: bool,
) -> Option<BedrockConfig> {
    if kind != Some(BackendKind::Bedrock) {
        for (key, present) in [
            ("region", keys.region.is_some()),
            ("endpoint_url", keys.endpoint_url.is_some()),
            ("profile", keys.profile.is_some()),
            ("guardrail_identifier", keys.guardrail_identifier.is_some()),
            ("guardrail_version", keys.guardrail_version.is_some()),
        ] {
            if present && kind.is_some() {
                p.push(problem(at, key, "only used by kind = \"bedrock\""));
            }
        }
        return None;
    }
    let region = required(p, at, "region", keys.region).filter(|r| {
        let ok = !r.is_empty()
            && r.len() <= 32
            && r.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            p.push(problem(
                at,
                "region",
                "expected an AWS region like \"us-gov-west-1\"",
            ));
        }
        ok
    })?;
    let endpoint_url = match keys.endpoint_url {
        Some(u) => {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                p.push(problem(
                    at,
                    "endpoint_url",
                    "expected an https:// URL (http:// only to a loopback address)",
                ));
            } else if !allow_cleartext && is_cleartext_remote(&u) {
                // SECURITY: prompts at the backend's label would cross a network unencrypted.
                p.push(problem(
                    at,
                    "endpoint_url",
                    "http:// to a host that is not loopback sends prompts in clear: use https://, or set allow_cleartext = true if the network is protected otherwise",
                ));
            }
            u.trim_end_matches('/').to_owned()
        }
        None => default_endpoint(&region),
    };
    if let Some(profile) = &keys.profile
        && (profile.is_empty() || profile.len() > 128 || profile.contains([']', '\n', '\0']))
    {
        p.push(problem(
            at,
            "profile",
            "expected the name of an AWS profile",
        ));
    }
    let guardrail = match (keys.guardrail_identifier, keys.guardrail_version) {
        (Some(identifier), Some(version)) => Some(Guardrail {
            identifier,
            version,
        }),
        (Some(_), None) => {
            p.push(problem(
                at,
                "guardrail_version",
                "required with guardrail_identifier (a version number or \"DRAFT\")",
            ));
            None
        }
        (None, Some(_)) => {
            p.push(problem(
                at,
                "guardrail_identifier",
                "required with guardrail_version (the guardrail's id or ARN)",
            ));
            None
        }
        (None, None) => None,
    };
    Some(BedrockConfig {
        region,
        endpoint_url,
        profile: keys.profile,
        guardrail,
        credentials: None,
    })
}

/// The `bedrock-runtime` endpoint of a region, in its partition's domain.
pub fn default_endpoint(region: &str) -> String {
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else if region.starts_with("us-isob-") {
        "sc2s.sgov.gov"
    } else if region.starts_with("us-iso-") {
        "c2s.ic.gov"
    } else {
        "amazonaws.com"
    };
    format!("https://bedrock-runtime.{region}.{domain}")
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

fn problem(at: &str, key: &str, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        key: format!("{at}.{key}"),
        message: message.into(),
    }
}

fn required<T>(p: &mut Vec<ConfigProblem>, at: &str, key: &str, value: Option<T>) -> Option<T> {
    if value.is_none() {
        p.push(problem(at, key, "required"));
    }
    value
}

fn int_in(
    p: &mut Vec<ConfigProblem>,
    at: &str,
    key: &str,
    value: Option<i64>,
    min: u32,
    max: u32,
) -> Option<u32> {
    let v = value?;
    match u32::try_from(v) {
        Ok(v) if (min..=max).contains(&v) => Some(v),
        _ => {
            p.push(problem(
                at,
                key,
                format!("expected an integer from {min} to {max}"),
            ));
            None
        }
    }
}

fn valid_backend_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

fn valid_model(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_graphic())
}

fn models_from_raw(
    p: &mut Vec<ConfigProblem>,
    at: &str,
    raw: Option<RawModels>,
) -> Vec<ModelAlias> {
    let Some(RawModels(items)) = raw else {
        p.push(problem(
            at,
            "models",
            "required: the model names this backend serves",
        ));
        return Vec::new();
    };
    if items.is_empty() {
        p.push(problem(at, "models", "lists no models"));
    }
    let mut out = Vec::new();
    for (j, item) in items.into_iter().enumerate() {
        let here = format!("{at}.models[{j}]");
        match item {
            RawModel::Name(s) if valid_model(&s) => out.push(ModelAlias {
                name: s.clone(),
                upstream: s,
            }),
            RawModel::Name(_) => p.push(ConfigProblem {
                key: here,
                message: "expected a model name (1-128 printable characters) or { name, upstream }"
                    .into(),
            }),
            RawModel::Alias(a) => match required(p, &here, "name", a.name) {
                Some(name) if valid_model(&name) => out.push(ModelAlias {
                    upstream: a.upstream.unwrap_or_else(|| name.clone()),
                    name,
                }),
                Some(_) => p.push(problem(
                    &here,
                    "name",
                    "expected 1-128 printable characters without spaces",
                )),
                None => {}
            },
        }
    }
    out
}

fn operators_from_raw(
    p: &mut Vec<ConfigProblem>,
    at: &str,
    raw: Option<RawOperators>,
) -> Option<Vec<Country>> {
    let Some(RawOperators(codes)) = raw else {
        return Some(vec![enclave_label::USA]);
    };
    let before = p.len();
    let mut out = Vec::new();
    for c in codes {
        match Country::from_code(&c) {
            Some(country) => out.push(country),
            None => p.push(problem(
                at,
                "operators",
                format!("unknown country code {c:?}: expected trigraphs like \"USA\", \"GBR\""),
            )),
        }
    }
    if out.is_empty() && p.len() == before {
        p.push(problem(at, "operators", "lists no operators"));
    }
    (p.len() == before).then_some(out)
}

// === Deserialize for the entries that take two shapes ===

impl<'de> Deserialize<'de> for RawModels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawModels, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawModels;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of model names or { name, upstream } tables")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawModels, A::Error> {
                let mut out = Vec::new();
                while let Some(m) = seq.next_element()? {
                    out.push(m);
                }
                Ok(RawModels(out))
            }
        }
        d.deserialize_seq(V)
    }
}

impl<'de> Deserialize<'de> for RawModel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawModel, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawModel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a model name or { name, upstream }")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawModel, E> {
                Ok(RawModel::Name(s.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawModel, A::Error> {
                RawModelAlias::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawModel::Alias)
            }
        }
        // As a struct, so that the gateway's loader checks a table's keys against these (and
        // reports every unknown one); it hands a string to `visit_str`.
        d.deserialize_struct("RawModelAlias", MODEL_ALIAS_KEYS, V)
    }
}

impl<'de> Deserialize<'de> for RawOperators {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawOperators, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawOperators;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a trigraph like \"USA\" or a list of trigraphs")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawOperators, E> {
                Ok(RawOperators(
                    s.split(',').map(|c| c.trim().to_owned()).collect(),
                ))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawOperators, A::Error> {
                let mut out = Vec::new();
                while let Some(code) = seq.next_element::<String>()? {
                    out.push(code);
                }
                Ok(RawOperators(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openai(name: &str) -> RawBackend {
        RawBackend {
            name: Some(name.into()),
            kind: Some("openai".into()),
            base_url: Some("https://api.example.gov/v1/".into()),
            models: Some(RawModels(vec![
                RawModel::Name("gpt-4o".into()),
                RawModel::Alias(RawModelAlias {
                    name: Some("fast".into()),
                    upstream: Some("gpt-4o-mini".into()),
                }),
            ])),
            accreditation: Some("secret//rel to usa, gbr".into()),
            operators: Some(RawOperators(vec!["USA".into(), "GBR".into()])),
            ..RawBackend::default()
        }
    }

    fn keys(e: &[ConfigProblem]) -> Vec<String> {
        e.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_valid_entry_becomes_a_backend_with_its_defaults() {
        let b = BackendConfig::from_raw(openai("allied"), "backends[0]").unwrap();
        assert_eq!(b.kind, BackendKind::OpenAi);
        assert_eq!(b.base_url.as_deref(), Some("https://api.example.gov/v1"));
        assert_eq!(b.accreditation.label().banner(), "SECRET//REL TO USA, GBR");
        assert_eq!(b.accreditation.operators().len(), 2);
        assert_eq!(b.models[1].upstream, "gpt-4o-mini");
        assert_eq!((b.priority, b.weight, b.allow_cleartext), (100, 1, false));
    }

    #[test]
    fn every_problem_of_every_entry_is_reported_with_its_path() {
        let bad = RawBackend {
            name: Some("a b".into()),
            kind: Some("magic".into()),
            models: Some(RawModels(vec![
                RawModel::Name("has space".into()),
                RawModel::Alias(RawModelAlias::default()),
            ])),
            accreditation: Some("SECRET//NOFORN//NOFORN".into()),
            operators: Some(RawOperators(vec!["USA".into(), "XYZ".into()])),
            priority: Some(-1),
            weight: Some(0),
            ..RawBackend::default()
        };
        let mut dup = openai("dup");
        dup.base_url = Some("http://10.0.0.5/v1".into());
        let e = backends_from_raw(vec![bad, openai("dup"), dup], "backends").unwrap_err();
        let text = keys(&e).join("\n");
        for want in [
            "backends[0].name: expected 1-64 characters",
            "backends[0].kind: unknown kind \"magic\"",
            "backends[0].models[0]: expected a model name",
            "backends[0].models[1].name: required",
            "backends[0].accreditation: not a valid marking",
            "backends[0].operators: unknown country code \"XYZ\"",
            "backends[0].priority: expected an integer from 0 to 1000000",
            "backends[0].weight: expected an integer from 1 to 1000000",
            "backends[2].name: duplicate backend name \"dup\"",
            "backends[2].base_url: http:// to a host that is not loopback",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert_eq!(e.len(), 10, "{text}");
    }

    #[test]
    fn one_local_backend_at_most_serving_the_embedded_models_only() {
        let local = |name: &str, model: &str| RawBackend {
            name: Some(name.into()),
            kind: Some("local".into()),
            models: Some(RawModels(vec![RawModel::Name(model.into())])),
            accreditation: Some("SECRET".into()),
            ..RawBackend::default()
        };
        assert!(backends_from_raw(vec![local("l", crate::local::CHAT_MODEL)], "backends").is_ok());
        let e = backends_from_raw(
            vec![local("l1", crate::local::CHAT_MODEL), local("l2", "gpt-4o")],
            "backends",
        )
        .unwrap_err();
        let text = keys(&e).join("\n");
        assert!(
            text.contains("backends: at most one kind = \"local\""),
            "{text}"
        );
        assert!(
            text.contains("backends[1].models: the local backend serves"),
            "{text}"
        );
        let mut with_url = local("l", crate::local::EMBED_MODEL);
        with_url.base_url = Some("http://127.0.0.1:1/v1".into());
        let e = BackendConfig::from_raw(with_url, "backends[0]").unwrap_err();
        assert_eq!(
            keys(&e),
            ["backends[0].base_url: not used by kind = \"local\" (the models run in-process)"]
        );
    }

    #[test]
    fn required_keys_and_empty_lists_are_named() {
        let e = BackendConfig::from_raw(RawBackend::default(), "backends[3]").unwrap_err();
        assert_eq!(
            keys(&e),
            [
                "backends[3].name: required",
                "backends[3].kind: required",
                "backends[3].models: required: the model names this backend serves",
                "backends[3].accreditation: required",
            ]
        );
        let mut b = openai("x");
        b.api_key_env = Some("A=B".into());
        let e = BackendConfig::from_raw(b, "backends[0]").unwrap_err();
        assert_eq!(
            keys(&e),
            ["backends[0].api_key_env: expected the name of an environment variable"]
        );
        let mut b = openai("x");
        b.models = Some(RawModels(Vec::new()));
        b.operators = Some(RawOperators(Vec::new()));
        let e = BackendConfig::from_raw(b, "backends[0]").unwrap_err();
        assert_eq!(
            keys(&e),
            [
                "backends[0].models: lists no models",
                "backends[0].operators: lists no operators"
            ]
        );
    }

    #[test]
    fn cleartext_is_recognised_for_remote_hosts_only() {
        for remote in [
            "http://10.0.0.5:8000/v1",
            "HTTP://api.example.gov/v1",
            "http://[2001:db8::1]/v1",
            "http://user@127.0.0.1.evil.example/v1",
        ] {
            assert!(is_cleartext_remote(remote), "{remote}");
        }
        for local in [
            "http://127.0.0.1:9000/v1",
            "http://localhost:9000/v1",
            "http://[::1]:9000/v1",
            "https://api.example.gov/v1",
        ] {
            assert!(!is_cleartext_remote(local), "{local}");
        }
    }

    #[test]
    fn the_api_key_never_shows_in_debug() {
        let mut b = BackendConfig::from_raw(openai("x"), "backends[0]").unwrap();
        b.api_key = Some(ApiKey::new("sk-planted-secret"));
        let text = format!("{b:?}");
        assert!(!text.contains("sk-planted-secret"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    fn bedrock(name: &str) -> RawBackend {
        RawBackend {
            name: Some(name.into()),
            kind: Some("bedrock".into()),
            region: Some("us-gov-west-1".into()),
            models: Some(RawModels(vec![RawModel::Alias(RawModelAlias {
                name: Some("claude".into()),
                upstream: Some("us-gov.anthropic.claude-3-5-sonnet-20240620-v1:0".into()),
            })])),
            accreditation: Some("CUI".into()),
            ..RawBackend::default()
        }
    }

    #[test]
    fn a_bedrock_entry_gets_its_region_s_endpoint() {
        let b = BackendConfig::from_raw(bedrock("gov"), "backends[0]").unwrap();
        assert_eq!(b.kind, BackendKind::Bedrock);
        let br = b.bedrock.unwrap();
        assert_eq!(
            br.endpoint_url,
            "https://bedrock-runtime.us-gov-west-1.amazonaws.com"
        );
        assert!(br.guardrail.is_none() && br.credentials.is_none());
        assert_eq!(
            default_endpoint("us-isob-east-1"),
            "https://bedrock-runtime.us-isob-east-1.sc2s.sgov.gov"
        );
        let mut fips = bedrock("fips");
        fips.endpoint_url =
            Some("https://bedrock-runtime-fips.us-gov-west-1.amazonaws.com/".into());
        fips.guardrail_identifier = Some("gr-abc".into());
        fips.guardrail_version = Some("DRAFT".into());
        fips.profile = Some("govcloud".into());
        let br = BackendConfig::from_raw(fips, "backends[0]")
            .unwrap()
            .bedrock
            .unwrap();
        assert_eq!(
            br.endpoint_url,
            "https://bedrock-runtime-fips.us-gov-west-1.amazonaws.com"
        );
        assert_eq!(br.guardrail.unwrap().version, "DRAFT");
        assert_eq!(br.profile.as_deref(), Some("govcloud"));
        let mut local = bedrock("test");
        local.endpoint_url = Some("http://127.0.0.1:9000".into());
        assert!(BackendConfig::from_raw(local, "backends[0]").is_ok());
    }

    #[test]
    fn bedrock_keys_are_checked_and_refused_elsewhere() {
        let mut b = bedrock("b");
        b.region = None;
        b.base_url = Some("https://x/v1".into());
        b.api_key_env = Some("KEY".into());
        b.guardrail_version = Some("1".into());
        let e = BackendConfig::from_raw(b, "backends[0]").unwrap_err();
        assert_eq!(
            keys(&e),
            [
                "backends[0].base_url: not used by kind = \"bedrock\": set region, and endpoint_url for a FIPS or VPC endpoint",
                "backends[0].api_key_env: not used by kind = \"bedrock\": requests are signed with AWS credentials (environment or profile)",
                "backends[0].region: required",
            ]
        );
        let mut b = bedrock("b");
        b.region = Some("US West".into());
        let e = BackendConfig::from_raw(b, "backends[0]").unwrap_err();
        assert_eq!(
            keys(&e),
            ["backends[0].region: expected an AWS region like \"us-gov-west-1\""]
        );
        let mut b = bedrock("b");
        b.endpoint_url = Some("http://bedrock.internal:80".into());
        b.guardrail_identifier = Some("gr".into());
        let text = keys(&BackendConfig::from_raw(b, "backends[0]").unwrap_err()).join("\n");
        assert!(
            text.contains("backends[0].endpoint_url: http:// to a host that is not loopback"),
            "{text}"
        );
        assert!(
            text.contains("backends[0].guardrail_version: required with guardrail_identifier"),
            "{text}"
        );
        let mut o = openai("o");
        o.region = Some("us-east-1".into());
        o.profile = Some("p".into());
        let e = BackendConfig::from_raw(o, "backends[0]").unwrap_err();
        assert_eq!(
            keys(&e),
            [
                "backends[0].region: only used by kind = \"bedrock\"",
                "backends[0].profile: only used by kind = \"bedrock\"",
            ]
        );
    }

    #[test]
    fn the_two_shapes_of_models_and_operators_deserialize() {
        // (A plain name in `models` is covered by the gateway's loader tests: it is read
        // through `deserialize_struct`, which serde_json does not offer to strings.)
        let raw: RawBackend = serde_json::from_str(
            r#"{"models": [{"name": "b", "upstream": "c"}], "operators": "USA, GBR"}"#,
        )
        .unwrap();
        let models = raw.models.unwrap().0;
        assert!(matches!(&models[0], RawModel::Alias(a) if a.upstream.as_deref() == Some("c")));
        assert_eq!(raw.operators.unwrap().0, ["USA", "GBR"]);
        let raw: RawBackend = serde_json::from_str(r#"{"operators": ["USA", "CAN"]}"#).unwrap();
        assert_eq!(raw.operators.unwrap().0, ["USA", "CAN"]);
        let e = serde_json::from_str::<RawBackend>(r#"{"models": [{"name": "b", "x": 1}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `x`"), "{e}");
        let e = serde_json::from_str::<RawBackend>(r#"{"models": "gpt-4o"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("an array of model names"), "{e}");
    }
}
