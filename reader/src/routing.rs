//! From a data-change record to window-file lines: drop forward-migrated and (optionally)
//! system transactions, then give each mod its destination (DESIGN §3.7–3.8).

pub use revrepl_config::Filtration;
use revrepl_record::{ChangeRecord, Destination, LineFields, Mod, ModType, Timestamp};
use std::collections::BTreeSet;

use revrepl_shard_routing::{RouteRequest, RowLookup, Session, ShardAssigner};
use serde_json::{Map, Value};

use crate::assembly::AssemblyError;
use crate::change_stream::{DataChangeRecord, ModKind, ModValues};
use crate::error::ReaderError;

/// Transactions tagged with this prefix were written by the forward migration.
pub const FORWARD_MIGRATION_TAG_PREFIX: &str = "txBy=";

/// What the reader keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordFilter {
    /// Forward-migration filtering.
    pub filtration: Filtration,
    /// Keep system transactions (TTL deletes, backfills).
    pub keep_system_transactions: bool,
}

impl Default for RecordFilter {
    fn default() -> Self {
        Self {
            filtration: Filtration::ForwardMigration,
            keep_system_transactions: true,
        }
    }
}

impl RecordFilter {
    /// Whether `record` is replicated.
    pub fn keeps(&self, record: &DataChangeRecord) -> bool {
        let forward = self.filtration == Filtration::ForwardMigration
            && record
                .transaction_tag
                .starts_with(FORWARD_MIGRATION_TAG_PREFIX);
        let system = record.is_system_transaction && !self.keep_system_transactions;
        !forward && !system
    }
}

/// Which tables are replicated (`reader.include_tables`, `reader.exclude_tables`): records of
/// other tables are dropped by the reader, so they never reach the buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableFilter {
    /// Spanner table names to keep; `None` keeps every table.
    include: Option<BTreeSet<String>>,
    /// Spanner table names to drop.
    exclude: BTreeSet<String>,
}

