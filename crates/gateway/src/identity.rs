//! Authentication on the request path: bearer API keys (from the store), OpenID Connect JWTs
//! and client certificates, each turned into a [`Principal`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use enclave_auth::oidc::{OidcVerifier, looks_like_jwt};
use enclave_label::{Clearance, Country, Label};
use enclave_policy::{Principal, PrincipalId, Role, TenantId};
use enclave_store::{PrincipalRecord, Store};
use http::HeaderMap;
use tokio::time::Instant;

use crate::error::ApiError;

/// How long a verified API key is trusted without asking the database again. A revoked key
/// stops working within this time on every replica.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(5);

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
    /// The verified client certificate's subject, if one was presented.
    pub subject: Option<String>,
    /// The principal it maps to, if any mapping matched.
    pub principal: Option<String>,
}

/// Checks credentials.
pub struct Authenticator {
    store: Store,
    oidc: Option<OidcVerifier>,
    /// Verified credentials; shared, not copied, so a hit costs no allocation.
    cache: Mutex<HashMap<String, (Arc<Caller>, Instant)>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("oidc", &self.oidc.is_some())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator over the store's keys and, if configured, an OIDC verifier.
    pub fn new(store: Store, oidc: Option<OidcVerifier>) -> Authenticator {
        Authenticator {
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
    /// 401 `invalid_api_key` saying what is wrong; 500 when the store fails.
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
        if let Some(hit) = self.cached(token) {
            return Ok(hit);
        }
        let caller = if looks_like_jwt(token) {
            let Some(oidc) = &self.oidc else {
                return Err(ApiError::unauthorized(
                    "This server does not accept OpenID Connect tokens: use an API key (`enclave key create`).",
                ));
            };
            let principal = oidc
                .verify(token)
                .await
                .map_err(|e| {
                    if matches!(e, enclave_auth::AuthError::Jwks { .. }) {
                        tracing::warn!(error = %e, "the identity provider's signing keys could not be refreshed");
                    }
                    ApiError::unauthorized(format!("Invalid bearer token: {e}."))
                })?;
            Caller {
                rate_key: format!("oidc:{}", principal.id),
                principal,
                method: "oidc",
            }
        } else {
            let found = self.store.authenticate_key(token).await.map_err(|e| {
                tracing::error!(error = %e, "api key lookup failed");
                ApiError::internal()
            })?;
            let Some((key, record)) = found else {
                return Err(ApiError::unauthorized(
                    "Invalid API key. Check the key, or ask your administrator for a new one (`enclave key create`).",
                ));
            };
            Caller {
                principal: principal_from(&record)?,
                rate_key: format!("key:{}", key.id),
                method: "api_key",
            }
        };
        let caller = Arc::new(caller);
        self.remember(token, &caller);
        Ok(caller)
    }

    async fn by_certificate(&self, peer: &PeerCert) -> Result<Caller, ApiError> {
        let Some(subject) = &peer.subject else {
            return Err(ApiError::unauthorized(
                "No credentials: send `Authorization: Bearer <API key>` (or a client certificate).",
            ));
        };
        let Some(name) = &peer.principal else {
            return Err(ApiError::unauthorized(format!(
                "The client certificate {subject:?} is not mapped to a principal; ask your administrator to add it to [[tls.client_map]]."
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

    fn cached(&self, token: &str) -> Option<Arc<Caller>> {
        let map = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (caller, at) = map.get(token)?;
        (at.elapsed() < KEY_CACHE_TTL).then(|| Arc::clone(caller))
    }

    fn remember(&self, token: &str, caller: &Arc<Caller>) {
        let mut map = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= 10_000 {
            map.retain(|_, (_, at)| at.elapsed() < KEY_CACHE_TTL);
            if map.len() >= 10_000 {
                map.clear();
            }
        }
        map.insert(token.to_owned(), (Arc::clone(caller), Instant::now()));
    }
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
