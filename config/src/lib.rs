//! revrepl's configuration (DESIGN §9): one TOML file for the launcher, the reader and the
//! writer, with every key also settable by environment variable and by flag.
//!
//! Precedence, lowest first: defaults, the file, `REVREPL_…` environment variables (sections
//! joined by `__`: `REVREPL_READER__WINDOW=1m`), then `--set key=value` flags
//! (`--set reader.window=1m`). Unknown keys are rejected, and every error names the key, where
//! its value came from, and what is wrong.
//!
//! Only variables that name a configuration key are read: `REVREPL_RUN_ID` (a top-level key)
//! or `REVREPL_<SECTION>__<KEY>` (a key of a section). Others, such as an unrelated
//! `REVREPL_BIN`, are ignored with a warning; a variable that names a real section but an
//! unknown key (`REVREPL_READER__WINDW`) is an error naming the variable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use revrepl_record::{Classify, ErrorClass, WindowDuration};
use serde::{Deserialize, Serialize};

/// The configuration file used when none is given: `revrepl.toml` in the current directory.
pub const DEFAULT_FILE: &str = "revrepl.toml";

/// Prefix of configuration environment variables.
pub const ENV_PREFIX: &str = "REVREPL_";

/// `REVREPL_…` variables that set up a process rather than the pipeline (the configuration
/// file's path, the log format, the metrics address); they are not configuration keys, so
/// [`Config::load`] does not read them. Named without the prefix, lower case.
pub const PROCESS_VARIABLES: [&str; 6] = [
    "config",
    "log_format",
    "metrics_addr",
    "keep_services",
    "reader_bin",
    "writer_bin",
];

/// Families of `REVREPL_…` variables that are not configuration keys either: passwords
/// (`REVREPL_SECRET_…`, read by the shards file's secret sources), the test services'
/// deadlines (`REVREPL_SERVICE_…`) and test switches (`REVREPL_TEST_…`).
pub const PROCESS_VARIABLE_PREFIXES: [&str; 3] = ["secret_", "service_", "test_"];

/// Whether `key` (a `REVREPL_…` variable without the prefix) is one of the
/// [`PROCESS_VARIABLES`] or [`PROCESS_VARIABLE_PREFIXES`].
pub fn is_process_variable(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    PROCESS_VARIABLES.contains(&key.as_str())
        || PROCESS_VARIABLE_PREFIXES
            .iter()
            .any(|prefix| key.starts_with(prefix))
}

/// What [`Config::load`] does with one `REVREPL_…` variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvVariable {
    /// It names a configuration key (`section.key` or a top-level key), which it sets.
    Key(String),
    /// It sets up a process ([`is_process_variable`]); not configuration.
    Process,
    /// It names nothing configurable (`REVREPL_BIN`); ignored with a warning.
    Unrelated,
    /// It names a real section but a key that section does not have; an error.
    UnknownKey {
        /// The section, e.g. `reader`.
        section: String,
        /// The key as written, lower case.
        key: String,
    },
}

/// Classifies the variable `name` (with or without the `REVREPL_` prefix).
pub fn classify_env_variable(name: &str) -> EnvVariable {
    let key = name
        .get(..ENV_PREFIX.len())
        .filter(|head| head.eq_ignore_ascii_case(ENV_PREFIX))
        .map_or(name, |_| &name[ENV_PREFIX.len()..]);
    if is_process_variable(key) {
        return EnvVariable::Process;
    }
    let key = key.to_ascii_lowercase();
    let known = known_keys();
    match key.split_once("__") {
        None if known.top_level.contains(&key) => EnvVariable::Key(key),
        None => EnvVariable::Unrelated,
        Some((section, field)) => match known.sections.iter().find(|(name, _)| *name == section) {
            Some((_, fields)) if fields.contains(&field.to_string()) => {
                EnvVariable::Key(format!("{section}.{field}"))
            }
            Some(_) => EnvVariable::UnknownKey {
                section: section.to_string(),
                key: field.to_string(),
            },
            None => EnvVariable::Unrelated,
        },
    }
}

/// The keys of the configuration, from the structure itself (so they cannot drift): a
/// serialized default, in which `None` values keep their keys.
struct KnownKeys {
    top_level: Vec<String>,
    sections: Vec<(String, Vec<String>)>,
}

