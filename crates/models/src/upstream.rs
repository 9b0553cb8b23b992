//! One OpenAI-compatible upstream and the HTTP client that reaches it.

use std::time::Duration;

use bytes::Bytes;
use enclave_label::Accreditation;
use http::{HeaderValue, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The HTTP client every upstream shares: HTTP/1.1, keep-alive pool, TCP_NODELAY, TLS by
/// rustls (ring) with the system's root certificates.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds the shared client.
///
/// # Errors
///
/// When the system's root certificates cannot be read at all.
pub fn http_client(connect_timeout: Duration) -> Result<HttpClient, std::io::Error> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let provider = rustls::crypto::ring::default_provider();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider)?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(https))
}

/// What the configuration says about an upstream.
#[derive(Clone, Debug)]
pub struct UpstreamSpec {
    /// Unique name.
    pub name: String,
    /// Base URL including `/v1`, without a trailing slash.
    pub base_url: String,
    /// The upstream API key, if any (already read from its environment variable).
    pub api_key: Option<String>,
    /// `(name clients use, name upstream knows)` pairs.
    pub models: Vec<(String, String)>,
    /// What it may process.
    pub accreditation: Accreditation,
    /// Lower is tried first.
    pub priority: u32,
    /// Share among equal priorities.
    pub weight: u32,
    /// Served in-process by the embedded models ([`crate::local`]), not over HTTP.
    pub local: bool,
}

/// An OpenAI-compatible upstream ready to receive requests.
#[derive(Debug)]
pub struct Upstream {
    spec: UpstreamSpec,
    authorization: Option<HeaderValue>,
    /// The API paths every request uses, with their URL and `Host` header prepared once:
    /// formatting and parsing them per request cost more than the rest of building it.
    endpoints: Vec<(&'static str, Endpoint)>,
    /// `base_url` starts with `http://`.
    plain_http: bool,
}

/// A prepared API URL, or why the base URL and path do not make one.
type Endpoint = Result<(Uri, Option<HeaderValue>), String>;

/// The paths [`Upstream::new`] prepares.
const PREPARED_PATHS: [&str; 2] = ["/chat/completions", "/embeddings"];

impl Upstream {
    /// Prepares an upstream.
    ///
    /// # Errors
    ///
    /// When the API key cannot be sent as an HTTP header value.
    pub fn new(spec: UpstreamSpec) -> Result<Upstream, String> {
        let authorization = match &spec.api_key {
            Some(k) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {k}")).map_err(|_| {
                    format!(
                        "backend {}: the API key has characters not allowed in a header",
                        spec.name
                    )
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let plain_http = spec
            .base_url
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
        let mut upstream = Upstream {
            spec,
            authorization,
            endpoints: Vec::new(),
            plain_http,
        };
        upstream.endpoints = PREPARED_PATHS
            .iter()
            .map(|&path| (path, upstream.prepare(path)))
            .collect();
        Ok(upstream)
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The configuration it was built from.
    pub fn spec(&self) -> &UpstreamSpec {
        &self.spec
    }

    /// The upstream name for a client-facing model name, if this backend serves it.
    pub fn upstream_model(&self, model: &str) -> Option<&str> {
        self.spec
            .models
            .iter()
            .find(|(name, _)| name == model)
            .map(|(_, up)| up.as_str())
    }

    /// Whether requests go over plain HTTP (the thread-local connection pool) rather than TLS.
    pub(crate) fn is_plain_http(&self) -> bool {
        self.plain_http
    }

    /// The `Authorization` header to send, if any.
    pub fn authorization(&self) -> Option<&HeaderValue> {
        self.authorization.as_ref()
    }

    /// The full URL of an API path such as `/chat/completions`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.spec.base_url)
    }

    /// The parsed URL of an API path and the `Host` header for it.
    ///
    /// # Errors
    ///
    /// Why the base URL and the path do not make a URL.
    pub(crate) fn endpoint(&self, path: &str) -> Endpoint {
        match self.endpoints.iter().find(|(p, _)| *p == path) {
            Some((_, prepared)) => prepared.clone(),
            None => self.prepare(path),
        }
    }

    fn prepare(&self, path: &str) -> Endpoint {
        let uri = Uri::try_from(self.url(path)).map_err(|e| e.to_string())?;
        let host = host_header(&uri);
        Ok((uri, host))
    }
}

/// The `Host` header hyper-util's client would add for `uri`: the host, with the port unless it
/// is the scheme's default. (Sending it ourselves spares the client formatting it per request;
/// the client leaves a `Host` header it is given alone.)
fn host_header(uri: &Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let secure = matches!(uri.scheme_str(), Some("https" | "wss"));
    match uri.port() {
        Some(port) if !matches!((port.as_u16(), secure), (443, true) | (80, false)) => {
            HeaderValue::from_str(&format!("{host}:{port}")).ok()
        }
        _ => HeaderValue::from_str(host).ok(),
    }
}

impl enclave_policy::Accredited for Upstream {
    fn accreditation(&self) -> &Accreditation {
        &self.spec.accreditation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(base_url: &str) -> Upstream {
        Upstream::new(UpstreamSpec {
            name: "b".to_owned(),
            base_url: base_url.to_owned(),
            api_key: None,
            models: Vec::new(),
            accreditation: Accreditation::new(enclave_label::Label::unclassified(), []),
            priority: 0,
            weight: 1,
            local: false,
        })
        .unwrap()
    }

    #[test]
    fn prepared_endpoints_equal_parsing_the_url_each_time() {
        for (base, host) in [
            ("http://127.0.0.1:8080/v1", Some("127.0.0.1:8080")),
            ("http://example.com:80/v1", Some("example.com")),
            ("https://api.example.com/v1", Some("api.example.com")),
            ("https://api.example.com:443/v1", Some("api.example.com")),
            ("https://api.example.com:8443", Some("api.example.com:8443")),
            ("http://[::1]:9000/v1", Some("[::1]:9000")),
        ] {
            let u = upstream(base);
            for path in ["/chat/completions", "/embeddings", "/other"] {
                let (uri, h) = u.endpoint(path).unwrap();
                assert_eq!(uri, Uri::try_from(u.url(path)).unwrap(), "{base}{path}");
                assert_eq!(h.as_ref().and_then(|h| h.to_str().ok()), host, "{base}");
            }
        }
        let bad = upstream("http://exa mple/v1");
        let expected = Uri::try_from(bad.url("/chat/completions"))
            .unwrap_err()
            .to_string();
        assert_eq!(bad.endpoint("/chat/completions").unwrap_err(), expected);
    }
}
