//! A run of the pipeline: its id, aligned start and window duration (`spanner_to_gcs_metadata`).

use std::fmt;

use revrepl_record::{Timestamp, WindowDuration};

use crate::error::MetadataError;

/// The longest run id accepted; the reference's ids are job names of a few dozen characters.
const MAX_RUN_ID_LEN: usize = 256;

/// The id of a run, shared by the reader and the writer of one replication (`run_id` in every
/// table).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(String);

impl RunId {
    /// Validates `id`: non-empty, at most 256 characters, no control characters.
    pub fn new(id: impl Into<String>) -> Result<Self, MetadataError> {
        let id = id.into();
        let reason = if id.is_empty() {
            Some("it is empty")
        } else if id.chars().count() > MAX_RUN_ID_LEN {
            Some("it is longer than 256 characters")
        } else if id.chars().any(char::is_control) {
            Some("it contains a control character")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(MetadataError::InvalidRunId { run_id: id, reason }),
            None => Ok(Self(id)),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for RunId {
    type Err = MetadataError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// One row of `spanner_to_gcs_metadata`: where a run starts and how long its windows are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunRecord {
    run_id: RunId,
    start: Timestamp,
    window: WindowDuration,
}

impl RunRecord {
    /// A run starting at `start`, which must lie on the grid of `window` (use
    /// [`WindowDuration::align_down`] first).
    pub fn new(
        run_id: RunId,
        start: Timestamp,
        window: WindowDuration,
    ) -> Result<Self, MetadataError> {
        if window.align_down(start).ok() != Some(start) {
            return Err(MetadataError::InvalidRequest {
                reason: format!(
                    "run {run_id} starts at {start}, which is not on the grid of its {window} windows"
                ),
            });
        }
        Ok(Self {
            run_id,
            start,
            window,
        })
    }

    /// The run id.
    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }

    /// The start of the run's first window.
    pub fn start(&self) -> Timestamp {
        self.start
    }

    /// The length of every window of the run.
    pub fn window(&self) -> WindowDuration {
        self.window
    }

    /// `start_time` as the reference writes it: `2024-01-05T10:33:50.000Z` (exact, because the
    /// start lies on a grid of whole seconds).
    pub fn start_time_text(&self) -> String {
        self.start.to_rfc3339_millis()
    }

    /// `duration` as the reference writes it: `10s`, `1m`.
    pub fn duration_text(&self) -> String {
        self.window.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_validated() {
        assert!(RunId::new("run-2024_01").is_ok());
        assert!(matches!(
            RunId::new(""),
            Err(MetadataError::InvalidRunId { .. })
        ));
        assert!(matches!(
            RunId::new("a\nb"),
            Err(MetadataError::InvalidRunId { .. })
        ));
        assert!(RunId::new("x".repeat(257)).is_err());
    }

    #[test]
    fn run_start_must_be_aligned_and_is_written_like_the_reference() {
        let run = RunId::new("r").expect("valid run id");
        let window: WindowDuration = "10s".parse().expect("valid duration");
        let aligned = Timestamp::new(1_704_450_830, 0).expect("valid timestamp");
        let record = RunRecord::new(run.clone(), aligned, window).expect("aligned start");
        assert_eq!(record.start_time_text(), "2024-01-05T10:33:50.000Z");
        assert_eq!(record.duration_text(), "10s");
        let unaligned = Timestamp::new(1_704_450_831, 0).expect("valid timestamp");
        let err = RunRecord::new(run, unaligned, window).expect_err("unaligned start");
        assert!(err.to_string().contains("not on the grid"), "{err}");
    }
}
