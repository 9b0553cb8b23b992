//! Invariant 5 for the audit log: `kill -9` the real `enclave serve` under concurrent load,
//! restart it, and every request that got an answer has its entry (matched by its request id
//! and the receipt's index), the log verifies and has no gap.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use common::{ok, serve};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use enclave_audit::{AuditEntry, Event, Phase};
use enclave_test_support::{Behavior, MockUpstream};

/// What a client saw.
#[derive(Clone, Debug)]
struct Seen {
    status: u16,
    index: Option<u64>,
    stream: bool,
}

/// One HTTP/1.1 request; the status and the audit index header, or `None` when the connection
/// failed (the server died).
fn request(addr: &str, key: &str, id: &str, body: &str) -> Option<(u16, Option<u64>)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nX-Request-Id: {id}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body.as_bytes()).ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let text = String::from_utf8_lossy(&resp);
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let status: u16 = head.get(9..12)?.parse().ok()?;
    // A streamed answer counts only when it arrived whole.
    if head.contains("text/event-stream") && !rest.contains("[DONE]") {
        return None;
    }
    let index = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-enclave-audit-index: ")
                .map(str::to_owned)
        })
        .and_then(|v| v.trim().parse().ok());
    Some((status, index))
}

#[test]
fn every_answered_request_survives_kill_9_in_the_audit_log() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mock = runtime
        .block_on(MockUpstream::start(Behavior {
            answer_delay: Duration::from_millis(2),
            ..Behavior::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("enclave.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{d}\"\n[storage]\nurl = \"sqlite://{d}/enclave.db\"\n\
             [audit]\ncheckpoint_interval_secs = 1\n\
             [[backends]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"{}\"\nmodels = [\"m\"]\naccreditation = \"SECRET\"\noperators = \"USA\"\n",
            mock.base_url(),
            d = data.display()
        ),
    )
    .unwrap();
    ok(&config, &["init"]);
    ok(
        &config,
        &[
            "principal",
            "add",
            "alice",
            "--tenant",
            "t1",
            "--clearance",
            "SECRET",
        ],
    );
    let key = ok(&config, &["key", "create", "alice"]).trim().to_owned();

    let (mut child, addr) = serve(&config);
    let seen: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
    let answered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..12 {
        let (addr, key, seen, answered, stop) = (
            addr.clone(),
            key.clone(),
            Arc::clone(&seen),
            Arc::clone(&answered),
            Arc::clone(&stop),
        );
        clients.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = format!("crash-{c}-{n}");
                let stream = n % 5 == 0;
                let body = if n % 7 == 0 {
                    // Refused: spillage in an UNCLASSIFIED session.
                    r#"{"model":"m","messages":[{"role":"user","content":"(S) the plan"}]}"#.to_owned()
                } else {
                    format!(
                        r#"{{"model":"m","stream":{stream},"messages":[{{"role":"user","content":"hello {id}"}}]}}"#
                    )
                };
                match request(&addr, &key, &id, &body) {
                    Some((status, index)) => {
                        seen.lock().unwrap().insert(
                            id,
                            Seen {
                                status,
                                index,
                                stream: stream && n % 7 != 0,
                            },
                        );
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    None => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while answered.load(Ordering::Relaxed) < 400 {
        assert!(Instant::now() < deadline, "the load never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SIGKILL, with requests in flight.
    child.kill().unwrap();
    child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let successes = seen
        .values()
        .filter(|s| (200..300).contains(&s.status))
        .count();
    assert!(
        successes >= 300,
        "only {successes} successes before the kill"
    );

    // Restart on the same data: the log continues where it stopped.
    let (mut child, addr) = serve(&config);
    let (status, index) = request(
        &addr,
        &key,
        "after-restart",
        r#"{"model":"m","messages":[{"role":"user","content":"again"}]}"#,
    )
    .unwrap();
    assert_eq!(status, 200);
    let after = index.unwrap();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());

    // The log verifies, has no gap, and the last graceful stop signed all of it.
    let out = ok(&config, &["audit", "verify", data.to_str().unwrap()]);
    let size: u64 = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("size "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(out.contains(&format!("(signed size {size})")), "{out}");
    assert_eq!(
        after,
        size - 1,
        "the request after the restart is the last entry"
    );

    // Every answered request has its entry, at the index its receipt named.
    let rows = runtime.block_on(async {
        let reader = enclave_store::AuditReader::connect(&format!(
            "sqlite://{}",
            data.join("enclave.db").display()
        ))
        .await
        .unwrap();
        let rows = reader.rows(0, 1_000_000).await.unwrap();
        reader.close().await;
        rows
    });
    assert_eq!(rows.len() as u64, size);
    let mut by_index = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.index, i as u64, "gap at {i}");
        let entry = AuditEntry::from_canonical_bytes(row.entry.as_bytes()).unwrap();
        if let Event::Request(r) = entry.event {
            by_index.insert(row.index, r);
        }
    }
    for (id, s) in &seen {
        let index = s
            .index
            .unwrap_or_else(|| panic!("{id} was answered {} without a receipt", s.status));
        let entry = by_index
            .get(&index)
            .unwrap_or_else(|| panic!("{id}: no entry at its receipt {index}"));
        assert_eq!(&entry.request_id, id, "the entry at {index}");
        if s.stream && s.status == 200 {
            assert_eq!(entry.phase, Some(Phase::Decision), "{id}");
            assert!(
                by_index
                    .values()
                    .any(|r| &r.request_id == id && r.phase == Some(Phase::Outcome)),
                "{id}: a stream that ended has its outcome entry"
            );
        } else {
            assert_eq!(entry.status, s.status, "{id}");
        }
    }
    eprintln!(
        "answered {} requests ({successes} successes) before kill -9; log of {size} entries verified",
        seen.len()
    );
}
