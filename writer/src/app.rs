//! The writer as a program: configuration in, run modes (DESIGN §7), one task per shard.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mysql_async::{Opts, SslOpts};
use revrepl_config::Config;
use revrepl_metadata::{
    LeaseKeeper, LeaseOwner, LeaseRole, MetadataStore, MissingTables, ProcessProgress,
    ProcessStatus, RunId, RunRecord, open_store,
};
use revrepl_record::{Backoff, Classify, ErrorClass, ShardId, Timestamp, with_backoff};
use revrepl_shard_routing::{
    GoogleSecretManager, NoSecretManager, PasswordSource, Session, Shard, ShardsFile,
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::apply::{ApplierConfig, ShardApplier, shard_connection_options};
use crate::batch::BatchLimits;
use crate::convert::ConversionRules;
use crate::convert::SourceTimeZone;
use crate::error::WriterError;
use crate::mapping::SchemaMapping;
use crate::reader_progress::ReaderProgress;
use crate::shard_task::{ShardContext, ShardOutcome};
use crate::telemetry::WriterMetrics;
use crate::transformation::{PluginTransformer, RecordTransformer};

/// The writer's run modes (DESIGN §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterMode {
    /// Every shard of the shards file, from the run's start (checkpoints skip what is applied).
    Regular,
    /// Every shard with progress: after its last `SUCCESS` window, or at its `ERROR` /
    /// `REPROCESS` window (`resume` and `resumeAll` are the same).
    ResumeAll,
    /// Only shards whose status is `SUCCESS`.
    ResumeSuccess,
    /// Only shards whose status is `ERROR`, from the failed window.
    ResumeFailed,
    /// Only shards whose status is `REPROCESS`, from `file_start_interval`, applying again even
    /// what the checkpoint says is applied.
    Reprocess,
}

impl std::str::FromStr for WriterMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "regular" => Ok(Self::Regular),
            "resume" | "resumeAll" => Ok(Self::ResumeAll),
            "resumeSuccess" => Ok(Self::ResumeSuccess),
            "resumeFailed" => Ok(Self::ResumeFailed),
            "reprocess" => Ok(Self::Reprocess),
            other => Err(format!(
                "unknown writer mode {other:?} (regular, resume, resumeAll, resumeSuccess, \
                 resumeFailed, reprocess)"
            )),
        }
    }
}

/// Which shards this process applies: all, or a stable subset for one index of an Indexed Job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSubset {
    /// This process's index, `0..count`.
    pub index: u32,
    /// How many processes share the shards.
    pub count: u32,
}

impl ShardSubset {
    /// Every shard.
    pub const ALL: Self = Self { index: 0, count: 1 };

    /// Whether `shard` belongs to this subset: by a hash of its id (FNV-1a), so that adding
    /// or removing a shard moves no other shard between processes.
    pub fn contains(&self, shard: &ShardId) -> bool {
        let hash = shard
            .as_str()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        hash % u64::from(self.count.max(1)) == u64::from(self.index)
    }
}

/// The writer's retry policy for transient errors (retried forever): from 200 ms, doubling,
/// capped at [`MAX_RETRY_DELAY`].
pub const RETRY: Backoff = Backoff {
    initial: Duration::from_millis(200),
    max: MAX_RETRY_DELAY,
    multiplier: 2,
    max_attempts: None,
};

/// The longest wait between two attempts of a transient failure: a shard applies again within
/// this (plus one reconnection) of its server returning, however long the outage was.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3);

/// How often the wait for an unrecorded run is logged again after the first time.
const WAIT_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// How long after `--until` a writer still waits for an unrecorded run when no
/// `reader.start_timestamp` is configured: a reader started just before `--until` records its
/// run within seconds.
const UNTIL_GRACE: Duration = Duration::from_secs(30);

/// Where a shard starts, and whether its checkpoint is rewound first (`REPROCESS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardStart {
    /// The start of the first window to read.
    pub from: Timestamp,
    /// Apply again what the checkpoint says is applied, from `from` (the shard is marked
    /// `REPROCESS`).
    pub rewind: bool,
}

/// How the writer's shards ended.
#[derive(Debug, Default)]
pub struct WriterSummary {
    /// Shards that applied everything up to `until`.
    pub finished: Vec<ShardId>,
    /// Shards stopped by cancellation.
    pub cancelled: Vec<ShardId>,
    /// Shards stopped by an error, with the error text.
    pub failed: Vec<(ShardId, String)>,
}

