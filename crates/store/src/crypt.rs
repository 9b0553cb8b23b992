//! Envelope encryption at rest: one random 256-bit data key per tenant, wrapped by a key derived
//! from the install's master key, and crypto-shredding.
//!
//! - The data key encrypts row contents with AES-256-GCM ([`TenantCipher::seal`] and
//!   [`TenantCipher::open`]). A sealed value is `version (1 byte) ‖ nonce (12 bytes) ‖
//!   ciphertext ‖ tag (16 bytes)`; the nonce is random per value.
//! - The associated data names the row ([`row_aad`]: table, tenant and id), so a sealed value
//!   copied into another row, table or tenant fails to open instead of being read there.
//! - The wrapped key lives in `tenant_keys` (`version ‖ nonce ‖ AES-256-GCM(wrap key, data
//!   key)`, with the tenant as associated data). The wrap key is `HMAC-SHA256(master key,
//!   "enclave tenant key wrap v1")`, so every replica that shares the master key unwraps the same
//!   data keys.
//! - [`Store::tenant_cipher`] creates a tenant's key on first use, race-free across replicas
//!   (insert if absent, then read back whatever row won), and keeps unwrapped keys in memory.
//! - [`Store::shred_tenant`] deletes the wrapped key first (from then on the tenant's sealed rows
//!   are unreadable noise, even in backups taken before the purge), evicts the cached key, then
//!   deletes the tenant's rows from every table in [`DATA_TABLES`].
//!
//! A replica that cached a tenant's key before another replica shredded it keeps the key until
//! it restarts or calls [`Store::shred_tenant`] itself; rows it writes in that window carry the
//! shredded tenant and are removed by the purge that follows the key deletion or by a repeated
//! shred.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use ring::aead::{self, AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use sqlx::Row;

use crate::install::MasterKey;
use crate::{Store, StoreError};

/// The first byte of every sealed value and wrapped key: the format version.
pub const SEAL_VERSION: u8 = 1;

/// The label the wrap key is derived from the master key with.
const WRAP_LABEL: &[u8] = b"enclave tenant key wrap v1";

/// Associated-data prefix of a wrapped data key (followed by the tenant).
const WRAP_AAD: &[u8] = b"enclave tenant key v1\0";

/// Bytes of a data key.
const KEY_BYTES: usize = 32;

/// Bytes a sealed value adds to its plaintext: version, nonce, tag.
pub const SEAL_OVERHEAD: usize = 1 + NONCE_LEN + 16;

/// The tables whose rows belong to a tenant (a `tenant` column) and are deleted by
/// [`Store::shred_tenant`]. A migration that adds such a table adds it here. Not
/// `memory_changes`: it holds ids only, the shred appends the deletes other replicas must see
/// to it, and it is pruned by age.
pub const DATA_TABLES: &[&str] = &[
    "conversation_items",
    "conversations",
    "memories",
    "responses",
];

/// The associated data that binds a sealed value to one row: `enclave row v1 ‖ 0 ‖ table ‖ 0 ‖
/// tenant ‖ 0 ‖ id` (names may not contain NUL; ids and tenants are checked elsewhere, and a
/// NUL in them only makes the value unopenable, never confusable, because each field is
/// length-prefixed).
pub fn row_aad(table: &str, tenant: &str, id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(16 + table.len() + tenant.len() + id.len() + 12);
    aad.extend_from_slice(b"enclave row v1");
    for field in [table, tenant, id] {
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        aad.extend_from_slice(&len.to_be_bytes());
        aad.extend_from_slice(field.as_bytes());
    }
    aad
}

/// One tenant's data key, unwrapped: seals and opens that tenant's row contents.
///
/// Cheap to clone (clones share the key). `Debug` does not show the key.
#[derive(Clone)]
pub struct TenantCipher {
    inner: Arc<CipherInner>,
}

struct CipherInner {
    tenant: String,
    key: LessSafeKey,
    rng: SystemRandom,
    /// Only used if the system RNG ever fails while sealing: a random 96-bit start (drawn when
    /// the key was loaded) plus a counter still gives unique nonces.
    fallback_seed: [u8; NONCE_LEN],
    fallback_counter: AtomicU64,
}

/// What [`Store::shred_tenant`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShredReport {
    /// Whether a data key existed and was deleted (false: the tenant never stored data).
    pub key_destroyed: bool,
    /// Rows deleted per data table, in [`DATA_TABLES`] order.
    pub rows_deleted: Vec<(&'static str, u64)>,
}

