//! Transformation plugins (docs/transformations.md, docs/decisions/0008): shared libraries that
//! turn a Spanner change record into source row changes, keep it, or drop it, before the
//! writer plans its statements.
//!
//! Invariants:
//! - loading is [`revrepl_shard_routing::plugin_host`]'s, as for routing plugins: the version
//!   is checked first, the library is never unloaded, `init` runs once, and every call is
//!   wrapped in `catch_unwind`, so a panic is an error, never a crash;
//! - the request is built from the record's own JSON texts (checked to be JSON, not parsed
//!   into maps), and the response is parsed into [`Transformed`]; anything else the plugin
//!   returns is a [`TransformationProblem::Protocol`] error;
//! - the plugin's row values are never put into SQL: the planner converts them by the target
//!   column's type and binds them (`crate::statement`).

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::ptr::NonNull;

use revrepl_record::{ChangeRecord, ShardId};
use revrepl_shard_router_abi::{
    ABI_VERSION, PluginBuffer, STATUS_ERROR, STATUS_OK, STATUS_PANIC, TRANSFORMER_ENTRY_SYMBOL,
    TransformerVTable,
};
use revrepl_shard_routing::plugin_host::{self, LoadFailure, take_buffer, text};

pub use revrepl_shard_router_abi::{Operation, SourceRow, Transformed};

use crate::convert::ConversionError;

/// Decides what the writer applies for each change record: the seam between the planner and
/// a transformation plugin (one implementation per real system: [`PluginTransformer`]).
pub trait RecordTransformer: Send + Sync + std::fmt::Debug {
    /// The transformation's name in errors and logs (the plugin's path).
    fn name(&self) -> &str;

    /// What to apply for `record` of `shard`.
    fn transform(
        &self,
        shard: &ShardId,
        record: &ChangeRecord,
    ) -> Result<Transformed, TransformationProblem>;
}

/// What went wrong with a transformation, for one record (the error around it names the
/// plugin, the shard, the table and the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransformationProblem {
    /// The plugin refused the record.
    #[error("refused the record: {0}")]
    Refused(String),
    /// The plugin panicked.
    #[error("panicked: {0}")]
    Panicked(String),
    /// The plugin broke the ABI: an invalid response, an unknown status.
    #[error("broke the plugin ABI: {0}")]
    Protocol(String),
    /// The record's JSON cannot be handed to the plugin.
    #[error("cannot be given the record: {0}")]
    Request(String),
    /// A row change names a table the shard's database does not have.
    #[error("wrote to table {table:?}, which does not exist in database {database:?}")]
    UnknownTable {
        /// The table the plugin named.
        table: String,
        /// The shard's database.
        database: String,
    },
    /// A row change names a column its table does not have.
    #[error("wrote column {column:?}, which table {table:?} does not have")]
    UnknownColumn {
        /// The table.
        table: String,
        /// The column the plugin named.
        column: String,
    },
    /// A row change names the same column twice (MySQL column names ignore case).
    #[error("wrote column {column:?} of table {table:?} twice")]
    DuplicateColumn {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// A row change writes a generated column.
    #[error("wrote column {column:?} of table {table:?}, which is a generated column")]
    GeneratedColumn {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// A row change lacks a primary-key column.
    #[error("gave no value for primary-key column {column:?} of table {table:?}")]
    MissingKey {
        /// The table.
        table: String,
        /// The key column.
        column: String,
    },
    /// A row change's table has no primary key.
    #[error("wrote to table {table:?}, which has no primary key to apply changes by")]
    NoPrimaryKey {
        /// The table.
        table: String,
    },
    /// A value does not fit its column (the value itself is never shown).
    #[error(
        "gave column {column} ({column_type}) of table {table} a value that does not fit: {error}"
    )]
    Conversion {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The column's type.
        column_type: String,
        /// Why it does not fit.
        error: ConversionError,
    },
}

impl TransformationProblem {
    /// Whether the problem comes from the record's content (the dead-letter policy may set
    /// its transaction aside): a refusal, a panic, a malformed record, a value that does not
    /// fit, a missing key value. A broken response or a table or column that does not exist is the plugin's or
    /// the schema's fault and stops the shard.
    pub fn is_record_fault(&self) -> bool {
        matches!(
            self,
            Self::Refused(_)
                | Self::Panicked(_)
                | Self::Request(_)
                | Self::Conversion { .. }
                | Self::MissingKey { .. }
        )
    }
}

/// What the transformation plugin did with records, per Spanner table: for the metrics, counted
/// for the plans of what was applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransformCounts {
    /// Sorted by table; a batch touches few tables.
    by_table: Vec<(String, TableCounts)>,
}

