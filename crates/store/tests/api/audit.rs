//! The audit log in the store: gap-free appends (also from two stores at once), checkpoints
//! under the head lock, the tree kept beside the rows, and the group-commit writer failing
//! closed.

use std::collections::BTreeSet;
use std::time::Duration;

use enclave_audit::{
    AuditEntry, Checkpoint, Event, LogVerifier, RequestEvent, Signer, Tree, Verifiers, hash_leaf,
};
use enclave_store::{
    AppendError, AuditLog, AuditLogConfig, AuditReader, LeafTree, NewAuditEntry, Receipt,
    SqliteAppender, Store,
};

use crate::backends::{Db, V1, V2, V3, each_backend, old_schema};

const ORIGIN: &str = "test.example/audit";

pub(crate) fn signer() -> Signer {
    Signer::from_seed(ORIGIN, &[7; 32]).unwrap()
}

pub(crate) fn request(id: &str) -> NewAuditEntry {
    NewAuditEntry::now(Event::Request(RequestEvent {
        request_id: id.to_owned(),
        route: "chat_completions".into(),
        status: 200,
        tenant: Some("agency-a".into()),
        principal: Some("alice".into()),
        ..RequestEvent::default()
    }))
}

fn config(interval: Duration) -> AuditLogConfig {
    AuditLogConfig {
        origin: ORIGIN.to_owned(),
        checkpoint_interval: interval,
        checkpoint_dir: None,
        checkpoint_command: Vec::new(),
        previous_verifier_keys: Vec::new(),
        commit_delay: Duration::ZERO,
    }
}

/// Every row, checked to be `0..n` with the index written inside each entry; the request ids.
async fn all_rows(store: &Store) -> Vec<String> {
    let rows = store.audit_rows(0, u64::MAX >> 2).await.unwrap();
    let mut ids = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.index, i as u64, "row {i} of {}", rows.len());
        let entry = AuditEntry::from_canonical_bytes(row.entry.as_bytes()).unwrap();
        assert_eq!(entry.index, row.index);
        let Event::Request(r) = entry.event else {
            panic!("not a request entry")
        };
        ids.push(r.request_id);
    }
    ids
}

/// Verifies the stored log like `enclave audit verify` does.
async fn verify(store: &Store) -> enclave_audit::Verified {
    let trusted = Verifiers::new([signer().verifier_key()]).unwrap();
    let notes: Vec<String> = store
        .audit_checkpoints()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.note)
        .collect();
    let mut verifier = LogVerifier::new(&trusted, Some(ORIGIN), &notes).unwrap();
    for row in store.audit_rows(0, u64::MAX >> 2).await.unwrap() {
        verifier.push(row.index, row.entry.as_bytes()).unwrap();
    }
    verifier.finish().unwrap()
}

#[tokio::test]
async fn appends_get_consecutive_indices_that_are_written_into_the_entries() {
    each_backend(|db: Db| async move {
        let store = db.open().await;
        assert_eq!(store.audit_size().await.unwrap(), 0);
        let batch = store
            .append_audit(vec![request("a"), request("b"), request("c")])
            .await
            .unwrap();
        assert_eq!(batch.first, 0);
        let indices: Vec<u64> = batch
            .results
            .iter()
            .map(|r| r.as_ref().unwrap().index)
            .collect();
        assert_eq!(indices, [0, 1, 2]);
        let batch = store
            .append_audit(vec![request("d"), request("e")])
            .await
            .unwrap();
        assert_eq!(batch.first, 3);
        assert_eq!(store.audit_size().await.unwrap(), 5);
        assert_eq!(all_rows(&store).await, ["a", "b", "c", "d", "e"]);
        let entry = store.audit_entry(3).await.unwrap().unwrap();
        assert_eq!(
            hash_leaf(entry.as_bytes()),
            batch.results[0].as_ref().unwrap().leaf
        );
        assert_eq!(store.audit_entry(5).await.unwrap(), None);
        // An empty batch changes nothing.
        let empty = store.append_audit(Vec::new()).await.unwrap();
        assert_eq!((empty.first, empty.results.len()), (5, 0));
        assert_eq!(store.audit_size().await.unwrap(), 5);
    })
    .await;
}

