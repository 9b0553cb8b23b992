//! GPT-2 byte-level BPE tokenizer built from GGUF metadata alone.
//!
//! The pre-tokenizer is llama.cpp's `smollm` (Hugging Face: `Digits(individual_digits)` then
//! `ByteLevel(add_prefix_space = false)`): every numeric character is its own piece, then the
//! GPT-2 pattern `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//! splits the rest. The pattern is implemented by hand with character classes, so no regex
//! engine is needed. Control and user-defined tokens (`<|im_start|>`, `<|im_end|>`, ...) are
//! matched as whole tokens before BPE runs.
//!
//! Known approximation: `\p{L}` is taken as [`char::is_alphabetic`] minus numerics, which also
//! counts combining marks with the `Other_Alphabetic` property (for example Devanagari vowel
//! signs) as letters. The Unicode general category would put them in the "other" class; text in
//! those scripts may split into different (still valid, still lossless) tokens than the
//! reference tokenizer produces.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;

use super::error::ChatError;

/// GGUF `token_type` of an ordinary vocabulary entry.
const TYPE_NORMAL: i32 = 1;
/// GGUF `token_type` of a control token such as `<|im_end|>`.
const TYPE_CONTROL: i32 = 3;
/// GGUF `token_type` of a user-defined (added) token.
const TYPE_USER_DEFINED: i32 = 4;

/// A GPT-2 style byte-level BPE tokenizer, read from a GGUF file's `tokenizer.ggml.*` metadata.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    /// Token id -> its vocabulary string (byte-level alphabet for ordinary tokens).
    tokens: Vec<String>,
    /// Token id -> GGUF token type.
    types: Vec<i32>,
    /// Vocabulary string -> token id.
    ids: HashMap<String, u32>,
    /// `(left, right)` -> `(rank, merged)`; lower rank merges first.
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Control and user-defined tokens, longest text first, matched before BPE.
    specials: Vec<(String, u32)>,
    /// Byte -> id of the token for that byte's byte-level character.
    byte_ids: [Option<u32>; 256],
    /// Byte-level character -> byte.
    char_bytes: HashMap<char, u8>,
    bos: Option<u32>,
    eos: u32,
}