/// What the transformation plugin did with the records of one Spanner table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableCounts {
    /// Records replaced by the plugin's row changes.
    pub transformed: u64,
    /// Records the plugin kept as they are.
    pub kept: u64,
    /// Records the plugin dropped.
    pub dropped: u64,
}

impl TransformCounts {
    fn entry(&mut self, table: &str) -> &mut TableCounts {
        let at = match self
            .by_table
            .binary_search_by(|(name, _)| name.as_str().cmp(table))
        {
            Ok(at) => at,
            Err(at) => {
                self.by_table
                    .insert(at, (table.to_string(), TableCounts::default()));
                at
            }
        };
        &mut self.by_table[at].1
    }

    pub(crate) fn transformed(&mut self, table: &str) {
        self.entry(table).transformed += 1;
    }

    pub(crate) fn kept(&mut self, table: &str) {
        self.entry(table).kept += 1;
    }

    pub(crate) fn dropped(&mut self, table: &str) {
        self.entry(table).dropped += 1;
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: TransformCounts) {
        for (table, counts) in other.by_table {
            let mine = self.entry(&table);
            mine.transformed += counts.transformed;
            mine.kept += counts.kept;
            mine.dropped += counts.dropped;
        }
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.by_table.is_empty()
    }

    /// The counts per Spanner table.
    pub fn tables(&self) -> impl Iterator<Item = (&str, &TableCounts)> {
        self.by_table
            .iter()
            .map(|(table, counts)| (table.as_str(), counts))
    }
}

/// Why a transformation plugin cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransformationLoadError {
    /// The library could not be loaded.
    #[error("cannot load transformation plugin {path:?}: {reason}")]
    Load {
        /// The plugin's path.
        path: String,
        /// What the loader said.
        reason: String,
    },
    /// The library exports no transformation entry symbol of any version.
    #[error(
        "{path:?} is not a revrepl transformation plugin: it exports no {symbol:?} symbol (plugins use revrepl-shard-router-abi's export_transformer! macro)"
    )]
    NotAPlugin {
        /// The plugin's path.
        path: String,
        /// The entry symbol looked for.
        symbol: &'static str,
    },
    /// The library was built for another ABI version.
    #[error(
        "transformation plugin {path:?} was built for plugin ABI version {found}, but this revrepl loads version {expected}: rebuild the plugin against the revrepl-shard-router-abi crate of this revrepl release"
    )]
    AbiMismatch {
        /// The plugin's path.
        path: String,
        /// The version the plugin declares.
        found: u32,
        /// The version this host implements.
        expected: u32,
    },
    /// `init` refused, panicked or broke the ABI.
    #[error("transformation plugin {path:?} failed in init: {problem}")]
    Init {
        /// The plugin's path.
        path: String,
        /// What happened.
        problem: String,
    },
}

/// A transformation implemented by a shared library.
pub struct PluginTransformer {
    path: String,
    table: &'static TransformerVTable,
    handle: NonNull<c_void>,
}

// SAFETY: the ABI requires the transformer behind the handle to be `Send + Sync` (the ABI
// crate's `TransformationPlugin` has those bounds) and its functions to be callable from any
// thread; the function table is static data of a library that is never unloaded.
unsafe impl Send for PluginTransformer {}
// SAFETY: as for `Send`.
unsafe impl Sync for PluginTransformer {}

impl std::fmt::Debug for PluginTransformer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginTransformer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl PluginTransformer {
    /// Loads the plugin at `path`, checks its ABI version and calls its `init` with `params`
    /// once.
    pub fn load(path: &Path, params: &str) -> Result<Self, TransformationLoadError> {
        let shown = path.display().to_string();
        let loaded = plugin_host::load::<TransformerVTable>(path, params)
            .map_err(|failure| load_error(failure, &shown))?;
        Ok(Self {
            path: shown,
            table: loaded.table,
            handle: loaded.handle,
        })
    }

    /// Calls `transform` and returns the status and the bytes of the output buffer.
    fn call(&self, request: &[u8]) -> Result<(i32, Vec<u8>), TransformationProblem> {
        let mut output = PluginBuffer::EMPTY;
        let status = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: `handle` came from this table's `init` and lives until `drop`;
            // `request` is valid for its length; `output` is a valid place for one buffer.
            unsafe {
                (self.table.transform)(
                    self.handle.as_ptr(),
                    request.as_ptr(),
                    request.len(),
                    &mut output,
                )
            }
        }));
        // SAFETY: `output` is empty or was written by this table's `transform`.
        let bytes = unsafe { take_buffer(self.table, output) };
        status.map(|status| (status, bytes)).map_err(|_| {
            TransformationProblem::Panicked(
                "a panic escaped the plugin's transform function".to_string(),
            )
        })
    }
}

