//! Realistic audit logs for the benchmark and the latency example: entries shaped like the
//! gateway's (labels, decisions, token counts, two keyed digests), about 600 bytes each.

use std::collections::BTreeMap;

use enclave_audit::{
    AdminEvent, AuditEntry, Checkpoint, CompactRange, Decision, Event, KeyedDigest, RequestEvent,
    Signer, Timestamp, TokenCounts, Verifiers, hash_leaf,
};

/// The log's origin and key name.
pub(crate) const ORIGIN: &str = "enclave.bench/audit";

/// A log held in memory: every entry's bytes in one buffer, and signed checkpoints.
pub(crate) struct Log {
    /// The entries' bytes, back to back.
    pub(crate) bytes: Vec<u8>,
    /// `ends[i]` is where entry `i` ends in `bytes`.
    pub(crate) ends: Vec<usize>,
    /// Checkpoint notes, in order.
    pub(crate) notes: Vec<String>,
    /// The key that verifies them.
    pub(crate) trusted: Verifiers,
}

impl Log {
    /// The bytes of entry `i`.
    pub(crate) fn entry(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

/// The entry at `index` of a log with four tenants, a dozen principals, three routes, an admin
/// action every 50 entries and a denial every 20.
pub(crate) fn realistic_entry(index: u64) -> AuditEntry {
    let tenant = ["acme", "globex", "initech", "umbrella"][(index % 4) as usize];
    let time = Timestamp::from_unix_millis(1_795_512_600_000 + index * 37).unwrap();
    if index % 50 == 49 {
        return AuditEntry {
            index,
            time,
            event: Event::Admin(AdminEvent {
                action: "principal.add".into(),
                actor: "cli:isso".into(),
                details: BTreeMap::from([
                    ("clearance".into(), "TOP SECRET//SI//NOFORN".into()),
                    ("nationality".into(), "USA".into()),
                ]),
                request_id: None,
                target: Some(format!("analyst{}", index % 997)),
                tenant: Some(tenant.into()),
            }),
        };
    }
    let denied = index % 20 == 7;
    let key = format!("digest key of {tenant}");
    let mut decisions = vec![
        Decision {
            code: None,
            outcome: "allow".into(),
            stage: "authorization".into(),
        },
        Decision {
            code: denied.then(|| "classification_exceeds_clearance".into()),
            outcome: if denied { "deny" } else { "allow" }.into(),
            stage: "clearance".into(),
        },
    ];
    if !denied {
        decisions.push(Decision {
            code: None,
            outcome: "allow".into(),
            stage: "spillage".into(),
        });
        decisions.push(Decision {
            code: Some("none".into()),
            outcome: "allow".into(),
            stage: "safety_input".into(),
        });
    }
    AuditEntry {
        index,
        time,
        event: Event::Request(RequestEvent {
            auth_method: Some("api_key".into()),
            backend: (!denied).then(|| "local-smollm2".into()),
            content_label: Some("SECRET//NOFORN".into()),
            decisions,
            error: denied.then(|| "classification_exceeds_clearance".into()),
            latency_ms: if denied { 2 } else { 300 + index % 900 },
            model: Some("smollm2-135m-instruct".into()),
            output_hmac: (!denied).then(|| {
                KeyedDigest::compute(key.as_bytes(), format!("answer {index}").as_bytes())
            }),
            phase: None,
            principal: Some(format!("analyst{}@{tenant}.example", index % 12)),
            prompt_hmac: Some(KeyedDigest::compute(
                key.as_bytes(),
                format!("question {index}").as_bytes(),
            )),
            request_id: format!("req_{index:016x}"),
            route: ["chat.completions", "responses", "embeddings"][(index % 3) as usize].into(),
            session_label: Some("SECRET//NOFORN".into()),
            status: if denied { 403 } else { 200 },
            tenant: Some(tenant.into()),
            tokens: (!denied).then_some(TokenCounts {
                input: 120 + index % 50,
                output: 200,
            }),
        }),
    }
}

/// A log of `n` realistic entries with a signed checkpoint every `every` entries and at the end.
pub(crate) fn log(n: u64, every: u64) -> Log {
    let signer = Signer::from_seed(ORIGIN, &[5; 32]).unwrap();
    let trusted = Verifiers::new([signer.verifier_key()]).unwrap();
    let mut bytes = Vec::new();
    let mut ends = Vec::with_capacity(n as usize);
    let mut notes = Vec::new();
    let mut range = CompactRange::new();
    for index in 0..n {
        let entry = realistic_entry(index).to_canonical_bytes();
        range.push(hash_leaf(&entry));
        bytes.extend_from_slice(&entry);
        ends.push(bytes.len());
        let size = index + 1;
        if size % every == 0 || size == n {
            let checkpoint = Checkpoint::new(ORIGIN, size, range.root()).unwrap();
            notes.push(checkpoint.sign(&[&signer]).unwrap());
        }
    }
    Log {
        bytes,
        ends,
        notes,
        trusted,
    }
}