impl Tokenizer {
    /// Builds the tokenizer from GGUF metadata: `tokenizer.ggml.model` (must be `gpt2`),
    /// `tokens`, `token_type`, `merges`, `eos_token_id` and optionally `bos_token_id`.
    ///
    /// # Errors
    ///
    /// [`ChatError::Metadata`] when a key is missing, has the wrong type or is inconsistent.
    pub fn from_gguf_metadata(metadata: &HashMap<String, Value>) -> Result<Tokenizer, ChatError> {
        let model = string(metadata, "tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(ChatError::metadata(
                "tokenizer.ggml.model",
                format!("`{model}` is not supported, only `gpt2` byte-level BPE is"),
            ));
        }
        let tokens: Vec<String> = array(metadata, "tokenizer.ggml.tokens")?
            .iter()
            .map(|v| v.to_string().cloned())
            .collect::<Result<_, _>>()
            .map_err(|e| ChatError::metadata("tokenizer.ggml.tokens", e.to_string()))?;
        let types: Vec<i32> = match metadata.get("tokenizer.ggml.token_type") {
            None => vec![TYPE_NORMAL; tokens.len()],
            Some(v) => v
                .to_vec()
                .and_then(|vs| vs.iter().map(Value::to_i32).collect())
                .map_err(|e| ChatError::metadata("tokenizer.ggml.token_type", e.to_string()))?,
        };
        if types.len() != tokens.len() {
            return Err(ChatError::metadata(
                "tokenizer.ggml.token_type",
                format!("has {} entries for {} tokens", types.len(), tokens.len()),
            ));
        }
        let merge_strings: Vec<&String> = array(metadata, "tokenizer.ggml.merges")?
            .iter()
            .map(Value::to_string)
            .collect::<Result<_, _>>()
            .map_err(|e| ChatError::metadata("tokenizer.ggml.merges", e.to_string()))?;
        let eos = id(metadata, "tokenizer.ggml.eos_token_id", tokens.len())?
            .ok_or_else(|| ChatError::metadata("tokenizer.ggml.eos_token_id", "is missing"))?;
        let bos = id(metadata, "tokenizer.ggml.bos_token_id", tokens.len())?;
        Tokenizer::new(tokens, types, &merge_strings, bos, eos)
    }

    fn new(
        tokens: Vec<String>,
        types: Vec<i32>,
        merge_strings: &[&String],
        bos: Option<u32>,
        eos: u32,
    ) -> Result<Tokenizer, ChatError> {
        let mut ids = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            let i = u32::try_from(i)
                .map_err(|_| ChatError::metadata("tokenizer.ggml.tokens", "has too many tokens"))?;
            // First id wins on duplicates, like llama.cpp.
            ids.entry(t.clone()).or_insert(i);
        }
        let mut merges = HashMap::with_capacity(merge_strings.len());
        for (rank, m) in merge_strings.iter().enumerate() {
            let Some((left, right)) = m.split_once(' ') else {
                return Err(ChatError::metadata(
                    "tokenizer.ggml.merges",
                    format!("entry {rank} has no space"),
                ));
            };
            let (Some(&l), Some(&r), Some(&merged)) = (
                ids.get(left),
                ids.get(right),
                ids.get(&format!("{left}{right}")),
            ) else {
                // A merge whose parts are not in the vocabulary can never apply.
                continue;
            };
            let rank = u32::try_from(rank).unwrap_or(u32::MAX);
            merges.entry((l, r)).or_insert((rank, merged));
        }
        let mut specials: Vec<(String, u32)> = tokens
            .iter()
            .zip(&types)
            .zip(0u32..)
            .filter(|((t, ty), _)| {
                (**ty == TYPE_CONTROL || **ty == TYPE_USER_DEFINED) && !t.is_empty()
            })
            .map(|((t, _), i)| (t.clone(), i))
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let byte_chars = byte_chars();
        let mut byte_ids = [None; 256];
        let mut char_bytes = HashMap::with_capacity(256);
        for (b, c) in (0u8..=255).zip(byte_chars) {
            byte_ids[usize::from(b)] = ids.get(c.encode_utf8(&mut [0; 4]) as &str).copied();
            char_bytes.insert(c, b);
        }
        Ok(Tokenizer {
            tokens,
            types,
            ids,
            merges,
            specials,
            byte_ids,
            char_bytes,
            bos,
            eos,
        })
    }

    /// Turns text into token ids. Control tokens written in the text (`<|im_start|>`) become
    /// their single id; no BOS is added and no prefix space is inserted.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut rest = text;
        while !rest.is_empty() {
            let (plain, special) = self.split_special(rest);
            for piece in pre_tokenize(plain) {
                self.bpe(piece, &mut out);
            }
            match special {
                Some((len, id)) => {
                    out.push(id);
                    rest = rest.get(plain.len() + len..).unwrap_or_default();
                }
                None => rest = "",
            }
        }
        out
    }

    /// Turns token ids into text; bytes that do not form valid UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode_bytes(ids)).into_owned()
    }

    /// Turns token ids into the raw bytes they stand for (a token may end inside a multi-byte
    /// UTF-8 character). Unknown ids decode to nothing.
    pub fn decode_bytes(&self, ids: &[u32]) -> Vec<u8> {
        let mut out = Vec::new();
        for &id in ids {
            let Some(text) = self.token(id) else { continue };
            let ty = self.types.get(id as usize).copied().unwrap_or(TYPE_NORMAL);
            if ty == TYPE_CONTROL || ty == TYPE_USER_DEFINED {
                out.extend_from_slice(text.as_bytes());
                continue;
            }
            for c in text.chars() {
                match self.char_bytes.get(&c) {
                    Some(&b) => out.push(b),
                    None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                }
            }
        }
        out
    }

    /// The vocabulary string of a token id (byte-level alphabet, `Ġ` for a space).
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of a vocabulary string, if it is one token.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// Number of entries in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The beginning-of-sequence id from the metadata, if any.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence id (`<|im_end|>` for SmolLM2-Instruct).
    pub fn eos_id(&self) -> u32 {
        self.eos
    }

    /// Finds the first special token in `text`: returns the plain text before it and, if one
    /// was found, its byte length and id.
    fn split_special<'t>(&self, text: &'t str) -> (&'t str, Option<(usize, u32)>) {
        for (pos, _) in text.char_indices() {
            let Some(tail) = text.get(pos..) else {
                continue;
            };
            // Specials are sorted longest first, so the first hit is the longest match.
            if let Some((s, id)) = self.specials.iter().find(|(s, _)| tail.starts_with(s)) {
                return (text.get(..pos).unwrap_or_default(), Some((s.len(), *id)));
            }
        }
        (text, None)
    }

    /// Byte-level BPE of one pre-tokenized piece, appending ids to `out`.
    fn bpe(&self, piece: &str, out: &mut Vec<u32>) {
        let mut symbols: Vec<u32> = piece
            .bytes()
            .filter_map(|b| self.byte_ids[usize::from(b)])
            .collect();
        loop {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| match w {
                    [l, r] => self.merges.get(&(*l, *r)).map(|&(rank, id)| (rank, i, id)),
                    _ => None,
                })
                .min();
            let Some((_, i, merged)) = best else { break };
            symbols.splice(i..i + 2, [merged]);
        }
        out.extend_from_slice(&symbols);
    }
}

