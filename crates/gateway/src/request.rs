//! Reading a request body in one pass without building a JSON tree: the top-level `model` and
//! `stream`, and every other string anywhere in the body (keys and values) joined as paragraphs
//! for the marking scanner.
//! Parsing into a `serde_json::Value` tree (maps, vectors, a string per value) cost more than
//! the scan itself; the tree is built only when a route needs it (aliases, the local model).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// What the request path needs from a JSON request body.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// The top-level `model`, when it is a string.
    pub model: Option<String>,
    /// The top-level `stream` is `true`.
    pub stream: bool,
    /// Every string, keys included (not the top-level `model` and `stream`), separated by
    /// blank lines.
    pub text: String,
}

/// Reads `raw` as a JSON object.
///
/// # Errors
///
/// The JSON syntax error (with line and column), or `invalid type` when the body is not an
/// object. Nesting deeper than serde_json's recursion limit (128) is an error, not a crash.
pub fn summarize(raw: &[u8]) -> Result<Summary, serde_json::Error> {
    // Checking the whole body is UTF-8 at once is cheaper than serde_json checking each string
    // as it goes; a body that is not UTF-8 is read from bytes, for the same error as before.
    match std::str::from_utf8(raw) {
        Ok(text) => read(serde_json::Deserializer::from_str(text), raw.len()),
        Err(_) => read(serde_json::Deserializer::from_slice(raw), raw.len()),
    }
}

fn read<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
    len: usize,
) -> Result<Summary, serde_json::Error> {
    // The text is never longer than the body (each string loses at least its two quotes to
    // the blank line that separates it), so one allocation holds it: growing it as strings
    // arrive cost more than reading them.
    let mut summary = Summary {
        text: String::with_capacity(len),
        ..Summary::default()
    };
    de.deserialize_map(Top(&mut summary))?;
    de.end()?;
    Ok(summary)
}

struct Top<'a>(&'a mut Summary);

impl<'de> Visitor<'de> for Top<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(Key(&mut self.0.text))? {
            match key {
                KeyKind::Model => {
                    self.0.model = map.next_value::<Option<ModelName>>()?.and_then(|m| m.0)
                }
                KeyKind::Stream => {
                    self.0.stream = map.next_value_seed(StreamFlag(&mut self.0.text))?
                }
                KeyKind::Other => map.next_value_seed(Walk(&mut self.0.text))?,
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum KeyKind {
    Model,
    Stream,
    Other,
}

/// A top-level key: `model` and `stream` are read; any other key is content too (an unknown
/// field is forwarded upstream, so its name must not carry an unscanned marking).
struct Key<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = KeyKind;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<KeyKind, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Key<'_> {
    type Value = KeyKind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyKind, E> {
        Ok(match v {
            "model" => KeyKind::Model,
            "stream" => KeyKind::Stream,
            _ => {
                Walk(self.0).visit_str::<E>(v)?;
                KeyKind::Other
            }
        })
    }
}

/// A `model` value: a string, or anything else (which counts as missing).
struct ModelName(Option<String>);

impl<'de> de::Deserialize<'de> for ModelName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ModelName, D::Error> {
        let mut ignored = String::new();
        d.deserialize_any(ModelVisitor(&mut ignored))
    }
}

struct ModelVisitor<'a>(&'a mut String);