fn known_keys() -> KnownKeys {
    use figment::value::Value;
    let sample = Config {
        run_id: String::new(),
        shards_file: PathBuf::new(),
        session_file: None,
        schema_overrides_file: None,
        table_overrides: None,
        column_overrides: None,
        spanner: SpannerConfig {
            database: String::new(),
            change_stream: String::new(),
            endpoint: None,
            admin_endpoint: None,
            priority: SpannerPriority::default(),
        },
        buffer: BufferConfig::default(),
        metadata: MetadataConfig::default(),
        routing: RoutingConfig::default(),
        reader: ReaderConfig::default(),
        writer: WriterConfig::default(),
    };
    let mut known = KnownKeys {
        top_level: Vec::new(),
        sections: Vec::new(),
    };
    // Serializing a plain struct into figment's value cannot fail; if it ever did, no
    // variable would be read and each would be reported as ignored.
    let value = Value::serialize(&sample).unwrap_or_else(|_| Value::from(String::new()));
    if let Value::Dict(_, dict) = value {
        for (key, value) in dict {
            match value {
                Value::Dict(_, fields) => {
                    known.sections.push((key, fields.keys().cloned().collect()));
                }
                _ => known.top_level.push(key),
            }
        }
    }
    known
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Names the run in every metadata table; reader and writer of one pipeline share it.
    pub run_id: String,
    /// The shards file (reference format).
    pub shards_file: PathBuf,
    /// The Spanner Migration Tool session file; without it, tables and columns map by name.
    #[serde(default)]
    pub session_file: Option<PathBuf>,
    /// Schema overrides without a session file (the reference's `schemaOverridesFilePath`): a
    /// JSON file `{"renamedTables": {"src": "Spanner"}, "renamedColumns": {"src": {"col":
    /// "Col"}}}`. Only one of `session_file`, this, or the inline overrides.
    #[serde(default)]
    pub schema_overrides_file: Option<PathBuf>,
    /// Table renames, source → Spanner (the reference's `tableOverrides`): its text
    /// `"[{src, Spanner}, …]"` or a table `{ src = "Spanner" }`.
    #[serde(default)]
    pub table_overrides: Option<TableOverrides>,
    /// Column renames per source table, source → Spanner (the reference's
    /// `columnOverrides`): its text `"[{src.col, src.Col}, …]"` or a table
    /// `{ src = { col = "Col" } }`.
    #[serde(default)]
    pub column_overrides: Option<ColumnOverrides>,
    /// The source database and its change stream.
    pub spanner: SpannerConfig,
    /// Where window files go.
    #[serde(default)]
    pub buffer: BufferConfig,
    /// Where progress is recorded.
    #[serde(default)]
    pub metadata: MetadataConfig,
    /// How records find their shard.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// The reader.
    #[serde(default)]
    pub reader: ReaderConfig,
    /// The writer.
    #[serde(default)]
    pub writer: WriterConfig,
}

/// The Spanner database replicated from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpannerConfig {
    /// `projects/<p>/instances/<i>/databases/<d>`.
    pub database: String,
    /// The change stream to read.
    pub change_stream: String,
    /// Endpoint override, e.g. `http://127.0.0.1:9010` for the emulator (otherwise
    /// `SPANNER_EMULATOR_HOST` or Google's endpoint).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Database-admin (DDL) endpoint override: the emulator serves it over REST on its own
    /// port, e.g. `http://127.0.0.1:9020`.
    #[serde(default)]
    pub admin_endpoint: Option<String>,
    /// Priority of revrepl's requests to this database — change-stream queries, row look-ups
    /// before deletes, `revrepl validate`'s reads: `low`, `medium` or `high` (default, as
    /// Spanner and the reference's `spannerPriority`). `low` keeps replication from competing
    /// with the application for CPU.
    #[serde(default)]
    pub priority: SpannerPriority,
}

/// `spanner.priority`: Spanner's request priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpannerPriority {
    /// `PRIORITY_LOW`.
    Low,
    /// `PRIORITY_MEDIUM`.
    Medium,
    /// `PRIORITY_HIGH` (Spanner's default).
    #[default]
    High,
}

/// `table_overrides`: the reference's text or a TOML table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum TableOverrides {
    /// `"[{SourceTable, SpannerTable}, …]"`, as the reference's `tableOverrides`.
    Text(String),
    /// `{ SourceTable = "SpannerTable" }`.
    Map(std::collections::BTreeMap<String, String>),
}

