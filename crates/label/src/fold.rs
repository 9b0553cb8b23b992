//! Folding of Unicode look-alikes and invisible characters, so that a marking disguised with
//! Cyrillic letters, full-width slashes or zero-width spaces is still recognized.
//!
//! Folding maps each character to at most one ASCII character (or drops it) and remembers, for
//! every byte of the folded text, where its character started in the original. A match in the
//! folded text can then be reported with its byte span in the original text.

/// Text after folding, with the map back to the original.
#[derive(Debug)]
pub struct Folded {
    /// The folded text.
    pub text: String,
    /// `offsets[i]` is the byte offset in the original text of the character that produced byte
    /// `i` of `text`; `offsets[text.len()]` is the original length.
    pub(crate) offsets: Vec<u32>,
}

impl Folded {
    /// The original byte offset of folded byte offset `i` (clamped to the end).
    pub fn original(&self, i: usize) -> usize {
        self.offsets
            .get(i)
            .or_else(|| self.offsets.last())
            .map_or(0, |&o| o as usize)
    }

    /// The original span of folded span `start..end` in `src` (the text that was folded): from
    /// its first character's start to the end of its last character — not to the start of the
    /// next one, which may be a dropped invisible character.
    pub fn original_span(&self, start: usize, end: usize, src: &str) -> (usize, usize) {
        let s = self.original(start);
        if end <= start {
            return (s, s);
        }
        let last = self.original(end - 1);
        let e = src
            .get(last..)
            .and_then(|rest| rest.chars().next())
            .map_or(src.len(), |c| last + c.len_utf8());
        (s, e)
    }
}

/// Folds `src`: look-alike letters, digits and punctuation to ASCII (case kept), invisible
/// characters and combining marks dropped, other characters kept. Offsets are stored as `u32`; text longer than 4 GiB is not expected (the
/// gateway's body limit is far smaller), and offsets saturate rather than wrap.
pub fn fold(src: &str) -> Folded {
    let mut text = String::with_capacity(src.len());
    let mut offsets = Vec::with_capacity(src.len() + 1);
    for (at, c) in src.char_indices() {
        let at = u32::try_from(at).unwrap_or(u32::MAX);
        match fold_char(c) {
            Fold::Drop => {}
            Fold::Ascii(b) => {
                text.push(char::from(b));
                offsets.push(at);
            }
            Fold::Keep => {
                text.push(c);
                for _ in 0..c.len_utf8() {
                    offsets.push(at);
                }
            }
        }
    }
    offsets.push(u32::try_from(src.len()).unwrap_or(u32::MAX));
    Folded { text, offsets }
}

/// What folding does with one character.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fold {
    /// Remove it: it is invisible (zero-width, bidi control, combining mark, variation selector).
    Drop,
    /// Replace it with this ASCII byte.
    Ascii(u8),
    /// Keep it as it is.
    Keep,
}

