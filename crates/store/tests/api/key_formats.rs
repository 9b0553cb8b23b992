//! Key formats: new keys carry a check tag that tells them from made-up keys without the
//! database; keys made before (legacy keys, schema version 1) keep working after the upgrade.

use enclave_store::{KeyFormat, KeyLookup, KeyShape, SCHEMA_VERSION, Store};
use ring::hmac;

use crate::backends::{Db, V1, each_backend, old_schema};
use crate::principals::principal;

/// The master key the backends helper opens stores with (`master(1)`).
const MASTER: [u8; 32] = [1; 32];

/// A legacy key and the hash schema version 1 stored for it: HMAC-SHA256 under
/// HMAC-SHA256(master, "enclave api-key hash v1"), in hex.
fn legacy_key(id: &str, secret_byte: char) -> (String, String) {
    let key = format!("enk_{id}_{}", secret_byte.to_string().repeat(64));
    let master = hmac::Key::new(hmac::HMAC_SHA256, &MASTER);
    let derived = hmac::sign(&master, b"enclave api-key hash v1");
    let hash_key = hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref());
    let tag = hmac::sign(&hash_key, key.as_bytes());
    let hash = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    (key, hash)
}

/// The database as schema version 1 left it: only the first migration, a principal and two
/// API keys inserted as that version did (no format column), one of them revoked.
async fn version_1_database(db: &Db) -> (String, String) {
    let pool = old_schema(db, &[V1]).await;
    sqlx::query(
        "INSERT INTO principals (name, tenant, clearance, nationality, role, created_at) \
         VALUES ('alice', 't1', 'SECRET', 'USA', 'user', 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let (live, live_hash) = legacy_key("00000000000000aa", 'b');
    let (revoked, revoked_hash) = legacy_key("00000000000000cc", 'd');
    for (id, hash, revoked_at) in [
        ("00000000000000aa", &live_hash, None),
        ("00000000000000cc", &revoked_hash, Some(5_i64)),
    ] {
        sqlx::query(
            "INSERT INTO api_keys (id, principal, hash, created_at, revoked_at) \
             VALUES ($1, 'alice', $2, 2, $3)",
        )
        .bind(id)
        .bind(hash)
        .bind(revoked_at)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;
    (live, revoked)
}

#[tokio::test]
async fn legacy_keys_keep_working_after_the_upgrade_and_are_listed_as_legacy() {
    each_backend(|db| async move {
        let (live, revoked) = version_1_database(&db).await;
        let store = db.open().await;
        assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
        const { assert!(SCHEMA_VERSION >= 2) };

        assert_eq!(
            store.key_shape(&live),
            KeyShape::Untagged {
                id: "00000000000000aa"
            }
        );
        let (record, principal) = store.authenticate_key(&live).await.unwrap().unwrap();
        assert_eq!(record.format, KeyFormat::Legacy);
        assert_eq!(principal.name, "alice");
        assert_eq!(
            store.look_up_key(&revoked).await.unwrap(),
            KeyLookup::Revoked
        );
        let formats: Vec<KeyFormat> = store
            .list_keys()
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.format)
            .collect();
        assert_eq!(formats, [KeyFormat::Legacy, KeyFormat::Legacy]);

        // Only the unrevoked legacy key counts; revoking it leaves none.
        assert_eq!(
            store.unrevoked_legacy_key_ids().await.unwrap(),
            ["00000000000000aa"]
        );
        // New keys are tagged and do not count.
        let (new, new_key) = store.create_key("alice").await.unwrap();
        assert_eq!(new.format, KeyFormat::Tagged);
        assert_eq!(store.key_shape(&new_key), KeyShape::Tagged { id: &new.id });
        assert!(store.revoke_key(&live).await.unwrap());
        assert!(store.unrevoked_legacy_key_ids().await.unwrap().is_empty());
        assert_eq!(store.look_up_key(&live).await.unwrap(), KeyLookup::Revoked);
        assert!(store.authenticate_key(&new_key).await.unwrap().is_some());
    })
    .await;
}

#[tokio::test]
async fn lookups_say_why_a_key_is_refused() {
    each_backend(|db| async move {
        let store: Store = db.open().await;
        store
            .add_principal(&principal("alice", "SECRET"))
            .await
            .unwrap();
        let (record, key) = store.create_key("alice").await.unwrap();
        match store.look_up_key(&key).await.unwrap() {
            KeyLookup::Found(k, p) => {
                assert_eq!(k, record);
                assert_eq!(p.name, "alice");
            }
            other => panic!("{other:?}"),
        }
        // The right id with another secret: its tag fails, and a tagged key is never matched
        // by an untagged one.
        let forged = format!("enk_{}_{}", record.id, "0".repeat(64));
        assert_eq!(
            store.key_shape(&forged),
            KeyShape::Untagged { id: &record.id }
        );
        assert_eq!(
            store.look_up_key(&forged).await.unwrap(),
            KeyLookup::WrongSecret
        );
        // An unknown id, and text that is no key at all.
        let unknown = format!("enk_{}_{}", "f".repeat(16), "0".repeat(64));
        assert_eq!(
            store.look_up_key(&unknown).await.unwrap(),
            KeyLookup::Unknown
        );
        assert_eq!(
            store.look_up_key("sk-not-ours").await.unwrap(),
            KeyLookup::Unknown
        );
        assert!(store.revoke_key(&record.id).await.unwrap());
        assert_eq!(store.look_up_key(&key).await.unwrap(), KeyLookup::Revoked);
    })
    .await;
}

#[tokio::test]
async fn the_upgrade_admits_the_metrics_role_and_keeps_every_constraint() {
    each_backend(|db| async move {
        let (live, _) = version_1_database(&db).await;
        let store = db.open().await;
        assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
        const { assert!(SCHEMA_VERSION >= 4) };
        store
            .add_principal(&enclave_store::NewPrincipal {
                name: "prometheus".into(),
                tenant: "ops".into(),
                clearance: "UNCLASSIFIED".into(),
                nationality: "USA".into(),
                role: "metrics".into(),
            })
            .await
            .unwrap();
        assert!(store.authenticate_key(&live).await.unwrap().is_some());
        drop(store);

        // One connection: SQLite's foreign-key switch belongs to the connection.
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url)
            .await
            .unwrap();
        if db.backend == "sqlite" {
            sqlx::query("PRAGMA foreign_keys = ON")
                .execute(&mut conn)
                .await
                .unwrap();
        }
        // The rebuilt tables keep their checks: an unknown role, a key of nobody and an unknown
        // key format are all refused by the database itself.
        for hostile in [
            "INSERT INTO principals (name, tenant, clearance, nationality, role, created_at) \
             VALUES ('mallory', 't1', 'SECRET', 'USA', 'root', 1)",
            "INSERT INTO api_keys (id, principal, hash, created_at) \
             VALUES ('00000000000000ee', 'nobody', 'h', 1)",
            "INSERT INTO api_keys (id, principal, hash, created_at, format) \
             VALUES ('00000000000000ef', 'alice', 'h', 1, 'plain')",
            "DELETE FROM principals WHERE name = 'alice'",
        ] {
            assert!(
                sqlx::query(hostile).execute(&mut conn).await.is_err(),
                "{} accepted: {hostile}",
                db.backend
            );
        }
        <sqlx::AnyConnection as sqlx::Connection>::close(conn)
            .await
            .unwrap();
    })
    .await;
}
