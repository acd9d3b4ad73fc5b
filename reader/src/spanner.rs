//! The change stream on Spanner: partition queries, the stream's options, and stale reads of
//! deleted rows for routing.
//!
//! Queries follow the brief in `reference/spanner-change-streams.md`: all five named arguments
//! (`read_options => NULL`), typed parameters, a single-use strong read-only transaction, a
//! request tag, and no automatic retry or resume by the client library — the partition task
//! re-queries from its own position instead.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, stream};
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::retry_policy::NeverRetry;
use google_cloud_spanner::client::{DatabaseClient, Spanner};
use google_cloud_spanner::model::request_options::Priority;
use google_cloud_spanner::statement::Statement;
use google_cloud_spanner::transaction::TimestampBound;
use google_cloud_spanner::types;
use google_cloud_spanner::value::{Kind, Value};
use revrepl_config::SpannerPriority;
use revrepl_record::{ErrorClass, Timestamp};
use revrepl_shard_routing::{RowLookup, RowLookupRequest, RowNeed};
use serde_json::{Map, Value as Json};

use crate::change_stream::decode_change_record_column;
use crate::error::ReaderError;
use crate::partition::{Token, short_token};
use crate::source::{ChangeStreamSource, RecordStream};

/// How to reach a Spanner database.
#[derive(Debug, Clone)]
pub struct SpannerDatabase {
    /// `projects/<p>/instances/<i>/databases/<d>`.
    pub database: String,
    /// Endpoint override (`http://127.0.0.1:9010` for the emulator); otherwise
    /// `SPANNER_EMULATOR_HOST` or Google's endpoint.
    pub endpoint: Option<String>,
}

impl SpannerDatabase {
    /// Opens a client for the database.
    pub async fn connect(&self) -> Result<DatabaseClient, ReaderError> {
        let fail = |message: String| ReaderError::Query {
            location: self.database.clone(),
            partition: "-".into(),
            message,
            class: ErrorClass::Transient,
        };
        let mut builder = Spanner::builder();
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        let spanner = builder.build().await.map_err(|e| fail(e.to_string()))?;
        spanner
            .database_client(self.database.clone())
            .build()
            .await
            .map_err(|e| fail(e.to_string()))
    }
}

/// The options of a change stream that matter to the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOptions {
    /// `NEW_ROW`, `NEW_ROW_AND_OLD_VALUES`, ...
    pub value_capture_type: String,
    /// The retention period as configured, e.g. `7d`.
    pub retention_text: String,
    /// The retention period.
    pub retention: Duration,
    /// `IMMUTABLE_KEY_RANGE` (default) or `MUTABLE_KEY_RANGE`.
    pub partition_mode: String,
    /// Every option as Spanner lists it.
    pub all: Vec<(String, String)>,
}

/// Capture types that carry whole rows, which the writer's upserts need.
pub const SUPPORTED_CAPTURE_TYPES: [&str; 2] = ["NEW_ROW", "NEW_ROW_AND_OLD_VALUES"];

/// Validates a change-stream name (it is part of the query text, so it must be an identifier).
pub fn check_stream_name(stream: &str) -> Result<(), ReaderError> {
    let mut chars = stream.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && stream.len() <= 128;
    if valid {
        Ok(())
    } else {
        Err(ReaderError::Config {
            key: "change_stream".into(),
            reason: format!("{stream:?} is not a change-stream name (letters, digits, _)"),
        })
    }
}

/// Parses a retention period such as `36h`, `7d`, `1440m`.
pub fn parse_retention(text: &str) -> Option<Duration> {
    let text = text.trim();
    let unit_at = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(unit_at);
    let value: u64 = digits.parse().ok()?;
    let seconds = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(value.checked_mul(seconds)?))
}

