//! The meaning of a marking: [`Label`] and the controls it is made of.

use std::collections::BTreeSet;

use crate::registry::{Country, USA};

/// A classification level, mapped to its U.S. equivalent.
///
/// `Restricted` exists only as a foreign or NATO level; U.S. systems protect it at least as
/// CONFIDENTIAL, so for access decisions it ranks with `Confidential`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// UNCLASSIFIED (`U`).
    Unclassified,
    /// RESTRICTED (`R`), a non-U.S. level.
    Restricted,
    /// CONFIDENTIAL (`C`).
    Confidential,
    /// SECRET (`S`).
    Secret,
    /// TOP SECRET (`TS`).
    TopSecret,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 5] = [
        Level::Unclassified,
        Level::Restricted,
        Level::Confidential,
        Level::Secret,
        Level::TopSecret,
    ];

    /// The portion-mark abbreviation (`TS`).
    pub fn portion(self) -> &'static str {
        match self {
            Level::Unclassified => "U",
            Level::Restricted => "R",
            Level::Confidential => "C",
            Level::Secret => "S",
            Level::TopSecret => "TS",
        }
    }

    /// The banner title (`TOP SECRET`).
    pub fn title(self) -> &'static str {
        match self {
            Level::Unclassified => "UNCLASSIFIED",
            Level::Restricted => "RESTRICTED",
            Level::Confidential => "CONFIDENTIAL",
            Level::Secret => "SECRET",
            Level::TopSecret => "TOP SECRET",
        }
    }

    /// The NATO banner title (`COSMIC TOP SECRET`).
    pub fn nato_title(self) -> &'static str {
        match self {
            Level::Unclassified => "NATO UNCLASSIFIED",
            Level::Restricted => "NATO RESTRICTED",
            Level::Confidential => "NATO CONFIDENTIAL",
            Level::Secret => "NATO SECRET",
            Level::TopSecret => "COSMIC TOP SECRET",
        }
    }

    /// The NATO portion mark (`CTS`).
    pub fn nato_portion(self) -> &'static str {
        match self {
            Level::Unclassified => "NU",
            Level::Restricted => "NR",
            Level::Confidential => "NC",
            Level::Secret => "NS",
            Level::TopSecret => "CTS",
        }
    }

    /// Whether the level is CONFIDENTIAL or above (RESTRICTED counts: it is foreign classified).
    pub fn is_classified(self) -> bool {
        self != Level::Unclassified
    }
}

/// Who owns (produced) the information.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// The United States.
    Usa,
    /// A foreign government (`//GBR SECRET`).
    Foreign(Country),
    /// NATO (`//NATO SECRET`).
    Nato,
    /// Jointly owned by several countries, USA among them (`//JOINT SECRET CAN GBR USA`).
    Joint(BTreeSet<Country>),
    /// Foreign government information whose source is concealed (`(//FGI S)`).
    ConcealedForeign,
}

/// An Atomic Energy Act marking, in register order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Aea {
    /// RESTRICTED DATA.
    Rd,
    /// CRITICAL NUCLEAR WEAPON DESIGN INFORMATION (an RD sub-marking).
    Cnwdi,
    /// RD SIGMA category.
    RdSigma(u8),
    /// FORMERLY RESTRICTED DATA.
    Frd,
    /// FRD SIGMA category.
    FrdSigma(u8),
    /// DOD UNCLASSIFIED CONTROLLED NUCLEAR INFORMATION.
    Dcni,
    /// DOE UNCLASSIFIED CONTROLLED NUCLEAR INFORMATION.
    Ucni,
    /// TRANSCLASSIFIED FOREIGN NUCLEAR INFORMATION.
    Tfni,
}

impl Aea {
    /// The ISM token (`RD`, `RD-CNWDI`, `RD-SG-14`, …).
    pub fn ism_token(self) -> String {
        match self {
            Aea::Rd => "RD".into(),
            Aea::Cnwdi => "RD-CNWDI".into(),
            Aea::RdSigma(n) => format!("RD-SG-{n}"),
            Aea::Frd => "FRD".into(),
            Aea::FrdSigma(n) => format!("FRD-SG-{n}"),
            Aea::Dcni => "DCNI".into(),
            Aea::Ucni => "UCNI".into(),
            Aea::Tfni => "TFNI".into(),
        }
    }

