//! End-to-end authentication: the real gateway on an ephemeral loopback port, callers proving
//! who they are with OpenID Connect JWTs (keys generated here, JWKS in a file) and with client
//! certificates over mutual TLS (a CA, server and client certificates generated here).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test on broken machinery"
)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::{Gateway, backend, code};
use enclave_test_support::{Behavior, MockUpstream};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rsa::RsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const ISSUER: &str = "https://idp.example.gov/realms/enclave";
const AUDIENCE: &str = "enclave";
/// Every test routes to one backend accredited high enough for any session the tests open.
const ACCREDITATION: &str = "TOP SECRET//SI//NOFORN";

async fn mock() -> MockUpstream {
    MockUpstream::start(Behavior::default()).await.unwrap()
}

fn backends(up: &MockUpstream) -> String {
    backend("up", &up.base_url(), ACCREDITATION, "USA", "[\"m\"]")
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn message(v: &Value) -> &str {
    v.pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("<none>")
}

// === OIDC: keys and tokens ===

/// A signing key and its public JWK.
struct SigningKey {
    kid: &'static str,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
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

fn ec_key(kid: &'static str) -> SigningKey {
    let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = pair.public_key_raw();
    assert_eq!(point.len(), 65, "uncompressed P-256 point");
    SigningKey {
        kid,
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        jwk: json!({
            "kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
            "x": b64url(&point[1..33]), "y": b64url(&point[33..]),
        }),
    }
}

/// A 2048-bit RSA key, generated once per target directory and kept under
/// `CARGO_TARGET_TMPDIR` (generation is slow and nextest runs each test in its own process).
fn rsa_private_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let path =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("enclave-gateway-test-rsa-2048.pem");
        if let Ok(pem) = std::fs::read_to_string(&path)
            && let Ok(key) = RsaPrivateKey::from_pkcs8_pem(&pem)
        {
            return key;
        }
        let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        // Write then rename, so that a test running beside this one never reads half a file.
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&tmp, pem.as_bytes()).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        key
    })
}

fn rsa_key(kid: &'static str) -> SigningKey {
    let key = rsa_private_key();
    let public = key.to_public_key();
    let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    SigningKey {
        kid,
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        jwk: json!({
            "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": b64url(&public.n().to_bytes_be()), "e": b64url(&public.e().to_bytes_be()),
        }),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims of a valid token for alice (SECRET//NOFORN, a U.S. national).
fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "tenant": "dia",
        "clearance": "SECRET//NOFORN",
        "nationality": "USA",
        "iat": now(),
        "exp": now() + 600,
    })
}

fn with(mut claims: Value, changes: &Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        claims[k] = v.clone();
    }
    claims
}

fn sign(key: &SigningKey, claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.to_string());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

/// A token with a hand-written header and an empty signature.
fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

/// A gateway trusting `keys` (JWKS in a file) for tokens from [`ISSUER`] to [`AUDIENCE`].
async fn oidc_gateway(up: &MockUpstream, keys: &[&SigningKey]) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let jwks = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
    let path = write(dir.path(), "jwks.json", &jwks.to_string());
    let extra = format!(
        "{}[oidc]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\njwks_file = \"{}\"\nleeway_ms = 5000\n",
        backends(up),
        path.display()
    );
    (Gateway::start(&extra).await, dir)
}

// === OIDC tests ===

