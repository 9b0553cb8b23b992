//! `enclave audit …` through the real binary: tamper drills on SQLite, on PostgreSQL (when
//! `ENCLAVE_TEST_POSTGRES_URL` is set) and on an export — each change is named at its documented
//! index — and the untouched log verifies; proofs of single entries; admin actions are logged.
//!
//! The log of each drill: `principal add` and `key create` through the binary (entries 0 and 1),
//! then 38 request entries appended through the store, with checkpoints signed by the install's
//! own key at sizes 10, 25 and 40.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use enclave_audit::{AuditEntry, Checkpoint, Event, RequestEvent, Signer, Tree, hash_leaf};
use enclave_store::{LeafTree, NewAuditEntry, Store, install};
use ring::rand::{SecureRandom, SystemRandom};
use sqlx::{Connection, PgConnection};
use tempfile::TempDir;

const ORIGIN: &str = "enclave.local/audit";
const SIZE: u64 = 40;

/// An install with a log of 40 entries and checkpoints at 10, 25 and 40.
struct Fixture {
    dir: TempDir,
    config: PathBuf,
    data: PathBuf,
    url: String,
    schema: Option<(String, String)>,
}

impl Fixture {
    async fn build(postgres: Option<&str>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (url, schema) = match postgres {
            None => (
                format!("sqlite://{}", data.join("enclave.db").display()),
                None,
            ),
            Some(admin) => {
                let schema = new_schema(admin).await;
                let sep = if admin.contains('?') { '&' } else { '?' };
                (
                    format!("{admin}{sep}options=-c%20search_path%3D{schema}"),
                    Some((admin.to_owned(), schema)),
                )
            }
        };
        let config = dir.path().join("enclave.toml");
        fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n[storage]\nurl = \"{url}\"\n",
                data.display()
            ),
        )
        .unwrap();
        let fixture = Fixture {
            dir,
            config,
            data,
            url,
            schema,
        };
        fixture.ok(&["init"]);
        fixture.ok(&[
            "principal",
            "add",
            "alice",
            "--tenant",
            "agency-a",
            "--clearance",
            "SECRET",
        ]);
        fixture.ok(&["key", "create", "alice"]);
        let store = fixture.store().await;
        let signer = fixture.signer();
        let tree = LeafTree::new();
        let mut next = store.audit_size().await.unwrap();
        assert_eq!(next, 2, "principal add and key create are logged");
        for size in [10, 25, SIZE] {
            let batch: Vec<NewAuditEntry> = (next..size).map(request).collect();
            store.append_audit(batch).await.unwrap();
            next = size;
            store
                .write_audit_checkpoint(&tree, ORIGIN, &[&signer])
                .await
                .unwrap()
                .unwrap();
        }
        store.close().await;
        fixture
    }

    async fn store(&self) -> Store {
        let install = install::prepare(&self.data).unwrap();
        Store::open(&self.url, install.master_key()).await.unwrap()
    }

    fn signer(&self) -> Signer {
        let install = install::prepare(&self.data).unwrap();
        Signer::from_pkcs8(ORIGIN, install.signing_key_pkcs8()).unwrap()
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_enclave"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("ENCLAVE_CONFIG")
            .env_remove("ENCLAVE_MASTER_KEY")
            .env_remove("ENCLAVE_AUDIT_SIGNING_KEY")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "enclave {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    async fn sql(&self, statements: &[String]) {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&self.url).await.unwrap();
        for s in statements {
            sqlx::query(s).execute(&pool).await.unwrap();
        }
        pool.close().await;
    }

    async fn rows(&self) -> Vec<String> {
        let reader = enclave_store::AuditReader::connect(&self.url)
            .await
            .unwrap();
        let rows = reader.rows(0, 1000).await.unwrap();
        reader.close().await;
        rows.into_iter().map(|r| r.entry).collect()
    }

    async fn notes(&self) -> Vec<String> {
        let reader = enclave_store::AuditReader::connect(&self.url)
            .await
            .unwrap();
        let notes = reader.checkpoints().await.unwrap();
        reader.close().await;
        notes.into_iter().map(|c| c.note).collect()
    }

    async fn cleanup(self) {
        if let Some((admin, schema)) = &self.schema {
            let mut conn = PgConnection::connect(admin).await.unwrap();
            sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        }
    }
}

