//! Who is calling: OpenID Connect bearer tokens (RS256/ES256 against a JWKS) and mutual TLS
//! client certificates mapped to principals, as CAC/PIV cards are. API keys live in the store.
//!
//! This crate defines the settings it needs (filled in by the gateway's config reader) and turns
//! credentials into an [`enclave_policy::Principal`] or a named principal to look up:
//!
//! - [`oidc::OidcVerifier`] checks a bearer JWT (signature, issuer, audience, expiry) against the
//!   identity provider's keys and maps its claims to a `Principal`; [`oidc::looks_like_jwt`]
//!   tells such a token from an API key.
//! - [`mtls::server_config`] builds the listener's TLS settings, optionally asking clients for a
//!   certificate; [`mtls::peer_names`] and [`mtls::map_certificate`] turn a verified client
//!   certificate into the name of a stored principal.
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

mod error;
pub mod mtls;
pub mod oidc;

pub use error::AuthError;

/// OpenID Connect bearer tokens.
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
}

/// Where a JWKS document comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksSource {
    /// A file, read at start.
    File(PathBuf),
    /// A URL, fetched at start and again (rate-limited) when a token names an unknown key id.
    Url(String),
}

/// Claim names for the principal's attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimMap {
    /// Principal name (default `sub`).
    pub principal: String,
    /// Tenant (default `tenant`).
    pub tenant: String,
    /// Clearance, a banner marking (default `clearance`).
    pub clearance: String,
    /// Nationality, a trigraph (default `nationality`; absent means `USA`).
    pub nationality: String,
    /// Role (default `role`; absent means `user`).
    pub role: String,
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA bundle (PEM) that client certificates must chain to; enables mutual TLS.
    pub client_ca: Option<PathBuf>,
    /// Client certificates mapped to principals.
    pub client_map: Vec<CertMapping>,
}

/// A client certificate name mapped to a stored principal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertMapping {
    /// What to match.
    pub matcher: CertMatch,
    /// The principal (`enclave principal add`) it authenticates as.
    pub principal: String,
}

/// Which certificate name a mapping matches, exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertMatch {
    /// The subject distinguished name as RFC 4514 text (`CN=DOE.JOHN.1234567890,OU=DoD,O=U.S. Government,C=US`),
    /// or its common name alone.
    Subject(String),
    /// A subjectAltName: an email (rfc822Name), DNS name, URI or UPN (`1234567890@mil`).
    San(String),
}
