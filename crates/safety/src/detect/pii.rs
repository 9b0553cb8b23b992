//! PII rules: SSN, phone, e-mail, payment card, DoD ID, passport, IP addresses, street
//! addresses.
//!
//! Patterns use ASCII word boundaries (`(?-u:\b)`): the Unicode `\b` would push the regex crate
//! off its DFA onto a slower engine whenever the text is not ASCII.

use std::net::Ipv6Addr;
use std::sync::LazyLock;

use regex::Regex;

use super::{Finding, Kind, compile, context_has};

/// How far around a number the rules look for a context word, in bytes.
const CONTEXT_BYTES: usize = 48;

/// The compiled PII patterns.
struct Patterns {
    ssn: Regex,
    nanp: Regex,
    intl: Regex,
    email: Regex,
    card: Regex,
    ten_digits: Regex,
    passport: Regex,
    ipv4: Regex,
    ipv6: Regex,
    address: Regex,
}

static PATTERNS: LazyLock<Patterns> = LazyLock::new(|| Patterns {
    // Three groups with the same separator (dash, space or none).
    ssn: compile(r"(?-u:\b)([0-9]{3})([- ]?)([0-9]{2})([- ]?)([0-9]{4})(?-u:\b)"),
    // NANP: optional +1, area code (optionally in parentheses), exchange, line; some separator
    // or the +1 prefix is required so that bare ten-digit numbers (DoD IDs, order numbers) are
    // not phones.
    nanp: compile(
        r"(?:\+1[ .\-]?|(?-u:\b)1[ .\-])?(?:\(([0-9]{3})\)[ .\-]?|([0-9]{3})([ .\-]?))([0-9]{3})([ .\-]?)([0-9]{4})(?-u:\b)",
    ),
    // International: + country code, then 6 to 14 more digits in groups.
    intl: compile(
        r"\+([2-9][0-9]{0,2})(?:[ .\-]?\(?[0-9]{1,4}\)?)(?:[ .\-]?[0-9]{2,5}){1,5}(?-u:\b)",
    ),
    email: compile(
        r"(?-u:\b)[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?-u:\b)",
    ),
    // 13 to 19 digits, optionally in groups separated by one space or dash.
    card: compile(r"(?-u:\b)[0-9](?:[ \-]?[0-9]){12,18}(?-u:\b)"),
    ten_digits: compile(r"(?-u:\b)[0-9]{10}(?-u:\b)"),
    // U.S. passport books and cards: nine digits, or one letter and eight digits.
    passport: compile(r"(?-u:\b)[A-Za-z]?[0-9]{8,9}(?-u:\b)"),
    ipv4: compile(r"(?-u:\b)([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})(?-u:\b)"),
    // Candidates only: the standard library's parser decides.
    ipv6: compile(
        r"(?:[0-9A-Fa-f]{1,4}|:)?:(?:[0-9A-Fa-f]{0,4}:){1,7}(?:[0-9A-Fa-f]{1,4}|(?:[0-9]{1,3}\.){3}[0-9]{1,3})?",
    ),
    address: compile(
        r"(?-u:\b)[0-9]{1,6}[A-Z]? (?:(?:[NSEW]|North|South|East|West)\.? )?(?:(?:[A-Z][A-Za-z'\-]*|[0-9]{1,3}(?:st|nd|rd|th))\.? ){1,4}(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Drive|Dr|Lane|Ln|Court|Ct|Place|Pl|Way|Terrace|Ter|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Square|Sq|Trail|Trl|Pike|Plaza)(?-u:\b)\.?(?: (?:NW|NE|SW|SE|N|S|E|W)(?-u:\b))?",
    ),
});

/// Runs the PII rules.
pub(super) fn detect(text: &str, out: &mut Vec<Finding>) {
    let p = &*PATTERNS;
    ssn(p, text, out);
    phones(p, text, out);
    for m in p.email.find_iter(text) {
        // `user:password@host` in a URL is a credential, not an address.
        if text.get(..m.start()).is_some_and(|b| b.ends_with(':')) {
            continue;
        }
        push(out, Kind::Email, m.start(), m.end(), 0.95);
    }
    for m in p.card.find_iter(text) {
        if is_card(m.as_str()) && !glued(text, m.start(), m.end()) {
            push(out, Kind::PaymentCard, m.start(), m.end(), 0.95);
        }
    }
    for m in p.ten_digits.find_iter(text) {
        const WORDS: &[&str] = &[
            "edipi",
            "dod id",
            "dodid",
            "dod-id",
            "dod identification",
            "dod benefits number",
            "cac number",
        ];
        if !glued(text, m.start(), m.end())
            && context_has(text, m.start(), m.end(), CONTEXT_BYTES, 0, WORDS)
        {
            push(out, Kind::DodId, m.start(), m.end(), 0.9);
        }
    }
    for m in p.passport.find_iter(text) {
        let s = m.as_str();
        if (s.len() == 9 || s.as_bytes().first().is_some_and(u8::is_ascii_alphabetic))
            && !glued(text, m.start(), m.end())
            && context_has(text, m.start(), m.end(), CONTEXT_BYTES, 0, &["passport"])
        {
            push(out, Kind::UsPassport, m.start(), m.end(), 0.85);
        }
    }
    ipv4(p, text, out);
    ipv6(p, text, out);
    for m in p.address.find_iter(text) {
        push(out, Kind::StreetAddress, m.start(), m.end(), 0.7);
    }
}

