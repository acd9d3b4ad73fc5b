//! `revrepl run` on real parts: the Spanner emulator with a workload, two MariaDB shards, the
//! real reader and writer binaries as children of the real `revrepl` binary. The writer is
//! killed half-way; `run` restarts it in resume mode, both children stop at `--until`, and
//! `revrepl validate` finds every shard equal to Spanner.
//!
//! Needs `revrepl-reader` and `revrepl-writer` built next to `revrepl` (`cargo build -p
//! revrepl-reader -p revrepl-writer`, or any workspace build).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use revrepl_record::Timestamp;
use revrepl_test_services::workload::{WORKLOAD_DDL, WORKLOAD_SESSION, WORKLOAD_STREAM, Workload};
use revrepl_test_services::{MariaDb, SpannerEmulator};
use tokio::io::{AsyncBufReadExt, BufReader};

const DATABASE: &str = "projects/run/instances/run/databases/app";
const SHARDS: [&str; 2] = ["s1", "s2"];
const MYSQL_SCHEMA: [&str; 2] = [
    "CREATE TABLE users (id BIGINT PRIMARY KEY, name VARCHAR(255), score DOUBLE)",
    "CREATE TABLE orders (user_id BIGINT NOT NULL, id BIGINT NOT NULL, amount DECIMAL(20,2), \
     note TEXT, PRIMARY KEY (user_id, id))",
];

fn revrepl() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_revrepl"));
    let dir = path.parent().expect("target directory");
    for name in ["revrepl-reader", "revrepl-writer"] {
        assert!(
            dir.join(name).is_file(),
            "{name} is not built next to revrepl in {}: run `cargo build -p revrepl-reader -p \
             revrepl-writer`",
            dir.display()
        );
    }
    path
}

/// The workload's tables on both shards, the shards file, the session file, the
/// configuration (2 s windows, no start time: `run` pins it).
async fn workspace(dir: &Path, emulator: &SpannerEmulator, servers: &[MariaDb]) -> PathBuf {
    let mut shards = Vec::new();
    for (server, shard) in servers.iter().zip(SHARDS) {
        let mut conn = Conn::new(Opts::from_url(&server.url()).expect("url"))
            .await
            .expect("connect");
        conn.query_drop("CREATE DATABASE app")
            .await
            .expect("database");
        conn.query_drop("USE app").await.expect("use");
        for statement in MYSQL_SCHEMA {
            conn.query_drop(statement).await.expect("schema");
        }
        let _ = conn.disconnect().await;
        shards.push(
            serde_json::json!({"logicalShardId": shard, "host": "127.0.0.1",
            "port": server.port(), "user": "root", "password": "", "dbName": "app"}),
        );
    }
    std::fs::write(
        dir.join("shards.json"),
        serde_json::json!(shards).to_string(),
    )
    .expect("shards file");
    std::fs::write(dir.join("session.json"), WORKLOAD_SESSION).expect("session file");
    let config = dir.join("revrepl.toml");
    std::fs::write(
        &config,
        format!(
            r#"run_id = "run-test"
shards_file = "{dir}/shards.json"
session_file = "{dir}/session.json"
[spanner]
database = "{DATABASE}"
change_stream = "{WORKLOAD_STREAM}"
endpoint = "{grpc}"
admin_endpoint = "{rest}"
[buffer]
url = "{dir}/buffer"
[metadata]
path = "{dir}/metadata.db"
[reader]
window = "2s"
heartbeat = "1s"
[writer]
poll_interval = "200ms"
"#,
            dir = dir.display(),
            grpc = emulator.grpc_endpoint(),
            rest = emulator.rest_endpoint(),
        ),
    )
    .expect("config");
    config
}

/// Reads a child's stream into lines, sending each on `lines`.
fn collect(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    lines: tokio::sync::mpsc::UnboundedSender<String>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if lines.send(line).is_err() {
                break;
            }
        }
    })
}

/// The start time `run` pinned, from the reader's command line it prints
/// (`… --set reader.start_timestamp=<RFC 3339> …`, possibly quoted).
fn pinned_start(line: &str) -> Option<Timestamp> {
    let (_, rest) = line.split_once("reader.start_timestamp=")?;
    let value: String = rest
        .trim_start_matches(['\'', '"'])
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '\'' && *c != '"')
        .collect();
    Timestamp::parse_rfc3339(&value).ok()
}

