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
///
/// Takes the value by value: the changed rows' JSON objects are moved into the records, not
/// copied (this is the reader's hottest path).
pub fn decode_change_record_column(
    column: Value,
) -> Result<Vec<ChangeStreamRecord>, RecordDecodeError> {
    let elements = array(Some(column), "ChangeRecord")?;
    // Usually one element with one record: size the vector for that, not for four records.
    let mut records = Vec::with_capacity(elements.len());
    for element in elements {
        let element = match element {
            Value::Object(element) => element,
            other => {
                return fail(
                    "ChangeRecord",
                    format!("expected a struct, found {}", kind(&other)),
                );
            }
        };
        let [data, heartbeats, children] = take_fields(
            element,
            [
                "data_change_record",
                "heartbeat_record",
                "child_partitions_record",
            ],
        );
        for data in structs(data, "data_change_record")? {
            // Beam skips inner structs whose key field is NULL; so do we.
            if data.get("commit_timestamp").is_some_and(|v| !v.is_null()) {
                records.push(ChangeStreamRecord::DataChange(data_change(data)?));
            }
        }
        for heartbeat in structs(heartbeats, "heartbeat_record")? {
            if let Some(ts) = heartbeat.get("timestamp").filter(|v| !v.is_null()) {
                records.push(ChangeStreamRecord::Heartbeat(timestamp(
                    ts,
                    "heartbeat_record.timestamp",
                )?));
            }
        }
        for children in structs(children, "child_partitions_record")? {
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

/// Takes the fields named in `names` out of `object` in one pass; absent ones are `None`.
fn take_fields<const N: usize>(object: Map<String, Value>, names: [&str; N]) -> [Option<Value>; N] {
    let mut fields = [const { None }; N];
    for (key, value) in object {
        if let Some(i) = names.iter().position(|name| *name == key) {
            fields[i] = Some(value);
        }
    }
    fields
}

/// An array; NULL or absent is empty.
fn array(value: Option<Value>, field: &str) -> Result<Vec<Value>, RecordDecodeError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => fail(field, format!("expected an array, found {}", kind(&other))),
    }
}

/// An array of structs (NULL elements skipped); anything else is an error.
fn structs(
    value: Option<Value>,
    field: &str,
) -> Result<Vec<Map<String, Value>>, RecordDecodeError> {
    let items = array(value, field)?;
    let mut objects = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::Null => {}
            Value::Object(object) => objects.push(object),
            other => return fail(field, format!("expected a struct, found {}", kind(&other))),
        }
    }
    Ok(objects)
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

fn required_string(value: Option<Value>, path: &str) -> Result<String, RecordDecodeError> {
    match value {
        Some(Value::String(text)) => Ok(text),
        Some(other) => fail(path, format!("expected a string, found {}", kind(&other))),
        None => fail(path, "missing"),
    }
}

fn optional_string(value: Option<Value>) -> String {
    match value {
        Some(Value::String(text)) => text,
        _ => String::new(),
    }
}

fn optional_bool(value: Option<&Value>) -> bool {
    value.and_then(Value::as_bool).unwrap_or(false)
}

/// INT64 arrives as a string through the JSON form; accept numbers too.
fn int64(value: Option<&Value>, path: &str) -> Result<i64, RecordDecodeError> {
    match value {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .map_or_else(|| fail(path, format!("{n} is not an INT64")), Ok),
        Some(Value::String(s)) => s
            .parse()
            .or_else(|_| fail(path, format!("{s:?} is not an INT64"))),
        Some(other) => fail(path, format!("expected an INT64, found {}", kind(other))),
    }
}

/// A count that must be there and positive: `number_of_records_in_transaction` is what tells
/// whether every record of a transaction arrived, so a record without it is refused rather
/// than let through unchecked.
fn record_count(value: Option<&Value>, path: &str) -> Result<i64, RecordDecodeError> {
    if matches!(value, None | Some(Value::Null)) {
        return fail(
            path,
            "missing or null: without it a transaction cannot be checked for completeness",
        );
    }
    match int64(value, path)? {
        count if count >= 1 => Ok(count),
        count => fail(path, format!("{count} is not a positive record count")),
    }
}

/// A JSON column: parsed already, or JSON text; NULL means an empty object.
fn json_object(value: Option<Value>, field: &str) -> Result<Map<String, Value>, RecordDecodeError> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map),
        Some(Value::String(text)) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(other) => fail(
                field,
                format!("expected a JSON object, found {}", kind(&other)),
            ),
            Err(e) => fail(field, format!("invalid JSON: {e}")),
        },
        Some(other) => fail(
            field,
            format!("expected a JSON object, found {}", kind(&other)),
        ),
    }
}

