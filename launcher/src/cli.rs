//! The command line: global options and one subcommand per task, each with examples in its
//! `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use revrepl_record::Timestamp;

const MAIN_EXAMPLES: &str = "\
Examples:
  revrepl init --config revrepl.toml              check everything, create the change stream and tables
  revrepl status --config revrepl.toml            where every shard is
  revrepl reprocess --shard ls1 --from 2024-01-05T10:00:00Z
  revrepl validate --config revrepl.toml          compare MySQL with Spanner
  revrepl run --config revrepl.toml --reader-mode regular --writer-mode regular
  revrepl drain --config revrepl.toml --until now wait until MySQL has every change (cut back)
  revrepl dlq list --config revrepl.toml          transactions set aside (writer.dead_letter)
  revrepl dlq retry --config revrepl.toml --shard ls1   apply them again once the cause is fixed
  revrepl demo                                    the whole pipeline on local services

The reader and the writer are their own programs (revrepl-reader, revrepl-writer) with the
same configuration file; `revrepl run` runs both and restarts them when they crash. Exit codes:
0 ok, 1 failed (dlq retry: letters failed again), 2 bad configuration or usage, 3 a shard is in
ERROR (status, run), 4 differences found (validate, demo).";

const INIT_EXAMPLES: &str = "\
Examples:
  revrepl init --config revrepl.toml
  revrepl init --config revrepl.toml --verify-only     create nothing, only check
  revrepl init --config revrepl.toml --retention 3d --value-capture-type NEW_ROW

Checks, in order: the shards file, the session file, the schema overrides, routing (and the
plugin), every shard's password (and certificate files), every MySQL shard (reachable, @@read_only = 0, SELECT/INSERT/UPDATE/DELETE/CREATE on
its database), the buffer (writes and reads a probe object under revrepl-probe/), the change
stream (created if missing, otherwise its options are verified), the metadata store (a Spanner
metadata database and the tables are created if missing). Every problem is reported with what to fix; the exit code is 1 if any check
failed.";

const STATUS_EXAMPLES: &str = "\
Examples:
  revrepl status --config revrepl.toml
  revrepl status --config revrepl.toml --run-id 2024-01-05t10-33-56z --json

Columns: the shard; the writer's status (SUCCESS, ERROR, REPROCESS, or NOT_STARTED when the
writer has recorded nothing yet); CREATED UP TO, the end of the last window the reader has
finished; APPLIED UP TO, the end of the last window the writer applied; LAG, seconds from
APPLIED UP TO to now; BEHIND READER, seconds from APPLIED UP TO to CREATED UP TO; LAST ERROR.
Exits with 3 when any shard is in ERROR.";

const REPROCESS_EXAMPLES: &str = "\
Examples:
  revrepl reprocess --shard ls1
  revrepl reprocess --shard ls1,ls2 --from 2024-01-05T10:00:00Z
  then: revrepl-writer --config revrepl.toml --mode reprocess

Marks the shards REPROCESS in shard_file_process_progress. Without --from, a shard is
reprocessed from the window it is at (the failed window for ERROR, the last applied window for
SUCCESS, the run's start when the writer has recorded nothing). --from is aligned down to the
run's window grid; one past where a shard has applied to (the window after its last SUCCESS
window, or its ERROR window) is refused, since the windows in between would never be
applied, unless --force. The writer's reprocess mode then applies those shards again from
there, even what the shard's checkpoint says was applied; so does a writer restarted in
resume mode while a shard is still REPROCESS.";

const VALIDATE_EXAMPLES: &str = "\
Examples:
  revrepl validate --config revrepl.toml
  revrepl validate --config revrepl.toml --table Users --shard ls1 --json
  revrepl validate --config revrepl.toml --source-timezone America/New_York
  revrepl validate --config revrepl.toml --continuous --rows-per-second 200 --metrics-addr 0.0.0.0:9466
  revrepl validate --config revrepl.toml --repair --shard ls1 --table Users

