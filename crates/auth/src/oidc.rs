//! OpenID Connect bearer tokens: a JWT signed by the identity provider, verified against its
//! published keys (JWKS) and mapped to a [`Principal`].
//!
//! Only RS256 and ES256 signatures are accepted, and each key verifies only the algorithm of its
//! own type, so neither `none`, nor HS256 keyed with a public key, nor any other algorithm
//! confusion gets through. Verification is synchronous and cheap: the decoded keys are cached.
//!
//! The keys stay current without letting tokens drive the identity provider:
//!
//! - a JWKS URL is fetched again on a timer ([`OidcConfig::refresh_interval`]), so keys the
//!   provider withdrew stop being accepted; a JWKS file is read again when it changes;
//! - a token naming an unknown key id starts a fetch at most once per
//!   [`UNKNOWN_KID_REFRESH_INTERVAL`]; concurrent tokens wait for that one fetch (at most
//!   [`REFRESH_WAIT`]) instead of starting their own, and tokens arriving in between are refused
//!   at once, without any lock;
//! - a failed fetch keeps the previous keys and is logged with its cause; the caller only learns
//!   [`AuthError::KeysUnavailable`].

mod jwks;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use enclave_label::{Clearance, Country, Label, MarkingError};
use enclave_policy::{Principal, PrincipalId, Role, TenantId};
use jsonwebtoken::Validation;
use jsonwebtoken::errors::ErrorKind;
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::{Attribute, AuthError, ClaimMap, JwksSource, OidcConfig};
use jwks::{Alg, Fetcher, KeySet, Lookup};

/// Largest token accepted, in bytes. Checked before any decoding, so an oversized header cannot
/// cost more than a length comparison.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// How often, at most, a JWKS URL is fetched again because a token named an unknown key id.
pub const UNKNOWN_KID_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// How long a token naming an unknown key id waits for a running fetch of the key set before it
/// is refused with [`AuthError::KeysUnavailable`].
pub const REFRESH_WAIT: Duration = Duration::from_secs(2);

/// How often a JWKS file's modification time and size are checked.
pub const JWKS_FILE_POLL: Duration = Duration::from_secs(2);

/// Largest length of a name or tenant claim, in bytes.
const MAX_NAME_BYTES: usize = 256;

/// Largest clock skew honoured, whatever the settings say (it keeps the time arithmetic of the
/// verification library in range).
const MAX_LEEWAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Verifies OpenID Connect ID or access tokens and maps their claims to a [`Principal`].
///
/// Cheap to share: wrap it in an `Arc` and call [`OidcVerifier::verify`] from any task. Created
/// inside a Tokio runtime, it keeps its keys current from a background task that ends when the
/// verifier is dropped.
pub struct OidcVerifier {
    inner: Arc<Inner>,
}

/// A verified token: who it names and until when it may be used.
#[derive(Clone, Debug)]
pub struct VerifiedToken {
    /// The principal its claims map to.
    pub principal: Principal,
    /// Its `exp`: a cache of verified tokens must not use it after this instant.
    pub expires_at: SystemTime,
}

/// The verifier's state, shared with its background task.
struct Inner {
    claims: ClaimMap,
    /// Validation for RS256 keys: issuer, audience, `exp` required, `nbf`, leeway.
    rs256: Validation,
    /// The same for ES256 keys.
    es256: Validation,
    /// The current key set, replaced whole on refresh.
    keys: RwLock<Arc<KeySet>>,
    /// Where the keys come from.
    source: Source,
}

/// Where the keys come from, and the state of keeping them current.
#[expect(
    clippy::large_enum_variant,
    reason = "one per verifier, never moved after construction"
)]
enum Source {
    File {
        path: PathBuf,
        /// The modification time and size of the file as last read, and of the last version
        /// that failed to parse (logged once).
        seen: Mutex<FileSeen>,
    },
    Url {
        url: String,
        fetcher: Fetcher,
        /// Least time between two fetches triggered by unknown key ids.
        unknown_kid_interval: Duration,
        refresh: Mutex<Refresh>,
    },
}

/// A file's modification time and size.
type FileStamp = (Option<SystemTime>, u64);

#[derive(Default)]
struct FileSeen {
    loaded: Option<FileStamp>,
    failed: Option<FileStamp>,
}

