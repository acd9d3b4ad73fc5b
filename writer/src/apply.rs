//! Applying batches of Spanner transactions to one shard (DESIGN §6.2, §6.3, §6.9).
//!
//! A [`ShardApplier`] owns one MySQL connection to its shard, the shard's target schema and a
//! [`StatementPlanner`]. [`ShardApplier::apply_batch`] applies whole Spanner transactions in
//! one MySQL transaction together with the checkpoint update:
//!
//! 1. `START TRANSACTION`, then read the checkpoint row `FOR UPDATE`;
//! 2. skip the transactions the checkpoint covers (they were applied before a crash or by an
//!    earlier attempt whose `COMMIT` reply was lost), plan the rest;
//! 3. execute the statements, write the checkpoint, `COMMIT`.
//!
//! Any error rolls the whole MySQL transaction back, data and checkpoint alike. Calling
//! `apply_batch` again with the same batch is always safe, which is what retrying a transient
//! error needs: wrap the call in [`revrepl_record::with_backoff`] (or use
//! [`ShardApplier::apply_batch_with_retry`]). After a transient error the connection is
//! dropped and the next call opens a new one.
//!
//! When the planned statements of a batch meet a unique-index or foreign-key conflict that
//! their order could not avoid (see [`crate::statement`]), the batch is rolled back and applied
//! again transaction by transaction: halves of it under a savepoint, and a single transaction
//! that still conflicts row by row (`crate::careful`,
//! `docs/decisions/0007-unique-indexes-and-conflicts.md`).
//!
//! Planning (converting values and building statements) needs no connection: a
//! [`BatchPlanner`] plans a batch ahead — on another thread, while the previous batch is being
//! applied — and [`ShardApplier::apply_planned_batch`] executes that plan; it plans again
//! itself when the plan does not fit what the checkpoint leaves to apply.
//!
//! Every connection runs with `time_zone = '+00:00'` (for `timestamp` columns, see
//! [`crate::convert`](mod@crate::convert)), strict SQL mode (no silent truncation), `NO_AUTO_VALUE_ON_ZERO` (a key 0
//! stays 0) and foreign-key checks on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Row, Value};
use revrepl_record::{Backoff, Classify, ErrorClass, ShardId, Window, with_backoff};
use revrepl_shard_routing::Shard;
use tokio::sync::Mutex;

use crate::batch::{BatchWindows, CommitPosition, SpannerTransaction};
use crate::careful;
use crate::checkpoint::{self, CREATE_CHECKPOINT_TABLE, Checkpoint, CheckpointReadError};
use crate::convert::SourceTimeZone;
use crate::error::{WriterError, row_and_column};
use crate::mapping::SchemaMapping;
use crate::schema::TargetSchema;
use crate::statement::{PlannedStatement, StatementKind, StatementLimits, StatementPlanner};
use crate::transformation::{RecordTransformer, TransformCounts};

/// Statements run on every new connection.
const SESSION_SETUP: &[&str] = &[
    "SET SESSION time_zone = '+00:00'",
    "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'STRICT_ALL_TABLES', 'NO_AUTO_VALUE_ON_ZERO')",
    "SET SESSION foreign_key_checks = 1",
];

/// Prepared statements kept per connection: a few shapes per table.
const STATEMENT_CACHE_SIZE: usize = 512;

/// Where a test can make the applier's connection drop ([`ShardApplier::set_fault_hook`]).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// Before a statement of a batch (planned or row by row).
    Statement,
    /// Before the checkpoint is written.
    Checkpoint,
    /// Before `COMMIT`.
    Commit,
    /// After `COMMIT` succeeded (as if its reply were lost).
    Committed,
}

/// A test hook: asked at each [`FaultPoint`]; `true` kills the connection there.
#[doc(hidden)]
pub type FaultHook = Arc<dyn Fn(FaultPoint) -> bool + Send + Sync>;

/// The connection while a batch is applied: runs statements, and kills the connection where
/// a test's fault hook says so.
pub(crate) struct Session<'a> {
    conn: &'a mut Conn,
    pub(crate) shard: &'a ShardId,
    fault: Option<FaultHook>,
    /// Statements executed.
    pub(crate) statements: usize,
    /// Transactions applied row by row.
    resolved: usize,
    /// What the transformation plugin did with the records applied.
    transformations: TransformCounts,
}