For every Spanner table (from the session file, else every table of the database) and every
shard, compares the rows routed to that shard with the MySQL table: row counts, then a hash of
every row, in two streaming passes with bounded memory. Differences are listed by table, shard
and key (values are never printed). Each shard is compared at its checkpoint: MySQL in one
consistent snapshot, Spanner read at exactly the checkpoint's commit timestamp (printed per
shard), so the result is exact while the application writes and the writer applies; a shard
without a checkpoint of the run is compared at the current state (exact only when writes have
paused). --continuous keeps sampling keys and exports counters; --repair re-applies Spanner's
values of the differing rows of one table on one shard. Exits with 4 when anything differs.";

const RUN_EXAMPLES: &str = "\
Examples:
  revrepl run --config revrepl.toml --reader-mode regular --writer-mode regular
  revrepl run --config revrepl.toml --run-id r1 --reader-mode resume --writer-mode resume
  revrepl run --config revrepl.toml --reader-mode resume --writer-mode resume \\
      --until 2024-01-05T12:00:00Z --log-dir /var/log/revrepl

Runs revrepl-reader and revrepl-writer (found next to revrepl, or at REVREPL_READER_BIN and
REVREPL_WRITER_BIN) as child processes with this configuration file and the --set overrides,
and prints the equivalent standalone commands and how to resume the run. A regular reader
without reader.start_timestamp gets it pinned to now (--set), so a restart starts at the same
time. A child that dies unexpectedly is started again after a jittered backoff (1 s doubling
to 60 s), in resume mode; except a reader whose run is not recorded yet and a regular writer
with shards that have no progress yet, which keep their mode, and a resumeSuccess writer,
which keeps it too. A configuration error (exit 2) or a failed shard (writer exit 3) is not
retried. SIGTERM or SIGINT stops both children cleanly (SIGTERM, then SIGKILL after
--grace-period).

Progress: on a terminal, a per-shard table (status, created and applied up to, lag, records
applied) updated every second; otherwise one summary line every 10 s. Exit codes: 0 both
finished (--until), 2 configuration, 3 a shard failed, 1 a child kept failing,
130/143 stopped by SIGINT/SIGTERM.";

const DRAIN_EXAMPLES: &str = "\
Examples:
  revrepl drain --config revrepl.toml --until now
  revrepl drain --config revrepl.toml --until 2024-01-05T12:00:00Z --timeout 5m

The cut-back step (docs/operations.md): after the application stopped writing to Spanner, waits
until every shard has applied everything committed up to --until (`now` is Spanner's current
time, read from the database), printing which shards are still behind and by how much. A shard
has drained once the window holding --until is applied. Exit codes: 0 every shard drained, 3 a
shard is in ERROR, 1 --timeout passed first.";

const DLQ_EXAMPLES: &str = "\
Examples:
  revrepl dlq list --config revrepl.toml                 per shard: counts, first/last commit, causes
  revrepl dlq show --config revrepl.toml --shard ls1     every letter: commit, error, tables and keys
  revrepl dlq retry --config revrepl.toml --shard ls1    after fixing the cause: apply them again

