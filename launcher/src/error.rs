//! The launcher's one error type.

use revrepl_config::ConfigError;
use revrepl_metadata::MetadataError;
use revrepl_reader::ReaderError;
use revrepl_record::{BufferError, Classify, ErrorClass};
use revrepl_shard_routing::RoutingError;

/// Why a command could not do its job. Messages name the object and say what to fix; none
/// carries a password.
#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    /// The configuration cannot be loaded.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An option or argument that cannot work with this configuration or run.
    #[error("{0}")]
    Usage(String),
    /// The metadata store failed.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The shards file, the session file or the router failed.
    #[error(transparent)]
    Routing(#[from] RoutingError),
    /// Reader code used by the launcher (metadata setup, change-stream checks) failed.
    #[error(transparent)]
    Reader(#[from] ReaderError),
    /// The buffer failed.
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// A call to Spanner failed.
    #[error("spanner {location}: {operation} failed: {message}")]
    Spanner {
        /// The database.
        location: String,
        /// What was being done.
        operation: String,
        /// What the client or the server said.
        message: String,
    },
    /// A call to a MySQL shard failed.
    #[error("shard {shard}: {operation} failed: {message}")]
    MySql {
        /// The logical shard.
        shard: String,
        /// What was being done.
        operation: String,
        /// What the server or the driver said.
        message: String,
    },
    /// A program (the reader, the writer, a service script) could not be started, waited for
    /// or stopped.
    #[error("{program}: {message}")]
    Process {
        /// The program.
        program: String,
        /// What went wrong and what to do.
        message: String,
    },
    /// Writer code used by the launcher (`revrepl dlq`) failed.
    #[error(transparent)]
    Writer(Box<revrepl_writer::WriterError>),
    /// A step of `revrepl demo` failed.
    #[error("demo: {0}")]
    Demo(String),
}

impl From<revrepl_writer::WriterError> for LauncherError {
    fn from(error: revrepl_writer::WriterError) -> Self {
        Self::Writer(Box::new(error))
    }
}

impl LauncherError {
    /// The process exit code for this error: 2 for configuration and usage, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::Usage(_) => 2,
            Self::Writer(error)
                if matches!(**error, revrepl_writer::WriterError::Config { .. }) =>
            {
                2
            }
            _ => 1,
        }
    }
}

impl Classify for LauncherError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Config(e) => e.class(),
            Self::Metadata(e) => e.class(),
            Self::Routing(e) => e.class(),
            Self::Reader(e) => e.class(),
            Self::Buffer(e) => e.class(),
            Self::Writer(e) => e.class(),
            Self::Usage(_) | Self::Process { .. } | Self::Demo(_) => ErrorClass::Fatal,
            Self::Spanner { .. } | Self::MySql { .. } => ErrorClass::Transient,
        }
    }
}
