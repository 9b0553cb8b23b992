//! Normalized terms for the lexical index: lower-cased alphanumeric runs, a short English
//! stop list, and a conservative suffix stemmer (plural, `-ing`, `-ed`, `-ly`), so that
//! "meetings" finds "meeting" and "reassigned" finds "assigned" no better than BM25 allows.
//!
//! The same function normalizes stored text and queries, so whatever it does to one it does
//! to the other; it never fails and never allocates more than one `String` per term.

/// Longest term kept, in bytes: longer runs (hashes, base64) are cut, so a hostile text cannot
/// make one huge posting key.
const MAX_TERM_BYTES: usize = 48;

/// Words too common to help ranking (they would only make posting lists long).
const STOP: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "been", "but", "by", "can", "could", "did", "do", "does", "for", "from", "had", "has", "have",
    "how", "i", "if", "in", "into", "is", "it", "its", "just", "me", "my", "of", "on", "or", "our",
    "so", "than", "that", "the", "their", "them", "then", "there", "these", "they", "this", "to",
    "us", "was", "we", "were", "what", "when", "which", "who", "will", "with", "would", "you",
    "your",
];

/// The normalized terms of `text`, in order (repeats kept: term frequency counts them).
pub fn terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            for l in c.to_lowercase() {
                if word.len() < MAX_TERM_BYTES {
                    word.push(l);
                }
            }
        } else if c == '\'' || c == '\u{2019}' {
            // "don't", "Dana's": the apostrophe and what follows a possessive add nothing.
            if !word.is_empty() {
                push_term(&mut out, &word);
                word.clear();
            }
        } else if !word.is_empty() {
            push_term(&mut out, &word);
            word.clear();
        }
    }
    if !word.is_empty() {
        push_term(&mut out, &word);
    }
    out
}

fn push_term(out: &mut Vec<String>, word: &str) {
    // A single letter after an apostrophe ("s", "t") or alone carries nothing.
    if word.chars().count() < 2 && !word.chars().all(|c| c.is_ascii_digit()) {
        return;
    }
    if STOP.binary_search(&word).is_ok() {
        return;
    }
    out.push(stem(word));
}

/// Verbs that open a request to the assistant ("Summarize this", "Give me three options").
const REQUEST_VERBS: &[&str] = &[
    "add",
    "brainstorm",
    "calculate",
    "check",
    "compare",
    "compose",
    "convert",
    "correct",
    "count",
    "create",
    "define",
    "describe",
    "design",
    "draft",
    "edit",
    "estimate",
    "expand",
    "explain",
    "find",
    "fix",
    "format",
    "generate",
    "give",
    "help",
    "list",
    "make",
    "name",
    "outline",
    "paraphrase",
    "plan",
    "polish",
    "proofread",
    "recommend",
    "remind",
    "rephrase",
    "review",
    "reword",
    "rewrite",
    "shorten",
    "show",
    "simplify",
    "sort",
    "spell",
    "suggest",
    "summarise",
    "summarize",
    "tell",
    "tighten",
    "translate",
    "turn",
    "write",
];

/// Openings of a polite request or a question ("Can you …", "What's …").
const REQUEST_OPENINGS: &[&str] = &[
    "can you",
    "could you",
    "would you",
    "will you",
    "please",
    "how do",
    "how can",
    "how should",
    "what is",
    "what's",
    "what are",
    "which",
    "is it",
    "should i",
];

/// Words in a query that ask for the present state of a fact ("who do I report to *now*").
const PRESENT_CUES: &[&str] = &[
    "anymore",
    "current",
    "currently",
    "latest",
    "now",
    "nowadays",
    "presently",
    "today",
];

/// Words that make an instruction standing ("*never* propose meetings on Mondays", "*from
/// now on* cc Maria"): a preference that holds for later turns, not a one-off task.
const STANDING_CUES: &[&str] = &[
    "always",
    "by default",
    "every time",
    "from now on",
    "going forward",
    "in future",
    "in the future",
    "never",
    "whenever",
];