With writer.dead_letter = true the writer sets a transaction that fails because of its content
(a value that does not fit, a constraint) aside in dlq/<shard>/ of the buffer and goes on. Once
the cause is fixed, `retry` applies a shard's pending letters in commit order, each exactly once
(recorded in the shard's revrepl_dead_letters table in the same MySQL transaction); one that
fails again moves to `severe` (its new error in that table, a copy under dlq/<shard>/severe/).
`retry` holds the shard's writer lease: stop the writer of that shard first. A dead letter gives
up ordering: later writes to the same rows were applied before it, and applying it now may
overwrite them; run `revrepl validate --shard S` afterwards (docs/operations.md).";

const DEMO_EXAMPLES: &str = "\
Examples:
  make demo                       build, then run this
  revrepl demo
  revrepl demo --duration 60s --keep

Runs the whole pipeline on this machine: installs MariaDB with apt if it is missing
(tests/scripts/install-mariadb.sh), checks the Spanner emulator, starts the emulator and two
MariaDB shards on loopback ports in a temporary directory, creates a sharded schema, runs
`revrepl init` (which creates the change stream), writes a mixed workload to Spanner while
`revrepl run` replicates it (local directory buffer, SQLite metadata), then prints
`revrepl status` and `revrepl validate`. Exits 0 only when every row matches. Servers are
stopped and the directory removed at the end, also on errors and Ctrl-C (--keep keeps the
directory: configuration, logs, buffer and metadata).";

/// revrepl: replicate Cloud Spanner writes back to sharded MySQL.
#[derive(Debug, Parser)]
#[command(name = "revrepl", version, about, after_help = MAIN_EXAMPLES)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// The configuration file (TOML). Default: `revrepl.toml` in the current directory, if
    /// it exists; otherwise only `REVREPL_…` variables and `--set` configure.
    #[arg(
        long,
        short,
        global = true,
        env = "REVREPL_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// Override a configuration key, e.g. `--set reader.window=1m` (repeatable).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// The run to work on (overrides `run_id` of the configuration).
    #[arg(long, global = true, value_name = "ID")]
    pub run_id: Option<String>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the configuration and every service; create the change stream and the metadata
    /// tables when missing.
    #[command(after_help = INIT_EXAMPLES)]
    Init(InitArgs),
    /// Show every shard's progress: created up to, applied up to, status, lag.
    #[command(after_help = STATUS_EXAMPLES)]
    Status(StatusArgs),
    /// Mark shards REPROCESS so that the writer's reprocess mode applies them again.
    #[command(after_help = REPROCESS_EXAMPLES)]
    Reprocess(ReprocessArgs),
    /// Compare every MySQL shard with Spanner, row by row.
    #[command(after_help = VALIDATE_EXAMPLES)]
    Validate(ValidateArgs),
    /// Run the reader and the writer together, restart them when they crash, show progress.
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Wait until every shard has applied everything committed up to a time (cut back).
    #[command(after_help = DRAIN_EXAMPLES)]
    Drain(DrainArgs),
    /// List, show and retry the transactions the writer set aside (`writer.dead_letter`).
    #[command(subcommand, after_help = DLQ_EXAMPLES)]
    Dlq(DlqCommand),
    /// Demonstrate the whole pipeline on local services (Spanner emulator, two MariaDB shards).
    #[command(after_help = DEMO_EXAMPLES)]
    Demo(DemoArgs),
}

/// The reader's run modes, as `revrepl-reader --mode` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReaderMode {
    /// Start the run at `reader.start_timestamp` (or now) and record it.
    #[value(name = "regular")]
    Regular,
    /// Continue the recorded run from where every shard is complete.
    #[value(name = "resume")]
    Resume,
}

impl ReaderMode {
    /// The mode as the reader spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Regular => "regular",
            Self::Resume => "resume",
        }
    }
}

/// The writer's run modes, as `revrepl-writer --mode` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WriterMode {
    /// Every shard of the shards file from the run's start.
    #[value(name = "regular")]
    Regular,
    /// Every shard with progress (the same as `resumeAll`).
    #[value(name = "resume")]
    Resume,
    /// Every shard with progress.
    #[value(name = "resumeAll")]
    ResumeAll,
    /// Only shards in `SUCCESS`.
    #[value(name = "resumeSuccess")]
    ResumeSuccess,
    /// Only shards in `ERROR`, from the failed window.
    #[value(name = "resumeFailed")]
    ResumeFailed,
    /// Only shards in `REPROCESS`.
    #[value(name = "reprocess")]
    Reprocess,
}

impl WriterMode {
    /// The mode as the writer spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Regular => "regular",
            Self::Resume => "resume",
            Self::ResumeAll => "resumeAll",
            Self::ResumeSuccess => "resumeSuccess",
            Self::ResumeFailed => "resumeFailed",
            Self::Reprocess => "reprocess",
        }
    }
}

