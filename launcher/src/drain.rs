//! `revrepl drain`: waits until every shard has applied everything committed up to a Spanner
//! timestamp — the cut-back step (`docs/operations.md`, "Cutting back to MySQL").
//!
//! A shard has applied every change committed at or before `until` once the window that holds
//! `until` is applied: its applied-up-to time (the end of its last applied window) is past
//! `until`. The writer applies whole windows, so that is exact.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use revrepl_metadata::{MetadataStore, RunId};
use revrepl_record::Timestamp;

use crate::error::LauncherError;
use crate::status::{ShardState, StatusReport, status_with_stored_errors};

/// Where every shard stands against the drain target.
#[derive(Debug, Clone, PartialEq)]
pub enum DrainState {
    /// Every shard applied everything up to the target.
    Drained,
    /// Some shards are still behind (shard, applied up to).
    Behind(Vec<(String, Option<Timestamp>)>),
    /// Some shards stopped in `ERROR`: draining cannot finish until they are fixed.
    Failed(Vec<String>),
}

/// Compares a status report with the drain target `until`.
pub fn drain_state(report: &StatusReport, until: Timestamp) -> DrainState {
    let failed: Vec<String> = report
        .shards
        .iter()
        .filter(|s| s.status == ShardState::Error)
        .map(|s| s.shard.clone())
        .collect();
    if !failed.is_empty() {
        return DrainState::Failed(failed);
    }
    let behind: Vec<(String, Option<Timestamp>)> = report
        .shards
        .iter()
        .filter(|s| s.applied_upto.is_none_or(|applied| applied <= until))
        .map(|s| (s.shard.clone(), s.applied_upto))
        .collect();
    if behind.is_empty() && !report.shards.is_empty() {
        DrainState::Drained
    } else {
        DrainState::Behind(behind)
    }
}

/// How a drain ended.
#[derive(Debug, Clone, PartialEq)]
pub enum DrainOutcome {
    /// Every shard caught up, after this long.
    Drained(Duration),
    /// A shard is in `ERROR`.
    Failed(Vec<String>),
    /// `timeout` passed first; the shards still behind.
    TimedOut(Vec<(String, Option<Timestamp>)>),
}

/// One progress line: which shards are still behind `until` and by how much.
pub fn progress_line(until: Timestamp, total: usize, state: &DrainState) -> String {
    match state {
        DrainState::Drained => format!("drain to {until}: all {total} shard(s) caught up"),
        DrainState::Failed(shards) => {
            format!("drain to {until}: shard(s) in ERROR: {}", shards.join(", "))
        }
        DrainState::Behind(behind) => {
            let mut line = format!(
                "drain to {until}: {} of {total} shard(s) caught up; waiting for",
                total.saturating_sub(behind.len())
            );
            for (shard, applied) in behind {
                match applied {
                    Some(applied) => {
                        let seconds = (until.as_nanos() - applied.as_nanos()) as f64 / 1e9;
                        let _ = write!(line, " {shard} ({seconds:.1}s behind)");
                    }
                    None => {
                        let _ = write!(line, " {shard} (nothing applied yet)");
                    }
                }
            }
            line
        }
    }
}

/// Polls the metadata store every `interval` until every shard of `run_id` applied everything
/// up to `until`, a shard fails, or `timeout` passes; `say` gets a progress line whenever the
/// picture changes (and at least every 10 s).
pub async fn drain(
    store: &dyn MetadataStore,
    run_id: &RunId,
    until: Timestamp,
    interval: Duration,
    timeout: Option<Duration>,
    say: &mut dyn FnMut(&str),
) -> Result<DrainOutcome, LauncherError> {
    let started = Instant::now();
    let mut last_line = String::new();
    let mut last_said = Instant::now();
    loop {
        let now = Timestamp::from(chrono::Utc::now());
        let report = status_with_stored_errors(store, run_id, now).await?;
        let state = drain_state(&report, until);
        let line = progress_line(until, report.shards.len(), &state);
        if line != last_line || last_said.elapsed() >= Duration::from_secs(10) {
            say(&line);
            last_said = Instant::now();
            last_line = line;
        }
        match state {
            DrainState::Drained => return Ok(DrainOutcome::Drained(started.elapsed())),
            DrainState::Failed(shards) => return Ok(DrainOutcome::Failed(shards)),
            DrainState::Behind(behind) => {
                if timeout.is_some_and(|t| started.elapsed() >= t) {
                    return Ok(DrainOutcome::TimedOut(behind));
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::ShardStatus;

    fn ts(seconds: i64) -> Timestamp {
        Timestamp::new(seconds, 0).expect("ts")
    }

    fn shard(name: &str, status: ShardState, applied: Option<i64>) -> ShardStatus {
        ShardStatus {
            shard: name.into(),
            status,
            created_upto: Some(ts(200)),
            file_start_interval: None,
            applied_upto: applied.map(ts),
            lag_seconds: None,
            behind_reader_seconds: None,
            last_error: None,
        }
    }

    fn report(shards: Vec<ShardStatus>) -> StatusReport {
        StatusReport {
            run_id: "r".into(),
            store: "test".into(),
            run_start: ts(100),
            window: "10s".into(),
            now: ts(300),
            shards,
            running: Vec::new(),
        }
    }

    #[test]
    fn drained_only_when_every_shard_applied_past_the_target() {
        let at = ts(150);
        let r = report(vec![
            shard("a", ShardState::Success, Some(160)),
            shard("b", ShardState::Success, Some(150)),
            shard("c", ShardState::NotStarted, None),
        ]);
        assert_eq!(
            drain_state(&r, at),
            DrainState::Behind(vec![("b".into(), Some(ts(150))), ("c".into(), None)]),
            "a commit at exactly 150 is in the window that starts there"
        );
        let r = report(vec![
            shard("a", ShardState::Success, Some(160)),
            shard("b", ShardState::Reprocess, Some(151)),
        ]);
        assert_eq!(drain_state(&r, at), DrainState::Drained);
        assert_eq!(
            drain_state(&report(Vec::new()), at),
            DrainState::Behind(Vec::new()),
            "no shard recorded yet is not drained"
        );
    }

    #[test]
    fn a_failed_shard_ends_the_drain() {
        let r = report(vec![
            shard("a", ShardState::Success, Some(160)),
            shard("b", ShardState::Error, Some(120)),
        ]);
        assert_eq!(
            drain_state(&r, ts(150)),
            DrainState::Failed(vec!["b".into()])
        );
    }

    #[test]
    fn the_progress_line_names_who_is_behind_and_by_how_much() {
        let state = DrainState::Behind(vec![("b".into(), Some(ts(140))), ("c".into(), None)]);
        assert_eq!(
            progress_line(ts(150), 3, &state),
            format!(
                "drain to {}: 1 of 3 shard(s) caught up; waiting for b (10.0s behind) c \
                 (nothing applied yet)",
                ts(150)
            )
        );
    }
}
