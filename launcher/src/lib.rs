//! The `revrepl` command (DESIGN §1, §7, §9): what an operator runs around the reader and the
//! writer.
//!
//! - [`cli`]: the command line (`init`, `run`, `status`, `reprocess`, `validate`, `dlq`, `demo`;
//!   global `--config`, `--set`, `--run-id`).
//! - [`init`]: checks the configuration and every service, creates the change stream and the
//!   metadata tables.
//! - [`status`]: every shard's progress and lag, from the metadata store.
//! - [`reprocess`]: marks shards `REPROCESS`.
//! - [`validate`]: compares MySQL shards with Spanner, row by row, in bounded memory, each shard
//!   at the exact point its checkpoint names; `--continuous` sampling with counters, `--repair`.
//! - [`run`](mod@run): runs the reader and the writer as supervised child processes
//!   ([`supervise`]) with live [`progress`].
//! - [`dlq`]: lists, shows and retries the writer's dead letters.
//! - [`demo`]: the whole pipeline on local services, start to finish.
//! - [`mysql`], [`spanner`], [`store`]: how the launcher reaches the shards, the source
//!   database and the metadata store.
//!
//! [`run()`] executes a parsed command line and returns the process exit code: 0 ok, 1 failed,
//! 2 bad configuration or usage, 3 a shard is in `ERROR` (`status`) or failed (`run`), 4
//! differences found (`validate`, `demo`); `run` stopped by SIGINT/SIGTERM exits with 130/143.

pub mod cli;
pub mod demo;
pub mod dlq;
pub mod drain;
pub mod error;
pub mod init;
pub mod mysql;
pub mod progress;
pub mod reprocess;
pub mod run;
pub mod spanner;
pub mod status;
pub mod store;
pub mod supervise;
pub mod validate;

use std::path::PathBuf;
use std::time::Duration;

use revrepl_config::Config;
use revrepl_metadata::RunId;
use revrepl_record::Timestamp;

pub use cli::Cli;
pub use error::LauncherError;

use crate::cli::{Command, GlobalArgs, ValidateArgs};

/// Exit code: a shard is in `ERROR`.
pub const EXIT_SHARD_ERROR: u8 = 3;
/// Exit code: validation found differences.
pub const EXIT_DIFFERENCES: u8 = 4;
/// The configuration file used when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = revrepl_config::DEFAULT_FILE;

/// Runs `cli`, printing results on stdout; returns the exit code.
pub async fn run(cli: Cli) -> Result<u8, LauncherError> {
    if let Command::Demo(args) = cli.command {
        return demo::command(args).await;
    }
    let (config, config_path) = load_config(&cli.global)?;
    match cli.command {
        Command::Demo(_) => Ok(0),
        Command::Run(args) => run::command(&cli.global, config, config_path, args).await,
        Command::Init(args) => {
            println!(
                "revrepl init: run {}, configuration {}",
                config.run_id,
                config_path
                    .as_deref()
                    .map_or("(environment and --set only)".to_string(), |p| p
                        .display()
                        .to_string())
            );
            let report = init::init(&config, &args, &mut |check| println!("{check}")).await;
            let failures = report.failures();
            if failures == 0 {
                println!("init: ready");
                Ok(0)
            } else {
                println!("init: {failures} problem(s); fix them and run `revrepl init` again");
                Ok(1)
            }
        }
        Command::Status(args) => {
            let store = store::open_existing(&config).await?;
            let run_id = RunId::new(config.run_id.clone())?;
            let now = Timestamp::from(chrono::Utc::now());
            let report = status::status_with_stored_errors(store.as_ref(), &run_id, now).await?;
            if args.json {
                println!("{}", to_json(&report)?);
            } else {
                print!("{}", status::render_text(&report));
            }
            Ok(if report.has_errors() {
                EXIT_SHARD_ERROR
            } else {
                0
            })
        }
        Command::Drain(args) => {
            let store = store::open_existing(&config).await?;
            let run_id = RunId::new(config.run_id.clone())?;
            let until = drain_target(&config, &args.until).await?;
            let outcome = drain::drain(
                store.as_ref(),
                &run_id,
                until,
                args.interval,
                args.timeout,
                &mut |line| println!("{line}"),
            )
            .await?;
            Ok(match outcome {
                drain::DrainOutcome::Drained(took) => {
                    println!(
                        "drained: every shard has applied everything up to {until} (waited {:.1}s)",
                        took.as_secs_f64()
                    );
                    0
                }
                drain::DrainOutcome::Failed(shards) => {
                    println!(
                        "not drained: shard(s) {} in ERROR; `revrepl status` shows why",
                        shards.join(", ")
                    );
                    EXIT_SHARD_ERROR
                }
                drain::DrainOutcome::TimedOut(behind) => {
                    let names: Vec<&str> = behind.iter().map(|(s, _)| s.as_str()).collect();
                    println!(
                        "not drained: --timeout passed; still behind: {}",
                        names.join(", ")
                    );
                    1
                }
            })
        }
        Command::Reprocess(args) => {
            let store = store::open_existing(&config).await?;
            let run_id = RunId::new(config.run_id.clone())?;
            let marked =
                reprocess::reprocess(store.as_ref(), &run_id, &args.shards, args.from, args.force)
                    .await?;
            print!(
                "{}",
                reprocess::render_text(&run_id, &marked, config_path.as_deref())
            );
            Ok(0)
        }
        Command::Dlq(command) => dlq::command(&config, command).await,
        Command::Validate(args) if args.continuous => {
            let options = validate_options(&config, &args)?;
            validate_continuously(&config, &options, &args).await
        }
        Command::Validate(args) if args.repair => {
            let options = validate_options(&config, &args)?;
            let repaired = validate::repair::repair(&config, &options).await?;
            print!("{}", validate::repair::render_text(&repaired));
            // Validate again: the result after the repair decides the exit code.
            let report = validate::validate(&config, &options).await?;
            if args.json {
                println!("{}", to_json(&report)?);
            } else {
                print!("{}", validate::render_text(&report));
            }
            Ok(if report.differences() == 0 {
                0
            } else {
                EXIT_DIFFERENCES
            })
        }
        Command::Validate(args) => {
            let options = validate_options(&config, &args)?;
            let report = validate::validate(&config, &options).await?;
            if args.json {
                println!("{}", to_json(&report)?);
            } else {
                print!("{}", validate::render_text(&report));
            }
            Ok(if report.differences() == 0 {
                0
            } else {
                EXIT_DIFFERENCES
            })
        }
    }
}

