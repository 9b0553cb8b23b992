//! The BERT WordPiece tokenizer, as Hugging Face `tokenizers` runs it for a `tokenizer.json`
//! with a `BertNormalizer`, a `BertPreTokenizer` and a `WordPiece` model.
//!
//! Steps, in the order `tokenizers` applies them:
//! 1. normalize: drop NUL, U+FFFD and control/format/private-use characters (tab, newline and
//!    carriage return count as whitespace) and turn whitespace into spaces; put spaces around
//!    CJK ideographs; strip accents (NFD, then drop nonspacing marks); lowercase, character by
//!    character;
//! 2. pre-tokenize: split on whitespace and make each punctuation character (ASCII punctuation
//!    or Unicode `P*`) a word of its own;
//! 3. WordPiece: greedy longest match first, continuation pieces prefixed with `##`; a word
//!    with no full match, or longer than `max_input_chars_per_word` characters, becomes
//!    `[UNK]`;
//! 4. `[CLS] … [SEP]`, truncating the word pieces so the whole fits in the token budget.
//!
//! Cost is linear in the text's length: text past the token budget is not looked at, a word
//! over `max_input_chars_per_word` (100 for BERT) is `[UNK]` after counting no further than
//! that, and the longest-match search starts from the longest piece in the vocabulary rather
//! than from the whole rest of the word.
//!
//! Unicode tables come from `unicode-normalization` and `unicode-properties`, which are newer
//! than the ones `tokenizers` ships; the two agree except for characters assigned recently.

use std::collections::HashMap;

use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

use crate::embed::EmbedError;

/// A BERT WordPiece tokenizer read from a Hugging Face `tokenizer.json`.
#[derive(Debug, Clone)]
pub struct WordPiece {
    /// Pieces that may start a word.
    words: HashMap<String, u32>,
    /// Continuation pieces, stored without their `##` prefix.
    continuations: HashMap<String, u32>,
    normalizer: Normalizer,
    unk: u32,
    cls: u32,
    sep: u32,
    pad: u32,
    max_input_chars_per_word: usize,
    /// Bytes in the longest piece (either kind): no longer candidate can match.
    max_piece_bytes: usize,
}

impl WordPiece {
    /// Reads a `tokenizer.json` that describes a BERT WordPiece tokenizer (`BertNormalizer`,
    /// `BertPreTokenizer`, `WordPiece` model with `[CLS]`, `[SEP]`, `[PAD]` in its vocabulary).
    ///
    /// # Errors
    ///
    /// [`EmbedError::Tokenizer`] when the JSON is malformed or describes another kind of
    /// tokenizer.
    pub fn from_json(json: &str) -> Result<WordPiece, EmbedError> {
        let raw: RawTokenizer = serde_json::from_str(json)
            .map_err(|e| EmbedError::Tokenizer(format!("malformed `tokenizer.json`: {e}")))?;
        let normalizer = match raw.normalizer {
            Some(RawNormalizer::BertNormalizer {
                clean_text,
                handle_chinese_chars,
                strip_accents,
                lowercase,
            }) => Normalizer {
                clean_text,
                handle_chinese_chars,
                // As in `tokenizers`: no explicit setting means "strip when lowercasing".
                strip_accents: strip_accents.unwrap_or(lowercase),
                lowercase,
            },
            None => {
                return Err(EmbedError::Tokenizer(
                    "`normalizer` must be a `BertNormalizer`, found none".to_owned(),
                ));
            }
        };
        if raw.pre_tokenizer.kind != "BertPreTokenizer" {
            return Err(EmbedError::Tokenizer(format!(
                "`pre_tokenizer` must be a `BertPreTokenizer`, found `{}`",
                raw.pre_tokenizer.kind
            )));
        }
        let model = raw.model;
        if model.kind != "WordPiece" {
            return Err(EmbedError::Tokenizer(format!(
                "`model` must be `WordPiece`, found `{}`",
                model.kind
            )));
        }
        let special = |token: &str| {
            model.vocab.get(token).copied().ok_or_else(|| {
                EmbedError::Tokenizer(format!("special token `{token}` is not in the vocabulary"))
            })
        };
        let unk = special(&model.unk_token)?;
        let cls = special("[CLS]")?;
        let sep = special("[SEP]")?;
        let pad = special("[PAD]")?;
        let prefix = &model.continuing_subword_prefix;
        let mut words = HashMap::with_capacity(model.vocab.len());
        let mut continuations = HashMap::new();
        for (piece, id) in &model.vocab {
            match piece.strip_prefix(prefix.as_str()) {
                Some(rest) if !prefix.is_empty() => {
                    continuations.insert(rest.to_owned(), *id);
                }
                _ => {
                    words.insert(piece.clone(), *id);
                }
            }
        }
        let max_piece_bytes = words
            .keys()
            .chain(continuations.keys())
            .map(String::len)
            .max()
            .unwrap_or(0);
        Ok(WordPiece {
            max_piece_bytes,
            words,
            continuations,
            normalizer,
            unk,
            cls,
            sep,
            pad,
            max_input_chars_per_word: model.max_input_chars_per_word,
        })
    }

