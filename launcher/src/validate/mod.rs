//! `revrepl validate`: compares every MySQL shard with Spanner for the rows routed to that
//! shard, and lists the differences by table, shard and key.
//!
//! For each Spanner table (the session file's tables, else every table) and each shard:
//!
//! 1. **Plan.** The compared columns are those with a MySQL counterpart (session file mapping,
//!    else the same name); each gets a canonical [`Rule`](canonical::Rule) from both types
//!    (see [`canonical`] for the rules). Rows are matched by the MySQL primary key (the source
//!    key of the session file, else the Spanner key).
//! 2. **Pass 1, counts and bucket hashes.** The Spanner table is read once (one streaming
//!    query), each row routed by the configured router exactly as the reader routes changes,
//!    made canonical for its shard and hashed; each MySQL shard's table is read once. Rows
//!    land in one of [`BUCKETS`] buckets by the hash of their key; each bucket keeps a count
//!    and a wrapping sum of row hashes. Memory: the buckets, whatever the table size.
//! 3. **Pass 2, keys.** Only if buckets differ: both sides are read again, keeping the rows of
//!    differing buckets (at most `detail_rows` per table and shard) to name each missing,
//!    extra or different row and the columns that differ. Buckets beyond the limit are counted
//!    but not detailed.
//!
//! **Exact under live traffic** ([`snapshot`]): each shard is read in one MySQL consistent
//! snapshot, and the shard's checkpoint read inside it gives the Spanner commit timestamp T up
//! to which the shard holds every change and after which none; Spanner is read at exactly T
//! for that shard (one Spanner read per distinct T). So every difference is real, even while
//! the application writes and the writer applies. A shard without a checkpoint of the run is
//! compared at the current state of both sides (exact only when writes have paused), and the
//! report says so.
//!
//! [`continuous`] samples keys at the checkpoint every interval and exports counters;
//! [`repair`] re-applies Spanner's values of differing keys under the writer's checkpoint lock.

pub mod canonical;
pub mod continuous;
pub mod lookup;
pub mod plan;
pub mod repair;
pub mod snapshot;
pub mod zone;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hasher};
use std::time::Duration;

use google_cloud_spanner::value::{Kind, Value as SpannerValue};
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use revrepl_config::Config;
use revrepl_record::{Destination, ModType, ShardId, Timestamp};
use revrepl_shard_routing::{
    RouteRequest, RoutingError, Session, ShardRouter, ShardsFile, choose_router,
};
use serde::Serialize;
use serde_json::{Map, Value as Json};

use self::canonical::{Canonical, from_mysql, from_spanner};
use self::plan::{ShardPlan, SpannerTable, TableMapping, map_table, shard_plan, spanner_tables};
use self::snapshot::{ReadPoint, ShardPoint};
use self::zone::SourceZone;
use crate::error::LauncherError;
use crate::mysql;
use crate::spanner::SourceDatabase;

/// Buckets per table and shard and side.
pub const BUCKETS: usize = 16_384;

/// What to compare and how much to report.
#[derive(Debug, Clone)]
pub struct ValidateOptions {
    /// Only these Spanner tables (all when empty).
    pub tables: Vec<String>,
    /// Only these shards (all when empty).
    pub shards: Vec<String>,
    /// The writer's time zone for `datetime` columns.
    pub zone: SourceZone,
    /// Differing keys listed per table and shard.
    pub max_listed: usize,
    /// Rows held in memory per table and shard to name differing keys.
    pub detail_rows: usize,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// Spanner columns the writer never writes (`writer.ignore_columns`): not compared.
    pub ignore_columns: Vec<String>,
    /// The writer's conversion choices (`writer.decimal_overflow`, `writer.array_text`):
    /// values compare by the same rules.
    pub writer_choices: canonical::WriterChoices,
    /// The run whose checkpoints give each shard's point.
    pub run_id: String,
    /// Compare each shard at its checkpoint (the default); `false`: at the current state.
    pub at_checkpoint: bool,
}

/// Said when the Spanner emulator is detected.
pub const EMULATOR_NOTE: &str = "Spanner emulator detected: TIMESTAMP columns are compared to \
     the second, because the emulator's change records cut TIMESTAMP values to whole seconds \
     (so MySQL holds them cut); against production Spanner they are compared exactly";

/// Whether `config` reads from the Spanner emulator: `SPANNER_EMULATOR_HOST` is set, or
/// `spanner.endpoint` is a plain `http://` endpoint (production Spanner is `https://`).
pub fn uses_emulator(config: &Config) -> bool {
    std::env::var_os("SPANNER_EMULATOR_HOST").is_some_and(|host| !host.is_empty())
        || config
            .spanner
            .endpoint
            .as_deref()
            .is_some_and(|endpoint| endpoint.starts_with("http://"))
}

