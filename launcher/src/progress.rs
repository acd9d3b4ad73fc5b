//! Progress of a running pipeline, for `revrepl run` and `revrepl demo`: per shard the
//! writer's status, how far the reader created and the writer applied, the lag (all from the
//! metadata store, through [`crate::status`]), and the records applied (from each
//! shard's `revrepl_checkpoint` row).
//!
//! Shown on a terminal as a table redrawn in place ([`Screen`] in live mode), elsewhere as one
//! summary line at a time.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use revrepl_config::Config;
use revrepl_metadata::{MetadataStore, RunId};
use revrepl_record::Timestamp;
use revrepl_shard_routing::{Shard, ShardsFile};

use crate::status::{self, FromProgress, ShardState, StatusReport, seconds_text};
use crate::{mysql, store};

/// Records applied are read from at most this many shards (one connection each).
pub const MAX_COUNTED_SHARDS: usize = 64;
/// Rows of the live table; further shards are summarized in one line.
pub const MAX_LIVE_ROWS: usize = 20;
/// How long one look at the metadata store or a shard may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a shard whose checkpoint could not be read is left alone.
const RETRY_SHARD_AFTER: Duration = Duration::from_secs(10);

/// One look at the pipeline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// The status of every shard, once the run is recorded.
    pub report: Option<StatusReport>,
    /// Why there is no report yet (the store or the run does not exist yet).
    pub waiting: Option<String>,
    /// Records applied by this run, per shard, where the checkpoint could be read.
    pub applied_records: BTreeMap<String, u64>,
}

impl Progress {
    /// The total of [`Progress::applied_records`], if any shard reported.
    pub fn total_applied(&self) -> Option<u64> {
        (!self.applied_records.is_empty()).then(|| self.applied_records.values().sum())
    }
}

/// Reads progress from the metadata store and the shards' checkpoints, keeping connections
/// between looks.
pub struct ProgressProbe {
    config: Config,
    store: Option<Arc<dyn MetadataStore>>,
    counts: Counts,
}

enum Counts {
    /// Not tried yet.
    Unknown,
    /// Counting is off (too many shards, or the passwords cannot be read).
    Off,
    /// One entry per shard.
    On(Vec<ShardCounter>),
}

struct ShardCounter {
    shard: Shard,
    conn: Option<Conn>,
    retry_at: Option<Instant>,
}

impl ProgressProbe {
    /// A probe for the run of `config`.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            store: None,
            counts: Counts::Unknown,
        }
    }

    /// Looks once; never fails (what cannot be read is left out or explained in
    /// [`Progress::waiting`]).
    pub async fn look(&mut self) -> Progress {
        let mut progress = Progress::default();
        let run_id = match RunId::new(self.config.run_id.clone()) {
            Ok(run_id) => run_id,
            Err(error) => {
                progress.waiting = Some(error.to_string());
                return progress;
            }
        };
        if self.store.is_none() {
            match tokio::time::timeout(PROBE_TIMEOUT, store::open_existing(&self.config)).await {
                Ok(Ok(store)) => self.store = Some(store),
                Ok(Err(_)) | Err(_) => {
                    progress.waiting = Some("waiting for the metadata store".into());
                    return progress;
                }
            }
        }
        let Some(store) = &self.store else {
            return progress;
        };
        let now = Timestamp::from(chrono::Utc::now());
        match tokio::time::timeout(
            PROBE_TIMEOUT,
            status::status(store.as_ref(), &run_id, &FromProgress, now),
        )
        .await
        {
            Ok(Ok(report)) => progress.report = Some(report),
            Ok(Err(crate::LauncherError::Usage(_))) => {
                progress.waiting = Some(format!(
                    "waiting for the reader to record run {}",
                    run_id.as_str()
                ));
            }
            Ok(Err(error)) => progress.waiting = Some(format!("metadata store: {error}")),
            Err(_) => progress.waiting = Some("metadata store: no answer".into()),
        }
        progress.applied_records = self.applied_records(&run_id).await;
        progress
    }

    async fn applied_records(&mut self, run_id: &RunId) -> BTreeMap<String, u64> {
        if matches!(self.counts, Counts::Unknown) {
            self.counts = self.load_shards().await;
        }
        let mut applied = BTreeMap::new();
        let Counts::On(counters) = &mut self.counts else {
            return applied;
        };
        let tls = mysql::tls_options(&self.config).ok().flatten();
        for counter in counters.iter_mut() {
            if counter.retry_at.is_some_and(|at| Instant::now() < at) {
                continue;
            }
            let id = counter.shard.config.logical_shard_id.to_string();
            match counter.count(run_id, tls.as_ref()).await {
                Ok(Some(count)) => {
                    applied.insert(id, count);
                }
                Ok(None) => {}
                Err(()) => {
                    counter.conn = None;
                    counter.retry_at = Some(Instant::now() + RETRY_SHARD_AFTER);
                }
            }
        }
        applied
    }

    async fn load_shards(&self) -> Counts {
        let Ok(file) = ShardsFile::load(&self.config.shards_file) else {
            return Counts::Off;
        };
        if file.shards().len() > MAX_COUNTED_SHARDS {
            return Counts::Off;
        }
        match tokio::time::timeout(PROBE_TIMEOUT, mysql::resolve_shards(&file)).await {
            Ok(Ok(shards)) => Counts::On(
                shards
                    .into_iter()
                    .map(|shard| ShardCounter {
                        shard,
                        conn: None,
                        retry_at: None,
                    })
                    .collect(),
            ),
            _ => Counts::Off,
        }
    }
}

