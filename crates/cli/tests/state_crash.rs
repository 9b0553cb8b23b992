//! Durability of the stateful runtime: `kill -9` the real `enclave serve` while clients create
//! stored responses, conversations (with items, and with turns continued in them) and
//! memories, restart it on the same data, and every write that got a success answer is there,
//! readable by its id, with its content intact. On SQLite always, and on PostgreSQL when
//! `ENCLAVE_TEST_POSTGRES_URL` is set (in a fresh schema, dropped afterwards).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use common::{ok, serve};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use enclave_test_support::{Behavior, MockUpstream};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

/// A write that got a success answer, and what reading it back must show.
#[derive(Clone, Debug)]
enum Written {
    /// A stored response: its input, and the mock's answer to it.
    Response { id: String, input: String },
    /// An item of a conversation, by its id.
    Item {
        conversation: String,
        id: String,
        text: String,
    },
    /// Text put into a conversation without an item id in the answer: by creating it
    /// (`response` `None`), or by a turn continued in it, whose input and answer are then among
    /// the items and whose response is stored.
    Turn {
        conversation: String,
        response: Option<String>,
        input: String,
    },
    /// A memory.
    Memory { id: String, content: String },
}

/// One HTTP/1.1 request: the status and the JSON body, or `None` when the exchange did not
/// complete (the server died) — such a write got no answer and is not counted.
fn request(addr: &str, key: &str, method: &str, path: &str, body: &str) -> Option<(u16, Value)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body.as_bytes()).ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&resp[..split]).to_ascii_lowercase();
    let rest = &resp[split + 4..];
    let status: u16 = head.get(9..12)?.parse().ok()?;
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(rest)?
    } else {
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))?
            .trim()
            .parse()
            .ok()?;
        // A body cut short is no answer.
        rest.get(..len)?.to_vec()
    };
    let value = serde_json::from_slice(&body).ok()?;
    Some((status, value))
}

/// The body of a chunked message, or `None` when it did not end.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = rest.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line]).ok()?.trim(), 16).ok()?;
        rest = &rest[line + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

/// A 2xx answer's body, else `None`.
fn success(answer: Option<(u16, Value)>) -> Option<Value> {
    match answer {
        Some((status, v)) if (200..300).contains(&status) => Some(v),
        _ => None,
    }
}

fn output_text(v: &Value) -> Option<&str> {
    v["output"]
        .as_array()?
        .iter()
        .find_map(|o| o.pointer("/content/0/text")?.as_str())
}

/// One client's loop until `stop`: each round writes a stored response, a conversation with
/// an item, an item added to it, a turn continued in it, and a memory, recording each one
/// that got a success answer.
fn client(
    c: usize,
    addr: &str,
    key: &str,
    stop: &AtomicBool,
    seen: &Mutex<Vec<Written>>,
    unanswered: &AtomicU64,
) {
    let mut n = 0;
    // The first write without an answer is the one the kill cut off; the client stops there.
    let cut = std::cell::Cell::new(false);
    let post = |path: &str, body: &Value| {
        if cut.get() {
            return None;
        }
        let answer = request(addr, key, "POST", path, &body.to_string());
        if answer.is_none() {
            cut.set(true);
            unanswered.fetch_add(1, Ordering::Relaxed);
        }
        success(answer)
    };
    let record = |w: Written| seen.lock().unwrap().push(w);
    while !stop.load(Ordering::Relaxed) && !cut.get() {
        n += 1;
        let tag = format!("c{c}-n{n}");

        let input = format!("stored turn {tag}");
        if let Some(v) = post(
            "/v1/responses",
            &json!({"model": "m", "input": input, "store": true}),
        ) {
            let id = v["id"].as_str().unwrap().to_owned();
            assert_eq!(output_text(&v), Some(format!("echo: {input}").as_str()));
            record(Written::Response { id, input });
        }

        let first = format!("opening item {tag}");
        let Some(conv) = post(
            "/v1/conversations",
            &json!({"items": [{"role": "user", "content": first}]}),
        ) else {
            continue;
        };
        let conversation = conv["id"].as_str().unwrap().to_owned();
        record(Written::Turn {
            conversation: conversation.clone(),
            response: None,
            input: first,
        });

        let text = format!("added item {tag}");
        if let Some(v) = post(
            &format!("/v1/conversations/{conversation}/items"),
            &json!({"items": [{"role": "user", "content": text}]}),
        ) {
            let id = v["data"][0]["id"].as_str().unwrap().to_owned();
            record(Written::Item {
                conversation: conversation.clone(),
                id,
                text,
            });
        }

        let input = format!("continued turn {tag}");
        if let Some(v) = post(
            "/v1/responses",
            &json!({"model": "m", "input": input, "conversation": conversation}),
        ) {
            let response = v["id"].as_str().unwrap().to_owned();
            record(Written::Turn {
                conversation: conversation.clone(),
                response: Some(response),
                input,
            });
        }

        let content = format!("remember that {tag} holds the relay key");
        if let Some(v) = post("/v1/memories", &json!({"content": content})) {
            let id = v["id"].as_str().unwrap().to_owned();
            record(Written::Memory { id, content });
        }
    }
}

/// Reads `path` on the restarted server: it must answer 200.
fn read(addr: &str, key: &str, path: &str) -> Value {
    let (status, v) = request(addr, key, "GET", path, "")
        .unwrap_or_else(|| panic!("GET {path}: no answer from the restarted server"));
    assert_eq!(status, 200, "GET {path} after the restart: {v}");
    v
}

/// Every text of a conversation's items, oldest first.
fn item_texts(addr: &str, key: &str, conversation: &str) -> Vec<String> {
    let v = read(
        addr,
        key,
        &format!("/v1/conversations/{conversation}/items?order=asc&limit=100"),
    );
    assert_eq!(v["has_more"], false, "{v}");
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i.pointer("/content/0/text")?.as_str().map(str::to_owned))
        .collect()
}

