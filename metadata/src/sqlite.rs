//! The embedded store: the same four tables (and revrepl's `shard_errors`) in one SQLite file,
//! for single-machine runs.
//!
//! Invariants:
//! - The file is in WAL mode, so the reader process and the writer process can share it:
//!   readers never block, and each write is one `BEGIN IMMEDIATE` transaction that waits up to
//!   the busy timeout for the other process's write to finish (a still-busy file is
//!   [`MetadataError::Unavailable`], retried with backoff).
//! - Timestamps are stored as RFC 3339 UTC text with exactly nine fractional digits
//!   (`2024-01-05T10:33:50.000000000Z`): fixed width, so text order is time order and
//!   `created_upto < ?` compares correctly; SQLite's date functions read it as is.
//! - All SQLite calls run on tokio's blocking pool, never on the async runtime's threads.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::SecondsFormat;
use revrepl_record::{Backoff, ShardId, Timestamp, WindowDuration, with_backoff};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};

use crate::error::MetadataError;
use crate::lease::{Lease, LeaseAttempt};
use crate::progress::{
    CreateProgress, CreatedWindows, ProcessProgress, ProcessStatus, ShardError, data_seen_id,
    truncate_error_text,
};
use crate::run::{RunId, RunRecord};
use crate::store::{MetadataStore, MissingTables};
use crate::tables::TableNames;