/// Runs the writer in `mode` until `until` (if given), `cancel`, or every shard stopped.
pub async fn run(
    config: &Config,
    mode: WriterMode,
    until: Option<Timestamp>,
    subset: ShardSubset,
    cancel: CancellationToken,
) -> Result<WriterSummary, WriterError> {
    if subset.count == 0 || subset.index >= subset.count {
        return Err(WriterError::Config {
            key: "shard-index".into(),
            reason: format!(
                "{} is not below --shard-count {}",
                subset.index, subset.count
            ),
        });
    }
    let run_id = RunId::new(config.run_id.clone())?;
    let writer = &config.writer;
    let time_zone = source_time_zone(config)?;
    let mapping = schema_mapping(config)?;
    let transformer = load_transformer(writer)?;
    let shards_file = ShardsFile::load(&config.shards_file)?;
    let shards = resolve_passwords(&shards_file).await?;
    let metadata = open_store(config, MissingTables::Create).await?;
    let buffer = config.buffer.open().await?;
    let Some(run) = wait_for_run(&*metadata, config, &run_id, mode, until, &cancel).await? else {
        return Ok(WriterSummary::default());
    };
    let starts = starting_points(&*metadata, &run, mode, &shards).await?;
    let tls = tls_options(config)?;
    // Last before the shards start: nothing after it may fail with the leases taken.
    let leases = take_leases(&metadata, config, &run_id, subset, &starts).await?;
    let context = ShardContext {
        run_id: run_id.clone(),
        window: run.window(),
        metadata: Arc::clone(&metadata),
        buffer,
        limits: BatchLimits {
            max_records: writer.batch_max_records.max(1),
            max_bytes: writer.batch_max_bytes.max(1),
        },
        retry: RETRY,
        reader_progress: ReaderProgress::watch(
            Arc::clone(&metadata),
            run_id.clone(),
            writer.poll_interval,
            cancel.clone(),
        ),
        until,
        dead_letter: writer.dead_letter,
        strict_line_shard: writer.strict_line_shard,
        metrics: WriterMetrics::global(),
        lease: None,
    };
    let mut tasks = JoinSet::new();
    let mut leases = leases;
    for shard in shards {
        let id = shard.config.logical_shard_id.clone();
        if !subset.contains(&id) {
            continue;
        }
        let Some(start) = starts.get(&id).copied() else {
            tracing::info!(shard = %id, ?mode, "shard skipped: no progress row for this mode");
            continue;
        };
        let Some(lease) = leases.remove(&id) else {
            continue;
        };
        let applier_config = applier_config(
            &run_id,
            &shard,
            tls.clone(),
            &mapping,
            time_zone,
            transformer.clone(),
        );
        let lease = Arc::new(lease);
        let mut context = context.clone();
        context.lease = Some(Arc::clone(&lease));
        // The shard stops when the writer is stopped, or at once when its lease is lost.
        let cancel = cancel.child_token();
        let span = tracing::info_span!("writer", run_id = %run_id, shard = %id);
        tasks.spawn(
            async move {
                let lost = lease.lost();
                let stop_on_loss = cancel.clone();
                let outcome = tokio::select! {
                    outcome = run_shard(&context, applier_config, start, cancel) => outcome,
                    () = lost.cancelled() => {
                        stop_on_loss.cancel();
                        ShardOutcome::Cancelled
                    }
                };
                let outcome = if lost.is_cancelled() {
                    ShardOutcome::Failed(WriterError::from(lease.lost_error()))
                } else {
                    outcome
                };
                lease.release().await;
                (id, outcome)
            }
            .instrument(span),
        );
    }
    let mut summary = WriterSummary::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((shard, ShardOutcome::ReachedUntil)) => summary.finished.push(shard),
            Ok((shard, ShardOutcome::Cancelled)) => summary.cancelled.push(shard),
            Ok((shard, ShardOutcome::Failed(error))) => {
                summary.failed.push((shard, error.to_string()));
            }
            Err(e) => {
                return Err(WriterError::Config {
                    key: "task".into(),
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok(summary)
}

/// The time zone of the shards' `DATETIME` values (`writer.source_time_zone`).
pub(crate) fn source_time_zone(config: &Config) -> Result<SourceTimeZone, WriterError> {
    config
        .writer
        .source_time_zone
        .parse()
        .map_err(|e: crate::convert::TimeZoneError| WriterError::Config {
            key: "writer.source_time_zone".into(),
            reason: e.to_string(),
        })
}

/// The schema overrides of the configuration (`schema_overrides_file`, or `table_overrides`
/// and `column_overrides`), if any; the configuration allows only one of them and no session
/// file beside.
pub fn schema_overrides(
    config: &Config,
) -> Result<Option<revrepl_shard_routing::SchemaOverrides>, revrepl_shard_routing::RoutingError> {
    use revrepl_config::{ColumnOverrides, TableOverrides};
    use revrepl_shard_routing::SchemaOverrides;
    if let Some(path) = &config.schema_overrides_file {
        return SchemaOverrides::load(path).map(Some);
    }
    if config.table_overrides.is_none() && config.column_overrides.is_none() {
        return Ok(None);
    }
    let tables = match &config.table_overrides {
        None => Default::default(),
        Some(TableOverrides::Text(text)) => SchemaOverrides::parse_table_overrides(text)?,
        Some(TableOverrides::Map(map)) => map.clone(),
    };
    let columns = match &config.column_overrides {
        None => Default::default(),
        Some(ColumnOverrides::Text(text)) => SchemaOverrides::parse_column_overrides(text)?,
        Some(ColumnOverrides::Map(map)) => map.clone(),
    };
    SchemaOverrides::new("table_overrides/column_overrides", tables, columns).map(Some)
}

/// Spanner → MySQL names and conversion rules, from the configuration (its session file or
/// schema overrides).
pub(crate) fn schema_mapping(config: &Config) -> Result<Arc<SchemaMapping>, WriterError> {
    let writer = &config.writer;
    let mut mapping = match (&config.session_file, schema_overrides(config)?) {
        (Some(path), _) => SchemaMapping::from_session(&Session::load(path)?),
        (None, Some(overrides)) => SchemaMapping::from_overrides(&overrides),
        (None, None) => SchemaMapping::identity(),
    };
    for column in &writer.ignore_columns {
        mapping = mapping.ignoring_column_everywhere(column.clone());
    }
    Ok(Arc::new(mapping.with_rules(ConversionRules::from(writer))))
}

/// The applier's configuration for `shard`: TLS from the configuration, then the shard's own
/// `connectionProperties`.
pub(crate) fn applier_config(
    run_id: &RunId,
    shard: &Shard,
    tls: Option<SslOpts>,
    mapping: &Arc<SchemaMapping>,
    time_zone: SourceTimeZone,
    transformer: Option<Arc<dyn RecordTransformer>>,
) -> ApplierConfig {
    let options = shard
        .config
        .connection
        .apply(shard_connection_options(shard), tls);
    ApplierConfig {
        run_id: run_id.to_string(),
        shard: shard.config.logical_shard_id.clone(),
        connection: Opts::from(options),
        mapping: Arc::clone(mapping),
        time_zone,
        limits: Default::default(),
        connect_timeout: shard.config.connection.connect_timeout,
        transformer,
    }
}

/// Loads the transformation plugin of `writer.transformation`, if any (calling its `init`
/// once); a plugin that cannot be loaded is a configuration error.
pub(crate) fn load_transformer(
    writer: &revrepl_config::WriterConfig,
) -> Result<Option<Arc<dyn RecordTransformer>>, WriterError> {
    let Some(transformation) = &writer.transformation else {
        return Ok(None);
    };
    let plugin = PluginTransformer::load(&transformation.library, &transformation.parameters)
        .map_err(|error| WriterError::Config {
            key: "writer.transformation".into(),
            reason: error.to_string(),
        })?;
    tracing::info!(plugin = %plugin.name(), "transformation plugin loaded");
    Ok(Some(Arc::new(plugin)))
}

/// Connects the shard's applier (retrying forever while the shard is unreachable) and runs it.
/// A failure before the shard's loop starts (connecting, reading or rewinding the checkpoint)
/// is recorded as `ERROR` at the first window, like any other.
async fn run_shard(
    context: &ShardContext,
    config: ApplierConfig,
    start: ShardStart,
    cancel: CancellationToken,
) -> ShardOutcome {
    let shard = config.shard.clone();
    let first = match context.window.window_of(start.from) {
        Ok(window) => window,
        Err(e) => {
            return ShardOutcome::Failed(WriterError::Config {
                key: "file_start_interval".into(),
                reason: e.to_string(),
            });
        }
    };
    let on_retry = |error: &WriterError, delay: Duration| {
        tracing::warn!(%shard, %error, ?delay, "connecting to the shard failed; retrying");
        context.metrics.retry(&shard);
    };
    let connected = tokio::select! {
        () = cancel.cancelled() => return ShardOutcome::Cancelled,
        connected = with_backoff(context.retry.forever(), on_retry, || ShardApplier::connect(config.clone())) => connected,
    };
    let applier = match connected {
        Ok(applier) => applier,
        Err(error) => return context.fail_at_start(&shard, first, error, &cancel).await,
    };
    let mut from = start.from;
    if start.rewind {
        if let Err(error) = applier.rewind_checkpoint(first).await {
            applier.close().await;
            return context.fail_at_start(&shard, first, error, &cancel).await;
        }
        tracing::info!(%shard, from = %first.start(), "checkpoint rewound: applying again (REPROCESS)");
    } else {
        // Files before the checkpoint's window are applied already: do not read them again.
        match applier.read_checkpoint().await {
            Ok(Some(checkpoint)) => from = from.max(checkpoint.window.start()),
            Ok(None) => {}
            Err(error) => {
                applier.close().await;
                return context.fail_at_start(&shard, first, error, &cancel).await;
            }
        }
    }
    let outcome = context.run(&applier, from, cancel).await;
    applier.close().await;
    outcome
}

/// Takes the lease of every shard this process will apply (DESIGN §7: one writer per run and
/// shard), before touching any. If another writer holds one, releases those taken and refuses
/// with [`revrepl_metadata::MetadataError::LeaseHeld`].
async fn take_leases(
    metadata: &Arc<dyn MetadataStore>,
    config: &Config,
    run_id: &RunId,
    subset: ShardSubset,
    starts: &BTreeMap<ShardId, ShardStart>,
) -> Result<BTreeMap<ShardId, LeaseKeeper>, WriterError> {
    let owner = LeaseOwner::this_process();
    let mut taken = BTreeMap::new();
    for shard in starts.keys().filter(|s| subset.contains(s)) {
        let acquired = LeaseKeeper::acquire(
            Arc::clone(metadata),
            run_id.clone(),
            LeaseRole::Writer(shard.clone()),
            owner.clone(),
            config.metadata.lease_ttl,
        )
        .await;
        match acquired {
            Ok(lease) => {
                taken.insert(shard.clone(), lease);
            }
            Err(error) => {
                for lease in taken.values() {
                    lease.release().await;
                }
                return Err(error.into());
            }
        }
    }
    Ok(taken)
}

/// The run's record; in regular mode waits for the reader to record it, logging that once
/// and then every [`WAIT_LOG_INTERVAL`], and gives up ([`WriterError::NothingToWaitFor`]) when
/// `until` lies before anything the run could hold ([`pointless_wait`]).
async fn wait_for_run(
    metadata: &dyn MetadataStore,
    config: &Config,
    run_id: &RunId,
    mode: WriterMode,
    until: Option<Timestamp>,
    cancel: &CancellationToken,
) -> Result<Option<RunRecord>, WriterError> {
    let configured_start = config
        .reader
        .start_timestamp
        .as_deref()
        .and_then(|text| Timestamp::parse_rfc3339(text).ok());
    let mut logged: Option<tokio::time::Instant> = None;
    loop {
        match metadata.run(run_id).await {
            Ok(Some(run)) => return Ok(Some(run)),
            Ok(None) if mode == WriterMode::Regular => {
                let now = Timestamp::from(chrono::Utc::now());
                if let Some(until) = until
                    && let Some(reason) = pointless_wait(until, configured_start, now)
                {
                    return Err(WriterError::NothingToWaitFor {
                        run_id: run_id.to_string(),
                        until: until.to_rfc3339(),
                        reason,
                    });
                }
                if logged.is_none_or(|at| at.elapsed() >= WAIT_LOG_INTERVAL) {
                    tracing::info!(
                        %run_id,
                        "waiting for the reader to record the run (checking every {:?})",
                        config.writer.poll_interval
                    );
                    logged = Some(tokio::time::Instant::now());
                }
            }
            Ok(None) => {
                return Err(metadata.require_run(run_id).await.err().map_or_else(
                    || WriterError::Config {
                        key: "run_id".into(),
                        reason: format!("run {run_id} is not recorded"),
                    },
                    WriterError::from,
                ));
            }
            Err(error) if error.class() == ErrorClass::Transient => {
                tracing::warn!(%error, "reading the run failed; retrying");
            }
            Err(error) => return Err(error.into()),
        }
        tokio::select! {
            () = cancel.cancelled() => return Ok(None),
            () = tokio::time::sleep(config.writer.poll_interval) => {}
        }
    }
}

/// Why waiting at `now` for an unrecorded run cannot lead to applying anything up to `until`,
/// if so: the configured `reader.start_timestamp` is after `until`, or none is configured (a
/// reader started now starts the run now) and `until` passed more than `UNTIL_GRACE` ago.
pub fn pointless_wait(
    until: Timestamp,
    configured_start: Option<Timestamp>,
    now: Timestamp,
) -> Option<String> {
    match configured_start {
        Some(start) if start > until => Some(format!(
            "is before the configured reader.start_timestamp {}",
            start.to_rfc3339()
        )),
        Some(_) => None,
        None => {
            let grace = i128::try_from(UNTIL_GRACE.as_nanos()).unwrap_or(i128::MAX);
            (now.as_nanos() - until.as_nanos() > grace).then(|| {
                format!(
                    "has passed and no reader.start_timestamp is configured (a reader started \
                     now would start the run now, {})",
                    now.to_rfc3339()
                )
            })
        }
    }
}

/// Where each shard starts in `mode`; shards without a start are not applied. A shard still
/// marked `REPROCESS` is rewound and applied again from its `file_start_interval` in every
/// mode that includes it (`regular`, `resume`, `reprocess`), so that a restarted writer keeps
/// the promise of the `reprocess` start it replaces (DESIGN §7).
async fn starting_points(
    metadata: &dyn MetadataStore,
    run: &RunRecord,
    mode: WriterMode,
    shards: &[Shard],
) -> Result<BTreeMap<ShardId, ShardStart>, WriterError> {
    let status = match mode {
        WriterMode::ResumeSuccess => Some(ProcessStatus::Success),
        WriterMode::ResumeFailed => Some(ProcessStatus::Error),
        WriterMode::Reprocess => Some(ProcessStatus::Reprocess),
        WriterMode::Regular | WriterMode::ResumeAll => None,
    };
    let rows: Vec<ProcessProgress> = metadata.list_process_progress(run.run_id(), status).await?;
    let start_of = |row: &ProcessProgress| ShardStart {
        from: row.resume_from(run.window()),
        rewind: row.status == ProcessStatus::Reprocess,
    };
    if mode == WriterMode::Regular {
        return Ok(shards
            .iter()
            .map(|s| {
                let id = s.config.logical_shard_id.clone();
                let start = rows
                    .iter()
                    .find(|row| row.shard == id && row.status == ProcessStatus::Reprocess)
                    .map_or(
                        ShardStart {
                            from: run.start(),
                            rewind: false,
                        },
                        start_of,
                    );
                (id, start)
            })
            .collect());
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let start = start_of(&row);
            (row.shard, start)
        })
        .collect())
}

/// Fetches every shard's password; Secret Manager only when a shard uses it.
pub(crate) async fn resolve_passwords(shards: &ShardsFile) -> Result<Vec<Shard>, WriterError> {
    let uses_secret_manager = shards
        .shards()
        .iter()
        .any(|s| matches!(s.password, PasswordSource::SecretManager(_)));
    if uses_secret_manager {
        let manager = GoogleSecretManager::connect().await?;
        Ok(shards.resolve(&manager).await?)
    } else {
        Ok(shards.resolve(&NoSecretManager).await?)
    }
}

/// TLS settings for every shard: a CA file (verified), or the system roots; and the client
/// certificate for mutual TLS.
pub(crate) fn tls_options(config: &Config) -> Result<Option<SslOpts>, WriterError> {
    let writer = &config.writer;
    let invalid = |key: &str, reason: String| WriterError::Config {
        key: key.into(),
        reason,
    };
    let identity = match (&writer.tls_client_cert_file, &writer.tls_client_key_file) {
        (Some(cert), Some(key)) => Some(
            revrepl_shard_routing::connection::client_identity(
                ("writer.tls_client_cert_file", cert),
                ("writer.tls_client_key_file", key),
            )
            .map_err(|reason| invalid("writer.tls_client_cert_file", reason))?,
        ),
        (None, None) => None,
        (Some(_), None) => {
            return Err(invalid(
                "writer.tls_client_key_file",
                "missing: writer.tls_client_cert_file needs its private key".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "writer.tls_client_cert_file",
                "missing: writer.tls_client_key_file needs its certificate".into(),
            ));
        }
    };
    let tls = match &writer.tls_ca_file {
        Some(path) => {
            if !path.is_file() {
                return Err(invalid(
                    "writer.tls_ca_file",
                    format!("{} does not exist", path.display()),
                ));
            }
            Some(SslOpts::default().with_root_certs(vec![path.clone().into()]))
        }
        None if writer.tls || identity.is_some() => Some(SslOpts::default()),
        None => None,
    };
    Ok(tls.map(|opts| opts.with_client_identity(identity)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_shards_connect_timeout_reaches_its_applier() {
        let file = ShardsFile::from_json(
            "shards.json",
            r#"[{"logicalShardId": "s1", "host": "h", "user": "u", "password": "",
                 "dbName": "d", "connectionProperties": "connectTimeout=250"},
                {"logicalShardId": "s2", "host": "h", "user": "u", "password": "",
                 "dbName": "d"}]"#,
        )
        .expect("valid");
        let shards = file.resolve(&NoSecretManager).await.expect("resolved");
        let run = RunId::new("r").expect("run");
        let mapping = Arc::new(SchemaMapping::identity());
        let timeouts: Vec<Option<Duration>> = shards
            .iter()
            .map(|s| {
                applier_config(&run, s, None, &mapping, SourceTimeZone::default(), None)
                    .connect_timeout
            })
            .collect();
        assert_eq!(timeouts, [Some(Duration::from_millis(250)), None]);
    }

    #[test]
    fn parses_every_mode_name_of_the_reference() {
        for (name, mode) in [
            ("regular", WriterMode::Regular),
            ("resume", WriterMode::ResumeAll),
            ("resumeAll", WriterMode::ResumeAll),
            ("resumeSuccess", WriterMode::ResumeSuccess),
            ("resumeFailed", WriterMode::ResumeFailed),
            ("reprocess", WriterMode::Reprocess),
        ] {
            assert_eq!(name.parse::<WriterMode>(), Ok(mode));
        }
        assert!("resumeall".parse::<WriterMode>().is_err());
    }

    #[test]
    fn waiting_for_an_unrecorded_run_is_pointless_only_when_until_is_before_any_start() {
        let t = |s: i64| Timestamp::new(s, 0).expect("valid");
        let until = t(1_000);
        // A configured start after --until: nothing up to --until can exist.
        assert!(pointless_wait(until, Some(t(1_001)), t(500)).is_some());
        // A configured start before it: a reader may still record the run.
        assert_eq!(pointless_wait(until, Some(t(999)), t(5_000)), None);
        // No configured start: a reader starts the run when it starts, so once --until has
        // passed (by more than the grace), nothing more can come.
        assert_eq!(pointless_wait(until, None, t(1_010)), None);
        let reason = pointless_wait(until, None, t(1_031)).expect("pointless");
        assert!(reason.contains("no reader.start_timestamp"), "{reason}");
    }

    #[test]
    fn retries_are_capped_so_a_shard_returns_within_seconds() {
        for attempt in 0..40 {
            assert!(RETRY.delay(attempt) <= MAX_RETRY_DELAY);
        }
        assert!(MAX_RETRY_DELAY <= Duration::from_secs(3));
    }

    #[test]
    fn shard_subsets_partition_the_shards_stably() {
        let shards: Vec<ShardId> = (0..100)
            .map(|i| ShardId::new(format!("shard-{i}")).expect("id"))
            .collect();
        let count = 4;
        let mut seen = 0;
        for index in 0..count {
            let subset = ShardSubset { index, count };
            let mine = shards.iter().filter(|s| subset.contains(s)).count();
            assert!(mine > 10, "index {index} got {mine} of 100");
            seen += mine;
        }
        assert_eq!(seen, 100, "every shard in exactly one subset");
        assert!(shards.iter().all(|s| ShardSubset::ALL.contains(s)));
    }
}
