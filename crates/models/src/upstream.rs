//! One OpenAI-compatible upstream and the HTTP client that reaches it.

use std::time::Duration;

use bytes::Bytes;
use enclave_label::Accreditation;
use http::HeaderValue;
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
}

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
        Ok(Upstream {
            spec,
            authorization,
        })
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

    /// The `Authorization` header to send, if any.
    pub fn authorization(&self) -> Option<&HeaderValue> {
        self.authorization.as_ref()
    }

    /// The full URL of an API path such as `/chat/completions`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.spec.base_url)
    }
}

impl enclave_policy::Accredited for Upstream {
    fn accreditation(&self) -> &Accreditation {
        &self.spec.accreditation
    }
}