impl Session<'_> {
    /// Kills the connection if the fault hook says so at `point`.
    async fn fault(&mut self, point: FaultPoint) -> Result<(), mysql_async::Error> {
        if self.fault.as_ref().is_some_and(|hook| hook(point)) {
            let id = self.conn.id();
            let killed = self.conn.query_drop(format!("KILL {id}")).await;
            return Err(killed.err().unwrap_or(mysql_async::Error::Driver(
                mysql_async::DriverError::ConnectionClosed,
            )));
        }
        Ok(())
    }

    /// Commits, with the fault points just before and just after `COMMIT`.
    async fn commit(&mut self) -> Result<(), mysql_async::Error> {
        self.fault(FaultPoint::Commit).await?;
        self.conn.query_drop("COMMIT").await?;
        self.fault(FaultPoint::Committed).await
    }

    /// Executes a prepared statement.
    pub(crate) async fn exec(
        &mut self,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<(), mysql_async::Error> {
        self.fault(FaultPoint::Statement).await?;
        self.statements += 1;
        self.conn.exec_drop(sql, params).await
    }

    /// Runs a prepared query and returns its rows.
    pub(crate) async fn rows(
        &mut self,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Vec<Row>, mysql_async::Error> {
        self.fault(FaultPoint::Statement).await?;
        self.statements += 1;
        self.conn.exec(sql, params).await
    }

    /// The rows the last statement changed.
    pub(crate) fn affected_rows(&self) -> u64 {
        self.conn.affected_rows()
    }

    /// Runs a statement without parameters (text protocol).
    pub(crate) async fn exec_text(&mut self, sql: &str) -> Result<(), mysql_async::Error> {
        self.conn.query_drop(sql).await
    }
}

/// Everything a [`ShardApplier`] needs. `Debug` leaves out the password.
#[derive(Clone)]
pub struct ApplierConfig {
    /// The run whose checkpoint row the applier keeps.
    pub run_id: String,
    /// The shard.
    pub shard: ShardId,
    /// How to connect; must name the shard's database. TLS goes here (`ssl_opts`).
    pub connection: Opts,
    /// Spanner → MySQL names.
    pub mapping: Arc<SchemaMapping>,
    /// The time zone of `datetime` values in the shard.
    pub time_zone: SourceTimeZone,
    /// Statement size limits.
    pub limits: StatementLimits,
    /// The deadline for opening a connection (the shard's `connectTimeout`); a connection not
    /// open by then is a transient error, retried. `None`: the driver's own.
    pub connect_timeout: Option<Duration>,
    /// The transformation plugin asked about each record, if any (`writer.transformation`).
    pub transformer: Option<Arc<dyn RecordTransformer>>,
}

impl std::fmt::Debug for ApplierConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // mysql_async's `Opts` prints the password in its `Debug`: show only where it goes.
        f.debug_struct("ApplierConfig")
            .field("run_id", &self.run_id)
            .field("shard", &self.shard)
            .field("host", &self.connection.ip_or_hostname())
            .field("port", &self.connection.tcp_port())
            .field("user", &self.connection.user())
            .field("database", &self.connection.db_name())
            .field("time_zone", &self.time_zone)
            .field("limits", &self.limits)
            .field("connect_timeout", &self.connect_timeout)
            .field(
                "transformer",
                &self
                    .transformer
                    .as_ref()
                    .map(|transformer| transformer.name()),
            )
            .finish_non_exhaustive()
    }
}

impl ApplierConfig {
    /// A configuration with the identity mapping, UTC and default limits.
    pub fn new(run_id: impl Into<String>, shard: ShardId, connection: Opts) -> Self {
        Self {
            run_id: run_id.into(),
            shard,
            connection,
            mapping: Arc::new(SchemaMapping::identity()),
            time_zone: SourceTimeZone::default(),
            limits: StatementLimits::default(),
            connect_timeout: None,
            transformer: None,
        }
    }
}

/// Connection options for a shard of the shards file: host, port, user, password and
/// database. Add TLS (`ssl_opts`) before converting into [`Opts`] when configured.
pub fn shard_connection_options(shard: &Shard) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname(shard.config.host.clone())
        .tcp_port(shard.config.port)
        .user(Some(shard.config.user.clone()))
        .pass(Some(shard.password.expose().to_string()))
        .db_name(Some(shard.config.db_name.clone()))
}

/// What one call of [`ShardApplier::apply_batch`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApplyOutcome {
    /// Spanner transactions applied now.
    pub applied_transactions: usize,
    /// Spanner transactions skipped because the checkpoint already covered them.
    pub skipped_transactions: usize,
    /// Records applied now.
    pub applied_records: usize,
    /// Statements executed.
    pub statements: usize,
    /// Spanner transactions whose statements met a unique or foreign-key conflict and that
    /// were applied row by row.
    pub resolved_transactions: usize,
    /// The checkpoint position after the call (`None` if there is none yet).
    pub position: Option<CommitPosition>,
    /// What the transformation plugin did with the records applied now.
    pub transformations: TransformCounts,
}

struct State {
    link: Link,
}

/// Plans batches for a [`ShardApplier`] without touching its connection, so that the next
/// batch can be planned while the current one is applied. Cheap to clone; `Send + 'static`
/// (for `tokio::task::spawn_blocking`). Planning is CPU work: call it off the async threads.
#[derive(Debug, Clone)]
pub struct BatchPlanner {
    planner: Arc<std::sync::Mutex<StatementPlanner>>,
    /// How many times the schema was reloaded (plans of an older schema are not used);
    /// changed only while `planner` is locked.
    generation: Arc<AtomicU64>,
}

