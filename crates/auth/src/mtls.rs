//! Mutual TLS: the listener's TLS settings, and client certificates (CAC/PIV cards, service
//! certificates) mapped to principals.
//!
//! [`server_config`] builds a rustls server configuration. With a client CA bundle, a client
//! certificate is optional, but one that is presented must chain to that bundle or the
//! handshake fails; clients without one still authenticate with a bearer key or token over
//! TLS. After the handshake, [`peer_names`] reads the verified certificate's names and
//! [`map_certificate`] finds the principal they are mapped to in the settings.
//!
//! ```no_run
//! # async fn serve(cfg: enclave_auth::TlsConfig, tcp: tokio::net::TcpStream) -> Result<(), Box<dyn std::error::Error>> {
//! use enclave_auth::mtls::{map_certificate, peer_names, server_config};
//!
//! let acceptor = tokio_rustls::TlsAcceptor::from(server_config(&cfg)?);
//! let tls = acceptor.accept(tcp).await?;
//! let principal = match peer_names(tls.get_ref().1)? {
//!     Some(names) => map_certificate(&cfg.client_map, &names), // None: certificate not mapped
//!     None => None, // no client certificate: fall back to the Authorization header
//! };
//! # Ok(()) }
//! ```

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::der_parser::asn1_rs::{self, Any, FromDer, Tag, TaggedExplicit};
use x509_parser::extensions::GeneralName;

use crate::{AuthError, CertMapping, CertMatch, TlsConfig};

/// The object identifier of a Microsoft user principal name (UPN) in a subjectAltName
/// otherName, which CAC/PIV authentication certificates carry (`1234567890@mil`).
const UPN_OID: &str = "1.3.6.1.4.1.311.20.2.3";

