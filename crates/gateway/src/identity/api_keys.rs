//! API keys on the request path, checked so that a flood of made-up keys cannot reach the
//! database.
//!
//! - A key whose text is not an Enclave key, or whose check tag does not verify and whose id is
//!   not one of the unrevoked legacy keys (made before check tags; their ids are read at start
//!   and every [`LEGACY_REFRESH`] by a background task), is refused with no database access:
//!   one HMAC and a hash-set lookup.
//! - A key whose id the database reported unknown or revoked is remembered for [`NEGATIVE_TTL`]
//!   (at most [`NEGATIVE_MAX`] ids), and refused without asking again.
//! - Concurrent lookups of the same key share one query; lookups of legacy keys — which an
//!   attacker who knows a legacy id can send with any secret — run at most
//!   [`LEGACY_CONCURRENCY`] at a time, and a request waits at most [`LEGACY_WAIT`] for its turn.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use enclave_store::{KeyLookup, KeyRecord, KeyShape, PrincipalRecord, Store};
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::Instant;

use crate::error::ApiError;

/// How often the ids of the unrevoked legacy keys are read again.
pub(crate) const LEGACY_REFRESH: Duration = Duration::from_secs(60);

/// How long an id the database reported unknown or revoked is refused without asking again.
/// Revocation is final, and a key id is never reused.
pub(crate) const NEGATIVE_TTL: Duration = Duration::from_secs(60);

/// Most ids remembered as unknown or revoked.
pub(crate) const NEGATIVE_MAX: usize = 10_000;

/// Most legacy-key lookups running at once.
pub(crate) const LEGACY_CONCURRENCY: usize = 4;

/// Longest wait for a legacy-key lookup slot before the request is refused.
pub(crate) const LEGACY_WAIT: Duration = Duration::from_millis(250);

/// How long a request waits for another's read of the legacy ids when none were read yet.
const LEGACY_LOAD_WAIT: Duration = Duration::from_secs(2);

/// The API keys of the store, behind the checks that keep floods off the database.
pub(crate) struct ApiKeys {
    inner: Arc<Inner>,
}

/// The state shared with the task that reads the legacy ids.
struct Inner {
    store: Store,
    /// The unrevoked legacy key ids, once read.
    legacy: Mutex<Option<Arc<HashSet<String>>>>,
    /// Held while the legacy ids are read, so that one request reads them.
    legacy_read: tokio::sync::Mutex<()>,
    legacy_slots: Semaphore,
    /// Ids known not to authenticate, until when.
    negative: Mutex<HashMap<String, Instant>>,
    /// Lookups running now, by the SHA-256 digest of the presented key.
    in_flight: Mutex<HashMap<[u8; 32], Arc<OnceCell<Verdict>>>>,
}

/// The outcome of one lookup, shared by every request that waited for it.
#[derive(Clone)]
enum Verdict {
    /// The key is valid.
    Valid(Arc<(KeyRecord, PrincipalRecord)>),
    /// The key does not authenticate.
    Refused,
    /// No legacy lookup slot came free in time.
    Busy,
    /// The database failed (logged).
    Failed,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SECURITY: counts only; the maps are keyed by ids and digests, never by keys.
        let legacy = self
            .inner
            .legacy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|ids| ids.len());
        let negative = self
            .inner
            .negative
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("ApiKeys")
            .field("legacy_keys", &legacy)
            .field("remembered_refusals", &negative)
            .finish_non_exhaustive()
    }
}

impl ApiKeys {
    /// The store's keys. Inside a Tokio runtime, starts the task that reads the legacy ids now
    /// and every [`LEGACY_REFRESH`]; it ends when this is dropped.
    pub(crate) fn new(store: Store) -> ApiKeys {
        let inner = Arc::new(Inner {
            store,
            legacy: Mutex::new(None),
            legacy_read: tokio::sync::Mutex::new(()),
            legacy_slots: Semaphore::new(LEGACY_CONCURRENCY),
            negative: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
        });
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(read_legacy_ids(Arc::downgrade(&inner)))),
            Err(_) => tracing::warn!(
                "no runtime: the legacy API key ids are read at the first untagged key only"
            ),
        }
        ApiKeys { inner }
    }

    /// The key's record and principal when `presented` is a valid key; `None` when it does
    /// not authenticate.
    ///
    /// # Errors
    ///
    /// 401 when legacy-key lookups are saturated; 500 when the database fails (logged).
    pub(crate) async fn authenticate(
        &self,
        presented: &str,
    ) -> Result<Option<(KeyRecord, PrincipalRecord)>, ApiError> {
        self.inner.authenticate(presented).await
    }
}