/// Whether `text` asks the assistant for something (a question or a one-off instruction)
/// rather than stating something: such a turn is kept as a memory but ranks below statements,
/// which are what later questions about the user are answered from. A standing instruction
/// ("Please never propose meetings on Mondays.") states a preference and is not a request.
pub fn is_request(text: &str) -> bool {
    let t = text
        .trim()
        .trim_end_matches(['"', '\'', '\u{201d}', ')', ' ']);
    // A turn that asks a question anywhere ("Is X singular or plural? I always forget.").
    if t.contains('?') {
        return true;
    }
    let lower: String = t.chars().take(24).flat_map(char::to_lowercase).collect();
    let first: String = lower.chars().take_while(|c| c.is_alphabetic()).collect();
    let asks = REQUEST_OPENINGS.iter().any(|o| lower.starts_with(o))
        || REQUEST_VERBS.binary_search(&first.as_str()).is_ok();
    asks && !is_standing(t)
}

/// Whether an instruction holds beyond its turn: it carries a standing cue as a whole word
/// or phrase ("never mind" is not one).
fn is_standing(text: &str) -> bool {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let joined = format!(" {} ", words.join(" "));
    STANDING_CUES
        .iter()
        .any(|cue| joined.contains(&format!(" {cue} ")))
        && !joined.contains(" never mind ")
}

/// Words in a query that ask for an earlier state of a fact ("who *was* my supervisor").
const PAST_CUES: &[&str] = &[
    "before",
    "earlier",
    "formerly",
    "originally",
    "previous",
    "previously",
    "used",
    "was",
    "were",
];

/// The time a query asks about, from its wording.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tense {
    /// An earlier state ("who was my supervisor", "before the reorganization"): what was
    /// replaced is what is asked for, so newer restatements must not push it down.
    Past,
    /// The present state ("now", "currently", "these days").
    Present,
    /// No cue either way.
    Unmarked,
}

/// The time `query` asks about. A query with cues of both ("which region did I cover before,
/// and which now") is unmarked.
pub fn tense(query: &str) -> Tense {
    let lower = query.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).collect();
    let past = words.iter().any(|w| PAST_CUES.binary_search(w).is_ok());
    let present = asks_for_present(query);
    match (past, present) {
        (true, false) => Tense::Past,
        (false, true) => Tense::Present,
        _ => Tense::Unmarked,
    }
}

/// Whether a query asks for the present state of something ("these days", "currently").
pub fn asks_for_present(query: &str) -> bool {
    let lower = query.to_lowercase();
    if lower.contains("these days")
        || lower.contains("at the moment")
        || lower.contains("right now")
    {
        return true;
    }
    lower
        .split(|c: char| !c.is_alphanumeric())
        .any(|w| PRESENT_CUES.binary_search(&w).is_ok())
}

