//! Principals: add, read, list, duplicates, invalid fields; migrations run twice.

use enclave_store::{NewPrincipal, SCHEMA_VERSION, StoreError};

use crate::backends::each_backend;

pub(crate) fn principal(name: &str, clearance: &str) -> NewPrincipal {
    NewPrincipal {
        name: name.into(),
        tenant: "agency-a".into(),
        clearance: clearance.into(),
        nationality: "USA".into(),
        role: "user".into(),
    }
}

#[tokio::test]
async fn added_principals_are_listed_with_canonical_clearance() {
    each_backend(|db| async move {
        let store = db.open().await;
        assert!(store.list_principals().await.unwrap().is_empty());

        let bob = store
            .add_principal(&NewPrincipal {
                nationality: "gbr".into(),
                role: "Auditor".into(),
                tenant: "agency-b".into(),
                ..principal("bob", "secret//rel to usa, gbr")
            })
            .await
            .unwrap();
        assert_eq!(bob.clearance, "SECRET//REL TO USA, GBR");
        assert_eq!(bob.nationality, "GBR");
        assert_eq!(bob.role, "auditor");
        assert!(bob.created_at > 1_700_000_000);
        let alice = store
            .add_principal(&principal("alice", "(TS//SI/TK//NF)"))
            .await
            .unwrap();
        assert_eq!(alice.clearance, "TOP SECRET//SI/TK//NOFORN");

        let list = store.list_principals().await.unwrap();
        assert_eq!(list, vec![alice.clone(), bob.clone()]);
        assert_eq!(store.principal("bob").await.unwrap(), Some(bob));
        assert_eq!(store.principal("carol").await.unwrap(), None);
        assert_eq!(store.principal("' OR 1=1 --").await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn duplicate_principal_is_a_conflict_and_changes_nothing() {
    each_backend(|db| async move {
        let store = db.open().await;
        let first = store
            .add_principal(&principal("alice", "SECRET"))
            .await
            .unwrap();
        let err = store
            .add_principal(&principal("alice", "TOP SECRET"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "principal `alice` already exists: choose another name"
        );
        assert_eq!(store.list_principals().await.unwrap(), vec![first]);
    })
    .await;
}

#[tokio::test]
async fn invalid_principals_are_rejected_with_the_field_named() {
    each_backend(|db| async move {
        let store = db.open().await;
        let long = "a".repeat(65);
        let cases = [
            (principal("", "SECRET"), "invalid principal name ``"),
            (principal(&long, "SECRET"), "invalid principal name"),
            (
                principal("al ice", "SECRET"),
                "invalid principal name `al ice`",
            ),
            (
                principal("alice'; DROP TABLE principals; --", "SECRET"),
                "invalid principal name",
            ),
            (
                principal("alice\n", "SECRET"),
                "invalid principal name `alice\\n`",
            ),
            (
                NewPrincipal {
                    tenant: String::new(),
                    ..principal("alice", "SECRET")
                },
                "invalid tenant",
            ),
            (
                NewPrincipal {
                    tenant: "a/b".into(),
                    ..principal("alice", "SECRET")
                },
                "invalid tenant",
            ),
            (
                principal("alice", "SUPER SECRET"),
                "invalid clearance `SUPER SECRET`",
            ),
            (principal("alice", ""), "invalid clearance"),
            (principal("alice", "hello"), "invalid clearance"),
            (
                NewPrincipal {
                    nationality: "XXX".into(),
                    ..principal("alice", "SECRET")
                },
                "unknown nationality `XXX`",
            ),
            (
                NewPrincipal {
                    nationality: "FVEY".into(),
                    ..principal("alice", "SECRET")
                },
                "unknown nationality",
            ),
            (
                NewPrincipal {
                    nationality: String::new(),
                    ..principal("alice", "SECRET")
                },
                "unknown nationality",
            ),
            (
                NewPrincipal {
                    role: "root".into(),
                    ..principal("alice", "SECRET")
                },
                "unknown role `root`: expected one of user, admin, auditor",
            ),
        ];
        for (p, want) in cases {
            let err = store.add_principal(&p).await.unwrap_err();
            assert!(matches!(err, StoreError::Invalid(_)), "{p:?}: {err:?}");
            assert!(err.to_string().starts_with(want), "{p:?}: {err}");
        }
        assert!(store.list_principals().await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn opening_twice_keeps_data_and_schema_version() {
    each_backend(|db| async move {
        let store = db.open().await;
        store.ping().await.unwrap();
        assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
        let alice = store
            .add_principal(&principal("alice", "SECRET"))
            .await
            .unwrap();
        store.close().await;

        let again = db.open().await;
        again.ping().await.unwrap();
        assert_eq!(again.schema_version().await.unwrap(), SCHEMA_VERSION);
        assert_eq!(again.list_principals().await.unwrap(), vec![alice]);
        // Two stores on one database at once, as two replicas would be.
        let third = db.open().await;
        assert_eq!(third.list_principals().await.unwrap().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn unsupported_urls_are_invalid_and_do_not_echo_secrets() {
    let err = enclave_store::Store::open("mysql://root:hunter2@db/x", &crate::backends::master(1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("`mysql`"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("enclave.db");
    let err = enclave_store::Store::open(
        &format!("sqlite://{}", missing.display()),
        &crate::backends::master(1),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn sqlite_database_is_in_wal_mode_and_in_memory_works() {
    each_backend(|db| async move {
        if db.backend != "sqlite" {
            return;
        }
        let _store = db.open().await;
        let dir = crate::backends::sqlite_dir(&db);
        assert!(dir.join("enclave.db").is_file());
        assert!(dir.join("enclave.db-wal").exists(), "WAL file missing");
    })
    .await;

    let store = enclave_store::Store::open("sqlite::memory:", &crate::backends::master(1))
        .await
        .unwrap();
    store
        .add_principal(&principal("alice", "SECRET"))
        .await
        .unwrap();
    assert_eq!(store.list_principals().await.unwrap().len(), 1);
}

#[test]
fn store_is_clone_send_sync() {
    fn assert_traits<T: Clone + Send + Sync + 'static>() {}
    assert_traits::<enclave_store::Store>();
    assert_traits::<enclave_store::KeyHasher>();
}
