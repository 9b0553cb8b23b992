//! Folding of look-alike letters and invisible characters, so that "іgnоrе previous
//! instructions" written with Cyrillic letters or zero-width spaces still matches.
//!
//! `enclave-label` folds markings the same way, but its fold module is private; this is a
//! smaller table for trigger words (letters, spaces, punctuation that phrases use). Each
//! character maps to at most one ASCII byte or is dropped, and every folded byte remembers where
//! its character started in the original, so matches are reported with original spans.

/// Text after folding, with the map back to the original.
#[derive(Debug)]
pub(super) struct Folded {
    /// The folded text.
    pub(super) text: String,
    /// `offsets[i]`: the original byte offset of the character that produced folded byte `i`;
    /// `offsets[text.len()]` is the original length.
    offsets: Vec<usize>,
}

impl Folded {
    /// The original offset of folded offset `i` (clamped to the end).
    pub(super) fn original(&self, i: usize) -> usize {
        self.offsets
            .get(i)
            .or_else(|| self.offsets.last())
            .copied()
            .unwrap_or(0)
    }

    /// The original span of folded span `start..end`: from the first character's start to the
    /// end of the last character (not the start of the next, which may be a dropped invisible).
    pub(super) fn original_span(&self, start: usize, end: usize, src: &str) -> (usize, usize) {
        let s = self.original(start);
        if end == 0 || end <= start {
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

/// Folds `src`.
pub(super) fn fold(src: &str) -> Folded {
    let mut text = String::with_capacity(src.len());
    let mut offsets = Vec::with_capacity(src.len() + 1);
    for (at, c) in src.char_indices() {
        if c.is_ascii() {
            text.push(c);
            offsets.push(at);
            continue;
        }
        match fold_char(c) {
            None => {}
            Some(Fold::Ascii(b)) => {
                text.push(char::from(b));
                offsets.push(at);
            }
            Some(Fold::Keep) => {
                text.push(c);
                offsets.extend(std::iter::repeat_n(at, c.len_utf8()));
            }
        }
    }
    offsets.push(src.len());
    Folded { text, offsets }
}

/// What folding does with one non-ASCII character (`None`: drop it).
enum Fold {
    Ascii(u8),
    Keep,
}

/// Folds one non-ASCII character.
fn fold_char(c: char) -> Option<Fold> {
    let cp = u32::from(c);
    let ascii = |b: u32| u8::try_from(b).ok().map(Fold::Ascii);
    match cp {
        // Full-width ASCII.
        0xFF01..=0xFF5E => ascii(cp - 0xFEE0),
        // Spaces of every width and line separators.
        0x00A0 | 0x1680 | 0x2000..=0x200A | 0x202F | 0x205F | 0x3000 => ascii(0x20),
        0x0085 | 0x2028 | 0x2029 => ascii(0x0A),
        // Invisible: soft hyphen, zero-width characters and joiners, bidi controls, word joiner,
        // BOM, variation selectors, tag characters, combining marks.
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
        | 0x0300..=0x036F
        | 0x1AB0..=0x1AFF
        | 0x1DC0..=0x1DFF
        | 0x20D0..=0x20FF
        | 0xFE20..=0xFE2F => None,
        // Dashes.
        0x2010..=0x2015 | 0x2212 => ascii(0x2D),
        // Latin-1 letters with diacritics.
        0x00E0..=0x00E5 => ascii(0x61),
        0x00E8..=0x00EB => ascii(0x65),
        0x00EC..=0x00EF => ascii(0x69),
        0x00F2..=0x00F6 | 0x00F8 => ascii(0x6F),
        0x00F9..=0x00FC => ascii(0x75),
        0x00C0..=0x00C5 => ascii(0x41),
        0x00C8..=0x00CB => ascii(0x45),
        0x00CC..=0x00CF => ascii(0x49),
        0x00D2..=0x00D6 | 0x00D8 => ascii(0x4F),
        0x00D9..=0x00DC => ascii(0x55),
        // Mathematical alphanumeric letters: styles of A–Z a–z in blocks of 52.
        0x1D400..=0x1D6A3 => {
            let i = (cp - 0x1D400) % 52;
            ascii(if i < 26 { 0x41 + i } else { 0x61 + i - 26 })
        }
        // Circled and squared letters.
        0x24B6..=0x24CF => ascii(0x41 + cp - 0x24B6),
        0x24D0..=0x24E9 => ascii(0x61 + cp - 0x24D0),
        0x1F130..=0x1F149 => ascii(0x41 + cp - 0x1F130),
        0x1F150..=0x1F169 => ascii(0x41 + cp - 0x1F150),
        0x1F170..=0x1F189 => ascii(0x41 + cp - 0x1F170),
        _ => Some(lookalike(c).map_or(Fold::Keep, Fold::Ascii)),
    }
}

/// Cyrillic, Greek and small-capital letters that look like Latin letters.
fn lookalike(c: char) -> Option<u8> {
    let b = match c {
        'А' | 'Α' | 'ᴀ' | 'а' | 'α' => b'a',
        'В' | 'Β' | 'ʙ' | 'в' => b'b',
        'С' | 'Ϲ' | 'ᴄ' | 'с' | 'ϲ' => b'c',
        'Ԁ' | 'ᴅ' | 'ԁ' => b'd',
        'Е' | 'Ε' | 'ᴇ' | 'е' | 'ε' => b'e',
        'Ԍ' | 'ɢ' | 'ɡ' => b'g',
        'Н' | 'Η' | 'ʜ' | 'н' | 'һ' => b'h',
        'І' | 'Ι' | 'ɪ' | 'Ӏ' | 'і' | 'ι' | 'ı' => b'i',
        'Ј' | 'ᴊ' | 'ј' | 'ϳ' => b'j',
        'К' | 'Κ' | 'ᴋ' | 'к' | 'κ' => b'k',
        'ʟ' | 'ӏ' => b'l',
        'М' | 'Μ' | 'ᴍ' | 'м' => b'm',
        'Ν' | 'ɴ' | 'п' => b'n',
        'О' | 'Ο' | 'ᴏ' | 'о' | 'ο' | 'σ' => b'o',
        'Р' | 'Ρ' | 'ᴘ' | 'р' | 'ρ' => b'p',
        'Ԛ' | 'ԛ' => b'q',
        'ʀ' | 'г' => b'r',
        'Ѕ' | 'ꜱ' | 'ѕ' => b's',
        'Т' | 'Τ' | 'ᴛ' | 'т' | 'τ' => b't',
        'ᴜ' | 'υ' => b'u',
        'ᴠ' | 'ν' => b'v',
        'Ԝ' | 'ᴡ' | 'ԝ' => b'w',
        'Х' | 'Χ' | 'х' | 'χ' => b'x',
        'У' | 'Υ' | 'Ү' | 'ʏ' | 'у' => b'y',
        'Ζ' | 'ᴢ' => b'z',
        _ => return None,
    };
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_lookalikes_and_drops_invisibles_keeping_offsets() {
        let src = "іgn\u{200B}оrе ｐrevious";
        let f = fold(src);
        assert_eq!(f.text, "ignore previous");
        let (s, e) = f.original_span(0, 6, src);
        assert_eq!(&src[s..e], "іgn\u{200B}оrе");
        let (s, e) = f.original_span(7, 15, src);
        assert_eq!(&src[s..e], "ｐrevious");
    }

    #[test]
    fn other_scripts_are_kept() {
        let f = fold("東京 ∑");
        assert_eq!(f.text, "東京 ∑");
        assert_eq!(f.original(3), 3);
    }
}
