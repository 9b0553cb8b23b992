//! Weights tests: where the models directory is found, and that files with unknown hashes
//! are refused with a message that says how to fetch the right ones.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers fail the test on broken fixtures"
)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use enclave_local::weights::{
    MINILM_CONFIG_JSON, MINILM_SAFETENSORS, MINILM_TOKENIZER_JSON, MODELS_DIR_ENV, ModelsDir,
    ModelsDirSource, SMOLLM2_GGUF, WeightsError, verify_file,
};

/// sha256 of `hello\n`.
const HELLO_SHA256: &str = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

fn env_with(dir: Option<&str>) -> impl Fn(&str) -> Option<OsString> {
    let dir = dir.map(OsString::from);
    move |name| {
        assert_eq!(name, MODELS_DIR_ENV);
        dir.clone()
    }
}

fn write(dir: &Path, relative: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn verify_file_accepts_the_right_hash_in_either_case() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "hello.txt", b"hello\n");
    verify_file(&path, HELLO_SHA256).unwrap();
    verify_file(&path, &HELLO_SHA256.to_ascii_uppercase()).unwrap();
}

#[test]
fn verify_file_refuses_a_different_hash() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "hello.txt", b"hello!\n");
    let err = verify_file(&path, HELLO_SHA256).unwrap_err();
    let WeightsError::HashMismatch {
        expected, actual, ..
    } = &err
    else {
        panic!("expected a hash mismatch, got {err}");
    };
    assert_eq!(expected, HELLO_SHA256);
    assert_ne!(actual, HELLO_SHA256);
    let message = err.to_string();
    assert!(message.contains("hello.txt"), "{message}");
    assert!(message.contains("scripts/fetch-models"), "{message}");
}

#[test]
fn verify_file_reports_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = verify_file(&dir.path().join("absent.gguf"), HELLO_SHA256).unwrap_err();
    assert!(matches!(err, WeightsError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("absent.gguf"), "{err}");
}

#[test]
fn verify_file_reports_an_unreadable_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = verify_file(dir.path(), HELLO_SHA256).unwrap_err();
    assert!(matches!(err, WeightsError::Read { .. }), "{err}");
}

#[test]
fn config_models_dir_comes_first() {
    let located = ModelsDir::locate_with_env(
        Some(Path::new("/from/config")),
        Path::new("/data"),
        env_with(Some("/from/env")),
    );
    assert_eq!(located.path(), Path::new("/from/config"));
    assert_eq!(located.source(), ModelsDirSource::Config);
}

#[test]
fn env_models_dir_comes_second() {
    let located = ModelsDir::locate_with_env(None, Path::new("/data"), env_with(Some("/from/env")));
    assert_eq!(located.path(), Path::new("/from/env"));
    assert_eq!(located.source(), ModelsDirSource::Env);
}

#[test]
fn data_dir_models_is_the_default() {
    for env in [None, Some("")] {
        let located = ModelsDir::locate_with_env(None, Path::new("/data"), env_with(env));
        assert_eq!(located.path(), Path::new("/data/models"));
        assert_eq!(located.source(), ModelsDirSource::DataDir);
    }
}

#[test]
fn working_dir_models_is_used_when_the_data_dir_has_none() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("enclave-data");
    std::fs::create_dir_all(dir.path().join("models")).unwrap();
    let located = ModelsDir::locate_in(None, &data, env_with(None), dir.path());
    assert_eq!(located.path(), dir.path().join("models"));
    assert_eq!(located.source(), ModelsDirSource::WorkingDir);
    // The data directory's own `models` wins once it exists, and the variable before both.
    std::fs::create_dir_all(data.join("models")).unwrap();
    let located = ModelsDir::locate_in(None, &data, env_with(None), dir.path());
    assert_eq!(located.path(), data.join("models"));
    assert_eq!(located.source(), ModelsDirSource::DataDir);
    let located = ModelsDir::locate_in(None, &data, env_with(Some("/from/env")), dir.path());
    assert_eq!(located.source(), ModelsDirSource::Env);
}

