//! `revrepl validate --repair --shard S --table T`: makes the differing rows of one table on
//! one shard equal to Spanner again, without racing the running writer.
//!
//! 1. A validation of the table on the shard at its checkpoint lists the differing keys.
//! 2. In one MySQL transaction on the shard, the shard's checkpoint row is read `FOR UPDATE`
//!    — the lock the writer takes at the start of every batch — so the writer waits until
//!    the repair commits, and the checkpoint's commit timestamp T cannot move meanwhile.
//! 3. Each listed key is read from Spanner at exactly T. A row routed to the shard is written
//!    through the writer's own path (its conversion and statement planner, as an update or
//!    insert record of the row's full Spanner values); a key Spanner does not hold at T (or
//!    routes elsewhere) is deleted by its MySQL key. The checkpoint is not changed.
//! 4. Commit; the writer goes on from T, where MySQL now equals Spanner for those keys.
//!
//! Differences counted only by hash bucket (beyond `--detail-rows`) are not repaired: the
//! report says how many, raise `--detail-rows` and repair again.

use std::collections::BTreeMap;
use std::sync::Arc;

use google_cloud_spanner::value::Value as SpannerValue;
use mysql_async::prelude::Queryable;
use revrepl_config::Config;
use revrepl_record::{ChangeRecord, Destination, Mod, ModType, ShardId, Timestamp};
use revrepl_shard_routing::Session;
use revrepl_writer::checkpoint::{self, CheckpointReadError};
use revrepl_writer::{
    ConversionRules, SchemaMapping, SourceTimeZone, SpannerTransaction, StatementLimits,
    StatementPlanner, TargetSchema,
};
use serde::Serialize;
use serde_json::Map;

use super::canonical::Canonical;
use super::lookup::KeyLookup;
use super::plan::{shard_plan, spanner_tables};
use super::snapshot::ReadPoint;
use super::{
    DifferenceKind, ValidateOptions, ValidationReport, key_values, mysql_quote, route_request,
    spanner_canonical, validate, wire_json,
};
use crate::error::LauncherError;
use crate::mysql;
use crate::spanner::SourceDatabase;

/// The writer's session settings (`revrepl-writer` sets the same on its connections).
const WRITER_SESSION: &[&str] = &[
    "SET SESSION time_zone = '+00:00'",
    "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), \
     'STRICT_ALL_TABLES', 'NO_AUTO_VALUE_ON_ZERO')",
    "SET SESSION foreign_key_checks = 1",
];

/// What a repair did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RepairReport {
    /// The shard.
    pub shard: String,
    /// The Spanner table.
    pub table: String,
    /// The commit timestamp the values were read at (the shard's checkpoint, held locked).
    pub at: Option<String>,
    /// Differing keys found by the validation before the repair.
    pub found: usize,
    /// Rows written with Spanner's values.
    pub upserted: usize,
    /// Rows deleted (not in Spanner at the checkpoint, or routed to another shard).
    pub deleted: usize,
    /// Differences counted only by hash bucket, not repaired (raise `--detail-rows`).
    pub not_repaired: u64,
    /// The validation that listed the keys.
    #[serde(skip)]
    pub before: Option<ValidationReport>,
}