fn check(addr: &str, key: &str, written: &Written) {
    match written {
        Written::Response { id, input } => {
            let v = read(addr, key, &format!("/v1/responses/{id}"));
            assert_eq!(v["id"], id.as_str());
            assert_eq!(
                output_text(&v),
                Some(format!("echo: {input}").as_str()),
                "{v}"
            );
        }
        Written::Item {
            conversation,
            id,
            text,
        } => {
            let v = read(
                addr,
                key,
                &format!("/v1/conversations/{conversation}/items/{id}"),
            );
            assert_eq!(v["id"], id.as_str());
            assert_eq!(v.pointer("/content/0/text"), Some(&json!(text)), "{v}");
        }
        Written::Turn {
            conversation,
            response,
            input,
        } => {
            let texts = item_texts(addr, key, conversation);
            assert!(
                texts.contains(input),
                "{conversation} lost `{input}`: {texts:?}"
            );
            if let Some(response) = response {
                let answer = format!("echo: {input}");
                assert!(
                    texts.contains(&answer),
                    "{conversation} lost `{answer}`: {texts:?}"
                );
                let v = read(addr, key, &format!("/v1/responses/{response}"));
                assert_eq!(output_text(&v), Some(answer.as_str()), "{v}");
            }
        }
        Written::Memory { id, content } => {
            let v = read(addr, key, &format!("/v1/memories/{id}"));
            assert_eq!(v["id"], id.as_str());
            assert_eq!(v["content"], content.as_str(), "{v}");
        }
    }
}

/// The whole drill against the storage at `url` (`None`: SQLite in the data directory).
fn drill(url: Option<&str>) {
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
    let url = url.map_or_else(
        || format!("sqlite://{}/enclave.db", data.display()),
        str::to_owned,
    );
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{d}\"\n[storage]\nurl = \"{url}\"\n\
             [memory]\nembeddings = false\n\
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
    let seen: Arc<Mutex<Vec<Written>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let unanswered = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (addr, key, seen, stop, unanswered) = (
            addr.clone(),
            key.clone(),
            Arc::clone(&seen),
            Arc::clone(&stop),
            Arc::clone(&unanswered),
        );
        clients.push(std::thread::spawn(move || {
            client(c, &addr, &key, &stop, &seen, &unanswered);
        }));
    }
    // Load for a while, then SIGKILL with writes in flight.
    let start = Instant::now();
    let deadline = start + Duration::from_secs(120);
    while seen.lock().unwrap().len() < 600 || start.elapsed() < Duration::from_secs(3) {
        assert!(Instant::now() < deadline, "the load never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let seen = seen.lock().unwrap().clone();

    // Restart on the same data: every write that was answered is there.
    let (mut child, addr) = serve(&config);
    for w in &seen {
        check(&addr, &key, w);
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let count = |f: fn(&Written) -> bool| seen.iter().filter(|w| f(w)).count();
    eprintln!(
        "{} answered writes survived kill -9 ({} in flight were cut off): {} responses, {} items, {} turns, {} memories",
        seen.len(),
        unanswered.load(Ordering::Relaxed),
        count(|w| matches!(w, Written::Response { .. })),
        count(|w| matches!(w, Written::Item { .. })),
        count(|w| matches!(w, Written::Turn { .. })),
        count(|w| matches!(w, Written::Memory { .. })),
    );
}

#[test]
fn every_answered_state_write_survives_kill_9_on_sqlite() {
    drill(None);
}

#[test]
fn every_answered_state_write_survives_kill_9_on_postgres() {
    let Ok(admin) = std::env::var("ENCLAVE_TEST_POSTGRES_URL") else {
        eprintln!("skipping: ENCLAVE_TEST_POSTGRES_URL is not set");
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut nonce = [0u8; 8];
    SystemRandom::new().fill(&mut nonce).unwrap();
    let schema: String = std::iter::once("enclave_crash_".to_owned())
        .chain(nonce.iter().map(|b| format!("{b:02x}")))
        .collect();
    let sql = |statement: String| {
        runtime.block_on(async {
            let mut conn = PgConnection::connect(&admin).await.unwrap();
            sqlx::raw_sql(&statement).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        });
    };
    sql(format!("CREATE SCHEMA {schema}"));
    let sep = if admin.contains('?') { '&' } else { '?' };
    let url = format!("{admin}{sep}options=-c%20search_path%3D{schema}");
    let result = std::panic::catch_unwind(|| drill(Some(&url)));
    sql(format!("DROP SCHEMA {schema} CASCADE"));
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
