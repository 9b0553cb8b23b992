//! OpenID Connect verification against real RS256 and ES256 keys generated here, with the key
//! set read from a file or served over HTTP on loopback.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test on broken machinery"
)]

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use enclave_auth::oidc::{OidcVerifier, REFRESH_WAIT, looks_like_jwt};
use enclave_auth::{Attribute, AuthError, ClaimMap, JwksSource, OidcConfig};
use enclave_label::{Country, ReasonCode, USA};
use enclave_policy::Role;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ISSUER: &str = "https://idp.example.gov/realms/enclave";
const AUDIENCE: &str = "enclave";

// === keys ===

/// A signing key and its public JWK.
struct SigningKey {
    kid: &'static str,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

/// The RSA key pair in the forms the tests need.
struct RsaMaterial {
    pkcs1_pem: String,
    pkcs8_pem: String,
    public_pem: String,
    n: String,
    e: String,
}

fn rsa_material() -> &'static RsaMaterial {
    static KEY: OnceLock<RsaMaterial> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = common::rsa_private_key();
        let public = key.to_public_key();
        RsaMaterial {
            pkcs1_pem: key.to_pkcs1_pem(LineEnding::LF).unwrap().to_string(),
            pkcs8_pem: key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            public_pem: public.to_public_key_pem(LineEnding::LF).unwrap(),
            n: b64url(&public.n().to_bytes_be()),
            e: b64url(&public.e().to_bytes_be()),
        }
    })
}

fn rsa_key(kid: &'static str) -> SigningKey {
    let m = rsa_material();
    SigningKey {
        kid,
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_pem(m.pkcs8_pem.as_bytes()).unwrap(),
        jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": m.n, "e": m.e}),
    }
}

fn ec_key(kid: &'static str) -> SigningKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = pair.public_key_raw();
    assert_eq!(point.len(), 65, "uncompressed P-256 point");
    SigningKey {
        kid,
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        jwk: json!({
            "kty": "EC", "kid": kid, "crv": "P-256",
            "x": b64url(&point[1..33]), "y": b64url(&point[33..]),
        }),
    }
}

fn jwks(keys: &[&SigningKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

// === tokens ===

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims of a valid token for alice, a U.S. national.
fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "tenant": "dia",
        "clearance": "secret//noforn",
        "nationality": "USA",
        "iat": now(),
        "exp": now() + 600,
    })
}

fn with(mut claims: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

fn sign(key: &SigningKey, claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.to_string());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

fn sign_with_header(key: &SigningKey, header: Header, claims: &Value) -> String {
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

/// A token with a hand-written header and no signature.
fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

// === verifiers ===

fn config(jwks: JwksSource) -> OidcConfig {
    OidcConfig {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        jwks,
        claims: ClaimMap::default(),
        leeway: Duration::from_secs(30),
        refresh_interval: Duration::from_secs(300),
    }
}

/// A verifier reading its keys from a JWKS file in `dir`.
async fn file_verifier(dir: &tempfile::TempDir, keys: &[&SigningKey]) -> OidcVerifier {
    let path = write_jwks(dir, keys);
    OidcVerifier::new(config(JwksSource::File(path)))
        .await
        .unwrap()
}

fn write_jwks(dir: &tempfile::TempDir, keys: &[&SigningKey]) -> PathBuf {
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(keys)).unwrap();
    path
}

struct Keys {
    rsa: SigningKey,
    ec: SigningKey,
    verifier: OidcVerifier,
    _dir: tempfile::TempDir,
}

async fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let rsa = rsa_key("rsa-1");
    let ec = ec_key("ec-1");
    let verifier = file_verifier(&dir, &[&rsa, &ec]).await;
    Keys {
        rsa,
        ec,
        verifier,
        _dir: dir,
    }
}

// === accepted tokens ===

#[tokio::test]
async fn rs256_token_maps_to_principal_with_the_default_role() {
    let k = keys().await;
    let p = k.verifier.verify(&sign(&k.rsa, &claims())).await.unwrap();
    assert_eq!(p.id.as_str(), "alice");
    assert_eq!(p.tenant.as_str(), "dia");
    assert_eq!(p.clearance.label().to_string(), "SECRET//NOFORN");
    assert_eq!(p.clearance.nationality(), USA);
    assert_eq!(p.role, Role::User);
}

