//! `revrepl status`: every shard's progress, read from the metadata store only.
//!
//! Per shard: the writer's status (`SUCCESS`, `ERROR`, `REPROCESS`, or `NOT_STARTED` before the
//! writer records anything), how far the reader has created windows (`created_upto`), how far
//! the writer has applied (the end of the `SUCCESS` window, or the start of the `ERROR` /
//! `REPROCESS` window, which is not applied), the lag of MySQL behind now, how far the writer
//! is behind the reader (the reference guide's lag query, reference §3.15), and, for a shard
//! in `ERROR`, the error's text as the writer recorded it in `shard_errors` ([`StoredErrors`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use revrepl_metadata::{
    MetadataStore, ProcessProgress, ProcessStatus, RunId, RunRecord, ShardError,
};
use revrepl_record::{ShardId, Timestamp};
use serde::Serialize;

use crate::error::LauncherError;

/// The status of every shard of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    /// The run.
    pub run_id: String,
    /// The metadata store read.
    pub store: String,
    /// Start of the run's first window.
    #[serde(serialize_with = "rfc3339")]
    pub run_start: Timestamp,
    /// The run's window length, e.g. `10s`.
    pub window: String,
    /// When the report was made.
    #[serde(serialize_with = "rfc3339")]
    pub now: Timestamp,
    /// One entry per shard, sorted by shard.
    pub shards: Vec<ShardStatus>,
    /// The processes running the run now: the holders of its unexpired leases (the reader,
    /// each shard's writer), sorted by role. Empty without a `leases` table.
    pub running: Vec<RunningProcess>,
}

/// A process holding one of the run's leases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunningProcess {
    /// `reader` or `writer:<shard>`.
    pub role: String,
    /// Host, pid and random id of the process.
    pub owner: String,
    /// When its lease expires unless renewed.
    #[serde(serialize_with = "rfc3339")]
    pub lease_until: Timestamp,
}

/// The writer's status of a shard as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ShardState {
    /// The last window recorded was applied.
    Success,
    /// The shard stopped at a window with a definite error.
    Error,
    /// An operator asked to apply the shard again.
    Reprocess,
    /// The writer has recorded nothing for the shard yet.
    NotStarted,
}

impl ShardState {
    /// The state as shown: `SUCCESS`, `ERROR`, `REPROCESS`, `NOT_STARTED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::Error => "ERROR",
            Self::Reprocess => "REPROCESS",
            Self::NotStarted => "NOT_STARTED",
        }
    }
}

impl From<ProcessStatus> for ShardState {
    fn from(status: ProcessStatus) -> Self {
        match status {
            ProcessStatus::Success => Self::Success,
            ProcessStatus::Error => Self::Error,
            ProcessStatus::Reprocess => Self::Reprocess,
        }
    }
}

/// One shard's line of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShardStatus {
    /// The logical shard.
    pub shard: String,
    /// The writer's status.
    pub status: ShardState,
    /// End of the last window the reader finished (`shard_file_create_progress`).
    #[serde(serialize_with = "optional_rfc3339")]
    pub created_upto: Option<Timestamp>,
    /// `shard_file_process_progress.file_start_interval`, as stored.
    #[serde(serialize_with = "optional_rfc3339")]
    pub file_start_interval: Option<Timestamp>,
    /// Everything before this time is applied to MySQL.
    #[serde(serialize_with = "optional_rfc3339")]
    pub applied_upto: Option<Timestamp>,
    /// Seconds from `applied_upto` to now: how stale the MySQL shard is.
    pub lag_seconds: Option<f64>,
    /// Seconds from `applied_upto` to `created_upto`: how far the writer is behind the reader.
    pub behind_reader_seconds: Option<f64>,
    /// The last error, for shards in `ERROR`: the writer's error text when it recorded one for
    /// the failed window (see [`StoredErrors`]), else which window failed.
    pub last_error: Option<String>,
}