impl ShredReport {
    /// All rows deleted.
    pub fn total_rows(&self) -> u64 {
        self.rows_deleted.iter().map(|(_, n)| n).sum()
    }
}

/// The unwrapped data keys this process has loaded, by tenant.
#[derive(Clone, Default)]
pub(crate) struct KeyCache(Arc<RwLock<HashMap<String, TenantCipher>>>);

/// Wraps and unwraps data keys with the key derived from the master key.
#[derive(Clone)]
pub(crate) struct Wrapper(Arc<LessSafeKey>);

impl Wrapper {
    /// The wrap key of `master` (see the module documentation).
    pub(crate) fn derive(master: &MasterKey) -> Result<Wrapper, StoreError> {
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, master.bytes()),
            WRAP_LABEL,
        );
        // An HMAC-SHA256 tag is 32 bytes, exactly an AES-256 key.
        let key = UnboundKey::new(&AES_256_GCM, tag.as_ref())
            .map_err(|_| StoreError::Crypto("deriving the tenant key wrap key".to_owned()))?;
        Ok(Wrapper(Arc::new(LessSafeKey::new(key))))
    }

    fn wrap(
        &self,
        rng: &SystemRandom,
        tenant: &str,
        data_key: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce)
            .map_err(|_| StoreError::Random("wrapping a tenant data key"))?;
        seal_with(&self.0, nonce, &wrap_aad(tenant), data_key)
            .ok_or_else(|| StoreError::Crypto("wrapping a tenant data key failed".to_owned()))
    }

    fn unwrap(&self, tenant: &str, wrapped: &[u8]) -> Result<Vec<u8>, StoreError> {
        open_with(&self.0, &wrap_aad(tenant), wrapped).ok_or_else(|| {
            StoreError::Crypto(format!(
                "the data key of tenant `{}` does not unwrap under this master key: every replica \
                 must use the same master key (restore the original master.key or \
                 ENCLAVE_MASTER_KEY)",
                tenant.escape_default()
            ))
        })
    }
}

fn wrap_aad(tenant: &str) -> Vec<u8> {
    let mut aad = WRAP_AAD.to_vec();
    aad.extend_from_slice(tenant.as_bytes());
    aad
}

/// `version ‖ nonce ‖ AES-256-GCM(plaintext)`; `None` only if ring refuses (a plaintext over
/// GCM's 64 GiB limit).
fn seal_with(
    key: &LessSafeKey,
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
    out.push(SEAL_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let mut body = out.split_off(1 + NONCE_LEN);
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut body,
    )
    .ok()?;
    out.extend_from_slice(&body);
    Some(out)
}

/// The plaintext of a value made by [`seal_with`] under `key` and `aad`; `None` when the version
/// is unknown, the value is too short, or it was changed.
fn open_with(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let (&version, rest) = sealed.split_first()?;
    if version != SEAL_VERSION || rest.len() < NONCE_LEN + aead::AES_256_GCM.tag_len() {
        return None;
    }
    let (nonce, body) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut body = body.to_vec();
    let plain = key.open_in_place(nonce, Aad::from(aad), &mut body).ok()?;
    let len = plain.len();
    body.truncate(len);
    Some(body)
}

impl TenantCipher {
    fn new(tenant: &str, data_key: &[u8]) -> Result<TenantCipher, StoreError> {
        let key = UnboundKey::new(&AES_256_GCM, data_key).map_err(|_| {
            StoreError::Crypto(format!(
                "the data key of tenant `{}` has the wrong length",
                tenant.escape_default()
            ))
        })?;
        let rng = SystemRandom::new();
        let mut fallback_seed = [0u8; NONCE_LEN];
        rng.fill(&mut fallback_seed)
            .map_err(|_| StoreError::Random("loading a tenant data key"))?;
        Ok(TenantCipher {
            inner: Arc::new(CipherInner {
                tenant: tenant.to_owned(),
                key: LessSafeKey::new(key),
                rng,
                fallback_seed,
                fallback_counter: AtomicU64::new(0),
            }),
        })
    }

    /// The tenant whose key this is.
    pub fn tenant(&self) -> &str {
        &self.inner.tenant
    }