/// SSNs: SSA validity rules; undashed nine-digit numbers only with a context word near.
fn ssn(p: &Patterns, text: &str, out: &mut Vec<Finding>) {
    for c in p.ssn.captures_iter(text) {
        let (Some(m), Some(a), Some(s1), Some(g), Some(s2), Some(s)) =
            (c.get(0), c.get(1), c.get(2), c.get(3), c.get(4), c.get(5))
        else {
            continue;
        };
        if s1.as_str() != s2.as_str() || glued(text, m.start(), m.end()) {
            continue;
        }
        if !ssn_valid(a.as_str(), g.as_str(), s.as_str()) {
            continue;
        }
        const WORDS: &[&str] = &[
            "ssn",
            "social security",
            "soc sec",
            "ss#",
            "ss #",
            "taxpayer id",
            "tin",
        ];
        let confidence = if s1.as_str() == "-" {
            0.9
        } else if context_has(
            text,
            m.start(),
            m.end(),
            CONTEXT_BYTES,
            CONTEXT_BYTES,
            WORDS,
        ) {
            0.85
        } else {
            continue;
        };
        push(out, Kind::UsSsn, m.start(), m.end(), confidence);
    }
}

/// The SSA's rules: area not 000, 666 or 9xx; group not 00; serial not 0000; and not one of
/// the numbers known never to be valid (advertising and example numbers).
fn ssn_valid(area: &str, group: &str, serial: &str) -> bool {
    const INVALID: &[(&str, &str, &str)] = &[
        ("078", "05", "1120"),
        ("219", "09", "9999"),
        ("123", "45", "6789"),
    ];
    area != "000"
        && area != "666"
        && !area.starts_with('9')
        && group != "00"
        && serial != "0000"
        && !INVALID.contains(&(area, group, serial))
}

/// NANP and international phone numbers.
fn phones(p: &Patterns, text: &str, out: &mut Vec<Finding>) {
    for c in p.nanp.captures_iter(text) {
        let Some(m) = c.get(0) else { continue };
        let Some(area) = c.get(1).or_else(|| c.get(2)) else {
            continue;
        };
        let (Some(exchange), Some(line)) = (c.get(4), c.get(6)) else {
            continue;
        };
        let sep1 = c.get(3).map_or("", |s| s.as_str());
        let sep2 = c.get(5).map_or("", |s| s.as_str());
        let parenthesized = c.get(1).is_some();
        let prefixed = m.as_str().starts_with('+') || m.as_str().starts_with('1');
        // Unformatted digits need +1; otherwise the two separators must agree
        // (`202-555-0143`, `202.555.0143`, `(202) 555-0143`).
        let formatted = if parenthesized {
            !sep2.is_empty() || prefixed
        } else {
            sep1 == sep2 && (!sep1.is_empty() || prefixed)
        };
        // The pattern cannot say "no word character before the area code" after an optional
        // `+1`, so the boundary is checked here.
        let starts_word = m.as_str().starts_with(|c: char| c.is_ascii_digit())
            && text
                .get(..m.start())
                .and_then(|b| b.chars().next_back())
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
        if !formatted || starts_word || glued(text, m.start(), m.end()) {
            continue;
        }
        if nanp_valid(area.as_str(), exchange.as_str(), line.as_str()) {
            push(out, Kind::Phone, m.start(), m.end(), 0.8);
        }
    }
    for m in p.intl.find_iter(text) {
        let digits = m.as_str().bytes().filter(u8::is_ascii_digit).count();
        if (8..=15).contains(&digits) && !glued(text, m.start(), m.end()) {
            push(out, Kind::Phone, m.start(), m.end(), 0.75);
        }
    }
}

/// NANP rules: area and exchange start with 2–9 and are not service codes (`N11`); the area is
/// not `555`, and `555-01xx` is the range reserved for fiction.
fn nanp_valid(area: &str, exchange: &str, line: &str) -> bool {
    let ok = |code: &str| {
        let b = code.as_bytes();
        matches!(b.first(), Some(b'2'..=b'9'))
            && !(b.get(1) == Some(&b'1') && b.get(2) == Some(&b'1'))
    };
    ok(area) && ok(exchange) && area != "555" && !(exchange == "555" && line.starts_with("01"))
}