impl RecordTransformer for PluginTransformer {
    fn name(&self) -> &str {
        &self.path
    }

    fn transform(
        &self,
        shard: &ShardId,
        record: &ChangeRecord,
    ) -> Result<Transformed, TransformationProblem> {
        let request = request_json(shard, record)?;
        let (status, bytes) = self.call(request.as_bytes())?;
        match status {
            STATUS_OK => serde_json::from_slice(&bytes).map_err(|error| {
                TransformationProblem::Protocol(format!(
                    "its response is not a transformation ({{\"action\": \"keep\" | \"drop\" | \"write\", ...}}): {error}"
                ))
            }),
            STATUS_ERROR => Err(malformed_part(record)
                .unwrap_or_else(|| TransformationProblem::Refused(text(&bytes)))),
            STATUS_PANIC => Err(TransformationProblem::Panicked(text(&bytes))),
            other => Err(TransformationProblem::Protocol(format!(
                "unknown status {other}"
            ))),
        }
    }
}

impl Drop for PluginTransformer {
    fn drop(&mut self) {
        let result = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: `handle` came from this table's `init` and is not used after this.
            unsafe { (self.table.drop_transformer)(self.handle.as_ptr()) }
        }));
        if result.is_err() {
            tracing::warn!(plugin = %self.path, "a panic escaped the plugin's drop_transformer function");
        }
    }
}

/// The request of `record` as JSON text (a `TransformRequest`): the record's keys and values
/// are its own JSON texts, embedded after a scan that proves each is one balanced object (so
/// it cannot change the request around it), not parsed. Should the plugin find one malformed
/// inside, [`RecordTransformer::transform`] checks them fully to say which.
pub fn request_json(
    shard: &ShardId,
    record: &ChangeRecord,
) -> Result<String, TransformationProblem> {
    let the_mod = record.the_mod();
    let object = |what: &str, text: &str| -> Result<String, TransformationProblem> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok("{}".to_string());
        }
        if !one_balanced_object(trimmed.as_bytes()) {
            return Err(not_an_object(what));
        }
        Ok(trimmed.to_string())
    };
    let keys = object("keysJson", &the_mod.keys_json)?;
    let new_values = object("newValuesJson", &the_mod.new_values_json)?;
    let old_values = object("oldValuesJson", &the_mod.old_values_json)?;
    let quoted = |text: &str| serde_json::Value::from(text).to_string();
    let mut json = String::with_capacity(keys.len() + new_values.len() + old_values.len() + 256);
    json.push_str("{\"table\":");
    json.push_str(&quoted(&record.table_name));
    json.push_str(",\"logicalShardId\":");
    json.push_str(&quoted(shard.as_str()));
    json.push_str(",\"modType\":\"");
    json.push_str(&record.mod_type.to_string());
    json.push_str("\",\"keys\":");
    json.push_str(&keys);
    json.push_str(",\"newValues\":");
    json.push_str(&new_values);
    json.push_str(",\"oldValues\":");
    json.push_str(&old_values);
    json.push_str(",\"commitTimestamp\":");
    json.push_str(&quoted(&record.commit_timestamp.to_rfc3339()));
    json.push_str(",\"serverTransactionId\":");
    json.push_str(&quoted(&record.server_transaction_id));
    json.push_str(",\"recordSequence\":");
    json.push_str(&quoted(&record.record_sequence));
    json.push('}');
    Ok(json)
}

fn not_an_object(what: &str) -> TransformationProblem {
    TransformationProblem::Request(format!("its {what} is not a JSON object"))
}

/// Whether `text` is `{`, then anything in which brackets and braces outside strings balance,
/// then the `}` that closes the first `{`, and nothing after it. Strings are skipped with
/// their escapes, so no quote or bracket inside a string counts. This is what keeps an
/// embedded text from closing the request's object early; whether its tokens are valid JSON is
/// left to the parser.
fn one_balanced_object(text: &[u8]) -> bool {
    if text.first() != Some(&b'{') {
        return false;
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (at, &byte) in text.iter().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = match depth.checked_sub(1) {
                    Some(depth) => depth,
                    None => return false,
                };
                if depth == 0 {
                    return at == text.len() - 1 && byte == b'}';
                }
            }
            _ => {}
        }
    }
    false
}

/// Which of the record's JSON texts is not a JSON object, checked fully (after the plugin
/// found its request malformed).
fn malformed_part(record: &ChangeRecord) -> Option<TransformationProblem> {
    let the_mod = record.the_mod();
    [
        ("keysJson", &the_mod.keys_json),
        ("newValuesJson", &the_mod.new_values_json),
        ("oldValuesJson", &the_mod.old_values_json),
    ]
    .into_iter()
    .find(|(_, text)| {
        let trimmed = text.trim();
        !trimmed.is_empty()
            && serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(trimmed).is_err()
    })
    .map(|(what, _)| not_an_object(what))
}