/// The single fetch of a key-set URL.
#[derive(Default)]
struct Refresh {
    /// When the last fetch triggered by an unknown key id started.
    last_on_demand: Option<Instant>,
    /// The fetch running now: its outcome (`Some(true)` when the keys were replaced) arrives on
    /// this channel.
    running: Option<watch::Receiver<Option<bool>>>,
}

/// The parts of the token header the verifier decides on before verifying the signature.
struct Header {
    alg: Alg,
    kid: Option<String>,
}

impl OidcVerifier {
    /// Loads the key set (reads the file, or fetches the URL with a 10 s timeout) and returns a
    /// verifier. A token naming an unknown key id makes it fetch a JWKS URL again at most once
    /// per [`UNKNOWN_KID_REFRESH_INTERVAL`].
    ///
    /// A JWKS URL must use `https` (with the system's trusted roots), or plain `http` to a
    /// loopback address. Keys other than RSA (≥ 2048 bits, RS256) and EC P-256 (ES256) signing
    /// keys are ignored.
    ///
    /// # Errors
    ///
    /// [`AuthError::Jwks`], naming the file or URL, when the key set cannot be read or fetched,
    /// is not a JWKS document or holds no usable key.
    pub async fn new(cfg: OidcConfig) -> Result<OidcVerifier, AuthError> {
        OidcVerifier::with_unknown_kid_interval(cfg, UNKNOWN_KID_REFRESH_INTERVAL).await
    }

    /// Like [`OidcVerifier::new`], with another least time between two fetches of a JWKS URL
    /// triggered by unknown key ids. For tests, and for operators whose identity provider
    /// rotates keys unusually often. The first such fetch after start is never delayed; a zero
    /// interval lets every token with a made-up key id cause a fetch (concurrent ones still
    /// share one): do not use it in production.
    ///
    /// # Errors
    ///
    /// As [`OidcVerifier::new`].
    pub async fn with_unknown_kid_interval(
        cfg: OidcConfig,
        interval: Duration,
    ) -> Result<OidcVerifier, AuthError> {
        let (keys, source) = match &cfg.jwks {
            JwksSource::File(path) => {
                let stamp = file_stamp(path);
                let keys = read_key_file(path)?;
                let seen = FileSeen {
                    loaded: stamp,
                    failed: None,
                };
                let source = Source::File {
                    path: path.clone(),
                    seen: Mutex::new(seen),
                };
                (keys, source)
            }
            JwksSource::Url(url) => {
                let jwks_error = |reason| AuthError::Jwks {
                    source_name: url.clone(),
                    reason,
                };
                let fetcher = Fetcher::new(url).map_err(jwks_error)?;
                let keys = fetcher.fetch().await.map_err(jwks_error)?;
                let source = Source::Url {
                    url: url.clone(),
                    fetcher,
                    unknown_kid_interval: interval,
                    // The fetch at start does not count: a key rotated in right after start is
                    // picked up at once.
                    refresh: Mutex::new(Refresh::default()),
                };
                (keys, source)
            }
        };
        let inner = Arc::new(Inner {
            rs256: validation(&cfg, Alg::Rs256),
            es256: validation(&cfg, Alg::Es256),
            claims: cfg.claims,
            keys: RwLock::new(Arc::new(keys)),
            source,
        });
        let period = match inner.source {
            Source::File { .. } => JWKS_FILE_POLL,
            Source::Url { .. } => cfg.refresh_interval,
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current()
            && !period.is_zero()
        {
            runtime.spawn(keep_current(Arc::downgrade(&inner), period));
        } else {
            tracing::warn!(
                "the OpenID Connect signing keys will not be refreshed on a timer: no runtime, or a zero interval"
            );
        }
        Ok(OidcVerifier { inner })
    }

    /// Verifies a compact JWT and maps its claims to a principal. See
    /// [`OidcVerifier::verify_token`], which also says until when the token may be used.
    ///
    /// # Errors
    ///
    /// As [`OidcVerifier::verify_token`].
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        self.verify_token(token).await.map(|v| v.principal)
    }