#[tokio::test]
async fn an_entry_too_large_to_verify_is_skipped_without_taking_an_index() {
    each_backend(|db: Db| async move {
        let store = db.open().await;
        let mut huge = request("huge");
        let Event::Request(r) = &mut huge.event else {
            unreachable!()
        };
        r.model = Some("m".repeat(enclave_audit::MAX_ENTRY_BYTES));
        let batch = store
            .append_audit(vec![request("a"), huge, request("b")])
            .await
            .unwrap();
        assert_eq!(batch.results[0].as_ref().unwrap().index, 0);
        assert!(batch.results[1].is_err());
        assert_eq!(batch.results[2].as_ref().unwrap().index, 1);
        assert_eq!(all_rows(&store).await, ["a", "b"]);
    })
    .await;
}

#[tokio::test]
async fn the_writer_counts_the_entries_that_took_an_index() {
    each_backend(|db: Db| async move {
        let store = db.open().await;
        let log = AuditLog::start(store.clone(), signer(), config(Duration::from_secs(3600)))
            .await
            .unwrap();
        let mut huge = request("huge");
        let Event::Request(r) = &mut huge.event else {
            unreachable!()
        };
        r.model = Some("m".repeat(enclave_audit::MAX_ENTRY_BYTES));
        let refused = log.append_entry(huge);
        assert!(matches!(refused.await, Err(AppendError::Entry(_))));
        assert_eq!(log.append(request("kept").event).await.unwrap(), 0);
        let stats = log.stats();
        assert_eq!(stats.entries, 1, "{stats:?}");
        assert!(stats.commits >= 1 && stats.commits <= 2, "{stats:?}");
        assert_eq!(stats.failed_commits, 0, "{stats:?}");
        assert_eq!(stats.expected, 0, "{stats:?}");
        log.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn two_stores_appending_at_once_leave_no_gap_and_no_duplicate() {
    each_backend(|db: Db| async move {
        // Two stores on one database: two replicas' connection pools.
        let a = db.open().await;
        let b = db.open().await;
        let mut tasks = Vec::new();
        for (w, store) in [(0, a.clone()), (1, b.clone())] {
            for t in 0..4 {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    for n in 0..10 {
                        let batch: Vec<NewAuditEntry> = (0..5)
                            .map(|k| request(&format!("w{w}-t{t}-n{n}-k{k}")))
                            .collect();
                        store.append_audit(batch).await.unwrap();
                    }
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        let ids = all_rows(&a).await;
        assert_eq!(ids.len(), 2 * 4 * 10 * 5);
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert_eq!(b.audit_size().await.unwrap(), ids.len() as u64);
    })
    .await;
}

#[tokio::test]
async fn the_writer_s_own_sqlite_connection_sequences_with_the_pool_and_other_stores() {
    each_backend(|db: Db| async move {
        let a = db.open().await;
        let b = db.open().await;
        let Some(file) = a.sqlite_file() else {
            // PostgreSQL: the writer appends through the pool.
            assert_eq!(a.backend_name(), "postgres");
            return;
        };
        let mut appender = SqliteAppender::open(file).unwrap();
        // Quotes and other SQL-significant text are bound, never spliced into SQL.
        let first = appender
            .append(vec![
                request("it's"),
                request("a 'quoted'); DROP TABLE x; --"),
            ])
            .unwrap();
        assert_eq!(first.first, 0);
        // The pool of another store appends after it, and the connection after that: each
        // reads the head under the write lock.
        let pooled = b.append_audit(vec![request("b")]).await.unwrap();
        assert_eq!(pooled.first, 2);
        let next = appender.append(vec![request("c")]).unwrap();
        assert_eq!(next.first, 3);
        assert_eq!(
            all_rows(&a).await,
            ["it's", "a 'quoted'); DROP TABLE x; --", "b", "c"]
        );
        for (i, result) in first.results.iter().enumerate() {
            let entry = a.audit_entry(i as u64).await.unwrap().unwrap();
            assert_eq!(hash_leaf(entry.as_bytes()), result.as_ref().unwrap().leaf);
        }
        // An entry over the limit takes no index; the others of its batch do.
        let mut huge = request("huge");
        if let Event::Request(r) = &mut huge.event {
            r.model = Some("m".repeat(enclave_audit::MAX_ENTRY_BYTES));
        }
        let mixed = appender
            .append(vec![request("d"), huge, request("e")])
            .unwrap();
        assert_eq!(mixed.first, 4);
        assert!(mixed.results[1].is_err());
        assert_eq!(mixed.results[2].as_ref().unwrap().index, 5);
        // Racing: the connection on a thread of its own, the other store's pool meanwhile.
        let racer = std::thread::spawn(move || {
            for n in 0..20 {
                appender
                    .append(vec![request(&format!("direct-{n}"))])
                    .unwrap();
            }
        });
        for n in 0..20 {
            b.append_audit(vec![request(&format!("pool-{n}"))])
                .await
                .unwrap();
        }
        racer.join().unwrap();
        let ids = all_rows(&a).await;
        assert_eq!(ids.len(), 6 + 2 * 20);
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert_eq!(a.audit_size().await.unwrap(), ids.len() as u64);
        verify(&a).await;
    })
    .await;
}

#[tokio::test]
async fn checkpoints_sign_the_stored_tree_and_are_skipped_while_it_does_not_grow() {
    each_backend(|db: Db| async move {
        let store = db.open().await;
        let signer = signer();
        let tree = LeafTree::new();
        // An empty log gets a checkpoint of size 0 once.
        let first = store
            .write_audit_checkpoint(&tree, ORIGIN, &[&signer])
            .await
            .unwrap()
            .unwrap();
        assert_eq!((first.seq, first.size), (1, 0));
        store
            .append_audit((0..7).map(|i| request(&i.to_string())).collect())
            .await
            .unwrap();
        // The tree is brought up to the log's size from the rows.
        let second = store
            .write_audit_checkpoint(&tree, ORIGIN, &[&signer])
            .await
            .unwrap()
            .unwrap();
        assert_eq!((second.seq, second.size, tree.len()), (2, 7, 7));
        assert_eq!(
            store
                .write_audit_checkpoint(&tree, ORIGIN, &[&signer])
                .await
                .unwrap(),
            None
        );
        let trusted = Verifiers::new([signer.verifier_key()]).unwrap();
        let checkpoint = Checkpoint::open(second.note.as_bytes(), &trusted).unwrap();
        let rows = store.audit_rows(0, 100).await.unwrap();
        let expected = Tree::from_leaves(rows.iter().map(|r| hash_leaf(r.entry.as_bytes())));
        assert_eq!(*checkpoint.root(), expected.root());
        assert_eq!(
            store.latest_audit_checkpoint().await.unwrap(),
            Some(second.clone())
        );
        assert_eq!(
            store.audit_checkpoint_of_size(7).await.unwrap(),
            Some(second.clone())
        );
        assert_eq!(store.audit_checkpoints().await.unwrap(), [first, second]);
        let verified = verify(&store).await;
        assert_eq!((verified.size, verified.signed_size), (7, 7));

        // The reader sees the same, without the master key.
        let reader = AuditReader::connect(&db.url).await.unwrap();
        assert_eq!(reader.size().await.unwrap(), 7);
        assert_eq!(reader.rows(0, 100).await.unwrap(), rows);
        assert_eq!(reader.checkpoints().await.unwrap().len(), 2);
        reader.close().await;
    })
    .await;
}

#[tokio::test]
async fn the_writer_commits_concurrent_appends_in_groups_and_checkpoints_on_shutdown() {
    each_backend(|db: Db| async move {
        let store = db.open().await;
        let log = AuditLog::start(store.clone(), signer(), config(Duration::from_secs(3600)))
            .await
            .unwrap();
        let receipts: Vec<_> = (0..300)
            .map(|i| log.append(request(&format!("r{i}")).event))
            .collect();
        let mut indices = BTreeSet::new();
        for r in receipts {
            indices.insert(r.await.unwrap());
        }
        assert_eq!(indices, (0..300).collect());
        assert_eq!(log.tree().len(), 300);
        assert!(!log.is_unavailable());
        let last = log.append(request("last").event);
        log.shutdown().await;
        assert_eq!(last.await, Ok(300));
        assert_eq!(
            log.append(request("late").event).await,
            Err(AppendError::Closed)
        );
        let checkpoint = store.latest_audit_checkpoint().await.unwrap().unwrap();
        assert_eq!(checkpoint.size, 301);
        let verified = verify(&store).await;
        assert_eq!(verified.signed_size, 301);
        assert_eq!(all_rows(&store).await.len(), 301);
    })
    .await;
}

#[tokio::test]
async fn the_writer_fails_closed_while_the_table_is_gone_and_recovers() {
    each_backend(|db: Db| async move {
        let store = db.open().await;
        let log = AuditLog::start(store.clone(), signer(), config(Duration::from_secs(3600)))
            .await
            .unwrap();
        assert_eq!(log.append(request("before").event).await, Ok(0));
        sqlx_exec(
            &db,
            "ALTER TABLE audit_entries RENAME TO audit_entries_away",
        )
        .await;
        assert_eq!(
            log.append(request("lost").event).await,
            Err(AppendError::Unavailable)
        );
        assert!(log.is_unavailable());
        sqlx_exec(
            &db,
            "ALTER TABLE audit_entries_away RENAME TO audit_entries",
        )
        .await;
        // The next commit succeeds, with the next index: the failed one took none. The outage
        // itself is recorded right after.
        assert_eq!(log.append(request("after").event).await, Ok(1));
        assert!(!log.is_unavailable());
        log.shutdown().await;
        let rows = store.audit_rows(0, 10).await.unwrap();
        assert_eq!(rows.len(), 3);
        let outage = AuditEntry::from_canonical_bytes(rows[2].entry.as_bytes()).unwrap();
        let Event::Admin(outage) = outage.event else {
            panic!("not the outage entry")
        };
        assert_eq!(outage.action, "audit.outage");
        assert!(outage.details["from"] <= outage.details["to"]);
    })
    .await;
}

#[tokio::test]
async fn checkpoints_are_made_on_time_under_a_steady_stream_of_appends() {
    each_backend(|db: Db| async move {
        let store = db.open().await;
        let log = AuditLog::start(store.clone(), signer(), config(Duration::from_secs(1)))
            .await
            .unwrap();
        // 64 appenders that keep the queue from ever running dry for 2.5 checkpoint intervals.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..64 {
            let (log, stop) = (log.clone(), std::sync::Arc::clone(&stop));
            tasks.push(tokio::spawn(async move {
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    log.append(request(&format!("w{w}-{n}")).event)
                        .await
                        .unwrap();
                    n += 1;
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
        // Read while the stream still flows: a checkpoint of a non-empty log exists.
        let during = store.latest_audit_checkpoint().await.unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        log.shutdown().await;
        let during = during.expect("no checkpoint was made while appends kept coming");
        assert!(during.size > 0, "{during:?}");
        verify(&store).await;
    })
    .await;
}

#[tokio::test]
async fn a_commit_waits_for_announced_entries_only_while_they_are_announced() {
    each_backend(|db: Db| async move {
        let store = db.open().await;
        // A delay far longer than the test: a commit that waited it out would time out below.
        let mut cfg = config(Duration::from_secs(3600));
        cfg.commit_delay = Duration::from_secs(600);
        let log = AuditLog::start(store.clone(), signer(), cfg).await.unwrap();

        // Nobody announced: an append commits at once.
        let first = within(log.append(request("alone").event)).await;
        assert_eq!(first.expect("a lone append waited").unwrap(), 0);

        // A request announced its entry: another's commit waits for it ...
        let announced = log.expect();
        let waiting = held(&log, "waits").await;
        // ... until it arrives: both commit together, the announced one included.
        let arrived = log.append_expected(request("announced").event, Some(announced));
        let (a, b) = (within(waiting).await, within(arrived).await);
        assert_eq!(a.expect("the waiting append never committed").unwrap(), 1);
        assert_eq!(b.expect("the announced append never committed").unwrap(), 2);

        // An announcement withdrawn (the request went to wait on a backend) holds nothing up
        // once the next entry arrives; a shutdown ends a wait at once.
        drop(log.expect());
        let after = within(log.append(request("after").event)).await;
        assert_eq!(
            after
                .expect("a withdrawn announcement held a commit")
                .unwrap(),
            3
        );
        // Withdrawn while a commit waits for it: the wait ends then, not at the delay.
        let withdrawn = log.expect();
        let waiting = held(&log, "waits again").await;
        drop(withdrawn);
        assert_eq!(
            within(waiting)
                .await
                .expect("a commit kept waiting for a withdrawn announcement")
                .unwrap(),
            4
        );
        let _held = log.expect();
        let pending = log.append(request("at shutdown").event);
        within(log.shutdown())
            .await
            .expect("shutdown waited for an announced entry");
        assert_eq!(within(pending).await.unwrap().unwrap(), 5);
        assert_eq!(verify(&store).await.size, 6);
    })
    .await;
}

/// `f`, given 20 seconds.
/// An append of request `id` that has not committed 300 ms later (an announced entry holds
/// its commit), still pending.
async fn held(log: &AuditLog, id: &str) -> std::pin::Pin<Box<Receipt>> {
    let mut waiting = Box::pin(log.append(request(id).event));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        futures_now(&mut waiting).is_none(),
        "committed while an announced entry was still coming"
    );
    waiting
}

fn within<F: std::future::Future>(f: F) -> tokio::time::Timeout<F> {
    tokio::time::timeout(Duration::from_secs(20), f)
}

/// The future's output if it is ready now.
fn futures_now<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match std::pin::Pin::new(f).poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

#[tokio::test]
async fn an_outage_ends_without_requests_and_is_recorded() {
    each_backend(|db: Db| async move {
        let store = db.open().await;
        let log = AuditLog::start(store.clone(), signer(), config(Duration::from_secs(3600)))
            .await
            .unwrap();
        sqlx_exec(
            &db,
            "ALTER TABLE audit_entries RENAME TO audit_entries_away",
        )
        .await;
        assert_eq!(
            log.append(request("lost").event).await,
            Err(AppendError::Unavailable)
        );
        sqlx_exec(
            &db,
            "ALTER TABLE audit_entries_away RENAME TO audit_entries",
        )
        .await;
        // No request comes (a load balancer took the replica out of rotation): the writer
        // probes on its own.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while log.is_unavailable() {
            assert!(
                std::time::Instant::now() < deadline,
                "the outage never ended"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        log.shutdown().await;
        let rows = store.audit_rows(0, 10).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert!(
            rows[0].entry.contains("\"action\":\"audit.outage\""),
            "{}",
            rows[0].entry
        );
    })
    .await;
}

#[tokio::test]
async fn two_writers_on_one_database_share_one_log_and_one_tree() {
    each_backend(|db: Db| async move {
        let a = AuditLog::start(db.open().await, signer(), config(Duration::from_secs(3600)))
            .await
            .unwrap();
        let b = AuditLog::start(db.open().await, signer(), config(Duration::from_secs(3600)))
            .await
            .unwrap();
        let mut receipts = Vec::new();
        for i in 0..50 {
            receipts.push(a.append(request(&format!("a{i}")).event));
            receipts.push(b.append(request(&format!("b{i}")).event));
        }
        let mut indices = BTreeSet::new();
        for r in receipts {
            indices.insert(r.await.unwrap());
        }
        assert_eq!(indices, (0..100).collect());
        assert_eq!(a.sync().await.unwrap(), 100);
        assert_eq!(b.sync().await.unwrap(), 100);
        assert_eq!(a.tree().root_at(100), b.tree().root_at(100));
        // Checkpoints from both keep sizes in creation order.
        a.checkpoint_now().await.unwrap();
        b.append(request("b-last").event).await.unwrap();
        b.checkpoint_now().await.unwrap();
        a.shutdown().await;
        b.shutdown().await;
        let store = db.open().await;
        let sizes: Vec<u64> = store
            .audit_checkpoints()
            .await
            .unwrap()
            .iter()
            .map(|c| c.size)
            .collect();
        assert_eq!(sizes, [100, 101]);
        assert_eq!(verify(&store).await.signed_size, 101);
    })
    .await;
}

#[tokio::test]
async fn checkpoints_are_written_to_the_checkpoint_dir_on_the_interval() {
    each_backend(|db: Db| async move {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(Duration::from_secs(1));
        cfg.checkpoint_dir = Some(dir.path().join("out"));
        let log = AuditLog::start(db.open().await, signer(), cfg)
            .await
            .unwrap();
        log.append(request("x").event).await.unwrap();
        let file = dir
            .path()
            .join("out")
            .join(enclave_audit::checkpoint_file_name(1));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !file.exists() {
            assert!(std::time::Instant::now() < deadline, "no checkpoint file");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let note = std::fs::read_to_string(&file).unwrap();
        let trusted = Verifiers::new([signer().verifier_key()]).unwrap();
        assert_eq!(
            Checkpoint::open(note.as_bytes(), &trusted).unwrap().size(),
            1
        );
        log.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn the_audit_upgrade_keeps_every_entry_and_makes_the_sqlite_keys_rowids() {
    each_backend(|db: Db| async move {
        // The database as schema version 3 left it, with three entries appended as it did.
        let pool = old_schema(&db, &[V1, V2, V3]).await;
        let mut rows = Vec::new();
        for index in 0..3u64 {
            let entry = AuditEntry {
                index,
                time: enclave_audit::Timestamp::from_unix_millis(1_795_512_600_000).unwrap(),
                event: request(&format!("old-{index}")).event,
            };
            let text = String::from_utf8(entry.encode().unwrap()).unwrap();
            sqlx::query("INSERT INTO audit_entries (idx, entry) VALUES ($1, $2)")
                .bind(i64::try_from(index).unwrap())
                .bind(text)
                .execute(&pool)
                .await
                .unwrap();
            rows.push(format!("old-{index}"));
        }
        sqlx::query("UPDATE audit_head SET size = 3 WHERE id = 0")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;

        let store = db.open().await;
        assert_eq!(
            store.schema_version().await.unwrap(),
            enclave_store::SCHEMA_VERSION
        );
        assert_eq!(all_rows(&store).await, rows);
        assert_eq!(store.audit_size().await.unwrap(), 3);
        if db.backend == "sqlite" {
            // The keys are the rowid: no separate index is left to write on every append.
            let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
            let indexes: Vec<(String,)> = sqlx::query_as(
                "SELECT name FROM sqlite_master WHERE type = 'index' \
                 AND tbl_name IN ('audit_entries', 'audit_head')",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            assert!(indexes.is_empty(), "{indexes:?}");
            // The constraints came along: a second head row and a duplicate index are refused.
            for sql in [
                "INSERT INTO audit_head (id, size) VALUES (1, 0)",
                "INSERT INTO audit_entries (idx, entry) VALUES (0, 'x')",
                "UPDATE audit_head SET size = -1 WHERE id = 0",
            ] {
                assert!(sqlx::query(sql).execute(&pool).await.is_err(), "{sql}");
            }
            pool.close().await;
        }
        // Appends carry on after the upgraded rows, and the whole log verifies.
        let log = AuditLog::start(store.clone(), signer(), config(Duration::from_secs(3600)))
            .await
            .unwrap();
        assert_eq!(log.append(request("new").event).await.unwrap(), 3);
        log.shutdown().await;
        assert_eq!(verify(&store).await.size, 4);
    })
    .await;
}

async fn sqlx_exec(db: &Db, sql: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    sqlx::query(sql).execute(&pool).await.unwrap();
    pool.close().await;
}
