//! Classification markings, found by `enclave_label::scan`.
//!
//! A marking that marks the text (`Placement::Asserted`) and one a sentence talks about
//! (`Placement::Mentioned`) are both `classified-marking` findings, with different kinds. A plain
//! `(U)` or `UNCLASSIFIED` carries no control and is not reported. Spillage — asserted content
//! above the session's label — is the label stage's decision, not the screen's.

use enclave_label::{Label, Placement, scan};

use super::{Finding, Kind};

/// Runs the marking scanner.
pub(super) fn detect(text: &str, out: &mut Vec<Finding>) {
    let unclassified = Label::unclassified();
    for m in scan(text).markings {
        if m.label == unclassified {
            continue;
        }
        let (kind, confidence) = match m.placement {
            Placement::Asserted => (Kind::MarkingAsserted, 0.95),
            Placement::Mentioned => (Kind::MarkingMentioned, 0.9),
        };
        out.push(Finding {
            kind,
            span: m.span,
            confidence,
        });
    }
}
