//! The controlled values of the marking system, compiled into the binary.
//!
//! Every table comes from a CSV file under `crates/label/data/` (see its `SOURCE.md`), embedded
//! with `include_str!` and parsed once on first use. Nothing is read from disk at run time.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::LazyLock;

/// A fast, non-cryptographic hasher (the Fx hash of rustc) for lookups keyed by marking
/// tokens. The keys are short and the maps are not exposed to collision attacks that matter:
/// the registry tables are fixed, and the scanner's per-document cache is bounded.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A `HashMap` with [`FxHasher`].
pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A country or international organization that may appear in a `REL TO`, `DISPLAY ONLY` or
/// `FGI` list.
///
/// The value is the code's position in the controlled value list (`USA` first, then GENC
/// trigraphs, then tetragraphs), so ordering codes by this value is exactly the order that
/// CAPCO requires in a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Country(u16);

/// The United States, always first in a release list.
pub const USA: Country = Country(0);

impl Country {
    /// Looks up a code (`GBR`, `FVEY`, …); `None` if it is not a registered value.
    pub fn from_code(code: &str) -> Option<Country> {
        REGISTRY.countries_by_code.get(code).copied()
    }

    /// The code as written in markings (`GBR`).
    pub fn code(self) -> &'static str {
        REGISTRY
            .countries
            .get(usize::from(self.0))
            .map_or("???", |c| c.code)
    }

    /// The registered name of the country or organization.
    pub fn name(self) -> &'static str {
        REGISTRY
            .countries
            .get(usize::from(self.0))
            .map_or("", |c| c.name)
    }

    /// Whether this code names a group of countries (a tetragraph such as `FVEY` or `NATO`).
    pub fn is_tetragraph(self) -> bool {
        REGISTRY
            .countries
            .get(usize::from(self.0))
            .is_some_and(|c| c.tetragraph)
    }

    /// The publicly known members of a tetragraph that the roll-up rules allow to be expanded
    /// (`FVEY`, `ACGU`); `None` for countries and for groups whose membership is not public.
    pub fn members(self) -> Option<&'static BTreeSet<Country>> {
        REGISTRY
            .tetragraph_members
            .get(usize::from(self.0))
            .and_then(Option::as_ref)
    }
}

impl std::fmt::Display for Country {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// Whether `code` is a published SCI control system or compartment (`SI`, `SI-G`, `TK`, …).
pub(crate) fn is_published_sci(token: &str) -> bool {
    REGISTRY.sci.contains_key(token)
}

/// The published SCI value whose long name is `name` (`TALENT KEYHOLE` → `TK`).
pub(crate) fn sci_by_title(name: &str) -> Option<&'static str> {
    REGISTRY.sci_titles.get(name).copied()
}

/// Whether `code` is a registered CUI specified category.
pub(crate) fn is_cui_specified(code: &str) -> bool {
    REGISTRY.cui_specified.contains(code)
}

/// Whether `code` is a registered CUI basic category.
pub(crate) fn is_cui_basic(code: &str) -> bool {
    REGISTRY.cui_basic.contains(code)
}

/// All registered country and tetragraph codes, in list order.
pub fn country_codes() -> impl Iterator<Item = Country> {
    (0..REGISTRY.countries.len()).filter_map(|i| u16::try_from(i).ok().map(Country))
}

// === the tables ===

struct CountryRow {
    code: &'static str,
    name: &'static str,
    tetragraph: bool,
}

struct Registry {
    countries: Vec<CountryRow>,
    countries_by_code: FxMap<&'static str, Country>,
    /// Public members of each expandable group, indexed by the group's list position.
    tetragraph_members: Vec<Option<BTreeSet<Country>>>,
    sci: FxMap<&'static str, &'static str>,
    sci_titles: FxMap<&'static str, &'static str>,
    cui_specified: HashSet<&'static str, BuildHasherDefault<FxHasher>>,
    cui_basic: HashSet<&'static str, BuildHasherDefault<FxHasher>>,
}

const REL_TO_CSV: &str = include_str!("../data/rel_to_codes.csv");
const MEMBERSHIP_CSV: &str = include_str!("../data/tetragraph_membership_public.csv");
const SCI_CSV: &str = include_str!("../data/sci_controls.csv");
const CUI_SPECIFIED_CSV: &str = include_str!("../data/cui_specified_categories.csv");
const CUI_BASIC_CSV: &str = include_str!("../data/cui_basic_categories.csv");

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::load);

