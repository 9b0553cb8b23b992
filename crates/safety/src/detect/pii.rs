//! PII rules: SSN, phone, e-mail, payment card, DoD ID, passport, IP addresses, street
//! addresses.
//!
//! Patterns use ASCII word boundaries (`(?-u:\b)`): the Unicode `\b` would push the regex crate
//! off its DFA onto a slower engine whenever the text is not ASCII.

use std::net::Ipv6Addr;
use std::ops::Range;
use std::sync::LazyLock;

use regex::{Regex, RegexSet};

use super::{Finding, Kind, compile, compile_set, context_has};

/// How far around a number the rules look for a context word, in bytes.
const CONTEXT_BYTES: usize = 48;

/// The compiled PII patterns.
struct Patterns {
    /// The numeric rules in one alternation: where it finds nothing, none of them can match.
    numeric: Regex,
    /// The same rules as a set, to tell which of them match in a region before running any.
    numeric_set: RegexSet,
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

/// SSN: three groups with the same separator (dash, space or none).
const SSN: &str = r"(?-u:\b)([0-9]{3})([- ]?)([0-9]{2})([- ]?)([0-9]{4})(?-u:\b)";
/// NANP: optional `+1 ` or `1-`, area code (optionally in parentheses), exchange, line; or `+1`
/// and ten bare digits. Some separator or the prefix is required (checked in code) so that bare
/// ten-digit numbers are not phones. Groups: 1 area in parentheses, 2 area, 3 first separator,
/// 4 exchange, 5 second separator, 6 line; 7–9 area, exchange and line of the bare form.
const NANP: &str = r"(?:\+1[ .\-]|(?-u:\b)1[ .\-])?(?:\(([0-9]{3})\)[ .\-]?|(?-u:\b)([0-9]{3})([ .\-]?))([0-9]{3})([ .\-]?)([0-9]{4})(?-u:\b)|\+1([0-9]{3})([0-9]{3})([0-9]{4})(?-u:\b)";
/// Payment card: 13 to 19 digits, optionally in groups separated by one space or dash.
const CARD: &str = r"(?-u:\b)[0-9](?:[ \-]?[0-9]){12,18}(?-u:\b)";
/// DoD ID (EDIPI) candidates: ten digits.
const TEN_DIGITS: &str = r"(?-u:\b)[0-9]{10}(?-u:\b)";
/// U.S. passport books and cards: nine digits, or one letter and eight digits.
const PASSPORT: &str = r"(?-u:\b)[A-Za-z]?[0-9]{8,9}(?-u:\b)";
/// IPv4 candidates: four dotted groups of one to three digits.
const IPV4: &str = r"(?-u:\b)([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})(?-u:\b)";
/// Street address: a number, an optional direction, one to four capitalized or ordinal words,
/// a street suffix and an optional quadrant. Words are bounded so that a match stays within
/// [`ADDRESS_REACH`] of its number.
const ADDRESS: &str = r"(?-u:\b)[0-9]{1,6}[A-Z]? (?:(?:[NSEW]|North|South|East|West)\.? )?(?:(?:[A-Z][A-Za-z'\-]{0,24}|[0-9]{1,3}(?:st|nd|rd|th))\.? ){1,4}(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Drive|Dr|Lane|Ln|Court|Ct|Place|Pl|Way|Terrace|Ter|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Square|Sq|Trail|Trl|Pike|Plaza)(?-u:\b)\.?(?: (?:NW|NE|SW|SE|N|S|E|W)(?-u:\b))?";

static PATTERNS: LazyLock<Patterns> = LazyLock::new(|| Patterns {
    numeric: compile(&[SSN, NANP, CARD, TEN_DIGITS, PASSPORT, IPV4, ADDRESS].join("|")),
    numeric_set: compile_set(&[SSN, NANP, CARD, TEN_DIGITS, PASSPORT, IPV4]),
    ssn: compile(SSN),
    nanp: compile(NANP),
    // International: + country code, then 6 to 14 more digits in groups.
    intl: compile(
        r"\+([2-9][0-9]{0,2})(?:[ .\-]?\(?[0-9]{1,4}\)?)(?:[ .\-]?[0-9]{2,5}){1,5}(?-u:\b)",
    ),
    email: compile(
        r"(?-u:\b)[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?-u:\b)",
    ),
    card: compile(CARD),
    ten_digits: compile(TEN_DIGITS),
    passport: compile(PASSPORT),
    ipv4: compile(IPV4),
    // Candidates only: the standard library's parser decides.
    ipv6: compile(
        r"(?:[0-9A-Fa-f]{1,4}|:)?:(?:[0-9A-Fa-f]{0,4}:){1,7}(?:[0-9A-Fa-f]{1,4}|(?:[0-9]{1,3}\.){3}[0-9]{1,3})?",
    ),
    address: compile(ADDRESS),
});

/// Runs the PII rules.
pub(super) fn detect(text: &str, out: &mut Vec<Finding>) {
    let p = &*PATTERNS;
    // The numeric rules run one by one only near the places where their union matched (see
    // `regions`): one pass over ordinary prose instead of seven.
    let hits: Vec<Range<usize>> = p.numeric.find_iter(text).map(|m| m.range()).collect();
    let addresses = regions(text, hits.iter().cloned(), 0, ADDRESS_REACH);
    // Per rule, the regions where it matches at all: one set search per region instead of a
    // search per rule.
    let mut per_rule: [Vec<Range<usize>>; 6] = Default::default();
    for r in regions(text, hits.into_iter(), 0, NUMBER_REACH) {
        for i in p
            .numeric_set
            .matches(text.get(r.clone()).unwrap_or(""))
            .iter()
        {
            if let Some(list) = per_rule.get_mut(i) {
                list.push(r.clone());
            }
        }
    }
    let [ssns, phones_, cards, tens, passports, ipv4s] = &per_rule;
    ssn(p, text, ssns, out);
    phones(p, text, phones_, out);
    for m in p.email.find_iter(text) {
        // `user:password@host` in a URL is a credential, not an address.
        if text.get(..m.start()).is_some_and(|b| b.ends_with(':')) {
            continue;
        }
        push(out, Kind::Email, m.start(), m.end(), 0.95);
    }
    for (s, e, m) in region_matches(&p.card, text, cards) {
        if is_card(m) && !glued(text, s, e) {
            push(out, Kind::PaymentCard, s, e, 0.95);
        }
    }
    for (s, e, _) in region_matches(&p.ten_digits, text, tens) {
        const WORDS: &[&str] = &[
            "edipi",
            "dod id",
            "dodid",
            "dod-id",
            "dod identification",
            "dod benefits number",
            "cac number",
        ];
        if !glued(text, s, e) && context_has(text, s, e, CONTEXT_BYTES, 0, WORDS) {
            push(out, Kind::DodId, s, e, 0.9);
        }
    }
    for (s, e, m) in region_matches(&p.passport, text, passports) {
        if (m.len() == 9 || m.as_bytes().first().is_some_and(u8::is_ascii_alphabetic))
            && !glued(text, s, e)
            && context_has(text, s, e, CONTEXT_BYTES, 0, &["passport"])
        {
            push(out, Kind::UsPassport, s, e, 0.85);
        }
    }
    ipv4(p, text, ipv4s, out);
    ipv6(
        p,
        text,
        &regions(text, colon_pairs(text), IPV6_REACH, IPV6_REACH),
        out,
    );
    for (s, e, _) in region_matches(&p.address, text, &addresses) {
        push(out, Kind::StreetAddress, s, e, 0.7);
    }
}

/// How far a street address reaches past the start of its number (four words of up to 25
/// letters, a direction, a suffix and a quadrant).
const ADDRESS_REACH: usize = 160;
/// How far every other numeric match reaches past its start (19 card digits and 6 separators;
/// `+1 (202) 456-1111` is 17 bytes).
const NUMBER_REACH: usize = 48;
/// How far an IPv6 address reaches on either side of one of its colons.
const IPV6_REACH: usize = 45;

/// Pairs of colons at most five bytes apart: an IPv6 address with three or more groups has one
/// (groups are at most four hex digits), while prose colons ("Notes: …") come alone.
fn colon_pairs(text: &str) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut colons = text.match_indices(':').map(|(i, _)| i).peekable();
    std::iter::from_fn(move || {
        loop {
            let i = colons.next()?;
            if let Some(&j) = colons.peek()
                && j - i <= 5
            {
                return Some(i..j + 1);
            }
        }
    })
}

