//! Distinguished names, compared structurally: relative distinguished name (RDN) by RDN,
//! attribute by attribute, never as rendered text.
//!
//! A configured subject is RFC 4514 text (`CN=DOE.JOHN.1234567890,OU=DoD,O=U.S. Government,C=US`,
//! the most specific RDN first, `\,` or `\2C` escaping a comma inside a value); a certificate's
//! subject is its DER sequence of RDNs. Both become a [`DistinguishedName`]: a list of RDNs in
//! certificate order, each a set of (attribute type OID, value) pairs. Two names are equal when
//! they have the same RDNs in the same order, each with the same set of attributes, and every
//! value is the same text. Values are compared exactly — no case folding, no space folding —
//! because a certificate's holder is named by exactly what its CA signed; only how the value is
//! encoded (PrintableString, UTF8String, BMPString, …) does not matter.
//!
//! So `CN=alice\,O=Admin` (one RDN whose common name contains a comma) never equals
//! `CN=alice,O=Admin` (two RDNs), an extra or missing RDN never matches, nor does the same RDNs
//! in another order.
//!
//! ```
//! use enclave_auth::dn::DistinguishedName;
//!
//! let two: DistinguishedName = "CN=alice,O=Admin".parse().unwrap();
//! let one: DistinguishedName = r"CN=alice\,O=Admin".parse().unwrap();
//! assert_ne!(one, two);
//! assert_eq!(two.len(), 2);
//! assert_eq!(one.to_string(), r"CN=alice\,O=Admin");
//! assert!("CN=alice,,O=x".parse::<DistinguishedName>().is_err());
//! ```

use std::fmt;
use std::str::FromStr;

use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::x509::X509Name;

/// A distinguished name: RDNs in certificate order (the most general, such as `C=US`, first).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DistinguishedName {
    rdns: Vec<Rdn>,
}

/// A relative distinguished name: a set of attributes, kept sorted so that equality is set
/// equality.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Rdn {
    attributes: Vec<Attribute>,
}

/// One attribute type and value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Attribute {
    /// The type's object identifier, dotted (`2.5.4.3`).
    oid: String,
    value: Value,
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Value {
    /// A value in one of the string types, as text.
    Text(String),
    /// A value in a type Enclave does not decode (TeletexString, a non-string type): its DER
    /// encoding. It equals no configured value.
    Der(Vec<u8>),
}

/// Why RFC 4514 text is not a distinguished name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not an RFC 4514 distinguished name: {reason}")]
pub struct DnError {
    /// The text, with control characters escaped.
    text: String,
    /// What is wrong, and what to write instead.
    reason: String,
}