#[test]
fn missing_weights_say_how_to_fetch_them() {
    let dir = tempfile::tempdir().unwrap();
    let models = ModelsDir::new(dir.path());
    assert_eq!(models.source(), ModelsDirSource::Explicit);
    let err = models.smollm2_gguf().unwrap_err();
    assert!(matches!(err, WeightsError::Missing { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(SMOLLM2_GGUF), "{message}");
    assert!(
        message.contains(&format!("scripts/fetch-models {}", dir.path().display())),
        "{message}"
    );
    let err = models.minilm().unwrap_err();
    assert!(matches!(err, WeightsError::Missing { .. }), "{err}");
}

#[test]
fn altered_weights_are_refused_with_the_fetch_hint() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), SMOLLM2_GGUF, b"GGUF but not the real thing");
    write(dir.path(), MINILM_CONFIG_JSON, b"{}");
    write(dir.path(), MINILM_TOKENIZER_JSON, b"{}");
    write(dir.path(), MINILM_SAFETENSORS, b"not weights");
    let models = ModelsDir::new(dir.path());
    for err in [
        models.smollm2_gguf().unwrap_err(),
        models.minilm().unwrap_err(),
    ] {
        assert!(matches!(err, WeightsError::HashMismatch { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("altered"), "{message}");
        assert!(
            message.contains(&format!("scripts/fetch-models {}", dir.path().display())),
            "{message}"
        );
    }
}

/// The real files, when `scripts/fetch-models` has put them in the repository's `models/` (or
/// `ENCLAVE_MODELS_DIR`): they verify, a second check is served from the cache, and a copy
/// altered after it passed is refused.
#[test]
fn real_weights_verify_and_an_altered_copy_is_refused() {
    let dir = std::env::var_os(MODELS_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    let models = ModelsDir::new(&dir);
    let files = match models.minilm() {
        Ok(files) => files,
        Err(WeightsError::Missing { .. })
            if std::env::var_os("ENCLAVE_REQUIRE_MODELS").is_none_or(|v| v != "1") =>
        {
            eprintln!("skipping real-weight check: run scripts/fetch-models");
            return;
        }
        Err(err) => panic!("{err}"),
    };
    assert_eq!(files.config_json, dir.join(MINILM_CONFIG_JSON));
    let again = std::time::Instant::now();
    assert_eq!(models.minilm().unwrap(), files);
    assert!(
        again.elapsed() < std::time::Duration::from_millis(50),
        "{:?}",
        again.elapsed()
    );

    let copy = tempfile::tempdir().unwrap();
    for relative in [MINILM_CONFIG_JSON, MINILM_TOKENIZER_JSON] {
        write(
            copy.path(),
            relative,
            &std::fs::read(dir.join(relative)).unwrap(),
        );
    }
    let copied = ModelsDir::new(copy.path());
    let mut tokenizer = std::fs::read(dir.join(MINILM_TOKENIZER_JSON)).unwrap();
    write(copy.path(), MINILM_SAFETENSORS, b"placeholder");
    // The config and tokenizer pass; the placeholder weights do not.
    let err = copied.minilm().unwrap_err();
    assert!(
        matches!(&err, WeightsError::HashMismatch { path, .. } if path.ends_with("model.safetensors")),
        "{err}"
    );
    // Alter the (already verified) tokenizer: checked again and refused. (Appending keeps the
    // test independent of the file system's timestamp resolution.)
    tokenizer.push(b' ');
    write(copy.path(), MINILM_TOKENIZER_JSON, &tokenizer);
    let err = copied.minilm().unwrap_err();
    assert!(
        matches!(&err, WeightsError::HashMismatch { path, .. } if path.ends_with("tokenizer.json")),
        "{err}"
    );
}
