//! What a run starts: the static upstream and the proxy (nginx), and `enclave serve` with a real
//! API key; the request and response bodies; the pre-flight checks that Enclave does the work it
//! is measured for.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::http::{Conn, Response, request_bytes};
use crate::procs::{Procs, Stop, output};

/// The session label every request carries.
pub(crate) const SESSION: &str = "SECRET";
/// The principal's clearance and the backends' accreditation.
pub(crate) const CLEARANCE: &str = "SECRET//NOFORN";

/// The response kind a cell measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A chat completion answered as one JSON object.
    Json,
    /// A chat completion streamed as server-sent events.
    Sse,
}

impl Kind {
    /// Its name in the report and in the upstream's paths.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Json => "json",
            Kind::Sse => "sse",
        }
    }

    fn model(self) -> &'static str {
        match self {
            Kind::Json => "gpt-4o",
            Kind::Sse => "gpt-4o-stream",
        }
    }
}

const SYSTEM_PROMPT: &str = "You are an analyst assistant for a joint logistics planning cell. \
Answer in plain English, keep to the material you are given, name the paragraph you rely on, and \
say so when the material does not support an answer.";

const USER_PROMPT: &str = "(U) The exercise moves three convoys from the northern depot to the \
coastal staging area over four days. Each convoy carries fuel, rations and spare parts for two \
battalions, and the second convoy also brings the field hospital's generators.\n\n(U) The coastal \
road is closed for repairs on the second and third day between mile 40 and mile 55, so the \
planners routed the second convoy through the valley road, which adds about three hours and has \
two bridges rated for 30 tons.\n\n(U) Fuel consumption was estimated at the rates from last \
spring's exercise, with a ten percent reserve. Summarize the main risks to the schedule, and \
propose two changes that would reduce them without adding vehicles.";

const ANSWER: &str = "The main risk is the valley detour for the second convoy: it adds three \
hours and its two bridges limit the heaviest loads, so the generators may need to travel \
separately. A second risk is fuel, since the rates from last spring assumed the coastal road. \
Move the generators to the first convoy and start the second convoy half a day early.";

/// Words of the answer streamed as SSE (nginx's `return` takes at most 4 KiB).
const SSE_WORDS: usize = 20;

/// The chat request: a system prompt and three portion-marked `(U)` paragraphs, ~1 KB.
pub(crate) fn request_body(kind: Kind) -> String {
    let mut body = json!({
        "model": kind.model(),
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": USER_PROMPT},
        ],
        "temperature": 0.2,
        "max_tokens": 300,
    });
    if kind == Kind::Sse {
        body["stream"] = json!(true);
    }
    body.to_string()
}

fn json_answer() -> String {
    let words = ANSWER.split(' ').count();
    json!({
        "id": "chatcmpl-load",
        "object": "chat.completion",
        "created": 1_764_000_000,
        "model": "gpt-4o",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": ANSWER},
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": 231, "completion_tokens": words, "total_tokens": 231 + words},
        "system_fingerprint": "fp_load",
    })
    .to_string()
}

fn sse_answer() -> String {
    let mut out = String::new();
    for (i, w) in ANSWER.split(' ').take(SSE_WORDS).enumerate() {
        let content = if i == 0 {
            w.to_owned()
        } else {
            format!(" {w}")
        };
        let chunk = json!({
            "id": "chatcmpl-load",
            "object": "chat.completion.chunk",
            "created": 1_764_000_000,
            "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}],
        });
        let _ = write!(out, "data: {chunk}\n\n");
    }
    let last = json!({
        "id": "chatcmpl-load",
        "object": "chat.completion.chunk",
        "created": 1_764_000_000,
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 231, "completion_tokens": SSE_WORDS, "total_tokens": 231 + SSE_WORDS},
    });
    let _ = write!(out, "data: {last}\n\ndata: [DONE]\n\n");
    out
}