/// Widens each span by `before` and `after` bytes, then to the nearest ASCII whitespace (or the
/// ends of the text) on each side, merging regions that meet.
///
/// INVARIANT: a region starts after whitespace (or at 0) and ends before whitespace (or at the
/// end), so `(?-u:\b)` sees the same neighbours at a region's edges as in the whole text (the
/// rules' other checks read the whole text). Spans come from a union of the rules (a rule can
/// match only where the union's leftmost-first search found a match starting at or before it,
/// within the same match), or from characters every match contains (IPv6 colons); with
/// `after` at least a rule's longest match, each rule finds in the regions exactly the matches
/// it finds in the whole text. A test compares both on the detector corpus.
fn regions(
    text: &str,
    spans: impl Iterator<Item = Range<usize>>,
    before: usize,
    after: usize,
) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let space = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_whitespace);
    let mut out: Vec<Range<usize>> = Vec::new();
    for span in spans {
        let floor = out.last().map_or(0, |r| r.end);
        let mut start = span.start.saturating_sub(before).max(floor);
        while start > floor && !space(start - 1) {
            start -= 1;
        }
        // Walk only past the previous region's end (already at a boundary): a long run without
        // whitespace is walked once, not once per span in it.
        let mut end = span.end.saturating_add(after).min(bytes.len());
        if end > floor {
            while end < bytes.len() && !space(end) {
                end += 1;
            }
        }
        match out.last_mut() {
            Some(last) if start <= last.end => last.end = last.end.max(end),
            _ => out.push(start..end),
        }
    }
    out
}

