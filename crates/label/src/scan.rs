//! Finding markings in free text, and telling the markings that mark content from the markings
//! that are talked about.
//!
//! The scanner runs on every request, so it is built to be fast on text without markings: it
//! looks only at line starts, at `//` separators, at `(` and at short lines, and only text with
//! non-ASCII characters pays for folding look-alikes. What it finds is parsed in detection mode,
//! which accepts abbreviated banners such as `TS//SI//NF` and never rejects a marking for
//! breaking a rule: an invalid marking is still an indicator.
//!
//! # What is found
//!
//! - A classification alone on a short line, in any case, after a line's lead-in (below) and
//!   before trailing emphasis or quote marks: `SECRET`, `**Top Secret**`, `> CUI`, `• SECRET`;
//!   also spelled letter by letter (`T O P S E C R E T`).
//! - Markings spelled to hide them — letters spaced, dotted or hyphenated, digits or signs for
//!   letters, other separators for `//`: `S E C R E T // N O F O R N`, `S.E.C.R.E.T.//REL TO
//!   USA, GBR`, `T0P 5ECRET//TK//N0F0RN`, `t.s.//s.i.`, `$ecret//n0forn`, `(5//NF)`,
//!   `SECRET\\NOFORN`, `SECRET||NOFORN`, `SECRET -- NOFORN`, `s e c r e t the …`, a word split
//!   by a space next to the slashes (`SEC RET//NO FORN`).
//! - Markings written with one slash for two, as people do: `(S/NF)`, `(TS/SI/NF)`, and
//!   `SECRET/NOFORN` opening a line (an abbreviation such as `TS/SCI` outside parentheses names
//!   a clearance in prose, and is not read). They are placed by the rules below as the marking
//!   they stand for.
//! - A short line that writes a banner with spaces for its slashes: `SECRET NOFORN`, `TOP
//!   SECRET SI NOFORN`.
//!   A line that looks spelled out (four one-letter words in a row, or a `/` and a word that
//!   mixes letters with `0`, `1`, `3`, `4`, `5`, `7`, `8`) is read again as written out
//!   (`crate::spelled`); what that finds on a line where nothing was found is disguised.
//! - A classification in upper case after a label and a colon on a short line:
//!   `Classification: SECRET`.
//! - A classification in upper case that opens a line, or follows a label and a colon there,
//!   and is followed by a colon or a dash and text, on a line of any length: `CONFIDENTIAL: the
//!   embassy …`, `Status: SECRET - the hangar …`.
//! - Banners and portion marks around each `//`, anywhere: `SECRET//NOFORN`, `(TS//SI//NF)`,
//!   `TS//SI//NF`, `//NATO SECRET`, also disguised (`ТOP ЅECRET／／SI`).
//! - A portion mark at the start of a line or list item, after its lead-in: `(S) …`,
//!   `"(S) …`, `• (S) …`, `a) (S) …`, `(iv) (C//NF) …`.
//! - A portion mark without `//` anywhere on a line — `(TS)`, `(S)`, `(C)`, `(U)`, `(CUI)` —
//!   standing as a word: at the line start or after white space, a quote mark, a bracket, a
//!   bullet or punctuation that may open a word, and followed by white space, punctuation or the
//!   line end (so `file(s)`, `f(S)/2` and URLs are not read).
//!
//! The **lead-in** of a line is what may stand before the text of a paragraph or list item:
//! white space, quote marks (`"`, `'`, `` ` ``, `“`, `”`, `‘`, `’`, `„`, `«`, `»`, `‹`, `›`, `>`
//! email quoting), bullets and rules (`-`, `*`, `+`, `=`, `~`, `•`, `◦`, `▪`, `‣`, `·`, `●`, `○`,
//! `■`, `□`, `►`, `▸`, `→`, `⁃`, `∙`), heading, emphasis and table marks (`#`, `_`, `|`), and
//! enumerators followed by white space or `(`: `1.`, `1)`, `1.2.3`, `a)`, `A.`, `iv.`, `(a)`,
//! `(1)`, `(iv)`, `(B)` — but never a letter that may be a portion mark itself (`(U)`, `(C)`,
//! `(S)`).
//!
//! Guards against false positives: a single lower-case letter in parentheses (`(c)`, `(s)`) is
//! not a marking (at a line start a disguised one is); `(C)`, `(S)` or `(U)` continuing a
//! lettered list — every letter before it already seen as `(A)`, `(B)`, … — is a list item; `(C)`
//! before a four-digit year or next to the word `copyright` is the copyright sign; `(S)`, `(C)`
//! or `(U)` alone at a line start next to a line that starts with a letter no portion mark
//! uses (`(S) Small` above `(M) Medium`, `(C) the term …` above `(D) …`), or alone in a table
//! cell whose column holds such letters (sizes `(S)`, `(M)`, `(L)`; grades), names an item;
//! an abbreviated banner must name a registered control (`s//comment` in code is not
//! SECRET); `(U)`, `(C)` or `(S)` one space after a noun that names items by letters
//! (`Exhibit`, `Equation`, `Annex`, `Option`, … in title or lower case) and before a verb or
//! preposition of a closed list (`is`, `was`, `defines`, `contains`, `of`, …) is that item's
//! name: `Exhibit (S) is withheld`, `Equation (S) defines …` (CAPCO writes a portion mark
//! before the text of its portion, never between a noun and its verb). `Exhibit (S) The …`,
//! `Annex (S) the convoy …` stay markings.
//!
//! # Asserted or mentioned
//!
//! Every marking found has a [`Placement`]. A marking is [`Placement::Asserted`] — it marks the
//! content it stands in, and only such markings make the content's label — when it is disguised,
//! or when it stands where markings mark text: by the first of these rules that applies.
//!
//! 0. **A row that lists markings** (mentioned). It stands in a row of a markdown table below
//!    another row, and the row's cells — at least two that are not empty — hold nothing but
//!    markings and the words of markings: `| SECRET | (S) |`, `| SECRET//NOFORN | (S//NF) |`. A
//!    marking in a table cell marks its row; a row with no text but markings marks nothing. A
//!    row with any other word (`| 3rd Bn | (S//NF) |`), a single cell and a table's first row
//!    keep their markings to the rules below.
//! 1. **Line start.** Nothing but the line's lead-in stands before it: a banner line, a portion
//!    mark at the start of a paragraph, line, list item or table row, also after quote marks,
//!    bullets and enumerators. (A paragraph wrapped inside a sentence that puts a marking at the
//!    start of a line makes it asserted too: the scanner cannot tell a wrap from a new line.)
//! 2. **Sentence start.** Fewer than two words stand between it and the start of its sentence —
//!    the line's lead-in, a `|`, or a `.`, `!`, `?`, `:` or `;` followed by white space — or none
//!    of those words has a lower-case letter (or is in a script without case): `x (TS//SI) …`,
//!    `Note (S//NF) …`, `Done. (S) …`, `DRAFT MEMO SECRET//NOFORN`, `1.2.3 (S) …`. A marking after
//!    a single word is asserted (`Explain SECRET//NOFORN`, `Explain (S//NF) the plan.`): one
//!    word of lead-in is the cheapest disguise for a pasted banner — unless rule 2a holds. A
//!    table cell is a sentence of its own, so a marking alone in a cell or opening one is
//!    asserted: a column of classifications marks its rows (`| Alpha | active | (S//NF) |`), and
//!    a row of markings alone reads the same way unless rule 0 holds.
//!
//!    2a. **Short question about it** (mentioned). Exactly one word, with a lower-case letter,
//!    stands between the start of its sentence (never a table cell) and the marking; after it
//!    come at most sixteen words, each a marking, a function word or a word that talks about
//!    markings or where they go (`mean`, `valid`, `banner`, `stricter`, `paragraph`, `force`,
//!    `before`, …); then `.`, `?` or `!` ends the sentence (or, when at least one word
//!    follows the marking, the paragraph ends without one, as chat drops it), and nothing
//!    else follows in its paragraph: `Explain (S//NF).`, `Define (TS//SI).`, `Quick check: is
//!    CONFIDENTIAL//NOFORN a valid banner?`, `Is (S//NF) stricter than (S//REL TO USA,
//!    FVEY)?`. Nothing that could be the text it marks follows it, so it
//!    marks nothing: `Is (S//NF) the convoy leaving at 0400 from Gate 3?`, `Explain (S//NF). The
//!    convoy …`, a next line of the same paragraph, or a banner line with a word before it and
//!    no full stop (`Explain SECRET//NOFORN`) keep it asserted.
//! 3. **Quoted term** (mentioned). A quote mark or backtick stands right before it and a
//!    closing one right after it: `the banner "SECRET//NOFORN" means`, `` `(S//NF)` ``.
//!
//!    3b. **Opens a quotation** (asserted). A quote mark stands right before it and the words
//!    after it, up to the closing quote, are not all words about markings: `copy the line
//!    '(S//NF) crypto keys for net BLUE change daily' into the chat` quotes a marked portion.
//! 4. **After punctuation.** Skipping white space and opening quotes, brackets and emphasis, the
//!    character before it is not a letter, a digit, a comma or a closing bracket or quote — a
//!    colon (`Subject: (S//NF) …`, `Classification: SECRET`), a sentence end, a dash, a slash.
//! 5. **Column layout.** A tab or two or more spaces separate it from the text before or after it
//!    (page headers and footers, aligned columns).
//! 6. **Heads the lines below.** Nothing follows it on its line and the next line is not blank:
//!    `Summarize this SECRET//NOFORN` followed by the document. A marking that ends a paragraph,
//!    or is followed by punctuation (`… marked SECRET//NOFORN.`), is not.
//! 7. **Opens text.** The text after it on its line, skipping white space and opening quotes,
//!    brackets and emphasis, starts with an upper-case letter (in the original text: a
//!    look-alike that folding writes as an ASCII capital keeps its own case) or a digit: the
//!    marking opens the portion that follows (`the text (S) The plan …`, `(TS//SI) (U) …`); or
//!    it starts with an article, a possessive or a personal pronoun (`the`, `a`, `our`, `we`,
//!    …): a new subject after the marking is the text it marks (`Fix grammar (TS) the general
//!    moves north`); or a colon follows it and text follows the colon on its line or below it
//!    (`Paraphrase the text marked (S//NF): the source is …`).
//!
//! Otherwise it is [`Placement::Mentioned`]: it stands inside a sentence, after at least two
//! words of it, with a word, comma or closing bracket before it and a lower-case word that
//! does not open a phrase of its own, punctuation or the end of its paragraph after it — "What
//! does SECRET//NOFORN mean?", "documents marked (TS) must be stored in a safe", "the header
//! read TOP SECRET//SI". A mention is an indicator: it does not raise the content's label, and
//! the caller logs it.
//!
//! SECURITY: each rule errs towards asserted. An attacker who edits pasted text until every
//! marking reads as a mention could as well delete the markings; what the rules must not do is
//! let text pasted as it was written — banners on their own lines, portion marks at the start of
//! paragraphs, list items, quotes or table rows, markings after a label and a colon, markings
//! that open a sentence — pass as a mention.

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
/// How far before a marking the scanner looks for the words of its sentence, in bytes: enough
/// for two words, bounded so that a long line of markings costs linear time.
const MAX_LOOKBEHIND_BYTES: usize = 160;
/// How far past the end of a line the scanner looks to tell whether the next line is blank.
const MAX_BLANK_LINE_BYTES: usize = 64;
/// The longest line read as a label and a classification (`Classification: TOP SECRET`).
const MAX_LABELLED_LINE_BYTES: usize = 64;

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
    /// Whether the marking marks the text it stands in or is talked about (see the module
    /// documentation for the rules).
    pub placement: Placement,
}

/// Where a marking stands, which decides what it means for the text: see the module
/// documentation for the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Placement {
    /// The marking marks content: a banner line, a portion mark opening a paragraph, line, list
    /// item or sentence, a marking after a label and a colon, or any disguised marking. It
    /// counts for the content's label, and so for spillage.
    Asserted,
    /// The marking is talked about inside a sentence ("What does SECRET//NOFORN mean?"). It is
    /// an indicator, not a label.
    Mentioned,
}

/// The result of scanning a text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    /// Every marking found, asserted or mentioned, in order.
    pub markings: Vec<Found>,
    /// The roll-up of the asserted markings: the label of the content. UNCLASSIFIED when there
    /// was none.
    pub label: Label,
    /// The roll-up of the mentioned markings; `None` when there was none.
    pub mentioned: Option<Label>,
}

impl Scan {
    /// Whether any marking was disguised (a disguised marking is always asserted).
    pub fn any_disguised(&self) -> bool {
        self.markings.iter().any(|m| m.disguised)
    }

    /// The markings that mark the content, in order.
    pub fn asserted(&self) -> impl Iterator<Item = &Found> {
        self.markings
            .iter()
            .filter(|m| m.placement == Placement::Asserted)
    }

    /// The markings talked about inside sentences, in order.
    pub fn mentions(&self) -> impl Iterator<Item = &Found> {
        self.markings
            .iter()
            .filter(|m| m.placement == Placement::Mentioned)
    }
}

