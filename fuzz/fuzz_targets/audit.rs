//! Any input, through every parser of the audit core: the entry parser, the signed-note and
//! checkpoint parsers, key texts, JSON Lines exports, the streaming verifier and the proof
//! verifiers. No panic anywhere; whatever parses renders back to exactly the input; and proofs
//! that a tree built from the input produces always verify.
#![no_main]

use enclave_audit::{
    AuditEntry, Checkpoint, Hash, LogVerifier, Note, Signer, Tree, VerifierKey, Verifiers,
    hash_leaf, read_jsonl, verify_consistency, verify_inclusion,
};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// The trusted key set, made once: deriving an Ed25519 key per input would dominate the run.
fn trusted() -> &'static Verifiers {
    static TRUSTED: OnceLock<Verifiers> = OnceLock::new();
    TRUSTED.get_or_init(|| {
        let signer = Signer::from_seed("fuzz.test/audit", &[1; 32]).unwrap();
        Verifiers::new([signer.verifier_key()]).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = AuditEntry::from_canonical_bytes(data) {
        assert_eq!(entry.to_canonical_bytes(), data, "entry round trip");
    }

    let trusted = trusted();
    if let Ok(note) = Note::parse(data) {
        assert_eq!(note.to_string().as_bytes(), data, "note round trip");
        let _ = trusted.open(data);
        let _ = Checkpoint::open(data, trusted);
    }

    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(checkpoint) = text.parse::<Checkpoint>() {
            assert_eq!(checkpoint.to_string(), text, "checkpoint round trip");
        }
        if let Ok(key) = text.parse::<VerifierKey>() {
            assert_eq!(key.to_string(), text, "verifier key round trip");
        }
        if let Ok(signer) = text.parse::<Signer>() {
            let _ = signer.sign("fuzz\n");
        }
    }

    // JSON Lines: the rows read back are the lines; feed them to the verifier.
    let mut rebuilt = Vec::new();
    let mut verifier = LogVerifier::new(trusted, None, [data]).ok();
    for row in read_jsonl(data, 0) {
        let Ok((index, bytes)) = row else { break };
        rebuilt.extend_from_slice(bytes);
        rebuilt.push(b'\n');
        if let Some(v) = verifier.as_mut() {
            if v.push(index, bytes).is_err() {
                verifier = None;
            }
        }
    }
    assert!(
        data.starts_with(&rebuilt),
        "JSON Lines rows are the input's lines"
    );
    if let Some(v) = verifier {
        let _ = v.finish();
    }

    // Proof verification on arbitrary numbers and hashes: no panic.
    let (head, rest) = data.split_at(data.len().min(16));
    let mut numbers = [0u8; 16];
    numbers[..head.len()].copy_from_slice(head);
    let a = u64::from_le_bytes(numbers[..8].try_into().unwrap());
    let b = u64::from_le_bytes(numbers[8..].try_into().unwrap());
    let hashes: Vec<Hash> = rest
        .chunks_exact(32)
        .map(|c| Hash::try_from(c).unwrap())
        .collect();
    if let [first, second, proof @ ..] = hashes.as_slice() {
        let _ = verify_inclusion(a, b, first, proof, second);
        let _ = verify_consistency(a, b, proof, first, second);
        let _ = verify_inclusion(a % 64, b % 64, first, proof, second);
        let _ = verify_consistency(a % 64, b % 64, proof, first, second);
    }

    // A tree from the input: its own proofs verify.
    let size = 1 + (a % 100);
    let tree = Tree::from_leaves((0..size).map(|i| hash_leaf(&[data, &i.to_le_bytes()].concat())));
    let index = b % size;
    let from = 1 + b % size;
    let proof = tree.inclusion_proof(index, size).unwrap();
    assert!(
        verify_inclusion(
            index,
            size,
            &tree.leaf(index).unwrap(),
            &proof,
            &tree.root()
        )
        .is_ok()
    );
    let proof = tree.consistency_proof(from, size).unwrap();
    let old = tree.root_at(from).unwrap();
    assert!(verify_consistency(from, size, &proof, &old, &tree.root()).is_ok());
});
