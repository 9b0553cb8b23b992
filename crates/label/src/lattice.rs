//! The security lattice: which label dominates which, the least upper bound (roll-up) of two
//! labels, and the checks of a person's clearance and a backend's accreditation against data.
//!
//! Dominance looks only at what controls *access*: the level, the compartments (SCI, SAP,
//! restricted Atomic Energy Act data, NATO ATOMAL/BALK/BOHEMIA) and releasability (to whom the
//! information may be released or displayed). Handling caveats such as ORCON, IMCON, FOUO or
//! PROPIN do not block access; they are carried along by [`Label::join`] so that everything
//! derived from the data stays marked with them. Dominance is therefore a partial order on
//! [`AccessClass`]es — two labels that differ only in handling caveats dominate each other.

use std::collections::BTreeSet;

use crate::label::{Aea, Cui, Dissem, Fgi, Label, Level, NonIc, Owner, common_list, expand_list};
use crate::registry::{Country, USA};

/// The access-relevant part of a label: an element of the lattice.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AccessClass {
    rank: u8,
    compartments: BTreeSet<String>,
    release: Nations,
    display: Nations,
}

/// A set of nationalities, or everyone.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Nations {
    /// No foreign-disclosure restriction.
    All,
    /// Only these (groups expanded to their public members; USA always included).
    Only(BTreeSet<Country>),
}

impl Nations {
    /// Whether a person or operator of this nationality is included.
    pub fn contains(&self, nationality: Country) -> bool {
        match self {
            Nations::All => true,
            Nations::Only(set) => set.contains(&nationality),
        }
    }

    /// Whether every nationality in `other` is also in `self`.
    pub fn includes(&self, other: &Nations) -> bool {
        match (self, other) {
            (Nations::All, _) => true,
            (Nations::Only(_), Nations::All) => false,
            (Nations::Only(a), Nations::Only(b)) => b.is_subset(a),
        }
    }

    fn intersect(&self, other: &Nations) -> Nations {
        match (self, other) {
            (Nations::All, x) | (x, Nations::All) => x.clone(),
            (Nations::Only(a), Nations::Only(b)) => {
                Nations::Only(a.intersection(b).copied().collect())
            }
        }
    }
}

impl AccessClass {
    /// The level's rank: UNCLASSIFIED 0, CUI 1, CONFIDENTIAL (and foreign RESTRICTED) 2, SECRET
    /// 3, TOP SECRET 4.
    pub fn rank(&self) -> u8 {
        self.rank
    }

    /// Compartments, each prefixed by its kind (`SCI:SI-G`, `SAP:BP`, `AEA:RD`, `NATO:ATOMAL`).
    pub fn compartments(&self) -> &BTreeSet<String> {
        &self.compartments
    }

    /// To whom the information may be released.
    pub fn release(&self) -> &Nations {
        &self.release
    }

    /// To whom the information may be shown (release plus DISPLAY ONLY).
    pub fn display(&self) -> &Nations {
        &self.display
    }

    /// `self` dominates `other`: at least its rank, all its compartments, and releasable to no
    /// one `other` is not releasable to.
    pub fn dominates(&self, other: &AccessClass) -> bool {
        self.rank >= other.rank
            && self.compartments.is_superset(&other.compartments)
            && other.release.includes(&self.release)
            && other.display.includes(&self.display)
    }

    /// The least upper bound.
    pub fn join(&self, other: &AccessClass) -> AccessClass {
        AccessClass {
            rank: self.rank.max(other.rank),
            compartments: self
                .compartments
                .union(&other.compartments)
                .cloned()
                .collect(),
            release: self.release.intersect(&other.release),
            display: self.display.intersect(&other.display),
        }
    }
}

/// Why a clearance or accreditation does not cover a label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// The data's level is above the holder's.
    Level,
    /// The data needs compartments the holder lacks (named, without their kind prefix).
    Compartments(Vec<String>),
    /// The data may not be released (or shown) to the holder's nationality.
    Releasability,
}