    /// Whether the marking restricts access (needs a specific clearance), as opposed to being an
    /// unclassified handling control (DCNI, UCNI).
    pub fn restricts_access(self) -> bool {
        !matches!(self, Aea::Dcni | Aea::Ucni)
    }
}

/// A NATO control marking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NonUsControl {
    /// ATOMAL.
    Atomal,
    /// BALK.
    Balk,
    /// BOHEMIA.
    Bohemia,
}

impl NonUsControl {
    /// The marking text.
    pub fn as_str(self) -> &'static str {
        match self {
            NonUsControl::Atomal => "ATOMAL",
            NonUsControl::Balk => "BALK",
            NonUsControl::Bohemia => "BOHEMIA",
        }
    }
}

/// Foreign government information inside a U.S. marking.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fgi {
    /// The sources are named (`FGI CAN DEU`).
    Sources(BTreeSet<Country>),
    /// At least one source is concealed (`FGI`).
    Concealed,
}

/// A dissemination control, in register order (the order of the banner).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dissem {
    /// RISK SENSITIVE (`RS`, banner `RSEN`).
    Rs,
    /// FOR OFFICIAL USE ONLY.
    Fouo,
    /// ORIGINATOR CONTROLLED (`OC`, banner `ORCON`).
    Oc,
    /// ORIGINATOR CONTROLLED-USGOV.
    OcUsgov,
    /// CONTROLLED IMAGERY (`IMC`, banner `IMCON`).
    Imc,
    /// NOT RELEASABLE TO FOREIGN NATIONALS (`NF`, banner `NOFORN`).
    Nf,
    /// CAUTION-PROPRIETARY INFORMATION INVOLVED (`PR`, banner `PROPIN`).
    Pr,
    /// AUTHORIZED FOR RELEASE TO (the list is in [`Label::rel_to`]).
    Rel,
    /// RELEASABLE BY INFORMATION DISCLOSURE OFFICIAL.
    Relido,
    /// EYES ONLY (legacy; the list is in [`Label::eyes_only`]).
    Eyes,
    /// DEA SENSITIVE.
    Dsen,
    /// FOREIGN INTELLIGENCE SURVEILLANCE ACT.
    Fisa,
    /// RAW FISA.
    Rawfisa,
    /// DISPLAY ONLY (the list is in [`Label::display_only`]).
    DisplayOnly,
}

impl Dissem {
    /// Every control, in register order.
    pub const ALL: [Dissem; 14] = [
        Dissem::Rs,
        Dissem::Fouo,
        Dissem::Oc,
        Dissem::OcUsgov,
        Dissem::Imc,
        Dissem::Nf,
        Dissem::Pr,
        Dissem::Rel,
        Dissem::Relido,
        Dissem::Eyes,
        Dissem::Dsen,
        Dissem::Fisa,
        Dissem::Rawfisa,
        Dissem::DisplayOnly,
    ];

