//! Markings disguised by spelling: letters spaced, dotted or hyphenated (`S E C R E T // N O F
//! O R N`, `S.E.C.R.E.T.//REL TO USA, GBR`, `S-E-C-R-E-T / / N-O-F-O-R-N`, also short
//! abbreviations next to a pair of slashes: `t.s.//s.i.`, `T-O-P S-E-C-R-E-T//T-K`) and digits
//! or signs for letters (`T0P 5ECRET//TK//N0F0RN`, `$ecret//n0forn`, `(5//NF)`), and other
//! separators for `//` between a classification and a control (`SECRET\\NOFORN`,
//! `SECRET||NOFORN`, `SECRET -- NOFORN`), and words of a marking split by a space next to a
//! pair of slashes (`SEC RET//NO FORN`). A word written out from a disguise is read in upper
//! case, as markings are written. It also gives the scanner portion marks and banner lines
//! written with one slash (`(S/NF)`), which are not disguises: those keep the placement the
//! marking they stand for would have. The scanner reads markings as they are written; this
//! module gives it, for the few lines that look spelled, the line as it would be written
//! undisguised, which the scanner then reads again.
//!
//! Cheap on ordinary text: only a line's first bytes and the bytes around its slashes,
//! backslashes, dashes, bars and tildes are read, and a line is rewritten only when they hold
//! a run of [`MIN_SINGLES`] one-character words in a row, next to a slash a word that mixes
//! letters with the digits that stand for them or a short dotted abbreviation, or a
//! classification and a control on either side of the separator.
//! Lines longer than [`MAX_LINE_BYTES`] are left alone, so the extra work is linear in the
//! text.

use std::ops::Range;

/// One-character words in a row that make a line look spelled out (`S E C R E T` has six;
/// `a, b, c` in prose has three).
const MIN_SINGLES: usize = 4;

/// The longest line read for a spelled marking, in bytes.
const MAX_LINE_BYTES: usize = 4096;

/// Separators between the letters of a spelled word: [`is_separator_byte`]'s, and the
/// middle dot and the bullet.
fn is_letter_separator(c: char) -> bool {
    u8::try_from(c).is_ok_and(is_separator_byte) || matches!(c, '·' | '\u{2022}')
}

/// The lines of `text` that look spelled out, each with its byte range (without the line
/// end) and the line rewritten undisguised. A line whose rewriting changes nothing is left
/// out.
pub(crate) fn rewritten_lines(text: &str) -> Vec<(Range<usize>, String, bool)> {
    let bytes = text.as_bytes();
    // Candidate lines by their starts: lines that start spelled, and lines with a spelled or
    // disguised word at a pair of slashes. Each found with memchr; nothing else is read.
    let mut starts = Vec::new();
    let mut at = 0;
    loop {
        if starts_spelled(bytes.get(at..).unwrap_or_default()) {
            starts.push(at);
        }
        match memchr::memchr(b'\n', bytes.get(at..).unwrap_or_default()) {
            Some(i) => at += i + 1,
            None => break,
        }
    }
    let line_of =
        |p: usize| memchr::memrchr(b'\n', bytes.get(..p).unwrap_or_default()).map_or(0, |i| i + 1);
    // Slashes, backslashes and dashes in one pass: a spelled or disguised word at a pair of
    // slashes, a portion mark with one slash, and separators other than slashes between a
    // classification and a control (`SECRET\\NOFORN`, `SECRET -- NOFORN`, ` - `; a dash inside
    // a word, `S-1234`, is passed over on its neighbours).
    for p in memchr::memchr3_iter(b'/', b'\\', b'-', bytes) {
        let hit = match bytes.get(p) {
            Some(b'/') => spelled_at_slashes(bytes, p) || single_slash_portion(bytes, p),
            Some(b'\\') => alt_separator_at(bytes, p),
            _ => {
                let spaced =
                    p > 0 && bytes.get(p - 1) == Some(&b' ') && bytes.get(p + 1) == Some(&b' ');
                let doubled =
                    bytes.get(p + 1) == Some(&b'-') && (p == 0 || bytes.get(p - 1) != Some(&b'-'));
                (spaced || doubled) && alt_separator_at(bytes, if spaced { p - 1 } else { p })
            }
        };
        if hit {
            starts.push(line_of(p));
        }
    }
    // `SECRET||NOFORN`, `SECRET ~ NOFORN`.
    for p in memchr::memchr2_iter(b'|', b'~', bytes) {
        if alt_separator_at(bytes, p) {
            starts.push(line_of(p));
        }
    }
    starts.sort_unstable();
    starts.dedup();
    let mut out = Vec::new();
    for start in starts {
        let end = memchr::memchr(b'\n', bytes.get(start..).unwrap_or_default())
            .map_or(bytes.len(), |i| start + i);
        let end = if bytes.get(end.wrapping_sub(1)) == Some(&b'\r') && end > start {
            end - 1
        } else {
            end
        };
        let Some(body) = text.get(start..end) else {
            continue;
        };
        if body.len() > MAX_LINE_BYTES {
            continue;
        }
        let rewritten = normalize_slashes(&alt_separators(&join_split_words(&unleet(
            &join_singles(body),
        ))));
        let portions = single_slash_portions(&rewritten);
        if rewritten != body {
            out.push((start..end, portions, true));
        } else if portions != body {
            // Only `(S/NF)` for `(S//NF)`: a common way of writing a portion mark, not a
            // disguise, so it is placed as the marking it stands for would be.
            out.push((start..end, portions, false));
        }
    }
    out
}