#[tokio::test]
async fn oidc_es256_token_opens_a_session_within_its_clearance() {
    let up = mock().await;
    let ec = ec_key("ec-1");
    let (gw, _dir) = oidc_gateway(&up, &[&ec]).await;
    let token = sign(&ec, &claims());
    let (s, h, v) = gw.chat(&token, Some("SECRET"), "m", "hello").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(h["x-enclave-classification"], "SECRET");
    assert_eq!(up.requests(), 1);
    // The same token again (now from the verified-credential cache) at the full clearance.
    let (s, h, v) = gw.chat(&token, Some("SECRET//NOFORN"), "m", "again").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(h["x-enclave-classification"], "SECRET//NOFORN");
    assert_eq!(up.requests(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn oidc_rs256_token_is_accepted() {
    let up = mock().await;
    let rsa = rsa_key("rsa-1");
    let ec = ec_key("ec-1");
    let (gw, _dir) = oidc_gateway(&up, &[&rsa, &ec]).await;
    let token = sign(&rsa, &claims());
    let (s, h, v) = gw.chat(&token, Some("SECRET"), "m", "hello").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(h["x-enclave-classification"], "SECRET");
    assert_eq!(up.requests(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn oidc_clearance_and_nationality_claims_bound_the_session() {
    let up = mock().await;
    let ec = ec_key("ec-1");
    let (gw, _dir) = oidc_gateway(&up, &[&ec]).await;

    let confidential = sign(
        &ec,
        &with(
            claims(),
            &json!({"sub": "carol", "clearance": "CONFIDENTIAL"}),
        ),
    );
    let (s, h, v) = gw.chat(&confidential, Some("SECRET"), "m", "hello").await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::FORBIDDEN, "classification_exceeds_clearance")
    );
    assert_eq!(h["x-enclave-classification"], "UNCLASSIFIED");
    // Within the clearance it works: the token itself is fine.
    let (s, _, v) = gw
        .chat(&confidential, Some("CONFIDENTIAL"), "m", "hello")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // A foreign national cannot open a NOFORN session, whatever the clearance claim says.
    for clearance in ["SECRET//REL TO USA, GBR", "SECRET//NOFORN"] {
        let brit = sign(
            &ec,
            &with(
                claims(),
                &json!({"sub": "brit", "clearance": clearance, "nationality": "GBR"}),
            ),
        );
        let (s, _, v) = gw.chat(&brit, Some("SECRET//NOFORN"), "m", "hello").await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::FORBIDDEN, "classification_exceeds_clearance"),
            "{clearance}: {v}"
        );
    }
    assert_eq!(up.requests(), 1, "only the CONFIDENTIAL session was served");
    gw.stop().await;
}

#[tokio::test]
async fn oidc_bad_tokens_are_401_and_reach_nothing() {
    let up = mock().await;
    let ec = ec_key("ec-1");
    let (gw, _dir) = oidc_gateway(&up, &[&ec]).await;
    let impostor = ec_key("ec-1");
    let bad = [
        (
            "expired",
            sign(
                &ec,
                &with(claims(), &json!({"iat": now() - 7200, "exp": now() - 3600})),
            ),
        ),
        (
            "wrong audience",
            sign(&ec, &with(claims(), &json!({"aud": "someone-else"}))),
        ),
        (
            "wrong issuer",
            sign(
                &ec,
                &with(claims(), &json!({"iss": "https://evil.example"})),
            ),
        ),
        ("wrong signing key", sign(&impostor, &claims())),
        (
            "alg none",
            unsigned(
                &json!({"alg": "none", "typ": "JWT", "kid": "ec-1"}),
                &claims(),
            ),
        ),
        (
            "alg none, no kid",
            unsigned(&json!({"alg": "none", "typ": "JWT"}), &claims()),
        ),
        ("tampered payload", {
            let good = sign(&ec, &claims());
            let parts: Vec<&str> = good.split('.').collect();
            let payload = with(claims(), &json!({"clearance": "TOP SECRET"}));
            format!(
                "{}.{}.{}",
                parts[0],
                b64url(payload.to_string().as_bytes()),
                parts[2]
            )
        }),
    ];
    for (what, token) in &bad {
        let (s, h, v) = gw.chat(token, Some("SECRET"), "m", "hello").await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::UNAUTHORIZED, "invalid_api_key"),
            "{what}: {v}"
        );
        assert_eq!(
            v.pointer("/error/type").unwrap(),
            "authentication_error",
            "{what}"
        );
        assert!(h.contains_key("x-enclave-classification"), "{what}");
    }
    assert_eq!(up.requests(), 0, "no bad token reached the upstream");
    gw.stop().await;
}

#[tokio::test]
async fn a_jwt_is_refused_when_no_oidc_is_configured() {
    let up = mock().await;
    let gw = Gateway::start(&backends(&up)).await;
    let ec = ec_key("ec-1");
    let (s, _, v) = gw
        .chat(&sign(&ec, &claims()), Some("SECRET"), "m", "hello")
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_api_key"),
        "{v}"
    );
    assert!(message(&v).contains("OpenID Connect"), "{v}");
    assert_eq!(up.requests(), 0);
    gw.stop().await;
}

// === mTLS: a small PKI ===

const JDOE_CN: &str = "DOE.JOHN.1234567890";
const JSMITH_EMAIL: &str = "jane.smith@mail.mil";

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap();
    Ca { cert, key }
}

