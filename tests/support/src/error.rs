//! The error type of this crate.

use std::path::PathBuf;
use std::time::Duration;

/// Why starting, stopping or talking to a test service failed.
///
/// Every message names the service and, where there is one, the log file to read, and includes
/// the last lines of that log (or of the script's output, which ends with them).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// A local operation failed: creating the temp dir, finding a free port, running a script,
    /// taking the install lock.
    #[error("{service}: {context}: {source}")]
    Io {
        /// Which service ("spanner emulator", "mariadb", "fake-gcs").
        service: &'static str,
        /// What we were doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A program the service needs is not installed and cannot be installed here.
    #[error("{service}: {what}")]
    NotFound {
        /// Which service.
        service: &'static str,
        /// What is missing, and how to get it.
        what: String,
    },
    /// One of the scripts in `tests/scripts/` failed (install, start or stop).
    #[error("{service}: {action} failed: {command}; log file {}:\n{output}", log.display())]
    Script {
        /// Which service.
        service: &'static str,
        /// "install", "start" or "stop".
        action: &'static str,
        /// The command line that failed and how it ended ("`bash …/mariadb.sh start …` exited
        /// with exit status: 1").
        command: String,
        /// The service's log file (for installs: a file holding the installer's output).
        log: PathBuf,
        /// The script's stdout and stderr (on a failed start it ends with the log's tail).
        output: String,
    },
    /// Every start attempt found its ports already taken by another process.
    #[error(
        "{service}: start failed: the ports were already in use on all {attempts} attempts; \
         log file {}:\n{output}",
        log.display()
    )]
    PortsInUse {
        /// Which service.
        service: &'static str,
        /// How many sets of ports were tried.
        attempts: u32,
        /// The service's log file.
        log: PathBuf,
        /// The last attempt's script output.
        output: String,
    },
    /// An HTTP request to the service could not be sent or its answer not read.
    #[error("{service}: {context}: {source}; log file {}:\n{log_tail}", log.display())]
    Http {
        /// Which service.
        service: &'static str,
        /// The request.
        context: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
        /// The service's log file.
        log: PathBuf,
        /// Its last lines.
        log_tail: String,
    },
    /// The service answered a request with an error.
    #[error("{service}: {context}: HTTP {status}: {body}; log file {}:\n{log_tail}", log.display())]
    Api {
        /// Which service.
        service: &'static str,
        /// The request.
        context: String,
        /// The HTTP status (or, for a failed long-running operation, its error code).
        status: u16,
        /// The answer's body.
        body: String,
        /// The service's log file.
        log: PathBuf,
        /// Its last lines.
        log_tail: String,
    },
    /// A long-running operation did not finish in time.
    #[error("{service}: {context}: not done after {waited:?}; log file {}:\n{log_tail}", log.display())]
    Timeout {
        /// Which service.
        service: &'static str,
        /// The operation.
        context: String,
        /// How long we waited.
        waited: Duration,
        /// The service's log file.
        log: PathBuf,
        /// Its last lines.
        log_tail: String,
    },
    /// The test workload could not write to Spanner.
    #[error("spanner workload: {0}")]
    Workload(String),
}