/// The classification spelled out by a disguise of `original` that `rewritten` (its line as
/// written out) shows as a word and `original` does not (`s e c r e t the plan` → `SECRET`):
/// a classification spelled to hide it marks its line even where a bare word would not.
pub(crate) fn spelled_classification(original: &str, rewritten: &str) -> Option<&'static str> {
    const LEVELS: [(&str, &str); 4] = [
        ("TOPSECRET", "TOP SECRET"),
        ("TOP SECRET", "TOP SECRET"),
        ("SECRET", "SECRET"),
        ("CONFIDENTIAL", "CONFIDENTIAL"),
    ];
    let plain = original.to_ascii_uppercase();
    let is_word = |text: &str, word: &str| {
        text.match_indices(word).any(|(at, _)| {
            let before = text.get(..at).and_then(|b| b.chars().next_back());
            let after = text.get(at + word.len()..).and_then(|a| a.chars().next());
            !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
        })
    };
    LEVELS
        .iter()
        .find(|(word, _)| is_word(rewritten, word) && !plain.contains(word))
        .map(|&(_, level)| level)
}

/// Words of a marking that a disguise may split with a space (`SEC RET`, `NO FORN`).
const SPLIT_WORDS: [&str; 6] = [
    "SECRET",
    "CONFIDENTIAL",
    "NOFORN",
    "ORCON",
    "PROPIN",
    "RELIDO",
];

/// Whether `a` and `b`, letters only, are one word of [`SPLIT_WORDS`] split in two.
fn splits_a_word(a: &[u8], b: &[u8]) -> bool {
    let letters = |w: &[u8]| !w.is_empty() && w.iter().all(u8::is_ascii_alphabetic);
    letters(a)
        && letters(b)
        && SPLIT_WORDS.iter().any(|w| {
            let w = w.as_bytes();
            w.len() == a.len() + b.len()
                && w.get(..a.len()).is_some_and(|h| h.eq_ignore_ascii_case(a))
                && w.get(a.len()..).is_some_and(|t| t.eq_ignore_ascii_case(b))
        })
}

/// Whether the two words that end `bytes` (`before`, the bytes before a pair of slashes) or
/// start them (the bytes after it) are one word of a marking split by a space: `SEC RET//`,
/// `//NO FORN`.
fn split_word(bytes: &[u8], before: bool) -> bool {
    if before {
        let end = bytes.iter().rposition(|b| *b != b' ').map_or(0, |i| i + 1);
        let head = bytes.get(..end).unwrap_or_default();
        let mut words = head.rsplit(|b| *b == b' ');
        match (words.next(), words.next()) {
            (Some(b), Some(a)) => splits_a_word(a, b),
            _ => false,
        }
    } else {
        let start = bytes
            .iter()
            .position(|b| *b != b' ' && *b != b'/')
            .unwrap_or(bytes.len());
        let tail = bytes.get(start..).unwrap_or_default();
        let mut words = tail.split(|b| *b == b' ');
        match (words.next(), words.next()) {
            (Some(a), Some(b)) => {
                let end = b
                    .iter()
                    .position(|c| !c.is_ascii_alphabetic())
                    .unwrap_or(b.len());
                splits_a_word(a, b.get(..end).unwrap_or_default())
            }
            _ => false,
        }
    }
}

/// `line` with each word of a marking that a space splits, next to a pair of slashes, joined
/// again in upper case: `SEC RET//NO FORN` → `SECRET//NOFORN`.
fn join_split_words(line: &str) -> String {
    if !line.contains("//") {
        return line.to_owned();
    }
    // Twice: a word that ends one split (`RET//NO`) may begin the next (`NO FORN`).
    join_split_pass(&join_split_pass(line))
}