async fn new_schema(admin: &str) -> String {
    let mut nonce = [0u8; 8];
    SystemRandom::new().fill(&mut nonce).unwrap();
    let schema: String = std::iter::once("enclave_cli_".to_owned())
        .chain(nonce.iter().map(|b| format!("{b:02x}")))
        .collect();
    let mut conn = PgConnection::connect(admin).await.unwrap();
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    schema
}

fn request(index: u64) -> NewAuditEntry {
    NewAuditEntry::now(Event::Request(RequestEvent {
        request_id: format!("req_{index}"),
        route: "chat_completions".into(),
        status: 200,
        tenant: Some("agency-a".into()),
        principal: Some("alice".into()),
        latency_ms: index,
        ..RequestEvent::default()
    }))
}

/// Entry `text` re-encoded canonically with another status: an edit only a checkpoint catches.
fn edited(text: &str) -> String {
    let mut entry = AuditEntry::from_canonical_bytes(text.as_bytes()).unwrap();
    let Event::Request(r) = &mut entry.event else {
        panic!("not a request entry")
    };
    r.status = 500;
    String::from_utf8(entry.to_canonical_bytes()).unwrap()
}

/// A forged entry with index `index`.
fn forged(index: u64) -> String {
    let entry = AuditEntry {
        index,
        time: enclave_store::now_timestamp(),
        event: Event::Request(RequestEvent {
            request_id: "forged".into(),
            route: "chat_completions".into(),
            status: 200,
            ..RequestEvent::default()
        }),
    };
    String::from_utf8(entry.to_canonical_bytes()).unwrap()
}

/// A note whose signature bytes are changed (key name and key id kept).
fn bad_signature(note: &str) -> String {
    let sig_start = note.rfind("\u{2014} ").unwrap();
    let line_end = note.len() - 1;
    let b64_start = note[sig_start..].rfind(' ').unwrap() + sig_start + 1;
    // Well inside the signature (past the 4-byte key id), a different base64 digit.
    let at = b64_start + 30;
    assert!(at < line_end);
    let old = &note[at..at + 1];
    let new = if old == "A" { "B" } else { "A" };
    format!("{}{new}{}", &note[..at], &note[at + 1..])
}

/// The log's checkpoints signed again, over `rows`, by `signer`.
fn re_signed(rows: &[String], signer: &Signer) -> Vec<String> {
    let tree = Tree::from_leaves(rows.iter().map(|r| hash_leaf(r.as_bytes())));
    [10, 25, SIZE]
        .iter()
        .map(|&size| {
            Checkpoint::new(ORIGIN, size, tree.root_at(size).unwrap())
                .unwrap()
                .sign(&[signer])
                .unwrap()
        })
        .collect()
}

fn attacker() -> Signer {
    Signer::from_seed(ORIGIN, &[66; 32]).unwrap()
}

/// Runs `enclave audit verify SOURCE ARGS` and expects exit 1 naming `index` (`None`: a
/// checkpoint problem, named by `what`).
fn expect_tampered(f: &Fixture, source: &str, args: &[&str], index: Option<u64>, what: &str) {
    let mut all = vec!["audit", "verify", source];
    all.extend_from_slice(args);
    let out = f.run(&all);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
    assert_eq!(out.stdout, b"", "{what}");
    assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
    assert!(
        stderr.starts_with("audit log tampered: "),
        "{what}: {stderr}"
    );
    match index {
        Some(i) => assert!(
            stderr.contains(&format!("first bad entry {i}:")),
            "{what}: expected entry {i}: {stderr}"
        ),
        None => assert!(!stderr.contains("first bad entry"), "{what}: {stderr}"),
    }
}

