//! Runs the real `enclave` binary: every worked example of `examples.jsonl`, the machine-readable
//! contracts of `marking normalize|rollup|scan`, and hostile input.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const EXAMPLES: &str = include_str!("../../label/data/examples.jsonl");
const MORE_EXAMPLES: &str = include_str!("../../label/tests/data/more_examples.jsonl");

fn enclave(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_enclave"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the enclave binary runs");
    let mut input = child.stdin.take().expect("stdin is piped");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        // The binary may exit before reading everything; a broken pipe is fine then.
        let _ = input.write_all(&data);
    });
    let out = child
        .wait_with_output()
        .expect("the enclave binary finishes");
    writer.join().expect("stdin writer");
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("stderr is UTF-8")
}

fn s<'a>(case: &'a Value, key: &str) -> &'a str {
    case[key].as_str().unwrap_or_default()
}

#[test]
fn every_example_passes_through_the_binary() {
    let mut failures = Vec::new();
    for line in EXAMPLES
        .lines()
        .chain(MORE_EXAMPLES.lines())
        .filter(|l| !l.trim().is_empty())
    {
        let case: Value = serde_json::from_str(line).unwrap();
        let id = s(&case, "id");
        let fail = |why: String| format!("{id}: {why}");
        match s(&case, "kind") {
            "rollup" => {
                let portions: Vec<&str> = case["portions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_str().unwrap())
                    .collect();
                let out = enclave(&["marking", "rollup"], portions.join("\n").as_bytes());
                let want = format!("{}\n", s(&case, "expected_banner"));
                if !out.status.success() || stdout(&out) != want {
                    failures.push(fail(format!(
                        "{:?} {} {}",
                        out.status,
                        stdout(&out),
                        stderr(&out)
                    )));
                }
            }
            "parse" => {
                let mut args = vec!["marking", "parse"];
                if let Some(ctx) = case.get("context_banner").and_then(Value::as_str) {
                    args.extend(["--context", ctx]);
                }
                args.push(s(&case, "input"));
                let out = enclave(&args, b"");
                let Ok(fields) = serde_json::from_str::<Value>(&stdout(&out)) else {
                    failures.push(fail(format!("not JSON: {}", stderr(&out))));
                    continue;
                };
                for (key, want) in case["expected"].as_object().unwrap() {
                    if &fields[key] != want {
                        failures.push(fail(format!("`{key}` is {}, want {want}", fields[key])));
                    }
                }
            }
            "normalize" => {
                let out = enclave(&["marking", "normalize", s(&case, "input")], b"");
                let want = format!("{}\n", s(&case, "expected"));
                if out.status.code() != Some(0) || stdout(&out) != want {
                    failures.push(fail(format!("lenient: {} {}", stdout(&out), stderr(&out))));
                }
                let out = enclave(
                    &["marking", "normalize", "--strict", s(&case, "input")],
                    b"",
                );
                let err = stderr(&out);
                if out.status.code() != Some(1)
                    || !err.starts_with(&format!("{}: ", s(&case, "strict_error")))
                    || err.lines().count() != 1
                {
                    failures.push(fail(format!("strict: {err}")));
                }
            }
            "reject" => {
                for strict in [false, true] {
                    let mut args = vec!["marking", "normalize"];
                    if strict {
                        args.push("--strict");
                    }
                    args.push(s(&case, "input"));
                    let out = enclave(&args, b"");
                    let err = stderr(&out);
                    if out.status.code() != Some(1)
                        || !err.starts_with(&format!("{}: ", s(&case, "expected_error")))
                        || !out.stdout.is_empty()
                    {
                        failures.push(fail(format!("strict={strict}: {err}")));
                    }
                }
            }
            other => failures.push(fail(format!("unknown kind {other}"))),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn scan_reports_spans_and_disguise() {
    let doc = "SECRET//NOFORN\n\n(S//NF) The plan.\nIt cites ТOP SECRET//SI//NOFORN material.\n";
    let out = enclave(&["marking", "scan"], doc.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["banner"], "TOP SECRET//SI//NOFORN");
    let markings = v["markings"].as_array().unwrap();
    assert_eq!(markings.len(), 3);
    for m in markings {
        let (start, end) = (
            m["start"].as_u64().unwrap() as usize,
            m["end"].as_u64().unwrap() as usize,
        );
        assert_eq!(&doc[start..end], m["text"].as_str().unwrap());
    }
    assert_eq!(markings[2]["disguised"], true);
    assert_eq!(markings[0]["disguised"], false);
    // The disguised marking stands inside a sentence, but a disguise always asserts.
    for m in markings {
        assert_eq!(m["placement"], "asserted");
    }
    assert_eq!(v["mentioned"], Value::Null);
}

#[test]
fn scan_tells_asserted_markings_from_mentioned_ones() {
    // Issue 16, edge 11: a marking talked about inside a sentence is reported, but it is not the
    // label of the text.
    let doc = "(U) The brief.\nWhat does TOP SECRET//SI//NOFORN mean, and why (S//NF)?\n";
    let out = enclave(&["marking", "scan"], doc.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["banner"], "UNCLASSIFIED");
    assert_eq!(v["mentioned"], "TOP SECRET//SI//NOFORN");
    let placements: Vec<&str> = v["markings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["placement"].as_str().unwrap())
        .collect();
    assert_eq!(placements, ["asserted", "mentioned", "mentioned"]);
}

#[test]
fn invalid_utf8_on_stdin_is_a_clear_error() {
    for cmd in ["rollup", "scan"] {
        let out = enclave(&["marking", cmd], b"(S//NF)\n\xff\xfe(TS)\n");
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        let err = stderr(&out);
        assert!(
            err.starts_with(
                "MALFORMED_MARKING: stdin is not valid UTF-8 (first bad byte at offset 8)"
            ),
            "{err}"
        );
    }
}

#[test]
fn ten_thousand_portion_marks_roll_up() {
    let mut input = String::new();
    for i in 0..10_000 {
        input.push_str(match i % 4 {
            0 => "(U)\n",
            1 => "(S//REL TO USA, AUS, GBR)\n",
            2 => "(C//REL TO USA, GBR)\n",
            _ => "(TS//SI//REL TO USA, FVEY)\n",
        });
    }
    let out = enclave(&["marking", "rollup"], input.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "TOP SECRET//SI//REL TO USA, GBR\n");
}

#[test]
fn ten_thousand_distinct_portion_marks_roll_up() {
    // Each names its own SCI system, so the banner accumulates 10,000 of them: the roll-up must
    // stay linear in the input, not quadratic.
    let input: String = (0..10_000).map(|i| format!("(S//X{i}//NF)\n")).collect();
    let out = enclave(&["marking", "rollup"], input.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let banner = stdout(&out);
    assert!(
        banner.starts_with("SECRET//X0/X1/X10/"),
        "{}",
        &banner[..40]
    );
    assert!(banner.ends_with("//NOFORN\n"));
    let out = enclave(&["marking", "scan"], input.as_bytes());
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["markings"].as_array().unwrap().len(), 10_000);
}

#[test]
fn rollup_names_the_bad_line() {
    let out = enclave(&["marking", "rollup"], b"(S//NF)\n\n(S//NF/NF)\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("DUPLICATE_TOKEN: line 3: "),
        "{}",
        stderr(&out)
    );
    let out = enclave(&["marking", "rollup"], b"\n  \n");
    assert!(stderr(&out).starts_with("EMPTY_MARKING: "));
}

#[test]
fn hostile_markings_fail_cleanly() {
    let separators = "/".repeat(4 << 20);
    let out = enclave(&["marking", "scan"], separators.as_bytes());
    assert!(out.status.success());
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["banner"], "UNCLASSIFIED");

    let out = enclave(&["marking", "rollup"], separators.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("MARKING_TOO_LONG: line 1: "));

    let nested = format!("{}S{}", "(".repeat(5000), ")".repeat(5000));
    let out = enclave(&["marking", "normalize", &nested], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("MARKING_TOO_LONG: ")
            || stderr(&out).starts_with("MALFORMED_MARKING: ")
    );
    let nested = format!("{}S{}", "(".repeat(500), ")".repeat(500));
    let out = enclave(&["marking", "normalize", &nested], b"");
    assert!(
        stderr(&out).starts_with("MALFORMED_MARKING: "),
        "{}",
        stderr(&out)
    );

    let out = enclave(&["marking", "normalize", "SECRET//NOFORN\u{1}"], b"");
    assert!(
        stderr(&out).starts_with("MALFORMED_MARKING: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn normalize_prints_the_canonical_form_of_each_form() {
    let out = enclave(&["marking", "normalize", "( s // nf )"], b"");
    assert_eq!(stdout(&out), "(S//NF)\n");
    let out = enclave(
        &["marking", "normalize", "top secret//tk/si//noforn/orcon"],
        b"",
    );
    assert_eq!(stdout(&out), "TOP SECRET//SI/TK//ORCON/NOFORN\n");
}
