//! Any text: no panic; every span lies on character boundaries inside the text, spans are in
//! order, and the roll-up dominates every marking found.
#![no_main]

use enclave_label::scan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let result = scan(text);
    let mut last = 0;
    for m in &result.markings {
        assert!(m.span.start < m.span.end && m.span.end <= text.len());
        assert!(text.is_char_boundary(m.span.start) && text.is_char_boundary(m.span.end));
        assert!(m.span.start >= last, "markings overlap or are out of order");
        last = m.span.start;
        assert!(result.label.dominates(&m.label));
    }
});
