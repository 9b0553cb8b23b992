//! Any text: no panic; every span lies on character boundaries inside the text, spans are in
//! order, a disguised marking is asserted, the content's label dominates every asserted marking
//! and the roll-up of the mentions dominates every mentioned one.
#![no_main]

use enclave_label::{Placement, scan};
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
        match m.placement {
            Placement::Asserted => assert!(result.label.dominates(&m.label)),
            Placement::Mentioned => {
                assert!(!m.disguised, "a disguised marking is always asserted");
                let mentioned = result.mentioned.as_ref().expect("a mention rolls up");
                assert!(mentioned.dominates(&m.label));
            }
        }
    }
    assert_eq!(result.mentioned.is_some(), result.mentions().next().is_some());
});
