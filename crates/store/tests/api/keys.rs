//! API keys: create, authenticate, list, revoke; hostile keys; keys bound to one master key.

use enclave_store::{KeyRecord, Store, StoreError};

use crate::backends::{Db, each_backend, master, sqlite_dir};
use crate::principals::principal;

async fn store_with_alice(db: &Db) -> Store {
    let store = db.open().await;
    store
        .add_principal(&principal("alice", "SECRET"))
        .await
        .unwrap();
    store
        .add_principal(&principal("bob", "TOP SECRET"))
        .await
        .unwrap();
    store
}

fn assert_key_format(key: &str, record: &KeyRecord) {
    assert_eq!(key.len(), 85, "{key}");
    let rest = key.strip_prefix("enk_").unwrap();
    let (id, secret) = rest.split_once('_').unwrap();
    assert_eq!(id, record.id);
    assert_eq!(id.len(), 16);
    assert_eq!(secret.len(), 64);
    assert!(
        rest.bytes()
            .all(|b| b == b'_' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
}

#[tokio::test]
async fn created_key_authenticates_its_principal() {
    each_backend(|db| async move {
        let store = store_with_alice(&db).await;
        let (record, key) = store.create_key("alice").await.unwrap();
        assert_key_format(&key, &record);
        assert_eq!(record.principal, "alice");
        assert_eq!(record.revoked_at, None);

        let (k, p) = store.authenticate_key(&key).await.unwrap().unwrap();
        assert_eq!(k, record);
        assert_eq!(p.name, "alice");
        assert_eq!(p.clearance, "SECRET");

        let (bob_record, bob_key) = store.create_key("bob").await.unwrap();
        assert_ne!(bob_key, key);
        let (_, p) = store.authenticate_key(&bob_key).await.unwrap().unwrap();
        assert_eq!(p.name, "bob");

        assert_eq!(store.list_keys().await.unwrap().len(), 2);
        let ids: Vec<String> = store
            .list_keys()
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.id)
            .collect();
        assert!(ids.contains(&record.id) && ids.contains(&bob_record.id));
    })
    .await;
}

#[tokio::test]
async fn key_for_unknown_principal_is_not_found() {
    each_backend(|db| async move {
        let store = db.open().await;
        let err = store.create_key("nobody").await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
        assert!(
            err.to_string().contains("unknown principal `nobody`"),
            "{err}"
        );
        assert!(store.list_keys().await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn revoking_by_id_rejects_the_key_and_only_that_key() {
    each_backend(|db| async move {
        let store = store_with_alice(&db).await;
        let (a, a_key) = store.create_key("alice").await.unwrap();
        let (_, b_key) = store.create_key("alice").await.unwrap();

        assert!(store.revoke_key(&a.id).await.unwrap());
        assert!(store.authenticate_key(&a_key).await.unwrap().is_none());
        assert!(store.authenticate_key(&b_key).await.unwrap().is_some());
        // Already revoked: nothing matches, and the revocation time does not move.
        let listed = store.list_keys().await.unwrap();
        let revoked_at = listed.iter().find(|k| k.id == a.id).unwrap().revoked_at;
        assert!(revoked_at.is_some());
        assert!(!store.revoke_key(&a.id).await.unwrap());
        assert!(!store.revoke_key(&a_key).await.unwrap());
        let listed = store.list_keys().await.unwrap();
        assert_eq!(
            listed.iter().find(|k| k.id == a.id).unwrap().revoked_at,
            revoked_at
        );
        // Revoked keys stay listed.
        assert_eq!(listed.len(), 2);
    })
    .await;
}

#[tokio::test]
async fn revoking_by_whole_key_needs_the_right_secret() {
    each_backend(|db| async move {
        let store = store_with_alice(&db).await;
        let (a, a_key) = store.create_key("alice").await.unwrap();
        let (_, b_key) = store.create_key("alice").await.unwrap();

        // a's id with b's secret: not a's key, so nothing is revoked.
        let forged = format!("enk_{}_{}", a.id, &b_key[21..]);
        assert!(!store.revoke_key(&forged).await.unwrap());
        assert!(store.authenticate_key(&a_key).await.unwrap().is_some());

        assert!(store.revoke_key(&a_key).await.unwrap());
        assert!(store.authenticate_key(&a_key).await.unwrap().is_none());
        assert!(store.authenticate_key(&b_key).await.unwrap().is_some());
    })
    .await;
}

#[tokio::test]
async fn revoking_what_matches_nothing_is_false() {
    each_backend(|db| async move {
        let store = store_with_alice(&db).await;
        let (_, key) = store.create_key("alice").await.unwrap();
        for input in [
            "",
            "0123456789abcdef",
            "0123456789ABCDEF",
            "not-a-key",
            "' OR 1=1 --",
            "%",
            "enk_",
            &key.to_uppercase(),
            &format!("{key} "),
        ] {
            assert!(!store.revoke_key(input).await.unwrap(), "{input:?}");
        }
        assert!(store.authenticate_key(&key).await.unwrap().is_some());
    })
    .await;
}

#[tokio::test]
async fn malformed_and_hostile_keys_authenticate_nobody() {
    each_backend(|db| async move {
        let store = store_with_alice(&db).await;
        let (record, key) = store.create_key("alice").await.unwrap();
        let (_, other) = store.create_key("bob").await.unwrap();
        let secret = &key[21..];
        let huge = "a".repeat(1 << 20);
        let hostile = [
            String::new(),
            " ".into(),
            "enk_".into(),
            huge.clone(),
            format!("enk_{}_{}", record.id, huge),
            key.to_uppercase(),
            format!("Bearer {key}"),
            format!("{key}\n"),
            format!(" {key}"),
            key.replacen("enk_", "sk-_", 1),
            key.replacen("enk_", "enk-", 1),
            format!("enk_{}_{}", record.id, &secret[..63]),
            format!("enk_{}_{}g", record.id, &secret[..63]),
            format!("enk_{}_{}'", record.id, &secret[..63]),
            format!("enk_{}'--_{}", &record.id[..13], secret),
            format!("enk_{}_{}", record.id, "0".repeat(64)),
            // Another key's id with this key's secret, and the other way round.
            format!("enk_{}_{}", &other[4..20], secret),
            format!("enk_{}_{}", record.id, &other[21..]),
            format!("enk_{}_{}", "f".repeat(16), secret),
            "enk_' OR '1'='1_' OR '1'='1".into(),
            "enk_0000000000000000_\0".into(),
        ];
        for k in &hostile {
            let got = store.authenticate_key(k).await.unwrap();
            assert!(got.is_none(), "{:?} authenticated", &k[..k.len().min(60)]);
        }
        assert!(store.authenticate_key(&key).await.unwrap().is_some());
    })
    .await;
}

#[tokio::test]
async fn keys_do_not_authenticate_under_another_master_key() {
    each_backend(|db| async move {
        let store = store_with_alice(&db).await;
        let (record, key) = store.create_key("alice").await.unwrap();
        let other = db.open_with(master(2)).await;
        assert!(other.authenticate_key(&key).await.unwrap().is_none());
        assert!(!other.revoke_key(&key).await.unwrap());
        // The same master key again (a restart) still accepts it.
        let same = db.open_with(master(1)).await;
        let (k, _) = same.authenticate_key(&key).await.unwrap().unwrap();
        assert_eq!(k.id, record.id);
    })
    .await;
}

#[tokio::test]
async fn the_key_itself_is_not_in_the_database_files() {
    each_backend(|db| async move {
        if db.backend != "sqlite" {
            return;
        }
        let store = store_with_alice(&db).await;
        let (_, key) = store.create_key("alice").await.unwrap();
        let secret = key[21..].to_owned();
        store.close().await;
        let dir = sqlite_dir(&db);
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            // SQLite may still be removing its `-wal`/`-shm` files as the pool's worker
            // threads finish closing: a file gone between listing and reading held nothing.
            let bytes = match std::fs::read(entry.unwrap().path()) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("reading a database file: {e}"),
            };
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(&secret));
            assert!(!text.contains(&key));
            checked += 1;
        }
        assert!(checked >= 1);
    })
    .await;
}

#[tokio::test]
async fn concurrent_key_creation_on_clones() {
    each_backend(|db| async move {
        let store = store_with_alice(&db).await;
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let s = store.clone();
            tasks.push(tokio::spawn(
                async move { s.create_key("alice").await.unwrap() },
            ));
        }
        let mut keys = Vec::new();
        for t in tasks {
            keys.push(t.await.unwrap().1);
        }
        for k in &keys {
            assert!(store.authenticate_key(k).await.unwrap().is_some());
        }
        assert_eq!(store.list_keys().await.unwrap().len(), 8);
    })
    .await;
}