    /// Verifies a compact JWT, maps its claims to a principal and returns it with the token's
    /// expiry.
    ///
    /// The signature must be RS256 or ES256 by the JWKS key the header's `kid` names, of the
    /// type that algorithm needs (a token without `kid` is accepted only when the set holds a
    /// single key). `iss` must equal the issuer, `aud` contain the audience, `exp` be present
    /// and not passed, `nbf` (if present) passed, each within the configured leeway. Then the
    /// claims named by the [`ClaimMap`] give the principal: name, tenant, clearance and
    /// nationality are required — a missing or unmappable one is refused, never defaulted; the
    /// clearance is a banner marking (read leniently), the nationality a country trigraph; the
    /// role is `user`, `admin` or `auditor`, and `user` when absent.
    ///
    /// With a JWKS URL, an unknown `kid` makes the verifier fetch the set again first, unless a
    /// token did so less than the unknown-kid interval ago; a fetch already running is waited
    /// for, at most [`REFRESH_WAIT`].
    ///
    /// # Errors
    ///
    /// An [`AuthError`] saying which check failed; [`AuthError::KeysUnavailable`] when a needed
    /// fetch failed or did not finish in time (the old keys stay in use, the cause is logged).
    pub async fn verify_token(&self, token: &str) -> Result<VerifiedToken, AuthError> {
        let header = parse_header(token)?;
        let keys = self.inner.current_keys();
        match self.inner.check(&keys, &header, token) {
            Err(AuthError::UnknownKeyId) => {}
            done => return done,
        }
        let (Source::Url { .. }, Some(kid)) = (&self.inner.source, header.kid.as_deref()) else {
            return Err(AuthError::UnknownKeyId);
        };
        let keys = self.inner.refresh_for_unknown_kid(kid).await?;
        self.inner.check(&keys, &header, token)
    }
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = &self.inner;
        let mut d = f.debug_struct("OidcVerifier");
        d.field("issuer", &inner.rs256.iss)
            .field("audience", &inner.rs256.aud)
            .field("claims", &inner.claims)
            .field("keys", &*inner.current_keys());
        match &inner.source {
            Source::File { path, .. } => d.field("jwks_file", path),
            Source::Url { url, .. } => d.field("jwks_url", url),
        };
        d.finish_non_exhaustive()
    }
}

// === impl Inner ===

impl Inner {
    /// The key set in use now.
    fn current_keys(&self) -> Arc<KeySet> {
        // A poisoned lock still holds a whole key set: it is only ever replaced, never edited.
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn replace_keys(&self, keys: KeySet) {
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
    }

    /// Fetches the key set again for a token naming `kid`, unless a fetch ran for such a token
    /// less than the interval ago; joins a fetch already running. Returns the set to look `kid`
    /// up in.
    async fn refresh_for_unknown_kid(
        self: &Arc<Self>,
        kid: &str,
    ) -> Result<Arc<KeySet>, AuthError> {
        let Source::Url {
            unknown_kid_interval,
            refresh,
            ..
        } = &self.source
        else {
            return Err(AuthError::UnknownKeyId);
        };
        let mut outcome = {
            let mut state = refresh.lock().unwrap_or_else(PoisonError::into_inner);
            match &state.running {
                Some(running) => running.clone(),
                None => {
                    // SECURITY: the rate limit is what stops a flood of made-up key ids from
                    // turning the gateway into a load generator against the identity provider;
                    // checking it takes no lock that a fetch holds.
                    if state
                        .last_on_demand
                        .is_some_and(|at| at.elapsed() < *unknown_kid_interval)
                    {
                        return Err(AuthError::UnknownKeyId);
                    }
                    state.last_on_demand = Some(Instant::now());
                    self.start_fetch(&mut state)
                }
            }
        };
        let finished = tokio::time::timeout(REFRESH_WAIT, outcome.wait_for(Option::is_some)).await;
        let keys = self.current_keys();
        match finished {
            Ok(Ok(_)) if keys.has_kid(kid) => Ok(keys),
            Ok(Ok(done)) if *done == Some(true) => Err(AuthError::UnknownKeyId),
            // The fetch failed (logged where it ran), was dropped, or is still running.
            _ if keys.has_kid(kid) => Ok(keys),
            _ => Err(AuthError::KeysUnavailable),
        }
    }

    /// Starts the one fetch of the key-set URL, in a task of its own so that a caller that goes
    /// away does not cancel it; `state` is the locked refresh state.
    fn start_fetch(self: &Arc<Self>, state: &mut Refresh) -> watch::Receiver<Option<bool>> {
        let (done, outcome) = watch::channel(None);
        state.running = Some(outcome.clone());
        let inner = Arc::clone(self);
        let fetch = async move {
            // Clears `running` however the fetch ends, even if its task is dropped.
            let _running = Running(Arc::clone(&inner));
            let replaced = inner.fetch_and_replace().await;
            let _ = done.send(Some(replaced));
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(fetch)),
            Err(_) => {
                // Without a runtime nothing can run the fetch; the callers time out and the
                // next unknown key id after the interval tries again.
                state.running = None;
            }
        }
        outcome
    }

