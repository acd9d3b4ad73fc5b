//! The reader's one error type; every variant knows its [`ErrorClass`].

use revrepl_metadata::MetadataError;
use revrepl_record::{BufferError, Classify, ErrorClass, Timestamp};
use revrepl_shard_routing::RoutingError;

use crate::assembly::AssemblyError;
use crate::change_stream::RecordDecodeError;
use crate::partition::PartitionError;

/// Everything that can stop or delay the reader.
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    /// A change-stream query failed.
    #[error("change stream query on {location} ({partition}) failed: {message}")]
    Query {
        /// The database.
        location: String,
        /// Short partition token.
        partition: String,
        /// What the client or server said.
        message: String,
        /// Whether retrying may help.
        class: ErrorClass,
    },
    /// A change-stream row could not be decoded.
    #[error("partition {partition}: {source}")]
    Decode {
        /// Short partition token.
        partition: String,
        /// The decoding error.
        source: RecordDecodeError,
    },
    /// A data-change record with a mod type the file format cannot carry.
    #[error(
        "table {table:?}: record committed at {commit} has mod type {mod_type:?}, which revrepl \
         cannot write (expected INSERT, UPDATE or DELETE)"
    )]
    UnknownModType {
        /// The table.
        table: String,
        /// The commit timestamp.
        commit: Timestamp,
        /// The mod type Spanner sent.
        mod_type: String,
    },
    /// A record's shard could not be determined.
    #[error(transparent)]
    Routing(#[from] RoutingError),
    /// Window assembly broke an invariant.
    #[error(transparent)]
    Assembly(#[from] AssemblyError),
    /// Partition bookkeeping broke an invariant.
    #[error(transparent)]
    Partition(#[from] PartitionError),
    /// The buffer failed.
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// A window file exists with other content than the reader produced.
    #[error(
        "window file {path:?} in buffer {location} already exists with different content; \
         the run's shards, routing or filtering changed since it was written. Inspect it, move \
         it away and resume"
    )]
    FileConflict {
        /// The buffer.
        location: String,
        /// The object path.
        path: String,
    },
    /// The metadata store failed.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The change stream cannot be read as configured.
    #[error("change stream {stream:?}: {reason}")]
    Stream {
        /// The change stream.
        stream: String,
        /// What is wrong.
        reason: String,
    },
    /// The start is older than the change stream keeps data.
    #[error(
        "cannot start at {start}: change stream {stream:?} keeps data for {retention}, so the \
         oldest readable time is {horizon}; changes in between are lost. Start a new run"
    )]
    Retention {
        /// The change stream.
        stream: String,
        /// The requested start.
        start: Timestamp,
        /// The stream's retention period as configured.
        retention: String,
        /// `now - retention`.
        horizon: Timestamp,
    },
    /// Spanner refused to read the change stream from `start` (OUT_OF_RANGE). Retrying the
    /// same start cannot succeed, so this is fatal, and the reader exits as for a
    /// configuration error (code 2), which `revrepl run` does not restart.
    #[error(
        "{location} refuses to be read from {start}: {message} — the change stream did not \
         exist yet at that time (it records changes from its creation on), or that time is \
         older than its retention. Set reader.start_timestamp to a time after the stream was \
         created (or leave it unset to start now) and start a new run (a new run_id in \
         `--mode regular`, or `revrepl init` then `revrepl run`)"
    )]
    StartRefused {
        /// The database and stream.
        location: String,
        /// The refused start.
        start: Timestamp,
        /// Spanner's message.
        message: String,
    },
    /// Configuration that cannot work.
    #[error("configuration: {key}: {reason}")]
    Config {
        /// The configuration key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A task of the reader ended unexpectedly.
    #[error("reader task failed: {0}")]
    Task(String),
}

impl ReaderError {
    /// Whether running again with the same configuration would fail the same way: a
    /// configuration key, the shards file, the session file or the router plugin, or a start
    /// the change stream cannot serve (retention, before its creation). The reader exits with
    /// code 2 for these, and `revrepl run` does not restart it.
    pub fn is_configuration(&self) -> bool {
        match self {
            Self::Config { .. } | Self::Retention { .. } | Self::StartRefused { .. } => true,
            Self::Routing(error) => error.is_configuration(),
            _ => false,
        }
    }
}

impl Classify for ReaderError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Query { class, .. } => *class,
            Self::Routing(e) => e.class(),
            Self::Buffer(e) => e.class(),
            Self::Metadata(e) => e.class(),
            Self::Decode { .. }
            | Self::UnknownModType { .. }
            | Self::Assembly(_)
            | Self::Partition(_)
            | Self::FileConflict { .. }
            | Self::Stream { .. }
            | Self::Retention { .. }
            | Self::StartRefused { .. }
            | Self::Config { .. }
            | Self::Task(_) => ErrorClass::Fatal,
        }
    }
}
