//! The Cloud Spanner emulator, run through its REST gateway.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::ServiceError;
use crate::process::ServiceProcess;
use crate::rest::Rest;

const SERVICE: &str = "spanner emulator";

/// How long [`SpannerEmulator::create_database`] and friends wait for their long-running
/// operation.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(120);

/// Options for [`SpannerEmulator::start_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmulatorOptions {
    /// `--override_change_stream_partition_token_alive_seconds`: when set to N, change-stream
    /// partitions are replaced (moves, splits, merges) every N..2N seconds instead of 20..40.
    pub partition_token_alive_seconds: Option<u32>,
    /// `--enable_fault_injection`: the emulator aborts transactions at random, to test retries.
    pub fault_injection: bool,
}

/// A Cloud Spanner emulator (`gateway_main`, which runs `emulator_main`) on 127.0.0.1, with a
/// gRPC port for the data clients and a REST port for the admin clients. Stopped when dropped.
///
/// Nothing persists: each emulator starts empty.
#[derive(Debug)]
pub struct SpannerEmulator {
    process: ServiceProcess,
    grpc_port: u16,
    http_port: u16,
    rest: Rest,
}

/// The directory holding `gateway_main` and `emulator_main`: `$SPANNER_EMULATOR_BIN_DIR`, else
/// under `gcloud info --format='value(installation.sdk_root)'`, else under
/// `/usr/lib/google-cloud-sdk`, `/usr/share/google-cloud-sdk` or `/google-cloud-sdk`.
pub fn emulator_bin_dir() -> Result<PathBuf, ServiceError> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    if let Some(dir) = DIR.get() {
        return Ok(dir.clone());
    }
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("SPANNER_EMULATOR_BIN_DIR") {
        candidates.push(PathBuf::from(dir));
    } else {
        let sdk_root = Command::new("gcloud")
            .args(["info", "--format=value(installation.sdk_root)"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|s| !s.is_empty());
        if let Some(root) = sdk_root {
            candidates.push(Path::new(&root).join("bin/cloud_spanner_emulator"));
        }
        for root in [
            "/usr/lib/google-cloud-sdk",
            "/usr/share/google-cloud-sdk",
            "/google-cloud-sdk",
        ] {
            candidates.push(Path::new(root).join("bin/cloud_spanner_emulator"));
        }
    }
    let found = candidates
        .iter()
        .find(|dir| dir.join("gateway_main").is_file() && dir.join("emulator_main").is_file());
    match found {
        Some(dir) => Ok(DIR.get_or_init(|| dir.clone()).clone()),
        None => Err(ServiceError::NotFound {
            service: SERVICE,
            what: format!(
                "no gateway_main + emulator_main in {candidates:?}; install the Google Cloud \
                 SDK's cloud-spanner-emulator component or set SPANNER_EMULATOR_BIN_DIR"
            ),
        }),
    }
}

impl SpannerEmulator {
    /// Starts an emulator with default options on free ports and waits until it answers.
    pub fn start() -> Result<Self, ServiceError> {
        Self::start_with(EmulatorOptions::default())
    }

    /// Starts an emulator with `opts` on free ports and waits until it answers.
    pub fn start_with(opts: EmulatorOptions) -> Result<Self, ServiceError> {
        let bin_dir = emulator_bin_dir()?;
        let envs = vec![("SPANNER_EMULATOR_BIN_DIR", OsString::from(bin_dir))];
        let mut process =
            ServiceProcess::new(SERVICE, "spanner-emulator.sh", "spanner-emulator.log", envs)?;
        let mut options = Vec::new();
        if let Some(seconds) = opts.partition_token_alive_seconds {
            options.push("--partition-token-alive-seconds".to_owned());
            options.push(seconds.to_string());
        }
        if opts.fault_injection {
            options.push("--fault-injection".to_owned());
        }
        let ports = process.start_with_free_ports(2, &options)?;
        let rest = Rest::new(SERVICE, process.log_path().to_path_buf());
        Ok(Self {
            process,
            grpc_port: ports[0],
            http_port: ports[1],
            rest,
        })
    }

