//! Mutual TLS: the listener's TLS settings, and client certificates (CAC/PIV cards, service
//! certificates) mapped to principals.
//!
//! [`ServerTls::load`] reads the settings once: the server certificate and key, the client CA
//! bundle, the certificate revocation lists and the client map. With a client CA bundle, a
//! client certificate is optional, but one that is presented must chain to that bundle, and
//! must not be revoked by a configured CRL (nor be covered by an expired one), or the handshake
//! fails; clients without one still authenticate with a bearer key or token over TLS. TLS
//! session resumption is off when client certificates are asked for, so every connection's
//! certificate is checked against the current CRLs.
//!
//! After the handshake, [`ServerTls::identify`] finds the principal a verified certificate is
//! mapped to. A mapping matches a name structurally (see [`crate::dn`]), and only for a
//! certificate that chains, by signature, to the mapping's `issuer` CA: the same name from
//! another trusted CA maps to nothing. [`watch_crls`] reloads the CRLs when their files change.
//!
//! ```no_run
//! # async fn serve(cfg: enclave_auth::TlsConfig, tcp: tokio::net::TcpStream) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use enclave_auth::mtls::{CRL_POLL, ServerTls, watch_crls};
//!
//! let tls = Arc::new(ServerTls::load(&cfg)?);
//! tokio::spawn(watch_crls(Arc::downgrade(&tls), CRL_POLL));
//! let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
//! let stream = acceptor.accept(tcp).await?;
//! match tls.identify(stream.get_ref().1)? {
//!     Some(client) => println!("{} is {:?}", client.subject, client.principal),
//!     None => {} // no client certificate: fall back to the Authorization header
//! }
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, SystemTime};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{
    DigitallySignedStruct, RootCertStore, ServerConfig, ServerConnection, SignatureScheme,
};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use x509_parser::der_parser::asn1_rs::{self, Any, FromDer, Tag, TaggedExplicit};
use x509_parser::extensions::GeneralName;

use crate::dn::DistinguishedName;
use crate::{AuthError, CertMapping, CertMatch, TlsConfig};

/// The object identifier of a Microsoft user principal name (UPN) in a subjectAltName
/// otherName, which CAC/PIV authentication certificates carry (`1234567890@mil`).
const UPN_OID: &str = "1.3.6.1.4.1.311.20.2.3";

/// How often [`watch_crls`] looks at the CRL files' modification times.
pub const CRL_POLL: Duration = Duration::from_secs(2);

/// The listener's TLS, loaded and checked: the rustls settings, and what identifies clients.
///
/// `Debug` shows file names only, never key material.
pub struct ServerTls {
    config: Arc<ServerConfig>,
    clients: Option<ClientAuth>,
}

/// Client certificates: the verifier the handshake uses and the client map.
struct ClientAuth {
    verifier: Arc<ReloadingVerifier>,
    map: Vec<BoundMapping>,
}

/// A mapping with its issuer ready to check.
struct BoundMapping {
    matcher: CertMatch,
    /// The CA the certificate must chain to, as a verifier trusting only it; `None` when the
    /// bundle holds a single CA, to which the handshake already verified the chain.
    issuer: Option<(PathBuf, Arc<dyn ClientCertVerifier>)>,
    principal: String,
}

/// A verified client certificate, identified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate's subject as RFC 4514 text (control characters escaped), for messages.
    pub subject: String,
    /// The principal the first matching mapping names, if any.
    pub principal: Option<String>,
}