impl Label {
    /// The access-relevant part of the label.
    pub fn access(&self) -> AccessClass {
        let rank = match self.level {
            Level::Unclassified if self.cui.is_some() => 1,
            Level::Unclassified => 0,
            Level::Restricted | Level::Confidential => 2,
            Level::Secret => 3,
            Level::TopSecret => 4,
        };
        let mut compartments = BTreeSet::new();
        for t in &self.sci {
            compartments.insert(format!("SCI:{t}"));
        }
        for p in &self.sap {
            compartments.insert(format!("SAP:{p}"));
        }
        for a in &self.aea {
            // SECURITY: access to RD implies access to FRD and TFNI (a Q clearance covers them),
            // so a label that rolls FRD up into RD still dominates the FRD portion.
            let implied: &[&str] = match a {
                Aea::Rd => &["RD", "FRD", "TFNI"],
                Aea::Frd => &["FRD", "TFNI"],
                Aea::Tfni => &["TFNI"],
                Aea::Cnwdi => &["CNWDI"],
                Aea::RdSigma(_) | Aea::FrdSigma(_) | Aea::Dcni | Aea::Ucni => &[],
            };
            for i in implied {
                compartments.insert(format!("AEA:{i}"));
            }
            if let Aea::RdSigma(n) | Aea::FrdSigma(n) = a {
                compartments.insert(format!("AEA:SIGMA-{n}"));
            }
        }
        for c in &self.non_us_controls {
            compartments.insert(format!("NATO:{}", c.as_str()));
        }
        let has = |d: Dissem| self.dissem.contains(&d);
        let usa_only = || Nations::Only(BTreeSet::from([USA]));
        let release = if has(Dissem::Nf)
            || self.non_ic.contains(&NonIc::LesNf)
            || self.non_ic.contains(&NonIc::SbuNf)
            || self.aea.contains(&Aea::Dcni)
            || self.aea.contains(&Aea::Ucni)
        {
            usa_only()
        } else if has(Dissem::Rel) {
            self.rel_to.as_ref().map_or_else(usa_only, with_usa)
        } else if has(Dissem::Eyes) {
            // SECURITY: a list without USA (`IRQ EYES ONLY`, read leniently) still includes the
            // U.S.: otherwise a U.S.-only roll-up would not dominate it.
            self.eyes_only.as_ref().map_or_else(usa_only, with_usa)
        } else if self.level.is_classified() || has(Dissem::Relido) || has(Dissem::DisplayOnly) || {
            let (caveated, foreign, fisa) = table2_inputs(self);
            caveated || foreign || fisa
        } {
            // SECURITY: classified (or caveated, or foreign) information with no
            // foreign-disclosure marking has had no release decision, so it is not releasable;
            // FISA information counts as RELIDO.
            usa_only()
        } else {
            Nations::All
        };
        let display = match (&release, &self.display_only) {
            (Nations::Only(r), Some(d)) if has(Dissem::DisplayOnly) => {
                Nations::Only(r.union(&expand_list(d)).copied().collect())
            }
            _ => release.clone(),
        };
        AccessClass {
            rank,
            compartments,
            release,
            display,
        }
    }

    /// `self` dominates `other` for access: see [`AccessClass::dominates`]. Handling caveats
    /// (ORCON, FOUO, …) are not compared.
    ///
    /// ```
    /// use enclave_label::Label;
    /// let session: Label = "TOP SECRET//SI//NOFORN".parse().unwrap();
    /// let portion: Label = "(S//SI//REL TO USA, GBR)".parse().unwrap();
    /// assert!(session.dominates(&portion));
    /// assert!(!portion.dominates(&session));
    /// ```
    pub fn dominates(&self, other: &Label) -> bool {
        self.access().dominates(&other.access())
    }

    /// The roll-up of two labels into the label of a whole that contains both: the highest
    /// level, the union of compartments and caveats, and the foreign-disclosure result of the
    /// register's precedence rules (NOFORN wins; REL TO lists intersect, with FVEY and ACGU
    /// expanded to their members; no common partner gives NOFORN; …).
    ///
    /// For access, the result is the least upper bound: `a.join(b).access()` equals
    /// `a.access().join(&b.access())`.
    ///
    /// ```
    /// use enclave_label::Label;
    /// let a: Label = "(S//REL TO USA, FVEY)".parse().unwrap();
    /// let b: Label = "(S//REL TO USA, GBR)".parse().unwrap();
    /// assert_eq!(a.join(&b).to_string(), "SECRET//REL TO USA, GBR");
    /// ```
    pub fn join(&self, other: &Label) -> Label {
        let mut out = self.clone();
        out.join_assign(other);
        out
    }

