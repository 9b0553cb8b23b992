//! Access decisions for Enclave: who a caller is, which session label they may open, whether
//! the content of a request spills above that label, and which backends may receive it.
//!
//! This crate is pure: it takes values (a principal, a requested marking, the markings found in a
//! prompt, the configured backends) and returns decisions. Denials are values ([`Denied`]),
//! each with a stable error code, not failures; the gateway turns them into API errors.
//!
//! ```
//! use enclave_label::{Clearance, Label, USA, scan};
//! use enclave_policy::{Principal, PrincipalId, Role, TenantId, open_session, check_content};
//!
//! let alice = Principal {
//!     id: PrincipalId::new("alice"),
//!     tenant: TenantId::new("dia"),
//!     clearance: Clearance::new("TOP SECRET//SI//NOFORN".parse()?, USA),
//!     role: Role::User,
//! };
//! let session = open_session(&alice, Some("SECRET//NOFORN")).expect("within clearance");
//! let content = scan("(TS//SI//NF) Sources report...");
//! let denied = check_content(&session, &content).unwrap_err();
//! assert_eq!(denied.code(), "spillage_detected");
//! # Ok::<(), enclave_label::MarkingError>(())
//! ```

use std::fmt;

use enclave_label::{
    Accreditation, Clearance, Denial, Label, MarkingError, Mode, ReasonCode, Scan, parse_marking,
};

/// A tenant (an agency or program) whose data is isolated from every other tenant's.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    /// Wraps a tenant name.
    pub fn new(name: impl Into<String>) -> TenantId {
        TenantId(name.into())
    }

    /// The tenant name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A principal's name, unique across the installation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PrincipalId(String);

impl PrincipalId {
    /// Wraps a principal name.
    pub fn new(name: impl Into<String>) -> PrincipalId {
        PrincipalId(name.into())
    }

    /// The principal name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PrincipalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a principal may administer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Administers principals, keys and policy.
    Admin,
    /// Reads the audit log and review queues.
    Auditor,
    /// Reads the operator surfaces (`/metrics`) and nothing else of value.
    Metrics,
    /// Uses the models.
    User,
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Who.
    pub id: PrincipalId,
    /// Whose data they work on.
    pub tenant: TenantId,
    /// The highest label they may see, and their nationality.
    pub clearance: Clearance,
    /// What they may administer.
    pub role: Role,
}

/// The label a request works at, opened within the caller's clearance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    label: Label,
}

impl Session {
    /// The session label.
    pub fn label(&self) -> &Label {
        &self.label
    }
}

/// Why a request is refused. Each variant has a stable API error code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// The requested session label is not a valid marking.
    InvalidMarking(MarkingError),
    /// The requested session label is above the caller's clearance.
    ClassificationExceedsClearance {
        /// The label that was asked for.
        requested: Box<Label>,
        /// Which part of the clearance it exceeds.
        why: Denial,
    },
    /// The request's content is marked above its session label.
    SpillageDetected {
        /// The session label.
        session: Box<Label>,
        /// The roll-up of the markings found in the content.
        content: Box<Label>,
        /// Whether any marking was disguised.
        disguised: bool,
    },
    /// No configured backend is accredited for the label.
    NoAccreditedBackend {
        /// The label the request needs processed.
        label: Box<Label>,
    },
}

impl Denied {
    /// The stable API error code (`spillage_detected`, …).
    pub fn code(&self) -> &'static str {
        match self {
            Denied::InvalidMarking(_) => "invalid_marking",
            Denied::ClassificationExceedsClearance { .. } => "classification_exceeds_clearance",
            Denied::SpillageDetected { .. } => "spillage_detected",
            Denied::NoAccreditedBackend { .. } => "no_accredited_backend",
        }
    }

    /// The marking reason code, for an invalid marking.
    pub fn reason_code(&self) -> Option<ReasonCode> {
        match self {
            Denied::InvalidMarking(e) => Some(e.code()),
            _ => None,
        }
    }
}