/// Reads the stream's options and refuses what the reader cannot handle.
pub async fn check_stream(
    client: &DatabaseClient,
    location: &str,
    stream: &str,
) -> Result<StreamOptions, ReaderError> {
    check_stream_name(stream)?;
    let refuse = |reason: String| ReaderError::Stream {
        stream: stream.to_string(),
        reason,
    };
    let exists = Statement::builder(
        "SELECT change_stream_name FROM information_schema.change_streams \
         WHERE change_stream_name = @name",
    )
    .add_typed_param("name", stream.to_string(), types::string())
    .build();
    if collect_rows(client, exists, location).await?.is_empty() {
        return Err(refuse(format!("it does not exist in {location}")));
    }
    let statement = Statement::builder(
        "SELECT option_name, option_value FROM information_schema.change_stream_options \
         WHERE change_stream_name = @name ORDER BY option_name",
    )
    .add_typed_param("name", stream.to_string(), types::string())
    .build();
    let mut all = Vec::new();
    for row in collect_rows(client, statement, location).await? {
        let name: String = row.get(0).map_err(|e| query_error(location, &None, &e))?;
        let value: Option<String> = row.get(1).map_err(|e| query_error(location, &None, &e))?;
        all.push((name, value.unwrap_or_default()));
    }
    let option = |name: &str| {
        all.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim_matches(|c| c == '\'' || c == '"').to_string())
    };
    let value_capture_type =
        option("value_capture_type").unwrap_or_else(|| "OLD_AND_NEW_VALUES".into());
    if !SUPPORTED_CAPTURE_TYPES.contains(&value_capture_type.as_str()) {
        return Err(refuse(format!(
            "value_capture_type is {value_capture_type}, but revrepl needs whole rows: \
             ALTER CHANGE STREAM {stream} SET OPTIONS (value_capture_type = 'NEW_ROW_AND_OLD_VALUES')"
        )));
    }
    let partition_mode = option("partition_mode").unwrap_or_else(|| "IMMUTABLE_KEY_RANGE".into());
    if partition_mode != "IMMUTABLE_KEY_RANGE" {
        return Err(refuse(format!(
            "partition_mode {partition_mode} is not supported; create the stream with \
             partition_mode = 'IMMUTABLE_KEY_RANGE' (the default)"
        )));
    }
    // Without an explicit option, assume the shortest default Spanner has used (1 day).
    let retention_text = option("retention_period").unwrap_or_else(|| "1d".into());
    let retention = parse_retention(&retention_text).ok_or_else(|| {
        refuse(format!(
            "retention_period {retention_text:?} cannot be read"
        ))
    })?;
    Ok(StreamOptions {
        value_capture_type,
        retention_text,
        retention,
        partition_mode,
        all,
    })
}

/// Refuses to start where the stream no longer has data (DESIGN §3.5).
pub fn check_retention(
    stream: &str,
    options: &StreamOptions,
    start: Timestamp,
    now: Timestamp,
) -> Result<(), ReaderError> {
    let retention = i128::try_from(options.retention.as_nanos()).unwrap_or(i128::MAX);
    let horizon =
        Timestamp::from_nanos(now.as_nanos().saturating_sub(retention)).unwrap_or(Timestamp::EPOCH);
    if start < horizon {
        return Err(ReaderError::Retention {
            stream: stream.to_string(),
            start,
            retention: options.retention_text.clone(),
            horizon,
        });
    }
    Ok(())
}

async fn collect_rows(
    client: &DatabaseClient,
    statement: Statement,
    location: &str,
) -> Result<Vec<google_cloud_spanner::result::Row>, ReaderError> {
    let tx = client.single_use().build();
    let mut rows = Vec::new();
    let mut result = tx
        .execute_query(statement)
        .await
        .map_err(|e| query_error(location, &None, &e))?;
    while let Some(row) = result.next().await {
        rows.push(row.map_err(|e| query_error(location, &None, &e))?);
    }
    Ok(rows)
}

/// Maps an error of a partition query started at `start`: OUT_OF_RANGE means Spanner refuses
/// that start (before the stream existed, or past its retention) — a clear fatal error rather
/// than a query retried forever.
fn stream_query_error(
    location: &str,
    token: &Token,
    start: Timestamp,
    error: &google_cloud_spanner::Error,
) -> ReaderError {
    match error.status() {
        Some(status) if status.code == Code::OutOfRange => ReaderError::StartRefused {
            location: location.to_string(),
            start,
            message: status.message.clone(),
        },
        _ => query_error(location, token, error),
    }
}