/// `column_overrides`: the reference's text or a TOML table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ColumnOverrides {
    /// `"[{SourceTable.column, SourceTable.SpannerColumn}, …]"`, as the reference's
    /// `columnOverrides`.
    Text(String),
    /// `{ SourceTable = { column = "SpannerColumn" } }`.
    Map(std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>),
}

/// The buffer between reader and writer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// `gs://bucket/prefix`, `file:///path` or a path.
    #[serde(default = "default_buffer_url")]
    pub url: String,
    /// Cloud Storage endpoint override (emulators; anonymous credentials).
    #[serde(default)]
    pub gcs_endpoint: Option<String>,
}

fn default_buffer_url() -> String {
    "revrepl-buffer".to_string()
}

impl BufferConfig {
    /// Opens the buffer: an emulator endpoint uses anonymous credentials.
    pub async fn open(
        &self,
    ) -> Result<std::sync::Arc<dyn revrepl_record::BufferStore>, revrepl_record::BufferError> {
        let options = revrepl_record::buffer::GcsOptions {
            endpoint: self.gcs_endpoint.clone(),
            anonymous: self.gcs_endpoint.is_some(),
        };
        revrepl_record::buffer::open(&self.url, options).await
    }
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            url: default_buffer_url(),
            gcs_endpoint: None,
        }
    }
}

/// Which metadata store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataKind {
    /// An SQLite file: reader and writer on one machine.
    #[default]
    Sqlite,
    /// A Spanner database: reader and writers anywhere.
    Spanner,
}

/// The metadata store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataConfig {
    /// `sqlite` (default) or `spanner`.
    #[serde(default)]
    pub store: MetadataKind,
    /// The SQLite file.
    #[serde(default = "default_metadata_path")]
    pub path: PathBuf,
    /// The Spanner metadata database (`projects/<p>/instances/<i>/databases/<d>`).
    #[serde(default)]
    pub database: Option<String>,
    /// Spanner endpoint override for the metadata database (defaults to `spanner.endpoint`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Database-admin endpoint override for the metadata database (defaults to
    /// `spanner.admin_endpoint`).
    #[serde(default)]
    pub admin_endpoint: Option<String>,
    /// Appended to every table name as `_<suffix>`.
    #[serde(default)]
    pub table_suffix: Option<String>,
    /// How long the lease of a reader (per run) or a writer (per run and shard) lives without
    /// renewal: a process killed without releasing it blocks a restart this long.
    #[serde(default = "default_lease_ttl", with = "duration_text")]
    pub lease_ttl: Duration,
}

fn default_lease_ttl() -> Duration {
    Duration::from_secs(30)
}

fn default_metadata_path() -> PathBuf {
    PathBuf::from("revrepl-metadata.db")
}

impl Default for MetadataConfig {
    fn default() -> Self {
        Self {
            store: MetadataKind::Sqlite,
            path: default_metadata_path(),
            database: None,
            endpoint: None,
            admin_endpoint: None,
            table_suffix: None,
            lease_ttl: default_lease_ttl(),
        }
    }
}

/// Shard routing beyond the shards and session files.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// A shard-router plugin (shared library); takes precedence over the session file's shard
    /// columns.
    #[serde(default)]
    pub plugin: Option<PathBuf>,
    /// The plugin's `init` parameter string.
    #[serde(default)]
    pub plugin_params: String,
}

/// Which records the reader drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Filtration {
    /// Drop forward-migration writes (transaction tag `txBy=…`).
    #[default]
    ForwardMigration,
    /// Keep every record.
    None,
}

/// The reader.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderConfig {
    /// Window length: `2s` (the default), `10s` (the reference's), `1m`, `1h`.
    #[serde(default)]
    pub window: WindowDuration,
    /// Where a regular run starts (RFC 3339); now when absent.
    #[serde(default)]
    pub start_timestamp: Option<String>,
    /// Heartbeat interval asked of Spanner (1 s–300 s). Unset: a tenth of the window, at
    /// least 1 s and at most 10 s (see [`ReaderConfig::heartbeat_interval`]).
    #[serde(default, with = "optional_duration_text")]
    pub heartbeat: Option<Duration>,
    /// Forward-migration filtering.
    #[serde(default)]
    pub filtration: Filtration,
    /// Keep system transactions (TTL deletes).
    #[serde(default = "yes")]
    pub keep_system_transactions: bool,
    /// A partition this far ahead of the low watermark pauses (bounds memory).
    #[serde(default = "default_max_ahead", with = "duration_text")]
    pub max_ahead: Duration,
    /// A partition query silent this long is re-issued.
    #[serde(default = "default_stall_timeout", with = "duration_text")]
    pub stall_timeout: Duration,
    /// Replicate only these tables (Spanner names, or the session file's source names); empty:
    /// every table.
    #[serde(default)]
    pub include_tables: Vec<String>,
    /// Never replicate these tables (Spanner names, or the session file's source names).
    #[serde(default)]
    pub exclude_tables: Vec<String>,
}

