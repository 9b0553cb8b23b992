//! The `[oidc]` and `[tls]` sections of the configuration file, owned by this crate.
//!
//! [`RawOidc`] and [`RawTls`] are the sections as written (deserialized by the gateway's
//! loader, which reports unknown keys and wrong types with their key paths);
//! [`OidcConfig::from_raw`] and [`TlsConfig::from_raw`] check them and report every problem
//! with its key path (`tls.client_map[1].subject: …`). What needs the files themselves (a
//! client CA bundle with several CAs requires every mapping to name its `issuer`) is checked
//! when the listener starts ([`crate::mtls::ServerTls::load`]).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::dn::DistinguishedName;
use crate::{CertMapping, CertMatch, ClaimMap, JwksSource, OidcConfig, TlsConfig};

/// `[oidc]` as written in the file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    /// Required `iss` of every token.
    pub issuer: Option<String>,
    /// Required `aud` of every token.
    pub audience: Option<String>,
    /// A JWKS file, read again when it changes (exactly one of `jwks_file` and `jwks_url`).
    pub jwks_file: Option<String>,
    /// A JWKS URL, `http://` or `https://`.
    pub jwks_url: Option<String>,
    /// Which claims carry the principal's attributes (`[oidc.claims]`).
    pub claims: Option<RawClaims>,
    /// Allowed clock skew on `exp`/`nbf` in milliseconds, 1 to 86400000 (default 60000).
    pub leeway_ms: Option<i64>,
    /// How often a `jwks_url` is fetched again, 30 to 86400 seconds (default 300).
    pub refresh_interval_secs: Option<i64>,
}

/// `[oidc.claims]` as written: the claim name for each attribute.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClaims {
    /// The principal's name (default `sub`).
    pub principal: Option<String>,
    /// The tenant (default `tenant`).
    pub tenant: Option<String>,
    /// The clearance, a banner marking (default `clearance`).
    pub clearance: Option<String>,
    /// The nationality, a country trigraph (default `nationality`).
    pub nationality: Option<String>,
    /// The role (default `role`).
    pub role: Option<String>,
}

/// `[tls]` as written in the file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// Server certificate chain (PEM file), required.
    pub cert: Option<String>,
    /// Server private key (PEM file), required.
    pub key: Option<String>,
    /// CA bundle (PEM) that client certificates must chain to; enables mutual TLS.
    pub client_ca: Option<String>,
    /// Certificate revocation lists (PEM or DER files) for the client CAs.
    pub crl_files: Option<Vec<CrlPath>>,
    /// Client certificates mapped to principals (`[[tls.client_map]]`).
    pub client_map: Option<Vec<RawCertMapping>>,
}

/// One `[[tls.client_map]]` entry as written: exactly one of `subject`, `common_name` and
/// `san`, the `principal`, and optionally the `issuer`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertMapping {
    /// The whole subject, an RFC 4514 distinguished name, most specific RDN first.
    pub subject: Option<String>,
    /// The subject's common name alone.
    pub common_name: Option<String>,
    /// A subjectAltName: email, DNS name, URI or UPN.
    pub san: Option<String>,
    /// The CA certificate (PEM file) that must have issued the client certificate.
    pub issuer: Option<String>,
    /// The stored principal it authenticates as, required.
    pub principal: Option<String>,
}

/// One entry of `crl_files`: the path of a CRL file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlPath(pub String);

impl<'de> Deserialize<'de> for CrlPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CrlPath, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = CrlPath;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the path of a CRL file (PEM or DER)")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<CrlPath, E> {
                Ok(CrlPath(s.to_owned()))
            }
        }
        d.deserialize_str(V)
    }
}

