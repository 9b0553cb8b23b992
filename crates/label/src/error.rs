//! Why a marking was rejected: stable reason codes and the error that carries one.

use std::fmt;

macro_rules! reason_codes {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, strict_only: $strict:literal; )*) => {
        /// A stable reason code for a rejected marking.
        ///
        /// The string form (`as_str`) is part of Enclave's interface: it is the first token of
        /// the CLI's error line and the `code` detail of the `invalid_marking` API error. Codes
        /// are never renamed. `docs/REASON_CODES.md` lists each with the rule it enforces.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ReasonCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ReasonCode {
            /// Every code, in alphabetical order of its string form.
            pub const ALL: &'static [ReasonCode] = &[$(ReasonCode::$variant,)*];

            /// The stable `UPPER_SNAKE` string form.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( ReasonCode::$variant => $code, )*
                }
            }

            /// Whether lenient mode normalizes this problem instead of rejecting it.
            pub fn is_strict_only(self) -> bool {
                match self {
                    $( ReasonCode::$variant => $strict, )*
                }
            }
        }
    };
}

reason_codes! {
    /// A banner abbreviates its classification (`TS//SI//NF`).
    AbbreviatedClassificationInBanner = "ABBREVIATED_CLASSIFICATION_IN_BANNER", strict_only: false;
    /// RD, FRD and TFNI appear together.
    AeaConflict = "AEA_CONFLICT", strict_only: false;
    /// A banner uses a portion-mark abbreviation (`NF`) where the banner form (`NOFORN`) belongs.
    BannerUsesPortionForm = "BANNER_USES_PORTION_FORM", strict_only: true;
    /// Categories are out of register order.
    CategoryOrder = "CATEGORY_ORDER", strict_only: false;
    /// RD-CNWDI below SECRET.
    CnwdiRequiresSOrTs = "CNWDI_REQUIRES_S_OR_TS", strict_only: false;
    /// CUI categories are not in alphabetical order.
    CuiCategoryOrder = "CUI_CATEGORY_ORDER", strict_only: true;
    /// DISPLAY ONLY with no countries.
    DisplayOnlyRequiresList = "DISPLAY_ONLY_REQUIRES_LIST", strict_only: false;
    /// Dissemination controls out of register order.
    DissemOrder = "DISSEM_ORDER", strict_only: true;
    /// A token appears twice.
    DuplicateToken = "DUPLICATE_TOKEN", strict_only: false;
    /// A category between `//` separators is empty (`SECRET////NOFORN`).
    EmptyCategory = "EMPTY_CATEGORY", strict_only: false;
    /// The marking is empty.
    EmptyMarking = "EMPTY_MARKING", strict_only: false;
    /// EXDIS without NOFORN.
    ExdisRequiresNoforn = "EXDIS_REQUIRES_NOFORN", strict_only: false;
    /// EYES ONLY together with REL TO or NOFORN.
    EyesRelConflict = "EYES_REL_CONFLICT", strict_only: false;
    /// FGI countries out of order.
    FgiOrder = "FGI_ORDER", strict_only: true;
    /// FOUO on classified information.
    FouoRequiresUnclassified = "FOUO_REQUIRES_UNCLASSIFIED", strict_only: false;
    /// HCS without a compartment. Rejected in every mode; the scanner still labels it HCS.
    HcsRequiresCompartment = "HCS_REQUIRES_COMPARTMENT", strict_only: false;
    /// HCS without NOFORN.
    HcsRequiresNoforn = "HCS_REQUIRES_NOFORN", strict_only: false;
    /// IMCON below SECRET.
    ImconRequiresSOrTs = "IMCON_REQUIRES_S_OR_TS", strict_only: false;
    /// A character that is not part of the marking alphabet (a look-alike, an invisible
    /// character or a control character).
    InvalidCharacter = "INVALID_CHARACTER", strict_only: true;
    /// JOINT with a single owner, or without USA.
    JointSingleOwner = "JOINT_SINGLE_OWNER", strict_only: false;
    /// LES-NF or SBU-NF together with another foreign-disclosure marking.
    LesNfFdrConflict = "LES_NF_FDR_CONFLICT", strict_only: false;
    /// LIMDIS on classified information.
    LimdisRequiresUnclassified = "LIMDIS_REQUIRES_UNCLASSIFIED", strict_only: false;
    /// The marking's shape is broken: unbalanced parentheses, stray characters.
    MalformedMarking = "MALFORMED_MARKING", strict_only: false;
    /// The marking is not in upper case.
    MarkingCase = "MARKING_CASE", strict_only: true;
    /// The marking is longer than any real marking can be.
    MarkingTooLong = "MARKING_TOO_LONG", strict_only: false;
    /// NODIS without NOFORN.
    NodisRequiresNoforn = "NODIS_REQUIRES_NOFORN", strict_only: false;
    /// NOFORN together with a release or display list.
    NofornConflict = "NOFORN_CONFLICT", strict_only: false;
    /// Two mutually exclusive non-IC markings (LES and LES-NF).
    NonIcConflict = "NON_IC_CONFLICT", strict_only: false;
    /// RESTRICTED used as a U.S. classification.
    NonUsClassificationForUsOwner = "NON_US_CLASSIFICATION_FOR_US_OWNER", strict_only: false;
    /// ORCON together with RELIDO.
    OrconRelidoConflict = "ORCON_RELIDO_CONFLICT", strict_only: false;
    /// ORCON or EYES ONLY on unclassified information.
    OrconRequiresClassified = "ORCON_REQUIRES_CLASSIFIED", strict_only: false;
    /// A portion mark uses a banner word (`NOFORN`) where the portion form (`NF`) belongs.
    PortionUsesBannerForm = "PORTION_USES_BANNER_FORM", strict_only: true;
    /// RD, FRD or TFNI on unclassified information.
    RdRequiresClassified = "RD_REQUIRES_CLASSIFIED", strict_only: false;
    /// RELIDO together with DISPLAY ONLY.
    RelidoDisplayOnlyConflict = "RELIDO_DISPLAY_ONLY_CONFLICT", strict_only: false;
    /// A REL TO list that does not name USA.
    RelToMissingUsa = "REL_TO_MISSING_USA", strict_only: false;
    /// A REL TO list out of order.
    RelToOrder = "REL_TO_ORDER", strict_only: true;
    /// A bare `REL` in a banner, where the list must be written out.
    RelToRequiresList = "REL_TO_REQUIRES_LIST", strict_only: false;
    /// `REL TO USA` with no partner.
    RelToWithoutPartner = "REL_TO_WITHOUT_PARTNER", strict_only: false;
    /// RISK SENSITIVE below SECRET.
    RsenRequiresSOrTs = "RSEN_REQUIRES_S_OR_TS", strict_only: false;
    /// RESERVE without a compartment.
    RsvRequiresCompartment = "RSV_REQUIRES_COMPARTMENT", strict_only: false;
    /// The `SAR-` indicator is repeated for a second program.
    SapIndicatorRepeated = "SAP_INDICATOR_REPEATED", strict_only: true;
    /// SAP programs out of order.
    SapOrder = "SAP_ORDER", strict_only: true;
    /// SCI control systems or compartments out of order.
    SciOrder = "SCI_ORDER", strict_only: true;
    /// An SCI control on unclassified information.
    SciRequiresClassified = "SCI_REQUIRES_CLASSIFIED", strict_only: false;
    /// Spaces around separators, doubled spaces, missing space after a comma.
    SeparatorSpacing = "SEPARATOR_SPACING", strict_only: true;
    /// SI-GAMMA without ORCON.
    SiGRequiresOrcon = "SI_G_REQUIRES_ORCON", strict_only: false;
    /// SI-GAMMA below TOP SECRET.
    SiGRequiresTs = "SI_G_REQUIRES_TS", strict_only: false;
    /// SI on unclassified information.
    SiRequiresClassified = "SI_REQUIRES_CLASSIFIED", strict_only: false;
    /// TALENT KEYHOLE below SECRET.
    TkRequiresSOrTs = "TK_REQUIRES_S_OR_TS", strict_only: false;
    /// A classification that is not U, R, C, S or TS (or a foreign or NATO equivalent).
    UnknownClassification = "UNKNOWN_CLASSIFICATION", strict_only: false;
    /// A country or tetragraph code that is not registered.
    UnknownCountryCode = "UNKNOWN_COUNTRY_CODE", strict_only: false;
    /// A CUI category that is not registered.
    UnknownCuiCategory = "UNKNOWN_CUI_CATEGORY", strict_only: false;
    /// A control marking that is not registered where it stands.
    UnknownMarkingToken = "UNKNOWN_MARKING_TOKEN", strict_only: false;
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected marking: the stable reason code and a sentence that says what is wrong and how to
/// fix it. Displayed as `<CODE>: <message>`, the CLI's one-line error format.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct MarkingError {
    code: ReasonCode,
    message: String,
}

impl MarkingError {
    pub(crate) fn new(code: ReasonCode, message: impl Into<String>) -> MarkingError {
        MarkingError {
            code,
            message: message.into(),
        }
    }

    /// The stable reason code.
    pub fn code(&self) -> ReasonCode {
        self.code
    }

    /// What is wrong and how to fix it (lowercase, no final period).
    pub fn message(&self) -> &str {
        &self.message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_sorted_upper_snake() {
        let strs: Vec<&str> = ReasonCode::ALL.iter().map(|c| c.as_str()).collect();
        let mut sorted = strs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            strs, sorted,
            "codes must be unique and listed alphabetically"
        );
        for s in strs {
            assert!(
                s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{s}"
            );
        }
    }

    #[test]
    fn every_code_is_documented() {
        let doc = include_str!("../../../docs/REASON_CODES.md");
        for code in ReasonCode::ALL {
            assert!(
                doc.contains(&format!("`{}`", code.as_str())),
                "{code} missing from docs"
            );
        }
    }
}
