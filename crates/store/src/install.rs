//! Preparing a data directory: the directory itself and the install's two secrets.
//!
//! - `master.key`: 32 random bytes. Keys for other purposes are derived from it (today the
//!   API-key hash key, see [`MasterKey::api_key_hasher`]).
//! - `audit-signing.key`: an Ed25519 private key (PKCS#8 v2) that signs audit checkpoints.
//!
//! Both are created once, with mode 0600 inside a 0700 directory, and never overwritten: losing
//! or replacing them makes every API key, or every audit signature, unverifiable. A file that
//! exists but does not hold a valid key is an error naming the file, never silently replaced,
//! and a key file other users may read is refused.
//!
//! Several replicas sharing one PostgreSQL database must share both secrets, so each can also
//! come from elsewhere ([`KeySources`], read by [`prepare_with`]), in this order:
//!
//! 1. an environment variable: `ENCLAVE_MASTER_KEY` holds the 32-byte master key as 64 hex
//!    digits or as standard base64; `ENCLAVE_AUDIT_SIGNING_KEY` holds the PKCS#8 document as
//!    standard base64 (`base64 -w0 audit-signing.key`);
//! 2. a file named in the configuration (`[keys] master_key_file`, `audit_signing_key_file`),
//!    holding the same bytes as the data directory's file; it must exist (it is never created);
//! 3. the data directory's file, created on first use.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::Ed25519KeyPair;

use crate::{KeyHasher, StoreError};

/// The master key's file name inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";

/// The audit signing key's file name inside the data directory.
pub const SIGNING_KEY_FILE: &str = "audit-signing.key";

/// The environment variable that may hold the master key (64 hex digits or base64 of 32 bytes).
pub const MASTER_KEY_ENV: &str = "ENCLAVE_MASTER_KEY";

/// The environment variable that may hold the audit signing key (base64 of its PKCS#8 document).
pub const SIGNING_KEY_ENV: &str = "ENCLAVE_AUDIT_SIGNING_KEY";

/// The label the audit digest keys are derived with (see [`MasterKey::audit_digest_keys`]).
const AUDIT_DIGEST_LABEL: &[u8] = b"enclave audit digest v1";

/// Length of the master key in bytes.
const MASTER_KEY_BYTES: usize = 32;

/// Key files larger than this are not read (ours are 32 and 85 bytes).
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// A prepared data directory and its secrets.
pub struct Install {
    /// The data directory.
    pub data_dir: PathBuf,
    /// What this call created (the directory and key files), in creation order; empty when
    /// everything already existed.
    pub created: Vec<PathBuf>,
    master: MasterKey,
    signing_key: Vec<u8>,
    master_source: KeySource,
    signing_source: KeySource,
}

/// Where the install's secrets come from besides the data directory (see the module
/// documentation). The default reads and creates the data directory's files only.
#[derive(Clone, Debug, Default)]
pub struct KeySources {
    /// `[keys] master_key_file`: a file holding the 32-byte master key.
    pub master_key_file: Option<PathBuf>,
    /// `[keys] audit_signing_key_file`: a file holding the Ed25519 PKCS#8 signing key.
    pub audit_signing_key_file: Option<PathBuf>,
    /// The value of [`MASTER_KEY_ENV`], if set.
    pub master_key_env: Option<Secret>,
    /// The value of [`SIGNING_KEY_ENV`], if set.
    pub audit_signing_key_env: Option<Secret>,
}

/// Where one secret was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// The data directory's file.
    DataDir(PathBuf),
    /// An environment variable.
    Env(&'static str),
    /// A file named in the configuration.
    File(PathBuf),
}

/// Secret text (an environment variable's value). `Debug` does not show it.
#[derive(Clone)]
pub struct Secret(String);

/// Derives the per-tenant keys of the audit log's keyed digests from the master key.
/// `Debug` does not show it.
#[derive(Clone)]
pub struct AuditDigestKeys(hmac::Key);

impl Install {
    /// The master key.
    pub fn master_key(&self) -> &MasterKey {
        &self.master
    }

    /// The audit signing key as a PKCS#8 v2 document, for
    /// `ring::signature::Ed25519KeyPair::from_pkcs8`.
    pub fn signing_key_pkcs8(&self) -> &[u8] {
        &self.signing_key
    }

    /// Where the master key was read from.
    pub fn master_key_source(&self) -> &KeySource {
        &self.master_source
    }

