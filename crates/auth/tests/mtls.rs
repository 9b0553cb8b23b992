//! Mutual TLS over real loopback handshakes, with a CA, server and client certificates
//! generated here.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test on broken machinery"
)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use enclave_auth::mtls::{
    CRL_POLL, CertNames, ClientIdentity, ServerTls, peer_names, server_config, watch_crls,
};
use enclave_auth::{AuthError, CertMapping, CertMatch, TlsConfig};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber, date_time_ymd,
};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const CLIENT_CN: &str = "DOE.JOHN.1234567890";
const CLIENT_EMAIL: &str = "john.doe@mail.mil";
const CLIENT_UPN: &str = "1234567890@mil";
const CLIENT_URI: &str = "urn:uuid:6c4f5c2e-8f0e-4a8b-9d2e-5b7f2f1e9c01";

// === a small PKI ===

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

/// A leaf certificate signed by `ca`.
struct Leaf {
    cert: rcgen::Certificate,
    key_pem: String,
    key_der: PrivateKeyDer<'static>,
}

fn server_leaf(ca: &Ca, key: KeyPair, key_pem: String) -> Leaf {
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "enclave.test");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    Leaf {
        cert,
        key_der: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        key_pem,
    }
}

fn client_leaf(ca: &Ca) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "US");
    dn.push(DnType::OrganizationName, "U.S. Government");
    dn.push(DnType::OrganizationalUnitName, "DoD");
    dn.push(DnType::CommonName, CLIENT_CN);
    params.distinguished_name = dn;
    params.subject_alt_names = vec![
        SanType::Rfc822Name(CLIENT_EMAIL.try_into().unwrap()),
        SanType::OtherName((
            vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3],
            CLIENT_UPN.to_string().into(),
        )),
        SanType::URI(CLIENT_URI.try_into().unwrap()),
        SanType::DnsName("workstation.mil".try_into().unwrap()),
        SanType::IpAddress("10.1.2.3".parse().unwrap()),
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    Leaf {
        cert,
        key_pem: key.serialize_pem(),
        key_der: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    }
}

/// The files a deployment would have, in a temporary directory.
struct Deployment {
    ca: Ca,
    server: Leaf,
    dir: tempfile::TempDir,
    cfg: TlsConfig,
}

fn deployment(with_client_ca: bool) -> Deployment {
    let ca = ca("Enclave Test Root CA");
    let key = KeyPair::generate().unwrap();
    let key_pem = key.serialize_pem();
    let server = server_leaf(&ca, key, key_pem);
    let dir = tempfile::tempdir().unwrap();
    let cfg = TlsConfig {
        cert: write(&dir, "server.pem", &(server.cert.pem() + &ca.cert.pem())),
        key: write(&dir, "server-key.pem", &server.key_pem),
        client_ca: with_client_ca.then(|| write(&dir, "client-ca.pem", &ca.cert.pem())),
        crl_files: Vec::new(),
        client_map: vec![
            CertMapping {
                matcher: CertMatch::San("someone.else@mail.mil".into()),
                issuer: None,
                principal: "someone".into(),
            },
            CertMapping {
                matcher: CertMatch::Subject(
                    format!("CN={CLIENT_CN},OU=DoD,O=U.S. Government,C=US")
                        .parse()
                        .unwrap(),
                ),
                issuer: None,
                principal: "jdoe".into(),
            },
        ],
    };
    Deployment {
        ca,
        server,
        dir,
        cfg,
    }
}

impl Deployment {
    fn tls(&self) -> Arc<ServerTls> {
        Arc::new(ServerTls::load(&self.cfg).unwrap())
    }
}

