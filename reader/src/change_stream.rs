//! Change-stream records as our own types, decoded from the `ChangeRecord` column of a
//! `READ_<stream>` query (GoogleSQL, IMMUTABLE_KEY_RANGE partitions).
//!
//! Decoding is lenient where Spanner is ("empty or NULL" arrays, several elements per row,
//! INT64 as string or number, NULL parent tokens, unknown enum values kept) and strict where
//! losing data would follow (a data record without a commit timestamp is an error, not a skip).

use revrepl_record::Timestamp;
use serde_json::{Map, Value};

/// One record of a change-stream partition.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeStreamRecord {
    /// Committed changes to one table in one transaction.
    DataChange(DataChangeRecord),
    /// Nothing else up to and including this timestamp in this partition.
    Heartbeat(Timestamp),
    /// The partition ends; these partitions continue it from `start_timestamp`.
    ChildPartitions(ChildPartitionsRecord),
}

/// How a row changed. Values Spanner may add later are kept, not dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModKind {
    /// `INSERT`
    Insert,
    /// `UPDATE`
    Update,
    /// `DELETE`
    Delete,
    /// Anything else, as sent.
    Unknown(String),
}

impl ModKind {
    fn parse(text: &str) -> Self {
        match text {
            "INSERT" => Self::Insert,
            "UPDATE" => Self::Update,
            "DELETE" => Self::Delete,
            other => Self::Unknown(other.to_string()),
        }
    }
}

/// A column's type as the change stream describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnType {
    /// Column name.
    pub name: String,
    /// The Spanner API `Type` as JSON, e.g. `{"code":"INT64"}`.
    pub type_json: Value,
    /// Whether the column is part of the primary key.
    pub is_primary_key: bool,
    /// 1-based position in the table.
    pub ordinal_position: i64,
}

/// The values of one changed row: JSON objects in Spanner's change-stream encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct ModValues {
    /// Primary-key columns.
    pub keys: Map<String, Value>,
    /// New values of non-key columns (`{}` for deletes).
    pub new_values: Map<String, Value>,
    /// Old values of non-key columns (`{}` unless the stream captures them).
    pub old_values: Map<String, Value>,
}

/// A data-change record with every field Spanner sends.
#[derive(Debug, Clone, PartialEq)]
pub struct DataChangeRecord {
    /// When the transaction committed.
    pub commit_timestamp: Timestamp,
    /// Orders the transaction's records, across partitions.
    pub record_sequence: String,
    /// The transaction's id, unique among transactions at one commit timestamp.
    pub server_transaction_id: String,
    /// Whether this is the transaction's last record in this partition.
    pub is_last_record_in_transaction_in_partition: bool,
    /// The table changed.
    pub table_name: String,
    /// Types of the columns in the mods.
    pub column_types: Vec<ColumnType>,
    /// The changed rows.
    pub mods: Vec<ModValues>,
    /// Insert, update, delete (or a value we do not know yet).
    pub mod_type: ModKind,
    /// The stream's value capture type when the change was recorded.
    pub value_capture_type: String,
    /// Data-change records of the transaction across all partitions.
    pub number_of_records_in_transaction: i64,
    /// Partitions holding records of the transaction.
    pub number_of_partitions_in_transaction: i64,
    /// The transaction tag (`txBy=…` marks forward-migration writes).
    pub transaction_tag: String,
    /// TTL deletes, backfills and other system transactions.
    pub is_system_transaction: bool,
}

/// A child partition announced by a parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildPartition {
    /// Token to query the child with.
    pub token: String,
    /// All parents of the child (a merged child has several); NULLs dropped.
    pub parent_partition_tokens: Vec<String>,
}

/// The end of a partition and the partitions that continue it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildPartitionsRecord {
    /// Children hold records with commit timestamps at or after this.
    pub start_timestamp: Timestamp,
    /// Orders several such records with one start timestamp.
    pub record_sequence: String,
    /// The children.
    pub child_partitions: Vec<ChildPartition>,
}