impl BatchPlanner {
    /// Plans the statements applying `transactions` (as [`ShardApplier::apply_batch`] would).
    /// Fails with the same definite error the apply would meet while planning.
    pub fn plan(&self, transactions: &[SpannerTransaction]) -> Result<PlannedBatch, WriterError> {
        let mut planner = self.lock();
        let statements = planner.plan(transactions)?;
        Ok(PlannedBatch {
            transformations: planner.take_transform_counts(),
            statements,
            transactions: transactions.len(),
            last: transactions.last().map(SpannerTransaction::last_position),
            generation: self.generation.load(Ordering::Acquire),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StatementPlanner> {
        self.planner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The statements of one batch, planned ahead by a [`BatchPlanner`].
#[derive(Debug)]
pub struct PlannedBatch {
    statements: Vec<PlannedStatement>,
    transformations: TransformCounts,
    transactions: usize,
    last: Option<CommitPosition>,
    generation: u64,
}

impl PlannedBatch {
    /// The number of statements.
    pub fn statements(&self) -> usize {
        self.statements.len()
    }

    /// Whether the plan was made for exactly `transactions` with the schema of `generation`.
    fn fits(&self, transactions: &[SpannerTransaction], generation: u64) -> bool {
        self.generation == generation
            && self.transactions == transactions.len()
            && self.last == transactions.last().map(SpannerTransaction::last_position)
    }
}

/// The connection, and whether an operation on it was cut short (its future dropped, e.g. on
/// shutdown). Such a connection may sit inside an open transaction, and a later `START
/// TRANSACTION` would commit that half-applied batch; so it is never reused: dropping it
/// disconnects, and the server rolls back.
struct Link {
    conn: Option<Conn>,
    busy: bool,
}

impl Link {
    async fn acquire(&mut self, config: &ApplierConfig) -> Result<&mut Conn, WriterError> {
        if self.busy {
            self.conn = None;
            self.busy = false;
        }
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => open(config).await?,
        };
        self.busy = true;
        Ok(self.conn.insert(conn))
    }

    fn release(&mut self) {
        self.busy = false;
    }

    /// Ends an attempt in a transaction: keeps a healthy connection (rolled back after a
    /// definite error), drops a broken one (the server rolls back).
    async fn finish<T>(&mut self, result: &Result<T, WriterError>) {
        let healthy = match (result, self.conn.as_mut()) {
            (Ok(_), _) => true,
            (Err(error), Some(conn)) => {
                error.class() != ErrorClass::Transient && conn.query_drop("ROLLBACK").await.is_ok()
            }
            (Err(_), None) => false,
        };
        if healthy {
            self.release();
        } else {
            self.discard();
        }
    }

    fn discard(&mut self) {
        self.conn = None;
        self.busy = false;
    }

    /// Ends an operation: maps its driver result and keeps the connection unless the error
    /// says it is unusable.
    fn settle<T>(
        &mut self,
        shard: &ShardId,
        operation: &'static str,
        result: Result<T, mysql_async::Error>,
    ) -> Result<T, WriterError> {
        match result {
            Ok(value) => {
                self.release();
                Ok(value)
            }
            Err(e) => {
                let error = WriterError::database(shard, operation, String::new(), &e);
                if e.is_fatal() || error.class() == ErrorClass::Transient {
                    self.discard();
                } else {
                    self.release();
                }
                Err(error)
            }
        }
    }
}

/// Applies batches of Spanner transactions to one MySQL shard, exactly once.
///
/// Methods take `&self` (the connection sits behind an async mutex), so a call can be retried
/// from a closure: `with_backoff(policy, on_retry, || applier.apply_batch(window, batch))`.
pub struct ShardApplier {
    config: ApplierConfig,
    database: String,
    state: Mutex<State>,
    planner: BatchPlanner,
    fault: std::sync::Mutex<Option<FaultHook>>,
}

impl std::fmt::Debug for ShardApplier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardApplier")
            .field("shard", &self.config.shard)
            .field("run_id", &self.config.run_id)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl ShardApplier {
    /// Connects to the shard, creates the checkpoint table if missing and reads the target
    /// schema. Connection failures are transient; retry with [`with_backoff`].
    pub async fn connect(config: ApplierConfig) -> Result<Self, WriterError> {
        let database = config
            .connection
            .db_name()
            .map(str::to_string)
            .ok_or_else(|| WriterError::Configuration {
                shard: config.shard.clone(),
                reason: "the connection options name no database".into(),
            })?;
        let mut conn = open(&config).await?;
        let shard = &config.shard;
        conn.query_drop(CREATE_CHECKPOINT_TABLE)
            .await
            .map_err(|e| {
                WriterError::database(shard, "creating the checkpoint table", String::new(), &e)
            })?;
        let schema = TargetSchema::load(&mut conn, &database)
            .await
            .map_err(|e| {
                WriterError::database(shard, "reading information_schema", String::new(), &e)
            })?;
        let planner = StatementPlanner::new(
            config.shard.clone(),
            Arc::new(schema),
            Arc::clone(&config.mapping),
            config.time_zone,
            config.limits,
        )
        .with_transformer(config.transformer.clone());
        Ok(Self {
            config,
            database,
            state: Mutex::new(State {
                link: Link {
                    conn: Some(conn),
                    busy: false,
                },
            }),
            planner: BatchPlanner {
                planner: Arc::new(std::sync::Mutex::new(planner)),
                generation: Arc::new(AtomicU64::new(0)),
            },
            fault: std::sync::Mutex::new(None),
        })
    }

    /// Test hook: `hook` is asked before every statement of a batch, before the checkpoint
    /// write, before and after `COMMIT`, and kills the connection where it answers `true`
    /// (as a dropped connection or a killed writer would end it).
    #[doc(hidden)]
    pub fn set_fault_hook(&self, hook: Option<FaultHook>) {
        *self.fault.lock().unwrap_or_else(PoisonError::into_inner) = hook;
    }

    /// The shard.
    pub fn shard(&self) -> &ShardId {
        &self.config.shard
    }

    /// The run whose checkpoint the applier keeps.
    pub fn run_id(&self) -> &str {
        &self.config.run_id
    }

    /// The target schema in use.
    pub fn schema(&self) -> Arc<TargetSchema> {
        Arc::clone(self.planner.lock().schema())
    }

    /// A planner for batches of this applier, usable on another thread (see [`BatchPlanner`]).
    pub fn batch_planner(&self) -> BatchPlanner {
        self.planner.clone()
    }

    /// Reads the target schema again (after a schema change in the shard).
    pub async fn reload_schema(&self) -> Result<(), WriterError> {
        let mut guard = self.state.lock().await;
        let state = &mut *guard;
        let conn = state.link.acquire(&self.config).await?;
        let loaded = TargetSchema::load(conn, &self.database).await;
        let schema = state
            .link
            .settle(&self.config.shard, "reading information_schema", loaded)?;
        let planner = StatementPlanner::new(
            self.config.shard.clone(),
            Arc::new(schema),
            Arc::clone(&self.config.mapping),
            self.config.time_zone,
            self.config.limits,
        )
        .with_transformer(self.config.transformer.clone());
        let mut current = self.planner.lock();
        *current = planner;
        self.planner.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// The shard's checkpoint for this run, if any batch was applied.
    pub async fn read_checkpoint(&self) -> Result<Option<Checkpoint>, WriterError> {
        let mut guard = self.state.lock().await;
        let state = &mut *guard;
        let conn = state.link.acquire(&self.config).await?;
        let read = checkpoint::read(conn, &self.config.run_id, &self.config.shard, false).await;
        match read {
            Ok(checkpoint) => {
                state.link.release();
                Ok(checkpoint)
            }
            Err(CheckpointReadError::Database(e)) => {
                state
                    .link
                    .settle(&self.config.shard, "reading the checkpoint", Err(e))
            }
            Err(CheckpointReadError::Invalid(reason)) => {
                state.link.release();
                Err(WriterError::Checkpoint {
                    shard: self.config.shard.clone(),
                    reason,
                })
            }
        }
    }

    /// Sets the checkpoint to "nothing of `window` applied yet", so that the window and
    /// everything after it are applied again (`reprocess`). Counts are kept.
    pub async fn rewind_checkpoint(&self, window: Window) -> Result<(), WriterError> {
        let mut guard = self.state.lock().await;
        let state = &mut *guard;
        let conn = state.link.acquire(&self.config).await?;
        let written = checkpoint::write(
            conn,
            &self.config.run_id,
            &self.config.shard,
            window,
            None,
            0,
            0,
        )
        .await;
        state
            .link
            .settle(&self.config.shard, "rewinding the checkpoint", written)
    }

    /// Applies `transactions` — whole Spanner transactions of this shard, in commit order, all
    /// in `window` — in one MySQL transaction with the checkpoint update, skipping those the
    /// checkpoint covers. On error nothing of the batch is applied.
    pub async fn apply_batch(
        &self,
        window: Window,
        transactions: &[SpannerTransaction],
    ) -> Result<ApplyOutcome, WriterError> {
        let windows = BatchWindows::single(window, transactions.len());
        self.apply_planned_batch(&windows, transactions, None).await
    }

    /// [`ShardApplier::apply_batch`] for a batch that may span several windows (`windows`
    /// says which window each transaction is from; the checkpoint names the last), with
    /// statements planned ahead by [`BatchPlanner::plan`] for the same `transactions`. The
    /// plan is used when the checkpoint leaves all of them to apply and the schema was not
    /// reloaded since; otherwise (or with `None`) the pending transactions are planned here.
    pub async fn apply_planned_batch(
        &self,
        windows: &BatchWindows,
        transactions: &[SpannerTransaction],
        planned: Option<PlannedBatch>,
    ) -> Result<ApplyOutcome, WriterError> {
        let window = self.validate(windows, transactions)?;
        let mut guard = self.state.lock().await;
        let state = &mut *guard;
        let conn = state.link.acquire(&self.config).await?;
        let mut result = self
            .apply_in_transaction(conn, window, transactions, planned, false)
            .await;
        // A unique or foreign-key conflict the planned order did not avoid: again, each
        // transaction whose statements meet one resolved row by row.
        if let Some(rolled_back) = self.roll_back_conflict(conn, &result, "a batch").await {
            result = match rolled_back {
                Ok(()) => {
                    self.apply_in_transaction(conn, window, transactions, None, true)
                        .await
                }
                Err(error) => Err(error),
            };
        }
        state.link.finish(&result).await;
        result
    }

    /// When `result` failed on a unique or foreign-key conflict that applying transaction by
    /// transaction may resolve, rolls it back for that careful attempt: `Some(Ok)` when it
    /// is to be made, `Some(Err)` when the rollback failed; `None` for any other outcome.
    async fn roll_back_conflict<T>(
        &self,
        conn: &mut Conn,
        result: &Result<T, WriterError>,
        what: &str,
    ) -> Option<Result<(), WriterError>> {
        let error = result.as_ref().err()?;
        if !error.mysql_code().is_some_and(careful::resolvable) {
            return None;
        }
        tracing::debug!(
            shard = %self.config.shard,
            error = %error,
            "{what} met a constraint conflict; applying it transaction by transaction"
        );
        Some(conn.query_drop("ROLLBACK").await.map_err(|e| {
            WriterError::database(
                &self.config.shard,
                "ending a transaction",
                String::new(),
                &e,
            )
        }))
    }

    /// [`ShardApplier::apply_batch`] retried through [`with_backoff`] while the error is
    /// transient; `on_retry` sees each transient error and the delay (for logs and the retry
    /// metric).
    pub async fn apply_batch_with_retry(
        &self,
        window: Window,
        transactions: &[SpannerTransaction],
        policy: Backoff,
        on_retry: impl FnMut(&WriterError, Duration),
    ) -> Result<ApplyOutcome, WriterError> {
        with_backoff(policy, on_retry, || self.apply_batch(window, transactions)).await
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        let state = self.state.into_inner();
        if let (Some(conn), false) = (state.link.conn, state.link.busy) {
            let _ = conn.disconnect().await;
        }
    }

    /// Checks that `transactions` are this shard's, in commit order, each in its window of
    /// `windows`; returns the window the checkpoint names (the last).
    fn validate(
        &self,
        windows: &BatchWindows,
        transactions: &[SpannerTransaction],
    ) -> Result<Window, WriterError> {
        let invalid = |reason: String| WriterError::InvalidBatch {
            shard: self.config.shard.clone(),
            reason,
        };
        let last = match windows.last() {
            Some(last) if windows.transactions() == transactions.len() => last,
            _ => {
                return Err(invalid(format!(
                    "{} transactions, but the windows account for {}",
                    transactions.len(),
                    windows.transactions()
                )));
            }
        };
        if let Some(pair) = windows
            .parts()
            .windows(2)
            .find(|p| p[0].0.end() > p[1].0.start())
        {
            return Err(invalid(format!(
                "window {} does not follow window {}",
                pair[1].0, pair[0].0
            )));
        }
        let mut previous: Option<CommitPosition> = None;
        let each = windows
            .split(transactions)
            .flat_map(|(window, part)| part.iter().map(move |t| (window, t)));
        for (window, transaction) in each {
            let position = transaction.last_position();
            if !window.contains(transaction.commit_timestamp()) {
                return Err(invalid(format!(
                    "transaction at {position} is outside window {window}"
                )));
            }
            if let Some(other) = transaction
                .records()
                .iter()
                .find(|r| r.shard != self.config.shard.as_str())
            {
                return Err(invalid(format!(
                    "transaction at {position} has a record of shard {:?}",
                    other.shard
                )));
            }
            if previous
                .as_ref()
                .is_some_and(|p| p.cmp_transaction(&position).is_ge())
            {
                return Err(invalid(format!(
                    "transaction at {position} is not after the one before it"
                )));
            }
            previous = Some(position);
        }
        Ok(last)
    }

    /// Plans `pending` now, unless `planned` was made for exactly these transactions.
    fn statements_for(
        &self,
        pending: &[SpannerTransaction],
        planned: Option<PlannedBatch>,
    ) -> Result<(Vec<PlannedStatement>, TransformCounts), WriterError> {
        let generation = self.planner.generation.load(Ordering::Acquire);
        match planned {
            Some(planned) if planned.fits(pending, generation) => {
                Ok((planned.statements, planned.transformations))
            }
            _ => {
                let mut planner = self.planner.lock();
                let statements = planner.plan(pending)?;
                Ok((statements, planner.take_transform_counts()))
            }
        }
    }

    /// Writes the changes of `pending` in `session`'s transaction: the planned statements (or
    /// `pending` planned again), or, `careful`, transaction by transaction with conflicts
    /// resolved row by row.
    async fn write_changes(
        &self,
        session: &mut Session<'_>,
        pending: &[SpannerTransaction],
        planned: Option<PlannedBatch>,
        careful: bool,
    ) -> Result<(), WriterError> {
        if careful {
            return self.apply_carefully(session, pending).await;
        }
        let (statements, counts) = self.statements_for(pending, planned)?;
        session.transformations = counts;
        for statement in statements {
            execute(session, statement).await?;
        }
        Ok(())
    }

    /// Applies `pending` (whose planned statements met a conflict) in halves, each tried as
    /// planned statements under a savepoint, down to single transactions, whose conflicts are
    /// resolved row by row (`crate::careful`).
    async fn apply_carefully(
        &self,
        session: &mut Session<'_>,
        pending: &[SpannerTransaction],
    ) -> Result<(), WriterError> {
        let shard = session.shard;
        let db = |operation: &'static str| {
            move |e: mysql_async::Error| WriterError::database(shard, operation, String::new(), &e)
        };
        // The whole range is known to meet a conflict.
        let mut ranges: Vec<(usize, usize, bool)> = vec![(0, pending.len(), true)];
        while let Some((start, end, fails)) = ranges.pop() {
            let range = &pending[start..end];
            if !fails {
                session
                    .exec_text("SAVEPOINT revrepl_careful")
                    .await
                    .map_err(db("setting a savepoint"))?;
                let (statements, counts) = {
                    let mut planner = self.planner.lock();
                    let statements = planner.plan(range)?;
                    (statements, planner.take_transform_counts())
                };
                let mut outcome = Ok(());
                for statement in statements {
                    outcome = execute(session, statement).await;
                    if outcome.is_err() {
                        break;
                    }
                }
                match outcome {
                    Ok(()) => {
                        session.transformations.add(counts);
                        continue;
                    }
                    Err(error) if error.mysql_code().is_some_and(careful::resolvable) => {
                        session
                            .exec_text("ROLLBACK TO SAVEPOINT revrepl_careful")
                            .await
                            .map_err(db("rolling back to a savepoint"))?;
                    }
                    Err(error) => return Err(error),
                }
            }
            if end - start == 1 {
                let (schema, rows, counts) = {
                    let mut planner = self.planner.lock();
                    let rows = planner.plan_ops(&range[0])?;
                    (
                        Arc::clone(planner.schema()),
                        rows,
                        planner.take_transform_counts(),
                    )
                };
                careful::apply_rows(session, &schema, rows).await?;
                session.resolved += 1;
                session.transformations.add(counts);
            } else {
                let middle = start + (end - start) / 2;
                ranges.push((middle, end, false));
                ranges.push((start, middle, false));
            }
        }
        Ok(())
    }

    /// One attempt at a batch; `careful`: transaction by transaction, resolving conflicts.
    async fn apply_in_transaction(
        &self,
        conn: &mut Conn,
        window: Window,
        transactions: &[SpannerTransaction],
        planned: Option<PlannedBatch>,
        careful: bool,
    ) -> Result<ApplyOutcome, WriterError> {
        let shard = &self.config.shard;
        let db = |operation: &'static str| {
            move |e: mysql_async::Error| WriterError::database(shard, operation, String::new(), &e)
        };
        conn.query_drop("START TRANSACTION")
            .await
            .map_err(db("starting a transaction"))?;
        let stored = match checkpoint::read(&mut *conn, &self.config.run_id, shard, true).await {
            Ok(stored) => stored,
            Err(CheckpointReadError::Database(e)) => {
                return Err(db("reading the checkpoint")(e));
            }
            Err(CheckpointReadError::Invalid(reason)) => {
                return Err(WriterError::Checkpoint {
                    shard: shard.clone(),
                    reason,
                });
            }
        };
        let skipped = stored.as_ref().map_or(0, |checkpoint| {
            transactions
                .iter()
                .take_while(|t| checkpoint.covers(&t.last_position()))
                .count()
        });
        let pending = &transactions[skipped..];
        let Some(last) = pending.last() else {
            conn.query_drop("ROLLBACK")
                .await
                .map_err(db("ending a transaction"))?;
            return Ok(ApplyOutcome {
                skipped_transactions: skipped,
                position: stored.and_then(|c| c.position),
                ..ApplyOutcome::default()
            });
        };
        let fault = self
            .fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut session = Session {
            conn: &mut *conn,
            shard,
            fault,
            statements: 0,
            resolved: 0,
            transformations: TransformCounts::default(),
        };
        self.write_changes(&mut session, pending, planned, careful)
            .await?;
        let (statement_count, resolved) = (session.statements, session.resolved);
        let transformations = std::mem::take(&mut session.transformations);
        let position = last.last_position();
        let records: usize = pending.iter().map(SpannerTransaction::len).sum();
        session
            .fault(FaultPoint::Checkpoint)
            .await
            .map_err(db("writing the checkpoint"))?;
        checkpoint::write(
            &mut *session.conn,
            &self.config.run_id,
            shard,
            window,
            Some(&position),
            records as u64,
            pending.len() as u64,
        )
        .await
        .map_err(db("writing the checkpoint"))?;
        session.commit().await.map_err(db("committing"))?;
        tracing::debug!(
            shard = %shard,
            window = %window,
            transactions = pending.len(),
            skipped,
            records,
            statements = statement_count,
            resolved,
            "applied a batch"
        );
        Ok(ApplyOutcome {
            applied_transactions: pending.len(),
            skipped_transactions: skipped,
            applied_records: records,
            statements: statement_count,
            resolved_transactions: resolved,
            position: Some(position),
            transformations,
        })
    }
}

/// What [`ShardApplier::apply_dead_letter`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterApply {
    /// Applied now, and recorded as applied in the same MySQL transaction.
    Applied {
        /// Records applied.
        records: usize,
        /// Statements executed.
        statements: usize,
    },
    /// The ledger says it was applied before (by an earlier retry): nothing was done.
    AlreadyApplied,
    /// The ledger says it failed again before (`severe`) and severe ones were not asked for.
    Severe,
}

/// Retrying dead letters (`revrepl dlq retry`, [`crate::dead_letter`]) through the same
/// statements, conflict handling and connection as batches; exactly once through the
/// `revrepl_dead_letters` ledger, written in the MySQL transaction of the apply.
impl ShardApplier {
    /// Applies the dead-lettered `transaction` stored at `name` unless the shard's ledger says
    /// it is applied (or `severe`, unless `retry_severe`), and records it as applied in the
    /// same MySQL transaction: a crash at any point applies it at most once, and a second
    /// process retrying the same letter at the same time waits for the first's row lock. The
    /// checkpoint is not touched. On error nothing is applied.
    pub async fn apply_dead_letter(
        &self,
        name: &str,
        transaction: &SpannerTransaction,
        retry_severe: bool,
    ) -> Result<DeadLetterApply, WriterError> {
        let mut guard = self.state.lock().await;
        let state = &mut *guard;
        let conn = state.link.acquire(&self.config).await?;
        let mut result = self
            .dead_letter_in_transaction(conn, name, transaction, retry_severe, false)
            .await;
        if let Some(rolled_back) = self
            .roll_back_conflict(conn, &result, "a dead letter")
            .await
        {
            result = match rolled_back {
                Ok(()) => {
                    self.dead_letter_in_transaction(conn, name, transaction, retry_severe, true)
                        .await
                }
                Err(error) => Err(error),
            };
        }
        state.link.finish(&result).await;
        result
    }

    /// Records in the ledger that the dead letter at `name` failed again with `error`
    /// (`severe`), unless it is recorded as applied.
    pub async fn record_severe_dead_letter(
        &self,
        name: &str,
        error: &str,
    ) -> Result<(), WriterError> {
        let mut guard = self.state.lock().await;
        let state = &mut *guard;
        let conn = state.link.acquire(&self.config).await?;
        let written = crate::dead_letter::ledger::record_severe(
            conn,
            &self.config.run_id,
            &self.config.shard,
            name,
            error,
        )
        .await;
        state.link.settle(
            &self.config.shard,
            "recording a severe dead letter",
            written,
        )
    }

    /// The shard's ledger of retried dead letters (empty while the shard has no ledger table).
    pub async fn dead_letter_ledger(
        &self,
    ) -> Result<crate::dead_letter::ledger::Ledger, WriterError> {
        let mut guard = self.state.lock().await;
        let state = &mut *guard;
        let conn = state.link.acquire(&self.config).await?;
        let read = crate::dead_letter::ledger::read(conn, &self.config.shard).await;
        state
            .link
            .settle(&self.config.shard, "reading the dead-letter ledger", read)
    }

    async fn dead_letter_in_transaction(
        &self,
        conn: &mut Conn,
        name: &str,
        transaction: &SpannerTransaction,
        retry_severe: bool,
        careful: bool,
    ) -> Result<DeadLetterApply, WriterError> {
        use crate::dead_letter::ledger::{self, LedgerState};
        let shard = &self.config.shard;
        let db = |operation: &'static str| {
            move |e: mysql_async::Error| WriterError::database(shard, operation, String::new(), &e)
        };
        conn.query_drop(ledger::CREATE_TABLE)
            .await
            .map_err(db("creating the dead-letter ledger"))?;
        conn.query_drop("START TRANSACTION")
            .await
            .map_err(db("starting a transaction"))?;
        let stored = ledger::lock(&mut *conn, shard, name)
            .await
            .map_err(db("reading the dead-letter ledger"))?;
        let skip = match stored {
            Some(LedgerState::Applied) => Some(DeadLetterApply::AlreadyApplied),
            Some(LedgerState::Severe) if !retry_severe => Some(DeadLetterApply::Severe),
            _ => None,
        };
        if let Some(skip) = skip {
            conn.query_drop("ROLLBACK")
                .await
                .map_err(db("ending a transaction"))?;
            return Ok(skip);
        }
        let fault = self
            .fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut session = Session {
            conn: &mut *conn,
            shard,
            fault,
            statements: 0,
            resolved: 0,
            transformations: TransformCounts::default(),
        };
        let one = std::slice::from_ref(transaction);
        self.write_changes(&mut session, one, None, careful).await?;
        let statements = session.statements;
        session
            .fault(FaultPoint::Checkpoint)
            .await
            .map_err(db("recording the dead letter as applied"))?;
        ledger::record_applied(&mut *session.conn, &self.config.run_id, shard, name)
            .await
            .map_err(db("recording the dead letter as applied"))?;
        session.commit().await.map_err(db("committing"))?;
        Ok(DeadLetterApply::Applied {
            records: transaction.len(),
            statements,
        })
    }
}

async fn open(config: &ApplierConfig) -> Result<Conn, WriterError> {
    let shard = &config.shard;
    let cache = config
        .connection
        .stmt_cache_size()
        .max(STATEMENT_CACHE_SIZE);
    let opts = OptsBuilder::from_opts(config.connection.clone()).stmt_cache_size(cache);
    let connecting = Conn::new(opts);
    let connected = match config.connect_timeout {
        Some(timeout) => tokio::time::timeout(timeout, connecting)
            .await
            .unwrap_or_else(|_| {
                Err(mysql_async::Error::Io(mysql_async::IoError::Io(
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within connectTimeout ({timeout:?})"),
                    ),
                )))
            }),
        None => connecting.await,
    };
    let mut conn =
        connected.map_err(|e| WriterError::database(shard, "connecting", String::new(), &e))?;
    for statement in SESSION_SETUP {
        conn.query_drop(*statement).await.map_err(|e| {
            WriterError::database(shard, "setting up the session", String::new(), &e)
        })?;
    }
    Ok(conn)
}

