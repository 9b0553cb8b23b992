//! Markings disguised by spelling: letters spaced, dotted or hyphenated (`S E C R E T // N O F
//! O R N`, `S.E.C.R.E.T.//REL TO USA, GBR`, `S-E-C-R-E-T / / N-O-F-O-R-N`) and digits for
//! letters (`T0P 5ECRET//TK//N0F0RN`). The scanner reads markings as they are written; this
//! module gives it, for the few lines that look spelled, the line as it would be written
//! undisguised, which the scanner then reads again.
//!
//! Cheap on ordinary text: only a line's first bytes and the bytes around its slashes are read,
//! and a line is rewritten only when they hold a run of [`MIN_SINGLES`] one-character words in
//! a row or, next to a slash, a word that mixes letters with the digits that stand for them.
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
pub(crate) fn rewritten_lines(text: &str) -> Vec<(Range<usize>, String)> {
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
    for p in memchr::memchr_iter(b'/', bytes) {
        if spelled_at_slashes(bytes, p) {
            starts.push(
                memchr::memrchr(b'\n', bytes.get(..p).unwrap_or_default()).map_or(0, |i| i + 1),
            );
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
        let rewritten = normalize_slashes(&unleet(&join_singles(body)));
        if rewritten != body {
            out.push((start..end, rewritten));
        }
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
    (ends_in_single(before) && has_single_run(before))
        || leet_word_before(before)
        || leet_word_after(after)
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

/// Whether the word that ends `bytes` (past white space) is disguised with digits.
fn leet_word_before(bytes: &[u8]) -> bool {
    if !bytes.iter().any(u8::is_ascii_digit) {
        return false;
    }
    let end = bytes.iter().rposition(|b| *b != b' ').map_or(0, |i| i + 1);
    let head = bytes.get(..end).unwrap_or_default();
    let start = head
        .iter()
        .rposition(|b| !b.is_ascii_alphanumeric())
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
        .position(|b| !b.is_ascii_alphanumeric())
        .unwrap_or(tail.len());
    tail.get(..end)
        .and_then(|w| std::str::from_utf8(w).ok())
        .is_some_and(is_leet_word)
}

/// A word of ASCII letters and at least one digit that stands for a letter (`5ECRET`,
/// `N0F0RN`): never a plain number, never a word with other digits (`x86`, `2FA` keep theirs).
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
        _ => None,
    }
}

/// `line` with each run of [`MIN_SINGLES`] or more one-character words, separated by one
/// letter separator each (the same one throughout the run), joined into one word: `S E C R E
/// T` → `SECRET`, `S.E.C.R.E.T.` → `SECRET`. What follows the run is kept as it was.
fn join_singles(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        if let Some((end, word)) = single_run(&chars, i) {
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
/// more that starts a word: where it ends (past a trailing separator that is not a space)
/// and its letters.
fn single_run(chars: &[char], i: usize) -> Option<(usize, String)> {
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
    if letters.chars().count() < MIN_SINGLES {
        return None;
    }
    Some((j, letters))
}

/// `line` with the digits of each disguised word read as the letters they stand for
/// (`T0P 5ECRET` → `TOP SECRET`).
fn unleet(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if is_leet_word(word) {
            out.extend(
                word.bytes()
                    .map(|b| leet_letter(b).unwrap_or(char::from(b))),
            );
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in line.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
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
        rewritten_lines(line).pop().map(|(_, s)| s)
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
            ("t o p s e c r e t", "topsecret"),
        ] {
            assert_eq!(rewrite(spelled).as_deref(), Some(plain), "{spelled}");
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
        let (range, line) = &got[0];
        assert_eq!(&text[range.clone()], "S E C R E T");
        assert_eq!(line, "SECRET");
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
        let _ = rewritten_lines("\u{200b}S\u{0}E\u{ffff}C R E T//5//0");
    }
}