/// Words a loading failure as a transformation error.
fn load_error(failure: LoadFailure, path: &str) -> TransformationLoadError {
    let path = path.to_string();
    let init = |problem: String| TransformationLoadError::Init {
        path: path.clone(),
        problem,
    };
    match failure {
        LoadFailure::Open(reason) => TransformationLoadError::Load { path, reason },
        LoadFailure::NotAPlugin => TransformationLoadError::NotAPlugin {
            path,
            symbol: TRANSFORMER_ENTRY_SYMBOL,
        },
        LoadFailure::AbiMismatch { found } => TransformationLoadError::AbiMismatch {
            path,
            found,
            expected: ABI_VERSION,
        },
        LoadFailure::BrokenEntry(problem) => {
            init(format!("broke the plugin ABI at load: {problem}"))
        }
        LoadFailure::InitRefused(message) => init(format!("refused its parameters: {message}")),
        LoadFailure::InitPanicked(message) => init(format!("panicked: {message}")),
        LoadFailure::NoHandle => init("init succeeded but returned no handle".to_string()),
        LoadFailure::UnknownStatus(status) => init(format!("unknown status {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use revrepl_record::{Mod, ModType, Timestamp};

    fn record(keys: &str, new_values: &str) -> ChangeRecord {
        ChangeRecord {
            commit_timestamp: Timestamp::new(100, 5).expect("valid"),
            server_transaction_id: "tx\"1".into(),
            record_sequence: "00000002".into(),
            table_name: "Sing\"ers".into(),
            mods: [Mod {
                keys_json: keys.into(),
                old_values_json: String::new(),
                new_values_json: new_values.into(),
            }],
            mod_type: ModType::Update,
            number_of_records_in_transaction: 1,
            transaction_tag: String::new(),
            shard: "ls1".into(),
        }
    }

    #[test]
    fn the_request_is_the_documented_json() {
        let shard = ShardId::new("ls1").expect("valid");
        let json = request_json(&shard, &record(r#"{"id":"7"}"#, r#" {"n": 1.5} "#))
            .expect("valid record");
        let parsed: revrepl_shard_router_abi::TransformRequest =
            serde_json::from_str(&json).expect("a TransformRequest");
        assert_eq!(parsed.table, "Sing\"ers");
        assert_eq!(parsed.logical_shard_id, "ls1");
        assert_eq!(parsed.mod_type, "UPDATE");
        assert_eq!(parsed.int64("id"), Ok(7));
        assert_eq!(parsed.text("n"), Ok("1.5".to_string()));
        assert!(parsed.old_values.is_empty());
        assert_eq!(parsed.server_transaction_id, "tx\"1");
        assert_eq!(parsed.record_sequence, "00000002");
        assert!(parsed.commit_timestamp.starts_with("1970-01-01T00:01:40"));
    }

    #[test]
    fn a_record_whose_json_is_not_one_object_is_refused_before_the_plugin() {
        let shard = ShardId::new("ls1").expect("valid");
        for (keys, values) in [
            ("[1]", "{}"),
            (r#"{"id":"#, "{}"),
            ("{}", "nope"),
            // Texts that would close the request's object early and add fields.
            (r#"{"id":"1"},"table":"Other""#, "{}"),
            ("{}", r#"{"a":1}}"#),
            ("{}", r#"{"a":[1}"#),
        ] {
            let problem = request_json(&shard, &record(keys, values)).expect_err(keys);
            assert!(
                matches!(problem, TransformationProblem::Request(_)),
                "{problem}"
            );
        }
    }

    #[test]
    fn balanced_objects_with_brackets_and_quotes_in_strings_pass_the_scan() {
        for text in [
            "{}",
            r#"{"a":"}"}"#,
            r#"{"a":"\"}","b":[{"c":"]"}]}"#,
            r#"{"a":"\\"}"#,
        ] {
            assert!(one_balanced_object(text.as_bytes()), "{text}");
        }
        for text in [r#"{"a":"}"#, r#"{"a":"\"}"#, "{}{}", "{} x", "x{}"] {
            assert!(!one_balanced_object(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn a_malformed_part_is_named_after_the_plugin_found_the_request_invalid() {
        // Balanced, so it reaches the plugin, but not JSON.
        let bad = record(r#"{"id":"7"}"#, r#"{"n": nope}"#);
        assert_eq!(
            malformed_part(&bad),
            Some(TransformationProblem::Request(
                "its newValuesJson is not a JSON object".to_string()
            ))
        );
        assert_eq!(malformed_part(&record(r#"{"id":"7"}"#, "{}")), None);
    }
}
