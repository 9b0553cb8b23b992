//! Finding markings in free text: banner lines, portion marks at paragraph starts, and banners
//! or portion marks written inline — disguised or not.
//!
//! The scanner runs on every request, so it is built to be fast on text without markings: it
//! looks only at paragraph starts, at `//` separators and at short lines, and only text with
//! non-ASCII characters pays for folding look-alikes. What it finds is parsed in detection mode,
//! which accepts abbreviated banners such as `TS//SI//NF` and never rejects a marking for
//! breaking a rule: an invalid marking is still an indicator.

use std::ops::Range;
use std::sync::LazyLock;

use memchr::memmem;

use crate::fold::{self, Folded};
use crate::label::{Dissem, Label};
use crate::lattice::rollup;
use crate::marking::{Form, Mode, detect_marking, parse_marking};
use crate::registry::{self, FxMap};

/// The longest marking the scanner will consider, in bytes.
const MAX_CANDIDATE_BYTES: usize = 320;
/// How many shorter readings of one candidate the scanner tries before giving up.
const MAX_TRIMS: usize = 24;

/// The `//` searcher, built once: building one per line cost more than the search.
static SEPARATOR: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new("//"));

/// A marking found in text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Byte span in the scanned text.
    pub span: Range<usize>,
    /// What the marking means.
    pub label: Label,
    /// Banner or portion.
    pub form: Form,
    /// Whether the marking was disguised with look-alike, invisible or full-width characters.
    pub disguised: bool,
}

/// The result of scanning a text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    /// Every marking found, in order.
    pub markings: Vec<Found>,
    /// The roll-up of every marking found; UNCLASSIFIED when none was.
    pub label: Label,
}

impl Scan {
    /// Whether any marking was disguised.
    pub fn any_disguised(&self) -> bool {
        self.markings.iter().any(|m| m.disguised)
    }
}

/// Finds the markings in `text` and rolls them up.
///
/// ```
/// use enclave_label::scan;
/// let s = scan("TOP SECRET//SI//NOFORN\n\n(S//NF) The plan.\n(U) Weather.");
/// assert_eq!(s.markings.len(), 3);
/// assert_eq!(s.label.to_string(), "TOP SECRET//SI//NOFORN");
/// ```
pub fn scan(text: &str) -> Scan {
    let folded;
    let (view, map): (&str, Option<&Folded>) = if text.is_ascii() {
        (text, None)
    } else {
        folded = fold::fold(text);
        (folded.text.as_str(), Some(&folded))
    };
    let mut scanner = Scanner {
        original: text,
        view,
        map,
        found: Vec::new(),
        list_letters: [false; 26],
        cache: FxMap::default(),
        ids: Vec::new(),
        next_separator: 0,
    };
    scanner.scan_lines();
    let scanner_cache_len = scanner.cache.len();
    // Markings are recorded line by line, in order.
    let mut ids = scanner.ids;
    let mut found = scanner.found;
    // A portion's bare `REL` means the REL TO list of the banner above it. (The resolved label
    // no longer equals others of the same text, so it loses its id.)
    let mut banner: Option<Label> = None;
    for (f, id) in found.iter_mut().zip(ids.iter_mut()) {
        if f.form == Form::Banner {
            banner = Some(f.label.clone());
        } else if f.label.dissem().contains(&Dissem::Rel)
            && f.label.rel_to().is_none()
            && let Some(b) = &banner
        {
            f.label.rel_to = b.rel_to.clone();
            *id = usize::MAX;
        }
    }
    // Documents repeat the same few portion marks; roll up each distinct label once. (A label
    // joined with itself is its roll-up normal form, hence the second join when all are equal.)
    if found.is_empty() {
        // Most text carries no marking at all: nothing to roll up.
        return Scan {
            markings: found,
            label: Label::unclassified(),
        };
    }
    let mut distinct: Vec<&Label> = Vec::new();
    // Ids index the detection cache, so it bounds them (an id past it is `usize::MAX`).
    let mut seen = vec![false; scanner_cache_len];
    for (f, &id) in found.iter().zip(&ids) {
        match seen.get_mut(id) {
            Some(true) => {}
            Some(slot) => {
                *slot = true;
                distinct.push(&f.label);
            }
            None => distinct.push(&f.label),
        }
    }
    let mut label = rollup(distinct.iter().copied());
    if distinct.len() == 1 && found.len() > 1 && !is_plain_unclassified_fixed_point(&label) {
        label = label.join(&label);
    }
    Scan {
        markings: found,
        label,
    }
}

