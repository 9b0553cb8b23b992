//! Runs the real `enclave` binary for `init`, `principal` and `key` in a scratch directory:
//! init is idempotent and never overwrites, identities round-trip, keys printed by the CLI
//! authenticate through the store, and bad input fails with exit 1 and one line on stderr.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use enclave_gateway::config::STARTER_CONFIG;
use enclave_store::Store;
use enclave_store::install;

/// A scratch directory, removed on drop. (The cli package has no `tempfile` dev-dependency.)
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "enclave-admin-cli-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Writes a config whose data directory and database live in this directory.
    fn config(&self) -> PathBuf {
        let file = self.0.join("test.toml");
        let data = self.0.join("data");
        fs::write(
            &file,
            format!(
                "data_dir = \"{d}\"\n\n[storage]\nurl = \"sqlite://{d}/enclave.db\"\n",
                d = data.display()
            ),
        )
        .unwrap();
        file
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs `enclave ARGS` in `dir`, with no `ENCLAVE_CONFIG` from the outside.
fn enclave(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_enclave"))
        .args(args)
        .current_dir(dir)
        .env_remove("ENCLAVE_CONFIG")
        .output()
        .expect("the enclave binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Runs and expects success; returns stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let o = enclave(dir, args);
    assert!(
        o.status.success(),
        "enclave {args:?} failed ({:?}): {}",
        o.status.code(),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs and expects exit code `code` with one line on stderr and nothing on stdout; returns the
/// line.
fn fails(dir: &Path, code: i32, args: &[&str]) -> String {
    let o = enclave(dir, args);
    assert_eq!(
        o.status.code(),
        Some(code),
        "enclave {args:?}: {}",
        stderr(&o)
    );
    assert_eq!(stdout(&o), "", "enclave {args:?}");
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err:?}");
    err.trim_end().to_owned()
}

/// Every file under `dir` with its contents, sorted, to show nothing changed.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.to_string_lossy().contains("enclave.db") {
                // The database may be rewritten by a checkpoint; its content is checked through
                // the commands instead.
                out.push((p.clone(), fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn init_with(dir: &Scratch) -> PathBuf {
    let config = dir.config();
    ok(dir.path(), &["--config", config.to_str().unwrap(), "init"]);
    config
}

#[test]
fn init_without_config_writes_the_starter_and_second_run_changes_nothing() {
    let dir = Scratch::new();
    let first = ok(dir.path(), &["init"]);
    let db_line = format!(
        "created  ./enclave-data/enclave.db (sqlite, schema version {})",
        enclave_store::SCHEMA_VERSION
    );
    for line in [
        "created  enclave.toml",
        "created  ./enclave-data\n",
        "created  ./enclave-data/master.key",
        "created  ./enclave-data/audit-signing.key",
        &db_line,
        "next: enclave --config enclave.toml principal add",
    ] {
        assert!(first.contains(line), "missing {line:?} in:\n{first}");
    }
    assert_eq!(
        fs::read_to_string(dir.path().join("enclave.toml")).unwrap(),
        STARTER_CONFIG
    );
    assert_eq!(
        fs::read(dir.path().join("enclave-data/master.key"))
            .unwrap()
            .len(),
        32
    );
    let before = snapshot(dir.path());

    let second = ok(dir.path(), &["init"]);
    assert!(
        !second.contains("created"),
        "second init created something:\n{second}"
    );
    assert!(second.contains("exists   enclave.toml"), "{second}");
    assert!(
        second.contains("exists   ./enclave-data/master.key"),
        "{second}"
    );
    assert_eq!(snapshot(dir.path()), before, "second init changed a file");

    // The defaults (no --config) now work for the other commands.
    ok(
        dir.path(),
        &[
            "principal",
            "add",
            "alice",
            "--tenant",
            "a",
            "--clearance",
            "SECRET",
        ],
    );
    let key = ok(dir.path(), &["key", "create", "alice"]);
    assert!(key.starts_with("enk_"), "{key}");
}

#[cfg(unix)]
#[test]
fn init_creates_private_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Scratch::new();
    ok(dir.path(), &["init"]);
    let mode = |p: &str| {
        fs::metadata(dir.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("enclave-data"), 0o700);
    assert_eq!(mode("enclave-data/master.key"), 0o600);
    assert_eq!(mode("enclave-data/audit-signing.key"), 0o600);
    assert_eq!(mode("enclave.toml"), 0o600);
}

#[test]
fn init_with_a_new_config_path_writes_the_starter_there() {
    let dir = Scratch::new();
    fs::create_dir(dir.path().join("etc")).unwrap();
    let out = ok(dir.path(), &["init", "--config", "etc/enclave.toml"]);
    assert!(out.contains("created  etc/enclave.toml"), "{out}");
    assert!(
        out.contains("--config etc/enclave.toml principal add"),
        "{out}"
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("etc/enclave.toml")).unwrap(),
        STARTER_CONFIG
    );
    // The starter's data_dir is ./enclave-data, relative to the working directory.
    assert!(dir.path().join("enclave-data/master.key").is_file());
    assert!(
        !dir.path().join("enclave.toml").exists(),
        "wrote the default file too"
    );
}

#[test]
fn init_with_an_existing_config_prepares_its_data_dir_and_keeps_the_file() {
    let dir = Scratch::new();
    let config = dir.config();
    let text = fs::read_to_string(&config).unwrap();
    // `--config` after the subcommand.
    let out = ok(dir.path(), &["init", "--config", config.to_str().unwrap()]);
    assert!(
        out.contains(&format!("exists   {}", config.display())),
        "{out}"
    );
    let data = dir.path().join("data");
    assert!(
        out.contains(&format!("created  {}", data.join("master.key").display())),
        "{out}"
    );
    assert!(data.join("enclave.db").is_file());
    assert!(data.join("audit-signing.key").is_file());
    assert_eq!(fs::read_to_string(&config).unwrap(), text);
    assert!(!dir.path().join("enclave-data").exists());
    assert!(!dir.path().join("enclave.toml").exists());

    let before = snapshot(dir.path());
    let again = ok(dir.path(), &["--config", config.to_str().unwrap(), "init"]);
    assert!(!again.contains("created"), "{again}");
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn init_never_replaces_a_corrupt_key_file() {
    let dir = Scratch::new();
    let config = init_with(&dir);
    let master = dir.path().join("data/master.key");
    fs::write(&master, b"short").unwrap();
    let err = fails(
        dir.path(),
        2,
        &["--config", config.to_str().unwrap(), "init"],
    );
    assert!(err.starts_with("corrupt key file"), "{err}");
    assert!(err.contains("master.key"), "{err}");
    assert_eq!(fs::read(&master).unwrap(), b"short");
}

#[test]
fn invalid_config_is_exit_1() {
    let dir = Scratch::new();
    let config = dir.path().join("bad.toml");
    fs::write(&config, "no_such_key = 1\n").unwrap();
    let o = enclave(
        dir.path(),
        &["--config", config.to_str().unwrap(), "principal", "list"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no_such_key"), "{}", stderr(&o));
}

#[test]
fn commands_before_init_ask_for_init() {
    let dir = Scratch::new();
    let config = dir.config();
    let c = config.to_str().unwrap();
    for args in [
        vec!["--config", c, "principal", "list"],
        vec!["--config", c, "key", "list"],
        vec!["principal", "list"],
    ] {
        let err = fails(dir.path(), 1, &args);
        assert!(err.contains("run `enclave init"), "{err}");
    }
    assert!(
        !dir.path().join("data").exists(),
        "created a data dir without init"
    );
    assert!(
        !dir.path().join("enclave-data").exists(),
        "created a data dir without init"
    );
}

#[test]
fn principals_are_added_and_listed() {
    let dir = Scratch::new();
    let config = init_with(&dir);
    let c = config.to_str().unwrap();
    let out = ok(
        dir.path(),
        &[
            "--config",
            c,
            "principal",
            "add",
            "alice",
            "--tenant",
            "agency-a",
            "--clearance",
            "secret//noforn",
        ],
    );
    assert_eq!(
        out,
        "added principal alice (tenant agency-a, role user, nationality USA, clearance \
         SECRET//NOFORN)\n"
    );
    // `--config` after the subcommand, every option given.
    ok(
        dir.path(),
        &[
            "principal",
            "add",
            "bob",
            "--tenant",
            "agency-b",
            "--clearance",
            "TOP SECRET//SI/TK//REL TO USA, GBR",
            "--nationality",
            "GBR",
            "--role",
            "auditor",
            "--config",
            c,
        ],
    );
    let list = ok(dir.path(), &["principal", "list", "--config", c]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    let cols = |l: &str| {
        l.split("  ")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        cols(lines[0]),
        ["NAME", "TENANT", "ROLE", "NATIONALITY", "CLEARANCE"]
    );
    assert_eq!(
        cols(lines[1]),
        ["alice", "agency-a", "user", "USA", "SECRET//NOFORN"]
    );
    assert_eq!(
        cols(lines[2]),
        [
            "bob",
            "agency-b",
            "auditor",
            "GBR",
            "TOP SECRET//SI/TK//REL TO USA, GBR"
        ]
    );
}

#[test]
fn bad_principals_are_exit_1_with_a_reason() {
    let dir = Scratch::new();
    let config = init_with(&dir);
    let c = config.to_str().unwrap();
    fn add<'a>(c: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["--config", c, "principal", "add"];
        args.extend_from_slice(extra);
        args
    }
    ok(
        dir.path(),
        &add(c, &["alice", "--tenant", "a", "--clearance", "SECRET"]),
    );

    let err = fails(
        dir.path(),
        1,
        &add(c, &["alice", "--tenant", "a", "--clearance", "SECRET"]),
    );
    assert_eq!(err, "principal `alice` already exists: choose another name");
    let err = fails(
        dir.path(),
        1,
        &add(
            c,
            &["carol", "--tenant", "a", "--clearance", "SUPER SECRET"],
        ),
    );
    assert!(err.starts_with("invalid clearance `SUPER SECRET`"), "{err}");
    let err = fails(
        dir.path(),
        1,
        &add(
            c,
            &[
                "carol",
                "--tenant",
                "a",
                "--clearance",
                "SECRET",
                "--nationality",
                "XXX",
            ],
        ),
    );
    assert!(err.starts_with("unknown nationality `XXX`"), "{err}");
    let err = fails(
        dir.path(),
        1,
        &add(
            c,
            &[
                "carol",
                "--tenant",
                "a",
                "--clearance",
                "SECRET",
                "--role",
                "root",
            ],
        ),
    );
    assert_eq!(
        err,
        "unknown role `root`: expected one of user, admin, auditor, metrics"
    );
    let err = fails(
        dir.path(),
        1,
        &add(c, &["car ol", "--tenant", "a", "--clearance", "SECRET"]),
    );
    assert!(err.starts_with("invalid principal name"), "{err}");

    let list = ok(dir.path(), &["--config", c, "principal", "list"]);
    assert_eq!(list.lines().count(), 2, "only alice: {list}");
}

#[test]
fn key_create_prints_only_a_key_that_authenticates() {
    let dir = Scratch::new();
    let config = init_with(&dir);
    let c = config.to_str().unwrap();
    ok(
        dir.path(),
        &[
            "--config",
            c,
            "principal",
            "add",
            "alice",
            "--tenant",
            "a",
            "--clearance",
            "SECRET//NOFORN",
        ],
    );
    let o = enclave(dir.path(), &["--config", c, "key", "create", "alice"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "{out:?}");
    assert!(out.ends_with('\n'));
    let key = out.trim_end();
    assert_eq!(key.len(), 85, "{key}");
    assert!(key.starts_with("enk_"));
    // `--config` after the subcommand too.
    let second = ok(dir.path(), &["key", "create", "alice", "--config", c]);
    assert_ne!(second.trim_end(), key);

    // The printed key authenticates alice through the same install.
    let data = dir.path().join("data");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let inst = install::prepare(&data).unwrap();
        let url = format!("sqlite://{}", data.join("enclave.db").display());
        let store = Store::open(&url, inst.master_key()).await.unwrap();
        let (_, p) = store
            .authenticate_key(key)
            .await
            .unwrap()
            .expect("the key authenticates");
        assert_eq!(p.name, "alice");
        assert_eq!(p.clearance, "SECRET//NOFORN");
        store.close().await;
    });

    let err = fails(dir.path(), 1, &["--config", c, "key", "create", "nobody"]);
    assert!(err.contains("unknown principal `nobody`"), "{err}");
}

#[test]
fn keys_are_listed_and_revoked_by_id_or_by_key() {
    let dir = Scratch::new();
    let config = init_with(&dir);
    let c = config.to_str().unwrap();
    ok(
        dir.path(),
        &[
            "--config",
            c,
            "principal",
            "add",
            "alice",
            "--tenant",
            "a",
            "--clearance",
            "SECRET",
        ],
    );
    let k1 = ok(dir.path(), &["--config", c, "key", "create", "alice"])
        .trim_end()
        .to_owned();
    let k2 = ok(dir.path(), &["--config", c, "key", "create", "alice"])
        .trim_end()
        .to_owned();
    let id1 = &k1[4..20];
    let id2 = &k2[4..20];

    let list = ok(dir.path(), &["--config", c, "key", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(
        lines[0].starts_with("ID")
            && lines[0].contains("PRINCIPAL")
            && lines[0].ends_with("REVOKED")
    );
    for id in [id1, id2] {
        let row = lines.iter().find(|l| l.starts_with(id)).unwrap();
        assert!(row.contains("alice") && row.ends_with('-'), "{row}");
    }
    assert!(!list.contains(&k1[21..]), "key list shows a secret");

    // By id.
    assert_eq!(
        ok(dir.path(), &["--config", c, "key", "revoke", id1]),
        format!("revoked key {id1}\n")
    );
    // By whole key: the output shows only the id.
    assert_eq!(
        ok(dir.path(), &["key", "revoke", &k2, "--config", c]),
        format!("revoked key {id2}\n")
    );

    let list = ok(dir.path(), &["--config", c, "key", "list"]);
    for line in list.lines().skip(1) {
        assert!(!line.ends_with('-'), "not revoked: {line}");
        assert!(line.ends_with('Z'), "{line}");
    }

    // Nothing left to match: exit 1, and the key is not echoed.
    for input in [id1, k2.as_str(), "0000000000000000", "nonsense"] {
        let err = fails(dir.path(), 1, &["--config", c, "key", "revoke", input]);
        assert_eq!(
            err,
            "no active API key matches the given id or key: see `enclave key list`"
        );
    }
}

#[test]
fn marking_still_works_next_to_the_admin_commands() {
    let dir = Scratch::new();
    assert_eq!(
        ok(dir.path(), &["marking", "normalize", "secret//noforn"]),
        "SECRET//NOFORN\n"
    );
}
