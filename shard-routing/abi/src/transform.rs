//! Transformation plugins: reshape, split or drop a Spanner change before the writer applies
//! it (docs/transformations.md).
//!
//! A transformation plugin implements [`TransformationPlugin`] and calls
//! [`export_transformer!`](crate::export_transformer) once. The same library may also be a
//! shard router ([`export_router!`](crate::export_router)): the two have separate entry
//! symbols and separate handles, so a type may implement both traits or each its own.
//!
//! ```
//! use revrepl_shard_router_abi::{
//!     export_transformer, PluginError, SourceRow, TransformRequest, Transformed,
//!     TransformationPlugin,
//! };
//!
//! /// Writes `Singers` to `singer` with the first and last names joined.
//! pub struct JoinNames;
//!
//! impl TransformationPlugin for JoinNames {
//!     fn init(_params: &str) -> Result<Self, PluginError> {
//!         Ok(Self)
//!     }
//!
//!     fn transform(&self, request: &TransformRequest) -> Result<Transformed, PluginError> {
//!         if request.table != "Singers" {
//!             return Ok(Transformed::Keep);
//!         }
//!         if request.is_delete() {
//!             let row = SourceRow::delete("singer").set("id", request.value("SingerId")?.clone());
//!             return Ok(Transformed::rows([row]));
//!         }
//!         let name = format!("{} {}", request.text("FirstName")?, request.text("LastName")?);
//!         let row = SourceRow::upsert("singer")
//!             .set("id", request.value("SingerId")?.clone())
//!             .set("full_name", name);
//!         Ok(Transformed::rows([row]))
//!     }
//! }
//!
//! export_transformer!(JoinNames);
//! ```
//!
//! # The ABI, version 1
//!
//! The library exports [`TRANSFORMER_ENTRY_SYMBOL`] (`revrepl_transformer_v1`), an
//! [`TransformerEntryFn`] returning a static [`TransformerVTable`] whose first field is its
//! ABI version, exactly as for routers. Calls, statuses and buffers follow the router's rules
//! ([`STATUS_OK`](crate::STATUS_OK), [`STATUS_ERROR`](crate::STATUS_ERROR),
//! [`STATUS_PANIC`](crate::STATUS_PANIC), [`PluginBuffer`](crate::PluginBuffer)); the request
//! is a [`TransformRequest`] as JSON and the response a [`Transformed`] as JSON.

use std::ffi::c_void;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{FreeBufferFn, PluginError};

/// The name of the transformation entry symbol of ABI version [`crate::ABI_VERSION`].
pub const TRANSFORMER_ENTRY_SYMBOL: &str = "revrepl_transformer_v1";

/// The prefix of the transformation entry symbol of every ABI version:
/// `revrepl_transformer_v<N>`.
pub const TRANSFORMER_ENTRY_SYMBOL_PREFIX: &str = "revrepl_transformer_v";

/// `init(params, params_len, transformer_out, message_out) -> status`: builds the
/// transformer from the user's parameter string; on success writes its handle.
pub type TransformerInitFn = unsafe extern "C-unwind" fn(
    params: *const u8,
    params_len: usize,
    transformer_out: *mut *mut c_void,
    message_out: *mut crate::PluginBuffer,
) -> i32;

/// `transform(transformer, request, request_len, response_out) -> status`: transforms one
/// record; the request is a JSON [`TransformRequest`], the response a JSON [`Transformed`].
pub type TransformFn = unsafe extern "C-unwind" fn(
    transformer: *const c_void,
    request: *const u8,
    request_len: usize,
    response_out: *mut crate::PluginBuffer,
) -> i32;

/// `drop_transformer(transformer)`: releases the handle `init` returned.
pub type DropTransformerFn = unsafe extern "C-unwind" fn(transformer: *mut c_void);

/// The type of the transformation entry symbol.
pub type TransformerEntryFn = unsafe extern "C" fn() -> *const TransformerVTable;

