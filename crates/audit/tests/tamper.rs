//! Tamper drills on an in-memory log: each way of changing the log is detected by the streaming
//! verifier, at the documented index; the untouched log verifies.
//!
//! The log: 100 entries (requests, every seventh an admin action), checkpoints signed at sizes
//! 10, 25, 50, 75 and 100. Rows are `(row index, exact bytes)`, as the store or an export gives
//! them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::collections::BTreeMap;

use enclave_audit::{
    AdminEvent, AuditEntry, Checkpoint, Decision, Event, KeyedDigest, LogVerifier, RequestEvent,
    Signer, Tampered, Timestamp, TokenCounts, Tree, Verified, Verifiers, read_jsonl, render_jsonl,
};

const ORIGIN: &str = "enclave.test/audit";
const CHECKPOINT_SIZES: [u64; 5] = [10, 25, 50, 75, 100];

type Rows = Vec<(u64, Vec<u8>)>;

fn entry(index: u64) -> AuditEntry {
    let event = if index % 7 == 3 {
        Event::Admin(AdminEvent {
            action: "principal.add".into(),
            actor: "cli:root".into(),
            details: BTreeMap::from([("clearance".into(), "SECRET".into())]),
            request_id: None,
            target: Some(format!("user{index}")),
            tenant: Some("acme".into()),
        })
    } else {
        Event::Request(RequestEvent {
            auth_method: Some("api_key".into()),
            backend: Some("local".into()),
            decisions: vec![Decision {
                code: None,
                outcome: "allow".into(),
                stage: "clearance".into(),
            }],
            latency_ms: 40 + index,
            model: Some("smollm2".into()),
            output_hmac: Some(KeyedDigest::compute(
                b"k",
                format!("out {index}").as_bytes(),
            )),
            principal: Some("alice".into()),
            prompt_hmac: Some(KeyedDigest::compute(b"k", format!("in {index}").as_bytes())),
            request_id: format!("req_{index}"),
            route: "chat.completions".into(),
            session_label: Some("SECRET".into()),
            status: 200,
            tenant: Some("acme".into()),
            tokens: Some(TokenCounts {
                input: 10,
                output: 20,
            }),
            ..RequestEvent::default()
        })
    };
    AuditEntry {
        index,
        time: Timestamp::from_unix_millis(1_795_512_600_000 + index * 1000).unwrap(),
        event,
    }
}

fn signer() -> Signer {
    Signer::from_seed(ORIGIN, &[42; 32]).unwrap()
}

fn trusted() -> Verifiers {
    Verifiers::new([signer().verifier_key()]).unwrap()
}

/// Checkpoint notes over `rows` at `sizes`, signed by `by`.
fn checkpoints(rows: &Rows, sizes: &[u64], by: &Signer) -> Vec<String> {
    let tree = Tree::from_leaves(rows.iter().map(|(_, b)| enclave_audit::hash_leaf(b)));
    sizes
        .iter()
        .map(|&size| {
            Checkpoint::new(ORIGIN, size, tree.root_at(size).unwrap())
                .unwrap()
                .sign(&[by])
                .unwrap()
        })
        .collect()
}

fn log() -> (Rows, Vec<String>) {
    let rows: Rows = (0..100)
        .map(|i| (i, entry(i).to_canonical_bytes()))
        .collect();
    let notes = checkpoints(&rows, &CHECKPOINT_SIZES, &signer());
    (rows, notes)
}

fn verify_with(trusted: &Verifiers, rows: &Rows, notes: &[String]) -> Result<Verified, Tampered> {
    let mut verifier = LogVerifier::new(trusted, Some(ORIGIN), notes)?;
    for (row, bytes) in rows {
        verifier.push(*row, bytes)?;
    }
    verifier.finish()
}

fn verify(rows: &Rows, notes: &[String]) -> Result<Verified, Tampered> {
    verify_with(&trusted(), rows, notes)
}

fn tampered_at(result: Result<Verified, Tampered>) -> (Option<u64>, String) {
    let err = result.expect_err("tampering must be detected");
    (err.index, err.what)
}

fn edit_status(rows: &mut Rows, index: u64, status: u16) {
    let mut e = entry(index);
    let Event::Request(request) = &mut e.event else {
        panic!("entry {index} is not a request")
    };
    request.status = status;
    rows[index as usize].1 = e.to_canonical_bytes();
}

#[test]
fn the_untouched_log_verifies() {
    let (rows, notes) = log();
    let verified = verify(&rows, &notes).unwrap();
    assert_eq!(verified.size, 100);
    assert_eq!(verified.signed_size, 100);
    assert_eq!(verified.checkpoints, 5);
    let tree = Tree::from_leaves(rows.iter().map(|(_, b)| enclave_audit::hash_leaf(b)));
    assert_eq!(verified.root, tree.root());
}