    /// Encrypts `plaintext` bound to `aad` (use [`row_aad`]): `version ‖ nonce ‖ ciphertext ‖
    /// tag`, with a fresh random 96-bit nonce.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let inner = &self.inner;
        let mut nonce = [0u8; NONCE_LEN];
        if inner.rng.fill(&mut nonce).is_err() {
            // The OS RNG failed (it does not on a working system): a counter over a random start
            // still never repeats a nonce within this key's lifetime in this process.
            let n = inner.fallback_counter.fetch_add(1, Ordering::Relaxed);
            nonce = inner.fallback_seed;
            for (b, c) in nonce[NONCE_LEN - 8..].iter_mut().zip(n.to_be_bytes()) {
                *b ^= c;
            }
        }
        // GCM refuses only plaintexts over 64 GiB, which nothing here stores.
        seal_with(&inner.key, nonce, aad, plaintext).unwrap_or_default()
    }

    /// Decrypts a value made by [`TenantCipher::seal`] with the same `aad`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Crypto`] when the value was changed, truncated, moved from another row
    /// (different `aad`), sealed under another tenant's key, or has an unknown version.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        open_with(&self.inner.key, aad, sealed).ok_or_else(|| {
            StoreError::Crypto(
                "a stored value failed authentication: it was altered, moved from another row, \
                 or sealed under another key"
                    .to_owned(),
            )
        })
    }
}

impl fmt::Debug for TenantCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantCipher")
            .field("tenant", &self.inner.tenant)
            .finish_non_exhaustive()
    }
}

impl KeyCache {
    fn get(&self, tenant: &str) -> Option<TenantCipher> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .cloned()
    }

    fn insert(&self, cipher: TenantCipher) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(cipher.tenant().to_owned(), cipher);
    }

    fn evict(&self, tenant: &str) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(tenant);
    }
}

impl Store {
    /// The data key of `tenant`, created on first use.
    ///
    /// Race-free across replicas: a new random key is inserted only if the tenant has none
    /// (`ON CONFLICT DO NOTHING`), then the stored row is read back, so concurrent first uses all
    /// end up with the one key that won. Unwrapped keys stay cached in this process.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for an empty tenant, [`StoreError::Crypto`] when the stored key
    /// does not unwrap (another master key), [`StoreError::Random`] when the system RNG fails,
    /// [`StoreError::Database`] when the database fails.
    pub async fn tenant_cipher(&self, tenant: &str) -> Result<TenantCipher, StoreError> {
        if let Some(cipher) = self.keys.get(tenant) {
            return Ok(cipher);
        }
        if tenant.is_empty() {
            return Err(StoreError::Invalid("a tenant name is required".to_owned()));
        }
        let wrapped = match self.read_wrapped(tenant).await? {
            Some(w) => w,
            None => {
                let mut data_key = [0u8; KEY_BYTES];
                self.rng
                    .fill(&mut data_key)
                    .map_err(|_| StoreError::Random("generating a tenant data key"))?;
                let wrapped = self.wrapper.wrap(&self.rng, tenant, &data_key)?;
                sqlx::query(
                    "INSERT INTO tenant_keys (tenant, wrapped, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (tenant) DO NOTHING",
                )
                .bind(tenant)
                .bind(wrapped)
                .bind(crate::store::now())
                .execute(self.pool())
                .await
                .map_err(StoreError::database("creating a tenant data key"))?;
                // Whoever won the insert, the stored row is the key.
                self.read_wrapped(tenant).await?.ok_or_else(|| {
                    StoreError::Crypto(format!(
                        "the data key of tenant `{}` vanished right after it was created (a \
                         concurrent shred?): retry",
                        tenant.escape_default()
                    ))
                })?
            }
        };
        let data_key = self.wrapper.unwrap(tenant, &wrapped)?;
        let cipher = TenantCipher::new(tenant, &data_key)?;
        self.keys.insert(cipher.clone());
        Ok(cipher)
    }

    async fn read_wrapped(&self, tenant: &str) -> Result<Option<Vec<u8>>, StoreError> {
        sqlx::query("SELECT wrapped FROM tenant_keys WHERE tenant = $1")
            .bind(tenant)
            .fetch_optional(self.pool())
            .await
            .and_then(|row| row.map(|r| r.try_get::<Vec<u8>, _>(0)).transpose())
            .map_err(StoreError::database("reading a tenant data key"))
    }

