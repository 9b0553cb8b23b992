//! Which content Enclave accepts without being able to inspect it.

/// A kind of content part that Enclave cannot scan for markings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PartKind {
    /// `input_audio` parts.
    Audio,
    /// `file` parts (base64 PDFs and other documents).
    File,
    /// `image_url` parts.
    Image,
}

impl PartKind {
    /// The part's `type` on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            PartKind::Audio => "input_audio",
            PartKind::File => "file",
            PartKind::Image => "image_url",
        }
    }

    /// The kind a `type` names, if it is one of these.
    pub fn from_type(t: &str) -> Option<PartKind> {
        match t {
            "input_audio" => Some(PartKind::Audio),
            "file" => Some(PartKind::File),
            "image_url" => Some(PartKind::Image),
            _ => None,
        }
    }

    /// The members that hold the payload (not scanned when the part is allowed).
    pub(crate) fn payload_keys(self) -> &'static [&'static str] {
        match self {
            PartKind::Audio => &["data"],
            PartKind::File => &["file_data"],
            PartKind::Image => &["url"],
        }
    }
}

/// Which uninspectable content a route accepts. The default accepts none: what Enclave
/// cannot inspect is refused (`unsupported_content`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContentPolicy {
    /// `image_url` parts in chat messages.
    pub images: bool,
    /// `input_audio` parts.
    pub audio: bool,
    /// `file` parts.
    pub files: bool,
    /// Token arrays as embeddings `input`.
    pub token_arrays: bool,
}

impl ContentPolicy {
    /// Whether parts of `kind` are accepted.
    pub fn allows(&self, kind: PartKind) -> bool {
        match kind {
            PartKind::Audio => self.audio,
            PartKind::File => self.files,
            PartKind::Image => self.images,
        }
    }
}