/// One pass of [`join_split_words`]: each pair of words is looked at once.
fn join_split_pass(line: &str) -> String {
    let words: Vec<&str> = line.split(' ').collect();
    let mut out: Vec<String> = Vec::with_capacity(words.len());
    let mut i = 0;
    while let Some(&a) = words.get(i) {
        if let Some(&b) = words.get(i + 1) {
            // `SEC RET//…`: the second half carries the slashes; `…//NO FORN`: the first.
            let a_word = a.rsplit("//").next().unwrap_or_default();
            let b_word = b.split("//").next().unwrap_or_default();
            let b_end = b_word
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(b_word.len());
            let b_core = b_word.get(..b_end).unwrap_or_default();
            if (a.contains("//") || b.contains("//"))
                && splits_a_word(a_word.as_bytes(), b_core.as_bytes())
            {
                let a_head = a.get(..a.len() - a_word.len()).unwrap_or_default();
                let b_tail = b.get(b_core.len()..).unwrap_or_default();
                out.push(format!(
                    "{a_head}{}{}{b_tail}",
                    a_word.to_ascii_uppercase(),
                    b_core.to_ascii_uppercase()
                ));
                i += 2;
                continue;
            }
        }
        out.push(a.to_owned());
        i += 1;
    }
    out.join(" ")
}

/// Classifications that may stand before a control (`S`, `SECRET`, …).
const LEVEL_WORDS: [&str; 9] = [
    "U",
    "C",
    "S",
    "TS",
    "R",
    "UNCLASSIFIED",
    "CONFIDENTIAL",
    "SECRET",
    "CUI",
];

/// Controls that may follow a classification or another control in a banner or portion mark.
const CONTROL_WORDS: [&str; 30] = [
    "NOFORN", "NF", "ORCON", "OC", "IMCON", "IMC", "PROPIN", "PR", "RELIDO", "REL", "FOUO", "FISA",
    "LES", "SBU", "SI", "TK", "HCS", "SCI", "SAR", "RD", "FRD", "CNWDI", "FGI", "RSEN", "EXDIS",
    "NODIS", "LIMDIS", "DSEN", "SP", "DISPLAY",
];

/// The upper-case word of ASCII letters that ends `bytes`, past spaces.
fn word_before(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().rposition(|b| *b != b' ').map_or(0, |i| i + 1);
    let head = bytes.get(..end).unwrap_or_default();
    let start = head
        .iter()
        .rposition(|b| !b.is_ascii_alphabetic())
        .map_or(0, |i| i + 1);
    head.get(start..).unwrap_or_default()
}

/// The upper-case word of ASCII letters that starts `bytes`, past spaces.
fn word_after(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != b' ').unwrap_or(bytes.len());
    let tail = bytes.get(start..).unwrap_or_default();
    let end = tail
        .iter()
        .position(|b| !b.is_ascii_alphabetic())
        .unwrap_or(tail.len());
    tail.get(..end).unwrap_or_default()
}

/// Whether `word` is in `list` (words are upper case there; `word` must be too).
fn is_word_in(word: &[u8], list: &[&str]) -> bool {
    list.iter().any(|w| w.as_bytes() == word)
}

/// Whether the separator at `p` (a backslash, a bar, a tilde, or the start of ` - ` or `--`)
/// stands between a classification or control and a control, in upper case: `SECRET\\NOFORN`,
/// `S||NF`, `SECRET -- NOFORN`. Nobody writes a marking so but to hide it.
fn alt_separator_at(bytes: &[u8], p: usize) -> bool {
    let before = bytes.get(p.saturating_sub(16)..p).unwrap_or_default();
    // Most hits fail here: a classification or control ends in an upper-case letter.
    if !before
        .iter()
        .rfind(|b| **b != b' ')
        .is_some_and(u8::is_ascii_uppercase)
    {
        return false;
    }
    let rest = bytes.get(p..).unwrap_or_default();
    let sep = separator_run(rest);
    if sep == 0 {
        return false;
    }
    let after = rest.get(sep..).unwrap_or_default();
    let left = word_before(before);
    let right = word_after(after.get(..after.len().min(16)).unwrap_or_default());
    // A classification starts the chain; a control continues one that a `//` already began
    // (`SECRET//SI\\NOFORN`).
    let chained = || is_word_in(left, &CONTROL_WORDS) && before.windows(2).any(|w| w == b"//");
    is_word_in(right, &CONTROL_WORDS) && (is_word_in(left, &LEVEL_WORDS) || chained())
}

/// The length of the separator run that starts `bytes` — backslashes, bars, tildes, dashes and
/// spaces, at most six bytes — if it is one that stands for `//`: it holds a backslash, a
/// tilde, two bars or two dashes, or is a dash between spaces. A single bar (a table's cell
/// border) or a single dash in a word is not one.
fn separator_run(bytes: &[u8]) -> usize {
    let run = bytes
        .iter()
        .take(6)
        .take_while(|b| matches!(b, b'\\' | b'|' | b'~' | b'-' | b' '))
        .count();
    let r = bytes.get(..run).unwrap_or_default();
    let count = |c: u8| r.iter().filter(|b| **b == c).count();
    let stands = count(b'\\') > 0
        || count(b'~') > 0
        || count(b'|') >= 2
        || count(b'-') >= 2
        || (count(b'-') == 1 && r.first() == Some(&b' ') && r.last() == Some(&b' '));
    if stands && count(b'|') != 1 { run } else { 0 }
}

