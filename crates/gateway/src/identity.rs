//! Authentication on the request path: bearer API keys (from the store), OpenID Connect JWTs
//! and client certificates, each turned into a [`Principal`].
//!
//! What protects the database and the identity provider from floods of made-up credentials:
//!
//! - verified credentials are cached for at most [`KEY_CACHE_TTL`] (a revoked key stops working
//!   within it on every replica), and a token never past its `exp`; the cache holds SHA-256
//!   digests of the credentials, not the credentials;
//! - an API key's check tag is verified with one HMAC before any lookup, so a made-up key never
//!   reaches the database (see `identity/api_keys.rs`);
//! - tokens naming unknown key ids share one rate-limited fetch of the identity provider's keys
//!   (see [`enclave_auth::oidc`]).

mod api_keys;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use enclave_auth::mtls::{CRL_POLL, ServerTls, watch_crls};
use enclave_auth::oidc::{OidcVerifier, looks_like_jwt};
use enclave_auth::{AuthError, TlsConfig};
use enclave_label::{Clearance, Country, Label};
use enclave_policy::{Principal, PrincipalId, Role, TenantId};
use enclave_store::{PrincipalRecord, Store};
use http::{HeaderMap, StatusCode};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::error::ApiError;
use api_keys::ApiKeys;

/// How long a verified API key or token is trusted without checking it again. A revoked key
/// stops working within this time on every replica.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(5);

/// Most verified credentials cached at once.
const CACHE_MAX: usize = 10_000;

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Who, with tenant and clearance.
    pub principal: Principal,
    /// The rate-limit bucket: the API key id, or the principal for tokens and certificates.
    pub rate_key: String,
    /// How they authenticated: `api_key`, `oidc` or `mtls`.
    pub method: &'static str,
}

/// What the TLS handshake learned about the client.
#[derive(Clone, Debug, Default)]
pub struct PeerCert {
    /// The verified client certificate's subject (RFC 4514), if one was presented.
    pub subject: Option<String>,
    /// The principal it maps to, if any mapping matched (name and issuing CA).
    pub principal: Option<String>,
}

/// Checks credentials.
pub struct Authenticator {
    store: Store,
    oidc: Option<OidcVerifier>,
    keys: ApiKeys,
    /// Verified credentials by SHA-256 digest, with the instant they stop being trusted.
    /// Shared, not copied, so a hit costs no allocation.
    cache: Mutex<HashMap<Digest, (Arc<Caller>, Instant)>>,
}