#[test]
fn an_edited_field_is_caught_by_the_next_checkpoint_from_the_last_good_one() {
    let (mut rows, notes) = log();
    edit_status(&mut rows, 30, 500);
    let (index, what) = tampered_at(verify(&rows, &notes));
    // Checkpoint 25 matched; checkpoint #3 (size 50) does not: the edit is in 25..50.
    assert_eq!(index, Some(25));
    assert!(what.contains("checkpoint #3 (size 50)"), "{what}");
    assert!(what.contains("25..50"), "{what}");

    let (mut rows, notes) = log();
    edit_status(&mut rows, 4, 500);
    assert_eq!(tampered_at(verify(&rows, &notes)).0, Some(0));
}

#[test]
fn an_edit_that_breaks_the_canonical_form_is_caught_at_its_own_index() {
    let (mut rows, notes) = log();
    let text = String::from_utf8(rows[30].1.clone()).unwrap();
    rows[30].1 = text
        .replacen("\"status\":200", "\"status\": 500", 1)
        .into_bytes();
    let (index, what) = tampered_at(verify(&rows, &notes));
    assert_eq!(index, Some(30));
    assert!(what.contains("not a canonical audit entry"), "{what}");

    let (mut rows, notes) = log();
    rows[31].1 = b"{\"index\":31}".to_vec();
    assert_eq!(tampered_at(verify(&rows, &notes)).0, Some(31));
}

#[test]
fn a_deleted_entry_is_named() {
    // A database row removed: the row indices keep their values, leaving a gap.
    let (mut rows, notes) = log();
    rows.remove(40);
    let (index, what) = tampered_at(verify(&rows, &notes));
    assert_eq!(index, Some(40));
    assert!(what.contains("entry 40 is missing"), "{what}");

    // A line removed from an export, whose rows are numbered by line: the index inside shows it.
    let (mut rows, notes) = log();
    rows.remove(40);
    for (i, row) in rows.iter_mut().enumerate() {
        row.0 = i as u64;
    }
    let (index, what) = tampered_at(verify(&rows, &notes));
    assert_eq!(index, Some(40));
    assert!(what.contains("carries index 41"), "{what}");
}

#[test]
fn an_inserted_entry_is_named() {
    // The forger gives the new entry index 40 and shifts the later rows down one place.
    let (mut rows, notes) = log();
    let mut forged = entry(40);
    if let Event::Request(request) = &mut forged.event {
        request.principal = Some("mallory".into());
    }
    rows.insert(40, (40, forged.to_canonical_bytes()));
    for (i, row) in rows.iter_mut().enumerate() {
        row.0 = i as u64;
    }
    let (index, what) = tampered_at(verify(&rows, &notes));
    assert_eq!(index, Some(40));
    assert!(what.contains("inserted or copied"), "{what}");

    // An entry appended after the end but written with an index already used.
    let (mut rows, notes) = log();
    rows.push((100, entry(99).to_canonical_bytes()));
    let (index, _) = tampered_at(verify(&rows, &notes));
    assert_eq!(
        index,
        Some(100),
        "entry 99 is vouched for by checkpoint 100"
    );
}

#[test]
fn swapped_entries_are_named() {
    let (mut rows, notes) = log();
    let (a, b) = (rows[40].1.clone(), rows[41].1.clone());
    rows[40].1 = b;
    rows[41].1 = a;
    let (index, what) = tampered_at(verify(&rows, &notes));
    assert_eq!(index, Some(40));
    assert!(what.contains("carries index 41"), "{what}");
}

#[test]
fn a_truncated_tail_is_named() {
    let (mut rows, notes) = log();
    rows.truncate(90);
    let (index, what) = tampered_at(verify(&rows, &notes));
    assert_eq!(index, Some(90));
    assert!(what.contains("entries 90..100 were removed"), "{what}");
}

#[test]
fn a_truncation_that_also_drops_the_later_checkpoints_needs_a_copy_kept_elsewhere() {
    // Entries 90.. and the checkpoint at 100 both deleted: what is left is a consistent shorter
    // log. This is why checkpoints are also written out of the operator's reach: verifying with
    // the copy of the last checkpoint finds the truncation.
    let (mut rows, notes) = log();
    rows.truncate(90);
    let verified = verify(&rows, &notes[..4]).unwrap();
    assert_eq!((verified.size, verified.signed_size), (90, 75));
    assert_eq!(tampered_at(verify(&rows, &notes)).0, Some(90));
}

#[test]
fn a_replaced_checkpoint_signature_is_rejected() {
    let (rows, mut notes) = log();
    // The signature of another text by the same key, pasted under checkpoint #3.
    let other = signer().sign("another text\n").unwrap();
    let other_line = other.lines().last().unwrap();
    let (body, _) = notes[2].rsplit_once("\n\n").unwrap();
    notes[2] = format!("{body}\n\n{other_line}\n");
    let (index, what) = tampered_at(verify(&rows, &notes));
    assert_eq!(index, None);
    assert!(what.starts_with("checkpoint #3:"), "{what}");
    assert!(what.contains("does not verify"), "{what}");

    // A signature of random bytes.
    let (rows, mut notes) = log();
    let (body, line) = notes[0].rsplit_once("\n\n").unwrap();
    let name = line.split(' ').nth(1).unwrap();
    let garbage = "AAAAAAAA".repeat(9);
    notes[0] = format!("{body}\n\n\u{2014} {name} {garbage}\n");
    assert_eq!(tampered_at(verify(&rows, &notes)).0, None);
}

