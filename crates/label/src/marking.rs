//! Reading and writing markings: banner lines (`SECRET//NOFORN`) and portion marks (`(S//NF)`).
//!
//! Parsing has three modes. [`Mode::Strict`] accepts only the canonical form. [`Mode::Lenient`]
//! also accepts what has one obvious meaning — letter case, spacing, the order of values inside a
//! category, look-alike characters, banner words in portions and the reverse — and normalizes it.
//! Both enforce the marking rules (SI needs a classified level, NOFORN excludes REL TO, …). The
//! scanner uses a third, internal detection mode that accepts anything recognizable, never
//! validates the rules, and labels what it understood conservatively.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::str::FromStr;
use std::sync::LazyLock;

use crate::error::{MarkingError, ReasonCode};
use crate::fold;
use crate::label::{
    Aea, Cui, Dissem, Fgi, Label, Ldc, Level, NonIc, NonUsControl, Owner, canonical_list,
};
use crate::registry::{self, Country, FxMap, USA};

/// Longest marking accepted, in bytes. Real banners are well under 1 KiB; the limit keeps
/// hostile input from costing more than a bounded amount of work.
pub const MAX_MARKING_BYTES: usize = 4096;

/// How strictly to parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Accept only the canonical form.
    Strict,
    /// Accept and normalize what has one obvious meaning.
    Lenient,
    /// Detection: accept anything recognizable and skip the marking rules (used by the scanner).
    Detect,
}

/// Whether a marking was written as a banner line or a portion mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Form {
    /// A banner line: `SECRET//NOFORN`.
    Banner,
    /// A portion mark in parentheses: `(S//NF)`.
    Portion,
}

/// A parsed marking: its meaning and the form it was written in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marking {
    /// What the marking means.
    pub label: Label,
    /// How it was written.
    pub form: Form,
}

/// Parses a banner or portion marking.
///
/// `context` is the banner a portion sits under; it resolves a portion's bare `REL` to the
/// banner's REL TO list.
///
/// # Errors
///
/// A [`MarkingError`] with a stable [`ReasonCode`] when the marking is malformed, breaks a
/// marking rule, or (in strict mode) is not in canonical form.
///
/// ```
/// use enclave_label::{parse_marking, Mode, ReasonCode};
/// let m = parse_marking("secret // noforn", Mode::Lenient, None).unwrap();
/// assert_eq!(m.label.to_string(), "SECRET//NOFORN");
/// let err = parse_marking("secret // noforn", Mode::Strict, None).unwrap_err();
/// assert_eq!(err.code(), ReasonCode::MarkingCase);
/// ```
pub fn parse_marking(
    input: &str,
    mode: Mode,
    context: Option<&Label>,
) -> Result<Marking, MarkingError> {
    let mut parser = Parser::new(mode);
    let mut marking = parser.parse(input)?;
    if let Some(ctx) = context {
        resolve_rel(&mut marking.label, ctx);
    }
    if mode == Mode::Strict
        && let Some(note) = parser.notes.into_iter().next()
    {
        return Err(note);
    }
    Ok(marking)
}

impl FromStr for Label {
    type Err = MarkingError;

    /// Parses a banner or portion marking leniently.
    fn from_str(s: &str) -> Result<Label, MarkingError> {
        parse_marking(s, Mode::Lenient, None).map(|m| m.label)
    }
}

/// Gives a portion's unresolved `REL` the REL TO list of the banner it sits under.
fn resolve_rel(label: &mut Label, banner: &Label) {
    if label.dissem.contains(&Dissem::Rel) && label.rel_to.is_none() {
        label.rel_to = banner.rel_to.clone();
    }
}

/// Parses in detection mode; also says whether every category was understood (detection skips
/// the ones it cannot read).
pub(crate) fn detect_marking(input: &str) -> Option<(Marking, bool)> {
    let mut parser = Parser::new(Mode::Detect);
    let marking = parser.parse(input).ok()?;
    Some((marking, parser.skipped == 0))
}

// === the parser ===

struct Parser {
    /// Categories skipped in detection mode because they could not be read.
    skipped: usize,
    mode: Mode,
    /// Strict-only problems found while parsing leniently; strict mode reports the first.
    notes: Vec<MarkingError>,
    form: Form,
}

/// Register position of a category; categories must appear in increasing position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Category {
    NonUsControls = 2,
    Sci = 4,
    Sap = 5,
    Aea = 6,
    Fgi = 7,
    Dissem = 8,
    NonIc = 9,
    CuiCategories = 10,
    CuiLdc = 11,
}

fn err(code: ReasonCode, message: impl Into<String>) -> MarkingError {
    MarkingError::new(code, message)
}

impl Parser {
    fn new(mode: Mode) -> Parser {
        Parser {
            skipped: 0,
            mode,
            notes: Vec::new(),
            form: Form::Banner,
        }
    }

    fn note(&mut self, code: ReasonCode, message: impl Into<String>) {
        if self.mode != Mode::Detect {
            self.notes.push(err(code, message));
        }
    }

    fn detect(&self) -> bool {
        self.mode == Mode::Detect
    }

    fn parse(&mut self, input: &str) -> Result<Marking, MarkingError> {
        if input.len() > MAX_MARKING_BYTES {
            return Err(err(
                ReasonCode::MarkingTooLong,
                format!(
                    "a marking is at most {MAX_MARKING_BYTES} bytes, this one is {}: pass one marking at a time",
                    input.len()
                ),
            ));
        }
        let text = self.normalize(input)?;
        if text.is_empty() {
            return Err(err(
                ReasonCode::EmptyMarking,
                "the marking is empty: give a banner such as `SECRET//NOFORN` or a portion mark such as `(S//NF)`",
            ));
        }
        let body = if let Some(inner) = text.strip_prefix('(') {
            self.form = Form::Portion;
            let Some(inner) = inner.strip_suffix(')') else {
                return Err(err(
                    ReasonCode::MalformedMarking,
                    "a portion mark opens with `(` but does not close with `)`",
                ));
            };
            inner
        } else {
            self.form = Form::Banner;
            &*text
        };
        if body.contains(['(', ')']) {
            return Err(err(
                ReasonCode::MalformedMarking,
                "parentheses may only enclose a whole portion mark, as in `(S//NF)`",
            ));
        }
        let label = self.parse_body(body)?;
        Ok(Marking {
            label,
            form: self.form,
        })
    }