impl ShardCounter {
    /// The shard's `applied_records`; `None` when it has no checkpoint (yet); `Err` when the
    /// shard cannot be asked.
    async fn count(
        &mut self,
        run_id: &RunId,
        tls: Option<&mysql_async::SslOpts>,
    ) -> Result<Option<u64>, ()> {
        if self.conn.is_none() {
            self.conn = Some(
                mysql::connect(&self.shard, tls, PROBE_TIMEOUT)
                    .await
                    .map_err(|_| ())?,
            );
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(());
        };
        let query = conn.exec_first::<u64, _, _>(
            "SELECT `applied_records` FROM `revrepl_checkpoint` WHERE `run_id` = ? AND `shard` = ?",
            (run_id.as_str(), self.shard.config.logical_shard_id.as_str()),
        );
        match tokio::time::timeout(PROBE_TIMEOUT, query).await {
            Ok(Ok(count)) => Ok(count),
            // No checkpoint table yet: the writer creates it when it starts on the shard.
            Ok(Err(mysql_async::Error::Server(e))) if e.code == 1146 => Ok(None),
            _ => Err(()),
        }
    }
}

/// How the children are doing, for the header line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The run.
    pub run_id: String,
    /// `reader running (regular)`, `writer restarting`…
    pub children: Vec<String>,
    /// Time since the start.
    pub elapsed: Duration,
    /// `--until`, if given.
    pub until: Option<Timestamp>,
    /// A line of the caller's (the demo's workload), shown under the header.
    pub note: Option<String>,
}

impl Header {
    fn text(&self) -> String {
        let mut parts = vec![format!("run {}", self.run_id)];
        parts.extend(self.children.iter().cloned());
        parts.push(clock(self.elapsed));
        if let Some(until) = self.until {
            parts.push(format!("until {}", short_time(until)));
        }
        parts.join(" · ")
    }
}