/// How `run` shows progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressStyle {
    /// A live table when stderr is a terminal, summary lines otherwise.
    #[value(name = "auto")]
    Auto,
    /// A per-shard table on stderr, redrawn in place every second.
    #[value(name = "live")]
    Live,
    /// One summary line on stderr every 10 seconds.
    #[value(name = "lines")]
    Lines,
    /// No progress output.
    #[value(name = "off")]
    Off,
}

/// `revrepl run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The reader's mode for its first start.
    #[arg(long, value_enum, value_name = "MODE")]
    pub reader_mode: ReaderMode,
    /// The writer's mode for its first start.
    #[arg(long, value_enum, value_name = "MODE")]
    pub writer_mode: WriterMode,
    /// Stop both once caught up to this time (RFC 3339); without it they run until stopped.
    #[arg(long, value_parser = parse_timestamp, value_name = "TIME")]
    pub until: Option<Timestamp>,
    /// Write the children's logs to DIR/reader.log and DIR/writer.log (appended) instead of
    /// this process's stderr.
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// How long the children get to stop after SIGTERM before they are killed.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub grace_period: std::time::Duration,
    /// Give up (exit 1) after this many restarts in a row of one child (a child that ran for
    /// a minute counts as healthy again). Default: never give up.
    #[arg(long, value_name = "N")]
    pub max_restarts: Option<u32>,
    /// The reader's Prometheus endpoint (`revrepl-reader --metrics-addr`).
    #[arg(long, value_name = "HOST:PORT")]
    pub reader_metrics_addr: Option<std::net::SocketAddr>,
    /// The writer's Prometheus endpoint (`revrepl-writer --metrics-addr`).
    #[arg(long, value_name = "HOST:PORT")]
    pub writer_metrics_addr: Option<std::net::SocketAddr>,
    /// How to show progress.
    #[arg(long, value_enum, default_value = "auto", value_name = "STYLE")]
    pub progress: ProgressStyle,
}

/// `revrepl dlq …`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Per shard: dead letters pending, severe and applied, first and last commit time, and
    /// the errors grouped by cause.
    #[command(after_help = DLQ_EXAMPLES)]
    List(DlqListArgs),
    /// Every dead letter: its state, commit, window file, error and the tables and keys it
    /// changes (never values).
    #[command(after_help = DLQ_EXAMPLES)]
    Show(DlqShowArgs),
    /// Apply a shard's pending dead letters again, in commit order, each exactly once.
    #[command(after_help = DLQ_EXAMPLES)]
    Retry(DlqRetryArgs),
}

/// `revrepl dlq list`.
#[derive(Debug, Clone, Args)]
pub struct DlqListArgs {
    /// Only these shards (comma-separated or repeated).
    #[arg(long = "shard", value_delimiter = ',', value_name = "SHARD")]
    pub shards: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `revrepl dlq show`.
#[derive(Debug, Clone, Args)]
pub struct DlqShowArgs {
    /// Only these shards (comma-separated or repeated).
    #[arg(long = "shard", value_delimiter = ',', value_name = "SHARD")]
    pub shards: Vec<String>,
    /// Also the letters already applied by a retry.
    #[arg(long)]
    pub all: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `revrepl dlq retry`.
#[derive(Debug, Clone, Args)]
pub struct DlqRetryArgs {
    /// Only these shards (comma-separated or repeated). Default: every shard with letters.
    #[arg(long = "shard", value_delimiter = ',', value_name = "SHARD")]
    pub shards: Vec<String>,
    /// Also retry letters that failed again before (`severe`).
    #[arg(long)]
    pub include_severe: bool,
}

/// `revrepl demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How long the workload writes to Spanner.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: std::time::Duration,
    /// Keep the temporary directory (configuration, logs, buffer, metadata) and print its path.
    #[arg(long)]
    pub keep: bool,
    /// Where the service scripts are (`spanner-emulator.sh`, `mariadb.sh`,
    /// `install-mariadb.sh`). Default: `tests/scripts` of the source tree revrepl was built
    /// from, else of the current directory.
    #[arg(long, value_name = "DIR")]
    pub scripts_dir: Option<PathBuf>,
    /// The workload's random seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// The change stream's value capture types revrepl can work with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CaptureType {
    /// Whole new rows and the old values of changed columns: deletes carry the old row, so
    /// routing a delete needs no extra read (recommended).
    #[value(name = "NEW_ROW_AND_OLD_VALUES")]
    NewRowAndOldValues,
    /// Whole new rows only: a delete whose shard column is not a key is routed with a stale
    /// read of Spanner.
    #[value(name = "NEW_ROW")]
    NewRow,
}

impl CaptureType {
    /// The option value as Spanner spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NewRowAndOldValues => "NEW_ROW_AND_OLD_VALUES",
            Self::NewRow => "NEW_ROW",
        }
    }
}