/// Builds the listener's TLS settings: the server certificate chain and key from PEM files
/// (PKCS#8, PKCS#1 or SEC1 key), TLS 1.3 and 1.2, ALPN `http/1.1`, the ring crypto provider.
///
/// With `client_ca`, clients may present a certificate, which must then chain to one of the
/// bundle's certificates (else the handshake fails); clients without one are let through, so
/// bearer keys and tokens keep working over TLS.
///
/// # Errors
///
/// [`AuthError::Tls`] naming the file and what is wrong with it: unreadable, no PEM items of the
/// right kind, a key that does not match the certificate, an empty or invalid CA bundle.
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<ServerConfig>, AuthError> {
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
    let builder = match &cfg.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca_path) => {
            let ca_error = |reason: String| AuthError::Tls {
                what: "client CA bundle",
                path: ca_path.clone(),
                reason,
            };
            let mut roots = RootCertStore::empty();
            for cert in read_certificates(ca_path, "client CA bundle")? {
                roots
                    .add(cert)
                    .map_err(|e| ca_error(format!("a certificate is not a usable CA: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| ca_error(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| AuthError::Tls {
            what: "private key",
            path: cfg.key.clone(),
            reason: format!("unusable with the certificate chain: {e}"),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The names in a client certificate that a [`CertMapping`] can match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertNames {
    /// The subject distinguished name as x509-parser prints it: attributes in certificate order,
    /// joined with `, ` (`C=US, O=U.S. Government, OU=DoD, CN=DOE.JOHN.1234567890`).
    pub subject: String,
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
            subject: subject.to_string(),
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

/// The principal a verified client certificate is mapped to: the first mapping whose
/// [`CertMatch::Subject`] equals the full subject DN or the common name, or whose
/// [`CertMatch::San`] equals one of the subjectAltNames. `None` when no mapping matches.
///
/// A subject DN matches as x509-parser prints it or as RFC 4514 text in either attribute order
/// (`CN=DOE.JOHN.1234567890,OU=DoD,O=U.S. Government,C=US`); attribute names in any case,
/// values exactly. A value that contains a comma only matches when written as x509-parser
/// prints it. Common names match exactly. SANs match ignoring ASCII case (emails, DNS names,
/// UPNs), except URIs, which match exactly.
///
/// Only call this with names from a certificate the TLS handshake verified.
///
/// ```
/// use enclave_auth::{CertMapping, CertMatch};
/// use enclave_auth::mtls::{CertNames, map_certificate};
///
/// let map = vec![CertMapping {
///     matcher: CertMatch::Subject("DOE.JOHN.1234567890".into()),
///     principal: "jdoe".into(),
/// }];
/// let names = CertNames {
///     subject: "C=US, O=U.S. Government, OU=DoD, CN=DOE.JOHN.1234567890".into(),
///     common_name: Some("DOE.JOHN.1234567890".into()),
///     sans: vec![],
/// };
/// assert_eq!(map_certificate(&map, &names), Some("jdoe"));
/// ```
pub fn map_certificate<'a>(map: &'a [CertMapping], names: &CertNames) -> Option<&'a str> {
    map.iter()
        .find(|m| match &m.matcher {
            CertMatch::Subject(wanted) => {
                names.common_name.as_deref() == Some(wanted.as_str())
                    || same_dn(wanted, &names.subject)
            }
            CertMatch::San(wanted) => names.sans.iter().any(|san| same_san(wanted, san)),
        })
        .map(|m| m.principal.as_str())
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

/// Whether a configured DN names the same subject as x509-parser's rendering of it.
fn same_dn(wanted: &str, printed: &str) -> bool {
    if wanted == printed {
        return true;
    }
    let wanted = split_rfc4514(wanted);
    let printed: Vec<&str> = printed.split(", ").collect();
    if wanted.len() != printed.len() || wanted.is_empty() {
        return false;
    }
    let same = |w: &String, p: &&str| same_attribute(w, p);
    wanted.iter().zip(printed.iter()).all(|(w, p)| same(w, p))
        || wanted
            .iter()
            .rev()
            .zip(printed.iter())
            .all(|(w, p)| same(w, p))
}

/// Splits RFC 4514 text at unescaped commas, removing the escapes and the spaces around each
/// attribute.
fn split_rfc4514(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ',' => parts.push(std::mem::take(&mut current).trim().to_owned()),
            _ => current.push(c),
        }
    }
    parts.push(current.trim().to_owned());
    parts
}

/// `TYPE=value` pairs: types compared ignoring ASCII case, values exactly (spaces around `=`
/// ignored).
fn same_attribute(wanted: &str, printed: &str) -> bool {
    match (wanted.split_once('='), printed.split_once('=')) {
        (Some((wt, wv)), Some((pt, pv))) => {
            wt.trim().eq_ignore_ascii_case(pt.trim()) && wv.trim() == pv.trim()
        }
        _ => false,
    }
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
            subject: "C=US, O=U.S. Government, OU=DoD, CN=DOE.JOHN.1234567890".into(),
            common_name: Some("DOE.JOHN.1234567890".into()),
            sans: vec![
                "john.doe@mail.mil".into(),
                "1234567890@mil".into(),
                "urn:uuid:AbC".into(),
            ],
        }
    }

    fn mapping(matcher: CertMatch, principal: &str) -> CertMapping {
        CertMapping {
            matcher,
            principal: principal.into(),
        }
    }

    fn subject(s: &str) -> CertMatch {
        CertMatch::Subject(s.into())
    }

    fn san(s: &str) -> CertMatch {
        CertMatch::San(s.into())
    }

    #[test]
    fn subject_matches_printed_or_rfc4514_dn_or_common_name() {
        for dn in [
            "C=US, O=U.S. Government, OU=DoD, CN=DOE.JOHN.1234567890",
            "CN=DOE.JOHN.1234567890,OU=DoD,O=U.S. Government,C=US",
            "cn=DOE.JOHN.1234567890, ou=DoD, o=U.S. Government, c=US",
            "C=US,O=U.S. Government,OU=DoD,CN=DOE.JOHN.1234567890",
            "DOE.JOHN.1234567890",
        ] {
            let map = [mapping(subject(dn), "jdoe")];
            assert_eq!(map_certificate(&map, &names()), Some("jdoe"), "{dn}");
        }
    }

    #[test]
    fn subject_does_not_match_partial_or_differently_cased_values() {
        for dn in [
            "CN=DOE.JOHN.1234567890",
            "CN=DOE.JOHN.1234567890,OU=DoD,O=U.S. Government",
            "CN=doe.john.1234567890,OU=DoD,O=U.S. Government,C=US",
            "doe.john.1234567890",
            "DOE.JOHN",
            "CN=DOE.JOHN.1234567890,O=U.S. Government,OU=DoD,C=US",
            "",
        ] {
            let map = [mapping(subject(dn), "jdoe")];
            assert_eq!(map_certificate(&map, &names()), None, "{dn:?}");
        }
    }

    #[test]
    fn san_matches_ignoring_case_except_uris() {
        let map = [mapping(san("JOHN.DOE@MAIL.MIL"), "a")];
        assert_eq!(map_certificate(&map, &names()), Some("a"));
        let map = [mapping(san("1234567890@MIL"), "b")];
        assert_eq!(map_certificate(&map, &names()), Some("b"));
        let map = [mapping(san("urn:uuid:AbC"), "c")];
        assert_eq!(map_certificate(&map, &names()), Some("c"));
        let map = [mapping(san("urn:uuid:abc"), "d")];
        assert_eq!(map_certificate(&map, &names()), None);
        let map = [mapping(san("DOE.JOHN.1234567890"), "e")];
        assert_eq!(map_certificate(&map, &names()), None);
    }

    #[test]
    fn first_matching_mapping_wins() {
        let map = [
            mapping(san("nobody@mail.mil"), "x"),
            mapping(san("john.doe@mail.mil"), "first"),
            mapping(subject("DOE.JOHN.1234567890"), "second"),
        ];
        assert_eq!(map_certificate(&map, &names()), Some("first"));
        assert_eq!(map_certificate(&[], &names()), None);
    }

    #[test]
    fn escaped_commas_are_part_of_the_value() {
        assert_eq!(
            split_rfc4514(r"CN=Doe\, John , O=Acme"),
            vec!["CN=Doe, John".to_string(), "O=Acme".to_string()]
        );
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