fn write(dir: &tempfile::TempDir, name: &str, contents: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

// === handshakes ===

fn client_config(
    ca: &Ca,
    client: Option<&Leaf>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
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

/// What the server saw of one connection.
struct Accepted {
    names: Option<CertNames>,
    identity: Option<ClientIdentity>,
    alpn: Option<Vec<u8>>,
    version: Option<rustls::ProtocolVersion>,
    resumed: bool,
}

/// Runs one handshake over loopback and a ping/pong; the server side's view, or its error.
async fn handshake(server: &Arc<ServerTls>, client: Arc<ClientConfig>) -> Result<Accepted, String> {
    let tls = Arc::clone(server);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut stream = TlsAcceptor::from(tls.server_config())
            .accept(tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (_, conn) = stream.get_ref();
        let accepted = Accepted {
            names: peer_names(conn).map_err(|e| e.to_string())?,
            identity: tls.identify(conn).map_err(|e| e.to_string())?,
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            version: conn.protocol_version(),
            resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        };
        let mut ping = [0u8; 4];
        stream
            .read_exact(&mut ping)
            .await
            .map_err(|e| e.to_string())?;
        assert_eq!(&ping, b"ping");
        stream.write_all(b"pong").await.map_err(|e| e.to_string())?;
        stream.shutdown().await.map_err(|e| e.to_string())?;
        Ok(accepted)
    };
    let connect = async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = TlsConnector::from(client).connect(name, tcp).await?;
        tls.write_all(b"ping").await?;
        let mut pong = [0u8; 4];
        tls.read_exact(&mut pong).await?;
        Ok::<_, std::io::Error>(pong)
    };
    let (served, connected) = tokio::join!(serve, connect);
    if served.is_ok() {
        assert_eq!(&connected.unwrap(), b"pong");
    }
    served
}

// === tests ===

#[tokio::test]
async fn client_certificate_is_verified_and_mapped_to_its_principal() {
    let d = deployment(true);
    let client = client_leaf(&d.ca);
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let accepted = handshake(&d.tls(), client_config(&d.ca, Some(&client), versions))
            .await
            .unwrap();
        assert_eq!(accepted.alpn.as_deref(), Some(&b"http/1.1"[..]));
        assert_eq!(accepted.version, Some(versions[0].version));
        let names = accepted.names.expect("the client presented a certificate");
        assert_eq!(
            names.subject.to_string(),
            format!("CN={CLIENT_CN},OU=DoD,O=U.S. Government,C=US")
        );
        assert_eq!(names.common_name.as_deref(), Some(CLIENT_CN));
        assert_eq!(
            names.sans,
            [CLIENT_EMAIL, CLIENT_UPN, CLIENT_URI, "workstation.mil"]
        );
        assert_eq!(
            accepted.identity,
            Some(ClientIdentity {
                subject: format!("CN={CLIENT_CN},OU=DoD,O=U.S. Government,C=US"),
                principal: Some("jdoe".into()),
            })
        );
    }
}

#[tokio::test]
async fn each_kind_of_name_maps() {
    let d = deployment(true);
    let client = client_leaf(&d.ca);
    let names = CertNames::from_der(client.cert.der()).unwrap();
    for matcher in [
        CertMatch::CommonName(CLIENT_CN.into()),
        CertMatch::Subject(
            format!("CN={CLIENT_CN}, OU=DoD, O=U.S. Government, C=US")
                .parse()
                .unwrap(),
        ),
        CertMatch::San("John.Doe@Mail.Mil".into()),
        CertMatch::San(CLIENT_UPN.into()),
        CertMatch::San(CLIENT_URI.into()),
        CertMatch::San("WORKSTATION.mil".into()),
    ] {
        assert!(matcher.matches(&names), "{matcher:?}");
    }
}

#[tokio::test]
async fn unmapped_certificate_maps_to_none() {
    let d = deployment(true);
    let names = CertNames::from_der(client_leaf(&d.ca).cert.der()).unwrap();
    for matcher in [
        CertMatch::CommonName("DOE.JANE.0987654321".into()),
        CertMatch::San("10.1.2.3".into()),
        CertMatch::San(CLIENT_CN.into()),
        // The certificate's own order, written first: not the same RFC 4514 name.
        CertMatch::Subject(
            format!("C=US,O=U.S. Government,OU=DoD,CN={CLIENT_CN}")
                .parse()
                .unwrap(),
        ),
    ] {
        assert!(!matcher.matches(&names), "{matcher:?}");
    }
}

#[tokio::test]
async fn client_without_certificate_is_let_through() {
    let d = deployment(true);
    let accepted = handshake(
        &d.tls(),
        client_config(&d.ca, None, &[&rustls::version::TLS13]),
    )
    .await
    .unwrap();
    assert!(accepted.names.is_none());
    assert!(accepted.identity.is_none());
}