    /// Fetches the URL and replaces the keys; logs and keeps the old keys on failure.
    async fn fetch_and_replace(&self) -> bool {
        let Source::Url { url, fetcher, .. } = &self.source else {
            return false;
        };
        match fetcher.fetch().await {
            Ok(keys) => {
                tracing::debug!(jwks_url = %url, keys = ?keys, "signing keys fetched");
                self.replace_keys(keys);
                true
            }
            Err(reason) => {
                tracing::warn!(
                    jwks_url = %url,
                    error = %reason,
                    "cannot fetch the identity provider's signing keys; keeping the previous ones"
                );
                false
            }
        }
    }

    /// Reads a JWKS file again if its modification time or size changed.
    fn reload_file_if_changed(&self) {
        let Source::File { path, seen } = &self.source else {
            return;
        };
        let Some(stamp) = file_stamp(path) else {
            let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
            if seen.failed != Some((None, 0)) {
                seen.failed = Some((None, 0));
                tracing::error!(jwks_file = %path.display(), "the JWKS file cannot be read; keeping the previous signing keys");
            }
            return;
        };
        {
            let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
            if seen.loaded == Some(stamp) || seen.failed == Some(stamp) {
                return;
            }
        }
        let outcome = read_key_file(path);
        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Ok(keys) => {
                tracing::info!(jwks_file = %path.display(), keys = ?keys, "signing keys read again after the file changed");
                self.replace_keys(keys);
                seen.loaded = Some(stamp);
                seen.failed = None;
            }
            Err(e) => {
                // Logged once per version of the file; a half-written file is read again when
                // the write completes (and changes the stamp).
                tracing::error!(error = %e, "the changed JWKS file is unusable; keeping the previous signing keys");
                seen.failed = Some(stamp);
            }
        }
    }

    /// Verifies the token against `keys` and maps its claims.
    fn check(
        &self,
        keys: &KeySet,
        header: &Header,
        token: &str,
    ) -> Result<VerifiedToken, AuthError> {
        let key = match keys.find(header.kid.as_deref(), header.alg) {
            Lookup::Found(key) => key,
            Lookup::WrongAlgorithm => {
                return Err(AuthError::AlgorithmMismatch {
                    alg: header.alg.name(),
                });
            }
            Lookup::Ambiguous => return Err(AuthError::MissingKeyId),
            Lookup::Unknown => return Err(AuthError::UnknownKeyId),
        };
        let validation = match key.alg {
            Alg::Es256 => &self.es256,
            Alg::Rs256 => &self.rs256,
        };
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, validation)
            .map_err(|e| verification_error(e.kind(), header.alg))?;
        let expires_at = expiry(&data.claims)?;
        let principal = principal(&self.claims, &data.claims)?;
        Ok(VerifiedToken {
            principal,
            expires_at,
        })
    }
}

/// Clears the running fetch of a key-set URL when dropped.
struct Running(Arc<Inner>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Source::Url { refresh, .. } = &self.0.source {
            refresh
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .running = None;
        }
    }
}

/// Keeps the keys of the verifier behind `inner` current until it is dropped: fetches a URL
/// every `period`, checks a file every `period`.
async fn keep_current(inner: Weak<Inner>, period: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut outcome = match &inner.source {
            Source::File { .. } => {
                inner.reload_file_if_changed();
                continue;
            }
            Source::Url { refresh, .. } => {
                let mut state = refresh.lock().unwrap_or_else(PoisonError::into_inner);
                match &state.running {
                    Some(running) => running.clone(),
                    None => inner.start_fetch(&mut state),
                }
            }
        };
        // Hold no strong reference while waiting, so dropping the verifier ends this task.
        drop(inner);
        let _ = outcome.wait_for(Option::is_some).await;
    }
}

