//! `revrepl demo`: the whole pipeline on this machine, from nothing to "every row matches".
//!
//! 1. Installs MariaDB with apt when `mariadbd` is missing, checks the Spanner emulator.
//! 2. Starts the Spanner emulator and one MariaDB server per shard on free loopback ports, in
//!    a temporary directory (with the project's scripts, whose watchdogs stop the servers if
//!    this process dies).
//! 3. Creates the [`schema`]: a Spanner database whose tables carry a shard column, and the
//!    same tables (source names, a foreign key) in every shard.
//! 4. Runs `revrepl init`, which creates the change stream and the metadata tables.
//! 5. Runs the reader and the writer with [`run::execute`] (local directory buffer, SQLite
//!    metadata, `--until` just after the workload) while the [`workload`] writes to Spanner.
//! 6. Prints `revrepl status` and `revrepl validate`.
//!
//! Servers are stopped and the directory removed at the end, on errors and on Ctrl-C too.

pub mod schema;
pub mod services;
pub mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use google_cloud_lro::Poller as _;
use google_cloud_spanner_admin_instance_v1::client::InstanceAdmin;
use google_cloud_spanner_admin_instance_v1::model::Instance;
use mysql_async::prelude::Queryable;
use revrepl_config::Config;
use revrepl_metadata::RunId;
use revrepl_record::Timestamp;
use tokio_util::sync::CancellationToken;

use self::schema::{
    CHANGE_STREAM, DATABASE, INSTANCE, MYSQL_DDL, PROJECT, SESSION, SHARDS, SPANNER_DDL,
    database_path,
};
use self::services::{EmulatorPorts, Services};
use self::workload::{Workload, WorkloadCounts};
use crate::cli::{
    CaptureType, DemoArgs, GlobalArgs, InitArgs, ProgressStyle, ReaderMode, RunArgs, ValidateArgs,
    WriterMode,
};
use crate::error::LauncherError;
use crate::run::{self, Binaries, Note, RunPlan};
use crate::spanner::{self, SourceDatabase};
use crate::status;
use crate::{EXIT_DIFFERENCES, EXIT_SHARD_ERROR, init, store, validate};

/// The run id of the demo.
pub const RUN_ID: &str = "demo";
/// How long one service operation (DDL, connecting) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
const STEPS: u32 = 6;

/// `revrepl demo`; returns the exit code: 0 every row matches, 4 differences, 3 a shard
/// failed, 1 anything else failed, 130/143 interrupted.
pub async fn command(args: DemoArgs) -> Result<u8, LauncherError> {
    let began = Instant::now();
    let stop = CancellationToken::new();
    let signal = run::stop_on_signals(stop.clone())?;
    let scripts = services::scripts_dir(args.scripts_dir.as_deref())?;
    let binaries = Binaries {
        reader: run::locate_binary(run::READER_BIN, run::READER_BIN_VARIABLE)?,
        writer: run::locate_binary(run::WRITER_BIN, run::WRITER_BIN_VARIABLE)?,
        revrepl: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("revrepl")),
    };
    let dir = tempfile::Builder::new()
        .prefix("revrepl-demo-")
        .tempdir()
        .map_err(|e| LauncherError::Demo(format!("cannot create a temporary directory: {e}")))?;
    println!(
        "revrepl demo: Spanner emulator -> revrepl-reader -> local buffer -> revrepl-writer -> \
         {} MariaDB shards, all on loopback, in {}",
        SHARDS.len(),
        dir.path().display()
    );
    let mut services = Services::default();
    let demo = Demo {
        args: &args,
        dir: dir.path(),
        scripts: &scripts,
        binaries: &binaries,
        stop: &stop,
    };
    let result = demo.run(&mut services).await;
    println!("stopping the servers");
    services.stop_all().await;
    let interrupted = match signal.load(Ordering::SeqCst) {
        0 => None,
        n => Some(n),
    };
    if !result.as_ref().is_ok_and(|v| v.code == 0) {
        print_log_tails(&dir.path().join("logs"));
    }
    if args.keep {
        let kept = dir.keep();
        println!(
            "kept {} (configuration, logs, buffer, metadata)",
            kept.display()
        );
    }
    let seconds = began.elapsed().as_secs_f64();
    if let Some(signal) = interrupted {
        println!("demo interrupted after {seconds:.0}s");
        return Ok(u8::try_from(128 + signal).unwrap_or(1));
    }
    match result {
        Ok(verdict) => {
            println!("{} ({seconds:.0}s)", verdict.summary);
            Ok(verdict.code)
        }
        Err(error) => {
            println!("demo FAILED after {seconds:.0}s: {error}");
            Err(error)
        }
    }
}

