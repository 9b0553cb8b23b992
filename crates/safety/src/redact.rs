//! Redaction: replacing findings with `[REDACTED:kind]`, over a whole text or a stream of
//! chunks.
//!
//! [`StreamRedactor`] holds back the last [`HOLDBACK_BYTES`] of the stream (more while a token or
//! a finding is still open at the end of what it has seen), so that a secret split across chunks
//! at any byte is redacted exactly as [`redact`] would redact the whole text. The rules it relies
//! on, and where they stop holding, are in `docs/SAFETY.md` ("Streaming redaction").

use std::ops::Range;

use crate::category::Category;
use crate::detect::{Finding, Kind, detect, floor_boundary};

/// How many bytes at the end of the stream the redactor keeps back: at least the furthest any
/// rule looks past the start of a finding to decide it (an AWS secret key within 160 bytes of
/// its access key id, plus both keys; context words 48 bytes after a number; the marking
/// scanner's 64-byte look past a line) and the longest bounded multi-word finding (a street
/// address, an injection phrase).
pub const HOLDBACK_BYTES: usize = 256;

/// How many bytes beyond the holdback a redactor gathers before it screens again: screening
/// every tiny chunk would rescan the window each time.
pub const STEP_BYTES: usize = 256;

/// The most the redactor holds back while one token or finding stays open (an endless base64
/// run, a private key that never ends). Past it, it emits what it holds, redacting the open
/// finding's part: a finding longer than this is redacted piece by piece, as far as each piece
/// is still recognized.
pub const MAX_HOLDBACK_BYTES: usize = 64 * 1024;

/// How much already-emitted text the redactor keeps as context before what it holds.
const CONTEXT_BYTES: usize = 512;

/// Replaces every finding whose category is in `categories` with `[REDACTED:kind]`.
/// Overlapping findings are merged into one replacement named after the first of them (the
/// earliest start, then the longest).
///
/// ```
/// use enclave_safety::{Category, detect, redact};
/// let text = "key AKIAQYLPMN5HFIQR7XYZ, call (202) 456-1111";
/// let out = redact(text, &detect(text), &[Category::Secrets]);
/// assert_eq!(out, "key [REDACTED:aws_access_key], call (202) 456-1111");
/// ```
pub fn redact(text: &str, findings: &[Finding], categories: &[Category]) -> String {
    let spans = merge(findings, categories);
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (span, kind) in &spans {
        if span.end <= at {
            continue;
        }
        out.push_str(text.get(at..span.start.max(at)).unwrap_or(""));
        push_marker(&mut out, *kind);
        at = span.end;
    }
    out.push_str(text.get(at..).unwrap_or(""));
    out
}

/// Detects and redacts in one step.
pub fn redact_text(text: &str, categories: &[Category]) -> String {
    redact(text, &detect(text), categories)
}

/// A redactor for a stream of text chunks (a model's streamed answer).
///
/// Feed it with [`StreamRedactor::push`] and end with [`StreamRedactor::finish`]; the
/// concatenation of everything they return equals [`redact_text`] of the concatenated input
/// (see `docs/SAFETY.md` for the bounds under which this holds). Chunks are `&str`, so a chunk
/// never ends inside a UTF-8 character: the caller decodes bytes first (the gateway reads chunks
/// out of JSON events, which are strings already).
///
/// ```
/// use enclave_safety::{Category, StreamRedactor};
/// let mut r = StreamRedactor::new(&[Category::Secrets]);
/// let mut out = r.push("token ghp_aBcDeFgHiJkLmNoPqRsT");
/// out += &r.push("uVwXyZ0123456789 done");
/// out += &r.finish();
/// assert_eq!(out, "token [REDACTED:github_token] done");
/// ```
#[derive(Clone, Debug)]
pub struct StreamRedactor {
    categories: Vec<Category>,
    /// The tail of the emitted original text, for rules that look back.
    context: String,
    /// Text received and not yet emitted.
    pending: String,
    /// How many leading bytes of `pending` belong to a finding whose marker was already
    /// emitted (after a forced emission cut through it).
    skip: usize,
    /// How much `pending` must hold before the next screening. It grows by half when a
    /// screening released nothing (an open token), so a long run costs linear time, not a
    /// rescan per chunk.
    next_release: usize,
}

impl StreamRedactor {
    /// A redactor that redacts findings in `categories`.
    pub fn new(categories: &[Category]) -> StreamRedactor {
        StreamRedactor {
            categories: categories.to_vec(),
            context: String::new(),
            pending: String::new(),
            skip: 0,
            next_release: HOLDBACK_BYTES + STEP_BYTES,
        }
    }

    /// Takes the next chunk and returns the text that can be released now (possibly empty).
    pub fn push(&mut self, chunk: &str) -> String {
        self.pending.push_str(chunk);
        if self.pending.len() < self.next_release {
            return String::new();
        }
        let out = self.release(false);
        let held = self.pending.len();
        self.next_release = if out.is_empty() {
            (held + (held / 2).max(STEP_BYTES)).min(MAX_HOLDBACK_BYTES + HOLDBACK_BYTES + 1)
        } else {
            held + STEP_BYTES
        };
        out
    }

    /// Ends the stream and returns the rest.
    pub fn finish(&mut self) -> String {
        self.release(true)
    }