/// Whether `token` has the shape of a compact JWT (three base64url segments separated by dots,
/// the first starting with `eyJ`, the encoding of `{"`), as opposed to an API key (`enk_...`).
///
/// The signature segment may be empty, so that an unsigned (`alg: none`) token is still sent to
/// [`OidcVerifier::verify`] and refused there with a clear message.
///
/// ```
/// use enclave_auth::oidc::looks_like_jwt;
/// assert!(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"));
/// assert!(!looks_like_jwt("enk_3f9a0c"));
/// ```
pub fn looks_like_jwt(token: &str) -> bool {
    if !token.starts_with("eyJ") {
        return false;
    }
    let mut segments = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return false;
    };
    !payload.is_empty()
        && [header, payload, signature]
            .iter()
            .all(|s| s.bytes().all(|b| b64url_value(b).is_some()))
}

// === helpers ===

/// Reads and parses a JWKS file.
fn read_key_file(path: &std::path::Path) -> Result<KeySet, AuthError> {
    let source_name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| AuthError::Jwks {
        source_name: source_name.clone(),
        reason: e.to_string(),
    })?;
    KeySet::parse(&bytes).map_err(|reason| AuthError::Jwks {
        source_name,
        reason,
    })
}

/// A file's modification time and size, `None` when it cannot be read.
fn file_stamp(path: &std::path::Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok(), meta.len()))
}

/// The verification settings for keys of one algorithm.
fn validation(cfg: &OidcConfig, alg: Alg) -> Validation {
    let mut v = Validation::new(alg.jsonwebtoken());
    v.set_issuer(&[&cfg.issuer]);
    v.set_audience(&[&cfg.audience]);
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    v.validate_exp = true;
    v.validate_nbf = true;
    v.leeway = cfg.leeway.min(MAX_LEEWAY).as_secs();
    v
}

/// Checks size and shape and reads `alg` and `kid` from the header.
fn parse_header(token: &str) -> Result<Header, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::TokenTooLarge {
            limit: MAX_TOKEN_BYTES,
        });
    }
    if !looks_like_jwt(token) {
        return Err(AuthError::Malformed(
            "expected three base64url segments separated by dots",
        ));
    }
    let encoded = token.split('.').next().unwrap_or_default();
    let json = b64url_decode(encoded).ok_or(AuthError::Malformed("header is not base64url"))?;
    let header: Map<String, Value> = serde_json::from_slice(&json)
        .map_err(|_| AuthError::Malformed("header is not a JSON object"))?;
    if header.contains_key("crit") {
        // RFC 7515 §4.1.11: a recipient must refuse critical extensions it does not implement,
        // and Enclave implements none.
        return Err(AuthError::Malformed(
            "header names critical extensions, which are not supported",
        ));
    }
    let alg = match header.get("alg") {
        Some(Value::String(name)) => {
            Alg::from_name(name).ok_or_else(|| AuthError::UnsupportedAlgorithm {
                alg: printable_alg(name),
            })?
        }
        _ => {
            return Err(AuthError::UnsupportedAlgorithm {
                alg: "(none named)".into(),
            });
        }
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(AuthError::Malformed("key id is not a string")),
    };
    Ok(Header { alg, kid })
}

/// The algorithm name in backticks when it is short and plain, so that an error message never
/// carries arbitrary attacker text.
fn printable_alg(name: &str) -> String {
    if !name.is_empty() && name.len() <= 16 && name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        format!("`{name}`")
    } else {
        "(unprintable)".into()
    }
}

