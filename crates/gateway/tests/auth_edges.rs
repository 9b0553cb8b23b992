//! The authentication edges of issue 16, each over a real socket to the real gateway: missing
//! identity claims deny (item 3), client certificates are matched structurally, bound to their
//! CA and checked against CRLs reloaded on change (item 5), made-up API keys and unknown JWT key
//! ids do not reach the database or the identity provider per request (item 6), JWKS errors
//! stay in the log, a cached token dies with its `exp`, and no credential shows in `Debug` or
//! the log (item 12).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test on broken machinery"
)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::{Gateway, backend, code};
use enclave_gateway::config::Config;
use enclave_test_support::{Behavior, MockUpstream};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SerialNumber, date_time_ymd,
};
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

const ISSUER: &str = "https://idp.example.gov/realms/enclave";
const AUDIENCE: &str = "enclave";
const ACCREDITATION: &str = "TOP SECRET//SI//NOFORN";

async fn mock() -> MockUpstream {
    MockUpstream::start(Behavior::default()).await.unwrap()
}

fn backends(up: &MockUpstream) -> String {
    backend("up", &up.base_url(), ACCREDITATION, "USA", "[\"m\"]")
}

fn write(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// Replaces a file through a rename, as distribution tools do.
fn replace(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// === OIDC: keys, tokens, a JWKS endpoint ===

struct SigningKey {
    kid: String,
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

fn ec_key(kid: &str) -> SigningKey {
    let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = pair.public_key_raw();
    SigningKey {
        kid: kid.to_owned(),
        encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        jwk: json!({
            "kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
            "x": b64url(&point[1..33]), "y": b64url(&point[33..]),
        }),
    }
}

fn jwks(keys: &[&SigningKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// Claims of a valid token for alice, a U.S. national with a SECRET clearance.
fn claims() -> Value {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "tenant": "dia",
        "clearance": "SECRET//NOFORN", "nationality": "USA",
        "iat": now(), "exp": now() + 600,
    })
}

/// `claims()` with changes; a `null` removes the claim.
fn with(mut claims: Value, changes: &Value) -> Value {
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
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

fn oidc_section(jwks: &str, extra: &str) -> String {
    format!("[oidc]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n{jwks}\n{extra}")
}

/// A gateway trusting `key` (JWKS in a file), with `extra` appended to `[oidc]`.
async fn oidc_gateway(up: &MockUpstream, key: &SigningKey, extra: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "jwks.json", jwks(&[key]).as_bytes());
    let jwks_file = format!("jwks_file = \"{}\"", path.display());
    let gw = Gateway::start(&format!(
        "{}{}",
        backends(up),
        oidc_section(&jwks_file, extra)
    ))
    .await;
    // The JWKS file is read at start; the directory may go.
    std::mem::forget(dir);
    gw
}

/// A JWKS endpoint on loopback that counts its requests.
struct JwksServer {
    url: String,
    body: Arc<Mutex<String>>,
    status: Arc<Mutex<&'static str>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(body: String) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = JwksServer {
            url: format!("http://{}/jwks", listener.local_addr().unwrap()),
            body: Arc::new(Mutex::new(body)),
            status: Arc::new(Mutex::new("200 OK")),
            hits: Arc::new(AtomicUsize::new(0)),
        };
        let (body, status, hits) = (
            Arc::clone(&server.body),
            Arc::clone(&server.status),
            Arc::clone(&server.hits),
        );
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                hits.fetch_add(1, Ordering::SeqCst);
                let body = body.lock().unwrap().clone();
                let status = *status.lock().unwrap();
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        server
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

// === item 3: no default nationality ===

/// Regression for issue 16, item 3: a token without a nationality claim was served as a U.S.
/// national's.
#[tokio::test]
async fn a_token_without_nationality_is_refused_403_missing_claim() {
    let up = mock().await;
    let ec = ec_key("ec-1");
    let gw = oidc_gateway(&up, &ec, "").await;
    let token = sign(&ec, &with(claims(), &json!({"nationality": null})));
    let (s, _, v) = gw.chat(&token, Some("SECRET"), "m", "hello").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(
        v,
        json!({"error": {
            "message": "The token has no `nationality` claim, which must carry the principal's nationality: ask the identity provider's administrator to issue it, or set `[oidc.claims] nationality` to the claim that carries it.",
            "type": "permission_error",
            "code": "missing_claim",
            "param": null,
        }})
    );
    assert_eq!(up.requests(), 0);
    gw.stop().await;
}

#[tokio::test]
async fn missing_or_unmapped_identity_claims_deny_naming_the_claim() {
    let up = mock().await;
    let ec = ec_key("ec-1");
    let gw = oidc_gateway(
        &up,
        &ec,
        "[oidc.claims]\nnationality = \"citizenship\"\ntenant = \"org\"\n",
    )
    .await;
    let base = with(
        claims(),
        &json!({"nationality": null, "tenant": null, "citizenship": "GBR", "org": "dia"}),
    );
    for (change, names) in [
        (
            json!({"citizenship": null}),
            ["`citizenship`", "[oidc.claims] nationality"],
        ),
        (
            json!({"citizenship": "XYZ"}),
            ["`citizenship`", "not a known country"],
        ),
        (json!({"org": null}), ["`org`", "[oidc.claims] tenant"]),
        (json!({"org": ""}), ["`org`", "must not be empty"]),
        (
            json!({"clearance": null}),
            ["`clearance`", "[oidc.claims] clearance"],
        ),
        (
            json!({"clearance": "SECRET//NOFORN//REL TO USA, GBR"}),
            ["`clearance`", "not a valid marking"],
        ),
        (json!({"sub": null}), ["`sub`", "[oidc.claims] principal"]),
        (json!({"role": "root"}), ["`role`", "must be one of"]),
        // `nationality` is not the configured claim: it does not count.
        (
            json!({"citizenship": null, "nationality": "USA"}),
            ["`citizenship`", "has no"],
        ),
    ] {
        let token = sign(&ec, &with(base.clone(), &change));
        let (s, _, v) = gw.chat(&token, Some("UNCLASSIFIED"), "m", "hello").await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::FORBIDDEN, "missing_claim"),
            "{change}: {v}"
        );
        let message = v.pointer("/error/message").unwrap().as_str().unwrap();
        for name in names {
            assert!(message.contains(name), "{change}: {message}");
        }
        // The value sent is never echoed.
        assert!(!message.contains("XYZ"), "{message}");
    }
    assert_eq!(up.requests(), 0);

    // The role alone may be absent: it is then `user`, the least privilege.
    let token = sign(&ec, &with(base, &json!({"role": null})));
    let (s, _, v) = gw.chat(&token, Some("UNCLASSIFIED"), "m", "hello").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    gw.stop().await;
}

// === item 12: a cached token dies with its exp; JWKS errors stay in the log ===

/// Regression for issue 16, item 12: a verified token was cached for 5 s whatever its `exp`.
#[tokio::test]
async fn an_expired_token_is_refused_even_if_it_was_cached() {
    let up = mock().await;
    let ec = ec_key("ec-1");
    // No leeway, so the token expires at its `exp`.
    let gw = oidc_gateway(&up, &ec, "leeway_ms = 1\n").await;
    let exp = now() + 2;
    let token = sign(&ec, &with(claims(), &json!({ "exp": exp })));
    let (s, _, v) = gw.chat(&token, Some("SECRET"), "m", "hello").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let first = Instant::now();
    while now() <= exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        first.elapsed() < Duration::from_secs(5),
        "still within the cache's 5 s"
    );
    let (s, _, v) = gw.chat(&token, Some("SECRET"), "m", "again").await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_api_key"),
        "{v}"
    );
    assert!(v.to_string().contains("token expired"), "{v}");
    assert_eq!(up.requests(), 1);
    gw.stop().await;
}