impl StatusReport {
    /// Whether any shard is in `ERROR` (the command then exits with 3).
    pub fn has_errors(&self) -> bool {
        self.shards.iter().any(|s| s.status == ShardState::Error)
    }
}

/// Where the text of a shard's last error comes from: [`StoredErrors`] (what the writer
/// recorded in `shard_errors`), or [`FromProgress`] (only the progress row, as the reference's
/// tables hold no error text).
pub trait LastErrors {
    /// The last error of `shard`, given its progress row.
    fn last_error(&self, shard: &ShardId, progress: &ProcessProgress) -> Option<String>;
}

/// The last error as far as the progress tables tell it: which window failed.
#[derive(Debug, Clone, Copy, Default)]
pub struct FromProgress;

impl LastErrors for FromProgress {
    fn last_error(&self, _shard: &ShardId, progress: &ProcessProgress) -> Option<String> {
        (progress.status == ProcessStatus::Error).then(|| {
            format!(
                "the window starting at {} failed; the writer's log has the error",
                progress.file_start_interval
            )
        })
    }
}

/// The error texts the writer recorded in `shard_errors` for a run, read in one query before a
/// report is built. A shard in `ERROR` shows its recorded text when that text is about the
/// window the shard failed at; otherwise (no `shard_errors` table, as in a database the
/// reference created, or a text that could not be recorded) it falls back to [`FromProgress`].
#[derive(Debug, Clone, Default)]
pub struct StoredErrors {
    errors: BTreeMap<ShardId, ShardError>,
}

impl StoredErrors {
    /// The errors in `errors` (one per shard; a later one for the same shard wins).
    pub fn new(errors: impl IntoIterator<Item = ShardError>) -> Self {
        Self {
            errors: errors.into_iter().map(|e| (e.shard.clone(), e)).collect(),
        }
    }

    /// Reads the run's recorded errors from `store` (one query). The texts only add detail to
    /// the report: when they cannot be read, a warning is logged and the report falls back
    /// to [`FromProgress`] (the progress itself is read, and its errors reported, by
    /// [`status`]).
    pub async fn load(store: &dyn MetadataStore, run_id: &RunId) -> Self {
        match store.shard_errors(run_id).await {
            Ok(errors) => Self::new(errors),
            Err(error) => {
                tracing::warn!(
                    %error,
                    table = store.tables().shard_errors(),
                    "the error texts cannot be read; LAST ERROR shows only the failed window"
                );
                Self::default()
            }
        }
    }
}

impl LastErrors for StoredErrors {
    fn last_error(&self, shard: &ShardId, progress: &ProcessProgress) -> Option<String> {
        match self.errors.get(shard) {
            Some(error) if error.explains(progress) => Some(error.error.clone()),
            _ => FromProgress.last_error(shard, progress),
        }
    }
}

/// Reads the run's progress and recorded error texts from `store` and builds the report:
/// [`status`] with [`StoredErrors`].
pub async fn status_with_stored_errors(
    store: &dyn MetadataStore,
    run_id: &RunId,
    now: Timestamp,
) -> Result<StatusReport, LauncherError> {
    let errors = StoredErrors::load(store, run_id).await;
    status(store, run_id, &errors, now).await
}