/// The outcome of a validation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidationReport {
    /// Where each shard was compared.
    pub shards: Vec<ShardPoint>,
    /// One entry per Spanner table considered.
    pub tables: Vec<TableReport>,
    /// How the comparison was adjusted, e.g. for the Spanner emulator.
    pub notes: Vec<String>,
}

impl ValidationReport {
    /// Every difference found (rows, buckets not detailed, tables that cannot be compared,
    /// rows that cannot be routed).
    pub fn differences(&self) -> u64 {
        self.tables.iter().map(TableReport::differences).sum()
    }
}

/// One Spanner table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableReport {
    /// The Spanner table.
    pub table: String,
    /// The MySQL table, if it has one.
    pub mysql_table: Option<String>,
    /// Why the table was not compared, if it was not.
    pub note: Option<String>,
    /// Rows the router sends to `skip/` (not replicated, not compared).
    pub skipped_rows: u64,
    /// Rows that could not be routed, or were routed to a shard missing from the shards file.
    pub unroutable_rows: u64,
    /// The first routing error, if any.
    pub unroutable_example: Option<String>,
    /// One entry per compared shard.
    pub shards: Vec<ShardComparison>,
}

impl TableReport {
    fn differences(&self) -> u64 {
        self.unroutable_rows
            + self
                .shards
                .iter()
                .map(ShardComparison::differences)
                .sum::<u64>()
    }
}

/// One table on one shard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShardComparison {
    /// The shard.
    pub shard: String,
    /// Why the shard's table could not be compared, if it could not.
    pub problem: Option<String>,
    /// Rows of the Spanner table routed to the shard.
    pub spanner_rows: u64,
    /// Rows of the MySQL table.
    pub mysql_rows: u64,
    /// Rows in Spanner, not in MySQL.
    pub missing_in_mysql: u64,
    /// Rows in MySQL, not in Spanner.
    pub extra_in_mysql: u64,
    /// Rows on both sides with different values.
    pub different: u64,
    /// Differing hash buckets beyond `detail_rows`, not broken down into rows.
    pub undetailed_buckets: u64,
    /// The first `max_listed` differences.
    pub listed: Vec<Difference>,
    /// The Spanner commit timestamp compared at (the shard's checkpoint), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compared_at: Option<String>,
}

impl ShardComparison {
    fn differences(&self) -> u64 {
        self.missing_in_mysql
            + self.extra_in_mysql
            + self.different
            + self.undetailed_buckets
            + u64::from(self.problem.is_some())
    }
}

/// One differing row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The key as JSON, MySQL column names and canonical values: `{"id":"5"}`.
    pub key: String,
    /// How it differs.
    pub kind: DifferenceKind,
    /// For [`DifferenceKind::Different`], the MySQL columns whose values differ.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// The key's canonical values, in MySQL key order (for `--repair`).
    #[serde(skip)]
    pub key_values: Vec<Canonical>,
}

/// How a row differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceKind {
    /// In Spanner, not in MySQL.
    MissingInMysql,
    /// In MySQL, not in Spanner.
    ExtraInMysql,
    /// On both sides, with different values.
    Different,
}

impl DifferenceKind {
    fn label(self) -> &'static str {
        match self {
            Self::MissingInMysql => "missing in MySQL",
            Self::ExtraInMysql => "extra in MySQL",
            Self::Different => "different",
        }
    }
}

