//! The transparency-dev/merkle test vectors (`testdata/transparency-dev-merkle`, see
//! `testdata/SOURCE.md`): every file under `inclusion/` and `consistency/`, recursively, goes
//! through the verifiers, which must accept exactly the files whose `wantErr` is false.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::fs;
use std::path::{Path, PathBuf};

use enclave_audit::{Hash, verify_consistency, verify_inclusion};
use serde_json::Value;

const ROOT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/transparency-dev-merkle/testdata"
);

/// The one file where Enclave and upstream's Go verifier disagree, and why: its two "roots" are
/// the 12 bytes `don't care 2`; Go compares the roots of equal-size trees without looking at
/// their length, Enclave's verifiers take 32-byte hashes only (every hash is 32 bytes).
const NOT_32_BYTES: &str = "consistency/additional/sizes-are-equal-one-and-proof-is-empty.json";

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(json_files(&path));
        } else if path.extension().is_some_and(|e| e == "json") {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn hash(value: &Value) -> Option<Hash> {
    Hash::from_base64(value.as_str().unwrap()).ok()
}

fn proof(case: &Value) -> Option<Vec<Hash>> {
    match &case["proof"] {
        Value::Null => Some(Vec::new()),
        Value::Array(items) => items.iter().map(hash).collect(),
        other => panic!("unexpected proof {other}"),
    }
}

fn number(case: &Value, key: &str) -> u64 {
    case[key]
        .as_u64()
        .unwrap_or_else(|| panic!("`{key}` is not a u64"))
}

/// Whether Enclave accepts an inclusion case. A hash that is not 32 bytes is a rejection.
fn accepts_inclusion(case: &Value) -> bool {
    let (Some(leaf), Some(root), Some(proof)) =
        (hash(&case["leafHash"]), hash(&case["root"]), proof(case))
    else {
        return false;
    };
    verify_inclusion(
        number(case, "leafIdx"),
        number(case, "treeSize"),
        &leaf,
        &proof,
        &root,
    )
    .is_ok()
}

/// Whether Enclave accepts a consistency case. A hash that is not 32 bytes is a rejection.
fn accepts_consistency(case: &Value) -> bool {
    let (Some(root1), Some(root2), Some(proof)) =
        (hash(&case["root1"]), hash(&case["root2"]), proof(case))
    else {
        return false;
    };
    verify_consistency(
        number(case, "size1"),
        number(case, "size2"),
        &proof,
        &root1,
        &root2,
    )
    .is_ok()
}

fn run(folder: &str, accepts: fn(&Value) -> bool) -> (usize, usize, Vec<String>) {
    let files = json_files(&Path::new(ROOT).join(folder));
    let mut valid = 0;
    let mut disagreements = Vec::new();
    for file in &files {
        let case: Value = serde_json::from_slice(&fs::read(file).unwrap()).unwrap();
        let want_err = case["wantErr"].as_bool().unwrap();
        valid += usize::from(!want_err);
        if accepts(&case) == want_err {
            let name = file.strip_prefix(ROOT).unwrap().display().to_string();
            disagreements.push(name.trim_start_matches('/').to_owned());
        }
    }
    (files.len(), valid, disagreements)
}

#[test]
fn every_inclusion_vector_is_accepted_exactly_when_valid() {
    let (files, valid, disagreements) = run("inclusion", accepts_inclusion);
    assert_eq!(files, 98, "all inclusion files, subfolders included");
    assert_eq!(valid, 6);
    assert_eq!(disagreements, Vec::<String>::new());
}

#[test]
fn every_consistency_vector_is_accepted_exactly_when_valid_save_the_12_byte_roots() {
    let (files, valid, disagreements) = run("consistency", accepts_consistency);
    assert_eq!(files, 98, "all consistency files, `additional/` included");
    assert_eq!(valid, 6);
    assert_eq!(disagreements, [NOT_32_BYTES]);
}

#[test]
fn the_disagreement_is_only_the_hash_length() {
    let case: Value =
        serde_json::from_slice(&fs::read(Path::new(ROOT).join(NOT_32_BYTES)).unwrap()).unwrap();
    assert_eq!(case["wantErr"], false);
    assert_eq!(case["root1"], case["root2"]);
    assert_eq!(case["size1"], case["size2"]);
    assert_eq!(hash(&case["root1"]), None, "the roots are not 32 bytes");
    // With 32-byte roots, the same case (equal sizes, identical roots, empty proof) is accepted.
    let root = Hash::new([7; 32]);
    assert!(verify_consistency(1, 1, &[], &root, &root).is_ok());
}
