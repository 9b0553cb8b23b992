//! Property tests: the lattice laws of `dominates` and `join`, the render/parse round trip, and
//! that the scanner finds any rendered marking again — plain or disguised — in prose, asserted
//! when it opens a line and mentioned inside a sentence.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use enclave_label::{Dissem, Label, Mode, Placement, parse_marking, rollup, scan};
use proptest::prelude::*;
use proptest::sample::subsequence;

/// Country codes the generator draws release lists from: plain countries, groups with public
/// membership (FVEY, ACGU) and groups without (TEYE, ISAF).
const PARTNERS: &[&str] = &[
    "AUS", "CAN", "DEU", "GBR", "JPN", "NZL", "ACGU", "FVEY", "ISAF", "TEYE",
];

#[derive(Clone, Debug)]
enum Fdr {
    None,
    Noforn,
    Rel(Vec<&'static str>),
    Relido,
    RelRelido(Vec<&'static str>),
    DisplayOnly(Vec<&'static str>),
    RelDisplay(Vec<&'static str>, Vec<&'static str>),
}

fn partners() -> impl Strategy<Value = Vec<&'static str>> {
    subsequence(PARTNERS, 1..4)
}

fn fdr() -> impl Strategy<Value = Fdr> {
    prop_oneof![
        2 => Just(Fdr::None),
        2 => Just(Fdr::Noforn),
        4 => partners().prop_map(Fdr::Rel),
        1 => Just(Fdr::Relido),
        1 => partners().prop_map(Fdr::RelRelido),
        1 => partners().prop_map(Fdr::DisplayOnly),
        1 => (partners(), partners()).prop_map(|(a, b)| Fdr::RelDisplay(a, b)),
    ]
}

/// A valid portion mark built from compatible parts, so that almost every draw parses.
fn portion() -> impl Strategy<Value = String> {
    (
        0usize..4, // level U C S TS
        prop_oneof![6 => Just(""), 1 => Just("GBR"), 1 => Just("NATO"), 1 => Just("CUI")],
        subsequence(&["KLM-R", "SI", "TK", "XYZ"][..], 0..3),
        any::<bool>(), // SAP
        0usize..3,     // AEA: none, RD, FRD
        subsequence(&["RS", "OC", "IMC", "PR", "FISA"][..], 0..3),
        fdr(),
        subsequence(&["DS", "LES", "SBU", "SBU-NF", "SSI"][..], 0..3),
        prop_oneof![4 => Just(""), 1 => Just("FGI GBR"), 1 => Just("FGI")],
        any::<bool>(), // FOUO when unclassified
    )
        .prop_map(
            |(lvl, owner, sci, sap, aea, caveats, fdr, non_ic, fgi, fouo)| {
                let level = ["U", "C", "S", "TS"][lvl];
                let classified = lvl > 0;
                let at_least_s = lvl >= 2;
                let mut cats: Vec<String> = Vec::new();
                let mut head = match owner {
                    "GBR" => format!("//GBR {level}"),
                    "NATO" => format!("//{}", ["NU", "NC", "NS", "CTS"][lvl]),
                    "CUI" if !classified => "CUI".to_owned(),
                    _ => level.to_owned(),
                };
                let cui = head == "CUI";
                if cui {
                    head.push_str("//SP-CTI");
                }
                cats.push(head);
                let sci: Vec<&str> = sci
                    .into_iter()
                    .filter(|s| classified && (*s != "TK" || at_least_s))
                    .collect();
                if !sci.is_empty() && !cui {
                    cats.push(sci.join("/"));
                }
                if sap && classified && !cui {
                    cats.push("SAR-BP".to_owned());
                }
                match aea {
                    1 if classified && !cui => cats.push("RD".to_owned()),
                    2 if classified && !cui => cats.push("FRD".to_owned()),
                    3 if !cui => cats.push("DCNI".to_owned()),
                    _ => {}
                }
                if !fgi.is_empty() && owner.is_empty() && !cui {
                    cats.push(fgi.to_owned());
                }
                let mut dissem: Vec<String> = caveats
                    .into_iter()
                    .filter(|c| {
                        !cui && (classified || *c == "PR" || *c == "FISA")
                            && (at_least_s || !matches!(*c, "RS" | "IMC"))
                    })
                    .map(str::to_owned)
                    .collect();
                if fouo && !classified && !cui {
                    dissem.push("FOUO".to_owned());
                }
                let has_oc = dissem.iter().any(|d| d == "OC");
                let list = |p: &[&str]| format!("USA, {}", p.join(", "));
                match &fdr {
                    Fdr::None => {}
                    Fdr::Noforn => dissem.push("NF".to_owned()),
                    Fdr::Rel(p) => dissem.push(format!("REL TO {}", list(p))),
                    Fdr::Relido if !has_oc => dissem.push("RELIDO".to_owned()),
                    Fdr::RelRelido(p) if !has_oc => {
                        dissem.push(format!("REL TO {}", list(p)));
                        dissem.push("RELIDO".to_owned());
                    }
                    Fdr::Relido | Fdr::RelRelido(_) => {}
                    Fdr::DisplayOnly(p) => dissem.push(format!("DISPLAY ONLY {}", p.join(", "))),
                    Fdr::RelDisplay(r, d) => {
                        dissem.push(format!("REL TO {}", list(r)));
                        dissem.push(format!("DISPLAY ONLY {}", d.join(", ")));
                    }
                }
                if !dissem.is_empty() {
                    cats.push(dissem.join("/"));
                }
                let has_fdr = !matches!(fdr, Fdr::None);
                let mut non_ic: Vec<&str> = non_ic
                    .into_iter()
                    .filter(|m| match *m {
                        "DS" => !classified,
                        "SBU-NF" => !has_fdr,
                        _ => true,
                    })
                    .collect();
                if non_ic.contains(&"SBU-NF") {
                    non_ic.retain(|m| *m != "SBU");
                }
                if !non_ic.is_empty() && !cui {
                    cats.push(non_ic.join("/"));
                }
                format!("({})", cats.join("//"))
            },
        )
}

fn label() -> impl Strategy<Value = Label> {
    portion().prop_filter_map("the generated portion is valid", |p| {
        parse_marking(&p, Mode::Lenient, None).ok().map(|m| m.label)
    })
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1024,
        max_global_rejects: 100_000,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn generated_portions_parse(p in portion()) {
        // Guards the generator: a broken generator would make every law below vacuous.
        prop_assert!(parse_marking(&p, Mode::Lenient, None).is_ok(), "{p}: {:?}", parse_marking(&p, Mode::Lenient, None).err());
    }

    #[test]
    fn dominates_is_reflexive(a in label()) {
        prop_assert!(a.dominates(&a));
    }

    #[test]
    fn dominates_is_antisymmetric_on_access_classes(a in label(), b in label()) {
        if a.dominates(&b) && b.dominates(&a) {
            prop_assert_eq!(a.access(), b.access());
        }
    }

    #[test]
    fn dominates_is_transitive(a in label(), b in label(), c in label()) {
        // Random triples rarely chain, so build chains from joins as well.
        let bc = b.join(&c);
        let abc = a.join(&bc);
        prop_assert!(abc.dominates(&bc) && bc.dominates(&c) && abc.dominates(&c));
        if a.dominates(&b) && b.dominates(&c) {
            prop_assert!(a.dominates(&c));
        }
    }

    #[test]
    fn join_is_commutative(a in label(), b in label()) {
        prop_assert_eq!(a.join(&b), b.join(&a));
    }

    #[test]
    fn join_is_associative(a in label(), b in label(), c in label()) {
        prop_assert_eq!(a.join(&b).join(&c), a.join(&b.join(&c)));
    }

    #[test]
    fn join_is_idempotent(a in label()) {
        // Roll-up normal form: joining a label with itself may drop what a banner never carries
        // (FOUO beside other caveats); after that, joining changes nothing.
        let n = a.join(&a);
        prop_assert_eq!(n.join(&n), n.clone());
        prop_assert_eq!(n.access(), a.access());
    }

    #[test]
    fn join_dominates_both_inputs(a in label(), b in label()) {
        let j = a.join(&b);
        prop_assert!(j.dominates(&a), "{} does not dominate {}", j, a);
        prop_assert!(j.dominates(&b), "{} does not dominate {}", j, b);
    }

    #[test]
    fn join_is_below_every_upper_bound(a in label(), b in label(), u in label()) {
        let j = a.join(&b);
        prop_assert_eq!(j.access(), a.access().join(&b.access()));
        if u.dominates(&a) && u.dominates(&b) {
            prop_assert!(u.dominates(&j), "{} bounds {} and {} but not {}", u, a, b, j);
        }
        // An upper bound that certainly exists: the join with a third label.
        let w = j.join(&u);
        prop_assert!(w.dominates(&j));
    }

    #[test]
    fn render_parse_round_trip(a in label()) {
        prop_assume!(!(a.dissem().contains(&Dissem::Rel) && a.rel_to().is_none()));
        for rendered in [a.banner(), a.portion()] {
            let again = parse_marking(&rendered, Mode::Strict, None);
            prop_assert!(again.is_ok(), "{} rejected: {:?}", rendered, again.err());
            prop_assert_eq!(again.unwrap().label, a.clone());
        }
    }

    #[test]
    fn rollup_of_a_document_is_order_independent(labels in prop::collection::vec(label(), 1..6)) {
        let up = rollup(&labels);
        let mut rev = labels.clone();
        rev.reverse();
        prop_assert_eq!(rollup(&rev), up.clone());
        for l in &labels {
            prop_assert!(up.dominates(l));
        }
    }

    #[test]
    fn scan_finds_rendered_markings_in_prose(labels in prop::collection::vec(label(), 1..4), disguise in any::<bool>()) {
        let mut doc = String::from("Please summarize the following notes for the weekly brief.\n\n");
        let banner = rollup(&labels);
        doc.push_str(&banner.banner());
        doc.push('\n');
        for l in &labels {
            doc.push_str(&l.portion());
            doc.push_str(" The team met on Tuesday to review the schedule.\n");
        }
        let doc = if disguise {
            doc.replace('S', "\u{0405}").replace('/', "\u{FF0F}").replace('O', "\u{041E}")
        } else {
            doc
        };
        let found = scan(&doc);
        prop_assert_eq!(found.markings.len(), labels.len() + 1, "{}", doc);
        // A banner line and portion marks opening lines mark the text (issue 16, edge 11): every
        // one is asserted, so the content's label is the roll-up and nothing is a mention.
        prop_assert!(found.markings.iter().all(|m| m.placement == Placement::Asserted), "{}", doc);
        prop_assert_eq!(found.mentioned.as_ref(), None);
        prop_assert_eq!(found.label.access(), banner.access(), "{}", doc);
        if disguise && doc.contains('\u{0405}') {
            prop_assert!(found.any_disguised());
        }
    }

    #[test]
    fn scan_reads_rendered_markings_inside_a_sentence_as_mentions(l in label(), portion in any::<bool>()) {
        // An abbreviated marking inline must name a registered control to be read at all (so
        // that `s//comment` in code is not SECRET): `(C//XYZ)` is not found mid-sentence.
        prop_assume!(!(portion && l.sci().contains("XYZ")));
        let marking = if portion { l.portion() } else { l.banner() };
        // A bare classification word inside a sentence (`CONFIDENTIAL`) is prose, not a marking.
        prop_assume!(portion || marking.contains("//"));
        let doc = format!("Could you explain what {marking} means here?");
        let found = scan(&doc);
        prop_assert!(!found.markings.is_empty(), "{}", doc);
        prop_assert!(found.markings.iter().all(|m| m.placement == Placement::Mentioned), "{}", doc);
        prop_assert_eq!(found.label, Label::unclassified());
        let mentioned = found.mentioned.expect("a mention");
        // The level, not the whole label: read inline, a SAP name runs on into the words after
        // it (`SAR-BP MEANS HERE`), which only makes the mention more restrictive.
        prop_assert_eq!(mentioned.level(), l.level(), "{}", doc);
    }
}

/// Found by the rollup fuzz target: `IRQ EYES ONLY` (no USA in the list, read leniently) was
/// releasable to Iraq alone, so a U.S.-only roll-up of it with an SCI portion did not dominate it.
#[test]
fn eyes_only_without_usa_still_includes_usa_and_rolls_up() {
    let eyes: Label = "(S//IRQ EYES ONLY)".parse().unwrap();
    assert!(eyes.access().release().contains(enclave_label::USA));
    for other in ["(S//D)", "(S//RD)", "(S//DISPLAYG)"] {
        let other: Label = other.parse().unwrap();
        let up = rollup(&[other.clone(), eyes.clone()]);
        assert!(up.dominates(&eyes) && up.dominates(&other), "{up}");
        assert_eq!(rollup(&[eyes.clone(), other]), up);
    }
}