/// Reads the run's progress from `store` and builds the report.
pub async fn status(
    store: &dyn MetadataStore,
    run_id: &RunId,
    errors: &dyn LastErrors,
    now: Timestamp,
) -> Result<StatusReport, LauncherError> {
    let run = store.run(run_id).await?.ok_or_else(|| {
        LauncherError::Usage(format!(
            "run {:?} is not recorded in metadata store {} (table {}): start the reader \
             in regular mode first, or pass the run id the reader used with --run-id",
            run_id.as_str(),
            store.location(),
            store.tables().run()
        ))
    })?;
    let created: BTreeMap<ShardId, Timestamp> = store
        .create_progress(run_id)
        .await?
        .into_iter()
        .map(|p| (p.shard, p.created_upto))
        .collect();
    let processed: BTreeMap<ShardId, ProcessProgress> = store
        .list_process_progress(run_id, None)
        .await?
        .into_iter()
        .map(|p| (p.shard.clone(), p))
        .collect();
    let mut shards: Vec<&ShardId> = created.keys().chain(processed.keys()).collect();
    shards.sort();
    shards.dedup();
    let shards = shards
        .into_iter()
        .map(|shard| {
            shard_status(
                &run,
                shard,
                created.get(shard).copied(),
                processed.get(shard),
                errors,
                now,
            )
        })
        .collect();
    let running = match store.leases(run_id).await {
        Ok(leases) => leases
            .into_iter()
            .filter(|lease| lease.expires_at > now)
            .map(|lease| RunningProcess {
                role: lease.role,
                owner: lease.owner,
                lease_until: lease.expires_at,
            })
            .collect(),
        Err(error) => {
            tracing::warn!(%error, "cannot read the leases: not showing what runs");
            Vec::new()
        }
    };
    Ok(StatusReport {
        run_id: run_id.to_string(),
        store: store.location().to_string(),
        run_start: run.start(),
        window: run.window().to_string(),
        now,
        shards,
        running,
    })
}

fn shard_status(
    run: &RunRecord,
    shard: &ShardId,
    created_upto: Option<Timestamp>,
    progress: Option<&ProcessProgress>,
    errors: &dyn LastErrors,
    now: Timestamp,
) -> ShardStatus {
    let applied_upto = progress.map(|p| applied_upto(run, p));
    ShardStatus {
        shard: shard.to_string(),
        status: progress.map_or(ShardState::NotStarted, |p| p.status.into()),
        created_upto,
        file_start_interval: progress.map(|p| p.file_start_interval),
        applied_upto,
        lag_seconds: applied_upto.map(|a| seconds_between(a, now)),
        behind_reader_seconds: applied_upto
            .zip(created_upto)
            .map(|(a, c)| seconds_between(a, c)),
        last_error: progress.and_then(|p| errors.last_error(shard, p)),
    }
}

/// Everything before this time is applied: the end of a `SUCCESS` window, the start of an
/// `ERROR` or `REPROCESS` window.
fn applied_upto(run: &RunRecord, progress: &ProcessProgress) -> Timestamp {
    match progress.status {
        ProcessStatus::Success => run
            .window()
            .window_of(progress.file_start_interval)
            .map_or(progress.file_start_interval, |w| w.end()),
        ProcessStatus::Error | ProcessStatus::Reprocess => progress.file_start_interval,
    }
}

/// `to - from` in seconds, never negative.
fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    let nanos = to.as_nanos() - from.as_nanos();
    (nanos.max(0) as f64 / 1e9 * 1000.0).round() / 1000.0
}

/// The report as an aligned text table.
pub fn render_text(report: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "run {}  (started {}, {} windows)  store {}",
        report.run_id, report.run_start, report.window, report.store
    );
    if report.shards.is_empty() {
        let _ = writeln!(
            out,
            "no shards recorded yet: the reader has not registered any"
        );
        return out;
    }
    let headers = [
        "SHARD",
        "STATUS",
        "CREATED UP TO",
        "APPLIED UP TO",
        "LAG",
        "BEHIND READER",
        "LAST ERROR",
    ];
    let rows: Vec<[String; 7]> = report
        .shards
        .iter()
        .map(|s| {
            [
                s.shard.clone(),
                s.status.as_str().to_string(),
                s.created_upto.map_or("-".into(), |t| t.to_rfc3339_millis()),
                s.applied_upto.map_or("-".into(), |t| t.to_rfc3339_millis()),
                s.lag_seconds.map_or("-".into(), seconds_text),
                s.behind_reader_seconds.map_or("-".into(), seconds_text),
                s.last_error.as_deref().map_or("-".into(), one_line),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ");
            }
        }
        text.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(&headers.map(String::from)));
    for row in &rows {
        let _ = writeln!(out, "{}", line(row));
    }
    let errors = report
        .shards
        .iter()
        .filter(|s| s.status == ShardState::Error)
        .count();
    if errors > 0 {
        let _ = writeln!(
            out,
            "{errors} shard(s) in ERROR: fix the cause (see LAST ERROR and the writer's log), \
             then run the writer with --mode resumeFailed, or `revrepl reprocess --shard …`"
        );
    }
    for process in &report.running {
        let role = match process.role.strip_prefix("writer:") {
            Some(shard) => format!("the writer of shard {shard}"),
            None => format!("the {}", process.role),
        };
        let _ = writeln!(
            out,
            "running: {role} on {} (lease until {})",
            process.owner,
            process.lease_until.to_rfc3339_millis()
        );
    }
    out
}

