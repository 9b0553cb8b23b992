//! Mutual TLS over real loopback handshakes, with a CA, server and client certificates
//! generated here.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test on broken machinery"
)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use enclave_auth::mtls::{CertNames, map_certificate, peer_names, server_config};
use enclave_auth::{AuthError, CertMapping, CertMatch, TlsConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
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
        client_map: vec![
            CertMapping {
                matcher: CertMatch::San("someone.else@mail.mil".into()),
                principal: "someone".into(),
            },
            CertMapping {
                matcher: CertMatch::Subject(format!(
                    "CN={CLIENT_CN},OU=DoD,O=U.S. Government,C=US"
                )),
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
    alpn: Option<Vec<u8>>,
    version: Option<rustls::ProtocolVersion>,
}

/// Runs one handshake over loopback and a ping/pong; the server side's view, or its error.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<ClientConfig>,
) -> Result<Accepted, String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        let accepted = Accepted {
            names: peer_names(conn).map_err(|e| e.to_string())?,
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            version: conn.protocol_version(),
        };
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping).await.map_err(|e| e.to_string())?;
        assert_eq!(&ping, b"ping");
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
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
        let accepted = handshake(
            server_config(&d.cfg).unwrap(),
            client_config(&d.ca, Some(&client), versions),
        )
        .await
        .unwrap();
        assert_eq!(accepted.alpn.as_deref(), Some(&b"http/1.1"[..]));
        assert_eq!(accepted.version, Some(versions[0].version));
        let names = accepted.names.expect("the client presented a certificate");
        assert_eq!(
            names.subject,
            format!("C=US, O=U.S. Government, OU=DoD, CN={CLIENT_CN}")
        );
        assert_eq!(names.common_name.as_deref(), Some(CLIENT_CN));
        assert_eq!(
            names.sans,
            [CLIENT_EMAIL, CLIENT_UPN, CLIENT_URI, "workstation.mil"]
        );
        assert_eq!(map_certificate(&d.cfg.client_map, &names), Some("jdoe"));
    }
}

#[tokio::test]
async fn each_kind_of_name_maps() {
    let d = deployment(true);
    let client = client_leaf(&d.ca);
    let names = CertNames::from_der(client.cert.der()).unwrap();
    for (matcher, principal) in [
        (CertMatch::Subject(CLIENT_CN.into()), "by-cn"),
        (
            CertMatch::Subject(format!("C=US, O=U.S. Government, OU=DoD, CN={CLIENT_CN}")),
            "by-printed-dn",
        ),
        (CertMatch::San("John.Doe@Mail.Mil".into()), "by-email"),
        (CertMatch::San(CLIENT_UPN.into()), "by-upn"),
        (CertMatch::San(CLIENT_URI.into()), "by-uri"),
        (CertMatch::San("WORKSTATION.mil".into()), "by-dns"),
    ] {
        let map = [CertMapping {
            matcher,
            principal: principal.into(),
        }];
        assert_eq!(map_certificate(&map, &names), Some(principal));
    }
}

#[tokio::test]
async fn unmapped_certificate_maps_to_none() {
    let d = deployment(true);
    let names = CertNames::from_der(client_leaf(&d.ca).cert.der()).unwrap();
    let map = [
        CertMapping {
            matcher: CertMatch::Subject("DOE.JANE.0987654321".into()),
            principal: "jane".into(),
        },
        CertMapping {
            matcher: CertMatch::San("10.1.2.3".into()),
            principal: "by-ip".into(),
        },
        CertMapping {
            matcher: CertMatch::San(CLIENT_CN.into()),
            principal: "cn-is-not-a-san".into(),
        },
    ];
    assert_eq!(map_certificate(&map, &names), None);
}

#[tokio::test]
async fn client_without_certificate_is_let_through() {
    let d = deployment(true);
    let accepted = handshake(
        server_config(&d.cfg).unwrap(),
        client_config(&d.ca, None, &[&rustls::version::TLS13]),
    )
    .await
    .unwrap();
    assert!(accepted.names.is_none());
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
        let err = handshake(
            server_config(&d.cfg).unwrap(),
            client_config(&d.ca, Some(&rogue), versions),
        )
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
        server_config(&d.cfg).unwrap(),
        client_config(&d.ca, Some(&client), &[&rustls::version::TLS13]),
    )
    .await
    .unwrap();
    assert!(accepted.names.is_none());
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
        server_config(&cfg).unwrap(),
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
    assert_eq!(names.subject, "CN=enclave.test");
}
