//! What the crash tests share: the `enclave` binary with a clean environment, one-shot
//! commands, and `enclave serve` started with its listening address read from its log.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test on broken machinery; each test uses some of them"
)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `enclave` binary with `--config config` and none of the environment variables that
/// would override it.
pub(crate) fn enclave(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_enclave"));
    c.arg("--config")
        .arg(config)
        .env_remove("ENCLAVE_CONFIG")
        .env_remove("ENCLAVE_LOG")
        .env_remove("ENCLAVE_MASTER_KEY")
        .env_remove("ENCLAVE_AUDIT_SIGNING_KEY");
    c
}

/// Runs `enclave args…` and returns its stdout; fails the test when it fails.
pub(crate) fn ok(config: &Path, args: &[&str]) -> String {
    let out = enclave(config).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "enclave {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A running `enclave serve`, killed when dropped: a test that fails half-way leaves no server
/// behind holding its port and database connections.
pub(crate) struct Served(Child);

impl std::ops::Deref for Served {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Served {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // A child already waited for is not signalled again (std keeps its status).
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `enclave serve` and returns it with its address; its log is drained in the
/// background, warnings and errors copied to the test's stderr.
pub(crate) fn serve(config: &Path) -> (Served, String) {
    let mut child = enclave(config)
        .args(["serve", "--log-format", "json"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("Enclave is listening") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            addr = v["url"].as_str().map(|u| {
                u.trim_start_matches("http://")
                    .trim_end_matches("/v1")
                    .to_owned()
            });
            break;
        }
        assert!(Instant::now() < deadline, "no listening line");
    }
    // The server's warnings and errors go to the test's stderr (shown when a test fails).
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.contains("\"level\":\"WARN\"") || line.contains("\"level\":\"ERROR\"") {
                eprintln!("server: {line}");
            }
        }
    });
    (Served(child), addr.expect("the listening line"))
}
