//! The metadata tables in a Spanner database (GoogleSQL), for deployments on several machines.
//!
//! Invariants:
//! - Every write is one read-write transaction: reads of the rows it depends on, then
//!   mutations, committed together. Spanner locks what the transaction read, so
//!   `created_upto` only ever grows even when several processes write at once. Aborted
//!   transactions are retried by the client's transaction runner, and transient failures
//!   (unavailable, deadline exceeded, aborted too often) by [`with_backoff`].
//! - One store runs one read-write transaction at a time (a per-store gate). Nothing in the
//!   reader or writer needs more, and the emulator cannot run concurrent read-write
//!   transactions on one client. Separate stores (processes) run concurrently.
//! - Reads are single-use strong reads.
//! - Tables are created through the database admin API (REST), after checking
//!   `INFORMATION_SCHEMA`, so several processes may try at once.

use std::future::Future;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_gax::error::rpc::Code;
use google_cloud_lro::Poller;
use google_cloud_spanner::client::{DatabaseClient, Spanner};
use google_cloud_spanner::mutation::Mutation;
use google_cloud_spanner::result::Row;
use google_cloud_spanner::statement::Statement;
use google_cloud_spanner::transaction::ReadWriteTransaction;
use google_cloud_spanner::types;
use google_cloud_spanner_admin_database_v1::client::DatabaseAdmin;
use revrepl_record::{Backoff, ShardId, Timestamp, WindowDuration, with_backoff};

use crate::error::MetadataError;
use crate::lease::{Lease, LeaseAttempt};
use crate::progress::{
    CreateProgress, CreatedWindows, ProcessProgress, ProcessStatus, ShardError, data_seen_id,
    truncate_error_text,
};
use crate::run::{RunId, RunRecord};
use crate::store::{MetadataStore, MissingTables};
use crate::tables::{ColumnKind, TableNames};

/// How long table creation may take by default (the reference waits 5 minutes).
const DEFAULT_DDL_TIMEOUT: Duration = Duration::from_secs(300);
/// How long one attempt of a call (connect, query, transaction) may take by default.
const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the metadata database is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpannerOptions {
    database: String,
    endpoint: Option<String>,
    admin_endpoint: Option<String>,
    table_suffix: Option<String>,
    retry: Backoff,
    ddl_timeout: Duration,
    attempt_timeout: Duration,
}

impl SpannerOptions {
    /// The metadata database `projects/<project>/instances/<instance>/databases/<database>`,
    /// reached at Google's endpoints with application default credentials (or at
    /// `SPANNER_EMULATOR_HOST` when that is set).
    pub fn new(database: impl Into<String>) -> Self {
        Self {
            database: database.into(),
            endpoint: None,
            admin_endpoint: None,
            table_suffix: None,
            retry: Backoff::default(),
            ddl_timeout: DEFAULT_DDL_TIMEOUT,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
        }
    }

    /// The gRPC endpoint of the data API, such as `http://127.0.0.1:9010` for an emulator
    /// (plain `http://` endpoints use no credentials).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// The REST endpoint of the database admin API, such as `http://127.0.0.1:9020` for the
    /// emulator's gateway (plain `http://` endpoints use no credentials).
    pub fn with_admin_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.admin_endpoint = Some(endpoint.into());
        self
    }

    /// Appends `_<suffix>` to every table name (`metadata_table_suffix`).
    pub fn with_table_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.table_suffix = Some(suffix.into());
        self
    }

    /// How often and how long a call retries transient failures.
    pub fn with_retry(mut self, retry: Backoff) -> Self {
        self.retry = retry;
        self
    }

    /// How long one attempt of a call may take before it counts as a transient failure
    /// (default 60 s). The client library retries unreachable endpoints on its own for a
    /// long time; this bounds it.
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// How long creating the tables may take (default 5 minutes).
    pub fn with_ddl_timeout(mut self, timeout: Duration) -> Self {
        self.ddl_timeout = timeout;
        self
    }
}

/// The metadata tables in a Spanner database. Cheap to clone; clones share the client and
/// the write gate.
#[derive(Debug, Clone)]
pub struct SpannerMetadataStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: DatabaseClient,
    admin: DatabaseAdmin,
    database: String,
    location: String,
    tables: TableNames,
    retry: Backoff,
    ddl_timeout: Duration,
    attempt_timeout: Duration,
    write_gate: tokio::sync::Mutex<()>,
}

/// What [`Inner::schema_gaps`] found missing.
#[derive(Debug, Default)]
struct SchemaGaps {
    /// Tables that do not exist.
    tables: Vec<String>,
    /// Whether revrepl's index on `data_seen` does not exist.
    index: bool,
}

impl SchemaGaps {
    fn is_empty(&self) -> bool {
        self.tables.is_empty() && !self.index
    }
}

/// The outcome of the work inside a transaction: the transaction itself succeeded, the work
/// may still have found a reason to fail (in which case it buffered nothing).
type Work<T> = google_cloud_spanner::Result<Result<T, MetadataError>>;

fn is_plaintext(endpoint: &str) -> bool {
    endpoint.starts_with("http://")
}