/// The transformation function table, ABI version 1.
#[repr(C)]
#[derive(Debug)]
pub struct TransformerVTable {
    /// The ABI version the plugin was built for. Always the first field, in every version.
    pub abi_version: u32,
    /// Builds the transformer; called once, before any `transform`.
    pub init: TransformerInitFn,
    /// Transforms one record; may be called from several threads at once.
    pub transform: TransformFn,
    /// Releases a buffer returned by `init` or `transform`.
    pub free_buffer: FreeBufferFn,
    /// Releases the transformer.
    pub drop_transformer: DropTransformerFn,
}

/// One Spanner change record, as a transformation plugin receives it: the record of the
/// window file, its values in Spanner's change-stream JSON encoding (INT64 and NUMERIC as
/// strings, BYTES as base64, TIMESTAMP as RFC 3339 text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransformRequest {
    /// The Spanner table.
    pub table: String,
    /// The logical shard the record is applied to.
    pub logical_shard_id: String,
    /// `INSERT`, `UPDATE` or `DELETE`.
    pub mod_type: String,
    /// The key columns.
    pub keys: Map<String, Value>,
    /// The new values (an update carries the changed columns; a delete, usually none).
    #[serde(default)]
    pub new_values: Map<String, Value>,
    /// The old values, when the change stream captures them.
    #[serde(default)]
    pub old_values: Map<String, Value>,
    /// The commit timestamp, RFC 3339.
    pub commit_timestamp: String,
    /// Spanner's transaction id.
    pub server_transaction_id: String,
    /// The record's sequence within the transaction.
    #[serde(default)]
    pub record_sequence: String,
}

impl TransformRequest {
    /// Whether the record deletes its row.
    pub fn is_delete(&self) -> bool {
        self.mod_type == "DELETE"
    }

    /// Whether the record inserts its row.
    pub fn is_insert(&self) -> bool {
        self.mod_type == "INSERT"
    }

    /// The value of `column`: a key column, else a new value, else an old value; `None` if
    /// the record has no such column.
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.keys
            .get(column)
            .or_else(|| self.new_values.get(column))
            .or_else(|| self.old_values.get(column))
    }

    /// As [`TransformRequest::get`], or an error naming the table and the column.
    pub fn value(&self, column: &str) -> Result<&Value, PluginError> {
        self.get(column).ok_or_else(|| {
            PluginError::new(format!(
                "the record of table {:?} has no column {column:?}",
                self.table
            ))
        })
    }

    /// The value of `column` as text (see [`crate::RouteRequest::text`]).
    pub fn text(&self, column: &str) -> Result<String, PluginError> {
        crate::text_of(&self.table, column, self.value(column)?)
    }

    /// The value of `column` as a 64-bit integer (see [`crate::RouteRequest::int64`]).
    pub fn int64(&self, column: &str) -> Result<i64, PluginError> {
        crate::int64_of(&self.table, column, self.value(column)?)
    }
}

/// What the writer does with a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Transformed {
    /// Apply the record as it is (through the session file's mapping, as without a plugin).
    Keep,
    /// Apply nothing for the record.
    Drop,
    /// Apply these source row changes instead, in this order (none is allowed).
    Write {
        /// The row changes.
        rows: Vec<SourceRow>,
    },
}

impl Transformed {
    /// [`Transformed::Write`] of `rows`.
    pub fn rows(rows: impl IntoIterator<Item = SourceRow>) -> Self {
        Self::Write {
            rows: rows.into_iter().collect(),
        }
    }
}

/// Whether a source row change writes or deletes its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Insert the row, or update it if its primary key exists.
    Upsert,
    /// Delete the row by its primary key.
    Delete,
}

/// One change of a row of a source (MySQL) table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRow {
    /// The source table.
    pub table: String,
    /// Upsert or delete.
    pub operation: Operation,
    /// Source column names → values, in the change-stream JSON encoding; the writer converts
    /// them by the column's type. An upsert writes the columns given (the primary key
    /// included); a delete needs the primary key's columns and ignores the others.
    pub values: Map<String, Value>,
}