impl Registry {
    fn load() -> Registry {
        let mut countries = Vec::new();
        let mut countries_by_code = FxMap::default();
        // INVARIANT: rel_to_codes.csv lists codes in CVE order starting with USA (checked by the
        // `usa_is_first_and_order_is_cve_order` test), so the row index is the list order.
        for row in csv_rows(REL_TO_CSV) {
            let (Some(code), Some(name), Some(kind)) = (row.get(1), row.get(2), row.get(3)) else {
                continue;
            };
            let Ok(index) = u16::try_from(countries.len()) else {
                break;
            };
            countries_by_code.insert(*code, Country(index));
            countries.push(CountryRow {
                code,
                name,
                tetragraph: *kind == "tetragraph",
            });
        }
        let mut tetragraph_members: Vec<Option<BTreeSet<Country>>> = Vec::new();
        tetragraph_members.resize(countries.len(), None);
        for row in csv_rows(MEMBERSHIP_CSV) {
            let (Some(tetra), Some(members)) = (row.first(), row.get(1)) else {
                continue;
            };
            let Some(&tetra) = countries_by_code.get(tetra) else {
                continue;
            };
            let set: BTreeSet<Country> = members
                .split_whitespace()
                .filter_map(|m| countries_by_code.get(m).copied())
                .collect();
            // A group with no public membership cannot be expanded (TEYE).
            if !set.is_empty()
                && let Some(slot) = tetragraph_members.get_mut(usize::from(tetra.0))
            {
                *slot = Some(set);
            }
        }
        let mut sci = FxMap::default();
        let mut sci_titles = FxMap::default();
        for row in csv_rows(SCI_CSV) {
            let (Some(value), Some(title)) = (row.first(), row.get(1)) else {
                continue;
            };
            sci.insert(*value, *title);
            if title != value && !value.contains('-') {
                sci_titles.insert(*title, *value);
            }
        }
        let first_column = |text: &'static str| {
            csv_rows(text)
                .filter_map(|r| r.first().copied())
                .collect::<HashSet<_, BuildHasherDefault<FxHasher>>>()
        };
        Registry {
            countries,
            countries_by_code,
            tetragraph_members,
            sci,
            sci_titles,
            cui_specified: first_column(CUI_SPECIFIED_CSV),
            cui_basic: first_column(CUI_BASIC_CSV),
        }
    }
}

/// Splits a CSV text into rows of fields, skipping the header. Quoted fields keep their
/// surrounding quotes stripped only when they contain no escaped quote, which is all the tables
/// need: the fields we read are never quoted.
fn csv_rows(text: &'static str) -> impl Iterator<Item = Vec<&'static str>> {
    text.lines().skip(1).filter(|l| !l.is_empty()).map(|line| {
        let mut fields = Vec::new();
        let mut rest = line;
        loop {
            if let Some(quoted) = rest.strip_prefix('"') {
                // Find the closing quote that is not doubled.
                let bytes = quoted.as_bytes();
                let mut i = 0;
                let mut end = quoted.len();
                while i < bytes.len() {
                    if bytes.get(i) == Some(&b'"') {
                        if bytes.get(i + 1) == Some(&b'"') {
                            i += 2;
                            continue;
                        }
                        end = i;
                        break;
                    }
                    i += 1;
                }
                fields.push(quoted.get(..end).unwrap_or(""));
                rest = quoted.get(end + 1..).unwrap_or("");
                match rest.strip_prefix(',') {
                    Some(r) => rest = r,
                    None => break,
                }
            } else {
                match rest.split_once(',') {
                    Some((field, r)) => {
                        fields.push(field);
                        rest = r;
                    }
                    None => {
                        fields.push(rest);
                        break;
                    }
                }
            }
        }
        fields
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usa_is_first_and_order_is_cve_order() {
        assert_eq!(Country::from_code("USA"), Some(USA));
        for (i, row) in csv_rows(REL_TO_CSV).enumerate() {
            assert_eq!(
                row[0],
                i.to_string(),
                "rel_to_codes.csv must be in CVE order"
            );
        }
        let gbr = Country::from_code("GBR").unwrap();
        let fvey = Country::from_code("FVEY").unwrap();
        assert!(USA < gbr && gbr < fvey);
        assert!(fvey.is_tetragraph() && !gbr.is_tetragraph());
        assert_eq!(REGISTRY.countries.len(), 340);
    }

    #[test]
    fn quoted_names_do_not_shift_columns() {
        let bes = Country::from_code("BES").unwrap();
        assert_eq!(bes.name(), "Bonaire, Sint Eustatius, and Saba");
        assert!(!bes.is_tetragraph());
        assert!(Country::from_code("UNCK").unwrap().is_tetragraph());
    }

    #[test]
    fn public_tetragraph_membership_is_loaded() {
        let fvey = Country::from_code("FVEY").unwrap();
        let members: Vec<_> = fvey.members().unwrap().iter().map(|c| c.code()).collect();
        assert_eq!(members, ["USA", "AUS", "CAN", "GBR", "NZL"]);
        assert!(Country::from_code("TEYE").unwrap().members().is_none());
        assert!(Country::from_code("ISAF").unwrap().members().is_none());
    }

    #[test]
    fn sci_and_cui_tables_are_loaded() {
        assert!(is_published_sci("SI-G"));
        assert_eq!(sci_by_title("TALENT KEYHOLE"), Some("TK"));
        assert!(is_cui_specified("CTI"));
        assert!(is_cui_basic("PRVCY"));
        assert!(!is_cui_basic("XYZZY"));
    }
}
