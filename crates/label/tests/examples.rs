//! Runs every case of `data/examples.jsonl` (the worked examples of the marking rules) through
//! the library. The CLI crate runs the same cases through the `enclave` binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

use enclave_label::{Form, Label, Mode, parse_marking, rollup};
use serde_json::Value;

const EXAMPLES: &str = include_str!("../data/examples.jsonl");
/// Enclave's own vectors for rules the shared examples do not cover (see `data/SOURCE.md`).
const MORE_EXAMPLES: &str = include_str!("data/more_examples.jsonl");

fn cases() -> Vec<Value> {
    EXAMPLES
        .lines()
        .chain(MORE_EXAMPLES.lines())
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("each line is a JSON object"))
        .collect()
}

fn s<'a>(case: &'a Value, key: &str) -> &'a str {
    case[key]
        .as_str()
        .unwrap_or_else(|| panic!("{}: `{key}` missing", case["id"]))
}

fn canonical(label: &Label, form: Form) -> String {
    match form {
        Form::Banner => label.banner(),
        Form::Portion => label.portion(),
    }
}

#[test]
fn every_example_passes() {
    let mut failures = Vec::new();
    let all = cases();
    assert!(
        all.len() >= 90,
        "examples.jsonl and more_examples.jsonl have {} cases",
        all.len()
    );
    for case in &all {
        let id = s(case, "id");
        let result = run(case);
        if let Err(why) = result {
            failures.push(format!("{id}: {why}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

fn run(case: &Value) -> Result<(), String> {
    match s(case, "kind") {
        "rollup" => {
            let portions: Vec<Label> = case["portions"]
                .as_array()
                .ok_or("no portions")?
                .iter()
                .map(|p| {
                    let p = p.as_str().unwrap_or_default();
                    p.parse::<Label>().map_err(|e| format!("{p}: {e}"))
                })
                .collect::<Result<_, _>>()?;
            let got = rollup(&portions).to_string();
            let want = s(case, "expected_banner");
            (got == want)
                .then_some(())
                .ok_or(format!("rolled up to `{got}`, want `{want}`"))
        }
        "parse" => {
            let context = match case.get("context_banner").and_then(Value::as_str) {
                Some(b) => Some(b.parse::<Label>().map_err(|e| format!("context: {e}"))?),
                None => None,
            };
            let m = parse_marking(s(case, "input"), Mode::Lenient, context.as_ref())
                .map_err(|e| e.to_string())?;
            let fields = serde_json::to_value(m.label.fields()).map_err(|e| e.to_string())?;
            for (key, want) in case["expected"].as_object().ok_or("no expected")? {
                let got = &fields[key];
                if got != want {
                    return Err(format!("`{key}` is {got}, want {want}"));
                }
            }
            Ok(())
        }
        "normalize" => {
            let input = s(case, "input");
            let m =
                parse_marking(input, Mode::Lenient, None).map_err(|e| format!("lenient: {e}"))?;
            let got = canonical(&m.label, m.form);
            let want = s(case, "expected");
            if got != want {
                return Err(format!("normalized to `{got}`, want `{want}`"));
            }
            match parse_marking(input, Mode::Strict, None) {
                Ok(_) => Err("strict mode accepted it".into()),
                Err(e) if e.code().as_str() == s(case, "strict_error") => Ok(()),
                Err(e) => Err(format!("strict: {e}, want {}", s(case, "strict_error"))),
            }
        }
        "reject" => {
            let want = s(case, "expected_error");
            for mode in [Mode::Strict, Mode::Lenient] {
                match parse_marking(s(case, "input"), mode, None) {
                    Ok(m) => return Err(format!("{mode:?} accepted it as `{}`", m.label)),
                    Err(e) if e.code().as_str() == want => {}
                    Err(e) => return Err(format!("{mode:?}: {e}, want {want}")),
                }
            }
            Ok(())
        }
        other => Err(format!("unknown kind `{other}`")),
    }
}
