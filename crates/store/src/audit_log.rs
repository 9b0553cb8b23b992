//! The audit log's writer: group commit, the in-memory tree, and periodic signed checkpoints.
//!
//! [`AuditLog::append`] never waits: it queues the entry and returns a [`Receipt`], a future
//! that resolves to the entry's index once it is durable. One writer thread takes whatever is
//! queued (up to [`MAX_BATCH`] entries) and appends it in one transaction — on SQLite through
//! its own connection, on its own thread ([`SqliteAppender`]), on PostgreSQL with
//! [`Store::append_audit`]; while that commit runs, new entries queue up for the next one. So a
//! commit (and its disk flush) is shared by every request that arrived meanwhile, and nobody
//! flushes per request. The writer is a plain thread that sleeps on its queue: an append wakes
//! it, its commit wakes the request, and no other thread is involved on SQLite.
//!
//! If a commit fails, every waiter of that batch gets [`AppendError::Unavailable`] and the log
//! is marked unavailable ([`AuditLog::is_unavailable`]) until a later commit succeeds: callers
//! fail closed.
//!
//! The writer also makes a signed checkpoint every `checkpoint_interval` when the log grew, and
//! one more when it is shut down ([`AuditLog::shutdown`]); each new checkpoint is stored, and
//! optionally written to a directory and piped to a command, so copies leave the operator's
//! reach.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use enclave_audit::{
    AdminEvent, Checkpoint, EntryError, Event, Signer, Timestamp, VerifierKey, Verifiers,
    checkpoint_file_name,
};
use tokio::sync::oneshot;

use crate::audit::{AppendBatch, LeafTree, NewAuditEntry, StoredCheckpoint, now_timestamp};
use crate::audit_direct::SqliteAppender;
use crate::{Store, StoreError};

/// The most entries one commit takes.
pub const MAX_BATCH: usize = 4096;

/// How often the writer tries to write again while the log is unavailable.
const OUTAGE_RETRY: Duration = Duration::from_secs(2);

/// How the writer signs and publishes checkpoints.
#[derive(Clone, Debug)]
pub struct AuditLogConfig {
    /// The log's name in its checkpoints (`enclave.example.gov/audit`); also the signing key's
    /// name.
    pub origin: String,
    /// How often to make a checkpoint when the log grew.
    pub checkpoint_interval: Duration,
    /// A directory each new checkpoint is also written to (one file per checkpoint, named by its
    /// sequence number as in an export).
    pub checkpoint_dir: Option<PathBuf>,
    /// A command (program and arguments, no shell) each new checkpoint is piped to.
    pub checkpoint_command: Vec<String>,
    /// Keys of earlier signing keys, trusted when the latest stored checkpoint is checked at
    /// start (key rotation).
    pub previous_verifier_keys: Vec<VerifierKey>,
    /// How long a commit may wait for entries that requests in flight are about to append
    /// (see [`AuditLog::expect`]); zero commits at once. PostgreSQL's `commit_delay` with
    /// `commit_siblings = 1`, except that the wait ends as soon as no request is expected.
    pub commit_delay: Duration,
}

/// The audit log of a running gateway. Cheap to clone; the clones share one writer.
#[derive(Clone)]
pub struct AuditLog {
    jobs: mpsc::Sender<Job>,
    state: Arc<State>,
}

/// Why an entry was not appended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The writer has stopped (the gateway is shutting down).
    #[error("the audit log is closed")]
    Closed,
    /// The entry cannot be encoded (it is longer than the entry limit).
    #[error("the audit entry cannot be encoded: {0}")]
    Entry(EntryError),
    /// The commit of its batch failed; the cause is in the operator's log.
    #[error("the audit log cannot write")]
    Unavailable,
}

