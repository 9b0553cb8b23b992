//! `install::prepare`: creates once, never overwrites, refuses corrupt key files.

use std::fs;

use enclave_store::StoreError;
use enclave_store::install::{self, MASTER_KEY_FILE, SIGNING_KEY_FILE};
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::backends::each_backend;
use crate::principals::principal;

#[test]
fn prepare_creates_the_directory_and_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a").join("data");
    let inst = install::prepare(&dir).unwrap();
    assert_eq!(inst.data_dir, dir);
    assert_eq!(
        inst.created,
        vec![
            dir.clone(),
            dir.join(MASTER_KEY_FILE),
            dir.join(SIGNING_KEY_FILE)
        ]
    );
    assert_eq!(fs::read(dir.join(MASTER_KEY_FILE)).unwrap().len(), 32);
    let pair = Ed25519KeyPair::from_pkcs8(inst.signing_key_pkcs8()).unwrap();
    assert_eq!(pair.public_key().as_ref().len(), 32);
    // No temporary files left behind.
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let debug = format!("{inst:?} {:?}", inst.master_key());
    assert!(debug.contains("MasterKey(..)"), "{debug}");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(MASTER_KEY_FILE)), 0o600);
        assert_eq!(mode(&dir.join(SIGNING_KEY_FILE)), 0o600);
    }
}

#[test]
fn prepare_again_creates_nothing_and_keeps_the_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let first = install::prepare(&dir).unwrap();
    let master = fs::read(dir.join(MASTER_KEY_FILE)).unwrap();
    let signing = fs::read(dir.join(SIGNING_KEY_FILE)).unwrap();

    let second = install::prepare(&dir).unwrap();
    assert!(second.created.is_empty(), "{:?}", second.created);
    assert_eq!(fs::read(dir.join(MASTER_KEY_FILE)).unwrap(), master);
    assert_eq!(fs::read(dir.join(SIGNING_KEY_FILE)).unwrap(), signing);
    assert_eq!(first.signing_key_pkcs8(), second.signing_key_pkcs8());

    // A missing signing key is created; the master key is left alone.
    fs::remove_file(dir.join(SIGNING_KEY_FILE)).unwrap();
    let third = install::prepare(&dir).unwrap();
    assert_eq!(third.created, vec![dir.join(SIGNING_KEY_FILE)]);
    assert_eq!(fs::read(dir.join(MASTER_KEY_FILE)).unwrap(), master);
    assert_ne!(third.signing_key_pkcs8(), first.signing_key_pkcs8());
}

#[test]
fn separate_installs_get_separate_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let a = install::prepare(&tmp.path().join("a")).unwrap();
    let b = install::prepare(&tmp.path().join("b")).unwrap();
    assert_ne!(
        fs::read(tmp.path().join("a").join(MASTER_KEY_FILE)).unwrap(),
        fs::read(tmp.path().join("b").join(MASTER_KEY_FILE)).unwrap()
    );
    assert_ne!(a.signing_key_pkcs8(), b.signing_key_pkcs8());
}

#[test]
fn corrupt_key_files_are_errors_naming_the_file_and_are_kept() {
    for (file, contents) in [
        (MASTER_KEY_FILE, b"short".to_vec()),
        (MASTER_KEY_FILE, Vec::new()),
        (MASTER_KEY_FILE, vec![0u8; 33]),
        (MASTER_KEY_FILE, vec![0u8; 100_000]),
        (SIGNING_KEY_FILE, vec![0u8; 85]),
        (SIGNING_KEY_FILE, b"-----BEGIN PRIVATE KEY-----".to_vec()),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        install::prepare(&dir).unwrap();
        let path = dir.join(file);
        fs::write(&path, &contents).unwrap();
        let err = install::prepare(&dir).unwrap_err();
        assert!(
            matches!(err, StoreError::CorruptKeyFile { .. }),
            "{file}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.starts_with("corrupt key file"), "{msg}");
        assert_eq!(fs::read(&path).unwrap(), contents, "{file} was replaced");
    }
}

#[test]
fn data_dir_that_is_a_file_is_invalid() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("data");
    fs::write(&file, "x").unwrap();
    let err = install::prepare(&file).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert_eq!(fs::read(&file).unwrap(), b"x");
}

#[test]
fn concurrent_prepares_agree_on_one_set_of_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let dir = dir.clone();
            std::thread::spawn(move || install::prepare(&dir).unwrap())
        })
        .collect();
    let installs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let created: usize = installs
        .iter()
        .map(|i| i.created.iter().filter(|p| p.is_file()).count())
        .sum();
    assert_eq!(created, 2, "each key file is created exactly once");
    for i in &installs {
        assert_eq!(i.signing_key_pkcs8(), installs[0].signing_key_pkcs8());
    }
}

