//! Principals: who may call the gateway, with their tenant, clearance, nationality and role.

use enclave_label::{Country, Label};

use crate::StoreError;

/// Longest principal or tenant name, in bytes.
const MAX_NAME_LEN: usize = 64;

/// The roles a principal can have.
const ROLES: [&str; 4] = ["user", "admin", "auditor", "metrics"];

/// A principal to add. [`Store::add_principal`](crate::Store::add_principal) checks every field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPrincipal {
    /// Unique name: 1–64 characters of `A-Z a-z 0-9 . _ @ -`.
    pub name: String,
    /// Tenant: the same characters as `name`.
    pub tenant: String,
    /// Clearance, a marking (`SECRET//NOFORN`); stored as its canonical banner.
    pub clearance: String,
    /// Nationality, a country trigraph (`USA`).
    pub nationality: String,
    /// `user`, `admin`, `auditor` or `metrics`.
    pub role: String,
}

/// A stored principal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrincipalRecord {
    /// Unique name.
    pub name: String,
    /// Tenant.
    pub tenant: String,
    /// Clearance as a canonical banner marking.
    pub clearance: String,
    /// Nationality trigraph.
    pub nationality: String,
    /// `user`, `admin`, `auditor` or `metrics`.
    pub role: String,
    /// When it was added (unix seconds).
    pub created_at: i64,
}

impl NewPrincipal {
    /// Checks every field and returns the values to store: the clearance as its canonical banner,
    /// the nationality and role in canonical case.
    pub(crate) fn validate(&self) -> Result<NewPrincipal, StoreError> {
        check_name("principal name", &self.name)?;
        check_name("tenant", &self.tenant)?;
        let role = self.role.to_ascii_lowercase();
        if !ROLES.contains(&role.as_str()) {
            return Err(StoreError::Invalid(format!(
                "unknown role `{}`: expected one of user, admin, auditor, metrics",
                printable(&self.role)
            )));
        }
        let code = self.nationality.to_ascii_uppercase();
        let country = (code.len() == 3)
            .then(|| Country::from_code(&code))
            .flatten()
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "unknown nationality `{}`: expected a country trigraph such as USA or GBR \
                     (see `enclave marking list`)",
                    printable(&self.nationality)
                ))
            })?;
        let clearance: Label = self.clearance.parse().map_err(|e| {
            StoreError::Invalid(format!(
                "invalid clearance `{}`: {e}",
                printable(&self.clearance)
            ))
        })?;
        Ok(NewPrincipal {
            name: self.name.clone(),
            tenant: self.tenant.clone(),
            clearance: clearance.banner(),
            nationality: country.code().to_owned(),
            role,
        })
    }
}

fn check_name(what: &str, name: &str) -> Result<(), StoreError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(allowed) {
        return Err(StoreError::Invalid(format!(
            "invalid {what} `{}`: use 1-{MAX_NAME_LEN} characters of A-Z a-z 0-9 . _ @ -",
            printable(name)
        )));
    }
    Ok(())
}

/// User input as it may appear inside an error line: at most 80 characters, control characters
/// escaped, so a hostile value cannot forge log lines or flood a terminal.
fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_default).collect();
    if s.chars().nth(80).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, clearance: &str, nationality: &str, role: &str) -> NewPrincipal {
        NewPrincipal {
            name: name.into(),
            tenant: "agency-a".into(),
            clearance: clearance.into(),
            nationality: nationality.into(),
            role: role.into(),
        }
    }

    #[test]
    fn valid_principal_is_canonicalized() {
        let v = p("alice@agency.gov", "secret // noforn", "usa", "Admin")
            .validate()
            .unwrap();
        assert_eq!(v.clearance, "SECRET//NOFORN");
        assert_eq!(v.nationality, "USA");
        assert_eq!(v.role, "admin");
    }

    #[test]
    fn invalid_fields_name_the_field() {
        let cases = [
            (p("", "SECRET", "USA", "user"), "invalid principal name"),
            (
                p(&"a".repeat(65), "SECRET", "USA", "user"),
                "invalid principal name",
            ),
            (p("a b", "SECRET", "USA", "user"), "invalid principal name"),
            (p("a", "SUPER SECRET", "USA", "user"), "invalid clearance"),
            (p("a", "SECRET", "XXX", "user"), "unknown nationality"),
            (p("a", "SECRET", "FVEY", "user"), "unknown nationality"),
            (p("a", "SECRET", "USA", "root"), "unknown role"),
        ];
        for (np, want) in cases {
            let err = np.validate().unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}");
        }
    }

    #[test]
    fn printable_escapes_and_truncates() {
        assert_eq!(printable("a\nb"), "a\\nb");
        assert_eq!(printable(&"x".repeat(100)).chars().count(), 81);
    }
}