fn default_max_ahead() -> Duration {
    Duration::from_secs(300)
}

fn default_stall_timeout() -> Duration {
    Duration::from_secs(60)
}

fn yes() -> bool {
    true
}

impl ReaderConfig {
    /// The heartbeat asked of Spanner: `heartbeat` when set, otherwise a tenth of the window
    /// between 1 s and 10 s. An idle partition moves the low watermark only at its heartbeats,
    /// so a window is finalized up to one heartbeat after it ends: short windows get the
    /// shortest heartbeat Spanner allows (1 s), long ones fewer heartbeat records.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat.unwrap_or_else(|| {
            (Duration::from_secs(u64::from(self.window.seconds())) / 10)
                .clamp(Duration::from_secs(1), Duration::from_secs(10))
        })
    }
}

impl Default for ReaderConfig {
    fn default() -> Self {
        Self {
            window: WindowDuration::default(),
            start_timestamp: None,
            heartbeat: None,
            filtration: Filtration::default(),
            keep_system_transactions: true,
            max_ahead: default_max_ahead(),
            stall_timeout: default_stall_timeout(),
            include_tables: Vec::new(),
            exclude_tables: Vec::new(),
        }
    }
}

/// The writer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WriterConfig {
    /// Time zone of the shards' `DATETIME` values: an IANA name (`Europe/Berlin`), `UTC`, or
    /// an offset (`+05:30`).
    #[serde(default = "default_time_zone")]
    pub source_time_zone: String,
    /// Most records in one MySQL transaction (a larger Spanner transaction still goes whole).
    #[serde(default = "default_batch_records")]
    pub batch_max_records: usize,
    /// Most bytes of records in one MySQL transaction.
    #[serde(default = "default_batch_bytes")]
    pub batch_max_bytes: usize,
    /// How often the writer reads how far the reader got (one query for all its shards), to
    /// start a shard's next window as soon as it is created. Short by default: a new window
    /// is noticed within this time.
    #[serde(default = "default_poll_interval", with = "duration_text")]
    pub poll_interval: Duration,
    /// On a definite error, write the failing transaction and its error to `dlq/<shard>/` in
    /// the buffer and go on, instead of stopping the shard with `ERROR`.
    #[serde(default)]
    pub dead_letter: bool,
    /// Spanner columns never written to MySQL (e.g. `migration_shard_id`), in every table.
    #[serde(default)]
    pub ignore_columns: Vec<String>,
    /// Verify the shards' TLS certificates against this CA file (PEM); enables TLS.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Use TLS with the system's root certificates even without `tls_ca_file`.
    #[serde(default)]
    pub tls: bool,
    /// Client certificate (PEM, may hold the chain) presented to every shard for mutual TLS,
    /// with `tls_client_key_file`; enables TLS. A shard's `sslCert`/`sslKey` connection
    /// properties replace it.
    #[serde(default)]
    pub tls_client_cert_file: Option<PathBuf>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of `tls_client_cert_file`.
    #[serde(default)]
    pub tls_client_key_file: Option<PathBuf>,
    /// A decimal with more fractional digits than its `DECIMAL` column: `round` (default;
    /// half away from zero, as MySQL does) or `error`.
    #[serde(default)]
    pub decimal_overflow: DecimalOverflow,
    /// An array written to a text column: `comma_joined` (default; `1,2`, as the reference)
    /// or `json` (`["1","2"]`). `JSON` columns always get JSON.
    #[serde(default)]
    pub array_text: ArrayText,
    /// Refuse window-file lines without a `shard` field or naming another shard than the
    /// file's folder (a definite error for the shard). By default they are applied to the
    /// folder's shard, as the reference does, with one warning per file.
    #[serde(default)]
    pub strict_line_shard: bool,
    /// A transformation plugin asked about every record before it is applied
    /// (docs/transformations.md); none by default.
    #[serde(default)]
    pub transformation: Option<TransformationConfig>,
}