impl fmt::Display for Denied {
    /// A message that says what to do. It names labels, never content.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denied::InvalidMarking(e) => write!(
                f,
                "the X-Enclave-Classification header is not a valid marking: {e}"
            ),
            Denied::ClassificationExceedsClearance { requested, why } => {
                let part = match why {
                    Denial::Level => "level",
                    Denial::Compartments(_) => "compartments",
                    Denial::Releasability => "releasability for your nationality",
                };
                write!(
                    f,
                    "the session label `{requested}` exceeds your clearance ({part}): request a label your clearance covers"
                )
            }
            Denied::SpillageDetected {
                session, content, ..
            } => write!(
                f,
                "the request contains information marked `{content}`, above the session label `{session}`: remove it, or work in a session at that label if your clearance allows"
            ),
            Denied::NoAccreditedBackend { label } => write!(
                f,
                "no configured backend is accredited for `{label}`: ask the operator to configure one, or work at a lower label"
            ),
        }
    }
}

/// Opens a session at the requested marking (default UNCLASSIFIED) within the principal's
/// clearance. The marking is read leniently (case, spacing, order).
///
/// # Errors
///
/// [`Denied::InvalidMarking`] for a malformed marking;
/// [`Denied::ClassificationExceedsClearance`] when the clearance does not cover it.
pub fn open_session(principal: &Principal, requested: Option<&str>) -> Result<Session, Denied> {
    let label = match requested {
        None => Label::unclassified(),
        Some(text) => {
            parse_marking(text, Mode::Lenient, None)
                .map_err(Denied::InvalidMarking)?
                .label
        }
    };
    open_session_at(principal, label)
}

/// Opens a session at an already parsed label within the principal's clearance (for callers
/// that cache the parse of a header; the clearance check always runs).
///
/// # Errors
///
/// [`Denied::ClassificationExceedsClearance`] when the clearance does not cover it.
pub fn open_session_at(principal: &Principal, label: Label) -> Result<Session, Denied> {
    // SECURITY: the session can never exceed the clearance, whatever the header says.
    principal
        .clearance
        .check(&label)
        .map_err(|why| Denied::ClassificationExceedsClearance {
            requested: Box::new(label.clone()),
            why,
        })?;
    Ok(Session { label })
}

/// The flag a request carries when its content mentions a marking inside a sentence
/// ([`Scan::mentioned`]): an indicator for the safety stack, not a denial.
pub const CLASSIFIED_MARKING_FLAG: &str = "classified-marking";

/// Decides what the content of a request means for its session: spillage when the content is
/// marked above the session's level or outside its compartments; otherwise the label the request
/// and everything derived from it carries — the session label joined with the content's (so
/// NOFORN content in a REL TO session makes the answer NOFORN, and ORCON content makes it ORCON).
///
/// Only the markings that mark the content count: [`Scan::label`], the roll-up of the asserted
/// markings (banner lines, portion marks opening a paragraph, line, list item or sentence,
/// markings after a label and a colon, and every disguised marking). A marking talked about
/// inside a sentence ("What does SECRET//NOFORN mean?") is in [`Scan::mentioned`]: it neither
/// refuses the request nor raises its label. It is an indicator that the caller logs (its label,
/// never the text), counts, and flags as [`CLASSIFIED_MARKING_FLAG`] for the safety stack.
///
/// # Errors
///
/// [`Denied::SpillageDetected`] when the content's level or compartments are not covered.
pub fn check_content(session: &Session, content: &Scan) -> Result<Label, Denied> {
    // Plain UNCLASSIFIED content (no markings, or only `(U)` portions) has rank 0 and no
    // compartments, which every session covers: skip building both access classes.
    if content.label == Label::unclassified() {
        return Ok(session.label.join(&content.label));
    }
    let mine = session.label.access();
    let theirs = content.label.access();
    // SECURITY: level and compartments are the classification boundary; releasability differences
    // only make the result more restrictive (the join below), they are not spillage.
    let covered =
        mine.rank() >= theirs.rank() && mine.compartments().is_superset(theirs.compartments());
    if !covered {
        return Err(Denied::SpillageDetected {
            session: Box::new(session.label.clone()),
            content: Box::new(content.label.clone()),
            disguised: content.any_disguised(),
        });
    }
    Ok(session.label.join(&content.label))
}

