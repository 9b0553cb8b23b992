//! Secret rules: cloud keys, private keys, bearer tokens, JWTs, passwords in connection strings
//! and key-value text, GitHub, Slack and Google key shapes.
//!
//! Documented example keys (`AKIAIOSFODNN7EXAMPLE`) are reported like any other: they have the
//! shape of a real key, the rule cannot know a key was revoked, and a leak that looks like a
//! documentation example is still a leak.

use std::sync::LazyLock;

use base64::Engine as _;
use regex::Regex;

use super::{Finding, Kind, compile, context_has};

/// How far from an AWS access key id a 40-character secret is taken to be its secret key.
pub(crate) const AWS_PAIR_BYTES: usize = 160;

/// The compiled secret patterns.
struct Patterns {
    aws_access: Regex,
    aws_secret: Regex,
    aws_secret_words: Regex,
    pem_begin: Regex,
    pem_end: Regex,
    bearer: Regex,
    jwt: Regex,
    url_password: Regex,
    assignment: Regex,
    github: Regex,
    slack: Regex,
    google: Regex,
}

static PATTERNS: LazyLock<Patterns> = LazyLock::new(|| Patterns {
    aws_access: compile(r"(?-u:\b)(?:AKIA|ASIA)[A-Z0-9]{16}(?-u:\b)"),
    // A 40-character base64 run, bounded by characters that cannot continue it (`=` may come
    // before it, as in `KEY=…`, but only padding after).
    aws_secret: compile(r"(?:^|[^A-Za-z0-9/+])([A-Za-z0-9/+]{40})(?:$|[^A-Za-z0-9/+=])"),
    aws_secret_words: compile(r"(?i)aws_secret|secret_?access_?key|aws secret|secret access key"),
    pem_begin: compile(r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----"),
    pem_end: compile(r"\A[ \t\r\n]*-----END (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----"),
    // The `Authorization:` before it is checked by hand: as an optional prefix in the pattern it
    // kept the regex crate from searching for the literal `bearer` first.
    bearer: compile(r"(?i:bearer)[ \t]+([A-Za-z0-9\-._~+/]{8,}=*)"),
    jwt: compile(r"(?-u:\b)(eyJ[A-Za-z0-9_\-]{5,})\.([A-Za-z0-9_\-]{2,})\.([A-Za-z0-9_\-]*)"),
    url_password: compile(
        r"(?-u:\b)[A-Za-z][A-Za-z0-9+.\-]{1,20}://[^\s:/@]{1,64}:([^\s@/]{1,128})@[A-Za-z0-9\[]",
    ),
    assignment: compile(
        r#"(?i)(password|passwd|pwd|pass|secret|client[_\-]?secret|secret[_\-]?key|api[_\-]?key|access[_\-]?token|auth[_\-]?token)[\x22']?[ \t]*(=|:)[ \t]*([\x22']?)([^\s\x22';,]{3,128})"#,
    ),
    github: compile(
        r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{60,255})(?-u:\b)",
    ),
    slack: compile(r"(?-u:\b)xox[abprs]-[A-Za-z0-9\-]{10,200}"),
    google: compile(r"(?-u:\b)AIza[0-9A-Za-z_\-]{35}"),
});

/// Runs the secret rules.
pub(super) fn detect(text: &str, out: &mut Vec<Finding>) {
    let p = &*PATTERNS;
    let access: Vec<(usize, usize)> = p
        .aws_access
        .find_iter(text)
        .map(|m| (m.start(), m.end()))
        .collect();
    for &(s, e) in &access {
        push(out, Kind::AwsAccessKey, s, e, 0.95);
    }
    aws_secret(p, text, &access, out);
    private_keys(p, text, out);
    for c in p.bearer.captures_iter(text) {
        let (Some(m), Some(token)) = (c.get(0), c.get(1)) else {
            continue;
        };
        if text
            .get(..m.start())
            .and_then(|b| b.chars().next_back())
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            continue;
        }
        // A bare "Bearer x" in prose needs a token-shaped value: letters and digits.
        let s = token.as_str();
        let header = after_authorization(text, m.start());
        let shaped = s.len() >= 16
            && s.bytes().any(|b| b.is_ascii_digit())
            && s.bytes().any(|b| b.is_ascii_alphabetic());
        if header || shaped {
            push(
                out,
                Kind::BearerToken,
                token.start(),
                token.end(),
                if header { 0.95 } else { 0.8 },
            );
        }
    }
    for c in p.jwt.captures_iter(text) {
        let (Some(m), Some(header)) = (c.get(0), c.get(1)) else {
            continue;
        };
        if jwt_header_ok(header.as_str()) {
            push(out, Kind::Jwt, m.start(), m.end(), 0.95);
        }
    }
    for c in p.url_password.captures_iter(text) {
        let Some(pw) = c.get(1) else { continue };
        if !placeholder(pw.as_str()) {
            push(
                out,
                Kind::ConnectionStringPassword,
                pw.start(),
                pw.end(),
                0.9,
            );
        }
    }
    assignments(p, text, out);
    for m in p.github.find_iter(text) {
        push(out, Kind::GithubToken, m.start(), m.end(), 0.95);
    }
    for m in p.slack.find_iter(text) {
        push(out, Kind::SlackToken, m.start(), m.end(), 0.9);
    }
    for m in p.google.find_iter(text) {
        push(out, Kind::GoogleApiKey, m.start(), m.end(), 0.9);
    }
}