impl SpannerMetadataStore {
    /// Connects to the database (creating the client's session). Does not create the tables:
    /// call [`MetadataStore::ensure_tables`]. An unreachable endpoint is
    /// [`MetadataError::Unavailable`].
    pub async fn connect(options: SpannerOptions) -> Result<Self, MetadataError> {
        let tables = TableNames::new(options.table_suffix.as_deref())?;
        let database = options.database.clone();
        let parts: Vec<&str> = database.split('/').collect();
        let well_formed = matches!(
            parts.as_slice(),
            ["projects", p, "instances", i, "databases", d]
                if !p.is_empty() && !i.is_empty() && !d.is_empty()
        );
        if !well_formed {
            return Err(MetadataError::InvalidRequest {
                reason: format!(
                    "metadata database {database:?} is not of the form \
                     projects/<project>/instances/<instance>/databases/<database>"
                ),
            });
        }
        let location = format!("spanner {database}");
        let (client, admin) = with_backoff(
            options.retry,
            |e: &MetadataError, delay| retrying("connect", e, delay),
            || {
                bounded(
                    &location,
                    "connect",
                    options.attempt_timeout,
                    connect_once(&options, &location),
                )
            },
        )
        .await?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                admin,
                database,
                location,
                tables,
                retry: options.retry,
                ddl_timeout: options.ddl_timeout,
                attempt_timeout: options.attempt_timeout,
                write_gate: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Runs `work` in a read-write transaction, retrying aborted transactions and transient
    /// failures. `work` gets the store's state, a clone of `context` and the transaction; it
    /// buffers mutations, or returns a domain error after buffering nothing.
    async fn read_write<C, T, F, Fut>(
        &self,
        operation: &'static str,
        context: C,
        work: F,
    ) -> Result<T, MetadataError>
    where
        C: Clone + Send + Sync + 'static,
        T: Send + 'static,
        F: Fn(Arc<Inner>, C, ReadWriteTransaction) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Work<T>> + Send + 'static,
    {
        // Everything the transaction closure holds is owned: the client's runner requires a
        // `Send` future for every borrow of the closure, which borrowed captures defeat.
        let work = Arc::new(work);
        with_backoff(
            self.inner.retry,
            |e: &MetadataError, delay| retrying(operation, e, delay),
            || {
                let inner = Arc::clone(&self.inner);
                let work = Arc::clone(&work);
                let context = context.clone();
                async move {
                    // An attempt cut short by the timeout may still commit; every write of
                    // this store is idempotent, so the retry is harmless.
                    let attempt = async {
                        let _gate = inner.write_gate.lock().await;
                        let runner = inner
                            .client
                            .read_write_transaction()
                            .set_exclude_txn_from_change_streams(true)
                            .build();
                        let state = Arc::clone(&inner);
                        let outcome = runner
                            .run(move |transaction| {
                                work(Arc::clone(&state), context.clone(), transaction)
                            })
                            .await
                            .map_err(|e| inner.error(operation, &e))?;
                        outcome.result
                    };
                    bounded(&inner.location, operation, inner.attempt_timeout, attempt).await
                }
            },
        )
        .await
    }
}

impl Inner {
    fn error(&self, operation: &str, error: &google_cloud_spanner::Error) -> MetadataError {
        spanner_error(&self.location, operation, error)
    }

    fn corrupt(&self, table: &str, key: String, reason: impl ToString) -> MetadataError {
        MetadataError::CorruptRow {
            store: self.location.clone(),
            table: table.to_owned(),
            key,
            reason: reason.to_string(),
        }
    }

    /// Runs `statement` as a single-use strong read and returns all rows.
    async fn query(
        &self,
        operation: &'static str,
        statement: Statement,
    ) -> Result<Vec<Row>, MetadataError> {
        with_backoff(
            self.retry,
            |e: &MetadataError, delay| retrying(operation, e, delay),
            || {
                let statement = statement.clone();
                let attempt = async move {
                    let transaction = self.client.single_use().build();
                    let rows = async {
                        let result = transaction.execute_query(statement).await?;
                        collect(result).await
                    }
                    .await;
                    rows.map_err(|e| self.error(operation, &e))
                };
                bounded(&self.location, operation, self.attempt_timeout, attempt)
            },
        )
        .await
    }

    fn text(&self, row: &Row, table: &str, column: &str) -> Result<String, MetadataError> {
        row.get::<String>(column)
            .map_err(|e| self.corrupt(table, column.to_owned(), e))
    }

    fn timestamp(
        &self,
        row: &Row,
        table: &str,
        column: &str,
        key: impl Fn() -> String,
    ) -> Result<Timestamp, MetadataError> {
        let text = row
            .get::<String>(column)
            .map_err(|e| self.corrupt(table, format!("{}, {column}", key()), e))?;
        Timestamp::parse_rfc3339(&text)
            .map_err(|e| self.corrupt(table, format!("{}, {column}", key()), e))
    }

    fn shard(&self, table: &str, run_id: &RunId, text: String) -> Result<ShardId, MetadataError> {
        ShardId::new(text.clone()).map_err(|e| {
            self.corrupt(
                table,
                format!("run_id={:?}, shard={text:?}", run_id.as_str()),
                e,
            )
        })
    }

    fn run_record(
        &self,
        run_id: &RunId,
        start_time: &str,
        duration: &str,
    ) -> Result<RunRecord, MetadataError> {
        let table = self.tables.run();
        let key = |column: &str| format!("run_id={:?}, {column}", run_id.as_str());
        let start = Timestamp::parse_rfc3339(start_time)
            .map_err(|e| self.corrupt(table, key("start_time"), e))?;
        let window: WindowDuration = duration
            .parse()
            .map_err(|e| self.corrupt(table, key("duration"), e))?;
        RunRecord::new(run_id.clone(), start, window)
            .map_err(|e| self.corrupt(table, key("start_time"), e))
    }

    fn process_row(&self, run_id: &RunId, row: &Row) -> Result<ProcessProgress, MetadataError> {
        let table = self.tables.process_progress();
        let shard = self.text(row, table, "shard")?;
        let key = || format!("run_id={:?}, shard={shard:?}", run_id.as_str());
        let file_start_interval = self.timestamp(row, table, "file_start_interval", key)?;
        let status_text = self.text(row, table, "status")?;
        let status: ProcessStatus = status_text
            .parse()
            .map_err(|e| self.corrupt(table, format!("{}, status", key()), e))?;
        Ok(ProcessProgress {
            shard: self.shard(table, run_id, shard.clone())?,
            status,
            file_start_interval,
        })
    }