/// The attribute type names Enclave reads and writes, with their object identifiers: those of
/// RFC 4514 and the ones PKI certificates commonly use.
const NAMES: &[(&str, &str)] = &[
    ("CN", "2.5.4.3"),
    ("C", "2.5.4.6"),
    ("DC", "0.9.2342.19200300.100.1.25"),
    ("L", "2.5.4.7"),
    ("O", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("ST", "2.5.4.8"),
    ("STREET", "2.5.4.9"),
    ("UID", "0.9.2342.19200300.100.1.1"),
    ("SERIALNUMBER", "2.5.4.5"),
    ("SN", "2.5.4.4"),
    ("GIVENNAME", "2.5.4.42"),
    ("INITIALS", "2.5.4.43"),
    ("GENERATIONQUALIFIER", "2.5.4.44"),
    ("DNQUALIFIER", "2.5.4.46"),
    ("PSEUDONYM", "2.5.4.65"),
    ("TITLE", "2.5.4.12"),
    ("POSTALCODE", "2.5.4.17"),
    ("ORGANIZATIONIDENTIFIER", "2.5.4.97"),
    ("EMAILADDRESS", "1.2.840.113549.1.9.1"),
];

/// Other spellings accepted when reading.
const ALIASES: &[(&str, &str)] = &[("E", "1.2.840.113549.1.9.1"), ("GN", "2.5.4.42")];

impl DistinguishedName {
    /// The subject or issuer name of a parsed certificate. Values in the string types are
    /// decoded (PrintableString, UTF8String, IA5String, NumericString, VisibleString,
    /// BMPString, UniversalString); any other value is kept as its encoding and never equals a
    /// configured value.
    pub fn from_x509(name: &X509Name<'_>) -> DistinguishedName {
        let rdns = name
            .iter()
            .map(|rdn| {
                let mut attributes: Vec<Attribute> = rdn
                    .iter()
                    .map(|atv| Attribute {
                        oid: atv.attr_type().to_id_string(),
                        value: decode(atv.attr_value().tag(), atv.attr_value().data),
                    })
                    .collect();
                attributes.sort();
                Rdn { attributes }
            })
            .collect();
        DistinguishedName { rdns }
    }

    /// How many RDNs the name has.
    pub fn len(&self) -> usize {
        self.rdns.len()
    }

    /// Whether the name has no RDN at all (only a certificate can have such a subject).
    pub fn is_empty(&self) -> bool {
        self.rdns.is_empty()
    }
}

impl FromStr for DistinguishedName {
    type Err = DnError;

    /// Reads RFC 4514 text: RDNs separated by `,`, the attributes of a multi-valued RDN by
    /// `+`, the most specific RDN first. Attribute types are the names of RFC 4514 and a few
    /// more (`SERIALNUMBER`, `EMAILADDRESS`, `TITLE`, …, any case) or dotted OIDs. In values,
    /// `\` escapes one of `,+"\<>;=# ` or starts two hex digits of a UTF-8 byte. Spaces around
    /// separators and around `=` are ignored (write `\ ` for a significant one). Hex-encoded
    /// values (`#04...`) and empty values are refused.
    fn from_str(text: &str) -> Result<DistinguishedName, DnError> {
        Parser { text, pos: 0 }.name()
    }
}

impl fmt::Display for DistinguishedName {
    /// RFC 4514 text, the most specific RDN first, with special characters escaped and control
    /// characters written as `\XX`, so the text is safe to log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rdn) in self.rdns.iter().rev().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            for (j, attribute) in rdn.attributes.iter().enumerate() {
                if j > 0 {
                    f.write_str("+")?;
                }
                let name = NAMES
                    .iter()
                    .find(|(_, oid)| *oid == attribute.oid)
                    .map_or(attribute.oid.as_str(), |(name, _)| name);
                write!(f, "{name}=")?;
                match &attribute.value {
                    Value::Text(text) => write_escaped(f, text)?,
                    Value::Der(der) => {
                        f.write_str("#")?;
                        for b in der {
                            write!(f, "{b:02x}")?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

// === parsing ===

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn name(mut self) -> Result<DistinguishedName, DnError> {
        if self.text.trim().is_empty() {
            return Err(self
                .error("it is empty: write e.g. `CN=DOE.JOHN.1234567890,O=U.S. Government,C=US`"));
        }
        let mut rdns = Vec::new();
        let mut attributes = Vec::new();
        loop {
            attributes.push(self.attribute()?);
            self.skip_spaces();
            match self.next_char() {
                None => break,
                Some('+') => {}
                Some(',') => {
                    rdns.push(self.rdn(std::mem::take(&mut attributes))?);
                }
                Some(c) => {
                    return Err(self.error(&format!(
                        "unexpected `{}` after a value: escape it as `\\{}`",
                        c.escape_default(),
                        c.escape_default()
                    )));
                }
            }
        }
        rdns.push(self.rdn(attributes)?);
        // RFC 4514 writes the last RDN of the sequence first.
        rdns.reverse();
        Ok(DistinguishedName { rdns })
    }

    fn rdn(&self, mut attributes: Vec<Attribute>) -> Result<Rdn, DnError> {
        attributes.sort();
        if attributes.windows(2).any(|w| matches!(w, [a, b] if a == b)) {
            return Err(self.error("an RDN repeats an attribute"));
        }
        Ok(Rdn { attributes })
    }

    /// `type=value`.
    fn attribute(&mut self) -> Result<Attribute, DnError> {
        self.skip_spaces();
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == '=' || c == ',' || c == '+' {
                break;
            }
            self.pos += c.len_utf8();
        }
        let name = self.text.get(start..self.pos).unwrap_or_default().trim();
        if self.next_char() != Some('=') {
            return Err(self.error(&format!(
                "`{}` is not `TYPE=value` (an empty RDN, or a missing `=`)",
                name.escape_default()
            )));
        }
        let oid = attribute_oid(name).ok_or_else(|| {
            self.error(&format!(
                "unknown attribute type `{}`: use CN, O, OU, C, L, ST, DC, UID, SERIALNUMBER, EMAILADDRESS, … or a dotted OID",
                name.escape_default()
            ))
        })?;
        self.skip_spaces();
        let value = self.value()?;
        Ok(Attribute {
            oid,
            value: Value::Text(value),
        })
    }

    /// A string value up to the next unescaped `,` or `+`, its escapes resolved and unescaped
    /// trailing spaces dropped.
    fn value(&mut self) -> Result<String, DnError> {
        if self.peek() == Some('#') {
            return Err(self
                .error("hex-encoded values (`#...`) are not supported: write the value as text"));
        }
        let mut bytes = Vec::new();
        // Length of `bytes` up to the last significant (non-space or escaped) character.
        let mut significant = 0;
        while let Some(c) = self.peek() {
            match c {
                ',' | '+' => break,
                '\\' => {
                    self.pos += 1;
                    match self.next_char() {
                        Some(e @ (',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' | '#' | ' ')) => {
                            bytes.push(e as u8);
                        }
                        Some(hi) if hi.is_ascii_hexdigit() => {
                            let lo = self.next_char().filter(char::is_ascii_hexdigit).ok_or_else(
                                || self.error("`\\` must be followed by two hex digits or a special character"),
                            )?;
                            let byte = hex_value(hi) << 4 | hex_value(lo);
                            bytes.push(byte);
                        }
                        _ => {
                            return Err(self.error(
                                "`\\` must be followed by two hex digits or one of `,+\"\\<>;=# `",
                            ));
                        }
                    }
                    significant = bytes.len();
                }
                '"' | '<' | '>' | ';' => {
                    return Err(self.error(&format!("`{c}` in a value must be escaped as `\\{c}`")));
                }
                c if c.is_control() => {
                    return Err(self.error(&format!(
                        "control character `{}` in a value: write it as `\\{:02x}`",
                        c.escape_default(),
                        u32::from(c)
                    )));
                }
                c => {
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    self.pos += c.len_utf8();
                    if c != ' ' {
                        significant = bytes.len();
                    }
                }
            }
        }
        bytes.truncate(significant);
        if bytes.is_empty() {
            return Err(self.error("an attribute has an empty value"));
        }
        String::from_utf8(bytes).map_err(|_| self.error("escaped bytes are not valid UTF-8"))
    }

    fn peek(&self) -> Option<char> {
        self.text
            .get(self.pos..)
            .and_then(|rest| rest.chars().next())
    }

    fn next_char(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(' ') {
            self.pos += 1;
        }
    }

    fn error(&self, reason: &str) -> DnError {
        DnError {
            text: self.text.escape_default().to_string(),
            reason: reason.to_owned(),
        }
    }
}

/// The OID of an attribute type name (any case) or of a dotted OID.
fn attribute_oid(name: &str) -> Option<String> {
    let upper = name.to_ascii_uppercase();
    if let Some((_, oid)) = NAMES.iter().chain(ALIASES).find(|(n, _)| *n == upper) {
        return Some((*oid).to_owned());
    }
    let arcs: Vec<&str> = name.split('.').collect();
    let numeric = arcs.len() >= 2
        && arcs.iter().all(|arc| {
            !arc.is_empty()
                && arc.bytes().all(|b| b.is_ascii_digit())
                && (arc.len() == 1 || !arc.starts_with('0'))
        });
    numeric.then(|| name.to_owned())
}

fn hex_value(c: char) -> u8 {
    c.to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
        .unwrap_or(0)
}

// === certificates ===

/// An attribute value from a certificate, as text when it is in a string type.
fn decode(tag: Tag, data: &[u8]) -> Value {
    let text = match tag {
        Tag::Utf8String => std::str::from_utf8(data).ok().map(str::to_owned),
        Tag::PrintableString | Tag::Ia5String | Tag::NumericString | Tag::VisibleString => data
            .is_ascii()
            .then(|| String::from_utf8_lossy(data).into_owned()),
        Tag::BmpString => {
            let units: Option<Vec<u16>> = data
                .chunks(2)
                .map(|pair| match pair {
                    [hi, lo] => Some(u16::from_be_bytes([*hi, *lo])),
                    _ => None,
                })
                .collect();
            units.and_then(|u| String::from_utf16(&u).ok())
        }
        Tag::UniversalString => data
            .chunks(4)
            .map(|quad| match quad {
                [a, b, c, d] => char::from_u32(u32::from_be_bytes([*a, *b, *c, *d])),
                _ => None,
            })
            .collect(),
        _ => None,
    };
    match text {
        Some(text) => Value::Text(text),
        None => Value::Der(der(tag, data)),
    }
}

/// The DER encoding of a primitive value with a low tag number.
fn der(tag: Tag, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 6);
    out.push(u8::try_from(tag.0).unwrap_or(0x1f));
    let len = data.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap_or(0));
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | u8::try_from(significant.len()).unwrap_or(0));
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(data);
    out
}