    /// Joins `other` into `self` in place: `a.join_assign(&b)` leaves `a` equal to
    /// `a.join(&b)`. Rolling up many labels this way costs time proportional to their total
    /// size, not to its square.
    pub fn join_assign(&mut self, other: &Label) {
        // The foreign-disclosure views are taken before anything changes.
        let va = fdr_view(self);
        let vb = fdr_view(other);
        let (owner, fgi) = join_owner(self, other);
        let mut level = self.level.max(other.level);
        if owner == Owner::Usa && level == Level::Restricted {
            level = Level::Confidential;
        }
        let classified = level.is_classified();
        self.owner = owner;
        self.level = level;
        self.fgi = fgi;
        self.sci.extend(other.sci.iter().cloned());
        self.sap.extend(other.sap.iter().cloned());
        self.non_us_controls
            .extend(other.non_us_controls.iter().copied());
        self.aea = join_aea(&self.aea, &other.aea);

        // Caveats that are not foreign-disclosure controls accumulate.
        self.dissem
            .extend(other.dissem.iter().copied().filter(|d| !d.is_fdr()));
        if self.dissem.contains(&Dissem::Oc) {
            self.dissem.remove(&Dissem::OcUsgov);
        }

        // Non-IC markings.
        self.non_ic.extend(other.non_ic.iter().copied());
        for (plain, nf) in [(NonIc::Les, NonIc::LesNf), (NonIc::Sbu, NonIc::SbuNf)] {
            if self.non_ic.contains(&nf) {
                self.non_ic.remove(&plain);
            }
        }

        // CUI: dropped from a classified banner, merged otherwise.
        if classified {
            self.cui = None;
        } else if let Some(theirs) = &other.cui {
            let mine = self.cui.get_or_insert_with(Cui::default);
            mine.specified.extend(theirs.specified.iter().cloned());
            mine.basic.extend(theirs.basic.iter().cloned());
            let specified = &mine.specified;
            mine.basic.retain(|c| !specified.contains(c));
            mine.ldc.extend(theirs.ldc.iter().copied());
        }

        join_fdr(va, vb, other, self);

        // Markings that a classified banner does not carry (CAPCO16 templates): LIMDIS, SBU,
        // DOD UCNI and DOE UCNI (which contribute NOFORN instead). NODIS has priority over EXDIS.
        if classified {
            self.non_ic.remove(&NonIc::Ds);
            self.non_ic.remove(&NonIc::Sbu);
            let ucni = self.aea.remove(&Aea::Dcni) | self.aea.remove(&Aea::Ucni);
            if ucni {
                // Their NOFORN stays when they leave the banner (CAPCO16 DOD UCNI template).
                self.clear_fdr();
                self.dissem.insert(Dissem::Nf);
            }
        }
        if self.non_ic.contains(&NonIc::Nd) {
            self.non_ic.remove(&NonIc::Xd);
        }

        // FOUO conveys only alone with foreign-disclosure markings on unclassified information.
        let other_caveats = self
            .dissem
            .iter()
            .any(|d| !d.is_fdr() && *d != Dissem::Fouo)
            || !self.non_ic.is_empty()
            || self.cui.is_some();
        if classified || other_caveats {
            self.dissem.remove(&Dissem::Fouo);
        }
    }
}

impl Label {
    /// Removes every foreign-disclosure control and its list.
    fn clear_fdr(&mut self) {
        self.dissem.retain(|d| !d.is_fdr());
        self.rel_to = None;
        self.display_only = None;
        self.eyes_only = None;
    }
}

/// Rolls up any number of labels; UNCLASSIFIED when there are none.
pub fn rollup<'a>(labels: impl IntoIterator<Item = &'a Label>) -> Label {
    let mut iter = labels.into_iter();
    let Some(first) = iter.next() else {
        return Label::unclassified();
    };
    let mut acc = first.clone();
    for l in iter {
        acc.join_assign(l);
    }
    acc
}

fn foreign_sources(l: &Label) -> (BTreeSet<Country>, bool) {
    let mut set = BTreeSet::new();
    let mut concealed = false;
    match &l.owner {
        Owner::Usa => {}
        Owner::Foreign(c) => {
            set.insert(*c);
        }
        Owner::Nato => {
            if let Some(nato) = Country::from_code("NATO") {
                set.insert(nato);
            }
        }
        Owner::Joint(owners) => set.extend(owners.iter().copied().filter(|c| *c != USA)),
        Owner::ConcealedForeign => concealed = true,
    }
    match &l.fgi {
        Some(Fgi::Sources(s)) => set.extend(s.iter().copied()),
        Some(Fgi::Concealed) => concealed = true,
        None => {}
    }
    (set, concealed)
}