/// A change-stream row that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode change-stream record: {field}: {reason}")]
pub struct RecordDecodeError {
    /// The field path, e.g. `data_change_record.commit_timestamp`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

fn fail<T>(field: &str, reason: impl Into<String>) -> Result<T, RecordDecodeError> {
    Err(RecordDecodeError {
        field: field.to_string(),
        reason: reason.into(),
    })
}

/// Decodes the value of one row's `ChangeRecord` column (an `ARRAY<STRUCT<…>>` as JSON).
pub fn decode_change_record_column(
    column: &Value,
) -> Result<Vec<ChangeStreamRecord>, RecordDecodeError> {
    let mut records = Vec::new();
    for element in array(column, "ChangeRecord")? {
        let Some(element) = element.as_object() else {
            return fail(
                "ChangeRecord",
                format!("expected a struct, found {}", kind(element)),
            );
        };
        for data in array_field(element, "data_change_record")? {
            // Beam skips inner structs whose key field is NULL; so do we.
            if data.get("commit_timestamp").is_some_and(|v| !v.is_null()) {
                records.push(ChangeStreamRecord::DataChange(data_change(data)?));
            }
        }
        for heartbeat in array_field(element, "heartbeat_record")? {
            if let Some(ts) = heartbeat.get("timestamp").filter(|v| !v.is_null()) {
                records.push(ChangeStreamRecord::Heartbeat(timestamp(
                    ts,
                    "heartbeat_record.timestamp",
                )?));
            }
        }
        for children in array_field(element, "child_partitions_record")? {
            if children
                .get("start_timestamp")
                .is_some_and(|v| !v.is_null())
            {
                records.push(ChangeStreamRecord::ChildPartitions(child_partitions(
                    children,
                )?));
            }
        }
    }
    Ok(records)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn array<'a>(value: &'a Value, field: &str) -> Result<&'a [Value], RecordDecodeError> {
    match value {
        Value::Null => Ok(&[]),
        Value::Array(items) => Ok(items),
        other => fail(field, format!("expected an array, found {}", kind(other))),
    }
}

/// Inner arrays hold objects; anything else is an error.
fn array_field<'a>(
    object: &'a Map<String, Value>,
    field: &str,
) -> Result<Vec<&'a Map<String, Value>>, RecordDecodeError> {
    let items = array(object.get(field).unwrap_or(&Value::Null), field)?;
    items
        .iter()
        .filter(|item| !item.is_null())
        .map(|item| match item.as_object() {
            Some(object) => Ok(object),
            None => fail(field, format!("expected a struct, found {}", kind(item))),
        })
        .collect()
}

fn timestamp(value: &Value, field: &str) -> Result<Timestamp, RecordDecodeError> {
    match value.as_str() {
        Some(text) => Timestamp::parse_rfc3339(text).or_else(|e| fail(field, e.to_string())),
        None => fail(
            field,
            format!("expected a timestamp string, found {}", kind(value)),
        ),
    }
}

fn required_string(
    object: &Map<String, Value>,
    parent: &str,
    field: &str,
) -> Result<String, RecordDecodeError> {
    match object.get(field) {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(other) => fail(
            &format!("{parent}.{field}"),
            format!("expected a string, found {}", kind(other)),
        ),
        None => fail(&format!("{parent}.{field}"), "missing"),
    }
}

fn optional_string(object: &Map<String, Value>, field: &str) -> String {
    object
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn optional_bool(object: &Map<String, Value>, field: &str) -> bool {
    object.get(field).and_then(Value::as_bool).unwrap_or(false)
}

/// INT64 arrives as a string through the JSON form; accept numbers too.
fn int64(object: &Map<String, Value>, parent: &str, field: &str) -> Result<i64, RecordDecodeError> {
    let path = || format!("{parent}.{field}");
    match object.get(field) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .map_or_else(|| fail(&path(), format!("{n} is not an INT64")), Ok),
        Some(Value::String(s)) => s
            .parse()
            .or_else(|_| fail(&path(), format!("{s:?} is not an INT64"))),
        Some(other) => fail(&path(), format!("expected an INT64, found {}", kind(other))),
    }
}

/// A JSON column: parsed already, or JSON text; NULL means an empty object.
fn json_object(
    value: Option<&Value>,
    field: &str,
) -> Result<Map<String, Value>, RecordDecodeError> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(other) => fail(
                field,
                format!("expected a JSON object, found {}", kind(&other)),
            ),
            Err(e) => fail(field, format!("invalid JSON: {e}")),
        },
        Some(other) => fail(
            field,
            format!("expected a JSON object, found {}", kind(other)),
        ),
    }
}