    /// Token ids for `text`: `[CLS]`, its word pieces, `[SEP]`, with the word pieces cut so the
    /// result has at most `max_tokens` ids (never fewer than the two special tokens).
    pub fn encode(&self, text: &str, max_tokens: usize) -> Vec<u32> {
        let budget = max_tokens.saturating_sub(2);
        let mut ids = Vec::with_capacity(budget.min(text.len()) + 2);
        ids.push(self.cls);
        // Normalized a stretch at a time, split at ASCII whitespace, so text past the budget is
        // never normalized. The same as normalizing the whole: the normalizer maps characters
        // one by one, NFD never reorders marks across a space, and a space ends a word.
        'text: for stretch in text.split([' ', '\n', '\t', '\r']) {
            if stretch.is_empty() {
                continue;
            }
            let normalized = self.normalizer.normalize(stretch);
            for word in words(&normalized) {
                if ids.len() > budget {
                    break 'text;
                }
                self.push_pieces(word, &mut ids);
            }
        }
        ids.truncate(budget.saturating_add(1));
        ids.push(self.sep);
        ids
    }

    /// The id of `[PAD]`.
    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// The largest token id this tokenizer can produce.
    pub fn max_id(&self) -> u32 {
        self.words
            .values()
            .chain(self.continuations.values())
            .copied()
            .max()
            .unwrap_or(0)
    }

    /// Appends the WordPiece ids of one pre-tokenized word.
    fn push_pieces(&self, word: &str, ids: &mut Vec<u32>) {
        if word.chars().nth(self.max_input_chars_per_word).is_some() {
            ids.push(self.unk);
            return;
        }
        let first = ids.len();
        let mut start = 0;
        while start < word.len() {
            let vocab = if start == 0 {
                &self.words
            } else {
                &self.continuations
            };
            // Longest match first: shrink the candidate one character at a time, from the
            // longest piece the vocabulary has.
            let rest = word.get(start..).unwrap_or_default();
            let mut end = rest.floor_char_boundary(self.max_piece_bytes);
            let found = loop {
                let candidate = rest.get(..end).unwrap_or_default();
                if let Some(id) = vocab.get(candidate) {
                    break Some((end, *id));
                }
                match candidate.char_indices().next_back() {
                    Some((last, _)) if last > 0 => end = last,
                    _ => break None,
                }
            };
            let Some((end, id)) = found else {
                ids.truncate(first);
                ids.push(self.unk);
                return;
            };
            ids.push(id);
            start += end;
        }
    }
}

// === normalization and pre-tokenization ===

#[derive(Debug, Clone, Copy)]
struct Normalizer {
    clean_text: bool,
    handle_chinese_chars: bool,
    strip_accents: bool,
    lowercase: bool,
}

impl Normalizer {
    fn normalize(&self, text: &str) -> String {
        let mut spaced = String::with_capacity(text.len());
        for c in text.chars() {
            let c = if self.clean_text {
                if c == '\0' || c == '\u{fffd}' || is_control(c) {
                    continue;
                }
                if is_whitespace(c) { ' ' } else { c }
            } else {
                c
            };
            if self.handle_chinese_chars && is_chinese_char(c) {
                spaced.push(' ');
                spaced.push(c);
                spaced.push(' ');
            } else {
                spaced.push(c);
            }
        }
        let stripped = if self.strip_accents {
            spaced
                .nfd()
                .filter(|c| c.general_category() != GeneralCategory::NonspacingMark)
                .collect()
        } else {
            spaced
        };
        if self.lowercase {
            // Character by character, as `tokenizers` does (so a final sigma stays `σ`).
            stripped.chars().flat_map(char::to_lowercase).collect()
        } else {
            stripped
        }
    }
}