/// One problem in the `[oidc]` or `[tls]` section: the key path and what is wrong and allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigProblem {
    /// The key path, e.g. `oidc.refresh_interval_secs`.
    pub key: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl OidcConfig {
    /// Checks the section found at key path `at` (`oidc`).
    ///
    /// # Errors
    ///
    /// Every problem, each with its key path.
    pub fn from_raw(raw: RawOidc, at: &str) -> Result<OidcConfig, Vec<ConfigProblem>> {
        let mut p = Problems::new(at);
        let issuer = p.required("issuer", raw.issuer);
        let audience = p.required("audience", raw.audience);
        let file = p.path("jwks_file", raw.jwks_file);
        let jwks = match (file, raw.jwks_url) {
            (Some(f), None) => Some(JwksSource::File(f)),
            (None, Some(u)) if u.starts_with("http://") || u.starts_with("https://") => {
                Some(JwksSource::Url(u))
            }
            (None, Some(_)) => {
                p.push("jwks_url", "expected an http:// or https:// URL");
                None
            }
            _ => {
                p.push("jwks_file", "set exactly one of jwks_file and jwks_url");
                None
            }
        };
        let mut claims = ClaimMap::default();
        if let Some(c) = raw.claims {
            for (value, slot) in [
                (c.principal, &mut claims.principal),
                (c.tenant, &mut claims.tenant),
                (c.clearance, &mut claims.clearance),
                (c.nationality, &mut claims.nationality),
                (c.role, &mut claims.role),
            ] {
                if let Some(v) = value {
                    *slot = v;
                }
            }
        }
        let leeway = p
            .int_in("leeway_ms", raw.leeway_ms, 1, 24 * 3600 * 1000)
            .map_or(Duration::from_secs(60), Duration::from_millis);
        let refresh = p.int_in(
            "refresh_interval_secs",
            raw.refresh_interval_secs,
            30,
            24 * 3600,
        );
        if raw.refresh_interval_secs.is_some() && matches!(jwks, Some(JwksSource::File(_))) {
            p.push(
                "refresh_interval_secs",
                "applies to jwks_url only: a jwks_file is read again whenever it changes",
            );
        }
        match (issuer, audience, jwks) {
            (Some(issuer), Some(audience), Some(jwks)) if p.list.is_empty() => Ok(OidcConfig {
                issuer,
                audience,
                jwks,
                claims,
                leeway,
                refresh_interval: Duration::from_secs(refresh.unwrap_or(300)),
            }),
            _ => Err(p.list),
        }
    }
}

impl TlsConfig {
    /// Checks the section found at key path `at` (`tls`).
    ///
    /// # Errors
    ///
    /// Every problem, each with its key path.
    pub fn from_raw(raw: RawTls, at: &str) -> Result<TlsConfig, Vec<ConfigProblem>> {
        let mut p = Problems::new(at);
        let cert = p.required_path("cert", raw.cert);
        let key = p.required_path("key", raw.key);
        let client_ca = p.path("client_ca", raw.client_ca);
        let mut crl_files = Vec::new();
        for (i, CrlPath(path)) in raw.crl_files.unwrap_or_default().into_iter().enumerate() {
            if path.is_empty() {
                p.push(
                    &format!("crl_files[{i}]"),
                    "expected the path of a CRL file (PEM or DER)",
                );
            } else {
                crl_files.push(PathBuf::from(path));
            }
        }
        let mut client_map = Vec::new();
        for (i, m) in raw.client_map.unwrap_or_default().into_iter().enumerate() {
            let here = format!("client_map[{i}]");
            let issuer = p.path(&format!("{here}.issuer"), m.issuer);
            let principal = p.required(&format!("{here}.principal"), m.principal);
            let matcher = match (m.subject, m.common_name, m.san) {
                (Some(s), None, None) => match s.parse::<DistinguishedName>() {
                    Ok(dn) => Some(CertMatch::Subject(dn)),
                    Err(e) => {
                        let hint = if s.contains('=') {
                            ""
                        } else {
                            " (for a common name alone, write common_name = \"...\")"
                        };
                        p.push(&format!("{here}.subject"), &format!("{e}{hint}"));
                        None
                    }
                },
                (None, Some(cn), None) => Some(CertMatch::CommonName(cn)),
                (None, None, Some(s)) => Some(CertMatch::San(s)),
                _ => {
                    p.push(
                        &format!("{here}.subject"),
                        "set exactly one of subject, common_name and san",
                    );
                    None
                }
            };
            if let (Some(matcher), Some(principal)) = (matcher, principal) {
                client_map.push(CertMapping {
                    matcher,
                    issuer,
                    principal,
                });
            }
        }
        if client_ca.is_none() {
            if !client_map.is_empty() {
                p.push(
                    "client_ca",
                    "required when client_map is set: client certificates must chain to it",
                );
            }
            if !crl_files.is_empty() {
                p.push(
                    "client_ca",
                    "required when crl_files is set: the CRLs apply to client certificates",
                );
            }
        }
        match (cert, key) {
            (Some(cert), Some(key)) if p.list.is_empty() => Ok(TlsConfig {
                cert,
                key,
                client_ca,
                crl_files,
                client_map,
            }),
            _ => Err(p.list),
        }
    }
}

/// Problems of one section, with its key path.
struct Problems<'a> {
    at: &'a str,
    list: Vec<ConfigProblem>,
}