/// Finds the markings in `text`, tells asserted markings from mentioned ones, and rolls each
/// kind up.
///
/// ```
/// use enclave_label::{scan, Placement};
/// let s = scan("TOP SECRET//SI//NOFORN\n\n(S//NF) The plan.\n(U) Weather.");
/// assert_eq!(s.markings.len(), 3);
/// assert_eq!(s.label.to_string(), "TOP SECRET//SI//NOFORN");
/// assert_eq!(s.mentioned, None);
///
/// let q = scan("What does SECRET//NOFORN mean?");
/// assert_eq!(q.markings[0].placement, Placement::Mentioned);
/// assert_eq!(q.label.to_string(), "UNCLASSIFIED");
/// assert_eq!(q.mentioned.unwrap().to_string(), "SECRET//NOFORN");
/// ```
pub fn scan(text: &str) -> Scan {
    scan_with(text, true)
}

/// [`scan`], with the second reading of lines that look spelled out (`spelled`) or without
/// it (for that second reading itself).
fn scan_with(text: &str, spelled: bool) -> Scan {
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
        line: 0..0,
        lead_in_end: None,
        row_lists_markings: None,
        line_first: 0,
    };
    scanner.scan_lines();
    let cache_len = scanner.cache.len();
    // Markings are recorded line by line, in order.
    let mut ids = scanner.ids;
    let mut found = scanner.found;
    if spelled {
        add_spelled(text, &mut found, &mut ids);
    }
    drop_letter_codes(text, &mut found, &mut ids);
    if found.is_empty() {
        // Most text carries no marking at all: nothing to roll up.
        return Scan {
            markings: found,
            label: Label::unclassified(),
            mentioned: None,
        };
    }
    // A portion's bare `REL` means the REL TO list of the banner above it. (The resolved label
    // no longer equals others of the same text, so it loses its id.) Only an asserted banner
    // marks the portions below it.
    let mut banner: Option<Label> = None;
    for (f, id) in found.iter_mut().zip(ids.iter_mut()) {
        if f.form == Form::Banner {
            if f.placement == Placement::Asserted {
                banner = Some(f.label.clone());
            }
        } else if f.label.dissem().contains(&Dissem::Rel)
            && f.label.rel_to().is_none()
            && let Some(b) = &banner
        {
            f.label.rel_to = b.rel_to.clone();
            *id = usize::MAX;
        }
    }
    let label =
        roll_up(&found, &ids, cache_len, Placement::Asserted).unwrap_or_else(Label::unclassified);
    let mentioned = roll_up(&found, &ids, cache_len, Placement::Mentioned);
    Scan {
        markings: found,
        label,
        mentioned,
    }
}

/// Markings disguised by spelling (`S E C R E T // N O F O R N`, `T0P 5ECRET//TK//N0F0RN`):
/// each line that looks spelled out is read again as written out ([`crate::spelled`]); a
/// marking that reading finds on a line where the first found none is disguised, and so
/// asserted wherever it stands, with the whole line as its span. `found` stays in text order.
fn add_spelled(text: &str, found: &mut Vec<Found>, ids: &mut Vec<usize>) {
    let lines = crate::spelled::rewritten_lines(text);
    if lines.is_empty() {
        return;
    }
    let mut added: Vec<(Found, usize)> = Vec::new();
    // Both lists are in text order: one cursor over `found` tells which lines have markings.
    let mut cursor = 0;
    for (range, line, disguised) in lines {
        while found.get(cursor).is_some_and(|f| f.span.end <= range.start) {
            cursor += 1;
        }
        if found.get(cursor).is_some_and(|f| f.span.start < range.end) {
            continue;
        }
        let markings = scan_with(&line, false).markings;
        if markings.is_empty()
            && disguised
            && let Some(level) = text
                .get(range.clone())
                .and_then(|original| crate::spelled::spelled_classification(original, &line))
            && let Ok(m) = parse_marking(level, Mode::Detect, None)
        {
            // `s e c r e t the plan`: a classification spelled to hide it, with no `//`.
            added.push((
                Found {
                    span: range.clone(),
                    label: m.label,
                    form: Form::Banner,
                    disguised: true,
                    placement: Placement::Asserted,
                },
                usize::MAX,
            ));
        }
        // Each marking of the line gets the line as its span, so one of each kind is enough: a
        // line of a thousand `(S/NF)` adds one marking, not a thousand to roll up.
        let first = added.len();
        for m in markings {
            // A disguise marks wherever it stands; `(S/NF)` for `(S//NF)` is placed as the
            // marking it stands for.
            let found = Found {
                span: range.clone(),
                label: m.label,
                form: m.form,
                disguised,
                placement: if disguised {
                    Placement::Asserted
                } else {
                    m.placement
                },
            };
            let seen = added.get(first..).unwrap_or_default().iter().any(|(f, _)| {
                f.label == found.label && f.form == found.form && f.placement == found.placement
            });
            if !seen {
                added.push((found, usize::MAX));
            }
        }
    }
    if added.is_empty() {
        return;
    }
    let mut all: Vec<(Found, usize)> = found.drain(..).zip(ids.drain(..)).chain(added).collect();
    // Stable: markings of one line keep their order.
    all.sort_by_key(|(f, _)| f.span.start);
    for (f, id) in all {
        found.push(f);
        ids.push(id);
    }
}

/// Letters that never stand alone as a portion mark (`(U)`, `(C)`, `(S)`, `(R)` do, and `T`
/// begins `(TS)`): a sibling in parentheses with one of them names items by letters.
fn is_item_letter(b: u8) -> bool {
    b.is_ascii_uppercase() && !matches!(b, b'U' | b'C' | b'S' | b'R' | b'T')
}

/// The letter of `s` when it is one upper-case letter in parentheses and nothing else, after
/// white space (`(M)`, `  (B) `).
fn lone_letter(s: &str) -> Option<u8> {
    match s.trim().as_bytes() {
        [b'(', l, b')'] => Some(*l),
        _ => None,
    }
}

/// Drops `(S)`, `(C)` and `(U)` that name items by letters rather than mark portions: a line
/// that starts with one (after white space only) next to a line of its block that starts with
/// a letter no portion mark uses (`(S) Small` above `(M) Medium`; `(C) the term …` above `(D)
/// the term …`), and a table cell that holds nothing else in a column whose other cells hold
/// such letters (a size column of `(S)`, `(M)`, `(L)`; grades `(B)`, `(C)`, `(A)`).
///
/// SECURITY: only a mark that stands alone in its place among such siblings: `(A) (S) The
/// unit …` keeps its portion mark (the `(A)` is its item's letter), and a document's own
/// portion marks never sit beside `(M)` or `(D)` items; text edited to add them could as
/// well drop the marks.
fn drop_letter_codes(text: &str, found: &mut Vec<Found>, ids: &mut Vec<usize>) {
    let keep: Vec<bool> = found
        .iter()
        .map(|f| {
            let is_letter_mark = !f.disguised
                && f.form == Form::Portion
                && text.get(f.span.clone()).and_then(lone_letter).is_some();
            !(is_letter_mark && among_item_letters(text, &f.span))
        })
        .collect();
    if keep.iter().all(|&k| k) {
        return;
    }
    let mut k = keep.iter();
    found.retain(|_| k.next().copied().unwrap_or(true));
    let mut k = keep.iter();
    ids.retain(|_| k.next().copied().unwrap_or(true));
}

/// Whether the lone letter mark at `span` stands among letters that name items (see
/// [`drop_letter_codes`]). Reads only the lines next to it (at most [`MAX_TABLE_ROWS`] rows
/// each way of a table), so a densely marked text costs linear time.
fn among_item_letters(text: &str, span: &Range<usize>) -> bool {
    let line_start = text
        .get(..span.start)
        .and_then(|t| t.rfind('\n'))
        .map_or(0, |i| i + 1);
    let line_end = text
        .get(span.end..)
        .and_then(|t| t.find('\n'))
        .map_or(text.len(), |i| span.end + i);
    let (Some(line), Some(before)) = (
        text.get(line_start..line_end),
        text.get(line_start..span.start),
    ) else {
        return false;
    };
    if before.trim().is_empty() {
        // A line that starts with it: the next line above or below starts with an item letter.
        let starts_with_item = |l: &str| {
            let t = l.trim_start();
            t.get(..3).and_then(lone_letter).is_some_and(is_item_letter)
        };
        return lines_above(text, line_start)
            .next()
            .is_some_and(starts_with_item)
            || lines_below(text, line_end)
                .next()
                .is_some_and(starts_with_item);
    }
    // A table cell that holds it alone: the same column of the table's other rows.
    if !line.trim_start().starts_with('|') {
        return false;
    }
    let column = before.matches('|').count();
    let cell = |l: &str| -> Option<u8> {
        l.trim_start()
            .strip_prefix('|')
            .and_then(|t| t.split('|').nth(column.checked_sub(1)?))
            .and_then(lone_letter)
    };
    if line.split('|').nth(column).and_then(lone_letter).is_none() {
        return false;
    }
    let is_row = |l: &&str| l.trim_start().starts_with('|');
    lines_above(text, line_start)
        .take(MAX_TABLE_ROWS)
        .take_while(is_row)
        .chain(
            lines_below(text, line_end)
                .take(MAX_TABLE_ROWS)
                .take_while(is_row),
        )
        .filter_map(cell)
        .any(is_item_letter)
}

/// The rows of a table read each way from a letter in a cell.
const MAX_TABLE_ROWS: usize = 32;

/// The lines above the line that starts at `line_start`, nearest first, without their ends,
/// up to a blank line.
fn lines_above(text: &str, line_start: usize) -> impl Iterator<Item = &str> {
    let rest = match line_start {
        0 => None,
        n => text.get(..n - 1),
    };
    block_lines(rest, |rest| match rest.rfind('\n') {
        Some(i) => (rest.get(i + 1..).unwrap_or_default(), rest.get(..i)),
        None => (rest, None),
    })
}

/// The lines below the line that ends at `line_end`, nearest first, without their ends, up to
/// a blank line.
fn lines_below(text: &str, line_end: usize) -> impl Iterator<Item = &str> {
    block_lines(text.get(line_end + 1..), |rest| match rest.find('\n') {
        Some(i) => (rest.get(..i).unwrap_or_default(), rest.get(i + 1..)),
        None => (rest, None),
    })
}

/// The lines `next` cuts from `rest` one by one (a line, and what is left past it: `None`
/// after the last), without a trailing `\r`, until a blank one.
fn block_lines<'t>(
    mut rest: Option<&'t str>,
    next: impl Fn(&'t str) -> (&'t str, Option<&'t str>),
) -> impl Iterator<Item = &'t str> {
    std::iter::from_fn(move || {
        let (line, left) = next(rest?);
        rest = left;
        let line = line.trim_end_matches('\r');
        (!line.trim().is_empty()).then_some(line)
    })
}