/// Maps a client error: unavailable, deadline, aborted, exhausted, internal (stream resets) and
/// failures to reach the server are transient; invalid arguments, out of range (e.g. a start
/// older than retention), not found and permission errors are fatal.
fn query_error(location: &str, token: &Token, error: &google_cloud_spanner::Error) -> ReaderError {
    let class = match error.status() {
        Some(status) => match status.code {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::Internal
            | Code::Cancelled
            | Code::Unknown => ErrorClass::Transient,
            _ => ErrorClass::Fatal,
        },
        None if error.is_serialization()
            || error.is_deserialization()
            || error.is_binding()
            || error.is_authentication() =>
        {
            ErrorClass::Fatal
        }
        None => ErrorClass::Transient,
    };
    ReaderError::Query {
        location: location.to_string(),
        partition: short_token(token),
        message: error.to_string(),
        class,
    }
}

/// Spanner's request priority for `spanner.priority`.
pub fn request_priority(priority: SpannerPriority) -> Priority {
    match priority {
        SpannerPriority::Low => Priority::Low,
        SpannerPriority::Medium => Priority::Medium,
        SpannerPriority::High => Priority::High,
    }
}

/// Partition queries of one change stream.
#[derive(Debug)]
pub struct SpannerChangeStream {
    client: DatabaseClient,
    stream: String,
    heartbeat: Duration,
    location: String,
    priority: SpannerPriority,
}

impl SpannerChangeStream {
    /// Queries `stream` through `client`, asking for a heartbeat every `heartbeat` (1 s–300 s).
    pub fn new(
        client: DatabaseClient,
        database: &str,
        stream: &str,
        heartbeat: Duration,
    ) -> Result<Self, ReaderError> {
        check_stream_name(stream)?;
        let millis = heartbeat.as_millis();
        if !(1_000..=300_000).contains(&millis) {
            return Err(ReaderError::Config {
                key: "heartbeat".into(),
                reason: format!("{millis} ms is outside 1000..=300000 ms"),
            });
        }
        Ok(Self {
            client,
            stream: stream.to_string(),
            heartbeat,
            location: format!("{database} (change stream {stream})"),
            priority: SpannerPriority::High,
        })
    }

    /// Sends every query with `priority` (`spanner.priority`; default high).
    pub fn with_priority(mut self, priority: SpannerPriority) -> Self {
        self.priority = priority;
        self
    }

    /// The query of one partition from `start`.
    fn statement(&self, token: &Token, start: Timestamp) -> Statement {
        partition_statement(&self.stream, self.heartbeat, token, start, self.priority)
    }
}

/// The query of one partition of `stream` from `start`, with its tag and priority.
fn partition_statement(
    stream: &str,
    heartbeat: Duration,
    token: &Token,
    start: Timestamp,
    priority: SpannerPriority,
) -> Statement {
    let sql = format!(
        "SELECT ChangeRecord FROM READ_{stream} (start_timestamp => @start, end_timestamp => NULL, \
         partition_token => @token, heartbeat_milliseconds => @heartbeat, \
         read_options => NULL)"
    );
    let tag: String = format!("revrepl-reader;{};{}", stream, short_token(token))
        .chars()
        .take(50)
        .collect();
    let heartbeat = i64::try_from(heartbeat.as_millis()).unwrap_or(2_000);
    Statement::builder(sql)
        .add_typed_param(
            "start",
            microsecond_floor(start).to_rfc3339(),
            types::timestamp(),
        )
        .add_typed_param("token", token.clone(), types::string())
        .add_typed_param("heartbeat", heartbeat, types::int64())
        .set_request_tag(tag)
        .set_priority(request_priority(priority))
        .with_retry_policy(NeverRetry)
        .build()
}

