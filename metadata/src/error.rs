//! The one error type of the metadata stores, with its [`ErrorClass`].

use revrepl_record::{Classify, ErrorClass};

/// An error of a [`MetadataStore`](crate::MetadataStore). Every message names the store (a
/// Spanner database or an SQLite file) and, where there is one, the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// `metadata_table_suffix` holds characters other than letters, digits and `_`.
    #[error(
        "metadata table suffix {suffix:?} is invalid: use only ASCII letters, digits and '_' (at most {max} characters)"
    )]
    InvalidSuffix {
        /// The suffix given.
        suffix: String,
        /// The longest suffix accepted.
        max: usize,
    },
    /// A run id that cannot be stored.
    #[error("run id {run_id:?} is invalid: {reason}")]
    InvalidRunId {
        /// The id given.
        run_id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A request that can never succeed, such as a `data_seen` window after the `created_upto`
    /// of the same write (a bug in the caller).
    #[error("invalid metadata request: {reason}")]
    InvalidRequest {
        /// What is wrong.
        reason: String,
    },
    /// The store cannot be reached now (network, server down, lock held by another process,
    /// deadline exceeded, transaction aborted too often); the same call may succeed later.
    #[error("metadata store {store} is unavailable: {operation} failed: {message}")]
    Unavailable {
        /// The store.
        store: String,
        /// What was being done.
        operation: String,
        /// What the store or the network said.
        message: String,
    },
    /// The store refused the call for a reason retrying cannot fix (permission, missing
    /// database, invalid statement).
    #[error("metadata store {store}: {operation} failed: {message}")]
    Store {
        /// The store.
        store: String,
        /// What was being done.
        operation: String,
        /// What the store said.
        message: String,
    },
    /// A table exists without the columns revrepl (and the reference) use, or is missing when
    /// it was not to be created.
    #[error("table {table} in metadata store {store} is malformed: {reason}")]
    MalformedTable {
        /// The store.
        store: String,
        /// The table.
        table: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A row holds a value revrepl cannot read (an unparsable timestamp or status, an invalid
    /// shard id), typically after a manual edit.
    #[error("table {table} in metadata store {store} holds an invalid value at {key}: {reason}")]
    CorruptRow {
        /// The store.
        store: String,
        /// The table.
        table: String,
        /// The row and column, such as `run_id="r1", shard="s1", status`.
        key: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// Resume mode found no row for the run in `spanner_to_gcs_metadata`.
    #[error(
        "run {run_id:?} is not recorded in table {table} of metadata store {store}: resume needs \
         a run that regular mode recorded (check the run id, the metadata store and \
         metadata_table_suffix)"
    )]
    MissingRun {
        /// The store.
        store: String,
        /// The run table, with its suffix.
        table: String,
        /// The run id asked for.
        run_id: String,
    },
    /// Regular mode was asked to record a run whose id is already recorded with another start
    /// or window duration.
    #[error(
        "run {run_id:?} is already recorded in table {table} of metadata store {store} with \
         {existing}, not {requested}: resume that run or choose a new run id"
    )]
    RunConflict {
        /// The store.
        store: String,
        /// The run table, with its suffix.
        table: String,
        /// The run id.
        run_id: String,
        /// The start and window duration already recorded (`start 2024-… and window 10s`).
        existing: String,
        /// The start and window duration asked for.
        requested: String,
    },
    /// Another process holds the lease of this run's reader, or of this shard's writer: a
    /// second one must not run beside it.
    #[error(
        "run {run_id:?}: {role} is already running: {owner} holds its lease in {place} until \
         {expires_at} (renewed while it runs); stop that process first, or, if it died without \
         releasing the lease, start again after that time"
    )]
    LeaseHeld {
        /// Where: `table leases of metadata store sqlite /path/metadata.db`.
        place: String,
        /// The run.
        run_id: String,
        /// Whose lease: `the reader` or `the writer of shard s1`.
        role: String,
        /// The process holding it: host, pid and a random id.
        owner: String,
        /// When it expires unless renewed.
        expires_at: revrepl_record::Timestamp,
    },
    /// This process no longer holds its lease (it could not renew it in time, or another
    /// process took it over): it must stop before recording more progress.
    #[error(
        "run {run_id:?}: {role} lost its lease in metadata store {store}: {reason}; stopping so \
         that two processes never run it side by side"
    )]
    LeaseLost {
        /// The store.
        store: String,
        /// The run.
        run_id: String,
        /// Whose lease: `the reader` or `the writer of shard s1`.
        role: String,
        /// What happened.
        reason: String,
    },
}

// Errors are returned by value everywhere: keep them small.
const _: () = assert!(std::mem::size_of::<MetadataError>() <= 120);

impl Classify for MetadataError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Unavailable { .. } => ErrorClass::Transient,
            Self::InvalidSuffix { .. }
            | Self::InvalidRunId { .. }
            | Self::InvalidRequest { .. }
            | Self::Store { .. }
            | Self::MalformedTable { .. }
            | Self::CorruptRow { .. }
            | Self::MissingRun { .. }
            | Self::RunConflict { .. }
            | Self::LeaseHeld { .. }
            | Self::LeaseLost { .. } => ErrorClass::Fatal,
        }
    }
}