    /// The ISM / portion token (`NF`).
    pub fn portion(self) -> &'static str {
        match self {
            Dissem::Rs => "RS",
            Dissem::Fouo => "FOUO",
            Dissem::Oc => "OC",
            Dissem::OcUsgov => "OC-USGOV",
            Dissem::Imc => "IMC",
            Dissem::Nf => "NF",
            Dissem::Pr => "PR",
            Dissem::Rel => "REL",
            Dissem::Relido => "RELIDO",
            Dissem::Eyes => "EYES",
            Dissem::Dsen => "DSEN",
            Dissem::Fisa => "FISA",
            Dissem::Rawfisa => "RAWFISA",
            Dissem::DisplayOnly => "DISPLAYONLY",
        }
    }

    /// The banner form: the register's authorized abbreviation, or the title where it lists none.
    pub fn banner(self) -> &'static str {
        match self {
            Dissem::Rs => "RSEN",
            Dissem::Fouo => "FOUO",
            Dissem::Oc => "ORCON",
            Dissem::OcUsgov => "ORCON-USGOV",
            Dissem::Imc => "IMCON",
            Dissem::Nf => "NOFORN",
            Dissem::Pr => "PROPIN",
            Dissem::Rel => "REL TO",
            Dissem::Relido => "RELIDO",
            Dissem::Eyes => "EYES ONLY",
            Dissem::Dsen => "DEA SENSITIVE",
            Dissem::Fisa => "FISA",
            Dissem::Rawfisa => "RAWFISA",
            Dissem::DisplayOnly => "DISPLAY ONLY",
        }
    }

    /// The full title (`NOT RELEASABLE TO FOREIGN NATIONALS`).
    pub fn title(self) -> &'static str {
        match self {
            Dissem::Rs => "RISK SENSITIVE",
            Dissem::Fouo => "FOR OFFICIAL USE ONLY",
            Dissem::Oc => "ORIGINATOR CONTROLLED",
            Dissem::OcUsgov => "ORIGINATOR CONTROLLED-USGOV",
            Dissem::Imc => "CONTROLLED IMAGERY",
            Dissem::Nf => "NOT RELEASABLE TO FOREIGN NATIONALS",
            Dissem::Pr => "CAUTION-PROPRIETARY INFORMATION INVOLVED",
            Dissem::Rel => "AUTHORIZED FOR RELEASE TO",
            Dissem::Relido => "RELEASABLE BY INFORMATION DISCLOSURE OFFICIAL",
            Dissem::Eyes => "EYES ONLY",
            Dissem::Dsen => "DEA SENSITIVE",
            Dissem::Fisa => "FOREIGN INTELLIGENCE SURVEILLANCE ACT",
            Dissem::Rawfisa => "RAW FOREIGN INTELLIGENCE SURVEILLANCE ACT",
            Dissem::DisplayOnly => "DISPLAY ONLY",
        }
    }

    /// Whether the control is a foreign disclosure and release (FD&R) marking.
    pub fn is_fdr(self) -> bool {
        matches!(
            self,
            Dissem::Nf | Dissem::Rel | Dissem::Relido | Dissem::Eyes | Dissem::DisplayOnly
        )
    }
}

/// A non-intelligence-community dissemination marking, in register order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NonIc {
    /// LIMITED DISTRIBUTION (`DS`, banner `LIMDIS`).
    Ds,
    /// EXCLUSIVE DISTRIBUTION (`XD`, banner `EXDIS`).
    Xd,
    /// NO DISTRIBUTION (`ND`, banner `NODIS`).
    Nd,
    /// SENSITIVE BUT UNCLASSIFIED.
    Sbu,
    /// SENSITIVE BUT UNCLASSIFIED NOFORN.
    SbuNf,
    /// LAW ENFORCEMENT SENSITIVE.
    Les,
    /// LAW ENFORCEMENT SENSITIVE NOFORN.
    LesNf,
    /// SENSITIVE SECURITY INFORMATION.
    Ssi,
    /// NAVAL NUCLEAR PROPULSION INFORMATION.
    Nnpi,
}

impl NonIc {
    /// Every marking, in register order.
    pub const ALL: [NonIc; 9] = [
        NonIc::Ds,
        NonIc::Xd,
        NonIc::Nd,
        NonIc::Sbu,
        NonIc::SbuNf,
        NonIc::Les,
        NonIc::LesNf,
        NonIc::Ssi,
        NonIc::Nnpi,
    ];

