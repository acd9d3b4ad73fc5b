//! Fixed, epoch-aligned time windows (DESIGN §3.3).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::timestamp::{Timestamp, TimestampError};

const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// The length of every window of a run: a whole number of seconds, written `10s`, `1m`, `1h`
/// as in the reference's `windowDuration` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WindowDuration {
    seconds: u32,
}

/// Why text is not a valid [`WindowDuration`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "window duration {text:?} is invalid: {reason} (expected a positive whole number followed by s, m or h, such as 10s, 1m or 1h)"
)]
pub struct WindowDurationError {
    text: String,
    reason: &'static str,
}

/// revrepl's default window duration: 2 s, for an end-to-end lag of about two seconds
/// (decision 0009). The reference's default is 10 s; a run keeps the window it was recorded
/// with.
pub const DEFAULT_WINDOW_DURATION: WindowDuration = WindowDuration { seconds: 2 };

/// At most one day: longer windows only delay replication.
const MAX_WINDOW_SECONDS: u64 = 86_400;

impl WindowDuration {
    /// A duration of `seconds` seconds; must be between 1 s and 1 day.
    pub fn from_seconds(seconds: u32) -> Option<Self> {
        (1..=MAX_WINDOW_SECONDS)
            .contains(&u64::from(seconds))
            .then_some(Self { seconds })
    }

    /// Whole seconds.
    pub fn seconds(&self) -> u32 {
        self.seconds
    }

    fn nanos(&self) -> i128 {
        i128::from(self.seconds) * NANOS_PER_SECOND
    }

    /// The window that contains `ts`: its start is `ts` floored to the epoch-aligned grid.
    pub fn window_of(&self, ts: Timestamp) -> Result<Window, TimestampError> {
        let start = ts.as_nanos().div_euclid(self.nanos()) * self.nanos();
        Window::from_start_nanos(start, *self)
    }

    /// `ts` floored to the window grid.
    pub fn align_down(&self, ts: Timestamp) -> Result<Timestamp, TimestampError> {
        self.window_of(ts).map(|w| w.start())
    }

    /// The windows from the one containing `from` up to and including the one containing
    /// `to` (empty when `to < from`).
    pub fn windows(&self, from: Timestamp, to: Timestamp) -> Windows {
        let first = self.window_of(from).ok();
        let last_start = self.align_down(to).ok();
        Windows {
            next: first.filter(|_| from <= to),
            last_start,
        }
    }
}

impl FromStr for WindowDuration {
    type Err = WindowDurationError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason| WindowDurationError {
            text: text.to_string(),
            reason,
        };
        let unit_at = text
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| err("the unit is missing"))?;
        let (digits, unit) = text.split_at(unit_at);
        if digits.is_empty() {
            return Err(err("the number is missing"));
        }
        let value: u64 = digits.parse().map_err(|_| err("the number is too large"))?;
        let factor = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            _ => return Err(err("the unit is not s, m or h")),
        };
        let seconds = value
            .checked_mul(factor)
            .filter(|s| (1..=MAX_WINDOW_SECONDS).contains(s))
            .ok_or_else(|| err("it must be between 1s and 24h"))?;
        // Bounded by MAX_WINDOW_SECONDS above.
        Ok(Self {
            seconds: seconds as u32,
        })
    }
}

impl fmt::Display for WindowDuration {
    /// The shortest exact form: `1h`, `90m`, `45s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.seconds;
        if s.is_multiple_of(3_600) {
            write!(f, "{}h", s / 3_600)
        } else if s.is_multiple_of(60) {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

impl Default for WindowDuration {
    fn default() -> Self {
        DEFAULT_WINDOW_DURATION
    }
}

impl Serialize for WindowDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WindowDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A window `[start, end)` on the epoch-aligned grid of a [`WindowDuration`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    start: Timestamp,
    end: Timestamp,
}

impl Window {
    fn from_start_nanos(start: i128, duration: WindowDuration) -> Result<Self, TimestampError> {
        Ok(Self {
            start: Timestamp::from_nanos(start)?,
            end: Timestamp::from_nanos(start + duration.nanos())?,
        })
    }

    /// A window from explicit bounds, as parsed from an object name; `start < end` is checked.
    pub fn from_bounds(start: Timestamp, end: Timestamp) -> Option<Self> {
        (start < end).then_some(Self { start, end })
    }

    /// Inclusive start.
    pub fn start(&self) -> Timestamp {
        self.start
    }

    /// Exclusive end.
    pub fn end(&self) -> Timestamp {
        self.end
    }

    /// Whether `ts` lies in `[start, end)`.
    pub fn contains(&self, ts: Timestamp) -> bool {
        self.start <= ts && ts < self.end
    }

    /// The window's length.
    pub fn duration(&self) -> i128 {
        self.end.as_nanos() - self.start.as_nanos()
    }

    /// The window right after this one, of the same length.
    pub fn next(&self) -> Result<Self, TimestampError> {
        let end = self.end.as_nanos();
        Ok(Self {
            start: self.end,
            end: Timestamp::from_nanos(end + self.duration())?,
        })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}, {})",
            self.start.to_rfc3339_millis(),
            self.end.to_rfc3339_millis()
        )
    }
}

