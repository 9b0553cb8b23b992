//! JSON Web Key Sets: which keys may sign tokens, read from a file or fetched from the identity
//! provider.

use std::net::IpAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::DecodingKey;
use serde_json::Value;

use super::b64url_decode;

/// Largest JWKS document accepted, in bytes. Real ones hold a handful of keys in a few KiB.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// How long one fetch (connect, request, whole body) may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Smallest RSA modulus accepted, in bits.
const MIN_RSA_BITS: usize = 2048;

/// The signature algorithms Enclave accepts. Each key is usable with exactly one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alg {
    /// ECDSA over P-256 with SHA-256.
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
}

impl Alg {
    /// The JOSE name (`RS256`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::Rs256 => "RS256",
        }
    }

    /// The JOSE name parsed; `None` for every other algorithm, `none` and HS* included.
    pub(crate) fn from_name(name: &str) -> Option<Alg> {
        match name {
            "ES256" => Some(Alg::Es256),
            "RS256" => Some(Alg::Rs256),
            _ => None,
        }
    }

    /// The same algorithm for the verification library.
    pub(crate) fn jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            Alg::Es256 => jsonwebtoken::Algorithm::ES256,
            Alg::Rs256 => jsonwebtoken::Algorithm::RS256,
        }
    }
}

/// A verification key from the set.
pub(crate) struct Key {
    /// The `kid` it is published under, if any.
    pub(crate) kid: Option<String>,
    /// The one algorithm the key verifies.
    pub(crate) alg: Alg,
    /// The key, ready for verification.
    pub(crate) decoding: DecodingKey,
}

/// The usable keys of a JWKS document. Never empty.
pub(crate) struct KeySet {
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (k.kid.as_deref(), k.alg.name())))
            .finish()
    }
}

/// What a lookup by key id found.
pub(crate) enum Lookup<'a> {
    /// The key to verify with.
    Found(&'a Key),
    /// Keys carry that id, but none for the token's algorithm.
    WrongAlgorithm,
    /// The token has no `kid` and the set holds several keys.
    Ambiguous,
    /// No key carries that id.
    Unknown,
}

impl KeySet {
    /// Reads a JWKS document, keeping the RS256 and ES256 signing keys.
    ///
    /// Keys of other types (symmetric `oct` keys above all, which would let anyone who knows
    /// the secret mint tokens), other curves, encryption keys and keys whose `alg` names another
    /// algorithm are skipped.
    ///
    /// # Errors
    ///
    /// A sentence for the operator when the document is not a JWKS or holds no usable key.
    pub(crate) fn parse(json: &[u8]) -> Result<KeySet, String> {
        let doc: Value = serde_json::from_slice(json)
            .map_err(|e| format!("not valid JSON ({e}): expected a JWKS document"))?;
        let Some(entries) = doc.get("keys").and_then(Value::as_array) else {
            return Err("not a JWKS document: expected an object with a `keys` array".into());
        };
        let keys: Vec<Key> = entries.iter().filter_map(parse_key).collect();
        if keys.is_empty() {
            return Err(format!(
                "no usable signing key among {} keys: publish an RS256 (RSA, at least {MIN_RSA_BITS} bits) or ES256 (EC P-256) key",
                entries.len()
            ));
        }
        Ok(KeySet { keys })
    }

    /// The key to verify a token with, given its `kid` (if any) and algorithm.
    pub(crate) fn find(&self, kid: Option<&str>, alg: Alg) -> Lookup<'_> {
        let Some(kid) = kid else {
            // SECURITY: without a kid, only a single-key set is unambiguous. Trying every key
            // would let one token be checked against keys meant for other purposes.
            return match self.keys.as_slice() {
                [only] if only.alg == alg => Lookup::Found(only),
                [_] => Lookup::WrongAlgorithm,
                _ => Lookup::Ambiguous,
            };
        };
        let mut named = self
            .keys
            .iter()
            .filter(|k| k.kid.as_deref() == Some(kid))
            .peekable();
        if named.peek().is_none() {
            return Lookup::Unknown;
        }
        named
            .find(|k| k.alg == alg)
            .map_or(Lookup::WrongAlgorithm, Lookup::Found)
    }

    /// Whether any key carries this id.
    pub(crate) fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// How many usable keys the set holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