    /// The gRPC endpoint for data clients: `http://127.0.0.1:G`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.host_port())
    }

    /// `127.0.0.1:G`, the value for `SPANNER_EMULATOR_HOST`.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// The gRPC port.
    pub fn grpc_port(&self) -> u16 {
        self.grpc_port
    }

    /// The REST endpoint for the admin clients: `http://127.0.0.1:H`.
    pub fn rest_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The REST port.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The pid of `gateway_main` (the leader of the emulator's process group).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The emulator's directory (log, pid files).
    pub fn dir(&self) -> &Path {
        self.process.dir()
    }

    /// The emulator's log file (gateway and emulator output).
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The last lines of the log.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// Creates instance `projects/<project>/instances/<instance>` with config `emulator-config`
    /// and waits until it exists.
    pub async fn create_instance(&self, project: &str, instance: &str) -> Result<(), ServiceError> {
        let url = format!("{}/v1/projects/{project}/instances", self.rest_endpoint());
        let body = json!({
            "instanceId": instance,
            "instance": {
                "config": format!("projects/{project}/instanceConfigs/emulator-config"),
                "displayName": instance,
                "nodeCount": 1,
            },
        });
        let op = self.rest.json(Method::POST, &url, Some(&body)).await?;
        self.wait_operation(op, &format!("creating instance {project}/{instance}"))
            .await
    }

    /// Creates database `<database>` with the DDL statements `ddl` (tables, indexes, change
    /// streams) and waits for the long-running operation.
    pub async fn create_database(
        &self,
        project: &str,
        instance: &str,
        database: &str,
        ddl: &[&str],
    ) -> Result<(), ServiceError> {
        let url = format!(
            "{}/v1/projects/{project}/instances/{instance}/databases",
            self.rest_endpoint()
        );
        let body = json!({
            "createStatement": format!("CREATE DATABASE `{database}`"),
            "extraStatements": ddl,
        });
        let op = self.rest.json(Method::POST, &url, Some(&body)).await?;
        self.wait_operation(
            op,
            &format!("creating database {project}/{instance}/{database}"),
        )
        .await
    }

    /// Runs more DDL statements on an existing database and waits for the operation.
    pub async fn update_ddl(
        &self,
        project: &str,
        instance: &str,
        database: &str,
        ddl: &[&str],
    ) -> Result<(), ServiceError> {
        let url = format!(
            "{}/v1/projects/{project}/instances/{instance}/databases/{database}/ddl",
            self.rest_endpoint()
        );
        let body = json!({ "statements": ddl });
        let op = self.rest.json(Method::PATCH, &url, Some(&body)).await?;
        self.wait_operation(
            op,
            &format!("updating the DDL of {project}/{instance}/{database}"),
        )
        .await
    }

    /// Polls a long-running operation until it is done; an operation error becomes
    /// [`ServiceError::Api`].
    async fn wait_operation(&self, mut op: Value, context: &str) -> Result<(), ServiceError> {
        let started = Instant::now();
        loop {
            if op.get("done").and_then(Value::as_bool) == Some(true) {
                return match op.get("error") {
                    Some(error) => {
                        let code = error.get("code").and_then(Value::as_u64).unwrap_or(0);
                        Err(self.rest.api_error(
                            context,
                            u16::try_from(code).unwrap_or(u16::MAX),
                            error.to_string(),
                        ))
                    }
                    None => Ok(()),
                };
            }
            let Some(name) = op.get("name").and_then(Value::as_str) else {
                return Err(self
                    .rest
                    .api_error(context, 200, format!("not an operation: {op}")));
            };
            if started.elapsed() > OPERATION_TIMEOUT {
                return Err(self.rest.timeout_error(context, started.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let url = format!("{}/v1/{name}", self.rest_endpoint());
            op = self.rest.json(Method::GET, &url, None).await?;
        }
    }
}