    /// Where the audit signing key was read from.
    pub fn signing_key_source(&self) -> &KeySource {
        &self.signing_source
    }
}

impl KeySources {
    /// These sources with the environment's values, read through `lookup` (for example
    /// `|name| std::env::var(name).ok()`); empty values count as unset.
    pub fn with_env(mut self, lookup: impl Fn(&str) -> Option<String>) -> KeySources {
        let read = |name: &str| lookup(name).filter(|v| !v.trim().is_empty()).map(Secret);
        self.master_key_env = read(MASTER_KEY_ENV);
        self.audit_signing_key_env = read(SIGNING_KEY_ENV);
        self
    }
}

impl Secret {
    /// Wraps secret text.
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::DataDir(p) | KeySource::File(p) => write!(f, "{}", p.display()),
            KeySource::Env(name) => write!(f, "${name}"),
        }
    }
}

impl AuditDigestKeys {
    /// The digest key of `tenant`: `HMAC-SHA256(master key, "enclave audit digest v1" ‖ 0x00 ‖
    /// tenant)`. Give it to an auditor who must check a tenant's prompt and output digests.
    pub fn tenant_key(&self, tenant: &str) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(AUDIT_DIGEST_LABEL);
        ctx.update(&[0]);
        ctx.update(tenant.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }
}

impl fmt::Debug for AuditDigestKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditDigestKeys(..)")
    }
}

impl fmt::Debug for Install {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Install")
            .field("data_dir", &self.data_dir)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// The install's master key: 32 random bytes from `master.key`. `Debug` does not show it.
#[derive(Clone)]
pub struct MasterKey([u8; MASTER_KEY_BYTES]);

impl MasterKey {
    /// A master key from raw bytes, for tests and for tools that keep the secret elsewhere.
    /// Use [`prepare`] to read or create the install's own.
    pub fn from_bytes(bytes: [u8; MASTER_KEY_BYTES]) -> MasterKey {
        MasterKey(bytes)
    }

    /// The raw bytes, for the store's key derivations.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The keyed hash for API keys, derived from this key with the fixed label
    /// `enclave api-key hash v1`.
    pub fn api_key_hasher(&self) -> KeyHasher {
        KeyHasher::derive(&self.0)
    }