/// Reads the legacy ids now and every [`LEGACY_REFRESH`], until the keys are dropped.
async fn read_legacy_ids(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(LEGACY_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let _guard = inner.legacy_read.lock().await;
        // Failures are logged, and the previous ids stay in use.
        let _ = inner.read_legacy().await;
    }
}

impl Inner {
    async fn authenticate(
        &self,
        presented: &str,
    ) -> Result<Option<(KeyRecord, PrincipalRecord)>, ApiError> {
        let (id, legacy) = match self.store.key_shape(presented) {
            KeyShape::Malformed => return Ok(None),
            KeyShape::Tagged { id } => (id, false),
            KeyShape::Untagged { id } => {
                // SECURITY: an untagged key is made up unless its id is a legacy key's; only
                // those are worth a query.
                if !self.legacy_ids().await?.contains(id) {
                    return Ok(None);
                }
                (id, true)
            }
        };
        if self.refused_recently(id) {
            return Ok(None);
        }
        let Some(digest) = super::digest(presented) else {
            return Ok(None);
        };
        let verdict = self.look_up_once(digest, presented, id, legacy).await;
        match verdict {
            Verdict::Valid(found) => Ok(Some((found.0.clone(), found.1.clone()))),
            Verdict::Refused => Ok(None),
            Verdict::Busy => Err(ApiError::unauthorized(
                "Too many API keys are being checked right now; retry later, or ask your administrator for a new key (`enclave key create`).",
            )),
            Verdict::Failed => Err(ApiError::internal()),
        }
    }

