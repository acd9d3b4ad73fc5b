//! Issue 13: `revrepl validate` is exact under live traffic. Real parts: the Spanner emulator
//! with a workload that keeps writing, two MariaDB shards, `revrepl run` (the real reader and
//! writer binaries) replicating meanwhile.
//!
//! - Every validation while the workload writes and the writer applies reports 0 differences
//!   (each shard compared at its checkpoint); a row changed by hand in MySQL is then reported,
//!   exactly that row, and `--repair` makes it equal to Spanner again.
//! - `--continuous` counts no mismatch while the workload writes, then finds a row changed by
//!   hand (and then one deleted by hand) within its sampling period and counts it in
//!   `revrepl_validate_mismatches_total`, scraped from its Prometheus endpoint.
//!
//! Needs `revrepl-reader` and `revrepl-writer` built next to `revrepl`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use revrepl_record::Timestamp;
use revrepl_test_services::workload::{WORKLOAD_DDL, WORKLOAD_SESSION, WORKLOAD_STREAM, Workload};
use revrepl_test_services::{MariaDb, SpannerEmulator, free_port};
use tokio::io::{AsyncBufReadExt, BufReader};

const DATABASE: &str = "projects/live/instances/live/databases/app";
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

/// The services, the configuration and `revrepl run` replicating, with a workload writing
/// in the background until paused.
struct Live {
    _emulator: SpannerEmulator,
    servers: Vec<MariaDb>,
    _dir: tempfile::TempDir,
    config: PathBuf,
    run: tokio::process::Child,
    /// While true, the workload writes.
    writing: Arc<AtomicBool>,
    /// Joins to the number of mods the workload committed.
    workload: std::thread::JoinHandle<usize>,
    stop_workload: Arc<AtomicBool>,
}

impl Live {
    async fn start(seed: u64) -> Self {
        let emulator = SpannerEmulator::start().expect("emulator");
        emulator
            .create_instance("live", "live")
            .await
            .expect("instance");
        emulator
            .create_database("live", "live", "app", &WORKLOAD_DDL)
            .await
            .expect("database");
        let servers = MariaDb::start_many(2).expect("mariadb");
        let dir = tempfile::tempdir().expect("temp dir");
        let config = workspace(dir.path(), &emulator, &servers).await;
        let now = Timestamp::from(chrono::Utc::now());
        let until = Timestamp::new(now.seconds() + 600, 0).expect("until");
        let mut run = tokio::process::Command::new(revrepl())
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
                "off",
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("run.log")).expect("run.log"))
            .kill_on_drop(true)
            .spawn()
            .expect("start revrepl run");
        // Write only after the start `run` pins (printed in the reader's command).
        let stdout = run.stdout.take().expect("stdout");
        let start = tokio::time::timeout(Duration::from_secs(60), async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(start) = pinned_start(&line) {
                    // Keep draining stdout so that `run` never blocks on it.
                    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                    return start;
                }
            }
            panic!("`revrepl run` ended before printing the reader's command");
        })
        .await
        .expect("`revrepl run` printed the reader's command within a minute");
        while Timestamp::from(chrono::Utc::now()) <= start {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The workload on its own thread and runtime (its futures are not `Send`).
        let writing = Arc::new(AtomicBool::new(true));
        let stop_workload = Arc::new(AtomicBool::new(false));
        let (w, s) = (Arc::clone(&writing), Arc::clone(&stop_workload));
        let endpoint = emulator.grpc_endpoint();
        let workload = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("workload runtime");
            runtime.block_on(async move {
                let mut workload = Workload::connect(&endpoint, DATABASE, &SHARDS, seed)
                    .await
                    .expect("workload");
                while !s.load(Ordering::SeqCst) {
                    if w.load(Ordering::SeqCst) {
                        workload.step().await.expect("workload step");
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                workload.committed().len()
            })
        });
        Self {
            _emulator: emulator,
            servers,
            _dir: dir,
            config,
            run,
            writing,
            workload,
            stop_workload,
        }
    }

    /// What `revrepl run` wrote on stderr so far.
    fn run_log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("run.log")).unwrap_or_default()
    }

    /// `revrepl <args> --config <config>`: exit code and stdout.
    async fn revrepl(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let output = tokio::process::Command::new(revrepl())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .output()
            .await
            .expect("run revrepl");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Waits until both shards have a checkpoint of the run (the writer applied something).
    async fn wait_for_checkpoints(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for server in &self.servers {
            let mut conn = connect(server).await;
            loop {
                let found: Option<u64> = conn
                    .query_first(
                        "SELECT COUNT(*) FROM revrepl_checkpoint WHERE run_id = 'live' \
                         AND commit_timestamp IS NOT NULL",
                    )
                    .await
                    .unwrap_or(None);
                if found.unwrap_or(0) > 0 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "no checkpoint on port {} within a minute; run's stderr:\n{}",
                    server.port(),
                    self.run_log()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let _ = conn.disconnect().await;
        }
    }

    /// Pauses the workload and waits until every shard has applied everything committed.
    async fn pause_and_drain(&self) {
        self.writing.store(false, Ordering::SeqCst);
        // A step in flight finishes within this.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (code, out, err) = self
            .revrepl(&[
                "drain",
                "--until",
                "now",
                "--timeout",
                "60s",
                "--interval",
                "200ms",
            ])
            .await;
        assert_eq!(code, Some(0), "drain\n{out}\n{err}");
    }

    async fn stop(mut self) {
        self.stop_workload.store(true, Ordering::SeqCst);
        let committed = tokio::task::spawn_blocking(move || self.workload.join())
            .await
            .expect("join")
            .expect("the workload thread ended cleanly");
        assert!(
            committed > 20,
            "the workload committed only {committed} mods"
        );
        // SIGTERM: `run` stops its children and exits.
        if let Some(pid) = self.run.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.run.wait()).await;
    }
}

