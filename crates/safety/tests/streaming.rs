//! Redaction over whole texts and over streams split at every byte.

use enclave_safety::{
    Category, HOLDBACK_BYTES, MAX_HOLDBACK_BYTES, STEP_BYTES, StreamRedactor, detect, redact,
    redact_text,
};
use proptest::prelude::*;

const REDACTED: &[Category] = &[Category::Pii, Category::Secrets];

/// A mixed text of about 2.5 KB with secrets and PII spread through it, some near the start,
/// some past the first release, one private key longer than the holdback.
fn mixed() -> String {
    let filler = "The regional office completed its quarterly review of procurement files on schedule, \
                  and the contracting officer will close the remaining gaps before the next audit. ";
    let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    let pem = "-----BEGIN RSA PRIVATE KEY-----\n\
               MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n\
               KUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQJAIJLixBy2qpFoS4DSmoEm\n\
               MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n\
               KUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQJAIJLixBy2qpFoS4DSmoEm\n\
               -----END RSA PRIVATE KEY-----";
    format!(
        "Contact ana@agency.gov. {filler}\n\
         export AWS_ACCESS_KEY_ID=AKIAQYLPMN5HFIQR7XYZ\n\
         export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCzEXAMPLEKEY\n\
         {filler}Authorization: Bearer {jwt}\n{filler}\n{pem}\n\
         Call (202) 456-1111 — SSN 536-22-8714, card 4111 1111 1111 1111, ünïcödé ✓ \
         postgres://admin:s3cr3t!@db.example.com/app and password=hunter2!\n\
         {filler}Ship to 1600 Pennsylvania Avenue NW. {filler}ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
    )
}

/// Streams `text` in the given pieces and returns everything emitted.
fn stream(pieces: &[&str]) -> String {
    let mut r = StreamRedactor::new(REDACTED);
    let mut out = String::new();
    for p in pieces {
        out += &r.push(p);
    }
    out + &r.finish()
}

/// Every char boundary of `text`.
fn boundaries(text: &str) -> Vec<usize> {
    (0..=text.len())
        .filter(|&i| text.is_char_boundary(i))
        .collect()
}

#[test]
fn whole_text_redaction_replaces_each_span() {
    let text = mixed();
    let out = redact_text(&text, REDACTED);
    for marker in [
        "[REDACTED:email]",
        "[REDACTED:aws_access_key]",
        "[REDACTED:aws_secret_key]",
        "Bearer [REDACTED:bearer_token]",
        "[REDACTED:private_key]",
        "[REDACTED:phone]",
        "[REDACTED:us_ssn]",
        "[REDACTED:payment_card]",
        "admin:[REDACTED:connection_string_password]@db",
        "password=[REDACTED:password_assignment]",
        "[REDACTED:street_address]",
        "[REDACTED:github_token]",
    ] {
        assert!(out.contains(marker), "{marker} missing from {out}");
    }
    for secret in ["AKIA", "eyJ", "MIIB", "536-22", "s3cr3t", "hunter2", "ghp_"] {
        assert!(!out.contains(secret), "{secret} left in {out}");
    }
    // Only the selected categories are redacted.
    let only_secrets = redact(&text, &detect(&text), &[Category::Secrets]);
    assert!(only_secrets.contains("536-22-8714") && !only_secrets.contains("AKIA"));
}

#[test]
fn one_split_at_every_byte_matches_whole_text_redaction() {
    let text = mixed();
    assert!(
        text.len() > 3 * (HOLDBACK_BYTES + STEP_BYTES),
        "the stream must release mid-way"
    );
    let whole = redact_text(&text, REDACTED);
    for i in boundaries(&text) {
        let (a, b) = text.split_at(i);
        assert_eq!(stream(&[a, b]), whole, "split at {i}");
    }
}

#[test]
fn one_char_chunks_match_whole_text_redaction() {
    let text = mixed();
    let pieces: Vec<&str> = boundaries(&text)
        .windows(2)
        .map(|w| &text[w[0]..w[1]])
        .collect();
    assert_eq!(stream(&pieces), redact_text(&text, REDACTED));
}

#[test]
fn every_pair_of_splits_around_secrets_matches_whole_text_redaction() {
    // A text just long enough to be released mid-stream, and every pair of cut points over the
    // 100 bytes that hold an AWS key pair and a bearer JWT: about 5,000 pairs. (All pairs over
    // the whole text would take minutes in an unoptimized test build.)
    let filler = "Budget notes for the quarter, nothing sensitive here at all. ".repeat(7);
    let text = format!(
        "{filler}id AKIAQYLPMN5HFIQR7XYZ key wJalrXUtnFEMI/K7MDENG/bPxRfiCzEXAMPLEKEY \
         Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0.c2ln ok {filler}"
    );
    let whole = redact_text(&text, REDACTED);
    assert!(
        whole.contains("[REDACTED:aws_secret_key]") && whole.contains("[REDACTED:bearer_token]")
    );
    let at = text.find("AKIA").unwrap();
    let points: Vec<usize> = (at - 10..at + 90).collect();
    for (n, &i) in points.iter().enumerate() {
        for &j in &points[n..] {
            let got = stream(&[&text[..i], &text[i..j], &text[j..]]);
            assert_eq!(got, whole, "splits at {i} and {j}");
        }
    }
}

#[test]
fn a_short_input_with_every_pair_of_splits() {
    let text = "key AKIAQYLPMN5HFIQR7XYZ and Bearer abc123def456ghi789 to ana@agency.gov";
    let whole = redact_text(text, REDACTED);
    for i in boundaries(text) {
        for j in boundaries(text).into_iter().filter(|&j| j >= i) {
            assert_eq!(stream(&[&text[..i], &text[i..j], &text[j..]]), whole);
        }
    }
}

#[test]
fn holdback_stays_small_on_ordinary_prose() {
    let text = "Ordinary words about budgets and travel. ".repeat(200);
    let mut r = StreamRedactor::new(REDACTED);
    let mut out = String::new();
    for w in text.split_inclusive(' ') {
        out += &r.push(w);
        assert!(r.held_bytes() < HOLDBACK_BYTES + STEP_BYTES + 64);
    }
    out += &r.finish();
    assert_eq!(out, text);
}

#[test]
fn an_endless_token_is_released_after_the_maximum_holdback() {
    let mut r = StreamRedactor::new(REDACTED);
    let mut out = String::new();
    let chunk = "A".repeat(4096);
    for _ in 0..40 {
        out += &r.push(&chunk);
        assert!(r.held_bytes() <= MAX_HOLDBACK_BYTES + 4096 + HOLDBACK_BYTES);
    }
    out += &r.finish();
    assert_eq!(out.len(), 40 * 4096);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_chunkings_match_whole_text_redaction(cuts in proptest::collection::vec(0usize..4000, 0..40)) {
        let text = mixed();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (text.len() + 1)).filter(|&c| text.is_char_boundary(c)).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut at = 0;
        for c in cuts {
            pieces.push(&text[at..c]);
            at = c;
        }
        pieces.push(&text[at..]);
        prop_assert_eq!(stream(&pieces), redact_text(&text, REDACTED));
    }
}
