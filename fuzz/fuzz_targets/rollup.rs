//! Lines of markings: no panic; the roll-up dominates every portion and is order-independent.
#![no_main]

use enclave_label::{Label, rollup};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let labels: Vec<Label> = text.lines().filter_map(|l| l.parse().ok()).take(64).collect();
    let up = rollup(&labels);
    for l in &labels {
        assert!(up.dominates(l), "{up} does not dominate {l}");
    }
    let mut reversed = labels.clone();
    reversed.reverse();
    assert_eq!(rollup(&reversed), up);
});