struct Leaf {
    cert: rcgen::Certificate,
    key_pem: String,
    key_der: PrivateKeyDer<'static>,
}

fn leaf(key: KeyPair, cert: rcgen::Certificate) -> Leaf {
    Leaf {
        cert,
        key_pem: key.serialize_pem(),
        key_der: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    }
}

fn server_leaf(ca: &Ca) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "enclave.test");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    leaf(key, cert)
}

/// A client certificate with common name `cn` and an email SAN, signed by `ca`.
fn client_leaf(ca: &Ca, cn: &str, email: &str) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "US");
    dn.push(DnType::OrganizationName, "U.S. Government");
    dn.push(DnType::OrganizationalUnitName, "DoD");
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::Rfc822Name(email.try_into().unwrap())];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    leaf(key, cert)
}

/// A TLS gateway: server certificate for localhost/127.0.0.1, client certificates from `ca`
/// mapped by subject CN to `jdoe`, by email SAN to `jsmith`, and by email SAN to `ghost` (a
/// principal that does not exist).
struct TlsGateway {
    gw: Gateway,
    ca: Ca,
    _dir: tempfile::TempDir,
}

async fn tls_gateway(up: &MockUpstream) -> TlsGateway {
    let ca = ca("Enclave Test Root CA");
    let server = server_leaf(&ca);
    let dir = tempfile::tempdir().unwrap();
    let cert = write(
        dir.path(),
        "server.pem",
        &(server.cert.pem() + &ca.cert.pem()),
    );
    let key = write(dir.path(), "server-key.pem", &server.key_pem);
    let client_ca = write(dir.path(), "client-ca.pem", &ca.cert.pem());
    let extra = format!(
        "{}[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n\
         [[tls.client_map]]\ncommon_name = \"{JDOE_CN}\"\nprincipal = \"jdoe\"\n\
         [[tls.client_map]]\nsan = \"{JSMITH_EMAIL}\"\nprincipal = \"jsmith\"\n\
         [[tls.client_map]]\nsan = \"ghost@mail.mil\"\nprincipal = \"ghost\"\n",
        backends(up),
        cert.display(),
        key.display(),
        client_ca.display(),
    );
    let gw = Gateway::start(&extra).await;
    TlsGateway { gw, ca, _dir: dir }
}