#[async_trait]
impl ChangeStreamSource for SpannerChangeStream {
    async fn query(&self, token: &Token, start: Timestamp) -> Result<RecordStream, ReaderError> {
        let statement = self.statement(token, start);
        let tx = self.client.single_use().build();
        let result = tx
            .execute_query(statement)
            .await
            .map_err(|e| stream_query_error(&self.location, token, start, &e))?;
        let location = self.location.clone();
        let token = token.clone();
        let rows = stream::unfold(result, |mut result| async move {
            result.next().await.map(|row| (row, result))
        });
        let records = rows.flat_map(move |row| {
            let decoded = match row {
                Ok(row) => match row.get::<Json>("ChangeRecord") {
                    Ok(column) => {
                        decode_change_record_column(column).map_err(|source| ReaderError::Decode {
                            partition: short_token(&token),
                            source,
                        })
                    }
                    Err(e) => Err(query_error(&location, &token, &e)),
                },
                Err(e) => Err(stream_query_error(&location, &token, start, &e)),
            };
            let items: Vec<Result<_, ReaderError>> = match decoded {
                Ok(records) => records.into_iter().map(Ok).collect(),
                Err(error) => vec![Err(error)],
            };
            stream::iter(items)
        });
        Ok(Box::pin(records))
    }

    fn location(&self) -> &str {
        &self.location
    }
}

/// A row look-up's statement: its tag and priority.
fn lookup_statement(
    sql: String,
    priority: SpannerPriority,
) -> google_cloud_spanner::statement::StatementBuilder {
    Statement::builder(sql)
        .set_request_tag("revrepl-reader;row-before-delete")
        .set_priority(request_priority(priority))
}

/// `ts` rounded down to the microsecond, the precision of commit timestamps: an earlier start
/// only returns more (merged again), and sub-microsecond starts are never sent to Spanner.
fn microsecond_floor(ts: Timestamp) -> Timestamp {
    let nanos = ts.as_nanos();
    Timestamp::from_nanos(nanos - nanos.rem_euclid(1_000)).unwrap_or(ts)
}

/// Reads rows as they were before a delete, for routing deletes whose shard column is not a
/// key column and whose stream has no old values (DESIGN §5).
#[derive(Debug)]
pub struct SpannerRowLookup {
    client: DatabaseClient,
    location: String,
    /// Spanner types of each table's columns, read once from `information_schema`.
    column_types: Mutex<HashMap<String, HashMap<String, String>>>,
    priority: SpannerPriority,
}

impl SpannerRowLookup {
    /// Stale reads through `client`.
    pub fn new(client: DatabaseClient, database: &str) -> Self {
        Self {
            client,
            location: database.to_string(),
            column_types: Mutex::new(HashMap::new()),
            priority: SpannerPriority::High,
        }
    }

    /// Sends every look-up with `priority` (`spanner.priority`; default high).
    pub fn with_priority(mut self, priority: SpannerPriority) -> Self {
        self.priority = priority;
        self
    }

    /// A statement of this look-up: its tag and priority.
    fn statement(&self, sql: String) -> google_cloud_spanner::statement::StatementBuilder {
        lookup_statement(sql, self.priority)
    }

    async fn types_of(&self, table: &str) -> Result<HashMap<String, String>, ReaderError> {
        if let Some(types) = self
            .column_types
            .lock()
            .ok()
            .and_then(|m| m.get(table).cloned())
        {
            return Ok(types);
        }
        let statement = self
            .statement(
                "SELECT column_name, spanner_type FROM information_schema.columns \
                 WHERE table_schema = '' AND table_name = @table"
                    .to_string(),
            )
            .add_typed_param("table", table.to_string(), types::string())
            .build();
        let mut types = HashMap::new();
        for row in collect_rows(&self.client, statement, &self.location).await? {
            let name: String = row
                .get(0)
                .map_err(|e| query_error(&self.location, &None, &e))?;
            let kind: String = row
                .get(1)
                .map_err(|e| query_error(&self.location, &None, &e))?;
            types.insert(name, kind);
        }
        if types.is_empty() {
            return Err(ReaderError::Stream {
                stream: "-".into(),
                reason: format!("table {table:?} does not exist in {}", self.location),
            });
        }
        if let Ok(mut cache) = self.column_types.lock() {
            cache.insert(table.to_string(), types.clone());
        }
        Ok(types)
    }
}