    /// The portion / ISM token.
    pub fn portion(self) -> &'static str {
        match self {
            NonIc::Ds => "DS",
            NonIc::Xd => "XD",
            NonIc::Nd => "ND",
            NonIc::Sbu => "SBU",
            NonIc::SbuNf => "SBU-NF",
            NonIc::Les => "LES",
            NonIc::LesNf => "LES-NF",
            NonIc::Ssi => "SSI",
            NonIc::Nnpi => "NNPI",
        }
    }

    /// The banner abbreviation.
    pub fn banner(self) -> &'static str {
        match self {
            NonIc::Ds => "LIMDIS",
            NonIc::Xd => "EXDIS",
            NonIc::Nd => "NODIS",
            NonIc::Sbu => "SBU",
            NonIc::SbuNf => "SBU NOFORN",
            NonIc::Les => "LES",
            NonIc::LesNf => "LES NOFORN",
            NonIc::Ssi => "SSI",
            NonIc::Nnpi => "NNPI",
        }
    }

    /// The full title.
    pub fn title(self) -> &'static str {
        match self {
            NonIc::Ds => "LIMITED DISTRIBUTION",
            NonIc::Xd => "EXCLUSIVE DISTRIBUTION",
            NonIc::Nd => "NO DISTRIBUTION",
            NonIc::Sbu => "SENSITIVE BUT UNCLASSIFIED",
            NonIc::SbuNf => "SENSITIVE BUT UNCLASSIFIED NOFORN",
            NonIc::Les => "LAW ENFORCEMENT SENSITIVE",
            NonIc::LesNf => "LAW ENFORCEMENT SENSITIVE NOFORN",
            NonIc::Ssi => "SENSITIVE SECURITY INFORMATION",
            NonIc::Nnpi => "NAVAL NUCLEAR PROPULSION INFORMATION",
        }
    }
}

/// A CUI limited-dissemination control that is not a foreign-disclosure control (those —
/// NOFORN, REL TO, DISPLAY ONLY, RELIDO — are kept with the label's [`Dissem`] controls).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ldc {
    /// FED ONLY.
    FedOnly,
    /// FEDCON.
    Fedcon,
    /// NOCON.
    Nocon,
    /// DL ONLY.
    DlOnly,
    /// ATTORNEY-CLIENT.
    AttorneyClient,
    /// ATTORNEY-WP.
    AttorneyWp,
}

impl Ldc {
    /// Every control.
    pub const ALL: [Ldc; 6] = [
        Ldc::FedOnly,
        Ldc::Fedcon,
        Ldc::Nocon,
        Ldc::DlOnly,
        Ldc::AttorneyClient,
        Ldc::AttorneyWp,
    ];

    /// The ISM token (`FED_ONLY`).
    pub fn ism_token(self) -> &'static str {
        match self {
            Ldc::FedOnly => "FED_ONLY",
            Ldc::Fedcon => "FEDCON",
            Ldc::Nocon => "NOCON",
            Ldc::DlOnly => "DL_ONLY",
            Ldc::AttorneyClient => "AC",
            Ldc::AttorneyWp => "AWP",
        }
    }

    /// The marking text (`FED ONLY`).
    pub fn banner(self) -> &'static str {
        match self {
            Ldc::FedOnly => "FED ONLY",
            Ldc::Fedcon => "FEDCON",
            Ldc::Nocon => "NOCON",
            Ldc::DlOnly => "DL ONLY",
            Ldc::AttorneyClient => "ATTORNEY-CLIENT",
            Ldc::AttorneyWp => "ATTORNEY-WP",
        }
    }
}

/// The CUI part of a label.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cui {
    pub(crate) specified: BTreeSet<String>,
    pub(crate) basic: BTreeSet<String>,
    pub(crate) ldc: BTreeSet<Ldc>,
}

impl Cui {
    /// Specified categories (written `SP-CTI`), without the prefix.
    pub fn specified(&self) -> &BTreeSet<String> {
        &self.specified
    }

    /// Basic categories.
    pub fn basic(&self) -> &BTreeSet<String> {
        &self.basic
    }

    /// Limited-dissemination controls other than the foreign-disclosure ones.
    pub fn ldc(&self) -> &BTreeSet<Ldc> {
        &self.ldc
    }
}