/// Runs the validation.
pub async fn validate(
    config: &Config,
    options: &ValidateOptions,
) -> Result<ValidationReport, LauncherError> {
    let routing = Routing::load(config)?;
    let Routing {
        shards_file,
        session,
        router,
        ..
    } = &routing;
    let all_shards: BTreeSet<ShardId> = shards_file.shard_ids().cloned().collect();
    for name in &options.shards {
        if !all_shards.iter().any(|s| s.as_str() == name) {
            return Err(LauncherError::Usage(format!(
                "--shard {name:?} is not in the shards file {}",
                shards_file.origin()
            )));
        }
    }
    let selected = mysql::resolve_shards(shards_file)
        .await?
        .into_iter()
        .filter(|s| {
            options.shards.is_empty()
                || options
                    .shards
                    .iter()
                    .any(|n| n == s.config.logical_shard_id.as_str())
        });
    let tls = mysql::tls_options(config).map_err(LauncherError::Usage)?;
    let mut connections: BTreeMap<ShardId, Conn> = BTreeMap::new();
    let mut points: BTreeMap<ShardId, ReadPoint> = BTreeMap::new();
    let mut shard_points = Vec::new();
    // Read before the snapshots are taken (see `snapshot`).
    let progress = if options.at_checkpoint {
        snapshot::Progress::open(config).await
    } else {
        None
    };
    let applied = match &progress {
        Some(progress) => progress.applied_through().await,
        None => BTreeMap::new(),
    };
    for shard in selected {
        let id = shard.config.logical_shard_id.clone();
        let mut conn = connect_shard(&shard, tls.as_ref(), options.connect_timeout).await?;
        let opened = snapshot::open(
            &mut conn,
            &options.run_id,
            &id,
            options.at_checkpoint,
            applied.get(&id).copied(),
        )
        .await?;
        points.insert(id.clone(), opened.point);
        shard_points.push(opened.report);
        connections.insert(id, conn);
    }

    let database = SourceDatabase::connect(config, options.connect_timeout).await?;
    let spanner = spanner_tables(&database).await?;
    let names: Vec<String> = match &session {
        Some(session) => session.tables().map(|t| t.spanner_name.clone()).collect(),
        None => spanner.keys().cloned().collect(),
    };
    for name in &options.tables {
        if !names.contains(name) {
            return Err(LauncherError::Usage(format!(
                "--table {name:?} is not a table to validate (known: {})",
                names.join(", ")
            )));
        }
    }
    let mut report = ValidationReport {
        shards: shard_points,
        tables: Vec::new(),
        notes: Vec::new(),
    };
    if options.writer_choices.emulator_timestamps {
        report.notes.push(EMULATOR_NOTE.to_string());
    }
    for name in names {
        if !options.tables.is_empty() && !options.tables.contains(&name) {
            continue;
        }
        let Some(table) = spanner.get(&name) else {
            report.tables.push(TableReport::not_compared(
                &name,
                None,
                format!(
                    "the session file names it, but Spanner database {} has no such table",
                    database.name
                ),
            ));
            continue;
        };
        let Some(mapping) = routing.map_table(table) else {
            report.tables.push(TableReport::not_compared(
                &name,
                None,
                "exists only in Spanner (no source table in the session file)".into(),
            ));
            continue;
        };
        let context = TableContext {
            database: &database,
            router: router.as_ref(),
            all_shards: &all_shards,
            options,
            points: &points,
        };
        report
            .tables
            .push(compare_table(&context, &mapping, &mut connections).await?);
    }
    for (_, mut conn) in connections {
        snapshot::close(&mut conn).await;
        let _ = conn.disconnect().await;
    }
    Ok(report)
}

/// Connects to a shard with the session the comparison needs (UTC).
pub(crate) async fn connect_shard(
    shard: &revrepl_shard_routing::Shard,
    tls: Option<&mysql_async::SslOpts>,
    timeout: Duration,
) -> Result<Conn, LauncherError> {
    let id = &shard.config.logical_shard_id;
    let mut conn = mysql::connect(shard, tls, timeout)
        .await
        .map_err(|message| LauncherError::MySql {
            shard: id.to_string(),
            operation: "connect".into(),
            message,
        })?;
    conn.query_drop("SET time_zone = '+00:00'")
        .await
        .map_err(|e| mysql_error(id, "set the session time zone", &e))?;
    Ok(conn)
}

/// The shards file, the session file and the router, as the reader routes.
pub(crate) struct Routing {
    pub(crate) shards_file: ShardsFile,
    pub(crate) session: Option<std::sync::Arc<Session>>,
    pub(crate) router: Box<dyn ShardRouter>,
    /// Table and column renames without a session file (`schema_overrides_file`, …).
    pub(crate) overrides: Option<revrepl_shard_routing::SchemaOverrides>,
}

impl Routing {
    pub(crate) fn load(config: &Config) -> Result<Self, LauncherError> {
        let shards_file = ShardsFile::load(&config.shards_file)?;
        let session = match &config.session_file {
            Some(path) => Some(std::sync::Arc::new(Session::load(path)?)),
            None => None,
        };
        let plugin = config
            .routing
            .plugin
            .as_deref()
            .map(|path| (path, config.routing.plugin_params.as_str()));
        let router = choose_router(&shards_file, session.clone(), plugin)?;
        let overrides = revrepl_writer::app::schema_overrides(config)?;
        Ok(Self {
            shards_file,
            session,
            router,
            overrides,
        })
    }

    /// How `table` is named in MySQL: the session file's names, or the overrides' renames.
    pub(crate) fn map_table(&self, table: &plan::SpannerTable) -> Option<plan::TableMapping> {
        let mapping = map_table(table, self.session.as_deref())?;
        Some(match &self.overrides {
            Some(overrides) => plan::with_overrides(mapping, overrides),
            None => mapping,
        })
    }
}