    /// Looks `presented` up, sharing the query with concurrent requests for the same key.
    async fn look_up_once(
        &self,
        digest: [u8; 32],
        presented: &str,
        id: &str,
        legacy: bool,
    ) -> Verdict {
        let cell = {
            let mut map = self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            Arc::clone(map.entry(digest).or_default())
        };
        let verdict = cell
            .get_or_init(|| self.look_up(presented, id, legacy))
            .await
            .clone();
        let mut map = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if map.get(&digest).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            map.remove(&digest);
        }
        verdict
    }

    async fn look_up(&self, presented: &str, id: &str, legacy: bool) -> Verdict {
        let _slot = if legacy {
            match tokio::time::timeout(LEGACY_WAIT, self.legacy_slots.acquire()).await {
                Ok(Ok(permit)) => Some(permit),
                _ => {
                    tracing::warn!(key_id = %id, "legacy API key lookups are saturated; refusing");
                    return Verdict::Busy;
                }
            }
        } else {
            None
        };
        match self.store.look_up_key(presented).await {
            Ok(KeyLookup::Found(key, principal)) => Verdict::Valid(Arc::new((key, principal))),
            Ok(KeyLookup::Revoked | KeyLookup::Unknown) => {
                self.remember_refusal(id);
                Verdict::Refused
            }
            // Not remembered by id: that would let anyone who knows an id lock its holder out.
            Ok(KeyLookup::WrongSecret) => Verdict::Refused,
            Err(e) => {
                tracing::error!(error = %e, "api key lookup failed");
                Verdict::Failed
            }
        }
    }

    /// The ids of the unrevoked legacy keys, as the background task last read them. Before its
    /// first read (or when it cannot run), one request reads them and the others wait for it,
    /// at most [`LEGACY_LOAD_WAIT`].
    async fn legacy_ids(&self) -> Result<Arc<HashSet<String>>, ApiError> {
        if let Some(ids) = self.current_legacy() {
            return Ok(ids);
        }
        let Ok(_guard) = tokio::time::timeout(LEGACY_LOAD_WAIT, self.legacy_read.lock()).await
        else {
            return Err(ApiError::internal());
        };
        // Another request, or the task, may have read them while this one waited.
        if let Some(ids) = self.current_legacy() {
            return Ok(ids);
        }
        self.read_legacy().await
    }

    /// Reads the legacy ids from the database and keeps them; the caller holds `legacy_read`.
    async fn read_legacy(&self) -> Result<Arc<HashSet<String>>, ApiError> {
        let known = self.current_legacy();
        match self.store.unrevoked_legacy_key_ids().await {
            Ok(list) => {
                let ids: Arc<HashSet<String>> = Arc::new(list.into_iter().collect());
                if known.is_none() && !ids.is_empty() {
                    tracing::info!(
                        count = ids.len(),
                        "unrevoked API keys predate check tags and are looked up in the database: re-issue them (`enclave key create`, then `enclave key revoke`)"
                    );
                }
                *self.legacy.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(Arc::clone(&ids));
                Ok(ids)
            }
            Err(e) => {
                tracing::error!(error = %e, "reading the legacy API key ids failed");
                // The previous ids, if any, are still a sound filter: a legacy key is never
                // created again, only revoked, and revoked keys are refused by the lookup.
                known.ok_or_else(ApiError::internal)
            }
        }
    }

    fn current_legacy(&self) -> Option<Arc<HashSet<String>>> {
        self.legacy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn refused_recently(&self, id: &str) -> bool {
        let map = self.negative.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(id).is_some_and(|until| Instant::now() < *until)
    }

    fn remember_refusal(&self, id: &str) {
        let now = Instant::now();
        let mut map = self.negative.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= NEGATIVE_MAX {
            map.retain(|_, until| now < *until);
            if map.len() >= NEGATIVE_MAX
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(id.to_owned(), now + NEGATIVE_TTL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use enclave_store::NewPrincipal;
    use enclave_store::install::MasterKey;

    async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("e.db").display());
        let store = Store::open(&url, &MasterKey::from_bytes([3; 32]))
            .await
            .unwrap();
        store
            .add_principal(&NewPrincipal {
                name: "alice".into(),
                tenant: "t".into(),
                clearance: "SECRET".into(),
                nationality: "USA".into(),
                role: "user".into(),
            })
            .await
            .unwrap();
        (store, dir)
    }

    #[tokio::test]
    async fn made_up_keys_are_refused_without_the_database() {
        let (store, _dir) = store().await;
        let (_, key) = store.create_key("alice").await.unwrap();
        let keys = ApiKeys::new(store.clone());
        assert!(keys.authenticate(&key).await.unwrap().is_some());
        assert!(keys.inner.legacy_ids().await.unwrap().is_empty());
        // With the database closed, only a lookup could fail: made-up keys never get there.
        store.close().await;
        let made_up = format!("enk_{}_{}", "1".repeat(16), "2".repeat(64));
        assert!(keys.authenticate(&made_up).await.unwrap().is_none());
        assert!(keys.authenticate("enk_short").await.unwrap().is_none());
        assert!(
            keys.authenticate(&key).await.is_err(),
            "a real key is looked up"
        );
    }

    #[tokio::test]
    async fn revoked_ids_are_remembered_within_bounds() {
        let (store, _dir) = store().await;
        let (record, key) = store.create_key("alice").await.unwrap();
        let keys = ApiKeys::new(store.clone());
        assert!(store.revoke_key(&record.id).await.unwrap());
        assert!(keys.authenticate(&key).await.unwrap().is_none());
        assert!(keys.inner.refused_recently(&record.id));
        store.close().await;
        assert!(
            keys.authenticate(&key).await.unwrap().is_none(),
            "no lookup"
        );
        for i in 0..NEGATIVE_MAX + 10 {
            keys.inner.remember_refusal(&format!("{i:016x}"));
        }
        assert!(keys.inner.negative.lock().unwrap().len() <= NEGATIVE_MAX);
        assert!(!format!("{keys:?}").contains(&key));
    }
}
