//! Accuracy of `scan` on held-out sets of texts labelled by what they are (issue 16, edge 11;
//! `data/SOURCE.md` says how they were written and labelled). An item is right when the roll-up
//! of the asserted markings is its `banner` and a mention is found exactly when `mention` says
//! so.
//!
//! The target is 95 %. Set A measured 94.3 % at its first, clean run (333/353) and 95.2 % after
//! the one revision it prompted; set B measured 93.3 % (181/194; the spillage decision alone, the
//! banner, 95.4 %) at its clean run. Ten of set B's thirteen misses were honest questions with a
//! marking after a single word or a colon (`Explain (S//NF).`, `Quick check: is
//! CONFIDENTIAL//NOFORN a valid banner?`); rule 2a of the scan module (a short question about a
//! marking that ends its paragraph) was written on reading them, so set B is no longer held out
//! either: with it A measures 96.3 % (340/353) and B 95.9 % (186/194).
//!
//! Set C, written after rule 2a and committed before its first run, measured 90.6 % (203/224;
//! the banner alone 92.9 %, 208/224) at that run, below the target. Fifteen of the twenty-one are honest texts asserted: questions whose
//! words after the marking are not all about markings, that have no full stop or that go on in
//! the paragraph (rule 2a holds back), a marking after one word (`Equation (S) defines …`,
//! `Exhibit (S) is withheld …`), tables that list markings, a marking after a clause and a colon
//! or opening a code comment, and banners whose parse stops before an upper-case word
//! (`//GBR SECRET//EYES ONLY`, `SECRET//REL TO FVEY`). One is spillage missed: `Fix grammar (TS)
//! the general are move troops north` reads as a mention because two words with lower case stand
//! before the marking and lower-case text follows it (rule 7), a gap of the rules that predates
//! rule 2a. Five are mention flags only (`T-shirt (S)`, `-3 (C)` read as marks, `a single (S)`
//! dropped as an abbreviation, an unclosed `(TS//SI` in a grep pattern, a question asserted
//! because marked text follows it in its paragraph).
//!
//! Set C's misses were then read to close the gaps among them that the marking rules explain,
//! not the wording of its items, so set C is no longer held out either: rule 0 (a row of a
//! markdown table below another row whose cells hold nothing but markings lists them), the second
//! half of rule 7 (a marking followed by an article, a possessive or a personal pronoun opens the
//! text it marks: the leak above), the words of a marking that its parse stopped before (`FVEY`,
//! `EYES ONLY`) no longer read as text the marking opens, rule 2a reads a REL TO list and `into`,
//! and a letter one space after a noun that names items by letters and before a verb or
//! preposition of a closed list is the item's name, not a marking (`Exhibit (S) is withheld`).
//! With them A measures 96.6 % (341/353: two tables fixed; a table of `(U)` and its meaning,
//! which set A labels asserted, and `is TS//SCI we mean` now read the other way), B 95.9 %
//! (186/194, unchanged) and C 94.2 % (211/224; the banner alone 96.4 %, 216/224). C's thirteen
//! misses left: honest questions rule 2a still holds back (no full stop, a word not about
//! markings, a second question or marked text in the same paragraph), code, a column-layout
//! table, and mention flags only (`T-shirt (S)`, `-3 (C)`, `a single (S)`).
//!
//! Set D, written with that revision by its author and committed before its first run (see
//! `data/SOURCE.md`), is the held-out figure: 90.4 % (189/209; the banner alone 92.3 %,
//! 193/209), below the target, recorded as it came out. Five of its twenty misses are spillage
//! missed: a bare `SECRET` inside an instruction (`Correct my English SECRET the plan is …`; the
//! scanner reads bare classifications only on short lines of their own), `Answer: SECRET,
//! because …` (a labelled classification with text after it on its line), a portion mark before
//! a lower-case noun (`Bullet this for me (S) troops at the border`, which rule 7 reads as a
//! mention), a marking ending a lead-in with a colon (`text marked (S//NF): the mole is …`), and
//! a banner spelled letter by letter (`T O P S E C R E T`). Eleven are honest texts asserted: a
//! column-layout table and markdown tables whose rows pair a marking with a word that is not a
//! marking's (`| (S) | 10 |` in a table of sizes, `| TOP SECRET//SI//NOFORN | yes |`, a row with
//! a misspelled marking), questions and remarks rule 2a holds back (`Is UNCLASSIFIED//FOUO still
//! used after the CUI program started?`, a marking after `Tip:` or `First, is`, a code comment
//! after `e.g.`, `(e.g. SECRET//NOFORN)`), `Are (S) and (S//NF) portions allowed …`, and `Sizes
//! available: small (S), medium (M) …` (a mark after a label and a colon and one word). Four
//! are mention flags only (`4 (C)` as a temperature, `models (U) and (V)`, `(C) for copyright`
//! and `is (U) required` dropped or read the other way).
//!
//! Two of those spillage misses were then closed on reading them, so set D is no longer held out
//! either; its held-out figure stays 90.4 %. A marking followed by a colon introduces the text
//! after it (rule 7), and a short line that spells a classification letter by letter is a banner
//! line. With them D measures 91.4 % (191/209; the banner alone 93.3 %, 195/209); A, B and C are
//! unchanged. Still missed: a bare `SECRET` inside a sentence, `Answer: SECRET, because …` and a
//! portion mark before a lower-case noun.
//!
//! Set E (`data/SOURCE.md`) was written on 2026-12-07 by an author who had read neither these
//! rules nor their tests nor the earlier sets, and committed before its first run: the held-out
//! figure is **80.0 %** (176/220; the banner alone 83.2 %, 183/220), well below the target and
//! below set D's, because its author did not write around the rules. Of its 44 misses, 35 are
//! honest texts asserted (false spillage): short or foreign-language questions that open with a
//! marking or quote one at a line start (`TS//SCI meaning`, `Is (C//REL TO USA, CAN, GBR) a valid
//! portion mark, or …?`, questions in Japanese, Chinese and Korean — a script without case gives
//! rule 2 nothing to read), tables and quizzes that list markings with other words in their
//! rows, a YAML value, `(S)`, `(C)`, `(A)` as sizes, grades, symbols and clause letters. Five
//! were spillage missed: four disguised banners (`S E C R E T // N O F O R N`,
//! `S.E.C.R.E.T.//REL TO USA, GBR`, `S-E-C-R-E-T / / N-O-F-O-R-N: …`, `T0P 5ECRET//TK//N0F0RN`)
//! and a portion mark ending a sentence of content (`… from Gate 3 (S//NF). Correct?`). Four
//! are mention flags only.
//!
//! Three rules were then written on reading them, so set E is no longer held out either: markings
//! spelled to hide them are read again as written out (`src/spelled.rs`: letters spaced, dotted
//! or hyphenated, digits for letters; the four disguised banners); rule 7 reads the case of the
//! word after a marking in the original text, not in the folded one (folding writes Cyrillic `н`
//! as `H`, so `… TOP SECRET//NOFORN на документах?` read as opening text); and `(S)`, `(C)`,
//! `(U)` alone beside letters no portion mark uses, at line starts or in a table column, name
//! items (`(S) Small` / `(M) Medium`, `(C) the term …` / `(D) …`, a size or grade column). With
//! them E measures 84.5 % (186/220; banner alone 87.7 %), D 91.9 % (192/209), and A, B and C are
//! unchanged.
//!
//! Rule 2a was then widened (2026-12-07): up to sixteen words after the marking instead of
//! eight, and more words about where markings go and what they do to a document (`paragraph`,
//! `force`, `before`, `country`, …); each still has to be such a word, so one word that could
//! be content keeps the marking asserted; and a sentence without its final `?` counts when at
//! least one such word follows the marking and the paragraph ends (chat drops the `?`: `explain
//! (TS//SI//NF) to me like i'm new here`). E measures 85.9 % (189/220), D 92.3 % (193/209), C
//! 94.6 % (212/224), A and B unchanged.
//!
//! Set F (`data/SOURCE.md`), written on 2026-12-07 like set E by an author who had read none of
//! the rules, tests or sets and committed before its first run, measured **80.3 %** at that
//! run (167/208; the banner alone 82.7 %). Of its 41 misses, 27 are honest texts asserted
//! (questions that open with a marking, in several languages; training text and quizzes;
//! tables and code that list markings; `(C)` and `(S)` in prose), 5 mention flags only, and
//! 9 spillage missed — 7 of them disguised markings the spelled pass did not read (`t.s.//s.i.`,
//! `(T.S.//S.I.)`, `T-O-P S-E-C-R-E-T//T-K`, `C-O-N-F-I-D-E-N-T-I-A-L: …`, `$ecret//n0forn`,
//! `(5//NF)`, `( S - N F )`), a classification heading text after a label and a dash (`Status:
//! CONFIDENTIAL - the hangar door …`) and a portion mark opening a quoted line inside an
//! instruction (`copy the line '(S//NF) crypto keys …' into the chat`). Those nine were read to
//! close them as classes, not as texts: dotted and hyphenated abbreviations of two or more
//! letters next to a pair of slashes, `$` and `@` for letters, a classification written in
//! digits between `(` and `//`, words written out from a disguise read in upper case; an
//! upper-case classification that opens a line (or follows a label and a colon) and is
//! followed by a colon or a dash and text is a banner; a portion mark right after an opening
//! quote mark, followed inside the quote by words that are not all about markings, is
//! asserted (rule 3b). F then measures 84.1 % (175/208) with one spillage miss left (`( S - N F
//! )`, a portion mark spelled with a dash); A–E are unchanged. F is no longer held out for
//! those rules.
//!
//! The test prints each figure against the target and fails when a set falls below its floor,
//! the measured figure rounded down: 96 % for A, 95 % for B, 94 % for C, 92 % for D, 85 % for E,
//! 84 % for F.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "test code: a failed unwrap is a failed test; the figures are printed on purpose"
)]