/// `revrepl init`.
#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// Create nothing: report a missing change stream or missing metadata tables as problems
    /// (the buffer check still writes its small probe object).
    #[arg(long)]
    pub verify_only: bool,
    /// The value capture type of a change stream created by init.
    #[arg(long, value_enum, default_value = "NEW_ROW_AND_OLD_VALUES")]
    pub value_capture_type: CaptureType,
    /// The retention period of a change stream created by init (Spanner accepts 1d to 30d;
    /// the emulator 1d to 7d). A reader can resume only within it.
    #[arg(long, default_value = "7d", value_name = "PERIOD")]
    pub retention: String,
    /// How long one check may take before it counts as failed.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: std::time::Duration,
}

/// `revrepl status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Print JSON (one object with a `shards` array) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `revrepl drain`.
#[derive(Debug, Clone, Args)]
pub struct DrainArgs {
    /// `now` (Spanner's current time) or an RFC 3339 time: every change committed at or
    /// before it must be applied.
    #[arg(long, value_name = "now|TIME")]
    pub until: String,
    /// Give up (exit 1) after this long, e.g. `5m`; without it, wait as long as it takes.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<std::time::Duration>,
    /// How often to read the shards' progress.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: std::time::Duration,
}

/// `revrepl reprocess`.
#[derive(Debug, Clone, Args)]
pub struct ReprocessArgs {
    /// The shards to reprocess (repeatable, or comma-separated).
    #[arg(
        long = "shard",
        required = true,
        value_delimiter = ',',
        value_name = "SHARD"
    )]
    pub shards: Vec<String>,
    /// Reprocess from the window containing this time (RFC 3339), instead of the window each
    /// shard is at.
    #[arg(long, value_parser = parse_timestamp, value_name = "TIME")]
    pub from: Option<Timestamp>,
    /// Allow a --from past where a shard has applied to: the windows in between are then
    /// never applied (they are listed).
    #[arg(long)]
    pub force: bool,
}