/// `line` with each run of other separators between a classification or control and a control
/// written as `//` (see [`alt_separator_at`]).
fn alt_separators(line: &str) -> String {
    let bytes = line.as_bytes();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes.get(i).copied().unwrap_or_default();
        let rest = bytes.get(i..).unwrap_or_default();
        let run = if matches!(b, b'\\' | b'|' | b'~' | b'-' | b' ') {
            separator_run(rest)
        } else {
            0
        };
        // What is written so far is the line up to `i`, with earlier separators already
        // replaced: a chain (`SECRET\\SI\\NOFORN`) reads its `//` there.
        // `alt_separator_at` reads 16 bytes before the separator and a run and a word after
        // it: a window of that much is enough, and keeps a line of separators linear.
        let replace = run > 0 && {
            let written = out.as_bytes();
            let mut probe: Vec<u8> = written
                .get(written.len().saturating_sub(16)..)
                .unwrap_or_default()
                .to_vec();
            let at = probe.len();
            probe.extend_from_slice(rest.get(..rest.len().min(24)).unwrap_or_default());
            alt_separator_at(&probe, at)
        };
        if replace {
            while out.ends_with(' ') {
                out.pop();
            }
            out.push_str("//");
            i += run;
            continue;
        }
        match line.get(i..).and_then(|r| r.chars().next()) {
            Some(c) => {
                out.push(c);
                i += c.len_utf8();
            }
            None => break,
        }
    }
    out
}

/// Whether the slash at `p` is the single slash of a portion mark in parentheses, or of a
/// banner line whose classification is spelled out, between the classification and a
/// control: `(S/NF)`, `(TS/SI/NF)`, `(U/FOUO)`, `SECRET/NOFORN` at a line's start.
fn single_slash_portion(bytes: &[u8], p: usize) -> bool {
    // Most slashes (URLs, dates, `and/or`) fail here, on their two neighbours.
    let upper = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_uppercase);
    if p == 0 || !upper(p - 1) || !upper(p + 1) {
        return false;
    }
    let before = bytes.get(p.saturating_sub(14)..p).unwrap_or_default();
    let left = word_before(before);
    let opens =
        before.len() > left.len() && before.get(before.len() - left.len() - 1) == Some(&b'(');
    // A spelled-out classification that opens its line needs no parentheses (`SECRET/NOFORN`
    // as a banner line); an abbreviation does, as `TS/SCI` in prose names a clearance, and in a
    // sentence a banner with one slash is talked about (`wrote SECRET/NOFORN with one slash`).
    let banner = is_word_in(left, &["SECRET", "CONFIDENTIAL", "UNCLASSIFIED"]) && {
        let word_start = p.saturating_sub(left.len());
        let head = bytes.get(..word_start).unwrap_or_default();
        let head = head.strip_suffix(b"TOP ").unwrap_or(head);
        let line =
            memchr::memrchr(b'\n', head).map_or(head, |i| head.get(i + 1..).unwrap_or_default());
        line.iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'-' | b'*' | b'>' | b'#' | b'"' | b'\''))
    };
    (opens || banner)
        && is_word_in(left, &LEVEL_WORDS)
        && is_word_in(
            word_after(
                bytes
                    .get(p + 1..(p + 17).min(bytes.len()))
                    .unwrap_or_default(),
            ),
            &CONTROL_WORDS,
        )
}

/// `line` with the single slashes of portion marks in parentheses doubled: `(S/NF)` →
/// `(S//NF)`, `(TS/SI/NF)` → `(TS//SI//NF)`.
fn single_slash_portions(line: &str) -> String {
    let bytes = line.as_bytes();
    let mut out = String::with_capacity(line.len() + 4);
    let mut in_portion = false;
    for (i, c) in line.char_indices() {
        if c == '(' || c.is_whitespace() {
            // A portion ends at its `)`, a banner at white space.
            in_portion = false;
        }
        if c == '/' {
            let single =
                bytes.get(i + 1) != Some(&b'/') && (i == 0 || bytes.get(i - 1) != Some(&b'/'));
            if single && (in_portion || single_slash_portion(bytes, i)) {
                in_portion = true;
                out.push_str("//");
                continue;
            }
        }
        if c == ')' {
            in_portion = false;
        }
        out.push(c);
    }
    out
}

