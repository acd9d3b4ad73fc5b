//! Commit timestamps with exact nanoseconds, in the reference's `{seconds, nanos}` shape.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize};

const NANOS_PER_SECOND: i128 = 1_000_000_000;
/// Seconds of 0001-01-01T00:00:00Z, the smallest Spanner timestamp.
const MIN_SECONDS: i64 = -62_135_596_800;
/// Seconds of 9999-12-31T23:59:59Z, the largest Spanner timestamp.
const MAX_SECONDS: i64 = 253_402_300_799;

/// A point in time with nanosecond precision, as Spanner commit timestamps are.
///
/// Serialized as `{"seconds": <i64>, "nanos": <i32>}`, the Gson form of
/// `com.google.cloud.Timestamp` used in window files. Ordering is chronological.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Timestamp {
    seconds: i64,
    nanos: u32,
}

/// Why a value is not a valid [`Timestamp`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// Nanoseconds outside `0..1_000_000_000`.
    #[error("nanos {0} is outside 0..1000000000")]
    Nanos(i64),
    /// Outside Spanner's range 0001-01-01 to 9999-12-31.
    #[error("seconds {0} is outside the range 0001-01-01 to 9999-12-31")]
    Range(i128),
    /// Text that is not an RFC 3339 timestamp.
    #[error("{text:?} is not an RFC 3339 timestamp: {reason}")]
    Text {
        /// The text given.
        text: String,
        /// What the parser said.
        reason: String,
    },
}

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Self = Self {
        seconds: 0,
        nanos: 0,
    };

    /// A timestamp from seconds since the epoch and nanoseconds within the second.
    pub fn new(seconds: i64, nanos: u32) -> Result<Self, TimestampError> {
        if i128::from(nanos) >= NANOS_PER_SECOND {
            return Err(TimestampError::Nanos(i64::from(nanos)));
        }
        if !(MIN_SECONDS..=MAX_SECONDS).contains(&seconds) {
            return Err(TimestampError::Range(i128::from(seconds)));
        }
        Ok(Self { seconds, nanos })
    }

    /// Whole seconds since the epoch (floored).
    pub fn seconds(&self) -> i64 {
        self.seconds
    }

    /// Nanoseconds within the second, `0..1_000_000_000`.
    pub fn nanos(&self) -> u32 {
        self.nanos
    }

    /// Nanoseconds since the epoch; exact for every valid timestamp.
    pub fn as_nanos(&self) -> i128 {
        i128::from(self.seconds) * NANOS_PER_SECOND + i128::from(self.nanos)
    }

    /// The timestamp `nanos` nanoseconds after the epoch.
    pub fn from_nanos(nanos: i128) -> Result<Self, TimestampError> {
        let seconds = nanos.div_euclid(NANOS_PER_SECOND);
        let rest = nanos.rem_euclid(NANOS_PER_SECOND);
        let seconds = i64::try_from(seconds).map_err(|_| TimestampError::Range(seconds))?;
        // `rest` is in 0..1e9, so it fits.
        Self::new(seconds, rest as u32)
    }

    /// Parses RFC 3339 text with any fractional precision (`2024-01-05T10:33:50.123456789Z`).
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampError> {
        let parsed = DateTime::parse_from_rfc3339(text).map_err(|e| TimestampError::Text {
            text: text.to_string(),
            reason: e.to_string(),
        })?;
        Self::from(parsed.with_timezone(&Utc)).checked()
    }

    /// RFC 3339 in UTC with exactly three fractional digits, as the reference names files:
    /// `2024-01-05T10:33:50.000Z`. Sub-millisecond digits are truncated.
    pub fn to_rfc3339_millis(&self) -> String {
        self.to_datetime()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// RFC 3339 in UTC with as many fractional digits as needed (none, 3, 6 or 9).
    pub fn to_rfc3339(&self) -> String {
        self.to_datetime()
            .to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }

    /// The same instant as a `chrono` date-time.
    pub fn to_datetime(&self) -> DateTime<Utc> {
        // Every valid Timestamp is inside chrono's range, which is far wider than Spanner's.
        DateTime::from_timestamp(self.seconds, self.nanos).unwrap_or_default()
    }

    fn checked(self) -> Result<Self, TimestampError> {
        Self::new(self.seconds, self.nanos)
    }
}

impl From<DateTime<Utc>> for Timestamp {
    /// Converts without range checks; use [`Timestamp::parse_rfc3339`] for input.
    fn from(value: DateTime<Utc>) -> Self {
        Self {
            seconds: value.timestamp(),
            nanos: value.timestamp_subsec_nanos().min(999_999_999),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            seconds: i64,
            #[serde(default)]
            nanos: i64,
        }
        // Gson omits neither field, but `nanos: 0` may be dropped by other writers.
        let raw = Raw::deserialize(deserializer)?;
        let nanos = u32::try_from(raw.nanos)
            .map_err(|_| serde::de::Error::custom(TimestampError::Nanos(raw.nanos)))?;
        Self::new(raw.seconds, nanos).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_seconds_then_nanos() {
        let a = Timestamp::new(10, 999_999_999).ok();
        let b = Timestamp::new(11, 0).ok();
        assert!(a < b);
    }

    #[test]
    fn nanos_round_trip_including_before_epoch() {
        for n in [
            0i128,
            1,
            -1,
            1_719_247_984_109_263_000,
            -62_135_596_800_000_000_000,
        ] {
            let ts = Timestamp::from_nanos(n);
            assert_eq!(ts.map(|t| t.as_nanos()), Ok(n));
        }
        let before = Timestamp::from_nanos(-1);
        assert_eq!(before, Timestamp::new(-1, 999_999_999));
    }

    #[test]
    fn rejects_out_of_range_values() {
        assert_eq!(
            Timestamp::new(0, 1_000_000_000),
            Err(TimestampError::Nanos(1_000_000_000))
        );
        assert!(Timestamp::new(MAX_SECONDS + 1, 0).is_err());
        assert!(Timestamp::parse_rfc3339("2024-13-01T00:00:00Z").is_err());
        let bad: Result<Timestamp, _> = serde_json::from_str(r#"{"seconds":1,"nanos":-5}"#);
        assert!(bad.is_err_and(|e| e.to_string().contains("nanos -5")));
    }

    #[test]
    fn formats_like_the_reference() {
        let ts = Timestamp::new(1_704_450_830, 0).ok();
        assert_eq!(
            ts.map(|t| t.to_rfc3339_millis()).as_deref(),
            Some("2024-01-05T10:33:50.000Z")
        );
        let precise = Timestamp::parse_rfc3339("2024-06-24T16:53:04.109263001Z");
        assert_eq!(precise, Timestamp::new(1_719_247_984, 109_263_001));
        assert_eq!(
            precise.map(|t| t.to_rfc3339()).as_deref(),
            Ok("2024-06-24T16:53:04.109263001Z")
        );
    }

    #[test]
    fn serde_shape_matches_gson() {
        let ts = Timestamp::new(1_719_247_984, 109_263_000).ok();
        let json = ts.map(|t| serde_json::to_string(&t).ok());
        assert_eq!(
            json.flatten().as_deref(),
            Some(r#"{"seconds":1719247984,"nanos":109263000}"#)
        );
    }
}
