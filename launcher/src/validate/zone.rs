//! The time zone the writer writes MySQL `datetime` columns in.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use chrono_tz::Tz;

/// An IANA zone (with its daylight-saving rules) or a fixed offset from UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceZone {
    /// A fixed offset such as `+05:30`.
    Offset(FixedOffset),
    /// An IANA zone such as `America/New_York`.
    Named(Tz),
}

impl SourceZone {
    /// The wall-clock time in this zone at `instant`.
    pub fn local(&self, instant: DateTime<Utc>) -> NaiveDateTime {
        match self {
            Self::Offset(offset) => instant.with_timezone(offset).naive_local(),
            Self::Named(zone) => instant.with_timezone(zone).naive_local(),
        }
    }
}

/// Text that is not a time zone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "time zone {0:?} is invalid: expected an IANA name such as America/New_York, UTC, or an offset such as +05:30"
)]
pub struct ZoneError(String);

impl FromStr for SourceZone {
    type Err = ZoneError;

    /// Accepts `UTC`, `Z`, `+HH:MM`, `-HH:MM`, `+HHMM`, `+HH` and IANA names.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || ZoneError(text.to_string());
        let trimmed = text.trim();
        if trimmed.eq_ignore_ascii_case("utc") || trimmed == "Z" {
            return FixedOffset::east_opt(0).map(Self::Offset).ok_or_else(err);
        }
        if let Some(rest) = trimmed.strip_prefix(['+', '-']) {
            let sign = if trimmed.starts_with('-') { -1 } else { 1 };
            let digits: String = rest.chars().filter(|c| *c != ':').collect();
            if !digits.chars().all(|c| c.is_ascii_digit()) || !matches!(digits.len(), 2 | 4) {
                return Err(err());
            }
            let hours: i32 = digits[..2].parse().map_err(|_| err())?;
            let minutes: i32 = digits[2..].parse().unwrap_or(0);
            if hours > 14 || minutes > 59 {
                return Err(err());
            }
            return FixedOffset::east_opt(sign * (hours * 3_600 + minutes * 60))
                .map(Self::Offset)
                .ok_or_else(err);
        }
        trimmed.parse::<Tz>().map(Self::Named).map_err(|_| err())
    }
}

impl fmt::Display for SourceZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Offset(offset) => write!(f, "{offset}"),
            Self::Named(zone) => f.write_str(zone.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_parse() {
        assert_eq!(
            "UTC".parse::<SourceZone>().map(|z| z.to_string()),
            Ok("+00:00".into())
        );
        assert_eq!(
            "+0530".parse::<SourceZone>().map(|z| z.to_string()),
            Ok("+05:30".into())
        );
        assert_eq!(
            "-03".parse::<SourceZone>().map(|z| z.to_string()),
            Ok("-03:00".into())
        );
        assert!("Europe/Paris".parse::<SourceZone>().is_ok());
        assert!("Mars/Olympus".parse::<SourceZone>().is_err());
        assert!("+25:00".parse::<SourceZone>().is_err());
    }
}