impl TableReport {
    fn not_compared(table: &str, mysql_table: Option<String>, note: String) -> Self {
        Self {
            table: table.to_string(),
            mysql_table,
            note: Some(note),
            skipped_rows: 0,
            unroutable_rows: 0,
            unroutable_example: None,
            shards: Vec::new(),
        }
    }
}

struct TableContext<'a> {
    database: &'a SourceDatabase,
    router: &'a dyn ShardRouter,
    all_shards: &'a BTreeSet<ShardId>,
    options: &'a ValidateOptions,
    /// Where each shard is compared.
    points: &'a BTreeMap<ShardId, ReadPoint>,
}

/// Counts and bucket sums of one side of one table on one shard.
struct Side {
    rows: u64,
    buckets: Vec<(u64, u64)>,
}

impl Side {
    fn new() -> Self {
        Self {
            rows: 0,
            buckets: vec![(0, 0); BUCKETS],
        }
    }

    fn add(&mut self, key_hash: u64, row_hash: u64) {
        self.rows += 1;
        let bucket = &mut self.buckets[bucket_of(key_hash)];
        bucket.0 += 1;
        bucket.1 = bucket.1.wrapping_add(row_hash);
    }
}

/// One shard's state while its table is compared.
struct ShardState {
    plan: ShardPlan,
    point: ReadPoint,
    spanner: Side,
    mysql: Side,
    /// Pass 2: the buckets detailed.
    detailed: BTreeSet<usize>,
    /// Pass 2: Spanner rows of the detailed buckets, by key text: row hash, column hashes,
    /// key values.
    rows: HashMap<String, (u64, Vec<u64>, Vec<Canonical>)>,
    comparison: ShardComparison,
}