/// Text for a single-quoted nginx string (which interpolates `$` and reads `\n`).
fn nginx_string(s: &str) -> anyhow::Result<String> {
    if s.contains(['$', '\'', '\\']) {
        bail!("the static bodies must not contain $, ' or backslashes");
    }
    if s.len() > 4000 {
        bail!(
            "a static body of {} bytes is too long for an nginx string (4 KiB)",
            s.len()
        );
    }
    Ok(s.replace('\n', "\\n"))
}

/// Fills `@@KEY@@` placeholders outside comment lines.
fn fill_template(name: &str, text: &str, values: &[(&str, String)]) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len() + 4096);
    for line in text.split_inclusive('\n') {
        let mut line = line.to_owned();
        if !line.trim_start().starts_with('#') {
            for (k, v) in values {
                line = line.replace(&format!("@@{k}@@"), v);
            }
            if let Some(at) = line.find("@@") {
                bail!(
                    "{name}: no value for the placeholder at `{}`",
                    line.get(at..).unwrap_or_default().trim()
                );
            }
        }
        out.push_str(&line);
    }
    Ok(out)
}

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it soon after).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A running nginx.
#[derive(Clone, Debug)]
pub(crate) struct Nginx {
    /// The master's pid (its workers are its children).
    pub(crate) pid: u32,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
}

/// Which nginx to start.
#[derive(Clone, Copy, Debug)]
pub(crate) enum NginxRole {
    /// Answers chat completions from memory (1 worker).
    Upstream,
    /// `proxy_pass` to the upstream with keepalive.
    Proxy { upstream_port: u16, workers: usize },
}

/// Starts nginx in `prefix` (created) and waits for `/healthz` (upstream) or a listening port.
pub(crate) fn start_nginx(
    rt: &tokio::runtime::Runtime,
    procs: &mut Procs,
    nginx: &Path,
    role: NginxRole,
    prefix: &Path,
) -> anyhow::Result<Nginx> {
    std::fs::create_dir_all(prefix)?;
    let port = free_port()?;
    let mut values = vec![
        ("PORT", port.to_string()),
        ("PREFIX", prefix.display().to_string()),
    ];
    let (name, template) = match role {
        NginxRole::Upstream => {
            values.push(("JSON_BODY", nginx_string(&json_answer())?));
            values.push(("SSE_BODY", nginx_string(&sse_answer())?));
            ("upstream nginx", include_str!("nginx_upstream.conf.tmpl"))
        }
        NginxRole::Proxy {
            upstream_port,
            workers,
        } => {
            values.push(("UPSTREAM_PORT", upstream_port.to_string()));
            values.push(("WORKERS", workers.to_string()));
            ("proxy nginx", include_str!("nginx_proxy.conf.tmpl"))
        }
    };
    let conf = prefix.join("nginx.conf");
    std::fs::write(&conf, fill_template(name, template, &values)?)?;
    let args: Vec<String> = vec![
        "-p".into(),
        prefix.display().to_string(),
        "-c".into(),
        conf.display().to_string(),
        "-e".into(),
        prefix.join("error.log").display().to_string(),
    ];
    let mut check = args.clone();
    check.extend(["-t".into(), "-q".into()]);
    output(nginx, &check).with_context(|| format!("{name} rejects its configuration"))?;
    let pid = procs.start(
        name,
        nginx,
        &args,
        &[],
        &prefix.join("stderr.log"),
        Stop::Nginx(args.clone()),
    )?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // The proxy passes /healthz on to the upstream.
    wait_http(rt, procs, pid, addr, "/healthz", name)?;
    Ok(Nginx { pid, addr })
}

/// A running `enclave serve`.
#[derive(Clone, Debug)]
pub(crate) struct Enclave {
    /// "A" or "B" and what the user called it.
    pub(crate) name: String,
    /// The binary.
    pub(crate) binary: PathBuf,
    pub(crate) pid: u32,
    pub(crate) addr: SocketAddr,
    /// A real API key of a SECRET//NOFORN principal.
    pub(crate) key: String,
    /// Its stderr.
    pub(crate) log: PathBuf,
}