/// The SHA-256 digest of a credential.
type Digest = [u8; 32];

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SECURITY: the caches hold digests of keys and tokens; nothing of them is shown.
        f.debug_struct("Authenticator")
            .field("oidc", &self.oidc)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator over the store's keys and, if configured, an OIDC verifier.
    pub fn new(store: Store, oidc: Option<OidcVerifier>) -> Authenticator {
        Authenticator {
            keys: ApiKeys::new(store.clone()),
            store,
            oidc,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The caller of a request: the `Authorization: Bearer` credential if present, else the
    /// client certificate.
    ///
    /// # Errors
    ///
    /// 401 `invalid_api_key` saying what is wrong; 403 `missing_claim` for a token whose
    /// principal claims are missing or unmappable; 500 when the store fails.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: &PeerCert,
    ) -> Result<Arc<Caller>, ApiError> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return self.by_certificate(peer).await.map(Arc::new);
        };
        let Some(token) = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            return Err(ApiError::unauthorized(
                "The Authorization header must be `Bearer <API key or token>`.",
            ));
        };
        let digest = digest(token);
        if let Some(hit) = digest.and_then(|d| self.cached(&d)) {
            return Ok(hit);
        }
        let (caller, trusted_for) = if looks_like_jwt(token) {
            self.by_token(token).await?
        } else {
            let Some((key, record)) = self.keys.authenticate(token).await? else {
                return Err(ApiError::unauthorized(
                    "Invalid API key. Check the key, or ask your administrator for a new one (`enclave key create`).",
                ));
            };
            let caller = Caller {
                principal: principal_from(&record)?,
                rate_key: format!("key:{}", key.id),
                method: "api_key",
            };
            (caller, KEY_CACHE_TTL)
        };
        let caller = Arc::new(caller);
        if let Some(d) = digest {
            self.remember(d, &caller, trusted_for);
        }
        Ok(caller)
    }

    /// A caller from an OpenID Connect token, and how long it may be cached: at most
    /// [`KEY_CACHE_TTL`], never past the token's `exp`.
    async fn by_token(&self, token: &str) -> Result<(Caller, Duration), ApiError> {
        let Some(oidc) = &self.oidc else {
            return Err(ApiError::unauthorized(
                "This server does not accept OpenID Connect tokens: use an API key (`enclave key create`).",
            ));
        };
        let verified = oidc
            .verify_token(token)
            .await
            .map_err(|e| self.token_error(e))?;
        let left = verified
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let caller = Caller {
            rate_key: format!("oidc:{}", verified.principal.id),
            principal: verified.principal,
            method: "oidc",
        };
        Ok((caller, left.min(KEY_CACHE_TTL)))
    }

    /// The API error for a refused token.
    fn token_error(&self, e: AuthError) -> ApiError {
        let key = |attribute: enclave_auth::Attribute| {
            format!("[oidc.claims] {}", attribute.config_key())
        };
        match e {
            // SECURITY: a token whose principal cannot be fully determined is refused, never
            // completed with defaults; the message names the claim, never its value.
            AuthError::MissingClaim { attribute, claim } => missing_claim(format!(
                "The token has no `{claim}` claim, which must carry the principal's {attribute}: ask the identity provider's administrator to issue it, or set `{}` to the claim that carries it.",
                key(attribute)
            )),
            AuthError::InvalidClaim {
                attribute,
                claim,
                reason,
            } => missing_claim(format!(
                "The token's `{claim}` claim (the principal's {attribute}) {reason}: ask the identity provider's administrator to correct it (`{}` names the claim).",
                key(attribute)
            )),
            AuthError::InvalidClearance { claim, code } => missing_claim(format!(
                "The token's `{claim}` claim (the principal's clearance) is not a valid marking ({code}): it must be a banner marking such as `SECRET//NOFORN`; ask the identity provider's administrator to correct it."
            )),
            AuthError::KeysUnavailable | AuthError::Jwks { .. } => {
                if let AuthError::Jwks { .. } = &e {
                    tracing::warn!(error = %e, "the identity provider's signing keys are unavailable");
                }
                // SECURITY: the fetch error (URL, I/O message) is logged where it happened and
                // never returned to the caller.
                ApiError::unauthorized("The identity provider's keys are unavailable; retry later.")
            }
            AuthError::AlgorithmMismatch { .. }
            | AuthError::Certificate { .. }
            | AuthError::Malformed(_)
            | AuthError::MissingKeyId
            | AuthError::MissingTokenClaim(_)
            | AuthError::NotYetValid
            | AuthError::SignatureInvalid
            | AuthError::Tls { .. }
            | AuthError::TokenExpired
            | AuthError::TokenTooLarge { .. }
            | AuthError::UnknownKeyId
            | AuthError::UnsupportedAlgorithm { .. }
            | AuthError::WrongAudience
            | AuthError::WrongIssuer => {
                ApiError::unauthorized(format!("Invalid bearer token: {e}."))
            }
        }
    }

    async fn by_certificate(&self, peer: &PeerCert) -> Result<Caller, ApiError> {
        let Some(subject) = &peer.subject else {
            return Err(ApiError::unauthorized(
                "No credentials: send `Authorization: Bearer <API key>` (or a client certificate).",
            ));
        };
        let Some(name) = &peer.principal else {
            return Err(ApiError::unauthorized(format!(
                "The client certificate {subject:?} is not mapped to a principal for its issuing CA; ask your administrator to add it to [[tls.client_map]]."
            )));
        };
        let record = self
            .store
            .principal(name)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "principal lookup failed");
                ApiError::internal()
            })?
            .ok_or_else(|| {
                ApiError::unauthorized(format!(
                    "The client certificate maps to principal {name:?}, which does not exist."
                ))
            })?;
        Ok(Caller {
            principal: principal_from(&record)?,
            rate_key: format!("cert:{name}"),
            method: "mtls",
        })
    }

    fn cached(&self, digest: &Digest) -> Option<Arc<Caller>> {
        let map = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let (caller, until) = map.get(digest)?;
        (Instant::now() < *until).then(|| Arc::clone(caller))
    }

    fn remember(&self, digest: Digest, caller: &Arc<Caller>, trusted_for: Duration) {
        if trusted_for.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut map = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= CACHE_MAX {
            map.retain(|_, (_, until)| now < *until);
            if map.len() >= CACHE_MAX {
                map.clear();
            }
        }
        map.insert(digest, (Arc::clone(caller), now + trusted_for));
    }
}

