//! OpenID Connect bearer tokens: a JWT signed by the identity provider, verified against its
//! published keys (JWKS) and mapped to a [`Principal`].
//!
//! Only RS256 and ES256 signatures are accepted, and each key verifies only the algorithm of its
//! own type, so neither `none`, nor HS256 keyed with a public key, nor any other algorithm
//! confusion gets through. Verification is synchronous and cheap: the decoded keys are cached.
//! With a JWKS URL, a token naming an unknown key id makes the verifier fetch the key set
//! again, at most once per refresh interval, so that key rotation is picked up while a flood of
//! made-up key ids cannot hammer the identity provider.

mod jwks;

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use enclave_label::{Clearance, Country, Label, MarkingError, USA};
use enclave_policy::{Principal, PrincipalId, Role, TenantId};
use jsonwebtoken::Validation;
use jsonwebtoken::errors::ErrorKind;
use serde_json::{Map, Value};

use crate::{AuthError, ClaimMap, JwksSource, OidcConfig};
use jwks::{Alg, Fetcher, KeySet, Lookup};

/// Largest token accepted, in bytes. Checked before any decoding, so an oversized header cannot
/// cost more than a length comparison.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// How often, at most, a JWKS URL is fetched again because a token named an unknown key id.
pub const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// Largest clock skew honoured, whatever the settings say (it keeps the time arithmetic of the
/// verification library in range).
const MAX_LEEWAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Verifies OpenID Connect ID or access tokens and maps their claims to a [`Principal`].
///
/// Cheap to share: wrap it in an `Arc` and call [`OidcVerifier::verify`] from any task.
pub struct OidcVerifier {
    claims: ClaimMap,
    /// Validation for RS256 keys: issuer, audience, `exp` required, `nbf`, leeway.
    rs256: Validation,
    /// The same for ES256 keys.
    es256: Validation,
    /// The current key set, replaced whole on refresh.
    keys: RwLock<Arc<KeySet>>,
    /// Where to refresh the keys from, when they come from a URL.
    remote: Option<Remote>,
}

/// A JWKS URL and the state of its rate-limited refresh.
struct Remote {
    url: String,
    fetcher: Fetcher,
    interval: Duration,
    /// When the last refresh started. Held while a refresh runs, so concurrent tokens with
    /// unknown key ids wait for that one fetch instead of starting their own.
    last_refresh: tokio::sync::Mutex<Option<Instant>>,
}

/// The parts of the token header the verifier decides on before verifying the signature.
struct Header {
    alg: Alg,
    kid: Option<String>,
}