/// The detection of the portion marks that most documents use, read once per process (the
/// parse is a pure function of the text); `None` for any other text.
fn detect_common(candidate: &str) -> Option<Option<(Label, bool)>> {
    const COMMON: [&str; 6] = ["(U)", "(C)", "(S)", "(TS)", "(CUI)", "(U//FOUO)"];
    static DETECTED: LazyLock<Vec<Option<(Label, bool)>>> = LazyLock::new(|| {
        COMMON
            .iter()
            .map(|c| detect_marking(c).map(|(m, complete)| (m.label, complete)))
            .collect()
    });
    let i = COMMON.iter().position(|c| *c == candidate)?;
    DETECTED.get(i).cloned()
}

/// Whether `label` is plain UNCLASSIFIED, which its own join leaves unchanged: text full of
/// `(U)` portions, the common case, then skips the second join.
fn is_plain_unclassified_fixed_point(label: &Label) -> bool {
    static FIXED: LazyLock<bool> = LazyLock::new(|| {
        let u = Label::unclassified();
        u.join(&u) == u
    });
    *label == Label::unclassified() && *FIXED
}

struct Scanner<'a> {
    original: &'a str,
    view: &'a str,
    map: Option<&'a Folded>,
    found: Vec<Found>,
    /// Letters seen as `(A)`, `(B)`, … at paragraph starts: a following `(C)` is a list item.
    list_letters: [bool; 26],
    /// Detection results by candidate text, with an id per distinct text: documents repeat
    /// the same markings.
    cache: FxMap<String, Option<(Label, bool, usize)>>,
    /// For each marking found, the id of its text (`usize::MAX` when it was not cached).
    ids: Vec<usize>,
    /// Where the next `//` at or after the current line starts (`usize::MAX`: none left), so
    /// that lines without one skip the separator scan after a single search of the text.
    next_separator: usize,
}

