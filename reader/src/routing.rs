//! From a data-change record to window-file lines: drop forward-migrated and (optionally)
//! system transactions, then give each mod its destination (DESIGN §3.7–3.8).

pub use revrepl_config::Filtration;
use revrepl_record::{ChangeRecord, Destination, Mod, ModType};
use revrepl_shard_routing::{RouteRequest, RowLookup, ShardAssigner};

use crate::change_stream::{DataChangeRecord, ModKind};
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

/// Routes every mod of `record` and builds its window-file lines.
pub async fn route_record<L: RowLookup>(
    record: DataChangeRecord,
    assigner: &ShardAssigner<L>,
) -> Result<Vec<RoutedLine>, ReaderError> {
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
    let mut lines = Vec::with_capacity(record.mods.len());
    for (index, values) in record.mods.into_iter().enumerate() {
        let request = RouteRequest {
            table: record.table_name.clone(),
            keys: values.keys,
            new_values: values.new_values,
            old_values: values.old_values,
            mod_type,
            commit_timestamp: record.commit_timestamp,
        };
        let destination = assigner.assign(&request).await?;
        let line = ChangeRecord {
            commit_timestamp: record.commit_timestamp,
            server_transaction_id: record.server_transaction_id.clone(),
            record_sequence: record.record_sequence.clone(),
            table_name: request.table,
            mods: [Mod {
                keys_json: serde_json::Value::Object(request.keys).to_string(),
                old_values_json: serde_json::Value::Object(request.old_values).to_string(),
                new_values_json: serde_json::Value::Object(request.new_values).to_string(),
            }],
            mod_type,
            number_of_records_in_transaction: u64::try_from(
                record.number_of_records_in_transaction,
            )
            .unwrap_or(0),
            transaction_tag: record.transaction_tag.clone(),
            shard: destination.directory().to_string(),
        };
        lines.push(RoutedLine {
            destination,
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