/// `writer.transformation`: a transformation plugin (a shared library built against
/// `revrepl-shard-router-abi` with `export_transformer!`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TransformationConfig {
    /// The plugin's shared library.
    pub library: PathBuf,
    /// The string the plugin's `init` receives (often JSON); empty by default.
    #[serde(default)]
    pub parameters: String,
}

/// `writer.decimal_overflow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecimalOverflow {
    /// Round half away from zero to the column's scale, counted and logged.
    #[default]
    Round,
    /// A definite error for the shard.
    Error,
}

/// `writer.array_text`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArrayText {
    /// Elements joined with `,`.
    #[default]
    CommaJoined,
    /// JSON text.
    Json,
}

fn default_time_zone() -> String {
    "UTC".to_string()
}

fn default_batch_records() -> usize {
    5_000
}

fn default_batch_bytes() -> usize {
    16 << 20
}

fn default_poll_interval() -> Duration {
    Duration::from_millis(200)
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            source_time_zone: default_time_zone(),
            batch_max_records: default_batch_records(),
            batch_max_bytes: default_batch_bytes(),
            poll_interval: default_poll_interval(),
            dead_letter: false,
            ignore_columns: Vec::new(),
            tls_ca_file: None,
            tls: false,
            tls_client_cert_file: None,
            tls_client_key_file: None,
            decimal_overflow: DecimalOverflow::default(),
            array_text: ArrayText::default(),
            strict_line_shard: false,
            transformation: None,
        }
    }
}

mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("{text:?} is not a duration like 2s or 5m: {e}"))
        })
    }
}

mod optional_duration_text {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => super::duration_text::serialize(value, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::duration_text::deserialize(deserializer).map(Some)
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file, a variable or a flag has a bad or unknown key or value.
    #[error("configuration error: {0}")]
    Invalid(String),
    /// A `--set` flag that is not `key=value`.
    #[error("--set {0:?} is not key=value (for example --set reader.window=1m)")]
    BadOverride(String),
    /// The configuration file does not exist.
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    /// No file was given nor found, and variables and flags alone do not configure everything.
    #[error(
        "no configuration file was found: none was given (--config FILE or REVREPL_CONFIG) \
         and {looked_for} does not exist; environment variables and --set alone do not \
         configure everything ({reason})"
    )]
    NoFile {
        /// The default file looked for, absolute.
        looked_for: PathBuf,
        /// What is missing, as the loader said it.
        reason: String,
    },
}

impl Classify for ConfigError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Fatal
    }
}

impl From<figment::Error> for ConfigError {
    fn from(error: figment::Error) -> Self {
        // One line per problem; figment names the key path and the source of each value. A
        // value from the environment is named by its variable, which is what the user set.
        let lines: Vec<String> = error
            .into_iter()
            .map(|e| {
                let from_env = e
                    .metadata
                    .as_ref()
                    .is_some_and(|m| m.name.contains("environment variable"));
                if from_env && !e.path.is_empty() {
                    let variable = format!("{ENV_PREFIX}{}", e.path.join("__")).to_uppercase();
                    format!("environment variable {variable}: {}", e.kind)
                } else {
                    e.to_string()
                }
            })
            .collect();
        Self::Invalid(lines.join("; "))
    }
}

impl Config {
    /// Loads `explicit` if given, else [`DEFAULT_FILE`] from the current directory if it
    /// exists, else only variables and `overrides` (see [`Config::load`]). Returns the file
    /// used. Without any file, a configuration that is incomplete says so, and where the
    /// default file was looked for, instead of naming the first missing key.
    pub fn locate_and_load(
        explicit: Option<&Path>,
        overrides: &[String],
    ) -> Result<(Self, Option<PathBuf>), ConfigError> {
        let path = explicit.map(Path::to_path_buf).or_else(|| {
            let default = Path::new(DEFAULT_FILE);
            default.is_file().then(|| default.to_path_buf())
        });
        match Self::load(path.as_deref(), overrides) {
            Ok(config) => Ok((config, path)),
            Err(ConfigError::Invalid(reason)) if path.is_none() => Err(ConfigError::NoFile {
                looked_for: std::env::current_dir()
                    .map(|dir| dir.join(DEFAULT_FILE))
                    .unwrap_or_else(|_| PathBuf::from(DEFAULT_FILE)),
                reason,
            }),
            Err(error) => Err(error),
        }
    }