/// Whether `Authorization:` (or `authorization=`, quoted or not) ends just before `at`.
fn after_authorization(text: &str, at: usize) -> bool {
    let before = text.get(..at).unwrap_or("");
    let before = before.trim_end_matches([' ', '\t', '"', '\'']);
    let Some(before) = before.strip_suffix([':', '=']) else {
        return false;
    };
    let before = before.trim_end_matches([' ', '\t', '"', '\'']);
    let n = "authorization".len();
    before.len() >= n
        && before
            .get(before.len() - n..)
            .is_some_and(|w| w.eq_ignore_ascii_case("authorization"))
        && !before
            .get(..before.len() - n)
            .and_then(|b| b.chars().next_back())
            .is_some_and(|c| c.is_ascii_alphanumeric())
}

/// AWS secret access keys: 40 base64 characters with an upper-case letter, a lower-case letter
/// and a digit, near an access key id or after a naming word.
fn aws_secret(p: &Patterns, text: &str, access: &[(usize, usize)], out: &mut Vec<Finding>) {
    const WORDS: &[&str] = &[
        "aws_secret",
        "secret_access_key",
        "secretaccesskey",
        "aws secret",
        "secret access key",
    ];
    // Without an access key id or a naming word anywhere, no candidate can qualify: skip the
    // scan for 40-character runs, the most expensive part of this module.
    if access.is_empty() && !p.aws_secret_words.is_match(text) {
        return;
    }
    let mut at = 0;
    // The boundary characters are part of the match, so adjacent candidates are found by
    // restarting just after each candidate rather than with `captures_iter`.
    while let Some(c) = p.aws_secret.captures_at(text, at) {
        let Some(k) = c.get(1) else { break };
        at = k.end();
        let s = k.as_str();
        let mixed = s.bytes().any(|b| b.is_ascii_uppercase())
            && s.bytes().any(|b| b.is_ascii_lowercase())
            && s.bytes().any(|b| b.is_ascii_digit());
        if !mixed {
            continue;
        }
        let near = access.iter().any(|&(a, b)| {
            a.abs_diff(k.end()) <= AWS_PAIR_BYTES || b.abs_diff(k.start()) <= AWS_PAIR_BYTES
        });
        if near || context_has(text, k.start(), k.end(), 64, 0, WORDS) {
            push(out, Kind::AwsSecretKey, k.start(), k.end(), 0.9);
        }
    }
}

/// PEM private keys: the BEGIN line, the body (base64 lines and `Proc-Type:`-style headers)
/// and the END line when it follows; without an END line the span ends with the body, so a
/// truncated key is still covered.
fn private_keys(p: &Patterns, text: &str, out: &mut Vec<Finding>) {
    let mut from = 0;
    while let Some(m) = text.get(from..).and_then(|t| p.pem_begin.find(t)) {
        let start = from + m.start();
        let header_end = from + m.end();
        let body = text.get(header_end..).unwrap_or("");
        // The body ends where the END line (or any other run of five dashes) begins, or at the
        // first character a body cannot hold. Looking for the dashes first bounds the character
        // scan, so a text of many BEGIN lines is read once, not once per line.
        let dashes = body.find("-----").unwrap_or(body.len());
        let stop = body
            .get(..dashes)
            .and_then(|b| {
                b.bytes()
                    .position(|b| !(b.is_ascii_alphanumeric() || b"+/=:,- \t\r\n".contains(&b)))
            })
            .unwrap_or(dashes);
        let trimmed = body.get(..stop).map_or(0, |b| b.trim_end().len());
        let tail = body.get(trimmed..).unwrap_or("");
        let end = header_end + p.pem_end.find(tail).map_or(trimmed, |e| trimmed + e.end());
        push(out, Kind::PrivateKey, start, end, 0.99);
        from = end.max(start + 1);
    }
}

