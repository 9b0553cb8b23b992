//! The stored state: responses and conversations are found only by their tenant and a
//! session that dominates their label; a conversation's label only rises; expiry and
//! shredding remove them; and no text is stored in the clear (a canary is not in the SQLite
//! files, nor in a `pg_dump` of the PostgreSQL schema).

use enclave_label::Label;
use enclave_store::Store;
use enclave_store::state::{NewItem, StoredConversation, StoredResponse};
use sqlx::{AnyPool, Row};

use crate::backends::{Db, each_backend, sqlite_dir};

const CANARY: &str = "CANARY-5b2f9e-lighthouse-keeper";

fn label(s: &str) -> Label {
    s.parse().unwrap()
}

fn response(id: &str, tenant: &str, banner: &str, expires_at: Option<i64>) -> StoredResponse {
    StoredResponse {
        id: id.into(),
        tenant: tenant.into(),
        principal: "alice".into(),
        label: banner.into(),
        previous_response_id: None,
        conversation_id: None,
        body: format!("{{\"text\":\"{CANARY}\"}}").into_bytes(),
        created_at: 1,
        expires_at,
    }
}

fn conversation(id: &str, tenant: &str, banner: &str) -> StoredConversation {
    StoredConversation {
        id: id.into(),
        tenant: tenant.into(),
        principal: "alice".into(),
        label: banner.into(),
        body: CANARY.as_bytes().to_vec(),
        created_at: 1,
        expires_at: None,
    }
}

fn item(id: &str, text: &str) -> NewItem {
    NewItem {
        id: id.into(),
        body: text.as_bytes().to_vec(),
    }
}

#[tokio::test]
async fn responses_are_found_only_by_tenant_and_a_dominating_session() {
    each_backend(|db| async move {
        let store = db.open().await;
        let far = Some(i64::MAX);
        store
            .put_response(&response("resp_s", "a", "SECRET", far))
            .await
            .unwrap();
        store
            .put_response(&response("resp_old", "a", "UNCLASSIFIED", Some(2)))
            .await
            .unwrap();
        let secret = label("SECRET");
        let got = store
            .response("a", "resp_s", &secret)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.body, format!("{{\"text\":\"{CANARY}\"}}").into_bytes());
        assert_eq!(got.label, "SECRET");
        // Another tenant, or a lower session: nothing.
        assert!(
            store
                .response("b", "resp_s", &secret)
                .await
                .unwrap()
                .is_none()
        );
        for lower in ["UNCLASSIFIED", "CONFIDENTIAL", "CUI"] {
            assert!(
                store
                    .response("a", "resp_s", &label(lower))
                    .await
                    .unwrap()
                    .is_none()
            );
            assert!(
                !store
                    .delete_response("a", "resp_s", &label(lower))
                    .await
                    .unwrap()
            );
        }
        assert!(!store.delete_response("b", "resp_s", &secret).await.unwrap());
        // An expired response is gone for everyone, and the purge removes it.
        assert!(
            store
                .response("a", "resp_old", &secret)
                .await
                .unwrap()
                .is_none()
        );
        let purged = store.purge_expired(i64::MAX - 1).await.unwrap();
        assert_eq!(purged.responses, 1);
        // A duplicate id is a conflict, not an overwrite.
        assert!(
            store
                .put_response(&response("resp_s", "b", "UNCLASSIFIED", far))
                .await
                .is_err()
        );
        assert!(
            store
                .delete_response("a", "resp_s", &label("TOP SECRET"))
                .await
                .unwrap()
        );
        assert!(
            store
                .response("a", "resp_s", &secret)
                .await
                .unwrap()
                .is_none()
        );
    })
    .await;
}