/// The group-commit writer's counters ([`AuditLog::stats`]): entries per commit is
/// `entries / commits`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Transactions committed.
    pub commits: u64,
    /// Entries in them.
    pub entries: u64,
    /// Transactions that failed (their requests were refused).
    pub failed_commits: u64,
    /// Time spent committing (the disk flush included), successful or not.
    pub commit_time: Duration,
    /// Requests that announced an entry and have not queued it yet (now).
    pub expected: usize,
}

/// A request's announcement that it will append an entry soon ([`AuditLog::expect`]); ends
/// when dropped.
pub struct Expected {
    /// `None` once ended by [`Expected::end`].
    state: Option<Arc<State>>,
}

impl Expected {
    /// Ends the announcement (once) without waking the writer; the state to wake it with if it
    /// was the last one outstanding.
    fn end(&mut self) -> Option<Arc<State>> {
        let state = self.state.take()?;
        (state.expected.fetch_sub(1, Ordering::AcqRel) == 1).then_some(state)
    }
}

impl Drop for Expected {
    fn drop(&mut self) {
        if let Some(state) = self.end() {
            // The last announcement ended: a writer waiting for it need wait no longer.
            state.wake_writer();
        }
    }
}

impl std::fmt::Debug for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expected").finish_non_exhaustive()
    }
}

/// The outcome of [`AuditLog::append`]: a future of the entry's index, ready once the entry is
/// durable. Dropping it does not cancel the append.
#[derive(Debug)]
pub struct Receipt(ReceiptState);

#[derive(Debug)]
enum ReceiptState {
    Waiting(oneshot::Receiver<Result<u64, AppendError>>),
    Failed(Option<AppendError>),
}

struct State {
    store: Store,
    tree: LeafTree,
    unavailable: AtomicBool,
    /// Requests that announced an entry ([`Expected`]) and have not queued it yet.
    expected: AtomicUsize,
    /// The writer's counters ([`AuditLog::stats`]).
    commits: AtomicU64,
    committed_entries: AtomicU64,
    failed_commits: AtomicU64,
    commit_micros: AtomicU64,
    origin: String,
    verifier: VerifierKey,
    /// The writer's thread, which waits parked for announced entries (see `Writer::gather`).
    writer: OnceLock<std::thread::Thread>,
}

#[expect(
    clippy::large_enum_variant,
    reason = "nearly every job is an append; boxing it would cost an allocation per request for \
              the sake of the rare control job"
)]
enum Job {
    Append(NewAuditEntry, oneshot::Sender<Result<u64, AppendError>>),
    Checkpoint(oneshot::Sender<Result<Option<StoredCheckpoint>, StoreError>>),
    Shutdown(oneshot::Sender<()>),
}

// === impl AuditLog ===