impl TableFilter {
    /// The filter for `include` (empty: every table) and `exclude`. Names are Spanner table
    /// names, or — with a session file — the source (MySQL) names the session file maps them
    /// to. With a session file, a name it does not know is an error naming the key, so that a
    /// typo never silently replicates everything or nothing.
    pub fn new(
        include: &[String],
        exclude: &[String],
        session: Option<&Session>,
    ) -> Result<Self, ReaderError> {
        let resolve = |key: &str, names: &[String]| -> Result<BTreeSet<String>, ReaderError> {
            names
                .iter()
                .map(|name| match session {
                    None => Ok(name.clone()),
                    Some(session) => session
                        .tables()
                        .find(|t| &t.spanner_name == name || t.source_name() == Some(name.as_str()))
                        .map(|t| t.spanner_name.clone())
                        .ok_or_else(|| ReaderError::Config {
                            key: key.to_string(),
                            reason: format!(
                                "table {name:?} is neither a Spanner nor a source table of \
                                 session file {} (its Spanner tables: {})",
                                session.origin(),
                                session
                                    .tables()
                                    .map(|t| t.spanner_name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        }),
                })
                .collect()
        };
        let included = resolve("reader.include_tables", include)?;
        Ok(Self {
            include: (!include.is_empty()).then_some(included),
            exclude: resolve("reader.exclude_tables", exclude)?,
        })
    }

    /// Whether records of Spanner table `table` are replicated.
    pub fn keeps(&self, table: &str) -> bool {
        self.include
            .as_ref()
            .is_none_or(|names| names.contains(table))
            && !self.exclude.contains(table)
    }
}

/// One routed line: where it goes, the line, and its mod index in the data-change record.
#[derive(Debug, Clone)]
pub struct RoutedLine {
    /// The shard (or `skip`).
    pub destination: Destination,
    /// The window-file line.
    pub record: ChangeRecord,
    /// Index of the mod in its data-change record.
    pub mod_index: u32,
}

/// A data-change record whose mods have their destinations: what its window-file lines
/// share, and each mod's values. The pipeline encodes the lines straight from it
/// ([`RoutedRecord::line`]), without building a [`ChangeRecord`] per mod.
#[derive(Debug)]
pub struct RoutedRecord {
    /// When the transaction committed.
    pub commit_timestamp: Timestamp,
    /// The transaction's id.
    pub server_transaction_id: String,
    /// The record's position in the transaction.
    pub record_sequence: String,
    /// The table changed.
    pub table_name: String,
    /// Insert, update or delete.
    pub mod_type: ModType,
    /// Data-change records of the transaction across all partitions (0 if Spanner sent a
    /// negative number).
    pub number_of_records_in_transaction: u64,
    /// The transaction tag.
    pub transaction_tag: String,
    /// The mods, in the record's order (their index is the mod index).
    pub mods: Vec<ModValues>,
    /// Where each mod goes: the shard (or `skip`), by mod index.
    pub destinations: Vec<Destination>,
}

impl RoutedRecord {
    /// The window-file line of mod `index` with its destination; `None` past the last mod.
    pub fn line(&self, index: usize) -> Option<(&Destination, LineFields<'_>)> {
        let values = self.mods.get(index)?;
        let destination = self.destinations.get(index)?;
        let line = LineFields {
            commit_timestamp: self.commit_timestamp,
            server_transaction_id: &self.server_transaction_id,
            record_sequence: &self.record_sequence,
            table_name: &self.table_name,
            keys: &values.keys,
            old_values: &values.old_values,
            new_values: &values.new_values,
            mod_type: self.mod_type,
            number_of_records_in_transaction: self.number_of_records_in_transaction,
            transaction_tag: &self.transaction_tag,
            shard: destination.directory(),
        };
        Some((destination, line))
    }
}

/// Routes every mod of `record`: each mod's destination; the values stay where they are.
pub async fn route_data_change<L: RowLookup>(
    mut record: DataChangeRecord,
    assigner: &ShardAssigner<L>,
) -> Result<RoutedRecord, ReaderError> {
    let mod_type = match &record.mod_type {
        ModKind::Insert => ModType::Insert,
        ModKind::Update => ModType::Update,
        ModKind::Delete => ModType::Delete,
        ModKind::Unknown(other) => {
            return Err(ReaderError::UnknownModType {
                table: record.table_name.clone(),
                commit: record.commit_timestamp,
                mod_type: other.clone(),
            });
        }
    };
    let mut destinations = Vec::with_capacity(record.mods.len());
    // One request, its values swapped with each mod's and back: nothing is copied per mod.
    let mut request = RouteRequest {
        table: record.table_name,
        keys: Map::new(),
        new_values: Map::new(),
        old_values: Map::new(),
        mod_type,
        commit_timestamp: record.commit_timestamp,
    };
    for values in &mut record.mods {
        swap_values(&mut request, values);
        let destination = assigner.assign(&request).await;
        swap_values(&mut request, values);
        destinations.push(destination?);
    }
    Ok(RoutedRecord {
        commit_timestamp: record.commit_timestamp,
        server_transaction_id: record.server_transaction_id,
        record_sequence: record.record_sequence,
        table_name: request.table,
        mod_type,
        number_of_records_in_transaction: u64::try_from(record.number_of_records_in_transaction)
            .unwrap_or(0),
        transaction_tag: record.transaction_tag,
        mods: record.mods,
        destinations,
    })
}

fn swap_values(request: &mut RouteRequest, values: &mut ModValues) {
    std::mem::swap(&mut request.keys, &mut values.keys);
    std::mem::swap(&mut request.new_values, &mut values.new_values);
    std::mem::swap(&mut request.old_values, &mut values.old_values);
}

/// Routes every mod of `record` and builds its window-file lines.
pub async fn route_record<L: RowLookup>(
    record: DataChangeRecord,
    assigner: &ShardAssigner<L>,
) -> Result<Vec<RoutedLine>, ReaderError> {
    let routed = route_data_change(record, assigner).await?;
    let encode = |map: &Map<String, Value>| {
        // The same text as `Value::Object(map).to_string()`, without the formatter.
        serde_json::to_string(map).map_err(|source| AssemblyError::Encode {
            table: routed.table_name.clone(),
            source,
        })
    };
    let mut lines = Vec::with_capacity(routed.mods.len());
    for (index, (m, destination)) in routed.mods.iter().zip(&routed.destinations).enumerate() {
        let line = ChangeRecord {
            commit_timestamp: routed.commit_timestamp,
            server_transaction_id: routed.server_transaction_id.clone(),
            record_sequence: routed.record_sequence.clone(),
            table_name: routed.table_name.clone(),
            mods: [Mod {
                keys_json: encode(&m.keys)?,
                old_values_json: encode(&m.old_values)?,
                new_values_json: encode(&m.new_values)?,
            }],
            mod_type: routed.mod_type,
            number_of_records_in_transaction: routed.number_of_records_in_transaction,
            transaction_tag: routed.transaction_tag.clone(),
            shard: destination.directory().to_string(),
        };
        lines.push(RoutedLine {
            destination: destination.clone(),
            record: line,
            mod_index: u32::try_from(index).unwrap_or(u32::MAX),
        });
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change_stream::ModValues;
    use revrepl_record::{ShardId, Timestamp};
    use revrepl_shard_routing::SingleShardRouter;
    use serde_json::{Map, json};

    fn data(tag: &str, system: bool, mod_type: ModKind) -> DataChangeRecord {
        let object = |v: serde_json::Value| match v {
            serde_json::Value::Object(m) => m,
            _ => Map::new(),
        };
        DataChangeRecord {
            commit_timestamp: Timestamp::new(100, 5).expect("valid"),
            record_sequence: "00000002".into(),
            server_transaction_id: "tx".into(),
            is_last_record_in_transaction_in_partition: true,
            table_name: "Users".into(),
            column_types: Vec::new(),
            mods: vec![
                ModValues {
                    keys: object(json!({"id": "1"})),
                    new_values: object(json!({"name": "a=b", "n": null})),
                    old_values: Map::new(),
                },
                ModValues {
                    keys: object(json!({"id": "2"})),
                    new_values: object(json!({"name": "c"})),
                    old_values: Map::new(),
                },
            ],
            mod_type,
            value_capture_type: "NEW_ROW".into(),
            number_of_records_in_transaction: 4,
            number_of_partitions_in_transaction: 1,
            transaction_tag: tag.into(),
            is_system_transaction: system,
        }
    }

    #[test]
    fn filters_forward_migration_and_optionally_system_transactions() {
        let default = RecordFilter::default();
        assert!(!default.keeps(&data("txBy=migration", false, ModKind::Insert)));
        assert!(default.keeps(&data("app", false, ModKind::Insert)));
        assert!(
            default.keeps(&data("", true, ModKind::Delete)),
            "TTL deletes are kept"
        );
        let keep_all = RecordFilter {
            filtration: Filtration::None,
            keep_system_transactions: false,
        };
        assert!(keep_all.keeps(&data("txBy=migration", false, ModKind::Insert)));
        assert!(!keep_all.keeps(&data("", true, ModKind::Delete)));
    }

    #[tokio::test]
    async fn routes_each_mod_into_a_reference_line() {
        let shard = ShardId::new("ls1").expect("valid");
        let assigner = ShardAssigner::new(Box::new(SingleShardRouter::new(shard.clone())), [shard]);
        let lines = route_record(data("", false, ModKind::Update), &assigner)
            .await
            .expect("routes");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].mod_index, 1);
        assert_eq!(lines[0].destination.to_string(), "ls1");
        let line = serde_json::to_string(&lines[0].record).expect("json");
        assert_eq!(
            line,
            r#"{"commitTimestamp":{"seconds":100,"nanos":5},"serverTransactionId":"tx","recordSequence":"00000002","tableName":"Users","mods":[{"keysJson":"{\"id\":\"1\"}","oldValuesJson":"{}","newValuesJson":"{\"n\":null,\"name\":\"a=b\"}"}],"modType":"UPDATE","numberOfRecordsInTransaction":4,"transactionTag":"","shard":"ls1"}"#
        );
    }

    #[tokio::test]
    async fn unknown_mod_types_stop_with_a_clear_error() {
        let shard = ShardId::new("ls1").expect("valid");
        let assigner = ShardAssigner::new(Box::new(SingleShardRouter::new(shard.clone())), [shard]);
        let err = route_record(
            data("", false, ModKind::Unknown("UPSERT".into())),
            &assigner,
        )
        .await
        .expect_err("unknown");
        assert!(err.to_string().contains("\"UPSERT\""), "{err}");
    }
}