/// Repairs `options.tables[0]` on `options.shards[0]` (exactly one of each).
pub async fn repair(
    config: &Config,
    options: &ValidateOptions,
) -> Result<RepairReport, LauncherError> {
    let (Some(shard_name), Some(table_name), 1, 1) = (
        options.shards.first(),
        options.tables.first(),
        options.shards.len(),
        options.tables.len(),
    ) else {
        return Err(LauncherError::Usage(
            "--repair needs exactly one --shard and one --table".into(),
        ));
    };
    let mut options = options.clone();
    options.at_checkpoint = true;
    // Every differing key is listed, up to the rows held in memory.
    options.max_listed = options.detail_rows.max(options.max_listed);
    let before = validate(config, &options).await?;
    let mut report = RepairReport {
        shard: shard_name.clone(),
        table: table_name.clone(),
        at: None,
        found: 0,
        upserted: 0,
        deleted: 0,
        not_repaired: 0,
        before: None,
    };
    let comparison = before
        .tables
        .iter()
        .filter(|t| &t.table == table_name)
        .flat_map(|t| t.shards.iter())
        .find(|s| &s.shard == shard_name);
    let Some(comparison) = comparison else {
        report.before = Some(before);
        return Ok(report);
    };
    if let Some(problem) = &comparison.problem {
        return Err(LauncherError::Usage(format!(
            "table {table_name} on shard {shard_name} cannot be compared, so not repaired: \
             {problem}"
        )));
    }
    report.not_repaired = comparison.undetailed_buckets;
    let keys: Vec<(Vec<Canonical>, DifferenceKind)> = comparison
        .listed
        .iter()
        .map(|d| (d.key_values.clone(), d.kind))
        .collect();
    report.found = keys.len();
    if keys.is_empty() {
        report.before = Some(before);
        return Ok(report);
    }
    report.before = Some(before);

    // Routing and the Spanner side.
    let routing = super::Routing::load(config)?;
    let shard_id = ShardId::new(shard_name.clone()).map_err(|e| {
        LauncherError::Usage(format!("--shard {shard_name:?} is not a shard id: {e}"))
    })?;
    let shard = mysql::resolve_shards(&routing.shards_file)
        .await?
        .into_iter()
        .find(|s| s.config.logical_shard_id == shard_id)
        .ok_or_else(|| {
            LauncherError::Usage(format!("--shard {shard_name:?} is not in the shards file"))
        })?;
    let database = SourceDatabase::connect(config, options.connect_timeout).await?;
    let tables = spanner_tables(&database).await?;
    let table = tables
        .get(table_name)
        .ok_or_else(|| LauncherError::Usage(format!("Spanner has no table {table_name:?}")))?;
    let mapping = routing.map_table(table).ok_or_else(|| {
        LauncherError::Usage(format!("table {table_name} has no MySQL table to repair"))
    })?;

    // The shard, with the writer's session and planner.
    let tls = mysql::tls_options(config).map_err(LauncherError::Usage)?;
    let mut conn = super::connect_shard(&shard, tls.as_ref(), options.connect_timeout).await?;
    let failed =
        |operation: &str, e: &mysql_async::Error| super::mysql_error(&shard_id, operation, e);
    for statement in WRITER_SESSION {
        conn.query_drop(*statement)
            .await
            .map_err(|e| failed("set up the session", &e))?;
    }
    let plan = shard_plan(
        &mut conn,
        &mapping,
        options.zone,
        &options.ignore_columns,
        options.writer_choices,
    )
    .await
    .map_err(|e| failed("read the table's columns", &e))?
    .map_err(LauncherError::Usage)?;
    let lookup = KeyLookup::new(table, &plan).map_err(|e| {
        LauncherError::Usage(format!("table {table_name} cannot be repaired by key: {e}"))
    })?;
    let schema = TargetSchema::load(&mut conn, &shard.config.db_name)
        .await
        .map_err(|e| failed("read information_schema", &e))?;
    let mut planner = StatementPlanner::new(
        shard_id.clone(),
        Arc::new(schema),
        writer_mapping(config, routing.session.as_deref())?,
        source_time_zone(config)?,
        StatementLimits::default(),
    );

    // Hold the writer: its checkpoint row, locked as the writer locks it.
    conn.query_drop("START TRANSACTION")
        .await
        .map_err(|e| failed("start a transaction", &e))?;
    let held = checkpoint::read(&mut conn, &options.run_id, &shard_id, true).await;
    let at = match held {
        Ok(Some(checkpoint)) => checkpoint.position.map(|p| p.commit_timestamp),
        Ok(None) => None,
        Err(CheckpointReadError::Database(e)) => {
            let _ = conn.query_drop("ROLLBACK").await;
            return Err(failed("lock the checkpoint", &e));
        }
        Err(CheckpointReadError::Invalid(reason)) => {
            let _ = conn.query_drop("ROLLBACK").await;
            return Err(LauncherError::MySql {
                shard: shard_name.clone(),
                operation: "lock the checkpoint".into(),
                message: reason,
            });
        }
    };
    let Some(at) = at else {
        let _ = conn.query_drop("ROLLBACK").await;
        return Err(LauncherError::Usage(format!(
            "shard {shard_name} has no checkpoint position of run {:?}: a repair re-applies \
             Spanner's values at the checkpoint, so the writer must have applied something of \
             the run first (or use `revrepl reprocess`)",
            options.run_id
        )));
    };
    report.at = Some(at.to_rfc3339());

    let repaired = apply(
        &mut conn,
        &database,
        &routing,
        &shard_id,
        table,
        &plan,
        &lookup,
        &mut planner,
        at,
        &keys,
    )
    .await;
    match repaired {
        Ok((upserted, deleted)) => {
            conn.query_drop("COMMIT")
                .await
                .map_err(|e| failed("commit the repair", &e))?;
            report.upserted = upserted;
            report.deleted = deleted;
        }
        Err(error) => {
            let _ = conn.query_drop("ROLLBACK").await;
            return Err(error);
        }
    }
    let _ = conn.disconnect().await;
    Ok(report)
}