async fn compare_table(
    context: &TableContext<'_>,
    mapping: &TableMapping,
    connections: &mut BTreeMap<ShardId, Conn>,
) -> Result<TableReport, LauncherError> {
    let table = &mapping.spanner;
    let mut report = TableReport {
        table: table.name.clone(),
        mysql_table: Some(mapping.mysql_table.clone()),
        note: None,
        skipped_rows: 0,
        unroutable_rows: 0,
        unroutable_example: None,
        shards: Vec::new(),
    };
    let mut states: BTreeMap<ShardId, ShardState> = BTreeMap::new();
    let mut problems: BTreeMap<ShardId, String> = BTreeMap::new();
    for (shard, conn) in connections.iter_mut() {
        match shard_plan(
            conn,
            mapping,
            context.options.zone,
            &context.options.ignore_columns,
            context.options.writer_choices,
        )
        .await
        .map_err(|e| mysql_error(shard, "read the table's columns", &e))?
        {
            Ok(plan) => {
                let point = context
                    .points
                    .get(shard)
                    .copied()
                    .unwrap_or(ReadPoint::Current);
                let mut comparison = ShardComparison::new(shard);
                comparison.compared_at = point.timestamp().map(|t| t.to_rfc3339());
                states.insert(
                    shard.clone(),
                    ShardState {
                        plan,
                        point,
                        spanner: Side::new(),
                        mysql: Side::new(),
                        detailed: BTreeSet::new(),
                        rows: HashMap::new(),
                        comparison,
                    },
                );
            }
            Err(problem) => {
                problems.insert(shard.clone(), problem);
            }
        }
    }
    let mut spanner_rows_elsewhere: BTreeMap<ShardId, u64> = BTreeMap::new();

    // Pass 1: Spanner, once per read point (rows not counted twice: skipped, unroutable and
    // other shards' rows are counted in the first read only).
    let read_points = read_points(&states);
    for (index, point) in read_points.iter().enumerate() {
        let first = index == 0;
        scan_spanner(
            context.database,
            context.router,
            table,
            *point,
            &mut |routed, values| match routed {
                Ok(Destination::Skip) if first => report.skipped_rows += 1,
                Ok(Destination::Skip) => {}
                Ok(Destination::Shard(shard)) => {
                    if let Some(state) = states.get_mut(&shard) {
                        if state.point == *point {
                            let canonical = spanner_canonical(&state.plan, values);
                            state
                                .spanner
                                .add(key_hash(&state.plan, &canonical), row_hash(&canonical));
                        }
                    } else if !first {
                    } else if !context.all_shards.contains(&shard) {
                        report.unroutable_rows += 1;
                        report.unroutable_example.get_or_insert_with(|| {
                        format!(
                            "a row was routed to shard {shard:?}, which is not in the shards file"
                        )
                    });
                    } else {
                        *spanner_rows_elsewhere.entry(shard).or_default() += 1;
                    }
                }
                Err(error) if first => {
                    report.unroutable_rows += 1;
                    report
                        .unroutable_example
                        .get_or_insert_with(|| error.to_string());
                }
                Err(_) => {}
            },
        )
        .await?;
    }

    // Pass 1: MySQL.
    for (shard, state) in states.iter_mut() {
        let conn = connection(connections, shard)?;
        let plan = &state.plan;
        let side = &mut state.mysql;
        scan_mysql(conn, plan, &mut |canonical| {
            side.add(key_hash(plan, canonical), row_hash(canonical));
        })
        .await
        .map_err(|e| mysql_error(shard, "read the table", &e))?;
    }

    // Choose the buckets to detail.
    let mut any_detail = false;
    for state in states.values_mut() {
        state.comparison.spanner_rows = state.spanner.rows;
        state.comparison.mysql_rows = state.mysql.rows;
        let mut budget = context.options.detail_rows;
        for (bucket, (s, m)) in state
            .spanner
            .buckets
            .iter()
            .zip(&state.mysql.buckets)
            .enumerate()
        {
            if s == m {
                continue;
            }
            let size = usize::try_from(s.0.max(m.0)).unwrap_or(usize::MAX);
            if size <= budget {
                budget -= size;
                state.detailed.insert(bucket);
            } else {
                state.comparison.undetailed_buckets += 1;
            }
        }
        any_detail |= !state.detailed.is_empty();
    }

    if any_detail {
        // Pass 2: Spanner rows of the detailed buckets, at the same points.
        for point in &read_points {
            if !states
                .values()
                .any(|s| s.point == *point && !s.detailed.is_empty())
            {
                continue;
            }
            scan_spanner(
                context.database,
                context.router,
                table,
                *point,
                &mut |routed, values| {
                    let Ok(Destination::Shard(shard)) = routed else {
                        return;
                    };
                    let Some(state) = states.get_mut(&shard) else {
                        return;
                    };
                    if state.point != *point || state.detailed.is_empty() {
                        return;
                    }
                    let canonical = spanner_canonical(&state.plan, values);
                    if state
                        .detailed
                        .contains(&bucket_of(key_hash(&state.plan, &canonical)))
                    {
                        state.rows.insert(
                            key_text(&state.plan, &canonical),
                            (
                                row_hash(&canonical),
                                column_hashes(&canonical),
                                key_values(&state.plan, &canonical),
                            ),
                        );
                    }
                },
            )
            .await?;
        }
        // Pass 2: MySQL, matched against them.
        let max_listed = context.options.max_listed;
        for (shard, state) in states.iter_mut() {
            if state.detailed.is_empty() {
                continue;
            }
            let conn = connection(connections, shard)?;
            let ShardState {
                plan,
                detailed,
                rows,
                comparison,
                ..
            } = state;
            scan_mysql(conn, plan, &mut |canonical| {
                if !detailed.contains(&bucket_of(key_hash(plan, canonical))) {
                    return;
                }
                let key = key_text(plan, canonical);
                let values = key_values(plan, canonical);
                match rows.remove(&key) {
                    None => comparison.record(
                        max_listed,
                        (key, values),
                        DifferenceKind::ExtraInMysql,
                        Vec::new(),
                    ),
                    Some((hash, _, _)) if hash == row_hash(canonical) => {}
                    Some((_, spanner_columns, _)) => {
                        let columns = spanner_columns
                            .iter()
                            .zip(column_hashes(canonical))
                            .zip(&plan.columns)
                            .filter(|((a, b), _)| **a != *b)
                            .map(|(_, column)| column.mysql_name.clone())
                            .collect();
                        comparison.record(
                            max_listed,
                            (key, values),
                            DifferenceKind::Different,
                            columns,
                        );
                    }
                }
            })
            .await
            .map_err(|e| mysql_error(shard, "read the table again", &e))?;
            let mut missing: Vec<(String, Vec<Canonical>)> = rows
                .drain()
                .map(|(key, (_, _, values))| (key, values))
                .collect();
            missing.sort();
            for key in missing {
                comparison.record(max_listed, key, DifferenceKind::MissingInMysql, Vec::new());
            }
        }
    }

    for (shard, problem) in problems {
        let mut comparison = ShardComparison::new(&shard);
        comparison.spanner_rows = spanner_rows_elsewhere.remove(&shard).unwrap_or(0);
        comparison.problem = Some(problem);
        states.remove(&shard);
        report.shards.push(comparison);
    }
    report
        .shards
        .extend(states.into_values().map(|state| state.comparison));
    report.shards.sort_by(|a, b| a.shard.cmp(&b.shard));
    Ok(report)
}

