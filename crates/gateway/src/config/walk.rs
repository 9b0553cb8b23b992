//! Deserializing the parsed TOML document into the raw section structs while collecting
//! *every* problem with its key path.
//!
//! serde stops at the first error, and `deny_unknown_fields` at the first unknown key. This
//! module drives any `Deserialize` type over a [`toml::Value`] with its own [`Deserializer`]
//! ([`Walk`]), which:
//!
//! - knows the key path of every value it hands out (`backends[1].models[0].name`);
//! - when serde asks for a struct, receives the struct's field names (`deserialize_struct`'s
//!   `fields`), reports each key of the table that is not one of them, and hands the struct
//!   only the known keys, so unknown keys never stop the pass and no list of keys is kept by
//!   hand;
//! - when a value fails (wrong type, or refused by a custom `Deserialize`), remembers the
//!   innermost key path that failed. [`read`] then reports that value, treats it as absent
//!   (a missing key, or a skipped array element whose neighbours keep their indices) and
//!   deserializes again, until the whole document goes through.
//!
//! Rules for the raw types this reads (every section's `Raw*` struct):
//! `#[serde(deny_unknown_fields)]`, every field `Option<_>` or `#[serde(default)]` (what is
//! required is checked by the section's `from_raw`, which names the key), no
//! `#[serde(flatten)]`, aliases or untagged enums (they hide the field names or the key paths);
//! a value that takes two shapes has a hand-written `Deserialize` that asks for
//! `deserialize_struct` (table or string) or `deserialize_any`.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Expected, IntoDeserializer, MapAccess, SeqAccess,
    Unexpected, Visitor,
};

/// Passes over the document at most: each pass after the first sets aside one more bad value,
/// so this bounds the problems reported from deserializing (and the work a hostile file costs).
const MAX_PASSES: usize = 200;

/// One problem: a key path (empty for the whole file) and what is wrong and allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Problem {
    /// `backends[1].accreditation`.
    pub(super) path: String,
    /// What is wrong and what is allowed.
    pub(super) message: String,
}

/// Deserializes `T` from `root`, reporting every unknown key and every value of the wrong
/// shape, each with its key path; `None` when even the root could not be read. Also returns
/// the paths of the values set aside (read as absent).
pub(super) fn read<T: DeserializeOwned>(
    root: &toml::Value,
) -> (Option<T>, Vec<Problem>, HashSet<String>) {
    let state = State::default();
    for _ in 0..MAX_PASSES {
        let result = T::deserialize(Walk {
            value: root,
            path: String::new(),
            state: &state,
        });
        let failure = state.failure.take();
        match result {
            Ok(v) => return state.finish(Some(v)),
            Err(e) => {
                let failure = failure.unwrap_or(Problem {
                    path: String::new(),
                    message: e.0,
                });
                // The root failed, or a value failed again although it was set aside: nothing
                // more to learn from another pass.
                let stuck = failure.path.is_empty() || state.is_set_aside(&failure.path);
                state.set_aside(failure);
                if stuck {
                    return state.finish(None);
                }
            }
        }
    }
    state.set_aside(Problem {
        path: String::new(),
        message: format!("more than {MAX_PASSES} problems: fix these and check the file again"),
    });
    state.finish(None)
}

/// What the passes over one document have found.
#[derive(Default)]
struct State {
    /// Values that failed, reported and then treated as absent.
    set_aside: RefCell<Vec<Problem>>,
    /// Their paths.
    set_aside_paths: RefCell<HashSet<String>>,
    /// Keys no struct knows.
    unknown: RefCell<Vec<Problem>>,
    /// Their paths (every pass meets them again).
    unknown_paths: RefCell<HashSet<String>>,
    /// The innermost value that failed in this pass.
    failure: RefCell<Option<Problem>>,
}

impl State {
    fn is_set_aside(&self, path: &str) -> bool {
        self.set_aside_paths.borrow().contains(path)
    }

    fn set_aside(&self, p: Problem) {
        if self.set_aside_paths.borrow_mut().insert(p.path.clone()) {
            self.set_aside.borrow_mut().push(p);
        }
    }