/// One JWK, if it is a usable signing key.
fn parse_key(jwk: &Value) -> Option<Key> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    if field("use").is_some_and(|u| u != "sig") {
        return None;
    }
    if let Some(ops) = jwk.get("key_ops")
        && !ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")))
    {
        return None;
    }
    let kid = match jwk.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return None,
    };
    let (alg, decoding) = match field("kty")? {
        "RSA" => {
            let n = field("n")?;
            let e = field("e")?;
            let modulus = b64url_decode(n)?;
            let significant = modulus.iter().skip_while(|b| **b == 0).count();
            if significant * 8 < MIN_RSA_BITS {
                return None;
            }
            (Alg::Rs256, DecodingKey::from_rsa_components(n, e).ok()?)
        }
        "EC" => {
            if field("crv")? != "P-256" {
                return None;
            }
            let x = field("x")?;
            let y = field("y")?;
            if b64url_decode(x)?.len() != 32 || b64url_decode(y)?.len() != 32 {
                return None;
            }
            (Alg::Es256, DecodingKey::from_ec_components(x, y).ok()?)
        }
        _ => return None,
    };
    if field("alg").is_some_and(|named| named != alg.name()) {
        return None;
    }
    Some(Key { kid, alg, decoding })
}

// === fetching ===

/// Fetches a JWKS document over HTTP(S).
pub(crate) struct Fetcher {
    uri: hyper::Uri,
    client: HttpClient,
}

enum HttpClient {
    Plain(Client<HttpConnector, Empty<Bytes>>),
    Tls(Client<HttpsConnector<HttpConnector>, Empty<Bytes>>),
}

impl Fetcher {
    /// A fetcher for `url`: `https://`, or `http://` to a loopback address.
    ///
    /// # Errors
    ///
    /// A sentence for the operator when the URL is malformed, uses plain HTTP to another host,
    /// or the system's trusted roots cannot be loaded.
    pub(crate) fn new(url: &str) -> Result<Fetcher, String> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|_| "not a valid URL: expected `https://host/path`".to_string())?;
        let Some(host) = uri.host() else {
            return Err("the URL has no host: expected `https://host/path`".into());
        };
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(FETCH_TIMEOUT));
        let client = match uri.scheme_str() {
            Some("https") => {
                connector.enforce_http(false);
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
                    .map_err(|e| format!("cannot load the system's trusted roots: {e}"))?
                    .https_only()
                    .enable_http1()
                    .wrap_connector(connector);
                HttpClient::Tls(build_client(https))
            }
            // SECURITY: keys fetched over plain HTTP could be swapped by anyone on the path, who
            // could then mint tokens. Only a loopback IdP (tests, a local sidecar) may use it.
            Some("http") if is_loopback(host) => HttpClient::Plain(build_client(connector)),
            Some("http") => {
                return Err(
                    "plain `http` is allowed only for loopback addresses: use `https`".into(),
                );
            }
            _ => return Err("unsupported URL scheme: use `https`".into()),
        };
        Ok(Fetcher { uri, client })
    }

    /// Fetches and parses the document.
    ///
    /// # Errors
    ///
    /// A sentence for the operator: timeout, connection failure, non-200 status, oversized or
    /// invalid document.
    pub(crate) async fn fetch(&self) -> Result<KeySet, String> {
        let body = match &self.client {
            HttpClient::Plain(client) => get(client, &self.uri).await?,
            HttpClient::Tls(client) => get(client, &self.uri).await?,
        };
        KeySet::parse(&body)
    }
}

fn build_client<C>(connector: C) -> Client<C, Empty<Bytes>>
where
    C: Connect + Clone,
{
    // Fetches are rare (start, then at most once per refresh interval): keep no idle
    // connections, so nothing lingers in the background.
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector)
}

async fn get<C>(client: &Client<C, Empty<Bytes>>, uri: &hyper::Uri) -> Result<Vec<u8>, String>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let request = http::Request::get(uri.clone())
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, "enclave")
        .body(Empty::new())
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let fetch = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("request failed: {}", error_chain(&e)))?;
        let status = response.status();
        if status != http::StatusCode::OK {
            return Err(format!("the server answered {status}, expected 200 OK"));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    format!("the document is larger than {MAX_JWKS_BYTES} bytes")
                } else {
                    format!("reading the response failed: {e}")
                }
            })?;
        Ok(body.to_bytes().to_vec())
    };
    tokio::time::timeout(FETCH_TIMEOUT, fetch)
        .await
        .map_err(|_| format!("no answer within {} s", FETCH_TIMEOUT.as_secs()))?
}