impl ShardComparison {
    fn new(shard: &ShardId) -> Self {
        Self {
            shard: shard.to_string(),
            problem: None,
            spanner_rows: 0,
            mysql_rows: 0,
            missing_in_mysql: 0,
            extra_in_mysql: 0,
            different: 0,
            undetailed_buckets: 0,
            listed: Vec::new(),
            compared_at: None,
        }
    }

    fn record(
        &mut self,
        max_listed: usize,
        (key, key_values): (String, Vec<Canonical>),
        kind: DifferenceKind,
        columns: Vec<String>,
    ) {
        match kind {
            DifferenceKind::MissingInMysql => self.missing_in_mysql += 1,
            DifferenceKind::ExtraInMysql => self.extra_in_mysql += 1,
            DifferenceKind::Different => self.different += 1,
        }
        if self.listed.len() < max_listed {
            self.listed.push(Difference {
                key,
                kind,
                columns,
                key_values,
            });
        }
    }
}

fn connection<'a>(
    connections: &'a mut BTreeMap<ShardId, Conn>,
    shard: &ShardId,
) -> Result<&'a mut Conn, LauncherError> {
    connections
        .get_mut(shard)
        .ok_or_else(|| LauncherError::MySql {
            shard: shard.to_string(),
            operation: "find the connection".into(),
            message: "no connection was opened for this shard".into(),
        })
}

fn mysql_error(shard: &ShardId, operation: &str, error: &mysql_async::Error) -> LauncherError {
    LauncherError::MySql {
        shard: shard.to_string(),
        operation: operation.to_string(),
        message: error.to_string(),
    }
}

/// Where the router sent a row.
type Routed = Result<Destination, RoutingError>;

/// The distinct read points of the shards compared (at least one, so that skipped and
/// unroutable rows are counted even when no shard can be compared).
fn read_points(states: &BTreeMap<ShardId, ShardState>) -> Vec<ReadPoint> {
    let points: BTreeSet<ReadPoint> = states.values().map(|s| s.point).collect();
    if points.is_empty() {
        vec![ReadPoint::Current]
    } else {
        points.into_iter().collect()
    }
}

/// Streams every row of `table` (all columns, in table order) as Spanner holds it at `point`,
/// routing each.
async fn scan_spanner(
    database: &SourceDatabase,
    router: &dyn ShardRouter,
    table: &SpannerTable,
    point: ReadPoint,
    visit: &mut dyn FnMut(Routed, &[SpannerValue]),
) -> Result<(), LauncherError> {
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|(name, _)| spanner_quote(name))
        .collect();
    let sql = format!(
        "SELECT {} FROM {}",
        columns.join(", "),
        spanner_quote(&table.name)
    );
    let operation = match point {
        ReadPoint::At(at) => format!(
            "read table {} at {at} (a shard's checkpoint; a read older than the database's \
             version_retention_period fails)",
            table.name
        ),
        ReadPoint::Current => format!("read table {}", table.name),
    };
    let bound = point.bound().map_err(|e| database.error(&operation, &e))?;
    let mut result = database
        .client
        .single_use()
        .set_timestamp_bound(bound)
        .build()
        .execute_query(database.data_statement(sql))
        .await
        .map_err(|e| database.error(&operation, &e))?;
    let now = point
        .timestamp()
        .unwrap_or_else(|| Timestamp::from(chrono::Utc::now()));
    while let Some(row) = result.next().await {
        let row = row.map_err(|e| database.error(&operation, &e))?;
        let values = row.raw_values();
        let request = route_request(table, values, now);
        visit(router.route(&request), values);
    }
    Ok(())
}

/// A row as the router sees an insert of it: keys and new values in change-stream JSON.
fn route_request(table: &SpannerTable, values: &[SpannerValue], now: Timestamp) -> RouteRequest {
    let mut keys = Map::new();
    let mut new_values = Map::new();
    for ((name, _), value) in table.columns.iter().zip(values) {
        let json = wire_json(value);
        if table.primary_key.contains(name) {
            keys.insert(name.clone(), json);
        } else {
            new_values.insert(name.clone(), json);
        }
    }
    RouteRequest {
        table: table.name.clone(),
        keys,
        new_values,
        old_values: Map::new(),
        mod_type: ModType::Insert,
        commit_timestamp: now,
    }
}

/// A value in change-stream JSON encoding: strings stay strings (INT64, NUMERIC, JSON text,
/// BYTES base64), numbers stay numbers.
fn wire_json(value: &SpannerValue) -> Json {
    match value.kind() {
        Kind::Bool => value.as_bool().map_or(Json::Null, Json::Bool),
        Kind::Number => value
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Json::Null, Json::Number),
        Kind::String => value
            .as_str()
            .map_or(Json::Null, |s| Json::String(s.to_string())),
        Kind::List => value.as_list().map_or(Json::Null, |list| {
            Json::Array(list.iter().map(wire_json).collect())
        }),
        _ => Json::Null,
    }
}