/// The meaning of a security marking: who owns the information, how classified it is, which
/// compartments protect it and to whom it may be released.
///
/// A `Label` is built by parsing a marking ([`crate::parse_marking`]) or by the constructors
/// here, which keep its structural invariants: SCI compartments include their parents, a release
/// list always starts with USA and never spells out the members of a listed group such as FVEY.
///
/// ```
/// use enclave_label::{Label, Level};
/// let label: Label = "SECRET//NOFORN".parse().unwrap();
/// assert_eq!(label.level(), Level::Secret);
/// assert_eq!(label.to_string(), "SECRET//NOFORN");
/// assert_eq!(label.portion(), "(S//NF)");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Label {
    pub(crate) owner: Owner,
    pub(crate) level: Level,
    pub(crate) sci: BTreeSet<String>,
    pub(crate) sap: BTreeSet<String>,
    pub(crate) aea: BTreeSet<Aea>,
    pub(crate) fgi: Option<Fgi>,
    pub(crate) non_us_controls: BTreeSet<NonUsControl>,
    pub(crate) dissem: BTreeSet<Dissem>,
    pub(crate) rel_to: Option<BTreeSet<Country>>,
    pub(crate) display_only: Option<BTreeSet<Country>>,
    pub(crate) eyes_only: Option<BTreeSet<Country>>,
    pub(crate) non_ic: BTreeSet<NonIc>,
    pub(crate) cui: Option<Cui>,
}

impl Label {
    /// A U.S. label at `level` with no controls.
    pub fn new(level: Level) -> Label {
        Label {
            owner: Owner::Usa,
            // INVARIANT: RESTRICTED is not a U.S. level; U.S. labels protect it as CONFIDENTIAL.
            level: if level == Level::Restricted {
                Level::Confidential
            } else {
                level
            },
            sci: BTreeSet::new(),
            sap: BTreeSet::new(),
            aea: BTreeSet::new(),
            fgi: None,
            non_us_controls: BTreeSet::new(),
            dissem: BTreeSet::new(),
            rel_to: None,
            display_only: None,
            eyes_only: None,
            non_ic: BTreeSet::new(),
            cui: None,
        }
    }

    /// UNCLASSIFIED with no controls: the default session label.
    pub fn unclassified() -> Label {
        Label::new(Level::Unclassified)
    }

    /// Adds an SCI control system, compartment (`SI-G`) or sub-compartment (`SI-G-ABCD`),
    /// together with its parents.
    pub fn with_sci(mut self, token: &str) -> Label {
        let mut prefix = String::new();
        for part in token.split('-').filter(|p| !p.is_empty()) {
            if !prefix.is_empty() {
                prefix.push('-');
            }
            prefix.push_str(part);
            self.sci.insert(prefix.clone());
        }
        self
    }

    /// Adds a special access program identifier (`BP` for `SAR-BP`).
    pub fn with_sap(mut self, program: &str) -> Label {
        self.sap.insert(program.to_owned());
        self
    }

    /// Adds NOFORN, dropping any release or display list.
    pub fn with_noforn(mut self) -> Label {
        self.dissem.remove(&Dissem::Rel);
        self.dissem.remove(&Dissem::DisplayOnly);
        self.dissem.remove(&Dissem::Relido);
        self.dissem.remove(&Dissem::Eyes);
        self.rel_to = None;
        self.display_only = None;
        self.eyes_only = None;
        self.dissem.insert(Dissem::Nf);
        self
    }

    /// Sets a REL TO list. USA is added; members of a listed group such as FVEY are folded into
    /// it. A list with no partner besides USA becomes NOFORN.
    pub fn with_rel_to(mut self, countries: impl IntoIterator<Item = Country>) -> Label {
        let set = canonical_list(countries.into_iter().chain([USA]).collect());
        if set.len() <= 1 {
            return self.with_noforn();
        }
        self.dissem.remove(&Dissem::Nf);
        self.dissem.insert(Dissem::Rel);
        self.rel_to = Some(set);
        self
    }

    /// Adds a dissemination control that carries no list (not REL TO, EYES or DISPLAY ONLY).
    pub fn with_dissem(mut self, control: Dissem) -> Label {
        match control {
            Dissem::Nf => return self.with_noforn(),
            Dissem::Rel | Dissem::Eyes | Dissem::DisplayOnly => return self,
            _ => {}
        }
        self.dissem.insert(control);
        self
    }

