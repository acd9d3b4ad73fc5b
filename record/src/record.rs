//! One line of a window file: a single mod of a Spanner data-change record (DESIGN §4).
//!
//! The field names, their order and the value encoding are those of the reference reader's
//! `TrimmedShardedDataChangeRecord`, so files move freely between the reference and revrepl.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::timestamp::Timestamp;

/// The kind of change a record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ModType {
    /// A new row.
    Insert,
    /// A change to an existing row.
    Update,
    /// A removed row.
    Delete,
}

impl fmt::Display for ModType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Insert => "INSERT",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
        })
    }
}

/// The values of one changed row, each a JSON object encoded as a string, in Spanner's
/// change-stream value encoding (INT64 and NUMERIC as strings, BYTES as base64, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mod {
    /// Primary-key columns and values, e.g. `{"id":"1"}`.
    pub keys_json: String,
    /// Old values of the changed columns: `{}` unless the stream captures old values.
    #[serde(default = "empty_object", deserialize_with = "null_as_empty_object")]
    pub old_values_json: String,
    /// New values of the row: `{}` for deletes.
    #[serde(default = "empty_object", deserialize_with = "null_as_empty_object")]
    pub new_values_json: String,
}

fn empty_object() -> String {
    "{}".to_string()
}

/// Gson writes a Java `null` string as JSON `null` only when asked to; accept both forms.
fn null_as_empty_object<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_else(empty_object))
}

fn exactly_one_mod<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[Mod; 1], D::Error> {
    let mods = Vec::<Mod>::deserialize(d)?;
    let count = mods.len();
    <[Mod; 1]>::try_from(mods).map_err(|_| {
        serde::de::Error::custom(format!("mods must have exactly one element, found {count}"))
    })
}

/// One line of a window file: one mod of a data-change record, with its logical shard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeRecord {
    /// When the Spanner transaction committed.
    pub commit_timestamp: Timestamp,
    /// Spanner's id of the transaction, unique among transactions committed at one timestamp.
    pub server_transaction_id: String,
    /// The record's position in the partition's stream for this transaction, e.g. `00000000`.
    pub record_sequence: String,
    /// The Spanner table changed.
    pub table_name: String,
    /// Exactly one mod per line; the reference writes it as a one-element array.
    #[serde(deserialize_with = "exactly_one_mod")]
    pub mods: [Mod; 1],
    /// Insert, update or delete.
    pub mod_type: ModType,
    /// How many data-change records the whole transaction has, across all partitions.
    pub number_of_records_in_transaction: u64,
    /// The transaction tag; `txBy=` marks forward-migration writes. Gson omits null strings.
    #[serde(default)]
    pub transaction_tag: String,
    /// The logical shard the record belongs to (`skip` for unknown tables). Empty when a
    /// line has no `shard` field (some reference files); the writer then applies it to the
    /// shard whose folder holds the file, as the reference does.
    #[serde(default)]
    pub shard: String,
}

impl ChangeRecord {
    /// The record's only mod.
    pub fn the_mod(&self) -> &Mod {
        &self.mods[0]
    }

    /// Commit order: `(commit_timestamp, server_transaction_id, record_sequence)`.
    ///
    /// Record sequences compare as numbers when both are decimal (the reference pads them to
    /// eight digits, so this matches text order for its files), otherwise as text.
    pub fn commit_order(&self, other: &Self) -> Ordering {
        self.commit_timestamp
            .cmp(&other.commit_timestamp)
            .then_with(|| self.server_transaction_id.cmp(&other.server_transaction_id))
            .then_with(|| compare_sequences(&self.record_sequence, &other.record_sequence))
    }
}

/// Compares two record sequences: as numbers when both are decimal (the reference pads them
/// to eight digits, so this matches text order for its files), otherwise as text.
pub fn compare_sequences(a: &str, b: &str) -> Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// Sorts records into the order the writer applies them, keeping the file order of records
/// that share a commit position (mods of one data-change record). Works on files in any order,
/// such as the reference's.
pub fn sort_in_commit_order(records: &mut [ChangeRecord]) {
    records.sort_by(ChangeRecord::commit_order);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line of the reference (GCSToSourceDbWithoutReaderIT/events.txt), with Gson's
    /// `\u003d` escape for `=`.
    const REFERENCE_LINE: &str = r#"{"commitTimestamp":{"seconds":1719247984,"nanos":109263000},"serverTransactionId":"NzkxOTE5OTY4NTQzNjMzODY3Mg\u003d\u003d","recordSequence":"00000000","tableName":"Users","mods":[{"keysJson":"{\"id\":\"1\"}","oldValuesJson":"{}","newValuesJson":"{\"name\":\"FF\"}"}],"modType":"INSERT","numberOfRecordsInTransaction":1,"transactionTag":"","shard":"ls1"}"#;

    #[test]
    fn reads_a_reference_line() {
        let r: ChangeRecord = serde_json::from_str(REFERENCE_LINE).expect("reference line");
        assert_eq!(
            r.commit_timestamp,
            Timestamp::new(1_719_247_984, 109_263_000).expect("ts")
        );
        assert_eq!(r.server_transaction_id, "NzkxOTE5OTY4NTQzNjMzODY3Mg==");
        assert_eq!(r.the_mod().keys_json, r#"{"id":"1"}"#);
        assert_eq!(r.the_mod().new_values_json, r#"{"name":"FF"}"#);
        assert_eq!(r.mod_type, ModType::Insert);
        assert_eq!(r.shard, "ls1");
    }

    #[test]
    fn writes_the_reference_field_order() {
        let r: ChangeRecord = serde_json::from_str(REFERENCE_LINE).expect("reference line");
        let written = serde_json::to_string(&r).expect("serializable");
        // Identical to the reference except that `=` is not HTML-escaped (Gson's habit).
        assert_eq!(written, REFERENCE_LINE.replace(r"\u003d", "="));
    }

    #[test]
    fn tolerates_what_gson_omits_or_nulls() {
        let line = r#"{"commitTimestamp":{"seconds":5,"nanos":0},"serverTransactionId":"t","recordSequence":"00000001","tableName":"T","mods":[{"keysJson":"{\"id\":\"1\"}","oldValuesJson":null}],"modType":"DELETE","numberOfRecordsInTransaction":2,"shard":"s","isRetryRecord":false}"#;
        let r: ChangeRecord = serde_json::from_str(line).expect("lenient line");
        assert_eq!(r.the_mod().old_values_json, "{}");
        assert_eq!(r.the_mod().new_values_json, "{}");
        assert_eq!(r.transaction_tag, "");
        assert_eq!(r.mod_type, ModType::Delete);
    }

    #[test]
    fn commit_order_compares_sequences_numerically() {
        let mut a: ChangeRecord = serde_json::from_str(REFERENCE_LINE).expect("line");
        let mut b = a.clone();
        a.record_sequence = "9".into();
        b.record_sequence = "10".into();
        assert_eq!(a.commit_order(&b), Ordering::Less);
        b.server_transaction_id = "A".into();
        assert_eq!(a.commit_order(&b), Ordering::Greater);
    }
}
