//! Per-shard progress: what the reader has created (`shard_file_create_progress`, `data_seen`),
//! what the writer has applied (`shard_file_process_progress`), and the text of a shard's last
//! definite error (`shard_errors`).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use revrepl_record::{ShardId, Timestamp, Window};

use crate::error::MetadataError;
use crate::run::RunId;

/// The id of a `data_seen` row, built exactly as the reference builds it so that operators'
/// queries keep working: the decimal nanos then the decimal seconds of the window end,
/// reversed (to spread writes over Spanner's key space), then `_<run_id>_<shard>`.
///
/// A window ending at 1704450840 s, 0 ns gives `"0" + "1704450840"` reversed:
/// `04805440710_<run_id>_<shard>`.
pub fn data_seen_id(window_end: Timestamp, run_id: &RunId, shard: &ShardId) -> String {
    let digits = format!("{}{}", window_end.nanos(), window_end.seconds());
    let reversed: String = digits.chars().rev().collect();
    format!("{reversed}_{run_id}_{shard}")
}

/// One atomic write of the reader (DESIGN §3.4): the `data_seen` rows of one or more finalized
/// windows, and `created_upto` advanced to [`upto`](Self::upto) for every shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedWindows {
    upto: Timestamp,
    shards: BTreeSet<ShardId>,
    seen: BTreeSet<(ShardId, Timestamp)>,
}

impl CreatedWindows {
    /// The write for one finalized `window`: every shard in `shards` is created up to its
    /// end, and each shard in `with_data` (which need not be repeated in `shards`) gets a
    /// `data_seen` row for it.
    pub fn window(
        window: Window,
        shards: impl IntoIterator<Item = ShardId>,
        with_data: impl IntoIterator<Item = ShardId>,
    ) -> Self {
        let seen: BTreeSet<_> = with_data.into_iter().map(|s| (s, window.end())).collect();
        let mut shards: BTreeSet<_> = shards.into_iter().collect();
        shards.extend(seen.iter().map(|(s, _)| s.clone()));
        Self {
            upto: window.end(),
            shards,
            seen,
        }
    }

    /// The write for several finalized windows at once: every shard in `shards` (and in
    /// `seen`) is created up to `upto`, and each `(shard, window end)` in `seen` gets a
    /// `data_seen` row. Every window end must be at or before `upto`.
    pub fn new(
        upto: Timestamp,
        shards: impl IntoIterator<Item = ShardId>,
        seen: impl IntoIterator<Item = (ShardId, Timestamp)>,
    ) -> Result<Self, MetadataError> {
        let seen: BTreeSet<_> = seen.into_iter().collect();
        if let Some((shard, end)) = seen.iter().find(|(_, end)| *end > upto) {
            return Err(MetadataError::InvalidRequest {
                reason: format!(
                    "window of shard {shard:?} ending at {end} is after created_upto {upto} of \
                     the same write"
                ),
            });
        }
        let mut shards: BTreeSet<_> = shards.into_iter().collect();
        shards.extend(seen.iter().map(|(s, _)| s.clone()));
        Ok(Self { upto, shards, seen })
    }

    /// The new `created_upto` of every shard (never lowered: a shard already beyond it keeps
    /// its value).
    pub fn upto(&self) -> Timestamp {
        self.upto
    }

    /// The shards whose `created_upto` advances, sorted.
    pub fn shards(&self) -> impl ExactSizeIterator<Item = &ShardId> {
        self.shards.iter()
    }

    /// The `(shard, window end)` pairs that get a `data_seen` row, sorted.
    pub fn seen(&self) -> impl ExactSizeIterator<Item = (&ShardId, Timestamp)> {
        self.seen.iter().map(|(s, t)| (s, *t))
    }
}

/// One row of `shard_file_create_progress`: the reader has finalized every window of `shard`
/// that ends at or before `created_upto`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CreateProgress {
    /// The shard.
    pub shard: ShardId,
    /// End of the latest finalized window.
    pub created_upto: Timestamp,
}

/// The writer's status of a shard, as the reference spells it in
/// `shard_file_process_progress.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProcessStatus {
    /// The window starting at `file_start_interval` was applied.
    Success,
    /// Applying the window starting at `file_start_interval` failed with a definite error; the
    /// shard stopped there.
    Error,
    /// An operator asked to apply the shard again from `file_start_interval`.
    Reprocess,
}

impl ProcessStatus {
    /// `SUCCESS`, `ERROR` or `REPROCESS`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::Error => "ERROR",
            Self::Reprocess => "REPROCESS",
        }
    }
}

impl fmt::Display for ProcessStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that is not `SUCCESS`, `ERROR` or `REPROCESS`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("status {0:?} is not SUCCESS, ERROR or REPROCESS")]
pub struct UnknownStatus(pub String);

impl FromStr for ProcessStatus {
    type Err = UnknownStatus;
    /// Exactly as the reference compares: upper case, no spaces.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "SUCCESS" => Ok(Self::Success),
            "ERROR" => Ok(Self::Error),
            "REPROCESS" => Ok(Self::Reprocess),
            other => Err(UnknownStatus(other.to_owned())),
        }
    }
}

/// One row of `shard_file_process_progress`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProcessProgress {
    /// The shard.
    pub shard: ShardId,
    /// Its status.
    pub status: ProcessStatus,
    /// Start of the window last applied (`SUCCESS`), that failed (`ERROR`), or to apply again
    /// from (`REPROCESS`).
    pub file_start_interval: Timestamp,
}