/// A parameter type for a column's `spanner_type` text (`INT64`, `STRING(MAX)`, ...).
fn param_type(spanner_type: &str) -> Option<google_cloud_spanner::types::Type> {
    let base = spanner_type
        .split('(')
        .next()
        .unwrap_or(spanner_type)
        .trim();
    Some(match base {
        "INT64" => types::int64(),
        "STRING" => types::string(),
        "BOOL" => types::bool(),
        "FLOAT64" => types::float64(),
        "FLOAT32" => types::float32(),
        "NUMERIC" => types::numeric(),
        "TIMESTAMP" => types::timestamp(),
        "DATE" => types::date(),
        "BYTES" => types::bytes(),
        "JSON" => types::json(),
        _ => return None,
    })
}

/// A key value in change-stream JSON encoding as a query parameter (the wire encoding is the
/// same: INT64, NUMERIC, TIMESTAMP, DATE and BYTES travel as strings).
fn key_param(value: &Json) -> Option<Value> {
    match value {
        Json::Null => Some(Value::null()),
        Json::Bool(b) => Some(Value::from(*b)),
        Json::Number(n) => n.as_f64().map(Value::from),
        Json::String(s) => Some(Value::from(s.clone())),
        Json::Array(_) | Json::Object(_) => None,
    }
}

/// A result value in change-stream JSON encoding: strings stay strings (INT64, NUMERIC, JSON
/// text, BYTES base64, `"NaN"`), numbers stay numbers.
fn wire_json(value: &Value) -> Json {
    match value.kind() {
        Kind::Null => Json::Null,
        Kind::Bool => value.as_bool().map_or(Json::Null, Json::Bool),
        Kind::Number => value
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Json::Null, Json::Number),
        Kind::String => value
            .as_str()
            .map_or(Json::Null, |s| Json::String(s.to_string())),
        Kind::List => value.as_list().map_or(Json::Null, |list| {
            Json::Array(list.iter().map(wire_json).collect())
        }),
        _ => Json::Null,
    }
}

fn quote_identifier(name: &str) -> String {
    format!("`{}`", name.replace('`', "\\`"))
}

impl RowLookup for SpannerRowLookup {
    type Error = ReaderError;