/// The error for a failed signature or claim check.
fn verification_error(kind: &ErrorKind, alg: Alg) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::TokenExpired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingTokenClaim(claim.clone()),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            AuthError::AlgorithmMismatch { alg: alg.name() }
        }
        ErrorKind::Base64(_) => AuthError::Malformed("a segment is not base64url"),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            AuthError::Malformed("header or payload is not a JSON object")
        }
        // A signature that does not verify, or a key that cannot verify anything: either way
        // the token is not signed by a key Enclave trusts.
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::Crypto(_) => AuthError::SignatureInvalid,
        // The library's enum is non-exhaustive; anything new is a token Enclave cannot accept.
        _ => AuthError::Malformed("token cannot be verified"),
    }
}

/// The token's `exp` (seconds since the epoch; the verification library required it).
fn expiry(claims: &Map<String, Value>) -> Result<SystemTime, AuthError> {
    let seconds = match claims.get("exp") {
        Some(Value::Number(n)) => n.as_u64().or_else(|| {
            // A fractional `exp` (allowed by RFC 7519): its whole seconds, never later.
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f.floor() as u64)
        }),
        _ => None,
    };
    let seconds = seconds.ok_or_else(|| AuthError::MissingTokenClaim("exp".to_owned()))?;
    UNIX_EPOCH
        .checked_add(Duration::from_secs(seconds))
        .ok_or(AuthError::Malformed("`exp` is out of range"))
}

/// Maps verified claims to a principal.
///
/// SECURITY: nothing is assumed for a missing attribute (the role excepted, which falls to the
/// least-privileged `user`): a token without a nationality is not a U.S. national, one without
/// a tenant belongs to no tenant.
fn principal(map: &ClaimMap, claims: &Map<String, Value>) -> Result<Principal, AuthError> {
    let id = name(map, claims, Attribute::Principal)?;
    let tenant = name(map, claims, Attribute::Tenant)?;
    let marking = required_str(map, claims, Attribute::Clearance)?;
    let label: Label = marking
        .parse()
        .map_err(|e: MarkingError| AuthError::InvalidClearance {
            claim: map.clearance.clone(),
            code: e.code(),
        })?;
    let code = required_str(map, claims, Attribute::Nationality)?;
    let nationality = trigraph(code).ok_or_else(|| AuthError::InvalidClaim {
        attribute: Attribute::Nationality,
        claim: map.nationality.clone(),
        reason: "is not a known country trigraph such as `USA` or `GBR`",
    })?;
    let role = match optional_str(map, claims, Attribute::Role)? {
        None => Role::User,
        Some(name) => role(name).ok_or_else(|| AuthError::InvalidClaim {
            attribute: Attribute::Role,
            claim: map.role.clone(),
            reason: "must be one of `user`, `admin`, `auditor`",
        })?,
    };
    Ok(Principal {
        id: PrincipalId::new(id),
        tenant: TenantId::new(tenant),
        clearance: Clearance::new(label, nationality),
        role,
    })
}

/// A required name-like claim (principal, tenant): at most [`MAX_NAME_BYTES`] bytes, no control
/// characters, since it ends up in logs, metrics and rate-limit keys.
fn name<'a>(
    map: &ClaimMap,
    claims: &'a Map<String, Value>,
    attribute: Attribute,
) -> Result<&'a str, AuthError> {
    let value = required_str(map, claims, attribute)?;
    if value.len() > MAX_NAME_BYTES || value.chars().any(char::is_control) {
        return Err(AuthError::InvalidClaim {
            attribute,
            claim: map.name_of(attribute).to_owned(),
            reason: "must be at most 256 bytes without control characters",
        });
    }
    Ok(value)
}

/// A claim that must be a non-empty string. `null` counts as absent.
fn required_str<'a>(
    map: &ClaimMap,
    claims: &'a Map<String, Value>,
    attribute: Attribute,
) -> Result<&'a str, AuthError> {
    optional_str(map, claims, attribute)?.ok_or_else(|| AuthError::MissingClaim {
        attribute,
        claim: map.name_of(attribute).to_owned(),
    })
}

/// A claim that, when present and not `null`, must be a non-empty string.
fn optional_str<'a>(
    map: &ClaimMap,
    claims: &'a Map<String, Value>,
    attribute: Attribute,
) -> Result<Option<&'a str>, AuthError> {
    let name = map.name_of(attribute);
    let invalid = |reason| AuthError::InvalidClaim {
        attribute,
        claim: name.to_owned(),
        reason,
    };
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s)),
        Some(Value::String(_)) => Err(invalid("must not be empty")),
        Some(_) => Err(invalid("must be a string")),
    }
}