/// The matches of `re` in each region, as spans in the whole text and the matched text.
fn region_matches<'t>(
    re: &'t Regex,
    text: &'t str,
    regions: &'t [Range<usize>],
) -> impl Iterator<Item = (usize, usize, &'t str)> + 't {
    region_captures(re, text, regions).filter_map(|(base, c)| {
        c.get(0)
            .map(|m| (base + m.start(), base + m.end(), m.as_str()))
    })
}

/// The captures of `re` in each region, with the region's start to add to their offsets.
fn region_captures<'t>(
    re: &'t Regex,
    text: &'t str,
    regions: &'t [Range<usize>],
) -> impl Iterator<Item = (usize, regex::Captures<'t>)> + 't {
    regions.iter().flat_map(move |r| {
        let hay = text.get(r.clone()).unwrap_or("");
        re.captures_iter(hay).map(move |c| (r.start, c))
    })
}

/// SSNs: SSA validity rules; undashed nine-digit numbers only with a context word near.
fn ssn(p: &Patterns, text: &str, regions: &[Range<usize>], out: &mut Vec<Finding>) {
    for (base, c) in region_captures(&p.ssn, text, regions) {
        let (Some(m), Some(a), Some(s1), Some(g), Some(s2), Some(s)) =
            (c.get(0), c.get(1), c.get(2), c.get(3), c.get(4), c.get(5))
        else {
            continue;
        };
        let (ms, me) = (base + m.start(), base + m.end());
        if s1.as_str() != s2.as_str() || glued(text, ms, me) {
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
        } else if context_has(text, ms, me, CONTEXT_BYTES, CONTEXT_BYTES, WORDS) {
            0.85
        } else {
            continue;
        };
        push(out, Kind::UsSsn, ms, me, confidence);
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
fn phones(p: &Patterns, text: &str, regions: &[Range<usize>], out: &mut Vec<Finding>) {
    for (base, c) in region_captures(&p.nanp, text, regions) {
        let Some(m) = c.get(0) else { continue };
        let (ms, me) = (base + m.start(), base + m.end());
        let area = c.get(1).or_else(|| c.get(2)).or_else(|| c.get(7));
        let exchange = c.get(4).or_else(|| c.get(8));
        let line = c.get(6).or_else(|| c.get(9));
        let (Some(area), Some(exchange), Some(line)) = (area, exchange, line) else {
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
        if !formatted || glued(text, ms, me) {
            continue;
        }
        if nanp_valid(area.as_str(), exchange.as_str(), line.as_str()) {
            push(out, Kind::Phone, ms, me, 0.8);
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
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// IPv4 with octet validation, not inside a longer dotted number or after `v`/`version`.
fn ipv4(p: &Patterns, text: &str, regions: &[Range<usize>], out: &mut Vec<Finding>) {
    for (base, c) in region_captures(&p.ipv4, text, regions) {
        let Some(m) = c.get(0) else { continue };
        let (ms, me) = (base + m.start(), base + m.end());
        let octets_ok = (1..=4).all(|i| {
            c.get(i).is_some_and(|o| {
                let s = o.as_str();
                (s.len() == 1 || !s.starts_with('0')) && s.parse::<u16>().is_ok_and(|v| v <= 255)
            })
        });
        if !octets_ok {
            continue;
        }
        let before = text.get(..ms).unwrap_or("");
        let after = text.get(me..).unwrap_or("");
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
        push(out, Kind::Ipv4, ms, me, 0.75);
    }
}

/// IPv6 candidates that the standard parser accepts, with at least three groups.
fn ipv6(p: &Patterns, text: &str, regions: &[Range<usize>], out: &mut Vec<Finding>) {
    for (start, end, s) in region_matches(&p.ipv6, text, regions) {
        let groups = s.split(':').filter(|g| !g.is_empty()).count();
        if groups < 3 || s.parse::<Ipv6Addr>().is_err() {
            continue;
        }
        let before = text.get(..start).and_then(|b| b.chars().next_back());
        let after = text.get(end..).and_then(|a| a.chars().next());
        let word = |c: Option<char>| {
            c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '.')
        };
        if word(before) || word(after) {
            continue;
        }
        push(out, Kind::Ipv6, start, end, 0.8);
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
    fn rules_find_the_same_matches_in_regions_as_in_the_whole_text() {
        let corpus = [
            "SSN 536-22-8714 and 536 22 8714, call (202) 456-1111 or +1 202-456-1111, 2024-118-5532",
            "card 4111 1111 1111 1111 4111-1111-1111-1111 EDIPI 1234567890 passport A12345678 x912345678",
            "hosts 10.0.0.1, 256.1.1.1, 1.2.3.4.5 at 1600 Pennsylvania Avenue NW and 350 5th Ave.",
            "12345678901234567890123 1-2-3-4-5-6-7-8-9-0-1-2-3-4 ((((202) 456-1111)))) 1 1 1 1 1 1 1",
            "v1.2.3.4 1.2.3.4\n999 Main Street\n 2001:db8::1 fe80::1:2:3 12:30:45 ::ffff:10.0.0.1",
        ];
        let p = &*PATTERNS;
        for text in corpus {
            let hits: Vec<Range<usize>> = p.numeric.find_iter(text).map(|m| m.range()).collect();
            let numbers = regions(text, hits.iter().cloned(), 0, NUMBER_REACH);
            let addresses = regions(text, hits.into_iter(), 0, ADDRESS_REACH);
            let rules = [
                (&p.ssn, &numbers),
                (&p.nanp, &numbers),
                (&p.card, &numbers),
                (&p.ten_digits, &numbers),
                (&p.passport, &numbers),
                (&p.ipv4, &numbers),
                (&p.address, &addresses),
            ];
            for (re, regions) in rules {
                let whole: Vec<_> = re.find_iter(text).map(|m| m.range()).collect();
                let regional: Vec<_> = region_matches(re, text, regions)
                    .map(|(s, e, _)| s..e)
                    .collect();
                assert_eq!(whole, regional, "{re} in {text:?}");
            }
            let colons = regions(text, colon_pairs(text), IPV6_REACH, IPV6_REACH);
            // Whole-text candidates with fewer than three groups are dropped by the rule anyway.
            let whole: Vec<_> = p
                .ipv6
                .find_iter(text)
                .filter(|m| m.as_str().split(':').filter(|g| !g.is_empty()).count() >= 3)
                .map(|m| m.range())
                .collect();
            let regional: Vec<_> = region_matches(&p.ipv6, text, &colons)
                .filter(|(_, _, m)| m.split(':').filter(|g| !g.is_empty()).count() >= 3)
                .map(|(s, e, _)| s..e)
                .collect();
            assert_eq!(whole, regional, "ipv6 in {text:?}");
        }
    }

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
