//! `revrepl-writer`: applies a run's window files to the MySQL shards, exactly once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use revrepl_config::Config;
use revrepl_record::Timestamp;
use revrepl_telemetry::{MetricsOptions, Telemetry};
use revrepl_writer::WriterError;
use revrepl_writer::app::{ShardSubset, WriterMode, run};
use tokio_util::sync::CancellationToken;

/// Applies window files to the MySQL shards in commit order, one task per shard.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The configuration file (TOML). Default: `revrepl.toml` in the current directory, if it
    /// exists; otherwise only `REVREPL_…` variables and `--set` configure.
    #[arg(long, short, env = "REVREPL_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// regular, resume (= resumeAll), resumeSuccess, resumeFailed or reprocess.
    #[arg(long, default_value = "regular")]
    mode: WriterMode,
    /// Stop each shard after the window that ends at or after this time (RFC 3339).
    #[arg(long, value_parser = parse_timestamp)]
    until: Option<Timestamp>,
    /// Apply only the shards of this index (0-based) out of --shard-count, e.g. the completion
    /// index of a Kubernetes Indexed Job.
    #[arg(long, env = "JOB_COMPLETION_INDEX", default_value_t = 0)]
    shard_index: u32,
    /// How many processes share the shards.
    #[arg(long, default_value_t = 1)]
    shard_count: u32,
    /// Override a configuration key, e.g. `--set writer.dead_letter=true` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics. OTLP export is on when
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
    #[arg(long, env = "REVREPL_METRICS_ADDR", value_name = "HOST:PORT")]
    metrics_addr: Option<SocketAddr>,
}

fn parse_timestamp(text: &str) -> Result<Timestamp, String> {
    Timestamp::parse_rfc3339(text).map_err(|e| e.to_string())
}

/// mysql_async keeps up to this many I/O buffers for reuse (its default is 128). Every
/// statement takes the oldest one and grows it to the statement's size, so with the default
/// the pool slowly fills with statement-sized buffers (tens of MiB per process).
const MYSQL_BUFFER_POOL: &str = "16";

fn main() -> ExitCode {
    if std::env::var_os("MYSQL_ASYNC_BUFFER_POOL_CAP").is_none() {
        // SAFETY: no other thread runs yet (the runtime starts below), so nothing reads the
        // environment concurrently.
        unsafe { std::env::set_var("MYSQL_ASYNC_BUFFER_POOL_CAP", MYSQL_BUFFER_POOL) };
    }
    let args = Args::parse();
    revrepl_telemetry::init_logging();
    let config = match Config::locate_and_load(args.config.as_deref(), &args.overrides) {
        Ok((config, _)) => config,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let metrics = MetricsOptions::new("revrepl-writer")
            .with_optional_prometheus(args.metrics_addr)
            .with_otlp_from_env();
        let telemetry = match Telemetry::install(metrics) {
            Ok(telemetry) => telemetry,
            Err(error) => {
                tracing::error!("{error}");
                return ExitCode::from(2);
            }
        };
        let cancel = CancellationToken::new();
        revrepl_telemetry::cancel_on_signals(cancel.clone());
        let subset = ShardSubset {
            index: args.shard_index,
            count: args.shard_count,
        };
        let outcome = run(&config, args.mode, args.until, subset, cancel).await;
        telemetry.shutdown().await;
        match outcome {
            Ok(summary) if summary.failed.is_empty() => {
                tracing::info!(
                    finished = summary.finished.len(),
                    cancelled = summary.cancelled.len(),
                    "writer stopped"
                );
                ExitCode::SUCCESS
            }
            Ok(summary) => {
                for (shard, error) in &summary.failed {
                    tracing::error!(%shard, "shard failed: {error}");
                }
                ExitCode::from(3)
            }
            // A configuration error (a key, the shards or session file) never goes away by
            // itself: exit 2, which `revrepl run` does not restart.
            Err(WriterError::Routing(error)) if error.is_configuration() => {
                tracing::error!("{error}: {}", error.fix());
                ExitCode::from(2)
            }
            // Starting again cannot help: a usage error, like a bad configuration.
            Err(error @ (WriterError::Config { .. } | WriterError::NothingToWaitFor { .. })) => {
                tracing::error!("{error}");
                ExitCode::from(2)
            }
            Err(error) => {
                tracing::error!("{error}");
                ExitCode::FAILURE
            }
        }
    })
}