/// A backend as routing sees it: a name and an accreditation.
pub trait Accredited {
    /// What the backend may process.
    fn accreditation(&self) -> &Accreditation;
}

/// The backends that may process `label`, in the order given. A backend not accredited for the
/// label is never returned, so a caller that falls back along this list never falls back lower.
///
/// # Errors
///
/// [`Denied::NoAccreditedBackend`] when none may.
pub fn eligible<'a, B: Accredited>(backends: &'a [B], label: &Label) -> Result<Vec<&'a B>, Denied> {
    let ok: Vec<&B> = backends
        .iter()
        .filter(|b| b.accreditation().permits(label))
        .collect();
    if ok.is_empty() {
        return Err(Denied::NoAccreditedBackend {
            label: Box::new(label.clone()),
        });
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use enclave_label::{Country, scan};

    use super::*;

    fn principal(clearance: &str, nationality: &str) -> Principal {
        Principal {
            id: PrincipalId::new("p"),
            tenant: TenantId::new("t"),
            clearance: Clearance::new(
                clearance.parse().unwrap(),
                Country::from_code(nationality).unwrap(),
            ),
            role: Role::User,
        }
    }

    #[derive(Debug)]
    struct Backend(Accreditation);

    impl Accredited for Backend {
        fn accreditation(&self) -> &Accreditation {
            &self.0
        }
    }

    fn backend(label: &str, operators: &str) -> Backend {
        Backend(Accreditation::new(
            label.parse().unwrap(),
            [Country::from_code(operators).unwrap()],
        ))
    }

    #[test]
    fn session_defaults_to_unclassified_and_stays_within_clearance() {
        let p = principal("SECRET//NOFORN", "USA");
        assert_eq!(
            open_session(&p, None).unwrap().label(),
            &Label::unclassified()
        );
        assert!(open_session(&p, Some("secret // noforn")).is_ok());
        let denied = open_session(&p, Some("TOP SECRET//NOFORN")).unwrap_err();
        assert_eq!(denied.code(), "classification_exceeds_clearance");
        let denied = open_session(&p, Some("SECRET//SI//NOFORN")).unwrap_err();
        assert_eq!(denied.code(), "classification_exceeds_clearance");
        let denied = open_session(&p, Some("SECRET//NOFORN/NOFORN")).unwrap_err();
        assert_eq!(denied.code(), "invalid_marking");
        assert_eq!(denied.reason_code(), Some(ReasonCode::DuplicateToken));
    }

    #[test]
    fn foreign_nationals_cannot_open_noforn_sessions() {
        let gbr = principal("SECRET//REL TO USA, GBR", "GBR");
        assert!(open_session(&gbr, Some("SECRET//REL TO USA, GBR")).is_ok());
        assert!(open_session(&gbr, Some("SECRET//REL TO USA, FVEY")).is_ok());
        assert_eq!(
            open_session(&gbr, Some("SECRET//NOFORN"))
                .unwrap_err()
                .code(),
            "classification_exceeds_clearance"
        );
    }

    #[test]
    fn content_above_the_session_is_spillage_even_disguised() {
        let p = principal("TOP SECRET//SI//NOFORN", "USA");
        let s = open_session(&p, Some("SECRET//NOFORN")).unwrap();
        for text in [
            "(TS//SI//NF) Sources report...",
            "see ТOP ЅECRET//SI//NOFORN",
            "SECRET//SI//NOFORN\nbody",
        ] {
            let err = check_content(&s, &scan(text)).unwrap_err();
            assert_eq!(err.code(), "spillage_detected", "{text}");
            // The message names labels, never the content.
            assert!(!err.to_string().contains("Sources"));
        }
    }

    #[test]
    fn a_marking_talked_about_in_a_question_is_not_spillage() {
        // Issue 16, edge 11: this question used to be refused as spillage.
        let p = principal("SECRET//NOFORN", "USA");
        let s = open_session(&p, None).unwrap();
        let content = scan("What does SECRET//NOFORN mean?");
        assert_eq!(check_content(&s, &content).unwrap(), Label::unclassified());
        assert_eq!(content.label, Label::unclassified());
        let mentioned = content
            .mentioned
            .as_ref()
            .expect("an indicator for the caller");
        assert_eq!(mentioned.to_string(), "SECRET//NOFORN");
        for text in [
            "documents marked (TS) must be stored in a safe",
            "the header read TOP SECRET//SI",
            "the banner \"TOP SECRET//SI//NOFORN\" has three parts",
        ] {
            let content = scan(text);
            assert_eq!(
                check_content(&s, &content).unwrap(),
                Label::unclassified(),
                "{text}"
            );
            assert!(content.mentioned.is_some(), "{text}");
        }
    }

    #[test]
    fn markings_that_mark_content_are_spillage_wherever_they_stand() {
        let p = principal("TOP SECRET//SI//NOFORN", "USA");
        let s = open_session(&p, None).unwrap();
        for (text, disguised) in [
            ("SECRET//NOFORN\n\nThe plan", false),
            ("• (S) The plan", false),
            ("\"(S) The plan", false),
            ("a) (S) The plan", false),
            ("Note: (S//NF) The plan is set.", false),
            ("x (TS//SI) the plan is set.", false),
            ("Please summarize.\n(S) the plan is set.", false),
            ("What does ЅECRET//NOFORN mean?", true),
            ("documents marked (Ѕ) must be stored", true),
        ] {
            let err = check_content(&s, &scan(text)).unwrap_err();
            assert_eq!(err.code(), "spillage_detected", "{text}");
            let Denied::SpillageDetected { disguised: d, .. } = err else {
                unreachable!()
            };
            assert_eq!(d, disguised, "{text}");
        }
    }

    #[test]
    fn a_mention_beside_asserted_content_does_not_raise_the_label() {
        let p = principal("TOP SECRET//SI//NOFORN", "USA");
        let s = open_session(&p, Some("SECRET//NOFORN")).unwrap();
        let content = scan("(S//NF) The plan.\nWhat does TOP SECRET//SI mean?");
        assert_eq!(
            check_content(&s, &content).unwrap().to_string(),
            "SECRET//NOFORN"
        );
        assert_eq!(
            content.mentioned.map(|l| l.to_string()).as_deref(),
            Some("TOP SECRET//SI")
        );
    }

    #[test]
    fn releasability_differences_raise_the_label_instead_of_refusing() {
        let p = principal("TOP SECRET//SI//NOFORN", "USA");
        let s = open_session(&p, Some("SECRET//REL TO USA, GBR")).unwrap();
        let label = check_content(&s, &scan("(S//NF) plan\n(C//OC/NF) more")).unwrap();
        assert_eq!(label.to_string(), "SECRET//ORCON/NOFORN");
        let plain = check_content(&s, &scan("no markings here")).unwrap();
        assert_eq!(plain.to_string(), "SECRET//REL TO USA, GBR");
        let portions = check_content(&s, &scan("(U) one\n\n(U) two")).unwrap();
        assert_eq!(portions, s.label().join(&Label::unclassified()));
    }

    #[test]
    fn routing_never_falls_back_below_the_label() {
        let backends = [
            backend("UNCLASSIFIED", "USA"),
            backend("SECRET//NOFORN", "USA"),
            backend("TOP SECRET//REL TO USA, GBR", "GBR"),
        ];
        let secret_nf: Label = "SECRET//NOFORN".parse().unwrap();
        let ok = eligible(&backends, &secret_nf).unwrap();
        assert_eq!(ok.len(), 1, "NOFORN never goes to foreign operators");
        let rel: Label = "SECRET//REL TO USA, GBR".parse().unwrap();
        assert_eq!(eligible(&backends, &rel).unwrap().len(), 2);
        let ts: Label = "TOP SECRET//NOFORN".parse().unwrap();
        assert_eq!(
            eligible(&backends, &ts).unwrap_err().code(),
            "no_accredited_backend"
        );
        assert_eq!(
            eligible(&backends, &Label::unclassified()).unwrap().len(),
            3
        );
    }
}
