//! The revrepl writer (DESIGN §6): ordered, exactly-once apply of Spanner changes to MySQL
//! shards.
//!
//! This crate holds the apply engine below the per-shard orchestration:
//!
//! - [`mapping`]: Spanner table and column names → MySQL names (identity, or from the
//!   session file), with Spanner types when known.
//! - [`schema`]: a shard's target schema from `information_schema`: column types, primary
//!   keys, foreign keys.
//! - [`convert`](mod@convert): change-stream JSON values → MySQL values by column type, with the source
//!   time zone.
//! - [`batch`]: Spanner transactions grouped from window-file records, commit positions, and
//!   size-limited batches of whole transactions.
//! - [`statement`]: upserts and deletes planned per batch — foreign-key-safe order, multi-row
//!   merging, cached statement texts.
//! - [`transformation`]: the transformation plugin, asked about each record before it is
//!   planned.
//! - [`checkpoint`]: the `revrepl_checkpoint` row in each shard.
//! - [`apply`]: [`ShardApplier`], which applies a batch and the checkpoint in one MySQL
//!   transaction.
//! - [`dead_letter`]: transactions set aside under `writer.dead_letter`, their ledger in each
//!   shard, and retrying them (`revrepl dlq`).
//! - [`error`]: [`WriterError`] and the MySQL error classes.
//!
//! ```no_run
//! # async fn example(
//! #     connection: mysql_async::Opts,
//! #     window: revrepl_record::Window,
//! #     records: Vec<revrepl_record::ChangeRecord>,
//! # ) -> Result<(), revrepl_writer::WriterError> {
//! use revrepl_record::{Backoff, ShardId, with_backoff};
//! use revrepl_writer::{ApplierConfig, BatchLimits, ShardApplier, SpannerTransaction, batches};
//!
//! let shard = ShardId::new("ls1").expect("valid shard id");
//! let config = ApplierConfig::new("run-1", shard, connection);
//! let policy = Backoff::default().forever();
//! let applier = with_backoff(policy, |_, _| {}, || ShardApplier::connect(config.clone())).await?;
//! let transactions = SpannerTransaction::group(records);
//! for batch in batches(&transactions, BatchLimits::default()) {
//!     applier.apply_batch_with_retry(window, batch, policy, |_, _| {}).await?;
//! }
//! # Ok(())
//! # }
//! ```

pub mod app;
pub mod apply;
pub mod batch;
mod careful;
pub mod checkpoint;
pub mod convert;
pub mod dead_letter;
pub mod error;
pub mod mapping;
mod placement;
pub mod reader_progress;
pub mod schema;
pub mod shard_task;
pub mod statement;
pub mod telemetry;
pub mod transformation;

pub use apply::{
    ApplierConfig, ApplyOutcome, BatchPlanner, DeadLetterApply, PlannedBatch, ShardApplier,
    shard_connection_options,
};
pub use batch::{
    Assembled, BatchLimits, BatchWindows, CommitPosition, SpannerTransaction, WindowBatcher,
    batches,
};
pub use checkpoint::{CHECKPOINT_TABLE, Checkpoint};
pub use convert::{
    ArrayText, ConversionError, ConversionRules, Converted, DecimalOverflow, SourceTimeZone,
    TimeZoneError, comma_joined, convert, to_mysql_value,
};
pub use error::{ConversionFailure, MySqlFailure, TransformationFailure, WriterError};
pub use mapping::{ColumnMapping, SchemaMapping, SpannerScalar, SpannerType, TableMapping};
pub use schema::{ColumnKind, ForeignKey, TargetColumn, TargetSchema, TargetTable, UniqueIndex};
pub use statement::{PlannedStatement, StatementKind, StatementLimits, StatementPlanner};
pub use transformation::{
    PluginTransformer, RecordTransformer, TransformCounts, TransformationLoadError,
    TransformationProblem,
};