/// `revrepl validate`.
#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// Only these Spanner tables (repeatable, or comma-separated).
    #[arg(long = "table", value_delimiter = ',', value_name = "TABLE")]
    pub tables: Vec<String>,
    /// Only these shards (repeatable, or comma-separated).
    #[arg(long = "shard", value_delimiter = ',', value_name = "SHARD")]
    pub shards: Vec<String>,
    /// The time zone the writer writes MySQL `datetime` columns in: an IANA name
    /// (`America/New_York`), `UTC`, or an offset (`+05:30`). Default: `writer.source_time_zone`
    /// of the configuration.
    #[arg(long, value_name = "ZONE")]
    pub source_timezone: Option<String>,
    /// At most this many differing keys listed per table and shard (all are counted).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub max_listed: usize,
    /// At most this many rows per table and shard held in memory to name differing keys;
    /// beyond it, differences are counted by hash bucket only.
    #[arg(long, default_value_t = 200_000, value_name = "N")]
    pub detail_rows: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Compare the current state of both sides instead of each shard at its checkpoint (exact
    /// only when replication has caught up and writes have paused).
    #[arg(long, conflicts_with_all = ["continuous", "repair"])]
    pub current: bool,
    /// Keep checking: every --interval, each shard's next --rows-per-second × --interval rows
    /// (in key order, rotating) are compared at the shard's checkpoint; mismatches are printed
    /// and counted in revrepl_validate_mismatches_total.
    #[arg(long, conflicts_with = "repair")]
    pub continuous: bool,
    /// Continuous mode: time between two checks of a shard.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: std::time::Duration,
    /// Continuous mode: rows compared per second and shard (the load on both sides).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub rows_per_second: u64,
    /// Continuous mode: stop after this many intervals (default: until SIGINT/SIGTERM).
    #[arg(long, value_name = "N")]
    pub rounds: Option<u64>,
    /// Continuous mode: serve Prometheus metrics at this address (`GET /metrics`).
    #[arg(long, env = "REVREPL_METRICS_ADDR", value_name = "HOST:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Re-apply Spanner's values of the differing rows of one --table on one --shard, read at
    /// the shard's checkpoint while holding the writer's checkpoint lock, then validate again.
    #[arg(long, requires_all = ["tables", "shards"])]
    pub repair: bool,
}

pub(crate) fn parse_timestamp(text: &str) -> Result<Timestamp, String> {
    Timestamp::parse_rfc3339(text).map_err(|e| format!("{e} (expected e.g. 2024-01-05T10:00:00Z)"))
}

pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 30s or 5m"))?;
    let seconds = match unit {
        "ms" => return Ok(std::time::Duration::from_millis(value)),
        "" | "s" => value,
        "m" => value.saturating_mul(60),
        "h" => value.saturating_mul(3_600),
        _ => return Err(format!("{text:?} is not a duration like 500ms, 30s or 5m")),
    };
    Ok(std::time::Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_examples() {
        let mut command = Cli::command();
        for sub in command.get_subcommands_mut() {
            let help = sub.render_long_help().to_string();
            assert!(
                help.contains("Examples:"),
                "{} --help has no examples",
                sub.get_name()
            );
        }
    }

    #[test]
    fn dlq_commands_parse() {
        let cli = Cli::try_parse_from([
            "revrepl",
            "dlq",
            "retry",
            "--shard",
            "a,b",
            "--include-severe",
        ])
        .expect("parses");
        let Command::Dlq(DlqCommand::Retry(args)) = cli.command else {
            panic!("not dlq retry");
        };
        assert_eq!(args.shards, ["a", "b"]);
        assert!(args.include_severe);
        for sub in ["list", "show"] {
            assert!(Cli::try_parse_from(["revrepl", "dlq", sub, "--json"]).is_ok());
        }
    }

    #[test]
    fn global_options_go_anywhere() {
        let cli = Cli::try_parse_from([
            "revrepl", "status", "--config", "x.toml", "--run-id", "r1", "--set", "a.b=c", "--json",
        ])
        .expect("parses");
        assert_eq!(cli.global.run_id.as_deref(), Some("r1"));
        assert_eq!(cli.global.overrides, ["a.b=c"]);
        assert!(matches!(
            cli.command,
            Command::Status(StatusArgs { json: true })
        ));
    }

    #[test]
    fn reprocess_takes_shard_lists() {
        let cli = Cli::try_parse_from(["revrepl", "reprocess", "--shard", "a,b", "--shard", "c"])
            .expect("parses");
        let Command::Reprocess(args) = cli.command else {
            panic!("not reprocess");
        };
        assert_eq!(args.shards, ["a", "b", "c"]);
        assert!(Cli::try_parse_from(["revrepl", "reprocess"]).is_err());
        assert!(
            Cli::try_parse_from([
                "revrepl",
                "reprocess",
                "--shard",
                "a",
                "--from",
                "yesterday"
            ])
            .is_err()
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(
            parse_duration("2m"),
            Ok(std::time::Duration::from_secs(120))
        );
        assert!(parse_duration("soon").is_err());
    }
}