    /// `Ok` when the stored run `row` is `run`, else [`MetadataError::RunConflict`].
    fn check_same_run(&self, run: &RunRecord, row: &Row) -> Result<(), MetadataError> {
        let table = self.tables.run();
        let start_time = self.text(row, table, "start_time")?;
        let duration = self.text(row, table, "duration")?;
        let stored = self.run_record(run.run_id(), &start_time, &duration)?;
        if stored == *run {
            return Ok(());
        }
        Err(MetadataError::RunConflict {
            store: self.location.clone(),
            table: table.to_owned(),
            run_id: run.run_id().to_string(),
            existing: format!("start {start_time} and window {duration}"),
            requested: format!(
                "start {} and window {}",
                run.start_time_text(),
                run.duration_text()
            ),
        })
    }

    /// The reference's tables and revrepl's own, each with its columns.
    fn all_tables(&self) -> impl Iterator<Item = (&str, &'static [(&'static str, ColumnKind)])> {
        self.tables
            .with_columns()
            .into_iter()
            .chain(self.tables.own_with_columns())
    }

    /// `error`, unless `shard_errors` does not exist: then `None` (the table is optional, see
    /// [`MissingTables`]). Only asked after a call on the table failed.
    async fn unless_no_errors_table(&self, error: MetadataError) -> Option<MetadataError> {
        self.unless_no_table(self.tables.shard_errors(), error)
            .await
    }

    /// `error`, unless `table` (one of revrepl's optional tables) does not exist: then `None`.
    /// Only asked after a call on the table failed.
    async fn unless_no_table(&self, table: &str, error: MetadataError) -> Option<MetadataError> {
        if !matches!(error, MetadataError::Store { .. }) {
            return Some(error);
        }
        let found = self
            .query(
                "read the schema",
                Statement::builder(
                    "SELECT TABLE_NAME FROM INFORMATION_SCHEMA.TABLES \
                     WHERE TABLE_CATALOG = '' AND TABLE_SCHEMA = '' \
                     AND LOWER(TABLE_NAME) = @table",
                )
                .add_param("table", table.to_ascii_lowercase())
                .build(),
            )
            .await;
        match found {
            Ok(rows) if rows.is_empty() => None,
            Ok(_) | Err(_) => Some(error),
        }
    }

    fn shard_error_row(&self, run_id: &RunId, row: &Row) -> Result<ShardError, MetadataError> {
        let table = self.tables.shard_errors();
        let shard = self.text(row, table, "shard")?;
        let key = || format!("run_id={:?}, shard={shard:?}", run_id.as_str());
        Ok(ShardError {
            file_start_interval: self.timestamp(row, table, "file_start_interval", key)?,
            error: self.text(row, table, "error")?,
            recorded_at: self.timestamp(row, table, "update_ts", key)?,
            shard: self.shard(table, run_id, shard.clone())?,
        })
    }

    /// Checks the tables against `INFORMATION_SCHEMA`: a malformed table is an error; returns
    /// what is missing.
    async fn schema_gaps(&self) -> Result<SchemaGaps, MetadataError> {
        let names: Vec<String> = self
            .all_tables()
            .map(|(table, _)| table.to_ascii_lowercase())
            .collect();
        let columns = self
            .query(
                "read the schema",
                Statement::builder(
                    "SELECT TABLE_NAME, COLUMN_NAME, SPANNER_TYPE FROM INFORMATION_SCHEMA.COLUMNS \
                     WHERE TABLE_CATALOG = '' AND TABLE_SCHEMA = '' \
                     AND LOWER(TABLE_NAME) IN UNNEST(@tables)",
                )
                .add_typed_param("tables", names, types::array(types::string()))
                .build(),
            )
            .await?;
        let mut found: Vec<(String, String, String)> = Vec::new();
        for row in &columns {
            let schema = "INFORMATION_SCHEMA.COLUMNS";
            found.push((
                self.text(row, schema, "TABLE_NAME")?.to_ascii_lowercase(),
                self.text(row, schema, "COLUMN_NAME")?.to_ascii_lowercase(),
                self.text(row, schema, "SPANNER_TYPE")?,
            ));
        }
        let mut gaps = SchemaGaps::default();
        for (table, wanted) in self.all_tables() {
            let lower = table.to_ascii_lowercase();
            let present: Vec<&(String, String, String)> =
                found.iter().filter(|(t, _, _)| *t == lower).collect();
            if present.is_empty() {
                gaps.tables.push(table.to_owned());
                continue;
            }
            let mut problems = Vec::new();
            for (column, kind) in wanted {
                let expected = match kind {
                    ColumnKind::Text => "STRING",
                    ColumnKind::Timestamp => "TIMESTAMP",
                };
                match present.iter().find(|(_, c, _)| c == column) {
                    None => problems.push(format!("column {column} is missing")),
                    Some((_, _, actual)) if !actual.starts_with(expected) => {
                        problems.push(format!("column {column} is {actual}, expected {expected}"))
                    }
                    Some(_) => {}
                }
            }
            if !problems.is_empty() {
                let columns: Vec<String> =
                    present.iter().map(|(_, c, t)| format!("{c} {t}")).collect();
                return Err(MetadataError::MalformedTable {
                    store: self.location.clone(),
                    table: table.to_owned(),
                    reason: format!("{} (found {})", problems.join("; "), columns.join(", ")),
                });
            }
        }
        let index = self
            .query(
                "read the schema",
                Statement::builder(
                    "SELECT INDEX_NAME FROM INFORMATION_SCHEMA.INDEXES \
                     WHERE TABLE_CATALOG = '' AND TABLE_SCHEMA = '' \
                     AND LOWER(INDEX_NAME) = @index",
                )
                .add_param("index", self.tables.data_seen_index().to_ascii_lowercase())
                .build(),
            )
            .await?;
        gaps.index = index.is_empty();
        Ok(gaps)
    }

    async fn apply_ddl(&self, statements: Vec<String>) -> Result<(), MetadataError> {
        let poll = self
            .admin
            .update_database_ddl()
            .set_database(self.database.clone())
            .set_statements(statements)
            .poller()
            .until_done();
        match tokio::time::timeout(self.ddl_timeout, poll).await {
            Ok(result) => result.map_err(|e| self.error("create tables", &e)),
            Err(_) => Err(MetadataError::Unavailable {
                store: self.location.clone(),
                operation: "create tables".to_owned(),
                message: format!("the schema change did not finish in {:?}", self.ddl_timeout),
            }),
        }
    }
}

