//! Helpers shared by the integration tests.

use std::path::PathBuf;
use std::sync::OnceLock;

use rsa::RsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};

/// A 2048-bit RSA key generated at test time.
///
/// Generating one takes 10-20 s in a debug build, and nextest runs every test in its own
/// process, so the key is generated once per target directory and kept under
/// `CARGO_TARGET_TMPDIR` (nothing is checked in). Delete the file to get a fresh key.
pub(crate) fn rsa_private_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let path = cache_path();
        if let Ok(pem) = std::fs::read_to_string(&path)
            && let Ok(key) = RsaPrivateKey::from_pkcs8_pem(&pem)
        {
            return key;
        }
        let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        // Write then rename, so that a test running beside this one never reads half a file.
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&tmp, pem.as_bytes()).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        key
    })
}

fn cache_path() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("enclave-auth-test-rsa-2048.pem")
}