/// The pid in `revrepl run: writer started (pid N, mode …)` or `… writer restarted (pid N, …)`.
fn writer_pid(line: &str) -> Option<i32> {
    let rest = line
        .strip_prefix("revrepl run: writer started (pid ")
        .or_else(|| line.strip_prefix("revrepl run: writer restarted (pid "))?;
    rest.split(',').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_restarts_a_killed_writer_and_replicates_exactly() {
    let emulator = SpannerEmulator::start().expect("emulator");
    emulator
        .create_instance("run", "run")
        .await
        .expect("instance");
    emulator
        .create_database("run", "run", "app", &WORKLOAD_DDL)
        .await
        .expect("database");
    let servers = MariaDb::start_many(2).expect("mariadb");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = workspace(dir.path(), &emulator, &servers).await;

    let now = Timestamp::from(chrono::Utc::now());
    let until = Timestamp::new(now.seconds() + 30, 0).expect("until");
    let mut child = tokio::process::Command::new(revrepl())
        .args(["run", "--config"])
        .arg(&config)
        .args([
            "--reader-mode",
            "regular",
            "--writer-mode",
            "regular",
            "--until",
            &until.to_rfc3339(),
            "--progress",
            "lines",
            "--max-restarts",
            "3",
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start revrepl run");
    let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel();
    let (err_tx, mut err_rx) = tokio::sync::mpsc::unbounded_channel();
    let stdout = collect(child.stdout.take().expect("stdout"), out_tx);
    let stderr = collect(child.stderr.take().expect("stderr"), err_tx);

    // `run` pins the reader's start when it starts (printed in the reader's command): write
    // only after it (on a slow machine `run` may start after the workload could) and until
    // 4 s before --until, so that every change belongs to the run; kill the writer (SIGKILL:
    // no chance to clean up) half-way.
    let mut out_lines = Vec::new();
    let start = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let line = out_rx
                .recv()
                .await
                .expect("`revrepl run` printed its commands");
            let start = pinned_start(&line);
            out_lines.push(line);
            if let Some(start) = start {
                return start;
            }
        }
    })
    .await
    .expect("`revrepl run` printed the reader's command within a minute");
    while Timestamp::from(chrono::Utc::now()) <= start {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stop = Timestamp::new(until.seconds() - 4, 0).expect("stop");
    assert!(
        stop.seconds() - start.seconds() >= 12,
        "`revrepl run` started too late ({start}) to run the workload before {stop}"
    );
    let kill_at = Timestamp::new((start.seconds() + stop.seconds()) / 2, 0).expect("kill time");
    let mut workload = Workload::connect(&emulator.grpc_endpoint(), DATABASE, &SHARDS, 11)
        .await
        .expect("workload");
    let mut err_lines = Vec::new();
    // The writer running now (`run` may have restarted it already on a loaded machine).
    let mut current_writer: Option<i32> = None;
    let mut killed = false;
    while Timestamp::from(chrono::Utc::now()) < stop {
        workload.step().await.expect("workload step");
        while let Ok(line) = err_rx.try_recv() {
            current_writer = writer_pid(&line).or(current_writer);
            err_lines.push(line);
        }
        if !killed && Timestamp::from(chrono::Utc::now()) >= kill_at {
            let pid = current_writer
                .unwrap_or_else(|| panic!("no writer pid announced in\n{}", err_lines.join("\n")));
            let status = tokio::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .await
                .expect("run kill");
            // A writer that has just exited (and is being restarted) is killed next time.
            killed = status.success();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        killed,
        "the writer was killed while the workload ran; run's stderr:\n{}",
        err_lines.join("\n")
    );
    let committed = workload.committed().len();

    let status = tokio::time::timeout(Duration::from_secs(180), child.wait())
        .await
        .expect("revrepl run finishes within 3 minutes of --until")
        .expect("wait");
    let _ = tokio::join!(stdout, stderr);
    while let Ok(line) = out_rx.try_recv() {
        out_lines.push(line);
    }
    while let Ok(line) = err_rx.try_recv() {
        err_lines.push(line);
    }
    let out = out_lines.join("\n");
    let err = err_lines.join("\n");
    assert_eq!(
        status.code(),
        Some(0),
        "revrepl run failed\n--- stdout\n{out}\n--- stderr\n{err}"
    );

    // What it printed first: the standalone commands and how to resume.
    let reader_line = out_lines
        .iter()
        .find(|l| l.trim_start().contains("revrepl-reader "))
        .unwrap_or_else(|| panic!("no reader command in\n{out}"));
    assert!(
        reader_line.contains("--mode regular")
            && reader_line.contains("--set reader.start_timestamp=")
            && reader_line.contains(&format!("--until {}", until.to_rfc3339())),
        "{reader_line}"
    );
    assert!(
        out.contains("to resume this run")
            && out.contains("--run-id run-test")
            && out.contains("--reader-mode resume --writer-mode resume"),
        "{out}"
    );
    // What happened, as it was reported.
    for expected in [
        "revrepl run: reader started",
        "revrepl run: writer exited unexpectedly (killed by signal 9)",
        "revrepl run: writer restarted",
        "revrepl run: reader finished",
        "revrepl run: writer finished",
        "revrepl run: progress: run run-test",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in\n{err}");
    }
    let restarted = err_lines
        .iter()
        .find(|l| l.starts_with("revrepl run: writer restarted"))
        .expect("restart line");
    assert!(restarted.contains("mode resume"), "{restarted}");

    // Every shard equals Spanner.
    assert!(committed > 100, "the workload committed {committed} mods");
    let validate = tokio::process::Command::new(revrepl())
        .args(["validate", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run revrepl validate");
    let text = String::from_utf8_lossy(&validate.stdout);
    assert_eq!(
        validate.status.code(),
        Some(0),
        "--- run's stderr\n{err}\n--- validate's stderr\n{}\n--- validate's stdout\n{text}",
        String::from_utf8_lossy(&validate.stderr)
    );
    assert!(text.contains("every compared row matches"), "{text}");
}