/// An error and its causes, joined with colons (hyper's top-level message alone is vague).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether `host` (as a URI gives it, IPv6 in brackets) is a loopback name or address.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    const N_2048: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";
    const EC_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const EC_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

    fn set(keys: &str) -> Result<KeySet, String> {
        KeySet::parse(format!(r#"{{"keys": [{keys}]}}"#).as_bytes())
    }

    #[test]
    fn keeps_rsa_and_ec_signing_keys() {
        let keys = set(&format!(
            r#"{{"kty":"RSA","kid":"r","n":"{N_2048}","e":"AQAB","use":"sig","alg":"RS256"}},
               {{"kty":"EC","kid":"e","crv":"P-256","x":"{EC_X}","y":"{EC_Y}"}}"#
        ))
        .unwrap();
        assert_eq!(keys.len(), 2);
        assert!(
            matches!(keys.find(Some("r"), Alg::Rs256), Lookup::Found(k) if k.alg == Alg::Rs256)
        );
        assert!(
            matches!(keys.find(Some("e"), Alg::Es256), Lookup::Found(k) if k.alg == Alg::Es256)
        );
        assert!(matches!(
            keys.find(Some("r"), Alg::Es256),
            Lookup::WrongAlgorithm
        ));
        assert!(matches!(keys.find(Some("x"), Alg::Rs256), Lookup::Unknown));
        assert!(matches!(keys.find(None, Alg::Rs256), Lookup::Ambiguous));
    }

    #[test]
    fn skips_symmetric_foreign_and_weak_keys() {
        let err = set(&format!(
            r#"{{"kty":"oct","kid":"h","k":"c2VjcmV0"}},
               {{"kty":"RSA","kid":"enc","n":"{N_2048}","e":"AQAB","use":"enc"}},
               {{"kty":"RSA","kid":"ps","n":"{N_2048}","e":"AQAB","alg":"PS256"}},
               {{"kty":"RSA","kid":"ops","n":"{N_2048}","e":"AQAB","key_ops":["encrypt"]}},
               {{"kty":"RSA","kid":"small","n":"{}","e":"AQAB"}},
               {{"kty":"EC","kid":"p384","crv":"P-384","x":"{EC_X}","y":"{EC_Y}"}},
               {{"kty":"OKP","kid":"ed","crv":"Ed25519","x":"{EC_X}"}},
               {{"kty":"RSA","kid":7,"n":"{N_2048}","e":"AQAB"}}"#,
            &N_2048[..171]
        ))
        .err()
        .unwrap();
        assert!(
            err.starts_with("no usable signing key among 8 keys"),
            "{err}"
        );
    }

    #[test]
    fn single_key_without_kid_is_used_for_tokens_without_kid() {
        let keys = set(&format!(
            r#"{{"kty":"EC","crv":"P-256","x":"{EC_X}","y":"{EC_Y}"}}"#
        ))
        .unwrap();
        assert!(matches!(keys.find(None, Alg::Es256), Lookup::Found(_)));
        assert!(matches!(
            keys.find(None, Alg::Rs256),
            Lookup::WrongAlgorithm
        ));
        assert!(matches!(keys.find(Some("a"), Alg::Es256), Lookup::Unknown));
    }

    #[test]
    fn rejects_documents_that_are_not_key_sets() {
        assert!(
            KeySet::parse(b"not json")
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(KeySet::parse(b"{}").unwrap_err().contains("`keys` array"));
        assert!(
            KeySet::parse(br#"{"keys": []}"#)
                .unwrap_err()
                .contains("among 0 keys")
        );
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(Fetcher::new("http://127.0.0.1:8080/jwks").is_ok());
        assert!(Fetcher::new("http://localhost/jwks").is_ok());
        assert!(Fetcher::new("http://[::1]:9/jwks").is_ok());
        let err = Fetcher::new("http://idp.example/jwks").err().unwrap();
        assert!(err.contains("use `https`"), "{err}");
        assert!(Fetcher::new("ftp://idp.example/jwks").is_err());
        assert!(Fetcher::new("/jwks").is_err());
        assert!(Fetcher::new("not a url").is_err());
    }
}
