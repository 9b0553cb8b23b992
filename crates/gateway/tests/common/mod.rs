//! Starts the real gateway on an ephemeral loopback port with a configuration written as TOML,
//! and talks to it over HTTP.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: each test binary uses a different subset, and broken machinery fails the test"
)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use enclave_gateway::app::App;
use enclave_gateway::config::Config;
use enclave_gateway::server::Server;
use enclave_store::NewPrincipal;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::oneshot;

pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) struct Gateway {
    pub(crate) addr: SocketAddr,
    pub(crate) app: Arc<App>,
    pub(crate) client: HttpClient,
    pub(crate) dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    pub(crate) task: Option<tokio::task::JoinHandle<()>>,
}

/// `[[backends]]` TOML for one mock.
pub(crate) fn backend(
    name: &str,
    base_url: &str,
    accreditation: &str,
    operators: &str,
    models: &str,
) -> String {
    format!(
        "[[backends]]\nname = \"{name}\"\nkind = \"openai\"\nbase_url = \"{base_url}\"\nmodels = {models}\naccreditation = \"{accreditation}\"\noperators = \"{operators}\"\n"
    )
}

impl Gateway {
    pub(crate) async fn start(extra: &str) -> Gateway {
        Gateway::start_inner(extra, None, &enclave_gateway::config::process_env).await
    }

    /// A gateway whose `models_dir` is `models` (for `kind = "local"` backends).
    pub(crate) async fn start_with_models(extra: &str, models: &std::path::Path) -> Gateway {
        Gateway::start_inner(extra, Some(models), &enclave_gateway::config::process_env).await
    }

    /// A gateway whose configuration reads the environment through `env` (a map in tests).
    pub(crate) async fn start_with_env(
        extra: &str,
        env: enclave_gateway::config::Env<'_>,
    ) -> Gateway {
        Gateway::start_inner(extra, None, env).await
    }

    async fn start_inner(
        extra: &str,
        models: Option<&std::path::Path>,
        env: enclave_gateway::config::Env<'_>,
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let models = models.map_or(String::new(), |m| {
            format!("models_dir = \"{}\"\n", m.display())
        });
        let toml = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{models}[storage]\nurl = \"sqlite://{}\"\n{extra}",
            data.display(),
            data.join("enclave.db").display()
        );
        let config = Config::parse_with_env(&toml, env).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        Gateway::launch(config, dir).await
    }

    /// A replica: a gateway on the data directory `data` (its master key) and the database
    /// `url`, which other gateways may share.
    pub(crate) async fn start_replica(extra: &str, data: &std::path::Path, url: &str) -> Gateway {
        let toml = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[storage]\nurl = \"{url}\"\n{extra}",
            data.display(),
        );
        let config = Config::parse(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        Gateway::launch(config, tempfile::tempdir().unwrap()).await
    }

    async fn launch(config: Config, dir: tempfile::TempDir) -> Gateway {
        let server = Server::bind(config).await.unwrap();
        let addr = server.local_addr().unwrap();
        let app = Arc::clone(server.app());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(http);
        Gateway {
            addr,
            app,
            client,
            dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Adds a principal and returns a fresh API key for it.
    pub(crate) async fn user(
        &self,
        name: &str,
        tenant: &str,
        clearance: &str,
        nationality: &str,
    ) -> String {
        self.app
            .store
            .add_principal(&NewPrincipal {
                name: name.into(),
                tenant: tenant.into(),
                clearance: clearance.into(),
                nationality: nationality.into(),
                role: "user".into(),
            })
            .await
            .unwrap();
        self.app.store.create_key(name).await.unwrap().1
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut b = Request::builder().method(method).uri(self.url(path));
        if let Some(k) = key {
            b = b.header("authorization", format!("Bearer {k}"));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        let resp = self
            .client
            .request(b.body(Full::new(body.unwrap_or_default())).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, bytes)
    }

    /// POSTs JSON and returns status, headers and the JSON answer.
    pub(crate) async fn post(
        &self,
        path: &str,
        key: &str,
        label: Option<&str>,
        body: &Value,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut headers = Vec::new();
        if let Some(l) = label {
            headers.push(("x-enclave-classification", l));
        }
        let (s, h, b) = self
            .call(
                Method::POST,
                path,
                Some(key),
                &headers,
                Some(Bytes::from(serde_json::to_vec(body).unwrap())),
            )
            .await;
        let v = serde_json::from_slice(&b).unwrap_or(Value::Null);
        (s, h, v)
    }

    pub(crate) async fn chat(
        &self,
        key: &str,
        label: Option<&str>,
        model: &str,
        content: &str,
    ) -> (StatusCode, HeaderMap, Value) {
        let body =
            serde_json::json!({"model": model, "messages": [{"role": "user", "content": content}]});
        self.post("/v1/chat/completions", key, label, &body).await
    }

    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    pub(crate) fn trigger_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub(crate) fn code(v: &Value) -> &str {
    v.pointer("/error/code")
        .and_then(Value::as_str)
        .unwrap_or("<none>")
}