async fn connect_once(
    options: &SpannerOptions,
    location: &str,
) -> Result<(DatabaseClient, DatabaseAdmin), MetadataError> {
    let err = |e: &google_cloud_spanner::Error| spanner_error(location, "connect", e);
    let builder_err = |e: google_cloud_gax::client_builder::Error| MetadataError::Unavailable {
        store: location.to_owned(),
        operation: "connect".to_owned(),
        message: e.to_string(),
    };
    let mut builder = Spanner::builder();
    if let Some(endpoint) = &options.endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    let spanner = builder.build().await.map_err(builder_err)?;
    let client = spanner
        .database_client(options.database.clone())
        .build()
        .await
        .map_err(|e| err(&e))?;
    let admin = match &options.admin_endpoint {
        Some(endpoint) => {
            let mut builder = DatabaseAdmin::builder().with_endpoint(endpoint.clone());
            if is_plaintext(endpoint) {
                builder = builder.with_credentials(
                    google_cloud_auth::credentials::anonymous::Builder::new().build(),
                );
            }
            builder.build().await
        }
        None => spanner.database_admin_builder().build().await,
    }
    .map_err(builder_err)?;
    Ok((client, admin))
}

/// `attempt`, or [`MetadataError::Unavailable`] if it takes longer than `timeout`.
async fn bounded<T>(
    location: &str,
    operation: &str,
    timeout: Duration,
    attempt: impl Future<Output = Result<T, MetadataError>>,
) -> Result<T, MetadataError> {
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(MetadataError::Unavailable {
                store: location.to_owned(),
                operation: operation.to_owned(),
                message: format!("no answer within {timeout:?}"),
            })
        })
}

fn retrying(operation: &str, error: &MetadataError, delay: Duration) {
    tracing::warn!(operation, %error, ?delay, "metadata store unavailable, retrying");
}

async fn collect(
    mut result: google_cloud_spanner::result::ResultSet,
) -> google_cloud_spanner::Result<Vec<Row>> {
    let mut rows = Vec::new();
    while let Some(row) = result.next().await {
        rows.push(row?);
    }
    Ok(rows)
}

/// Maps a Spanner client error: unavailable, deadline exceeded, aborted, resource exhausted,
/// and failures to reach the endpoint are transient; everything else is fatal.
fn spanner_error(
    location: &str,
    operation: &str,
    error: &google_cloud_spanner::Error,
) -> MetadataError {
    let transient = match error.status() {
        Some(status) => matches!(
            status.code,
            Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::ResourceExhausted
        ),
        None => {
            error.is_timeout()
                || error.is_exhausted()
                || error.is_transient_and_before_rpc()
                || !(error.is_serialization()
                    || error.is_deserialization()
                    || error.is_binding()
                    || error.is_authentication())
        }
    };
    let store = location.to_owned();
    let operation = operation.to_owned();
    let message = error.to_string();
    if transient {
        MetadataError::Unavailable {
            store,
            operation,
            message,
        }
    } else {
        MetadataError::Store {
            store,
            operation,
            message,
        }
    }
}

/// The GoogleSQL `CREATE TABLE` statement of `table`, one of `tables`' names.
fn create_table_ddl(tables: &TableNames, table: &str) -> String {
    if table == tables.run() {
        format!(
            "CREATE TABLE {table} (\n  run_id STRING(MAX) NOT NULL,\n  start_time STRING(MAX) NOT NULL,\n  duration STRING(MAX) NOT NULL,\n) PRIMARY KEY (run_id)"
        )
    } else if table == tables.create_progress() {
        format!(
            "CREATE TABLE {table} (\n  run_id STRING(MAX) NOT NULL,\n  shard STRING(MAX) NOT NULL,\n  created_upto TIMESTAMP NOT NULL,\n) PRIMARY KEY (run_id, shard)"
        )
    } else if table == tables.data_seen() {
        format!(
            "CREATE TABLE {table} (\n  id STRING(MAX) NOT NULL,\n  run_id STRING(MAX) NOT NULL,\n  shard STRING(MAX) NOT NULL,\n  window_seen TIMESTAMP NOT NULL,\n  update_ts TIMESTAMP DEFAULT (CURRENT_TIMESTAMP),\n) PRIMARY KEY (id),\n  ROW DELETION POLICY (OLDER_THAN(update_ts, INTERVAL 30 DAY))"
        )
    } else if table == tables.leases() {
        format!(
            "CREATE TABLE {table} (\n  run_id STRING(MAX) NOT NULL,\n  role STRING(MAX) NOT NULL,\n  owner STRING(MAX) NOT NULL,\n  expires_at TIMESTAMP NOT NULL,\n  update_ts TIMESTAMP NOT NULL,\n) PRIMARY KEY (run_id, role)"
        )
    } else if table == tables.shard_errors() {
        format!(
            "CREATE TABLE {table} (\n  run_id STRING(MAX) NOT NULL,\n  shard STRING(MAX) NOT NULL,\n  file_start_interval TIMESTAMP NOT NULL,\n  error STRING(MAX) NOT NULL,\n  update_ts TIMESTAMP NOT NULL,\n) PRIMARY KEY (run_id, shard)"
        )
    } else {
        format!(
            "CREATE TABLE {table} (\n  run_id STRING(MAX) NOT NULL,\n  shard STRING(MAX) NOT NULL,\n  file_start_interval TIMESTAMP NOT NULL,\n  status STRING(MAX) NOT NULL,\n) PRIMARY KEY (run_id, shard)"
        )
    }
}

