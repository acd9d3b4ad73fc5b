//! Change records as the reader decodes them, and an in-memory row history standing in for
//! Spanner's stale reads.

use std::sync::Mutex;

use revrepl_record::{ChangeRecord, Classify, ErrorClass, Timestamp};
use revrepl_shard_routing::{RouteRequest, RowLookup, RowLookupRequest, RowNeed};
use serde_json::{Map, Value, json};

/// The commit timestamp every test record uses.
pub fn commit_time() -> Timestamp {
    Timestamp::new(1_719_247_984, 109_263_000).expect("a valid timestamp")
}

/// A JSON object literal as a map.
pub fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("test values are JSON objects, not {other}"),
    }
}

/// One window-file line of `table`, as the reference writes it.
pub fn record(
    table: &str,
    mod_type: &str,
    keys: Value,
    new_values: Value,
    old_values: Value,
) -> ChangeRecord {
    let line = json!({
        "commitTimestamp": {"seconds": commit_time().seconds(), "nanos": commit_time().nanos()},
        "serverTransactionId": "tx1",
        "recordSequence": "00000000",
        "tableName": table,
        "mods": [{
            "keysJson": keys.to_string(),
            "newValuesJson": new_values.to_string(),
            "oldValuesJson": old_values.to_string(),
        }],
        "modType": mod_type,
        "numberOfRecordsInTransaction": 1,
        "transactionTag": "",
        "shard": "",
    });
    serde_json::from_value(line).expect("a valid window-file line")
}

/// The decoded form of [`record`].
pub fn request(
    table: &str,
    mod_type: &str,
    keys: Value,
    new_values: Value,
    old_values: Value,
) -> RouteRequest {
    RouteRequest::from_record(&record(table, mod_type, keys, new_values, old_values))
        .expect("valid JSON objects")
}

/// Why the in-memory lookup failed.
#[derive(Debug, thiserror::Error)]
#[error("spanner is unavailable (test)")]
pub struct LookupFailure;

impl Classify for LookupFailure {
    fn class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
}

/// One lookup the assigner made.
#[derive(Debug, Clone, PartialEq)]
pub struct LookupCall {
    /// The table read.
    pub table: String,
    /// The key read.
    pub keys: Map<String, Value>,
    /// The columns asked for.
    pub columns: RowNeed,
    /// The read timestamp.
    pub read_timestamp: Timestamp,
}

/// One version of a row: written (or deleted, for `row: None`) at `at`.
#[derive(Debug)]
struct RowVersion {
    table: String,
    keys: Map<String, Value>,
    at: Timestamp,
    row: Option<Map<String, Value>>,
}

/// Row versions by commit timestamp: what a Spanner stale read would see.
#[derive(Debug, Default)]
pub struct RowHistory {
    versions: Vec<RowVersion>,
    /// Every lookup made.
    calls: Mutex<Vec<LookupCall>>,
    /// Fail every lookup.
    unavailable: bool,
}

impl RowHistory {
    /// A history in which every lookup fails with a transient error.
    pub fn unavailable() -> Self {
        Self {
            unavailable: true,
            ..Self::default()
        }
    }

    /// Records that `row` was written (or, for `None`, deleted) at `at`.
    pub fn write(mut self, table: &str, keys: Value, at: Timestamp, row: Option<Value>) -> Self {
        self.versions.push(RowVersion {
            table: table.to_string(),
            keys: object(keys),
            at,
            row: row.map(object),
        });
        self
    }

    /// The lookups made so far.
    pub fn calls(&self) -> Vec<LookupCall> {
        self.calls
            .lock()
            .expect("no test panicked holding the lock")
            .clone()
    }
}

impl RowLookup for RowHistory {
    type Error = LookupFailure;

    async fn row_before(
        &self,
        request: &RowLookupRequest<'_>,
    ) -> Result<Option<Map<String, Value>>, LookupFailure> {
        self.calls
            .lock()
            .expect("no test panicked holding the lock")
            .push(LookupCall {
                table: request.table.to_string(),
                keys: request.keys.clone(),
                columns: request.columns.clone(),
                read_timestamp: request.read_timestamp,
            });
        if self.unavailable {
            return Err(LookupFailure);
        }
        let latest = self
            .versions
            .iter()
            .filter(|version| {
                version.table == request.table
                    && &version.keys == request.keys
                    && version.at <= request.read_timestamp
            })
            .max_by_key(|version| version.at);
        Ok(latest.and_then(|version| version.row.clone()))
    }
}