    /// Folds look-alikes, upper-cases and fixes spacing, noting each change for strict mode.
    fn normalize<'a>(&mut self, input: &'a str) -> Result<Cow<'a, str>, MarkingError> {
        // The common case — canonical ASCII — is used as it is, without copying.
        if input.is_ascii()
            && !input
                .bytes()
                .any(|b| b.is_ascii_lowercase() || b.is_ascii_control())
            && spacing_is_canonical(input)
        {
            return Ok(Cow::Borrowed(input));
        }
        let mut text = if input.is_ascii() {
            input.to_owned()
        } else {
            self.note(
                ReasonCode::InvalidCharacter,
                "the marking contains characters outside ASCII (look-alike letters, invisible or full-width characters): retype it in plain ASCII",
            );
            fold::fold(input).text
        };
        if text
            .bytes()
            .any(|b| b == 0 || (b.is_ascii_control() && !b" \t\r\n".contains(&b)))
        {
            return Err(err(
                ReasonCode::MalformedMarking,
                "the marking contains control characters: pass the marking text only",
            ));
        }
        if !text.is_ascii() {
            return Err(err(
                ReasonCode::MalformedMarking,
                "the marking contains characters that are not part of any marking: use only letters, digits, spaces and `/ , - ( )`",
            ));
        }
        if text.bytes().any(|b| b.is_ascii_lowercase()) {
            self.note(
                ReasonCode::MarkingCase,
                "markings are written in upper case: write it as `".to_owned()
                    + &text.to_ascii_uppercase()
                    + "`",
            );
            text.make_ascii_uppercase();
        }
        let spaced = fix_spacing(&text);
        if spaced != text {
            self.note(
                ReasonCode::SeparatorSpacing,
                format!("separators take no spaces and words one space: write `{spaced}`"),
            );
        }
        Ok(Cow::Owned(spaced))
    }

    fn parse_body(&mut self, body: &str) -> Result<Label, MarkingError> {
        let mut categories: Vec<&str> = body.split("//").collect();
        let first = categories.first().copied().unwrap_or_default();
        let mut label;
        let rest: Vec<&str>;
        if first.is_empty() && categories.len() > 1 {
            // Non-U.S. classification: `//NATO SECRET`, `//GBR S`, `//JOINT S CAN USA`, `//FGI S`.
            let class = categories.get(1).copied().unwrap_or_default();
            label = self.parse_foreign_class(class)?;
            rest = categories.split_off(2.min(categories.len()));
        } else {
            label = self.parse_us_class(first)?;
            rest = categories.split_off(1.min(categories.len()));
        }
        let mut last: Option<(Category, &str)> = None;
        for cat in rest {
            if cat.is_empty() || cat.starts_with('/') || cat.ends_with('/') {
                if self.detect() {
                    self.skipped += 1;
                    continue;
                }
                return Err(err(
                    ReasonCode::EmptyCategory,
                    "an empty category between separators: categories are separated by exactly `//`",
                ));
            }
            let kind = self.category_of(cat, &label);
            if let Some((prev, prev_text)) = last
                && kind <= prev
                && !self.detect()
            {
                {
                    if kind == prev && prev_text == cat {
                        return Err(err(
                            ReasonCode::DuplicateToken,
                            format!("the category `{cat}` appears twice: remove the duplicate"),
                        ));
                    }
                    return Err(err(
                        ReasonCode::CategoryOrder,
                        format!(
                            "`{cat}` stands after `{prev_text}`: categories go in register order (SCI, SAP, AEA, FGI, dissemination controls, non-IC markings)"
                        ),
                    ));
                }
            }
            last = Some((kind, cat));
            let parsed = match kind {
                Category::NonUsControls => self.parse_non_us_controls(cat, &mut label),
                Category::Sci => self.parse_sci(cat, &mut label),
                Category::Sap => self.parse_sap(cat, &mut label),
                Category::Aea => self.parse_aea(cat, &mut label),
                Category::Fgi => self.parse_fgi(cat, &mut label),
                Category::Dissem => self.parse_dissem(cat, &mut label),
                Category::NonIc => self.parse_non_ic(cat, &mut label),
                Category::CuiCategories => self.parse_cui_categories(cat, &mut label),
                Category::CuiLdc => self.parse_cui_ldc(cat, &mut label),
            };
            match parsed {
                Ok(()) => {}
                Err(_) if self.detect() => self.skipped += 1,
                Err(e) => return Err(e),
            }
        }
        if !self.detect() {
            self.validate(&label)?;
        }
        Ok(label)
    }

    // --- classification ---

    fn parse_us_class(&mut self, class: &str) -> Result<Label, MarkingError> {
        if class == "CUI" || class == "CONTROLLED" {
            if class == "CONTROLLED" {
                self.note(
                    ReasonCode::BannerUsesPortionForm,
                    "write the CUI control marking as `CUI`",
                );
            }
            let mut label = Label::new(Level::Unclassified);
            label.cui = Some(Cui::default());
            return Ok(label);
        }
        if let Some(level) = level_from_title(class) {
            if self.form == Form::Portion {
                self.note(
                    ReasonCode::PortionUsesBannerForm,
                    format!(
                        "a portion mark abbreviates the classification: write `{}`",
                        level.portion()
                    ),
                );
            }
            if level == Level::Restricted {
                return Err(restricted_for_us());
            }
            return Ok(Label::new(level));
        }
        if let Some(level) = level_from_portion(class) {
            if self.form == Form::Banner && !self.detect() {
                return Err(err(
                    ReasonCode::AbbreviatedClassificationInBanner,
                    format!(
                        "a banner spells out its classification: write `{}` instead of `{class}`",
                        level.title()
                    ),
                ));
            }
            if level == Level::Restricted {
                return Err(restricted_for_us());
            }
            return Ok(Label::new(level));
        }
        Err(unknown_classification(class))
    }

    fn parse_foreign_class(&mut self, class: &str) -> Result<Label, MarkingError> {
        if class.is_empty() {
            return Err(err(
                ReasonCode::MalformedMarking,
                "a marking that opens with `//` must name a non-U.S. classification next, as in `//NATO SECRET`",
            ));
        }
        let mut label = Label::new(Level::Unclassified);
        // NATO levels have names of their own.
        for level in Level::ALL {
            let (title, portion) = (level.nato_title(), level.nato_portion());
            if class == title || class == portion {
                self.check_level_form(class == title, level)?;
                label.owner = Owner::Nato;
                label.level = level;
                return Ok(label);
            }
        }
        let words: Vec<&str> = class.split(' ').collect();
        let Some((&head, tail)) = words.split_first() else {
            return Err(unknown_classification(class));
        };
        if head == "JOINT" {
            let (level, consumed) = self.level_words(tail, class)?;
            let owners_text = tail.get(consumed..).unwrap_or_default().join(" ");
            let owners = self.country_set(
                &owners_text,
                ReasonCode::FgiOrder,
                "JOINT owners",
                |a, b| a.code() < b.code(),
            )?;
            if (owners.len() < 2 || !owners.contains(&USA)) && !self.detect() {
                return Err(err(
                    ReasonCode::JointSingleOwner,
                    "JOINT information has more than one owner and USA is one of them, as in `//JOINT SECRET CAN USA`",
                ));
            }
            label.owner = Owner::Joint(owners);
            label.level = level;
            return Ok(label);
        }
        let owner = if head == "FGI" {
            Owner::ConcealedForeign
        } else if head == "NATO" {
            // `//NATO C` is NATO's own CONFIDENTIAL (`//NC`), not a foreign owner named NATO.
            Owner::Nato
        } else if head == "USA" {
            if !self.detect() {
                return Err(err(
                    ReasonCode::MalformedMarking,
                    "U.S. information is not marked with a leading `//`: write the classification alone, as in `SECRET`",
                ));
            }
            Owner::Usa
        } else {
            match Country::from_code(head) {
                Some(c) => Owner::Foreign(c),
                None if head.len() <= 4 && tail.is_empty() => {
                    return Err(unknown_classification(class));
                }
                None => {
                    return Err(err(
                        ReasonCode::UnknownCountryCode,
                        format!(
                            "`{head}` is not a registered country or organization code: see `enclave marking list`"
                        ),
                    ));
                }
            }
        };
        let (level, consumed) = self.level_words(tail, class)?;
        if consumed != tail.len() {
            return Err(unknown_classification(class));
        }
        label.owner = owner;
        label.level = level;
        Ok(label)
    }

    /// Reads a level written as a title or abbreviation at the start of `words`; returns it and
    /// how many words it took.
    fn level_words(&mut self, words: &[&str], class: &str) -> Result<(Level, usize), MarkingError> {
        let two = words.get(..2).map(|w| w.join(" "));
        if two.as_deref() == Some("TOP SECRET") {
            self.check_level_form(true, Level::TopSecret)?;
            return Ok((Level::TopSecret, 2));
        }
        let Some(&one) = words.first() else {
            return Err(unknown_classification(class));
        };
        if let Some(level) = level_from_title(one) {
            self.check_level_form(true, level)?;
            return Ok((level, 1));
        }
        if let Some(level) = level_from_portion(one) {
            self.check_level_form(false, level)?;
            return Ok((level, 1));
        }
        Err(unknown_classification(class))
    }

    fn check_level_form(&mut self, is_title: bool, level: Level) -> Result<(), MarkingError> {
        match (self.form, is_title) {
            (Form::Banner, false) if !self.detect() => Err(err(
                ReasonCode::AbbreviatedClassificationInBanner,
                format!(
                    "a banner spells out its classification: write `{}`",
                    level.title()
                ),
            )),
            (Form::Portion, true) => {
                self.note(
                    ReasonCode::PortionUsesBannerForm,
                    format!(
                        "a portion mark abbreviates the classification: write `{}`",
                        level.portion()
                    ),
                );
                Ok(())
            }
            _ => Ok(()),
        }
    }

    // --- categories ---

    fn category_of(&self, cat: &str, label: &Label) -> Category {
        let first = cat.split('/').next().unwrap_or_default();
        if label.cui.is_some() {
            return if cui_ldc_token(first).is_some()
                || is_list_head(first)
                || matches!(first, "NOFORN" | "NF" | "RELIDO")
            {
                Category::CuiLdc
            } else {
                Category::CuiCategories
            };
        }
        if matches!(first, "ATOMAL" | "BALK" | "BOHEMIA") {
            return Category::NonUsControls;
        }
        if first.starts_with("SAR-") || first.starts_with("SPECIAL ACCESS REQUIRED-") {
            return Category::Sap;
        }
        let head = first.split('-').next().unwrap_or_default();
        if matches!(
            head,
            "RD" | "FRD"
                | "TFNI"
                | "DCNI"
                | "UCNI"
                | "DOD UCNI"
                | "DOE UCNI"
                | "RESTRICTED DATA"
                | "FORMERLY RESTRICTED DATA"
                | "TRANSCLASSIFIED FOREIGN NUCLEAR INFORMATION"
        ) {
            return Category::Aea;
        }
        if first == "FGI"
            || first.starts_with("FGI ")
            || first.starts_with("FOREIGN GOVERNMENT INFORMATION")
        {
            return Category::Fgi;
        }
        if dissem_token(first).is_some() || is_list_head(first) || is_eyes_only(cat) {
            return Category::Dissem;
        }
        if non_ic_token(first).is_some() {
            return Category::NonIc;
        }
        Category::Sci
    }

    fn parse_non_us_controls(&mut self, cat: &str, label: &mut Label) -> Result<(), MarkingError> {
        let mut seen = Vec::new();
        for el in cat.split('/') {
            let control = match el {
                "ATOMAL" => NonUsControl::Atomal,
                "BALK" => NonUsControl::Balk,
                "BOHEMIA" => NonUsControl::Bohemia,
                _ => return Err(unknown_token(el, "a NATO control marking")),
            };
            if !label.non_us_controls.insert(control) {
                return Err(duplicate(el));
            }
            seen.push(control);
        }
        if !is_sorted(&seen) {
            self.note(
                ReasonCode::DissemOrder,
                "NATO control markings go in register order: ATOMAL, BALK, BOHEMIA",
            );
        }
        Ok(())
    }

    fn parse_sci(&mut self, cat: &str, label: &mut Label) -> Result<(), MarkingError> {
        let mut systems = Vec::new();
        for el in cat.split('/') {
            let mut parts = el.split('-');
            let sys_text = parts.next().unwrap_or_default();
            let system = if is_token(sys_text) {
                if let Some(short) = registry::sci_by_title(sys_text) {
                    // A single-word title such as `RESERVE` or `KLAMATH`.
                    self.title_in_portion(sys_text, short);
                    short.to_owned()
                } else {
                    sys_text.to_owned()
                }
            } else if let Some(short) = registry::sci_by_title(sys_text) {
                self.title_in_portion(sys_text, short);
                short.to_owned()
            } else {
                return Err(unknown_token(el, "an SCI control system"));
            };
            if is_reserved_word(&system) {
                return Err(unknown_token(el, "an SCI control system"));
            }
            if systems.contains(&system) {
                return Err(duplicate(&system));
            }
            if !label.sci.insert(system.clone()) {
                return Err(duplicate(&system));
            }
            let mut compartments = Vec::new();
            for comp_text in parts {
                let mut words = comp_text.split(' ');
                let comp = words.next().unwrap_or_default();
                if !is_token(comp) {
                    return Err(unknown_token(el, "an SCI compartment"));
                }
                let comp_token = format!("{system}-{comp}");
                if !label.sci.insert(comp_token.clone()) {
                    return Err(duplicate(&comp_token));
                }
                compartments.push(comp.to_owned());
                let mut subs = Vec::new();
                for sub in words {
                    if !is_token(sub) {
                        return Err(unknown_token(el, "an SCI sub-compartment"));
                    }
                    if !label.sci.insert(format!("{comp_token}-{sub}")) {
                        return Err(duplicate(sub));
                    }
                    subs.push(sub);
                }
                if !is_sorted(&subs) {
                    self.note(
                        ReasonCode::SciOrder,
                        format!("sub-compartments of `{comp_token}` go in ascending order"),
                    );
                }
            }
            if !is_sorted(&compartments) {
                self.note(
                    ReasonCode::SciOrder,
                    format!("compartments of `{system}` go in ascending order"),
                );
            }
            systems.push(system);
        }
        if !is_sorted(&systems) {
            self.note(
                ReasonCode::SciOrder,
                "SCI control systems go in ascending order (numbers first, then letters), as in `SI/TK`",
            );
        }
        Ok(())
    }

    fn title_in_portion(&mut self, title: &str, short: &str) {
        if self.form == Form::Portion && title != short {
            self.note(
                ReasonCode::PortionUsesBannerForm,
                format!("a portion mark uses `{short}`, not `{title}`"),
            );
        }
    }

    fn parse_sap(&mut self, cat: &str, label: &mut Label) -> Result<(), MarkingError> {
        let mut programs = Vec::new();
        for (i, el) in cat.split('/').enumerate() {
            let stripped = el
                .strip_prefix("SAR-")
                .or_else(|| el.strip_prefix("SPECIAL ACCESS REQUIRED-"));
            if i > 0 && stripped.is_some() {
                self.note(
                    ReasonCode::SapIndicatorRepeated,
                    "the SAP indicator is written once: `SAR-BP/GB`, not `SAR-BP/SAR-GB`",
                );
            }
            let program = stripped.unwrap_or(el);
            // A program identifier, then compartments after `-` and sub-compartments after a
            // space: every piece a token of capitals and digits.
            // The indicator itself is not a program name (`SAR-SAR-X` would not read back).
            let names_indicator = program.split(['-', ' ']).next() == Some("SAR")
                || program.starts_with("SPECIAL ACCESS REQUIRED");
            if names_indicator || !program.split(['-', ' ']).all(is_token) {
                return Err(unknown_token(el, "a special access program identifier"));
            }
            if !label.sap.insert(program.to_owned()) {
                return Err(duplicate(program));
            }
            programs.push(program);
        }
        if !is_sorted(&programs) {
            self.note(
                ReasonCode::SapOrder,
                "special access programs go in ascending order",
            );
        }
        Ok(())
    }

    fn parse_aea(&mut self, cat: &str, label: &mut Label) -> Result<(), MarkingError> {
        let mut seen = Vec::new();
        for el in cat.split('/') {
            let mut parts = el.split('-');
            let head = parts.next().unwrap_or_default();
            let mut tokens = Vec::new();
            let is_rd = match head {
                "RD" | "RESTRICTED DATA" => {
                    tokens.push(Aea::Rd);
                    true
                }
                "FRD" | "FORMERLY RESTRICTED DATA" => {
                    tokens.push(Aea::Frd);
                    false
                }
                "DCNI" | "DOD UCNI" => {
                    tokens.push(Aea::Dcni);
                    false
                }
                "UCNI" | "DOE UCNI" => {
                    tokens.push(Aea::Ucni);
                    false
                }
                "TFNI" | "TRANSCLASSIFIED FOREIGN NUCLEAR INFORMATION" => {
                    tokens.push(Aea::Tfni);
                    false
                }
                _ => return Err(unknown_token(el, "an Atomic Energy Act marking")),
            };
            let sigma_ok = matches!(tokens.first(), Some(Aea::Rd | Aea::Frd));
            for part in parts {
                if part == "CNWDI" || part == "CRITICAL NUCLEAR WEAPON DESIGN INFORMATION" {
                    if !is_rd {
                        return Err(unknown_token(
                            el,
                            "an Atomic Energy Act marking: CNWDI goes with RD",
                        ));
                    }
                    tokens.push(Aea::Cnwdi);
                    continue;
                }
                let numbers = part
                    .strip_prefix("SG ")
                    .or_else(|| part.strip_prefix("SIGMA "));
                let Some(numbers) = numbers.filter(|_| sigma_ok) else {
                    return Err(unknown_token(el, "an Atomic Energy Act marking"));
                };
                let mut prev = 0u8;
                for n in numbers.split(' ') {
                    let Some(n) = n.parse::<u8>().ok().filter(|n| (1..=99).contains(n)) else {
                        return Err(unknown_token(
                            el,
                            "a SIGMA category (a number from 1 to 99)",
                        ));
                    };
                    if n <= prev {
                        if n == prev {
                            return Err(duplicate(&n.to_string()));
                        }
                        self.note(
                            ReasonCode::DissemOrder,
                            "SIGMA categories go in ascending order",
                        );
                    }
                    prev = n;
                    tokens.push(if is_rd {
                        Aea::RdSigma(n)
                    } else {
                        Aea::FrdSigma(n)
                    });
                }
            }
            for t in tokens {
                if !label.aea.insert(t) {
                    return Err(duplicate(&t.ism_token()));
                }
                seen.push(t);
            }
        }
        if !is_sorted(&seen) {
            self.note(
                ReasonCode::DissemOrder,
                "Atomic Energy Act markings go in register order",
            );
        }
        Ok(())
    }

    fn parse_fgi(&mut self, cat: &str, label: &mut Label) -> Result<(), MarkingError> {
        let list = cat
            .strip_prefix("FOREIGN GOVERNMENT INFORMATION")
            .or_else(|| cat.strip_prefix("FGI"))
            .unwrap_or_default();
        if list.is_empty() {
            label.fgi = Some(Fgi::Concealed);
            return Ok(());
        }
        let Some(list) = list.strip_prefix(' ') else {
            return Err(unknown_token(cat, "an FGI marking"));
        };
        let set = self.country_set(list, ReasonCode::FgiOrder, "FGI sources", |a, b| a < b)?;
        label.fgi = Some(Fgi::Sources(set));
        Ok(())
    }

    fn parse_dissem(&mut self, cat: &str, label: &mut Label) -> Result<(), MarkingError> {
        let mut seen: Vec<Dissem> = Vec::new();
        for el in dissem_elements(cat) {
            let control = self.parse_dissem_element(&el, label)?;
            if seen.contains(&control) || label.dissem.contains(&control) {
                return Err(duplicate(control.portion()));
            }
            seen.push(control);
            label.dissem.insert(control);
        }
        if !is_sorted(&seen) {
            self.note(
                ReasonCode::DissemOrder,
                "dissemination controls go in register order, as in `ORCON/NOFORN`",
            );
        }
        Ok(())
    }

    fn parse_dissem_element(
        &mut self,
        el: &str,
        label: &mut Label,
    ) -> Result<Dissem, MarkingError> {
        if let Some(list) = list_after(el, &["REL TO", "AUTHORIZED FOR RELEASE TO"]) {
            if el.starts_with("AUTHORIZED") && self.form == Form::Portion {
                self.note(
                    ReasonCode::PortionUsesBannerForm,
                    "a portion mark writes `REL TO`",
                );
            }
            label.rel_to = Some(self.rel_to_list(list)?);
            return Ok(Dissem::Rel);
        }
        if let Some(list) = list_after(el, &["DISPLAY ONLY"]) {
            if list.is_empty() {
                return Err(display_only_without_list());
            }
            let set =
                self.country_set(list, ReasonCode::RelToOrder, "DISPLAY ONLY", |a, b| a < b)?;
            label.display_only = Some(canonical_list(set));
            return Ok(Dissem::DisplayOnly);
        }
        if let Some(list) = el.strip_suffix(" EYES ONLY") {
            let codes = list.replace('/', ", ");
            let set =
                self.country_set(&codes, ReasonCode::RelToOrder, "EYES ONLY", |a, b| a < b)?;
            label.eyes_only = Some(set);
            return Ok(Dissem::Eyes);
        }
        match el {
            "REL" => {
                if self.form == Form::Banner && !self.detect() {
                    return Err(err(
                        ReasonCode::RelToRequiresList,
                        "a banner writes the release list out, as in `REL TO USA, GBR`",
                    ));
                }
                return Ok(Dissem::Rel);
            }
            "DISPLAYONLY" | "DISPLAY ONLY" => return Err(display_only_without_list()),
            "EYES" => {
                if self.form == Form::Banner && !self.detect() {
                    return Err(unknown_token(
                        el,
                        "a banner dissemination control: write `USA/<LIST> EYES ONLY`",
                    ));
                }
                return Ok(Dissem::Eyes);
            }
            _ => {}
        }
        let Some((control, form)) = dissem_token(el) else {
            return Err(unknown_token(el, "a dissemination control"));
        };
        self.check_token_form(el, form, control.portion(), control.banner());
        Ok(control)
    }

    fn check_token_form(&mut self, el: &str, form: TokenForm, portion: &str, banner: &str) {
        match (self.form, form) {
            (Form::Banner, TokenForm::Portion) => self.note(
                ReasonCode::BannerUsesPortionForm,
                format!("a banner writes `{banner}`, not `{el}`"),
            ),
            (Form::Portion, TokenForm::Banner | TokenForm::Title) => self.note(
                ReasonCode::PortionUsesBannerForm,
                format!("a portion mark writes `{portion}`, not `{el}`"),
            ),
            _ => {}
        }
    }

    fn rel_to_list(&mut self, list: &str) -> Result<BTreeSet<Country>, MarkingError> {
        if list.is_empty() {
            return Err(err(
                ReasonCode::RelToWithoutPartner,
                "REL TO names USA and at least one partner, as in `REL TO USA, GBR`",
            ));
        }
        let codes: Vec<&str> = list.split(", ").collect();
        let set = self.country_set(list, ReasonCode::RelToOrder, "REL TO", |a, b| a < b)?;
        if !set.contains(&USA) {
            return Err(err(
                ReasonCode::RelToMissingUsa,
                format!("a REL TO list starts with USA: write `REL TO USA, {list}`"),
            ));
        }
        if set.len() < 2 {
            return Err(err(
                ReasonCode::RelToWithoutPartner,
                "`REL TO USA` names no partner: name at least one country, or mark it NOFORN",
            ));
        }
        if codes.first() != Some(&"USA")
            && self
                .notes
                .iter()
                .all(|n| n.code() != ReasonCode::RelToOrder)
        {
            self.note(ReasonCode::RelToOrder, "USA comes first in a REL TO list");
        }
        Ok(canonical_list(set))
    }

    /// Reads `A, B, C` (or `A B C` for FGI and JOINT lists) into a set, checking codes and
    /// duplicates and noting order against `in_order`.
    fn country_set(
        &mut self,
        list: &str,
        order_code: ReasonCode,
        what: &str,
        in_order: impl Fn(&Country, &Country) -> bool,
    ) -> Result<BTreeSet<Country>, MarkingError> {
        let mut set = BTreeSet::new();
        let mut prev: Option<Country> = None;
        let mut ordered = true;
        let separator = if list.contains(',') { ", " } else { " " };
        for code in list.split(separator).filter(|c| !c.is_empty()) {
            if code.contains([' ', ',']) {
                return Err(err(
                    ReasonCode::MalformedMarking,
                    format!("`{code}` in the {what} list: separate codes with `, `"),
                ));
            }
            let Some(country) = Country::from_code(code) else {
                return Err(err(
                    ReasonCode::UnknownCountryCode,
                    format!(
                        "`{code}` in the {what} list is not a registered country or organization code: see `enclave marking list`"
                    ),
                ));
            };
            if !set.insert(country) {
                return Err(duplicate(code));
            }
            if let Some(p) = prev {
                // USA leads a REL TO list; the rest follow the list order.
                if !(in_order(&p, &country) || (what == "REL TO" && p == USA)) {
                    ordered = false;
                }
            }
            prev = Some(country);
        }
        if !ordered {
            self.note(
                order_code,
                format!("the {what} list goes in order: USA first, then countries alphabetically, then groups such as FVEY"),
            );
        }
        Ok(set)
    }

    fn parse_non_ic(&mut self, cat: &str, label: &mut Label) -> Result<(), MarkingError> {
        let mut seen = Vec::new();
        for el in cat.split('/') {
            let Some((marking, form)) = non_ic_token(el) else {
                return Err(unknown_token(el, "a non-IC dissemination marking"));
            };
            self.check_token_form(el, form, marking.portion(), marking.banner());
            if !label.non_ic.insert(marking) {
                return Err(duplicate(el));
            }
            seen.push(marking);
        }
        if !is_sorted(&seen) {
            self.note(
                ReasonCode::DissemOrder,
                "non-IC markings go in register order, as in `SBU/SSI`",
            );
        }
        Ok(())
    }

    fn parse_cui_categories(&mut self, cat: &str, label: &mut Label) -> Result<(), MarkingError> {
        let mut written = Vec::new();
        let cui = label.cui.get_or_insert_with(Cui::default);
        for el in cat.split('/') {
            let (name, specified) = match el.strip_prefix("SP-") {
                Some(name) => (name, true),
                None => (el, false),
            };
            if !(registry::is_cui_specified(name) || registry::is_cui_basic(name)) {
                return Err(err(
                    ReasonCode::UnknownCuiCategory,
                    format!(
                        "`{el}` is not a category in the CUI Registry: see `enclave marking list`"
                    ),
                ));
            }
            let fresh = if specified {
                cui.specified.insert(name.to_owned())
            } else {
                cui.basic.insert(name.to_owned())
            };
            if !fresh || cui.specified.contains(name) && cui.basic.contains(name) {
                return Err(duplicate(el));
            }
            written.push((!specified, name));
        }
        if !is_sorted(&written) {
            self.note(
                ReasonCode::CuiCategoryOrder,
                "CUI categories go in alphabetical order, specified (`SP-`) categories first",
            );
        }
        Ok(())
    }

    fn parse_cui_ldc(&mut self, cat: &str, label: &mut Label) -> Result<(), MarkingError> {
        let mut seen = Vec::new();
        for el in cat.split('/') {
            let key = if let Some(ldc) = cui_ldc_token(el) {
                label.cui.get_or_insert_with(Cui::default).ldc.insert(ldc);
                LdcKey::Ldc(ldc)
            } else if is_list_head(el) || matches!(el, "NOFORN" | "NF" | "RELIDO") {
                let control = self.parse_dissem_element(el, label)?;
                if !label.dissem.insert(control) {
                    return Err(duplicate(el));
                }
                LdcKey::Fdr(control)
            } else {
                return Err(unknown_token(el, "a CUI limited-dissemination control"));
            };
            if seen.contains(&key) {
                return Err(duplicate(el));
            }
            seen.push(key);
        }
        let order: Vec<u8> = seen.iter().map(|k| k.rank()).collect();
        if !is_sorted(&order) {
            self.note(
                ReasonCode::DissemOrder,
                "limited-dissemination controls go in alphabetical order",
            );
        }
        Ok(())
    }

    // --- the marking rules ---

    fn validate(&mut self, label: &Label) -> Result<(), MarkingError> {
        use ReasonCode as R;
        let level = label.level;
        let classified = level.is_classified();
        let at_least_secret = level >= Level::Secret;
        let has = |d: Dissem| label.dissem.contains(&d);
        let nf = has(Dissem::Nf);
        let sci_system = |s: &str| {
            label
                .sci
                .iter()
                .any(|t| t == s || t.starts_with(&format!("{s}-")))
        };

        // SCI.
        if !classified && sci_system("SI") {
            return Err(err(
                R::SiRequiresClassified,
                "SI information is CONFIDENTIAL or above: raise the classification or remove SI",
            ));
        }
        if label.sci.contains("SI-G") {
            if level != Level::TopSecret {
                return Err(err(
                    R::SiGRequiresTs,
                    "SI-GAMMA information is TOP SECRET: raise the classification",
                ));
            }
            if !has(Dissem::Oc) {
                return Err(err(
                    R::SiGRequiresOrcon,
                    "SI-GAMMA information is marked ORCON: add `ORCON` (`OC` in a portion)",
                ));
            }
        }
        if sci_system("TK") && !at_least_secret {
            return Err(err(
                R::TkRequiresSOrTs,
                "TALENT KEYHOLE information is SECRET or TOP SECRET: raise the classification",
            ));
        }
        if label.sci.contains("RSV") && !label.sci.iter().any(|t| t.starts_with("RSV-")) {
            return Err(err(
                R::RsvRequiresCompartment,
                "RESERVE is always used with a compartment, as in `RSV-XXX`",
            ));
        }
        if sci_system("HCS") {
            if !nf {
                return Err(err(
                    R::HcsRequiresNoforn,
                    "HCS information is marked NOFORN: add `NOFORN` (`NF` in a portion)",
                ));
            }
            if !label.sci.iter().any(|t| t.starts_with("HCS-")) {
                return Err(err(
                    R::HcsRequiresCompartment,
                    "HCS is used with a compartment, as in `HCS-P`",
                ));
            }
        }
        if !classified && !label.sci.is_empty() {
            return Err(err(
                R::SciRequiresClassified,
                "SCI controls apply only to classified information: raise the classification or remove the SCI control",
            ));
        }

        // Atomic Energy Act.
        let aea = &label.aea;
        let primary = [Aea::Rd, Aea::Frd, Aea::Tfni]
            .iter()
            .filter(|a| aea.contains(a))
            .count();
        if primary > 1 {
            return Err(err(
                R::AeaConflict,
                "RD, FRD and TFNI exclude each other: keep the one that applies (RD takes precedence)",
            ));
        }
        if !classified && aea.iter().any(|a| a.restricts_access()) {
            return Err(err(
                R::RdRequiresClassified,
                "RD, FRD and TFNI information is CONFIDENTIAL or above: raise the classification",
            ));
        }
        if aea.contains(&Aea::Cnwdi) && !at_least_secret {
            return Err(err(
                R::CnwdiRequiresSOrTs,
                "CNWDI information is SECRET or TOP SECRET: raise the classification",
            ));
        }

        // Dissemination controls.
        if has(Dissem::Fouo) && classified {
            return Err(err(
                R::FouoRequiresUnclassified,
                "FOUO is used only with UNCLASSIFIED: remove it from classified markings",
            ));
        }
        if (has(Dissem::Oc) || has(Dissem::OcUsgov) || has(Dissem::Eyes)) && !classified {
            return Err(err(
                R::OrconRequiresClassified,
                "ORCON and EYES ONLY apply to CONFIDENTIAL information and above: raise the classification or remove the control",
            ));
        }
        if has(Dissem::Imc) && !at_least_secret {
            return Err(err(
                R::ImconRequiresSOrTs,
                "IMCON is used only with SECRET or TOP SECRET",
            ));
        }
        if has(Dissem::Rs) && !at_least_secret {
            return Err(err(
                R::RsenRequiresSOrTs,
                "RISK SENSITIVE is used only with SECRET or TOP SECRET",
            ));
        }
        if nf && (has(Dissem::Rel) || has(Dissem::DisplayOnly) || has(Dissem::Relido)) {
            return Err(err(
                R::NofornConflict,
                "NOFORN forbids any foreign release: remove NOFORN or the REL TO, DISPLAY ONLY or RELIDO control",
            ));
        }
        if has(Dissem::Eyes) && (nf || has(Dissem::Rel)) {
            return Err(err(
                R::EyesRelConflict,
                "EYES ONLY cannot be combined with NOFORN or REL TO",
            ));
        }
        if (has(Dissem::Oc) || has(Dissem::OcUsgov)) && has(Dissem::Relido) {
            return Err(err(
                R::OrconRelidoConflict,
                "ORCON cannot be combined with RELIDO",
            ));
        }
        if has(Dissem::Relido) && has(Dissem::DisplayOnly) {
            return Err(err(
                R::RelidoDisplayOnlyConflict,
                "RELIDO cannot be combined with DISPLAY ONLY",
            ));
        }

        // Non-IC markings.
        let non_ic = &label.non_ic;
        if (non_ic.contains(&NonIc::Les) && non_ic.contains(&NonIc::LesNf))
            || (non_ic.contains(&NonIc::Sbu) && non_ic.contains(&NonIc::SbuNf))
        {
            return Err(err(
                R::NonIcConflict,
                "LES and LES NOFORN (or SBU and SBU NOFORN) exclude each other: keep one",
            ));
        }
        if (non_ic.contains(&NonIc::LesNf) || non_ic.contains(&NonIc::SbuNf))
            && label.dissem.iter().any(|d| d.is_fdr())
        {
            return Err(err(
                R::LesNfFdrConflict,
                "LES NOFORN and SBU NOFORN already restrict foreign release: remove the other NOFORN, REL TO, RELIDO, EYES or DISPLAY ONLY control",
            ));
        }
        if non_ic.contains(&NonIc::Ds) && classified {
            return Err(err(
                R::LimdisRequiresUnclassified,
                "LIMDIS is used only with UNCLASSIFIED",
            ));
        }
        if non_ic.contains(&NonIc::Xd) && !nf {
            return Err(err(
                R::ExdisRequiresNoforn,
                "EXDIS information is marked NOFORN: add `NOFORN`",
            ));
        }
        if non_ic.contains(&NonIc::Nd) && !nf {
            return Err(err(
                R::NodisRequiresNoforn,
                "NODIS information is marked NOFORN: add `NOFORN`",
            ));
        }
        Ok(())
    }
}