/// Whether the line at the start of `bytes` starts with a spelled word, after white space
/// and bullets (`T O P S E C R E T`, `- s e c r e t`). Most lines fail at their second or
/// fourth byte.
fn starts_spelled(bytes: &[u8]) -> bool {
    let lead = bytes
        .iter()
        .take(8)
        .take_while(|b| matches!(b, b' ' | b'\t' | b'-' | b'*' | b'>' | b'#'))
        .count();
    let b = bytes.get(lead..).unwrap_or_default();
    let quick = b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.get(1).is_some_and(|c| is_separator_byte(*c))
        && b.get(2).is_some_and(u8::is_ascii_alphanumeric)
        && !b.get(3).is_some_and(u8::is_ascii_alphanumeric);
    quick && has_single_run(line_prefix(b))
}

/// The first [`WINDOW_BYTES`] of `bytes`, up to the line end.
fn line_prefix(bytes: &[u8]) -> &[u8] {
    let b = bytes.get(..WINDOW_BYTES).unwrap_or(bytes);
    memchr::memchr(b'\n', b).map_or(b, |i| b.get(..i).unwrap_or_default())
}

/// Whether a byte separates the letters of a spelled word.
fn is_separator_byte(b: u8) -> bool {
    matches!(b, b' ' | b'.' | b'-' | b'_' | b'*')
}

/// Whether the slash at `p` starts a pair (`//`, `/ /`) with a spelled run ending before it
/// (`S E C R E T //`, `S.E.C.R.E.T.//`) or a word disguised with digits next to it
/// (`5ECRET//`, `//N0F0RN`). A URL's `https://` is rejected on its last letters.
fn spelled_at_slashes(bytes: &[u8], p: usize) -> bool {
    // A URL's scheme (`https://`): the commonest pair of slashes in prose.
    if p > 0 && bytes.get(p - 1) == Some(&b':') {
        return false;
    }
    let after = bytes.get(p + 1..).unwrap_or_default();
    let Some(second) = after.iter().take(4).position(|b| *b != b' ') else {
        return false;
    };
    if after.get(second) != Some(&b'/') {
        return false;
    }
    let before = bytes
        .get(p.saturating_sub(WINDOW_BYTES)..p)
        .unwrap_or_default();
    let before =
        memchr::memrchr(b'\n', before).map_or(before, |i| before.get(i + 1..).unwrap_or_default());
    let after = line_prefix(after.get(second + 1..).unwrap_or_default());
    // `SECRET/ /NOFORN`: a space between the slashes, after a classification or control.
    let spaced = second > 0 && {
        let left = word_before(before);
        is_word_in(left, &LEVEL_WORDS) || is_word_in(left, &CONTROL_WORDS)
    };
    spaced
        || split_word(before, true)
        || split_word(after, false)
        || (ends_in_single(before) && has_single_run(before))
        || short_run_before(before)
        || short_run_after(after)
        || leet_word_before(before)
        || leet_word_after(after)
        || leet_level_before(before)
}

/// Whether `bytes` end, past dots and hyphens, in two one-character words joined by a dot or
/// a hyphen (`t.s.`, `(T.S.`, `T-K`): an abbreviation spelled out next to a pair of slashes.
fn short_run_before(bytes: &[u8]) -> bool {
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b'.' | b'-'))
        .map_or(0, |i| i + 1);
    match bytes.get(..end).unwrap_or_default() {
        [.., x, b'.' | b'-', y] if x.is_ascii_alphanumeric() && y.is_ascii_alphanumeric() => {
            let head = end.saturating_sub(3);
            !head_is_word(bytes, head)
        }
        _ => false,
    }
}

/// Whether a byte continues a word: a letter, a digit or the byte of a non-ASCII character.
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80
}

/// Whether the byte before `at` continues a word (so what starts at `at` is not a word's
/// start).
fn head_is_word(bytes: &[u8], at: usize) -> bool {
    at > 0 && bytes.get(at - 1).is_some_and(|b| is_word_byte(*b))
}

/// Whether `bytes` (after a pair of slashes) start with two one-character words joined by a
/// dot or a hyphen (`s.i.`, `T-K:`).
fn short_run_after(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|b| *b != b' ' && *b != b'/')
        .unwrap_or(bytes.len());
    match bytes.get(start..).unwrap_or_default() {
        [x, b'.' | b'-', y, rest @ ..] => {
            x.is_ascii_alphanumeric()
                && y.is_ascii_alphanumeric()
                && !rest.first().is_some_and(|b| is_word_byte(*b))
        }
        _ => false,
    }
}

/// Whether `bytes` end in `(` and one or two digits that stand for the letters of a
/// classification (`(5`, `(75`): `(5//NF)` is `(S//NF)`.
fn leet_level_before(bytes: &[u8]) -> bool {
    bytes.iter().rposition(|b| *b == b'(').is_some_and(|open| {
        let word = bytes.get(open + 1..).unwrap_or_default();
        word.len() <= 2 && leet_level(word)
    })
}

