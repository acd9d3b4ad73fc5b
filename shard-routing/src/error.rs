//! The one error type of shard routing: configuration files, secrets, plugins and records.

use std::io;

use revrepl_record::{Classify, ErrorClass, ShardId, ShardIdError};

/// Everything that can go wrong while loading routing configuration or routing a record.
///
/// Messages name the file, entry and field, or the table, key and column, so an operator can
/// find the cause without a debugger. They never contain a password. Keys appear as the JSON
/// text of the record's `keysJson`.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    /// A shards or session file could not be read.
    #[error("cannot read {file} {path:?}: {source}")]
    ReadFile {
        /// `shards file` or `session file`.
        file: &'static str,
        /// The path given.
        path: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A shards or session file is not valid JSON, or not of the expected shape.
    #[error("{file} {path:?} is not valid: {reason}")]
    FileSyntax {
        /// `shards file` or `session file`.
        file: &'static str,
        /// Where the file came from.
        path: String,
        /// What the parser said (line and column included).
        reason: String,
    },
    /// The shards file as a whole is unusable (empty, no `shardConfigs`, wrong top level).
    #[error("shards file {path:?}: {problem}")]
    ShardsFile {
        /// Where the file came from.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// One field of one entry of the shards file is invalid.
    #[error("shards file {path:?}, entry {entry}, field {field:?}: {problem}")]
    ShardsFileEntry {
        /// Where the file came from.
        path: String,
        /// The entry: its position, and its logical shard id when it has a readable one.
        entry: String,
        /// The field.
        field: &'static str,
        /// What is wrong (never the value of a password field).
        problem: String,
    },
    /// Two entries of the shards file have the same logical shard id.
    #[error(
        "shards file {path:?}: logical shard id {shard:?} appears in entries {first} and {second}"
    )]
    DuplicateShard {
        /// Where the file came from.
        path: String,
        /// The repeated id.
        shard: String,
        /// Position of the first entry.
        first: usize,
        /// Position of the second entry.
        second: usize,
    },
    /// The session file breaks the Spanner Migration Tool session format.
    #[error("session file {path:?}, {location}: {problem}")]
    SessionFile {
        /// Where the file came from.
        path: String,
        /// Where in the file, e.g. `SpSchema["t1"].ShardIdColumn`.
        location: String,
        /// What is wrong.
        problem: String,
    },
    /// The password of a shard could not be obtained.
    #[error("cannot get the password of shard {:?} from {from}: {reason}", shard.as_str())]
    Password {
        /// The logical shard.
        shard: ShardId,
        /// Where it should have come from, e.g. `environment variable "DB_PASSWORD"`.
        from: String,
        /// Whether trying again may help (Secret Manager unavailable) or not.
        class: ErrorClass,
        /// What went wrong.
        reason: String,
    },
    /// A secret store could not produce a secret (returned by the stores of this crate).
    #[error("{reason}")]
    Secret {
        /// Whether trying again may help.
        class: ErrorClass,
        /// What went wrong, naming the secret.
        reason: String,
    },
    /// Single-shard routing was configured with a shards file of several shards.
    #[error(
        "single-shard routing needs exactly one shard in the shards file, found {count}; with \
         several shards, configure a session file with shard-id columns or a router plugin"
    )]
    SingleShard {
        /// Number of shards in the file.
        count: usize,
    },
    /// A field of a change record is not a JSON object.
    #[error("record of table {table:?}: {field} is not a JSON object: {reason}")]
    RecordField {
        /// The record's table.
        table: String,
        /// `keysJson`, `newValuesJson` or `oldValuesJson`.
        field: &'static str,
        /// What the parser said.
        reason: String,
    },
    /// The table is in the session file but has no shard column.
    #[error(
        "record of table {table:?} with key {key}: the table has no ShardIdColumn in session file {session:?}"
    )]
    NoShardColumn {
        /// The record's table.
        table: String,
        /// The record's key.
        key: String,
        /// Where the session file came from.
        session: String,
    },
    /// The row does not contain the shard column.
    #[error(
        "record of table {table:?} with key {key} has no value for shard column {column:?} ({mod_type}; the change stream must capture NEW_ROW or NEW_ROW_AND_OLD_VALUES)"
    )]
    MissingShardColumn {
        /// The record's table.
        table: String,
        /// The record's key.
        key: String,
        /// The shard column.
        column: String,
        /// The record's mod type.
        mod_type: revrepl_record::ModType,
    },
    /// The shard column is NULL.
    #[error("record of table {table:?} with key {key}: shard column {column:?} is NULL")]
    NullShardColumn {
        /// The record's table.
        table: String,
        /// The record's key.
        key: String,
        /// The shard column.
        column: String,
    },
    /// The shard column holds an array or an object.
    #[error(
        "record of table {table:?} with key {key}: shard column {column:?} holds {kind}, not a single value"
    )]
    UnsupportedShardValue {
        /// The record's table.
        table: String,
        /// The record's key.
        key: String,
        /// The shard column.
        column: String,
        /// `an array` or `an object`.
        kind: &'static str,
    },
    /// The value found (or returned by the plugin) is not a valid logical shard id.
    #[error(
        "record of table {table:?} with key {key} routes to an invalid logical shard id: {source}"
    )]
    InvalidShardId {
        /// The record's table.
        table: String,
        /// The record's key.
        key: String,
        /// Why the value is not a shard id.
        source: ShardIdError,
    },
    /// The record routes to a shard that is not in the shards file.
    #[error(
        "record of table {table:?} with key {key} routes to logical shard {:?}, which is not in the shards file",
        shard.as_str()
    )]
    UnknownShard {
        /// The record's table.
        table: String,
        /// The record's key.
        key: String,
        /// The shard id found.
        shard: ShardId,
    },
    /// Reading a deleted row just before its delete failed.
    #[error(
        "reading the deleted row of table {table:?} with key {key} at {read_timestamp} failed: {source}"
    )]
    RowLookup {
        /// The record's table.
        table: String,
        /// The record's key.
        key: String,
        /// The read timestamp (RFC 3339).
        read_timestamp: String,
        /// The class of the underlying error.
        class: ErrorClass,
        /// The underlying error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The deleted row did not exist just before its delete.
    #[error(
        "record of table {table:?} with key {key} deletes a row that did not exist at {read_timestamp}, so its shard is unknown (capture old values with NEW_ROW_AND_OLD_VALUES to avoid the lookup)"
    )]
    DeletedRowNotFound {
        /// The record's table.
        table: String,
        /// The record's key.
        key: String,
        /// The read timestamp (RFC 3339).
        read_timestamp: String,
    },
    /// A delete needed a row lookup but none is configured.
    #[error(
        "record of table {table:?} with key {key} is a delete without old values, and no row lookup is configured to find its shard"
    )]
    NoRowLookup {
        /// The record's table.
        table: String,
        /// The record's key.
        key: String,
    },
    /// The plugin library could not be loaded.
    #[error("cannot load shard-router plugin {path:?}: {reason}")]
    PluginLoad {
        /// The plugin's path.
        path: String,
        /// What the loader said.
        reason: String,
    },
    /// The library is not a shard-router plugin of any known ABI version.
    #[error(
        "{path:?} is not a revrepl shard-router plugin: it exports no {symbol:?} symbol (plugins use revrepl-shard-router-abi's export_router! macro)"
    )]
    NotAPlugin {
        /// The plugin's path.
        path: String,
        /// The entry symbol looked for.
        symbol: &'static str,
    },
    /// The plugin was built for another ABI version.
    #[error(
        "shard-router plugin {path:?} was built for plugin ABI version {found}, but this revrepl loads version {expected}: rebuild the plugin against the revrepl-shard-router-abi crate of this revrepl release"
    )]
    PluginAbiMismatch {
        /// The plugin's path.
        path: String,
        /// The version the plugin declares.
        found: u32,
        /// The version this host implements.
        expected: u32,
    },
    /// The plugin's `init` refused its parameters.
    #[error("shard-router plugin {path:?} refused its parameters: {message}")]
    PluginInit {
        /// The plugin's path.
        path: String,
        /// The plugin's message.
        message: String,
    },
    /// The plugin refused to route a row.
    #[error(
        "shard-router plugin {path:?} could not route the record of table {table:?} with key {key}: {message}"
    )]
    PluginRoute {
        /// The plugin's path.
        path: String,
        /// The record's table.
        table: String,
        /// The record's key.
        key: String,
        /// The plugin's message.
        message: String,
    },
    /// The schema overrides (file, `table_overrides` or `column_overrides`) are unusable.
    #[error("{origin}: {problem}")]
    SchemaOverrides {
        /// The file, or the configuration key.
        origin: String,
        /// What is wrong.
        problem: String,
    },
    /// The plugin panicked.
    #[error("shard-router plugin {path:?} panicked {during}: {message}")]
    PluginPanicked {
        /// The plugin's path.
        path: String,
        /// `in init`, or which record it was routing.
        during: String,
        /// The panic message.
        message: String,
    },
    /// The plugin broke the ABI (bad status, bad JSON, null pointers).
    #[error("shard-router plugin {path:?} broke the plugin ABI {during}: {problem}")]
    PluginProtocol {
        /// The plugin's path.
        path: String,
        /// `in init`, or which record it was routing.
        during: String,
        /// What it did wrong.
        problem: String,
    },
}