impl<'a> Problems<'a> {
    fn new(at: &'a str) -> Problems<'a> {
        Problems {
            at,
            list: Vec::new(),
        }
    }

    fn push(&mut self, key: &str, message: &str) {
        self.list.push(ConfigProblem {
            key: format!("{}.{key}", self.at),
            message: message.to_owned(),
        });
    }

    fn required<T>(&mut self, key: &str, value: Option<T>) -> Option<T> {
        if value.is_none() {
            self.push(key, "required");
        }
        value
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

    fn required_path(&mut self, key: &str, value: Option<String>) -> Option<PathBuf> {
        let value = self.required(key, value);
        self.path(key, value)
    }

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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(e: &[ConfigProblem]) -> String {
        e.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn oidc(jwks_file: Option<&str>, jwks_url: Option<&str>) -> RawOidc {
        RawOidc {
            issuer: Some("https://idp".into()),
            audience: Some("enclave".into()),
            jwks_file: jwks_file.map(Into::into),
            jwks_url: jwks_url.map(Into::into),
            ..RawOidc::default()
        }
    }

    #[test]
    fn oidc_defaults_claims_and_exactly_one_key_source() {
        let mut raw = oidc(None, Some("https://idp/jwks"));
        raw.claims = Some(RawClaims {
            tenant: Some("org".into()),
            ..RawClaims::default()
        });
        let o = OidcConfig::from_raw(raw, "oidc").unwrap();
        assert_eq!(o.claims.tenant, "org");
        assert_eq!(o.claims.principal, "sub");
        assert_eq!(o.leeway, Duration::from_secs(60));
        assert_eq!(o.refresh_interval, Duration::from_secs(300));
        for (file, url, want) in [
            (
                None,
                None,
                "oidc.jwks_file: set exactly one of jwks_file and jwks_url",
            ),
            (
                Some("j.json"),
                Some("https://idp/jwks"),
                "oidc.jwks_file: set exactly one",
            ),
            (
                None,
                Some("ftp://idp/jwks"),
                "oidc.jwks_url: expected an http:// or https:// URL",
            ),
            (
                Some(""),
                None,
                "oidc.jwks_file: expected a path, found an empty string",
            ),
        ] {
            let e = texts(&OidcConfig::from_raw(oidc(file, url), "oidc").unwrap_err());
            assert!(e.contains(want), "{want}\n{e}");
        }
        let e = OidcConfig::from_raw(RawOidc::default(), "oidc").unwrap_err();
        assert!(texts(&e).contains("oidc.issuer: required\noidc.audience: required"));
    }

    #[test]
    fn oidc_durations_are_bounded() {
        let mut raw = oidc(None, Some("https://idp/jwks"));
        raw.leeway_ms = Some(0);
        raw.refresh_interval_secs = Some(5);
        let e = texts(&OidcConfig::from_raw(raw, "oidc").unwrap_err());
        assert!(
            e.contains("oidc.leeway_ms: expected an integer from 1 to 86400000"),
            "{e}"
        );
        assert!(
            e.contains("oidc.refresh_interval_secs: expected an integer from 30 to 86400"),
            "{e}"
        );
        let mut raw = oidc(Some("/etc/jwks.json"), None);
        raw.refresh_interval_secs = Some(60);
        let e = texts(&OidcConfig::from_raw(raw, "oidc").unwrap_err());
        assert!(e.contains("applies to jwks_url only"), "{e}");
    }

    #[test]
    fn tls_mappings_need_one_name_a_principal_and_a_client_ca() {
        let raw = RawTls {
            crl_files: Some(vec![CrlPath("a.crl".into()), CrlPath(String::new())]),
            client_map: Some(vec![
                RawCertMapping {
                    subject: Some("DOE.JOHN.1234567890".into()),
                    principal: Some("x".into()),
                    ..RawCertMapping::default()
                },
                RawCertMapping {
                    common_name: Some("a".into()),
                    san: Some("b".into()),
                    ..RawCertMapping::default()
                },
                RawCertMapping {
                    san: Some("1234567890@mil".into()),
                    principal: Some("jdoe".into()),
                    ..RawCertMapping::default()
                },
            ]),
            ..RawTls::default()
        };
        let e = texts(&TlsConfig::from_raw(raw, "tls").unwrap_err());
        for want in [
            "tls.cert: required",
            "tls.key: required",
            "tls.crl_files[1]: expected the path of a CRL file (PEM or DER)",
            "tls.client_map[0].subject: `DOE.JOHN.1234567890` is not an RFC 4514 distinguished name",
            "write common_name",
            "tls.client_map[1].principal: required",
            "tls.client_map[1].subject: set exactly one of subject, common_name and san",
            "tls.client_ca: required when client_map is set",
            "tls.client_ca: required when crl_files is set",
        ] {
            assert!(e.contains(want), "{want}\n{e}");
        }
        let ok = TlsConfig::from_raw(
            RawTls {
                cert: Some("c.pem".into()),
                key: Some("k.pem".into()),
                ..RawTls::default()
            },
            "tls",
        )
        .unwrap();
        assert_eq!(ok.cert, PathBuf::from("c.pem"));
        assert!(ok.client_ca.is_none() && ok.client_map.is_empty());
    }
}