// === lexical helpers ===

/// Upper-cased text with canonical spacing: single spaces between words, none around `/`,
/// `, ` between list items, nothing inside the parentheses.
fn fix_spacing(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars() {
        let c = if c.is_ascii_whitespace() { ' ' } else { c };
        match c {
            ' ' => pending_space = true,
            '/' | ')' => {
                pending_space = false;
                out.push(c);
            }
            ',' => {
                out.push(',');
                // The space after a comma is added before the next word.
                pending_space = true;
            }
            _ => {
                let after_sep = matches!(out.chars().last(), None | Some('/' | '('));
                if pending_space && !after_sep {
                    out.push(' ');
                }
                pending_space = false;
                out.push(c);
            }
        }
    }
    out
}

/// Whether `fix_spacing` would leave `text` as it is (checked without allocating).
fn spacing_is_canonical(text: &str) -> bool {
    let b = text.as_bytes();
    if b.first() == Some(&b' ') || b.last() == Some(&b' ') {
        return false;
    }
    b.windows(2).all(|w| match w {
        [b' ', b' ' | b'/' | b')' | b','] | [b'/' | b'(', b' '] => false,
        [b',', next] => *next == b' ',
        _ => true,
    }) && b.last() != Some(&b',')
}

/// A token of the marking alphabet: capital letters and digits.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// Words that are markings of their own and so cannot be unpublished SCI system names.
fn is_reserved_word(s: &str) -> bool {
    static RESERVED: LazyLock<FxMap<&'static str, ()>> = LazyLock::new(|| {
        let mut words: Vec<&'static str> = vec![
            "CUI",
            "CONTROLLED",
            "FGI",
            "JOINT",
            "NATO",
            "SAR",
            "RD",
            "FRD",
            "CNWDI",
            "DCNI",
            "UCNI",
            "TFNI",
            "ATOMAL",
            "BALK",
            "BOHEMIA",
        ];
        for l in Level::ALL {
            words.extend([l.title(), l.portion()]);
        }
        for d in Dissem::ALL {
            words.extend([d.portion(), d.banner(), d.title()]);
        }
        for m in NonIc::ALL {
            words.extend([m.portion(), m.banner(), m.title()]);
        }
        for l in Ldc::ALL {
            words.extend([l.banner(), l.ism_token()]);
        }
        words.extend(["REL", "EYES", "RAW FISA"]);
        words.into_iter().map(|w| (w, ())).collect()
    });
    RESERVED.contains_key(s) || is_list_head(s)
}

