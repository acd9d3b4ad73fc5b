//! The [`MetadataStore`] trait: what the reader and the writer record and read (DESIGN §3, §6,
//! §7).

use std::fmt;
use std::ops::RangeInclusive;

use async_trait::async_trait;
use revrepl_record::{ShardId, Timestamp};

use crate::error::MetadataError;
use crate::lease::{Lease, LeaseAttempt};
use crate::progress::{CreateProgress, CreatedWindows, ProcessProgress, ProcessStatus, ShardError};
use crate::run::{RunId, RunRecord};
use crate::tables::TableNames;

/// What [`MetadataStore::ensure_tables`] does about a table that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingTables {
    /// Create it (the launcher's "create the metadata tables" step, or any single-machine run).
    Create,
    /// Report it as [`MetadataError::MalformedTable`] (processes that must not change schemas).
    Fail,
}

/// The progress tables the reader and the writer share (DESIGN §8).
///
/// Every method is one round trip or one transaction, safe to call from many tasks and from
/// several processes at once. Writes are atomic. Transient failures are retried inside the
/// store a bounded number of times; after that they come back as
/// [`MetadataError::Unavailable`] ([`ErrorClass::Transient`](revrepl_record::ErrorClass)),
/// which callers may retry with [`with_backoff`](revrepl_record::with_backoff).
#[async_trait]
pub trait MetadataStore: Send + Sync + fmt::Debug {
    /// Where the tables are, for messages: `spanner projects/p/instances/i/databases/d` or
    /// `sqlite /path/file.db`.
    fn location(&self) -> &str;

    /// The table names in use (with the `metadata_table_suffix`).
    fn tables(&self) -> &TableNames;

    /// Checks that the reference's four tables (and revrepl's index on `data_seen` and its own
    /// `shard_errors` and `leases` tables) exist with the columns revrepl uses, creating missing ones when
    /// `missing` is [`MissingTables::Create`]. Safe when several processes do it at once. A
    /// table with missing or mistyped columns is [`MetadataError::MalformedTable`], naming the
    /// table. With [`MissingTables::Fail`], a missing index or `shard_errors` table is not an
    /// error: they are optional (a database the reference created has none of them).
    async fn ensure_tables(&self, missing: MissingTables) -> Result<(), MetadataError>;

    /// Records a run (regular mode). Recording the same run again is a no-op; recording an
    /// existing run id with another start or window duration is
    /// [`MetadataError::RunConflict`].
    async fn record_run(&self, run: &RunRecord) -> Result<(), MetadataError>;

    /// The run's row, if it was recorded.
    async fn run(&self, run_id: &RunId) -> Result<Option<RunRecord>, MetadataError>;

    /// Gives each shard in `shards` that has no `created_upto` row yet one at `created_upto`
    /// (normally the run's start: nothing created yet). Existing rows are left as they are.
    async fn register_shards(
        &self,
        run_id: &RunId,
        shards: &[ShardId],
        created_upto: Timestamp,
    ) -> Result<(), MetadataError>;

    /// The reader's one write per finalized window (or batch of windows), atomically: inserts
    /// the `data_seen` rows and advances `created_upto` of every shard of `windows` to
    /// [`CreatedWindows::upto`], never moving any shard backwards. Idempotent.
    async fn record_windows(
        &self,
        run_id: &RunId,
        windows: &CreatedWindows,
    ) -> Result<(), MetadataError>;

    /// The shard's `created_upto`, or `None` if the reader has not registered the shard.
    async fn created_upto(
        &self,
        run_id: &RunId,
        shard: &ShardId,
    ) -> Result<Option<Timestamp>, MetadataError>;

    /// Every shard's `created_upto` row for the run, sorted by shard.
    async fn create_progress(&self, run_id: &RunId) -> Result<Vec<CreateProgress>, MetadataError>;