/// Iterator over consecutive windows, from [`WindowDuration::windows`].
#[derive(Debug, Clone)]
pub struct Windows {
    next: Option<Window>,
    last_start: Option<Timestamp>,
}

impl Iterator for Windows {
    type Item = Window;
    fn next(&mut self) -> Option<Window> {
        let current = self.next?;
        if Some(current.start()) > self.last_start {
            self.next = None;
            return None;
        }
        self.next = current.next().ok();
        Some(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(seconds: i64, nanos: u32) -> Timestamp {
        Timestamp::new(seconds, nanos).expect("valid test timestamp")
    }

    fn dur(text: &str) -> WindowDuration {
        text.parse().expect("valid test duration")
    }

    #[test]
    fn parses_durations() {
        assert_eq!("10s".parse::<WindowDuration>().map(|d| d.seconds()), Ok(10));
        assert_eq!("1m".parse::<WindowDuration>().map(|d| d.seconds()), Ok(60));
        assert_eq!(
            "1h".parse::<WindowDuration>().map(|d| d.seconds()),
            Ok(3_600)
        );
        assert_eq!(
            "90s"
                .parse::<WindowDuration>()
                .map(|d| d.to_string())
                .as_deref(),
            Ok("90s")
        );
        assert_eq!(
            "120s"
                .parse::<WindowDuration>()
                .map(|d| d.to_string())
                .as_deref(),
            Ok("2m")
        );
        for bad in [
            "",
            "10",
            "s",
            "0s",
            "10ms",
            "-1s",
            "1.5s",
            "25h",
            "99999999999999999999s",
        ] {
            let err = bad.parse::<WindowDuration>();
            assert!(err.is_err(), "{bad:?} should be rejected");
        }
        let message = "5x".parse::<WindowDuration>().err().map(|e| e.to_string());
        assert!(message.is_some_and(|m| m.contains("\"5x\"") && m.contains("not s, m or h")));
    }

    #[test]
    fn aligns_to_the_epoch_grid_with_nanosecond_commit_times() {
        let d = dur("10s");
        let w = d.window_of(ts(1_719_247_984, 109_263_000));
        assert_eq!(
            w.map(|w| (w.start(), w.end())),
            Ok((ts(1_719_247_980, 0), ts(1_719_247_990, 0)))
        );
        // The last nanosecond of a window belongs to it; the end belongs to the next.
        let last = d
            .window_of(ts(1_719_247_989, 999_999_999))
            .map(|w| w.start());
        assert_eq!(last, Ok(ts(1_719_247_980, 0)));
        let edge = d.window_of(ts(1_719_247_990, 0)).map(|w| w.start());
        assert_eq!(edge, Ok(ts(1_719_247_990, 0)));
        // Before the epoch, flooring goes down, not towards zero.
        let early = d.window_of(ts(-1, 500)).map(|w| w.start());
        assert_eq!(early, Ok(ts(-10, 0)));
    }

    #[test]
    fn iterates_windows_inclusively() {
        let d = dur("10s");
        let all: Vec<_> = d
            .windows(ts(100, 5), ts(125, 0))
            .map(|w| w.start().seconds())
            .collect();
        assert_eq!(all, vec![100, 110, 120]);
        assert_eq!(d.windows(ts(125, 0), ts(100, 0)).count(), 0);
        assert_eq!(d.windows(ts(100, 0), ts(100, 0)).count(), 1);
    }

    proptest! {
        #[test]
        fn window_of_contains_its_timestamp(
            seconds in -1_000_000_000i64..100_000_000_000,
            nanos in 0u32..1_000_000_000,
            width in 1u32..=86_400,
        ) {
            let d = WindowDuration::from_seconds(width).expect("width in range");
            let t = ts(seconds, nanos);
            let w = d.window_of(t).expect("window in range");
            prop_assert!(w.contains(t));
            prop_assert_eq!(w.start().as_nanos() % (i128::from(width) * NANOS_PER_SECOND), 0);
            prop_assert_eq!(w.duration(), i128::from(width) * NANOS_PER_SECOND);
        }
    }
}