fn is_sorted<T: PartialOrd>(items: &[T]) -> bool {
    items.windows(2).all(|w| matches!(w, [a, b] if a <= b))
}

fn level_from_title(s: &str) -> Option<Level> {
    Level::ALL.into_iter().find(|l| l.title() == s)
}

fn level_from_portion(s: &str) -> Option<Level> {
    Level::ALL.into_iter().find(|l| l.portion() == s)
}

/// How a control was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TokenForm {
    /// The portion abbreviation (`NF`).
    Portion,
    /// The banner abbreviation (`NOFORN`).
    Banner,
    /// Portion and banner forms are the same (`FOUO`).
    Both,
    /// The full title.
    Title,
}

fn dissem_token(s: &str) -> Option<(Dissem, TokenForm)> {
    static TOKENS: LazyLock<FxMap<&'static str, (Dissem, TokenForm)>> = LazyLock::new(|| {
        let mut map = FxMap::default();
        for d in Dissem::ALL {
            if matches!(d, Dissem::Rel | Dissem::Eyes | Dissem::DisplayOnly) {
                continue;
            }
            if d.portion() == d.banner() {
                map.entry(d.portion()).or_insert((d, TokenForm::Both));
            } else {
                map.entry(d.portion()).or_insert((d, TokenForm::Portion));
                map.entry(d.banner()).or_insert((d, TokenForm::Banner));
            }
            map.entry(d.title()).or_insert((d, TokenForm::Title));
        }
        map.insert("REL", (Dissem::Rel, TokenForm::Portion));
        map.insert("EYES", (Dissem::Eyes, TokenForm::Portion));
        map.insert("RAW FISA", (Dissem::Rawfisa, TokenForm::Title));
        map
    });
    TOKENS.get(s).copied()
}