    /// Ends of the shard's windows that had data (`data_seen.window_seen`) within `ends`
    /// (inclusive on both sides), ascending, at most `limit` of them — one query.
    async fn windows_with_data(
        &self,
        run_id: &RunId,
        shard: &ShardId,
        ends: RangeInclusive<Timestamp>,
        limit: usize,
    ) -> Result<Vec<Timestamp>, MetadataError>;

    /// Writes the shard's `shard_file_process_progress` row (insert or replace).
    async fn set_process_progress(
        &self,
        run_id: &RunId,
        progress: &ProcessProgress,
    ) -> Result<(), MetadataError>;

    /// The shard's `shard_file_process_progress` row, if any.
    async fn process_progress(
        &self,
        run_id: &RunId,
        shard: &ShardId,
    ) -> Result<Option<ProcessProgress>, MetadataError>;

    /// The run's `shard_file_process_progress` rows, only those with `status` when given,
    /// sorted by shard: the shards of the writer's resume modes (DESIGN §7).
    async fn list_process_progress(
        &self,
        run_id: &RunId,
        status: Option<ProcessStatus>,
    ) -> Result<Vec<ProcessProgress>, MetadataError>;

    /// Records the text of the definite error that stopped `shard` at the window starting at
    /// `window_start` in `shard_errors` (insert or replace: one row per run and shard), cut to
    /// [`MAX_ERROR_TEXT_BYTES`](crate::MAX_ERROR_TEXT_BYTES). When the table does not exist
    /// (a store opened with [`MissingTables::Fail`] on a database the reference created),
    /// nothing is written and a warning is logged: `Ok`.
    async fn record_shard_error(
        &self,
        run_id: &RunId,
        shard: &ShardId,
        window_start: Timestamp,
        error: &str,
    ) -> Result<(), MetadataError>;

    /// The run's `shard_errors` rows, sorted by shard — one query. Empty when the table does
    /// not exist.
    async fn shard_errors(&self, run_id: &RunId) -> Result<Vec<ShardError>, MetadataError>;

    /// Takes or renews the lease `role` (`reader`, `writer:<shard>`) of `run_id` for `owner`
    /// until `expires_at`, in one transaction: written when there is no row, when the row's
    /// expiry is at or before `now`, or when the row is `owner`'s; otherwise nothing is written
    /// and the holder is returned. [`LeaseAttempt::NoTable`] when the `leases` table does not
    /// exist. See [`LeaseKeeper`](crate::LeaseKeeper), which uses it.
    async fn acquire_lease(
        &self,
        run_id: &RunId,
        role: &str,
        owner: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<LeaseAttempt, MetadataError>;

    /// Deletes the lease `role` of `run_id` if `owner` holds it; otherwise (or without a
    /// `leases` table) does nothing.
    async fn release_lease(
        &self,
        run_id: &RunId,
        role: &str,
        owner: &str,
    ) -> Result<(), MetadataError>;

    /// The run's lease rows, expired ones included, sorted by role — one query. Empty when the
    /// table does not exist.
    async fn leases(&self, run_id: &RunId) -> Result<Vec<Lease>, MetadataError>;

    /// The run's row, or [`MetadataError::MissingRun`] naming the run and this store (resume
    /// modes).
    async fn require_run(&self, run_id: &RunId) -> Result<RunRecord, MetadataError> {
        self.run(run_id)
            .await?
            .ok_or_else(|| MetadataError::MissingRun {
                store: self.location().to_owned(),
                table: self.tables().run().to_owned(),
                run_id: run_id.to_string(),
            })
    }

    /// The smallest `created_upto` of the run: where a resuming reader starts (DESIGN §3.5).
    /// `None` when no shard is registered.
    async fn min_created_upto(&self, run_id: &RunId) -> Result<Option<Timestamp>, MetadataError> {
        let progress = self.create_progress(run_id).await?;
        Ok(progress.iter().map(|p| p.created_upto).min())
    }
}
