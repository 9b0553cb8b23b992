//! Envelope encryption: per-tenant data keys created once across replicas, sealed values bound
//! to their row, keys bound to the master key, crypto-shredding.

use enclave_store::crypt::{DATA_TABLES, row_aad};
use enclave_store::{Store, StoreError};
use sqlx::{AnyPool, Row};

use crate::backends::{Db, each_backend, master};

/// A second connection pool to the test database, to look at and change raw rows.
async fn raw(db: &Db) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPool::connect(&db.url).await.unwrap()
}

#[tokio::test]
async fn a_tenant_key_is_made_once_and_survives_a_restart() {
    each_backend(|db| async move {
        let store = db.open().await;
        let a = store.tenant_cipher("agency-a").await.unwrap();
        assert_eq!(a.tenant(), "agency-a");
        let aad = row_aad("responses", "agency-a", "resp_1");
        let sealed = a.seal(&aad, b"the canary 7f3e");
        assert!(!sealed.windows(6).any(|w| w == b"canary"));
        store.close().await;

        let reopened = db.open().await;
        let again = reopened.tenant_cipher("agency-a").await.unwrap();
        assert_eq!(again.open(&aad, &sealed).unwrap(), b"the canary 7f3e");
        // Another tenant's key opens nothing of agency-a's, even under agency-a's row name.
        let b = reopened.tenant_cipher("agency-b").await.unwrap();
        assert!(matches!(b.open(&aad, &sealed), Err(StoreError::Crypto(_))));

        let pool = raw(&db).await;
        let rows = sqlx::query("SELECT tenant, wrapped FROM tenant_keys ORDER BY tenant")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        let wrapped: Vec<u8> = rows[0].try_get("wrapped").unwrap();
        // version + nonce + 32-byte key + tag: the key is never stored bare.
        assert_eq!(wrapped.len(), 1 + 12 + 32 + 16);
        pool.close().await;
        assert!(matches!(
            reopened.tenant_cipher("").await,
            Err(StoreError::Invalid(_))
        ));
    })
    .await;
}

#[tokio::test]
async fn replicas_racing_on_first_use_agree_on_one_key() {
    each_backend(|db| async move {
        let replicas: Vec<Store> = vec![db.open().await, db.open().await, db.open().await];
        let mut tasks = Vec::new();
        for round in 0..8 {
            for (i, store) in replicas.iter().enumerate() {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    let c = store.tenant_cipher("racing").await.unwrap();
                    let aad = row_aad("t", "racing", &format!("{round}-{i}"));
                    (aad.clone(), c.seal(&aad, b"same key?"))
                }));
            }
        }
        let mut sealed = Vec::new();
        for t in tasks {
            sealed.push(t.await.unwrap());
        }
        for store in &replicas {
            let c = store.tenant_cipher("racing").await.unwrap();
            for (aad, value) in &sealed {
                assert_eq!(c.open(aad, value).unwrap(), b"same key?");
            }
        }
        let pool = raw(&db).await;
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM tenant_keys")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1);
        pool.close().await;
    })
    .await;
}

#[tokio::test]
async fn data_keys_do_not_unwrap_under_another_master_key() {
    each_backend(|db| async move {
        let store = db.open().await;
        store.tenant_cipher("agency-a").await.unwrap();
        let foreign = db.open_with(master(9)).await;
        let err = foreign.tenant_cipher("agency-a").await.unwrap_err();
        assert!(matches!(err, StoreError::Crypto(_)), "{err:?}");
        assert!(err.to_string().contains("master key"), "{err}");
        // A wrapped key copied to another tenant's row does not unwrap there either.
        let pool = raw(&db).await;
        sqlx::query(
            "INSERT INTO tenant_keys (tenant, wrapped, created_at) \
             SELECT 'agency-z', wrapped, created_at FROM tenant_keys WHERE tenant = 'agency-a'",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        let err = store.tenant_cipher("agency-z").await.unwrap_err();
        assert!(matches!(err, StoreError::Crypto(_)), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn shredding_destroys_the_key_first_then_the_rows() {
    each_backend(|db| async move {
        let store = db.open().await;
        let a = store.tenant_cipher("agency-a").await.unwrap();
        store.tenant_cipher("agency-b").await.unwrap();
        let aad = row_aad("responses", "agency-a", "resp_1");
        let sealed = a.seal(&aad, b"shred me");
        let pool = raw(&db).await;
        for (id, tenant) in [("resp_1", "agency-a"), ("resp_2", "agency-b")] {
            sqlx::query(
                "INSERT INTO responses (id, tenant, principal, label, sealed, created_at) \
                 VALUES ($1, $2, 'p', 'UNCLASSIFIED', $3, 0)",
            )
            .bind(id)
            .bind(tenant)
            .bind(sealed.clone())
            .execute(&pool)
            .await
            .unwrap();
        }

        let report = store.shred_tenant("agency-a").await.unwrap();
        assert!(report.key_destroyed);
        assert_eq!(report.rows_deleted.len(), DATA_TABLES.len());
        assert_eq!(report.total_rows(), 1);
        let left: Vec<String> = sqlx::query("SELECT tenant FROM tenant_keys")
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(left, ["agency-b"]);
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM responses WHERE tenant = 'agency-b'")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "other tenants keep their rows");
        pool.close().await;

        // The tenant starts over with a new key: nothing sealed before opens (the cache was
        // evicted, so this is not the old key).
        let fresh = store.tenant_cipher("agency-a").await.unwrap();
        assert!(fresh.open(&aad, &sealed).is_err());
        // A copy kept from before the shred stays sealed for good, also for another replica.
        let other = db.open().await;
        assert!(
            other
                .tenant_cipher("agency-a")
                .await
                .unwrap()
                .open(&aad, &sealed)
                .is_err()
        );
        // Shredding again, or a tenant that never stored anything, is harmless.
        store.shred_tenant("agency-a").await.unwrap();
        let none = store.shred_tenant("nobody").await.unwrap();
        assert!(!none.key_destroyed);
        assert_eq!(none.total_rows(), 0);
    })
    .await;
}