fn non_ic_token(s: &str) -> Option<(NonIc, TokenForm)> {
    static TOKENS: LazyLock<FxMap<&'static str, (NonIc, TokenForm)>> = LazyLock::new(|| {
        let mut map = FxMap::default();
        for m in NonIc::ALL {
            if m.portion() == m.banner() {
                map.entry(m.portion()).or_insert((m, TokenForm::Both));
            } else {
                map.entry(m.portion()).or_insert((m, TokenForm::Portion));
                map.entry(m.banner()).or_insert((m, TokenForm::Banner));
            }
            map.entry(m.title()).or_insert((m, TokenForm::Title));
        }
        map
    });
    TOKENS.get(s).copied()
}

fn cui_ldc_token(s: &str) -> Option<Ldc> {
    Ldc::ALL
        .into_iter()
        .find(|l| s == l.banner() || s == l.ism_token())
}

/// Whether a category holds an EYES ONLY control (`USA/GBR EYES ONLY`): an element that is a
/// country code followed by ` EYES ONLY`.
fn is_eyes_only(cat: &str) -> bool {
    cat.split('/').any(|el| {
        el.strip_suffix(" EYES ONLY")
            .is_some_and(|code| Country::from_code(code).is_some())
    })
}

/// Whether an element starts a control that carries a country list.
fn is_list_head(s: &str) -> bool {
    s == "REL"
        || s.starts_with("REL TO")
        || s.starts_with("AUTHORIZED FOR RELEASE TO")
        || s.starts_with("DISPLAY ONLY")
        || s == "DISPLAYONLY"
}