/// Whether `word` is made of digits or signs that spell a classification's portion letters:
/// `5` (`S`) or `75` (`TS`).
fn leet_level(word: &[u8]) -> bool {
    let mut letters = word.iter().map(|b| leet_letter(*b));
    matches!(
        (letters.next(), letters.next(), letters.next()),
        (Some(Some('S')), None, _) | (Some(Some('T')), Some(Some('S')), None)
    )
}

/// How far before a pair of slashes, or into its line, a spelled word is looked for.
const WINDOW_BYTES: usize = 24;

/// Whether the last word of `bytes`, past white space and letter separators, is one
/// character: where a spelled run that reaches a slash must end (`S E C R E T //`,
/// `S.E.C.R.E.T.//`), and what a URL's `https://` is not.
fn ends_in_single(bytes: &[u8]) -> bool {
    let end = bytes
        .iter()
        .rposition(|b| !is_separator_byte(*b))
        .map_or(0, |i| i + 1);
    let head = bytes.get(..end).unwrap_or_default();
    let word = head
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_alphanumeric() || **b >= 0x80)
        .count();
    word == 1
}

/// Whether `bytes` hold [`MIN_SINGLES`] one-character words in a row (a byte of a non-ASCII
/// character counts as a letter, so such a character is never a one-character word).
fn has_single_run(bytes: &[u8]) -> bool {
    let mut singles = 0;
    let mut word = 0;
    for &b in bytes.iter().chain(std::iter::once(&b' ')) {
        if b.is_ascii_alphanumeric() || b >= 0x80 {
            word += 1;
            continue;
        }
        match word {
            0 => {}
            1 => {
                singles += 1;
                if singles >= MIN_SINGLES {
                    return true;
                }
            }
            _ => singles = 0,
        }
        word = 0;
    }
    false
}

/// Whether `b` may stand in a disguised word: a letter, a digit or a sign that stands for a
/// letter (`$`, `@`).
fn is_leet_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'$' | b'@')
}

/// Whether the word that ends `bytes` (past white space) is disguised with digits or signs.
fn leet_word_before(bytes: &[u8]) -> bool {
    if !bytes.iter().any(|b| leet_letter(*b).is_some()) {
        return false;
    }
    let end = bytes.iter().rposition(|b| *b != b' ').map_or(0, |i| i + 1);
    let head = bytes.get(..end).unwrap_or_default();
    let start = head
        .iter()
        .rposition(|b| !is_leet_byte(*b))
        .map_or(0, |i| i + 1);
    head.get(start..)
        .and_then(|w| std::str::from_utf8(w).ok())
        .is_some_and(is_leet_word)
}

/// Whether the word that starts `bytes` (past white space and slashes) is disguised with
/// digits.
fn leet_word_after(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|b| *b != b' ' && *b != b'/')
        .unwrap_or(bytes.len());
    let tail = bytes.get(start..).unwrap_or_default();
    let end = tail
        .iter()
        .position(|b| !is_leet_byte(*b))
        .unwrap_or(tail.len());
    tail.get(..end)
        .and_then(|w| std::str::from_utf8(w).ok())
        .is_some_and(is_leet_word)
}

/// A word of ASCII letters and at least one digit or sign that stands for a letter (`5ECRET`,
/// `N0F0RN`, `$ecret`): never a plain number, never a word with other digits (`x86`, `2FA`
/// keep theirs).
fn is_leet_word(word: &str) -> bool {
    let letters = word.bytes().filter(u8::is_ascii_alphabetic).count();
    let leet = word.bytes().filter(|b| leet_letter(*b).is_some()).count();
    letters >= 2 && leet >= 1 && letters + leet == word.len()
}

/// The letter a digit stands for in a disguised word.
fn leet_letter(b: u8) -> Option<char> {
    match b {
        b'0' => Some('O'),
        b'1' => Some('I'),
        b'3' => Some('E'),
        b'4' => Some('A'),
        b'5' => Some('S'),
        b'7' => Some('T'),
        b'8' => Some('B'),
        b'$' => Some('S'),
        b'@' => Some('A'),
        _ => None,
    }
}

/// `line` with each run of [`MIN_SINGLES`] or more one-character words, separated by one
/// letter separator each (the same one throughout the run), or on a line with a pair of
/// slashes of two or more joined by dots or hyphens, joined into one upper-case word: `S E C R E T` → `SECRET`, `S.E.C.R.E.T.` →
/// `SECRET`, `t.s.` → `TS`. What follows the run is kept as it was.
fn join_singles(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    // Short runs are abbreviated markings only on a line with a pair of slashes (`e.g.` in
    // prose stays as it is).
    let short = line.contains("//") || line.contains("/ /");
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        if let Some((end, word)) = single_run(&chars, i, short) {
            out.push_str(&word);
            i = end;
        } else {
            out.extend(chars.get(i));
            i += 1;
        }
    }
    out
}