fn data_change(object: &Map<String, Value>) -> Result<DataChangeRecord, RecordDecodeError> {
    const P: &str = "data_change_record";
    let commit_timestamp = timestamp(
        object.get("commit_timestamp").unwrap_or(&Value::Null),
        "data_change_record.commit_timestamp",
    )?;
    let mut column_types = Vec::new();
    for column in array_field(object, "column_types")? {
        let type_json = match column.get("type") {
            Some(Value::String(text)) => {
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
            }
            Some(other) => other.clone(),
            None => Value::Null,
        };
        column_types.push(ColumnType {
            name: required_string(column, "data_change_record.column_types", "name")?,
            type_json,
            is_primary_key: optional_bool(column, "is_primary_key"),
            ordinal_position: int64(
                column,
                "data_change_record.column_types",
                "ordinal_position",
            )?,
        });
    }
    let mut mods = Vec::new();
    for m in array_field(object, "mods")? {
        mods.push(ModValues {
            keys: json_object(m.get("keys"), "data_change_record.mods.keys")?,
            new_values: json_object(m.get("new_values"), "data_change_record.mods.new_values")?,
            old_values: json_object(m.get("old_values"), "data_change_record.mods.old_values")?,
        });
    }
    Ok(DataChangeRecord {
        commit_timestamp,
        record_sequence: required_string(object, P, "record_sequence")?,
        server_transaction_id: required_string(object, P, "server_transaction_id")?,
        is_last_record_in_transaction_in_partition: optional_bool(
            object,
            "is_last_record_in_transaction_in_partition",
        ),
        table_name: required_string(object, P, "table_name")?,
        column_types,
        mods,
        mod_type: ModKind::parse(&required_string(object, P, "mod_type")?),
        value_capture_type: optional_string(object, "value_capture_type"),
        number_of_records_in_transaction: int64(object, P, "number_of_records_in_transaction")?,
        number_of_partitions_in_transaction: int64(
            object,
            P,
            "number_of_partitions_in_transaction",
        )?,
        transaction_tag: optional_string(object, "transaction_tag"),
        is_system_transaction: optional_bool(object, "is_system_transaction"),
    })
}

