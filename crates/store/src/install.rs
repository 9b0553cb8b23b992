//! Preparing a data directory: the directory itself and the install's two secrets.
//!
//! - `master.key`: 32 random bytes. Keys for other purposes are derived from it (today the
//!   API-key hash key, see [`MasterKey::api_key_hasher`]).
//! - `audit-signing.key`: an Ed25519 private key (PKCS#8 v2) that signs audit checkpoints.
//!
//! Both are created once, with mode 0600 inside a 0700 directory, and never overwritten: losing
//! or replacing them makes every API key, or every audit signature, unverifiable. A file that
//! exists but does not hold a valid key is an error naming the file, never silently replaced.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::Ed25519KeyPair;

use crate::{KeyHasher, StoreError};

/// The master key's file name inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";

/// The audit signing key's file name inside the data directory.
pub const SIGNING_KEY_FILE: &str = "audit-signing.key";

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
}

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

    /// The keyed hash for API keys, derived from this key with the fixed label
    /// `enclave api-key hash v1`.
    pub fn api_key_hasher(&self) -> KeyHasher {
        KeyHasher::derive(&self.0)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// Creates the data directory and key files that are missing and reads the ones that exist.
///
/// Safe to call on every start and concurrently: a file is created under a temporary name and
/// linked into place, so no one ever sees a half-written key and nothing is overwritten.
///
/// # Errors
///
/// [`StoreError::Invalid`] when `data_dir` exists but is not a directory;
/// [`StoreError::CorruptKeyFile`] naming a key file that holds no valid key;
/// [`StoreError::Io`] when a directory or file cannot be created, read or synced;
/// [`StoreError::Random`] when the system RNG fails.
pub fn prepare(data_dir: &Path) -> Result<Install, StoreError> {
    let mut created = Vec::new();
    if create_dir(data_dir)? {
        created.push(data_dir.to_path_buf());
    }
    let rng = SystemRandom::new();

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
        |bytes| {
            <[u8; MASTER_KEY_BYTES]>::try_from(bytes)
                .map_err(|_| format!("expected {MASTER_KEY_BYTES} bytes, found {}", bytes.len()))
        },
    )?;
    if fresh {
        created.push(master_path);
    }

    let signing_path = data_dir.join(SIGNING_KEY_FILE);
    let (signing_key, fresh) = read_or_create(
        &rng,
        &signing_path,
        || {
            Ed25519KeyPair::generate_pkcs8(&rng)
                .map(|doc| doc.as_ref().to_vec())
                .map_err(|_| StoreError::Random("generating the audit signing key"))
        },
        |bytes| {
            Ed25519KeyPair::from_pkcs8(bytes)
                .map(|_| bytes.to_vec())
                .map_err(|e| format!("not an Ed25519 PKCS#8 private key ({e})"))
        },
    )?;
    if fresh {
        created.push(signing_path);
    }

    Ok(Install {
        data_dir: data_dir.to_path_buf(),
        created,
        master: MasterKey(master),
        signing_key,
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

/// Reads a key file, refusing implausibly large ones.
fn read_key_file(path: &Path) -> Result<Vec<u8>, StoreError> {
    let action = "reading the key file";
    let len = fs::metadata(path)
        .map_err(StoreError::io(action, path))?
        .len();
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