/// The run of one-character words starting at `i`, if there is one of [`MIN_SINGLES`] or
/// more that starts a word (with `short`, two or more joined by dots or hyphens): where it
/// ends (past a trailing separator that is not a space) and its letters in upper case.
fn single_run(chars: &[char], i: usize, short: bool) -> Option<(usize, String)> {
    let starts_word = i == 0 || chars.get(i - 1).is_some_and(|c| !c.is_alphanumeric());
    if !starts_word {
        return None;
    }
    let mut letters = String::new();
    let mut sep: Option<char> = None;
    let mut j = i;
    loop {
        let c = *chars.get(j).filter(|c| c.is_alphanumeric())?;
        // One character, then a separator or the end: a one-character word.
        let next = chars.get(j + 1).copied();
        if next.is_some_and(char::is_alphanumeric) {
            break;
        }
        letters.push(c);
        j += 1;
        match next {
            Some(s) if is_letter_separator(s) && sep.is_none_or(|t| t == s) => {
                // Another one-character word follows: the run goes on.
                let single_next = chars.get(j + 1).is_some_and(|c| c.is_alphanumeric())
                    && !chars.get(j + 2).is_some_and(|c| c.is_alphanumeric());
                if single_next {
                    sep = Some(s);
                    j += 1;
                    continue;
                }
                // A separator that ends the run: keep a space, drop a dot or a hyphen.
                if s != ' ' {
                    j += 1;
                }
                break;
            }
            _ => break,
        }
    }
    // Dots and hyphens join even two letters (`t.s.`, `T-K`): a space-separated run needs
    // more, as prose has `a b c`.
    let least = if short && matches!(sep, Some('.' | '-')) {
        2
    } else {
        MIN_SINGLES
    };
    if letters.chars().count() < least {
        return None;
    }
    Some((j, letters.to_uppercase()))
}

/// `line` with the digits and signs of each disguised word read as the letters they stand for,
/// in upper case (`T0P 5ECRET` → `TOP SECRET`, `$ecret//n0forn` → `SECRET//NOFORN`), and a
/// classification written in digits between `(` and `//` read as its letters (`(5//NF)` →
/// `(S//NF)`).
fn unleet(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String, next: &str| {
        let level = out.ends_with('(')
            && next
                .strip_prefix("//")
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_alphabetic()))
            && leet_level(word.as_bytes());
        if level || is_leet_word(word) {
            out.extend(
                word.bytes()
                    .map(|b| leet_letter(b).unwrap_or_else(|| char::from(b).to_ascii_uppercase())),
            );
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for (i, c) in line.char_indices() {
        let sign_in_word = matches!(c, '$' | '@')
            && (!word.is_empty()
                || line
                    .get(i + 1..)
                    .is_some_and(|r| r.starts_with(|n: char| n.is_ascii_alphabetic())));
        if c.is_ascii_alphanumeric() || sign_in_word {
            word.push(c);
        } else {
            flush(&mut word, &mut out, line.get(i..).unwrap_or_default());
            out.push(c);
        }
    }
    flush(&mut word, &mut out, "");
    out
}