impl ServerTls {
    /// Reads and checks every file the settings name: the server certificate chain and key
    /// (PKCS#8, PKCS#1 or SEC1), the client CA bundle, the CRL files (PEM or DER) and each
    /// mapping's issuer certificate. TLS 1.3 and 1.2, ALPN `http/1.1`, the ring crypto
    /// provider.
    ///
    /// With several CAs in the client CA bundle, every mapping must name its `issuer` (else a
    /// certificate from any of them with the mapped name would do). CRLs must cover every
    /// certificate of a client's chain below the trust anchor; a certificate they do not cover,
    /// or a CRL past its `nextUpdate`, fails the handshake (fail closed).
    ///
    /// # Errors
    ///
    /// [`AuthError::Tls`] naming the file and what is wrong with it: unreadable, no PEM items
    /// of the right kind, a key that does not match the certificate, an empty or invalid CA
    /// bundle, an unparsable CRL, an issuer that is not one CA certificate, a mapping without
    /// issuer beside several CAs.
    pub fn load(cfg: &TlsConfig) -> Result<ServerTls, AuthError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = read_certificates(&cfg.cert, "certificate chain")?;
        let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| AuthError::Tls {
            what: "private key",
            path: cfg.key.clone(),
            reason: pem_reason(&e, "no private key (PKCS#8, PKCS#1 or SEC1 PEM) found"),
        })?;
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| AuthError::Tls {
                what: "certificate chain",
                path: cfg.cert.clone(),
                reason: format!("the crypto provider does not support TLS 1.2 and 1.3: {e}"),
            })?;
        let clients = match &cfg.client_ca {
            None => {
                if let Some(crl) = cfg.crl_files.first() {
                    return Err(AuthError::Tls {
                        what: "CRL",
                        path: crl.clone(),
                        reason: "CRLs apply to client certificates: set `client_ca` too".into(),
                    });
                }
                None
            }
            Some(ca_path) => Some(ClientAuth::load(cfg, ca_path, &provider)?),
        };
        let builder = match &clients {
            None => builder.with_no_client_auth(),
            Some(c) => builder.with_client_cert_verifier(Arc::clone(&c.verifier) as _),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| AuthError::Tls {
                what: "private key",
                path: cfg.key.clone(),
                reason: format!("unusable with the certificate chain: {e}"),
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        if clients.is_some() {
            // SECURITY: a resumed session keeps the certificate of the session it resumes,
            // unchecked against CRLs loaded since; with client certificates every connection
            // makes a full handshake.
            config.session_storage = Arc::new(NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
        Ok(ServerTls {
            config: Arc::new(config),
            clients,
        })
    }

    /// The rustls settings for the acceptor. Shared: CRL reloads take effect in it.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }

    /// The client certificate of a TLS connection accepted with [`ServerTls::server_config`],
    /// identified: its subject and the principal it is mapped to. `None` when the client
    /// presented none (or client certificates are not asked for).
    ///
    /// A mapping matches when its name matches ([`CertMatch::matches`]) and the certificate
    /// chains, by signature, to the mapping's issuer (through the intermediates the client
    /// sent); the first such mapping wins.
    ///
    /// # Errors
    ///
    /// [`AuthError::Certificate`] when the verified certificate cannot be parsed.
    pub fn identify(&self, conn: &ServerConnection) -> Result<Option<ClientIdentity>, AuthError> {
        let Some(clients) = &self.clients else {
            return Ok(None);
        };
        let Some((end_entity, intermediates)) = conn
            .peer_certificates()
            .and_then(<[CertificateDer<'_>]>::split_first)
        else {
            return Ok(None);
        };
        let names = CertNames::from_der(end_entity)?;
        let now = UnixTime::now();
        let principal = clients
            .map
            .iter()
            .find(|m| {
                m.matcher.matches(&names)
                    && m.issuer.as_ref().is_none_or(|(_, issuer)| {
                        // SECURITY: bind the name to its CA by signature, not by comparing
                        // issuer names, which another trusted CA could copy.
                        issuer
                            .verify_client_cert(end_entity, intermediates, now)
                            .is_ok()
                    })
            })
            .map(|m| m.principal.clone());
        Ok(Some(ClientIdentity {
            subject: names.subject.to_string(),
            principal,
        }))
    }

    /// Reads the CRL files again if any changed (modification time or size) since they were
    /// loaded, and puts them in force for new handshakes. `Ok(true)` when new CRLs are in force.
    ///
    /// # Errors
    ///
    /// [`AuthError::Tls`] naming the file when a changed file cannot be read or parsed: the
    /// previous CRLs stay in force, and the same bad version is not reported twice.
    pub fn reload_crls(&self) -> Result<bool, AuthError> {
        match &self.clients {
            Some(c) => c.verifier.reload_if_changed(),
            None => Ok(false),
        }
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("ServerTls");
        if let Some(c) = &self.clients {
            d.field("crl_files", &c.verifier.crl_files).field(
                "client_map",
                &c.map
                    .iter()
                    .map(|m| (&m.matcher, m.issuer.as_ref().map(|(p, _)| p), &m.principal))
                    .collect::<Vec<_>>(),
            );
        }
        d.finish_non_exhaustive()
    }
}

/// Builds the listener's TLS settings: [`ServerTls::load`] without the client map. CRLs are
/// read once; use [`ServerTls`] and [`watch_crls`] to reload them.
///
/// # Errors
///
/// As [`ServerTls::load`].
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<ServerConfig>, AuthError> {
    ServerTls::load(cfg).map(|tls| tls.server_config())
}

/// Reloads the CRLs of `tls` when their files change, checking every `every`, until `tls` is
/// dropped. A CRL file that fails to load after a change is logged as an error and the previous
/// CRLs stay in force. Reading runs on Tokio's blocking threads (CRLs can be megabytes).
pub async fn watch_crls(tls: Weak<ServerTls>, every: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(strong) = tls.upgrade() else {
            return;
        };
        let outcome = tokio::task::spawn_blocking(move || strong.reload_crls()).await;
        match outcome {
            Ok(Ok(true)) => tracing::info!("certificate revocation lists reloaded"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::error!(
                error = %e,
                "a changed CRL file cannot be used; the previous CRLs stay in force"
            ),
            Err(e) => tracing::error!(error = %e, "reloading the CRLs failed"),
        }
    }
}

// === impl ClientAuth ===

impl ClientAuth {
    fn load(
        cfg: &TlsConfig,
        ca_path: &Path,
        provider: &Arc<CryptoProvider>,
    ) -> Result<ClientAuth, AuthError> {
        let ca_error = |reason: String| AuthError::Tls {
            what: "client CA bundle",
            path: ca_path.to_path_buf(),
            reason,
        };
        let cas = read_certificates(ca_path, "client CA bundle")?;
        let ca_count = cas.len();
        let mut roots = RootCertStore::empty();
        for cert in cas {
            roots
                .add(cert)
                .map_err(|e| ca_error(format!("a certificate is not a usable CA: {e}")))?;
        }
        let verifier = ReloadingVerifier::load(Arc::new(roots), Arc::clone(provider), cfg)?;
        let mut map = Vec::with_capacity(cfg.client_map.len());
        for (i, mapping) in cfg.client_map.iter().enumerate() {
            map.push(bind(i, mapping, ca_path, ca_count, provider)?);
        }
        Ok(ClientAuth {
            verifier: Arc::new(verifier),
            map,
        })
    }
}

/// Binds mapping `i` to its issuer.
fn bind(
    i: usize,
    mapping: &CertMapping,
    ca_path: &Path,
    ca_count: usize,
    provider: &Arc<CryptoProvider>,
) -> Result<BoundMapping, AuthError> {
    let issuer = match &mapping.issuer {
        None if ca_count > 1 => {
            return Err(AuthError::Tls {
                what: "client map",
                path: ca_path.to_path_buf(),
                reason: format!(
                    "the bundle holds {ca_count} CA certificates, so tls.client_map[{i}] (principal `{}`) must name the CA that issues its certificates: set `issuer` to that CA's certificate file",
                    mapping.principal.escape_default()
                ),
            });
        }
        None => None,
        Some(path) => {
            let issuer_error = |reason: String| AuthError::Tls {
                what: "issuer certificate",
                path: path.clone(),
                reason,
            };
            let certs = read_certificates(path, "issuer certificate")?;
            let [cert] = certs.as_slice() else {
                return Err(issuer_error(format!(
                    "holds {} certificates: name exactly one CA certificate per mapping",
                    certs.len()
                )));
            };
            let (_, parsed) = x509_parser::parse_x509_certificate(cert)
                .map_err(|e| issuer_error(format!("not a valid certificate: {e}")))?;
            if !parsed.is_ca() {
                return Err(issuer_error(
                    "is not a CA certificate (basicConstraints CA:FALSE or absent)".into(),
                ));
            }
            let mut roots = RootCertStore::empty();
            roots
                .add(cert.clone())
                .map_err(|e| issuer_error(format!("not usable as a CA: {e}")))?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
                    .build()
                    .map_err(|e| issuer_error(e.to_string()))?;
            Some((path.clone(), verifier))
        }
    };
    Ok(BoundMapping {
        matcher: mapping.matcher.clone(),
        issuer,
        principal: mapping.principal.clone(),
    })
}

// === impl ReloadingVerifier ===

/// A file's modification time and size; `None` when it cannot be read.
type FileStamp = Option<(Option<SystemTime>, u64)>;

/// The client-certificate verifier of the handshake: rustls's WebPKI verifier over the client
/// CA bundle and the current CRLs, replaced whole when the CRL files change.
struct ReloadingVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    /// The CA subjects offered to clients: those of the bundle, which never changes.
    hints: Vec<rustls::DistinguishedName>,
    crl_files: Vec<PathBuf>,
    current: RwLock<Arc<dyn ClientCertVerifier>>,
    /// The stamps of the CRL files in force, and of the last set that failed to load.
    stamps: Mutex<(Vec<FileStamp>, Option<Vec<FileStamp>>)>,
}

impl ReloadingVerifier {
    fn load(
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
        cfg: &TlsConfig,
    ) -> Result<ReloadingVerifier, AuthError> {
        let stamps = stamp_all(&cfg.crl_files);
        let crls = read_crls(&cfg.crl_files)?;
        let first = build_verifier(&roots, &provider, crls, &cfg.crl_files)?;
        Ok(ReloadingVerifier {
            hints: first.root_hint_subjects().to_vec(),
            roots,
            provider,
            crl_files: cfg.crl_files.clone(),
            current: RwLock::new(first),
            stamps: Mutex::new((stamps, None)),
        })
    }

    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn reload_if_changed(&self) -> Result<bool, AuthError> {
        if self.crl_files.is_empty() {
            return Ok(false);
        }
        let stamps = stamp_all(&self.crl_files);
        {
            let seen = self.stamps.lock().unwrap_or_else(PoisonError::into_inner);
            if seen.0 == stamps || seen.1.as_ref() == Some(&stamps) {
                return Ok(false);
            }
        }
        let built = read_crls(&self.crl_files)
            .and_then(|crls| build_verifier(&self.roots, &self.provider, crls, &self.crl_files));
        let mut seen = self.stamps.lock().unwrap_or_else(PoisonError::into_inner);
        match built {
            Ok(verifier) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = verifier;
                *seen = (stamps, None);
                Ok(true)
            }
            Err(e) => {
                seen.1 = Some(stamps);
                Err(e)
            }
        }
    }
}

impl std::fmt::Debug for ReloadingVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingVerifier")
            .field("crl_files", &self.crl_files)
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for ReloadingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.current().offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.current().client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

/// The WebPKI verifier over `roots` with `crls`: optional client certificates; with CRLs, the
/// whole chain is checked, unknown status and expired CRLs fail.
fn build_verifier(
    roots: &Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    files: &[PathBuf],
) -> Result<Arc<dyn ClientCertVerifier>, AuthError> {
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(roots), Arc::clone(provider))
            .allow_unauthenticated();
    if !crls.is_empty() {
        // SECURITY: revocation status that cannot be determined, or a CRL past its nextUpdate,
        // refuses the certificate rather than accepting it unchecked.
        builder = builder.with_crls(crls).enforce_revocation_expiration();
    }
    builder.build().map_err(|e| AuthError::Tls {
        what: "CRL",
        path: files.first().cloned().unwrap_or_default(),
        reason: format!("the CRLs or the CA bundle cannot be used: {e}"),
    })
}

/// Reads every CRL file (PEM `X509 CRL` items, or one DER CRL), checking that each parses and
/// logging an error for one past its `nextUpdate`.
fn read_crls(files: &[PathBuf]) -> Result<Vec<CertificateRevocationListDer<'static>>, AuthError> {
    let mut out = Vec::new();
    for path in files {
        let crl_error = |reason: String| AuthError::Tls {
            what: "CRL",
            path: path.clone(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| crl_error(e.to_string()))?;
        let crls: Vec<CertificateRevocationListDer<'static>> = if bytes.starts_with(b"-----BEGIN") {
            CertificateRevocationListDer::pem_slice_iter(&bytes)
                .collect::<Result<_, _>>()
                .map_err(|e| crl_error(pem_reason(&e, "no CRL (PEM `X509 CRL`) found")))?
        } else {
            vec![CertificateRevocationListDer::from(bytes)]
        };
        if crls.is_empty() {
            return Err(crl_error("no CRL (PEM `X509 CRL`, or DER) found".into()));
        }
        for crl in &crls {
            let (_, parsed) = x509_parser::parse_x509_crl(crl)
                .map_err(|e| crl_error(format!("not a valid CRL: {e}")))?;
            if let Some(next) = parsed.next_update()
                && next < x509_parser::time::ASN1Time::now()
            {
                tracing::error!(
                    crl = %path.display(),
                    issuer = %DistinguishedName::from_x509(parsed.issuer()),
                    next_update = %next,
                    "the CRL has expired: certificates of its CA fail the handshake until a fresh CRL is installed"
                );
            }
        }
        out.extend(crls);
    }
    Ok(out)
}

