//! Who is calling: OpenID Connect bearer tokens (RS256/ES256 against a JWKS) and mutual TLS
//! client certificates mapped to principals, as CAC/PIV cards are. API keys live in the store.
//!
//! This crate owns the `[oidc]` and `[tls]` sections of the configuration file ([`config`]:
//! the sections as written and their checks into [`OidcConfig`] and [`TlsConfig`]) and turns
//! credentials into an [`enclave_policy::Principal`] or a named principal to look up:
//!
//! - [`oidc::OidcVerifier`] checks a bearer JWT (signature, issuer, audience, expiry) against the
//!   identity provider's keys, kept current without letting tokens drive the provider, and maps
//!   its claims to a `Principal` (a missing claim is refused, never defaulted);
//!   [`oidc::looks_like_jwt`] tells such a token from an API key.
//! - [`mtls::ServerTls`] builds the listener's TLS settings, optionally asking clients for a
//!   certificate checked against CRLs that [`mtls::watch_crls`] reloads, and turns a verified
//!   client certificate into the name of a stored principal: a mapping matches the subject
//!   structurally ([`dn::DistinguishedName`]) and only certificates issued by its own CA.
//!
//! Every refusal is an [`AuthError`] whose message says what is wrong without repeating the
//! credential. The crate does not store principals or keys, does not decide what a principal may
//! do (that is `enclave-policy`), and does not speak HTTP to clients.
//!
//! ```
//! use enclave_auth::oidc::looks_like_jwt;
//!
//! let bearer = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";
//! assert!(looks_like_jwt(bearer)); // verify with OidcVerifier
//! assert!(!looks_like_jwt("enk_5d41402abc4b2a76")); // look up as an API key
//! ```

use std::path::PathBuf;
use std::time::Duration;

pub mod config;
pub mod dn;
mod error;
pub mod mtls;
pub mod oidc;

pub use error::AuthError;

/// OpenID Connect bearer tokens.
///
/// Holds no secret (the keys are public), so `Debug` shows it whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcConfig {
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// Where the signing keys are.
    pub jwks: JwksSource,
    /// Which claims carry what.
    pub claims: ClaimMap,
    /// Allowed clock skew on `exp`/`nbf`.
    pub leeway: Duration,
    /// How often a JWKS URL is fetched again on a timer, whatever the tokens say, so that keys
    /// the identity provider withdrew stop being accepted (TOML `refresh_interval_secs`,
    /// default 300 s). A JWKS file is instead read again whenever it changes.
    pub refresh_interval: Duration,
}

/// Where a JWKS document comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksSource {
    /// A file, read at start and again whenever its modification time or size changes.
    File(PathBuf),
    /// A URL, fetched at start, on a timer, and (at most once per
    /// [`oidc::UNKNOWN_KID_REFRESH_INTERVAL`]) when a token names an unknown key id.
    Url(String),
}

/// Claim names for the principal's attributes.
///
/// Every attribute but the role is required: a token without one (or with a value that maps to
/// nothing) is refused, never given a default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimMap {
    /// Principal name (default `sub`).
    pub principal: String,
    /// Tenant (default `tenant`).
    pub tenant: String,
    /// Clearance, a banner marking (default `clearance`).
    pub clearance: String,
    /// Nationality, a country trigraph (default `nationality`).
    pub nationality: String,
    /// Role (default `role`): `user`, `admin` or `auditor`. Absent means `user`, the role with
    /// the fewest rights; a value that is none of these is refused.
    pub role: String,
}

impl ClaimMap {
    /// The claim name configured for `attribute`.
    pub fn name_of(&self, attribute: Attribute) -> &str {
        match attribute {
            Attribute::Clearance => &self.clearance,
            Attribute::Nationality => &self.nationality,
            Attribute::Principal => &self.principal,
            Attribute::Role => &self.role,
            Attribute::Tenant => &self.tenant,
        }
    }
}

/// An attribute of the principal that a token claim carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attribute {
    /// The clearance, a banner marking.
    Clearance,
    /// The nationality, a country trigraph.
    Nationality,
    /// The principal's name.
    Principal,
    /// The role.
    Role,
    /// The tenant.
    Tenant,
}

impl Attribute {
    /// The key under `[oidc.claims]` that names this attribute's claim (`nationality`).
    pub fn config_key(self) -> &'static str {
        match self {
            Attribute::Clearance => "clearance",
            Attribute::Nationality => "nationality",
            Attribute::Principal => "principal",
            Attribute::Role => "role",
            Attribute::Tenant => "tenant",
        }
    }
}

impl std::fmt::Display for Attribute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Attribute::Principal => "name",
            other => other.config_key(),
        })
    }
}

impl Default for ClaimMap {
    fn default() -> ClaimMap {
        ClaimMap {
            principal: "sub".into(),
            tenant: "tenant".into(),
            clearance: "clearance".into(),
            nationality: "nationality".into(),
            role: "role".into(),
        }
    }
}

/// TLS on the listener, optionally with client certificates.
///
/// Holds file names only; the private key is read when the listener starts, so `Debug` shows no
/// key material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA bundle (PEM) that client certificates must chain to; enables mutual TLS.
    pub client_ca: Option<PathBuf>,
    /// Certificate revocation lists (PEM or DER) for the client CAs, reloaded when they change.
    pub crl_files: Vec<PathBuf>,
    /// Client certificates mapped to principals.
    pub client_map: Vec<CertMapping>,
}

/// A client certificate name, issued by a given CA, mapped to a stored principal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertMapping {
    /// What to match.
    pub matcher: CertMatch,
    /// The CA certificate (PEM file) that must have issued the client certificate: it must
    /// chain to this CA by signature. Required when the client CA bundle holds several CAs.
    pub issuer: Option<PathBuf>,
    /// The principal (`enclave principal add`) it authenticates as.
    pub principal: String,
}

/// Which certificate name a mapping matches, exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertMatch {
    /// The subject's common name alone, when the certificate has exactly one.
    CommonName(String),
    /// A subjectAltName: an email (rfc822Name), DNS name, URI or UPN (`1234567890@mil`).
    San(String),
    /// The whole subject distinguished name, compared RDN by RDN (see [`dn`]).
    Subject(dn::DistinguishedName),
}