    async fn row_before(
        &self,
        request: &RowLookupRequest<'_>,
    ) -> Result<Option<Map<String, Json>>, ReaderError> {
        let types = self.types_of(request.table).await?;
        let columns: Vec<String> = match request.columns {
            RowNeed::Columns(columns) => columns.clone(),
            RowNeed::Nothing | RowNeed::WholeRow => {
                let mut all: Vec<String> = types.keys().cloned().collect();
                all.sort();
                all
            }
        };
        let mut conditions = Vec::new();
        let mut builder_params = Vec::new();
        for (index, (column, value)) in request.keys.iter().enumerate() {
            let param = format!("k{index}");
            let bad = |reason: &str| ReaderError::Stream {
                stream: "-".into(),
                reason: format!(
                    "cannot look up the deleted row of {:?}: key column {column:?} {reason}",
                    request.table
                ),
            };
            let kind = types
                .get(column)
                .ok_or_else(|| bad("is not in the table"))?;
            let param_type = param_type(kind).ok_or_else(|| bad("has an unsupported type"))?;
            let value = key_param(value).ok_or_else(|| bad("has an unsupported value"))?;
            conditions.push(format!("{} = @{param}", quote_identifier(column)));
            builder_params.push((param, value, param_type));
        }
        let sql = format!(
            "SELECT {} FROM {} WHERE {}",
            columns
                .iter()
                .map(|c| quote_identifier(c))
                .collect::<Vec<_>>()
                .join(", "),
            quote_identifier(request.table),
            conditions.join(" AND ")
        );
        let mut builder = self.statement(sql);
        for (name, value, param_type) in builder_params {
            builder = builder.add_typed_param(name, value, param_type);
        }
        let read_at = google_cloud_wkt::Timestamp::new(
            request.read_timestamp.seconds(),
            i32::try_from(request.read_timestamp.nanos()).unwrap_or(0),
        )
        .map_err(|e| ReaderError::Config {
            key: "read_timestamp".into(),
            reason: e.to_string(),
        })?;
        let tx = self
            .client
            .single_use()
            .set_timestamp_bound(TimestampBound::read_timestamp(read_at))
            .build();
        let mut result = tx
            .execute_query(builder.build())
            .await
            .map_err(|e| query_error(&self.location, &None, &e))?;
        let Some(row) = result.next().await else {
            return Ok(None);
        };
        let row = row.map_err(|e| query_error(&self.location, &None, &e))?;
        let mut values: Map<String, Json> = request.keys.clone();
        for (column, value) in columns.iter().zip(row.raw_values()) {
            values.insert(column.clone(), wire_json(value));
        }
        Ok(Some(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_must_be_identifiers() {
        assert!(check_stream_name("Orders_Stream1").is_ok());
        for bad in ["", "1abc", "a-b", "a b", "x; DROP TABLE y"] {
            assert!(check_stream_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_configured_priority_reaches_every_request() {
        let config: revrepl_config::SpannerConfig = serde_json::from_value(serde_json::json!({
            "database": "projects/p/instances/i/databases/d",
            "change_stream": "s",
            "priority": "low",
        }))
        .expect("parses");
        assert_eq!(config.priority, SpannerPriority::Low);
        let start = Timestamp::new(100, 0).expect("ts");
        let token: Token = Some("token".to_string());
        for (priority, shown) in [
            (SpannerPriority::Low, "Low"),
            (SpannerPriority::Medium, "Medium"),
            (SpannerPriority::High, "High"),
        ] {
            let query = partition_statement("s", Duration::from_secs(2), &token, start, priority);
            let text = format!("{query:?}");
            assert!(text.contains(&format!("priority: {shown}")), "{text}");
            let lookup = lookup_statement("SELECT 1".into(), priority).build();
            let text = format!("{lookup:?}");
            assert!(text.contains(&format!("priority: {shown}")), "{text}");
        }
    }

    #[test]
    fn query_starts_are_whole_microseconds() {
        let ts = Timestamp::new(100, 123_456_789).expect("ts");
        assert_eq!(
            microsecond_floor(ts),
            Timestamp::new(100, 123_456_000).expect("ts")
        );
        let exact = Timestamp::new(100, 5_000).expect("ts");
        assert_eq!(microsecond_floor(exact), exact);
    }

    #[test]
    fn parses_retention_periods() {
        assert_eq!(parse_retention("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(
            parse_retention("36h"),
            Some(Duration::from_secs(36 * 3_600))
        );
        assert_eq!(parse_retention("90m"), Some(Duration::from_secs(5_400)));
        assert_eq!(parse_retention("7w"), None);
        assert_eq!(parse_retention("d"), None);
    }

    #[test]
    fn refuses_a_start_older_than_retention() {
        let options = StreamOptions {
            value_capture_type: "NEW_ROW".into(),
            retention_text: "1d".into(),
            retention: Duration::from_secs(86_400),
            partition_mode: "IMMUTABLE_KEY_RANGE".into(),
            all: Vec::new(),
        };
        let now = Timestamp::new(1_000_000, 0).expect("ts");
        let ok = Timestamp::new(1_000_000 - 86_000, 0).expect("ts");
        let old = Timestamp::new(1_000_000 - 86_401, 0).expect("ts");
        assert!(check_retention("s", &options, ok, now).is_ok());
        let err = check_retention("s", &options, old, now).expect_err("too old");
        assert!(err.to_string().contains("keeps data for 1d"), "{err}");
    }
}