/// Folds one character.
pub(crate) fn fold_char(c: char) -> Fold {
    if c.is_ascii() {
        return Fold::Ascii(c as u8);
    }
    let cp = u32::from(c);
    let ascii = |b: u8| Fold::Ascii(b);
    match cp {
        // Full-width ASCII variants.
        0xFF01..=0xFF5E => ascii((cp - 0xFEE0) as u8),
        // Spaces of every width.
        0x00A0 | 0x1680 | 0x2000..=0x200A | 0x202F | 0x205F | 0x3000 => ascii(b' '),
        // Line and paragraph separators.
        0x0085 | 0x2028 | 0x2029 => ascii(b'\n'),
        // Invisible: soft hyphen, joiners, bidi controls, word joiner and friends, BOM,
        // variation selectors, tag characters, Hangul fillers, Mongolian vowel separator.
        0x00AD
        | 0x034F
        | 0x061C
        | 0x115F
        | 0x1160
        | 0x17B4
        | 0x17B5
        | 0x180B..=0x180F
        | 0x200B..=0x200F
        | 0x202A..=0x202E
        | 0x2060..=0x206F
        | 0x3164
        | 0xFE00..=0xFE0F
        | 0xFEFF
        | 0xFFA0
        | 0xE0000..=0xE007F
        | 0xE0100..=0xE01EF
        | 0x1D173..=0x1D17A => Fold::Drop,
        // Combining marks: a marking never carries diacritics.
        0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F => {
            Fold::Drop
        }
        // Slashes.
        0x2044 | 0x2215 | 0x29F8 | 0x2571 | 0x1735 | 0x27CB => ascii(b'/'),
        // Parentheses.
        0x2768 | 0x276A | 0x207D | 0x208D | 0xFE59 | 0x27EE | 0xFF5F => ascii(b'('),
        0x2769 | 0x276B | 0x207E | 0x208E | 0xFE5A | 0x27EF | 0xFF60 => ascii(b')'),
        // Dashes and minus signs.
        0x2010..=0x2015 | 0x2043 | 0x2212 | 0xFE58 | 0xFE63 => ascii(b'-'),
        // Commas.
        0x060C | 0x201A | 0x3001 | 0xFE50 => ascii(b','),
        // Latin-1 letters with diacritics.
        0x00C0..=0x00C5 => ascii(b'A'),
        0x00C7 => ascii(b'C'),
        0x00C8..=0x00CB => ascii(b'E'),
        0x00CC..=0x00CF => ascii(b'I'),
        0x00D1 => ascii(b'N'),
        0x00D2..=0x00D6 | 0x00D8 => ascii(b'O'),
        0x00D9..=0x00DC => ascii(b'U'),
        0x00DD => ascii(b'Y'),
        0x00E0..=0x00E5 => ascii(b'a'),
        0x00E7 => ascii(b'c'),
        0x00E8..=0x00EB => ascii(b'e'),
        0x00EC..=0x00EF => ascii(b'i'),
        0x00F1 => ascii(b'n'),
        0x00F2..=0x00F6 | 0x00F8 => ascii(b'o'),
        0x00F9..=0x00FC => ascii(b'u'),
        0x00FD | 0x00FF => ascii(b'y'),
        // Mathematical alphanumeric letters: 13 styles of A–Z a–z laid out in blocks of 52.
        0x1D400..=0x1D6A3 => {
            let i = ((cp - 0x1D400) % 52) as u8;
            ascii(if i < 26 { b'A' + i } else { b'a' + i - 26 })
        }
        0x1D7CE..=0x1D7FF => ascii(b'0' + ((cp - 0x1D7CE) % 10) as u8),
        // Circled, squared and regional-indicator letters.
        0x24B6..=0x24CF => ascii(b'A' + (cp - 0x24B6) as u8),
        0x24D0..=0x24E9 => ascii(b'a' + (cp - 0x24D0) as u8),
        0x1F110..=0x1F129 => ascii(b'A' + (cp - 0x1F110) as u8),
        0x1F130..=0x1F149 => ascii(b'A' + (cp - 0x1F130) as u8),
        0x1F150..=0x1F169 => ascii(b'A' + (cp - 0x1F150) as u8),
        0x1F170..=0x1F189 => ascii(b'A' + (cp - 0x1F170) as u8),
        0x1F1E6..=0x1F1FF => ascii(b'A' + (cp - 0x1F1E6) as u8),
        _ => letter_lookalike(c).map_or(Fold::Keep, Fold::Ascii),
    }
}