/// The list after one of `heads` (`""` when the head stands alone), if `el` starts with one.
fn list_after<'a>(el: &'a str, heads: &[&str]) -> Option<&'a str> {
    heads.iter().find_map(|h| {
        let rest = el.strip_prefix(h)?;
        if rest.is_empty() {
            Some("")
        } else {
            rest.strip_prefix(' ')
        }
    })
}

/// Splits a dissemination category on `/`, keeping `USA/GBR EYES ONLY` together.
fn dissem_elements(cat: &str) -> Vec<String> {
    let parts: Vec<&str> = cat.split('/').collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while let Some(part) = parts.get(i) {
        if part.ends_with(" EYES ONLY") {
            // Pull in the country codes written before it (`USA/AUS/GBR EYES ONLY`).
            let mut codes = Vec::new();
            while let Some(prev) = out.last() {
                if prev.len() == 3 && Country::from_code(prev).is_some() {
                    codes.push(out.pop().unwrap_or_default());
                } else {
                    break;
                }
            }
            codes.reverse();
            codes.push((*part).to_owned());
            out.push(codes.join("/"));
        } else {
            out.push((*part).to_owned());
        }
        i += 1;
    }
    out
}

/// Where a CUI limited-dissemination control (or a foreign-disclosure control written among
/// them) sorts in the CUI Registry's order.
pub(crate) fn ldc_rank(ldc: Option<Ldc>, fdr: Option<Dissem>) -> u8 {
    match (ldc, fdr) {
        (Some(l), _) => LdcKey::Ldc(l).rank(),
        (None, Some(d)) => LdcKey::Fdr(d).rank(),
        (None, None) => u8::MAX,
    }
}

/// Where a CUI limited-dissemination control sorts in the registry's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LdcKey {
    Ldc(Ldc),
    Fdr(Dissem),
}

impl LdcKey {
    fn rank(self) -> u8 {
        match self {
            // Alphabetical by the marking text, as the CUI Marking Handbook requires.
            LdcKey::Ldc(Ldc::AttorneyClient) => 0,
            LdcKey::Ldc(Ldc::AttorneyWp) => 1,
            LdcKey::Fdr(Dissem::DisplayOnly) => 2,
            LdcKey::Ldc(Ldc::DlOnly) => 3,
            LdcKey::Ldc(Ldc::FedOnly) => 4,
            LdcKey::Ldc(Ldc::Fedcon) => 5,
            LdcKey::Ldc(Ldc::Nocon) => 6,
            LdcKey::Fdr(Dissem::Nf) => 7,
            LdcKey::Fdr(Dissem::Rel) => 8,
            LdcKey::Fdr(_) => 9,
        }
    }
}

fn unknown_classification(class: &str) -> MarkingError {
    err(
        ReasonCode::UnknownClassification,
        format!(
            "`{class}` is not a classification: use TOP SECRET, SECRET, CONFIDENTIAL, UNCLASSIFIED or CUI (TS, S, C, U in portion marks)"
        ),
    )
}

fn restricted_for_us() -> MarkingError {
    err(
        ReasonCode::NonUsClassificationForUsOwner,
        "RESTRICTED is not a U.S. classification: mark foreign RESTRICTED information with its owner, as in `(//GBR R)`",
    )
}

fn unknown_token(el: &str, what: &str) -> MarkingError {
    err(
        ReasonCode::UnknownMarkingToken,
        format!("`{el}` is not {what}: see `enclave marking list` for registered values"),
    )
}

fn duplicate(token: &str) -> MarkingError {
    err(
        ReasonCode::DuplicateToken,
        format!("`{token}` appears more than once: remove the duplicate"),
    )
}

fn display_only_without_list() -> MarkingError {
    err(
        ReasonCode::DisplayOnlyRequiresList,
        "DISPLAY ONLY names the countries it may be shown to, as in `DISPLAY ONLY AFG`",
    )
}

// === rendering ===

impl fmt::Display for Label {
    /// Writes the canonical banner line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&render(self, Form::Banner))
    }
}

impl Label {
    /// The canonical banner line (`TOP SECRET//SI/TK//NOFORN`); the same as `to_string()`.
    pub fn banner(&self) -> String {
        render(self, Form::Banner)
    }

    /// The canonical portion mark (`(TS//SI/TK//NF)`).
    pub fn portion(&self) -> String {
        render(self, Form::Portion)
    }
}

