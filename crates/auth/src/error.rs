//! Why a credential was refused or the authentication settings could not be loaded.

use std::path::PathBuf;

use enclave_label::ReasonCode;

use crate::Attribute;

/// A refused credential or an unusable authentication setting.
///
/// Messages say what is wrong without repeating the credential: no token, signature or key
/// material ever appears in one. The gateway answers the variants about the principal's claims
/// ([`AuthError::MissingClaim`], [`AuthError::InvalidClaim`], [`AuthError::InvalidClearance`])
/// with HTTP 403 `missing_claim`, and the other variants met while checking a request with 401
/// `invalid_api_key`; the variants met while loading settings ([`AuthError::Jwks`] at start,
/// [`AuthError::Tls`]) stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token names an algorithm its signing key is not for (an ES256 token naming an RSA
    /// key, or the reverse): the classic algorithm-confusion attack.
    #[error("token algorithm `{alg}` does not match its signing key")]
    AlgorithmMismatch {
        /// The algorithm the token header names.
        alg: &'static str,
    },
    /// The client certificate is not a well-formed X.509 certificate.
    #[error("client certificate cannot be read: {reason}")]
    Certificate {
        /// What the parser found wrong.
        reason: String,
    },
    /// A claim the principal needs has the wrong type, or a value that maps to nothing (an
    /// unknown country or role).
    #[error("claim `{claim}` (the principal's {attribute}) {reason}")]
    InvalidClaim {
        /// What the claim carries.
        attribute: Attribute,
        /// The claim's name in the token.
        claim: String,
        /// What is wrong with it, e.g. "must be one of `user`, `admin`, `auditor`".
        reason: &'static str,
    },
    /// The clearance claim is not a marking Enclave can read.
    #[error("claim `{claim}` (the principal's clearance) is not a valid marking: {code}")]
    InvalidClearance {
        /// The claim's name in the token.
        claim: String,
        /// Why the marking was rejected.
        code: ReasonCode,
    },
    /// The signing keys could not be loaded or refreshed.
    #[error("cannot load signing keys from `{source_name}`: {reason}")]
    Jwks {
        /// The file or URL the keys come from.
        source_name: String,
        /// What went wrong.
        reason: String,
    },
    /// The identity provider's signing keys were needed (the token names a key id not yet
    /// known) but could not be fetched in time. The cause (URL, I/O error) is logged, never
    /// returned: callers should retry later.
    #[error("the identity provider's signing keys are unavailable")]
    KeysUnavailable,
    /// The token is not a compact JWS in the expected shape.
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    /// A claim the principal needs is absent (or `null`). Nothing is ever assumed in its place.
    #[error("missing claim `{claim}` (the principal's {attribute})")]
    MissingClaim {
        /// What the claim carries.
        attribute: Attribute,
        /// The claim's name in the token, as configured.
        claim: String,
    },
    /// The token has no `kid` and the key set holds more than one key, so the key is ambiguous.
    #[error("token has no key id and the key set holds several keys")]
    MissingKeyId,
    /// The token's `nbf` lies in the future (beyond the allowed leeway).
    #[error("token is not valid yet")]
    NotYetValid,
    /// The signature does not verify with the named key.
    #[error("token signature is invalid")]
    SignatureInvalid,
    /// The TLS settings could not be loaded.
    #[error("cannot load TLS {what} from `{}`: {reason}", path.display())]
    Tls {
        /// Which part: `certificate chain`, `private key`, `client CA bundle`, ...
        what: &'static str,
        /// The file named in the settings.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A registered claim every token must carry (`exp`, `iss`, `aud`) is absent.
    #[error("token has no `{0}` claim")]
    MissingTokenClaim(String),
    /// The token's `exp` has passed (beyond the allowed leeway).
    #[error("token expired")]
    TokenExpired,
    /// The token exceeds the size limit.
    #[error("token is larger than {limit} bytes")]
    TokenTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The token's `kid` names no key in the key set (after a refresh, where one was allowed).
    #[error("unknown signing key id")]
    UnknownKeyId,
    /// The token uses an algorithm other than RS256 or ES256 (`none`, HS256, ...).
    #[error("token algorithm {alg} is not allowed: use RS256 or ES256")]
    UnsupportedAlgorithm {
        /// The algorithm as the token names it, in backticks, or a placeholder when it is
        /// absent or not printable.
        alg: String,
    },
    /// The token's `aud` does not contain the configured audience.
    #[error("token audience does not match")]
    WrongAudience,
    /// The token's `iss` is not the configured issuer.
    #[error("token issuer does not match")]
    WrongIssuer,
}