    fn unknown_key(&self, path: String, fields: &[&str]) {
        if self.unknown_paths.borrow_mut().insert(path.clone()) {
            self.unknown.borrow_mut().push(Problem {
                path,
                message: format!("unknown key (expected one of: {})", fields.join(", ")),
            });
        }
    }

    /// Remembers the first failure of a pass: the innermost value, since an error travels
    /// outwards from where it happened.
    fn fail(&self, path: &str, e: &Error) {
        let mut failure = self.failure.borrow_mut();
        if failure.is_none() {
            *failure = Some(Problem {
                path: path.to_owned(),
                message: e.0.clone(),
            });
        }
    }

    fn finish<T>(self, value: Option<T>) -> (Option<T>, Vec<Problem>, HashSet<String>) {
        let mut problems = self.set_aside.into_inner();
        problems.extend(self.unknown.into_inner());
        (value, problems, self.set_aside_paths.into_inner())
    }
}

/// `parent.key`, with the key quoted when it is not a bare TOML key.
pub(super) fn child_key(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    // SECURITY: a quoted key is escaped, so a key cannot forge a line of the report.
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// A deserialization failure, worded for the operator (`expected an integer, found string`).
#[derive(Debug)]
pub(super) struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Error {
        Error(msg.to_string())
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> Error {
        Error(format!(
            "expected {}, found {}",
            expected(exp),
            found(&unexp)
        ))
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn Expected) -> Error {
        Error::invalid_type(unexp, exp)
    }

    fn invalid_length(len: usize, exp: &dyn Expected) -> Error {
        Error(format!("expected {}, found {len} items", expected(exp)))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Error {
        let names: Vec<String> = expected.iter().map(|v| format!("{v:?}")).collect();
        Error(format!(
            "unknown value {variant:?}: expected one of {}",
            names.join(", ")
        ))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Error {
        Error(format!(
            "unknown key {field:?} (expected one of: {})",
            expected.join(", ")
        ))
    }

    fn missing_field(field: &'static str) -> Error {
        Error(format!("required key `{field}` is missing"))
    }
}

/// What a visitor expects, in the words of the file: serde's `u32` is an integer, a
/// `struct RawLimits` is a table.
fn expected(exp: &dyn Expected) -> String {
    let e = exp.to_string();
    match e.as_str() {
        "i8" | "i16" | "i32" | "i64" | "i128" | "u8" | "u16" | "u32" | "u64" | "u128" | "isize"
        | "usize" => "an integer".into(),
        "f32" | "f64" => "a number".into(),
        "a boolean" => "true or false".into(),
        "a sequence" => "an array".into(),
        "a map" => "a table".into(),
        _ if e.starts_with("struct ") => "a table".into(),
        _ => e,
    }
}

/// What was found, by type (a string's content is not repeated: it may be a secret).
fn found(unexp: &Unexpected<'_>) -> String {
    match unexp {
        Unexpected::Bool(_) => "boolean".into(),
        Unexpected::Signed(i) => format!("integer {i}"),
        Unexpected::Unsigned(u) => format!("integer {u}"),
        Unexpected::Float(_) => "float".into(),
        Unexpected::Char(_) | Unexpected::Str(_) => "string".into(),
        Unexpected::Seq => "array".into(),
        Unexpected::Map => "table".into(),
        Unexpected::Other(what) => (*what).to_owned(),
        other => other.to_string(),
    }
}

/// The type of a TOML value, for `found …`.
fn unexpected(value: &toml::Value) -> Unexpected<'_> {
    match value {
        toml::Value::String(_) => Unexpected::Str(""),
        toml::Value::Integer(i) => Unexpected::Signed(*i),
        toml::Value::Float(f) => Unexpected::Float(*f),
        toml::Value::Boolean(b) => Unexpected::Bool(*b),
        toml::Value::Datetime(_) => Unexpected::Other("datetime"),
        toml::Value::Array(_) => Unexpected::Seq,
        toml::Value::Table(_) => Unexpected::Map,
    }
}

/// A value of the document and its key path.
struct Walk<'a> {
    value: &'a toml::Value,
    path: String,
    state: &'a State,
}

impl<'de> de::Deserializer<'de> for Walk<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            toml::Value::String(s) => visitor.visit_str(s),
            toml::Value::Integer(i) => visitor.visit_i64(*i),
            toml::Value::Float(f) => visitor.visit_f64(*f),
            toml::Value::Boolean(b) => visitor.visit_bool(*b),
            // No setting is a date; a date where a string is expected is a mistake.
            toml::Value::Datetime(_) => Err(de::Error::invalid_type(
                Unexpected::Other("datetime"),
                &visitor,
            )),
            toml::Value::Array(items) => visitor.visit_seq(Items {
                items: items.iter().enumerate(),
                path: &self.path,
                state: self.state,
            }),
            toml::Value::Table(table) => visitor.visit_map(Entries {
                entries: table.iter(),
                fields: None,
                path: &self.path,
                state: self.state,
                pending: None,
            }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        // An absent key never gets here: present means `Some`.
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.value {
            toml::Value::Table(table) => {
                for key in table.keys() {
                    if !fields.contains(&key.as_str()) {
                        let path = child_key(&self.path, key);
                        self.state.unknown_key(path, fields);
                    }
                }
                visitor.visit_map(Entries {
                    entries: table.iter(),
                    fields: Some(fields),
                    path: &self.path,
                    state: self.state,
                    pending: None,
                })
            }
            // SECURITY: serde would fill a struct from an array by position; a section is
            // a table, with its keys named.
            toml::Value::Array(_) => Err(de::Error::invalid_type(Unexpected::Seq, &visitor)),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.value {
            toml::Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map identifier
    }
}

/// The keys of a table (only those of `fields`, when serde named them), minus set-aside values.
struct Entries<'a> {
    entries: toml::map::Iter<'a>,
    fields: Option<&'static [&'static str]>,
    path: &'a str,
    state: &'a State,
    pending: Option<(String, &'a toml::Value)>,
}

impl<'de> MapAccess<'de> for Entries<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        for (key, value) in self.entries.by_ref() {
            if self.fields.is_some_and(|f| !f.contains(&key.as_str())) {
                continue;
            }
            let path = child_key(self.path, key);
            if self.state.is_set_aside(&path) {
                continue;
            }
            let result = seed.deserialize(key.as_str().into_deserializer());
            if let Err(e) = &result {
                // A key the map's type refuses: set aside with its value.
                self.state.fail(&path, e);
            }
            self.pending = Some((path, value));
            return result.map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some((path, value)) = self.pending.take() else {
            return Err(de::Error::custom("a value was asked for before its key"));
        };
        let result = seed.deserialize(Walk {
            value,
            path: path.clone(),
            state: self.state,
        });
        if let Err(e) = &result {
            self.state.fail(&path, e);
        }
        result
    }
}