fn join_owner(a: &Label, b: &Label) -> (Owner, Option<Fgi>) {
    if a.owner == b.owner {
        let fgi = match (&a.fgi, &b.fgi) {
            (Some(Fgi::Concealed), _) | (_, Some(Fgi::Concealed)) => Some(Fgi::Concealed),
            (Some(Fgi::Sources(x)), Some(Fgi::Sources(y))) => {
                Some(Fgi::Sources(x.union(y).copied().collect()))
            }
            (Some(f), None) | (None, Some(f)) => Some(f.clone()),
            (None, None) => None,
        };
        return (a.owner.clone(), fgi);
    }
    let (mut sources, ca) = foreign_sources(a);
    let (sb, cb) = foreign_sources(b);
    sources.extend(sb);
    let was_foreign = |l: &Label| l.owner != Owner::Usa || l.fgi.is_some();
    // A foreign side whose source cannot be named (a JOINT marking read without its owners)
    // still makes the whole foreign: its source is concealed.
    let unnamed = sources.is_empty() && (was_foreign(a) || was_foreign(b));
    let fgi = if ca || cb || unnamed {
        Some(Fgi::Concealed)
    } else if sources.is_empty() {
        None
    } else {
        Some(Fgi::Sources(sources))
    };
    (Owner::Usa, fgi)
}

fn join_aea(a: &BTreeSet<Aea>, b: &BTreeSet<Aea>) -> BTreeSet<Aea> {
    let mut out: BTreeSet<Aea> = a.union(b).copied().collect();
    // RD takes precedence over FRD, and both over TFNI; SIGMA categories follow RD.
    if out.contains(&Aea::Rd) {
        out.remove(&Aea::Frd);
        out.remove(&Aea::Tfni);
        let sigmas: Vec<u8> = out
            .iter()
            .filter_map(|x| {
                if let Aea::FrdSigma(n) = x {
                    Some(*n)
                } else {
                    None
                }
            })
            .collect();
        for n in sigmas {
            out.remove(&Aea::FrdSigma(n));
            out.insert(Aea::RdSigma(n));
        }
    } else if out.contains(&Aea::Frd) {
        out.remove(&Aea::Tfni);
    }
    out
}

/// A label's foreign-disclosure state, as the roll-up rules see it.
struct FdrView {
    /// Unclassified with no foreign-disclosure marking: no effect on the roll-up.
    neutral: bool,
    nf: bool,
    /// No foreign-disclosure marking at all on classified information.
    bare: bool,
    /// REL TO (or EYES ONLY) list.
    rel: Option<BTreeSet<Country>>,
    /// Everyone it may be shown to when it carries DISPLAY ONLY: the REL TO list plus the
    /// DISPLAY ONLY list, USA included. Without DISPLAY ONLY it adds nothing to the REL TO list.
    display: Option<BTreeSet<Country>>,
    relido: bool,
    eyes: bool,
    /// Carries a foreign-disclosure dissemination control of its own (not only LES NOFORN).
    other_fdr: bool,
}

fn fdr_view(l: &Label) -> FdrView {
    let has = |d: Dissem| l.dissem.contains(&d);
    let nf_form = l.non_ic.contains(&NonIc::LesNf)
        || l.non_ic.contains(&NonIc::SbuNf)
        || l.aea.contains(&Aea::Dcni)
        || l.aea.contains(&Aea::Ucni);
    let any = l.has_fdr();
    let classified = l.level.is_classified();
    let rel = if has(Dissem::Rel) {
        Some(l.rel_to.clone().unwrap_or_else(|| BTreeSet::from([USA])))
    } else if has(Dissem::Eyes) {
        Some(l.eyes_only.clone().unwrap_or_else(|| BTreeSet::from([USA])))
    } else {
        None
    };
    let display = has(Dissem::DisplayOnly).then(|| {
        let mut d: BTreeSet<Country> = rel.clone().unwrap_or_default();
        d.extend(l.display_only.iter().flatten().copied());
        d.insert(USA);
        d
    });
    // CAPCO16 Table 2: information with no FD&R marking counts as RELIDO when it is
    // uncaveated (SCI alone does not make it caveated) and as NOFORN when it is caveated or
    // foreign. (The table's other input, the origination date, is not in a marking:
    // information is taken to be current.) `(U//FISA)` counts as RELIDO. Only unclassified
    // information with no controls at all is left out of the FD&R roll-up (CAPCO16 p51).
    let (caveated, foreign, fisa) = table2_inputs(l);
    let neutral = !any && !classified && !caveated && !foreign && !fisa && !nf_form;
    let bare = !any && !nf_form;
    FdrView {
        neutral,
        nf: has(Dissem::Nf) || nf_form,
        bare,
        rel,
        display,
        relido: has(Dissem::Relido) || (bare && !caveated && !foreign),
        eyes: has(Dissem::Eyes) && !has(Dissem::Rel),
        other_fdr: l.dissem.iter().any(|d| d.is_fdr()),
    }
}

