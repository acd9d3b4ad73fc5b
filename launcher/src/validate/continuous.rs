//! `revrepl validate --continuous`: every interval, each shard's next slice of keys is
//! compared at the shard's current checkpoint, with a bounded load on both sides.
//!
//! Per shard and interval, `rows_per_second × interval` rows are compared, shared among the
//! tables, half of each table's share from each side, each side resuming after the last key
//! it read and starting over at the table's end:
//!
//! - one MySQL consistent snapshot reads the checkpoint (commit timestamp T) and the next rows
//!   of each table in primary-key order; Spanner is then read at exactly T for those keys. A
//!   row that differs, or that Spanner does not hold for the shard at T, is a mismatch;
//! - in the same snapshot, the next rows of Spanner's table at T in Spanner key order (tables
//!   whose MySQL key is Spanner's primary key), those routed to the shard looked up in MySQL by
//!   key: one MySQL lacks is a mismatch (missing in MySQL). Rows of other shards are read and
//!   skipped, so this side's share covers the table, not the shard.
//!
//! Mismatches are printed (table, shard, key, columns) and counted. So each table is covered
//! every `rows / (its share / 2)` intervals, and a row changed, added or deleted by hand in
//! MySQL is found within one rotation (deleted: on tables whose MySQL key is Spanner's
//! primary key, the ones Spanner's side is sampled for).
//!
//! Counters (OpenTelemetry, exported like the other binaries': `--metrics-addr` for
//! Prometheus, OTLP from the environment), attributes `shard` and `table` (Spanner name):
//! `revrepl.validate.rows_checked` and `revrepl.validate.mismatches`
//! (`revrepl_validate_rows_checked_total`, `revrepl_validate_mismatches_total`).

use std::collections::HashMap;
use std::time::Duration;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};
use revrepl_config::Config;
use revrepl_record::{Destination, ShardId};
use tokio_util::sync::CancellationToken;

use super::canonical::{Canonical, from_mysql};
use super::lookup::KeyLookup;
use super::plan::{ShardPlan, SpannerTable, shard_plan, spanner_tables};
use super::snapshot::{self, ReadPoint};
use super::{
    ValidateOptions, column_hashes, connect_shard, key_text, key_values, mysql_quote,
    route_request, row_hash, spanner_canonical,
};
use crate::error::LauncherError;
use crate::mysql;
use crate::spanner::SourceDatabase;

/// How continuous verification paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContinuousOptions {
    /// Time between two checks of a shard.
    pub interval: Duration,
    /// Rows compared per second and shard (on average over an interval).
    pub rows_per_second: u64,
    /// Stop after this many intervals (`None`: until cancelled).
    pub rounds: Option<u64>,
}

impl Default for ContinuousOptions {
    /// Every 10 s, 100 rows per second and shard.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            rows_per_second: 100,
            rounds: None,
        }
    }
}

/// The counters of continuous verification; cheap to clone.
#[derive(Debug, Clone)]
pub struct ValidateMetrics {
    rows_checked: Counter<u64>,
    mismatches: Counter<u64>,
}

impl ValidateMetrics {
    /// Instruments from the global meter provider.
    pub fn global() -> Self {
        Self::new(&opentelemetry::global::meter("revrepl-validate"))
    }

    /// Instruments from `meter`.
    pub fn new(meter: &Meter) -> Self {
        Self {
            rows_checked: meter
                .u64_counter("revrepl.validate.rows_checked")
                .with_description("Rows compared with Spanner at the shard's checkpoint")
                .build(),
            mismatches: meter
                .u64_counter("revrepl.validate.mismatches")
                .with_description(
                    "Rows that differ from Spanner at the shard's checkpoint (MySQL drifted)",
                )
                .build(),
        }
    }

    fn record(&self, shard: &ShardId, table: &str, checked: u64, mismatches: u64) {
        let attributes = [
            KeyValue::new("shard", shard.to_string()),
            KeyValue::new("table", table.to_string()),
        ];
        self.rows_checked.add(checked, &attributes);
        self.mismatches.add(mismatches, &attributes);
    }
}

/// One table of one shard, with where its next sample starts.
struct Sampled {
    table: SpannerTable,
    plan: ShardPlan,
    lookup: KeyLookup,
    /// The MySQL key of the last row sampled; `None`: start at the beginning.
    cursor: Option<Vec<mysql_async::Value>>,
    /// The Spanner primary key of the last Spanner row sampled; `None`: at the beginning.
    spanner_cursor: Option<Vec<google_cloud_spanner::value::Value>>,
}

/// One shard: its connection (reopened after an error) and tables.
struct ShardSampler {
    shard: revrepl_shard_routing::Shard,
    conn: Option<Conn>,
    tables: Vec<Sampled>,
    /// Said once: the shard has no checkpoint yet.
    told_no_checkpoint: bool,
}

