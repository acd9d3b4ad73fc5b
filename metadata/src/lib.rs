//! Progress tables shared by the revrepl reader and writer (DESIGN §8).
//!
//! The reader records the run, each finalized window that had data (`data_seen`) and how far
//! it has created windows per shard (`shard_file_create_progress`); the writer waits on those,
//! and records what it has applied (`shard_file_process_progress`) and, in revrepl's own
//! `shard_errors` table, the text of a shard's last definite error. Table and column names are
//! the reference's, so operators' queries keep working. revrepl's own `leases` table keeps a
//! second reader of a run, or a second writer of a shard, from running beside the first
//! ([`lease`]).
//!
//! - [`MetadataStore`]: the trait the reader, the writer and the launcher use.
//! - [`SpannerMetadataStore`]: the tables in a Spanner database (deployments on several
//!   machines).
//! - [`SqliteMetadataStore`]: the same tables in an SQLite file (single-machine runs).
//! - [`run`], [`progress`], [`tables`]: the rows, the `data_seen` id, and the table names.

pub mod error;
pub mod lease;
pub mod open;
pub mod progress;
pub mod run;
pub mod spanner;
pub mod sqlite;
pub mod store;
pub mod tables;

pub use error::MetadataError;
pub use lease::{
    DEFAULT_LEASE_TTL, Lease, LeaseAttempt, LeaseKeeper, LeaseOwner, LeaseRole, MIN_LEASE_TTL,
};
pub use open::open_store;
pub use progress::{
    CreateProgress, CreatedWindows, MAX_ERROR_TEXT_BYTES, ProcessProgress, ProcessStatus,
    ShardError, UnknownStatus, data_seen_id, truncate_error_text,
};
pub use run::{RunId, RunRecord};
pub use spanner::{SpannerMetadataStore, SpannerOptions};
pub use sqlite::{SqliteMetadataStore, SqliteOptions};
pub use store::{MetadataStore, MissingTables};
pub use tables::TableNames;