async fn connect(server: &MariaDb) -> Conn {
    let mut conn = Conn::new(Opts::from_url(&server.url()).expect("url"))
        .await
        .expect("connect");
    conn.query_drop("USE app").await.expect("use");
    conn
}

/// The workload's tables on both shards, the shards file, the session file, the
/// configuration (1 s windows).
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
            r#"run_id = "live"
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
window = "1s"
heartbeat = "1s"
[writer]
poll_interval = "100ms"
"#,
            dir = dir.display(),
            grpc = emulator.grpc_endpoint(),
            rest = emulator.rest_endpoint(),
        ),
    )
    .expect("config");
    config
}

/// The start time `run` pinned, from the reader's command line it prints.
fn pinned_start(line: &str) -> Option<Timestamp> {
    let (_, rest) = line.split_once("reader.start_timestamp=")?;
    let value: String = rest
        .trim_start_matches(['\'', '"'])
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '\'' && *c != '"')
        .collect();
    Timestamp::parse_rfc3339(&value).ok()
}

/// The first user of the shard behind `conn`: its id and name.
async fn first_user(conn: &mut Conn) -> (i64, String) {
    conn.query_first("SELECT id, name FROM users ORDER BY id LIMIT 1")
        .await
        .expect("read users")
        .expect("the shard has users")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_is_exact_under_live_traffic_and_repair_fixes_a_row_changed_by_hand() {
    let live = Live::start(13).await;
    live.wait_for_checkpoints().await;

    // While the workload writes and the writer applies: every run reports 0 differences, each
    // shard compared at its checkpoint.
    let mut compared_at = Vec::new();
    for round in 0..3 {
        let (code, out, err) = live.revrepl(&["validate"]).await;
        assert_eq!(code, Some(0), "validate run {round}\n{out}\n{err}");
        assert!(out.contains("every compared row matches"), "{out}");
        for shard in SHARDS {
            let prefix =
                format!("shard {shard}: compared at its checkpoint, Spanner commit timestamp ");
            let line = out
                .lines()
                .find(|l| l.starts_with(&prefix))
                .unwrap_or_else(|| panic!("no compared-at line for {shard} in\n{out}"));
            compared_at.push(line.to_string());
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    // The shards moved between runs: the comparisons were made under traffic.
    compared_at.sort();
    compared_at.dedup();
    assert!(
        compared_at.len() > 2,
        "the checkpoints never moved: {compared_at:?}"
    );

    // A row changed by hand is reported, exactly that row.
    live.pause_and_drain().await;
    let mut s1 = connect(&live.servers[0]).await;
    let (id, name) = first_user(&mut s1).await;
    s1.exec_drop(
        "UPDATE users SET name = ? WHERE id = ?",
        (format!("{name} changed by hand"), id),
    )
    .await
    .expect("change a row by hand");
    let (code, out, err) = live.revrepl(&["validate", "--json"]).await;
    assert_eq!(code, Some(4), "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("validate JSON");
    // Drained and quiet: each shard is compared at the end of the windows applied since its
    // last change (the metadata store's progress), later than its checkpoint.
    for point in report["shards"].as_array().expect("shards") {
        assert!(
            point["note"]
                .as_str()
                .is_some_and(|n| n.contains("are applied with no later change")),
            "{point}"
        );
    }
    let mut differences = Vec::new();
    for table in report["tables"].as_array().expect("tables") {
        for shard in table["shards"].as_array().expect("shards") {
            for listed in shard["listed"].as_array().expect("listed") {
                differences.push((
                    table["table"].as_str().unwrap_or_default().to_string(),
                    shard["shard"].as_str().unwrap_or_default().to_string(),
                    listed["key"].as_str().unwrap_or_default().to_string(),
                    listed["kind"].as_str().unwrap_or_default().to_string(),
                    listed["columns"].to_string(),
                ));
            }
            assert!(shard["compared_at"].is_string(), "{shard}");
        }
    }
    assert_eq!(
        differences,
        vec![(
            "Users".to_string(),
            "s1".to_string(),
            format!(r#"{{"id":"{id}"}}"#),
            "different".to_string(),
            r#"["name"]"#.to_string(),
        )],
        "{out}"
    );

    // --repair makes it equal again, while the writer runs (and the workload writes again).
    live.writing.store(true, Ordering::SeqCst);
    let (code, out, err) = live
        .revrepl(&["validate", "--repair", "--shard", "s1", "--table", "Users"])
        .await;
    assert_eq!(code, Some(0), "repair\n{out}\n{err}");
    assert!(
        out.contains("1 differing row(s)") && out.contains("1 written with Spanner's values"),
        "{out}"
    );
    assert!(out.contains("every compared row matches"), "{out}");
    let repaired: Option<String> = s1
        .exec_first("SELECT name FROM users WHERE id = ?", (id,))
        .await
        .expect("read the repaired row");
    assert!(
        repaired.is_some_and(|n| !n.ends_with("changed by hand")),
        "the row still holds the value written by hand"
    );
    let _ = s1.disconnect().await;
    live.stop().await;
}

/// The sum of `metric`'s series whose labels contain every one of `labels`.
fn metric_sum(body: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        if !rest.starts_with('{') || !labels.iter().all(|l| rest.contains(l)) {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        *found.get_or_insert(0.0) += value;
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_validation_counts_a_row_changed_by_hand() {
    let live = Live::start(31).await;
    live.wait_for_checkpoints().await;
    let port = free_port().expect("free port");
    let mut continuous = tokio::process::Command::new(revrepl())
        .args([
            "validate",
            "--continuous",
            "--interval",
            "1s",
            "--rows-per-second",
        ])
        .arg("1000")
        .args(["--metrics-addr", &format!("127.0.0.1:{port}"), "--config"])
        .arg(&live.config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start validate --continuous");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stdout = continuous.stdout.take().expect("stdout");
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = tx.send(line);
        }
    });
    let client = reqwest::Client::new();
    let scrape = || async {
        let response = client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .ok()?;
        response.text().await.ok()
    };

    // Under traffic: rows are checked on both shards, nothing mismatches.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let body = scrape().await.unwrap_or_default();
        let checked: Vec<f64> = SHARDS
            .iter()
            .map(|s| {
                metric_sum(
                    &body,
                    "revrepl_validate_rows_checked_total",
                    &[&format!("shard=\"{s}\"")],
                )
                .unwrap_or(0.0)
            })
            .collect();
        if checked.iter().all(|c| *c >= 50.0) {
            assert_eq!(
                metric_sum(&body, "revrepl_validate_mismatches_total", &[]),
                Some(0.0),
                "mismatches under traffic\n{body}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rows checked per shard stayed at {checked:?}\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // A row changed by hand (an order, keyed by two columns) is found within the sampling
    // period and counted.
    live.pause_and_drain().await;
    let mut s2 = connect(&live.servers[1]).await;
    let (user_id, id): (i64, i64) = s2
        .query_first("SELECT user_id, id FROM orders ORDER BY user_id, id LIMIT 1")
        .await
        .expect("read orders")
        .expect("s2 has orders");
    s2.exec_drop(
        "UPDATE orders SET note = 'changed by hand' WHERE user_id = ? AND id = ?",
        (user_id, id),
    )
    .await
    .expect("change a row by hand");
    let _ = s2.disconnect().await;
    let changed_at = Instant::now();
    let labels = ["shard=\"s2\"", "table=\"Orders\""];
    loop {
        let body = scrape().await.unwrap_or_default();
        if metric_sum(&body, "revrepl_validate_mismatches_total", &labels).unwrap_or(0.0) >= 1.0 {
            break;
        }
        assert!(
            changed_at.elapsed() < Duration::from_secs(20),
            "the row changed by hand was not counted within 20 s\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut printed = Vec::new();
    while let Ok(line) = rx.try_recv() {
        printed.push(line);
    }
    let expected_key = format!(r#"key {{"user_id":"{user_id}","id":"{id}"}}"#);
    let mismatches: Vec<&String> = printed.iter().filter(|l| l.contains("mismatch")).collect();
    assert!(
        !mismatches.is_empty()
            && mismatches
                .iter()
                .all(|l| l.contains("table Orders shard s2")
                    && l.contains(&expected_key)
                    && l.contains("columns: note")),
        "{}",
        printed.join("\n")
    );

    // A row deleted by hand (found from Spanner's side) is counted too.
    let mut s1 = connect(&live.servers[0]).await;
    let (gone, _) = first_user(&mut s1).await;
    s1.exec_drop("DELETE FROM users WHERE id = ?", (gone,))
        .await
        .expect("delete a row by hand");
    let _ = s1.disconnect().await;
    let deleted_at = Instant::now();
    let labels = ["shard=\"s1\"", "table=\"Users\""];
    loop {
        let body = scrape().await.unwrap_or_default();
        if metric_sum(&body, "revrepl_validate_mismatches_total", &labels).unwrap_or(0.0) >= 1.0 {
            break;
        }
        assert!(
            deleted_at.elapsed() < Duration::from_secs(20),
            "the row deleted by hand was not counted within 20 s\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut printed = Vec::new();
    while let Ok(line) = rx.try_recv() {
        printed.push(line);
    }
    let expected = format!(r#"mismatch: table Users shard s1 key {{"id":"{gone}"}} at "#);
    assert!(
        printed
            .iter()
            .any(|l| l.contains(&expected) && l.ends_with("missing in MySQL")),
        "{}",
        printed.join("\n")
    );
    if let Some(pid) = continuous.id() {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    let status = tokio::time::timeout(Duration::from_secs(20), continuous.wait())
        .await
        .expect("validate --continuous stops on SIGTERM")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    live.stop().await;
}