/// Writes an RFC 4514 value: special characters escaped with `\`, control characters (and a
/// leading `#` or space, a trailing space) so that the text reads back as the same value.
fn write_escaped(f: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => write!(f, "\\{c}")?,
            '#' if i == 0 => f.write_str("\\#")?,
            ' ' if i == 0 || i == last => f.write_str("\\ ")?,
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    write!(f, "\\{b:02x}")?;
                }
            }
            c => write!(f, "{c}")?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::der_parser::asn1_rs::FromDer;

    fn dn(text: &str) -> DistinguishedName {
        text.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    /// One attribute: the OID's DER content, the string tag, the value bytes.
    type Atv<'a> = (&'a [u8], u8, &'a [u8]);

    /// DER of a Name built from RDNs of attributes.
    fn name_der(rdns: &[&[Atv<'_>]]) -> Vec<u8> {
        fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            assert!(content.len() < 0x80, "short test values only");
            out.push(content.len() as u8);
            out.extend_from_slice(content);
            out
        }
        let mut seq = Vec::new();
        for rdn in rdns {
            let mut set = Vec::new();
            for (oid, tag, value) in *rdn {
                let mut atv = tlv(0x06, oid);
                atv.extend(tlv(*tag, value));
                set.extend(tlv(0x30, &atv));
            }
            seq.extend(tlv(0x31, &set));
        }
        tlv(0x30, &seq)
    }

    const CN: &[u8] = &[0x55, 0x04, 0x03];
    const O: &[u8] = &[0x55, 0x04, 0x0a];
    const C: &[u8] = &[0x55, 0x04, 0x06];
    const UTF8: u8 = 0x0c;
    const PRINTABLE: u8 = 0x13;
    const BMP: u8 = 0x1e;
    const TELETEX: u8 = 0x14;

    fn from_der(der: &[u8]) -> DistinguishedName {
        let (_, name) = X509Name::from_der(der).unwrap();
        DistinguishedName::from_x509(&name)
    }

    #[test]
    fn rfc4514_text_lists_the_most_specific_rdn_first() {
        let cert = from_der(&name_der(&[
            &[(C, PRINTABLE, b"US")],
            &[(O, UTF8, b"U.S. Government")],
            &[(CN, PRINTABLE, b"DOE.JOHN.1234567890")],
        ]));
        assert_eq!(cert, dn("CN=DOE.JOHN.1234567890,O=U.S. Government,C=US"));
        assert_eq!(
            cert,
            dn("cn = DOE.JOHN.1234567890 , o=U.S. Government, c=US")
        );
        assert_eq!(
            cert,
            dn("2.5.4.3=DOE.JOHN.1234567890,2.5.4.10=U.S. Government,C=US")
        );
        assert_eq!(
            cert.to_string(),
            "CN=DOE.JOHN.1234567890,O=U.S. Government,C=US"
        );
        // The certificate's order written first is another name.
        assert_ne!(cert, dn("C=US,O=U.S. Government,CN=DOE.JOHN.1234567890"));
    }

    #[test]
    fn values_compare_exactly() {
        let cert = from_der(&name_der(&[&[(O, UTF8, b"Acme")], &[(CN, UTF8, b"alice")]]));
        assert_eq!(cert, dn("CN=alice,O=Acme"));
        for other in [
            "CN=Alice,O=Acme",
            "CN=alice,O=ACME",
            "CN=alice\\ ,O=Acme",
            "CN=al ice,O=Acme",
            "CN=alice",
            "CN=alice,O=Acme,C=US",
            "CN=alice,OU=Acme",
        ] {
            assert_ne!(cert, dn(other), "{other}");
        }
    }

    #[test]
    fn an_escaped_comma_is_part_of_one_value_never_a_second_rdn() {
        // A certificate whose common name is `alice,O=Admin`: one RDN.
        let injected = from_der(&name_der(&[&[(CN, UTF8, b"alice,O=Admin")]]));
        assert_ne!(injected, dn("CN=alice,O=Admin"));
        assert_eq!(injected, dn(r"CN=alice\,O\=Admin"));
        assert_eq!(injected, dn(r"CN=alice\2cO=Admin"));
        assert_eq!(injected.to_string(), r"CN=alice\,O=Admin");
        // And the two-RDN certificate does not match the one-RDN configuration.
        let two = from_der(&name_der(&[
            &[(O, UTF8, b"Admin")],
            &[(CN, UTF8, b"alice")],
        ]));
        assert_ne!(two, dn(r"CN=alice\,O=Admin"));
        assert_eq!(two, dn("CN=alice,O=Admin"));
    }

    #[test]
    fn multi_valued_rdns_compare_as_sets() {
        let multi = from_der(&name_der(&[
            &[(O, UTF8, b"Acme")],
            &[(CN, UTF8, b"alice"), (C, PRINTABLE, b"US")],
        ]));
        assert_eq!(multi, dn("CN=alice+C=US,O=Acme"));
        assert_eq!(multi, dn("C=US+CN=alice,O=Acme"));
        assert_ne!(multi, dn("CN=alice,C=US,O=Acme"));
        assert_ne!(multi, dn("CN=alice,O=Acme"));
        assert_eq!(multi.len(), 2);
    }

    #[test]
    fn string_types_decode_to_the_same_text_and_others_match_nothing() {
        let bmp: Vec<u8> = "José".encode_utf16().flat_map(u16::to_be_bytes).collect();
        assert_eq!(from_der(&name_der(&[&[(CN, BMP, &bmp)]])), dn("CN=José"));
        assert_eq!(
            from_der(&name_der(&[&[(CN, UTF8, "José".as_bytes())]])),
            dn("CN=Jos\\c3\\a9")
        );
        let teletex = from_der(&name_der(&[&[(CN, TELETEX, b"alice")]]));
        assert_ne!(teletex, dn("CN=alice"));
        assert_eq!(teletex.to_string(), "CN=#1405616c696365");
    }

    #[test]
    fn malformed_text_is_refused_with_a_reason() {
        for (text, reason) in [
            ("", "empty"),
            ("   ", "empty"),
            ("CN=alice,,O=x", "empty RDN"),
            ("CN=alice,", "missing `=`"),
            ("alice", "missing `=`"),
            ("XX=alice", "unknown attribute type `XX`"),
            ("CN=", "empty value"),
            ("CN=#0403616263", "hex-encoded"),
            ("CN=a\\", "`\\` must be followed"),
            ("CN=a\\zz", "`\\` must be followed"),
            ("CN=a\\c3", "not valid UTF-8"),
            ("CN=a;b", "must be escaped"),
            ("CN=a\u{7}", "control character"),
            ("CN=a+CN=a", "repeats"),
            ("1.=x", "unknown attribute type"),
        ] {
            let err = text.parse::<DistinguishedName>().unwrap_err().to_string();
            assert!(err.contains(reason), "{text:?}: {err}");
        }
    }

    #[test]
    fn rendering_reads_back_as_the_same_name() {
        let odd = from_der(&name_der(&[&[(
            CN,
            UTF8,
            " #lead, \"q\" +<>;=\\ trail \n".as_bytes(),
        )]]));
        let text = odd.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert_eq!(dn(&text), odd);
    }
}