#[tokio::test]
async fn es256_token_maps_nationality_and_role() {
    let k = keys().await;
    let token = sign(
        &k.ec,
        &with(
            claims(),
            json!({"nationality": "GBR", "role": "auditor", "clearance": "TOP SECRET//SI//REL TO USA, GBR"}),
        ),
    );
    let p = k.verifier.verify(&token).await.unwrap();
    assert_eq!(
        p.clearance.nationality(),
        Country::from_code("GBR").unwrap()
    );
    assert_eq!(p.role, Role::Auditor);
    assert_eq!(
        p.clearance.label().to_string(),
        "TOP SECRET//SI//REL TO USA, GBR"
    );
}

#[tokio::test]
async fn pkcs1_rsa_key_signs_the_same() {
    let k = keys().await;
    let pkcs1 = SigningKey {
        encoding: EncodingKey::from_rsa_pem(rsa_material().pkcs1_pem.as_bytes()).unwrap(),
        ..rsa_key("rsa-1")
    };
    let p = k.verifier.verify(&sign(&pkcs1, &claims())).await.unwrap();
    assert_eq!(p.id.as_str(), "alice");
}

#[tokio::test]
async fn admin_role_and_audience_list() {
    let k = keys().await;
    let token = sign(
        &k.rsa,
        &with(
            claims(),
            json!({"role": "admin", "aud": ["account", AUDIENCE]}),
        ),
    );
    assert_eq!(k.verifier.verify(&token).await.unwrap().role, Role::Admin);
}

#[tokio::test]
async fn leeway_covers_small_clock_skew() {
    let k = keys().await;
    let skewed = with(claims(), json!({"exp": now() - 10, "nbf": now() + 10}));
    assert!(k.verifier.verify(&sign(&k.ec, &skewed)).await.is_ok());
}

#[tokio::test]
async fn claim_names_come_from_the_claim_map() {
    let dir = tempfile::tempdir().unwrap();
    let ec = ec_key("ec-1");
    let mut cfg = config(JwksSource::File(write_jwks(&dir, &[&ec])));
    cfg.claims = ClaimMap {
        principal: "preferred_username".into(),
        tenant: "org".into(),
        clearance: "enclave_clearance".into(),
        nationality: "citizenship".into(),
        role: "enclave_role".into(),
    };
    let verifier = OidcVerifier::new(cfg).await.unwrap();
    let token = sign(
        &ec,
        &json!({
            "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 60,
            "sub": "0f9c-uuid", "preferred_username": "bob", "org": "nga",
            "enclave_clearance": "CONFIDENTIAL", "citizenship": "CAN", "enclave_role": "admin",
        }),
    );
    let p = verifier.verify(&token).await.unwrap();
    assert_eq!(p.id.as_str(), "bob");
    assert_eq!(p.tenant.as_str(), "nga");
    assert_eq!(p.clearance.label().to_string(), "CONFIDENTIAL");
    assert_eq!(p.clearance.nationality().code(), "CAN");
    assert_eq!(p.role, Role::Admin);
    // With this map, `tenant` is not the tenant claim.
    let token = sign(
        &ec,
        &json!({"iss": ISSUER, "aud": AUDIENCE, "exp": now() + 60, "preferred_username": "bob",
                "tenant": "nga", "enclave_clearance": "CONFIDENTIAL"}),
    );
    let err = verifier.verify(&token).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "missing claim `org` (the principal's tenant)"
    );
}

#[tokio::test]
async fn token_without_kid_is_accepted_only_with_a_single_key() {
    let dir = tempfile::tempdir().unwrap();
    let ec = ec_key("ec-1");
    let single = file_verifier(&dir, &[&ec]).await;
    let token = sign_with_header(&ec, Header::new(Algorithm::ES256), &claims());
    assert!(single.verify(&token).await.is_ok());

    let k = keys().await;
    let token = sign_with_header(&k.ec, Header::new(Algorithm::ES256), &claims());
    let err = k.verifier.verify(&token).await.unwrap_err();
    assert!(matches!(err, AuthError::MissingKeyId), "{err}");
}

// === refused tokens ===

