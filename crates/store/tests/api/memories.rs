//! Memories at rest: content, metadata and embedding sealed with the tenant's key and bound to
//! their row; tenant-scoped reads and deletes; the paged listing the gateway rebuilds its
//! index from; the change feed every write appends to — on SQLite and PostgreSQL.

use enclave_store::{MEMORY_PAGE, MemoryChange, MemoryChangeKind, StoredMemory};
use sqlx::{AnyPool, Row};

use crate::backends::{Db, each_backend};

async fn raw(db: &Db) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPool::connect(&db.url).await.unwrap()
}

fn memory(id: &str, tenant: &str, content: &str) -> StoredMemory {
    StoredMemory {
        id: id.into(),
        tenant: tenant.into(),
        principal: "alice".into(),
        namespace: None,
        label: "SECRET".into(),
        created_at: 1_700_000_000_000,
        supersedes: None,
        superseded_by: None,
        content: content.into(),
        metadata: Some(r#"{"topic":"canary-meta-77","n":[1,2]}"#.into()),
        embedding: Some(vec![0.25, -1.5, 3.0e-3]),
    }
}

#[tokio::test]
async fn memories_round_trip_sealed_and_tenant_scoped() {
    each_backend(|db| async move {
        let store = db.open().await;
        let m = memory("mem_1", "agency-a", "the canary 91c2 is in the hangar");
        store.add_memory(&m).await.unwrap();
        assert_eq!(
            store.memory("agency-a", "mem_1").await.unwrap(),
            Some(m.clone())
        );
        // Another tenant asking for the same id finds nothing.
        assert_eq!(store.memory("agency-b", "mem_1").await.unwrap(), None);
        assert!(!store.delete_memory("agency-b", "mem_1").await.unwrap());
        // A duplicate id is a conflict, not an overwrite.
        assert!(store.add_memory(&m).await.is_err());

        // Nothing readable at rest: no plaintext content, metadata or embedding bytes.
        let pool = raw(&db).await;
        let row = sqlx::query(
            "SELECT content_sealed, metadata_sealed, embedding_sealed, label, tenant \
             FROM memories WHERE id = 'mem_1'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        for col in ["content_sealed", "metadata_sealed", "embedding_sealed"] {
            let bytes: Vec<u8> = row.try_get(col).unwrap();
            assert!(!bytes.windows(6).any(|w| w == b"canary"), "{col}");
            assert!(
                !bytes.windows(4).any(|w| w == 0.25f32.to_le_bytes()),
                "{col}"
            );
        }
        assert_eq!(row.try_get::<String, _>("label").unwrap(), "SECRET");

        // A sealed value moved to another row no longer opens.
        store
            .add_memory(&memory("mem_2", "agency-a", "second"))
            .await
            .unwrap();
        sqlx::query(
            "UPDATE memories SET content_sealed = \
             (SELECT content_sealed FROM memories WHERE id = 'mem_1') WHERE id = 'mem_2'",
        )
        .execute(&pool)
        .await
        .unwrap();
        assert!(store.memory("agency-a", "mem_2").await.is_err());
        let page = store.memories_page(None).await.unwrap();
        assert_eq!(page.memories.len(), 1);
        assert_eq!(
            page.unreadable,
            vec![("agency-a".to_owned(), "mem_2".to_owned())]
        );

        // Embeddings set later; deletes are scoped to the tenant.
        store
            .set_memory_embedding("agency-a", "mem_1", &[9.0, 8.0])
            .await
            .unwrap();
        let got = store.memory("agency-a", "mem_1").await.unwrap().unwrap();
        assert_eq!(got.embedding, Some(vec![9.0, 8.0]));
        assert!(
            !store
                .set_memory_embedding("agency-b", "mem_1", &[1.0])
                .await
                .unwrap()
        );
        assert!(store.delete_memory("agency-a", "mem_1").await.unwrap());
        assert_eq!(store.memory("agency-a", "mem_1").await.unwrap(), None);
        pool.close().await;
    })
    .await;
}

#[tokio::test]
async fn retention_purges_each_tenants_old_memories_at_its_own_cutoff() {
    each_backend(|db| async move {
        let store = db.open().await;
        let at = |id: &str, tenant: &str, created_at: i64| StoredMemory {
            created_at,
            ..memory(id, tenant, "kept a while")
        };
        for m in [
            at("mem_a_old", "agency-a", 1_000),
            at("mem_a_cut", "agency-a", 2_000),
            at("mem_a_new", "agency-a", 2_001),
            at("mem_b_old", "agency-b", 1_000),
            at("mem_c_old", "agency-c", 1_000),
            at("mem_c_new", "agency-c", 5_000),
        ] {
            store.add_memory(&m).await.unwrap();
        }
        // agency-a: written at or before 2000 goes; agency-b: kept until deleted; agency-c: 4000.
        let mut purged = store
            .purge_memories(|tenant| match tenant {
                "agency-a" => Some(2_000),
                "agency-c" => Some(4_000),
                _ => None,
            })
            .await
            .unwrap();
        purged.sort();
        let expected = [
            ("agency-a", "mem_a_cut"),
            ("agency-a", "mem_a_old"),
            ("agency-c", "mem_c_old"),
        ];
        assert_eq!(purged, expected.map(|(t, i)| (t.to_owned(), i.to_owned())));
        for (tenant, id) in expected {
            assert_eq!(store.memory(tenant, id).await.unwrap(), None, "{id}");
        }
        for (tenant, id) in [
            ("agency-a", "mem_a_new"),
            ("agency-b", "mem_b_old"),
            ("agency-c", "mem_c_new"),
        ] {
            assert!(store.memory(tenant, id).await.unwrap().is_some(), "{id}");
        }
        // A cutoff for every tenant reaches agency-b's old memory too; the others are gone
        // or newer.
        let again = store.purge_memories(|_| Some(2_000)).await.unwrap();
        assert_eq!(again, [("agency-b".to_owned(), "mem_b_old".to_owned())]);
    })
    .await;
}

#[tokio::test]
async fn a_superseded_memory_keeps_its_row_and_names_its_successor() {
    each_backend(|db| async move {
        let store = db.open().await;
        let old = memory("mem_old", "agency-a", "lives in Denver");
        store.add_memory(&old).await.unwrap();
        assert!(
            store
                .supersede_memory("agency-a", "mem_old", "mem_new")
                .await
                .unwrap()
        );
        // Another tenant cannot mark it, and a missing id is reported.
        assert!(
            !store
                .supersede_memory("agency-b", "mem_old", "mem_x")
                .await
                .unwrap()
        );
        assert!(
            !store
                .supersede_memory("agency-a", "mem_none", "mem_new")
                .await
                .unwrap()
        );
        let got = store.memory("agency-a", "mem_old").await.unwrap().unwrap();
        assert_eq!(got.superseded_by.as_deref(), Some("mem_new"));
        assert_eq!(got.content, "lives in Denver");
        let page = store.memories_page(None).await.unwrap();
        assert_eq!(page.memories[0].superseded_by.as_deref(), Some("mem_new"));
    })
    .await;
}

#[tokio::test]
async fn the_rebuild_listing_pages_through_every_tenant() {
    each_backend(|db| async move {
        let store = db.open().await;
        let total = usize::try_from(MEMORY_PAGE).unwrap() + 7;
        for i in 0..total {
            let tenant = if i % 3 == 0 { "agency-b" } else { "agency-a" };
            let mut m = memory(&format!("mem_{i:04}"), tenant, &format!("fact {i}"));
            m.metadata = None;
            m.embedding = None;
            m.namespace = (i % 5 == 0).then(|| "team".to_owned());
            store.add_memory(&m).await.unwrap();
        }
        let mut seen = Vec::new();
        let mut after: Option<(String, String)> = None;
        let mut pages = 0;
        loop {
            let page = store
                .memories_page(after.as_ref().map(|(t, i)| (t.as_str(), i.as_str())))
                .await
                .unwrap();
            pages += 1;
            assert!(page.unreadable.is_empty());
            seen.extend(
                page.memories
                    .into_iter()
                    .map(|m| (m.tenant, m.id, m.namespace)),
            );
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(pages, 2);
        assert_eq!(seen.len(), total);
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted, "ordered by tenant, then id");
        assert_eq!(
            seen.iter().filter(|m| m.2.is_some()).count(),
            total.div_ceil(5)
        );
    })
    .await;
}

/// Tenant, memory id and kind of each change, in feed order.
fn changes(feed: &[MemoryChange]) -> Vec<(String, String, MemoryChangeKind)> {
    feed.iter()
        .map(|c| (c.tenant.clone(), c.memory_id.clone(), c.kind))
        .collect()
}

#[tokio::test]
async fn every_memory_write_appends_its_changes_to_the_feed() {
    use MemoryChangeKind::{Delete, Embed, Put, Supersede};
    each_backend(|db| async move {
        let store = db.open().await;
        assert_eq!(store.memory_changes_max_seq().await.unwrap(), 0);
        assert!(store.memory_changes_after(0, 100).await.unwrap().is_empty());
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        store
            .add_memory(&memory("mem_1", "agency-a", "canary-feed-1 first"))
            .await
            .unwrap();
        store
            .add_memory(&memory("mem_2", "agency-a", "second"))
            .await
            .unwrap();
        // Writes that change nothing record nothing: a duplicate id, a missing row.
        assert!(
            store
                .add_memory(&memory("mem_1", "agency-a", "again"))
                .await
                .is_err()
        );
        assert!(
            store
                .set_memory_embedding("agency-a", "mem_1", &[1.0, 2.0])
                .await
                .unwrap()
        );
        assert!(
            !store
                .set_memory_embedding("agency-b", "mem_1", &[1.0])
                .await
                .unwrap()
        );
        assert!(
            store
                .supersede_memory("agency-a", "mem_1", "mem_2")
                .await
                .unwrap()
        );
        assert!(
            !store
                .supersede_memory("agency-a", "mem_9", "mem_2")
                .await
                .unwrap()
        );
        assert!(store.delete_memory("agency-a", "mem_2").await.unwrap());
        assert!(!store.delete_memory("agency-a", "mem_2").await.unwrap());
        // Retention: one delete per purged memory.
        let old = StoredMemory {
            created_at: 1_000,
            ..memory("mem_3", "agency-b", "old")
        };
        store.add_memory(&old).await.unwrap();
        store
            .add_memory(&memory("mem_4", "agency-b", "new"))
            .await
            .unwrap();
        let purged = store
            .purge_memories(|t| (t == "agency-b").then_some(10_000))
            .await
            .unwrap();
        assert_eq!(purged, [("agency-b".to_owned(), "mem_3".to_owned())]);
        // A shred: one delete per memory of the tenant.
        for id in ["mem_5", "mem_6"] {
            store
                .add_memory(&memory(id, "agency-c", "shredded"))
                .await
                .unwrap();
        }
        let report = store.shred_tenant("agency-c").await.unwrap();
        assert!(report.rows_deleted.contains(&("memories", 2)));

        let feed = store.memory_changes_after(0, 100).await.unwrap();
        let s = |t: &str, i: &str, k| (t.to_owned(), i.to_owned(), k);
        let got = changes(&feed);
        assert_eq!(got.len(), 12, "{got:?}");
        assert_eq!(
            got[..10],
            [
                s("agency-a", "mem_1", Put),
                s("agency-a", "mem_2", Put),
                s("agency-a", "mem_1", Embed),
                s("agency-a", "mem_1", Supersede),
                s("agency-a", "mem_2", Delete),
                s("agency-b", "mem_3", Put),
                s("agency-b", "mem_4", Put),
                s("agency-b", "mem_3", Delete),
                s("agency-c", "mem_5", Put),
                s("agency-c", "mem_6", Put),
            ]
        );
        // The shred's deletes come in no particular order.
        let mut deletes = got[10..].to_vec();
        deletes.sort();
        assert_eq!(
            deletes,
            [
                s("agency-c", "mem_5", Delete),
                s("agency-c", "mem_6", Delete)
            ]
        );
        assert!(feed.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(
            store.memory_changes_max_seq().await.unwrap(),
            feed.last().unwrap().seq
        );
        let before = i64::try_from(before).unwrap();
        assert!(
            feed.iter()
                .all(|c| c.changed_at >= before && c.changed_at < before + 60_000)
        );

        // Ids only: no content in the feed's table.
        let pool = raw(&db).await;
        let rows = sqlx::query("SELECT tenant, memory_id, kind FROM memory_changes")
            .fetch_all(&pool)
            .await
            .unwrap();
        for row in &rows {
            for col in ["tenant", "memory_id", "kind"] {
                let v: String = row.try_get(col).unwrap();
                assert!(!v.contains("canary"), "{col}");
            }
        }
        pool.close().await;
    })
    .await;
}

#[tokio::test]
async fn the_change_feed_pages_in_seq_order_and_prunes_by_age() {
    each_backend(|db| async move {
        let store = db.open().await;
        for i in 0..5 {
            store
                .add_memory(&memory(&format!("mem_{i}"), "agency-a", "fact"))
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let page = store.memory_changes_after(after, 2).await.unwrap();
            assert!(page.len() <= 2);
            let Some(last) = page.last() else { break };
            after = last.seq;
            seen.extend(page);
        }
        assert_eq!(
            seen.iter()
                .map(|c| c.memory_id.as_str())
                .collect::<Vec<_>>(),
            ["mem_0", "mem_1", "mem_2", "mem_3", "mem_4"]
        );
        assert!(seen.windows(2).all(|w| w[0].seq < w[1].seq));
        // A limit is clamped to at least one row.
        assert_eq!(store.memory_changes_after(0, 0).await.unwrap().len(), 1);
        assert_eq!(
            store.memory_changes_first_since(0).await.unwrap(),
            Some(seen[0].seq)
        );
        assert_eq!(
            store.memory_changes_first_since(i64::MAX).await.unwrap(),
            None
        );

        // The two oldest changes are made old; pruning takes exactly them.
        let pool = raw(&db).await;
        sqlx::query("UPDATE memory_changes SET changed_at = 5 WHERE seq <= $1")
            .bind(seen[1].seq)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        assert_eq!(store.prune_memory_changes(10).await.unwrap(), 2);
        assert_eq!(store.prune_memory_changes(10).await.unwrap(), 0);
        let left = store.memory_changes_after(0, 100).await.unwrap();
        assert_eq!(
            left.iter().map(|c| c.seq).collect::<Vec<_>>(),
            seen[2..].iter().map(|c| c.seq).collect::<Vec<_>>()
        );
        assert_eq!(store.memory_changes_max_seq().await.unwrap(), seen[4].seq);
    })
    .await;
}