fn index_ddl(tables: &TableNames) -> String {
    format!(
        "CREATE INDEX {} ON {} (run_id, shard, window_seen)",
        tables.data_seen_index(),
        tables.data_seen()
    )
}

/// The GoogleSQL DDL of the Spanner store for `tables`, in creation order (for docs and tools).
pub fn spanner_ddl(tables: &TableNames) -> Vec<String> {
    let mut statements: Vec<String> = tables
        .with_columns()
        .into_iter()
        .chain(tables.own_with_columns())
        .map(|(table, _)| create_table_ddl(tables, table))
        .collect();
    statements.push(index_ddl(tables));
    statements
}

/// The shards as a typed `ARRAY<STRING>` parameter value.
fn shard_list<'a>(shards: impl Iterator<Item = &'a ShardId>) -> Vec<String> {
    shards.map(|s| s.as_str().to_owned()).collect()
}

fn timestamp_text(ts: Timestamp) -> String {
    ts.to_rfc3339()
}

#[async_trait]
impl MetadataStore for SpannerMetadataStore {
    fn location(&self) -> &str {
        &self.inner.location
    }

    fn tables(&self) -> &TableNames {
        &self.inner.tables
    }

    async fn ensure_tables(&self, missing: MissingTables) -> Result<(), MetadataError> {
        let inner = &self.inner;
        let gaps = inner.schema_gaps().await?;
        if gaps.is_empty() {
            return Ok(());
        }
        if missing == MissingTables::Fail {
            if let Some(table) = gaps.tables.iter().find(|t| !inner.tables.is_own(t)) {
                return Err(MetadataError::MalformedTable {
                    store: inner.location.clone(),
                    table: table.clone(),
                    reason: "the table does not exist (create the metadata tables first)"
                        .to_owned(),
                });
            }
            // revrepl's own index is only a speed-up: without it, listing works too.
            if gaps.index {
                tracing::warn!(
                    store = %inner.location,
                    index = inner.tables.data_seen_index(),
                    "the index on data_seen is missing: listing windows scans the table"
                );
            }
            // revrepl's own tables are optional: without `shard_errors`, error texts are only
            // in the writer's log.
            for table in &gaps.tables {
                tracing::debug!(store = %inner.location, table, "optional table is missing");
            }
            return Ok(());
        }
        let mut ddl: Vec<String> = gaps
            .tables
            .iter()
            .map(|table| create_table_ddl(&inner.tables, table))
            .collect();
        if gaps.index || gaps.tables.iter().any(|t| t == inner.tables.data_seen()) {
            ddl.push(index_ddl(&inner.tables));
        }
        tracing::info!(store = %inner.location, statements = ddl.len(), "creating metadata tables");
        match inner.apply_ddl(ddl).await {
            Ok(()) => Ok(()),
            // Another process may have created them at the same time: check again.
            Err(error) => match inner.schema_gaps().await {
                Ok(still_missing) if still_missing.is_empty() => Ok(()),
                _ => Err(error),
            },
        }
    }

    async fn record_run(&self, run: &RunRecord) -> Result<(), MetadataError> {
        self.read_write(
            "record run",
            run.clone(),
            |inner, run, transaction| async move {
                let table = inner.tables.run();
                let statement = Statement::builder(format!(
                    "SELECT start_time, duration FROM {table} WHERE run_id = @run_id"
                ))
                .add_param("run_id", run.run_id().as_str())
                .build();
                let rows = collect(transaction.execute_query(statement).await?).await?;
                let Some(row) = rows.first() else {
                    transaction.buffer([Mutation::new_insert_builder(table)
                        .set("run_id")
                        .to(run.run_id().as_str())
                        .set("start_time")
                        .to(run.start_time_text())
                        .set("duration")
                        .to(run.duration_text())
                        .build()])?;
                    return Ok(Ok(()));
                };
                Ok(inner.check_same_run(&run, row))
            },
        )
        .await
    }

    async fn run(&self, run_id: &RunId) -> Result<Option<RunRecord>, MetadataError> {
        let inner = &self.inner;
        let table = inner.tables.run();
        let rows = inner
            .query(
                "read run",
                Statement::builder(format!(
                    "SELECT start_time, duration FROM {table} WHERE run_id = @run_id"
                ))
                .add_param("run_id", run_id.as_str())
                .build(),
            )
            .await?;
        rows.first()
            .map(|row| {
                let start_time = inner.text(row, table, "start_time")?;
                let duration = inner.text(row, table, "duration")?;
                inner.run_record(run_id, &start_time, &duration)
            })
            .transpose()
    }

    async fn register_shards(
        &self,
        run_id: &RunId,
        shards: &[ShardId],
        created_upto: Timestamp,
    ) -> Result<(), MetadataError> {
        if shards.is_empty() {
            return Ok(());
        }
        let context = Arc::new((
            run_id.clone(),
            shards.to_vec(),
            timestamp_text(created_upto),
        ));
        self.read_write(
            "register shards",
            context,
            |inner, context, transaction| async move {
                let (run_id, shards, upto) = &*context;
                let table = inner.tables.create_progress();
                let statement = Statement::builder(format!(
                    "SELECT shard FROM {table} WHERE run_id = @run_id AND shard IN UNNEST(@shards)"
                ))
                .add_param("run_id", run_id.as_str())
                .add_typed_param(
                    "shards",
                    shard_list(shards.iter()),
                    types::array(types::string()),
                )
                .build();
                let rows = collect(transaction.execute_query(statement).await?).await?;
                let mut existing = Vec::with_capacity(rows.len());
                for row in &rows {
                    existing.push(row.get::<String>("shard")?);
                }
                let inserts: Vec<Mutation> = shards
                    .iter()
                    .filter(|s| !existing.iter().any(|e| e == s.as_str()))
                    .map(|shard| {
                        Mutation::new_insert_builder(table)
                            .set("run_id")
                            .to(run_id.as_str())
                            .set("shard")
                            .to(shard.as_str())
                            .set("created_upto")
                            .to(upto.as_str())
                            .build()
                    })
                    .collect();
                transaction.buffer(inserts)?;
                Ok(Ok(()))
            },
        )
        .await
    }