impl AuditLog {
    /// Loads the tree from the stored entries, checks the latest checkpoint against it, and
    /// starts the writer thread.
    ///
    /// A latest checkpoint that does not open with the signing key (or a previous key) or whose
    /// root differs from the stored entries' is logged as an error, and the log keeps running:
    /// `enclave audit verify` names the problem.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the entries cannot be read; [`StoreError::AuditLog`] when
    /// a row is missing (the tree cannot be built) or the writer thread cannot start.
    pub async fn start(
        store: Store,
        signer: Signer,
        config: AuditLogConfig,
    ) -> Result<AuditLog, StoreError> {
        let state = Arc::new(State {
            store,
            tree: LeafTree::new(),
            unavailable: AtomicBool::new(false),
            expected: AtomicUsize::new(0),
            commits: AtomicU64::new(0),
            committed_entries: AtomicU64::new(0),
            failed_commits: AtomicU64::new(0),
            commit_micros: AtomicU64::new(0),
            origin: config.origin.clone(),
            verifier: signer.verifier_key(),
            writer: OnceLock::new(),
        });
        // The head first: entries are committed with the head, so the rows read after it are
        // at least as many (more if another replica appends meanwhile).
        let head = state.store.audit_size().await?;
        let loaded = state.store.sync_audit_tree(&state.tree).await?;
        if loaded < head {
            tracing::error!(
                head,
                rows = loaded,
                "the audit head counts more entries than are stored: run `enclave audit verify`"
            );
        }
        state.check_latest_checkpoint(&config).await;
        // On SQLite the writer appends through a connection of its own (see `audit_direct`);
        // a database in memory has only the pool's one connection.
        let appender = match state.store.sqlite_file() {
            Some(path) => Some(SqliteAppender::open(path)?),
            None => None,
        };
        // SECURITY: the writer's async store calls run on the runtime that started the log
        // (polled on the writer's thread with `Handle::block_on`), not on a runtime of its own:
        // the pool's connections register their sockets with the runtime that opens them, and
        // the pool takes a dropped connection back in a task it spawns. On a private runtime
        // those tasks did not run between commits (PostgreSQL requests then timed out waiting
        // for a connection the database showed idle), and the connections it opened died with
        // it at shutdown while the pool still handed them out.
        let runtime = tokio::runtime::Handle::current();
        let (jobs, rx) = mpsc::channel();
        let mut worker = Writer {
            state: Arc::clone(&state),
            signer,
            config,
            outage_since: None,
            appender,
            runtime,
        };
        std::thread::Builder::new()
            .name("enclave-audit".to_owned())
            .spawn(move || worker.run(&rx))
            .map_err(|e| StoreError::AuditLog(format!("starting the audit writer thread: {e}")))?;
        Ok(AuditLog { jobs, state })
    }

    /// Queues `event` (stamped now) for the next commit. Never waits; await the [`Receipt`] for
    /// the index once the entry is durable.
    pub fn append(&self, event: Event) -> Receipt {
        self.append_entry(NewAuditEntry::now(event))
    }

    /// Queues `event` (stamped now) as [`AuditLog::append`] does, and ends the announcement
    /// `expected` made: the writer no longer waits for it.
    pub fn append_expected(&self, event: Event, expected: Option<Expected>) -> Receipt {
        // Counted out before the entry is queued, so that a writer the entry wakes does not
        // wait for what it already holds; a writer parked for it is woken after, so that it
        // finds the entry.
        let last = expected.and_then(|mut e| e.end());
        let receipt = self.append(event);
        if let Some(state) = last {
            state.wake_writer();
        }
        receipt
    }

    /// Announces that the caller will soon append an entry (a request admitted into the
    /// pipeline). While announcements are outstanding, a commit waits up to
    /// [`AuditLogConfig::commit_delay`] for them, so that one disk flush serves more requests;
    /// nobody waits for a request that is not coming. The announcement ends when the guard is
    /// dropped or handed to [`AuditLog::append_expected`]; drop it while the request waits on
    /// something slow (a model), and announce again after.
    pub fn expect(&self) -> Expected {
        self.state.expected.fetch_add(1, Ordering::AcqRel);
        Expected {
            state: Some(Arc::clone(&self.state)),
        }
    }

    /// Queues an entry with its own time.
    pub fn append_entry(&self, entry: NewAuditEntry) -> Receipt {
        let (tx, rx) = oneshot::channel();
        match self.jobs.send(Job::Append(entry, tx)) {
            Ok(()) => Receipt(ReceiptState::Waiting(rx)),
            Err(_) => Receipt(ReceiptState::Failed(Some(AppendError::Closed))),
        }
    }

    /// Whether the last commit failed (and none has succeeded since): new requests should be
    /// refused before they do anything.
    pub fn is_unavailable(&self) -> bool {
        self.state.unavailable.load(Ordering::Relaxed)
    }

