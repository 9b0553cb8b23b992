//! Strict text encodings of bytes: standard base64 (RFC 4648 §4, with padding) and lowercase hex.
//!
//! Both decoders accept exactly one spelling per byte string — the one the encoders write — so
//! whatever decodes re-encodes to the same text. Signed notes and checkpoints rely on that: a
//! note that parses renders back byte for byte, and no second spelling of a root or a signature
//! can slip past a comparison of texts.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Encodes `bytes` as standard base64 with `=` padding.
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b0 = chunk.first().copied().unwrap_or(0);
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        out.push(sextet(n >> 18));
        out.push(sextet(n >> 12));
        out.push(if chunk.len() > 1 { sextet(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(n) } else { '=' });
    }
    out
}

/// Decodes standard base64 with `=` padding, rejecting anything the encoder would not write:
/// missing or extra padding, characters outside the alphabet (whitespace included) and
/// non-zero bits after the last byte. Returns `None` on any of these.
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let mut quads = bytes.chunks_exact(4).peekable();
    while let Some(quad) = quads.next() {
        let last = quads.peek().is_none();
        let [c0, c1, c2, c3] = [quad.first(), quad.get(1), quad.get(2), quad.get(3)]
            .map(|c| c.copied().unwrap_or(b'='));
        let v0 = sextet_value(c0)?;
        let v1 = sextet_value(c1)?;
        match (c2, c3) {
            (b'=', b'=') if last => {
                // One byte: the low four bits of the second character must be zero.
                if v1 & 0x0f != 0 {
                    return None;
                }
                out.push((v0 << 2) | (v1 >> 4));
            }
            (_, b'=') if last => {
                let v2 = sextet_value(c2)?;
                // Two bytes: the low two bits of the third character must be zero.
                if v2 & 0x03 != 0 {
                    return None;
                }
                out.push((v0 << 2) | (v1 >> 4));
                out.push((v1 << 4) | (v2 >> 2));
            }
            _ => {
                let v2 = sextet_value(c2)?;
                let v3 = sextet_value(c3)?;
                out.push((v0 << 2) | (v1 >> 4));
                out.push((v1 << 4) | (v2 >> 2));
                out.push((v2 << 6) | v3);
            }
        }
    }
    Some(out)
}

/// Encodes `bytes` as lowercase hex.
pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(
            HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0'),
        ));
        out.push(char::from(
            HEX.get(usize::from(b & 0x0f)).copied().unwrap_or(b'0'),
        ));
    }
    out
}

/// Decodes lowercase hex of exactly `N` bytes; uppercase digits are rejected so that one value
/// has one spelling.
pub(crate) fn hex_decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let hi = hex_value(*pair.first()?)?;
        let lo = hex_value(*pair.get(1)?)?;
        *byte = (hi << 4) | lo;
    }
    Some(out)
}

/// Whether `text` is lowercase hex of exactly `len` characters.
pub(crate) fn is_lower_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| hex_value(b).is_some())
}

fn sextet(n: u32) -> char {
    // The mask keeps the index below 64, so the lookup always succeeds.
    char::from(ALPHABET.get((n & 0x3f) as usize).copied().unwrap_or(b'A'))
}

fn sextet_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn base64_matches_rfc4648_test_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
            assert_eq!(base64_decode(encoded).as_deref(), Some(plain.as_bytes()));
        }
    }

    #[test]
    fn base64_rejects_every_non_canonical_spelling() {
        for bad in [
            "Zg", "Zg=", "Zh==", "Zm9=", "Zm8", "Zm 9v", "Zm9v\n", "Zg==Zg==", "=Zg=", "Z===",
            "Zm9v_", "Zm-v", "Zg=a",
        ] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hex_is_lowercase_only() {
        assert_eq!(hex_encode(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(hex_decode::<3>("00abff"), Some([0x00, 0xab, 0xff]));
        assert_eq!(hex_decode::<3>("00ABFF"), None);
        assert_eq!(hex_decode::<3>("00abf"), None);
        assert_eq!(hex_decode::<2>("00abff"), None);
        assert!(is_lower_hex("c74f20a3", 8));
        assert!(!is_lower_hex("C74F20A3", 8));
    }

    proptest! {
        #[test]
        fn base64_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let text = base64_encode(&bytes);
            prop_assert_eq!(base64_decode(&text), Some(bytes));
        }

        #[test]
        fn base64_decodes_only_what_it_would_encode(text in "[A-Za-z0-9+/=]{0,12}") {
            if let Some(bytes) = base64_decode(&text) {
                prop_assert_eq!(base64_encode(&bytes), text);
            }
        }
    }
}