#[tokio::test]
async fn certificate_from_another_ca_fails_the_handshake() {
    let d = deployment(true);
    let rogue_ca = ca("Rogue CA");
    let rogue = client_leaf(&rogue_ca);
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let err = handshake(&d.tls(), client_config(&d.ca, Some(&rogue), versions))
            .await
            .err()
            .expect("the server must refuse a certificate it cannot verify");
        assert!(err.contains("UnknownIssuer"), "{err}");
    }
}

#[tokio::test]
async fn without_client_ca_no_certificate_is_asked_for() {
    let d = deployment(false);
    let client = client_leaf(&d.ca);
    let accepted = handshake(
        &d.tls(),
        client_config(&d.ca, Some(&client), &[&rustls::version::TLS13]),
    )
    .await
    .unwrap();
    assert!(accepted.names.is_none());
    assert!(accepted.identity.is_none());
}

#[tokio::test]
async fn pkcs1_rsa_server_key_is_accepted() {
    let rsa = common::rsa_private_key();
    let pkcs8 = rsa.to_pkcs8_der().unwrap();
    let key =
        KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8.as_bytes().into(), &rcgen::PKCS_RSA_SHA256)
            .unwrap();
    let pkcs1_pem = rsa.to_pkcs1_pem(LineEnding::LF).unwrap().to_string();
    assert!(pkcs1_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let d = deployment(true);
    let server = server_leaf(&d.ca, key, pkcs1_pem);
    let cfg = TlsConfig {
        cert: write(&d.dir, "rsa.pem", &server.cert.pem()),
        key: write(&d.dir, "rsa-key.pem", &server.key_pem),
        ..d.cfg.clone()
    };
    let client = client_leaf(&d.ca);
    let accepted = handshake(
        &Arc::new(ServerTls::load(&cfg).unwrap()),
        client_config(&d.ca, Some(&client), &[&rustls::version::TLS12]),
    )
    .await
    .unwrap();
    assert!(accepted.names.is_some());
}