impl OidcVerifier {
    /// Loads the key set (reads the file, or fetches the URL with a 10 s timeout) and returns a
    /// verifier. A JWKS URL is refreshed at most once per [`JWKS_REFRESH_INTERVAL`].
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
        OidcVerifier::with_refresh_interval(cfg, JWKS_REFRESH_INTERVAL).await
    }

    /// Like [`OidcVerifier::new`], with another minimum time between two refreshes of a JWKS
    /// URL. For tests, and for operators whose identity provider rotates keys unusually often.
    /// The first refresh after start is never delayed; a zero interval removes the limit, which
    /// lets every token with a made-up key id cause a fetch: do not use it in production.
    ///
    /// # Errors
    ///
    /// As [`OidcVerifier::new`].
    pub async fn with_refresh_interval(
        cfg: OidcConfig,
        interval: Duration,
    ) -> Result<OidcVerifier, AuthError> {
        let (keys, remote) = match &cfg.jwks {
            JwksSource::File(path) => {
                let source_name = path.display().to_string();
                let bytes = std::fs::read(path).map_err(|e| AuthError::Jwks {
                    source_name: source_name.clone(),
                    reason: e.to_string(),
                })?;
                let keys = KeySet::parse(&bytes).map_err(|reason| AuthError::Jwks {
                    source_name,
                    reason,
                })?;
                (keys, None)
            }
            JwksSource::Url(url) => {
                let jwks_error = |reason| AuthError::Jwks {
                    source_name: url.clone(),
                    reason,
                };
                let fetcher = Fetcher::new(url).map_err(jwks_error)?;
                let keys = fetcher.fetch().await.map_err(jwks_error)?;
                let remote = Remote {
                    url: url.clone(),
                    fetcher,
                    interval,
                    // The fetch at start does not count: a key rotated in right after start is
                    // picked up at once.
                    last_refresh: tokio::sync::Mutex::new(None),
                };
                (keys, Some(remote))
            }
        };
        Ok(OidcVerifier {
            rs256: validation(&cfg, Alg::Rs256),
            es256: validation(&cfg, Alg::Es256),
            claims: cfg.claims,
            keys: RwLock::new(Arc::new(keys)),
            remote,
        })
    }

    /// Verifies a compact JWT and maps its claims to a principal.
    ///
    /// The signature must be RS256 or ES256 by the JWKS key the header's `kid` names, of the
    /// type that algorithm needs (a token without `kid` is accepted only when the set holds a
    /// single key). `iss` must equal the issuer, `aud` contain the audience, `exp` be present
    /// and not passed, `nbf` (if present) passed, each within the configured leeway. Then the
    /// claims named by the [`ClaimMap`] give the principal: name, tenant and clearance are
    /// required; the clearance is a banner marking (read leniently); nationality is a country
    /// trigraph (default `USA`); role is `user`, `admin` or `auditor` (default `user`).
    ///
    /// With a JWKS URL, an unknown `kid` makes the verifier fetch the set again first, unless it
    /// did so less than the refresh interval ago.
    ///
    /// # Errors
    ///
    /// An [`AuthError`] saying which check failed. [`AuthError::Jwks`] when a needed refresh
    /// failed (the old keys stay in use).
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = parse_header(token)?;
        let keys = self.current_keys();
        match self.check(&keys, &header, token) {
            Err(AuthError::UnknownKeyId) => {}
            done => return done,
        }
        let (Some(remote), Some(kid)) = (&self.remote, header.kid.as_deref()) else {
            return Err(AuthError::UnknownKeyId);
        };
        let keys = self.refresh(remote, kid).await?;
        self.check(&keys, &header, token)
    }

    /// The key set in use now.
    fn current_keys(&self) -> Arc<KeySet> {
        // A poisoned lock still holds a whole key set: it is only ever replaced, never edited.
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Fetches the key set again, unless another task just did or the last refresh was less
    /// than the interval ago; returns the set to look `kid` up in.
    async fn refresh(&self, remote: &Remote, kid: &str) -> Result<Arc<KeySet>, AuthError> {
        let mut last = remote.last_refresh.lock().await;
        let keys = self.current_keys();
        if keys.has_kid(kid) {
            // Another task refreshed while this one waited for the lock.
            return Ok(keys);
        }
        // SECURITY: the rate limit is what stops a flood of made-up key ids from turning the
        // gateway into a load generator against the identity provider.
        if last.is_some_and(|at| at.elapsed() < remote.interval) {
            return Err(AuthError::UnknownKeyId);
        }
        *last = Some(Instant::now());
        let fresh = Arc::new(
            remote
                .fetcher
                .fetch()
                .await
                .map_err(|reason| AuthError::Jwks {
                    source_name: remote.url.clone(),
                    reason,
                })?,
        );
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&fresh);
        Ok(fresh)
    }

    /// Verifies the token against `keys` and maps its claims.
    fn check(&self, keys: &KeySet, header: &Header, token: &str) -> Result<Principal, AuthError> {
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
        principal(&self.claims, &data.claims)
    }
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("issuer", &self.rs256.iss)
            .field("audience", &self.rs256.aud)
            .field("claims", &self.claims)
            .field("keys", &*self.current_keys())
            .field("jwks_url", &self.remote.as_ref().map(|r| &r.url))
            .finish_non_exhaustive()
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
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
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

/// Maps verified claims to a principal.
fn principal(map: &ClaimMap, claims: &Map<String, Value>) -> Result<Principal, AuthError> {
    let id = required_str(claims, &map.principal)?;
    let tenant = required_str(claims, &map.tenant)?;
    let marking = required_str(claims, &map.clearance)?;
    let label: Label = marking
        .parse()
        .map_err(|e: MarkingError| AuthError::InvalidClearance { code: e.code() })?;
    let nationality = match optional_str(claims, &map.nationality)? {
        None => USA,
        Some(code) => trigraph(code).ok_or_else(|| AuthError::InvalidClaim {
            claim: map.nationality.clone(),
            reason: "is not a known country trigraph such as `USA` or `GBR`",
        })?,
    };
    let role = match optional_str(claims, &map.role)? {
        None => Role::User,
        Some(name) => role(name).ok_or_else(|| AuthError::InvalidClaim {
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

/// A claim that must be a non-empty string. `null` counts as absent.
fn required_str<'a>(claims: &'a Map<String, Value>, name: &str) -> Result<&'a str, AuthError> {
    optional_str(claims, name)?.ok_or_else(|| AuthError::MissingClaim(name.to_owned()))
}

/// A claim that, when present and not `null`, must be a non-empty string.
fn optional_str<'a>(
    claims: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, AuthError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s)),
        Some(Value::String(_)) => Err(AuthError::InvalidClaim {
            claim: name.to_owned(),
            reason: "must not be empty",
        }),
        Some(_) => Err(AuthError::InvalidClaim {
            claim: name.to_owned(),
            reason: "must be a string",
        }),
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
        assert_eq!(trigraph("usa"), Some(USA));
        assert!(trigraph("FVEY").is_none());
        assert!(trigraph("XXX").is_none());
        assert!(trigraph("").is_none());
    }

    #[test]
    fn roles_are_read_in_any_case() {
        assert_eq!(role("admin"), Some(Role::Admin));
        assert_eq!(role("Auditor"), Some(Role::Auditor));
        assert_eq!(role("USER"), Some(Role::User));
        assert_eq!(role("root"), None);
    }
}