    /// Crypto-shreds `tenant`: deletes its wrapped data key first (from then on its sealed rows
    /// cannot be decrypted by anyone), evicts the key from this process's cache, then deletes
    /// the tenant's rows from every table in [`DATA_TABLES`]. Principals, API keys and the audit
    /// log are not touched. Running it again is harmless.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the database fails; a failure after the key is gone leaves
    /// only undecryptable rows, and running the shred again removes them.
    pub async fn shred_tenant(&self, tenant: &str) -> Result<ShredReport, StoreError> {
        let deleted = sqlx::query("DELETE FROM tenant_keys WHERE tenant = $1")
            .bind(tenant)
            .execute(self.pool())
            .await
            .map_err(StoreError::database("deleting a tenant data key"))?;
        self.keys.evict(tenant);
        let mut report = ShredReport {
            key_destroyed: deleted.rows_affected() > 0,
            rows_deleted: Vec::with_capacity(DATA_TABLES.len()),
        };
        for table in DATA_TABLES {
            let action = "purging a shredded tenant's rows";
            if *table == "memories" {
                // With a `delete` change row for each memory (same transaction), so the other
                // replicas drop them from their indexes too.
                let ids = self
                    .delete_memories_where(tenant, None)
                    .await
                    .map_err(StoreError::database(action))?;
                let n = u64::try_from(ids.len()).unwrap_or(u64::MAX);
                report.rows_deleted.push((table, n));
                continue;
            }
            // The table names are constants of this crate, never input.
            let done = sqlx::query(&format!("DELETE FROM {table} WHERE tenant = $1"))
                .bind(tenant)
                .execute(self.pool())
                .await
                .map_err(StoreError::database(action))?;
            report.rows_deleted.push((table, done.rows_affected()));
        }
        // A key made concurrently by a request that raced the shred is gone as well.
        sqlx::query("DELETE FROM tenant_keys WHERE tenant = $1")
            .bind(tenant)
            .execute(self.pool())
            .await
            .map_err(StoreError::database("deleting a tenant data key"))?;
        self.keys.evict(tenant);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher(byte: u8) -> TenantCipher {
        TenantCipher::new("t", &[byte; KEY_BYTES]).unwrap()
    }

    #[test]
    fn seal_then_open_round_trips_and_each_seal_differs() {
        let c = cipher(7);
        let aad = row_aad("responses", "t", "resp_1");
        let a = c.seal(&aad, b"canary");
        let b = c.seal(&aad, b"canary");
        assert_ne!(a, b, "fresh nonce per value");
        assert_eq!(a.len(), 6 + SEAL_OVERHEAD);
        assert_eq!(a[0], SEAL_VERSION);
        assert_eq!(c.open(&aad, &a).unwrap(), b"canary");
        assert_eq!(c.open(&aad, &c.seal(&aad, b"")).unwrap(), b"");
    }

    #[test]
    fn tampering_moving_and_foreign_keys_fail() {
        let c = cipher(7);
        let aad = row_aad("responses", "t", "resp_1");
        let sealed = c.seal(&aad, b"secret text");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(c.open(&aad, &bad).is_err(), "flipped byte {i}");
        }
        for n in 0..sealed.len() {
            assert!(c.open(&aad, &sealed[..n]).is_err(), "truncated to {n}");
        }
        assert!(
            c.open(&row_aad("responses", "t", "resp_2"), &sealed)
                .is_err()
        );
        assert!(
            c.open(&row_aad("conversations", "t", "resp_1"), &sealed)
                .is_err()
        );
        assert!(
            c.open(&row_aad("responses", "u", "resp_1"), &sealed)
                .is_err()
        );
        assert!(cipher(8).open(&aad, &sealed).is_err());
    }

    #[test]
    fn row_aad_fields_cannot_run_into_each_other() {
        assert_ne!(row_aad("ab", "c", "d"), row_aad("a", "bc", "d"));
        assert_ne!(row_aad("a", "b", "cd"), row_aad("a", "bc", "d"));
    }

    #[test]
    fn wrapped_keys_open_only_under_the_same_master_and_tenant() {
        let rng = SystemRandom::new();
        let w = Wrapper::derive(&MasterKey::from_bytes([1; 32])).unwrap();
        let wrapped = w.wrap(&rng, "agency-a", &[9; KEY_BYTES]).unwrap();
        assert_eq!(w.unwrap("agency-a", &wrapped).unwrap(), vec![9; KEY_BYTES]);
        assert!(w.unwrap("agency-b", &wrapped).is_err());
        let other = Wrapper::derive(&MasterKey::from_bytes([2; 32])).unwrap();
        assert!(other.unwrap("agency-a", &wrapped).is_err());
    }
}