/// `line` with the white space inside and around each pair of slashes removed: `SECRET / /
/// NOFORN` → `SECRET//NOFORN`.
fn normalize_slashes(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        if chars.get(i) == Some(&'/') {
            let mut j = i + 1;
            while chars.get(j).is_some_and(|c| *c == ' ') {
                j += 1;
            }
            if chars.get(j) == Some(&'/') {
                while out.ends_with(' ') {
                    out.pop();
                }
                out.push_str("//");
                i = j + 1;
                while chars.get(i).is_some_and(|c| *c == ' ') {
                    i += 1;
                }
                continue;
            }
        }
        out.extend(chars.get(i));
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(line: &str) -> Option<String> {
        rewritten_lines(line).pop().map(|(_, s, _)| s)
    }

    #[test]
    fn spelled_markings_are_written_out() {
        for (spelled, plain) in [
            ("S E C R E T // N O F O R N", "SECRET//NOFORN"),
            ("S.E.C.R.E.T.//REL TO USA, GBR", "SECRET//REL TO USA, GBR"),
            (
                "S-E-C-R-E-T / / N-O-F-O-R-N: the informant",
                "SECRET//NOFORN: the informant",
            ),
            ("T0P 5ECRET//TK//N0F0RN", "TOP SECRET//TK//NOFORN"),
            ("t o p s e c r e t", "TOPSECRET"),
            ("t.s.//s.i. - relay 12", "TS//SI - relay 12"),
            ("(T.S.//S.I.) The source", "(TS//SI) The source"),
            ("T-O-P S-E-C-R-E-T//T-K: two", "TOP SECRET//TK: two"),
            ("$ecret//n0forn - the tunnel", "SECRET//NOFORN - the tunnel"),
            ("(5//NF) pump station 3", "(S//NF) pump station 3"),
            ("(75//SI) relay", "(TS//SI) relay"),
            ("SEC RET//NOFORN the pier", "SECRET//NOFORN the pier"),
            ("SECRET//NO FORN the pier", "SECRET//NOFORN the pier"),
            (
                "con fidential//ORCON: the pier",
                "CONFIDENTIAL//ORCON: the pier",
            ),
        ] {
            assert_eq!(rewrite(spelled).as_deref(), Some(plain), "{spelled}");
        }
    }

    #[test]
    fn other_separators_between_a_classification_and_a_control_are_slashes() {
        for (line, plain) in [
            ("SECRET\\\\NOFORN the plan", "SECRET//NOFORN the plan"),
            ("SECRET\\NOFORN", "SECRET//NOFORN"),
            ("TOP SECRET||SI||NOFORN", "TOP SECRET//SI//NOFORN"),
            ("SECRET -- NOFORN: the route", "SECRET//NOFORN: the route"),
            ("(S ~ NF) the route", "(S//NF) the route"),
            ("SECRET - REL TO USA, GBR", "SECRET//REL TO USA, GBR"),
        ] {
            assert_eq!(rewrite(line).as_deref(), Some(plain), "{line}");
        }
        // A table's single bar, a dash in prose, other words: left alone.
        for line in [
            "| S | NF |",
            "The SECRET - and only secret - ingredient",
            "TCP/IP and I/O",
            "C:\\Users\\NF\\docs",
        ] {
            assert_eq!(rewrite(line), None, "{line}");
        }
    }

    #[test]
    fn a_portion_mark_with_single_slashes_is_read_as_written_with_two() {
        for (line, plain) in [
            ("(S/NF) The convoy", "(S//NF) The convoy"),
            ("(TS/SI/NF) relay", "(TS//SI//NF) relay"),
            ("see (U/FOUO) notes", "see (U//FOUO) notes"),
            ("TOP SECRET/SI/NOFORN", "TOP SECRET//SI//NOFORN"),
            ("> SECRET/NOFORN", "> SECRET//NOFORN"),
        ] {
            let got = rewritten_lines(line);
            assert_eq!(got.len(), 1, "{line}");
            assert_eq!(got[0].1, plain);
            assert!(!got[0].2, "{line}: not a disguise");
        }
        for line in [
            "TS/SCI clearance required",
            "(A/B testing)",
            "and/or (N/A)",
            "- writing SECRET/NOFORN with one slash",
        ] {
            assert!(rewritten_lines(line).is_empty(), "{line}");
        }
    }

    #[test]
    fn ordinary_lines_are_left_alone() {
        for line in [
            "The plan is fine.",
            "Options a, b and c are open.",
            "x86 and 2FA on port 443",
            "https://example.com/a/b",
            "a = b // 2 in Python",
            "We met on 10/12/2024.",
            "x = (5//2) + 1",
            "cost: US$ 5 // approx",
            "no for now // later",
            "e.g. a/b",
            "",
        ] {
            assert_eq!(rewrite(line), None, "{line}");
        }
    }

    #[test]
    fn ranges_are_the_lines_without_their_ends() {
        let text = "fine\r\nS E C R E T\nfine too";
        let got = rewritten_lines(text);
        assert_eq!(got.len(), 1);
        let (range, line, disguised) = &got[0];
        assert_eq!(&text[range.clone()], "S E C R E T");
        assert_eq!(line, "SECRET");
        assert!(disguised);
    }

    #[test]
    fn hostile_lines_stay_bounded() {
        let long = "a ".repeat(100_000);
        assert!(
            rewritten_lines(&long).is_empty(),
            "longer than a line is read"
        );
        let many = "S E C R E T\n".repeat(10_000);
        assert_eq!(rewritten_lines(&many).len(), 10_000);
        // Lines made of separators between markings: each is read in one pass.
        let separators = format!("{}\n", "SECRET\\\\NOFORN -- SI ~ ".repeat(150)).repeat(300);
        assert_eq!(rewritten_lines(&separators).len(), 300);
        let slashes = format!("{}\n", "(S/NF) (TS/SI/NF) ".repeat(200)).repeat(300);
        assert_eq!(rewritten_lines(&slashes).len(), 300);
        let _ = rewritten_lines("\u{200b}S\u{0}E\u{ffff}C R E T//5//0");
    }
}