    async fn record_windows(
        &self,
        run_id: &RunId,
        windows: &CreatedWindows,
    ) -> Result<(), MetadataError> {
        let context = Arc::new((run_id.clone(), windows.clone()));
        self.read_write(
            "record windows",
            context,
            |inner, context, transaction| async move {
                let (run_id, windows) = &*context;
                let progress = inner.tables.create_progress();
                let data_seen = inner.tables.data_seen();
                let upto = windows.upto();
                let statement = Statement::builder(format!(
                    "SELECT shard, created_upto FROM {progress} \
                 WHERE run_id = @run_id AND shard IN UNNEST(@shards)"
                ))
                .add_param("run_id", run_id.as_str())
                .add_typed_param(
                    "shards",
                    shard_list(windows.shards()),
                    types::array(types::string()),
                )
                .build();
                let rows = collect(transaction.execute_query(statement).await?).await?;
                // Shards already at or beyond `upto` keep their value: never backwards.
                let mut ahead: Vec<String> = Vec::new();
                for row in &rows {
                    let shard: String = row.get("shard")?;
                    let current: String = row.get("created_upto")?;
                    match Timestamp::parse_rfc3339(&current) {
                        Ok(current) if current >= upto => ahead.push(shard),
                        Ok(_) => {}
                        Err(e) => {
                            let key = format!(
                                "run_id={:?}, shard={shard:?}, created_upto",
                                run_id.as_str()
                            );
                            return Ok(Err(inner.corrupt(progress, key, e)));
                        }
                    }
                }
                let mut mutations: Vec<Mutation> = windows
                    .seen()
                    .map(|(shard, end)| {
                        Mutation::new_insert_or_update_builder(data_seen)
                            .set("id")
                            .to(data_seen_id(end, run_id, shard))
                            .set("run_id")
                            .to(run_id.as_str())
                            .set("shard")
                            .to(shard.as_str())
                            .set("window_seen")
                            .to(timestamp_text(end))
                            .build()
                    })
                    .collect();
                let upto_text = timestamp_text(upto);
                mutations.extend(
                    windows
                        .shards()
                        .filter(|s| !ahead.iter().any(|a| a == s.as_str()))
                        .map(|shard| {
                            Mutation::new_insert_or_update_builder(progress)
                                .set("run_id")
                                .to(run_id.as_str())
                                .set("shard")
                                .to(shard.as_str())
                                .set("created_upto")
                                .to(upto_text.as_str())
                                .build()
                        }),
                );
                transaction.buffer(mutations)?;
                Ok(Ok(()))
            },
        )
        .await
    }

    async fn created_upto(
        &self,
        run_id: &RunId,
        shard: &ShardId,
    ) -> Result<Option<Timestamp>, MetadataError> {
        let inner = &self.inner;
        let table = inner.tables.create_progress();
        let rows = inner
            .query(
                "read created_upto",
                Statement::builder(format!(
                    "SELECT created_upto FROM {table} WHERE run_id = @run_id AND shard = @shard"
                ))
                .add_param("run_id", run_id.as_str())
                .add_param("shard", shard.as_str())
                .build(),
            )
            .await?;
        rows.first()
            .map(|row| {
                inner.timestamp(row, table, "created_upto", || {
                    format!("run_id={:?}, shard={:?}", run_id.as_str(), shard.as_str())
                })
            })
            .transpose()
    }

    async fn create_progress(&self, run_id: &RunId) -> Result<Vec<CreateProgress>, MetadataError> {
        let inner = &self.inner;
        let table = inner.tables.create_progress();
        let rows = inner
            .query(
                "read create progress",
                Statement::builder(format!(
                    "SELECT shard, created_upto FROM {table} WHERE run_id = @run_id ORDER BY shard"
                ))
                .add_param("run_id", run_id.as_str())
                .build(),
            )
            .await?;
        rows.iter()
            .map(|row| {
                let shard = inner.text(row, table, "shard")?;
                let created_upto = inner.timestamp(row, table, "created_upto", || {
                    format!("run_id={:?}, shard={shard:?}", run_id.as_str())
                })?;
                Ok(CreateProgress {
                    shard: inner.shard(table, run_id, shard)?,
                    created_upto,
                })
            })
            .collect()
    }

    async fn windows_with_data(
        &self,
        run_id: &RunId,
        shard: &ShardId,
        ends: RangeInclusive<Timestamp>,
        limit: usize,
    ) -> Result<Vec<Timestamp>, MetadataError> {
        let inner = &self.inner;
        let table = inner.tables.data_seen();
        let rows = inner
            .query(
                "list windows with data",
                Statement::builder(format!(
                    "SELECT window_seen FROM {table} \
                     WHERE run_id = @run_id AND shard = @shard \
                     AND window_seen >= @from AND window_seen <= @to \
                     ORDER BY window_seen LIMIT @limit"
                ))
                .add_param("run_id", run_id.as_str())
                .add_param("shard", shard.as_str())
                .add_typed_param("from", timestamp_text(*ends.start()), types::timestamp())
                .add_typed_param("to", timestamp_text(*ends.end()), types::timestamp())
                .add_param("limit", i64::try_from(limit).unwrap_or(i64::MAX))
                .build(),
            )
            .await?;
        rows.iter()
            .map(|row| {
                inner.timestamp(row, table, "window_seen", || {
                    format!("run_id={:?}, shard={:?}", run_id.as_str(), shard.as_str())
                })
            })
            .collect()
    }