impl Scanner<'_> {
    fn bytes(&self) -> &[u8] {
        self.view.as_bytes()
    }

    /// Parses a candidate in detection mode, once per distinct text; `complete` when every
    /// category was understood.
    /// The id is shared by every occurrence of the same text (`usize::MAX` when not cached).
    fn detect(&mut self, candidate: &str) -> Option<(Label, bool, usize)> {
        if let Some(hit) = self.cache.get(candidate) {
            return hit.clone();
        }
        let result = detect_common(candidate)
            .unwrap_or_else(|| detect_marking(candidate).map(|(m, complete)| (m.label, complete)));
        if self.cache.len() < 4096 {
            let id = self.cache.len();
            let entry = result.map(|(l, c)| (l, c, id));
            self.cache.insert(candidate.to_owned(), entry.clone());
            return entry;
        }
        result.map(|(l, c)| (l, c, usize::MAX))
    }

    fn original_span(&self, r: &Range<usize>) -> Range<usize> {
        match self.map {
            Some(m) => m.original(r.start)..m.original(r.end),
            None => r.clone(),
        }
    }

    fn record(&mut self, r: Range<usize>, label: Label, form: Form, id: usize) {
        let span = self.original_span(&r);
        let disguised = self
            .original
            .get(span.clone())
            .is_some_and(|s| !s.is_ascii());
        self.found.push(Found {
            span,
            label,
            form,
            disguised,
        });
        self.ids.push(id);
    }

    /// Portion marks at paragraph starts and banner lines with no controls (`SECRET`).
    fn scan_lines(&mut self) {
        let len = self.bytes().len();
        let mut start = 0;
        while start < len {
            let end = memchr::memchr(b'\n', self.bytes().get(start..).unwrap_or_default())
                .map_or(len, |i| start + i);
            let from = self.scan_line_start(start, end).unwrap_or(start);
            if end - start <= 40 {
                self.scan_bare_banner(start, end);
            }
            // A `//` never spans lines, so a line with none in it has nothing for
            // `scan_separators`, which would find nothing at or after `from` either.
            if self.next_separator < start {
                self.next_separator = SEPARATOR
                    .find(self.bytes().get(start..).unwrap_or_default())
                    .map_or(usize::MAX, |i| start + i);
            }
            if self.next_separator < end {
                self.scan_separators(from, end);
            }
            start = end + 1;
        }
    }

    /// Reads a portion mark at the start of the line; returns where it ends.
    fn scan_line_start(&mut self, start: usize, end: usize) -> Option<usize> {
        let bytes = self.bytes();
        let mut i = start;
        // Skip indentation, quote marks and list bullets (`-`, `*`, `1.`, `a)`).
        while let Some(&b) = bytes.get(i) {
            if i >= end {
                return None;
            }
            match b {
                b' ' | b'\t' | b'\r' | b'>' | b'-' | b'*' | b'+' | b'#' => i += 1,
                b'0'..=b'9' => {
                    let digits = bytes.get(i..end).unwrap_or_default();
                    let n = digits.iter().take_while(|c| c.is_ascii_digit()).count();
                    if matches!(digits.get(n), Some(b'.' | b')')) {
                        i += n + 1;
                    } else {
                        return None;
                    }
                }
                _ => break,
            }
        }
        if bytes.get(i) != Some(&b'(') {
            return None;
        }
        let limit = end.min(i + MAX_CANDIDATE_BYTES);
        let close = bytes
            .get(i..limit)
            .and_then(|w| memchr::memchr(b')', w))
            .map(|j| i + j)?;
        let inner = self.view.get(i + 1..close).unwrap_or_default().trim();
        if inner.len() == 1 {
            let &letter = inner.as_bytes().first()?;
            if !self.single_letter_is_marking(i..close + 1, letter) {
                return None;
            }
        }
        if !inner
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'/')
        {
            return None;
        }
        let candidate = self.view.get(i..=close).unwrap_or_default();
        let (label, _, id) = self.detect(candidate)?;
        self.record(i..close + 1, label, Form::Portion, id);
        Some(close + 1)
    }

    /// `(C)` is CONFIDENTIAL unless it is written in lower case or continues a lettered list
    /// `(A)`, `(B)`; a disguised letter always counts.
    fn single_letter_is_marking(&mut self, r: Range<usize>, letter: u8) -> bool {
        let span = self.original_span(&r);
        let disguised = self.original.get(span).is_some_and(|s| !s.is_ascii());
        let upper = letter.to_ascii_uppercase();
        let Some(idx) = upper.checked_sub(b'A').map(usize::from) else {
            return false;
        };
        let continues_list = idx > 0 && self.list_letters.get(idx - 1).copied().unwrap_or(false);
        if let Some(seen) = self.list_letters.get_mut(idx) {
            *seen = true;
        }
        if disguised {
            return true;
        }
        letter.is_ascii_uppercase() && !continues_list && matches!(upper, b'U' | b'C' | b'S')
    }

    /// A short line that is only a classification: `SECRET`, `TOP SECRET`, `CUI`.
    fn scan_bare_banner(&mut self, start: usize, end: usize) {
        let line = self.view.get(start..end).unwrap_or_default();
        // Trimmed byte by byte: every character trimmed is ASCII, so this stops exactly where
        // trimming by characters would.
        let is_trim =
            |b: &u8| b.is_ascii_whitespace() || matches!(b, b'*' | b'#' | b'_' | b'=' | b'-');
        let bytes = line.as_bytes();
        let Some(first) = bytes.iter().position(|b| !is_trim(b)) else {
            return;
        };
        let last = bytes.iter().rposition(|b| !is_trim(b)).unwrap_or(first);
        let Some(trimmed) = line.get(first..=last) else {
            return;
        };
        let Some(text) = bare_banner(trimmed) else {
            return;
        };
        let from = start + first;
        if let Ok(m) = parse_marking(text, Mode::Detect, None) {
            self.record(
                from..from + trimmed.len(),
                m.label,
                Form::Banner,
                usize::MAX,
            );
        }
    }

    /// Banners and portion marks around each `//` in `from..end`.
    fn scan_separators(&mut self, from: usize, end: usize) {
        let view = self.view;
        let line = view.as_bytes().get(..end).unwrap_or_default();
        let mut at = from;
        while let Some(i) = SEPARATOR
            .find(line.get(at..).unwrap_or_default())
            .map(|i| at + i)
        {
            at = i + 2;
            if let Some(end) = self.try_separator(i, from) {
                at = at.max(end);
            } else {
                // Skip the rest of a run of slashes.
                while view.as_bytes().get(at) == Some(&b'/') {
                    at += 1;
                }
            }
        }
    }

    /// Tries to read a marking around the `//` at `i`; returns where it ends if one was found.
    fn try_separator(&mut self, i: usize, line_start: usize) -> Option<usize> {
        let bytes = self.bytes();
        let window_start = i.saturating_sub(24).max(line_start);
        let before = self.view.get(window_start..i).unwrap_or_default();
        // `SECRET // NOFORN`: spaces before the separator do not hide the classification.
        let spaced = before.trim_end_matches([' ', '\t']);
        let gap = before.len() - spaced.len();
        let (start, abbreviated, rewrite) = match classification_suffix(spaced).filter(|_| gap <= 2)
        {
            Some(found) => (i - gap - found.len, found.abbreviated, found.rewrite),
            None => {
                // A non-U.S. banner opens with `//`: it must stand at a word boundary.
                let prev = i.checked_sub(1).and_then(|p| bytes.get(p)).copied();
                if prev.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b':') {
                    return None;
                }
                (i, false, None)
            }
        };
        // Inline portion mark: `(TS//SI//NF)`.
        let opens = start
            .checked_sub(1)
            .filter(|&p| bytes.get(p) == Some(&b'('));
        if let Some(open) = opens {
            let limit = bytes.len().min(open + MAX_CANDIDATE_BYTES);
            let close = bytes
                .get(open..limit)
                .and_then(|w| memchr::memchr(b')', w))?
                + open;
            let candidate = self.view.get(open..=close)?;
            let (label, _, id) = self.detect(candidate)?;
            if abbreviated && !has_registered_control(&label) {
                return None;
            }
            self.record(open..close + 1, label, Form::Portion, id);
            return Some(close + 1);
        }
        let line_end = memchr::memchr(b'\n', bytes.get(i..).unwrap_or_default())
            .map_or(bytes.len(), |p| i + p);
        let limit = line_end.min(start + MAX_CANDIDATE_BYTES);
        let mut end = i + 2;
        while end < limit && bytes.get(end).is_some_and(|&b| is_marking_byte(b)) {
            end += 1;
        }
        let mut candidate_end = end;
        let mut best: Option<(usize, Label, usize)> = None;
        for _ in 0..MAX_TRIMS {
            let candidate = self
                .view
                .get(start..candidate_end)?
                .trim_end_matches([' ', ',', '-']);
            let real_end = start + candidate.len();
            if real_end <= i + 2 && start != i {
                break;
            }
            // `TOP-SECRET//…`, `TOPSECRET//…`: read with the classification spelled properly.
            let detected = match rewrite {
                Some((len, canonical)) => {
                    let text = format!("{canonical}{}", candidate.get(len..).unwrap_or_default());
                    self.detect(&text)
                }
                None => self.detect(candidate),
            };
            if let Some((label, complete, id)) = detected {
                if complete {
                    best = Some((real_end, label, id));
                    break;
                }
                if best.is_none() {
                    best = Some((real_end, label, id));
                }
            }
            // Drop the last word or element and try again.
            let cut = candidate.rfind([' ', '/', ','])?;
            if cut <= i - start + 1 {
                break;
            }
            candidate_end = start + cut;
        }
        let (real_end, label, id) = best?;
        if abbreviated && !has_registered_control(&label) {
            return None;
        }
        if start == i && real_end <= i + 2 {
            return None;
        }
        self.record(start..real_end, label, Form::Banner, id);
        Some(real_end)
    }
}

