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

The reader and the writer run as their own programs (revrepl-reader, revrepl-writer) with the
same configuration file. Exit codes: 0 ok, 1 failed, 2 bad configuration or usage, 3 a shard is
in ERROR (status), 4 differences found (validate).";

const INIT_EXAMPLES: &str = "\
Examples:
  revrepl init --config revrepl.toml
  revrepl init --config revrepl.toml --verify-only     create nothing, only check
  revrepl init --config revrepl.toml --retention 3d --value-capture-type NEW_ROW

Checks, in order: the shards file, the session file, routing (and the plugin), every shard's
password, every MySQL shard (reachable, @@read_only = 0, SELECT/INSERT/UPDATE/DELETE/CREATE on
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
run's window grid. The writer's reprocess mode then applies those shards again from there,
even what the shard's checkpoint says was applied.";

const VALIDATE_EXAMPLES: &str = "\
Examples:
  revrepl validate --config revrepl.toml
  revrepl validate --config revrepl.toml --table Users --shard ls1 --json
  revrepl validate --config revrepl.toml --source-timezone America/New_York

For every Spanner table (from the session file, else every table of the database) and every
shard, compares the rows routed to that shard with the MySQL table: row counts, then a hash of
every row, in two streaming passes with bounded memory. Differences are listed by table, shard
and key (values are never printed). Run it when the writer has caught up and writes have
paused: rows changed while it reads may show as differences. Exits with 4 when anything
differs.";

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
}

fn parse_timestamp(text: &str) -> Result<Timestamp, String> {
    Timestamp::parse_rfc3339(text).map_err(|e| format!("{e} (expected e.g. 2024-01-05T10:00:00Z)"))
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s or 5m"))?;
    let seconds = match unit {
        "" | "s" => value,
        "m" => value.saturating_mul(60),
        "h" => value.saturating_mul(3_600),
        _ => return Err(format!("{text:?} is not a duration like 30s or 5m")),
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