/// Writes Spanner's rows at `at` for `keys` and deletes the keys Spanner does not route to the
/// shard at `at`; returns (upserted, deleted).
#[allow(clippy::too_many_arguments)]
async fn apply(
    conn: &mut mysql_async::Conn,
    database: &SourceDatabase,
    routing: &super::Routing,
    shard: &ShardId,
    table: &super::plan::SpannerTable,
    plan: &super::plan::ShardPlan,
    lookup: &KeyLookup,
    planner: &mut StatementPlanner,
    at: Timestamp,
    keys: &[(Vec<Canonical>, DifferenceKind)],
) -> Result<(usize, usize), LauncherError> {
    let wanted: Vec<Vec<Canonical>> = keys.iter().map(|(k, _)| k.clone()).collect();
    let kinds: BTreeMap<Vec<Canonical>, DifferenceKind> = keys.iter().cloned().collect();
    let mut found: BTreeMap<Vec<Canonical>, Vec<SpannerValue>> = BTreeMap::new();
    lookup
        .rows(database, ReadPoint::At(at), &wanted, &mut |values| {
            let request = route_request(table, values, at);
            if let Ok(Destination::Shard(routed)) = routing.router.route(&request)
                && &routed == shard
            {
                let canonical = spanner_canonical(plan, values);
                found.insert(key_values(plan, &canonical), values.to_vec());
            }
        })
        .await?;
    let mut records = Vec::new();
    for (sequence, (key, values)) in found.iter().enumerate() {
        let mut keys_json = Map::new();
        let mut new_values = Map::new();
        for ((name, _), value) in table.columns.iter().zip(values) {
            if table.primary_key.contains(name) {
                keys_json.insert(name.clone(), wire_json(value));
            } else {
                new_values.insert(name.clone(), wire_json(value));
            }
        }
        let mod_type = match kinds.get(key) {
            Some(DifferenceKind::MissingInMysql) => ModType::Insert,
            _ => ModType::Update,
        };
        records.push(ChangeRecord {
            commit_timestamp: at,
            server_transaction_id: "revrepl-validate-repair".into(),
            record_sequence: format!("{sequence:08}"),
            table_name: table.name.clone(),
            mods: [Mod {
                keys_json: serde_json::Value::Object(keys_json).to_string(),
                old_values_json: "{}".into(),
                new_values_json: serde_json::Value::Object(new_values).to_string(),
            }],
            mod_type,
            number_of_records_in_transaction: found.len() as u64,
            transaction_tag: String::new(),
            shard: shard.to_string(),
        });
    }
    let upserted = records.len();
    let failed = |operation: &str, e: &mysql_async::Error| super::mysql_error(shard, operation, e);
    if !records.is_empty() {
        let statements = planner
            .plan(&SpannerTransaction::group(records))
            .map_err(|e| LauncherError::Usage(format!("cannot write Spanner's values: {e}")))?;
        for statement in statements {
            conn.exec_drop(&*statement.sql, statement.params)
                .await
                .map_err(|e| failed("write Spanner's values", &e))?;
        }
    }
    // Keys Spanner does not route to the shard at `at`: delete them by their MySQL key.
    let condition: Vec<String> = plan
        .key
        .iter()
        .map(|i| format!("{} <=> ?", mysql_quote(&plan.columns[*i].mysql_name)))
        .collect();
    let delete = format!(
        "DELETE FROM {} WHERE {}",
        mysql_quote(&plan.mysql_table),
        condition.join(" AND ")
    );
    let mut deleted = 0;
    for key in wanted.iter().filter(|k| !found.contains_key(*k)) {
        let params: Vec<mysql_async::Value> = key
            .iter()
            .map(|v| match v {
                Some(text) => mysql_async::Value::Bytes(text.as_bytes().to_vec()),
                None => mysql_async::Value::NULL,
            })
            .collect();
        conn.exec_drop(&delete, params)
            .await
            .map_err(|e| failed("delete a row Spanner does not hold", &e))?;
        deleted += 1;
    }
    Ok((upserted, deleted))
}

/// The writer's Spanner → MySQL mapping for this configuration.
fn writer_mapping(
    config: &Config,
    session: Option<&Session>,
) -> Result<Arc<SchemaMapping>, LauncherError> {
    let mut mapping = match session {
        Some(session) => SchemaMapping::from_session(session),
        None => SchemaMapping::identity(),
    };
    for column in &config.writer.ignore_columns {
        mapping = mapping.ignoring_column_everywhere(column.clone());
    }
    Ok(Arc::new(
        mapping.with_rules(ConversionRules::from(&config.writer)),
    ))
}

fn source_time_zone(config: &Config) -> Result<SourceTimeZone, LauncherError> {
    config
        .writer
        .source_time_zone
        .parse()
        .map_err(|e| LauncherError::Usage(format!("writer.source_time_zone: {e}")))
}

/// The report as text.
pub fn render_text(report: &RepairReport) -> String {
    let mut out = String::new();
    let at = report.at.as_deref().unwrap_or("-");
    if report.found == 0 && report.not_repaired == 0 {
        out.push_str(&format!(
            "repair: table {} on shard {}: nothing differs, nothing written\n",
            report.table, report.shard
        ));
        return out;
    }
    out.push_str(&format!(
        "repair: table {} on shard {}: {} differing row(s); at checkpoint {at} (held locked): \
         {} written with Spanner's values, {} deleted\n",
        report.table, report.shard, report.found, report.upserted, report.deleted
    ));
    if report.not_repaired > 0 {
        out.push_str(&format!(
            "repair: {} hash bucket(s) differ beyond --detail-rows and were not repaired: \
             raise --detail-rows and repair again\n",
            report.not_repaired
        ));
    }
    out
}