fn render(label: &Label, form: Form) -> String {
    let banner = form == Form::Banner;
    let mut cats: Vec<String> = Vec::new();
    let level_text = |l: Level| if banner { l.title() } else { l.portion() };
    let mut prefix = "";
    let class = match &label.owner {
        Owner::Usa if label.cui.is_some() && label.level == Level::Unclassified => "CUI".to_owned(),
        Owner::Usa => level_text(label.level).to_owned(),
        Owner::Nato => {
            prefix = "//";
            if banner {
                label.level.nato_title()
            } else {
                label.level.nato_portion()
            }
            .to_owned()
        }
        Owner::Foreign(c) => {
            prefix = "//";
            format!("{c} {}", level_text(label.level))
        }
        Owner::ConcealedForeign => {
            prefix = "//";
            format!("FGI {}", level_text(label.level))
        }
        Owner::Joint(owners) => {
            prefix = "//";
            let mut codes: Vec<&str> = owners.iter().map(|c| c.code()).collect();
            codes.sort_unstable();
            format!("JOINT {} {}", level_text(label.level), codes.join(" "))
        }
    };
    cats.push(class);
    if !label.non_us_controls.is_empty() {
        cats.push(join(
            label.non_us_controls.iter().map(|c| c.as_str().to_owned()),
        ));
    }
    if !label.sci.is_empty() {
        cats.push(render_sci(&label.sci));
    }
    if !label.sap.is_empty() {
        cats.push(format!("SAR-{}", join(label.sap.iter().cloned())));
    }
    if !label.aea.is_empty() {
        cats.push(render_aea(&label.aea, banner));
    }
    match &label.fgi {
        Some(Fgi::Concealed) => cats.push("FGI".to_owned()),
        Some(Fgi::Sources(s)) => cats.push(format!("FGI {}", codes(s, " "))),
        None => {}
    }
    if let Some(cui) = &label.cui {
        let mut names: Vec<String> = cui.specified.iter().map(|c| format!("SP-{c}")).collect();
        names.extend(cui.basic.iter().cloned());
        if !names.is_empty() {
            cats.push(names.join("/"));
        }
        let mut ldcs: Vec<(u8, String)> = cui
            .ldc
            .iter()
            .map(|l| (LdcKey::Ldc(*l).rank(), l.banner().to_owned()))
            .collect();
        for d in &label.dissem {
            ldcs.push((LdcKey::Fdr(*d).rank(), dissem_text(label, *d, banner)));
        }
        ldcs.sort();
        if !ldcs.is_empty() {
            cats.push(join(ldcs.into_iter().map(|(_, t)| t)));
        }
    } else if !label.dissem.is_empty() {
        cats.push(join(
            label.dissem.iter().map(|d| dissem_text(label, *d, banner)),
        ));
    }
    if !label.non_ic.is_empty() {
        cats.push(join(label.non_ic.iter().map(|m| {
            if banner { m.banner() } else { m.portion() }.to_owned()
        })));
    }
    let body = format!("{prefix}{}", cats.join("//"));
    if banner { body } else { format!("({body})") }
}

fn join(items: impl Iterator<Item = String>) -> String {
    let mut out = String::new();
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(&item);
    }
    out
}

fn codes(set: &BTreeSet<Country>, sep: &str) -> String {
    let mut out = String::new();
    for (i, c) in set.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(c.code());
    }
    out
}

fn dissem_text(label: &Label, d: Dissem, banner: bool) -> String {
    match d {
        Dissem::Rel => match &label.rel_to {
            Some(list) => format!("REL TO {}", codes(list, ", ")),
            None => "REL".to_owned(),
        },
        Dissem::DisplayOnly => match &label.display_only {
            Some(list) => format!("DISPLAY ONLY {}", codes(list, ", ")),
            None => "DISPLAY ONLY".to_owned(),
        },
        Dissem::Eyes => match &label.eyes_only {
            Some(list) => format!("{} EYES ONLY", codes(list, "/")),
            None => "EYES".to_owned(),
        },
        _ if banner => d.banner().to_owned(),
        _ => d.portion().to_owned(),
    }
}

/// `SI-G ABCD EFGH-XYZ/TK` from the tokens `SI`, `SI-G`, `SI-G-ABCD`, `SI-G-EFGH`, `SI-XYZ`, `TK`.
fn render_sci(tokens: &BTreeSet<String>) -> String {
    // Range queries keep this linear in the number of tokens (a roll-up may carry thousands).
    let children = |prefix: String| {
        tokens
            .range(prefix.clone()..)
            .take_while(move |t| t.starts_with(&prefix))
    };
    let mut out = String::new();
    for system in tokens.iter().filter(|t| !t.contains('-')) {
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(system);
        for comp_token in children(format!("{system}-")) {
            let Some(comp) = comp_token
                .strip_prefix(system.as_str())
                .and_then(|c| c.strip_prefix('-'))
            else {
                continue;
            };
            if comp.contains('-') {
                continue;
            }
            out.push('-');
            out.push_str(comp);
            let sub_prefix = format!("{comp_token}-");
            for sub_token in children(sub_prefix.clone()) {
                if let Some(sub) = sub_token.strip_prefix(&sub_prefix) {
                    let _ = write!(out, " {sub}");
                }
            }
        }
    }
    out
}