/// What CAPCO16 Table 2 looks at in a label without FD&R markings: whether it is caveated,
/// foreign, or FISA. Only caveats that a roll-up never drops count (FOUO, LIMDIS and SBU drop
/// out of classified banners, so counting them would make the roll-up depend on portion order);
/// FISA counts as RELIDO rather than as a caveat.
fn table2_inputs(l: &Label) -> (bool, bool, bool) {
    let caveated = !l.aea.is_empty()
        || !l.sap.is_empty()
        || l.non_ic
            .iter()
            .any(|m| !matches!(m, NonIc::Ds | NonIc::Sbu))
        || l.dissem
            .iter()
            .any(|d| !d.is_fdr() && !matches!(d, Dissem::Fouo | Dissem::Fisa));
    let foreign = l.owner != Owner::Usa || l.fgi.is_some() || !l.non_us_controls.is_empty();
    (caveated, foreign, l.dissem.contains(&Dissem::Fisa))
}

/// Sets the foreign-disclosure controls of `out` (which holds `a`'s) from the roll-up of `a`
/// and `b`, whose views are `va` and `vb`.
fn join_fdr(va: FdrView, vb: FdrView, b: &Label, out: &mut Label) {
    let other_fdr = va.other_fdr || vb.other_fdr;
    // A neutral side leaves the other's controls as they are.
    let (src, view) = match (va.neutral, vb.neutral) {
        (true, true) => (None, None),
        (true, false) => (Some(b), None),
        (false, true) => (None, None),
        (false, false) => (None, Some((va, vb))),
    };
    if let Some(src) = src {
        out.clear_fdr();
        for d in src.dissem.iter().filter(|d| d.is_fdr()) {
            out.dissem.insert(*d);
        }
        out.rel_to = src.rel_to.clone();
        out.display_only = src.display_only.clone();
        out.eyes_only = src.eyes_only.clone();
    } else if let Some((va, vb)) = view {
        out.clear_fdr();
        if va.nf || vb.nf {
            // On unclassified information whose NOFORN comes only from LES NOFORN, SBU NOFORN or
            // UCNI, those markings carry it themselves; writing NOFORN as well would make the
            // roll-up depend on portion order (see the LES NOFORN rule below).
            if out.level.is_classified() || va.other_fdr || vb.other_fdr {
                out.dissem.insert(Dissem::Nf);
            }
        } else if va.bare && vb.bare {
            // Both classified without foreign-disclosure markings: the whole has none either.
        } else {
            let rel = match (&va.rel, &vb.rel) {
                (Some(x), Some(y)) => common_list(x, y),
                _ => BTreeSet::new(),
            };
            // DISPLAY ONLY results only where a side carries DISPLAY ONLY: otherwise what both
            // may show is exactly what both may release.
            let display_only: BTreeSet<Country> = if va.display.is_some() || vb.display.is_some() {
                let shown_by = |v: &FdrView| {
                    v.display.clone().unwrap_or_else(|| {
                        let mut d = v.rel.clone().unwrap_or_default();
                        d.insert(USA);
                        d
                    })
                };
                let shown = common_list(&shown_by(&va), &shown_by(&vb));
                let covered = expand_list(&rel);
                shown
                    .into_iter()
                    .filter(|c| *c != USA && !covered.contains(c))
                    .collect()
            } else {
                BTreeSet::new()
            };
            if rel.iter().any(|c| *c != USA) {
                if va.eyes && vb.eyes {
                    out.dissem.insert(Dissem::Eyes);
                    out.eyes_only = Some(rel);
                } else {
                    out.dissem.insert(Dissem::Rel);
                    out.rel_to = Some(rel);
                }
                if !display_only.is_empty() {
                    out.dissem.insert(Dissem::DisplayOnly);
                    out.display_only = Some(display_only);
                }
                if va.relido && vb.relido {
                    out.dissem.insert(Dissem::Relido);
                }
            } else if !display_only.is_empty() {
                out.dissem.insert(Dissem::DisplayOnly);
                out.display_only = Some(display_only);
            } else if va.relido && vb.relido {
                out.dissem.insert(Dissem::Relido);
            } else {
                out.dissem.insert(Dissem::Nf);
            }
        }
    }
    // LES NOFORN and SBU NOFORN keep their own form only on unclassified information where no
    // portion carries another FD&R marking; otherwise they become LES (SBU) plus NOFORN
    // (CAPCO16 LES NOFORN and SBU NOFORN templates: `SECRET//NOFORN//LES`).
    let has_nf_form = out.non_ic.contains(&NonIc::LesNf) || out.non_ic.contains(&NonIc::SbuNf);
    if has_nf_form {
        if out.level.is_classified() || other_fdr {
            for (plain, nf) in [(NonIc::Les, NonIc::LesNf), (NonIc::Sbu, NonIc::SbuNf)] {
                if out.non_ic.remove(&nf) {
                    out.non_ic.insert(plain);
                }
            }
            out.clear_fdr();
            out.dissem.insert(Dissem::Nf);
        } else {
            out.clear_fdr();
        }
    }
    if !out.dissem.contains(&Dissem::Rel) {
        out.rel_to = None;
    }
    if !out.dissem.contains(&Dissem::DisplayOnly) {
        out.display_only = None;
    }
    if !out.dissem.contains(&Dissem::Eyes) {
        out.eyes_only = None;
    }
}