/// Streams every row of the plan's MySQL table (binary protocol, so floats arrive exact).
async fn scan_mysql(
    conn: &mut Conn,
    plan: &ShardPlan,
    visit: &mut dyn FnMut(&[Canonical]),
) -> Result<(), mysql_async::Error> {
    let columns: Vec<String> = plan
        .columns
        .iter()
        .map(|c| mysql_quote(&c.mysql_name))
        .collect();
    let sql = format!(
        "SELECT {} FROM {}",
        columns.join(", "),
        mysql_quote(&plan.mysql_table)
    );
    let mut result = conn.exec_iter(sql, ()).await?;
    let null = mysql_async::Value::NULL;
    while let Some(row) = result.next().await? {
        let canonical: Vec<Canonical> = plan
            .columns
            .iter()
            .enumerate()
            .map(|(i, column)| from_mysql(&column.rule, row.as_ref(i).unwrap_or(&null)))
            .collect();
        visit(&canonical);
    }
    Ok(())
}

fn spanner_canonical(plan: &ShardPlan, values: &[SpannerValue]) -> Vec<Canonical> {
    let null = SpannerValue::null();
    plan.columns
        .iter()
        .map(|column| {
            from_spanner(
                &column.rule,
                values.get(column.spanner_index).unwrap_or(&null),
            )
        })
        .collect()
}

fn hash_value(hasher: &mut DefaultHasher, value: &Canonical) {
    match value {
        None => hasher.write_u8(0),
        Some(text) => {
            hasher.write_u8(1);
            hasher.write_usize(text.len());
            hasher.write(text.as_bytes());
        }
    }
}

fn key_hash(plan: &ShardPlan, canonical: &[Canonical]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for index in &plan.key {
        hash_value(&mut hasher, &canonical[*index]);
    }
    hasher.finish()
}

fn row_hash(canonical: &[Canonical]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for value in canonical {
        hash_value(&mut hasher, value);
    }
    hasher.finish()
}

fn column_hashes(canonical: &[Canonical]) -> Vec<u64> {
    canonical
        .iter()
        .map(|value| {
            let mut hasher = DefaultHasher::new();
            hash_value(&mut hasher, value);
            hasher.finish()
        })
        .collect()
}

fn bucket_of(key_hash: u64) -> usize {
    (key_hash % BUCKETS as u64) as usize
}

/// The key's canonical values, in key order.
fn key_values(plan: &ShardPlan, canonical: &[Canonical]) -> Vec<Canonical> {
    plan.key.iter().map(|i| canonical[*i].clone()).collect()
}

/// `{"id":"5","user_id":"3"}`: MySQL key column names, canonical values, in key order.
fn key_text(plan: &ShardPlan, canonical: &[Canonical]) -> String {
    let mut out = String::from("{");
    for (i, index) in plan.key.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let name = &plan.columns[*index].mysql_name;
        let value = canonical[*index]
            .as_ref()
            .map_or(Json::Null, |text| Json::String(text.clone()));
        let _ = write!(out, "{}:{value}", Json::String(name.clone()));
    }
    out.push('}');
    out
}

fn spanner_quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "\\`"))
}