/// The marking a line spells when its words, in any case and spacing, are a bare
/// classification (`SECRET`, `top  secret`), ready for the parser.
fn bare_banner(trimmed: &str) -> Option<&'static str> {
    const BARE: [(&str, &str); 8] = [
        ("TOP SECRET", "TOP SECRET"),
        ("SECRET", "SECRET"),
        ("CONFIDENTIAL", "CONFIDENTIAL"),
        ("UNCLASSIFIED", "UNCLASSIFIED"),
        ("CUI", "CUI"),
        ("COSMIC TOP SECRET", "//COSMIC TOP SECRET"),
        ("NATO SECRET", "//NATO SECRET"),
        ("NATO CONFIDENTIAL", "//NATO CONFIDENTIAL"),
    ];
    const LONGEST: usize = 17;
    let lookup = |canonical: &[u8]| {
        BARE.iter()
            .find(|(c, _)| c.as_bytes() == canonical)
            .map(|&(_, text)| text)
    };
    if !trimmed.is_ascii() {
        // Rare (folded text keeps few non-ASCII characters): words split at any Unicode space.
        let upper = trimmed.to_ascii_uppercase();
        let words: Vec<&str> = upper.split_whitespace().collect();
        return lookup(words.join(" ").as_bytes());
    }
    // The words upper-cased and joined by single spaces, on the stack: the many short lines
    // that are not banners (JSON keys such as `role`, `content`) cost no allocation.
    let mut canonical = [0u8; LONGEST];
    let mut len = 0;
    let mut space = false;
    for &b in trimmed.as_bytes() {
        if char::from(b).is_whitespace() {
            space = len > 0;
            continue;
        }
        if !b.is_ascii_alphabetic() {
            return None;
        }
        if space {
            *canonical.get_mut(len)? = b' ';
            len += 1;
            space = false;
        }
        *canonical.get_mut(len)? = b.to_ascii_uppercase();
        len += 1;
    }
    lookup(canonical.get(..len)?)
}