async fn refused(verifier: &OidcVerifier, token: &str) -> AuthError {
    match verifier.verify(token).await {
        Ok(p) => panic!("token accepted as {p:?}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused() {
    let k = keys().await;
    let err = refused(
        &k.verifier,
        &sign(&k.rsa, &with(claims(), json!({"exp": now() - 120}))),
    )
    .await;
    assert!(matches!(err, AuthError::TokenExpired), "{err}");
    assert_eq!(err.to_string(), "token expired");
    let err = refused(
        &k.verifier,
        &sign(&k.ec, &with(claims(), json!({"nbf": now() + 120}))),
    )
    .await;
    assert!(matches!(err, AuthError::NotYetValid), "{err}");
    let err = refused(
        &k.verifier,
        &sign(&k.ec, &with(claims(), json!({"exp": null}))),
    )
    .await;
    assert_eq!(err.to_string(), "token has no `exp` claim");
    let err = refused(
        &k.verifier,
        &sign(&k.ec, &with(claims(), json!({"exp": "tomorrow"}))),
    )
    .await;
    assert_eq!(err.to_string(), "token has no `exp` claim");
}

#[tokio::test]
async fn wrong_issuer_and_audience_are_refused() {
    let k = keys().await;
    let err = refused(
        &k.verifier,
        &sign(
            &k.rsa,
            &with(claims(), json!({"iss": "https://evil.example"})),
        ),
    )
    .await;
    assert!(matches!(err, AuthError::WrongIssuer), "{err}");
    let err = refused(
        &k.verifier,
        &sign(&k.rsa, &with(claims(), json!({"iss": null}))),
    )
    .await;
    assert_eq!(err.to_string(), "token has no `iss` claim");
    let err = refused(
        &k.verifier,
        &sign(&k.rsa, &with(claims(), json!({"aud": "other-app"}))),
    )
    .await;
    assert!(matches!(err, AuthError::WrongAudience), "{err}");
    assert_eq!(err.to_string(), "token audience does not match");
    let err = refused(
        &k.verifier,
        &sign(&k.rsa, &with(claims(), json!({"aud": ["a", "b"]}))),
    )
    .await;
    assert!(matches!(err, AuthError::WrongAudience), "{err}");
    let err = refused(
        &k.verifier,
        &sign(&k.rsa, &with(claims(), json!({"aud": null}))),
    )
    .await;
    assert_eq!(err.to_string(), "token has no `aud` claim");
}

#[tokio::test]
async fn signature_by_another_key_is_refused() {
    let k = keys().await;
    let impostor = ec_key("ec-1"); // same kid, different key
    let err = refused(&k.verifier, &sign(&impostor, &claims())).await;
    assert!(matches!(err, AuthError::SignatureInvalid), "{err}");

    // An RS256 signature with a flipped byte.
    let token = sign(&k.rsa, &claims());
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let mut sig = signature.as_bytes().to_vec();
    sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
    let forged = format!("{signed}.{}", String::from_utf8(sig).unwrap());
    let err = refused(&k.verifier, &forged).await;
    assert!(matches!(err, AuthError::SignatureInvalid), "{err}");
}

#[tokio::test]
async fn tampered_payload_is_refused() {
    let k = keys().await;
    for key in [&k.rsa, &k.ec] {
        let token = sign(key, &claims());
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = b64url(
            with(claims(), json!({"clearance": "TOP SECRET//SI//NOFORN"}))
                .to_string()
                .as_bytes(),
        );
        let err = refused(&k.verifier, &parts.join(".")).await;
        assert!(matches!(err, AuthError::SignatureInvalid), "{err}");
    }
}

#[tokio::test]
async fn every_single_character_change_is_refused() {
    let k = keys().await;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let token = sign(&k.ec, &claims());
    for i in 0..token.len() {
        let mut bytes = token.clone().into_bytes();
        if bytes[i] == b'.' {
            continue;
        }
        let pos = ALPHABET.iter().position(|c| *c == bytes[i]).unwrap();
        bytes[i] = ALPHABET[(pos + 1) % ALPHABET.len()];
        let mutated = String::from_utf8(bytes).unwrap();
        assert!(
            k.verifier.verify(&mutated).await.is_err(),
            "accepted with character {i} changed"
        );
    }
}

#[tokio::test]
async fn alg_none_is_refused() {
    let k = keys().await;
    for header in [
        json!({"alg": "none", "kid": "rsa-1"}),
        json!({"alg": "none"}),
        json!({"alg": "None", "typ": "JWT"}),
        json!({"typ": "JWT", "kid": "rsa-1"}),
    ] {
        let token = unsigned(&header, &claims());
        assert!(looks_like_jwt(&token));
        let err = refused(&k.verifier, &token).await;
        assert!(
            matches!(err, AuthError::UnsupportedAlgorithm { .. }),
            "{err}"
        );
    }
    let err = refused(&k.verifier, &unsigned(&json!({"alg": "none"}), &claims())).await;
    assert_eq!(
        err.to_string(),
        "token algorithm `none` is not allowed: use RS256 or ES256"
    );
    // `none` with a real signature attached changes nothing.
    let token = sign(&k.rsa, &claims());
    let signature = token.rsplit('.').next().unwrap();
    let forged = format!(
        "{}{signature}",
        unsigned(&json!({"alg": "none", "kid": "rsa-1"}), &claims())
    );
    assert!(k.verifier.verify(&forged).await.is_err());
}

#[tokio::test]
async fn hs256_keyed_with_the_rsa_public_key_is_refused() {
    let k = keys().await;
    let m = rsa_material();
    // The classic confusion: an HMAC "signed" with the public key a naive verifier would use
    // as the HMAC secret. Also with the JWK's modulus, another naive choice.
    for secret in [m.public_pem.as_bytes(), m.n.as_bytes()] {
        let hmac = SigningKey {
            kid: "rsa-1",
            alg: Algorithm::HS256,
            encoding: EncodingKey::from_secret(secret),
            jwk: Value::Null,
        };
        let err = refused(&k.verifier, &sign(&hmac, &claims())).await;
        assert!(
            matches!(err, AuthError::UnsupportedAlgorithm { .. }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "token algorithm `HS256` is not allowed: use RS256 or ES256"
        );
    }
}

#[tokio::test]
async fn algorithm_must_match_the_key_type() {
    let k = keys().await;
    // An ES256 token naming the RSA key, and an RS256 token naming the EC key.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("rsa-1".into());
    let err = refused(&k.verifier, &sign_with_header(&k.ec, header, &claims())).await;
    assert!(
        matches!(err, AuthError::AlgorithmMismatch { alg: "ES256" }),
        "{err}"
    );
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("ec-1".into());
    let err = refused(&k.verifier, &sign_with_header(&k.rsa, header, &claims())).await;
    assert!(
        matches!(err, AuthError::AlgorithmMismatch { alg: "RS256" }),
        "{err}"
    );
    // Other RSA algorithms are refused even with the right key.
    let pss = SigningKey {
        alg: Algorithm::PS256,
        ..rsa_key("rsa-1")
    };
    let err = refused(&k.verifier, &sign(&pss, &claims())).await;
    assert!(
        matches!(err, AuthError::UnsupportedAlgorithm { .. }),
        "{err}"
    );
    let rs512 = SigningKey {
        alg: Algorithm::RS512,
        ..rsa_key("rsa-1")
    };
    let err = refused(&k.verifier, &sign(&rs512, &claims())).await;
    assert!(
        matches!(err, AuthError::UnsupportedAlgorithm { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn unknown_kid_is_refused_without_a_url() {
    let k = keys().await;
    let stranger = ec_key("rotated-in");
    let err = refused(&k.verifier, &sign(&stranger, &claims())).await;
    assert!(matches!(err, AuthError::UnknownKeyId), "{err}");
    assert_eq!(err.to_string(), "unknown signing key id");
}

#[tokio::test]
async fn missing_and_malformed_principal_claims_are_refused() {
    let k = keys().await;
    let cases = [
        (
            json!({"tenant": null}),
            "missing claim `tenant` (the principal's tenant)",
        ),
        (
            json!({"clearance": null}),
            "missing claim `clearance` (the principal's clearance)",
        ),
        (
            json!({"sub": null}),
            "missing claim `sub` (the principal's name)",
        ),
        (
            json!({"nationality": null}),
            "missing claim `nationality` (the principal's nationality)",
        ),
        (
            json!({"tenant": ""}),
            "claim `tenant` (the principal's tenant) must not be empty",
        ),
        (
            json!({"tenant": 7}),
            "claim `tenant` (the principal's tenant) must be a string",
        ),
        (
            json!({"clearance": ["SECRET"]}),
            "claim `clearance` (the principal's clearance) must be a string",
        ),
        (
            json!({"nationality": "XYZ"}),
            "claim `nationality` (the principal's nationality) is not a known country trigraph such as `USA` or `GBR`",
        ),
        (
            json!({"nationality": "FVEY"}),
            "claim `nationality` (the principal's nationality) is not a known country trigraph such as `USA` or `GBR`",
        ),
        (
            json!({"role": "root"}),
            "claim `role` (the principal's role) must be one of `user`, `admin`, `auditor`",
        ),
        (
            json!({"role": ["admin"]}),
            "claim `role` (the principal's role) must be a string",
        ),
    ];
    for (change, message) in cases {
        let err = refused(&k.verifier, &sign(&k.ec, &with(claims(), change.clone()))).await;
        assert_eq!(err.to_string(), message, "{change}");
    }
}

/// Regression for issue 16, item 3: a token without a nationality used to be taken for a
/// U.S. national.
#[tokio::test]
async fn token_without_nationality_is_refused_not_taken_for_usa() {
    let k = keys().await;
    let err = refused(
        &k.verifier,
        &sign(&k.rsa, &with(claims(), json!({"nationality": null}))),
    )
    .await;
    assert!(
        matches!(
            &err,
            AuthError::MissingClaim { attribute: Attribute::Nationality, claim } if claim == "nationality"
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn invalid_clearance_marking_names_the_reason_code() {
    let k = keys().await;
    for marking in [
        "BANANA",
        "TOP SECRET//HCS//NOFORN",
        "SECRET//NOFORN//REL TO USA, GBR",
        "",
        "   ",
    ] {
        let err = refused(
            &k.verifier,
            &sign(&k.rsa, &with(claims(), json!({"clearance": marking}))),
        )
        .await;
        match &err {
            AuthError::InvalidClearance { claim, code } => {
                assert_eq!(claim, "clearance");
                assert_eq!(
                    err.to_string(),
                    format!(
                        "claim `clearance` (the principal's clearance) is not a valid marking: {}",
                        code.as_str()
                    )
                );
                assert!(ReasonCode::ALL.contains(code));
            }
            AuthError::InvalidClaim { .. } if marking.trim().is_empty() => {}
            other => panic!("{marking:?}: {other}"),
        }
    }
}

#[tokio::test]
async fn garbage_and_huge_tokens_are_refused() {
    let k = keys().await;
    let huge = format!(
        "eyJ{}.eyJ{}.{}",
        "a".repeat(20_000),
        "b".repeat(20_000),
        "c".repeat(400)
    );
    let err = refused(&k.verifier, &huge).await;
    assert!(
        matches!(err, AuthError::TokenTooLarge { limit: 16384 }),
        "{err}"
    );
    for garbage in [
        "",
        "enk_0123456789",
        "eyJ",
        "eyJ.eyJ.",
        "eyJ..",
        "a.b.c",
        "eyJhbGciOiJSUzI1NiJ9.!!!.sig",
        "eyJhbGciOiJSUzI1NiJ9.eyJ.sig.extra",
        "eyJ9.eyJ9.eyJ9",
        "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYS0xIn0.bm90IGpzb24.c2ln",
        "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYS0xIn0.W10.c2ln",
        "\u{0}\u{1}\u{2}",
        "eyJ🙂.eyJ.x",
    ] {
        assert!(k.verifier.verify(garbage).await.is_err(), "{garbage:?}");
    }
}

#[tokio::test]
async fn errors_never_repeat_the_token() {
    let k = keys().await;
    let token = sign(&k.rsa, &with(claims(), json!({"exp": now() - 3600})));
    let err = refused(&k.verifier, &token).await;
    for part in token.split('.') {
        assert!(!err.to_string().contains(part));
        assert!(!format!("{err:?}").contains(part));
    }
}

#[tokio::test]
async fn verifier_is_send_and_sync_and_its_future_is_send() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let k = keys().await;
    send_sync(&k.verifier);
    let future = k.verifier.verify("x");
    send(&future);
    assert!(future.await.is_err());
}

// === key sets that cannot be loaded ===

#[tokio::test]
async fn unreadable_or_empty_key_files_fail_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let err = OidcVerifier::new(config(JwksSource::File(missing.clone())))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, AuthError::Jwks { .. }));
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    let symmetric = dir.path().join("hmac.json");
    std::fs::write(&symmetric, r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).unwrap();
    let err = OidcVerifier::new(config(JwksSource::File(symmetric)))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("no usable signing key"), "{err}");
}

// === key sets from a URL ===

/// A JWKS endpoint on loopback that counts its requests.
struct JwksServer {
    url: String,
    body: Arc<Mutex<String>>,
    status: Arc<Mutex<&'static str>>,
    /// How long each answer is held back.
    delay: Arc<Mutex<Duration>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(body: String) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let server = JwksServer {
            url,
            body: Arc::new(Mutex::new(body)),
            status: Arc::new(Mutex::new("200 OK")),
            delay: Arc::new(Mutex::new(Duration::ZERO)),
            hits: Arc::new(AtomicUsize::new(0)),
        };
        let (body, status, delay, hits) = (
            Arc::clone(&server.body),
            Arc::clone(&server.status),
            Arc::clone(&server.delay),
            Arc::clone(&server.hits),
        );
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let (body, status, delay, hits) = (
                    Arc::clone(&body),
                    Arc::clone(&status),
                    Arc::clone(&delay),
                    Arc::clone(&hits),
                );
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = socket.read(&mut buf).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        request.extend_from_slice(&buf[..n]);
                    }
                    assert!(request.starts_with(b"GET /.well-known/jwks.json HTTP/1.1\r\n"));
                    hits.fetch_add(1, Ordering::SeqCst);
                    let pause = *delay.lock().unwrap();
                    tokio::time::sleep(pause).await;
                    let body = body.lock().unwrap().clone();
                    let status = *status.lock().unwrap();
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    // The client may have given up waiting.
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        server
    }

    fn serve(&self, keys: &[&SigningKey]) {
        *self.body.lock().unwrap() = jwks(keys);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn url_key_set_is_fetched_at_start() {
    let ec = ec_key("ec-1");
    let server = JwksServer::start(jwks(&[&ec])).await;
    let verifier = OidcVerifier::new(config(JwksSource::Url(server.url.clone())))
        .await
        .unwrap();
    assert_eq!(server.hits(), 1);
    for _ in 0..5 {
        assert!(verifier.verify(&sign(&ec, &claims())).await.is_ok());
    }
    assert_eq!(server.hits(), 1, "known keys need no fetch");
}

#[tokio::test]
async fn rotated_key_is_picked_up_and_bogus_kids_refetch_once_per_interval() {
    let interval = Duration::from_millis(400);
    let k1 = ec_key("k1");
    let k2 = ec_key("k2");
    let k3 = ec_key("k3");
    let server = JwksServer::start(jwks(&[&k1])).await;
    let verifier = Arc::new(
        OidcVerifier::with_unknown_kid_interval(
            config(JwksSource::Url(server.url.clone())),
            interval,
        )
        .await
        .unwrap(),
    );
    assert_eq!(server.hits(), 1);

    // The IdP rotates k2 in: the first token naming it triggers one fetch.
    server.serve(&[&k1, &k2]);
    assert!(verifier.verify(&sign(&k2, &claims())).await.is_ok());
    assert_eq!(server.hits(), 2);
    assert!(verifier.verify(&sign(&k2, &claims())).await.is_ok());
    assert!(verifier.verify(&sign(&k1, &claims())).await.is_ok());
    assert_eq!(server.hits(), 2);

    // A flood of made-up kids right after: no fetch at all (the last one was just now).
    let flood = |verifier: &Arc<OidcVerifier>| {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..50 {
            let verifier = Arc::clone(verifier);
            tasks.spawn(async move {
                let bogus = SigningKey {
                    kid: Box::leak(format!("bogus-{i}").into_boxed_str()),
                    ..ec_key("x")
                };
                verifier.verify(&sign(&bogus, &claims())).await
            });
        }
        tasks
    };
    for result in flood(&verifier).join_all().await {
        assert!(matches!(result, Err(AuthError::UnknownKeyId)));
    }
    assert_eq!(server.hits(), 2);

    // Once the interval has passed, a flood costs exactly one fetch.
    tokio::time::sleep(interval + Duration::from_millis(50)).await;
    for result in flood(&verifier).join_all().await {
        assert!(matches!(result, Err(AuthError::UnknownKeyId)));
    }
    assert_eq!(server.hits(), 3);

    // A key rotated in during the quiet period is picked up after it.
    server.serve(&[&k2, &k3]);
    let err = refused(&verifier, &sign(&k3, &claims())).await;
    assert!(matches!(err, AuthError::UnknownKeyId), "{err}");
    assert_eq!(server.hits(), 3);
    tokio::time::sleep(interval + Duration::from_millis(50)).await;
    assert!(verifier.verify(&sign(&k3, &claims())).await.is_ok());
    assert_eq!(server.hits(), 4);
    // k1 was rotated out with that fetch.
    let err = refused(&verifier, &sign(&k1, &claims())).await;
    assert!(matches!(err, AuthError::UnknownKeyId), "{err}");
}

#[tokio::test]
async fn default_interval_allows_one_refetch() {
    let ec = ec_key("ec-1");
    let server = JwksServer::start(jwks(&[&ec])).await;
    let verifier = OidcVerifier::new(config(JwksSource::Url(server.url.clone())))
        .await
        .unwrap();
    for kid in ["a", "b", "c", "d"] {
        let bogus = SigningKey { kid, ..ec_key("x") };
        let err = refused(&verifier, &sign(&bogus, &claims())).await;
        assert!(matches!(err, AuthError::UnknownKeyId), "{err}");
    }
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn failed_refresh_keeps_the_old_keys_and_does_not_tell_the_caller_why() {
    let ec = ec_key("ec-1");
    let server = JwksServer::start(jwks(&[&ec])).await;
    let verifier = OidcVerifier::with_unknown_kid_interval(
        config(JwksSource::Url(server.url.clone())),
        Duration::ZERO,
    )
    .await
    .unwrap();
    *server.status.lock().unwrap() = "503 Service Unavailable";
    let err = refused(&verifier, &sign(&ec_key("new"), &claims())).await;
    assert!(matches!(err, AuthError::KeysUnavailable), "{err}");
    // SECURITY: the URL and the fetch error go to the log, not to whoever sent the token.
    assert!(!err.to_string().contains(&server.url), "{err}");
    assert!(!err.to_string().contains("503"), "{err}");
    assert_eq!(
        err.to_string(),
        "the identity provider's signing keys are unavailable"
    );
    assert!(verifier.verify(&sign(&ec, &claims())).await.is_ok());
}

/// Regression for issue 16, items 6 and 12: tokens naming made-up key ids must not each take
/// the refresh lock or cause a fetch.
#[tokio::test]
async fn a_flood_of_random_unknown_kids_costs_at_most_one_fetch() {
    let ec = ec_key("ec-1");
    let server = JwksServer::start(jwks(&[&ec])).await;
    *server.delay.lock().unwrap() = Duration::from_millis(200);
    let verifier = Arc::new(
        OidcVerifier::new(config(JwksSource::Url(server.url.clone())))
            .await
            .unwrap(),
    );
    assert_eq!(server.hits(), 1);
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let verifier = Arc::clone(&verifier);
        let bogus = SigningKey {
            kid: Box::leak(format!("random-{i}-{}", now()).into_boxed_str()),
            ..ec_key("x")
        };
        let token = sign(&bogus, &claims());
        tasks.spawn(async move { verifier.verify(&token).await });
    }
    for result in tasks.join_all().await {
        assert!(matches!(result, Err(AuthError::UnknownKeyId)), "{result:?}");
    }
    assert!(
        server.hits() <= 2,
        "{} fetches for 200 unknown kids",
        server.hits()
    );
    // Those that waited, waited for the one fetch only.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Known keys still verify without any fetch.
    let hits = server.hits();
    assert!(verifier.verify(&sign(&ec, &claims())).await.is_ok());
    assert_eq!(server.hits(), hits);
}

#[tokio::test]
async fn a_slow_identity_provider_holds_a_token_at_most_the_refresh_wait() {
    let ec = ec_key("ec-1");
    let server = JwksServer::start(jwks(&[&ec])).await;
    let verifier = OidcVerifier::new(config(JwksSource::Url(server.url.clone())))
        .await
        .unwrap();
    *server.delay.lock().unwrap() = Duration::from_secs(8);
    let started = std::time::Instant::now();
    let err = refused(&verifier, &sign(&ec_key("rotated"), &claims())).await;
    let waited = started.elapsed();
    assert!(matches!(err, AuthError::KeysUnavailable), "{err}");
    assert!(waited >= REFRESH_WAIT, "{waited:?}");
    assert!(waited < REFRESH_WAIT + Duration::from_secs(1), "{waited:?}");
    // The fetch keeps running in the background; a token arriving meanwhile joins it instead
    // of starting another.
    let err = refused(&verifier, &sign(&ec_key("other"), &claims())).await;
    assert!(matches!(err, AuthError::KeysUnavailable), "{err}");
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn a_key_set_url_is_refetched_on_a_timer_dropping_withdrawn_keys() {
    let k1 = ec_key("k1");
    let k2 = ec_key("k2");
    let server = JwksServer::start(jwks(&[&k1])).await;
    let mut cfg = config(JwksSource::Url(server.url.clone()));
    cfg.refresh_interval = Duration::from_millis(300);
    let verifier = OidcVerifier::new(cfg).await.unwrap();
    assert!(verifier.verify(&sign(&k1, &claims())).await.is_ok());
    // The provider withdraws k1 and publishes k2; no token names k2 yet.
    server.serve(&[&k2]);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.hits() < 2 {
        assert!(std::time::Instant::now() < deadline, "no timed refresh");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = refused(&verifier, &sign(&k1, &claims())).await;
    assert!(matches!(err, AuthError::UnknownKeyId), "{err}");
    assert!(verifier.verify(&sign(&k2, &claims())).await.is_ok());
}

#[tokio::test]
async fn a_changed_key_file_is_read_again_and_a_broken_one_keeps_the_old_keys() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = ec_key("k1");
    let k2 = ec_key("k2");
    let path = write_jwks(&dir, &[&k1]);
    let verifier = OidcVerifier::new(config(JwksSource::File(path.clone())))
        .await
        .unwrap();
    assert!(verifier.verify(&sign(&k1, &claims())).await.is_ok());

    // A broken file: the old keys stay.
    std::fs::write(&path, "{ not json").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(verifier.verify(&sign(&k1, &claims())).await.is_ok());

    // A good file replacing k1 with k2 is picked up without a restart.
    std::fs::write(&path, jwks(&[&k2])).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while verifier.verify(&sign(&k2, &claims())).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the file was not read again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = refused(&verifier, &sign(&k1, &claims())).await;
    assert!(matches!(err, AuthError::UnknownKeyId), "{err}");
}

#[tokio::test]
async fn verified_tokens_carry_their_expiry() {
    let k = keys().await;
    let exp = now() + 42;
    let verified = k
        .verifier
        .verify_token(&sign(&k.ec, &with(claims(), json!({ "exp": exp }))))
        .await
        .unwrap();
    assert_eq!(verified.expires_at, UNIX_EPOCH + Duration::from_secs(exp));
    assert_eq!(verified.principal.id.as_str(), "alice");
}

#[tokio::test]
async fn unreachable_or_bad_url_fails_at_start_naming_the_url() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    drop(listener);
    let err = OidcVerifier::new(config(JwksSource::Url(url.clone())))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, AuthError::Jwks { .. }));
    assert!(
        err.to_string()
            .starts_with(&format!("cannot load signing keys from `{url}`: ")),
        "{err}"
    );

    let server = JwksServer::start("<html>login</html>".into()).await;
    let err = OidcVerifier::new(config(JwksSource::Url(server.url.clone())))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("not valid JSON"), "{err}");

    let err = OidcVerifier::new(config(JwksSource::Url(
        "http://idp.example.gov/jwks".into(),
    )))
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("use `https`"), "{err}");
}

#[tokio::test]
async fn https_key_set_from_an_untrusted_server_is_refused() {
    // A TLS server whose certificate no system root vouches for.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            // The client gives up during the handshake; nothing more to serve.
            let _ = acceptor.accept(tcp).await;
        }
    });
    let err = OidcVerifier::new(config(JwksSource::Url(url.clone())))
        .await
        .err()
        .unwrap();
    let message = err.to_string();
    assert!(matches!(err, AuthError::Jwks { .. }), "{err}");
    assert!(message.contains(&url), "{message}");
    // Either the certificate is refused, or (on a machine without a CA store) the roots are
    // missing; never a key set.
    assert!(
        message.contains("certificate") || message.contains("trusted roots"),
        "{message}"
    );
}