impl RoutingError {
    /// Whether this is an error of the configuration files (shards file, session file,
    /// router plugin) rather than of a record or a service: such an error never goes away by
    /// itself, so a program that meets it at start exits with the configuration exit code and
    /// a supervisor does not restart it.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            Self::ReadFile { .. }
                | Self::FileSyntax { .. }
                | Self::ShardsFile { .. }
                | Self::ShardsFileEntry { .. }
                | Self::DuplicateShard { .. }
                | Self::SessionFile { .. }
                | Self::SchemaOverrides { .. }
                | Self::SingleShard { .. }
                | Self::PluginLoad { .. }
                | Self::NotAPlugin { .. }
                | Self::PluginAbiMismatch { .. }
                | Self::PluginInit { .. }
        )
    }

    /// What to change when [`RoutingError::is_configuration`] holds, e.g. `fix the session
    /// file (configuration key session_file) and start again`.
    pub fn fix(&self) -> &'static str {
        match self {
            Self::SessionFile { .. } => {
                "fix the session file at that JSON path (configuration key session_file), then start again"
            }
            Self::ReadFile { file, .. } | Self::FileSyntax { file, .. }
                if *file == "session file" =>
            {
                "fix the session file or the configuration key session_file, then start again"
            }
            Self::SchemaOverrides { .. } => {
                "fix schema_overrides_file, table_overrides or column_overrides, then start again"
            }
            Self::ReadFile { file, .. } | Self::FileSyntax { file, .. }
                if *file == "schema overrides file" =>
            {
                "fix the schema overrides file or the configuration key schema_overrides_file, then start again"
            }
            Self::ReadFile { .. }
            | Self::FileSyntax { .. }
            | Self::ShardsFile { .. }
            | Self::ShardsFileEntry { .. }
            | Self::DuplicateShard { .. } => {
                "fix the shards file or the configuration key shards_file, then start again"
            }
            Self::SingleShard { .. } => {
                "configure session_file or routing.plugin, or list a single shard, then start again"
            }
            Self::PluginLoad { .. }
            | Self::NotAPlugin { .. }
            | Self::PluginAbiMismatch { .. }
            | Self::PluginInit { .. } => {
                "fix routing.plugin or routing.plugin_params, then start again"
            }
            _ => "",
        }
    }
}

impl Classify for RoutingError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Password { class, .. }
            | Self::Secret { class, .. }
            | Self::RowLookup { class, .. } => *class,
            Self::RecordField { .. }
            | Self::MissingShardColumn { .. }
            | Self::NullShardColumn { .. }
            | Self::UnsupportedShardValue { .. }
            | Self::InvalidShardId { .. }
            | Self::UnknownShard { .. }
            | Self::DeletedRowNotFound { .. }
            | Self::PluginRoute { .. } => ErrorClass::Definite,
            Self::ReadFile { .. }
            | Self::FileSyntax { .. }
            | Self::ShardsFile { .. }
            | Self::ShardsFileEntry { .. }
            | Self::DuplicateShard { .. }
            | Self::SessionFile { .. }
            | Self::SchemaOverrides { .. }
            | Self::SingleShard { .. }
            | Self::NoShardColumn { .. }
            | Self::NoRowLookup { .. }
            | Self::PluginLoad { .. }
            | Self::NotAPlugin { .. }
            | Self::PluginAbiMismatch { .. }
            | Self::PluginInit { .. }
            | Self::PluginPanicked { .. }
            | Self::PluginProtocol { .. } => ErrorClass::Fatal,
        }
    }
}