/// A light English stemmer: strips one inflectional suffix from words of five letters or more
/// (`-ies` → `-y`, `-es` after s/x/z/ch/sh, `-s`, `-ing`, `-ed`, `-ly`) and undoubles a final
/// consonant left behind (`planned` → `plan`). Words with digits are left alone.
pub fn stem(word: &str) -> String {
    if word.len() < 5 || !word.bytes().all(|b| b.is_ascii_lowercase()) {
        return word.to_owned();
    }
    let w = word;
    let base = if let Some(s) = w.strip_suffix("ies") {
        return format!("{s}y");
    } else if let Some(s) = w.strip_suffix("sses") {
        return format!("{s}ss");
    } else if w.ends_with("ss") || w.ends_with("us") || w.ends_with("is") {
        return w.to_owned();
    } else if let Some(s) = w.strip_suffix("es").filter(|s| {
        s.ends_with('s')
            || s.ends_with('x')
            || s.ends_with('z')
            || s.ends_with("ch")
            || s.ends_with("sh")
    }) {
        return s.to_owned();
    } else if let Some(s) = w.strip_suffix('s') {
        return s.to_owned();
    } else if let Some(s) = w.strip_suffix("ing").filter(|s| s.len() >= 3) {
        s
    } else if let Some(s) = w.strip_suffix("ed").filter(|s| s.len() >= 3) {
        s
    } else if let Some(s) = w.strip_suffix("ly").filter(|s| s.len() >= 3) {
        return s.to_owned();
    } else {
        return w.to_owned();
    };
    // `planned` → `plann` → `plan`; but `called` → `call` keeps its `ll`.
    let b = base.as_bytes();
    if let [.., x, y] = b
        && x == y
        && !matches!(x, b'l' | b's' | b'z')
        && !matches!(x, b'a' | b'e' | b'i' | b'o' | b'u')
    {
        return base.get(..base.len() - 1).unwrap_or(base).to_owned();
    }
    base.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_lists_are_sorted_for_binary_search() {
        for list in [STOP, REQUEST_VERBS, PRESENT_CUES, PAST_CUES] {
            let mut sorted = list.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, list);
        }
    }

    #[test]
    fn requests_and_statements() {
        for r in [
            "Give me three headline options.",
            "Shorten: 'At this point in time we are not in a position to confirm it.'",
            "Is 'data' singular or plural in our house style? I always forget.",
            "Can you tighten this sentence?",
            "What's a good way to show a change?",
            "please fix the table",
            "Rewrite it shorter, never mind the tone.",
            "Please write the memo; I always forget the format?",
        ] {
            assert!(is_request(r), "{r}");
        }
        for s in [
            "My supervisor is Colin Hale; anything I send upward goes through Colin first.",
            "Heads up: don't rely on the port export without cross-checking.",
            "The quarterly assessment is due 9 August.",
            "I'll be working from the Pittsburgh field office all of next week.",
            "Also, please never propose meetings on Mondays; I keep that day for writing.",
            "From now on, cc Maria on every briefing.",
            "Always give me the bottom line first.",
        ] {
            assert!(!is_request(s), "{s}");
        }
        assert!(asks_for_present("Who do I report to these days?"));
        assert!(asks_for_present(
            "Which project am I currently assigned to?"
        ));
        assert!(!asks_for_present(
            "Who was my supervisor on HARBOR LANTERN?"
        ));
        assert_eq!(
            tense("Who was my supervisor on HARBOR LANTERN?"),
            Tense::Past
        );
        assert_eq!(tense("Who do I report to these days?"), Tense::Present);
        assert_eq!(
            tense("Which region did I cover before, and which now?"),
            Tense::Unmarked
        );
        assert_eq!(tense("What units should I use?"), Tense::Unmarked);
    }

    #[test]
    fn terms_are_lowercased_stemmed_and_stopped() {
        assert_eq!(
            terms("Please never propose Meetings on Thursdays; I'm writing."),
            ["please", "never", "propose", "meeting", "thursday", "writ"]
        );
        assert_eq!(
            terms("The deadline slipped to 16 August"),
            ["deadline", "slip", "16", "august"]
        );
        assert_eq!(stem("planned"), "plan");
        assert_eq!(stem("called"), "call");
        assert_eq!(stem("reports"), "report");
        assert_eq!(stem("reporting"), "report");
        assert_eq!(stem("agencies"), "agency");
        assert_eq!(stem("boxes"), "box");
        assert_eq!(stem("status"), "status");
    }

    #[test]
    fn hostile_text_stays_bounded() {
        let long = "x".repeat(100_000);
        let t = terms(&long);
        assert_eq!(t.len(), 1);
        assert!(t[0].len() <= MAX_TERM_BYTES);
        assert!(terms("").is_empty());
        assert!(terms("\u{0}\u{FEFF}!!! ... ").is_empty());
        // Non-ASCII letters are kept as they are, lower-cased.
        assert_eq!(terms("ÉTÉ Straße"), ["été", "straße"]);
    }
}