impl<'de> Visitor<'de> for ModelVisitor<'_> {
    type Value = ModelName;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a model name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ModelName, E> {
        Ok(ModelName(Some(v.to_owned())))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<ModelName, E> {
        Ok(ModelName(None))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<ModelName, E> {
        Ok(ModelName(None))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<ModelName, E> {
        Ok(ModelName(None))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<ModelName, E> {
        Ok(ModelName(None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<ModelName, E> {
        Ok(ModelName(None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<ModelName, A::Error> {
        Walk(self.0).visit_seq(seq)?;
        Ok(ModelName(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ModelName, A::Error> {
        Walk(self.0).visit_map(map)?;
        Ok(ModelName(None))
    }
}

/// A `stream` value: `true` streams; anything else does not (its strings are still content).
struct StreamFlag<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for StreamFlag<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StreamFlag<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a boolean")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Walk(self.0).visit_str(v).map(|()| false)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
        Walk(self.0).visit_seq(seq).map(|()| false)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        Walk(self.0).visit_map(map).map(|()| false)
    }
}

/// Appends every string of a value to the text, recursively.
struct Walk<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        if !self.0.is_empty() {
            self.0.push_str("\n\n");
        }
        self.0.push_str(v);
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Walk(&mut *self.0))?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Keys and values are all content, whatever the key (a nested `model` is forwarded too,
        // and a key such as a JSON-schema property name can carry text).
        while map.next_key_seed(Walk(&mut *self.0))?.is_some() {
            map.next_value_seed(Walk(&mut *self.0))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_model_stream_and_every_string_in_one_pass() {
        let raw = br#"{"model":"SECRET//NOFORN","stream":true,"messages":[{"role":"user",
            "content":[{"type":"text","text":"(S) hidden"}]}],"tools":[{"function":{"description":"TOP SECRET//SI","model":"x"}}],
            "n":1,"temperature":0.5,"stop":null,"esc":"a\"b\u00e9"}"#;
        let s = summarize(raw).unwrap();
        assert_eq!(s.model.as_deref(), Some("SECRET//NOFORN"));
        assert!(s.stream);
        assert!(s.text.contains("(S) hidden") && s.text.contains("TOP SECRET//SI"));
        assert!(s.text.contains("a\"bé"));
        assert!(
            !s.text.contains("SECRET//NOFORN"),
            "model names are not content"
        );
        assert!(
            s.text.contains("\n\nx"),
            "nested `model` keys are content like any other"
        );
    }

    #[test]
    fn the_same_as_walking_a_value_tree() {
        let raw = br#"{"model":"m","messages":[{"role":"system","content":"a"},{"role":"user","content":"b"}],"metadata":{"k":["c",{"d":"e"}]}}"#;
        let s = summarize(raw).unwrap();
        assert_eq!(
            s.text,
            "messages\n\nrole\n\nsystem\n\ncontent\n\na\n\nrole\n\nuser\n\ncontent\n\nb\n\nmetadata\n\nk\n\nc\n\nd\n\ne"
        );
        let s = summarize(br#"{"(S) top":1,"metadata":{"(TS) nested key":true}}"#).unwrap();
        assert!(
            s.text.contains("(S) top") && s.text.contains("(TS) nested key"),
            "keys are content"
        );
    }

    #[test]
    fn text_and_bytes_read_the_same() {
        let raw = br#"{"model":"m","stream":true,"messages":[{"content":"(S) caf\u00e9 \"q\" \n x"}],"n":1}"#;
        let mut de = serde_json::Deserializer::from_slice(&raw[..]);
        let mut summary = Summary::default();
        de.deserialize_map(Top(&mut summary)).unwrap();
        de.end().unwrap();
        assert_eq!(summarize(raw).unwrap(), summary);
        // Not UTF-8: the byte reader's error, position included.
        let bad = b"{\"model\":\"m\",\"x\":\"\xff\"}";
        let from_bytes = serde_json::from_slice::<serde_json::Value>(bad).unwrap_err();
        assert_eq!(
            summarize(bad).unwrap_err().to_string(),
            from_bytes.to_string()
        );
    }

    #[test]
    fn non_objects_bad_types_and_deep_nesting_are_errors_or_absent() {
        for bad in [&b"[]"[..], b"\"s\"", b"5", b"null", b"{", b"{} x", b"\xff"] {
            assert!(
                summarize(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(summarize(br#"{"model":5}"#).unwrap().model, None);
        assert_eq!(summarize(br#"{"model":["(S) x"]}"#).unwrap().model, None);
        let s = summarize(br#"{"stream":{"hide":"(S) here"}}"#).unwrap();
        assert!(
            !s.stream && s.text.contains("(S) here"),
            "strings under `stream` are content"
        );
        assert!(!summarize(br#"{"stream":"true"}"#).unwrap().stream);
        let mut deep = b"{\"x\":".to_vec();
        deep.extend(std::iter::repeat_n(b'[', 100_000));
        assert!(summarize(&deep).is_err());
    }
}