#[test]
fn unusable_files_fail_naming_the_file() {
    let d = deployment(true);
    let missing = d.dir.path().join("missing.pem");

    let err = server_config(&TlsConfig {
        cert: missing.clone(),
        ..d.cfg.clone()
    })
    .unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "cannot load TLS certificate chain from `{}`: ",
            missing.display()
        )),
        "{err}"
    );

    // A key file holding only a certificate.
    let err = server_config(&TlsConfig {
        key: d.cfg.cert.clone(),
        ..d.cfg.clone()
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            AuthError::Tls {
                what: "private key",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("no private key"), "{err}");

    // A key that belongs to another certificate.
    let other = KeyPair::generate().unwrap();
    let err = server_config(&TlsConfig {
        key: write(&d.dir, "other-key.pem", &other.serialize_pem()),
        ..d.cfg.clone()
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            AuthError::Tls {
                what: "private key",
                ..
            }
        ),
        "{err}"
    );

    // An empty CA bundle, and one that is not PEM.
    for contents in [
        "",
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    ] {
        let err = server_config(&TlsConfig {
            client_ca: Some(write(&d.dir, "ca.pem", contents)),
            ..d.cfg.clone()
        })
        .unwrap_err();
        assert!(
            matches!(
                err,
                AuthError::Tls {
                    what: "client CA bundle",
                    ..
                }
            ),
            "{err}"
        );
    }

    // Errors about key files never quote them.
    let garbage_key =
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0IGtleSBtYXRlcmlhbA==!\n-----END PRIVATE KEY-----\n";
    let err = server_config(&TlsConfig {
        key: write(&d.dir, "bad-key.pem", garbage_key),
        ..d.cfg.clone()
    })
    .unwrap_err();
    assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
    assert!(!format!("{err:?}").contains("c2VjcmV0"), "{err:?}");
}

#[test]
fn sec1_and_pkcs8_ec_keys_are_accepted() {
    let d = deployment(true);
    assert!(server_config(&d.cfg).is_ok(), "PKCS#8");
    // rcgen writes PKCS#8; rustls-pki-types reads SEC1 (`EC PRIVATE KEY`) too, through the
    // same call. Build the SEC1 form from the PKCS#8 one: its privateKey field is the SEC1
    // ECPrivateKey structure (without the curve parameters, which are optional).
    let pkcs8 = match &d.server.key_der {
        PrivateKeyDer::Pkcs8(der) => der.secret_pkcs8_der().to_vec(),
        other => panic!("expected PKCS#8, got {other:?}"),
    };
    let sec1 = sec1_from_pkcs8(&pkcs8);
    let pem = format!(
        "-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----\n",
        base64(&sec1)
    );
    let cfg = TlsConfig {
        key: write(&d.dir, "sec1.pem", &pem),
        ..d.cfg.clone()
    };
    server_config(&cfg).unwrap();
}

/// The privateKey OCTET STRING of a PKCS#8 PrivateKeyInfo (version, algorithm, privateKey).
fn sec1_from_pkcs8(der: &[u8]) -> Vec<u8> {
    use x509_parser::der_parser::asn1_rs::{Any, FromDer};
    let (_, info) = Any::from_der(der).unwrap();
    let (rest, _version) = Any::from_der(info.data).unwrap();
    let (rest, _algorithm) = Any::from_der(rest).unwrap();
    let (_, private_key) = Any::from_der(rest).unwrap();
    private_key.data.to_vec()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn peer_certificate_der_round_trips_through_cert_names() {
    let d = deployment(true);
    let der: CertificateDer<'_> = client_leaf(&d.ca).cert.der().clone();
    let names = CertNames::from_der(&der).unwrap();
    assert_eq!(names.common_name.as_deref(), Some(CLIENT_CN));
    // A server certificate has DNS and IP SANs; only the DNS one is a name Enclave matches.
    let names = CertNames::from_der(d.server.cert.der()).unwrap();
    assert_eq!(names.sans, ["localhost"]);
    assert_eq!(names.subject.to_string(), "CN=enclave.test");
}

// === issue 16, item 5: names compared structurally, bound to their CA, revocation ===

/// A client certificate for `dn` (RDNs in certificate order) with serial number `serial`,
/// signed by `ca`.
fn leaf_for(ca: &Ca, dn: &[(DnType, &str)], serial: u64) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut name = DistinguishedName::new();
    for (kind, value) in dn {
        name.push(kind.clone(), *value);
    }
    params.distinguished_name = name;
    params.serial_number = Some(SerialNumber::from(serial));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    Leaf {
        cert,
        key_pem: key.serialize_pem(),
        key_der: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    }
}

/// An intermediate CA under `ca`.
fn intermediate(ca: &Ca, name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    Ca { cert, key }
}

/// A CRL by `ca` revoking `serials`, as PEM; valid until 2099, or expired since 2021.
fn crl(ca: &Ca, serials: &[u64], expired: bool) -> String {
    crl_list(ca, serials, expired).pem().unwrap()
}

fn crl_list(ca: &Ca, serials: &[u64], expired: bool) -> rcgen::CertificateRevocationList {
    let params = CertificateRevocationListParams {
        this_update: date_time_ymd(2020, 1, 1),
        next_update: if expired {
            date_time_ymd(2021, 1, 1)
        } else {
            date_time_ymd(2099, 1, 1)
        },
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
    };
    params.signed_by(&ca.cert, &ca.key).unwrap()
}

fn mapping(matcher: CertMatch, issuer: Option<PathBuf>, principal: &str) -> CertMapping {
    CertMapping {
        matcher,
        issuer,
        principal: principal.into(),
    }
}

static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

fn tls13() -> &'static [&'static rustls::SupportedProtocolVersion] {
    TLS13_ONLY
}

/// The principal a handshake with `leaf` maps to; `Err` when the handshake fails.
async fn principal_of(
    tls: &Arc<ServerTls>,
    ca: &Ca,
    leaf: &Leaf,
) -> Result<Option<String>, String> {
    let accepted = handshake(tls, client_config(ca, Some(leaf), tls13())).await?;
    Ok(accepted.identity.and_then(|i| i.principal))
}