    /// Loads `file` (if given), then `REVREPL_…` variables of the process environment, then
    /// `overrides` (`key=value` with dotted keys, e.g. `reader.window=1m`).
    pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError::MissingFile(file.to_path_buf()));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        let mut accepted = Vec::new();
        for (name, _) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(ENV_PREFIX) {
                continue;
            }
            match classify_env_variable(name) {
                EnvVariable::Key(_) => accepted.push(name[ENV_PREFIX.len()..].to_string()),
                EnvVariable::Process => {}
                EnvVariable::Unrelated => tracing::warn!(
                    "ignoring environment variable {name}: it names no configuration key \
                     (configuration variables are {ENV_PREFIX}<KEY> for a top-level key or \
                     {ENV_PREFIX}<SECTION>__<KEY>, e.g. {ENV_PREFIX}READER__WINDOW)"
                ),
                EnvVariable::UnknownKey { section, key } => {
                    return Err(ConfigError::Invalid(format!(
                        "environment variable {name}: section [{section}] has no key {key:?}"
                    )));
                }
            }
        }
        figment = figment.merge(
            Env::prefixed(ENV_PREFIX)
                .filter(move |key| accepted.iter().any(|name| key == name.as_str()))
                .split("__")
                .lowercase(true),
        );
        for item in overrides {
            let (key, value) = item
                .split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .ok_or_else(|| ConfigError::BadOverride(item.clone()))?;
            let value: figment::value::Value = value
                .parse()
                .unwrap_or_else(|_| figment::value::Value::from(value.to_string()));
            figment = figment.merge(Serialized::default(key.trim(), value));
        }
        let config: Self = figment.extract()?;
        config.check_schema_sources()?;
        Ok(config)
    }

    /// Only one way to map the schema: a session file, an overrides file, or the inline
    /// overrides (as the reference allows only one).
    fn check_schema_sources(&self) -> Result<(), ConfigError> {
        let inline = self.table_overrides.is_some() || self.column_overrides.is_some();
        let conflict = match (
            self.session_file.is_some(),
            self.schema_overrides_file.is_some(),
            inline,
        ) {
            (true, true, _) => Some("session_file and schema_overrides_file"),
            (true, false, true) => Some("session_file and table_overrides/column_overrides"),
            (false, true, true) => {
                Some("schema_overrides_file and table_overrides/column_overrides")
            }
            _ => None,
        };
        match conflict {
            Some(both) => Err(ConfigError::Invalid(format!(
                "{both} are both set: the schema mapping comes from exactly one of them (a \
                 session file already holds every rename); remove one"
            ))),
            None => Ok(()),
        }
    }
}

/// Parses a timestamp from configuration text, naming the key on error.
pub fn parse_timestamp(key: &str, text: &str) -> Result<revrepl_record::Timestamp, ConfigError> {
    revrepl_record::Timestamp::parse_rfc3339(text)
        .map_err(|e| ConfigError::Invalid(format!("{key}: {e}")))
}