/// Runs until `cancel` (or `continuous.rounds`), printing each mismatch and each shard's
/// round through `out`.
pub async fn run(
    config: &Config,
    options: &ValidateOptions,
    continuous: ContinuousOptions,
    metrics: &ValidateMetrics,
    cancel: &CancellationToken,
    out: &mut (dyn FnMut(String) + Send),
) -> Result<(), LauncherError> {
    let routing = super::Routing::load(config)?;
    let selected: Vec<_> = mysql::resolve_shards(&routing.shards_file)
        .await?
        .into_iter()
        .filter(|s| {
            options.shards.is_empty()
                || options
                    .shards
                    .iter()
                    .any(|n| n == s.config.logical_shard_id.as_str())
        })
        .collect();
    for name in &options.shards {
        if !selected
            .iter()
            .any(|s| s.config.logical_shard_id.as_str() == name)
        {
            return Err(LauncherError::Usage(format!(
                "--shard {name:?} is not in the shards file {}",
                routing.shards_file.origin()
            )));
        }
    }
    let database = SourceDatabase::connect(config, options.connect_timeout).await?;
    let spanner = spanner_tables(&database).await?;
    let names: Vec<String> = match &routing.session {
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
    let mappings: Vec<_> = names
        .iter()
        .filter(|n| options.tables.is_empty() || options.tables.contains(n))
        .filter_map(|n| spanner.get(n))
        .filter_map(|t| routing.map_table(t))
        .collect();
    let tls = mysql::tls_options(config).map_err(LauncherError::Usage)?;
    let mut samplers = Vec::new();
    for shard in selected {
        let id = shard.config.logical_shard_id.clone();
        let mut conn = connect_shard(&shard, tls.as_ref(), options.connect_timeout).await?;
        let mut tables = Vec::new();
        for mapping in &mappings {
            let planned = shard_plan(
                &mut conn,
                mapping,
                options.zone,
                &options.ignore_columns,
                options.writer_choices,
            )
            .await
            .map_err(|e| super::mysql_error(&id, "read the table's columns", &e))?;
            let plan = match planned {
                Ok(plan) => plan,
                Err(problem) => {
                    out(format!(
                        "continuous: table {} on shard {id} not checked: {problem}",
                        mapping.spanner.name
                    ));
                    continue;
                }
            };
            match KeyLookup::new(&mapping.spanner, &plan) {
                Ok(lookup) => tables.push(Sampled {
                    table: mapping.spanner.clone(),
                    plan,
                    lookup,
                    cursor: None,
                    spanner_cursor: None,
                }),
                Err(problem) => out(format!(
                    "continuous: table {} on shard {id} not checked: {problem}",
                    mapping.spanner.name
                )),
            }
        }
        samplers.push(ShardSampler {
            shard,
            conn: Some(conn),
            tables,
            told_no_checkpoint: false,
        });
    }
    let per_round = continuous
        .rows_per_second
        .saturating_mul(continuous.interval.as_millis() as u64)
        / 1000;
    let per_round = per_round.max(1);
    let progress = snapshot::Progress::open(config).await;
    let mut ticker = tokio::time::interval(continuous.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round = 0u64;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        if continuous.rounds.is_some_and(|rounds| round >= rounds) {
            return Ok(());
        }
        round += 1;
        // Read before this round's snapshots (quiet shards, see `snapshot`).
        let applied = match &progress {
            Some(progress) => progress.applied_through().await,
            None => std::collections::BTreeMap::new(),
        };
        for sampler in &mut samplers {
            let id = sampler.shard.config.logical_shard_id.clone();
            let checked = check_shard(
                sampler,
                &database,
                &routing,
                options,
                tls.as_ref(),
                per_round,
                applied.get(&id).copied(),
                metrics,
                out,
            )
            .await;
            if let Err(error) = checked {
                // Try again next interval on a new connection.
                if let Some(conn) = sampler.conn.take() {
                    let _ = conn.disconnect().await;
                }
                out(format!(
                    "continuous: shard {id}: check failed, retried next interval: {error}"
                ));
            }
        }
    }
}

/// One interval of one shard.
#[allow(clippy::too_many_arguments)]
async fn check_shard(
    sampler: &mut ShardSampler,
    database: &SourceDatabase,
    routing: &super::Routing,
    options: &ValidateOptions,
    tls: Option<&mysql_async::SslOpts>,
    per_round: u64,
    applied_through: Option<revrepl_record::Timestamp>,
    metrics: &ValidateMetrics,
    out: &mut (dyn FnMut(String) + Send),
) -> Result<(), LauncherError> {
    let id = sampler.shard.config.logical_shard_id.clone();
    if sampler.tables.is_empty() {
        return Ok(());
    }
    if sampler.conn.is_none() {
        sampler.conn = Some(connect_shard(&sampler.shard, tls, options.connect_timeout).await?);
    }
    let Some(conn) = sampler.conn.as_mut() else {
        return Ok(());
    };
    let opened = snapshot::open(conn, &options.run_id, &id, true, applied_through).await?;
    let ReadPoint::At(at) = opened.point else {
        snapshot::close(conn).await;
        if !sampler.told_no_checkpoint {
            sampler.told_no_checkpoint = true;
            out(format!(
                "continuous: shard {id}: {}; checked once it has one",
                opened.report.note.unwrap_or_default()
            ));
        }
        return Ok(());
    };
    sampler.told_no_checkpoint = false;
    let share = (per_round / sampler.tables.len() as u64).max(1);
    let half = |sampled: &Sampled| {
        if sampled.lookup.pages() {
            share.div_ceil(2)
        } else {
            share
        }
    };
    // MySQL's next keys, all tables in the one snapshot.
    let mut pages = Vec::new();
    for sampled in &mut sampler.tables {
        let limit = half(sampled);
        let page = sample_mysql(conn, sampled, limit).await;
        let page = match page {
            Ok(page) => page,
            Err(e) => {
                snapshot::close(conn).await;
                return Err(super::mysql_error(&id, "sample the table", &e));
            }
        };
        pages.push(page);
    }
    // Spanner's next keys at T, looked up in the same snapshot.
    let mut missing: Vec<(usize, Vec<String>, u64)> = Vec::new();
    for (index, sampled) in sampler.tables.iter_mut().enumerate() {
        if !sampled.lookup.pages() {
            continue;
        }
        let limit = share / 2;
        if limit == 0 {
            continue;
        }
        let found = sample_spanner(conn, database, routing, &id, at, sampled, limit).await;
        match found {
            Ok((keys, checked)) => missing.push((index, keys, checked)),
            Err(error) => {
                snapshot::close(conn).await;
                return Err(error);
            }
        }
    }
    snapshot::close(conn).await;
    // Then Spanner at exactly the checkpoint, for those keys.
    let mut total = (0u64, 0u64);
    for (index, (sampled, page)) in sampler.tables.iter().zip(pages).enumerate() {
        let keys: Vec<Vec<Canonical>> = page
            .iter()
            .map(|row| key_values(&sampled.plan, row))
            .collect();
        let mut spanner_rows: HashMap<Vec<Canonical>, Vec<Canonical>> = HashMap::new();
        sampled
            .lookup
            .rows(database, ReadPoint::At(at), &keys, &mut |values| {
                let request = route_request(&sampled.table, values, at);
                if let Ok(Destination::Shard(routed)) = routing.router.route(&request)
                    && routed == id
                {
                    let canonical = spanner_canonical(&sampled.plan, values);
                    spanner_rows.insert(key_values(&sampled.plan, &canonical), canonical);
                }
            })
            .await?;
        let mut mismatches = 0u64;
        for row in &page {
            let key = key_values(&sampled.plan, row);
            let verdict = match spanner_rows.get(&key) {
                None => Some("not in Spanner for this shard (extra in MySQL)".to_string()),
                Some(spanner) if row_hash(spanner) == row_hash(row) => None,
                Some(spanner) => {
                    let columns: Vec<&str> = column_hashes(spanner)
                        .iter()
                        .zip(column_hashes(row))
                        .zip(&sampled.plan.columns)
                        .filter(|((a, b), _)| **a != *b)
                        .map(|(_, column)| column.mysql_name.as_str())
                        .collect();
                    Some(format!("different (columns: {})", columns.join(", ")))
                }
            };
            if let Some(verdict) = verdict {
                mismatches += 1;
                out(format!(
                    "continuous: mismatch: table {} shard {id} key {} at {}: {verdict}",
                    sampled.table.name,
                    key_text(&sampled.plan, row),
                    at.to_rfc3339()
                ));
            }
        }
        let mut checked = page.len() as u64;
        for (_, keys, spanner_checked) in missing.iter().filter(|(i, _, _)| *i == index) {
            checked += spanner_checked;
            for key in keys {
                mismatches += 1;
                out(format!(
                    "continuous: mismatch: table {} shard {id} key {key} at {}: missing in MySQL",
                    sampled.table.name,
                    at.to_rfc3339()
                ));
            }
        }
        metrics.record(&id, &sampled.table.name, checked, mismatches);
        total.0 += checked;
        total.1 += mismatches;
    }
    tracing::info!(
        shard = %id,
        at = %at.to_rfc3339(),
        checked = total.0,
        mismatches = total.1,
        "continuous verification round"
    );
    Ok(())
}

/// The next `limit` rows of Spanner's table at `at` after its Spanner cursor; those routed to
/// `shard` are looked up in MySQL (in the open snapshot) by key. Returns the key texts MySQL
/// lacks and how many rows of the shard were checked; moves the cursor, back to the start at
/// the end of the table.
async fn sample_spanner(
    conn: &mut Conn,
    database: &SourceDatabase,
    routing: &super::Routing,
    shard: &ShardId,
    at: revrepl_record::Timestamp,
    sampled: &mut Sampled,
    limit: u64,
) -> Result<(Vec<String>, u64), LauncherError> {
    let rows = sampled
        .lookup
        .page(
            database,
            ReadPoint::At(at),
            sampled.spanner_cursor.as_deref(),
            limit,
        )
        .await?;
    sampled.spanner_cursor = if (rows.len() as u64) < limit {
        None
    } else {
        rows.last().map(|row| sampled.lookup.primary_key_of(row))
    };
    let plan = &sampled.plan;
    let mut wanted: Vec<(Vec<Canonical>, String)> = Vec::new();
    for values in &rows {
        let request = route_request(&sampled.table, values, at);
        if let Ok(Destination::Shard(routed)) = routing.router.route(&request)
            && &routed == shard
        {
            let canonical = spanner_canonical(plan, values);
            wanted.push((key_values(plan, &canonical), key_text(plan, &canonical)));
        }
    }
    let checked = wanted.len() as u64;
    let key: Vec<String> = plan
        .key
        .iter()
        .map(|i| mysql_quote(&plan.columns[*i].mysql_name))
        .collect();
    let tuple = format!("({})", vec!["?"; key.len()].join(", "));
    let mut present: std::collections::HashSet<Vec<Canonical>> = std::collections::HashSet::new();
    for chunk in wanted.chunks(500) {
        let sql = format!(
            "SELECT {} FROM {} WHERE ({}) IN ({})",
            key.join(", "),
            mysql_quote(&plan.mysql_table),
            key.join(", "),
            vec![tuple.as_str(); chunk.len()].join(", ")
        );
        let params: Vec<mysql_async::Value> = chunk
            .iter()
            .flat_map(|(values, _)| values.iter())
            .map(|v| match v {
                Some(text) => mysql_async::Value::Bytes(text.as_bytes().to_vec()),
                None => mysql_async::Value::NULL,
            })
            .collect();
        let found: Vec<mysql_async::Row> = conn
            .exec(sql, params)
            .await
            .map_err(|e| super::mysql_error(shard, "look up Spanner's keys", &e))?;
        let null = mysql_async::Value::NULL;
        for row in found {
            present.insert(
                plan.key
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        from_mysql(&plan.columns[*c].rule, row.as_ref(i).unwrap_or(&null))
                    })
                    .collect(),
            );
        }
    }
    let missing = wanted
        .into_iter()
        .filter(|(values, _)| !present.contains(values))
        .map(|(_, text)| text)
        .collect();
    Ok((missing, checked))
}