    async fn set_process_progress(
        &self,
        run_id: &RunId,
        progress: &ProcessProgress,
    ) -> Result<(), MetadataError> {
        let context = Arc::new((run_id.clone(), progress.clone()));
        self.read_write(
            "write process progress",
            context,
            |inner, context, transaction| async move {
                let (run_id, progress) = &*context;
                transaction.buffer([Mutation::new_insert_or_update_builder(
                    inner.tables.process_progress(),
                )
                .set("run_id")
                .to(run_id.as_str())
                .set("shard")
                .to(progress.shard.as_str())
                .set("file_start_interval")
                .to(timestamp_text(progress.file_start_interval))
                .set("status")
                .to(progress.status.as_str())
                .build()])?;
                Ok(Ok(()))
            },
        )
        .await
    }

    async fn process_progress(
        &self,
        run_id: &RunId,
        shard: &ShardId,
    ) -> Result<Option<ProcessProgress>, MetadataError> {
        let inner = &self.inner;
        let table = inner.tables.process_progress();
        let rows = inner
            .query(
                "read process progress",
                Statement::builder(format!(
                    "SELECT shard, file_start_interval, status FROM {table} \
                     WHERE run_id = @run_id AND shard = @shard"
                ))
                .add_param("run_id", run_id.as_str())
                .add_param("shard", shard.as_str())
                .build(),
            )
            .await?;
        rows.first()
            .map(|row| inner.process_row(run_id, row))
            .transpose()
    }

    async fn list_process_progress(
        &self,
        run_id: &RunId,
        status: Option<ProcessStatus>,
    ) -> Result<Vec<ProcessProgress>, MetadataError> {
        let inner = &self.inner;
        let table = inner.tables.process_progress();
        let statement = match status {
            Some(status) => Statement::builder(format!(
                "SELECT shard, file_start_interval, status FROM {table} \
                 WHERE run_id = @run_id AND status = @status ORDER BY shard"
            ))
            .add_param("status", status.as_str()),
            None => Statement::builder(format!(
                "SELECT shard, file_start_interval, status FROM {table} \
                 WHERE run_id = @run_id ORDER BY shard"
            )),
        }
        .add_param("run_id", run_id.as_str())
        .build();
        let rows = inner.query("list process progress", statement).await?;
        rows.iter()
            .map(|row| inner.process_row(run_id, row))
            .collect()
    }

    async fn record_shard_error(
        &self,
        run_id: &RunId,
        shard: &ShardId,
        window_start: Timestamp,
        error: &str,
    ) -> Result<(), MetadataError> {
        let context = Arc::new((
            run_id.clone(),
            shard.clone(),
            timestamp_text(window_start),
            truncate_error_text(error),
            timestamp_text(Timestamp::from(chrono::Utc::now())),
        ));
        let written = self
            .read_write(
                "record shard error",
                context,
                |inner, context, transaction| async move {
                    let (run_id, shard, interval, text, now) = &*context;
                    transaction.buffer([Mutation::new_insert_or_update_builder(
                        inner.tables.shard_errors(),
                    )
                    .set("run_id")
                    .to(run_id.as_str())
                    .set("shard")
                    .to(shard.as_str())
                    .set("file_start_interval")
                    .to(interval.as_str())
                    .set("error")
                    .to(text.as_str())
                    .set("update_ts")
                    .to(now.as_str())
                    .build()])?;
                    Ok(Ok(()))
                },
            )
            .await;
        let Err(error) = written else {
            return Ok(());
        };
        match self.inner.unless_no_errors_table(error).await {
            Some(error) => Err(error),
            None => {
                tracing::warn!(
                    store = %self.inner.location,
                    table = self.inner.tables.shard_errors(),
                    "the table of error texts does not exist (create the metadata tables to \
                     add it): the error text is only in the log"
                );
                Ok(())
            }
        }
    }