#[cfg(test)]
// figment's `Jail` closures return its own (large) error type; nothing to shrink here.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    const MINIMAL: &str = r#"
run_id = "run1"
shards_file = "shards.json"
[spanner]
database = "projects/p/instances/i/databases/d"
change_stream = "revrepl_stream"
"#;

    fn load_in(jail: &mut Jail, text: &str, overrides: &[&str]) -> Result<Config, ConfigError> {
        jail.create_file("revrepl.toml", text)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        Config::load(Some(Path::new("revrepl.toml")), &overrides)
    }

    #[test]
    fn schema_overrides_come_as_text_or_tables_and_exclude_a_session_file() {
        Jail::expect_with(|jail| {
            let text = r#"
run_id = "run1"
shards_file = "shards.json"
table_overrides = "[{a, A}]"
column_overrides = { a = { x = "X" } }
[spanner]
database = "projects/p/instances/i/databases/d"
change_stream = "revrepl_stream"
"#;
            let config = load_in(jail, text, &[]).map_err(|e| e.to_string())?;
            assert_eq!(
                config.table_overrides,
                Some(TableOverrides::Text("[{a, A}]".into()))
            );
            let Some(ColumnOverrides::Map(columns)) = &config.column_overrides else {
                return Err(format!("{:?}", config.column_overrides).into());
            };
            assert_eq!(columns["a"]["x"], "X");
            let error = load_in(jail, text, &["session_file=s.json"])
                .expect_err("both")
                .to_string();
            assert!(
                error.contains("session_file and table_overrides/column_overrides are both set"),
                "{error}"
            );
            let error = load_in(
                jail,
                MINIMAL,
                &["schema_overrides_file=o.json", "session_file=s.json"],
            )
            .expect_err("both")
            .to_string();
            assert!(
                error.contains("session_file and schema_overrides_file"),
                "{error}"
            );
            Ok(())
        });
    }

    #[test]
    fn the_transformation_plugin_is_optional_and_its_keys_are_checked() {
        Jail::expect_with(|jail| {
            let config = load_in(jail, MINIMAL, &[]).map_err(|e| e.to_string())?;
            assert_eq!(config.writer.transformation, None);
            let with = format!(
                "{MINIMAL}[writer.transformation]\nlibrary = \"/lib/libt.so\"\nparameters = '{{\"a\": 1}}'\n"
            );
            let config = load_in(jail, &with, &[]).map_err(|e| e.to_string())?;
            assert_eq!(
                config.writer.transformation,
                Some(TransformationConfig {
                    library: PathBuf::from("/lib/libt.so"),
                    parameters: r#"{"a": 1}"#.to_string(),
                })
            );
            let typo =
                format!("{MINIMAL}[writer.transformation]\nlibrary = \"x\"\nparams = \"\"\n");
            let error = load_in(jail, &typo, &[])
                .expect_err("unknown key")
                .to_string();
            assert!(error.contains("params"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn minimal_file_gets_defaults() {
        Jail::expect_with(|jail| {
            let config = load_in(jail, MINIMAL, &[]).map_err(|e| e.to_string())?;
            assert_eq!(config.run_id, "run1");
            assert_eq!(config.reader.window.to_string(), "2s");
            assert_eq!(config.reader.heartbeat, None);
            assert_eq!(config.reader.heartbeat_interval(), Duration::from_secs(1));
            assert_eq!(config.writer.poll_interval, Duration::from_millis(200));
            assert_eq!(config.metadata.store, MetadataKind::Sqlite);
            assert_eq!(config.buffer.url, "revrepl-buffer");
            assert!(config.reader.keep_system_transactions);
            Ok(())
        });
    }

    #[test]
    fn an_unset_heartbeat_is_a_tenth_of_the_window_between_1_and_10_seconds() {
        let with_window = |seconds| ReaderConfig {
            window: WindowDuration::from_seconds(seconds).expect("valid window"),
            ..ReaderConfig::default()
        };
        assert_eq!(with_window(1).heartbeat_interval(), Duration::from_secs(1));
        assert_eq!(with_window(10).heartbeat_interval(), Duration::from_secs(1));
        assert_eq!(with_window(60).heartbeat_interval(), Duration::from_secs(6));
        assert_eq!(
            with_window(3600).heartbeat_interval(),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn environment_then_flags_override_the_file() {
        Jail::expect_with(|jail| {
            jail.set_env("REVREPL_READER__WINDOW", "1m");
            jail.set_env("REVREPL_RUN_ID", "from-env");
            jail.set_env("REVREPL_METADATA__STORE", "spanner");
            let config = load_in(jail, MINIMAL, &["run_id=from-flag", "reader.heartbeat=5s"])
                .map_err(|e| e.to_string())?;
            assert_eq!(config.reader.window.to_string(), "1m");
            assert_eq!(config.run_id, "from-flag");
            assert_eq!(config.reader.heartbeat, Some(Duration::from_secs(5)));
            assert_eq!(config.reader.heartbeat_interval(), Duration::from_secs(5));
            assert_eq!(config.metadata.store, MetadataKind::Spanner);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        Jail::expect_with(|jail| {
            let typo = format!("{MINIMAL}\n[reader]\nwindw = \"1m\"\n");
            let err = load_in(jail, &typo, &[]).expect_err("unknown key");
            assert!(err.to_string().contains("windw"), "{err}");
            let bad = format!("{MINIMAL}\n[reader]\nwindow = \"5x\"\n");
            let err = load_in(jail, &bad, &[]).expect_err("bad value");
            let text = err.to_string();
            assert!(text.contains("window") && text.contains("5x"), "{text}");
            let err = load_in(jail, MINIMAL, &["reader.heartbeat=soon"]).expect_err("bad flag");
            assert!(err.to_string().contains("heartbeat"), "{err}");
            let err = load_in(jail, MINIMAL, &["no-equals-sign"]).expect_err("bad override");
            assert!(matches!(err, ConfigError::BadOverride(_)));
            Ok(())
        });
    }

    #[test]
    fn process_variables_are_not_configuration_keys() {
        Jail::expect_with(|jail| {
            jail.set_env("REVREPL_CONFIG", "elsewhere.toml");
            jail.set_env("REVREPL_LOG_FORMAT", "json");
            jail.set_env("REVREPL_METRICS_ADDR", "127.0.0.1:9464");
            jail.set_env("REVREPL_SECRET_DB_PASS", "not a key");
            let config = load_in(jail, MINIMAL, &[]).map_err(|e| e.to_string())?;
            assert_eq!(config.run_id, "run1");
            Ok(())
        });
    }

    /// Issue 12.12: an unrelated `REVREPL_BIN` made every command exit 2.
    #[test]
    fn variables_that_name_no_key_are_ignored() {
        Jail::expect_with(|jail| {
            jail.set_env("REVREPL_BIN", "/usr/local/bin/revrepl");
            jail.set_env("REVREPL_RUN_IDD", "typo");
            jail.set_env("REVREPL_NOSUCHSECTION__KEY", "x");
            let config = load_in(jail, MINIMAL, &[]).map_err(|e| e.to_string())?;
            assert_eq!(config.run_id, "run1");
            Ok(())
        });
        assert_eq!(classify_env_variable("REVREPL_BIN"), EnvVariable::Unrelated);
        assert_eq!(
            classify_env_variable("REVREPL_WRITER__TLS_CA_FILE"),
            EnvVariable::Key("writer.tls_ca_file".to_string())
        );
        assert_eq!(
            classify_env_variable("REVREPL_SESSION_FILE"),
            EnvVariable::Key("session_file".to_string())
        );
        assert_eq!(
            classify_env_variable("REVREPL_SECRET_DB"),
            EnvVariable::Process
        );
    }

    #[test]
    fn a_wrong_configuration_variable_is_named() {
        Jail::expect_with(|jail| {
            jail.set_env("REVREPL_READER__WINDW", "1m");
            let err = load_in(jail, MINIMAL, &[]).expect_err("unknown key of a real section");
            assert_eq!(
                err.to_string(),
                "configuration error: environment variable REVREPL_READER__WINDW: section \
                 [reader] has no key \"windw\""
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("REVREPL_READER__WINDOW", "5x");
            let err = load_in(jail, MINIMAL, &[]).expect_err("bad value");
            assert!(
                err.to_string()
                    .starts_with("configuration error: environment variable REVREPL_READER__WINDOW: window duration \"5x\" is invalid"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn missing_required_keys_are_named() {
        Jail::expect_with(|jail| {
            let err = load_in(jail, "run_id = \"r\"\n", &[]).expect_err("missing");
            assert!(err.to_string().contains("shards_file"), "{err}");
            Ok(())
        });
    }

    /// Issue 12.13: without a file, `revrepl status` said ``missing field `run_id` ``.
    #[test]
    fn without_any_file_the_error_says_where_it_looked() {
        Jail::expect_with(|jail| {
            let err = Config::locate_and_load(None, &[]).expect_err("nothing configures");
            let text = err.to_string();
            let looked_for = jail.directory().join("revrepl.toml");
            assert!(
                text.starts_with("no configuration file was found")
                    && text.contains(&looked_for.display().to_string()),
                "{text}"
            );
            jail.create_file("revrepl.toml", MINIMAL)?;
            let (config, path) = Config::locate_and_load(None, &[]).map_err(|e| e.to_string())?;
            assert_eq!(config.run_id, "run1");
            assert_eq!(path.as_deref(), Some(Path::new("revrepl.toml")));
            Ok(())
        });
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = Config::load(Some(Path::new("/nonexistent/revrepl.toml")), &[])
            .expect_err("missing file");
        assert!(
            err.to_string().contains("/nonexistent/revrepl.toml"),
            "{err}"
        );
    }
}