/// How long one SQLite call waits for another connection's write lock by default.
const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Options of [`SqliteMetadataStore::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    table_suffix: Option<String>,
    busy_timeout: Duration,
    retry: Backoff,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            table_suffix: None,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            retry: Backoff::default(),
        }
    }
}

impl SqliteOptions {
    /// Appends `_<suffix>` to every table name (`metadata_table_suffix`).
    pub fn with_table_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.table_suffix = Some(suffix.into());
        self
    }

    /// How long one call waits for another process's write (default 5 s).
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How often and how long a call retries while the file stays busy.
    pub fn with_retry(mut self, retry: Backoff) -> Self {
        self.retry = retry;
        self
    }
}

/// The metadata tables in an SQLite file. Cheap to clone; clones share one connection.
#[derive(Debug, Clone)]
pub struct SqliteMetadataStore {
    inner: Arc<Inner>,
    retry: Backoff,
}

#[derive(Debug)]
struct Inner {
    connection: Mutex<Connection>,
    location: String,
    tables: TableNames,
}

impl SqliteMetadataStore {
    /// Opens (creating if needed) the SQLite file at `path` in WAL mode. Does not create the
    /// tables: call [`MetadataStore::ensure_tables`].
    pub async fn open(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<Self, MetadataError> {
        let tables = TableNames::new(options.table_suffix.as_deref())?;
        let path: PathBuf = path.as_ref().to_path_buf();
        let location = format!("sqlite {}", path.display());
        let busy_timeout = options.busy_timeout;
        let connection = with_backoff(
            options.retry,
            |e: &MetadataError, delay| retrying("open", e, delay),
            || {
                let path = path.clone();
                let location = location.clone();
                async move {
                    let task_location = location.clone();
                    tokio::task::spawn_blocking(move || {
                        open_connection(&path, busy_timeout, &task_location)
                    })
                    .await
                    .map_err(|e| join_error(&location, "open", &e))?
                }
            },
        )
        .await?;
        Ok(Self {
            inner: Arc::new(Inner {
                connection: Mutex::new(connection),
                location,
                tables,
            }),
            retry: options.retry,
        })
    }

    /// Runs `work` on the blocking pool with the connection, retrying transient errors.
    async fn call<T, F>(&self, operation: &'static str, work: F) -> Result<T, MetadataError>
    where
        T: Send + 'static,
        F: Fn(&mut Connection, &Inner) -> Result<T, MetadataError> + Send + Sync + 'static,
    {
        let work = Arc::new(work);
        with_backoff(
            self.retry,
            |e: &MetadataError, delay| retrying(operation, e, delay),
            || {
                let inner = Arc::clone(&self.inner);
                let work = Arc::clone(&work);
                async move {
                    let location = inner.location.clone();
                    tokio::task::spawn_blocking(move || {
                        let mut connection = lock(&inner.connection);
                        work(&mut connection, &inner)
                    })
                    .await
                    .map_err(|e| join_error(&location, operation, &e))?
                }
            },
        )
        .await
    }
}

fn retrying(operation: &str, error: &MetadataError, delay: Duration) {
    tracing::warn!(operation, %error, ?delay, "metadata store busy, retrying");
}

fn lock(connection: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves no half-done transaction: rusqlite rolls back on
    // drop. The connection stays usable.
    connection
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn join_error(location: &str, operation: &str, error: &tokio::task::JoinError) -> MetadataError {
    MetadataError::Store {
        store: location.to_owned(),
        operation: operation.to_owned(),
        message: format!("the blocking task failed: {error}"),
    }
}

fn open_connection(
    path: &Path,
    busy_timeout: Duration,
    location: &str,
) -> Result<Connection, MetadataError> {
    let err = |e: rusqlite::Error| sqlite_error(location, "open", &e);
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags).map_err(err)?;
    connection.busy_timeout(busy_timeout).map_err(err)?;
    let mode: String = connection
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(MetadataError::Store {
            store: location.to_owned(),
            operation: "open".to_owned(),
            message: format!(
                "the file cannot use write-ahead logging (journal mode is {mode:?}); the reader \
                 and the writer could not share it"
            ),
        });
    }
    // Every commit reaches the disk before the call returns: the reader's order of
    // durability (file, then metadata) and the writer's progress rely on it.
    connection
        .pragma_update(None, "synchronous", "FULL")
        .map_err(err)?;
    Ok(connection)
}

/// Maps an SQLite error: a busy or locked file and I/O errors are transient.
fn sqlite_error(location: &str, operation: &str, error: &rusqlite::Error) -> MetadataError {
    let transient = matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::SystemIoFailure)
    );
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

/// The stored form of a timestamp: fixed-width RFC 3339 with nine fractional digits.
fn timestamp_text(ts: Timestamp) -> String {
    ts.to_datetime().to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Whether `table` exists in the file (names compare without case, as SQLite's do).
fn table_exists(connection: &Connection, table: &str) -> rusqlite::Result<bool> {
    connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1 COLLATE NOCASE)",
        [table],
        |row| row.get(0),
    )
}

impl Inner {
    /// `error`, unless it came from `shard_errors` not existing: then `None` (the table is
    /// optional, see [`MissingTables`]).
    fn unless_no_errors_table(
        &self,
        connection: &Connection,
        error: MetadataError,
    ) -> Option<MetadataError> {
        self.unless_no_table(connection, self.tables.shard_errors(), error)
    }

    /// `error`, unless `table` (one of revrepl's optional tables) does not exist: then `None`.
    fn unless_no_table(
        &self,
        connection: &Connection,
        table: &str,
        error: MetadataError,
    ) -> Option<MetadataError> {
        match table_exists(connection, table) {
            Ok(false) => None,
            Ok(true) | Err(_) => Some(error),
        }
    }

    fn err(&self, operation: &str) -> impl Fn(rusqlite::Error) -> MetadataError + '_ {
        let operation = operation.to_owned();
        move |e| sqlite_error(&self.location, &operation, &e)
    }

    fn corrupt(&self, table: &str, key: String, reason: impl ToString) -> MetadataError {
        MetadataError::CorruptRow {
            store: self.location.clone(),
            table: table.to_owned(),
            key,
            reason: reason.to_string(),
        }
    }

    fn timestamp(
        &self,
        table: &str,
        key: impl Fn() -> String,
        text: &str,
    ) -> Result<Timestamp, MetadataError> {
        Timestamp::parse_rfc3339(text).map_err(|e| self.corrupt(table, key(), e))
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

    fn process_row(
        &self,
        run_id: &RunId,
        shard: String,
        interval: &str,
        status: &str,
    ) -> Result<ProcessProgress, MetadataError> {
        let table = self.tables.process_progress();
        let key = |column: &str| format!("run_id={:?}, shard={shard:?}, {column}", run_id.as_str());
        let file_start_interval = self.timestamp(table, || key("file_start_interval"), interval)?;
        let status: ProcessStatus = status
            .parse()
            .map_err(|e| self.corrupt(table, key("status"), e))?;
        let shard = self.shard(table, run_id, shard)?;
        Ok(ProcessProgress {
            shard,
            status,
            file_start_interval,
        })
    }
}

/// The DDL of the SQLite store for `tables`, in creation order (for docs and tools).
pub fn sqlite_ddl(tables: &TableNames) -> Vec<String> {
    let mut statements: Vec<String> = table_ddl(tables).into_iter().map(|(_, sql)| sql).collect();
    statements.push(index_ddl(tables));
    statements
}

/// `(table, CREATE TABLE statement)` of each table of the SQLite store.
fn table_ddl(t: &TableNames) -> Vec<(String, String)> {
    vec![
        (
            t.run().to_owned(),
            format!(
                "CREATE TABLE IF NOT EXISTS \"{}\" (
                        run_id TEXT NOT NULL PRIMARY KEY,
                        start_time TEXT NOT NULL,
                        duration TEXT NOT NULL
                    ) STRICT, WITHOUT ROWID",
                t.run()
            ),
        ),
        (
            t.create_progress().to_owned(),
            format!(
                "CREATE TABLE IF NOT EXISTS \"{}\" (
                        run_id TEXT NOT NULL,
                        shard TEXT NOT NULL,
                        created_upto TEXT NOT NULL,
                        PRIMARY KEY (run_id, shard)
                    ) STRICT, WITHOUT ROWID",
                t.create_progress()
            ),
        ),
        (
            t.data_seen().to_owned(),
            format!(
                "CREATE TABLE IF NOT EXISTS \"{}\" (
                        id TEXT NOT NULL PRIMARY KEY,
                        run_id TEXT NOT NULL,
                        shard TEXT NOT NULL,
                        window_seen TEXT NOT NULL,
                        update_ts TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                    ) STRICT, WITHOUT ROWID",
                t.data_seen()
            ),
        ),
        (
            t.process_progress().to_owned(),
            format!(
                "CREATE TABLE IF NOT EXISTS \"{}\" (
                        run_id TEXT NOT NULL,
                        shard TEXT NOT NULL,
                        file_start_interval TEXT NOT NULL,
                        status TEXT NOT NULL,
                        PRIMARY KEY (run_id, shard)
                    ) STRICT, WITHOUT ROWID",
                t.process_progress()
            ),
        ),
        (
            t.shard_errors().to_owned(),
            format!(
                "CREATE TABLE IF NOT EXISTS \"{}\" (
                        run_id TEXT NOT NULL,
                        shard TEXT NOT NULL,
                        file_start_interval TEXT NOT NULL,
                        error TEXT NOT NULL,
                        update_ts TEXT NOT NULL,
                        PRIMARY KEY (run_id, shard)
                    ) STRICT, WITHOUT ROWID",
                t.shard_errors()
            ),
        ),
        (
            t.leases().to_owned(),
            format!(
                "CREATE TABLE IF NOT EXISTS \"{}\" (
                        run_id TEXT NOT NULL,
                        role TEXT NOT NULL,
                        owner TEXT NOT NULL,
                        expires_at TEXT NOT NULL,
                        update_ts TEXT NOT NULL,
                        PRIMARY KEY (run_id, role)
                    ) STRICT, WITHOUT ROWID",
                t.leases()
            ),
        ),
    ]
}

fn index_ddl(tables: &TableNames) -> String {
    format!(
        "CREATE INDEX IF NOT EXISTS \"{}\" ON \"{}\" (run_id, shard, window_seen)",
        tables.data_seen_index(),
        tables.data_seen()
    )
}

#[async_trait]
impl MetadataStore for SqliteMetadataStore {
    fn location(&self) -> &str {
        &self.inner.location
    }

    fn tables(&self) -> &TableNames {
        &self.inner.tables
    }

    async fn ensure_tables(&self, missing: MissingTables) -> Result<(), MetadataError> {
        self.call("create tables", move |connection, inner| {
            let err = inner.err("create tables");
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(&err)?;
            // Malformed tables first: they are the more useful error.
            let mut absent_tables = Vec::new();
            let all_tables = inner
                .tables
                .with_columns()
                .into_iter()
                .chain(inner.tables.own_with_columns());
            for (table, columns) in all_tables {
                let mut statement = tx
                    .prepare("SELECT name FROM pragma_table_info(?1)")
                    .map_err(&err)?;
                let found: Vec<String> = statement
                    .query_map([table], |row| row.get(0))
                    .map_err(&err)?
                    .collect::<Result<_, _>>()
                    .map_err(&err)?;
                if found.is_empty() {
                    absent_tables.push(table);
                    continue;
                }
                let absent: Vec<&str> = columns
                    .iter()
                    .map(|(name, _)| *name)
                    .filter(|name| !found.iter().any(|f| f.eq_ignore_ascii_case(name)))
                    .collect();
                if !absent.is_empty() {
                    return Err(MetadataError::MalformedTable {
                        store: inner.location.clone(),
                        table: table.to_owned(),
                        reason: format!(
                            "column(s) {} missing (found {})",
                            absent.join(", "),
                            found.join(", ")
                        ),
                    });
                }
            }
            if missing == MissingTables::Fail {
                // revrepl's own tables are optional: a database the reference created lacks
                // them, and the calls that use them read nothing and write nothing then.
                if let Some(table) = absent_tables.iter().find(|t| !inner.tables.is_own(t)) {
                    return Err(MetadataError::MalformedTable {
                        store: inner.location.clone(),
                        table: (*table).to_owned(),
                        reason: "the table does not exist (create the metadata tables first)"
                            .to_owned(),
                    });
                }
                // revrepl's own index is only a speed-up: without it, listing works too.
                return Ok(());
            }
            for (table, sql) in table_ddl(&inner.tables) {
                if absent_tables.contains(&table.as_str()) {
                    tx.execute_batch(&sql).map_err(&err)?;
                }
            }
            tx.execute_batch(&index_ddl(&inner.tables)).map_err(&err)?;
            tx.commit().map_err(&err)
        })
        .await
    }

    async fn record_run(&self, run: &RunRecord) -> Result<(), MetadataError> {
        let run = run.clone();
        self.call("record run", move |connection, inner| {
            let err = inner.err("record run");
            let table = inner.tables.run();
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(&err)?;
            let existing: Option<(String, String)> = tx
                .query_row(
                    &format!("SELECT start_time, duration FROM \"{table}\" WHERE run_id = ?1"),
                    [run.run_id().as_str()],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(&err)?;
            match existing {
                None => {
                    tx.execute(
                        &format!(
                            "INSERT INTO \"{table}\" (run_id, start_time, duration) VALUES (?1, ?2, ?3)"
                        ),
                        params![run.run_id().as_str(), run.start_time_text(), run.duration_text()],
                    )
                    .map_err(&err)?;
                }
                Some((start_time, duration)) => {
                    let stored = inner.run_record(run.run_id(), &start_time, &duration)?;
                    if stored != run {
                        return Err(MetadataError::RunConflict {
                            store: inner.location.clone(),
                            table: table.to_owned(),
                            run_id: run.run_id().to_string(),
                            existing: format!("start {start_time} and window {duration}"),
                requested: format!("start {} and window {}", run.start_time_text(), run.duration_text()),
                        });
                    }
                }
            }
            tx.commit().map_err(&err)
        })
        .await
    }

    async fn run(&self, run_id: &RunId) -> Result<Option<RunRecord>, MetadataError> {
        let run_id = run_id.clone();
        self.call("read run", move |connection, inner| {
            let table = inner.tables.run();
            let row: Option<(String, String)> = connection
                .query_row(
                    &format!("SELECT start_time, duration FROM \"{table}\" WHERE run_id = ?1"),
                    [run_id.as_str()],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(inner.err("read run"))?;
            row.map(|(start, duration)| inner.run_record(&run_id, &start, &duration))
                .transpose()
        })
        .await
    }

    async fn register_shards(
        &self,
        run_id: &RunId,
        shards: &[ShardId],
        created_upto: Timestamp,
    ) -> Result<(), MetadataError> {
        let run_id = run_id.clone();
        let shards = shards.to_vec();
        let upto = timestamp_text(created_upto);
        self.call("register shards", move |connection, inner| {
            let err = inner.err("register shards");
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(&err)?;
            {
                let mut insert = tx
                    .prepare(&format!(
                        "INSERT INTO \"{}\" (run_id, shard, created_upto) VALUES (?1, ?2, ?3)
                         ON CONFLICT (run_id, shard) DO NOTHING",
                        inner.tables.create_progress()
                    ))
                    .map_err(&err)?;
                for shard in &shards {
                    insert
                        .execute(params![run_id.as_str(), shard.as_str(), upto])
                        .map_err(&err)?;
                }
            }
            tx.commit().map_err(&err)
        })
        .await
    }

    async fn record_windows(
        &self,
        run_id: &RunId,
        windows: &CreatedWindows,
    ) -> Result<(), MetadataError> {
        let run_id = run_id.clone();
        let windows = windows.clone();
        self.call("record windows", move |connection, inner| {
            let err = inner.err("record windows");
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(&err)?;
            {
                let mut seen = tx
                    .prepare(&format!(
                        "INSERT INTO \"{}\" (id, run_id, shard, window_seen) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (id) DO NOTHING",
                        inner.tables.data_seen()
                    ))
                    .map_err(&err)?;
                for (shard, end) in windows.seen() {
                    let id = data_seen_id(end, &run_id, shard);
                    seen.execute(params![id, run_id.as_str(), shard.as_str(), timestamp_text(end)])
                        .map_err(&err)?;
                }
                let mut advance = tx
                    .prepare(&format!(
                        "INSERT INTO \"{}\" (run_id, shard, created_upto) VALUES (?1, ?2, ?3)
                         ON CONFLICT (run_id, shard) DO UPDATE SET created_upto = excluded.created_upto
                         WHERE created_upto < excluded.created_upto",
                        inner.tables.create_progress()
                    ))
                    .map_err(&err)?;
                let upto = timestamp_text(windows.upto());
                for shard in windows.shards() {
                    advance
                        .execute(params![run_id.as_str(), shard.as_str(), upto])
                        .map_err(&err)?;
                }
            }
            tx.commit().map_err(&err)
        })
        .await
    }

    async fn created_upto(
        &self,
        run_id: &RunId,
        shard: &ShardId,
    ) -> Result<Option<Timestamp>, MetadataError> {
        let run_id = run_id.clone();
        let shard = shard.clone();
        self.call("read created_upto", move |connection, inner| {
            let table = inner.tables.create_progress();
            let text: Option<String> = connection
                .query_row(
                    &format!(
                        "SELECT created_upto FROM \"{table}\" WHERE run_id = ?1 AND shard = ?2"
                    ),
                    [run_id.as_str(), shard.as_str()],
                    |row| row.get(0),
                )
                .optional()
                .map_err(inner.err("read created_upto"))?;
            text.map(|t| {
                inner.timestamp(
                    table,
                    || {
                        format!(
                            "run_id={:?}, shard={:?}, created_upto",
                            run_id.as_str(),
                            shard.as_str()
                        )
                    },
                    &t,
                )
            })
            .transpose()
        })
        .await
    }

    async fn create_progress(&self, run_id: &RunId) -> Result<Vec<CreateProgress>, MetadataError> {
        let run_id = run_id.clone();
        self.call("read create progress", move |connection, inner| {
            let err = inner.err("read create progress");
            let table = inner.tables.create_progress();
            let mut statement = connection
                .prepare(&format!(
                    "SELECT shard, created_upto FROM \"{table}\" WHERE run_id = ?1 ORDER BY shard"
                ))
                .map_err(&err)?;
            let rows: Vec<(String, String)> = statement
                .query_map([run_id.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))
                .map_err(&err)?
                .collect::<Result<_, _>>()
                .map_err(&err)?;
            rows.into_iter()
                .map(|(shard, upto)| {
                    let created_upto = inner.timestamp(
                        table,
                        || {
                            format!(
                                "run_id={:?}, shard={shard:?}, created_upto",
                                run_id.as_str()
                            )
                        },
                        &upto,
                    )?;
                    Ok(CreateProgress {
                        shard: inner.shard(table, &run_id, shard)?,
                        created_upto,
                    })
                })
                .collect()
        })
        .await
    }

    async fn windows_with_data(
        &self,
        run_id: &RunId,
        shard: &ShardId,
        ends: std::ops::RangeInclusive<Timestamp>,
        limit: usize,
    ) -> Result<Vec<Timestamp>, MetadataError> {
        let run_id = run_id.clone();
        let shard = shard.clone();
        let from = timestamp_text(*ends.start());
        let to = timestamp_text(*ends.end());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call("list windows with data", move |connection, inner| {
            let err = inner.err("list windows with data");
            let table = inner.tables.data_seen();
            let mut statement = connection
                .prepare(&format!(
                    "SELECT window_seen FROM \"{table}\"
                     WHERE run_id = ?1 AND shard = ?2 AND window_seen >= ?3 AND window_seen <= ?4
                     ORDER BY window_seen LIMIT ?5"
                ))
                .map_err(&err)?;
            let rows: Vec<String> = statement
                .query_map(
                    params![run_id.as_str(), shard.as_str(), from, to, limit],
                    |row| row.get(0),
                )
                .map_err(&err)?
                .collect::<Result<_, _>>()
                .map_err(&err)?;
            rows.iter()
                .map(|text| {
                    inner.timestamp(
                        table,
                        || {
                            format!(
                                "run_id={:?}, shard={:?}, window_seen={text:?}",
                                run_id.as_str(),
                                shard.as_str()
                            )
                        },
                        text,
                    )
                })
                .collect()
        })
        .await
    }

    async fn set_process_progress(
        &self,
        run_id: &RunId,
        progress: &ProcessProgress,
    ) -> Result<(), MetadataError> {
        let run_id = run_id.clone();
        let progress = progress.clone();
        self.call("write process progress", move |connection, inner| {
            let err = inner.err("write process progress");
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(&err)?;
            tx.execute(
                &format!(
                    "INSERT INTO \"{}\" (run_id, shard, file_start_interval, status)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (run_id, shard) DO UPDATE SET
                       file_start_interval = excluded.file_start_interval,
                       status = excluded.status",
                    inner.tables.process_progress()
                ),
                params![
                    run_id.as_str(),
                    progress.shard.as_str(),
                    timestamp_text(progress.file_start_interval),
                    progress.status.as_str()
                ],
            )
            .map_err(&err)?;
            tx.commit().map_err(&err)
        })
        .await
    }

    async fn process_progress(
        &self,
        run_id: &RunId,
        shard: &ShardId,
    ) -> Result<Option<ProcessProgress>, MetadataError> {
        let run_id = run_id.clone();
        let shard = shard.clone();
        self.call("read process progress", move |connection, inner| {
            let row: Option<(String, String, String)> = connection
                .query_row(
                    &format!(
                        "SELECT shard, file_start_interval, status FROM \"{}\"
                         WHERE run_id = ?1 AND shard = ?2",
                        inner.tables.process_progress()
                    ),
                    [run_id.as_str(), shard.as_str()],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()
                .map_err(inner.err("read process progress"))?;
            row.map(|(shard, interval, status)| {
                inner.process_row(&run_id, shard, &interval, &status)
            })
            .transpose()
        })
        .await
    }

    async fn list_process_progress(
        &self,
        run_id: &RunId,
        status: Option<ProcessStatus>,
    ) -> Result<Vec<ProcessProgress>, MetadataError> {
        let run_id = run_id.clone();
        self.call("list process progress", move |connection, inner| {
            let err = inner.err("list process progress");
            let mut statement = connection
                .prepare(&format!(
                    "SELECT shard, file_start_interval, status FROM \"{}\"
                     WHERE run_id = ?1 AND (?2 IS NULL OR status = ?2) ORDER BY shard",
                    inner.tables.process_progress()
                ))
                .map_err(&err)?;
            let rows: Vec<(String, String, String)> = statement
                .query_map(
                    params![run_id.as_str(), status.map(|s| s.as_str())],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .map_err(&err)?
                .collect::<Result<_, _>>()
                .map_err(&err)?;
            rows.into_iter()
                .map(|(shard, interval, status)| {
                    inner.process_row(&run_id, shard, &interval, &status)
                })
                .collect()
        })
        .await
    }

    async fn record_shard_error(
        &self,
        run_id: &RunId,
        shard: &ShardId,
        window_start: Timestamp,
        error: &str,
    ) -> Result<(), MetadataError> {
        let run_id = run_id.clone();
        let shard = shard.clone();
        let interval = timestamp_text(window_start);
        let text = truncate_error_text(error);
        let recorded = self
            .call("record shard error", move |connection, inner| {
                let err = inner.err("record shard error");
                let write = |connection: &mut Connection| {
                    let tx = connection
                        .transaction_with_behavior(TransactionBehavior::Immediate)
                        .map_err(&err)?;
                    tx.execute(
                        &format!(
                            "INSERT INTO \"{}\" (run_id, shard, file_start_interval, error, update_ts)
                             VALUES (?1, ?2, ?3, ?4, ?5)
                             ON CONFLICT (run_id, shard) DO UPDATE SET
                               file_start_interval = excluded.file_start_interval,
                               error = excluded.error,
                               update_ts = excluded.update_ts",
                            inner.tables.shard_errors()
                        ),
                        params![
                            run_id.as_str(),
                            shard.as_str(),
                            interval,
                            text,
                            timestamp_text(Timestamp::from(chrono::Utc::now()))
                        ],
                    )
                    .map_err(&err)?;
                    tx.commit().map_err(&err)
                };
                match write(connection) {
                    Ok(()) => Ok(true),
                    Err(error) => match inner.unless_no_errors_table(connection, error) {
                        Some(error) => Err(error),
                        None => Ok(false),
                    },
                }
            })
            .await?;
        if !recorded {
            tracing::warn!(
                store = %self.inner.location,
                table = self.inner.tables.shard_errors(),
                "the table of error texts does not exist (create the metadata tables to add \
                 it): the error text is only in the log"
            );
        }
        Ok(())
    }

    async fn acquire_lease(
        &self,
        run_id: &RunId,
        role: &str,
        owner: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<LeaseAttempt, MetadataError> {
        let run_id = run_id.clone();
        let (role, owner) = (role.to_owned(), owner.to_owned());
        let (now_text, expires_text) = (timestamp_text(now), timestamp_text(expires_at));
        self.call("acquire lease", move |connection, inner| {
            let err = inner.err("acquire lease");
            let table = inner.tables.leases();
            let attempt = |connection: &mut Connection| {
                let tx = connection
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(&err)?;
                let current: Option<(String, String)> = tx
                    .query_row(
                        &format!(
                            "SELECT owner, expires_at FROM \"{table}\" WHERE run_id = ?1 AND role = ?2"
                        ),
                        [run_id.as_str(), role.as_str()],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )
                    .optional()
                    .map_err(&err)?;
                if let Some((holder, until)) = current
                    && holder != owner
                {
                    let key = || format!("run_id={:?}, role={role:?}, expires_at", run_id.as_str());
                    let until = inner.timestamp(table, key, &until)?;
                    if until > now {
                        return Ok(LeaseAttempt::HeldBy(Lease {
                            role: role.clone(),
                            owner: holder,
                            expires_at: until,
                        }));
                    }
                }
                tx.execute(
                    &format!(
                        "INSERT INTO \"{table}\" (run_id, role, owner, expires_at, update_ts)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (run_id, role) DO UPDATE SET
                           owner = excluded.owner,
                           expires_at = excluded.expires_at,
                           update_ts = excluded.update_ts"
                    ),
                    params![run_id.as_str(), role, owner, expires_text, now_text],
                )
                .map_err(&err)?;
                tx.commit().map_err(&err)?;
                Ok(LeaseAttempt::Acquired)
            };
            match attempt(connection) {
                Ok(outcome) => Ok(outcome),
                Err(error) => match inner.unless_no_table(connection, table, error) {
                    Some(error) => Err(error),
                    None => Ok(LeaseAttempt::NoTable),
                },
            }
        })
        .await
    }

    async fn release_lease(
        &self,
        run_id: &RunId,
        role: &str,
        owner: &str,
    ) -> Result<(), MetadataError> {
        let run_id = run_id.clone();
        let (role, owner) = (role.to_owned(), owner.to_owned());
        self.call("release lease", move |connection, inner| {
            let err = inner.err("release lease");
            let table = inner.tables.leases();
            let deleted = connection
                .execute(
                    &format!(
                        "DELETE FROM \"{table}\" WHERE run_id = ?1 AND role = ?2 AND owner = ?3"
                    ),
                    params![run_id.as_str(), role, owner],
                )
                .map_err(&err);
            match deleted {
                Ok(_) => Ok(()),
                Err(error) => match inner.unless_no_table(connection, table, error) {
                    Some(error) => Err(error),
                    None => Ok(()),
                },
            }
        })
        .await
    }

    async fn leases(&self, run_id: &RunId) -> Result<Vec<Lease>, MetadataError> {
        let run_id = run_id.clone();
        self.call("read leases", move |connection, inner| {
            let err = inner.err("read leases");
            let table = inner.tables.leases();
            let read = |connection: &Connection| {
                let mut statement = connection
                    .prepare(&format!(
                        "SELECT role, owner, expires_at FROM \"{table}\"
                         WHERE run_id = ?1 ORDER BY role"
                    ))
                    .map_err(&err)?;
                let rows: Vec<(String, String, String)> = statement
                    .query_map([run_id.as_str()], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                    })
                    .map_err(&err)?
                    .collect::<Result<_, _>>()
                    .map_err(&err)?;
                Ok(rows)
            };
            let rows = match read(connection) {
                Ok(rows) => rows,
                Err(error) => match inner.unless_no_table(connection, table, error) {
                    Some(error) => return Err(error),
                    None => return Ok(Vec::new()),
                },
            };
            rows.into_iter()
                .map(|(role, owner, until)| {
                    let key = || format!("run_id={:?}, role={role:?}, expires_at", run_id.as_str());
                    Ok(Lease {
                        expires_at: inner.timestamp(table, key, &until)?,
                        role,
                        owner,
                    })
                })
                .collect()
        })
        .await
    }

    async fn shard_errors(&self, run_id: &RunId) -> Result<Vec<ShardError>, MetadataError> {
        let run_id = run_id.clone();
        self.call("read shard errors", move |connection, inner| {
            let err = inner.err("read shard errors");
            let table = inner.tables.shard_errors();
            let read = |connection: &Connection| {
                let mut statement = connection
                    .prepare(&format!(
                        "SELECT shard, file_start_interval, error, update_ts FROM \"{table}\"
                         WHERE run_id = ?1 ORDER BY shard"
                    ))
                    .map_err(&err)?;
                let rows: Vec<(String, String, String, String)> = statement
                    .query_map([run_id.as_str()], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                    })
                    .map_err(&err)?
                    .collect::<Result<_, _>>()
                    .map_err(&err)?;
                Ok(rows)
            };
            let rows = match read(connection) {
                Ok(rows) => rows,
                Err(error) => match inner.unless_no_errors_table(connection, error) {
                    Some(error) => return Err(error),
                    None => return Ok(Vec::new()),
                },
            };
            rows.into_iter()
                .map(|(shard, interval, error, recorded)| {
                    let key = |column: &str| {
                        format!("run_id={:?}, shard={shard:?}, {column}", run_id.as_str())
                    };
                    Ok(ShardError {
                        file_start_interval: inner.timestamp(
                            table,
                            || key("file_start_interval"),
                            &interval,
                        )?,
                        recorded_at: inner.timestamp(table, || key("update_ts"), &recorded)?,
                        shard: inner.shard(table, &run_id, shard)?,
                        error,
                    })
                })
                .collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_stored_fixed_width_so_text_order_is_time_order() {
        let a = Timestamp::new(1_704_450_830, 0).expect("valid timestamp");
        let b = Timestamp::new(1_704_450_830, 500_000_000).expect("valid timestamp");
        let c = Timestamp::new(1_704_450_831, 0).expect("valid timestamp");
        assert_eq!(timestamp_text(a), "2024-01-05T10:33:50.000000000Z");
        assert!(timestamp_text(a) < timestamp_text(b));
        assert!(timestamp_text(b) < timestamp_text(c));
        assert_eq!(Timestamp::parse_rfc3339(&timestamp_text(b)), Ok(b));
    }
}