    /// The writer's counters since start.
    pub fn stats(&self) -> AuditStats {
        self.state.stats()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// The tree of the entries this writer appended and read; see [`AuditLog::sync`] for the
    /// entries other replicas appended.
    pub fn tree(&self) -> &LeafTree {
        &self.state.tree
    }

    /// Reads entries appended since the tree was last extended (by other replicas sharing the
    /// database) into the tree; the tree's length.
    ///
    /// # Errors
    ///
    /// As [`Store::sync_audit_tree`].
    pub async fn sync(&self) -> Result<u64, StoreError> {
        self.state.store.sync_audit_tree(&self.state.tree).await
    }

    /// The log's name in its checkpoints.
    pub fn origin(&self) -> &str {
        &self.state.origin
    }

    /// The public key that verifies this writer's checkpoints.
    pub fn verifier_key(&self) -> &VerifierKey {
        &self.state.verifier
    }

    /// Makes a checkpoint now (after the entries queued before this call), unless the latest
    /// one has the log's size.
    ///
    /// # Errors
    ///
    /// As [`Store::write_audit_checkpoint`]; [`StoreError::AuditLog`] when the writer stopped.
    pub async fn checkpoint_now(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        let (tx, rx) = oneshot::channel();
        let stopped = || StoreError::AuditLog("the audit writer has stopped".to_owned());
        self.jobs.send(Job::Checkpoint(tx)).map_err(|_| stopped())?;
        self.state.wake_writer();
        rx.await.map_err(|_| stopped())?
    }

    /// Writes what is queued, makes a final checkpoint if the log grew, and stops the writer;
    /// later appends fail with [`AppendError::Closed`]. Returns when the writer has stopped.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(Job::Shutdown(tx)).is_ok() {
            self.state.wake_writer();
            let _ = rx.await;
        }
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("origin", &self.state.origin)
            .field("size", &self.state.tree.len())
            .field("unavailable", &self.is_unavailable())
            .finish_non_exhaustive()
    }
}

// === impl State ===

impl State {
    /// Ends the writer's wait for announced entries, if it is waiting (a control job was queued
    /// or the last announcement ended). Without a syscall when the writer is not parked.
    fn wake_writer(&self) {
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
    }

    /// The writer's counters now.
    fn stats(&self) -> AuditStats {
        AuditStats {
            commits: self.commits.load(Ordering::Relaxed),
            entries: self.committed_entries.load(Ordering::Relaxed),
            failed_commits: self.failed_commits.load(Ordering::Relaxed),
            commit_time: Duration::from_micros(self.commit_micros.load(Ordering::Relaxed)),
            expected: self.expected.load(Ordering::Relaxed),
        }
    }

    /// Logs an error when the latest stored checkpoint does not open with the trusted keys or
    /// does not match the stored entries.
    async fn check_latest_checkpoint(&self, config: &AuditLogConfig) {
        let latest = match self.store.latest_audit_checkpoint().await {
            Ok(Some(latest)) => latest,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "reading the latest audit checkpoint");
                return;
            }
        };
        let mut keys = vec![self.verifier.clone()];
        keys.extend(
            config
                .previous_verifier_keys
                .iter()
                .filter(|k| **k != self.verifier)
                .cloned(),
        );
        let opened = Verifiers::new(keys)
            .and_then(|trusted| Checkpoint::open(latest.note.as_bytes(), &trusted));
        let checkpoint = match opened {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    seq = latest.seq,
                    error = %e,
                    "the latest audit checkpoint does not open with the signing key or \
                     audit.previous_verifier_keys: run `enclave audit verify`"
                );
                return;
            }
        };
        match self.tree.root_at(checkpoint.size()) {
            Ok(root) if root == *checkpoint.root() => {}
            _ => tracing::error!(
                seq = latest.seq,
                size = checkpoint.size(),
                "the stored audit entries do not match the latest checkpoint: run `enclave audit verify`"
            ),
        }
    }
}

// === impl Receipt ===