fn stamp_all(files: &[PathBuf]) -> Vec<FileStamp> {
    files
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().ok(), m.len()))
        })
        .collect()
}

/// The names in a client certificate that a [`CertMapping`] can match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertNames {
    /// The subject distinguished name.
    pub subject: DistinguishedName,
    /// The subject's common name, when it has exactly one.
    pub common_name: Option<String>,
    /// The subjectAltNames Enclave can match: email (rfc822Name), DNS name, URI and UPN
    /// (otherName `1.3.6.1.4.1.311.20.2.3`), as text, in certificate order.
    pub sans: Vec<String>,
}

impl CertNames {
    /// Reads the names from a DER certificate.
    ///
    /// # Errors
    ///
    /// [`AuthError::Certificate`] when the certificate or its subjectAltName extension cannot be
    /// parsed.
    pub fn from_der(der: &[u8]) -> Result<CertNames, AuthError> {
        let cert_error = |e: &dyn std::fmt::Display| AuthError::Certificate {
            reason: e.to_string(),
        };
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| cert_error(&e))?;
        let subject = cert.subject();
        let mut common_names = subject.iter_common_name();
        let common_name = match (common_names.next(), common_names.next()) {
            // SECURITY: with several CNs it is unclear which one names the holder; match none.
            (Some(cn), None) => cn.as_str().ok().map(str::to_owned),
            _ => None,
        };
        let sans = match cert.subject_alternative_name() {
            Ok(Some(ext)) => ext
                .value
                .general_names
                .iter()
                .filter_map(san_text)
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => return Err(cert_error(&e)),
        };
        Ok(CertNames {
            subject: DistinguishedName::from_x509(subject),
            common_name,
            sans,
        })
    }
}