/// A country trigraph (`GBR`, any case); groups such as `FVEY` are not a nationality.
fn trigraph(code: &str) -> Option<Country> {
    let upper = code.trim().to_ascii_uppercase();
    Country::from_code(&upper).filter(|c| !c.is_tetragraph() && upper.len() == 3)
}

/// A role name, any case.
fn role(name: &str) -> Option<Role> {
    let name = name.trim();
    [
        ("admin", Role::Admin),
        ("auditor", Role::Auditor),
        ("metrics", Role::Metrics),
        ("user", Role::User),
    ]
    .into_iter()
    .find_map(|(n, role)| name.eq_ignore_ascii_case(n).then_some(role))
}

/// The value of a base64url character.
fn b64url_value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// Decodes unpadded base64url; `None` for any other character or an impossible length.
fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    for b in text.bytes() {
        acc = (acc << 6) | u32::from(b64url_value(b)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_decodes_unpadded_text() {
        assert_eq!(b64url_decode("").unwrap(), b"");
        assert_eq!(b64url_decode("Zg").unwrap(), b"f");
        assert_eq!(b64url_decode("Zm8").unwrap(), b"fo");
        assert_eq!(b64url_decode("Zm9v").unwrap(), b"foo");
        assert_eq!(b64url_decode("Zm9vYg").unwrap(), b"foob");
        assert_eq!(b64url_decode("-_8").unwrap(), [0xfb, 0xff]);
        assert!(b64url_decode("Zm9vY").is_none());
        assert!(b64url_decode("Zm9v=").is_none());
        assert!(b64url_decode("Zm+v").is_none());
    }

    #[test]
    fn tells_jwts_from_api_keys() {
        assert!(looks_like_jwt("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0."));
        assert!(looks_like_jwt("eyJh.eyJz.abc-_"));
        assert!(!looks_like_jwt("enk_0123456789abcdef"));
        assert!(!looks_like_jwt("eyJh.eyJz"));
        assert!(!looks_like_jwt("eyJh.eyJz.a.b"));
        assert!(!looks_like_jwt("eyJh..sig"));
        assert!(!looks_like_jwt("eyJh.eyJz.si=g"));
        assert!(!looks_like_jwt("eyJh.ey Jz.sig"));
        assert!(!looks_like_jwt("abc.eyJz.sig"));
        assert!(!looks_like_jwt(""));
    }

    #[test]
    fn header_algorithm_must_be_rs256_or_es256() {
        let token = |header: &str| {
            let enc = |s: &str| {
                // Test-only encoder, the inverse of b64url_decode.
                const ALPHABET: &[u8] =
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                let mut out = String::new();
                for chunk in s.as_bytes().chunks(3) {
                    let n = chunk.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b))
                        << (8 * (3 - chunk.len()));
                    for i in 0..=chunk.len() {
                        out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                    }
                }
                out
            };
            format!("{}.{}.sig", enc(header), enc("{}"))
        };
        let alg_of = |header: &str| parse_header(&token(header)).map(|h| h.alg);
        assert_eq!(alg_of(r#"{"alg":"RS256"}"#).unwrap(), Alg::Rs256);
        assert_eq!(alg_of(r#"{"alg":"ES256","kid":"k"}"#).unwrap(), Alg::Es256);
        let err = alg_of(r#"{"alg":"none"}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "token algorithm `none` is not allowed: use RS256 or ES256"
        );
        assert!(matches!(
            alg_of(r#"{"alg":"HS256"}"#),
            Err(AuthError::UnsupportedAlgorithm { .. })
        ));
        assert!(matches!(
            alg_of(r#"{"typ":"JWT"}"#),
            Err(AuthError::UnsupportedAlgorithm { .. })
        ));
        let err = alg_of(r#"{"alg":"<script>"}"#).unwrap_err();
        assert!(!err.to_string().contains("<script>"));
        assert!(matches!(
            alg_of(r#"{"alg":"RS256","crit":["b64"]}"#),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            alg_of(r#"{"alg":"RS256","kid":7}"#),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(alg_of(r#"["alg"]"#), Err(AuthError::Malformed(_))));
    }

    #[test]
    fn nationality_is_a_trigraph() {
        assert_eq!(trigraph("GBR").map(Country::code), Some("GBR"));
        assert_eq!(trigraph("usa"), Some(enclave_label::USA));
        assert!(trigraph("FVEY").is_none());
        assert!(trigraph("XXX").is_none());
        assert!(trigraph("").is_none());
    }

    fn claims(json: Value) -> Map<String, Value> {
        match json {
            Value::Object(map) => map,
            _ => unreachable!("test claims are objects"),
        }
    }

    fn full() -> Value {
        serde_json::json!({
            "sub": "alice", "tenant": "dia", "clearance": "SECRET", "nationality": "GBR",
        })
    }

    #[test]
    fn every_attribute_but_the_role_is_required_and_never_defaulted() {
        let map = ClaimMap::default();
        let p = principal(&map, &claims(full())).unwrap();
        assert_eq!(p.clearance.nationality().code(), "GBR");
        assert_eq!(
            p.role,
            Role::User,
            "an absent role is the least-privileged one"
        );
        for (attribute, claim) in [
            (Attribute::Principal, "sub"),
            (Attribute::Tenant, "tenant"),
            (Attribute::Clearance, "clearance"),
            (Attribute::Nationality, "nationality"),
        ] {
            for absent in [None, Some(Value::Null)] {
                let mut c = claims(full());
                match &absent {
                    None => drop(c.remove(claim)),
                    Some(v) => drop(c.insert(claim.into(), v.clone())),
                }
                match principal(&map, &c) {
                    Err(AuthError::MissingClaim {
                        attribute: a,
                        claim: n,
                    }) => {
                        assert_eq!((a, n.as_str()), (attribute, claim));
                    }
                    other => panic!("{claim} {absent:?}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn unmapped_values_are_refused_naming_the_configured_claim() {
        let map = ClaimMap {
            nationality: "citizenship".into(),
            ..ClaimMap::default()
        };
        let mut c = claims(full());
        c.remove("nationality");
        c.insert("citizenship".into(), "XYZ".into());
        let err = principal(&map, &c).unwrap_err();
        assert_eq!(
            err.to_string(),
            "claim `citizenship` (the principal's nationality) is not a known country trigraph such as `USA` or `GBR`"
        );
        // The default claim name no longer counts once another is configured.
        let mut c = claims(full());
        c.remove("citizenship");
        assert!(matches!(
            principal(&map, &c),
            Err(AuthError::MissingClaim {
                attribute: Attribute::Nationality,
                ..
            })
        ));

        let mut c = claims(full());
        c.insert("clearance".into(), "SECRET//NOFORN//REL TO USA, GBR".into());
        let err = principal(&ClaimMap::default(), &c).unwrap_err();
        assert!(
            matches!(&err, AuthError::InvalidClearance { claim, .. } if claim == "clearance"),
            "{err:?}"
        );
        let mut c = claims(full());
        c.insert("role".into(), "root".into());
        assert!(matches!(
            principal(&ClaimMap::default(), &c),
            Err(AuthError::InvalidClaim {
                attribute: Attribute::Role,
                ..
            })
        ));
        for bad in ["a\nb".to_owned(), "x".repeat(257)] {
            let mut c = claims(full());
            c.insert("tenant".into(), bad.clone().into());
            assert!(
                matches!(
                    principal(&ClaimMap::default(), &c),
                    Err(AuthError::InvalidClaim {
                        attribute: Attribute::Tenant,
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn expiry_is_read_from_exp() {
        let at = |v: Value| expiry(&claims(serde_json::json!({ "exp": v })));
        assert_eq!(
            at(1_700_000_000.into()).unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        assert_eq!(
            at(serde_json::json!(10.9)).unwrap(),
            UNIX_EPOCH + Duration::from_secs(10)
        );
        assert!(at("soon".into()).is_err());
        assert!(expiry(&Map::new()).is_err());
    }

    #[test]
    fn roles_are_read_in_any_case() {
        assert_eq!(role("admin"), Some(Role::Admin));
        assert_eq!(role("Auditor"), Some(Role::Auditor));
        assert_eq!(role("USER"), Some(Role::User));
        assert_eq!(role("root"), None);
    }
}
