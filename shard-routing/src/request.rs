//! What a router routes: one decoded change of one row.

use revrepl_record::{ChangeRecord, ModType, ShardId, Timestamp};
use serde_json::{Map, Value};

use crate::error::RoutingError;

/// One change of one row, with its values decoded (Spanner's change-stream JSON encoding:
/// INT64 and NUMERIC as strings, BYTES as base64, TIMESTAMP as RFC 3339 text).
#[derive(Debug, Clone, PartialEq)]
pub struct RouteRequest {
    /// The Spanner table.
    pub table: String,
    /// The primary-key columns.
    pub keys: Map<String, Value>,
    /// The new values: the whole row for `NEW_ROW` capture, empty for deletes.
    pub new_values: Map<String, Value>,
    /// The old values: present with `NEW_ROW_AND_OLD_VALUES` (for deletes, the whole row),
    /// otherwise empty.
    pub old_values: Map<String, Value>,
    /// Insert, update or delete.
    pub mod_type: ModType,
    /// When the change committed.
    pub commit_timestamp: Timestamp,
}

impl RouteRequest {
    /// Decodes the three JSON documents of a window-file line; an error names the field.
    pub fn from_record(record: &ChangeRecord) -> Result<Self, RoutingError> {
        let the_mod = record.the_mod();
        let object =
            |field: &'static str, text: &str| -> Result<Map<String, Value>, RoutingError> {
                let problem = |reason: String| RoutingError::RecordField {
                    table: record.table_name.clone(),
                    field,
                    reason,
                };
                match serde_json::from_str::<Value>(text) {
                    Ok(Value::Object(map)) => Ok(map),
                    Ok(other) => Err(problem(format!("found {}", json_kind(&other)))),
                    Err(error) => Err(problem(error.to_string())),
                }
            };
        Ok(Self {
            table: record.table_name.clone(),
            keys: object("keysJson", &the_mod.keys_json)?,
            new_values: object("newValuesJson", &the_mod.new_values_json)?,
            old_values: object("oldValuesJson", &the_mod.old_values_json)?,
            mod_type: record.mod_type,
            commit_timestamp: record.commit_timestamp,
        })
    }

    /// The value of `column`: from the keys, else the new values, else the old values.
    pub fn column(&self, column: &str) -> Option<&Value> {
        self.keys
            .get(column)
            .or_else(|| self.new_values.get(column))
            .or_else(|| self.old_values.get(column))
    }

    /// Whether any of keys, new values or old values has `column` (even as NULL).
    pub fn has_column(&self, column: &str) -> bool {
        self.column(column).is_some()
    }

    /// The row as a plugin sees it: old values, overridden by new values, overridden by keys.
    pub fn row(&self) -> Map<String, Value> {
        let mut row = self.old_values.clone();
        row.extend(self.new_values.clone());
        row.extend(self.keys.clone());
        row
    }

    /// The key as JSON text, for messages: `{"SingerId":"1"}`.
    pub fn key_text(&self) -> String {
        Value::Object(self.keys.clone()).to_string()
    }

    /// The logical shard id held in `column`: a string as it is (INT64 and NUMERIC values
    /// arrive as strings), a number or boolean in its JSON spelling. A missing or NULL column,
    /// an array, an object or an invalid id is an error naming the table, the key and the
    /// column.
    pub fn shard_id_in(&self, column: &str) -> Result<ShardId, RoutingError> {
        let value = self
            .column(column)
            .ok_or_else(|| RoutingError::MissingShardColumn {
                table: self.table.clone(),
                key: self.key_text(),
                column: column.to_string(),
                mod_type: self.mod_type,
            })?;
        let unsupported = |kind| RoutingError::UnsupportedShardValue {
            table: self.table.clone(),
            key: self.key_text(),
            column: column.to_string(),
            kind,
        };
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            Value::Bool(flag) => flag.to_string(),
            Value::Null => {
                return Err(RoutingError::NullShardColumn {
                    table: self.table.clone(),
                    key: self.key_text(),
                    column: column.to_string(),
                });
            }
            Value::Array(_) => return Err(unsupported("an array")),
            Value::Object(_) => return Err(unsupported("an object")),
        };
        self.shard_id(text)
    }

    /// Validates `text` as the logical shard id of this record.
    pub fn shard_id(&self, text: String) -> Result<ShardId, RoutingError> {
        ShardId::new(text).map_err(|source| RoutingError::InvalidShardId {
            table: self.table.clone(),
            key: self.key_text(),
            source,
        })
    }
}

impl TryFrom<&ChangeRecord> for RouteRequest {
    type Error = RoutingError;

    fn try_from(record: &ChangeRecord) -> Result<Self, RoutingError> {
        Self::from_record(record)
    }
}

pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use revrepl_record::Classify;
    use serde_json::json;

    fn record(keys: &str, new_values: &str, old_values: &str) -> ChangeRecord {
        let line = json!({
            "commitTimestamp": {"seconds": 1_719_247_984, "nanos": 109_263_000},
            "serverTransactionId": "tx", "recordSequence": "00000000", "tableName": "Singers",
            "mods": [{"keysJson": keys, "newValuesJson": new_values, "oldValuesJson": old_values}],
            "modType": "UPDATE", "numberOfRecordsInTransaction": 1, "shard": "",
        });
        serde_json::from_value(line).expect("a valid line")
    }

    fn request(keys: Value, new_values: Value, old_values: Value) -> RouteRequest {
        let object = |value: Value| match value {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        RouteRequest {
            table: "Singers".to_string(),
            keys: object(keys),
            new_values: object(new_values),
            old_values: object(old_values),
            mod_type: ModType::Update,
            commit_timestamp: Timestamp::EPOCH,
        }
    }

    #[test]
    fn decodes_a_window_file_line() {
        let r = record(
            r#"{"SingerId":"1"}"#,
            r#"{"Shard":"ls1"}"#,
            r#"{"Shard":"ls0"}"#,
        );
        let decoded = RouteRequest::try_from(&r).expect("valid JSON objects");
        assert_eq!(decoded.table, "Singers");
        assert_eq!(decoded.keys.get("SingerId"), Some(&json!("1")));
        assert_eq!(decoded.column("Shard"), Some(&json!("ls1")));
        assert_eq!(decoded.mod_type, ModType::Update);
        assert_eq!(decoded.commit_timestamp, r.commit_timestamp);
        assert_eq!(decoded.key_text(), r#"{"SingerId":"1"}"#);
    }

    #[test]
    fn decoding_errors_name_the_field() {
        let error =
            RouteRequest::from_record(&record("{}", "{not json", "{}")).expect_err("bad JSON");
        assert!(
            error
                .to_string()
                .starts_with("record of table \"Singers\": newValuesJson is not a JSON object: key must be a string"),
            "{error}"
        );
        assert_eq!(error.class(), revrepl_record::ErrorClass::Definite);
        let error =
            RouteRequest::from_record(&record("[1]", "{}", "{}")).expect_err("not an object");
        assert_eq!(
            error.to_string(),
            "record of table \"Singers\": keysJson is not a JSON object: found an array"
        );
        let error =
            RouteRequest::from_record(&record("{}", "{}", "\"x\"")).expect_err("not an object");
        assert!(error.to_string().contains("oldValuesJson"));
    }

    #[test]
    fn columns_come_from_keys_then_new_then_old_values() {
        let r = request(
            json!({"id": "1"}),
            json!({"a": "new", "id": "ignored"}),
            json!({"a": "old", "b": "old"}),
        );
        assert_eq!(r.column("id"), Some(&json!("1")));
        assert_eq!(r.column("a"), Some(&json!("new")));
        assert_eq!(r.column("b"), Some(&json!("old")));
        assert_eq!(r.column("c"), None);
        assert_eq!(
            Value::Object(r.row()),
            json!({"id": "1", "a": "new", "b": "old"})
        );
    }

    #[test]
    fn shard_values_are_stringified_sensibly() {
        let r = request(
            json!({"id": "1"}),
            json!({"s": "ls1", "int64": "42", "n": 7, "f": 2.5, "b": true, "z": null,
                   "a": ["x"], "o": {"k": 1}, "bad": "a/b"}),
            json!({}),
        );
        let id = |column: &str| r.shard_id_in(column).map(|id| id.to_string());
        assert_eq!(id("s").ok().as_deref(), Some("ls1"));
        assert_eq!(id("int64").ok().as_deref(), Some("42"));
        assert_eq!(id("n").ok().as_deref(), Some("7"));
        assert_eq!(id("f").ok().as_deref(), Some("2.5"));
        assert_eq!(id("b").ok().as_deref(), Some("true"));
        let message = |column: &str| id(column).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            message("z"),
            r#"record of table "Singers" with key {"id":"1"}: shard column "z" is NULL"#
        );
        assert_eq!(
            message("missing"),
            r#"record of table "Singers" with key {"id":"1"} has no value for shard column "missing" (UPDATE; the change stream must capture NEW_ROW or NEW_ROW_AND_OLD_VALUES)"#
        );
        assert!(message("a").ends_with(r#"shard column "a" holds an array, not a single value"#));
        assert!(message("o").contains("holds an object"));
        assert_eq!(
            message("bad"),
            r#"record of table "Singers" with key {"id":"1"} routes to an invalid logical shard id: shard id "a/b" contains '/'"#
        );
    }
}
