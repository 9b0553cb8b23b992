//! The machine-readable description of a label, as the CLI's `marking parse` prints it.

use serde::Serialize;

use crate::label::{Fgi, Label, Owner};
use crate::marking::Form;

/// The fields of a parsed marking, in the vocabulary of ISM: portion-form tokens, hyphenated SCI
/// and AEA tokens with their parents, country lists in register order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MarkingFields {
    /// `USA`, a country code, `NATO`, `JOINT`, or `FGI` when the foreign source is concealed.
    pub owner: String,
    /// The owners of JOINT information, alphabetically; `null` otherwise.
    pub joint_owners: Option<Vec<String>>,
    /// The portion-form level after mapping foreign and NATO levels (`S` for NATO SECRET).
    pub classification: &'static str,
    /// SCI tokens (`SI`, `SI-G`, `SI-G-ABCD`).
    pub sci: Vec<String>,
    /// Special access program identifiers.
    pub sap: Vec<String>,
    /// Atomic Energy Act tokens (`RD`, `RD-CNWDI`, `RD-SG-14`).
    pub aea: Vec<String>,
    /// FGI sources; `["FGI"]` when concealed; `null` without FGI.
    pub fgi: Option<Vec<String>>,
    /// NATO control markings (`ATOMAL`).
    pub non_us_controls: Vec<&'static str>,
    /// Dissemination controls as ISM portion tokens, in register order.
    pub dissem: Vec<&'static str>,
    /// The REL TO list, USA first; `null` without one.
    pub rel_to: Option<Vec<&'static str>>,
    /// The DISPLAY ONLY list; `null` without one.
    pub display_only: Option<Vec<&'static str>>,
    /// The EYES ONLY list; `null` without one.
    pub eyes_only: Option<Vec<&'static str>>,
    /// Non-IC markings as portion tokens.
    pub non_ic: Vec<&'static str>,
    /// The CUI part; `null` for information that is not CUI.
    pub cui: Option<CuiFields>,
    /// The canonical banner line.
    pub banner: String,
    /// The canonical portion mark.
    pub portion: String,
    /// `banner` or `portion`: how the input was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub form: Option<&'static str>,
}

/// The CUI fields of a marking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CuiFields {
    /// Always `CUI`.
    pub control: &'static str,
    /// Specified categories, without `SP-`.
    pub specified: Vec<String>,
    /// Basic categories.
    pub basic: Vec<String>,
    /// Limited-dissemination controls as ISM tokens (`NF`, `FED_ONLY`, `REL`), in the CUI
    /// Registry's order.
    pub ldc: Vec<&'static str>,
}

impl Label {
    /// The label's fields, for machine-readable output.
    pub fn fields(&self) -> MarkingFields {
        let codes = |set: &std::collections::BTreeSet<crate::Country>| -> Vec<&'static str> {
            set.iter().map(|c| c.code()).collect()
        };
        let (owner, joint_owners) = match &self.owner {
            Owner::Usa => ("USA".to_owned(), None),
            Owner::Foreign(c) => (c.code().to_owned(), None),
            Owner::Nato => ("NATO".to_owned(), None),
            Owner::ConcealedForeign => ("FGI".to_owned(), None),
            Owner::Joint(owners) => {
                let mut list: Vec<String> = owners.iter().map(|c| c.code().to_owned()).collect();
                list.sort_unstable();
                ("JOINT".to_owned(), Some(list))
            }
        };
        let cui = self.cui.as_ref().map(|c| {
            let mut ldc: Vec<(u8, &'static str)> = c
                .ldc
                .iter()
                .map(|l| (crate::marking::ldc_rank(Some(*l), None), l.ism_token()))
                .collect();
            for d in &self.dissem {
                ldc.push((crate::marking::ldc_rank(None, Some(*d)), d.portion()));
            }
            ldc.sort_unstable();
            CuiFields {
                control: "CUI",
                specified: c.specified.iter().cloned().collect(),
                basic: c.basic.iter().cloned().collect(),
                ldc: ldc.into_iter().map(|(_, t)| t).collect(),
            }
        });
        MarkingFields {
            owner,
            joint_owners,
            classification: self.level.portion(),
            sci: self.sci.iter().cloned().collect(),
            sap: self.sap.iter().cloned().collect(),
            aea: self.aea.iter().map(|a| a.ism_token()).collect(),
            fgi: self.fgi.as_ref().map(|f| match f {
                Fgi::Concealed => vec!["FGI".to_owned()],
                Fgi::Sources(s) => s.iter().map(|c| c.code().to_owned()).collect(),
            }),
            non_us_controls: self.non_us_controls.iter().map(|c| c.as_str()).collect(),
            dissem: self.dissem.iter().map(|d| d.portion()).collect(),
            rel_to: self.rel_to.as_ref().map(codes),
            display_only: self.display_only.as_ref().map(codes),
            eyes_only: self.eyes_only.as_ref().map(codes),
            non_ic: self.non_ic.iter().map(|m| m.portion()).collect(),
            cui,
            banner: self.banner(),
            portion: self.portion(),
            form: None,
        }
    }
}

impl MarkingFields {
    /// The same fields, saying how the input was written.
    pub fn with_form(mut self, form: Form) -> MarkingFields {
        self.form = Some(match form {
            Form::Banner => "banner",
            Form::Portion => "portion",
        });
        self
    }
}