fn render_aea(aea: &BTreeSet<Aea>, banner: bool) -> String {
    let sigma = if banner { "SIGMA" } else { "SG" };
    let mut parts = Vec::new();
    let numbers = |f: fn(&Aea) -> Option<u8>| -> Vec<String> {
        aea.iter().filter_map(f).map(|n| n.to_string()).collect()
    };
    if aea.contains(&Aea::Rd) || aea.contains(&Aea::Cnwdi) {
        let mut s = "RD".to_owned();
        if aea.contains(&Aea::Cnwdi) {
            s.push_str("-CNWDI");
        }
        let ns = numbers(|a| {
            if let Aea::RdSigma(n) = a {
                Some(*n)
            } else {
                None
            }
        });
        if !ns.is_empty() {
            let _ = write!(s, "-{sigma} {}", ns.join(" "));
        }
        parts.push(s);
    }
    if aea.contains(&Aea::Frd) {
        let mut s = "FRD".to_owned();
        let ns = numbers(|a| {
            if let Aea::FrdSigma(n) = a {
                Some(*n)
            } else {
                None
            }
        });
        if !ns.is_empty() {
            let _ = write!(s, "-{sigma} {}", ns.join(" "));
        }
        parts.push(s);
    }
    if aea.contains(&Aea::Dcni) {
        parts.push(if banner { "DOD UCNI" } else { "DCNI" }.to_owned());
    }
    if aea.contains(&Aea::Ucni) {
        parts.push(if banner { "DOE UCNI" } else { "UCNI" }.to_owned());
    }
    if aea.contains(&Aea::Tfni) {
        parts.push("TFNI".to_owned());
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lenient(s: &str) -> Result<Marking, MarkingError> {
        parse_marking(s, Mode::Lenient, None)
    }

    fn code(s: &str, mode: Mode) -> ReasonCode {
        parse_marking(s, mode, None).unwrap_err().code()
    }

    #[test]
    fn canonical_spacing_is_recognized_without_fixing() {
        for t in [
            "SECRET//NOFORN",
            "(S//REL TO USA, GBR)",
            "TOP SECRET//SI-G ABCD/TK",
        ] {
            assert!(spacing_is_canonical(t), "{t}");
            assert_eq!(fix_spacing(t), t);
        }
        for t in [
            "SECRET //NOFORN",
            "( S)",
            "A,B",
            "TOP  SECRET",
            " S",
            "S ",
            "A ,B",
            "S )",
            "A,",
        ] {
            assert!(!spacing_is_canonical(t), "{t}");
        }
    }

    #[test]
    fn spacing_is_fixed() {
        assert_eq!(fix_spacing("SECRET // NOFORN"), "SECRET//NOFORN");
        assert_eq!(
            fix_spacing(" TOP   SECRET//REL TO USA,GBR "),
            "TOP SECRET//REL TO USA, GBR"
        );
        assert_eq!(fix_spacing("( S // NF )"), "(S//NF)");
        assert_eq!(fix_spacing("REL TO USA ,GBR"), "REL TO USA, GBR");
    }

    #[test]
    fn sci_renders_compartments_and_subcompartments() {
        let m = lenient("TOP SECRET//SI-G ABCD EFGH-XYZ//ORCON/NOFORN").unwrap();
        assert_eq!(
            m.label.to_string(),
            "TOP SECRET//SI-G ABCD EFGH-XYZ//ORCON/NOFORN"
        );
        assert_eq!(m.label.portion(), "(TS//SI-G ABCD EFGH-XYZ//OC/NF)");
    }

    #[test]
    fn strict_reports_each_normalization() {
        assert_eq!(
            code("SECRET // NOFORN", Mode::Strict),
            ReasonCode::SeparatorSpacing
        );
        assert_eq!(
            code("TOP SECRET//NOFORN/ORCON", Mode::Strict),
            ReasonCode::DissemOrder
        );
        assert_eq!(
            code("TOP SECRET//TK/SI//NOFORN", Mode::Strict),
            ReasonCode::SciOrder
        );
        assert_eq!(
            code("SECRET//NF", Mode::Strict),
            ReasonCode::BannerUsesPortionForm
        );
        assert_eq!(
            code("(S//NOFORN)", Mode::Strict),
            ReasonCode::PortionUsesBannerForm
        );
        assert_eq!(
            code("ЅECRET//NOFORN", Mode::Strict),
            ReasonCode::InvalidCharacter
        );
        assert_eq!(
            lenient("ЅECRET//NOFORN").unwrap().label.to_string(),
            "SECRET//NOFORN"
        );
    }

    #[test]
    fn rules_hold_in_every_mode() {
        for mode in [Mode::Strict, Mode::Lenient] {
            assert_eq!(code("(U//TK)", mode), ReasonCode::TkRequiresSOrTs);
            assert_eq!(code("(U//XYZ)", mode), ReasonCode::SciRequiresClassified);
            assert_eq!(code("(C//TK//NF)", mode), ReasonCode::TkRequiresSOrTs);
            assert_eq!(code("(S//HCS-P)", mode), ReasonCode::HcsRequiresNoforn);
            assert_eq!(code("(S//RD/FRD)", mode), ReasonCode::AeaConflict);
            assert_eq!(code("(U//RD)", mode), ReasonCode::RdRequiresClassified);
            assert_eq!(
                code("(S//FOUO)", mode),
                ReasonCode::FouoRequiresUnclassified
            );
            assert_eq!(code("(C//RS)", mode), ReasonCode::RsenRequiresSOrTs);
            assert_eq!(code("(S//NF/RELIDO)", mode), ReasonCode::NofornConflict);
            assert_eq!(
                code("(S//REL TO USA, GBR/EYES)", mode),
                ReasonCode::EyesRelConflict
            );
            assert_eq!(
                code("(S//RELIDO/DISPLAY ONLY AFG)", mode),
                ReasonCode::RelidoDisplayOnlyConflict
            );
            assert_eq!(code("(U//NF//LES-NF)", mode), ReasonCode::LesNfFdrConflict);
            assert_eq!(
                code("(U//LES-NF/NF)", mode),
                ReasonCode::UnknownMarkingToken
            );
            assert_eq!(
                code("(S//DS)", mode),
                ReasonCode::LimdisRequiresUnclassified
            );
            assert_eq!(code("(S//ND)", mode), ReasonCode::NodisRequiresNoforn);
            assert_eq!(code("(R)", mode), ReasonCode::NonUsClassificationForUsOwner);
            assert_eq!(code("(//JOINT S USA)", mode), ReasonCode::JointSingleOwner);
            assert_eq!(code("(S//REL TO GBR)", mode), ReasonCode::RelToMissingUsa);
            assert_eq!(code("CUI//XYZZY", mode), ReasonCode::UnknownCuiCategory);
            assert_eq!(code("SECRET//REL", mode), ReasonCode::RelToRequiresList);
            assert_eq!(code("SECRET////NOFORN", mode), ReasonCode::EmptyCategory);
            assert_eq!(code("(S//NF", mode), ReasonCode::MalformedMarking);
            assert_eq!(code("((S))", mode), ReasonCode::MalformedMarking);
            assert_eq!(code("", mode), ReasonCode::EmptyMarking);
            assert_eq!(code("SECRET//SI//SI", mode), ReasonCode::DuplicateToken);
        }
    }

    #[test]
    fn hcs_without_compartment_is_rejected_but_detected() {
        assert_eq!(
            code("SECRET//HCS//NOFORN", Mode::Strict),
            ReasonCode::HcsRequiresCompartment
        );
        assert_eq!(
            code("SECRET//HCS//NOFORN", Mode::Lenient),
            ReasonCode::HcsRequiresCompartment
        );
        let m = parse_marking("SECRET//HCS//NOFORN", Mode::Detect, None).unwrap();
        assert!(m.label.sci().contains("HCS"));
    }

    #[test]
    fn foreign_and_joint_markings_round_trip() {
        for s in [
            "//NATO SECRET//ATOMAL//ORCON",
            "//GBR SECRET//REL TO USA, GBR",
            "//JOINT SECRET CAN GBR USA//REL TO USA, CAN, GBR",
            "//COSMIC TOP SECRET",
            "//FGI CONFIDENTIAL",
            "TOP SECRET//FGI CAN DEU//NOFORN",
            "SECRET//SAR-BP//NOFORN",
            "SECRET//RD-CNWDI-SIGMA 14 20//NOFORN",
            "UNCLASSIFIED//FOUO/NOFORN",
            "CUI//SP-CTI/PRVCY//FED ONLY/NOFORN",
            "TOP SECRET//SAR-BP/GB//NOFORN",
            "SECRET//USA/GBR EYES ONLY",
            "SECRET//REL TO USA, AUS/DISPLAY ONLY AFG, IRQ",
            "UNCLASSIFIED//SBU/SSI",
        ] {
            let m = parse_marking(s, Mode::Strict, None).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(m.label.to_string(), s);
            let again = parse_marking(&m.label.portion(), Mode::Strict, None)
                .unwrap_or_else(|e| panic!("{}: {e}", m.label.portion()));
            assert_eq!(again.label, m.label, "{s}");
        }
    }

    #[test]
    fn abbreviated_banner_is_an_indicator_in_detection() {
        let m = parse_marking("TS//SI//NF", Mode::Detect, None).unwrap();
        assert_eq!(m.label.to_string(), "TOP SECRET//SI//NOFORN");
    }

    #[test]
    fn eyes_only_inside_sci_words_is_not_a_dissemination_control() {
        // Found by the parse_marking fuzz target: sub-compartment words spelling ` EYES ONLY`.
        let m = lenient("(S//D-CNTRTT EYES ONLYCNT)").unwrap();
        assert_eq!(m.label.portion(), "(S//D-CNTRTT EYES ONLYCNT)");
        let again = parse_marking(&m.label.portion(), Mode::Strict, None).unwrap();
        assert_eq!(again.label, m.label);
    }

    #[test]
    fn sap_identifiers_are_tokens() {
        // Found by the parse_marking fuzz target: `SAR- -E` rendered with a stray space.
        assert_eq!(
            code("(S//SAR- -E)", Mode::Lenient),
            ReasonCode::UnknownMarkingToken
        );
        assert_eq!(
            code("(S//SAR-BP-)", Mode::Lenient),
            ReasonCode::UnknownMarkingToken
        );
        let m = lenient("(TS//SAR-BP-123/CA-XYZ YYY//NF)").unwrap();
        assert_eq!(m.label.portion(), "(TS//SAR-BP-123/CA-XYZ YYY//NF)");
    }

    #[test]
    fn sci_systems_may_not_be_named_like_other_categories() {
        // Found by fuzzing: an unpublished SCI system `RD` rendered first and read back as AEA.
        for m in [
            "(C//SP-EXPT/RD-QTO BR)",
            "(S//X/DISPLAYONLY)",
            "(S//X/TFNI)",
            "(S//A/ATOMAL)",
        ] {
            assert_eq!(
                code(m, Mode::Lenient),
                ReasonCode::UnknownMarkingToken,
                "{m}"
            );
        }
    }

    #[test]
    fn nato_with_a_us_level_word_is_the_nato_owner() {
        // Found by fuzzing: `(//NATO C)` read back from its banner as a different owner.
        let m = lenient("(//NATO C)").unwrap();
        assert_eq!(m.label.owner(), &Owner::Nato);
        assert_eq!(m.label.portion(), "(//NC)");
        assert_eq!(lenient(&m.label.banner()).unwrap().label, m.label);
    }

    #[test]
    fn hostile_input_is_bounded() {
        let long = "/".repeat(1 << 20);
        assert_eq!(code(&long, Mode::Lenient), ReasonCode::MarkingTooLong);
        let parens = format!("{}S{}", "(".repeat(2000), ")".repeat(2000));
        assert_eq!(code(&parens, Mode::Lenient), ReasonCode::MalformedMarking);
        assert_eq!(
            code("SECRET\0//NOFORN", Mode::Lenient),
            ReasonCode::MalformedMarking
        );
    }
}