/// A person's clearance: the highest label they may see, and their nationality.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clearance {
    label: Label,
    nationality: Country,
    /// `label.access()`, computed once: checks run on every request.
    access: AccessClass,
}

impl Clearance {
    /// A clearance at `label` for a person of `nationality`.
    pub fn new(label: Label, nationality: Country) -> Clearance {
        let access = label.access();
        Clearance {
            label,
            nationality,
            access,
        }
    }

    /// The cleared label.
    pub fn label(&self) -> &Label {
        &self.label
    }

    /// The holder's nationality.
    pub fn nationality(&self) -> Country {
        self.nationality
    }

    /// Whether the holder may see data labeled `data`: the clearance covers its level and
    /// compartments, and the data may be shown to the holder's nationality. (The clearance
    /// label's own foreign-disclosure controls do not matter: nationality decides.)
    pub fn permits(&self, data: &Label) -> bool {
        self.check(data).is_ok()
    }

    /// Why the holder may not see data labeled `data`, if they may not.
    ///
    /// # Errors
    ///
    /// The first [`Denial`] found: level, then compartments, then releasability.
    pub fn check(&self, data: &Label) -> Result<(), Denial> {
        let theirs = data.access();
        check_common(&self.access, &theirs)?;
        if !theirs.display.contains(self.nationality) {
            return Err(Denial::Releasability);
        }
        Ok(())
    }
}

/// What a backend may process: the highest label, and the nationality of its operators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accreditation {
    label: Label,
    operators: BTreeSet<Country>,
    /// `label.access()`, computed once: routing checks every backend on every request.
    access: AccessClass,
}

impl Accreditation {
    /// An accreditation at `label` for a backend run by operators of these nationalities.
    pub fn new(label: Label, operators: impl IntoIterator<Item = Country>) -> Accreditation {
        let mut operators: BTreeSet<Country> = operators.into_iter().collect();
        if operators.is_empty() {
            operators.insert(USA);
        }
        let access = label.access();
        Accreditation {
            label,
            operators,
            access,
        }
    }

    /// The accredited label.
    pub fn label(&self) -> &Label {
        &self.label
    }

    /// The operators' nationalities.
    pub fn operators(&self) -> &BTreeSet<Country> {
        &self.operators
    }

    /// Whether the backend may process data labeled `data`: the accreditation covers its level
    /// and compartments, and the data may be released to every operator's nationality.
    pub fn permits(&self, data: &Label) -> bool {
        self.check(data).is_ok()
    }

    /// Why the backend may not process data labeled `data`, if it may not.
    ///
    /// # Errors
    ///
    /// The first [`Denial`] found: level, then compartments, then releasability (every
    /// operator's nationality must be one the data may be *released* to).
    pub fn check(&self, data: &Label) -> Result<(), Denial> {
        let theirs = data.access();
        check_common(&self.access, &theirs)?;
        // SECURITY: processing is release, not display: DISPLAY ONLY does not let data go to a
        // backend run by foreign operators.
        if !self.operators.iter().all(|o| theirs.release.contains(*o)) {
            return Err(Denial::Releasability);
        }
        Ok(())
    }
}

/// A release list as nations, with USA always in it (the lists are releases of U.S. information).
fn with_usa(list: &BTreeSet<Country>) -> Nations {
    let mut set = expand_list(list);
    set.insert(USA);
    Nations::Only(set)
}