/// Passwords and keys in key-value text (`password=…`, `"api_key": "…"`, `Pwd=…;`).
fn assignments(p: &Patterns, text: &str, out: &mut Vec<Finding>) {
    for c in p.assignment.captures_iter(text) {
        let (Some(key), Some(sep), Some(quote), Some(value)) =
            (c.get(1), c.get(2), c.get(3), c.get(4))
        else {
            continue;
        };
        // The key starts a word, or follows `_`, `-` or `.` (`DB_PASSWORD`), not a letter
        // (`bypass`, `compass`).
        if text
            .get(..key.start())
            .and_then(|b| b.chars().next_back())
            .is_some_and(|c| c.is_ascii_alphanumeric())
        {
            continue;
        }
        let key = key.as_str().to_ascii_lowercase();
        // In `a=1&password=x&b=2` the value ends at `&`; after a colon `&` is part of it.
        let v = match value.as_str().find('&') {
            Some(i) if sep.as_str() == "=" => value.as_str().get(..i).unwrap_or(""),
            _ => value.as_str(),
        };
        if v.len() < 3 {
            continue;
        }
        if placeholder(v) {
            continue;
        }
        // `pass` and `secret` alone are everyday words: only `pass=`/`secret=` count.
        if (key == "pass" || key == "secret") && sep.as_str() != "=" {
            continue;
        }
        // After a colon in prose ("Password: must be 12 characters") the value must look like
        // a credential: quoted, or with a digit or a symbol in it.
        let credential_like = !quote.as_str().is_empty()
            || v.bytes()
                .any(|b| b.is_ascii_digit() || b.is_ascii_punctuation());
        if sep.as_str() == ":" && !credential_like {
            continue;
        }
        push(
            out,
            Kind::PasswordAssignment,
            value.start(),
            value.start() + v.len(),
            if credential_like { 0.9 } else { 0.7 },
        );
    }
}

/// Whether a password value is a placeholder rather than a secret (`****`, `<password>`,
/// `${DB_PASSWORD}`, `{{ secret }}`, `%s`, `password`).
fn placeholder(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    v.bytes()
        .all(|b| b == b'*' || b == b'x' || b == b'X' || b == b'.')
        || v.starts_with('<')
        || v.starts_with("${")
        || v.starts_with("{{")
        || v.starts_with('$')
        || v.starts_with('%')
        || matches!(
            lower.as_str(),
            "password"
                | "pass"
                | "passwd"
                | "secret"
                | "changeme"
                | "none"
                | "null"
                | "true"
                | "false"
                | "redacted"
                | "[redacted]"
        )
        || lower.starts_with("[redacted")
}

/// Whether a JWT header decodes (base64url, padding optional) to a JSON object with `alg`.
fn jwt_header_ok(header: &str) -> bool {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    if header.len() > 4096 {
        return false;
    }
    let Ok(bytes) = engine.decode(header) else {
        return false;
    };
    matches!(serde_json::from_slice::<serde_json::Value>(&bytes), Ok(serde_json::Value::Object(o)) if o.contains_key("alg"))
}

/// Records a finding.
fn push(out: &mut Vec<Finding>, kind: Kind, start: usize, end: usize, confidence: f32) {
    out.push(Finding {
        kind,
        span: start..end,
        confidence,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_header_must_be_json_with_alg() {
        assert!(jwt_header_ok("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"));
        assert!(!jwt_header_ok("eyJ0eXAiOiJKV1QifQ")); // {"typ":"JWT"}
        assert!(!jwt_header_ok("eyJub3QganNvbg"));
    }

    #[test]
    fn placeholders_are_not_passwords() {
        for v in [
            "****",
            "<password>",
            "${DB_PASSWORD}",
            "{{ secret }}",
            "changeme",
            "%s",
        ] {
            assert!(placeholder(v), "{v}");
        }
        assert!(!placeholder("hunter2!"));
    }
}