/// An abbreviated banner (`TS//SI//NF`) counts only when it names a registered control, so that
/// `s//comment` in code is not read as SECRET.
fn has_registered_control(label: &Label) -> bool {
    // `TS//SCI` is the everyday shorthand for TOP SECRET compartmented information.
    let known = |t: &String| registry::is_published_sci(t) || t == "SCI";
    let published_sci = !label.sci().is_empty() && label.sci().iter().all(known);
    let unpublished_sci = label.sci().iter().any(|t| !known(t));
    !unpublished_sci
        && (published_sci
            || !label.dissem().is_empty()
            || !label.aea().is_empty()
            || !label.non_ic().is_empty()
            || label.fgi().is_some()
            || !label.sap().is_empty())
}

fn is_marking_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b' ' | b'/' | b',' | b'-')
}

/// A classification found just before a `//`.
struct Suffix {
    /// Its length in bytes.
    len: usize,
    /// Written as an abbreviation (`TS`) rather than a title.
    abbreviated: bool,
    /// For a disguised spelling (`TOP-SECRET`, `TOPSECRET`, `TOP  SECRET`): how many bytes it
    /// takes and the proper spelling to read it as.
    rewrite: Option<(usize, &'static str)>,
}

/// The classification that `before` ends with, at a word boundary.
fn classification_suffix(before: &str) -> Option<Suffix> {
    const TITLES: [&str; 6] = [
        "TOP SECRET",
        "CONFIDENTIAL",
        "UNCLASSIFIED",
        "CONTROLLED",
        "SECRET",
        "CUI",
    ];
    const ABBREVIATIONS: [&str; 4] = ["TS", "S", "C", "U"];
    let b = before.as_bytes();
    let tail_is = |word: &str| -> bool {
        b.len() >= word.len()
            && b.get(b.len() - word.len()..)
                .is_some_and(|t| t.eq_ignore_ascii_case(word.as_bytes()))
    };
    let boundary_before = |n: usize| -> bool {
        b.len() == n
            || b.get(b.len() - n - 1)
                .is_some_and(|c| !c.is_ascii_alphanumeric())
    };
    // SECURITY: `TOP` glued to `SECRET` by nothing, a hyphen, an underscore, a dot or extra
    // spaces is still TOP SECRET; reading it as SECRET would under-classify the content.
    if tail_is("SECRET") {
        let head = b.get(..b.len() - 6).unwrap_or_default();
        let glue = head
            .iter()
            .rev()
            .take_while(|c| matches!(c, b' ' | b'\t' | b'-' | b'_' | b'.'))
            .count();
        let top_end = head.len() - glue;
        let top = head
            .get(top_end.saturating_sub(3)..top_end)
            .unwrap_or_default();
        let top_boundary = top_end == 3
            || head
                .get(top_end.wrapping_sub(4))
                .is_some_and(|c| !c.is_ascii_alphanumeric());
        if top_end >= 3 && top.eq_ignore_ascii_case(b"TOP") && top_boundary && glue <= 3 {
            let len = 3 + glue + 6;
            let proper = glue == 1 && head.get(top_end) == Some(&b' ');
            return Some(Suffix {
                len,
                abbreviated: false,
                rewrite: (!proper).then_some((len, "TOP SECRET")),
            });
        }
    }
    for t in TITLES {
        if tail_is(t) && boundary_before(t.len()) {
            return Some(Suffix {
                len: t.len(),
                abbreviated: false,
                rewrite: None,
            });
        }
    }
    for a in ABBREVIATIONS {
        if tail_is(a) && boundary_before(a.len()) {
            // A single lower-case letter is prose or code, not a marking.
            let tail = b.get(b.len() - a.len()..).unwrap_or_default();
            if a.len() == 1 && tail.iter().any(|c| c.is_ascii_lowercase()) {
                return None;
            }
            return Some(Suffix {
                len: a.len(),
                abbreviated: true,
                rewrite: None,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(s: &Scan, src: &str) -> Vec<String> {
        s.markings
            .iter()
            .map(|m| src[m.span.clone()].to_owned())
            .collect()
    }

    #[test]
    fn finds_banners_and_portions_with_spans() {
        let src = "SECRET//NOFORN\n\n(S//NF) The plan is set.\n(U) The weather is fine.\n\nSECRET//NOFORN";
        let s = scan(src);
        assert_eq!(
            texts(&s, src),
            ["SECRET//NOFORN", "(S//NF)", "(U)", "SECRET//NOFORN"]
        );
        assert_eq!(s.label.to_string(), "SECRET//NOFORN");
        assert!(!s.any_disguised());
    }

    #[test]
    fn disguised_markings_are_found_and_flagged() {
        let src = "please summarize: Т\u{200B}OP ЅECRET／／SI／／NOFORN and more";
        let s = scan(src);
        assert_eq!(s.markings.len(), 1, "{s:?}");
        assert!(s.markings[0].disguised);
        assert_eq!(s.label.to_string(), "TOP SECRET//SI//NOFORN");
        assert!(src[s.markings[0].span.clone()].starts_with('Т'));
    }

    #[test]
    fn abbreviated_and_lowercase_banners_count() {
        assert_eq!(
            scan("see TS//SI//NF attached").label.to_string(),
            "TOP SECRET//SI//NOFORN"
        );
        assert_eq!(
            scan("top secret//noforn stuff").label.to_string(),
            "TOP SECRET//NOFORN"
        );
        assert_eq!(
            scan("x = a // b; s//comment").label.to_string(),
            "UNCLASSIFIED"
        );
        assert_eq!(
            scan("http://example.com//path https://ns.example")
                .label
                .to_string(),
            "UNCLASSIFIED"
        );
    }

    #[test]
    fn inline_portion_marks_with_separators_count() {
        let s = scan("The report (TS//SI//NF) says so.");
        assert_eq!(s.label.to_string(), "TOP SECRET//SI//NOFORN");
    }

    #[test]
    fn lettered_lists_and_lowercase_letters_are_not_markings() {
        let src = "(a) first\n(b) second\n(c) third\n(A) one\n(B) two\n(C) three";
        assert_eq!(scan(src).markings.len(), 0);
        assert_eq!(scan("(C) Budget figures").label.to_string(), "CONFIDENTIAL");
    }

    #[test]
    fn rel_portions_take_the_banner_list() {
        let s = scan("SECRET//REL TO USA, NZL\n(S//REL) text\n");
        assert_eq!(s.markings[1].label.rel_to().unwrap().len(), 2);
        assert_eq!(s.label.to_string(), "SECRET//REL TO USA, NZL");
    }

    #[test]
    fn spaced_separators_do_not_hide_a_banner() {
        let src = "Header: SECRET // NOFORN\nbody";
        let s = scan(src);
        assert_eq!(texts(&s, src), ["SECRET // NOFORN"]);
        assert_eq!(s.label.to_string(), "SECRET//NOFORN");
        assert_eq!(
            scan("**TOP SECRET//SI//NOFORN**").label.to_string(),
            "TOP SECRET//SI//NOFORN"
        );
        // Garbage after the separator reads as an unpublished SCI system: conservative.
        assert_eq!(
            scan("SECRET//NOFORNXYZ").label.level(),
            crate::Level::Secret
        );
    }

    #[test]
    fn the_same_rel_portion_under_two_banners_keeps_both_lists() {
        let src = "SECRET//REL TO USA, GBR\n(S//REL) a\nSECRET//REL TO USA, AUS\n(S//REL) b\n";
        let s = scan(src);
        assert_eq!(s.markings.len(), 4);
        assert_eq!(s.label.to_string(), "SECRET//NOFORN");
    }

    #[test]
    fn glued_or_hyphenated_top_secret_is_not_read_as_secret() {
        for src in [
            "TOP-SECRET//SI//NOFORN",
            "TopSecret//SI//NOFORN",
            "TOP  SECRET//SI//NOFORN",
            "top_secret // si // noforn",
            "x TOP.SECRET//NOFORN",
        ] {
            let s = scan(src);
            assert_eq!(s.label.level(), crate::Level::TopSecret, "{src}");
            assert_eq!(s.markings.len(), 1, "{src}");
        }
        assert_eq!(
            scan("STOP SECRET//NOFORN").label.level(),
            crate::Level::Secret
        );
        assert_eq!(
            scan("She holds TS//SCI access").label.level(),
            crate::Level::TopSecret
        );
        assert_eq!(scan("requires a TS/SCI clearance").markings.len(), 0);
    }

    #[test]
    fn a_shorter_reading_keeps_its_own_identity_in_the_roll_up() {
        // Found by the scan_text fuzz target: a marking recorded from an earlier, longer
        // reading took the cache id of the last (shorter) reading tried, and the roll-up
        // skipped it as a duplicate of an earlier marking.
        let src = "CUI//SP-C//\nCUI//SP-C//RELIDO/CUI/oSI";
        let s = scan(src);
        for m in &s.markings {
            assert!(s.label.dominates(&m.label), "{} vs {}", s.label, m.label);
        }
        assert_eq!(s.label.to_string(), "CUI//RELIDO");
    }

    #[test]
    fn an_ownerless_joint_banner_still_makes_the_whole_foreign() {
        // Found by the scan_text fuzz target.
        let s = scan("(U//SBU) text\n\nsee //JOINT U here");
        for m in &s.markings {
            assert!(s.label.dominates(&m.label), "{} vs {}", s.label, m.label);
        }
    }

    #[test]
    fn inline_banner_stops_at_prose() {
        let src = "It is SECRET//REL TO USA, GBR and must not leak.";
        let s = scan(src);
        assert_eq!(texts(&s, src), ["SECRET//REL TO USA, GBR"]);
    }

    #[test]
    fn bare_banners_are_read_as_before_without_allocating() {
        // The reading `bare_banner` replaced: upper-case, split at any white space, join.
        fn allocating(trimmed: &str) -> Option<String> {
            let upper = trimmed.to_ascii_uppercase();
            let canonical = upper.split_whitespace().collect::<Vec<_>>().join(" ");
            let bare = [
                "TOP SECRET",
                "SECRET",
                "CONFIDENTIAL",
                "UNCLASSIFIED",
                "CUI",
                "COSMIC TOP SECRET",
                "NATO SECRET",
                "NATO CONFIDENTIAL",
            ];
            bare.contains(&canonical.as_str()).then(|| {
                if canonical.starts_with("NATO") || canonical.starts_with("COSMIC") {
                    format!("//{canonical}")
                } else {
                    canonical
                }
            })
        }
        for line in [
            "SECRET",
            "secret",
            "Top   Secret",
            "top\tsecret",
            "TOP\u{b}SECRET",
            "TOP\u{a0}SECRET",
            "TOP\u{2003}SECRET",
            "cosmic top secret",
            "NATO  CONFIDENTIAL",
            "TOPSECRET",
            "TOP SECRET X",
            "SECRET2",
            "S3CRET",
            "role",
            "content",
            "system",
            "user",
            "unclassified",
            "CUI",
            "cui\u{b}",
            "COSMIC TOP SECRET TOO LONG",
            "ЅECRET",
            "SECRET/",
            "",
        ] {
            assert_eq!(
                bare_banner(line).map(str::to_owned),
                allocating(line),
                "{line:?}"
            );
        }
    }

    #[test]
    fn common_portion_marks_read_as_the_parser_reads_them() {
        for mark in ["(U)", "(C)", "(S)", "(TS)", "(CUI)", "(U//FOUO)"] {
            let direct = detect_marking(mark).map(|(m, complete)| (m.label, complete));
            assert_eq!(detect_common(mark), Some(direct), "{mark}");
        }
        assert_eq!(detect_common("(S//NF)"), None);
    }

    #[test]
    fn repeated_unclassified_portions_roll_up_to_unclassified() {
        let s = scan("(U) one\n\n(U) two\n\n(U) three");
        assert_eq!(s.markings.len(), 3);
        assert_eq!(s.label, Label::unclassified());
        assert_eq!(s.label, s.label.join(&s.label));
        assert!(scan("no markings at all").markings.is_empty());
    }

    #[test]
    fn hostile_text_is_bounded() {
        let seps = "/".repeat(2 << 20);
        assert!(scan(&seps).markings.is_empty());
        let many = "SECRET//".repeat(100_000);
        let s = scan(&many);
        assert_eq!(s.label.level(), crate::Level::Secret);
        let parens = "(".repeat(100_000) + &")".repeat(100_000);
        assert!(scan(&parens).markings.is_empty());
    }
}