    // === accessors ===

    /// Who owns the information.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// The classification level (U.S. equivalent).
    pub fn level(&self) -> Level {
        self.level
    }

    /// SCI control systems, compartments and sub-compartments as ISM tokens, parents included.
    pub fn sci(&self) -> &BTreeSet<String> {
        &self.sci
    }

    /// Special access program identifiers.
    pub fn sap(&self) -> &BTreeSet<String> {
        &self.sap
    }

    /// Atomic Energy Act markings.
    pub fn aea(&self) -> &BTreeSet<Aea> {
        &self.aea
    }

    /// Foreign government information in a U.S. label.
    pub fn fgi(&self) -> Option<&Fgi> {
        self.fgi.as_ref()
    }

    /// NATO control markings (ATOMAL, BALK, BOHEMIA).
    pub fn non_us_controls(&self) -> &BTreeSet<NonUsControl> {
        &self.non_us_controls
    }

    /// Dissemination controls, in register order.
    pub fn dissem(&self) -> &BTreeSet<Dissem> {
        &self.dissem
    }

    /// The REL TO list, USA first; `None` without REL TO, or for a portion's bare `REL` that no
    /// banner resolved.
    pub fn rel_to(&self) -> Option<&BTreeSet<Country>> {
        self.rel_to.as_ref()
    }

    /// The DISPLAY ONLY list.
    pub fn display_only(&self) -> Option<&BTreeSet<Country>> {
        self.display_only.as_ref()
    }

    /// The EYES ONLY list (legacy).
    pub fn eyes_only(&self) -> Option<&BTreeSet<Country>> {
        self.eyes_only.as_ref()
    }

    /// Non-IC dissemination markings.
    pub fn non_ic(&self) -> &BTreeSet<NonIc> {
        &self.non_ic
    }

    /// The CUI part, for controlled unclassified information.
    pub fn cui(&self) -> Option<&Cui> {
        self.cui.as_ref()
    }

    /// Whether the label carries any foreign disclosure and release marking (NOFORN, REL TO,
    /// RELIDO, EYES ONLY, DISPLAY ONLY, SBU-NF, LES-NF).
    pub fn has_fdr(&self) -> bool {
        self.dissem.iter().any(|d| d.is_fdr())
            || self.non_ic.contains(&NonIc::LesNf)
            || self.non_ic.contains(&NonIc::SbuNf)
    }
}

impl Default for Label {
    fn default() -> Label {
        Label::unclassified()
    }
}

/// Puts a release list in canonical form: the members of a listed group whose membership is
/// public (FVEY, ACGU) are implied by the group and not listed again; USA always stays.
pub(crate) fn canonical_list(mut set: BTreeSet<Country>) -> BTreeSet<Country> {
    let groups: Vec<Country> = set
        .iter()
        .copied()
        .filter(|c| c.members().is_some())
        .collect();
    for group in groups {
        if let Some(members) = group.members() {
            for m in members {
                if *m != USA {
                    set.remove(m);
                }
            }
        }
    }
    set
}

/// Every country a list covers: the list with its groups' public members added.
pub(crate) fn expand_list(set: &BTreeSet<Country>) -> BTreeSet<Country> {
    let mut out = set.clone();
    for c in set {
        if let Some(members) = c.members() {
            out.extend(members.iter().copied());
        }
    }
    out
}

/// The countries two lists have in common, groups expanded, in canonical form.
pub(crate) fn common_list(a: &BTreeSet<Country>, b: &BTreeSet<Country>) -> BTreeSet<Country> {
    let has_groups = |s: &BTreeSet<Country>| s.iter().any(|c| c.members().is_some());
    if !has_groups(a) && !has_groups(b) {
        return a.intersection(b).copied().collect();
    }
    let a = expand_list(a);
    let b = expand_list(b);
    canonical_list(a.intersection(&b).copied().collect())
}
