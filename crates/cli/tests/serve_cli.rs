//! `enclave serve` as a process: config validation, start-up on a fresh data dir, the log line
//! that says where it listens, and graceful shutdown on SIGTERM.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test on broken machinery"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn enclave() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_enclave"));
    c.env_remove("ENCLAVE_CONFIG").env_remove("ENCLAVE_LOG");
    c
}

fn write_config(dir: &std::path::Path, listen: &str, extra: &str) -> std::path::PathBuf {
    let data = dir.join("data");
    let path = dir.join("enclave.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"{listen}\"\ndata_dir = \"{}\"\n[storage]\nurl = \"sqlite://{}\"\n{extra}",
            data.display(),
            data.join("enclave.db").display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn check_accepts_the_design_config_and_lists_every_problem_of_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(
        dir.path(),
        "127.0.0.1:8080",
        "[[backends]]\nname = \"gov-secret\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9001/v1\"\napi_key_env = \"GOV_SECRET_KEY\"\nmodels = [\"gpt-4o\"]\naccreditation = \"SECRET//NOFORN\"\noperators = \"USA\"\n",
    );
    let out = enclave()
        .args(["serve", "--check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("configuration OK") && stdout.contains("backend gov-secret"),
        "{stdout}"
    );
    assert!(!dir.path().join("data").exists(), "--check changes nothing");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = 5\nport = 1\n[[backends]]\nname = \"x\"\n").unwrap();
    let out = enclave()
        .arg("--config")
        .arg(&bad)
        .args(["serve", "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for want in [
        "listen:",
        "port: unknown key",
        "backends[0].kind: required",
        "backends[0].accreditation: required",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in {stderr}");
    }
    let out = enclave()
        .args(["serve", "--check"])
        .env("ENCLAVE_CONFIG", dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the file"));
}

#[test]
fn serve_prepares_a_fresh_data_dir_answers_and_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "127.0.0.1:0", "");
    let mut child = enclave()
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut url = None;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        seen.push(line.clone());
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["message"] == "Enclave is listening" {
            url = v["url"].as_str().map(str::to_owned);
            break;
        }
    }
    let url = url.unwrap_or_else(|| panic!("no listening line in {seen:#?}"));
    assert!(dir.path().join("data/master.key").exists());
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_owned();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("x-enclave-classification: unclassified")
    );

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("no backends configured")),
        "{rest:#?}"
    );
    assert!(
        rest.iter().any(|l| l.contains("SIGTERM received")),
        "{rest:#?}"
    );
}

fn http(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp
}

fn post(addr: &str, key: &str, label: &str, body: &str) -> String {
    http(
        addr,
        &format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {key}\r\nX-Enclave-Classification: {label}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

#[test]
fn logs_name_principals_and_labels_but_never_prompt_text() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "127.0.0.1:0",
        "[[backends]]\nname = \"down\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodels = [\"m\"]\naccreditation = \"SECRET\"\n[limits]\nmax_retries = 0\n",
    );
    let run = |args: &[&str]| {
        let out = enclave()
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["init"]);
    run(&[
        "principal",
        "add",
        "alice",
        "--tenant",
        "t1",
        "--clearance",
        "SECRET",
    ]);
    let key = run(&["key", "create", "alice"]).trim().to_owned();
    let mut child = enclave()
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut url = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("Enclave is listening") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            url = v["url"].as_str().map(str::to_owned);
            break;
        }
    }
    let url = url.expect("listening line");
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_owned();
    const CANARY: &str = "canary-7f3a9c1e";
    let spill = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"(S) {CANARY} troop movements"}}]}}"#
    );
    let resp = post(&addr, &key, "UNCLASSIFIED", &spill);
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(!resp.contains(CANARY));
    let upstream_down =
        format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{CANARY}"}}]}}"#);
    let resp = post(&addr, &key, "SECRET", &upstream_down);
    assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
    let bad_json = format!("{{\"model\": \"m\", \"{CANARY}\": ");
    let resp = post(&addr, &key, "SECRET", &bad_json);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(
        !resp.contains(CANARY),
        "the JSON error names the position, not the text: {resp}"
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    let log: Vec<String> = lines.map_while(Result::ok).collect();
    let all = log.join("\n");
    assert!(
        !all.contains(CANARY),
        "prompt text leaked into the log:\n{all}"
    );
    assert!(!all.contains(&key), "the API key leaked into the log");
    let spill_line = log
        .iter()
        .find(|l| l.contains("spillage detected"))
        .expect("a spillage warning");
    let v: serde_json::Value = serde_json::from_str(spill_line).unwrap();
    assert_eq!(v["level"], "WARN");
    assert_eq!(v["principal"], "alice");
    assert_eq!(v["session"], "UNCLASSIFIED");
    assert_eq!(v["content"], "SECRET");
    assert!(
        log.iter()
            .any(|l| l.contains("\"request finished\"") || l.contains("request refused"))
    );
    // Each request line carries its span: request id, tenant, principal, labels.
    let refused = log
        .iter()
        .find(|l| l.contains("\"status\":502"))
        .unwrap_or_else(|| panic!("the 502 line: {all}"));
    let v: serde_json::Value = serde_json::from_str(refused).unwrap();
    assert_eq!(v["span"]["tenant"], "t1", "{refused}");
    assert_eq!(v["span"]["session"], "SECRET", "{refused}");
    assert!(v["span"]["id"].as_str().unwrap().starts_with("req_"));
}
