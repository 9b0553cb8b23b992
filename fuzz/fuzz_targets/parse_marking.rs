//! Any input: no panic in any mode; what lenient mode accepts renders to a canonical form that
//! strict mode accepts and that parses back to the same label (banner and portion).
#![no_main]

use enclave_label::{Dissem, Mode, parse_marking};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = parse_marking(text, Mode::Strict, None);
    let Ok(m) = parse_marking(text, Mode::Lenient, None) else { return };
    let label = m.label;
    let unresolved = (label.dissem().contains(&Dissem::Rel) && label.rel_to().is_none())
        || (label.dissem().contains(&Dissem::Eyes) && label.eyes_only().is_none());
    if unresolved {
        return; // a bare `REL` or `EYES` has no banner form until a banner resolves it
    }
    for rendered in [label.banner(), label.portion()] {
        match parse_marking(&rendered, Mode::Strict, None) {
            Ok(again) => assert_eq!(again.label, label, "round trip of {rendered:?} from {text:?}"),
            Err(e) => panic!("canonical form {rendered:?} of {text:?} rejected: {e}"),
        }
    }
});