impl SourceRow {
    /// An upsert of a row of `table`, without values yet.
    pub fn upsert(table: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            operation: Operation::Upsert,
            values: Map::new(),
        }
    }

    /// A delete of a row of `table`, without its key yet.
    pub fn delete(table: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            operation: Operation::Delete,
            values: Map::new(),
        }
    }

    /// Sets `column` to `value`.
    pub fn set(mut self, column: impl Into<String>, value: impl Into<Value>) -> Self {
        self.values.insert(column.into(), value.into());
        self
    }
}

/// What a transformation plugin author implements: a transformer built once from a
/// parameter string, then asked about each record the writer applies.
///
/// It must be deterministic: the writer may transform a record more than once (a batch
/// retried, `reprocess`), and every time must give the same answer.
pub trait TransformationPlugin: Send + Sync + Sized + 'static {
    /// Builds the transformer from the user's parameter string (empty if none was
    /// configured). Called once, when the writer loads the plugin.
    fn init(params: &str) -> Result<Self, PluginError>;

    /// What to apply for `request`'s record.
    fn transform(&self, request: &TransformRequest) -> Result<Transformed, PluginError>;
}

/// Exports `$transformer` (a type implementing [`TransformationPlugin`]) as this library's
/// transformation: generates the [`TRANSFORMER_ENTRY_SYMBOL`] function. Use it once per
/// plugin crate, whose `crate-type` must include `"cdylib"`; it may sit next to
/// [`export_router!`](crate::export_router).
#[macro_export]
macro_rules! export_transformer {
    ($transformer:ty) => {
        /// The revrepl transformation entry point, ABI version 1.
        #[unsafe(no_mangle)]
        pub extern "C" fn revrepl_transformer_v1() -> *const $crate::TransformerVTable {
            $crate::export::transformer_vtable::<$transformer>()
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entry_symbol_names_the_abi_version() {
        assert_eq!(
            TRANSFORMER_ENTRY_SYMBOL,
            format!("{TRANSFORMER_ENTRY_SYMBOL_PREFIX}{}", crate::ABI_VERSION)
        );
    }

    #[test]
    fn request_has_the_documented_json_shape() {
        let parsed: TransformRequest = serde_json::from_value(json!({
            "table": "Singers", "logicalShardId": "ls1", "modType": "UPDATE",
            "keys": {"SingerId": "7"}, "newValues": {"Name": "x"}, "oldValues": {},
            "commitTimestamp": "2024-01-01T00:00:00Z", "serverTransactionId": "tx",
            "recordSequence": "00000001"
        }))
        .expect("documented request shape");
        assert_eq!(parsed.int64("SingerId"), Ok(7));
        assert_eq!(parsed.text("Name"), Ok("x".to_string()));
        assert!(!parsed.is_delete());
        assert!(parsed.value("Missing").is_err());
    }

    #[test]
    fn responses_have_the_documented_json_shapes() {
        let shape = |t: &Transformed| serde_json::to_value(t).expect("serializable");
        assert_eq!(shape(&Transformed::Keep), json!({"action": "keep"}));
        assert_eq!(shape(&Transformed::Drop), json!({"action": "drop"}));
        let rows = Transformed::rows([
            SourceRow::upsert("a").set("id", "1").set("n", 2),
            SourceRow::delete("b").set("id", "1"),
        ]);
        assert_eq!(
            shape(&rows),
            json!({"action": "write", "rows": [
                {"table": "a", "operation": "upsert", "values": {"id": "1", "n": 2}},
                {"table": "b", "operation": "delete", "values": {"id": "1"}},
            ]})
        );
        let back: Transformed = serde_json::from_value(shape(&rows)).expect("round trip");
        assert_eq!(back, rows);
    }
}