/// Regression for issue 16, item 5: the subject was compared as rendered text, so a common
/// name with an escaped comma could pose as a two-RDN name.
#[tokio::test]
async fn crafted_subjects_do_not_map_to_a_distinguished_name() {
    let d = deployment(true);
    let cfg = TlsConfig {
        client_map: vec![mapping(
            CertMatch::Subject("CN=alice,O=Admin".parse().unwrap()),
            None,
            "admin",
        )],
        ..d.cfg.clone()
    };
    let tls = Arc::new(ServerTls::load(&cfg).unwrap());
    let genuine = leaf_for(
        &d.ca,
        &[
            (DnType::OrganizationName, "Admin"),
            (DnType::CommonName, "alice"),
        ],
        10,
    );
    assert_eq!(
        principal_of(&tls, &d.ca, &genuine)
            .await
            .unwrap()
            .as_deref(),
        Some("admin")
    );
    for (what, dn) in [
        (
            "one RDN whose CN holds a comma",
            vec![(DnType::CommonName, "alice,O=Admin")],
        ),
        (
            "the same with a space",
            vec![(DnType::CommonName, "alice, O=Admin")],
        ),
        (
            "a second RDN",
            vec![
                (DnType::OrganizationName, "Admin"),
                (DnType::OrganizationalUnitName, "Contractors"),
                (DnType::CommonName, "alice"),
            ],
        ),
        (
            "another RDN order",
            vec![
                (DnType::CommonName, "alice"),
                (DnType::OrganizationName, "Admin"),
            ],
        ),
        (
            "an O that swallows the CN",
            vec![(DnType::OrganizationName, "Admin,CN=alice")],
        ),
    ] {
        let crafted = leaf_for(&d.ca, &dn, 11);
        let mapped = principal_of(&tls, &d.ca, &crafted).await.unwrap();
        assert_eq!(mapped, None, "{what}");
    }
}