/// The next `limit` rows of the table after its cursor, in key order (canonical); moves the
/// cursor, back to the start at the end of the table.
async fn sample_mysql(
    conn: &mut Conn,
    sampled: &mut Sampled,
    limit: u64,
) -> Result<Vec<Vec<Canonical>>, mysql_async::Error> {
    let plan = &sampled.plan;
    let columns: Vec<String> = plan
        .columns
        .iter()
        .map(|c| mysql_quote(&c.mysql_name))
        .collect();
    let key: Vec<String> = plan
        .key
        .iter()
        .map(|i| mysql_quote(&plan.columns[*i].mysql_name))
        .collect();
    let placeholders = vec!["?"; key.len()].join(", ");
    let after = match &sampled.cursor {
        Some(_) => format!(" WHERE ({}) > ({placeholders})", key.join(", ")),
        None => String::new(),
    };
    let sql = format!(
        "SELECT {} FROM {}{after} ORDER BY {} LIMIT {limit}",
        columns.join(", "),
        mysql_quote(&plan.mysql_table),
        key.join(", ")
    );
    let params = sampled.cursor.clone().unwrap_or_default();
    let rows: Vec<mysql_async::Row> = conn.exec(sql, params).await?;
    let null = mysql_async::Value::NULL;
    let mut page = Vec::with_capacity(rows.len());
    let mut last_key = None;
    for row in &rows {
        page.push(
            plan.columns
                .iter()
                .enumerate()
                .map(|(i, column)| from_mysql(&column.rule, row.as_ref(i).unwrap_or(&null)))
                .collect::<Vec<Canonical>>(),
        );
        last_key = Some(
            plan.key
                .iter()
                .map(|i| row.as_ref(*i).cloned().unwrap_or(mysql_async::Value::NULL))
                .collect::<Vec<_>>(),
        );
    }
    sampled.cursor = if (rows.len() as u64) < limit {
        None
    } else {
        last_key
    };
    Ok(page)
}