/// The elements of an array, minus set-aside ones (the others keep their indices).
struct Items<'a> {
    items: std::iter::Enumerate<std::slice::Iter<'a, toml::Value>>,
    path: &'a str,
    state: &'a State,
}

impl<'de> SeqAccess<'de> for Items<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        for (i, value) in self.items.by_ref() {
            let path = format!("{}[{i}]", self.path);
            if self.state.is_set_aside(&path) {
                continue;
            }
            let result = seed.deserialize(Walk {
                value,
                path: path.clone(),
                state: self.state,
            });
            if let Err(e) = &result {
                self.state.fail(&path, e);
            }
            return result.map(Some);
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Root {
        name: Option<String>,
        size: Option<i64>,
        on: Option<bool>,
        inner: Option<Inner>,
        #[serde(default)]
        list: Vec<Inner>,
        colour: Option<Colour>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        a: Option<String>,
        b: Option<u32>,
    }

    #[derive(Debug, Deserialize, PartialEq, Eq)]
    #[serde(rename_all = "lowercase")]
    enum Colour {
        Red,
        Blue,
    }

    fn run(text: &str) -> (Option<Root>, Vec<String>) {
        let table: toml::Table = text.parse().unwrap();
        let (root, problems, _) = read::<Root>(&toml::Value::Table(table));
        let mut lines: Vec<String> = problems
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        lines.sort();
        (root, lines)
    }