/// How to run one Enclave.
pub(crate) struct EnclaveSpec<'a> {
    /// What the report calls it.
    pub(crate) name: &'a str,
    pub(crate) binary: &'a Path,
    /// Its directory (config, data, log), created.
    pub(crate) dir: &'a Path,
    pub(crate) upstream_port: u16,
    /// Extra `[limits]` lines.
    pub(crate) limits: &'a [String],
    /// Extra `[audit]` lines.
    pub(crate) audit: &'a [String],
    /// `ENCLAVE_LOG`.
    pub(crate) log_level: &'a str,
}

/// Configures, initializes and starts `enclave serve` with two backends on the static upstream
/// (one per response kind) and a principal with a key.
pub(crate) fn start_enclave(
    rt: &tokio::runtime::Runtime,
    procs: &mut Procs,
    spec: &EnclaveSpec<'_>,
) -> anyhow::Result<Enclave> {
    let EnclaveSpec {
        name,
        binary,
        dir,
        upstream_port,
        limits,
        audit,
        log_level,
    } = *spec;
    std::fs::create_dir_all(dir)?;
    let port = free_port()?;
    let data = dir.join("data");
    let config = dir.join("enclave.toml");
    // Only keys every recent Enclave knows; anything else comes from `--enclave-limits`.
    let mut text = format!(
        "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n\n[storage]\nurl = \"sqlite://{}/enclave.db\"\n",
        data.display(),
        data.display()
    );
    if !limits.is_empty() {
        text.push_str("\n[limits]\n");
        for l in limits {
            text.push_str(l);
            text.push('\n');
        }
    }
    if !audit.is_empty() {
        text.push_str("\n[audit]\n");
        for l in audit {
            text.push_str(l);
            text.push('\n');
        }
    }
    for kind in [Kind::Json, Kind::Sse] {
        let _ = write!(
            text,
            "\n[[backends]]\nname = \"static-{k}\"\nkind = \"openai\"\n\
             base_url = \"http://127.0.0.1:{upstream_port}/{k}/v1\"\nmodels = [\"{m}\"]\n\
             accreditation = \"{CLEARANCE}\"\noperators = \"USA\"\n",
            k = kind.name(),
            m = kind.model(),
        );
    }
    std::fs::write(&config, text)?;
    let cli = |args: &[&str]| {
        let mut all = vec!["--config".to_owned(), config.display().to_string()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        output(binary, &all)
    };
    cli(&["init"])?;
    cli(&[
        "principal",
        "add",
        "load",
        "--tenant",
        "load",
        "--clearance",
        CLEARANCE,
        "--nationality",
        "USA",
    ])?;
    let key = cli(&["key", "create", "load"])?.trim().to_owned();
    let log = dir.join("serve.log");
    let pid = procs.start(
        &format!("enclave {name}"),
        binary,
        &[
            "--config".into(),
            config.display().to_string(),
            "serve".into(),
        ],
        &[("ENCLAVE_LOG", log_level)],
        &log,
        Stop::Term,
    )?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_http(rt, procs, pid, addr, "/healthz", &format!("enclave {name}")).map_err(|e| {
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        e.context(format!("its stderr ends:\n{}", tail.join("\n")))
    })?;
    Ok(Enclave {
        name: name.to_owned(),
        binary: binary.to_owned(),
        pid,
        addr,
        key,
        log,
    })
}

/// The headers of every measured request (`key` is Enclave's API key; the other targets ignore
/// it, and get it so every target receives the same bytes).
pub(crate) fn headers(key: &str) -> Vec<(String, String)> {
    vec![
        ("content-type".into(), "application/json".into()),
        ("authorization".into(), format!("Bearer {key}")),
        ("x-enclave-classification".into(), SESSION.into()),
    ]
}

/// One request on a fresh connection, keeping headers and body.
pub(crate) fn fetch(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    request: &[u8],
) -> anyhow::Result<Response> {
    rt.block_on(async {
        let mut c = Conn::connect(addr, None).await?;
        tokio::time::timeout(Duration::from_secs(10), c.exchange_full(request))
            .await
            .context("no answer within 10 s")?
    })
}

fn wait_http(
    rt: &tokio::runtime::Runtime,
    procs: &mut Procs,
    pid: u32,
    addr: SocketAddr,
    path: &str,
    what: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let req = request_bytes("GET", &addr.to_string(), path, &[], b"");
    loop {
        if let Some(status) = procs.exited(pid) {
            bail!("{what} exited during start-up ({status})");
        }
        if fetch(rt, addr, &req).is_ok_and(|r| r.status == 200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} did not answer GET {path} on {addr} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Shows that Enclave does the work it is measured for: both kinds answered 200 with the session
/// label echoed, a `(TS//SI)` paragraph refused as spillage, an unknown key refused, metrics on.
/// Returns the problems found.
pub(crate) fn preflight(rt: &tokio::runtime::Runtime, e: &Enclave) -> Vec<String> {
    let host = e.addr.to_string();
    let path = "/v1/chat/completions";
    let mut problems = Vec::new();
    let mut check =
        |what: &str, req: Vec<u8>, ok: &dyn Fn(&Response) -> bool| match fetch(rt, e.addr, &req) {
            Ok(r) if ok(&r) => {}
            Ok(r) => problems.push(format!(
                "{what}: status {}: {}",
                r.status,
                String::from_utf8_lossy(r.body.get(..300.min(r.body.len())).unwrap_or_default())
            )),
            Err(err) => problems.push(format!("{what}: {err:#}")),
        };
    for kind in [Kind::Json, Kind::Sse] {
        let req = request_bytes(
            "POST",
            &host,
            path,
            &headers(&e.key),
            request_body(kind).as_bytes(),
        );
        check(kind.name(), req, &|r| {
            r.status == 200 && r.header("x-enclave-classification") == Some(SESSION)
        });
    }
    let spill = request_body(Kind::Json).replace(
        "without adding vehicles.",
        "without adding vehicles.\\n\\n(TS//SI) The source also reports the convoy's route.",
    );
    let req = request_bytes("POST", &host, path, &headers(&e.key), spill.as_bytes());
    check("spillage scan of a (TS//SI) paragraph", req, &|r| {
        r.status == 403 && String::from_utf8_lossy(&r.body).contains("spillage_detected")
    });
    let req = request_bytes(
        "POST",
        &host,
        path,
        &headers("enk_not_a_key"),
        request_body(Kind::Json).as_bytes(),
    );
    check("an unknown API key", req, &|r| r.status == 401);
    let req = request_bytes("GET", &host, "/metrics", &[], b"");
    check("GET /metrics", req, &|r| {
        r.status == 200 && !r.body.is_empty()
    });
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_fit_nginx_and_the_request_is_about_one_kilobyte() {
        for kind in [Kind::Json, Kind::Sse] {
            let b = request_body(kind);
            assert!((900..1200).contains(&b.len()), "{}", b.len());
            let v: serde_json::Value = serde_json::from_str(&b).unwrap();
            assert_eq!(v["stream"].as_bool().unwrap_or(false), kind == Kind::Sse);
        }
        nginx_string(&json_answer()).unwrap();
        let sse = nginx_string(&sse_answer()).unwrap();
        assert!(sse.ends_with("data: [DONE]\\n\\n"));
        assert!(nginx_string("a$b").is_err());
    }

    #[test]
    fn templates_fill_every_placeholder() {
        let t = "# @@NOT@@ in a comment\nlisten @@PORT@@;\n";
        assert_eq!(
            fill_template("t", t, &[("PORT", "80".into())]).unwrap(),
            "# @@NOT@@ in a comment\nlisten 80;\n"
        );
        assert!(fill_template("t", t, &[]).is_err());
    }
}
