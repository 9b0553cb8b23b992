//! The time of an audit entry: a UTC instant with millisecond precision, written in one fixed
//! RFC 3339 form, `YYYY-MM-DDTHH:MM:SS.mmmZ`.
//!
//! The crate never reads a clock: the caller passes the time in (the gateway converts
//! `SystemTime::now()` with [`Timestamp::from_unix_millis`]).

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::EntryError;

const MILLIS_PER_DAY: u64 = 86_400_000;
/// 10000-01-01T00:00:00.000Z in milliseconds since the Unix epoch: four-digit years only.
const END_MILLIS: u64 = 2_932_897 * MILLIS_PER_DAY;

/// A UTC instant between 1970-01-01 and 9999-12-31, in milliseconds.
///
/// `Display` writes `2026-11-24T09:30:00.125Z`; `FromStr` accepts exactly that form (uppercase
/// `T` and `Z`, three fraction digits, no offset, no leap second), so parsing and rendering are
/// inverse to each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    unix_millis: u64,
}

impl Timestamp {
    /// The instant `unix_millis` milliseconds after 1970-01-01T00:00:00Z.
    ///
    /// # Errors
    ///
    /// [`EntryError::TimeOutOfRange`] from the year 10000 on.
    pub fn from_unix_millis(unix_millis: u64) -> Result<Self, EntryError> {
        if unix_millis >= END_MILLIS {
            return Err(EntryError::TimeOutOfRange);
        }
        Ok(Self { unix_millis })
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(&self) -> u64 {
        self.unix_millis
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.unix_millis / MILLIS_PER_DAY;
        let in_day = self.unix_millis % MILLIS_PER_DAY;
        let (year, month, day) = civil_from_days(days);
        let (hour, minute) = (in_day / 3_600_000, in_day / 60_000 % 60);
        let (second, milli) = (in_day / 1000 % 60, in_day % 1000);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z"
        )
    }
}

impl FromStr for Timestamp {
    type Err = EntryError;

    fn from_str(text: &str) -> Result<Self, EntryError> {
        let b = text.as_bytes();
        let shape = b.len() == 24
            && b.iter().enumerate().all(|(i, &c)| match i {
                4 | 7 => c == b'-',
                10 => c == b'T',
                13 | 16 => c == b':',
                19 => c == b'.',
                23 => c == b'Z',
                _ => c.is_ascii_digit(),
            });
        if !shape {
            return Err(EntryError::MalformedTime);
        }
        let num = |from: usize, to: usize| -> u64 {
            b.get(from..to)
                .unwrap_or_default()
                .iter()
                .fold(0, |acc, &c| acc * 10 + u64::from(c - b'0'))
        };
        let (year, month, day) = (num(0, 4), num(5, 7), num(8, 10));
        let (hour, minute, second, milli) = (num(11, 13), num(14, 16), num(17, 19), num(20, 23));
        let valid = year >= 1970
            && (1..=12).contains(&month)
            && day >= 1
            && day <= days_in_month(year, month)
            && hour < 24
            && minute < 60
            && second < 60;
        if !valid {
            return Err(EntryError::MalformedTime);
        }
        let days = days_from_civil(year, month, day);
        let millis = days * MILLIS_PER_DAY + ((hour * 60 + minute) * 60 + second) * 1000 + milli;
        Self::from_unix_millis(millis)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TimestampVisitor;

        impl Visitor<'_> for TimestampVisitor {
            type Value = Timestamp;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a UTC time like `2026-11-24T09:30:00.125Z`")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Timestamp, E> {
                text.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_str(TimestampVisitor)
    }
}

fn is_leap(year: u64) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a date from 1970 on (H. Hinnant's `days_from_civil`, unsigned).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day counted from 1970-01-01 (H. Hinnant's `civil_from_days`, unsigned).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn renders_known_instants() {
        let at = |ms| Timestamp::from_unix_millis(ms).unwrap().to_string();
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(1_795_512_600_125), "2026-11-24T09:30:00.125Z");
        assert_eq!(at(END_MILLIS - 1), "9999-12-31T23:59:59.999Z");
        assert_eq!(
            Timestamp::from_unix_millis(END_MILLIS),
            Err(EntryError::TimeOutOfRange)
        );
    }

    #[test]
    fn parses_only_the_canonical_form() {
        let t: Timestamp = "2026-11-24T09:30:00.125Z".parse().unwrap();
        assert_eq!(t.unix_millis(), 1_795_512_600_125);
        for bad in [
            "2026-11-24T09:30:00Z",
            "2026-11-24T09:30:00.125+00:00",
            "2026-11-24t09:30:00.125z",
            "2026-11-24 09:30:00.125Z",
            "2026-02-29T00:00:00.000Z",
            "1900-02-28T00:00:00.000Z",
            "1969-12-31T23:59:59.999Z",
            "2026-13-01T00:00:00.000Z",
            "2026-00-01T00:00:00.000Z",
            "2026-04-31T00:00:00.000Z",
            "2026-11-24T24:00:00.000Z",
            "2026-11-24T23:60:00.000Z",
            "2016-12-31T23:59:60.000Z",
            "2026-11-24T09:30:00.1250Z",
            "+026-11-24T09:30:00.125Z",
            "",
        ] {
            assert_eq!(
                bad.parse::<Timestamp>(),
                Err(EntryError::MalformedTime),
                "{bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn render_and_parse_are_inverse(ms in 0..END_MILLIS) {
            let t = Timestamp::from_unix_millis(ms).unwrap();
            prop_assert_eq!(t.to_string().parse::<Timestamp>(), Ok(t));
        }
    }
}