    #[test]
    fn a_clean_document_reads_whole() {
        let (root, problems) = run(
            "name = \"x\"\nsize = 3\non = true\ncolour = \"blue\"\n[inner]\na = \"y\"\n[[list]]\nb = 1\n[[list]]\na = \"z\"",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let root = root.unwrap();
        assert_eq!(root.colour, Some(Colour::Blue));
        assert_eq!(
            (root.size, root.on, root.list[0].b),
            (Some(3), Some(true), Some(1))
        );
        assert_eq!(root.list[1].a.as_deref(), Some("z"));
    }

    #[test]
    fn every_unknown_key_in_every_table_is_reported() {
        let (root, problems) = run(
            "\"a.b\" = 0\nnme = 1\nsise = 2\nname = \"ok\"\n[inner]\nc = 1\nd = 2\n[[list]]\nx = 1\n[[list]]\na = \"ok\"\ny = 2\n\"odd key\\n\" = 3",
        );
        let root = root.unwrap();
        assert_eq!(root.name.as_deref(), Some("ok"));
        assert_eq!(root.list[1].a.as_deref(), Some("ok"));
        assert_eq!(
            problems,
            [
                "\"a.b\": unknown key (expected one of: name, size, on, inner, list, colour)",
                "inner.c: unknown key (expected one of: a, b)",
                "inner.d: unknown key (expected one of: a, b)",
                "list[0].x: unknown key (expected one of: a, b)",
                "list[1].\"odd key\\n\": unknown key (expected one of: a, b)",
                "list[1].y: unknown key (expected one of: a, b)",
                "nme: unknown key (expected one of: name, size, on, inner, list, colour)",
                "sise: unknown key (expected one of: name, size, on, inner, list, colour)",
            ]
        );
    }

    #[test]
    fn every_wrong_type_is_reported_and_the_rest_still_read() {
        let (root, problems) = run(
            "name = 5\nsize = \"big\"\non = \"yes\"\ncolour = \"green\"\n[inner]\na = []\nb = -1\n[[list]]\nb = \"two\"\n[[list]]\na = \"kept\"\n[[list]]\nb = 1.5",
        );
        assert_eq!(
            problems,
            [
                "colour: unknown value \"green\": expected one of \"red\", \"blue\"",
                "inner.a: expected a string, found array",
                "inner.b: expected an integer, found integer -1",
                "list[0].b: expected an integer, found string",
                "list[2].b: expected an integer, found float",
                "name: expected a string, found integer 5",
                "on: expected true or false, found string",
                "size: expected an integer, found string",
            ]
        );
        let root = root.unwrap();
        assert!(root.name.is_none() && root.size.is_none() && root.colour.is_none());
        assert_eq!(root.list.len(), 3);
        assert_eq!(root.list[1].a.as_deref(), Some("kept"));
    }

    #[test]
    fn a_table_given_as_something_else_is_refused_not_read_by_position() {
        let (root, problems) =
            run("inner = [\"a\", 1]\nlist = [1, { a = \"ok\" }, \"x\"]\nname = 1979-05-27");
        assert_eq!(
            problems,
            [
                "inner: expected a table, found array",
                "list[0]: expected a table, found integer 1",
                "list[2]: expected a table, found string",
                "name: expected a string, found datetime",
            ]
        );
        let root = root.unwrap();
        assert!(root.inner.is_none());
        assert_eq!(root.list.len(), 1);
    }

    #[test]
    fn too_many_problems_stop_with_a_bound() {
        let text = format!("list = [{}]", vec!["1"; 1000].join(", "));
        let (root, problems) = run(&text);
        assert!(root.is_none());
        assert_eq!(problems.len(), MAX_PASSES + 1);
        assert!(
            problems[0].starts_with(": more than 200 problems"),
            "{}",
            problems[0]
        );
    }
}