/// Regression for issue 16, item 5: a common name matched whichever trusted CA issued it.
#[tokio::test]
async fn the_same_name_from_another_trusted_ca_does_not_map() {
    let d = deployment(true);
    let other = ca("Second Trusted CA");
    let bundle = write(
        &d.dir,
        "two-cas.pem",
        &(d.ca.cert.pem() + &other.cert.pem()),
    );
    let first_pem = write(&d.dir, "first-ca.pem", &d.ca.cert.pem());
    let other_pem = write(&d.dir, "other-ca.pem", &other.cert.pem());
    let cn = || CertMatch::CommonName(CLIENT_CN.into());
    let cfg = TlsConfig {
        client_ca: Some(bundle),
        client_map: vec![mapping(cn(), Some(first_pem.clone()), "jdoe")],
        ..d.cfg.clone()
    };
    let tls = Arc::new(ServerTls::load(&cfg).unwrap());
    let from_first = leaf_for(&d.ca, &[(DnType::CommonName, CLIENT_CN)], 20);
    let from_other = leaf_for(&other, &[(DnType::CommonName, CLIENT_CN)], 20);
    assert_eq!(
        principal_of(&tls, &d.ca, &from_first)
            .await
            .unwrap()
            .as_deref(),
        Some("jdoe")
    );
    // Both CAs are trusted, so the handshake succeeds; the mapping does not apply.
    assert_eq!(principal_of(&tls, &d.ca, &from_other).await.unwrap(), None);

    // A mapping for the other CA further down the list applies to its certificate.
    let cfg = TlsConfig {
        client_map: vec![
            mapping(cn(), Some(first_pem.clone()), "jdoe"),
            mapping(cn(), Some(other_pem), "jdoe-other"),
        ],
        ..cfg
    };
    let tls = Arc::new(ServerTls::load(&cfg).unwrap());
    assert_eq!(
        principal_of(&tls, &d.ca, &from_other)
            .await
            .unwrap()
            .as_deref(),
        Some("jdoe-other")
    );

    // With two CAs trusted, a mapping must say which one.
    let err = ServerTls::load(&TlsConfig {
        client_map: vec![mapping(cn(), None, "jdoe")],
        ..cfg.clone()
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("tls.client_map[0] (principal `jdoe`) must name the CA"),
        "{err}"
    );
    // An issuer must be one CA certificate.
    let leaf_pem = write(&d.dir, "leaf.pem", &from_first.cert.pem());
    let err = ServerTls::load(&TlsConfig {
        client_map: vec![mapping(cn(), Some(leaf_pem), "jdoe")],
        ..cfg.clone()
    })
    .unwrap_err();
    assert!(err.to_string().contains("is not a CA certificate"), "{err}");
    let both = write(&d.dir, "both.pem", &(d.ca.cert.pem() + &other.cert.pem()));
    let err = ServerTls::load(&TlsConfig {
        client_map: vec![mapping(cn(), Some(both), "jdoe")],
        ..cfg
    })
    .unwrap_err();
    assert!(err.to_string().contains("holds 2 certificates"), "{err}");
}

#[tokio::test]
async fn an_issuer_binds_certificates_below_it_through_the_chain_the_client_sends() {
    let d = deployment(true);
    let id_ca = intermediate(&d.ca, "DoD ID CA-59");
    let other_ca = intermediate(&d.ca, "DoD ID CA-62");
    let leaf = leaf_for(&id_ca, &[(DnType::CommonName, CLIENT_CN)], 30);
    let client = {
        let mut roots = RootCertStore::empty();
        roots.add(d.ca.cert.der().clone()).unwrap();
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(tls13())
                .unwrap()
                .with_root_certificates(roots)
                .with_client_auth_cert(
                    vec![leaf.cert.der().clone(), id_ca.cert.der().clone()],
                    leaf.key_der.clone_key(),
                )
                .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    };
    for (issuer, expected) in [
        (&id_ca, Some("jdoe")),
        (&d.ca, Some("jdoe")),
        (&other_ca, None),
    ] {
        let path = write(&d.dir, "issuer.pem", &issuer.cert.pem());
        let cfg = TlsConfig {
            client_map: vec![mapping(
                CertMatch::CommonName(CLIENT_CN.into()),
                Some(path),
                "jdoe",
            )],
            ..d.cfg.clone()
        };
        let tls = Arc::new(ServerTls::load(&cfg).unwrap());
        let accepted = handshake(&tls, Arc::clone(&client)).await.unwrap();
        assert_eq!(
            accepted.identity.and_then(|i| i.principal).as_deref(),
            expected
        );
    }
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_at_the_handshake() {
    let d = deployment(true);
    let crl_path = write(&d.dir, "ca.crl", &crl(&d.ca, &[41], false));
    let cfg = TlsConfig {
        crl_files: vec![crl_path],
        ..d.cfg.clone()
    };
    let tls = Arc::new(ServerTls::load(&cfg).unwrap());
    let revoked = leaf_for(&d.ca, &[(DnType::CommonName, CLIENT_CN)], 41);
    let good = leaf_for(&d.ca, &[(DnType::CommonName, CLIENT_CN)], 42);
    for versions in [tls13(), &[&rustls::version::TLS12][..]] {
        let err = handshake(&tls, client_config(&d.ca, Some(&revoked), versions))
            .await
            .err()
            .expect("a revoked certificate must fail the handshake");
        assert!(err.contains("Revoked"), "{err}");
        assert!(
            handshake(&tls, client_config(&d.ca, Some(&good), versions))
                .await
                .is_ok()
        );
    }
    // Clients without a certificate are still let through.
    assert!(
        handshake(&tls, client_config(&d.ca, None, tls13()))
            .await
            .is_ok()
    );

    // A DER CRL reads the same.
    let der = d.dir.path().join("ca.der.crl");
    std::fs::write(&der, crl_list(&d.ca, &[41], false).der()).unwrap();
    let cfg = TlsConfig {
        crl_files: vec![der],
        ..d.cfg.clone()
    };
    let tls = Arc::new(ServerTls::load(&cfg).unwrap());
    assert!(
        handshake(&tls, client_config(&d.ca, Some(&revoked), tls13()))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn an_expired_crl_refuses_the_certificates_it_covers() {
    let d = deployment(true);
    let cfg = TlsConfig {
        crl_files: vec![write(&d.dir, "old.crl", &crl(&d.ca, &[], true))],
        ..d.cfg.clone()
    };
    let tls = Arc::new(ServerTls::load(&cfg).unwrap());
    let leaf = leaf_for(&d.ca, &[(DnType::CommonName, CLIENT_CN)], 50);
    let err = handshake(&tls, client_config(&d.ca, Some(&leaf), tls13()))
        .await
        .err()
        .expect("an expired CRL must not vouch for a certificate");
    assert!(err.contains("revocation list expired"), "{err}");
}

#[tokio::test]
async fn a_crl_replaced_on_disk_takes_effect_for_new_connections_without_a_restart() {
    let d = deployment(true);
    let crl_path = write(&d.dir, "ca.crl", &crl(&d.ca, &[], false));
    let cfg = TlsConfig {
        crl_files: vec![crl_path.clone()],
        client_map: vec![mapping(
            CertMatch::CommonName(CLIENT_CN.into()),
            None,
            "jdoe",
        )],
        ..d.cfg.clone()
    };
    let tls = Arc::new(ServerTls::load(&cfg).unwrap());
    tokio::spawn(watch_crls(Arc::downgrade(&tls), Duration::from_millis(100)));
    let leaf = leaf_for(&d.ca, &[(DnType::CommonName, CLIENT_CN)], 60);
    // One client configuration throughout, so a resumed session would be offered.
    let client = client_config(&d.ca, Some(&leaf), tls13());
    let first = handshake(&tls, Arc::clone(&client)).await.unwrap();
    assert_eq!(
        first.identity.and_then(|i| i.principal).as_deref(),
        Some("jdoe")
    );
    let second = handshake(&tls, Arc::clone(&client)).await.unwrap();
    assert!(
        !second.resumed,
        "sessions must not be resumed with client certificates"
    );

    // The CA revokes it: the new file is picked up.
    replace(&crl_path, &crl(&d.ca, &[60], false));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match handshake(&tls, Arc::clone(&client)).await {
            Err(e) => {
                assert!(e.contains("Revoked"), "{e}");
                break;
            }
            Ok(_) => assert!(
                std::time::Instant::now() < deadline,
                "the new CRL was not loaded"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A broken CRL keeps the previous one in force, and is reported once.
    replace(
        &crl_path,
        "-----BEGIN X509 CRL-----\nbm90IGEgY3Js\n-----END X509 CRL-----\n",
    );
    let err = tls.reload_crls().unwrap_err();
    assert!(
        err.to_string().contains(&crl_path.display().to_string()),
        "{err}"
    );
    assert!(
        !tls.reload_crls().unwrap(),
        "the same bad file is not reported twice"
    );
    assert!(handshake(&tls, Arc::clone(&client)).await.is_err());
    let other = leaf_for(&d.ca, &[(DnType::CommonName, CLIENT_CN)], 61);
    assert!(
        handshake(&tls, client_config(&d.ca, Some(&other), tls13()))
            .await
            .is_ok()
    );

    // Un-revoking (a fresh CRL without it) also takes effect.
    replace(&crl_path, &crl(&d.ca, &[], false));
    assert!(tls.reload_crls().unwrap());
    assert!(handshake(&tls, client).await.is_ok());
}

/// Writes `contents` to `path` through a rename, as CRL distribution tools do, so that the
/// watcher never reads half a file and the modification time changes.
fn replace(path: &std::path::Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn crls_that_cannot_be_loaded_stop_the_start() {
    let d = deployment(true);
    for (name, contents) in [
        ("empty.crl", ""),
        ("garbage.crl", "not a crl"),
        ("cert.crl", d.ca.cert.pem().as_str()),
    ] {
        let err = ServerTls::load(&TlsConfig {
            crl_files: vec![write(&d.dir, name, contents)],
            ..d.cfg.clone()
        })
        .unwrap_err();
        assert!(
            matches!(err, AuthError::Tls { what: "CRL", .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(name), "{err}");
    }
    let err = ServerTls::load(&TlsConfig {
        crl_files: vec![d.dir.path().join("missing.crl")],
        ..d.cfg.clone()
    })
    .unwrap_err();
    assert!(err.to_string().contains("missing.crl"), "{err}");
    // CRLs without a client CA bundle make no sense.
    let err = ServerTls::load(&TlsConfig {
        client_ca: None,
        crl_files: vec![write(&d.dir, "ok.crl", &crl(&d.ca, &[], false))],
        ..d.cfg.clone()
    })
    .unwrap_err();
    assert!(err.to_string().contains("set `client_ca`"), "{err}");
    // The polling interval stays a few seconds.
    assert!(CRL_POLL <= Duration::from_secs(5));
}
