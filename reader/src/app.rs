//! The reader as a program: configuration in, run modes (DESIGN §7), the pipeline out.

use std::sync::Arc;
use std::time::Duration;

use revrepl_config::Config;
use revrepl_metadata::{
    LeaseKeeper, LeaseOwner, LeaseRole, MissingTables, RunId, RunRecord, open_store,
};
use revrepl_record::{Backoff, ShardId, Timestamp, WindowDuration};
use revrepl_shard_routing::{Session, ShardAssigner, ShardsFile, choose_router};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::assembly::AssemblyError;
use crate::error::ReaderError;
use crate::pipeline::{PipelineParts, PipelineSettings, PipelineSummary, run_pipeline};
use crate::routing::{RecordFilter, TableFilter};
use crate::source::ChangeStreamSource;
use crate::spanner::{
    SpannerChangeStream, SpannerDatabase, SpannerRowLookup, check_retention, check_stream,
};
use crate::telemetry::ReaderMetrics;

/// The reader's run modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderMode {
    /// Start a run at `reader.start_timestamp` (or now), aligned to the window grid, and record
    /// it.
    Regular,
    /// Continue a recorded run from the smallest `created_upto` of its shards.
    Resume,
}

impl std::str::FromStr for ReaderMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "regular" => Ok(Self::Regular),
            "resume" => Ok(Self::Resume),
            other => Err(format!("unknown reader mode {other:?} (regular, resume)")),
        }
    }
}

/// Runs the reader in `mode` until `until` (if given) or `cancel`.
pub async fn run(
    config: &Config,
    mode: ReaderMode,
    until: Option<Timestamp>,
    cancel: CancellationToken,
) -> Result<PipelineSummary, ReaderError> {
    let run_id = RunId::new(config.run_id.clone())?;
    let shards_file = ShardsFile::load(&config.shards_file)?;
    let shards: Vec<ShardId> = shards_file.shard_ids().cloned().collect();
    let session = match &config.session_file {
        Some(path) => Some(Arc::new(Session::load(path)?)),
        None => None,
    };
    let plugin = config
        .routing
        .plugin
        .as_deref()
        .map(|path| (path, config.routing.plugin_params.as_str()));
    let tables = TableFilter::new(
        &config.reader.include_tables,
        &config.reader.exclude_tables,
        session.as_deref(),
    )?;
    let router = choose_router(&shards_file, session, plugin)?;

    let database = SpannerDatabase {
        database: config.spanner.database.clone(),
        endpoint: config.spanner.endpoint.clone(),
    };
    let client = database.connect().await?;
    let options = check_stream(&client, &database.database, &config.spanner.change_stream).await?;
    tracing::info!(
        stream = %config.spanner.change_stream,
        value_capture_type = %options.value_capture_type,
        retention = %options.retention_text,
        "change stream checked"
    );
    let metadata = open_store(config, MissingTables::Create).await?;
    let buffer = config.buffer.open().await?;

    // One reader per run (DESIGN §7): refused while another holds the run's lease.
    let lease = LeaseKeeper::acquire(
        Arc::clone(&metadata),
        run_id.clone(),
        LeaseRole::Reader,
        LeaseOwner::this_process(),
        config.metadata.lease_ttl,
    )
    .await?;
    // The pipeline stops when the reader is stopped, or at once when the lease is lost.
    let pipeline_cancel = cancel.child_token();
    let watcher = {
        let lost = lease.lost();
        let stop = pipeline_cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = lost.cancelled() => stop.cancel(),
                () = stop.cancelled() => {}
            }
        })
    };
    let outcome: Result<PipelineSummary, ReaderError> = async {
        let requested = match &config.reader.start_timestamp {
            Some(text) => {
                Some(
                    Timestamp::parse_rfc3339(text).map_err(|e| ReaderError::Config {
                        key: "reader.start_timestamp".into(),
                        reason: e.to_string(),
                    })?,
                )
            }
            None => None,
        };
        let (start, read_from, window) = match mode {
            ReaderMode::Regular => {
                let window = config.reader.window;
                let requested = requested.unwrap_or_else(now);
                // Windows stay on the grid, but the stream is read from the requested time: the
                // grid's start can lie before the stream was created (a run started right after
                // `revrepl init`), and Spanner refuses such starts.
                let start = align(window, requested)?;
                metadata
                    .record_run(&RunRecord::new(run_id.clone(), start, window)?)
                    .await?;
                metadata.register_shards(&run_id, &shards, start).await?;
                (start, requested, window)
            }
            ReaderMode::Resume => {
                let run = metadata.require_run(&run_id).await?;
                metadata
                    .register_shards(&run_id, &shards, run.start())
                    .await?;
                let start = metadata
                    .min_created_upto(&run_id)
                    .await?
                    .unwrap_or(run.start());
                (
                    start,
                    resume_read_from(&run, start, requested),
                    run.window(),
                )
            }
        };
        check_retention(&config.spanner.change_stream, &options, read_from, now())?;
        tracing::info!(
            run_id = %run_id, ?mode, start = %start, read_from = %read_from, window = %window,
            "reader starting"
        );

        let source = SpannerChangeStream::new(
            client.clone(),
            &database.database,
            &config.spanner.change_stream,
            config.reader.heartbeat_interval(),
        )?
        .with_priority(config.spanner.priority);
        let assigner = ShardAssigner::new(router, shards.iter().cloned()).with_row_lookup(
            SpannerRowLookup::new(client, &database.database)
                .with_priority(config.spanner.priority),
        );
        let mut settings = PipelineSettings {
            run_id: run_id.clone(),
            window,
            start,
            read_from,
            until,
            filter: RecordFilter {
                filtration: config.reader.filtration,
                keep_system_transactions: config.reader.keep_system_transactions,
            },
            tables,
            max_ahead: config.reader.max_ahead,
            stall_timeout: config.reader.stall_timeout,
            retry: Backoff {
                initial: Duration::from_millis(200),
                max: Duration::from_secs(30),
                multiplier: 2,
                max_attempts: None,
            },
            event_capacity: 1024,
        };
        let source: Arc<dyn ChangeStreamSource> = Arc::new(source);
        let assigner = Arc::new(assigner);
        let metrics = ReaderMetrics::global();
        let mut restarts = 0;
        loop {
            let parts = PipelineParts {
                source: Arc::clone(&source),
                assigner: Arc::clone(&assigner),
                buffer: Arc::clone(&buffer),
                metadata: Arc::clone(&metadata),
                shards: shards.clone(),
                metrics: metrics.clone(),
            };
            let span = tracing::info_span!("reader", run_id = %run_id);
            let outcome = run_pipeline(settings.clone(), parts, pipeline_cancel.clone())
                .instrument(span)
                .await;
            match outcome {
                // Nothing of the incomplete window was written: read it again from the last
                // recorded window, as a restarted reader would.
                Err(ReaderError::Assembly(AssemblyError::Incomplete(error)))
                    if restarts < MAX_RESTARTS_ON_INCOMPLETE =>
                {
                    restarts += 1;
                    tracing::error!(
                        %error,
                        restarts,
                        "reading the window again from the last recorded position"
                    );
                    settings.start = metadata
                        .min_created_upto(&run_id)
                        .await?
                        .unwrap_or(settings.start);
                    settings.read_from = settings.read_from.max(settings.start);
                }
                outcome => return outcome,
            }
        }
    }
    .await;
    watcher.abort();
    let outcome = match lease.check() {
        Ok(()) => outcome,
        Err(lost) => Err(lost.into()),
    };
    lease.release().await;
    outcome
}