    /// The keys of the audit log's prompt and output digests, one per tenant (see
    /// [`AuditDigestKeys::tenant_key`]).
    pub fn audit_digest_keys(&self) -> AuditDigestKeys {
        AuditDigestKeys(hmac::Key::new(hmac::HMAC_SHA256, &self.0))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// Creates the data directory and key files that are missing and reads the ones that exist.
/// The same as [`prepare_with`] with the default [`KeySources`]: the data directory's files
/// only.
///
/// # Errors
///
/// As [`prepare_with`].
pub fn prepare(data_dir: &Path) -> Result<Install, StoreError> {
    prepare_with(data_dir, &KeySources::default())
}

/// Creates the data directory, then reads each secret from the first of its sources that is
/// set (see the module documentation); a data-directory key file that is missing is created.
///
/// Safe to call on every start and concurrently: a file is created under a temporary name and
/// linked into place, so no one ever sees a half-written key and nothing is overwritten.
///
/// # Errors
///
/// [`StoreError::Invalid`] when `data_dir` exists but is not a directory, when a key file may
/// be read by other users, or when an environment variable does not hold a key;
/// [`StoreError::CorruptKeyFile`] naming a key file that holds no valid key;
/// [`StoreError::Io`] when a directory or file cannot be created, read or synced (a configured
/// key file that does not exist);
/// [`StoreError::Random`] when the system RNG fails.
pub fn prepare_with(data_dir: &Path, sources: &KeySources) -> Result<Install, StoreError> {
    let mut created = Vec::new();
    if create_dir(data_dir)? {
        created.push(data_dir.to_path_buf());
    }
    let rng = SystemRandom::new();

    let validate_master = |bytes: &[u8]| {
        <[u8; MASTER_KEY_BYTES]>::try_from(bytes)
            .map_err(|_| format!("expected {MASTER_KEY_BYTES} bytes, found {}", bytes.len()))
    };
    let (master, master_source) = if let Some(text) = &sources.master_key_env {
        let bytes = decode_master_env(&text.0)?;
        let key = validate_master(&bytes)
            .map_err(|problem| StoreError::Invalid(format!("{MASTER_KEY_ENV}: {problem}")))?;
        (key, KeySource::Env(MASTER_KEY_ENV))
    } else if let Some(path) = &sources.master_key_file {
        let bytes = read_key_file(path)?;
        let key = validate_master(&bytes).map_err(|problem| StoreError::CorruptKeyFile {
            path: path.clone(),
            problem,
        })?;
        (key, KeySource::File(path.clone()))
    } else {
        let master_path = data_dir.join(MASTER_KEY_FILE);
        let (master, fresh) = read_or_create(
            &rng,
            &master_path,
            || {
                let mut bytes = vec![0u8; MASTER_KEY_BYTES];
                rng.fill(&mut bytes)
                    .map_err(|_| StoreError::Random("generating the master key"))?;
                Ok(bytes)
            },
            validate_master,
        )?;
        if fresh {
            created.push(master_path.clone());
        }
        (master, KeySource::DataDir(master_path))
    };

    let validate_signing = |bytes: &[u8]| {
        Ed25519KeyPair::from_pkcs8(bytes)
            .map(|_| bytes.to_vec())
            .map_err(|e| format!("not an Ed25519 PKCS#8 private key ({e})"))
    };
    let (signing_key, signing_source) = if let Some(text) = &sources.audit_signing_key_env {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.0.trim())
            .map_err(|_| {
                StoreError::Invalid(format!(
                    "{SIGNING_KEY_ENV}: expected the base64 of a PKCS#8 key file \
                     (`base64 -w0 {SIGNING_KEY_FILE}`)"
                ))
            })?;
        let key = validate_signing(&bytes)
            .map_err(|problem| StoreError::Invalid(format!("{SIGNING_KEY_ENV}: {problem}")))?;
        (key, KeySource::Env(SIGNING_KEY_ENV))
    } else if let Some(path) = &sources.audit_signing_key_file {
        let bytes = read_key_file(path)?;
        let key = validate_signing(&bytes).map_err(|problem| StoreError::CorruptKeyFile {
            path: path.clone(),
            problem,
        })?;
        (key, KeySource::File(path.clone()))
    } else {
        let signing_path = data_dir.join(SIGNING_KEY_FILE);
        let (signing_key, fresh) = read_or_create(
            &rng,
            &signing_path,
            || {
                Ed25519KeyPair::generate_pkcs8(&rng)
                    .map(|doc| doc.as_ref().to_vec())
                    .map_err(|_| StoreError::Random("generating the audit signing key"))
            },
            validate_signing,
        )?;
        if fresh {
            created.push(signing_path.clone());
        }
        (signing_key, KeySource::DataDir(signing_path))
    };

    Ok(Install {
        data_dir: data_dir.to_path_buf(),
        created,
        master: MasterKey(master),
        signing_key,
        master_source,
        signing_source,
    })
}

/// Reads the audit signing key (PKCS#8) from the first of its sources that is set, creating
/// nothing: for tools that verify the log (`enclave audit verify`). `Ok(None)` when the key
/// would come from the data directory and the file is not there.
///
/// # Errors
///
/// As [`prepare_with`] for the signing key.
pub fn read_signing_key(
    data_dir: &Path,
    sources: &KeySources,
) -> Result<Option<(Vec<u8>, KeySource)>, StoreError> {
    let validate = |bytes: &[u8]| {
        Ed25519KeyPair::from_pkcs8(bytes)
            .map(|_| bytes.to_vec())
            .map_err(|e| format!("not an Ed25519 PKCS#8 private key ({e})"))
    };
    if let Some(text) = &sources.audit_signing_key_env {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.0.trim())
            .map_err(|_| {
                StoreError::Invalid(format!(
                    "{SIGNING_KEY_ENV}: expected the base64 of a PKCS#8 key file"
                ))
            })?;
        let key = validate(&bytes)
            .map_err(|problem| StoreError::Invalid(format!("{SIGNING_KEY_ENV}: {problem}")))?;
        return Ok(Some((key, KeySource::Env(SIGNING_KEY_ENV))));
    }
    let (path, source) = match &sources.audit_signing_key_file {
        Some(path) => (path.clone(), KeySource::File(path.clone())),
        None => {
            let path = data_dir.join(SIGNING_KEY_FILE);
            if !path.exists() {
                return Ok(None);
            }
            (path.clone(), KeySource::DataDir(path))
        }
    };
    let bytes = read_key_file(&path)?;
    let key = validate(&bytes).map_err(|problem| StoreError::CorruptKeyFile {
        path: path.clone(),
        problem,
    })?;
    Ok(Some((key, source)))
}

/// The bytes of `ENCLAVE_MASTER_KEY`: 64 hex digits, or standard base64.
fn decode_master_env(text: &str) -> Result<Vec<u8>, StoreError> {
    let text = text.trim();
    if text.len() == 2 * MASTER_KEY_BYTES && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut out = Vec::with_capacity(MASTER_KEY_BYTES);
        for pair in text.as_bytes().chunks(2) {
            let digits = std::str::from_utf8(pair).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(digits, 16) {
                out.push(b);
            }
        }
        return Ok(out);
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| {
            StoreError::Invalid(format!(
                "{MASTER_KEY_ENV}: expected the 32-byte master key as 64 hex digits or as base64"
            ))
        })
}