/// `revrepl validate --continuous`: metrics exported, until SIGINT/SIGTERM or `--rounds`.
async fn validate_continuously(
    config: &Config,
    options: &validate::ValidateOptions,
    args: &ValidateArgs,
) -> Result<u8, LauncherError> {
    use std::io::Write as _;
    let metrics = revrepl_telemetry::MetricsOptions::new("revrepl-validate")
        .with_optional_prometheus(args.metrics_addr)
        .with_otlp_from_env();
    let telemetry = revrepl_telemetry::Telemetry::install(metrics)
        .map_err(|e| LauncherError::Usage(format!("--metrics-addr: {e}")))?;
    if let Some(addr) = telemetry.prometheus_addr() {
        println!("revrepl validate --continuous: metrics at http://{addr}/metrics");
    }
    let cancel = tokio_util::sync::CancellationToken::new();
    revrepl_telemetry::cancel_on_signals(cancel.clone());
    let continuous = validate::continuous::ContinuousOptions {
        interval: args.interval,
        rows_per_second: args.rows_per_second,
        rounds: args.rounds,
    };
    let outcome = validate::continuous::run(
        config,
        options,
        continuous,
        &validate::continuous::ValidateMetrics::global(),
        &cancel,
        &mut |line| {
            println!("{line}");
            let _ = std::io::stdout().flush();
        },
    )
    .await;
    telemetry.shutdown().await;
    outcome.map(|()| 0)
}

/// The options of `validate` from its arguments and the configuration.
pub fn validate_options(
    config: &Config,
    args: &ValidateArgs,
) -> Result<validate::ValidateOptions, LauncherError> {
    let zone = match &args.source_timezone {
        Some(text) => text
            .parse()
            .map_err(|e| LauncherError::Usage(format!("--source-timezone: {e}")))?,
        None => config
            .writer
            .source_time_zone
            .parse()
            .map_err(|e| LauncherError::Usage(format!("writer.source_time_zone: {e}")))?,
    };
    Ok(validate::ValidateOptions {
        tables: args.tables.clone(),
        shards: args.shards.clone(),
        zone,
        max_listed: args.max_listed,
        detail_rows: args.detail_rows,
        connect_timeout: Duration::from_secs(60),
        ignore_columns: config.writer.ignore_columns.clone(),
        writer_choices: validate::canonical::WriterChoices {
            emulator_timestamps: validate::uses_emulator(config),
            ..validate::canonical::WriterChoices::from(&config.writer)
        },
        run_id: config.run_id.clone(),
        at_checkpoint: !args.current,
    })
}

/// Loads the configuration: `--config` (or `revrepl.toml` if present), `REVREPL_…`
/// variables, `--set`, then `--run-id`. Returns the file used, if any.
pub fn load_config(global: &GlobalArgs) -> Result<(Config, Option<PathBuf>), LauncherError> {
    let (mut config, path) = Config::locate_and_load(global.config.as_deref(), &global.overrides)?;
    if let Some(run_id) = &global.run_id {
        config.run_id = run_id.clone();
    }
    Ok((config, path))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, LauncherError> {
    serde_json::to_string_pretty(value)
        .map_err(|e| LauncherError::Usage(format!("cannot write JSON: {e}")))
}

/// The drain target: an RFC 3339 time, or `now` — Spanner's current time, read from the
/// database, so that a skewed local clock cannot end the drain before a commit it made.
async fn drain_target(config: &Config, text: &str) -> Result<Timestamp, LauncherError> {
    if !text.eq_ignore_ascii_case("now") {
        return Timestamp::parse_rfc3339(text).map_err(|e| {
            LauncherError::Usage(format!(
                "--until {text:?}: {e} (use `now` or an RFC 3339 time)"
            ))
        });
    }
    let database = spanner::SourceDatabase::connect(config, Duration::from_secs(30)).await?;
    let statement = google_cloud_spanner::statement::Statement::builder(
        "SELECT FORMAT_TIMESTAMP('%Y-%m-%dT%H:%M:%E6SZ', CURRENT_TIMESTAMP(), 'UTC')",
    )
    .build();
    let rows = database.query("read the current time", statement).await?;
    let text = rows
        .first()
        .and_then(|row| row.get::<String>(0usize).ok())
        .ok_or_else(|| database.error("read the current time", &"no row returned"))?;
    Timestamp::parse_rfc3339(&text)
        .map_err(|e| database.error("read the current time", &format!("{text:?}: {e}")))
}