#[test]
fn a_log_re_signed_with_another_key_is_rejected() {
    // The forger edits entry 30, recomputes the tree and signs every checkpoint with a key of
    // the same name: the key ids differ, so no checkpoint carries a trusted signature.
    let (mut rows, _) = log();
    edit_status(&mut rows, 30, 500);
    let forger = Signer::from_seed(ORIGIN, &[66; 32]).unwrap();
    let notes = checkpoints(&rows, &CHECKPOINT_SIZES, &forger);
    let (index, what) = tampered_at(verify(&rows, &notes));
    assert_eq!(index, None);
    assert!(
        what.contains("checkpoint #1: the note has no signature by a trusted key"),
        "{what}"
    );
}

#[test]
fn rotated_keys_verify_when_both_are_trusted() {
    let (rows, _) = log();
    let old = signer();
    let new = Signer::from_seed(ORIGIN, &[43; 32]).unwrap();
    let mut notes = checkpoints(&rows, &CHECKPOINT_SIZES[..2], &old);
    notes.extend(checkpoints(&rows, &CHECKPOINT_SIZES[2..], &new));
    let both = Verifiers::new([old.verifier_key(), new.verifier_key()]).unwrap();
    assert_eq!(verify_with(&both, &rows, &notes).unwrap().signed_size, 100);
    let (index, what) = tampered_at(verify_with(&trusted(), &rows, &notes));
    assert_eq!(index, None);
    assert!(what.starts_with("checkpoint #3:"), "{what}");
}

#[test]
fn checkpoints_that_contradict_each_other_are_rejected() {
    let (rows, notes) = log();
    // Rolled back: a smaller size after a larger one.
    let mut swapped = notes.clone();
    swapped.swap(1, 2);
    let (index, what) = tampered_at(verify(&rows, &swapped));
    assert_eq!(index, None);
    assert!(what.contains("rolled back"), "{what}");

    // Forked: two roots for one size.
    let mut other_rows = rows.clone();
    edit_status(&mut other_rows, 5, 404);
    let mut forked = notes.clone();
    forked.insert(1, checkpoints(&other_rows, &[10], &signer()).remove(0));
    let (index, what) = tampered_at(verify(&rows, &forked));
    assert_eq!(index, None);
    assert!(what.contains("forked"), "{what}");

    // Another log's checkpoint.
    let foreign = Signer::from_seed("elsewhere.test/log", &[42; 32]).unwrap();
    let keys = Verifiers::new([signer().verifier_key(), foreign.verifier_key()]).unwrap();
    let note = Checkpoint::new("elsewhere.test/log", 10, Tree::new().root())
        .unwrap()
        .sign(&[&foreign])
        .unwrap();
    let (index, what) = tampered_at(verify_with(&keys, &rows, &[note]));
    assert_eq!(index, None);
    assert!(what.contains("not `enclave.test/audit`"), "{what}");
}

#[test]
fn a_canonical_edit_after_the_last_checkpoint_is_not_yet_covered() {
    // The limit of any signed log: entries newer than the last checkpoint are not signed yet.
    // The verifier says how far the signatures reach.
    let (mut rows, notes) = log();
    rows.extend((100..110).map(|i| (i, entry(i).to_canonical_bytes())));
    edit_status(&mut rows, 105, 500);
    let verified = verify(&rows, &notes).unwrap();
    assert_eq!((verified.size, verified.signed_size), (110, 100));
}

#[test]
fn an_export_verifies_and_a_deleted_line_is_named() {
    let (rows, notes) = log();
    let text = render_jsonl(rows.iter().map(|(i, b)| (*i, b.as_slice()))).unwrap();
    let read: Rows = read_jsonl(&text, 0)
        .map(|r| r.map(|(i, b)| (i, b.to_vec())))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(verify(&read, &notes).unwrap().size, 100);

    let lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    let without_40: Vec<u8> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 40)
        .flat_map(|(_, l)| l.iter().copied())
        .collect();
    let read: Rows = read_jsonl(&without_40, 0)
        .map(|r| r.map(|(i, b)| (i, b.to_vec())))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tampered_at(verify(&read, &notes)).0, Some(40));
}

#[test]
fn an_empty_log_verifies_against_a_size_zero_checkpoint_only_if_its_root_is_empty() {
    let note = Checkpoint::new(ORIGIN, 0, Tree::new().root())
        .unwrap()
        .sign(&[&signer()])
        .unwrap();
    let verified = verify(&Vec::new(), &[note]).unwrap();
    assert_eq!((verified.size, verified.checkpoints), (0, 1));
    let wrong = Checkpoint::new(ORIGIN, 0, enclave_audit::hash_leaf(b"x"))
        .unwrap()
        .sign(&[&signer()])
        .unwrap();
    assert_eq!(tampered_at(verify(&Vec::new(), &[wrong])).0, Some(0));
}