impl Future for Receipt {
    type Output = Result<u64, AppendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            ReceiptState::Waiting(rx) => match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(result)) => Poll::Ready(result),
                Poll::Ready(Err(_)) => Poll::Ready(Err(AppendError::Closed)),
                Poll::Pending => Poll::Pending,
            },
            ReceiptState::Failed(e) => Poll::Ready(Err(e.take().unwrap_or(AppendError::Closed))),
        }
    }
}

// === the writer ===

struct Writer {
    state: Arc<State>,
    signer: Signer,
    config: AuditLogConfig,
    /// When the current outage began (the first failed commit), while commits fail.
    outage_since: Option<Timestamp>,
    /// The writer's own connection to a SQLite store's file; `None` on PostgreSQL (and for a
    /// SQLite database in memory), where appends go through the pool.
    appender: Option<SqliteAppender>,
    /// The runtime that started the log: the store's async operations (checkpoints, reads,
    /// PostgreSQL appends) are polled on the writer's thread, their I/O and the tasks they
    /// spawn run on it.
    runtime: tokio::runtime::Handle,
}

impl Writer {
    /// Serves jobs until the log is shut down or every handle is gone.
    fn run(&mut self, rx: &mpsc::Receiver<Job>) {
        let _ = self.state.writer.set(std::thread::current());
        let interval = self.config.checkpoint_interval.max(Duration::from_secs(1));
        let mut next_checkpoint = Instant::now() + interval;
        let mut next_retry: Option<Instant> = None;
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        loop {
            // Timers first, however the writer woke: under a steady stream of appends the queue
            // is never empty long enough to time out, and checkpoints must still be made.
            let now = Instant::now();
            if next_retry.is_some_and(|r| r <= now) {
                // Nobody may be asking (a load balancer stopped sending requests when
                // /readyz failed): try to write the outage's own entry.
                self.record_outage_end(true);
                next_retry = self.outage_since.map(|_| now + OUTAGE_RETRY);
            }
            if next_checkpoint <= now {
                self.checkpoint().ok();
                next_checkpoint = Instant::now() + interval;
            }
            let due = next_retry.map_or(next_checkpoint, |r| r.min(next_checkpoint));
            match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                Ok(job) => {
                    jobs.push(job);
                    self.gather(rx, &mut jobs);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Every handle is gone: nothing more can arrive.
                    self.checkpoint().ok();
                    return;
                }
            }
            let mut entries = Vec::with_capacity(jobs.len());
            let mut waiters = Vec::with_capacity(jobs.len());
            let mut control = Vec::new();
            for job in jobs.drain(..) {
                match job {
                    Job::Append(entry, waiter) => {
                        entries.push(entry);
                        waiters.push(waiter);
                    }
                    other => control.push(other),
                }
            }
            if !entries.is_empty() {
                let was_down = self.outage_since.is_some();
                self.commit(entries, waiters);
                if !was_down && self.outage_since.is_some() {
                    // The first probe comes one retry period after the outage began.
                    next_retry = Some(Instant::now() + OUTAGE_RETRY);
                }
                self.record_outage_end(false);
                if self.outage_since.is_none() {
                    next_retry = None;
                }
            }
            for job in control {
                match job {
                    Job::Append(..) => {}
                    Job::Checkpoint(reply) => {
                        let _ = reply.send(self.checkpoint());
                    }
                    Job::Shutdown(ack) => {
                        // Whatever is still queued is written before the last checkpoint;
                        // what arrives after is refused (its receipt reports `Closed` once
                        // the queue is dropped).
                        let mut entries = Vec::new();
                        let mut waiters = Vec::new();
                        while let Ok(job) = rx.try_recv() {
                            if let Job::Append(entry, waiter) = job {
                                entries.push(entry);
                                waiters.push(waiter);
                            }
                        }
                        if !entries.is_empty() {
                            self.commit(entries, waiters);
                        }
                        self.checkpoint().ok();
                        let st = self.state.stats();
                        tracing::info!(
                            commits = st.commits,
                            entries = st.entries,
                            failed_commits = st.failed_commits,
                            commit_ms = st.commit_time.as_millis(),
                            "the audit writer stopped"
                        );
                        let _ = ack.send(());
                        return;
                    }
                }
            }
        }
    }

    /// Takes what else is queued into `jobs`; then, while requests in flight have announced
    /// entries ([`AuditLog::expect`]), waits for them up to the commit delay from now — one
    /// flush for all, at the cost of at most that delay to the requests that wait. A control
    /// job (a checkpoint or shutdown asked for) ends the wait: what is here commits now.
    ///
    /// The wait is a park, not a receive: an entry queued meanwhile does not wake the writer
    /// (a receive did, one context switch on each side per entry, which cost more CPU than the
    /// commit it was waiting to share). The writer is unparked when the last announcement ends
    /// and when a control job is queued; otherwise it wakes at the deadline.
    fn gather(&self, rx: &mpsc::Receiver<Job>, jobs: &mut Vec<Job>) {
        let is_control = |job: &Job| !matches!(job, Job::Append(..));
        let mut control = jobs.iter().any(is_control);
        let take_queued = |jobs: &mut Vec<Job>, control: &mut bool| {
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => {
                        *control |= is_control(&job);
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
        };
        take_queued(jobs, &mut control);
        let delay = self.config.commit_delay;
        if delay.is_zero() {
            return;
        }
        let deadline = Instant::now() + delay;
        while !control && jobs.len() < MAX_BATCH && self.state.expected.load(Ordering::Acquire) > 0
        {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // Spurious returns (an unpark meant for an earlier wait) only recheck.
            std::thread::park_timeout(left);
            take_queued(jobs, &mut control);
        }
    }

    /// Appends one batch and answers its waiters.
    fn commit(
        &mut self,
        entries: Vec<NewAuditEntry>,
        waiters: Vec<oneshot::Sender<Result<u64, AppendError>>>,
    ) {
        let count = entries.len();
        let started = Instant::now();
        let appended = self.append(entries);
        let state = &self.state;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        state.commit_micros.fetch_add(micros, Ordering::Relaxed);
        match appended {
            Ok(batch) => {
                state.commits.fetch_add(1, Ordering::Relaxed);
                if state.unavailable.swap(false, Ordering::Relaxed) {
                    tracing::info!("the audit log is writable again");
                }
                let leaves: Vec<_> = batch
                    .results
                    .iter()
                    .filter_map(|r| r.as_ref().ok().map(|a| a.leaf))
                    .collect();
                // Only the entries that took an index (one too large to encode took none).
                state
                    .committed_entries
                    .fetch_add(leaves.len() as u64, Ordering::Relaxed);
                let extended = state.tree.extend(batch.first, &leaves);
                for (result, waiter) in batch.results.into_iter().zip(waiters) {
                    let _ = waiter.send(result.map(|a| a.index).map_err(AppendError::Entry));
                }
                if !extended {
                    // Another replica appended since the tree was last extended: read its
                    // entries (and these) from the database.
                    if let Err(e) = self
                        .runtime
                        .block_on(state.store.sync_audit_tree(&state.tree))
                    {
                        tracing::error!(error = %e, "reading other replicas' audit entries");
                    }
                }
            }
            Err(e) => {
                state.failed_commits.fetch_add(1, Ordering::Relaxed);
                if self.outage_since.is_none() {
                    self.outage_since = Some(now_timestamp());
                }
                if !state.unavailable.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        error = %e,
                        entries = count,
                        "the audit log cannot write: requests are refused with audit_unavailable until it can"
                    );
                } else {
                    tracing::warn!(error = %e, entries = count, "the audit log still cannot write");
                }
                for waiter in waiters {
                    let _ = waiter.send(Err(AppendError::Unavailable));
                }
            }
        }
    }

    /// Appends `entries` in one transaction: through the writer's own SQLite connection, or
    /// the pool.
    fn append(&mut self, entries: Vec<NewAuditEntry>) -> Result<AppendBatch, StoreError> {
        match &mut self.appender {
            Some(appender) => appender.append(entries),
            None => self
                .runtime
                .block_on(self.state.store.append_audit(entries)),
        }
    }

    /// After an outage, once a commit succeeds again: appends an `audit.outage` admin entry
    /// saying from when to when the log could not write (requests were refused meanwhile). It
    /// is also the probe that ends an outage when no request arrives.
    /// `probe`: try even though the last commit failed (from the retry timer).
    fn record_outage_end(&mut self, probe: bool) {
        let Some(since) = self.outage_since else {
            return;
        };
        if self.state.unavailable.load(Ordering::Relaxed) && !probe {
            return;
        }
        let event = Event::Admin(AdminEvent {
            action: "audit.outage".to_owned(),
            actor: "enclave".to_owned(),
            details: BTreeMap::from([
                ("from".to_owned(), since.to_string()),
                ("to".to_owned(), now_timestamp().to_string()),
                (
                    "effect".to_owned(),
                    "requests were refused with audit_unavailable".to_owned(),
                ),
            ]),
            request_id: None,
            target: None,
            tenant: None,
        });
        self.commit(vec![NewAuditEntry::now(event)], Vec::new());
        if !self.state.unavailable.load(Ordering::Relaxed) {
            self.outage_since = None;
        }
    }

    /// Makes a checkpoint if the log grew, and publishes it.
    fn checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        let state = &self.state;
        let written = self.runtime.block_on(state.store.write_audit_checkpoint(
            &state.tree,
            &state.origin,
            &[&self.signer],
        ));
        match &written {
            Ok(Some(c)) => {
                tracing::info!(seq = c.seq, size = c.size, "audit checkpoint signed");
                self.publish(c);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "the audit checkpoint could not be made"),
        }
        written
    }

    /// Writes a new checkpoint to the configured directory and pipes it to the configured
    /// command.
    fn publish(&self, checkpoint: &StoredCheckpoint) {
        if let Some(dir) = &self.config.checkpoint_dir
            && let Err(e) = write_checkpoint_file(dir, checkpoint)
        {
            tracing::error!(dir = %dir.display(), error = %e, "writing the audit checkpoint to checkpoint_dir");
        }
        if let Some((program, args)) = self.config.checkpoint_command.split_first() {
            let mut command = std::process::Command::new(program);
            command
                .args(args)
                .env("ENCLAVE_CHECKPOINT_SEQ", checkpoint.seq.to_string())
                .env("ENCLAVE_CHECKPOINT_SIZE", checkpoint.size.to_string())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null());
            let note = checkpoint.note.clone();
            let program = program.clone();
            // The command may take its time; it never holds up the writer.
            let spawned = std::thread::Builder::new()
                .name("enclave-checkpoint-command".to_owned())
                .spawn(move || {
                    let mut run = || -> std::io::Result<std::process::ExitStatus> {
                        let mut child = command.spawn()?;
                        if let Some(mut stdin) = child.stdin.take() {
                            stdin.write_all(note.as_bytes())?;
                        }
                        child.wait()
                    };
                    match run() {
                        Ok(status) if status.success() => {}
                        Ok(status) => tracing::error!(command = %program, %status, "audit.checkpoint_command failed"),
                        Err(e) => tracing::error!(command = %program, error = %e, "audit.checkpoint_command could not run"),
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "starting audit.checkpoint_command");
            }
        }
    }
}

/// Writes `checkpoint` to `dir/<seq>` (created with mode 0700 if missing), never replacing a
/// file, and syncs it.
fn write_checkpoint_file(dir: &Path, checkpoint: &StoredCheckpoint) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)?;
    let path = dir.join(checkpoint_file_name(checkpoint.seq));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    let mut file = match options.open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    };
    file.write_all(checkpoint.note.as_bytes())?;
    file.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}