/// Regression for issue 16, items 6 and 12: every token with an unknown `kid` queued on the
/// JWKS refresh lock.
#[tokio::test]
async fn a_flood_of_unknown_kids_costs_at_most_a_couple_of_jwks_fetches() {
    let up = mock().await;
    let ec = ec_key("ec-1");
    let server = JwksServer::start(jwks(&[&ec])).await;
    let gw = Gateway::start(&format!(
        "{}{}",
        backends(&up),
        oidc_section(&format!("jwks_url = \"{}\"", server.url), "")
    ))
    .await;
    assert_eq!(server.hits(), 1, "fetched at start");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let bogus = SigningKey {
            kid: format!("kid-{i}-{}", now()),
            ..ec_key("x")
        };
        let token = sign(&bogus, &claims());
        let client = gw.client.clone();
        let url = gw.url("/v1/models");
        tasks.spawn(async move {
            let req = Request::builder()
                .method(Method::GET)
                .uri(url)
                .header("authorization", format!("Bearer {token}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            client.request(req).await.unwrap().status()
        });
    }
    for status in tasks.join_all().await {
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert!(server.hits() <= 2, "{} JWKS fetches", server.hits());
    // The real key still works, with no fetch.
    let hits = server.hits();
    let (s, _, v) = gw
        .chat(&sign(&ec, &claims()), Some("SECRET"), "m", "hello")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(server.hits(), hits);
    gw.stop().await;
}

#[tokio::test]
async fn a_failed_jwks_fetch_is_a_generic_401_and_its_cause_goes_to_the_log() {
    let up = mock().await;
    let ec = ec_key("ec-1");
    let server = JwksServer::start(jwks(&[&ec])).await;
    let gw = Gateway::start(&format!(
        "{}{}",
        backends(&up),
        oidc_section(&format!("jwks_url = \"{}\"", server.url), "")
    ))
    .await;
    *server.status.lock().unwrap() = "503 Service Unavailable";
    let token = sign(&ec_key("rotated-in"), &claims());
    let (s, _, v) = gw.chat(&token, Some("SECRET"), "m", "hello").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(
        v,
        json!({"error": {
            "message": "The identity provider's keys are unavailable; retry later.",
            "type": "authentication_error",
            "code": "invalid_api_key",
            "param": null,
        }})
    );
    assert_eq!(server.hits(), 2);
    gw.stop().await;
}

#[test]
fn oidc_refresh_interval_is_read_and_checked() {
    let parse =
        |extra: &str| Config::parse(&oidc_section("jwks_url = \"https://idp/jwks\"", extra));
    let c = parse("").unwrap();
    assert_eq!(c.oidc.unwrap().refresh_interval, Duration::from_secs(300));
    let c = parse("refresh_interval_secs = 60\n").unwrap();
    assert_eq!(c.oidc.unwrap().refresh_interval, Duration::from_secs(60));
    let e = parse("refresh_interval_secs = 5\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("oidc.refresh_interval_secs: expected an integer from 30"),
        "{e}"
    );
    let e = Config::parse(&oidc_section(
        "jwks_file = \"/etc/jwks.json\"",
        "refresh_interval_secs = 60\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("applies to jwks_url only"), "{e}");
}

// === item 6: API key floods ===

/// Regression for issue 16, item 6: every well-formed made-up key was looked up in the
/// database. With the key table gone, a lookup fails with 500; made-up keys never get there.
/// (The whole database cannot go: the audit log then refuses every request, fail closed.)
#[tokio::test]
async fn made_up_api_keys_are_refused_without_the_database() {
    let up = mock().await;
    let gw = Gateway::start(&backends(&up)).await;
    let real = gw.user("alice", "t1", "SECRET", "USA").await;
    let (s, _, v) = gw.chat(&real, Some("SECRET"), "m", "hello").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let revoked = gw.user("bob", "t1", "SECRET", "USA").await;
    assert!(gw.app.store.revoke_key(&revoked).await.unwrap());
    let (s, _, _) = gw.chat(&revoked, None, "m", "hello").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    hide_api_keys(&gw.dir.path().join("data/enclave.db")).await;
    let made_up = |i: usize| format!("enk_{i:016x}_{}", "ab".repeat(32));
    for key in [
        made_up(1),
        made_up(2),
        format!("enk_{}_{}", &real[4..20], "0".repeat(64)),
    ] {
        let (s, _, v) = gw.chat(&key, None, "m", "hello").await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::UNAUTHORIZED, "invalid_api_key"),
            "{v}"
        );
    }
    // A revoked key is remembered, not looked up again.
    let (s, _, v) = gw.chat(&revoked, None, "m", "hello").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    // The real key is still served from the 5 s cache.
    let (s, _, v) = gw.chat(&real, Some("SECRET"), "m", "hello").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    gw.stop().await;
}

/// A gateway started on a data directory whose database already holds a legacy API key (one
/// made before check tags), as after an upgrade.
struct Upgraded {
    addr: std::net::SocketAddr,
    client: common::HttpClient,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Upgraded {
    async fn start(up: &MockUpstream) -> (Upgraded, enclave_store::KeyRecord, String) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let url = format!("sqlite://{}", data.join("enclave.db").display());
        let install = enclave_store::install::prepare(&data).unwrap();
        let store = enclave_store::Store::open(&url, install.master_key())
            .await
            .unwrap();
        store
            .add_principal(&enclave_store::NewPrincipal {
                name: "alice".into(),
                tenant: "t1".into(),
                clearance: "SECRET".into(),
                nationality: "USA".into(),
                role: "user".into(),
            })
            .await
            .unwrap();
        let (record, key) = store.danger_create_legacy_key("alice").await.unwrap();
        store.close().await;
        let toml = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[storage]\nurl = \"{url}\"\n{}",
            data.display(),
            backends(up)
        );
        let server = enclave_gateway::server::Server::bind(Config::parse(&toml).unwrap())
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(hyper_util::client::legacy::connect::HttpConnector::new());
        let gw = Upgraded {
            addr,
            client,
            stop,
            task,
            _dir: dir,
        };
        (gw, record, key)
    }

    async fn models(&self, key: &str) -> (StatusCode, Value) {
        let req = Request::builder()
            .uri(format!("http://{}/v1/models", self.addr))
            .header("authorization", format!("Bearer {key}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = self.client.request(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

#[tokio::test]
async fn legacy_keys_keep_working_and_their_floods_are_bounded() {
    let up = mock().await;
    let (gw, legacy, legacy_key) = Upgraded::start(&up).await;
    let (s, v) = gw.models(&legacy_key).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // A flood with the legacy key's id and random secrets: every request is refused, and at
    // most a few lookups run at once.
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let key = format!("enk_{}_{:064x}", legacy.id, i);
        let client = gw.client.clone();
        let url = format!("http://{}/v1/models", gw.addr);
        tasks.spawn(async move {
            let req = Request::builder()
                .uri(url)
                .header("authorization", format!("Bearer {key}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            client.request(req).await.unwrap().status()
        });
    }
    for status in tasks.join_all().await {
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // The real legacy key is unaffected: no id-level lockout.
    let (s, v) = gw.models(&legacy_key).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Untagged keys whose ids are no legacy key's never reach the database.
    hide_api_keys(&gw._dir.path().join("data/enclave.db")).await;
    let (s, v) = gw
        .models(&format!("enk_{}_{}", "9".repeat(16), "1".repeat(64)))
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_api_key"),
        "{v}"
    );
    gw.stop().await;
}

/// Renames the API key table under the running server: any key lookup now fails (500), while
/// the audit log keeps working.
async fn hide_api_keys(db: &std::path::Path) {
    let url = format!("sqlite://{}", db.display());
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    sqlx::query("ALTER TABLE api_keys RENAME TO api_keys_hidden")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

// === item 5: mTLS ===

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

fn leaf(ca: &Ca, dn: &[(DnType, &str)], serial: u64, server: bool) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let names = if server {
        vec!["localhost".to_string(), "127.0.0.1".to_string()]
    } else {
        Vec::new()
    };
    let mut params = CertificateParams::new(names).unwrap();
    let mut name = DistinguishedName::new();
    for (kind, value) in dn {
        name.push(kind.clone(), *value);
    }
    params.distinguished_name = name;
    params.serial_number = Some(SerialNumber::from(serial));
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    Leaf {
        cert,
        key_pem: key.serialize_pem(),
        key_der: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    }
}

fn crl(ca: &Ca, serials: &[u64]) -> String {
    CertificateRevocationListParams {
        this_update: date_time_ymd(2020, 1, 1),
        next_update: date_time_ymd(2099, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from(*s),
                revocation_time: date_time_ymd(2024, 1, 1),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ca.cert, &ca.key)
    .unwrap()
    .pem()
    .unwrap()
}

/// A `[tls]` section whose server certificate comes from `server_ca` (files written to `dir`),
/// with `extra` appended.
fn tls_section(server_ca: &Ca, dir: &Path, extra: &str) -> String {
    let server = leaf(server_ca, &[(DnType::CommonName, "enclave.test")], 1, true);
    let cert = write(
        dir,
        "server.pem",
        (server.cert.pem() + &server_ca.cert.pem()).as_bytes(),
    );
    let key = write(dir, "server-key.pem", server.key_pem.as_bytes());
    format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n{extra}",
        cert.display(),
        key.display(),
    )
}

/// A TLS gateway: see [`tls_section`].
async fn tls_gateway(up: &MockUpstream, server_ca: &Ca, dir: &Path, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "{}{}",
        backends(up),
        tls_section(server_ca, dir, extra)
    ))
    .await
}

/// One request to `/v1/models` over TLS presenting `client`; `Err` when the handshake or the
/// exchange fails.
async fn tls_models(
    gw: &Gateway,
    server_ca: &Ca,
    client: &Leaf,
) -> Result<(StatusCode, HeaderMap, Value), String> {
    let mut roots = RootCertStore::empty();
    roots.add(server_ca.cert.der().clone()).unwrap();
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![client.cert.der().clone()], client.key_der.clone_key())
            .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| format!("http handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::builder()
        .uri("/v1/models")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
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
    Ok((
        parts.status,
        parts.headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// Regression for issue 16, item 5: a subject compared as rendered text let a common name
/// holding `,O=Admin` pose as another, two-RDN name.
#[tokio::test]
async fn crafted_certificate_subjects_do_not_authenticate() {
    let up = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let root = ca("Enclave Test Root CA");
    let client_ca = write(dir.path(), "client-ca.pem", root.cert.pem().as_bytes());
    let gw = tls_gateway(
        &up,
        &root,
        dir.path(),
        &format!(
            "client_ca = \"{}\"\n[[tls.client_map]]\nsubject = \"CN=alice,O=Admin\"\nprincipal = \"admin\"\n",
            client_ca.display()
        ),
    )
    .await;
    gw.user("admin", "t1", "TOP SECRET", "USA").await;
    let genuine = leaf(
        &root,
        &[
            (DnType::OrganizationName, "Admin"),
            (DnType::CommonName, "alice"),
        ],
        10,
        false,
    );
    let (s, _, v) = tls_models(&gw, &root, &genuine).await.unwrap();
    assert_eq!(s, StatusCode::OK, "{v}");
    for dn in [
        vec![(DnType::CommonName, "alice,O=Admin")],
        vec![(DnType::CommonName, "alice, O=Admin")],
        vec![
            (DnType::OrganizationName, "Admin"),
            (DnType::OrganizationalUnitName, "Contractors"),
            (DnType::CommonName, "alice"),
        ],
        vec![
            (DnType::CommonName, "alice"),
            (DnType::OrganizationName, "Admin"),
        ],
    ] {
        let crafted = leaf(&root, &dn, 11, false);
        let (s, _, v) = tls_models(&gw, &root, &crafted).await.unwrap();
        assert_eq!(
            (s, code(&v)),
            (StatusCode::UNAUTHORIZED, "invalid_api_key"),
            "{dn:?}: {v}"
        );
        assert!(v.to_string().contains("not mapped"), "{v}");
    }
    gw.stop().await;
}

/// Regression for issue 16, item 5: a common name matched whichever trusted CA issued it.
#[tokio::test]
async fn a_same_name_certificate_from_a_second_trusted_ca_does_not_authenticate() {
    let up = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let first = ca("First CA");
    let second = ca("Second CA");
    let bundle = write(
        dir.path(),
        "client-cas.pem",
        (first.cert.pem() + &second.cert.pem()).as_bytes(),
    );
    let first_pem = write(dir.path(), "first.pem", first.cert.pem().as_bytes());
    let map = |issuer: &str| {
        format!(
            "client_ca = \"{}\"\n[[tls.client_map]]\ncommon_name = \"DOE.JOHN.1234567890\"\n{issuer}principal = \"jdoe\"\n",
            bundle.display()
        )
    };
    // With two CAs trusted, a mapping must name its issuer: the server does not start.
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{}",
        dir.path().join("data").display(),
        tls_section(&first, dir.path(), &map(""))
    );
    let config = Config::parse(&toml).unwrap();
    let err = enclave_gateway::server::Server::bind(config)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("must name the CA"), "{err}");

    let gw = tls_gateway(
        &up,
        &first,
        dir.path(),
        &map(&format!("issuer = \"{}\"\n", first_pem.display())),
    )
    .await;
    gw.user("jdoe", "t1", "TOP SECRET", "USA").await;
    let cn = [(DnType::CommonName, "DOE.JOHN.1234567890")];
    let (s, _, v) = tls_models(&gw, &first, &leaf(&first, &cn, 20, false))
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _, v) = tls_models(&gw, &first, &leaf(&second, &cn, 20, false))
        .await
        .unwrap();
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_api_key"),
        "{v}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_and_a_replaced_crl_applies_without_a_restart() {
    let up = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let root = ca("Enclave Test Root CA");
    let client_ca = write(dir.path(), "client-ca.pem", root.cert.pem().as_bytes());
    let crl_path = write(dir.path(), "root.crl", crl(&root, &[66]).as_bytes());
    let gw = tls_gateway(
        &up,
        &root,
        dir.path(),
        &format!(
            "client_ca = \"{}\"\ncrl_files = [\"{}\"]\n[[tls.client_map]]\ncommon_name = \"DOE.JOHN.1234567890\"\nprincipal = \"jdoe\"\n",
            client_ca.display(),
            crl_path.display()
        ),
    )
    .await;
    gw.user("jdoe", "t1", "TOP SECRET", "USA").await;
    let cn = [(DnType::CommonName, "DOE.JOHN.1234567890")];
    let revoked = leaf(&root, &cn, 66, false);
    let good = leaf(&root, &cn, 67, false);
    assert!(
        tls_models(&gw, &root, &revoked).await.is_err(),
        "revoked at the handshake"
    );
    let (s, _, v) = tls_models(&gw, &root, &good).await.unwrap();
    assert_eq!(s, StatusCode::OK, "{v}");

    // The CA revokes the second certificate too; the file is replaced while serving.
    replace(&crl_path, crl(&root, &[66, 67]).as_bytes());
    let deadline = Instant::now() + Duration::from_secs(15);
    while tls_models(&gw, &root, &good).await.is_ok() {
        assert!(Instant::now() < deadline, "the replaced CRL was not loaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The listener still serves others.
    let (s, _, v) = tls_models(&gw, &root, &leaf(&root, &cn, 68, false))
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK, "{v}");
    gw.stop().await;
}

#[test]
fn tls_client_map_and_crl_keys_are_read_and_checked() {
    let c = Config::parse(
        "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nclient_ca = \"ca.pem\"\ncrl_files = [\"a.crl\", \"b.crl\"]\n\
         [[tls.client_map]]\nsubject = \"CN=DOE.JOHN.1234567890,OU=DoD,O=U.S. Government,C=US\"\nissuer = \"id-ca.pem\"\nprincipal = \"jdoe\"\n\
         [[tls.client_map]]\ncommon_name = \"SMITH.JANE.0987654321\"\nprincipal = \"jsmith\"\n",
    )
    .unwrap();
    let tls = c.tls.unwrap();
    assert_eq!(
        tls.crl_files,
        [PathBuf::from("a.crl"), PathBuf::from("b.crl")]
    );
    assert_eq!(tls.client_map[0].issuer, Some(PathBuf::from("id-ca.pem")));
    assert!(
        matches!(&tls.client_map[1].matcher, enclave_auth::CertMatch::CommonName(cn) if cn == "SMITH.JANE.0987654321")
    );
    let e = Config::parse(
        "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\ncrl_files = [\"a.crl\", 7]\n\
         [[tls.client_map]]\nsubject = \"DOE.JOHN.1234567890\"\nprincipal = \"x\"\n\
         [[tls.client_map]]\nsubject = \"CN=a,,O=b\"\nprincipal = \"y\"\n",
    )
    .unwrap_err()
    .to_string();
    for problem in [
        "tls.crl_files[1]: expected the path of a CRL file",
        "tls.client_map[0].subject: `DOE.JOHN.1234567890` is not an RFC 4514 distinguished name",
        "write common_name",
        "tls.client_map[1].subject: `CN=a,,O=b` is not an RFC 4514 distinguished name",
        "tls.client_ca: required when crl_files is set",
    ] {
        assert!(e.contains(problem), "{problem}\n{e}");
    }
}

// === item 12: no credential in Debug or the log ===

/// A log sink shared with the test.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_key_token_or_private_key_shows_in_debug_or_the_log() {
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _log = tracing::subscriber::set_default(subscriber);

    let up = mock().await;
    let ec = ec_key("ec-1");
    let server = JwksServer::start(jwks(&[&ec])).await;
    let dir = tempfile::tempdir().unwrap();
    let root = ca("Enclave Test Root CA");
    let client_ca = write(dir.path(), "client-ca.pem", root.cert.pem().as_bytes());
    let server_leaf = leaf(&root, &[(DnType::CommonName, "enclave.test")], 1, true);
    let gw = {
        let cert = write(dir.path(), "server.pem", server_leaf.cert.pem().as_bytes());
        let key = write(dir.path(), "server-key.pem", server_leaf.key_pem.as_bytes());
        Gateway::start(&format!(
            "{}{}[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
            backends(&up),
            oidc_section(&format!("jwks_url = \"{}\"", server.url), ""),
            cert.display(),
            key.display(),
            client_ca.display(),
        ))
        .await
    };
    let api_key = gw.user("alice", "t1", "SECRET", "USA").await;
    let token = sign(&ec, &claims());
    let made_up_key = format!("enk_{}_{}", "7".repeat(16), "c".repeat(64));
    *server.status.lock().unwrap() = "503 Service Unavailable";
    let unknown_kid_token = sign(&ec_key("rotated"), &claims());
    let no_nationality = sign(&ec, &with(claims(), &json!({"nationality": null})));
    let client_leaf = leaf(&root, &[(DnType::CommonName, "ROE.RICHARD")], 5, false);
    // Use every credential, good and bad, over TLS.
    for credential in [
        &api_key,
        &token,
        &made_up_key,
        &unknown_kid_token,
        &no_nationality,
    ] {
        let _ = tls_request(&gw, &root, &client_leaf, credential).await;
    }

    let secrets: Vec<(&str, &str)> = vec![
        ("api key", &api_key),
        ("api key secret", &api_key[21..]),
        ("made-up key", &made_up_key),
        ("token", &token),
        ("token signature", token.rsplit('.').next().unwrap()),
        ("unknown-kid token", &unknown_kid_token),
        (
            "server private key",
            server_leaf.key_pem.lines().nth(1).unwrap(),
        ),
        (
            "client private key",
            client_leaf.key_pem.lines().nth(1).unwrap(),
        ),
    ];
    let debug = format!("{:?}\n{:#?}", gw.app, gw.app);
    let log = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("cannot fetch the identity provider's signing keys"),
        "{log}"
    );
    for (what, secret) in &secrets {
        assert!(!debug.contains(secret), "{what} in Debug");
        assert!(!log.contains(secret), "{what} in the log");
    }
    gw.stop().await;
}

/// One request over TLS with a client certificate and a bearer credential.
async fn tls_request(
    gw: &Gateway,
    server_ca: &Ca,
    client: &Leaf,
    bearer: &str,
) -> Option<StatusCode> {
    let mut roots = RootCertStore::empty();
    roots.add(server_ca.cert.der().clone()).unwrap();
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![client.cert.der().clone()], client.key_der.clone_key())
            .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(gw.addr).await.ok()?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .ok()?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::builder()
        .uri("/v1/models")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {bearer}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.ok()?;
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    Some(status)
}
