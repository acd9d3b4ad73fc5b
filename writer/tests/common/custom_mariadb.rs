//! A MariaDB server started with extra `mariadbd` options (durable settings, TLS), through the
//! same script as `revrepl_test_services::MariaDb` (`tests/scripts/mariadb.sh`, which takes the
//! options after the owner pid). Shared by the TLS test and the writer benchmark
//! (`#[path = ...] mod`). Stopped when dropped; a watchdog stops it if this process dies.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use revrepl_test_services::{ensure_mariadb_installed, scripts_dir};

/// `mariadbd` options that make every commit durable: the redo log flushed and the binary log
/// synced at each commit, doublewrite on (the benchmarks' settings).
#[allow(dead_code)] // Not every includer starts a durable server.
pub fn durable_options() -> Vec<String> {
    [
        "--innodb-flush-log-at-trx-commit=1",
        "--log-bin=mysql-bin",
        "--server-id=1",
        "--binlog-format=ROW",
        "--sync-binlog=1",
        "--innodb-doublewrite=1",
    ]
    .map(String::from)
    .to_vec()
}

/// Exit code of `mariadb.sh start` when the port was taken.
const EXIT_PORT_IN_USE: i32 = 3;

/// One MariaDB server on 127.0.0.1 with its own temp directory.
pub struct CustomMariaDb {
    port: u16,
    dir: tempfile::TempDir,
}

fn script() -> PathBuf {
    scripts_dir().join("mariadb.sh")
}

fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

impl CustomMariaDb {
    /// Starts a fresh server with `options` appended to the script's defaults (later options
    /// win), on a free port (three tries when the port turns out to be taken).
    pub fn start(options: &[String]) -> Result<Self, String> {
        ensure_mariadb_installed().map_err(|e| e.to_string())?;
        let dir = tempfile::Builder::new()
            .prefix("revrepl-wmdb-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let mut last = String::new();
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("free port: {e}"))?
                .port();
            let output = Command::new("bash")
                .arg(script())
                .arg("start")
                .arg(dir.path())
                .arg(port.to_string())
                .arg(std::process::id().to_string())
                .args(options)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("running mariadb.sh: {e}"))?;
            if output.status.success() {
                return Ok(Self { port, dir });
            }
            last = output_text(&output);
            if output.status.code() != Some(EXIT_PORT_IN_USE) {
                break;
            }
        }
        // The script stops what it started when it fails; stop once more to be sure.
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(dir.path())
            .stdin(Stdio::null())
            .output();
        Err(format!("mariadb.sh start failed:\n{last}"))
    }

    /// The TCP port on 127.0.0.1.
    #[allow(dead_code)] // Not every user of this module needs it.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mysql://root@127.0.0.1:PORT`.
    #[allow(dead_code)] // Not every user of this module needs it.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// The server's directory (data, socket, log).
    #[allow(dead_code)] // Not every user of this module needs it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's unix socket (connections through it count as secure transport).
    #[allow(dead_code)] // Not every user of this module needs it.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    /// The pid of `mariadbd`.
    #[allow(dead_code)] // Not every user of this module needs it.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("server.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// The last lines of the server's log.
    #[allow(dead_code)] // Not every user of this module needs it.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("mariadb.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for CustomMariaDb {
    fn drop(&mut self) {
        let stopped = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .output();
        match stopped {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!("mariadb.sh stop failed: {}", output_text(&output)),
            Err(e) => eprintln!("mariadb.sh stop failed: {e}"),
        }
    }
}
