//! Any bytes as a chat or embeddings request body: no panic; a body that parses is valid JSON
//! to serde_json too (Enclave is never more lenient), keeps its exact bytes, carries every text
//! part in its scanned text, and re-targeted to another model name parses again to the same
//! request with only the model changed.
#![no_main]

use bytes::Bytes;
use enclave_api::{ChatRequest, ContentPolicy, EmbeddingsRequest, Part};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else { return };
    let policy = ContentPolicy {
        images: flags & 1 != 0,
        audio: flags & 2 != 0,
        files: flags & 4 != 0,
        token_arrays: flags & 8 != 0,
    };
    let raw = Bytes::copy_from_slice(body);
    if let Ok(req) = ChatRequest::parse(raw.clone(), &policy) {
        assert!(serde_json::from_slice::<serde_json::Value>(body).is_ok());
        assert_eq!(req.raw, raw);
        assert!(!req.model.is_empty() && !req.messages.is_empty());
        for m in &req.messages {
            for p in &m.content {
                if let Part::Text(t) = p {
                    assert!(req.text.contains(t.as_str()), "a text part escaped the scan");
                }
            }
        }
        assert_eq!(req.body_for(&req.model), raw);
        let moved = ChatRequest::parse(req.body_for("fuzz-other-model"), &policy)
            .expect("a re-targeted body parses");
        assert_eq!(moved.model, "fuzz-other-model");
        assert_eq!(moved.messages, req.messages);
        assert_eq!(moved.uninspected, req.uninspected);
    }
    if let Ok(req) = EmbeddingsRequest::parse(raw.clone(), &policy) {
        assert!(serde_json::from_slice::<serde_json::Value>(body).is_ok());
        assert!(!req.model.is_empty());
        assert!(req.token_input || !req.input.is_empty());
        for t in &req.input {
            assert!(req.text.contains(t.as_str()));
        }
    }
});