    /// How many bytes the redactor holds back right now.
    pub fn held_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Screens context and pending text together and releases what is safe to release.
    fn release(&mut self, last: bool) -> String {
        let base = self.context.len();
        let mut window = std::mem::take(&mut self.context);
        window.push_str(&self.pending);
        let findings = detect(&window);
        let spans = merge(&findings, &self.categories);
        let cut = if last {
            window.len()
        } else {
            self.cut(&window, base, &spans)
        };

        let mut out = String::with_capacity(cut.saturating_sub(base) + 32);
        let mut at = (base + self.skip).min(cut);
        let mut skip = self.skip.saturating_sub(cut - base);
        for (span, kind) in &spans {
            if span.end <= at {
                continue;
            }
            if span.start >= cut {
                break;
            }
            out.push_str(window.get(at..span.start.max(at)).unwrap_or(""));
            push_marker(&mut out, *kind);
            if span.end > cut {
                // Forced release through an open finding: its marker is out, skip its rest.
                skip = span.end - cut;
                at = cut;
                break;
            }
            at = span.end;
        }
        out.push_str(window.get(at..cut).unwrap_or(""));

        self.pending = window.get(cut..).unwrap_or("").to_owned();
        self.context = context_tail(window.get(..cut).unwrap_or(""));
        self.skip = skip;
        out
    }

    /// Where to cut: [`HOLDBACK_BYTES`] before the end, moved back so that it falls neither
    /// inside a run of token characters (a secret still arriving) nor inside a finding; forced
    /// forward when more than [`MAX_HOLDBACK_BYTES`] would stay held.
    fn cut(&self, window: &str, base: usize, spans: &[(Range<usize>, Kind)]) -> usize {
        let end = floor_boundary(window, window.len().saturating_sub(HOLDBACK_BYTES)).max(base);
        let mut cut = end;
        loop {
            let mut next = run_start(window, cut).max(base);
            for (span, _) in spans {
                if span.start < next && span.end > next {
                    next = span.start.max(base);
                }
            }
            if next == cut {
                break;
            }
            cut = next;
        }
        if window.len() - cut > MAX_HOLDBACK_BYTES {
            end
        } else {
            cut
        }
    }
}

/// Selected findings as sorted, merged spans, each named after its first finding.
fn merge(findings: &[Finding], categories: &[Category]) -> Vec<(Range<usize>, Kind)> {
    let mut selected: Vec<&Finding> = findings
        .iter()
        .filter(|f| categories.contains(&f.category()))
        .collect();
    selected.sort_by_key(|f| (f.span.start, std::cmp::Reverse(f.span.end), f.kind));
    let mut out: Vec<(Range<usize>, Kind)> = Vec::with_capacity(selected.len());
    for f in selected {
        match out.last_mut() {
            Some((last, _)) if f.span.start < last.end => last.end = last.end.max(f.span.end),
            _ => out.push((f.span.clone(), f.kind)),
        }
    }
    out
}

/// Appends `[REDACTED:kind]`.
fn push_marker(out: &mut String, kind: Kind) {
    out.push_str("[REDACTED:");
    out.push_str(kind.as_str());
    out.push(']');
}

/// Whether a byte can be part of a token (a key, a JWT, a URL): printable ASCII but space.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_graphic()
}

/// The start of the token run that `at` falls inside, or `at` when it is at a run boundary.
fn run_start(window: &str, at: usize) -> usize {
    let b = window.as_bytes();
    let inside = at > 0
        && b.get(at - 1).copied().is_some_and(is_token_byte)
        && b.get(at).copied().is_some_and(is_token_byte);
    if !inside {
        return at;
    }
    let head = b.get(..at).unwrap_or(&[]);
    head.iter()
        .rposition(|&c| !is_token_byte(c))
        .map_or(0, |i| i + 1)
}

/// The context to keep from emitted text: its last [`CONTEXT_BYTES`], starting after a line
/// break (or else a space) near their start, so that rules rescanning it start in step with a
/// scan of the whole text.
fn context_tail(emitted: &str) -> String {
    let from = floor_boundary(emitted, emitted.len().saturating_sub(CONTEXT_BYTES));
    let tail = emitted.get(from..).unwrap_or("");
    let head = tail
        .get(..floor_boundary(tail, CONTEXT_BYTES / 2))
        .unwrap_or("");
    let skip = head
        .find('\n')
        .or_else(|| {
            head.get(..floor_boundary(head, 64))
                .and_then(|h| h.find([' ', '\t']))
        })
        .map_or(0, |i| i + 1);
    if from == 0 {
        return tail.to_owned();
    }
    tail.get(skip..).unwrap_or("").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_start_moves_to_the_start_of_a_token() {
        let w = "abc def.ghi jkl";
        assert_eq!(run_start(w, 9), 4);
        assert_eq!(run_start(w, 4), 4);
        assert_eq!(run_start(w, 3), 3);
        assert_eq!(run_start(w, 0), 0);
    }

    #[test]
    fn overlapping_findings_merge_under_the_first_kind() {
        let f = |kind, span: Range<usize>| Finding {
            kind,
            span,
            confidence: 1.0,
        };
        let findings = [
            f(Kind::Jwt, 5..20),
            f(Kind::BearerToken, 5..25),
            f(Kind::Email, 30..40),
        ];
        let spans = merge(&findings, &[Category::Secrets]);
        assert_eq!(spans, vec![(5..25, Kind::BearerToken)]);
    }
}