#[tokio::test]
async fn a_prepared_master_key_drives_the_store() {
    each_backend(|db| async move {
        let tmp = tempfile::tempdir().unwrap();
        let inst = install::prepare(tmp.path()).unwrap();
        let store = enclave_store::Store::open(&db.url, inst.master_key())
            .await
            .unwrap();
        store
            .add_principal(&principal("alice", "SECRET"))
            .await
            .unwrap();
        let (_, key) = store.create_key("alice").await.unwrap();
        // Reading the same install again gives the same hash key.
        let again = install::prepare(tmp.path()).unwrap();
        let reopened = enclave_store::Store::open(&db.url, again.master_key())
            .await
            .unwrap();
        assert!(reopened.authenticate_key(&key).await.unwrap().is_some());
        // A different install does not.
        let other_dir = tempfile::tempdir().unwrap();
        let other = install::prepare(other_dir.path()).unwrap();
        let foreign = enclave_store::Store::open(&db.url, other.master_key())
            .await
            .unwrap();
        assert!(foreign.authenticate_key(&key).await.unwrap().is_none());
    })
    .await;
}

#[test]
fn secrets_from_the_environment_or_configured_files_replace_the_data_dir_files() {
    use base64::Engine as _;
    use enclave_store::install::{KeySource, KeySources, MASTER_KEY_ENV, SIGNING_KEY_ENV};

    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("shared");
    let original = install::prepare(&shared).unwrap();
    let master = fs::read(shared.join(MASTER_KEY_FILE)).unwrap();
    let signing = fs::read(shared.join(SIGNING_KEY_FILE)).unwrap();
    let hex: String = master.iter().map(|b| format!("{b:02x}")).collect();
    let b64 = base64::engine::general_purpose::STANDARD;

    // From the environment, as hex and as base64: no key file is created in the data dir.
    for master_text in [hex.clone(), b64.encode(&master)] {
        let dir = tmp.path().join(format!("replica-{}", master_text.len()));
        let env = [
            (MASTER_KEY_ENV, master_text.clone()),
            (SIGNING_KEY_ENV, b64.encode(&signing)),
        ];
        let sources = KeySources::default()
            .with_env(|name| env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()));
        let inst = install::prepare_with(&dir, &sources).unwrap();
        assert_eq!(inst.created, vec![dir.clone()]);
        assert_eq!(inst.master_key_source(), &KeySource::Env(MASTER_KEY_ENV));
        assert_eq!(inst.signing_key_source(), &KeySource::Env(SIGNING_KEY_ENV));
        assert_eq!(inst.signing_key_pkcs8(), original.signing_key_pkcs8());
        assert_eq!(
            inst.master_key().audit_digest_keys().tenant_key("t"),
            original.master_key().audit_digest_keys().tenant_key("t")
        );
        assert!(!format!("{sources:?}").contains(&master_text));
    }

    // From configured files.
    let sources = KeySources {
        master_key_file: Some(shared.join(MASTER_KEY_FILE)),
        audit_signing_key_file: Some(shared.join(SIGNING_KEY_FILE)),
        ..KeySources::default()
    };
    let dir = tmp.path().join("replica-files");
    let inst = install::prepare_with(&dir, &sources).unwrap();
    assert_eq!(inst.created, vec![dir.clone()]);
    assert_eq!(
        inst.master_key_source(),
        &KeySource::File(shared.join(MASTER_KEY_FILE))
    );
    assert_eq!(inst.signing_key_pkcs8(), original.signing_key_pkcs8());

    // A configured file is never created.
    let missing = KeySources {
        master_key_file: Some(tmp.path().join("nope.key")),
        ..KeySources::default()
    };
    let err = install::prepare_with(&tmp.path().join("r2"), &missing).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    assert!(!tmp.path().join("nope.key").exists());

    // Values that are not keys are refused, without echoing them.
    for (name, value) in [
        (MASTER_KEY_ENV, "not a key".to_owned()),
        (MASTER_KEY_ENV, hex[..62].to_owned()),
        (SIGNING_KEY_ENV, b64.encode(b"nonsense")),
    ] {
        let sources = KeySources::default().with_env(|n| (n == name).then(|| value.clone()));
        let err = install::prepare_with(&tmp.path().join("r3"), &sources).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with(name), "{msg}");
        assert!(!msg.contains(&value), "{msg}");
    }
}

#[cfg(unix)]
#[test]
fn a_key_file_every_user_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    install::prepare(&dir).unwrap();
    for file in [MASTER_KEY_FILE, SIGNING_KEY_FILE] {
        let path = dir.join(file);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = install::prepare(&dir).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
        assert!(msg.contains("readable by every user"), "{msg}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        install::prepare(&dir).unwrap();
    }
}

#[test]
fn audit_digest_keys_are_per_tenant_hmacs_of_the_master_key() {
    use ring::hmac;

    let master = enclave_store::install::MasterKey::from_bytes([9; 32]);
    let keys = master.audit_digest_keys();
    let expected = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, &[9; 32]),
        b"enclave audit digest v1\0agency-a",
    );
    assert_eq!(keys.tenant_key("agency-a").as_slice(), expected.as_ref());
    assert_ne!(keys.tenant_key("agency-a"), keys.tenant_key("agency-b"));
    assert_eq!(format!("{keys:?}"), "AuditDigestKeys(..)");
}
