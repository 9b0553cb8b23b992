//! A strict JSON tree: what a request body is parsed into before its typed view is read.
//!
//! It differs from `serde_json::Value` in two ways that matter at a security boundary:
//!
//! - **Duplicate keys are an error** at every depth. `serde_json::Value` keeps the last of two
//!   `"model"` keys while an upstream may read the first, so the request Enclave checked would
//!   not be the request the backend ran.
//! - **Strings borrow from the body** when they have no escapes, and objects keep their keys in
//!   order, so reading a body costs one allocation per array or object, not one per string.
//!
//! Nesting deeper than serde_json's recursion limit (128) is an error, not a stack overflow.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};

/// A JSON value whose objects had no duplicate keys.
#[derive(Clone, Debug, PartialEq)]
pub enum Json<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, exactly as serde_json reads it.
    Number(serde_json::Number),
    /// A string, borrowed from the body when it had no escapes.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Json<'a>>),
    /// An object: its members in the order written, keys unique.
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

/// An object's members, in order.
pub type Members<'a> = [(Cow<'a, str>, Json<'a>)];

/// Objects with more members than this check duplicates with a hash set instead of a scan.
const LINEAR_DUPLICATE_CHECK: usize = 16;

impl<'a> Json<'a> {
    /// Parses `text` as one JSON value.
    ///
    /// # Errors
    ///
    /// serde_json's error (with line and column) for a syntax error, trailing characters, a
    /// duplicate key (`duplicate key `k``) or nesting deeper than 128.
    pub fn parse(text: &'a str) -> Result<Json<'a>, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        let value = Json::deserialize(&mut de)?;
        de.end()?;
        Ok(value)
    }

    /// The member `key` of an object (`None` for a missing key or a value that is not an
    /// object).
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    /// The JSON type's name, for error messages: `null`, `a boolean`, `a number`, `a string`,
    /// `an array`, `an object`.
    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }

    /// Replaces the member `key` of an object, or appends it. Does nothing to non-objects.
    pub fn set(&mut self, key: &'a str, value: Json<'a>) {
        if let Json::Object(members) = self {
            match members.iter_mut().find(|(k, _)| k == key) {
                Some((_, v)) => *v = value,
                None => members.push((Cow::Borrowed(key), value)),
            }
        }
    }

    /// Appends every string of this value — object keys included — to `out`, each as its own
    /// paragraph (separated by a blank line), in document order.
    pub fn push_text(&self, out: &mut String) {
        match self {
            Json::Null | Json::Bool(_) | Json::Number(_) => {}
            Json::String(s) => push_paragraph(out, s),
            Json::Array(items) => items.iter().for_each(|v| v.push_text(out)),
            Json::Object(members) => {
                for (k, v) in members {
                    push_paragraph(out, k);
                    v.push_text(out);
                }
            }
        }
    }

    /// This value as compact JSON bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        // Serializing a tree of strings, numbers and containers into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Appends `s` to `out` as a paragraph: a blank line before it unless `out` is empty.
pub fn push_paragraph(out: &mut String, s: &str) {
    if !out.is_empty() {
        out.push_str("\n\n");
    }
    out.push_str(s);
}

// === impl Deserialize ===

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json<'de>, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json<'de>, E> {
        serde_json::Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut members: Vec<(Cow<'de, str>, Json<'de>)> = Vec::new();
        let mut index: Option<HashSet<Cow<'de, str>>> = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            // SECURITY: two members with one name are read differently by different parsers
            // (first wins, last wins); refuse them rather than pick one.
            let duplicate = match &mut index {
                Some(set) => !set.insert(key.clone()),
                None => {
                    let dup = members.iter().any(|(k, _)| *k == key);
                    if !dup && members.len() >= LINEAR_DUPLICATE_CHECK {
                        let mut set: HashSet<Cow<'de, str>> =
                            members.iter().map(|(k, _)| k.clone()).collect();
                        set.insert(key.clone());
                        index = Some(set);
                    }
                    dup
                }
            };
            if duplicate {
                return Err(de::Error::custom(format_args!(
                    "duplicate key `{}`",
                    truncate(&key, 64)
                )));
            }
            let value = map.next_value()?;
            members.push((key, value));
        }
        Ok(Json::Object(members))
    }
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
    }
}

/// At most `max` bytes of `s`, cut at a character boundary (for messages).
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

// === impl Serialize ===

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Number(n) => n.serialize(s),
            Json::String(v) => s.serialize_str(v),
            Json::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Json::Object(members) => {
                let mut map = s.serialize_map(Some(members.len()))?;
                for (k, v) in members {
                    map.serialize_entry(k.as_ref(), v)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_at_every_depth() {
        for bad in [
            r#"{"model":"a","model":"b"}"#,
            r#"{"m":[{"role":"user","role":"system"}]}"#,
            r#"{"a":{"b":{"c":1,"c":2}}}"#,
            r#"{"mod\u0065l":"a","model":"b"}"#,
        ] {
            let e = Json::parse(bad).unwrap_err();
            assert!(e.to_string().contains("duplicate key"), "{bad}: {e}");
        }
        // Many members take the hash-set path.
        let mut big = String::from("{");
        for i in 0..40 {
            big.push_str(&format!("\"k{i}\":{i},"));
        }
        big.push_str("\"k7\":0}");
        assert!(Json::parse(&big).unwrap_err().to_string().contains("`k7`"));
        big.replace_range(big.len() - 7.., "\"k99\":0}");
        assert!(Json::parse(&big).is_ok());
    }

    #[test]
    fn strings_borrow_unless_escaped_and_round_trip() {
        let text = r#"{"a":"plain","b":"esc\"aped","c":[1,-2,3.5,true,null],"d":{}}"#;
        let v = Json::parse(text).unwrap();
        assert!(matches!(
            v.get("a"),
            Some(Json::String(Cow::Borrowed("plain")))
        ));
        assert!(matches!(v.get("b"), Some(Json::String(Cow::Owned(_)))));
        assert_eq!(String::from_utf8(v.to_vec()).unwrap(), text);
        let reparsed: serde_json::Value = serde_json::from_slice(&v.to_vec()).unwrap();
        assert_eq!(
            reparsed,
            serde_json::from_str::<serde_json::Value>(text).unwrap()
        );
    }

    #[test]
    fn text_is_every_key_and_string_in_order() {
        let v = Json::parse(r#"{"a":["x",{"b":"y"}],"n":1}"#).unwrap();
        let mut out = String::new();
        v.push_text(&mut out);
        assert_eq!(out, "a\n\nx\n\nb\n\ny\n\nn");
    }

    #[test]
    fn hostile_input_is_an_error_not_a_crash() {
        let deep = "[".repeat(100_000);
        assert!(Json::parse(&deep).is_err());
        for bad in ["", "{", "{} x", "[1,]", "{\"a\":1,}", "nul", "\"\\ud800\""] {
            assert!(Json::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(truncate("é", 1), "");
    }
}