use std::collections::BTreeMap;

use enclave_label::scan;
use serde_json::Value;

/// Written after the placement rules were first written; read to revise them once.
const EVAL_A: &str = include_str!("data/scan_eval.jsonl");
/// Written after that revision; read to write rule 2a.
const EVAL_B: &str = include_str!("data/scan_eval_b.jsonl");
/// Written after rule 2a; its misses were read to write rule 0 and the others of its revision.
const EVAL_C: &str = include_str!("data/scan_eval_c.jsonl");

/// Written with the revision that set C prompted and committed before its first run; two of its
/// spillage misses were then read to close them.
const EVAL_D: &str = include_str!("data/scan_eval_d.jsonl");

/// Written without reading the rules, the tests or the earlier sets, and committed before its
/// first run (80.0 %); its misses were then read to write three rules.
const EVAL_E: &str = include_str!("data/scan_eval_e.jsonl");

/// Written like set E, by an author who had read none of the rules, tests or sets, and committed
/// before its first run (80.3 %); its spillage misses were then read to close them.
const EVAL_F: &str = include_str!("data/scan_eval_f.jsonl");

/// The accuracy asked for on texts the scanner has never seen.
const TARGET_ACCURACY: f64 = 0.95;

/// The accuracy on one set, with the figures and the misses printed.
fn measure(name: &str, set: &str, min_items: usize) -> (f64, Vec<String>) {
    let cases: Vec<Value> = set
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("each line is a JSON object"))
        .collect();
    assert!(cases.len() >= min_items, "{name} has {} items", cases.len());
    let mut right = 0;
    let mut banner_right = 0;
    let mut by_kind: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut wrong = Vec::new();
    for case in &cases {
        let id = case["id"].as_str().unwrap();
        let kind = case["kind"].as_str().unwrap();
        let text = case["text"].as_str().unwrap();
        let want_banner = case["banner"].as_str().unwrap();
        let want_mention = case["mention"].as_bool().unwrap();
        let s = scan(text);
        let got_banner = s.label.banner();
        let got_mention = s.mentioned.is_some();
        let banner_ok = got_banner == want_banner;
        let ok = banner_ok && got_mention == want_mention;
        banner_right += usize::from(banner_ok);
        right += usize::from(ok);
        let tally = by_kind.entry(kind).or_default();
        tally.0 += usize::from(ok);
        tally.1 += 1;
        if !ok {
            wrong.push(format!(
                "{id} ({kind}): banner `{got_banner}` (want `{want_banner}`), mention {got_mention} (want {want_mention})"
            ));
        }
    }
    let n = cases.len();
    let accuracy = right as f64 / n as f64;
    println!(
        "{name}: {right}/{n} right = {:.1} % (banner alone {banner_right}/{n} = {:.1} %); target {:.0} %: {}",
        accuracy * 100.0,
        banner_right as f64 / n as f64 * 100.0,
        TARGET_ACCURACY * 100.0,
        if accuracy >= TARGET_ACCURACY {
            "met"
        } else {
            "NOT met"
        }
    );
    for (kind, (ok, all)) in &by_kind {
        println!("  {kind:<14} {ok:>3}/{all:<3}");
    }
    for w in &wrong {
        println!("  wrong: {w}");
    }
    (accuracy, wrong)
}

#[test]
fn accuracy_on_unseen_marking_examples_holds() {
    // The floors are the measured figures (see the module doc), so that no change to the rules
    // lowers them unnoticed; the target itself is printed beside each figure.
    for (name, set, min_items, floor) in [
        ("scan_eval", EVAL_A, 300, 0.96),
        ("scan_eval_b", EVAL_B, 150, 0.95),
        ("scan_eval_c", EVAL_C, 200, 0.94),
        ("scan_eval_d", EVAL_D, 200, 0.92),
        ("scan_eval_e", EVAL_E, 200, 0.85),
        ("scan_eval_f", EVAL_F, 200, 0.84),
    ] {
        let (accuracy, wrong) = measure(name, set, min_items);
        assert!(
            accuracy >= floor,
            "{name}: accuracy {:.1} % is below its floor {:.0} %:\n{}",
            accuracy * 100.0,
            floor * 100.0,
            wrong.join("\n")
        );
    }
}