/// 403 `missing_claim`.
fn missing_claim(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "missing_claim", message)
}

/// The SHA-256 digest of a credential, the key of the caches (so they hold no credential).
fn digest(credential: &str) -> Option<Digest> {
    let d = ring::digest::digest(&ring::digest::SHA256, credential.as_bytes());
    Digest::try_from(d.as_ref()).ok()
}

/// A stored principal as the policy crate sees it.
///
/// # Errors
///
/// 500 when the stored record is corrupt (logged).
pub fn principal_from(r: &PrincipalRecord) -> Result<Principal, ApiError> {
    let corrupt = |what: &str| {
        tracing::error!(principal = %r.name, "stored principal has an invalid {what}");
        ApiError::internal()
    };
    let label: Label = r.clearance.parse().map_err(|_| corrupt("clearance"))?;
    let nationality = Country::from_code(&r.nationality).ok_or_else(|| corrupt("nationality"))?;
    let role = match r.role.as_str() {
        "admin" => Role::Admin,
        "auditor" => Role::Auditor,
        "metrics" => Role::Metrics,
        "user" => Role::User,
        _ => return Err(corrupt("role")),
    };
    Ok(Principal {
        id: PrincipalId::new(r.name.clone()),
        tenant: TenantId::new(r.tenant.clone()),
        clearance: Clearance::new(label, nationality),
        role,
    })
}

// === TLS ===

/// The listener's TLS: the acceptor, and what identifies client certificates. Loads every file
/// the settings name and, when CRL files are configured, starts a task that reloads them when
/// they change (it ends when the returned [`ServerTls`] is dropped).
///
/// # Errors
///
/// [`AuthError::Tls`] naming the file that cannot be used.
pub fn tls_listener(cfg: &TlsConfig) -> Result<(TlsAcceptor, Arc<ServerTls>), AuthError> {
    let tls = Arc::new(ServerTls::load(cfg)?);
    if !cfg.crl_files.is_empty() {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(watch_crls(Arc::downgrade(&tls), CRL_POLL))),
            Err(_) => {
                tracing::warn!("no runtime: the CRL files will not be reloaded when they change")
            }
        }
    }
    Ok((TlsAcceptor::from(tls.server_config()), tls))
}

/// What the handshake of `conn` learned about the client: the verified certificate's subject
/// and the principal it is mapped to, if any.
pub fn peer_cert(conn: &rustls::ServerConnection, tls: &ServerTls, remote: SocketAddr) -> PeerCert {
    match tls.identify(conn) {
        Ok(Some(client)) => PeerCert {
            subject: Some(client.subject),
            principal: client.principal,
        },
        Ok(None) => PeerCert::default(),
        Err(e) => {
            tracing::info!(%remote, error = %e, "unreadable client certificate");
            PeerCert::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_of_different_credentials_differ() {
        let a = digest("enk_a").unwrap();
        assert_eq!(Some(a), digest("enk_a"));
        assert_ne!(Some(a), digest("enk_b"));
    }

    #[test]
    fn missing_claim_is_a_403_with_its_code() {
        let e = missing_claim("m".into());
        assert_eq!(
            (e.status, e.code.as_ref()),
            (StatusCode::FORBIDDEN, "missing_claim")
        );
        assert_eq!(e.kind(), "permission_error");
    }
}
