//! Exports that leave the database: JSON Lines of the exact entry bytes, with the checkpoint
//! notes beside them, verifiable with no database.
//!
//! The layout of an export directory (the CLI writes and reads the files; this module only
//! renders and splits their contents):
//!
//! ```text
//! <dir>/entries.jsonl                      one entry per line: its exact canonical bytes, "\n"
//! <dir>/checkpoints/00000000000000000001.note   the checkpoint notes, numbered in the order
//! <dir>/checkpoints/00000000000000000002.note   they were made (name order = that order)
//! ```
//!
//! The first line is entry 0: a verifiable export starts at the beginning of the log, because
//! every checkpoint's root covers the log from its first entry.

use crate::error::ExportError;

/// The entries' file name inside an export directory.
pub const ENTRIES_FILE: &str = "entries.jsonl";

/// The checkpoints' folder name inside an export directory.
pub const CHECKPOINTS_DIR: &str = "checkpoints";

/// The file name of the `sequence`-th checkpoint (from 1) inside [`CHECKPOINTS_DIR`]: 20 digits,
/// so that name order is creation order.
pub fn checkpoint_file_name(sequence: u64) -> String {
    format!("{sequence:020}.note")
}

/// Appends one entry as a JSON Lines line: its exact bytes and a newline.
///
/// # Errors
///
/// [`ExportError::EntryHasNewline`] if the bytes contain a newline (canonical entries never do:
/// newlines inside strings are escaped).
pub fn append_jsonl(out: &mut Vec<u8>, index: u64, entry: &[u8]) -> Result<(), ExportError> {
    if entry.contains(&b'\n') {
        return Err(ExportError::EntryHasNewline { index });
    }
    out.extend_from_slice(entry);
    out.push(b'\n');
    Ok(())
}

/// Renders `(index, bytes)` rows as JSON Lines.
///
/// # Errors
///
/// As [`append_jsonl`].
pub fn render_jsonl<'a, I>(rows: I) -> Result<Vec<u8>, ExportError>
where
    I: IntoIterator<Item = (u64, &'a [u8])>,
{
    let mut out = Vec::new();
    for (index, entry) in rows {
        append_jsonl(&mut out, index, entry)?;
    }
    Ok(out)
}

/// Splits JSON Lines text back into `(index, bytes)` rows for [`crate::LogVerifier::push`]; the
/// first line gets index `first_index` (0 for a whole export). The bytes are not parsed here:
/// the verifier does that.
pub fn read_jsonl(text: &[u8], first_index: u64) -> JsonlRows<'_> {
    JsonlRows {
        rest: text,
        line: 0,
        first_index,
        failed: false,
    }
}

/// The rows of a JSON Lines export; see [`read_jsonl`]. Stops after the first error.
#[derive(Clone, Debug)]
pub struct JsonlRows<'a> {
    rest: &'a [u8],
    line: u64,
    first_index: u64,
    failed: bool,
}

impl<'a> Iterator for JsonlRows<'a> {
    type Item = Result<(u64, &'a [u8]), ExportError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        self.line += 1;
        let Some(end) = self.rest.iter().position(|&b| b == b'\n') else {
            self.failed = true;
            return Some(Err(ExportError::UnterminatedLine { line: self.line }));
        };
        let (entry, rest) = self.rest.split_at(end);
        self.rest = rest.get(1..).unwrap_or_default();
        if entry.is_empty() {
            self.failed = true;
            return Some(Err(ExportError::EmptyLine { line: self.line }));
        }
        Some(Ok((self.first_index + self.line - 1, entry)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_survive_a_round_trip() {
        let rows: Vec<(u64, &[u8])> = vec![(0, b"{\"a\":1}"), (1, b"{\"b\":\"x\\ny\"}")];
        let text = render_jsonl(rows.iter().copied()).unwrap();
        assert_eq!(text, b"{\"a\":1}\n{\"b\":\"x\\ny\"}\n");
        let back: Vec<_> = read_jsonl(&text, 0).collect::<Result<_, _>>().unwrap();
        assert_eq!(back, rows);
        let shifted: Vec<_> = read_jsonl(&text, 10).map(|r| r.unwrap().0).collect();
        assert_eq!(shifted, [10, 11]);
        assert_eq!(read_jsonl(b"", 0).count(), 0);
    }

    #[test]
    fn broken_exports_are_reported() {
        assert_eq!(
            render_jsonl([(4, &b"{\n}"[..])]),
            Err(ExportError::EntryHasNewline { index: 4 })
        );
        let rows: Vec<_> = read_jsonl(b"{}\n{}", 0).collect();
        assert_eq!(rows[1], Err(ExportError::UnterminatedLine { line: 2 }));
        let rows: Vec<_> = read_jsonl(b"{}\n\n{}\n", 0).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1], Err(ExportError::EmptyLine { line: 2 }));
    }

    #[test]
    fn checkpoint_files_sort_in_creation_order() {
        assert_eq!(checkpoint_file_name(1), "00000000000000000001.note");
        assert!(checkpoint_file_name(9) < checkpoint_file_name(10));
    }
}