/// Executes one planned statement; an error names the table, the statement and the key of
/// the row MySQL reports (or the first row).
async fn execute(
    session: &mut Session<'_>,
    statement: PlannedStatement,
) -> Result<(), WriterError> {
    let shard = session.shard;
    let PlannedStatement {
        table,
        kind,
        sql,
        params,
        keys,
    } = statement;
    session.exec(&sql, params).await.map_err(|e| {
        let (row, column) = match &e {
            mysql_async::Error::Server(server) => row_and_column(&server.message),
            _ => (None, None),
        };
        let verb = if kind == StatementKind::Upsert {
            "upsert"
        } else {
            "delete"
        };
        let key = match row.and_then(|r| keys.get(r.checked_sub(1)?)) {
            Some(key) => format!(", key {key}"),
            None if keys.len() == 1 => format!(", key {}", keys[0]),
            None => format!(
                ", {} rows from key {}",
                keys.len(),
                keys.first().map_or("", String::as_str)
            ),
        };
        let column = column.map(|c| format!(", column {c}")).unwrap_or_default();
        let context = format!(" ({verb} on table {table}{column}{key})");
        WriterError::database(shard, "applying a statement", context, &e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shard's `connectTimeout` bounds the writer's own connection: a server that accepts
    /// TCP but never answers is given up on (as a transient error) after it.
    #[tokio::test]
    async fn connecting_gives_up_after_connect_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let opts = Opts::from_url(&format!("mysql://root@127.0.0.1:{port}/db")).expect("url");
        let mut config = ApplierConfig::new("run", ShardId::new("ls1").expect("valid"), opts);
        config.connect_timeout = Some(Duration::from_millis(300));
        let began = std::time::Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(20), ShardApplier::connect(config))
            .await
            .expect("the connect timeout ends the attempt, not this test's deadline");
        let error = outcome.expect_err("nobody answers");
        assert!(began.elapsed() < Duration::from_secs(10));
        assert_eq!(error.class(), ErrorClass::Transient, "{error}");
        assert!(error.to_string().contains("connectTimeout"), "{error}");
        drop(listener);
    }

    #[test]
    fn configuration_debug_hides_the_password() {
        let opts =
            Opts::from_url("mysql://app:s3cret-pass@db.example:3307/shard1").expect("valid url");
        let config = ApplierConfig::new("run", ShardId::new("ls1").expect("valid"), opts);
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("db.example") && shown.contains("shard1"),
            "{shown}"
        );
    }
}