/// Splits normalized text into words: on whitespace, with each punctuation character a word.
fn words(text: &str) -> impl Iterator<Item = &str> {
    let mut pieces = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() || is_punctuation(c) {
            if let Some(s) = start.take() {
                pieces.push((s, i));
            }
            if !c.is_whitespace() {
                pieces.push((i, i + c.len_utf8()));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        pieces.push((s, text.len()));
    }
    pieces.into_iter().filter_map(move |(s, e)| text.get(s..e))
}

/// `tokenizers`' whitespace test: tab, newline, carriage return or Unicode `White_Space`.
fn is_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

/// `tokenizers`' control test: categories `Cc`, `Cf`, `Co` except tab, newline, carriage
/// return (which count as whitespace).
fn is_control(c: char) -> bool {
    if matches!(c, '\t' | '\n' | '\r') {
        return false;
    }
    matches!(
        c.general_category(),
        GeneralCategory::Control | GeneralCategory::Format | GeneralCategory::PrivateUse
    )
}

/// BERT's punctuation: ASCII punctuation (which includes symbols such as `$` and `+`) or any
/// Unicode punctuation category.
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || c.general_category_group() == GeneralCategoryGroup::Punctuation
}

/// The CJK ideograph blocks BERT surrounds with spaces, copied from `tokenizers` (including its
/// `0x2B920` lower bound where Python BERT has `0x2B820`).
fn is_chinese_char(c: char) -> bool {
    matches!(
        u32::from(c),
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

// === tokenizer.json ===

#[derive(Deserialize)]
struct RawTokenizer {
    normalizer: Option<RawNormalizer>,
    pre_tokenizer: RawPreTokenizer,
    model: RawModel,
}

#[derive(Deserialize)]
#[serde(tag = "type")]
enum RawNormalizer {
    BertNormalizer {
        #[serde(default = "yes")]
        clean_text: bool,
        #[serde(default = "yes")]
        handle_chinese_chars: bool,
        #[serde(default)]
        strip_accents: Option<bool>,
        #[serde(default = "yes")]
        lowercase: bool,
    },
}

#[derive(Deserialize)]
struct RawPreTokenizer {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct RawModel {
    #[serde(rename = "type")]
    kind: String,
    unk_token: String,
    #[serde(default = "double_hash")]
    continuing_subword_prefix: String,
    #[serde(default = "hundred")]
    max_input_chars_per_word: usize,
    vocab: HashMap<String, u32>,
}

fn yes() -> bool {
    true
}

fn double_hash() -> String {
    "##".to_owned()
}

fn hundred() -> usize {
    100
}

#[cfg(test)]
mod tests {
    use super::*;

    const BERT: Normalizer = Normalizer {
        clean_text: true,
        handle_chinese_chars: true,
        strip_accents: true,
        lowercase: true,
    };

    fn split(text: &str) -> Vec<&str> {
        words(text).collect()
    }

    #[test]
    fn normalizer_cleans_lowercases_and_strips_accents() {
        assert_eq!(BERT.normalize("Héllo\tWORLD\u{0}\u{200b}!"), "hello world!");
        assert_eq!(BERT.normalize("Ünïcödé"), "unicode");
        assert_eq!(BERT.normalize("e\u{301}"), "e");
        assert_eq!(BERT.normalize("ΣΑΣ"), "σασ");
    }

    #[test]
    fn normalizer_spaces_out_cjk_ideographs_but_not_kana() {
        assert_eq!(BERT.normalize("漢字"), " 漢  字 ");
        assert_eq!(BERT.normalize("かな"), "かな");
    }

    #[test]
    fn words_split_on_whitespace_and_isolate_punctuation() {
        assert_eq!(
            split("  hello, world!! "),
            ["hello", ",", "world", "!", "!"]
        );
        assert_eq!(split("a—b $5+3"), ["a", "—", "b", "$", "5", "+", "3"]);
        assert_eq!(split("🚀x"), ["🚀x"]);
        assert!(split("   ").is_empty());
    }
}