fn mysql_quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The report as text: one line per table and shard, then the listed differences.
pub fn render_text(report: &ValidationReport) -> String {
    let mut out = String::new();
    for point in &report.shards {
        match (&point.compared_at, &point.note) {
            (Some(at), note) => {
                let _ = writeln!(
                    out,
                    "shard {}: compared at its checkpoint, Spanner commit timestamp {at}",
                    point.shard
                );
                if let Some(note) = note {
                    let _ = writeln!(out, "  ({note})");
                }
            }
            (None, note) => {
                let _ = writeln!(
                    out,
                    "shard {}: {}",
                    point.shard,
                    note.as_deref().unwrap_or("compared at the current state")
                );
            }
        }
    }
    for table in &report.tables {
        let target = table
            .mysql_table
            .as_ref()
            .map_or(String::new(), |t| format!(" -> {t}"));
        let _ = writeln!(out, "table {}{target}", table.table);
        if let Some(note) = &table.note {
            let _ = writeln!(out, "  not compared: {note}");
        }
        if table.skipped_rows > 0 {
            let _ = writeln!(
                out,
                "  {} row(s) routed to skip/ (not replicated)",
                table.skipped_rows
            );
        }
        if table.unroutable_rows > 0 {
            let _ = writeln!(
                out,
                "  {} row(s) cannot be routed: {}",
                table.unroutable_rows,
                table.unroutable_example.as_deref().unwrap_or("-")
            );
        }
        for shard in &table.shards {
            if let Some(problem) = &shard.problem {
                let _ = writeln!(out, "  shard {}: cannot compare: {problem}", shard.shard);
                continue;
            }
            let verdict = if shard.differences() == 0 {
                "match".to_string()
            } else {
                let mut parts = Vec::new();
                for (count, label) in [
                    (shard.missing_in_mysql, "missing in MySQL"),
                    (shard.extra_in_mysql, "extra in MySQL"),
                    (shard.different, "different"),
                    (
                        shard.undetailed_buckets,
                        "hash bucket(s) differ beyond --detail-rows",
                    ),
                ] {
                    if count > 0 {
                        parts.push(format!("{count} {label}"));
                    }
                }
                parts.join(", ")
            };
            let _ = writeln!(
                out,
                "  shard {}: {} row(s) in Spanner, {} in MySQL: {verdict}",
                shard.shard, shard.spanner_rows, shard.mysql_rows
            );
            for difference in &shard.listed {
                let columns = if difference.columns.is_empty() {
                    String::new()
                } else {
                    format!(" (columns: {})", difference.columns.join(", "))
                };
                let _ = writeln!(
                    out,
                    "    {:<16} {}{columns}",
                    difference.kind.label(),
                    difference.key
                );
            }
            let listed = shard.listed.len() as u64;
            let counted = shard.missing_in_mysql + shard.extra_in_mysql + shard.different;
            if counted > listed {
                let _ = writeln!(
                    out,
                    "    … and {} more (raise --max-listed)",
                    counted - listed
                );
            }
        }
    }
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    let differences = report.differences();
    let exact = !report.shards.is_empty() && report.shards.iter().all(|p| p.compared_at.is_some());
    if differences == 0 {
        let _ = writeln!(out, "validate: every compared row matches");
    } else if exact {
        let _ = writeln!(
            out,
            "validate: {differences} difference(s) at the shards' checkpoints: MySQL differs \
             from what replication produced (a write by hand, a transaction set aside in dlq/); \
             `revrepl validate --repair --shard S --table T` re-applies Spanner's values"
        );
    } else {
        let _ = writeln!(
            out,
            "validate: {differences} difference(s); if the writer was still applying, wait \
             until it has caught up (revrepl status) and run validate again"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::canonical::Rule;
    use crate::validate::plan::PlannedColumn;

    fn plan() -> ShardPlan {
        let column = |name: &str, index| PlannedColumn {
            spanner_index: index,
            mysql_name: name.into(),
            rule: Rule::Text { trim_spaces: false },
        };
        ShardPlan {
            mysql_table: "t".into(),
            columns: vec![column("user_id", 0), column("id", 1), column("name", 2)],
            key: vec![0, 1],
        }
    }

    fn row(values: [Option<&str>; 3]) -> Vec<Canonical> {
        values.iter().map(|v| v.map(str::to_string)).collect()
    }

    #[test]
    fn keys_print_as_json_in_key_order() {
        let canonical = row([Some("3"), Some("5"), None]);
        assert_eq!(key_text(&plan(), &canonical), r#"{"user_id":"3","id":"5"}"#);
    }

    #[test]
    fn null_and_empty_text_hash_differently() {
        assert_ne!(
            row_hash(&row([Some("1"), Some("2"), None])),
            row_hash(&row([Some("1"), Some("2"), Some("")]))
        );
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        assert_ne!(
            row_hash(&row([Some("ab"), Some("c"), None])),
            row_hash(&row([Some("a"), Some("bc"), None]))
        );
    }

    #[test]
    fn bucket_sums_ignore_row_order() {
        let plan = plan();
        let rows = [
            row([Some("1"), Some("1"), Some("a")]),
            row([Some("1"), Some("2"), Some("b")]),
        ];
        let mut forward = Side::new();
        let mut backward = Side::new();
        for r in &rows {
            forward.add(key_hash(&plan, r), row_hash(r));
        }
        for r in rows.iter().rev() {
            backward.add(key_hash(&plan, r), row_hash(r));
        }
        assert!(forward.buckets == backward.buckets && forward.rows == 2);
        let changed = row([Some("1"), Some("2"), Some("B")]);
        let mut other = Side::new();
        other.add(key_hash(&plan, &rows[0]), row_hash(&rows[0]));
        other.add(key_hash(&plan, &changed), row_hash(&changed));
        assert!(other.buckets != forward.buckets);
    }
}