    async fn acquire_lease(
        &self,
        run_id: &RunId,
        role: &str,
        owner: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<LeaseAttempt, MetadataError> {
        let context = Arc::new((
            run_id.clone(),
            role.to_owned(),
            owner.to_owned(),
            now,
            timestamp_text(expires_at),
        ));
        let attempt = self
            .read_write(
                "acquire lease",
                context,
                |inner, context, transaction| async move {
                    let (run_id, role, owner, now, expires_text) = &*context;
                    let table = inner.tables.leases();
                    let statement = Statement::builder(format!(
                        "SELECT owner, expires_at FROM {table} \
                         WHERE run_id = @run_id AND role = @role"
                    ))
                    .add_param("run_id", run_id.as_str())
                    .add_param("role", role.as_str())
                    .build();
                    let rows = collect(transaction.execute_query(statement).await?).await?;
                    if let Some(row) = rows.first() {
                        let holder: String = row.get("owner")?;
                        if holder != *owner {
                            let until = inner.timestamp(row, table, "expires_at", || {
                                format!("run_id={:?}, role={role:?}", run_id.as_str())
                            });
                            match until {
                                Err(e) => return Ok(Err(e)),
                                Ok(until) if until > *now => {
                                    return Ok(Ok(LeaseAttempt::HeldBy(Lease {
                                        role: role.clone(),
                                        owner: holder,
                                        expires_at: until,
                                    })));
                                }
                                Ok(_) => {}
                            }
                        }
                    }
                    transaction.buffer([Mutation::new_insert_or_update_builder(table)
                        .set("run_id")
                        .to(run_id.as_str())
                        .set("role")
                        .to(role.as_str())
                        .set("owner")
                        .to(owner.as_str())
                        .set("expires_at")
                        .to(expires_text.as_str())
                        .set("update_ts")
                        .to(timestamp_text(*now))
                        .build()])?;
                    Ok(Ok(LeaseAttempt::Acquired))
                },
            )
            .await;
        match attempt {
            Ok(outcome) => Ok(outcome),
            Err(error) => match self
                .inner
                .unless_no_table(self.inner.tables.leases(), error)
                .await
            {
                Some(error) => Err(error),
                None => Ok(LeaseAttempt::NoTable),
            },
        }
    }

    async fn release_lease(
        &self,
        run_id: &RunId,
        role: &str,
        owner: &str,
    ) -> Result<(), MetadataError> {
        let context = Arc::new((run_id.clone(), role.to_owned(), owner.to_owned()));
        let released = self
            .read_write(
                "release lease",
                context,
                |inner, context, transaction| async move {
                    let (run_id, role, owner) = &*context;
                    let table = inner.tables.leases();
                    let statement = Statement::builder(format!(
                        "SELECT owner FROM {table} WHERE run_id = @run_id AND role = @role"
                    ))
                    .add_param("run_id", run_id.as_str())
                    .add_param("role", role.as_str())
                    .build();
                    let rows = collect(transaction.execute_query(statement).await?).await?;
                    let mine = match rows.first() {
                        Some(row) => row.get::<String>("owner")? == *owner,
                        None => false,
                    };
                    if mine {
                        let key = google_cloud_spanner::key![run_id.as_str(), role.as_str()];
                        transaction.buffer([Mutation::delete(
                            table,
                            google_cloud_spanner::key::KeySet::from(key),
                        )])?;
                    }
                    Ok(Ok(()))
                },
            )
            .await;
        match released {
            Ok(()) => Ok(()),
            Err(error) => match self
                .inner
                .unless_no_table(self.inner.tables.leases(), error)
                .await
            {
                Some(error) => Err(error),
                None => Ok(()),
            },
        }
    }

    async fn leases(&self, run_id: &RunId) -> Result<Vec<Lease>, MetadataError> {
        let inner = &self.inner;
        let table = inner.tables.leases();
        let read = inner
            .query(
                "read leases",
                Statement::builder(format!(
                    "SELECT role, owner, expires_at FROM {table} \
                     WHERE run_id = @run_id ORDER BY role"
                ))
                .add_param("run_id", run_id.as_str())
                .build(),
            )
            .await;
        let rows = match read {
            Ok(rows) => rows,
            Err(error) => {
                return match inner.unless_no_table(table, error).await {
                    Some(error) => Err(error),
                    None => Ok(Vec::new()),
                };
            }
        };
        rows.iter()
            .map(|row| {
                let role = inner.text(row, table, "role")?;
                Ok(Lease {
                    owner: inner.text(row, table, "owner")?,
                    expires_at: inner.timestamp(row, table, "expires_at", || {
                        format!("run_id={:?}, role={role:?}", run_id.as_str())
                    })?,
                    role,
                })
            })
            .collect()
    }

    async fn shard_errors(&self, run_id: &RunId) -> Result<Vec<ShardError>, MetadataError> {
        let inner = &self.inner;
        let table = inner.tables.shard_errors();
        let read = inner
            .query(
                "read shard errors",
                Statement::builder(format!(
                    "SELECT shard, file_start_interval, error, update_ts FROM {table} \
                     WHERE run_id = @run_id ORDER BY shard"
                ))
                .add_param("run_id", run_id.as_str())
                .build(),
            )
            .await;
        let rows = match read {
            Ok(rows) => rows,
            Err(error) => {
                return match inner.unless_no_errors_table(error).await {
                    Some(error) => Err(error),
                    None => Ok(Vec::new()),
                };
            }
        };
        rows.iter()
            .map(|row| inner.shard_error_row(run_id, row))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use google_cloud_gax::error::rpc::Status;
    use revrepl_record::{Classify, ErrorClass};

    use super::*;

    fn class_of(code: Code) -> ErrorClass {
        let error = google_cloud_spanner::Error::service(Status::default().set_code(code));
        spanner_error("spanner db", "op", &error).class()
    }

    #[test]
    fn unavailable_and_aborted_are_transient_the_rest_fatal() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::ResourceExhausted,
        ] {
            assert_eq!(class_of(code), ErrorClass::Transient, "{code:?}");
        }
        for code in [
            Code::NotFound,
            Code::PermissionDenied,
            Code::InvalidArgument,
            Code::FailedPrecondition,
        ] {
            assert_eq!(class_of(code), ErrorClass::Fatal, "{code:?}");
        }
    }

    #[test]
    fn ddl_uses_the_reference_names_and_the_suffix() {
        let tables = TableNames::new(Some("blue")).expect("valid suffix");
        let ddl = spanner_ddl(&tables);
        assert_eq!(ddl.len(), 7);
        assert!(ddl[0].starts_with("CREATE TABLE spanner_to_gcs_metadata_blue ("));
        assert!(ddl[1].contains("created_upto TIMESTAMP NOT NULL"));
        assert!(ddl[2].contains("ROW DELETION POLICY (OLDER_THAN(update_ts, INTERVAL 30 DAY))"));
        assert!(ddl[3].contains("file_start_interval TIMESTAMP NOT NULL"));
        assert!(ddl[4].starts_with("CREATE TABLE shard_errors_blue ("));
        assert!(ddl[4].contains("error STRING(MAX) NOT NULL"));
        assert!(ddl[5].starts_with("CREATE TABLE leases_blue ("));
        assert!(ddl[5].contains("PRIMARY KEY (run_id, role)"));
        assert_eq!(
            ddl[6],
            "CREATE INDEX data_seen_blue_by_run_shard_window ON data_seen_blue (run_id, shard, window_seen)"
        );
    }
}