impl ProcessProgress {
    /// Where the writer continues this shard in the resume modes (DESIGN §7): the window after
    /// `file_start_interval` for `SUCCESS`, that window itself for `ERROR` and `REPROCESS`.
    pub fn resume_from(&self, window: revrepl_record::WindowDuration) -> Timestamp {
        match self.status {
            ProcessStatus::Success => window
                .window_of(self.file_start_interval)
                .and_then(|w| w.next())
                .map_or(self.file_start_interval, |w| w.start()),
            ProcessStatus::Error | ProcessStatus::Reprocess => self.file_start_interval,
        }
    }
}

/// The longest error text `shard_errors` keeps, in bytes (UTF-8); longer texts are cut on a
/// character boundary by [`truncate_error_text`].
pub const MAX_ERROR_TEXT_BYTES: usize = 4096;

/// What marks an error text cut by [`truncate_error_text`].
const TRUNCATED_MARK: &str = " …";

/// `text` as `shard_errors` stores it: at most [`MAX_ERROR_TEXT_BYTES`] bytes, cut on a
/// character boundary and ending with ` …` when it was longer.
pub fn truncate_error_text(text: &str) -> String {
    if text.len() <= MAX_ERROR_TEXT_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_ERROR_TEXT_BYTES - TRUNCATED_MARK.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{TRUNCATED_MARK}", &text[..end])
}

/// One row of `shard_errors`: the text of the last definite error that stopped a shard, and the
/// window it stopped at. It stays after the shard recovers: it describes the `ERROR` status of
/// `shard_file_process_progress` only while that row says `ERROR` at the same window.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShardError {
    /// The shard.
    pub shard: ShardId,
    /// Start of the window that failed.
    pub file_start_interval: Timestamp,
    /// The error's text (at most [`MAX_ERROR_TEXT_BYTES`] bytes).
    pub error: String,
    /// When the error was recorded.
    pub recorded_at: Timestamp,
}

impl ShardError {
    /// Whether this error explains `progress`: the shard is in `ERROR` at the window that
    /// failed with this error.
    pub fn explains(&self, progress: &ProcessProgress) -> bool {
        progress.status == ProcessStatus::Error
            && progress.shard == self.shard
            && progress.file_start_interval == self.file_start_interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64, nanos: u32) -> Timestamp {
        Timestamp::new(seconds, nanos).expect("valid test timestamp")
    }

    fn shard(id: &str) -> ShardId {
        ShardId::new(id).expect("valid test shard")
    }

    #[test]
    fn data_seen_id_matches_the_reference() {
        let run = RunId::new("run1").expect("valid run id");
        assert_eq!(
            data_seen_id(ts(1_704_450_840, 0), &run, &shard("ls1")),
            "04805440710_run1_ls1"
        );
        // Nanos come first, then seconds, and the whole digit string is reversed.
        assert_eq!(
            data_seen_id(ts(1_704_450_840, 123_000_000), &run, &shard("s_2")),
            "0480544071000000321_run1_s_2"
        );
    }

    #[test]
    fn created_windows_reject_data_after_upto_and_include_seen_shards() {
        let upto = ts(100, 0);
        let err = CreatedWindows::new(upto, [shard("a")], [(shard("a"), ts(110, 0))]);
        assert!(matches!(err, Err(MetadataError::InvalidRequest { .. })));
        let ok = CreatedWindows::new(upto, [shard("a")], [(shard("b"), ts(90, 0))])
            .expect("window ends before upto");
        let shards: Vec<_> = ok.shards().map(ShardId::as_str).collect();
        assert_eq!(shards, vec!["a", "b"]);
    }

    #[test]
    fn status_round_trips_exactly() {
        for status in [
            ProcessStatus::Success,
            ProcessStatus::Error,
            ProcessStatus::Reprocess,
        ] {
            assert_eq!(status.as_str().parse::<ProcessStatus>(), Ok(status));
        }
        assert!("success".parse::<ProcessStatus>().is_err());
    }

    #[test]
    fn long_error_texts_are_cut_on_a_character_boundary() {
        assert_eq!(truncate_error_text("short"), "short");
        let exact = "x".repeat(MAX_ERROR_TEXT_BYTES);
        assert_eq!(truncate_error_text(&exact), exact);
        // Three-byte characters never line up with the cut.
        for prefix in ["", "a", "ab"] {
            let long = format!("{prefix}{}", "€".repeat(MAX_ERROR_TEXT_BYTES));
            let cut = truncate_error_text(&long);
            assert!(cut.len() <= MAX_ERROR_TEXT_BYTES, "{}", cut.len());
            assert!(cut.len() > MAX_ERROR_TEXT_BYTES - 8, "{}", cut.len());
            assert!(cut.ends_with(" …"));
            assert!(long.starts_with(cut.trim_end_matches(" …")));
        }
    }

    #[test]
    fn an_error_explains_only_the_error_status_at_its_window() {
        let error = ShardError {
            shard: shard("a"),
            file_start_interval: ts(100, 0),
            error: "boom".into(),
            recorded_at: ts(105, 0),
        };
        let at = |status, start| ProcessProgress {
            shard: shard("a"),
            status,
            file_start_interval: ts(start, 0),
        };
        assert!(error.explains(&at(ProcessStatus::Error, 100)));
        assert!(!error.explains(&at(ProcessStatus::Error, 110)));
        assert!(!error.explains(&at(ProcessStatus::Success, 100)));
        assert!(!error.explains(&at(ProcessStatus::Reprocess, 100)));
    }

    #[test]
    fn resume_point_follows_the_run_modes() {
        let window = "10s".parse().expect("valid duration");
        let at = |status| ProcessProgress {
            shard: shard("a"),
            status,
            file_start_interval: ts(100, 0),
        };
        assert_eq!(at(ProcessStatus::Success).resume_from(window), ts(110, 0));
        assert_eq!(at(ProcessStatus::Error).resume_from(window), ts(100, 0));
        assert_eq!(at(ProcessStatus::Reprocess).resume_from(window), ts(100, 0));
    }
}