/// How often the reader re-reads from its durable position after finding a transaction with
/// missing records, before it gives up and reports the error.
const MAX_RESTARTS_ON_INCOMPLETE: u32 = 3;

/// Where a resumed run reads from: its durable position, except while nothing of the run is
/// recorded yet and the run was asked to start later in its first window (`revrepl run` keeps
/// the pinned `reader.start_timestamp` across restarts): then from there, as its first start
/// did. Reading from the grid's start instead could ask for a time before the stream existed.
fn resume_read_from(
    run: &RunRecord,
    position: Timestamp,
    requested: Option<Timestamp>,
) -> Timestamp {
    match requested {
        Some(requested)
            if position == run.start()
                && requested > position
                && run.window().align_down(requested).ok() == Some(position) =>
        {
            requested
        }
        _ => position,
    }
}

fn now() -> Timestamp {
    Timestamp::from(chrono::Utc::now())
}

fn align(window: WindowDuration, ts: Timestamp) -> Result<Timestamp, ReaderError> {
    window.align_down(ts).map_err(|e| ReaderError::Config {
        key: "reader.start_timestamp".into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64, nanos: u32) -> Timestamp {
        Timestamp::new(seconds, nanos).expect("valid")
    }

    #[test]
    fn a_resumed_run_reads_from_its_pinned_start_until_its_first_window_is_recorded() {
        let window: WindowDuration = "10s".parse().expect("window");
        let run = RunRecord::new(RunId::new("r").expect("id"), ts(100, 0), window).expect("run");
        let pinned = Some(ts(103, 500));
        assert_eq!(resume_read_from(&run, ts(100, 0), pinned), ts(103, 500));
        assert_eq!(
            resume_read_from(&run, ts(110, 0), pinned),
            ts(110, 0),
            "after a recorded window: the durable position"
        );
        assert_eq!(resume_read_from(&run, ts(100, 0), None), ts(100, 0));
        assert_eq!(
            resume_read_from(&run, ts(100, 0), Some(ts(125, 0))),
            ts(100, 0),
            "a start outside the first window is not this run's"
        );
    }
}