/// The roll-up of the markings of one placement; `None` when there is none.
///
/// Documents repeat the same few portion marks, so each distinct label is rolled up once (ids
/// index the detection cache, so it bounds them; an id past it is `usize::MAX`). A label joined
/// with itself is its roll-up normal form, hence the second join when all are equal.
fn roll_up(
    found: &[Found],
    ids: &[usize],
    cache_len: usize,
    placement: Placement,
) -> Option<Label> {
    let mut distinct: Vec<&Label> = Vec::new();
    let mut seen = vec![false; cache_len];
    let mut count = 0;
    for (f, &id) in found.iter().zip(ids) {
        if f.placement != placement {
            continue;
        }
        count += 1;
        match seen.get_mut(id) {
            Some(true) => {}
            Some(slot) => {
                *slot = true;
                distinct.push(&f.label);
            }
            None => distinct.push(&f.label),
        }
    }
    if count == 0 {
        return None;
    }
    let mut label = rollup(distinct.iter().copied());
    if distinct.len() == 1 && count > 1 && !is_plain_unclassified_fixed_point(&label) {
        label = label.join(&label);
    }
    Some(label)
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
    /// Letters seen as `(A)`, `(B)`, …: a `(C)` after `(A)` and `(B)` is a list item.
    list_letters: [bool; 26],
    /// Detection results by candidate text, with an id per distinct text: documents repeat
    /// the same markings.
    cache: FxMap<String, Option<(Label, bool, usize)>>,
    /// For each marking found, the id of its text (`usize::MAX` when it was not cached).
    ids: Vec<usize>,
    /// Where the next `//` at or after the current line starts (`usize::MAX`: none left), so
    /// that lines without one skip the separator scan after a single search of the text.
    next_separator: usize,
    /// The line being scanned, without its `\n`.
    line: Range<usize>,
    /// Where the current line's lead-in ends, once a marking on it asked.
    lead_in_end: Option<usize>,
    /// Whether the current line is a table row that lists markings (rule 0), once asked.
    row_lists_markings: Option<bool>,
    /// The index in `found` of the current line's first marking.
    line_first: usize,
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

    fn is_disguised(&self, r: &Range<usize>) -> bool {
        let span = self.original_span(r);
        self.original.get(span).is_some_and(|s| !s.is_ascii())
    }

    /// Records the marking at `r` (in the folded view) on the current line.
    fn record(&mut self, r: Range<usize>, label: Label, form: Form, id: usize) {
        let placement = self.placement(&r);
        self.record_placed(r, label, form, id, placement);
    }

    /// Where the marking at `r` on the current line stands.
    fn placement(&mut self, r: &Range<usize>) -> Placement {
        // SECURITY: a disguised marking was written to be missed; wherever it stands, it marks.
        if self.is_disguised(r) {
            return Placement::Asserted;
        }
        // 0. A table row that lists markings (asked once per line).
        let lists = *self
            .row_lists_markings
            .get_or_insert_with(|| lists_markings(self.view, &self.line));
        if lists {
            return Placement::Mentioned;
        }
        let lead_in_end = match self.lead_in_end {
            Some(e) => e,
            None => {
                let e = skip_lead_in(self.view, self.line.start, self.line.end);
                self.lead_in_end = Some(e);
                e
            }
        };
        // Folding writes look-alike letters as ASCII capitals (Cyrillic `н` as `H`): rule 7
        // asks the original text whether the word after a marking starts in upper case.
        let (original, map) = (self.original, self.map);
        let lower_in_original = |i: usize| {
            map.is_some_and(|m| {
                original
                    .get(m.original(i)..)
                    .and_then(|t| t.chars().next())
                    .is_some_and(char::is_lowercase)
            })
        };
        placement(self.view, &self.line, lead_in_end, r, &lower_in_original)
    }

    /// Records the marking at `r`, whose placement is known.
    fn record_placed(
        &mut self,
        r: Range<usize>,
        label: Label,
        form: Form,
        id: usize,
        placement: Placement,
    ) {
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
            placement,
        });
        self.ids.push(id);
    }

    /// Scans line by line: the line start, a bare banner, a labelled classification, then the
    /// `//` separators and the `(` of the rest of the line.
    fn scan_lines(&mut self) {
        // The view outlives the scanner's borrows: read it through its own reference.
        let view = self.view;
        let bytes = view.as_bytes();
        let len = bytes.len();
        // Line ends and parentheses are found in one pass over the text: a second pass for
        // `(` alone cost as much as the whole scan of prose without markings.
        let mut hits = memchr::memchr2_iter(b'\n', b'(', bytes);
        let mut parens: Vec<usize> = Vec::new();
        let mut start = 0;
        while start < len {
            parens.clear();
            let end = loop {
                match hits.next() {
                    Some(i) if bytes.get(i) == Some(&b'(') => {
                        // `try_paren` reads one to three letters and a `)`: keep only those, so
                        // that `(estimated)` and runs of `((((` cost nothing more.
                        let closes = |n: usize| bytes.get(i + n) == Some(&b')');
                        if bytes.get(i + 1).is_some_and(u8::is_ascii_alphabetic)
                            && (closes(2) || closes(3) || closes(4))
                        {
                            parens.push(i);
                        }
                    }
                    Some(i) => break i,
                    None => break len,
                }
            };
            self.line = start..end;
            self.lead_in_end = None;
            self.row_lists_markings = None;
            let first = self.found.len();
            self.line_first = first;
            let (from, portion) = self.scan_line_start(start, end);
            if !portion {
                if end - start <= 40 {
                    self.scan_bare_banner(start, end);
                }
                if end - start <= MAX_LABELLED_LINE_BYTES && self.found.len() == first {
                    self.scan_labelled_banner(from, end);
                }
                if self.found.len() == first {
                    self.scan_leading_classification(from, end);
                }
            }
            // A `//` never spans lines, so a line with none in it has nothing for
            // `scan_separators`, which would find nothing at or after `from` either.
            if self.next_separator < start {
                self.next_separator = SEPARATOR
                    .find(bytes.get(start..).unwrap_or_default())
                    .map_or(usize::MAX, |i| start + i);
            }
            if self.next_separator < end {
                self.scan_separators(from, end);
            }
            let separated = self.found.len();
            if !parens.is_empty() {
                self.scan_parens(&parens, from, end);
                if separated > first && self.found.len() > separated {
                    self.sort_line(first);
                }
            }
            start = end + 1;
        }
    }

    /// Puts the markings of the current line (from index `first`) in text order: the separator
    /// and parenthesis scans each go left to right, one after the other.
    fn sort_line(&mut self, first: usize) {
        let found = self.found.split_off(first.min(self.found.len()));
        let ids = self.ids.split_off(first.min(self.ids.len()));
        let mut line: Vec<(Found, usize)> = found.into_iter().zip(ids).collect();
        line.sort_by_key(|(f, _)| f.span.start);
        for (f, id) in line {
            self.found.push(f);
            self.ids.push(id);
        }
    }

    /// Reads a portion mark at the start of the line, after its lead-in. Returns where the rest
    /// of the line starts (after the lead-in, or after the portion mark) and whether a portion
    /// mark was found.
    fn scan_line_start(&mut self, start: usize, end: usize) -> (usize, bool) {
        let mut i = start;
        loop {
            let lead_in = i;
            i = skip_lead_in(self.view, i, end);
            self.note_list_letters(lead_in, i);
            if i >= end || self.bytes().get(i) != Some(&b'(') {
                return (i, false);
            }
            if let Some(after) = self.line_start_portion(i, end) {
                return (after, true);
            }
            // `(C)` continuing a lettered list, `(C) 2024`: a list item, not a marking; a
            // portion mark may follow it.
            let bytes = self.bytes();
            let letter_item = bytes.get(i + 1).is_some_and(u8::is_ascii_alphabetic)
                && bytes.get(i + 2) == Some(&b')')
                && matches!(bytes.get(i + 3), Some(b' ' | b'\t' | b'('));
            if !letter_item {
                return (i, false);
            }
            i += 3;
        }
    }

    /// Notes the lettered-list items `(A)`, `(b)`, … in the lead-in `from..to`.
    fn note_list_letters(&mut self, from: usize, to: usize) {
        let lead_in = self.bytes().get(from..to).unwrap_or_default();
        let mut letters = [false; 26];
        for w in lead_in.windows(3) {
            if let [b'(', letter, b')'] = *w
                && letter.is_ascii_alphabetic()
                && let Some(seen) = letters.get_mut(usize::from(letter.to_ascii_uppercase() - b'A'))
            {
                *seen = true;
            }
        }
        for (seen, new) in self.list_letters.iter_mut().zip(letters) {
            *seen |= new;
        }
    }

    /// The portion mark whose `(` is at `i`, at the start of a line; returns where it ends.
    fn line_start_portion(&mut self, i: usize, end: usize) -> Option<usize> {
        let bytes = self.bytes();
        let limit = end.min(i + MAX_CANDIDATE_BYTES);
        let close = bytes
            .get(i..limit)
            .and_then(|w| memchr::memchr(b')', w))
            .map(|j| i + j)?;
        let inner = self.view.get(i + 1..close).unwrap_or_default().trim();
        if inner.len() == 1 {
            let &letter = inner.as_bytes().first()?;
            if !self.single_letter_is_marking(i..close + 1, letter, true) {
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

    /// Whether the single letter in parentheses at `r` is a portion mark: `(U)`, `(C)` or `(S)`
    /// in upper case, unless it continues a lettered list or is the copyright sign. At a line
    /// start (`line_start`) a disguised letter of any case counts.
    fn single_letter_is_marking(&mut self, r: Range<usize>, letter: u8, line_start: bool) -> bool {
        let upper = letter.to_ascii_uppercase();
        let Some(idx) = upper.checked_sub(b'A').map(usize::from) else {
            return false;
        };
        // SECURITY: only a complete run `(A)`, `(B)`, … up to the letter before makes a list;
        // one `(R)` before `(S)` does not hide a SECRET portion.
        let continues_list = idx > 0
            && self
                .list_letters
                .get(..idx)
                .is_some_and(|seen| seen.iter().all(|&s| s));
        if let Some(seen) = self.list_letters.get_mut(idx) {
            *seen = true;
        }
        if line_start && self.is_disguised(&r) {
            return true;
        }
        letter.is_ascii_uppercase()
            && !continues_list
            && matches!(upper, b'U' | b'C' | b'S')
            && !(upper == b'C' && self.is_copyright(&r))
    }

    /// Whether the `(C)` at `r` is the copyright sign: before a four-digit year
    /// (`(C) 2024 Acme`) or beside the word `copyright` (`Copyright (C) …`, `(C) Copyright …`).
    fn is_copyright(&self, r: &Range<usize>) -> bool {
        let line = self.line.clone();
        let after = self
            .view
            .get(r.end..line.end)
            .unwrap_or_default()
            .trim_start();
        let year = after.len() >= 4
            && after.as_bytes().iter().take(4).all(u8::is_ascii_digit)
            && !after.as_bytes().get(4).is_some_and(u8::is_ascii_digit);
        let word = "copyright";
        let starts_with_word = after
            .get(..word.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(word));
        let before = self
            .view
            .get(line.start..r.start)
            .unwrap_or_default()
            .trim_end();
        let ends_with_word = before.len() >= word.len()
            && before
                .get(before.len() - word.len()..)
                .is_some_and(|w| w.eq_ignore_ascii_case(word));
        year || starts_with_word || ends_with_word
    }

    /// A short line that is only a classification: `SECRET`, `TOP SECRET`, `CUI`, also after
    /// the line's lead-in (`- SECRET`, `> SECRET`) and before trailing emphasis or quotes.
    fn scan_bare_banner(&mut self, start: usize, end: usize) {
        let from = skip_lead_in(self.view, start, end);
        let line = self.view.get(from..end).unwrap_or_default();
        let trimmed = line.trim_end_matches(|c: char| {
            c.is_whitespace()
                || matches!(
                    c,
                    '*' | '#' | '_' | '=' | '-' | '"' | '\'' | '`' | '|' | '”' | '’' | '»' | '›'
                )
        });
        if trimmed.is_empty() {
            return;
        }
        let spaced;
        let text = match bare_banner(trimmed).or_else(|| spelled_out_banner(trimmed)) {
            Some(text) => text,
            None => match spaced_banner(trimmed) {
                Some(text) => {
                    spaced = text;
                    spaced.as_str()
                }
                None => return,
            },
        };
        if let Ok(m) = parse_marking(text, Mode::Detect, None) {
            self.record(
                from..from + trimmed.len(),
                m.label,
                Form::Banner,
                usize::MAX,
            );
        }
    }

    /// A classification in upper case after a label of one to three words and a colon, on a
    /// short line: `Classification: SECRET`, `CLASSIFICATION: TOP SECRET`.
    fn scan_labelled_banner(&mut self, from: usize, end: usize) {
        let Some(line) = self.view.get(from..end) else {
            return;
        };
        let Some(colon) = memchr::memrchr(b':', line.as_bytes()) else {
            return;
        };
        let (Some(key), Some(value)) = (line.get(..colon), line.get(colon + 1..)) else {
            return;
        };
        let words = key.split_ascii_whitespace().count();
        let key_is_label = (1..=3).contains(&words)
            && key.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && key
                .bytes()
                .all(|b| b.is_ascii_alphabetic() || matches!(b, b' ' | b'\t' | b'-'));
        if !key_is_label {
            return;
        }
        let lead = value.len() - value.trim_start().len();
        let trimmed = value.trim_start().trim_end_matches(|c: char| {
            c.is_ascii_whitespace() || matches!(c, '*' | '_' | '.' | '"' | '\'')
        });
        if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_uppercase() || b == b' ') {
            return;
        }
        let Some(text) = bare_banner(trimmed) else {
            return;
        };
        let at = from + colon + 1 + lead;
        if let Ok(m) = parse_marking(text, Mode::Detect, None) {
            self.record(at..at + trimmed.len(), m.label, Form::Banner, usize::MAX);
        }
    }

    /// A classification in upper case that opens a line of any length (after its lead-in), or
    /// follows a label of one to three words and a colon there, and is followed by a colon or
    /// a dash and then text: `CONFIDENTIAL: the embassy guard …`, `SECRET - the convoy …`,
    /// `Status: CONFIDENTIAL - the hangar door …`. The classification heads the text after it
    /// as a banner heads a page, so it is a banner there.
    fn scan_leading_classification(&mut self, from: usize, end: usize) {
        const LEVELS: [&str; 4] = ["TOP SECRET", "SECRET", "CONFIDENTIAL", "CUI"];
        let Some(line) = self.view.get(from..end) else {
            return;
        };
        // Where the classification may stand: the line's start, or after a label and a colon.
        let mut offsets = [Some(0), None];
        if let Some(colon) = line.get(..40.min(line.len())).and_then(|l| l.find(':'))
            && let Some(key) = line.get(..colon)
        {
            let words = key.split_ascii_whitespace().count();
            if (1..=3).contains(&words)
                && key.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphabetic() || matches!(b, b' ' | b'-'))
            {
                let value = line.get(colon + 1..).unwrap_or_default();
                offsets[1] = Some(colon + 1 + (value.len() - value.trim_start().len()));
            }
        }
        for at in offsets.into_iter().flatten() {
            let rest = line.get(at..).unwrap_or_default();
            let Some(level) = LEVELS.iter().find(|l| rest.starts_with(*l)) else {
                continue;
            };
            let after = rest.get(level.len()..).unwrap_or_default();
            let gap = after.len() - after.trim_start().len();
            let after = after.trim_start();
            let Some(sep) = after
                .chars()
                .next()
                .filter(|c| matches!(c, ':' | '-' | '–' | '—'))
            else {
                continue;
            };
            let text = after.get(sep.len_utf8()..).unwrap_or_default();
            // A colon may touch the classification; a dash must stand apart (`SECRET-X` is a
            // word), and text must follow, after white space.
            let spaced = |s: &str| s.starts_with([' ', '\t']);
            if (sep != ':' && gap == 0) || !spaced(text) {
                continue;
            }
            if !text.trim_start().starts_with(|c: char| c.is_alphanumeric()) {
                continue;
            }
            if let Ok(m) = parse_marking(level, Mode::Detect, None) {
                let start = from + at;
                self.record(
                    start..start + level.len(),
                    m.label,
                    Form::Banner,
                    usize::MAX,
                );
            }
            return;
        }
    }

    /// Portion marks without `//` standing as words in `from..end`, at the `(` of the line
    /// (`parens`, in order): `(TS)`, `(S)`, `(C)`, `(U)`, `(CUI)`.
    fn scan_parens(&mut self, parens: &[usize], from: usize, end: usize) {
        let mut at = from;
        for &p in parens {
            if p < at {
                continue;
            }
            at = self.try_paren(p, end).unwrap_or(p + 1);
        }
    }

    /// Tries to read a portion mark without `//` at the `(` at `p`; returns where it ends if
    /// one was found.
    fn try_paren(&mut self, p: usize, end: usize) -> Option<usize> {
        // The view outlives the scanner's borrows: read it through its own reference.
        let view = self.view;
        let bytes = view.as_bytes();
        let inner_len = bytes
            .get(p + 1..end)?
            .iter()
            .take(4)
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        if inner_len == 0 || inner_len > 3 || bytes.get(p + 1 + inner_len) != Some(&b')') {
            return None;
        }
        let close = p + 1 + inner_len;
        if !may_open_word(self.view, self.line.start, p)
            || !may_close_word(self.view, close + 1, end)
        {
            return None;
        }
        let inner = bytes.get(p + 1..close)?;
        if let [letter] = *inner {
            if !self.single_letter_is_marking(p..close + 1, letter, false) {
                return None;
            }
        } else if !matches!(inner, b"TS" | b"CUI") {
            return None;
        }
        let candidate = self.view.get(p..=close)?;
        let (label, _, id) = self.detect(candidate)?;
        let at = self.original_span(&(p..p)).start;
        let line_found = self.found.get(self.line_first..).unwrap_or_default();
        if line_found.iter().any(|f| f.span.contains(&at)) {
            // Inside a marking the separator scan already read.
            return None;
        }
        // `Exhibit (S) is withheld`, `Equation (S) defines …`: a letter naming an item.
        if let [letter] = *inner
            && !self.is_disguised(&(p..close + 1))
            && names_an_item(
                self.view.get(self.line.start..p).unwrap_or_default(),
                letter,
            )
            && follows_item_name(self.view.get(close + 1..end).unwrap_or_default())
        {
            return None;
        }
        let placement = self.placement(&(p..close + 1));
        // `time series (TS)`, `TypeScript (TS)`, `size small (S)`: a sentence defining an
        // abbreviation, not talking about a marking. SECURITY: this only ever drops a mention;
        // an asserted mark is recorded whatever the words before it.
        if placement == Placement::Mentioned
            && defines_abbreviation(self.view.get(self.line.start..p).unwrap_or_default(), inner)
        {
            return None;
        }
        self.record_placed(p..close + 1, label, Form::Portion, id, placement);
        Some(close + 1)
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
        let mut window_start = i.saturating_sub(24).max(line_start);
        // SECURITY: a window that starts inside a character would read as empty and miss the
        // classification (`这份文件标记为 SECRET//NOFORN`): start at the next character.
        while !self.view.is_char_boundary(window_start) {
            window_start += 1;
        }
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

/// The banner a short line writes with spaces for its `//`: a classification in upper case and
/// then nothing but controls (`SECRET NOFORN`, `TOP SECRET SI NOFORN`), ready for the parser as
/// `SECRET//NOFORN`, `TOP SECRET//SI//NOFORN`.
fn spaced_banner(trimmed: &str) -> Option<String> {
    const LEVELS: [&str; 4] = ["TOP SECRET", "SECRET", "CONFIDENTIAL", "UNCLASSIFIED"];
    #[rustfmt::skip]
    const CONTROLS: [&str; 14] = [
        "NOFORN", "ORCON", "IMCON", "PROPIN", "RELIDO", "FOUO", "FISA", "SCI", "SI", "TK", "HCS",
        "NF", "OC", "LES",
    ];
    let level = LEVELS.iter().find(|l| trimmed.starts_with(*l))?;
    let rest = trimmed.get(level.len()..)?;
    if !rest.starts_with(' ') {
        return None;
    }
    let controls: Vec<&str> = rest.split_whitespace().collect();
    if controls.is_empty() || !controls.iter().all(|c| CONTROLS.contains(c)) {
        return None;
    }
    Some(format!("{level}//{}", controls.join("//")))
}

/// The classification a short line spells letter by letter, one letter per word (`T O P S E C
/// R E T`, `s e c r e t`): a disguise of a banner line, so it is read as one.
fn spelled_out_banner(trimmed: &str) -> Option<&'static str> {
    const SPELLED: [(&str, &str); 3] = [
        ("TOPSECRET", "TOP SECRET"),
        ("SECRET", "SECRET"),
        ("CONFIDENTIAL", "CONFIDENTIAL"),
    ];
    let mut letters = String::new();
    for word in trimmed.split_whitespace() {
        let [letter] = word.as_bytes() else {
            return None;
        };
        if !letter.is_ascii_alphabetic() {
            return None;
        }
        letters.push(char::from(letter.to_ascii_uppercase()));
    }
    SPELLED
        .iter()
        .find(|(spelled, _)| *spelled == letters)
        .map(|&(_, text)| text)
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

// === the lead-in of a line ===

/// Where the lead-in of the line `from..end` ends: white space, quote marks, bullets, rules,
/// heading, emphasis and table marks, and enumerators (see the module documentation).
fn skip_lead_in(view: &str, from: usize, end: usize) -> usize {
    let bytes = view.as_bytes();
    let mut i = from;
    while i < end {
        let Some(&b) = bytes.get(i) else {
            break;
        };
        if b.is_ascii() {
            if matches!(
                b,
                b' ' | b'\t'
                    | b'\r'
                    | b'>'
                    | b'-'
                    | b'*'
                    | b'+'
                    | b'#'
                    | b'|'
                    | b'_'
                    | b'='
                    | b'~'
                    | b'"'
                    | b'\''
                    | b'`'
            ) {
                i += 1;
                continue;
            }
            match enumerator_len(bytes.get(i..end).unwrap_or_default()) {
                Some(n) => i += n,
                None => break,
            }
        } else {
            match view.get(i..end).and_then(|s| s.chars().next()) {
                Some(c) if is_lead_in_char(c) => i += c.len_utf8(),
                _ => break,
            }
        }
    }
    i
}

/// Non-ASCII quote marks, bullets and white space that may stand before a paragraph's text.
fn is_lead_in_char(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '“' | '”'
                | '‘'
                | '’'
                | '„'
                | '«'
                | '»'
                | '‹'
                | '›'
                | '•'
                | '◦'
                | '▪'
                | '‣'
                | '·'
                | '●'
                | '○'
                | '■'
                | '□'
                | '►'
                | '▸'
                | '→'
                | '⁃'
                | '∙'
        )
}

/// The length of the enumerator `s` starts with, when it is followed by white space or `(`:
/// `1.`, `1)`, `1.2.3`, `a)`, `A.`, `iv.`, `(a)`, `(12)`, `(iv)`, `(B)`. A letter in
/// parentheses that may be a portion mark (`(U)`, `(C)`, `(S)`) is not an enumerator.
fn enumerator_len(s: &[u8]) -> Option<usize> {
    let followed = |n: usize| matches!(s.get(n), Some(b' ' | b'\t' | b'(')).then_some(n);
    let first = *s.first()?;
    if first == b'(' {
        let rest = s.get(1..)?;
        let inner = rest
            .iter()
            .take(5)
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        if inner == 0 || inner > 4 || rest.get(inner) != Some(&b')') {
            return None;
        }
        let word = rest.get(..inner)?;
        let enumerator = match word {
            [b'U' | b'C' | b'S'] => false,
            [b] => b.is_ascii_alphanumeric(),
            _ => word.iter().all(u8::is_ascii_digit) || is_roman(word),
        };
        return if enumerator {
            followed(inner + 2)
        } else {
            None
        };
    }
    if first.is_ascii_digit() {
        let mut n = 0;
        let mut groups = 0;
        loop {
            let digits = s
                .get(n..)?
                .iter()
                .take(5)
                .take_while(|b| b.is_ascii_digit())
                .count();
            if digits == 0 || digits > 4 {
                return None;
            }
            n += digits;
            groups += 1;
            match s.get(n) {
                Some(b'.') if s.get(n + 1).is_some_and(u8::is_ascii_digit) && groups < 6 => {
                    n += 1;
                }
                Some(b'.' | b')') => return followed(n + 1),
                _ if groups > 1 => return followed(n),
                _ => return None,
            }
        }
    }
    if first.is_ascii_alphabetic() {
        // Most lines open with a word: two letters, the first not a roman numeral, end it here.
        if s.get(1).is_some_and(u8::is_ascii_alphabetic) && !b"ivxlcdmIVXLCDM".contains(&first) {
            return None;
        }
        let run = s
            .iter()
            .take(7)
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        let word = s.get(..run)?;
        let enumerator = run == 1 || (run <= 6 && is_roman(word));
        if enumerator && matches!(s.get(run), Some(b'.' | b')')) {
            return followed(run + 1);
        }
    }
    None
}

/// Whether `word` is made of roman-numeral letters of one case (`iv`, `XII`).
fn is_roman(word: &[u8]) -> bool {
    !word.is_empty()
        && (word.iter().all(|b| b"ivxlcdm".contains(b))
            || word.iter().all(|b| b"IVXLCDM".contains(b)))
}

/// Whether a `(` at `p` on the line starting at `line_start` may open a word: at the line start,
/// or after white space, a quote mark, a bracket, emphasis, a bullet or punctuation that may
/// precede a word — not after a letter, a digit, a slash or a dot (`file(s)`, `x/(S)`).
fn may_open_word(view: &str, line_start: usize, p: usize) -> bool {
    if p <= line_start {
        return true;
    }
    match view.get(..p).and_then(|s| s.chars().next_back()) {
        None => true,
        Some(c) if c.is_ascii() => {
            c.is_ascii_whitespace()
                || matches!(
                    c,
                    '"' | '\'' | '`' | '[' | '(' | '*' | '_' | '|' | '-' | ',' | ';' | ':' | '>'
                )
        }
        Some(c) => !c.is_alphanumeric(),
    }
}

/// Whether a word may end before `i` (a `)` closed at `i - 1`): at the line end `end`, or before
/// white space or punctuation — not before a letter, a digit or a slash.
fn may_close_word(view: &str, i: usize, end: usize) -> bool {
    if i >= end {
        return true;
    }
    match view.get(i..).and_then(|s| s.chars().next()) {
        None => true,
        Some(c) if c.is_ascii() => {
            c.is_ascii_whitespace()
                || matches!(
                    c,
                    '.' | ','
                        | ';'
                        | ':'
                        | '!'
                        | '?'
                        | '"'
                        | '\''
                        | '`'
                        | ')'
                        | ']'
                        | '*'
                        | '_'
                        | '|'
                        | '-'
                )
        }
        Some(c) => !c.is_alphanumeric(),
    }
}

/// Whether the letters `short` (of `(TS)`, `(S)`, …) abbreviate the one to three words that end
/// `before`: the first letter starts the first of those words and the others follow in order
/// (the test of Schwartz and Hearst's abbreviation finder), and the words are not a
/// classification's title (`Top Secret (TS)` names the marking).
fn defines_abbreviation(before: &str, short: &[u8]) -> bool {
    const TITLES: [&str; 4] = ["SECRET", "CONFIDENTIAL", "UNCLASSIFIED", "CONTROLLED"];
    let before = before.trim_end();
    let tail = before
        .get(before.len().saturating_sub(MAX_LOOKBEHIND_BYTES)..)
        .unwrap_or_default();
    let words: Vec<&str> = tail.split_whitespace().rev().take(3).collect();
    (1..=words.len().min(short.len().max(1))).any(|k| {
        let long: Vec<&str> = words.iter().take(k).rev().copied().collect();
        let all_letters = long
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-'));
        let upper = long.join(" ").to_ascii_uppercase();
        if !all_letters || TITLES.iter().any(|t| upper.contains(t)) {
            return false;
        }
        let mut letters = upper.bytes().filter(u8::is_ascii_alphabetic);
        let (Some(&first), Some(start)) = (short.first(), letters.next()) else {
            return false;
        };
        first.eq_ignore_ascii_case(&start)
            && short
                .iter()
                .skip(1)
                .all(|c| letters.any(|l| l.eq_ignore_ascii_case(c)))
    })
}

/// Whether `before` (the line up to a `(` holding `letter`) ends in a noun that names items by
/// letters, one space before the parenthesis: `Exhibit (S)`, `Equation (S)`, `Annex (C)`,
/// `option (U)`. CAPCO writes a portion mark before the text of its portion or right after a
/// paragraph number or title, never between a noun and the verb of its sentence; after such a
/// noun the letter is the item's name, as a copyright sign or a lettered list item is.
fn names_an_item(before: &str, letter: u8) -> bool {
    #[rustfmt::skip]
    const NOUNS: [&str; 36] = [
        "exhibit", "equation", "eq", "figure", "fig", "table", "appendix", "annex", "attachment",
        "enclosure", "schedule", "section", "subsection", "paragraph", "subparagraph", "clause",
        "article", "part", "item",
        "option", "version", "case", "step", "phase", "model", "scenario", "formula", "chart",
        "diagram", "tab", "footnote", "column", "row", "plate", "volume", "chapter",
    ];
    if !matches!(letter, b'U' | b'C' | b'S') {
        return false;
    }
    let Some(word_end) = before.strip_suffix(' ') else {
        return false;
    };
    let start = word_end
        .rfind(|c: char| !c.is_ascii_alphabetic())
        .map_or(0, |i| i + 1);
    let word = word_end.get(start..).unwrap_or_default();
    // Title or lower case only: `EXHIBIT (S)` in capitals may be a heading before its portion.
    let cased = word.bytes().skip(1).all(|b| b.is_ascii_lowercase());
    cased && NOUNS.contains(&word.to_ascii_lowercase().as_str())
}

/// Whether `after` (the line after the `)` of a lettered item's name) goes on with a verb or a
/// preposition of the sentence the item is the subject or object of: `Exhibit (S) is withheld`,
/// `Equation (S) defines`, `Option (C) was chosen`, `Version (C) of the draft`. SECURITY: only
/// words from this closed list, after one space: `Exhibit (S) The convoy …`, `Annex (S) the
/// convoy …`, `Annex (S) convoy leaves …`, a line end or punctuation leave the mark to the
/// placement rules.
fn follows_item_name(after: &str) -> bool {
    #[rustfmt::skip]
    const WORDS: [&str; 58] = [
        "is", "was", "are", "were", "has", "had", "have", "will", "would", "shall", "may", "must",
        "can", "could", "should", "shows", "showed", "defines", "defined", "lists", "listed",
        "contains", "contained", "describes", "described", "gives", "gave", "sets", "states",
        "stated", "provides", "provided", "covers", "applies", "holds", "refers", "summarizes",
        "illustrates", "depicts", "compares", "presents", "includes", "requires", "remains",
        "of", "in", "on", "from", "to", "for", "with", "and", "or", "at", "by", "under", "above",
        "below",
    ];
    let Some(rest) = after.strip_prefix(' ') else {
        return false;
    };
    let word = rest
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default();
    WORDS.contains(&word)
}

// === placement ===

/// Whether the marking at `r` (not disguised) on `line`, whose lead-in ends at `lead_in_end`,
/// is asserted or mentioned: the rules of the module documentation, in their order.
///
/// `lower_in_original` tells whether the character at a byte offset of `view` is a lower-case
/// letter in the original text (where folding turned a look-alike into an ASCII capital).
fn placement(
    view: &str,
    line: &Range<usize>,
    lead_in_end: usize,
    r: &Range<usize>,
    lower_in_original: &dyn Fn(usize) -> bool,
) -> Placement {
    use Placement::{Asserted, Mentioned};
    // 1. Line start.
    if r.start <= lead_in_end {
        return Asserted;
    }
    let mut lo = lead_in_end.max(r.start.saturating_sub(MAX_LOOKBEHIND_BYTES));
    while !view.is_char_boundary(lo) {
        lo += 1;
    }
    let lead = view.get(lo..r.start).unwrap_or_default();
    let after = view.get(r.end..line.end).unwrap_or_default();
    let before = lead.trim_end_matches(|c: char| c.is_whitespace() || is_opener(c));
    let gap_before = lead.get(before.len()..).unwrap_or_default();
    let prev = before.chars().next_back();
    let rest = after.trim_start_matches(|c: char| c.is_whitespace() || is_opener(c));
    let gap_after = after.get(..after.len() - rest.len()).unwrap_or_default();
    // 2. Sentence start (a table cell included), unless the sentence is a short question or
    // instruction about the marking that ends its paragraph (2a).
    if !in_sentence(lead) {
        let truncated = lo > lead_in_end;
        return if !truncated && is_short_question_object(view, line, lead, after) {
            Mentioned
        } else {
            Asserted
        };
    }
    // 3. Quoted term.
    let quoted = lead.chars().next_back().is_some_and(is_opening_quote)
        && after.chars().next().is_some_and(is_closing_quote);
    if quoted {
        return Mentioned;
    }
    // 3b. Opens a quotation: a quote mark right before it, and words after it inside the quote
    // that are not all about markings: `copy the line '(S//NF) crypto keys for net BLUE …' into
    // the chat` pastes a marked portion; `what does "(S//NF) material" mean?` does not.
    if lead.chars().next_back().is_some_and(is_opening_quote) {
        let inside = after
            .find(is_closing_quote)
            .map_or(after, |close| after.get(..close).unwrap_or_default());
        let inside = inside.trim_end_matches(|c: char| {
            c.is_whitespace() || matches!(c, '.' | ',' | '?' | '!' | ';' | ':')
        });
        let words =
            inside.starts_with(char::is_whitespace) && inside.chars().any(char::is_alphanumeric);
        if words && !tail_is_about_markings(inside) {
            return Asserted;
        }
    }
    // 4. After punctuation.
    let continues = prev.is_some_and(|c| {
        c.is_alphanumeric() || matches!(c, ',' | ')' | ']' | '”' | '’' | '»' | '›')
    });
    if !continues {
        return Asserted;
    }
    // 5. Column layout.
    if is_layout_gap(gap_before) || (!rest.is_empty() && is_layout_gap(gap_after)) {
        return Asserted;
    }
    // 6. Heads the lines below.
    if after.trim().is_empty() {
        return if next_line_is_blank(view, line.end) {
            Mentioned
        } else {
            Asserted
        };
    }
    // 7. Opens text — past the words of a marking that its parse stopped before
    // (`SECRET//REL TO FVEY`, `//GBR SECRET//EYES ONLY`): they are the marking's, not text.
    let rest = skip_marking_words(rest);
    if rest.trim().is_empty() {
        return if next_line_is_blank(view, line.end) {
            Mentioned
        } else {
            Asserted
        };
    }
    // A colon after it introduces the text it marks, on its line or below it: `Paraphrase the
    // text marked (S//NF): the source is …`, as `Classification: SECRET` labels a document.
    if let Some(tail) = rest.strip_prefix(':') {
        return if tail.trim().is_empty() && next_line_is_blank(view, line.end) {
            Mentioned
        } else {
            Asserted
        };
    }
    let rest_at = line.end.saturating_sub(rest.len());
    match rest.chars().next() {
        Some(c) if c.is_ascii_digit() => Asserted,
        Some(c) if c.is_ascii_uppercase() && !lower_in_original(rest_at) => Asserted,
        _ if opens_clause(rest) => Asserted,
        _ => Mentioned,
    }
}

/// `rest` past the upper-case words of a marking at its start, with the spaces, commas and
/// slashes between them: `FVEY? The guide` gives `? The guide`, `EYES ONLY banners.` gives
/// `banners.`. A word of a marking is a registered country code or one of
/// [`is_marking_token`]'s and [`MARKING_PHRASE_WORDS`]. SECURITY: what comes after them still
/// goes through rule 7, so `SECRET//REL TO FVEY The convoy …` stays asserted.
fn skip_marking_words(rest: &str) -> &str {
    let mut rest = rest;
    loop {
        let len = rest
            .find(|c: char| !c.is_ascii_uppercase())
            .unwrap_or(rest.len());
        let word = rest.get(..len).unwrap_or_default();
        let is_marking_word = len >= 2
            && (is_marking_token(word)
                || MARKING_PHRASE_WORDS.contains(&word)
                || registry::Country::from_code(word).is_some());
        let after = rest.get(len..).unwrap_or_default();
        // A word ends at white space, punctuation or the end, not inside `FVEYs`.
        if !is_marking_word || after.starts_with(|c: char| c.is_alphanumeric()) {
            return rest;
        }
        let next = after.trim_start_matches([' ', ',', '/', '-']);
        if next.len() == after.len() || next.is_empty() {
            return after;
        }
        rest = next;
    }
}

/// Words that stand in the titles of markings besides [`is_marking_token`]'s: `REL TO`, `EYES
/// ONLY`, `FOR OFFICIAL USE ONLY`, `RESTRICTED DATA`, `LAW ENFORCEMENT SENSITIVE`.
#[rustfmt::skip]
const MARKING_PHRASE_WORDS: [&str; 10] = [
    "TO", "ONLY", "FOR", "OFFICIAL", "USE", "DATA", "FORMERLY", "SENSITIVE", "LAW", "ENFORCEMENT",
];

/// Rule 7, second half: whether `rest` (the text after a marking) starts with a word that opens
/// a noun phrase or a clause of its own — an article, a possessive or a personal pronoun: `Fix
/// grammar (TS) the general moves north`, `Shorten SECRET//NOFORN we attack at dawn`. A marking
/// talked about is a noun or an adjective inside its sentence (`marked (TS) must be stored`,
/// `a (C) portion`); followed by a new subject it stands between an instruction and the text it
/// marks, which is where a portion mark is written (CAPCO: before the text of the portion).
/// SECURITY: this only turns mentions into assertions; `Why is (S//NF) the default?` is refused
/// as the price of reading `Fix grammar (TS) the general …` as the content it is.
fn opens_clause(rest: &str) -> bool {
    const OPENERS: [&str; 16] = [
        "the", "a", "an", "our", "their", "his", "her", "my", "your", "we", "they", "he", "she",
        "i", "these", "those",
    ];
    let word = rest
        .split(|c: char| !(c.is_ascii_alphabetic() || c == '\''))
        .next()
        .unwrap_or_default();
    // Only a whole word: `the` in `there` is not one.
    OPENERS.contains(&word)
}

/// Rule 0: whether `line` is a row of a markdown table, below another row, whose cells (at
/// least two that are not empty) hold nothing but markings and the words of markings: `|
/// SECRET | (S) |`, `| SECRET//NOFORN | (S//NF) |`. A portion mark marks the text of its
/// portion, a marking in a table cell the row it stands in; a row with no text but markings
/// marks nothing, so it lists them. SECURITY: a row with any other word in it (`| 3rd Bn |
/// (S//NF) |`), a single cell (a banner framed as a table), and the first row of a table (a
/// header that may head the rows below it) keep their markings asserted; and a disguised marking
/// is asserted before this rule is asked.
fn lists_markings(view: &str, line: &Range<usize>) -> bool {
    let Some(text) = view.get(line.clone()) else {
        return false;
    };
    let row = |t: &str| t.trim_start().starts_with('|');
    if !row(text) {
        return false;
    }
    let previous = line
        .start
        .checked_sub(1)
        .and_then(|end| view.get(..end))
        .and_then(|before| before.rsplit('\n').next());
    if !previous.is_some_and(row) {
        return false;
    }
    let cells: Vec<&str> = text
        .split('|')
        .map(|c| c.trim_matches(|c: char| c.is_whitespace() || matches!(c, '*' | '_' | '`')))
        .filter(|c| !c.is_empty())
        .collect();
    cells.len() >= 2 && cells.iter().all(|c| is_marking_cell(c))
}

/// Whether a table cell (trimmed) holds only a marking or the words of one: `(S//NF)`,
/// `SECRET//REL TO USA, GBR` (read completely by the parser), `Top Secret`, `NOFORN`, `REL TO`.
fn is_marking_cell(cell: &str) -> bool {
    if cell.len() <= MAX_CANDIDATE_BYTES
        && cell.contains(['/', '('])
        && detect_marking(cell).is_some_and(|(_, complete)| complete)
    {
        return true;
    }
    cell.split_whitespace().all(|w| {
        let upper = w.trim_end_matches(',').to_ascii_uppercase();
        (is_marking_token(&upper) && !upper.contains('/'))
            || MARKING_PHRASE_WORDS.contains(&upper.as_str())
    })
}

/// Rule 2a: whether the marking after `lead` (the text of its line before it, from the end of
/// the line's lead-in) and before `after` (the rest of its line) is the object of a short
/// question or instruction that ends the paragraph: `Explain (S//NF).`, `Define (TS//SI).`,
/// `Quick check: is CONFIDENTIAL//NOFORN a valid banner?`, `Clarify TOP SECRET//HCS for me.`
///
/// SECURITY: only the words that can talk about a marking may follow it, so nothing that could
/// be the text it marks does. Each condition holds:
/// - exactly one word of letters stands between the start of its sentence (the line's lead-in,
///   or `.`, `!`, `?`, `:` or `;` and white space — never a table cell's `|`) and the marking,
///   with a lower-case letter in it, then one space and at most an opening quote mark;
/// - after it (and at most a closing quote mark) come at most [`MAX_TAIL_WORDS`] words, each a
///   word about markings or a function word ([`is_meta_word`]) or a marking itself (`(S//REL TO
///   USA, FVEY)`, `TOP SECRET//SI`, `NOFORN`), separated by single spaces and commas; no digit,
///   no name, no other word;
/// - then the sentence ends with `.`, `?` or `!` — a banner line with a word before it has no
///   full stop — and nothing but white space follows on the line, and the next line is blank or
///   absent: no text of the same paragraph follows for the marking to mark.
fn is_short_question_object(view: &str, line: &Range<usize>, lead: &str, after: &str) -> bool {
    let Some(sentence) = sentence_of(lead) else {
        return false;
    };
    // One word, one space, at most an opening quote.
    let sentence = sentence.strip_suffix(is_opening_quote).unwrap_or(sentence);
    let Some(word) = sentence.strip_suffix(' ') else {
        return false;
    };
    let word = word.trim_start();
    let is_word = !word.is_empty()
        && word.bytes().all(|b| b.is_ascii_alphabetic() || b == b'\'')
        && word.bytes().any(|b| b.is_ascii_lowercase());
    if !is_word {
        return false;
    }
    let tail = after.strip_prefix(is_closing_quote).unwrap_or(after);
    let tail = tail.trim_end_matches([' ', '\t', '\r']);
    // The sentence end: `.`, `?`, `!` (repeated, as in `?!`), then at most a closing quote.
    let tail = tail.strip_suffix(is_closing_quote).unwrap_or(tail);
    let words = tail.trim_end_matches(['.', '?', '!']);
    if words.ends_with([' ', ',']) {
        return false;
    }
    // Chat often drops the final `?`: without it, words about markings must follow (`explain
    // (TS//SI) to me`), so that a banner after one word (`Explain SECRET//NOFORN`) still reads
    // as a banner heading what follows.
    if words.len() == tail.len() && words.trim().is_empty() {
        return false;
    }
    tail_is_about_markings(words) && next_line_is_blank(view, line.end)
}

/// The most words that may follow a marking in rule 2a.
const MAX_TAIL_WORDS: usize = 16;

/// Whether `words` (what follows a marking up to the end of its sentence) is empty or, after
/// one space, at most [`MAX_TAIL_WORDS`] words about markings, function words or markings,
/// separated by single spaces (a comma may end a word).
fn tail_is_about_markings(words: &str) -> bool {
    if words.is_empty() {
        return true;
    }
    // A comma may follow the marking itself: `write CUI//SP-CTI, not UNCLASSIFIED//CUI.`
    let words = words.strip_prefix(',').unwrap_or(words);
    let Some(mut rest) = words.strip_prefix(' ') else {
        return false;
    };
    let mut count = 0;
    while !rest.is_empty() {
        count += 1;
        if count > MAX_TAIL_WORDS {
            return false;
        }
        let token_len = if rest.starts_with('(') {
            // A portion mark, which may hold spaces: `(S//REL TO USA, FVEY)`.
            match rest.find(')') {
                Some(close) if close <= MAX_CANDIDATE_BYTES => {
                    let inner = rest.get(1..close).unwrap_or_default();
                    if !is_marking_token(inner) {
                        return false;
                    }
                    close + 1
                }
                _ => return false,
            }
        } else {
            let len = rest.find(' ').unwrap_or(rest.len());
            let token = rest.get(..len).unwrap_or_default();
            let token = token.strip_suffix(',').unwrap_or(token);
            if !(is_meta_word(token) || is_marking_token(token) || is_list_word(token)) {
                return false;
            }
            len
        };
        rest = rest.get(token_len..).unwrap_or_default();
        let after_comma = rest.strip_prefix(',').unwrap_or(rest);
        rest = match after_comma.strip_prefix(' ') {
            Some(next) if !next.starts_with(' ') && !next.is_empty() => next,
            None if after_comma.is_empty() => after_comma,
            _ => return false,
        };
    }
    true
}

/// Whether `token` is written as a marking: upper-case letters, digits, `/`, `-`, `,` and
/// spaces with a `//` in them (`TOP SECRET//SI`, `S//REL TO USA, FVEY`), or one of the words
/// of a marking (`NOFORN`, `CUI`, `TS`). SECURITY: an upper-case word that is not a marking's
/// (`KILO`, `GATE`) may be a code name, and a code name is content.
fn is_marking_token(token: &str) -> bool {
    #[rustfmt::skip]
    const WORDS: [&str; 36] = [
        "TOP", "SECRET", "CONFIDENTIAL", "UNCLASSIFIED", "RESTRICTED", "CUI", "TS", "S", "C", "U",
        "NATO", "COSMIC", "SCI", "SI", "TK", "HCS", "SAR", "NOFORN", "NF", "ORCON", "OC", "IMCON",
        "PROPIN", "RELIDO", "REL", "FOUO", "FISA", "FGI", "JOINT", "LES", "RD", "FRD", "FVEY",
        "SBU", "DISPLAY", "EYES",
    ];
    let separated = token.contains("//")
        && token.bytes().all(|b| {
            b.is_ascii_uppercase() || b.is_ascii_digit() || matches!(b, b'/' | b'-' | b',' | b' ')
        });
    separated || WORDS.contains(&token)
}

/// Whether `token` is an upper-case word of a marking's list or title that
/// [`is_marking_token`] does not hold: a registered country code (`USA`, `GBR`, `FVEY`) or
/// `TO`, `ONLY`, … (`SECRET//REL TO USA, AUS, CAN` split at its spaces).
fn is_list_word(token: &str) -> bool {
    token.len() >= 2
        && token.bytes().all(|b| b.is_ascii_uppercase())
        && (MARKING_PHRASE_WORDS.contains(&token) || registry::Country::from_code(token).is_some())
}

/// Whether `word` is a word that talks about a marking or a function word, in any case: the
/// only words that may follow a marking in rule 2a. None of them can carry the content of a
/// classified text.
fn is_meta_word(word: &str) -> bool {
    #[rustfmt::skip]
    const WORDS: &[&str] = &[
        // Articles, pronouns, prepositions, conjunctions, auxiliaries, negation.
        "a", "an", "the", "this", "that", "these", "those", "it", "its", "it's", "me", "us", "you",
        "i", "we", "they", "them", "one", "ones", "for", "to", "of", "in", "on", "by", "as",
        "than", "from", "into", "with", "without", "at", "about", "and", "or", "nor", "but", "not",
        "no",
        "is", "are", "was", "were", "be", "been", "being", "am", "do", "does", "did", "can",
        "could", "should", "would", "will", "may", "might", "must", "shall", "has", "have", "had",
        "so", "too", "also", "just", "ever", "even", "then", "still", "yet", "please", "again",
        "here", "there", "now", "really", "actually", "exactly", "briefly", "anymore", "any",
        "some", "all", "both", "either", "each", "what", "which", "how", "why", "when", "where",
        "who",
        // What is said about a marking.
        "mean", "means", "meant", "meaning", "stand", "stands", "refer", "refers", "valid",
        "invalid", "correct", "incorrect", "right", "wrong", "ok", "okay", "allowed", "permitted",
        "proper", "properly", "legal", "legit", "real", "official", "current", "obsolete",
        "deprecated", "outdated", "same", "different", "difference", "equivalent", "similar",
        "stricter", "looser", "higher", "lower", "above", "below", "more", "less", "restrictive",
        "used", "use", "needed", "required", "necessary", "written", "spelled", "abbreviated",
        "formatted", "ordered", "replaced", "retired", "new", "old", "marking", "markings", "mark",
        "marks", "banner", "banners", "portion", "portions", "caveat", "caveats", "control",
        "controls", "classification", "classifications", "level", "levels", "label", "labels",
        "category", "categories", "format", "form", "example", "examples", "abbreviation",
        "acronym", "spelling", "order", "syntax", "rule", "rules", "top", "secret", "confidential",
        "unclassified", "classified", "exist", "exists", "work", "works", "apply", "applies",
        "simply", "simple", "detail", "plain", "english", "terms", "words", "word",
        // Where a marking goes and what it does to a document (2026-12-07).
        "paragraph", "paragraphs", "document", "documents", "page", "pages", "header", "footer",
        "line", "lines", "whole", "entire", "every", "own", "only", "other", "another",
        "instead", "force", "forces", "restrict", "restricts", "allow", "allows", "include",
        "includes", "contain", "contains", "carry", "carries", "appear", "appears", "go", "goes",
        "come", "comes", "before", "after", "first", "last", "onto", "within", "under", "over",
        "if", "whether", "like", "such", "need", "needs", "put", "placed", "country", "i'm",
        "countries", "code", "codes", "list", "lists", "alphabetical", "releasable",
        "release", "foreign", "nationals", "partners", "email", "emails", "slide", "slides",
    ];
    let lower = word.to_ascii_lowercase();
    !word.is_empty() && WORDS.contains(&lower.as_str())
}

/// The words of the sentence that `lead` ends in: the text after the start of `lead`, a `.`,
/// `!`, `?`, `:` or `;` followed by white space; `None` when a table cell's `|` opens it.
fn sentence_of(lead: &str) -> Option<&str> {
    let mut next_is_space = false;
    for (i, c) in lead.char_indices().rev() {
        if c == '|' {
            return None;
        }
        if next_is_space && matches!(c, '.' | '!' | '?' | ':' | ';') {
            return lead.get(i + 1..);
        }
        next_is_space = c.is_whitespace();
    }
    Some(lead)
}

/// Whether at least two words stand between the end of `lead` and the start of its sentence
/// (the start of `lead`, a `|`, or a `.`, `!`, `?`, `:` or `;` followed by white space), one of
/// them with a lower-case letter or in a script without case.
fn in_sentence(lead: &str) -> bool {
    let mut words = 0;
    let mut in_word = false;
    let mut prose = false;
    let mut next_is_space = false;
    for c in lead.chars().rev() {
        if c == '|' || (next_is_space && matches!(c, '.' | '!' | '?' | ':' | ';')) {
            break;
        }
        next_is_space = c.is_whitespace();
        if c.is_ascii() {
            if c.is_ascii_alphanumeric() || c == '_' {
                if !in_word {
                    words += 1;
                }
                in_word = true;
                prose |= c.is_ascii_lowercase();
            } else {
                in_word = false;
            }
        } else if c.is_alphabetic() && !c.is_uppercase() && !c.is_lowercase() {
            // A script without case (Chinese, Arabic, …): every letter counts as a word, as
            // some of those scripts do not separate words with spaces.
            words += 1;
            in_word = false;
            prose = true;
        } else if c.is_alphanumeric() {
            if !in_word {
                words += 1;
            }
            in_word = true;
            prose |= c.is_lowercase();
        } else {
            in_word = false;
        }
        if words >= 2 && prose {
            return true;
        }
    }
    false
}

/// Quote marks, brackets and emphasis that may open a phrase.
fn is_opener(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | '`' | '(' | '[' | '*' | '_' | '“' | '‘' | '„' | '«' | '‹'
    )
}