fn expect_intact(f: &Fixture, source: &str, args: &[&str]) -> String {
    let mut all = vec!["audit", "verify", source];
    all.extend_from_slice(args);
    let out = f.run(&all);
    assert!(
        out.status.success(),
        "verify {source}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every drill on a database, restoring the log in between.
async fn database_drills(f: &Fixture) {
    let source = f.url.clone();
    let rows = f.rows().await;
    let notes = f.notes().await;
    assert_eq!((rows.len() as u64, notes.len()), (SIZE, 3));
    let restore = || {
        let mut s = vec![
            "DELETE FROM audit_entries".to_owned(),
            "DELETE FROM audit_checkpoints".to_owned(),
            format!("UPDATE audit_head SET size = {SIZE} WHERE id = 0"),
        ];
        for (i, r) in rows.iter().enumerate() {
            s.push(format!(
                "INSERT INTO audit_entries (idx, entry) VALUES ({i}, '{}')",
                r.replace('\'', "''")
            ));
        }
        for (i, n) in notes.iter().enumerate() {
            s.push(format!(
                "INSERT INTO audit_checkpoints (seq, size, note, created_at) VALUES ({}, {}, '{}', 0)",
                i + 1,
                [10, 25, SIZE][i],
                n.replace('\'', "''")
            ));
        }
        s
    };
    let set_entry = |i: usize, text: &str| {
        format!(
            "UPDATE audit_entries SET entry = '{}' WHERE idx = {i}",
            text.replace('\'', "''")
        )
    };

    // The untouched log verifies, with the data dir and with the url, printing size and root.
    let expected_root = Tree::from_leaves(rows.iter().map(|r| hash_leaf(r.as_bytes()))).root();
    for src in [source.as_str(), f.data.to_str().unwrap()] {
        if src == f.data.to_str().unwrap() && f.schema.is_some() {
            continue;
        }
        let out = expect_intact(f, src, &[]);
        assert!(
            out.starts_with(&format!("size {SIZE}\nroot {expected_root}\n")),
            "{out}"
        );
        assert!(out.contains("checkpoints 3 (signed size 40)"), "{out}");
    }

    f.sql(&[set_entry(12, &edited(&rows[12]))]).await;
    expect_tampered(f, &source, &[], Some(10), "edited field");
    f.sql(&restore()).await;

    f.sql(&["DELETE FROM audit_entries WHERE idx = 15".to_owned()])
        .await;
    expect_tampered(f, &source, &[], Some(15), "deleted entry");
    f.sql(&restore()).await;

    f.sql(&[
        "UPDATE audit_entries SET idx = idx + 1000 WHERE idx >= 15".to_owned(),
        "UPDATE audit_entries SET idx = idx - 999 WHERE idx >= 1015".to_owned(),
        format!(
            "INSERT INTO audit_entries (idx, entry) VALUES (15, '{}')",
            forged(15)
        ),
        format!("UPDATE audit_head SET size = {} WHERE id = 0", SIZE + 1),
    ])
    .await;
    expect_tampered(f, &source, &[], Some(15), "inserted entry");
    f.sql(&restore()).await;

    f.sql(&[set_entry(15, &rows[16]), set_entry(16, &rows[15])])
        .await;
    expect_tampered(f, &source, &[], Some(15), "swapped entries");
    f.sql(&restore()).await;

    // The tail cut off: the head still counts it, and the last checkpoint covers it.
    f.sql(&["DELETE FROM audit_entries WHERE idx >= 35".to_owned()])
        .await;
    expect_tampered(f, &source, &[], Some(35), "truncated tail");
    f.sql(&["UPDATE audit_head SET size = 35 WHERE id = 0".to_owned()])
        .await;
    expect_tampered(f, &source, &[], Some(35), "truncated tail and head");
    f.sql(&restore()).await;

    f.sql(&[format!(
        "UPDATE audit_checkpoints SET note = '{}' WHERE seq = 2",
        bad_signature(&notes[1])
    )])
    .await;
    expect_tampered(f, &source, &[], None, "replaced signature");
    f.sql(&restore()).await;

    // An edit, with every checkpoint signed again by another key: rejected with the install's
    // key, and with the verifier key given explicitly (as text and as a file).
    let mut forged_rows = rows.clone();
    forged_rows[12] = edited(&rows[12]);
    let mut statements = vec![set_entry(12, &forged_rows[12])];
    for (i, note) in re_signed(&forged_rows, &attacker()).iter().enumerate() {
        statements.push(format!(
            "UPDATE audit_checkpoints SET note = '{note}' WHERE seq = {}",
            i + 1
        ));
    }
    f.sql(&statements).await;
    expect_tampered(f, &source, &[], None, "re-signed, install key");
    let key = f.ok(&["audit", "key"]);
    expect_tampered(f, &source, &["--key", key.trim()], None, "re-signed, --key");
    let key_file = f.dir.path().join("trusted.pub");
    fs::write(&key_file, &key).unwrap();
    expect_tampered(
        f,
        &source,
        &["--key", key_file.to_str().unwrap()],
        None,
        "re-signed, --key file",
    );
    f.sql(&restore()).await;

    // Restored, it verifies again, also with the explicit key.
    expect_intact(f, &source, &["--key", key.trim()]);
}

#[tokio::test]
async fn tamper_drills_on_sqlite_name_the_first_bad_entry() {
    let f = Fixture::build(None).await;
    database_drills(&f).await;
    f.cleanup().await;
}

#[tokio::test]
async fn tamper_drills_on_postgres_name_the_first_bad_entry() {
    let Ok(admin) = std::env::var("ENCLAVE_TEST_POSTGRES_URL") else {
        eprintln!("skipping: ENCLAVE_TEST_POSTGRES_URL is not set");
        return;
    };
    let f = Fixture::build(Some(&admin)).await;
    database_drills(&f).await;
    f.cleanup().await;
}

#[tokio::test]
async fn tamper_drills_on_an_export_name_the_first_bad_entry() {
    let f = Fixture::build(None).await;
    let export = f.dir.path().join("export");
    let out = f.ok(&["audit", "export", "--out", export.to_str().unwrap()]);
    assert!(out.contains("exported 40 entries"), "{out}");
    // The export verifies without the database.
    let out = expect_intact(&f, export.to_str().unwrap(), &[]);
    assert!(out.starts_with("size 40\n"), "{out}");

    let lines: Vec<String> = fs::read_to_string(export.join("entries.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let cp_dir = export.join("checkpoints");
    let mut cp_files: Vec<PathBuf> = fs::read_dir(&cp_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cp_files.sort();
    assert_eq!(cp_files.len(), 3);
    let notes: Vec<String> = cp_files
        .iter()
        .map(|p| fs::read_to_string(p).unwrap())
        .collect();
    let write = |lines: &[String]| {
        let mut text = lines.join("\n");
        text.push('\n');
        fs::write(export.join("entries.jsonl"), text).unwrap();
    };
    let restore = || {
        write(&lines);
        for (p, n) in cp_files.iter().zip(&notes) {
            fs::write(p, n).unwrap();
        }
    };
    let src = export.to_str().unwrap().to_owned();

    let mut l = lines.clone();
    l[12] = edited(&l[12]);
    write(&l);
    expect_tampered(&f, &src, &[], Some(10), "export: edited field");

    let mut l = lines.clone();
    l.remove(15);
    write(&l);
    expect_tampered(&f, &src, &[], Some(15), "export: deleted line");

    let mut l = lines.clone();
    l.insert(15, forged(15));
    write(&l);
    expect_tampered(&f, &src, &[], Some(15), "export: inserted line");

    let mut l = lines.clone();
    l.swap(15, 16);
    write(&l);
    expect_tampered(&f, &src, &[], Some(15), "export: swapped lines");

    write(&lines[..35]);
    expect_tampered(&f, &src, &[], Some(35), "export: truncated tail");
    // Cut mid-line: the last line has no newline.
    fs::write(
        export.join("entries.jsonl"),
        format!("{}\n{}", lines[..39].join("\n"), &lines[39][..20]),
    )
    .unwrap();
    expect_tampered(&f, &src, &[], Some(39), "export: cut mid-line");
    restore();

    fs::write(&cp_files[1], bad_signature(&notes[1])).unwrap();
    expect_tampered(&f, &src, &[], None, "export: replaced signature");
    restore();

    let mut l = lines.clone();
    l[12] = edited(&l[12]);
    write(&l);
    for (p, n) in cp_files.iter().zip(re_signed(&l, &attacker())) {
        fs::write(p, n).unwrap();
    }
    expect_tampered(&f, &src, &[], None, "export: re-signed");
    restore();
    expect_intact(&f, &src, &[]);

    // OCSF for a SIEM: one API Activity event per entry.
    let ocsf = f.ok(&["audit", "export", "--format", "ocsf"]);
    assert_eq!(ocsf.lines().count(), 40);
    for line in ocsf.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["class_uid"], 6003, "{line}");
    }
    f.cleanup().await;
}

#[tokio::test]
async fn a_proof_of_one_entry_verifies_against_the_signed_checkpoint_and_nothing_else() {
    let f = Fixture::build(None).await;
    let proof = f.ok(&["audit", "prove", "12"]);
    let v: serde_json::Value = serde_json::from_str(&proof).unwrap();
    assert_eq!(
        (v["index"].as_u64(), v["size"].as_u64()),
        (Some(12), Some(SIZE))
    );
    let proof_file = f.dir.path().join("proof.json");
    fs::write(&proof_file, &proof).unwrap();
    let out = f.ok(&["audit", "verify-proof", proof_file.to_str().unwrap()]);
    assert!(
        out.starts_with("ok: entry 12 is in log enclave.local/audit of size 40"),
        "{out}"
    );

    // With the checkpoint and the key given separately.
    let note = f.ok(&["audit", "checkpoint"]);
    let note_file = f.dir.path().join("checkpoint.note");
    fs::write(&note_file, &note).unwrap();
    let key = f.ok(&["audit", "key"]);
    f.ok(&[
        "audit",
        "verify-proof",
        proof_file.to_str().unwrap(),
        "--checkpoint",
        note_file.to_str().unwrap(),
        "--key",
        key.trim(),
    ]);

    // A changed hash, a changed entry, an untrusted key: exit 1.
    let mut bad = v.clone();
    let hashes = bad["hashes"].as_array_mut().unwrap();
    hashes.swap(0, 1);
    let mut bad_entry = v.clone();
    bad_entry["entry"] = serde_json::Value::String(edited(v["entry"].as_str().unwrap()));
    bad_entry["leaf_hash"] = serde_json::Value::Null;
    for (what, doc, extra) in [
        ("swapped hashes", bad, vec![]),
        ("edited entry", bad_entry, vec![]),
        (
            "untrusted key",
            v.clone(),
            vec!["--key".to_owned(), attacker().verifier_key().to_string()],
        ),
    ] {
        let file = f.dir.path().join("bad.json");
        fs::write(&file, doc.to_string()).unwrap();
        let mut args = vec!["audit", "verify-proof", file.to_str().unwrap()];
        args.extend(extra.iter().map(String::as_str));
        let out = f.run(&args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // An entry after the latest checkpoint is not covered yet; --sign makes one.
    let out = f.run(&["audit", "prove", "40"]);
    assert_eq!(out.status.code(), Some(1));
    f.ok(&["key", "create", "alice"]);
    let note = f.ok(&["audit", "checkpoint", "--sign"]);
    assert!(note.contains("\n41\n"), "{note}");
    f.ok(&["audit", "prove", "40"]);
    f.cleanup().await;
}

#[tokio::test]
async fn admin_actions_are_logged_without_secrets() {
    let f = Fixture::build(None).await;
    let key = f.ok(&["key", "create", "alice"]).trim().to_owned();
    f.ok(&[
        "principal",
        "add",
        "bob",
        "--tenant",
        "agency-b",
        "--clearance",
        "SECRET//NOFORN",
        "--role",
        "auditor",
    ]);
    f.ok(&["key", "revoke", &key]);
    let rows = f.rows().await;
    let admin: Vec<enclave_audit::AdminEvent> = rows
        .iter()
        .filter_map(|r| {
            match AuditEntry::from_canonical_bytes(r.as_bytes())
                .unwrap()
                .event
            {
                Event::Admin(a) => Some(a),
                Event::Request(_) => None,
            }
        })
        .collect();
    let actions: Vec<&str> = admin.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "principal.add",
            "key.create",
            "key.create",
            "principal.add",
            "key.revoke"
        ]
    );
    let id = &key[4..20];
    assert_eq!(admin[2].target.as_deref(), Some(id));
    assert_eq!(admin[4].target.as_deref(), Some(id));
    assert_eq!(admin[4].tenant.as_deref(), Some("agency-a"));
    assert_eq!(admin[3].details["role"], "auditor");
    assert!(admin.iter().all(|a| a.actor.starts_with("cli:")));
    for r in &rows {
        assert!(!r.contains(&key[21..]), "the key's secret is in the log");
    }
    expect_intact(&f, &f.url, &[]);
    f.cleanup().await;
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["audit", "verify"],
        vec!["audit", "verify", "/nonexistent/enclave"],
        vec!["audit", "bogus"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_enclave"))
            .args(&args)
            .current_dir(dir.path())
            .env_remove("ENCLAVE_CONFIG")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    // A data directory without a signing key and no --key: nothing to trust.
    let data = dir.path().join("d");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("enclave.db"), b"").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_enclave"))
        .args(["audit", "verify", data.to_str().unwrap()])
        .current_dir(dir.path())
        .env_remove("ENCLAVE_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