/// How the demo ended, when nothing broke.
struct Verdict {
    code: u8,
    summary: String,
}

struct Demo<'a> {
    args: &'a DemoArgs,
    dir: &'a Path,
    scripts: &'a Path,
    binaries: &'a Binaries,
    stop: &'a CancellationToken,
}

impl Demo<'_> {
    async fn run(&self, services: &mut Services) -> Result<Verdict, LauncherError> {
        step(1, "checking what this machine has");
        self.interruptible(self.prerequisites()).await?;

        step(2, "starting the Spanner emulator and the MariaDB shards");
        let began = Instant::now();
        let (emulator, ports) = self.interruptible(self.start_services(services)).await?;
        println!(
            "  spanner emulator: grpc {}, rest {}",
            emulator.grpc_endpoint(),
            emulator.rest_endpoint()
        );
        for (shard, port) in SHARDS.iter().zip(&ports) {
            println!("  {shard}: MariaDB on 127.0.0.1:{port}");
        }
        println!("  ready in {:.1}s", began.elapsed().as_secs_f64());

        step(3, "creating the schema");
        self.interruptible(self.create_schema(&emulator, &ports))
            .await?;
        let config_path = self.write_files(&emulator, &ports)?;
        let config = Config::load(Some(&config_path), &[])?;

        step(4, "revrepl init");
        println!("$ revrepl init --config {}", config_path.display());
        self.interruptible(self.init(&config)).await?;

        step(5, "revrepl run, while a workload writes to Spanner");
        let (outcome, counts, workload) = self.replicate(&config, &config_path).await?;
        let run_code = outcome.exit_code(None);
        if self.stop.is_cancelled() {
            return Err(LauncherError::Demo("interrupted".into()));
        }

        step(6, "revrepl status and revrepl validate");
        println!("$ revrepl status --config {}", config_path.display());
        let store = store::open_existing(&config).await?;
        let run_id = RunId::new(config.run_id.clone())?;
        let now = Timestamp::from(chrono::Utc::now());
        let report = status::status_with_stored_errors(store.as_ref(), &run_id, now).await?;
        print!("{}", status::render_text(&report));
        println!("$ revrepl validate --config {}", config_path.display());
        let options = crate::validate_options(
            &config,
            &ValidateArgs {
                tables: Vec::new(),
                shards: Vec::new(),
                source_timezone: None,
                max_listed: 20,
                detail_rows: 200_000,
                json: false,
                current: false,
                continuous: false,
                interval: std::time::Duration::from_secs(10),
                rows_per_second: 100,
                rounds: None,
                metrics_addr: None,
                repair: false,
            },
        )?;
        let validation = validate::validate(&config, &options).await?;
        print!("{}", validate::render_text(&validation));

        let mods = counts.mods();
        let applied = outcome.progress.total_applied();
        let (code, summary) = if run_code != 0 {
            (
                run_code,
                format!("demo FAILED: revrepl run ended with exit code {run_code}"),
            )
        } else if report.has_errors() {
            (
                EXIT_SHARD_ERROR,
                "demo FAILED: a shard is in ERROR".to_string(),
            )
        } else if validation.differences() > 0 {
            (
                EXIT_DIFFERENCES,
                format!(
                    "demo FAILED: validate found {} difference(s)",
                    validation.differences()
                ),
            )
        } else if let Err(error) = workload {
            (1, format!("demo FAILED: the workload stopped: {error}"))
        } else if mods == 0 {
            (1, "demo FAILED: the workload wrote nothing".to_string())
        } else {
            (
                0,
                format!(
                    "demo passed: {} replicated to {} MariaDB shards{}; every row matches",
                    counts.describe(),
                    SHARDS.len(),
                    applied.map_or(String::new(), |n| format!(" ({n} records applied)"))
                ),
            )
        };
        Ok(Verdict { code, summary })
    }

    /// `future`, unless Ctrl-C (or SIGTERM) comes first.
    async fn interruptible<T>(
        &self,
        future: impl Future<Output = Result<T, LauncherError>>,
    ) -> Result<T, LauncherError> {
        tokio::select! {
            result = future => result,
            () = self.stop.cancelled() => Err(LauncherError::Demo("interrupted".into())),
        }
    }

    async fn prerequisites(&self) -> Result<(), LauncherError> {
        if services::on_path("mariadbd") {
            println!("  MariaDB: installed");
        } else {
            println!(
                "  MariaDB: missing; installing it with apt (tests/scripts/install-mariadb.sh)"
            );
            services::run_script_visibly(&self.scripts.join("install-mariadb.sh"), &[]).await?;
        }
        let check = self.scripts.join("check-spanner-emulator.sh");
        let output = tokio::process::Command::new("bash")
            .arg(&check)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| LauncherError::Process {
                program: check.display().to_string(),
                message: format!("cannot run it: {e}"),
            })?;
        if !output.status.success() {
            return Err(LauncherError::Demo(format!(
                "the Spanner emulator is missing: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        println!("  {}", String::from_utf8_lossy(&output.stdout).trim());
        if !services::on_path("curl") {
            return Err(LauncherError::Demo(
                "curl is missing (the emulator script polls its REST port with it): apt-get \
                 install curl"
                    .into(),
            ));
        }
        Ok(())
    }

    async fn start_services(
        &self,
        services: &mut Services,
    ) -> Result<(EmulatorPorts, Vec<u16>), LauncherError> {
        let emulator_dir = self.dir.join("spanner-emulator");
        services.register(
            self.scripts.join("spanner-emulator.sh"),
            emulator_dir.clone(),
        );
        let shard_dirs: Vec<PathBuf> = SHARDS
            .iter()
            .map(|shard| self.dir.join(format!("mariadb-{shard}")))
            .collect();
        for dir in &shard_dirs {
            services.register(self.scripts.join("mariadb.sh"), dir.clone());
        }
        let emulator = services::start_emulator(self.scripts, &emulator_dir);
        let shards = async {
            let mut ports = Vec::new();
            // One after the other: each bootstrap is CPU-heavy on small machines, and the
            // emulator starts meanwhile.
            for dir in &shard_dirs {
                ports.push(services::start_mariadb(self.scripts, dir).await?);
            }
            Ok::<_, LauncherError>(ports)
        };
        let (emulator, ports) = tokio::join!(emulator, shards);
        Ok((emulator?, ports?))
    }

    async fn create_schema(
        &self,
        emulator: &EmulatorPorts,
        ports: &[u16],
    ) -> Result<(), LauncherError> {
        let instances = InstanceAdmin::builder()
            .with_endpoint(emulator.rest_endpoint())
            .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build())
            .build()
            .await
            .map_err(|e| spanner_error("create the instance admin client", &e))?;
        let instance = Instance::new()
            .set_config(format!(
                "projects/{PROJECT}/instanceConfigs/emulator-config"
            ))
            .set_display_name("revrepl demo")
            .set_node_count(1);
        tokio::time::timeout(
            STEP_TIMEOUT,
            instances
                .create_instance()
                .set_parent(format!("projects/{PROJECT}"))
                .set_instance_id(INSTANCE)
                .set_instance(instance)
                .poller()
                .until_done(),
        )
        .await
        .map_err(|_| spanner_error("create the instance", &"no answer"))?
        .map_err(|e| spanner_error("create the instance", &e))?;
        let admin =
            spanner::admin_client_at(Some(&emulator.rest_endpoint()), &database_path()).await?;
        spanner::ensure_database(&admin, &database_path(), STEP_TIMEOUT).await?;
        spanner::apply_ddl(
            &admin,
            &database_path(),
            SPANNER_DDL.iter().map(|s| s.to_string()).collect(),
            STEP_TIMEOUT,
        )
        .await?;
        println!(
            "  Spanner {}: Customers, Orders (shard column ShardId, foreign key Orders -> Customers)",
            database_path()
        );
        for (shard, port) in SHARDS.iter().zip(ports) {
            let opts = mysql_async::OptsBuilder::default()
                .ip_or_hostname("127.0.0.1")
                .tcp_port(*port)
                .user(Some("root"));
            let mut conn = mysql_async::Conn::new(opts)
                .await
                .map_err(|e| mysql_error(shard, "connect", &e))?;
            conn.query_drop(format!("CREATE DATABASE `{DATABASE}`"))
                .await
                .map_err(|e| mysql_error(shard, "create the database", &e))?;
            conn.query_drop(format!("USE `{DATABASE}`"))
                .await
                .map_err(|e| mysql_error(shard, "use the database", &e))?;
            for ddl in MYSQL_DDL {
                conn.query_drop(ddl)
                    .await
                    .map_err(|e| mysql_error(shard, "create a table", &e))?;
            }
            let _ = conn.disconnect().await;
        }
        println!(
            "  MySQL database `{DATABASE}` on every shard: customers, orders (source names, \
             foreign key orders -> customers)"
        );
        Ok(())
    }

    /// The shards file, the session file and the configuration; returns the configuration's
    /// path.
    fn write_files(
        &self,
        emulator: &EmulatorPorts,
        ports: &[u16],
    ) -> Result<PathBuf, LauncherError> {
        let shards: Vec<serde_json::Value> = SHARDS
            .iter()
            .zip(ports)
            .map(|(shard, port)| {
                serde_json::json!({"logicalShardId": shard, "host": "127.0.0.1", "port": port,
                                   "user": "root", "password": "", "dbName": DATABASE})
            })
            .collect();
        let dir = self.dir.display();
        let config = format!(
            r#"# Written by revrepl demo.
run_id = "{RUN_ID}"
shards_file = "{dir}/shards.json"
session_file = "{dir}/session.json"

[spanner]
database = "{database}"
change_stream = "{CHANGE_STREAM}"
endpoint = "{grpc}"
admin_endpoint = "{rest}"

[buffer]
url = "{dir}/buffer"

[metadata]
store = "sqlite"
path = "{dir}/metadata.db"

[reader]
window = "2s"
heartbeat = "1s"

[writer]
poll_interval = "250ms"
"#,
            database = database_path(),
            grpc = emulator.grpc_endpoint(),
            rest = emulator.rest_endpoint(),
        );
        let write = |name: &str, text: &str| {
            let path = self.dir.join(name);
            std::fs::write(&path, text)
                .map_err(|e| LauncherError::Demo(format!("cannot write {}: {e}", path.display())))
                .map(|()| path)
        };
        let shards_text = serde_json::to_string_pretty(&shards)
            .map_err(|e| LauncherError::Demo(format!("cannot write the shards file: {e}")))?;
        write("shards.json", &shards_text)?;
        write("session.json", SESSION)?;
        let path = write("revrepl.toml", &config)?;
        println!("  configuration: {}", path.display());
        Ok(path)
    }

    async fn init(&self, config: &Config) -> Result<(), LauncherError> {
        let args = InitArgs {
            verify_only: false,
            value_capture_type: CaptureType::NewRowAndOldValues,
            retention: "7d".into(),
            timeout: Duration::from_secs(60),
        };
        let report = init::init(config, &args, &mut |check| println!("  {check}")).await;
        match report.failures() {
            0 => Ok(()),
            n => Err(LauncherError::Demo(format!(
                "revrepl init found {n} problem(s)"
            ))),
        }
    }

    /// Runs reader and writer until just after the workload, which starts at the run's
    /// first window and writes for `--duration`.
    async fn replicate(
        &self,
        config: &Config,
        config_path: &Path,
    ) -> Result<(run::RunOutcome, Arc<WorkloadCounts>, Result<(), String>), LauncherError> {
        let window = config.reader.window;
        let now = Timestamp::from(chrono::Utc::now());
        let seconds = |ts: Timestamp, plus: i64| {
            Timestamp::new(ts.seconds() + plus, 0)
                .map_err(|e| LauncherError::Demo(format!("time out of range: {e}")))
        };
        // The run starts at the next window boundary, so that no write of the workload comes
        // before it and the change stream (just created) exists at that time.
        let start = window
            .align_down(seconds(now, i64::from(window.seconds()) + 1)?)
            .map_err(|e| LauncherError::Demo(format!("time out of range: {e}")))?;
        let duration = i64::try_from(self.args.duration.as_secs())
            .unwrap_or(30)
            .max(1);
        let writes_end = seconds(start, duration)?;
        let until = seconds(writes_end, i64::from(window.seconds()))?;
        let logs = self.dir.join("logs");
        let global = GlobalArgs {
            config: Some(config_path.to_path_buf()),
            overrides: Vec::new(),
            run_id: None,
        };
        let args = RunArgs {
            reader_mode: ReaderMode::Regular,
            writer_mode: WriterMode::Regular,
            until: Some(until),
            log_dir: Some(logs.clone()),
            grace_period: Duration::from_secs(15),
            max_restarts: Some(3),
            reader_metrics_addr: None,
            writer_metrics_addr: None,
            progress: ProgressStyle::Auto,
        };
        std::fs::create_dir_all(&logs)
            .map_err(|e| LauncherError::Demo(format!("cannot create {}: {e}", logs.display())))?;
        let mut plan = RunPlan::with_binaries(
            &global,
            config.clone(),
            Some(config_path.to_path_buf()),
            args,
            start,
            self.binaries.clone(),
        )?;
        plan.resume_hint = false;
        println!(
            "$ revrepl run --config {} --reader-mode regular --writer-mode regular --until {}",
            config_path.display(),
            until.to_rfc3339()
        );
        print!("{}", plan.announcement());
        println!(
            "  the children's logs: {}/reader.log, writer.log",
            logs.display()
        );

        let source = SourceDatabase::connect(config, STEP_TIMEOUT).await?;
        let workload = Workload::new(source.client, &SHARDS, self.args.seed);
        let counts = Arc::new(WorkloadCounts::default());
        let writer_stop = self.stop.clone();
        let writer_counts = Arc::clone(&counts);
        // Polled together with the run below (not spawned: the client's transaction closure
        // is not `Send` for every lifetime).
        let writes = async move {
            while Timestamp::from(chrono::Utc::now()) <= start {
                if writer_stop.is_cancelled() {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            workload.run(writes_end, writer_stop, writer_counts).await
        };
        let note_counts = Arc::clone(&counts);
        let note: Note = Arc::new(move || {
            let phase = if Timestamp::from(chrono::Utc::now()) < writes_end {
                "writing"
            } else {
                "done"
            };
            Some(format!("workload {phase}: {}", note_counts.describe()))
        });
        let (outcome, written) =
            tokio::join!(run::execute(&plan, self.stop.clone(), Some(note)), writes);
        let workload = written.map_err(|error| error.to_string());
        println!("  workload: {}", counts.describe());
        Ok((outcome, counts, workload))
    }
}

fn step(number: u32, what: &str) {
    println!("\n[{number}/{STEPS}] {what}");
}

fn spanner_error(operation: &str, error: &dyn std::fmt::Display) -> LauncherError {
    LauncherError::Spanner {
        location: format!("projects/{PROJECT}/instances/{INSTANCE}"),
        operation: operation.into(),
        message: error.to_string(),
    }
}

fn mysql_error(shard: &str, operation: &str, error: &mysql_async::Error) -> LauncherError {
    LauncherError::MySql {
        shard: shard.into(),
        operation: operation.into(),
        message: error.to_string(),
    }
}

/// The last lines of the children's logs, for a failed demo.
fn print_log_tails(logs: &Path) {
    for name in ["reader.log", "writer.log"] {
        let path = logs.join(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(25)..];
        println!("----- last lines of {name} -----");
        for line in tail {
            println!("{line}");
        }
    }
}