fn is_opening_quote(c: char) -> bool {
    matches!(c, '"' | '\'' | '`' | '“' | '‘' | '„' | '«' | '‹')
}

fn is_closing_quote(c: char) -> bool {
    matches!(c, '"' | '\'' | '`' | '”' | '’' | '“' | '»' | '›')
}

/// A tab, or two or more white-space characters.
fn is_layout_gap(gap: &str) -> bool {
    gap.contains('\t') || gap.chars().filter(|c| c.is_whitespace()).nth(1).is_some()
}

/// Whether the line after the one ending at `line_end` is blank or absent.
fn next_line_is_blank(view: &str, line_end: usize) -> bool {
    let Some(next) = view.get(line_end + 1..) else {
        return true;
    };
    let limit = next.len().min(MAX_BLANK_LINE_BYTES);
    match next
        .as_bytes()
        .iter()
        .take(limit)
        .position(|b| !matches!(b, b' ' | b'\t' | b'\r'))
    {
        Some(i) => next.as_bytes().get(i) == Some(&b'\n'),
        None => limit == next.len(),
    }
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
    fn inline_portion_marks_with_separators_are_found() {
        // Inside a sentence the portion mark is talked about (issue 16, edge 11): it used to
        // make the text TOP SECRET, it is now a mention; opening a sentence it still marks it.
        let s = scan("The report (TS//SI//NF) says so.");
        assert_eq!(s.label, Label::unclassified());
        assert_eq!(
            s.mentioned.map(|l| l.to_string()).as_deref(),
            Some("TOP SECRET//SI//NOFORN")
        );
        let s = scan("The report says so. (TS//SI//NF) Sources report movement.");
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
        // Found, as TOP SECRET; inside the sentence it is a mention (issue 16, edge 11).
        let s = scan("She holds TS//SCI access");
        assert_eq!(s.markings.len(), 1);
        assert_eq!(s.markings[0].label.level(), crate::Level::TopSecret);
        assert_eq!(s.markings[0].placement, Placement::Mentioned);
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
        // Found by the scan_text fuzz target. (A next line keeps the JOINT banner asserted:
        // alone, `see //JOINT U here` is a short question about it, rule 2a.)
        let s = scan("(U//SBU) text\n\nsee //JOINT U here\nmore text");
        assert_eq!(s.asserted().count(), 2);
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

    /// Each marking found, as its text and placement.
    fn placed(src: &str) -> Vec<(String, Placement)> {
        scan(src)
            .markings
            .iter()
            .map(|m| (src[m.span.clone()].to_owned(), m.placement))
            .collect()
    }

    /// Some marking in `src` is asserted, so the text is labeled above UNCLASSIFIED.
    fn assert_asserted(src: &str) {
        let p = placed(src);
        assert!(
            p.iter().any(|(_, pl)| *pl == Placement::Asserted),
            "{src:?}: {p:?}"
        );
        assert_ne!(scan(src).label, Label::unclassified(), "{src:?}");
    }

    fn one(src: &str) -> Placement {
        let p = placed(src);
        assert_eq!(p.len(), 1, "{src:?}: {p:?}");
        p[0].1
    }

    #[test]
    fn markings_talked_about_in_a_sentence_are_mentions() {
        for src in [
            "What does SECRET//NOFORN mean?",
            "documents marked (TS) must be stored in a safe",
            "the header read TOP SECRET//SI",
            "Is it true that (S//NF) means no foreign nationals?",
            "The portion marks (TS), (S), (C) and (U) are used in the body.",
            "What is the difference between TS//SI and SECRET//REL TO USA, GBR?",
            "She holds a TS//SCI clearance.",
            "the banner \"SECRET//NOFORN\" means U.S. only",
            "the portion mark `(S//NF)` is common",
            "I saw a document marked SECRET//NOFORN.\nCan I forward it?",
            "这份文件标记为 SECRET//NOFORN 是什么意思",
            "1. What does (S//NF) mean?",
        ] {
            let s = scan(src);
            assert!(!s.markings.is_empty(), "{src:?}");
            assert!(
                s.markings
                    .iter()
                    .all(|m| m.placement == Placement::Mentioned),
                "{src:?}: {:?}",
                placed(src)
            );
            assert_eq!(s.label, Label::unclassified(), "{src:?}");
            assert!(s.mentioned.is_some(), "{src:?}");
            assert_eq!(s.mentions().count(), s.markings.len());
            assert_eq!(s.asserted().count(), 0);
        }
    }

    #[test]
    fn portion_marks_at_line_and_item_starts_are_asserted() {
        for src in [
            "(S) The plan.",
            "  (S) The plan.",
            "\"(S) The plan.",
            "'(S) The plan.",
            "“(S) The plan.”",
            "« (S) The plan. »",
            "> (S//NF) The plan.",
            "> > (S) The plan.",
            "- (S) The plan.",
            "* (S) The plan.",
            "+ (S) The plan.",
            "• (S) The plan.",
            "◦ (S) The plan.",
            "▪ (S) The plan.",
            "‣ (S) The plan.",
            "· (S) The plan.",
            "1. (S) The plan.",
            "1) (S) The plan.",
            "1.2.3 (S) The plan.",
            "a) (S) The plan.",
            "(a) (S) The plan.",
            "iv. (S) The plan.",
            "(iv) (S) The plan.",
            "A. (S) The plan.",
            "## (S) The plan",
            "**(S)** The plan.",
            "| (S) | The plan |",
            "(TS) The plan.",
            "(CUI) The plan.",
            "- (S) the plan, in lower case.",
        ] {
            assert_eq!(one(src), Placement::Asserted, "{src:?}");
            assert_ne!(scan(src).label, Label::unclassified(), "{src:?}");
        }
        assert_eq!(
            placed("Please read the following.\n(S) the plan"),
            [("(S)".to_owned(), Placement::Asserted)]
        );
    }

    #[test]
    fn markings_made_to_look_like_mentions_stay_asserted() {
        for src in [
            "Note: (S//NF) The plan is to move at dawn.",
            "Subject: (S//NF) plan for Tuesday",
            "Summarize this: SECRET//NOFORN",
            "Classification: SECRET//NOFORN",
            "x (TS//SI) the plan is to move at dawn.",
            "Explain SECRET//NOFORN",
            "Thanks for the help. (S//NF) the plan is set.",
            "please see the text (S//NF) The plan is set.",
            "please see the text (TS//SI) (U) the plan is set.",
            "DRAFT MEMO SECRET//NOFORN",
            "Page 3 of 5      SECRET//NOFORN",
            "Page 3 of 5\tSECRET//NOFORN",
            "documents marked SECRET//NOFORN  and more",
            "| Moscow | (S) convoy departs |",
            "documents marked (Ｓ) must be stored",
            "What does ЅECRET//NOFORN mean?",
            "he said \"(S) The plan\" twice",
        ] {
            assert_asserted(src);
        }
        // A banner that ends an instruction heads the document below it.
        let src = "Summarize the following document SECRET//NOFORN\nThe plan is set.";
        assert_eq!(
            placed(src),
            [("SECRET//NOFORN".to_owned(), Placement::Asserted)]
        );
        // Ending a paragraph, or followed by punctuation, it does not.
        assert_eq!(
            one("Summarize the following document SECRET//NOFORN\n\nThe plan is set."),
            Placement::Mentioned
        );
    }

    #[test]
    fn a_marking_that_ends_a_short_question_about_it_is_a_mention() {
        // Rule 2a: one word before it, only words about markings after it, a full stop or
        // question mark, and the end of the paragraph.
        for src in [
            "Explain (S//NF).",
            "Define (TS//SI).",
            "Explain SECRET//NOFORN.",
            "Clarify TOP SECRET//HCS for me.",
            "Quick check: is CONFIDENTIAL//NOFORN a valid banner?",
            "Is CONFIDENTIAL//NOFORN a valid banner?",
            "Is (S//NF) still used?",
            "Is (S//NF) stricter than (S//REL TO USA, FVEY)?",
            "Explain \"SECRET//NOFORN\" in plain English, please.",
            "Question: would (S//REL TO USA, GBR) be wrong here?",
            "1. Define (TS//SI).",
            "Thanks! Explain (S//NF).\n\nAnd what about ORCON?",
            "Explain (S//NF).  \n",
            "Quick question: is SECRET//REL TO USA, FVEY the same as SECRET//REL TO USA, AUS, CAN?",
            "Translate SECRET//NOFORN into plain English.",
            "Does (S//NF) on one paragraph force NOFORN onto the entire document, or only that paragraph?",
            "Is (S//REL TO USA, AUS, NZL) a valid portion mark, or should NZL come before AUS?",
            // Chat without the final question mark.
            "explain (TS//SI//NF) to me like i'm new here",
            "define (S//NF) for me please",
        ] {
            let s = scan(src);
            assert!(!s.markings.is_empty(), "{src:?}");
            assert!(
                s.markings
                    .iter()
                    .all(|m| m.placement == Placement::Mentioned),
                "{src:?}: {:?}",
                placed(src)
            );
            assert_eq!(s.label, Label::unclassified(), "{src:?}");
        }
    }

    #[test]
    fn a_short_question_that_carries_content_stays_asserted() {
        // SECURITY: whatever follows a marking that could be the text it marks keeps it
        // asserted, question or not.
        for src in [
            // Content after it, phrased as a question: names, digits, words that are not about
            // markings.
            "Is (S//NF) the convoy leaving at 0400 from Gate 3 tomorrow?",
            "Is (S//NF) the convoy leaving tomorrow?",
            "explain (S//NF) the convoy leaves at dawn",
            "explain (S//NF) to me\nthe convoy leaves at dawn",
            // Longer tails are read word by word too: one word that could be content keeps it.
            "Does (S//NF) on one paragraph force the whole document to move before the convoy?",
            "Is (S//NF) valid if the partners cross the river before the first light?",
            "Is (S//NF) bridge mined?",
            "Is (S//NF) KILO?",
            "Is (S//NF) USA KILO?",
            "Is (S//NF) into the harbor?",
            "Explain (S//NF) 0400.",
            "Explain (S//NF) the plan.",
            "Explain (S//NF) troop movements near Kandahar are expected.",
            "Note: the (S//NF) bridge is mined.",
            "Summary: (S//NF) The convoy leaves at 0400 from Gate 3.",
            "Summary: (S//NF) the convoy leaves at dawn.",
            // Content after it in the same paragraph.
            "Explain (S//NF). The convoy leaves at 0400.",
            "Explain (S//NF).\nThe convoy leaves at 0400.",
            "Is (S//NF) valid? (S//NF) the convoy leaves at dawn.",
            "Define (TS//SI).\nmovement at the border.",
            // A banner line with a word before it has no full stop; a label and a colon with
            // no word is a subject line.
            "Explain SECRET//NOFORN",
            "Explain SECRET//NOFORN\nThe plan is set.",
            "Explain: (S//NF).",
            "Subject: (S//NF).",
            // A table cell, two words without lower case, a column gap, a disguise.
            "| Explain | (S//NF). |",
            "| Explain (S//NF). |",
            "DRAFT MEMO (S//NF).",
            "Explain  (S//NF).",
            "Explain ЅECRET//NOFORN.",
            "Explain (Ｓ//NF).",
            // Portion marks at line and item starts are asserted whatever follows.
            "(S//NF) valid?",
            "\"(S//NF) is it valid?\"",
            "a) (S//NF) mean?",
            "• (S) still used?",
        ] {
            assert_asserted(src);
        }
    }

    #[test]
    fn inline_portion_marks_without_separators_are_found() {
        for (src, text, level) in [
            (
                "documents marked (TS) must be stored",
                "(TS)",
                crate::Level::TopSecret,
            ),
            ("the paragraph was (S) before", "(S)", crate::Level::Secret),
            (
                "a (C) portion, they said",
                "(C)",
                crate::Level::Confidential,
            ),
            (
                "is (CUI) a classification?",
                "(CUI)",
                crate::Level::Unclassified,
            ),
            ("what does (U) mean", "(U)", crate::Level::Unclassified),
            ("\"(S)\" is what they wrote", "(S)", crate::Level::Secret),
        ] {
            let s = scan(src);
            assert_eq!(texts(&s, src), [text], "{src:?}");
            assert_eq!(s.markings[0].label.level(), level, "{src:?}");
        }
    }

    #[test]
    fn parentheses_that_are_not_portion_marks_are_not_read() {
        for src in [
            "the file(s) you sent",
            "let y = f(S)/2;",
            "see https://example.org/wiki/(S)/page",
            "choose (a), (b) or (c) below",
            "choose (A), (B) or (C) below",
            "(A) one\n(B) two\n(C) three",
            "Copyright (C) 2024 Example Corp.",
            "(C) 2024 Example Corp. All rights reserved.",
            "(C) Copyright Example Corp.",
            "the (R) and (TM) signs",
            "(s) lower case",
            "a (TSA) checkpoint",
        ] {
            assert!(scan(src).markings.is_empty(), "{src:?}: {:?}", placed(src));
        }
        // One `(R)` does not make `(S)` a lettered-list item.
        let s = scan("(R) Reserved.\n(S) The plan.");
        assert_eq!(s.label.level(), crate::Level::Secret);
    }

    #[test]
    fn a_marking_in_a_table_cell_is_asserted() {
        // A column of classifications marks its rows; a row of markings alone lists them only
        // below another row (rule 0), and in a sentence inside a cell a marking is a mention.
        let src = "| Site | Status | Class |\n|---|---|---|\n| Alpha | active | (S//NF) |";
        assert_eq!(one(src), Placement::Asserted);
        assert_eq!(scan(src).label.to_string(), "SECRET//NOFORN");
        assert_eq!(one("| Secret | (S) |"), Placement::Asserted);
        assert_eq!(one("| Moscow | (S) convoy departs |"), Placement::Asserted);
        assert_eq!(
            one("| Q | What does SECRET//NOFORN mean? |"),
            Placement::Mentioned
        );
    }

    #[test]
    fn a_table_row_that_lists_markings_mentions_them() {
        // Rule 0: below another row, a row with nothing but markings marks no text.
        for src in [
            "| Classification | Portion |\n|---|---|\n| SECRET | (S) |\n| CONFIDENTIAL | (C) |",
            "| Banner | Portion |\n| --- | --- |\n| SECRET//NOFORN | (S//NF) |",
            "| Level | Mark |\n|---|---|\n| **Top Secret** | `(TS)` |",
            "| Term | Banner |\n|---|---|\n| REL TO | SECRET//REL TO USA, GBR |",
        ] {
            let s = scan(src);
            assert!(!s.markings.is_empty(), "{src:?}");
            assert_eq!(s.asserted().count(), 0, "{src:?}: {:?}", placed(src));
            assert_eq!(s.label, Label::unclassified(), "{src:?}");
            assert!(s.mentioned.is_some(), "{src:?}");
        }
    }

    #[test]
    fn a_table_row_with_anything_but_markings_stays_asserted() {
        // SECURITY: a word that is not a marking's may be the row's content; a single cell may
        // be a banner in a frame; a first row may head the rows below it; a disguise marks.
        for src in [
            "| SECRET//NOFORN | (S//NF) |",
            "| SECRET//NOFORN | SECRET//NOFORN |\n|---|---|\n| the convoy | moves at dawn |",
            "| Unit | Class |\n|---|---|\n| 3rd Bn | (S//NF) |",
            "| A | B |\n|---|---|\n| (S//NF) | KESTREL |",
            "| A | B |\n|---|---|\n| (S//NF) | |",
            "| A | B |\n|---|---|\n| (S//NF) | (S) the convoy |",
            "| A | B |\n|---|---|\n| SECRET//NOFORN THE CONVOY MOVES | (S//NF) |",
            "| A | B |\n|---|---|\n| ЅECRET//NOFORN | (S//NF) |",
            "| A | B |\n|---|---|\n| (S//NF) | 40 |",
        ] {
            assert_asserted(src);
        }
    }

    #[test]
    fn a_letter_naming_an_item_is_not_a_marking() {
        for src in [
            "Equation (S) defines the entropy of the system.",
            "Exhibit (S) is withheld under FOIA exemption (b)(1).",
            "Option (C) was chosen because it was cheaper.",
            "The board approved version (C) of the draft.",
            "Appendix (S) contains the list of witnesses.",
            "as shown in Figure (U) above",
        ] {
            assert!(scan(src).markings.is_empty(), "{src:?}: {:?}", placed(src));
        }
    }

    #[test]
    fn a_letter_after_an_item_noun_that_opens_text_stays_asserted() {
        // SECURITY: only a verb or preposition of the closed list after the letter makes it a
        // name; capitals, a disguise, a separator, `(TS)`, a line start or two spaces do not.
        for src in [
            "Exhibit (S) The convoy leaves at dawn.",
            "Annex (S) the convoy leaves at dawn.",
            "Annex (S) convoy leaves at dawn.",
            "Annex (S)\nThe convoy leaves at dawn.",
            "EXHIBIT (S) is withheld",
            "Exhibit (Ｓ) is withheld",
            "Exhibit (S//NF) is withheld",
            "Exhibit (TS) is withheld",
            "Exhibit\n(S) is withheld",
            "Exhibit  (S) is withheld",
            "Exhibits (S) is withheld",
        ] {
            assert_asserted(src);
        }
    }

    #[test]
    fn a_marking_before_a_colon_heads_the_text_after_it() {
        for src in [
            "Paraphrase the following text marked (S//NF): the mole is in the ministry.",
            "Rewrite the paragraph labelled SECRET//NOFORN:\nthe convoy leaves at dawn",
        ] {
            assert_eq!(one(src), Placement::Asserted, "{src:?}");
        }
        // Nothing after the colon in its paragraph: nothing for it to mark.
        assert_eq!(
            one("The banner read SECRET//NOFORN:\n\nWhat does it mean?"),
            Placement::Mentioned
        );
    }

    #[test]
    fn a_banner_spelled_letter_by_letter_is_a_banner() {
        for (src, banner) in [
            ("T O P S E C R E T\nThe codes change tonight.", "TOP SECRET"),
            ("S E C R E T", "SECRET"),
            ("- c o n f i d e n t i a l", "CONFIDENTIAL"),
        ] {
            let s = scan(src);
            assert_eq!(s.label.to_string(), banner, "{src:?}");
            assert_eq!(s.asserted().count(), 1, "{src:?}");
        }
        for src in ["S E C R E T S", "A B C", "I O U"] {
            assert!(scan(src).markings.is_empty(), "{src:?}");
        }
    }

    #[test]
    fn markings_spelled_with_separators_or_digits_are_disguised_and_asserted() {
        for (src, banner) in [
            (
                "S E C R E T // N O F O R N\n\nThe source says Friday.",
                "SECRET//NOFORN",
            ),
            (
                "S.E.C.R.E.T.//REL TO USA, GBR\nThe dive team surveys the wreck.",
                "SECRET//REL TO USA, GBR",
            ),
            (
                "S-E-C-R-E-T / / N-O-F-O-R-N: the informant has gone quiet.",
                "SECRET//NOFORN",
            ),
            (
                "T0P 5ECRET//TK//N0F0RN\nImagery shows four shelters.",
                "TOP SECRET//TK//NOFORN",
            ),
            // In a question too: a disguise marks wherever it stands.
            (
                "What does S E C R E T // N O F O R N mean for this memo?",
                "SECRET//NOFORN",
            ),
            // Short abbreviations dotted or hyphenated next to the slashes, in any case.
            ("t.s.//n.f. the depot moves on Monday", "TOP SECRET//NOFORN"),
            ("Tell me about (T.S.//S.I.) the cable cut", "TOP SECRET//SI"),
            (
                "T-O-P S-E-C-R-E-T//H-C-S: the courier route",
                "TOP SECRET//HCS",
            ),
            // Signs and digits for letters, also a classification written in digits.
            ("$ecret//n0forn the ferry manifests", "SECRET//NOFORN"),
            ("note (5//NF) the ferry manifests", "SECRET//NOFORN"),
            ("(75//SI) the relay moved", "TOP SECRET//SI"),
            // Spelled with hyphens and followed by a colon: a banner heading its text.
            (
                "C-O-N-F-I-D-E-N-T-I-A-L: the road is closed",
                "CONFIDENTIAL",
            ),
        ] {
            let s = scan(src);
            assert_eq!(s.label.to_string(), banner, "{src:?}");
            assert!(s.any_disguised(), "{src:?}");
            assert!(s.mentioned.is_none(), "{src:?}");
        }
        // Spaced letters, numbers and code that spell no marking stay unmarked.
        for src in [
            "Options a, b, c and d are open.",
            "x86 and 2FA on port 443 // TODO",
            "a = b // 2 in Python",
            "I O U // 5 dollars",
            "h t t p : / / e x a m p l e",
            "x = (5//2) + 1",
            "e.g. a/b and i.e. c/d",
            "U.S. // see p.5",
            "email me @ home // later",
        ] {
            assert!(scan(src).markings.is_empty(), "{src:?}");
        }
        // A line already read is not read twice.
        let s = scan("T O P S E C R E T\n(S) The codes.");
        assert_eq!(s.markings.len(), 2);
        assert!(
            s.markings
                .windows(2)
                .all(|w| w[0].span.start <= w[1].span.start)
        );
    }

    #[test]
    fn letters_that_name_items_beside_other_item_letters_are_not_portion_marks() {
        for src in [
            "(S) Small: serves one.\n(M) Medium: serves two.\n(L) Large: serves four.",
            "(C) the term \"applicant\" includes any successor;\n(D) the term \"board\" means the Board.",
            "| Size | Chest |\n|---|---|\n| (S) | 88-96 |\n| (M) | 96-104 |",
            "| Student | Grade |\n|---|---|\n| Ana | (B) |\n| Ben | (C) |\n| Cai | (U) |",
        ] {
            assert!(scan(src).markings.is_empty(), "{src:?}");
        }
        // Portion marks stay: after an item's letter, beside other portion marks, without
        // item letters in their block or column, or with a blank line between.
        for src in [
            "(A) (S) The unit moves at dawn.\n(B) (S) The convoy follows.",
            "(S) The unit moves at dawn.\n(C) The weather is poor.\n(U) Roads are open.",
            "(S) The unit moves at dawn.\n\n(M) Medium sizes are out.",
            "| Unit | Mark |\n|---|---|\n| 3rd Bn | (S) |\n| 4th Bn | (C) |",
            "| Size | Note |\n|---|---|\n| (M) | fine |\n| 3rd Bn | (S) The convoy |",
            "(S//NF) The unit moves.\n(M) Medium.",
        ] {
            assert!(scan(src).label != Label::unclassified(), "{src:?}");
        }
    }

    #[test]
    fn a_lower_case_word_in_a_cased_script_after_a_marking_is_not_text_it_opens() {
        // Folding writes Cyrillic `н` as `H`: rule 7 reads the original's case.
        assert_eq!(
            one("Что означает пометка TOP SECRET//NOFORN на американских документах?"),
            Placement::Mentioned
        );
        // A capital in the original still opens text.
        assert_eq!(
            one("Переведи это SECRET//NOFORN Наш агент в Риге."),
            Placement::Asserted
        );
    }

    #[test]
    fn a_marking_before_a_new_subject_opens_text() {
        // Rule 7: an article, possessive or pronoun after the marking starts the text it marks.
        for src in [
            "Fix grammar (TS) the general are move troops north",
            "Please shorten this SECRET//NOFORN we attack at dawn",
            "Make this sound better (S) our agents have been compromised",
            "Rewrite this more formally (S//NF) \"the battalion crosses at night\"",
            "can you fix (TS//SI//NF) the intercept shows the launch is friday",
        ] {
            assert_eq!(one(src), Placement::Asserted, "{src:?}");
        }
        // Not a whole word, or a word that goes on the sentence: still a mention.
        for src in [
            "files marked (S) there are kept apart",
            "documents marked (TS) must be stored in a safe",
            "the header read TOP SECRET//SI and nothing else",
        ] {
            assert_eq!(one(src), Placement::Mentioned, "{src:?}");
        }
    }

    #[test]
    fn an_inline_mark_that_defines_an_abbreviation_is_not_a_marking() {
        for src in [
            "The TypeScript (TS) compiler rejects this file.",
            "we fit a time series (TS) model to the data",
            "a T-shirt in size small (S) for the kids",
        ] {
            assert!(scan(src).markings.is_empty(), "{src:?}: {:?}", placed(src));
        }
        // Naming the marking is a mention; opening text it is asserted whatever comes before.
        assert_eq!(
            one("the level Top Secret (TS) is the highest"),
            Placement::Mentioned
        );
        assert_eq!(one("the time series (TS) The plan"), Placement::Asserted);
    }

    #[test]
    fn labelled_classifications_are_asserted_banners() {
        for src in [
            "Classification: SECRET",
            "CLASSIFICATION: TOP SECRET",
            "Security Classification: CONFIDENTIAL",
        ] {
            let s = scan(src);
            assert_eq!(s.markings.len(), 1, "{src:?}");
            assert_eq!(s.markings[0].placement, Placement::Asserted);
            assert_eq!(s.markings[0].form, Form::Banner);
        }
        for src in [
            "Classification: secret",
            "The answer to the question above: SECRET",
        ] {
            assert!(scan(src).markings.is_empty(), "{src:?}");
        }
        // A bare classification after a list bullet or a quote is a banner line.
        assert_eq!(one("• SECRET"), Placement::Asserted);
        assert_eq!(one("> TOP SECRET"), Placement::Asserted);
    }

    #[test]
    fn a_classification_heading_text_after_a_colon_or_dash_is_a_banner() {
        for (src, banner) in [
            (
                "SECRET: the pumps at the north dam fail on Tuesdays.",
                "SECRET",
            ),
            ("TOP SECRET - two couriers cross at dawn", "TOP SECRET"),
            ("CONFIDENTIAL — the guard rota is halved.", "CONFIDENTIAL"),
            (
                "Status: CONFIDENTIAL - the gate sensor is offline",
                "CONFIDENTIAL",
            ),
            ("- Note: SECRET: the drill moves to Pier 4", "SECRET"),
            ("CUI: payroll numbers for the district follow", "CUI"),
        ] {
            let s = scan(src);
            assert_eq!(s.label.to_string(), banner, "{src:?}");
            assert_eq!(s.markings.len(), 1, "{src:?}");
            assert_eq!(s.markings[0].placement, Placement::Asserted, "{src:?}");
        }
        // Not a classification heading text: other case, other words, no text after it, or
        // prose before it.
        for src in [
            "Secret: the recipe uses brown butter.",
            "SECRETARY: the minutes follow",
            "SECRET-SANTA list is up",
            "SECRET:",
            "The word SECRET: what does it mean here?",
            "Our plan - SECRET - is a surprise party",
        ] {
            assert!(scan(src).label.to_string() == "UNCLASSIFIED", "{src:?}");
        }
    }

    #[test]
    fn markings_written_with_other_separators_are_read() {
        // Separators nobody writes but to hide a marking: disguised, asserted anywhere.
        for (src, banner) in [
            ("SECRET\\\\NOFORN\nThe pier is mined.", "SECRET//NOFORN"),
            ("Rewrite: TOP SECRET||SI the relay moved", "TOP SECRET//SI"),
            ("SECRET -- NOFORN\nThe pier is mined.", "SECRET//NOFORN"),
            ("(S ~ NF) the pier is mined", "SECRET//NOFORN"),
            ("SECRET/ /NOFORN the pier", "SECRET//NOFORN"),
            ("s e c r e t the pier is mined", "SECRET"),
            ("SEC RET//NO FORN the pier is mined", "SECRET//NOFORN"),
        ] {
            let s = scan(src);
            assert_eq!(s.label.to_string(), banner, "{src:?}");
            assert!(s.any_disguised(), "{src:?}");
        }
        // One slash for two, and spaces for slashes on a banner line: how people write them,
        // placed by the rules as the marking they stand for.
        for (src, banner) in [
            ("(S/NF) The pier is mined.", "SECRET//NOFORN"),
            ("- (TS/SI/NF) two relays moved", "TOP SECRET//SI//NOFORN"),
            ("SECRET/NOFORN\nThe pier is mined.", "SECRET//NOFORN"),
            ("SECRET NOFORN\nThe pier is mined.", "SECRET//NOFORN"),
            (
                "TOP SECRET SI NOFORN\nThe relay moved.",
                "TOP SECRET//SI//NOFORN",
            ),
        ] {
            let s = scan(src);
            assert_eq!(s.label.to_string(), banner, "{src:?}");
            assert!(!s.any_disguised(), "{src:?}");
        }
        for src in [
            "Requires an active TS/SCI clearance.",
            "My colleague wrote SECRET/NOFORN with one slash; is that wrong?",
            "Can a portion mark like (S/NF) use one slash?",
            "| S | NF |\n|---|---|",
            "The SECRET - and only secret - ingredient is salt.",
            "SECRET SANTA\nNames are drawn on Friday.",
        ] {
            assert_eq!(scan(src).label.to_string(), "UNCLASSIFIED", "{src:?}");
        }
    }

    #[test]
    fn a_portion_mark_opening_a_quotation_marks_what_is_quoted() {
        for src in [
            "Step 2: paste the line '(S//NF) the relay codes change at noon' here.",
            "He wrote \"(TS//SI) two launchers moved north\" in the log",
        ] {
            let s = scan(src);
            assert_ne!(s.label.to_string(), "UNCLASSIFIED", "{src:?}");
        }
        // A quoted marking with words about markings only is still a term.
        for src in [
            "What does \"(S//NF) portion\" mean in this guide?",
            "the banner \"SECRET//NOFORN\" means not releasable",
            "rows WHERE mark LIKE '(C//NF)%' are counted",
        ] {
            let s = scan(src);
            assert_eq!(s.label.to_string(), "UNCLASSIFIED", "{src:?}");
        }
    }

    #[test]
    fn asserted_and_mentioned_markings_roll_up_apart() {
        let src =
            "SECRET//REL TO USA, GBR\n\n(S//REL) The plan.\nWhat does TOP SECRET//SI//NOFORN mean?";
        let s = scan(src);
        assert_eq!(s.label.to_string(), "SECRET//REL TO USA, GBR");
        assert_eq!(
            s.mentioned.as_ref().map(Label::to_string).as_deref(),
            Some("TOP SECRET//SI//NOFORN")
        );
        // A mentioned banner does not give its REL TO list to the portions below it.
        let s = scan("What is SECRET//REL TO USA, NZL used for?\n(S//REL) The plan.");
        assert_eq!(s.markings[0].placement, Placement::Mentioned);
        assert_eq!(s.markings[1].placement, Placement::Asserted);
        assert!(s.markings[1].label.rel_to().is_none());
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