/// `text` on one line: line breaks and tabs become spaces, other control characters go.
fn one_line(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            '\n' | '\r' | '\t' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect()
}

/// `12.3s` under a minute, then `4m 05s`, `3h 07m`, `12d 03h`.
pub(crate) fn seconds_text(seconds: f64) -> String {
    if seconds < 60.0 {
        return format!("{seconds:.1}s");
    }
    let whole = seconds as u64;
    let (days, hours, minutes, secs) = (
        whole / 86_400,
        whole % 86_400 / 3_600,
        whole % 3_600 / 60,
        whole % 60,
    );
    if whole < 3_600 {
        format!("{minutes}m {secs:02}s")
    } else if whole < 86_400 {
        format!("{hours}h {minutes:02}m")
    } else {
        format!("{days}d {hours:02}h")
    }
}

fn rfc3339<S: serde::Serializer>(ts: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&ts.to_rfc3339())
}

fn optional_rfc3339<S: serde::Serializer>(
    ts: &Option<Timestamp>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match ts {
        Some(ts) => serializer.collect_str(&ts.to_rfc3339()),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use revrepl_record::WindowDuration;

    fn ts(seconds: i64) -> Timestamp {
        Timestamp::new(seconds, 0).expect("valid timestamp")
    }

    fn run() -> RunRecord {
        let window: WindowDuration = "10s".parse().expect("window");
        RunRecord::new(RunId::new("r").expect("run id"), ts(1_000), window).expect("run")
    }

    fn progress(shard: &str, status: ProcessStatus, start: i64) -> ProcessProgress {
        ProcessProgress {
            shard: ShardId::new(shard).expect("shard"),
            status,
            file_start_interval: ts(start),
        }
    }

    #[test]
    fn applied_up_to_depends_on_the_status() {
        let run = run();
        assert_eq!(
            applied_upto(&run, &progress("a", ProcessStatus::Success, 1_050)),
            ts(1_060)
        );
        assert_eq!(
            applied_upto(&run, &progress("a", ProcessStatus::Error, 1_050)),
            ts(1_050)
        );
        assert_eq!(
            applied_upto(&run, &progress("a", ProcessStatus::Reprocess, 1_050)),
            ts(1_050)
        );
    }

    #[test]
    fn lags_are_measured_from_applied_up_to() {
        let run = run();
        let shard = ShardId::new("a").expect("shard");
        let line = shard_status(
            &run,
            &shard,
            Some(ts(1_100)),
            Some(&progress("a", ProcessStatus::Error, 1_050)),
            &FromProgress,
            ts(1_200),
        );
        assert_eq!(line.status, ShardState::Error);
        assert_eq!(line.lag_seconds, Some(150.0));
        assert_eq!(line.behind_reader_seconds, Some(50.0));
        assert!(
            line.last_error
                .as_deref()
                .is_some_and(|e| e.contains("failed"))
        );
        let fresh = shard_status(
            &run,
            &shard,
            Some(ts(1_100)),
            None,
            &FromProgress,
            ts(1_200),
        );
        assert_eq!(fresh.status, ShardState::NotStarted);
        assert_eq!(fresh.lag_seconds, None);
        assert_eq!(fresh.last_error, None);
    }

    #[test]
    fn stored_error_texts_show_only_for_the_window_that_failed() {
        let run = run();
        let stored = |shard: &str, start: i64, text: &str| ShardError {
            shard: ShardId::new(shard).expect("shard"),
            file_start_interval: ts(start),
            error: text.into(),
            recorded_at: ts(start + 1),
        };
        let errors = StoredErrors::new([
            stored(
                "a",
                1_050,
                "shard a, table users: column \"name\" is too narrow",
            ),
            stored("b", 1_020, "an old error of b"),
            stored("c", 1_030, "c failed once, then recovered"),
        ]);
        let line = |shard: &str, status, start| {
            shard_status(
                &run,
                &ShardId::new(shard).expect("shard"),
                Some(ts(1_100)),
                Some(&progress(shard, status, start)),
                &errors,
                ts(1_200),
            )
            .last_error
        };
        assert_eq!(
            line("a", ProcessStatus::Error, 1_050).as_deref(),
            Some("shard a, table users: column \"name\" is too narrow")
        );
        // b failed again at another window without a recorded text: the fallback.
        let b = line("b", ProcessStatus::Error, 1_060).expect("b is in ERROR");
        assert!(
            b.contains("failed") && b.contains("writer's log") && !b.contains("old"),
            "{b}"
        );
        assert_eq!(line("c", ProcessStatus::Success, 1_090), None);
        assert_eq!(line("c", ProcessStatus::Reprocess, 1_030), None);
        let d = line("d", ProcessStatus::Error, 1_070).expect("d is in ERROR");
        assert!(d.contains("writer's log"), "{d}");
    }

    #[test]
    fn long_lags_read_as_days_and_hours() {
        assert_eq!(seconds_text(12.34), "12.3s");
        assert_eq!(seconds_text(245.0), "4m 05s");
        assert_eq!(seconds_text(11_220.0), "3h 07m");
        assert_eq!(seconds_text(90_817_613.7), "1051d 03h");
    }

    #[test]
    fn the_table_lines_up_and_explains_errors() {
        let report = StatusReport {
            run_id: "r".into(),
            store: "sqlite x.db".into(),
            run_start: ts(1_000),
            window: "10s".into(),
            now: ts(1_200),
            shards: vec![
                ShardStatus {
                    shard: "a".into(),
                    status: ShardState::Success,
                    created_upto: Some(ts(1_100)),
                    file_start_interval: Some(ts(1_090)),
                    applied_upto: Some(ts(1_100)),
                    lag_seconds: Some(100.0),
                    behind_reader_seconds: Some(0.0),
                    last_error: None,
                },
                ShardStatus {
                    shard: "longer-shard".into(),
                    status: ShardState::Error,
                    created_upto: Some(ts(1_100)),
                    file_start_interval: Some(ts(1_050)),
                    applied_upto: Some(ts(1_050)),
                    lag_seconds: Some(150.0),
                    behind_reader_seconds: Some(50.0),
                    last_error: Some("boom:\n  at line 2".into()),
                },
            ],
            running: vec![RunningProcess {
                role: "writer:a".into(),
                owner: "host-1 pid 7 #00ff".into(),
                lease_until: ts(1_230),
            }],
        };
        let text = render_text(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("SHARD         STATUS"), "{text}");
        assert_eq!(lines[2].find("SUCCESS"), lines[3].find("ERROR"), "{text}");
        assert!(text.contains("1 shard(s) in ERROR"), "{text}");
        assert!(lines[3].ends_with("boom:   at line 2"), "{text}");
        assert!(report.has_errors());
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["shards"][1]["status"], "ERROR");
        assert_eq!(json["shards"][1]["last_error"], "boom:\n  at line 2");
        assert_eq!(json["shards"][0]["applied_upto"], "1970-01-01T00:18:20Z");
        assert!(
            text.contains(
                "running: the writer of shard a on host-1 pid 7 #00ff (lease until \
                 1970-01-01T00:20:30.000Z)"
            ),
            "{text}"
        );
        assert_eq!(json["running"][0]["role"], "writer:a");
    }
}