fn child_partitions(
    object: &Map<String, Value>,
) -> Result<ChildPartitionsRecord, RecordDecodeError> {
    let start_timestamp = timestamp(
        object.get("start_timestamp").unwrap_or(&Value::Null),
        "child_partitions_record.start_timestamp",
    )?;
    let mut children = Vec::new();
    for child in array_field(object, "child_partitions")? {
        let parents = array(
            child.get("parent_partition_tokens").unwrap_or(&Value::Null),
            "child_partitions_record.child_partitions.parent_partition_tokens",
        )?;
        children.push(ChildPartition {
            token: required_string(child, "child_partitions_record.child_partitions", "token")?,
            parent_partition_tokens: parents
                .iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect(),
        });
    }
    Ok(ChildPartitionsRecord {
        start_timestamp,
        record_sequence: optional_string(object, "record_sequence"),
        child_partitions: children,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).expect("valid")
    }

    #[test]
    fn decodes_a_data_change_record_without_losing_values() {
        let column = json!([{
            "data_change_record": [{
                "commit_timestamp": "2024-06-24T16:53:04.109263Z",
                "record_sequence": "00000001",
                "server_transaction_id": "37",
                "is_last_record_in_transaction_in_partition": true,
                "table_name": "Users",
                "column_types": [
                    {"name": "id", "type": {"code": "INT64"}, "is_primary_key": true, "ordinal_position": "1"},
                    {"name": "tags", "type": "{\"code\":\"ARRAY\",\"array_element_type\":{\"code\":\"STRING\"}}", "is_primary_key": false, "ordinal_position": 2}
                ],
                "mods": [{
                    "keys": {"id": "9223372036854775807"},
                    "new_values": {"n": "12345678901234567890.123456789", "f": "NaN", "b": "AP8=",
                                   "j": "{\"k\":[1,2]}", "x": null, "tags": ["a", "NULL"]},
                    "old_values": null
                }, {
                    "keys": "{\"id\":\"2\"}", "new_values": "{}", "old_values": "{\"n\":\"1\"}"
                }],
                "mod_type": "UPDATE",
                "value_capture_type": "NEW_ROW_AND_OLD_VALUES",
                "number_of_records_in_transaction": "3",
                "number_of_partitions_in_transaction": 1,
                "transaction_tag": "txBy=forward",
                "is_system_transaction": false
            }],
            "heartbeat_record": [],
            "child_partitions_record": null
        }]);
        let records = decode_change_record_column(&column).expect("decodes");
        let [ChangeStreamRecord::DataChange(r)] = records.as_slice() else {
            panic!("one data record expected: {records:?}");
        };
        assert_eq!(r.commit_timestamp, ts("2024-06-24T16:53:04.109263Z"));
        assert_eq!(r.mod_type, ModKind::Update);
        assert_eq!(r.number_of_records_in_transaction, 3);
        assert_eq!(r.transaction_tag, "txBy=forward");
        assert!(r.is_last_record_in_transaction_in_partition);
        assert_eq!(r.column_types[0].ordinal_position, 1);
        assert_eq!(r.column_types[1].type_json["code"], json!("ARRAY"));
        assert_eq!(r.mods[0].keys["id"], json!("9223372036854775807"));
        assert_eq!(
            r.mods[0].new_values["n"],
            json!("12345678901234567890.123456789")
        );
        assert_eq!(r.mods[0].new_values["f"], json!("NaN"));
        assert_eq!(r.mods[0].new_values["j"], json!("{\"k\":[1,2]}"));
        assert_eq!(r.mods[0].new_values["x"], Value::Null);
        assert!(r.mods[0].old_values.is_empty());
        assert_eq!(r.mods[1].keys["id"], json!("2"));
        assert_eq!(r.mods[1].old_values["n"], json!("1"));
    }

    #[test]
    fn decodes_heartbeats_and_children_with_null_parents() {
        let column = json!([
            {"data_change_record": [], "heartbeat_record": [{"timestamp": "2024-01-01T00:00:01Z"}],
             "child_partitions_record": []},
            {"data_change_record": null, "heartbeat_record": null,
             "child_partitions_record": [{
                "start_timestamp": "2024-01-01T00:00:02.5Z", "record_sequence": "00000000",
                "child_partitions": [{"token": "tok-a", "parent_partition_tokens": [null]},
                                     {"token": "tok-m", "parent_partition_tokens": ["p1", "p2"]}]}]}
        ]);
        let records = decode_change_record_column(&column).expect("decodes");
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[0],
            ChangeStreamRecord::Heartbeat(ts("2024-01-01T00:00:01Z"))
        );
        let ChangeStreamRecord::ChildPartitions(c) = &records[1] else {
            panic!("children expected");
        };
        assert_eq!(c.start_timestamp, ts("2024-01-01T00:00:02.5Z"));
        assert!(c.child_partitions[0].parent_partition_tokens.is_empty());
        assert_eq!(c.child_partitions[1].parent_partition_tokens, ["p1", "p2"]);
    }

    #[test]
    fn keeps_unknown_mod_types() {
        let column = json!([{"data_change_record": [{
            "commit_timestamp": "2024-01-01T00:00:00Z", "record_sequence": "0",
            "server_transaction_id": "1", "table_name": "T", "mods": [], "mod_type": "UPSERT"}]}]);
        let records = decode_change_record_column(&column).expect("decodes");
        let [ChangeStreamRecord::DataChange(r)] = records.as_slice() else {
            panic!("one record expected");
        };
        assert_eq!(r.mod_type, ModKind::Unknown("UPSERT".into()));
    }

    #[test]
    fn malformed_records_name_the_field() {
        let cases = [
            (json!({"x": 1}), "ChangeRecord"),
            (
                json!([{"heartbeat_record": [{"timestamp": 5}]}]),
                "heartbeat_record.timestamp",
            ),
            (
                json!([{"data_change_record": [{"commit_timestamp": "2024-01-01T00:00:00Z"}]}]),
                "data_change_record.record_sequence",
            ),
            (
                json!([{"data_change_record": [{"commit_timestamp": "2024-01-01T00:00:00Z",
                "record_sequence": "0", "server_transaction_id": "1", "table_name": "T",
                "mod_type": "INSERT", "mods": [{"keys": "[1]"}]}]}]),
                "data_change_record.mods.keys",
            ),
            (
                json!([{"data_change_record": [{"commit_timestamp": "2024-01-01T00:00:00Z",
                "record_sequence": "0", "server_transaction_id": "1", "table_name": "T",
                "mod_type": "INSERT", "number_of_records_in_transaction": "many"}]}]),
                "data_change_record.number_of_records_in_transaction",
            ),
        ];
        for (column, field) in cases {
            let err = decode_change_record_column(&column).expect_err("malformed");
            assert_eq!(err.field, field, "{err}");
        }
    }
}
