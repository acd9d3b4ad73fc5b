//! MariaDB servers standing in for the MySQL shards.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::ServiceError;
use crate::process::{ServiceProcess, find_program, install_locked};

const SERVICE: &str = "mariadb";

/// A MariaDB 10.11 server on 127.0.0.1 with its own data directory; user `root`, no password.
/// Stopped when dropped.
///
/// Defaults differ from MariaDB's own: `utf8mb4` server character set, 64 MiB buffer pool.
/// MySQL-8-only syntax (`INSERT … AS new ON DUPLICATE KEY UPDATE`) does not work here: use
/// `VALUES(col)`.
#[derive(Debug)]
pub struct MariaDb {
    process: ServiceProcess,
    port: u16,
}

/// Makes sure `mariadbd` (and `openssl`) are installed, running
/// `tests/scripts/install-mariadb.sh` (apt) under an exclusive file lock if they are not.
pub fn ensure_mariadb_installed() -> Result<(), ServiceError> {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    // `openssl` too: the TLS tests make their certificates with it.
    let installed = || {
        find_program("mariadbd").is_some()
            && find_program("mariadb-admin").is_some()
            && find_program("openssl").is_some()
    };
    if !installed() {
        install_locked(
            SERVICE,
            "install-mariadb.sh",
            "revrepl-install-mariadb",
            installed,
        )?;
    }
    let _ = INSTALLED.set(());
    Ok(())
}

impl MariaDb {
    /// Starts a fresh server (new data directory) on a free port and waits until it accepts
    /// connections.
    pub fn start() -> Result<Self, ServiceError> {
        ensure_mariadb_installed()?;
        let mut process = ServiceProcess::new(SERVICE, "mariadb.sh", "mariadb.log", Vec::new())?;
        let ports = process.start_with_free_ports(1, &[])?;
        Ok(Self {
            process,
            port: ports[0],
        })
    }

    /// Starts `n` fresh servers side by side (in parallel). If any fails, the others are stopped
    /// and the first error is returned.
    pub fn start_many(n: usize) -> Result<Vec<Self>, ServiceError> {
        ensure_mariadb_installed()?;
        let results: Vec<Result<Self, ServiceError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..n).map(|_| scope.spawn(Self::start)).collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle.join().unwrap_or_else(|_| {
                        Err(ServiceError::Io {
                            service: SERVICE,
                            context: "starting a server in a thread".to_owned(),
                            source: std::io::Error::other("the thread panicked"),
                        })
                    })
                })
                .collect()
        });
        // Dropping the started ones on error stops them.
        results.into_iter().collect()
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mysql://root@127.0.0.1:PORT` (append `/database` as needed).
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// The server's unix socket.
    pub fn socket_path(&self) -> PathBuf {
        self.process.dir().join("mysqld.sock")
    }

    /// The pid of `mariadbd`, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The server's directory (`data/`, socket, log, pid files).
    pub fn dir(&self) -> &Path {
        self.process.dir()
    }

    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The last lines of the log.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// Shuts the server down cleanly and waits for it to exit; the data stays. Idempotent.
    /// Clients see connection errors until [`MariaDb::restart`].
    pub fn stop(&mut self) -> Result<(), ServiceError> {
        self.process.stop()
    }

    /// Starts the server again on the same port with the same data (stopping it first if it
    /// runs). Fails with [`ServiceError::PortsInUse`] if someone took the port meanwhile.
    pub fn restart(&mut self) -> Result<(), ServiceError> {
        self.process.stop()?;
        self.process.start_on(&[self.port], &[])
    }
}