fn client_config(ca: &Ca, client: Option<&Leaf>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    let mut config = match client {
        Some(leaf) => builder
            .with_client_auth_cert(vec![leaf.cert.der().clone()], leaf.key_der.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One chat request over TLS to the gateway, trusting `ca`, presenting `client` if given and
/// `key` as a bearer credential if given. `Err` when the handshake or the exchange fails.
async fn tls_chat(
    gw: &Gateway,
    ca: &Ca,
    client: Option<&Leaf>,
    key: Option<&str>,
    label: &str,
) -> Result<(StatusCode, HeaderMap, Value), String> {
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = TlsConnector::from(client_config(ca, client))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| format!("http handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]});
    let mut req = Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("x-enclave-classification", label);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let req = req
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
        .unwrap();
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let (parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((parts.status, parts.headers, v))
}

// === mTLS tests ===

#[tokio::test]
async fn a_mapped_client_certificate_authenticates_without_a_header() {
    let up = mock().await;
    let t = tls_gateway(&up).await;
    t.gw.user("jdoe", "t1", "TOP SECRET", "USA").await;
    t.gw.user("jsmith", "t1", "SECRET", "USA").await;

    // Mapped by subject common name.
    let jdoe = client_leaf(&t.ca, JDOE_CN, "john.doe@mail.mil");
    let (s, h, v) = tls_chat(&t.gw, &t.ca, Some(&jdoe), None, "TOP SECRET")
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(h["x-enclave-classification"], "TOP SECRET");

    // Mapped by email SAN.
    let jsmith = client_leaf(&t.ca, "SMITH.JANE.0987654321", JSMITH_EMAIL);
    let (s, h, v) = tls_chat(&t.gw, &t.ca, Some(&jsmith), None, "SECRET")
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(h["x-enclave-classification"], "SECRET");
    assert_eq!(up.requests(), 2);
    t.gw.stop().await;
}

#[tokio::test]
async fn a_certificate_session_is_bounded_by_the_mapped_principal() {
    let up = mock().await;
    let t = tls_gateway(&up).await;
    t.gw.user("jdoe", "t1", "TOP SECRET", "USA").await;
    let jsmith_key = t.gw.user("jsmith", "t1", "SECRET", "USA").await;

    let jsmith = client_leaf(&t.ca, "SMITH.JANE.0987654321", JSMITH_EMAIL);
    let (s, h, v) = tls_chat(&t.gw, &t.ca, Some(&jsmith), None, "TOP SECRET")
        .await
        .unwrap();
    assert_eq!(
        (s, code(&v)),
        (StatusCode::FORBIDDEN, "classification_exceeds_clearance"),
        "{v}"
    );
    assert_eq!(h["x-enclave-classification"], "UNCLASSIFIED");

    // A bearer credential takes precedence over the certificate: jdoe's certificate with
    // jsmith's key is jsmith, and cannot open a TOP SECRET session.
    let jdoe = client_leaf(&t.ca, JDOE_CN, "john.doe@mail.mil");
    let (s, _, v) = tls_chat(&t.gw, &t.ca, Some(&jdoe), Some(&jsmith_key), "TOP SECRET")
        .await
        .unwrap();
    assert_eq!(
        (s, code(&v)),
        (StatusCode::FORBIDDEN, "classification_exceeds_clearance"),
        "{v}"
    );
    assert_eq!(up.requests(), 0);
    t.gw.stop().await;
}

#[tokio::test]
async fn unmapped_or_missing_certificates_are_401() {
    let up = mock().await;
    let t = tls_gateway(&up).await;
    t.gw.user("jdoe", "t1", "TOP SECRET", "USA").await;

    // A valid certificate from the trusted CA that no mapping names.
    let stranger = client_leaf(&t.ca, "ROE.RICHARD.5555555555", "r.roe@mail.mil");
    let (s, _, v) = tls_chat(&t.gw, &t.ca, Some(&stranger), None, "UNCLASSIFIED")
        .await
        .unwrap();
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_api_key"),
        "{v}"
    );
    assert!(message(&v).contains("certificate"), "{v}");
    assert!(message(&v).contains("ROE.RICHARD.5555555555"), "{v}");

    // A certificate mapped to a principal that does not exist.
    let ghost = client_leaf(&t.ca, "GHOST.CASPER.0000000000", "ghost@mail.mil");
    let (s, _, v) = tls_chat(&t.gw, &t.ca, Some(&ghost), None, "UNCLASSIFIED")
        .await
        .unwrap();
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_api_key"),
        "{v}"
    );
    assert!(message(&v).contains("ghost"), "{v}");

    // No certificate and no key.
    let (s, _, v) = tls_chat(&t.gw, &t.ca, None, None, "UNCLASSIFIED")
        .await
        .unwrap();
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_api_key"),
        "{v}"
    );
    assert_eq!(
        up.requests(),
        0,
        "nothing unauthenticated reached the upstream"
    );
    t.gw.stop().await;
}

#[tokio::test]
async fn an_api_key_over_tls_without_a_certificate_works() {
    let up = mock().await;
    let t = tls_gateway(&up).await;
    let key = t.gw.user("alice", "t1", "SECRET", "USA").await;
    let (s, h, v) = tls_chat(&t.gw, &t.ca, None, Some(&key), "SECRET")
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(h["x-enclave-classification"], "SECRET");
    assert_eq!(up.requests(), 1);
    t.gw.stop().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_at_the_handshake() {
    let up = mock().await;
    let t = tls_gateway(&up).await;
    t.gw.user("jdoe", "t1", "TOP SECRET", "USA").await;
    // Same names as a mapped certificate, but issued by a CA the gateway does not trust.
    let rogue_ca = ca("Enclave Test Root CA");
    let forged = client_leaf(&rogue_ca, JDOE_CN, JSMITH_EMAIL);
    // With TLS 1.3 the client's side of the handshake completes before the server checks the
    // certificate, so the refusal may surface as a closed connection on the first request.
    let result = tls_chat(&t.gw, &t.ca, Some(&forged), None, "TOP SECRET").await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(up.requests(), 0);

    // The listener survives the refused handshake and still serves other clients.
    let (s, _, v) = tls_chat(&t.gw, &t.ca, None, None, "UNCLASSIFIED")
        .await
        .unwrap();
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    t.gw.stop().await;
}