/// The names of the client certificate on a TLS connection; `None` when the client presented
/// none.
///
/// With a [`server_config`] that has a client CA, a certificate present here has been verified
/// against that CA during the handshake. On a tokio-rustls stream, pass `stream.get_ref().1`.
///
/// # Errors
///
/// [`AuthError::Certificate`] when the certificate cannot be parsed.
pub fn peer_names(conn: &ServerConnection) -> Result<Option<CertNames>, AuthError> {
    conn.peer_certificates()
        .and_then(<[CertificateDer<'_>]>::first)
        .map(|end_entity| CertNames::from_der(end_entity))
        .transpose()
}

impl CertMatch {
    /// Whether a certificate's names match, by name alone (the issuer is
    /// [`ServerTls::identify`]'s to check).
    ///
    /// A subject DN matches structurally and exactly (see [`crate::dn`]); a common name
    /// matches the certificate's single CN exactly; a SAN matches one of the subjectAltNames
    /// ignoring ASCII case (emails, DNS names, UPNs), except URIs, which match exactly.
    ///
    /// ```
    /// use enclave_auth::CertMatch;
    /// use enclave_auth::mtls::CertNames;
    ///
    /// let names = CertNames {
    ///     subject: "CN=DOE.JOHN.1234567890,OU=DoD,O=U.S. Government,C=US".parse().unwrap(),
    ///     common_name: Some("DOE.JOHN.1234567890".into()),
    ///     sans: vec!["1234567890@mil".into()],
    /// };
    /// assert!(CertMatch::Subject("CN=DOE.JOHN.1234567890,OU=DoD,O=U.S. Government,C=US".parse().unwrap()).matches(&names));
    /// assert!(!CertMatch::Subject("C=US,O=U.S. Government,OU=DoD,CN=DOE.JOHN.1234567890".parse().unwrap()).matches(&names));
    /// assert!(CertMatch::CommonName("DOE.JOHN.1234567890".into()).matches(&names));
    /// assert!(CertMatch::San("1234567890@MIL".into()).matches(&names));
    /// ```
    pub fn matches(&self, names: &CertNames) -> bool {
        match self {
            CertMatch::CommonName(wanted) => names.common_name.as_deref() == Some(wanted.as_str()),
            CertMatch::San(wanted) => names.sans.iter().any(|san| same_san(wanted, san)),
            CertMatch::Subject(wanted) => *wanted == names.subject,
        }
    }
}

// === helpers ===

/// Reads every certificate from a PEM file; at least one.
fn read_certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, AuthError> {
    let tls_error = |e: &pem::Error| AuthError::Tls {
        what,
        path: path.to_path_buf(),
        reason: pem_reason(e, "no certificate (PEM `CERTIFICATE`) found"),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(&e))?;
    if certs.is_empty() {
        return Err(tls_error(&pem::Error::NoItemsFound));
    }
    Ok(certs)
}

/// What is wrong with a PEM file, without quoting it (it may hold a private key).
fn pem_reason(err: &pem::Error, none_found: &str) -> String {
    match err {
        pem::Error::Io(e) => e.to_string(),
        pem::Error::NoItemsFound => none_found.to_owned(),
        _ => "not valid PEM".to_owned(),
    }
}

/// A subjectAltName as text, for the kinds a mapping can name.
fn san_text(name: &GeneralName<'_>) -> Option<String> {
    match name {
        GeneralName::RFC822Name(s) | GeneralName::DNSName(s) | GeneralName::URI(s) => {
            Some((*s).to_owned())
        }
        GeneralName::OtherName(oid, value) if oid.to_id_string() == UPN_OID => upn(value),
        _ => None,
    }
}

/// The UTF-8 string inside an otherName value (`[0] EXPLICIT UTF8String`).
fn upn(value: &[u8]) -> Option<String> {
    let (_, tagged) = TaggedExplicit::<Any<'_>, asn1_rs::Error, 0>::from_der(value).ok()?;
    let inner = tagged.into_inner();
    if inner.tag() != Tag::Utf8String {
        return None;
    }
    std::str::from_utf8(inner.data).ok().map(str::to_owned)
}

/// Whether a configured SAN names this certificate SAN.
fn same_san(wanted: &str, san: &str) -> bool {
    if san.contains(':') {
        // A URI (`urn:uuid:...`, `https://...`): paths are case-sensitive.
        wanted == san
    } else {
        wanted.eq_ignore_ascii_case(san)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> CertNames {
        CertNames {
            subject: "CN=DOE.JOHN.1234567890,OU=DoD,O=U.S. Government,C=US"
                .parse()
                .unwrap(),
            common_name: Some("DOE.JOHN.1234567890".into()),
            sans: vec![
                "john.doe@mail.mil".into(),
                "1234567890@mil".into(),
                "urn:uuid:AbC".into(),
            ],
        }
    }

    fn subject(s: &str) -> CertMatch {
        CertMatch::Subject(s.parse().unwrap())
    }

    fn san(s: &str) -> CertMatch {
        CertMatch::San(s.into())
    }

    #[test]
    fn subject_matches_the_same_rdns_in_rfc4514_order_only() {
        for dn in [
            "CN=DOE.JOHN.1234567890,OU=DoD,O=U.S. Government,C=US",
            "cn=DOE.JOHN.1234567890, ou=DoD, o=U.S. Government, c=US",
        ] {
            assert!(subject(dn).matches(&names()), "{dn}");
        }
        for dn in [
            "C=US,O=U.S. Government,OU=DoD,CN=DOE.JOHN.1234567890",
            "CN=DOE.JOHN.1234567890",
            "CN=DOE.JOHN.1234567890,OU=DoD,O=U.S. Government",
            "CN=doe.john.1234567890,OU=DoD,O=U.S. Government,C=US",
            "CN=DOE.JOHN.1234567890,O=U.S. Government,OU=DoD,C=US",
            "CN=DOE.JOHN.1234567890+OU=DoD,O=U.S. Government,C=US",
        ] {
            assert!(!subject(dn).matches(&names()), "{dn}");
        }
    }

    #[test]
    fn common_name_matches_exactly() {
        assert!(CertMatch::CommonName("DOE.JOHN.1234567890".into()).matches(&names()));
        assert!(!CertMatch::CommonName("doe.john.1234567890".into()).matches(&names()));
        assert!(!CertMatch::CommonName("DOE.JOHN".into()).matches(&names()));
        let several = CertNames {
            common_name: None,
            ..names()
        };
        assert!(!CertMatch::CommonName("DOE.JOHN.1234567890".into()).matches(&several));
    }

    #[test]
    fn san_matches_ignoring_case_except_uris() {
        assert!(san("JOHN.DOE@MAIL.MIL").matches(&names()));
        assert!(san("1234567890@MIL").matches(&names()));
        assert!(san("urn:uuid:AbC").matches(&names()));
        assert!(!san("urn:uuid:abc").matches(&names()));
        assert!(!san("DOE.JOHN.1234567890").matches(&names()));
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(matches!(
            CertNames::from_der(b"not a certificate"),
            Err(AuthError::Certificate { .. })
        ));
        assert!(CertNames::from_der(&[]).is_err());
    }
}