/// Whether `digits` (with spaces or dashes) is a payment card: Luhn, then an issuer prefix with
/// one of its lengths.
fn is_card(candidate: &str) -> bool {
    let digits: Vec<u8> = candidate
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    if !luhn(&digits) {
        return false;
    }
    let n = digits.len();
    let prefix = |k: usize| {
        digits
            .iter()
            .take(k)
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d))
    };
    let (p1, p2, p3, p4) = (prefix(1), prefix(2), prefix(3), prefix(4));
    match p1 {
        4 => matches!(n, 13 | 16 | 19),
        5 => (51..=55).contains(&p2) && n == 16,
        2 => (2221..=2720).contains(&p4) && n == 16,
        3 => {
            ((p2 == 34 || p2 == 37) && n == 15)
                || ((3528..=3589).contains(&p4) && (16..=19).contains(&n))
                || (((300..=305).contains(&p3) || p2 == 36 || p2 == 38 || p2 == 39)
                    && (14..=19).contains(&n))
        }
        6 => {
            (p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || p2 == 62)
                && (16..=19).contains(&n)
        }
        _ => false,
    }
}

/// The Luhn checksum.
fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    !digits.is_empty() && sum % 10 == 0
}

/// IPv4 with octet validation, not inside a longer dotted number or after `v`/`version`.
fn ipv4(p: &Patterns, text: &str, out: &mut Vec<Finding>) {
    for c in p.ipv4.captures_iter(text) {
        let Some(m) = c.get(0) else { continue };
        let octets_ok = (1..=4).all(|i| {
            c.get(i).is_some_and(|o| {
                let s = o.as_str();
                (s.len() == 1 || !s.starts_with('0')) && s.parse::<u16>().is_ok_and(|v| v <= 255)
            })
        });
        if !octets_ok {
            continue;
        }
        let before = text.get(..m.start()).unwrap_or("");
        let after = text.get(m.end()..).unwrap_or("");
        let dotted_before = before.ends_with('.') || before.ends_with('v') || before.ends_with('V');
        let dotted_after = after.len() > 1
            && after.starts_with('.')
            && after.as_bytes().get(1).is_some_and(u8::is_ascii_digit);
        let versioned = {
            let tail = before.len().saturating_sub(10);
            before
                .get(super::floor_boundary(before, tail)..)
                .is_some_and(|t| t.to_ascii_lowercase().contains("version"))
        };
        if dotted_before || dotted_after || versioned {
            continue;
        }
        push(out, Kind::Ipv4, m.start(), m.end(), 0.75);
    }
}

/// IPv6 candidates that the standard parser accepts, with at least three groups.
fn ipv6(p: &Patterns, text: &str, out: &mut Vec<Finding>) {
    for m in p.ipv6.find_iter(text) {
        let s = m.as_str();
        let groups = s.split(':').filter(|g| !g.is_empty()).count();
        if groups < 3 || s.parse::<Ipv6Addr>().is_err() {
            continue;
        }
        let before = text.get(..m.start()).and_then(|b| b.chars().next_back());
        let after = text.get(m.end()..).and_then(|a| a.chars().next());
        let word = |c: Option<char>| {
            c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '.')
        };
        if word(before) || word(after) {
            continue;
        }
        push(out, Kind::Ipv6, m.start(), m.end(), 0.8);
    }
}

/// Whether the number at `start..end` is glued to a neighbouring digit group by a separator
/// (`12-536-22-8714`, `536-22-8714-1`): then it is part of a longer identifier (an order number,
/// a part number), not the thing the rule looks for.
fn glued(text: &str, start: usize, end: usize) -> bool {
    let b = text.as_bytes();
    let digit_at = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let sep_at = |i: usize| {
        b.get(i)
            .is_some_and(|&c| c == b'-' || c == b'.' || c == b'/')
    };
    (start >= 2 && sep_at(start - 1) && digit_at(start - 2)) || (sep_at(end) && digit_at(end + 1))
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
    fn luhn_and_issuers() {
        assert!(is_card("4111 1111 1111 1111"));
        assert!(is_card("5500-0000-0000-0004"));
        assert!(is_card("378282246310005"));
        assert!(is_card("6011111111111117"));
        assert!(!is_card("4111 1111 1111 1112"));
        assert!(!is_card("0000 0000 0000 0000"));
        assert!(!is_card("1234567812345670"));
    }

    #[test]
    fn ssn_rules() {
        assert!(ssn_valid("536", "22", "8714"));
        for (a, g, s) in [
            ("000", "12", "3456"),
            ("666", "12", "3456"),
            ("912", "12", "3456"),
            ("536", "00", "8714"),
            ("536", "22", "0000"),
            ("078", "05", "1120"),
        ] {
            assert!(!ssn_valid(a, g, s), "{a}-{g}-{s}");
        }
    }

    #[test]
    fn nanp_rules() {
        assert!(nanp_valid("202", "456", "1111"));
        assert!(!nanp_valid("102", "456", "1111"));
        assert!(!nanp_valid("202", "156", "1111"));
        assert!(!nanp_valid("911", "456", "1111"));
        assert!(!nanp_valid("202", "411", "1111"));
        assert!(!nanp_valid("202", "555", "0143"));
        assert!(nanp_valid("202", "555", "1212"));
    }
}