/// Creates `dir` (and missing parents) with mode 0700; `Ok(false)` if it already existed.
fn create_dir(dir: &Path) -> Result<bool, StoreError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(false),
        Ok(_) => {
            return Err(StoreError::Invalid(format!(
                "data directory `{}` exists but is not a directory: set `data_dir` to a \
                 directory",
                dir.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io("reading the data directory", dir)(e)),
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(StoreError::io("creating the data directory", dir))?;
    Ok(true)
}

/// Reads and validates the key file at `path`, or creates it from `generate` if it is missing.
/// Returns the validated value and whether this call created the file.
fn read_or_create<T>(
    rng: &SystemRandom,
    path: &Path,
    generate: impl FnOnce() -> Result<Vec<u8>, StoreError>,
    validate: impl Fn(&[u8]) -> Result<T, String>,
) -> Result<(T, bool), StoreError> {
    let check = |bytes: &[u8]| {
        validate(bytes).map_err(|problem| StoreError::CorruptKeyFile {
            path: path.to_path_buf(),
            problem,
        })
    };
    match read_key_file(path) {
        Ok(bytes) => return Ok((check(&bytes)?, false)),
        Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let bytes = generate()?;
    let value = check(&bytes)?;
    if create_new(rng, path, &bytes)? {
        return Ok((value, true));
    }
    // Someone else created it between our read and our link: use theirs.
    let bytes = read_key_file(path)?;
    Ok((check(&bytes)?, false))
}

/// Reads a key file, refusing implausibly large ones and ones other users may read.
fn read_key_file(path: &Path) -> Result<Vec<u8>, StoreError> {
    let action = "reading the key file";
    let meta = fs::metadata(path).map_err(StoreError::io(action, path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        // SECURITY: a secret every local user can read is no secret; refuse to use it rather
        // than carry on with a key that may already be copied.
        if mode & 0o004 != 0 {
            return Err(StoreError::Invalid(format!(
                "key file `{}` is readable by every user (mode {mode:o}): run `chmod 600` on it \
                 and consider the key exposed",
                path.display()
            )));
        }
    }
    let len = meta.len();
    if len > MAX_KEY_FILE_BYTES {
        return Err(StoreError::CorruptKeyFile {
            path: path.to_path_buf(),
            problem: format!("{len} bytes is too large for a key"),
        });
    }
    fs::read(path).map_err(StoreError::io(action, path))
}

/// Writes `bytes` to a new file at `path` with mode 0600, atomically: a temporary file in the
/// same directory is written, synced and hard-linked to `path`, which fails rather than
/// replaces when `path` exists. `Ok(false)` if `path` already existed.
fn create_new(rng: &SystemRandom, path: &Path, bytes: &[u8]) -> Result<bool, StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut nonce = [0u8; 8];
    rng.fill(&mut nonce)
        .map_err(|_| StoreError::Random("naming a temporary key file"))?;
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(".{name}.tmp-{nonce}"));
    let written = write_synced(&tmp, bytes);
    let linked = written.and_then(|()| match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    });
    // The temporary name is ours alone (random, opened with create_new); remove it whatever
    // happened.
    let _ = fs::remove_file(&tmp);
    let linked = linked.map_err(StoreError::io("creating the key file", path))?;
    if linked {
        sync_dir(dir).map_err(StoreError::io("syncing the data directory", dir))?;
    }
    Ok(linked)
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes a new directory entry durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}
