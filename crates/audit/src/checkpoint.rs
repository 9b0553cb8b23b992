//! Checkpoints (c2sp.org/tlog-checkpoint): the signed statement "the log `origin` had `size`
//! entries and this root".
//!
//! The body is the note text:
//!
//! ```text
//! enclave.example/audit
//! 1024
//! 1vRiVDr3iO5M1XLM+EZ1qEBDX7kdSOkTWS19RBJa2ok=
//! ```
//!
//! the origin line, the tree size in decimal without leading zeroes, the root hash in base64,
//! then optional non-empty extension lines. Signed, it becomes a note (see [`crate::Note`]).

use std::fmt;
use std::str::FromStr;

use crate::error::NoteError;
use crate::merkle::Hash;
use crate::note::{Signer, Verifiers, is_note_text, sign_note};

/// A tree head: which log, how many entries, which root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root: Hash,
    extensions: Vec<String>,
}

impl Checkpoint {
    /// The checkpoint of the log `origin` at `size` entries with root `root`.
    ///
    /// # Errors
    ///
    /// [`NoteError::MalformedCheckpoint`] when `origin` is empty or holds a newline or another
    /// control character.
    pub fn new(origin: &str, size: u64, root: Hash) -> Result<Self, NoteError> {
        if !is_line(origin) {
            return Err(NoteError::MalformedCheckpoint(
                "the origin must be one non-empty line",
            ));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions: Vec::new(),
        })
    }

    /// The origin: the log's name.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The number of entries.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root hash at that size.
    pub fn root(&self) -> &Hash {
        &self.root
    }

    /// The extension lines (Enclave writes none).
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// Signs the body with every signer and returns the note text to store and publish.
    ///
    /// # Errors
    ///
    /// As [`sign_note`].
    pub fn sign(&self, signers: &[&Signer]) -> Result<String, NoteError> {
        sign_note(&self.to_string(), signers)
    }

    /// Opens a signed checkpoint: checks the note's signatures against the trusted keys (see
    /// [`Verifiers::open`]) and parses its text.
    ///
    /// # Errors
    ///
    /// The errors of [`Verifiers::open`] and of parsing the body.
    pub fn open(note: &[u8], trusted: &Verifiers) -> Result<Self, NoteError> {
        trusted.open(note)?.text().parse()
    }
}

impl FromStr for Checkpoint {
    type Err = NoteError;

    /// Reads a checkpoint body (the note text, final newline included).
    fn from_str(text: &str) -> Result<Self, NoteError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(NoteError::MalformedCheckpoint(
                "the text must end with a newline",
            ))?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(NoteError::MalformedCheckpoint(
                "a checkpoint has an origin, a size and a root line",
            ));
        };
        if !is_line(origin) {
            return Err(NoteError::MalformedCheckpoint(
                "the origin must be one non-empty line",
            ));
        }
        let size = parse_size(size)?;
        let root = Hash::from_base64(root).map_err(|_| {
            NoteError::MalformedCheckpoint("the root must be 32 bytes in canonical base64")
        })?;
        let mut extensions = Vec::new();
        for line in lines {
            if !is_line(line) {
                return Err(NoteError::MalformedCheckpoint(
                    "extension lines must be non-empty",
                ));
            }
            extensions.push(line.to_owned());
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }
}

impl fmt::Display for Checkpoint {
    /// The checkpoint body, final newline included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.origin)?;
        writeln!(f, "{}", self.size)?;
        writeln!(f, "{}", self.root.to_base64())?;
        for line in &self.extensions {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// A decimal size with no sign and no leading zero (unless it is `0`).
fn parse_size(text: &str) -> Result<u64, NoteError> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if !canonical {
        return Err(NoteError::MalformedCheckpoint(
            "the size must be decimal digits without leading zeroes",
        ));
    }
    text.parse()
        .map_err(|_| NoteError::MalformedCheckpoint("the size does not fit in 64 bits"))
}

fn is_line(text: &str) -> bool {
    !text.is_empty() && !text.contains('\n') && is_note_text(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::empty_root;

    const BODY: &str =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

    #[test]
    fn the_specification_example_body_parses_and_renders_back() {
        let checkpoint: Checkpoint = BODY.parse().unwrap();
        assert_eq!(checkpoint.origin(), "example.com/behind-the-sofa");
        assert_eq!(checkpoint.size(), 20_852_163);
        assert_eq!(checkpoint.to_string(), BODY);
        let with_ext = format!("{BODY}ext one\next two\n");
        let checkpoint: Checkpoint = with_ext.parse().unwrap();
        assert_eq!(checkpoint.extensions(), ["ext one", "ext two"]);
        assert_eq!(checkpoint.to_string(), with_ext);
    }

    #[test]
    fn malformed_bodies_are_rejected() {
        for bad in [
            BODY.trim_end(),
            "example.com/x\n20852163\n",
            "\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n01\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n+1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n-0\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n 1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n18446744073709551616\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2=\n",
            "o\n1\nV3JvbmdSb290\n",
            "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n",
            "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\next\n\n",
            "o\r\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        ] {
            assert!(bad.parse::<Checkpoint>().is_err(), "{bad:?}");
        }
        assert!(
            "o\n18446744073709551615\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
                .parse::<Checkpoint>()
                .is_ok()
        );
    }

    #[test]
    fn signed_checkpoints_open_with_the_trusted_key() {
        let signer = Signer::from_seed("enclave.test/audit", &[3; 32]).unwrap();
        let checkpoint = Checkpoint::new("enclave.test/audit", 0, empty_root()).unwrap();
        let note = checkpoint.sign(&[&signer]).unwrap();
        assert!(note.starts_with(
            "enclave.test/audit\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\n— enclave.test/audit "
        ));
        let trusted = Verifiers::new([signer.verifier_key()]).unwrap();
        assert_eq!(Checkpoint::open(note.as_bytes(), &trusted), Ok(checkpoint));
        assert_eq!(
            Checkpoint::open(note.as_bytes(), &Verifiers::default()),
            Err(NoteError::NoTrustedSignature)
        );
        assert!(Checkpoint::new("", 0, empty_root()).is_err());
        assert!(Checkpoint::new("a\nb", 0, empty_root()).is_err());
    }
}