#[tokio::test]
async fn a_metadata_update_raises_the_label_and_never_lowers_it() {
    each_backend(|db| async move {
        let store = db.open().await;
        store
            .create_conversation(&conversation("conv_m", "a", "SECRET"), &[])
            .await
            .unwrap();
        let (u, s, snf) = (
            label("UNCLASSIFIED"),
            label("SECRET"),
            label("SECRET//NOFORN"),
        );
        // Neither a lower session, nor another tenant, nor a missing id is updated.
        for (tenant, id, session) in [
            ("a", "conv_m", &u),
            ("b", "conv_m", &s),
            ("a", "conv_x", &s),
        ] {
            let none = store
                .update_conversation(tenant, id, session, session, b"{}")
                .await
                .unwrap();
            assert!(none.is_none(), "{tenant} {id} {session:?}");
        }
        // A write at a lower request label keeps the high-water mark.
        let kept = store
            .update_conversation("a", "conv_m", &snf, &u, br#"{"k":"v"}"#)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kept.label, "SECRET");
        assert_eq!(kept.body, br#"{"k":"v"}"#);
        assert_eq!(kept.created_at, 1);
        let raised = store
            .update_conversation("a", "conv_m", &snf, &snf, br#"{"k":"w"}"#)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(raised.label, "SECRET//NOFORN");
        let read = store
            .conversation("a", "conv_m", &snf)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (read.label.as_str(), read.body.as_slice()),
            ("SECRET//NOFORN", &br#"{"k":"w"}"#[..])
        );
        // A later write at a lower request label keeps it there.
        let kept = store
            .update_conversation("a", "conv_m", &snf, &s, br#"{"k":"x"}"#)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kept.label, "SECRET//NOFORN");
        // The new metadata is sealed like the first.
        sqlx::any::install_default_drivers();
        let pool = AnyPool::connect(&db.url).await.unwrap();
        let row = sqlx::query("SELECT sealed FROM conversations WHERE id = 'conv_m'")
            .fetch_one(&pool)
            .await
            .unwrap();
        let sealed: Vec<u8> = row.try_get("sealed").unwrap();
        assert!(
            !sealed.windows(5).any(|w| w == br#""k":"#),
            "metadata in the clear"
        );
    })
    .await;
}

#[tokio::test]
async fn a_conversation_label_only_rises_even_under_concurrent_writers() {
    each_backend(|db| async move {
        let store = db.open().await;
        store
            .create_conversation(
                &conversation("conv_1", "a", "UNCLASSIFIED"),
                &[item("msg_0", "hello")],
            )
            .await
            .unwrap();
        let u = label("UNCLASSIFIED");
        let s = label("SECRET");
        let raised = store
            .append_items("a", "conv_1", &s, "alice", &s, &[item("msg_1", "secret")])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(raised.banner(), "SECRET");
        // A lower write does not lower it, and a lower session no longer sees it.
        assert!(
            store
                .append_items("a", "conv_1", &u, "alice", &u, &[item("msg_x", "x")])
                .await
                .unwrap()
                .is_none()
        );
        let still = store
            .append_items("a", "conv_1", &s, "alice", &u, &[item("msg_2", "plain")])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(still.banner(), "SECRET");
        assert!(
            store
                .conversation("a", "conv_1", &u)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .conversation_items("a", "conv_1", &u)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .conversation_items("b", "conv_1", &s)
                .await
                .unwrap()
                .is_none()
        );
        // Concurrent appends from several "replicas": every item lands once, in order.
        let replicas = [db.open().await, db.open().await];
        let mut tasks = Vec::new();
        for i in 0..12 {
            let store: Store = replicas[i % 2].clone();
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .append_items(
                        "a",
                        "conv_1",
                        &s,
                        "alice",
                        &s,
                        &[item(&format!("msg_c{i}"), "c")],
                    )
                    .await
                    .unwrap()
                    .unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let items = store
            .conversation_items("a", "conv_1", &s)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(items.len(), 3 + 12);
        let seqs: Vec<i64> = items.iter().map(|i| i.seq).collect();
        assert_eq!(seqs, (0..15).collect::<Vec<i64>>());
        assert_eq!(items[0].body, b"hello");
        assert_eq!(items[1].label, "SECRET");
        // A TOP SECRET write raises it to TOP SECRET, which a SECRET session no longer dominates.
        let nf = label("TOP SECRET");
        let raised = store
            .append_items("a", "conv_1", &nf, "alice", &nf, &[item("msg_nf", "nf")])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(raised.banner(), "TOP SECRET");
        assert!(
            store
                .conversation("a", "conv_1", &s)
                .await
                .unwrap()
                .is_none()
        );
        // Deleting an item or the conversation needs the same visibility.
        assert!(!store.delete_item("a", "conv_1", "msg_0", &s).await.unwrap());
        assert!(
            store
                .delete_item("a", "conv_1", "msg_0", &nf)
                .await
                .unwrap()
        );
        assert!(!store.delete_conversation("b", "conv_1", &nf).await.unwrap());
        assert!(!store.delete_conversation("a", "conv_1", &s).await.unwrap());
        assert!(store.delete_conversation("a", "conv_1", &nf).await.unwrap());
        assert!(
            store
                .conversation_items("a", "conv_1", &nf)
                .await
                .unwrap()
                .is_none()
        );
    })
    .await;
}

#[tokio::test]
async fn sealed_rows_cannot_be_moved_and_shredding_leaves_nothing() {
    each_backend(|db| async move {
        let store = db.open().await;
        let u = label("UNCLASSIFIED");
        for id in ["resp_1", "resp_2"] {
            store
                .put_response(&response(id, "a", "UNCLASSIFIED", None))
                .await
                .unwrap();
        }
        store
            .create_conversation(
                &conversation("conv_1", "a", "UNCLASSIFIED"),
                &[item("msg_1", CANARY)],
            )
            .await
            .unwrap();
        // An attacker with write access to the database copies one row's ciphertext over
        // another's: it no longer opens.
        let pool = AnyPool::connect(&db.url).await.unwrap();
        sqlx::query(
            "UPDATE responses SET sealed = (SELECT sealed FROM responses WHERE id = 'resp_1') \
             WHERE id = 'resp_2'",
        )
        .execute(&pool)
        .await
        .unwrap();
        assert!(store.response("a", "resp_2", &u).await.is_err());
        assert!(store.response("a", "resp_1", &u).await.unwrap().is_some());

        let report = store.shred_tenant("a").await.unwrap();
        assert!(report.key_destroyed);
        assert_eq!(report.total_rows(), 2 + 1 + 1);
        for table in [
            "tenant_keys",
            "responses",
            "conversations",
            "conversation_items",
        ] {
            let n: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(&pool)
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, 0, "{table}");
        }
        pool.close().await;
    })
    .await;
}

#[tokio::test]
async fn a_canary_is_not_stored_in_the_clear() {
    each_backend(|db| async move {
        let store = db.open().await;
        store
            .put_response(&response("resp_c", "a", "UNCLASSIFIED", None))
            .await
            .unwrap();
        store
            .create_conversation(
                &conversation("conv_c", "a", "UNCLASSIFIED"),
                &[item("msg_c", CANARY)],
            )
            .await
            .unwrap();
        let u = label("UNCLASSIFIED");
        store
            .append_items("a", "conv_c", &u, "alice", &u, &[item("msg_d", CANARY)])
            .await
            .unwrap()
            .unwrap();
        let needle = CANARY.as_bytes();
        match db.backend {
            "sqlite" => {
                store.close().await;
                let mut seen = 0;
                for entry in std::fs::read_dir(sqlite_dir(&db)).unwrap() {
                    let path = entry.unwrap().path();
                    // The WAL and shared-memory files may vanish as the last connection closes.
                    let bytes = match std::fs::read(&path) {
                        Ok(b) => b,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => panic!("{}: {e}", path.display()),
                    };
                    seen += bytes.len();
                    assert!(
                        !bytes.windows(needle.len()).any(|w| w == needle),
                        "the canary is in {}",
                        path.display()
                    );
                }
                assert!(seen > 0);
            }
            _ => {
                let dump = pg_dump(&db);
                match dump {
                    Some(text) => {
                        assert!(
                            text.contains("conversation_items"),
                            "the dump has the tables"
                        );
                        assert!(!text.contains(CANARY), "the canary is in pg_dump's output");
                        // BYTEA is dumped as hex: look for that spelling too.
                        let hex: String = needle.iter().map(|b| format!("{b:02x}")).collect();
                        assert!(
                            !text.contains(&hex),
                            "the canary is in pg_dump's output (hex)"
                        );
                    }
                    None => {
                        // No pg_dump here: read every column of the state tables instead.
                        let pool = AnyPool::connect(&db.url).await.unwrap();
                        for table in [
                            "responses",
                            "conversations",
                            "conversation_items",
                            "tenant_keys",
                        ] {
                            let rows = sqlx::query(&format!("SELECT * FROM {table}"))
                                .fetch_all(&pool)
                                .await
                                .unwrap();
                            for row in rows {
                                for i in 0..row.len() {
                                    let bytes: Vec<u8> = row
                                        .try_get::<Vec<u8>, _>(i)
                                        .or_else(|_| {
                                            row.try_get::<String, _>(i).map(String::into_bytes)
                                        })
                                        .unwrap_or_default();
                                    assert!(
                                        !bytes.windows(needle.len()).any(|w| w == needle),
                                        "{table}"
                                    );
                                }
                            }
                        }
                        pool.close().await;
                    }
                }
            }
        }
    })
    .await;
}

/// `pg_dump` of the test's schema (data included), if the tool is installed.
fn pg_dump(db: &Db) -> Option<String> {
    let (base, options) = db.url.split_once('?').unwrap_or((&db.url, ""));
    let schema = options
        .split("search_path%3D")
        .nth(1)
        .map(|s| s.split('&').next().unwrap_or(s).to_owned())?;
    let out = std::process::Command::new("pg_dump")
        .args(["--data-only", "--inserts", "--schema", &schema, base])
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}