/// `1:05`, `1:02:03`.
fn clock(elapsed: Duration) -> String {
    let s = elapsed.as_secs();
    if s >= 3_600 {
        format!("{}:{:02}:{:02}", s / 3_600, s % 3_600 / 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// `14:05:30Z`.
fn short_time(ts: Timestamp) -> String {
    ts.to_datetime().format("%H:%M:%SZ").to_string()
}

/// The live table: header, note, one row per shard (at most [`MAX_LIVE_ROWS`]).
pub fn live_lines(header: &Header, progress: &Progress) -> Vec<String> {
    let mut lines = vec![header.text()];
    if let Some(note) = &header.note {
        lines.push(note.clone());
    }
    let Some(report) = &progress.report else {
        lines.push(
            progress
                .waiting
                .clone()
                .unwrap_or_else(|| "waiting for progress".into()),
        );
        return lines;
    };
    if report.shards.is_empty() {
        lines.push("no shards registered yet".into());
        return lines;
    }
    let headers = [
        "SHARD",
        "STATUS",
        "CREATED UP TO",
        "APPLIED UP TO",
        "LAG",
        "RECORDS APPLIED",
    ];
    let rows: Vec<[String; 6]> = report
        .shards
        .iter()
        .take(MAX_LIVE_ROWS)
        .map(|s| {
            [
                s.shard.clone(),
                s.status.as_str().to_string(),
                s.created_upto.map_or("-".into(), short_time),
                s.applied_upto.map_or("-".into(), short_time),
                s.lag_seconds.map_or("-".into(), seconds_text),
                progress
                    .applied_records
                    .get(&s.shard)
                    .map_or("-".into(), u64::to_string),
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
        for (cell, width) in cells.iter().zip(widths) {
            text.push_str(&format!("{cell:<width$}  "));
        }
        text.trim_end().to_string()
    };
    lines.push(line(&headers.map(String::from)));
    lines.extend(rows.iter().map(|row| line(row)));
    if report.shards.len() > MAX_LIVE_ROWS {
        let rest = &report.shards[MAX_LIVE_ROWS..];
        let errors = rest
            .iter()
            .filter(|s| s.status == ShardState::Error)
            .count();
        lines.push(format!(
            "… and {} more shard(s), {errors} of them in ERROR",
            rest.len()
        ));
    }
    lines
}

/// One line: the header, shards per status, the furthest-behind shard, records applied.
pub fn summary_line(header: &Header, progress: &Progress) -> String {
    let mut parts = vec![header.text()];
    if let Some(note) = &header.note {
        parts.push(note.clone());
    }
    match &progress.report {
        None => parts.push(
            progress
                .waiting
                .clone()
                .unwrap_or_else(|| "waiting for progress".into()),
        ),
        Some(report) => {
            let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
            for shard in &report.shards {
                *by_state.entry(shard.status.as_str()).or_default() += 1;
            }
            let states: Vec<String> = by_state.iter().map(|(s, n)| format!("{n} {s}")).collect();
            parts.push(format!(
                "{} shard(s): {}",
                report.shards.len(),
                states.join(", ")
            ));
            let created = report.shards.iter().filter_map(|s| s.created_upto).min();
            if let Some(created) = created {
                parts.push(format!("created up to {}", short_time(created)));
            }
            let behind = report
                .shards
                .iter()
                .filter_map(|s| s.applied_upto.map(|a| (a, &s.shard)))
                .min();
            if let Some((applied, shard)) = behind {
                parts.push(format!("applied up to {} ({shard})", short_time(applied)));
            }
            let lag = report
                .shards
                .iter()
                .filter_map(|s| s.lag_seconds)
                .fold(None, |max: Option<f64>, l| {
                    Some(max.map_or(l, |m| m.max(l)))
                });
            if let Some(lag) = lag {
                parts.push(format!("max lag {}", seconds_text(lag)));
            }
        }
    }
    if let Some(total) = progress.total_applied() {
        parts.push(format!("{total} records applied"));
    }
    parts.join(" · ")
}

/// How a [`Screen`] shows things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScreenMode {
    /// A block redrawn in place on a terminal; log lines scroll above it.
    Live,
    /// Plain lines.
    Lines,
    /// Log lines only, no progress.
    Quiet,
}

/// stderr, shared by progress and log lines.
#[derive(Debug)]
pub struct Screen {
    mode: ScreenMode,
    block: Vec<String>,
    drawn: usize,
}

impl Screen {
    /// A screen in `mode`.
    pub fn new(mode: ScreenMode) -> Self {
        Self {
            mode,
            block: Vec::new(),
            drawn: 0,
        }
    }

    /// The mode.
    pub fn mode(&self) -> ScreenMode {
        self.mode
    }

    /// Prints a log line (above the live block).
    pub fn log(&mut self, line: &str) {
        let mut err = std::io::stderr().lock();
        if self.mode == ScreenMode::Live {
            let mut text = self.erase();
            text.push_str(line);
            text.push('\n');
            text.push_str(&self.paint());
            let _ = err.write_all(text.as_bytes());
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// Shows progress: redraws the live block, or prints `lines` as they are.
    pub fn show(&mut self, lines: Vec<String>) {
        let mut err = std::io::stderr().lock();
        match self.mode {
            ScreenMode::Live => {
                let mut text = self.erase();
                self.block = lines;
                text.push_str(&self.paint());
                let _ = err.write_all(text.as_bytes());
            }
            ScreenMode::Lines => {
                for line in lines {
                    let _ = writeln!(err, "{line}");
                }
            }
            ScreenMode::Quiet => {}
        }
        let _ = err.flush();
    }

    /// Moves the cursor to the start of the drawn block and clears from there.
    fn erase(&mut self) -> String {
        let text = if self.drawn > 0 {
            format!("\x1b[{}F\x1b[J", self.drawn)
        } else {
            String::new()
        };
        self.drawn = 0;
        text
    }

    /// The block, with line wrapping off so that every line takes exactly one row.
    fn paint(&mut self) -> String {
        let mut text = String::from("\x1b[?7l");
        for line in &self.block {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str("\x1b[?7h");
        self.drawn = self.block.len();
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::ShardStatus;

    fn ts(seconds: i64) -> Timestamp {
        Timestamp::new(seconds, 0).expect("timestamp")
    }

    fn shard(name: &str, status: ShardState, applied: Option<i64>) -> ShardStatus {
        ShardStatus {
            shard: name.into(),
            status,
            created_upto: Some(ts(1_100)),
            file_start_interval: applied.map(|a| ts(a - 10)),
            applied_upto: applied.map(ts),
            lag_seconds: applied.map(|a| (1_200 - a) as f64),
            behind_reader_seconds: applied.map(|a| (1_100 - a) as f64),
            last_error: None,
        }
    }

    fn header() -> Header {
        Header {
            run_id: "r1".into(),
            children: vec!["reader running".into(), "writer running".into()],
            elapsed: Duration::from_secs(65),
            until: Some(ts(1_300)),
            note: Some("workload: 10 mods".into()),
        }
    }

    fn progress(shards: Vec<ShardStatus>) -> Progress {
        Progress {
            report: Some(StatusReport {
                run_id: "r1".into(),
                store: "sqlite m.db".into(),
                run_start: ts(1_000),
                window: "10s".into(),
                now: ts(1_200),
                shards,
                running: Vec::new(),
            }),
            waiting: None,
            applied_records: BTreeMap::from([("a".to_string(), 7), ("b".to_string(), 5)]),
        }
    }

    #[test]
    fn the_live_table_has_one_row_per_shard() {
        let lines = live_lines(
            &header(),
            &progress(vec![
                shard("a", ShardState::Success, Some(1_090)),
                shard("b", ShardState::NotStarted, None),
            ]),
        );
        assert_eq!(
            lines[0],
            "run r1 · reader running · writer running · 1:05 · until 00:21:40Z"
        );
        assert_eq!(lines[1], "workload: 10 mods");
        assert!(lines[2].starts_with("SHARD  STATUS"), "{lines:?}");
        assert!(
            lines[3].contains("SUCCESS") && lines[3].ends_with('7'),
            "{lines:?}"
        );
        assert!(lines[3].contains("00:18:10Z") && lines[3].contains("1m 50s"));
        assert_eq!(lines[2].find("RECORDS"), lines[4].find('5'), "{lines:?}");
    }

    #[test]
    fn many_shards_are_summarized() {
        let shards = (0..25)
            .map(|i| {
                let state = if i == 24 {
                    ShardState::Error
                } else {
                    ShardState::Success
                };
                shard(&format!("s{i:02}"), state, Some(1_100))
            })
            .collect();
        let lines = live_lines(&header(), &progress(shards));
        assert_eq!(lines.len(), 2 + 1 + MAX_LIVE_ROWS + 1);
        assert_eq!(
            lines.last().map(String::as_str),
            Some("… and 5 more shard(s), 1 of them in ERROR")
        );
    }

    #[test]
    fn the_summary_line_names_the_furthest_behind_shard() {
        let line = summary_line(
            &header(),
            &progress(vec![
                shard("a", ShardState::Success, Some(1_090)),
                shard("b", ShardState::Error, Some(1_050)),
            ]),
        );
        assert_eq!(
            line,
            "run r1 · reader running · writer running · 1:05 · until 00:21:40Z · \
             workload: 10 mods · 2 shard(s): 1 ERROR, 1 SUCCESS · created up to 00:18:20Z · \
             applied up to 00:17:30Z (b) · max lag 2m 30s · 12 records applied"
        );
        let waiting = Progress {
            waiting: Some("waiting for the reader to record run r1".into()),
            ..Progress::default()
        };
        assert!(summary_line(&header(), &waiting).ends_with("record run r1"));
        assert_eq!(
            live_lines(&header(), &waiting).last().map(String::as_str),
            Some("waiting for the reader to record run r1")
        );
    }

    #[test]
    fn the_live_block_is_erased_before_it_is_redrawn() {
        let mut screen = Screen::new(ScreenMode::Live);
        assert_eq!(screen.erase(), "");
        screen.block = vec!["a".into(), "b".into()];
        assert_eq!(screen.paint(), "\x1b[?7la\nb\n\x1b[?7h");
        assert_eq!(screen.erase(), "\x1b[2F\x1b[J");
        assert_eq!(screen.erase(), "");
    }
}