/// Cyrillic, Greek and small-capital letters that look like Latin letters.
fn letter_lookalike(c: char) -> Option<u8> {
    let b = match c {
        'А' | 'Α' | 'ᴀ' => b'A',
        'В' | 'Β' | 'ʙ' | 'в' => b'B',
        'С' | 'Ϲ' | 'ᴄ' => b'C',
        'Ԁ' | 'ᴅ' => b'D',
        'Е' | 'Ε' | 'ᴇ' => b'E',
        'Ԍ' | 'ɢ' => b'G',
        'Н' | 'Η' | 'ʜ' | 'н' => b'H',
        'І' | 'Ι' | 'ɪ' | 'Ӏ' => b'I',
        'Ј' | 'ᴊ' => b'J',
        'К' | 'Κ' | 'ᴋ' | 'к' | 'κ' => b'K',
        'ʟ' => b'L',
        'М' | 'Μ' | 'ᴍ' | 'м' => b'M',
        'Ν' | 'ɴ' => b'N',
        'О' | 'Ο' | 'ᴏ' => b'O',
        'Р' | 'Ρ' | 'ᴘ' => b'P',
        'Ԛ' => b'Q',
        'ʀ' => b'R',
        'Ѕ' | 'ꜱ' => b'S',
        'Т' | 'Τ' | 'ᴛ' | 'т' | 'τ' => b'T',
        'ᴜ' => b'U',
        'ᴠ' => b'V',
        'Ԝ' | 'ᴡ' => b'W',
        'Х' | 'Χ' => b'X',
        'У' | 'Υ' | 'Ү' | 'ʏ' => b'Y',
        'Ζ' | 'ᴢ' => b'Z',
        'а' | 'α' => b'a',
        'с' | 'ϲ' => b'c',
        'ԁ' => b'd',
        'ɡ' => b'g',
        'п' => b'n',
        'г' => b'r',
        'е' | 'ε' => b'e',
        'һ' => b'h',
        'і' | 'ι' | 'ı' => b'i',
        'ј' | 'ϳ' => b'j',
        'ӏ' => b'l',
        'о' | 'ο' | 'σ' => b'o',
        'р' | 'ρ' => b'p',
        'ԛ' => b'q',
        'ѕ' => b's',
        'υ' => b'u',
        'ν' => b'v',
        'ԝ' => b'w',
        'х' | 'χ' => b'x',
        'у' => b'y',
        _ => return None,
    };
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_map_back_over_dropped_invisibles() {
        // The safety stack matches trigger words in the folded text and reports original spans.
        let src = "іgn\u{200B}оrе ｐrevious";
        let f = fold(src);
        assert_eq!(f.text, "ignore previous");
        let (s, e) = f.original_span(0, 6, src);
        assert_eq!(&src[s..e], "іgn\u{200B}оrе");
        let (s, e) = f.original_span(7, 15, src);
        assert_eq!(&src[s..e], "ｐrevious");
        assert_eq!(f.original_span(3, 3, src), (f.original(3), f.original(3)));
        let other = fold("東京 ∑");
        assert_eq!(other.text, "東京 ∑");
        assert_eq!(other.original(3), 3);
    }

    #[test]
    fn cyrillic_and_zero_width_fold_to_ascii_with_offsets() {
        let src = "x ЅЕ\u{200B}CRET／／NOFORN";
        let f = fold(src);
        assert_eq!(f.text, "x SECRET//NOFORN");
        assert_eq!(f.offsets.len(), f.text.len() + 1);
        // `S` came from the two-byte Cyrillic Ѕ at byte 2.
        assert_eq!(f.original(2), 2);
        // `C` follows the dropped zero-width space.
        let c = f.text.find('C').unwrap();
        assert_eq!(&src[f.original(c)..f.original(c) + 1], "C");
        assert_eq!(f.original(f.text.len()), src.len());
    }

    #[test]
    fn unmapped_characters_are_kept_whole() {
        let f = fold("机密 (S)");
        assert_eq!(f.text, "机密 (S)");
        assert_eq!(f.original(3), 3);
    }

    #[test]
    fn styled_letters_fold() {
        let f = fold("𝐒𝐄𝐂𝐑𝐄𝐓 ⓢ 🅢");
        assert_eq!(f.text, "SECRET s S");
    }
}