fn data_change(object: Map<String, Value>) -> Result<DataChangeRecord, RecordDecodeError> {
    let [
        commit_timestamp,
        record_sequence,
        server_transaction_id,
        is_last_record_in_transaction_in_partition,
        table_name,
        column_types,
        mods,
        mod_type,
        value_capture_type,
        number_of_records_in_transaction,
        number_of_partitions_in_transaction,
        transaction_tag,
        is_system_transaction,
    ] = take_fields(
        object,
        [
            "commit_timestamp",
            "record_sequence",
            "server_transaction_id",
            "is_last_record_in_transaction_in_partition",
            "table_name",
            "column_types",
            "mods",
            "mod_type",
            "value_capture_type",
            "number_of_records_in_transaction",
            "number_of_partitions_in_transaction",
            "transaction_tag",
            "is_system_transaction",
        ],
    );
    // Checked in the order of the fields' declaration, so the first problem is named.
    let commit_timestamp = timestamp(
        commit_timestamp.as_ref().unwrap_or(&Value::Null),
        "data_change_record.commit_timestamp",
    )?;
    let columns = structs(column_types, "column_types")?;
    let mut column_types = Vec::with_capacity(columns.len());
    for column in columns {
        let [name, type_json, is_primary_key, ordinal_position] = take_fields(
            column,
            ["name", "type", "is_primary_key", "ordinal_position"],
        );
        let type_json = match type_json {
            Some(Value::String(text)) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
            Some(other) => other,
            None => Value::Null,
        };
        column_types.push(ColumnType {
            name: required_string(name, "data_change_record.column_types.name")?,
            type_json,
            is_primary_key: optional_bool(is_primary_key.as_ref()),
            ordinal_position: int64(
                ordinal_position.as_ref(),
                "data_change_record.column_types.ordinal_position",
            )?,
        });
    }
    let changed = structs(mods, "mods")?;
    let mut mods = Vec::with_capacity(changed.len());
    for m in changed {
        let [keys, new_values, old_values] = take_fields(m, ["keys", "new_values", "old_values"]);
        mods.push(ModValues {
            keys: json_object(keys, "data_change_record.mods.keys")?,
            new_values: json_object(new_values, "data_change_record.mods.new_values")?,
            old_values: json_object(old_values, "data_change_record.mods.old_values")?,
        });
    }
    Ok(DataChangeRecord {
        commit_timestamp,
        record_sequence: required_string(record_sequence, "data_change_record.record_sequence")?,
        server_transaction_id: required_string(
            server_transaction_id,
            "data_change_record.server_transaction_id",
        )?,
        is_last_record_in_transaction_in_partition: optional_bool(
            is_last_record_in_transaction_in_partition.as_ref(),
        ),
        table_name: required_string(table_name, "data_change_record.table_name")?,
        column_types,
        mods,
        mod_type: ModKind::parse(&required_string(mod_type, "data_change_record.mod_type")?),
        value_capture_type: optional_string(value_capture_type),
        number_of_records_in_transaction: record_count(
            number_of_records_in_transaction.as_ref(),
            "data_change_record.number_of_records_in_transaction",
        )?,
        number_of_partitions_in_transaction: int64(
            number_of_partitions_in_transaction.as_ref(),
            "data_change_record.number_of_partitions_in_transaction",
        )?,
        transaction_tag: optional_string(transaction_tag),
        is_system_transaction: optional_bool(is_system_transaction.as_ref()),
    })
}

fn child_partitions(
    object: Map<String, Value>,
) -> Result<ChildPartitionsRecord, RecordDecodeError> {
    let [start_timestamp, record_sequence, listed] = take_fields(
        object,
        ["start_timestamp", "record_sequence", "child_partitions"],
    );
    let start_timestamp = timestamp(
        start_timestamp.as_ref().unwrap_or(&Value::Null),
        "child_partitions_record.start_timestamp",
    )?;
    let listed = structs(listed, "child_partitions")?;
    let mut children = Vec::with_capacity(listed.len());
    for child in listed {
        let [token, parents] = take_fields(child, ["token", "parent_partition_tokens"]);
        let parents = array(
            parents,
            "child_partitions_record.child_partitions.parent_partition_tokens",
        )?;
        children.push(ChildPartition {
            token: required_string(token, "child_partitions_record.child_partitions.token")?,
            parent_partition_tokens: parents
                .into_iter()
                .filter_map(|p| match p {
                    Value::String(token) => Some(token),
                    _ => None,
                })
                .collect(),
        });
    }
    Ok(ChildPartitionsRecord {
        start_timestamp,
        record_sequence: optional_string(record_sequence),
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
        let records = decode_change_record_column(column).expect("decodes");
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
        let records = decode_change_record_column(column).expect("decodes");
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
            "server_transaction_id": "1", "table_name": "T", "mods": [], "mod_type": "UPSERT",
            "number_of_records_in_transaction": "1"}]}]);
        let records = decode_change_record_column(column).expect("decodes");
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
        let cases = cases.into_iter().chain(
            // Without a positive record count the whole-transaction check cannot be made.
            [None, Some(json!(null)), Some(json!("0")), Some(json!(-2))]
                .into_iter()
                .map(|count| {
                    let mut record = json!({"commit_timestamp": "2024-01-01T00:00:00Z",
                        "record_sequence": "0", "server_transaction_id": "1", "table_name": "T",
                        "mod_type": "INSERT", "mods": []});
                    if let (Some(count), Some(object)) = (count, record.as_object_mut()) {
                        object.insert("number_of_records_in_transaction".into(), count);
                    }
                    (
                        json!([{ "data_change_record": [record] }]),
                        "data_change_record.number_of_records_in_transaction",
                    )
                }),
        );
        for (column, field) in cases {
            let err = decode_change_record_column(column).expect_err("malformed");
            assert_eq!(err.field, field, "{err}");
        }
    }
}