/// Splits text the way the `smollm` pre-tokenizer does (see the module docs).
pub(crate) fn pre_tokenize(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if c.is_numeric() {
            if start < i {
                gpt2_split(text.get(start..i).unwrap_or_default(), &mut pieces);
            }
            pieces.push(text.get(i..i + c.len_utf8()).unwrap_or_default());
            start = i + c.len_utf8();
        }
    }
    if start < text.len() {
        gpt2_split(text.get(start..).unwrap_or_default(), &mut pieces);
    }
    pieces
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

fn class(c: char) -> Class {
    if c.is_whitespace() {
        Class::Space
    } else if c.is_numeric() {
        Class::Number
    } else if c.is_alphabetic() {
        Class::Letter
    } else {
        Class::Other
    }
}

/// The GPT-2 pattern, leftmost-first like a backtracking regex engine.
fn gpt2_split<'t>(text: &'t str, pieces: &mut Vec<&'t str>) {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let end_of = |k: usize| chars.get(k).map_or(text.len(), |&(p, _)| p);
    let mut k = 0;
    while let Some(&(start, _)) = chars.get(k) {
        let next = k + gpt2_match(&chars, k, text).max(1);
        pieces.push(text.get(start..end_of(next)).unwrap_or_default());
        k = next;
    }
}

/// Length in chars of the pattern's match at char index `k` (always at least 1).
fn gpt2_match(chars: &[(usize, char)], k: usize, text: &str) -> usize {
    let at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let Some(c) = at(k) else { return 1 };
    // 's|'t|'re|'ve|'m|'ll|'d (case-sensitive, as in GPT-2)
    if c == '\'' {
        let tail = chars
            .get(k)
            .map_or("", |&(p, _)| text.get(p..).unwrap_or_default());
        for suffix in ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"] {
            if tail.starts_with(suffix) {
                return suffix.len();
            }
        }
    }
    // ` ?X+` for X in letters, numbers, other: an optional leading space then a run.
    let (first, lead) = match (c, at(k + 1)) {
        (' ', Some(n)) if class(n) != Class::Space => (n, 1),
        _ => (c, 0),
    };
    let cls = class(first);
    if cls != Class::Space {
        let run = chars
            .iter()
            .skip(k + lead)
            .take_while(|&&(_, ch)| class(ch) == cls)
            .count();
        return lead + run;
    }
    // \s+(?!\S) | \s+
    let run = chars
        .iter()
        .skip(k)
        .take_while(|&&(_, ch)| ch.is_whitespace())
        .count();
    if k + run == chars.len() || run == 1 {
        run
    } else {
        // Leave the last whitespace char to join the following word (` ?\p{L}+` etc).
        run - 1
    }
}

/// GPT-2's `bytes_to_unicode`: printable bytes map to themselves, the rest to U+0100 onwards.
fn byte_chars() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    for b in 0u8..=255 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        out[usize::from(b)] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(256 + n).unwrap_or('\u{FFFD}');
            n += 1;
            c
        };
    }
    out
}

fn array<'m>(metadata: &'m HashMap<String, Value>, key: &str) -> Result<&'m Vec<Value>, ChatError> {
    metadata
        .get(key)
        .ok_or_else(|| ChatError::metadata(key, "is missing"))?
        .to_vec()
        .map_err(|e| ChatError::metadata(key, e.to_string()))
}

fn string<'m>(metadata: &'m HashMap<String, Value>, key: &str) -> Result<&'m String, ChatError> {
    metadata
        .get(key)
        .ok_or_else(|| ChatError::metadata(key, "is missing"))?
        .to_string()
        .map_err(|e| ChatError::metadata(key, e.to_string()))
}

fn id(
    metadata: &HashMap<String, Value>,
    key: &str,
    vocab: usize,
) -> Result<Option<u32>, ChatError> {
    let Some(v) = metadata.get(key) else {
        return Ok(None);
    };
    let id = v
        .to_u32()
        .map_err(|e| ChatError::metadata(key, e.to_string()))?;
    if id as usize >= vocab {
        return Err(ChatError::metadata(
            key,
            format!("{id} is outside the vocabulary"),
        ));
    }
    Ok(Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_split_one_by_one() {
        assert_eq!(pre_tokenize("abc 123x"), ["abc", " ", "1", "2", "3", "x"]);
    }

    #[test]
    fn gpt2_pattern_matches_reference_splits() {
        assert_eq!(
            pre_tokenize("Hello world, it's  me!\n\nok"),
            [
                "Hello", " world", ",", " it", "'s", " ", " me", "!", "\n", "\n", "ok"
            ]
        );
        assert_eq!(pre_tokenize("a  "), ["a", "  "]);
        assert_eq!(pre_tokenize(" \t x"), [" \t", " x"]);
        assert_eq!(pre_tokenize("é€ü"), ["é", "€", "ü"]);
    }

    #[test]
    fn byte_chars_are_a_bijection() {
        let chars = byte_chars();
        let set: std::collections::HashSet<char> = chars.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(chars[usize::from(b' ')], 'Ġ');
        assert_eq!(chars[usize::from(b'\n')], 'Ċ');
    }
}