fn check_common(mine: &AccessClass, theirs: &AccessClass) -> Result<(), Denial> {
    if mine.rank < theirs.rank {
        return Err(Denial::Level);
    }
    let missing: Vec<String> = theirs
        .compartments
        .difference(&mine.compartments)
        .map(|c| c.split_once(':').map_or(c.as_str(), |(_, n)| n).to_owned())
        .collect();
    if !missing.is_empty() {
        return Err(Denial::Compartments(missing));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(s: &str) -> Label {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn up(portions: &[&str]) -> String {
        let labels: Vec<Label> = portions.iter().map(|p| l(p)).collect();
        rollup(&labels).to_string()
    }

    fn c(code: &str) -> Country {
        Country::from_code(code).unwrap()
    }

    #[test]
    fn rollup_precedence_rules() {
        assert_eq!(up(&["(S)", "(C)"]), "SECRET");
        assert_eq!(
            up(&["(U)", "(S//REL TO USA, GBR)"]),
            "SECRET//REL TO USA, GBR"
        );
        assert_eq!(up(&["(S)", "(S//REL TO USA, GBR)"]), "SECRET//NOFORN");
        assert_eq!(up(&["(S//RELIDO)", "(S//RELIDO)"]), "SECRET//RELIDO");
        assert_eq!(
            up(&["(S//REL TO USA, GBR)", "(S//RELIDO)"]),
            "SECRET//NOFORN"
        );
        assert_eq!(
            up(&["(S//RELIDO)", "(S//DISPLAY ONLY AFG)"]),
            "SECRET//NOFORN"
        );
        assert_eq!(
            up(&["(S//DISPLAY ONLY AFG)", "(S//REL TO USA, AFG, GBR)"]),
            "SECRET//DISPLAY ONLY AFG"
        );
        assert_eq!(
            up(&[
                "(S//REL TO USA, GBR, JPN/DISPLAY ONLY AFG)",
                "(S//REL TO USA, GBR/DISPLAY ONLY AFG, JPN)"
            ]),
            "SECRET//REL TO USA, GBR/DISPLAY ONLY AFG, JPN"
        );
        assert_eq!(
            up(&["(S//REL TO USA, FVEY)", "(S//REL TO USA, FVEY)"]),
            "SECRET//REL TO USA, FVEY"
        );
        assert_eq!(
            up(&["(S//REL TO USA, FVEY)", "(S//REL TO USA, ACGU)"]),
            "SECRET//REL TO USA, AUS, CAN, GBR"
        );
        assert_eq!(up(&["(U//LES-NF)", "(U//LES)"]), "UNCLASSIFIED//LES NOFORN");
        assert_eq!(up(&["(//GBR R)", "(U)"]), "CONFIDENTIAL//FGI GBR");
        assert_eq!(up(&["(//GBR S)", "(//GBR C)"]), "//GBR SECRET");
        assert_eq!(up(&["(//NS)", "(S//NF)"]), "SECRET//FGI NATO//NOFORN");
        assert_eq!(up(&["(S//RD//NF)", "(C//FRD//NF)"]), "SECRET//RD//NOFORN");
        assert_eq!(
            up(&["(CUI//SP-CTI)", "(U)", "(CUI//PRVCY//FED ONLY)"]),
            "CUI//SP-CTI/PRVCY//FED ONLY"
        );
        assert_eq!(up(&["(CUI//SP-CTI)", "(S//NF)"]), "SECRET//NOFORN");
        assert_eq!(up(&[]), "UNCLASSIFIED");
        // Table 2: uncaveated classified portions count as RELIDO, caveated ones as NOFORN.
        assert_eq!(up(&["(S)", "(S//RELIDO)"]), "SECRET//RELIDO");
        assert_eq!(up(&["(S//SI)", "(S//RELIDO)"]), "SECRET//SI//RELIDO");
        assert_eq!(up(&["(S//PR)", "(S//RELIDO)"]), "SECRET//NOFORN/PROPIN");
        assert_eq!(up(&["(//GBR S)", "(S//RELIDO)"]), "SECRET//FGI GBR//NOFORN");
        assert_eq!(up(&["(U//FISA)", "(S//RELIDO)"]), "SECRET//RELIDO/FISA");
        // Found by the rollup fuzz target: the result must not depend on portion order, so a
        // caveated unclassified portion counts like a caveated classified one.
        for order in [
            ["(U//DSEN)", "(S)", "(S//RELIDO)"],
            ["(S//RELIDO)", "(S)", "(U//DSEN)"],
        ] {
            assert_eq!(up(&order), "SECRET//NOFORN/DEA SENSITIVE");
        }
        for order in [
            ["(U//FOUO)", "(S)", "(S//RELIDO)"],
            ["(S//RELIDO)", "(S)", "(U//FOUO)"],
        ] {
            assert_eq!(up(&order), "SECRET//RELIDO");
        }
        // Non-IC markings in classified banners.
        assert_eq!(
            up(&["(U//SBU-NF)", "(U//FOUO)", "(S//REL TO USA, AUS)"]),
            "SECRET//NOFORN"
        );
        assert_eq!(
            up(&["(U//SBU-NF)", "(U//REL TO USA, GBR)"]),
            "UNCLASSIFIED//NOFORN//SBU"
        );
        assert_eq!(
            up(&["(U//SBU-NF)", "(U//FOUO)"]),
            "UNCLASSIFIED//SBU NOFORN"
        );
        assert_eq!(up(&["(U//DS)", "(S//NF)"]), "SECRET//NOFORN");
        assert_eq!(up(&["(S//NF//XD)", "(S//NF//ND)"]), "SECRET//NOFORN//NODIS");
        assert_eq!(up(&["(U//DCNI)", "(S//REL TO USA, GBR)"]), "SECRET//NOFORN");
        assert_eq!(
            up(&["(S//SAR-GB//NF)", "(TS//SAR-BP//NF)"]),
            "TOP SECRET//SAR-BP/GB//NOFORN"
        );
    }

    #[test]
    fn join_access_is_the_lub_of_access() {
        let pairs = [
            ("(S//REL TO USA, GBR)", "(S)"),
            ("(//GBR R)", "(U)"),
            ("(S//RD//NF)", "(C//FRD//NF)"),
            ("(S//DISPLAY ONLY AFG)", "(C//REL TO USA, AFG, GBR)"),
            ("(U//LES-NF)", "(S//REL TO USA, JPN)"),
        ];
        for (a, b) in pairs {
            let (a, b) = (l(a), l(b));
            assert_eq!(
                a.join(&b).access(),
                a.access().join(&b.access()),
                "{a} ⊔ {b}"
            );
        }
    }

    #[test]
    fn clearance_bounds_level_compartments_and_nationality() {
        let ts = Clearance::new(l("TOP SECRET//SI/TK//NOFORN"), USA);
        assert!(ts.permits(&l("SECRET//NOFORN")));
        assert!(ts.permits(&l("(S//OC/NF)")));
        assert!(ts.permits(&l("CUI//SP-CTI")));
        assert_eq!(
            ts.check(&l("TOP SECRET//HCS-P//NOFORN")),
            Err(Denial::Compartments(vec!["HCS".into(), "HCS-P".into()]))
        );
        let gbr = Clearance::new(l("SECRET//REL TO USA, GBR"), c("GBR"));
        assert!(gbr.permits(&l("SECRET//REL TO USA, GBR")));
        assert!(gbr.permits(&l("SECRET//REL TO USA, FVEY")));
        assert_eq!(gbr.check(&l("SECRET//NOFORN")), Err(Denial::Releasability));
        assert_eq!(gbr.check(&l("SECRET")), Err(Denial::Releasability));
        assert_eq!(
            gbr.check(&l("TOP SECRET//REL TO USA, GBR")),
            Err(Denial::Level)
        );
        assert!(gbr.permits(&l("UNCLASSIFIED")));
        let afg = Clearance::new(l("SECRET//DISPLAY ONLY AFG"), c("AFG"));
        assert!(afg.permits(&l("SECRET//DISPLAY ONLY AFG")));
    }

    #[test]
    fn accreditation_keeps_noforn_with_us_operators() {
        let gov = Accreditation::new(l("SECRET//NOFORN"), [USA]);
        assert!(gov.permits(&l("SECRET//NOFORN")));
        assert!(gov.permits(&l("SECRET//REL TO USA, GBR")));
        assert!(gov.permits(&l("CUI")));
        assert_eq!(gov.check(&l("TOP SECRET//NOFORN")), Err(Denial::Level));
        let foreign = Accreditation::new(l("TOP SECRET//REL TO USA, GBR"), [c("GBR")]);
        assert_eq!(
            foreign.check(&l("SECRET//NOFORN")),
            Err(Denial::Releasability)
        );
        assert_eq!(
            foreign.check(&l("SECRET//DISPLAY ONLY GBR")),
            Err(Denial::Releasability)
        );
        assert!(foreign.permits(&l("SECRET//REL TO USA, GBR")));
        assert!(foreign.permits(&l("UNCLASSIFIED")));
        let cui = Accreditation::new(l("CUI"), [USA]);
        assert!(cui.permits(&l("CUI//SP-CTI//NOFORN")));
        assert_eq!(cui.check(&l("CONFIDENTIAL")), Err(Denial::Level));
    }
}
