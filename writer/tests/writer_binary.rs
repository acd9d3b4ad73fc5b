//! The `revrepl-writer` binary against real MariaDB shards, a real local buffer of window files
//! and a real SQLite metadata store: exactly-once apply across SIGKILLs, a graceful stop on
//! SIGTERM, a shard stopped for 20 s, a definite error then `resumeFailed`, `reprocess`,
//! reference-style files, and metrics pushed by OTLP to a stand-in collector.
//!
//! Windows are generated here (as the reader would write them) so every expectation is exact.
//! Triggers count every row change MySQL applies, so a batch applied twice shows.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use revrepl_metadata::{
    CreatedWindows, MetadataStore, MissingTables, ProcessProgress, ProcessStatus, RunId, RunRecord,
    SqliteMetadataStore, SqliteOptions,
};
use revrepl_record::buffer::LocalDirectory;
use revrepl_record::{
    BufferStore, ChangeRecord, Destination, Mod, ModType, ShardId, Timestamp, Window,
    WindowDuration, WindowFileEncoder, WindowFileName,
};
use revrepl_test_services::MariaDb;
use serde_json::json;

const RUN: &str = "wrun";
const START: i64 = 1_700_000_000;

const SCHEMA: [&str; 5] = [
    "CREATE TABLE users (id BIGINT PRIMARY KEY, name VARCHAR(64), score DOUBLE)",
    "CREATE TABLE applied (id BIGINT PRIMARY KEY, changes INT NOT NULL)",
    "CREATE TRIGGER users_ai AFTER INSERT ON users FOR EACH ROW \
     INSERT INTO applied VALUES (NEW.id, 1) ON DUPLICATE KEY UPDATE changes = changes + 1",
    "CREATE TRIGGER users_au AFTER UPDATE ON users FOR EACH ROW \
     INSERT INTO applied VALUES (NEW.id, 1) ON DUPLICATE KEY UPDATE changes = changes + 1",
    "CREATE TRIGGER users_ad AFTER DELETE ON users FOR EACH ROW \
     INSERT INTO applied VALUES (OLD.id, 1) ON DUPLICATE KEY UPDATE changes = changes + 1",
];

fn window_duration() -> WindowDuration {
    "1s".parse().expect("duration")
}

fn window(index: i64) -> Window {
    window_duration()
        .window_of(Timestamp::new(START + index, 0).expect("ts"))
        .expect("window")
}

/// The final state the shard must reach, and how many changes each key must see.
#[derive(Debug, Default, Clone, PartialEq)]
struct Expected {
    rows: BTreeMap<i64, (String, f64)>,
    changes: BTreeMap<i64, i64>,
}

/// Generates `windows` windows of random transactions for `shard` and returns the files (path,
/// bytes) plus the expected outcome. `unordered` writes lines in reverse, as the reference may.
fn generate(
    shard: &str,
    windows: i64,
    seed: u64,
    unordered: bool,
) -> (Vec<(Window, Bytes)>, Expected) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut expected = Expected::default();
    let mut files = Vec::new();
    let mut next_txn = 0u64;
    for w in 0..windows {
        let window = window(w);
        let mut records: Vec<(ChangeRecord, u32)> = Vec::new();
        for t in 0..rng.random_range(1..8) {
            next_txn += 1;
            let commit = Timestamp::new(START + w, (t as u32) * 100_000_000 + 7).expect("ts");
            let ops = rng.random_range(1..4);
            // Per key of the transaction: whether the row existed before it.
            let mut touched: BTreeMap<i64, bool> = BTreeMap::new();
            for seq in 0..ops {
                let id: i64 = rng.random_range(1..40);
                let exists = expected.rows.contains_key(&id);
                touched.entry(id).or_insert(exists);
                let mod_type = match rng.random_range(0..10) {
                    0..=1 if exists => ModType::Delete,
                    _ if exists => ModType::Update,
                    _ => ModType::Insert,
                };
                let name = format!("n{id}-{w}-{t}-{seq} 'q' \\ é");
                let score = f64::from(rng.random_range(0..1000)) / 8.0;
                let new_values = match mod_type {
                    ModType::Delete => json!({}),
                    _ => json!({"name": name, "score": score}),
                };
                match mod_type {
                    ModType::Delete => {
                        expected.rows.remove(&id);
                    }
                    _ => {
                        expected.rows.insert(id, (name.clone(), score));
                    }
                }
                let record = ChangeRecord {
                    commit_timestamp: commit,
                    server_transaction_id: format!("txn-{next_txn:06}"),
                    record_sequence: format!("{seq:08}"),
                    table_name: "users".into(),
                    mods: [Mod {
                        keys_json: json!({"id": id.to_string()}).to_string(),
                        old_values_json: "{}".into(),
                        new_values_json: new_values.to_string(),
                    }],
                    mod_type,
                    number_of_records_in_transaction: ops,
                    transaction_tag: String::new(),
                    shard: shard.into(),
                };
                records.push((record, 0));
            }
            // A transaction's records of one row are applied as the row's state at commit:
            // one change, or none for a row inserted and deleted again.
            for (id, existed) in touched {
                if existed || expected.rows.contains_key(&id) {
                    *expected.changes.entry(id).or_default() += 1;
                }
            }
        }
        let bytes = if unordered {
            let lines: Vec<String> = records
                .iter()
                .rev()
                .map(|(r, _)| {
                    serde_json::to_string(r)
                        .expect("json")
                        .replace('=', "\\u003d")
                })
                .collect();
            Bytes::from(lines.join("\n") + "\n")
        } else {
            let mut encoder = WindowFileEncoder::new();
            for (record, index) in &records {
                encoder.push(record, *index).expect("encode");
            }
            encoder.finish()
        };
        files.push((window, bytes));
    }
    (files, expected)
}

struct Setup {
    dir: tempfile::TempDir,
    shards: Vec<MariaDb>,
    metadata: Arc<SqliteMetadataStore>,
    config: PathBuf,
    expected: BTreeMap<String, Expected>,
    windows: i64,
}

impl Setup {
    /// `shards` MariaDB shards, each with `windows` windows of data in the buffer and recorded
    /// in the metadata store.
    async fn new(shards: usize, windows: i64, unordered: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let servers = MariaDb::start_many(shards).expect("mariadb");
        let mut shard_entries = Vec::new();
        for (i, server) in servers.iter().enumerate() {
            let mut conn = connect(&server.url()).await;
            conn.query_drop("CREATE DATABASE app")
                .await
                .expect("create database");
            conn.query_drop("USE app").await.expect("use");
            for statement in SCHEMA {
                conn.query_drop(statement).await.expect("schema");
            }
            shard_entries.push(
                json!({"logicalShardId": format!("s{i}"), "host": "127.0.0.1",
                "port": server.port(), "user": "root", "password": "", "dbName": "app"}),
            );
        }
        std::fs::write(
            dir.path().join("shards.json"),
            json!(shard_entries).to_string(),
        )
        .expect("shards file");
        let metadata =
            SqliteMetadataStore::open(dir.path().join("meta.db"), SqliteOptions::default())
                .await
                .expect("sqlite");
        metadata
            .ensure_tables(MissingTables::Create)
            .await
            .expect("tables");
        let run_id = RunId::new(RUN).expect("run id");
        let start = Timestamp::new(START, 0).expect("ts");
        metadata
            .record_run(&RunRecord::new(run_id.clone(), start, window_duration()).expect("run"))
            .await
            .expect("record run");
        let ids: Vec<ShardId> = (0..shards)
            .map(|i| ShardId::new(format!("s{i}")).expect("id"))
            .collect();
        metadata
            .register_shards(&run_id, &ids, start)
            .await
            .expect("register");
        let buffer = LocalDirectory::new(dir.path().join("buffer"));
        let mut expected = BTreeMap::new();
        let mut seen = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let (files, outcome) = generate(id.as_str(), windows, 100 + i as u64, unordered);
            for (window, bytes) in files {
                let path = WindowFileName::new(Destination::Shard(id.clone()), window).path();
                buffer.put_if_absent(&path, bytes).await.expect("put");
                seen.push((id.clone(), window.end()));
            }
            expected.insert(id.to_string(), outcome);
        }
        let upto = window(windows - 1).end();
        let created = CreatedWindows::new(upto, ids.clone(), seen).expect("windows");
        metadata
            .record_windows(&run_id, &created)
            .await
            .expect("record windows");
        let config = dir.path().join("revrepl.toml");
        std::fs::write(
            &config,
            format!(
                r#"run_id = "{RUN}"
shards_file = "{dir}/shards.json"
[spanner]
database = "projects/p/instances/i/databases/unused"
change_stream = "unused"
[buffer]
url = "{dir}/buffer"
[metadata]
path = "{dir}/meta.db"
[writer]
batch_max_records = 20
poll_interval = "200ms"
"#,
                dir = dir.path().display()
            ),
        )
        .expect("config");
        Self {
            dir,
            shards: servers,
            metadata: Arc::new(metadata),
            config,
            expected,
            windows,
        }
    }

    fn until(&self) -> Timestamp {
        window(self.windows - 1).end()
    }

    fn spawn(&self, mode: &str, extra: &[&str]) -> Child {
        let mut command = Command::new(env!("CARGO_BIN_EXE_revrepl-writer"));
        command.args(extra);
        self.finish_command(command, mode)
    }

    /// Like [`Setup::spawn`], with extra environment variables.
    fn spawn_with_env(&self, mode: &str, env: &[(&str, String)]) -> Child {
        let mut child = Command::new(env!("CARGO_BIN_EXE_revrepl-writer"));
        child.envs(env.iter().map(|(k, v)| (k, v)));
        self.finish_command(child, mode)
    }

    /// Adds the configuration, `--mode`, `--until` and the log to `command`, and starts it.
    fn finish_command(&self, mut command: Command, mode: &str) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("writer.log"))
            .expect("log");
        command
            .arg("--config")
            .arg(&self.config)
            .args(["--mode", mode, "--until", &self.until().to_rfc3339()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn revrepl-writer")
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("writer.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    async fn state(&self, shard: usize) -> Expected {
        let mut conn = connect(&format!("{}/app", self.shards[shard].url())).await;
        let rows: Vec<(i64, String, f64)> = conn
            .query("SELECT id, name, score FROM users ORDER BY id")
            .await
            .expect("rows");
        let changes: Vec<(i64, i64)> = conn
            .query("SELECT id, changes FROM applied ORDER BY id")
            .await
            .expect("changes");
        Expected {
            rows: rows.into_iter().map(|(id, n, s)| (id, (n, s))).collect(),
            changes: changes.into_iter().collect(),
        }
    }

    async fn status(&self, shard: &str) -> Option<ProcessProgress> {
        let run = RunId::new(RUN).expect("run");
        self.metadata
            .process_progress(&run, &ShardId::new(shard).expect("id"))
            .await
            .expect("progress")
    }
}

async fn connect(url: &str) -> Conn {
    Conn::new(Opts::from_url(url).expect("url"))
        .await
        .expect("connect")
}

fn wait_exit(child: &mut Child, deadline: Duration) -> std::process::ExitStatus {
    revrepl_test_services::wait_for_exit(child, deadline)
        .unwrap_or_else(|| panic!("revrepl-writer did not finish within {deadline:?}"))
}

async fn finish(setup: &Setup, mode: &str) -> std::process::ExitStatus {
    let mut child = setup.spawn(mode, &[]);
    tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(180)))
        .await
        .expect("join")
}

#[tokio::test]
async fn killed_writers_resume_to_the_exact_state_applying_nothing_twice() {
    let setup = Setup::new(1, 300, false).await;
    let mut rng = rand::rng();
    let mut mode = "regular";
    for _ in 0..6 {
        let mut child = setup.spawn(mode, &[]);
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1_500))).await;
        let _ = child.kill();
        let _ = child.wait();
        mode = "resume";
    }
    let status = finish(&setup, "resume").await;
    assert!(status.success(), "writer failed: {status}\n{}", setup.log());
    assert_eq!(setup.state(0).await, setup.expected["s0"]);
    let progress = setup.status("s0").await.expect("progress row");
    assert_eq!(progress.status, ProcessStatus::Success);
    assert_eq!(
        progress.file_start_interval,
        window(setup.windows - 1).start()
    );
}

#[tokio::test]
async fn reference_style_unordered_files_apply_correctly() {
    let setup = Setup::new(1, 20, true).await;
    let status = finish(&setup, "regular").await;
    assert!(status.success(), "writer failed: {status}\n{}", setup.log());
    assert_eq!(setup.state(0).await, setup.expected["s0"]);
}

#[tokio::test]
async fn a_shard_down_for_20_seconds_converges_while_others_go_on() {
    let mut setup = Setup::new(2, 200, false).await;
    // Start with shard s1 already down; s0 must keep applying meanwhile.
    setup.shards[1].stop().expect("stop s1");
    let mut child = setup.spawn("regular", &[]);
    let down_at = Instant::now();
    let s0_done = loop {
        if let Some(p) = setup.status("s0").await
            && p.file_start_interval == window(setup.windows - 1).start()
        {
            break true;
        }
        if down_at.elapsed() > Duration::from_secs(20) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        s0_done,
        "s0 did not finish while s1 was down\n{}",
        setup.log()
    );
    while down_at.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        setup.status("s1").await.is_none(),
        "s1 cannot have progressed"
    );
    setup.shards[1].restart().expect("restart s1");
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(180)))
            .await
            .expect("join");
    assert!(status.success(), "writer failed: {status}\n{}", setup.log());
    assert_eq!(setup.state(0).await, setup.expected["s0"]);
    assert_eq!(setup.state(1).await, setup.expected["s1"]);
    assert!(setup.log().contains("retrying"), "retries are logged");
}

#[tokio::test]
async fn a_definite_error_stops_one_shard_resume_success_skips_it_resume_failed_and_reprocess_finish_it()
 {
    let setup = Setup::new(2, 30, false).await;
    // Names are 20+ characters: shard s1's column is too narrow for them.
    let mut s1 = connect(&format!("{}/app", setup.shards[1].url())).await;
    s1.query_drop("ALTER TABLE users MODIFY name VARCHAR(5)")
        .await
        .expect("narrow");
    let status = finish(&setup, "regular").await;
    assert_eq!(
        status.code(),
        Some(3),
        "a failed shard exits 3\n{}",
        setup.log()
    );
    assert_eq!(setup.state(0).await, setup.expected["s0"], "s0 finished");
    let failed = setup.status("s1").await.expect("s1 progress");
    assert_eq!(failed.status, ProcessStatus::Error);
    assert_eq!(failed.file_start_interval, window(0).start());
    assert!(
        setup.log().contains("shard s1"),
        "the error names the shard"
    );
    // The error's text is recorded for `revrepl status`, with the failing window, and
    // names the shard, the table and the column (never the row's values).
    let errors = setup
        .metadata
        .shard_errors(&RunId::new(RUN).expect("run"))
        .await
        .expect("read shard errors");
    assert_eq!(
        errors.iter().map(|e| e.shard.as_str()).collect::<Vec<_>>(),
        vec!["s1"],
        "only s1 failed: {errors:?}"
    );
    let recorded = &errors[0];
    assert_eq!(recorded.file_start_interval, window(0).start());
    for part in ["shard s1", "users", "name"] {
        assert!(
            recorded.error.contains(part),
            "the recorded error names {part:?}: {}",
            recorded.error
        );
    }
    assert!(
        !recorded.error.contains("'q'") && !recorded.error.contains('é'),
        "the recorded error carries no row values: {}",
        recorded.error
    );
    assert!(
        setup.log().contains(&recorded.error),
        "the log has the same text\n{}",
        setup.log()
    );

    // resumeSuccess takes only the shards in SUCCESS: s0 (done, nothing to apply); s1 stays
    // in ERROR, untouched.
    let s1_before = setup.state(1).await;
    let status = finish(&setup, "resumeSuccess").await;
    assert!(
        status.success(),
        "resumeSuccess failed: {status}\n{}",
        setup.log()
    );
    assert_eq!(setup.state(0).await, setup.expected["s0"], "s0 unchanged");
    assert_eq!(setup.state(1).await, s1_before, "s1 untouched");
    let still = setup.status("s1").await.expect("s1 progress");
    assert_eq!(
        (still.status, still.file_start_interval),
        (ProcessStatus::Error, window(0).start())
    );

    s1.query_drop("ALTER TABLE users MODIFY name VARCHAR(64)")
        .await
        .expect("widen");
    let status = finish(&setup, "resumeFailed").await;
    assert!(
        status.success(),
        "resumeFailed failed: {status}\n{}",
        setup.log()
    );
    assert_eq!(setup.state(1).await, setup.expected["s1"]);
    assert_eq!(
        setup.status("s1").await.map(|p| p.status),
        Some(ProcessStatus::Success)
    );

    // An operator marks s1 for reprocessing from window 20: its changes are applied again.
    let run = RunId::new(RUN).expect("run");
    let progress = ProcessProgress {
        shard: ShardId::new("s1").expect("id"),
        status: ProcessStatus::Reprocess,
        file_start_interval: window(20).start(),
    };
    setup
        .metadata
        .set_process_progress(&run, &progress)
        .await
        .expect("mark");
    let before = setup.state(1).await;
    let status = finish(&setup, "reprocess").await;
    assert!(
        status.success(),
        "reprocess failed: {status}\n{}",
        setup.log()
    );
    let after = setup.state(1).await;
    assert_eq!(after.rows, before.rows, "re-applying gives the same rows");
    let more: i64 = after.changes.values().sum::<i64>() - before.changes.values().sum::<i64>();
    assert!(more > 0, "reprocess applied windows 20.. again");
}

#[tokio::test]
async fn dead_letter_policy_sets_failing_transactions_aside_and_goes_on() {
    let setup = Setup::new(1, 30, false).await;
    // Rows with id >= 30 violate a constraint: their transactions fail definitely.
    let mut s0 = connect(&format!("{}/app", setup.shards[0].url())).await;
    s0.query_drop("ALTER TABLE users ADD CONSTRAINT small_ids CHECK (id < 30)")
        .await
        .expect("constraint");
    let mut child = setup.spawn("regular", &["--set", "writer.dead_letter=true"]);
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(180)))
            .await
            .expect("join");
    assert!(status.success(), "writer failed: {status}\n{}", setup.log());
    let progress = setup.status("s0").await.expect("progress");
    assert_eq!(progress.status, ProcessStatus::Success);
    assert_eq!(
        progress.file_start_interval,
        window(setup.windows - 1).start()
    );

    let buffer = LocalDirectory::new(setup.dir.path().join("buffer"));
    let letters = buffer.list("dlq/s0/").await.expect("list dlq");
    assert!(!letters.is_empty(), "some transactions were set aside");
    for path in &letters {
        let bytes = buffer.get(path).await.expect("get").expect("exists");
        let letter: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert!(
            letter["error"]
                .as_str()
                .is_some_and(|e| e.contains("shard s0")),
            "{letter}"
        );
        let records = letter["records"].as_array().expect("records");
        let has_big_id = records.iter().any(|r| {
            let keys: serde_json::Value =
                serde_json::from_str(r["mods"][0]["keysJson"].as_str().expect("keys"))
                    .expect("keys json");
            keys["id"]
                .as_str()
                .and_then(|id| id.parse::<i64>().ok())
                .is_some_and(|id| id >= 30)
        });
        assert!(
            has_big_id,
            "{path} holds a transaction that could not have failed"
        );
    }
    let big: Vec<i64> = s0
        .query("SELECT id FROM users WHERE id >= 30")
        .await
        .expect("query");
    assert!(big.is_empty());
    let small: Vec<i64> = s0.query("SELECT id FROM users").await.expect("query");
    assert!(!small.is_empty(), "the other transactions were applied");
}

#[tokio::test]
async fn a_malformed_file_stops_the_shard_at_its_window_after_the_windows_before_it() {
    let setup = Setup::new(1, 30, false).await;
    // The writer reads and plans ahead of what it applies: the bad file must still be met in
    // order, after the windows before it are applied and recorded.
    let bad = window(12);
    let path = WindowFileName::new(Destination::Shard(ShardId::new("s0").expect("id")), bad).path();
    std::fs::write(setup.dir.path().join("buffer").join(path), "not a record\n")
        .expect("overwrite the window file");
    let status = finish(&setup, "regular").await;
    assert_eq!(
        status.code(),
        Some(3),
        "a failed shard exits 3\n{}",
        setup.log()
    );
    let progress = setup.status("s0").await.expect("progress row");
    assert_eq!(progress.status, ProcessStatus::Error, "{}", setup.log());
    assert_eq!(progress.file_start_interval, bad.start());
    assert!(setup.log().contains("malformed"), "{}", setup.log());
    let mut conn = connect(&format!("{}/app", setup.shards[0].url())).await;
    // Every window has data: the last one applied is the one before the bad file.
    let applied_window: Option<i64> = conn
        .query_first(
            "SELECT TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', window_start) \
             FROM revrepl_checkpoint",
        )
        .await
        .expect("checkpoint");
    assert_eq!(applied_window, Some(window(11).start().seconds()));
}

#[tokio::test]
async fn sigterm_stops_gracefully_with_progress_behind_durable_work_then_resume_is_exact() {
    let setup = Setup::new(1, 600, false).await;
    let mut child = setup.spawn("regular", &[]);
    // Stop it once it is applying: after the first window is recorded.
    let deadline = Instant::now() + Duration::from_secs(60);
    while setup.status("s0").await.is_none() {
        assert!(
            Instant::now() < deadline,
            "no window applied within a minute\n{}",
            setup.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: plain kill(2) on the child we started (and have not reaped).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "send SIGTERM");
    let stopping = Instant::now();
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(30)))
            .await
            .expect("join");
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM is a clean stop\n{}",
        setup.log()
    );
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "stopped {:?} after SIGTERM",
        stopping.elapsed()
    );

    // It stopped part-way, and the progress row never claims more than MySQL holds.
    let progress = setup.status("s0").await.expect("progress row");
    assert_eq!(progress.status, ProcessStatus::Success);
    assert!(
        progress.file_start_interval < window(setup.windows - 1).start(),
        "SIGTERM came before the last window\n{}",
        setup.log()
    );
    let mut conn = connect(&format!("{}/app", setup.shards[0].url())).await;
    let applied_window: Option<i64> = conn
        .query_first(
            "SELECT TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', window_start) \
             FROM revrepl_checkpoint",
        )
        .await
        .expect("checkpoint");
    let applied_window = applied_window.expect("a checkpoint row");
    assert!(
        progress.file_start_interval.seconds() <= applied_window,
        "progress ({}) is past the checkpoint (window starting at {applied_window} s)",
        progress.file_start_interval
    );

    // Resuming applies the rest, nothing twice.
    let status = finish(&setup, "resume").await;
    assert!(status.success(), "writer failed: {status}\n{}", setup.log());
    assert_eq!(setup.state(0).await, setup.expected["s0"]);
}

/// A stand-in OTLP collector on 127.0.0.1: an HTTP/2 (h2c, as gRPC clients speak to `http://`
/// endpoints) server that keeps every call's path and request body and answers each with an
/// empty message and status OK.
async fn otlp_collector() -> (u16, tokio::sync::mpsc::UnboundedReceiver<(String, Bytes)>) {
    use http_body_util::BodyExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the collector");
    let port = listener.local_addr().expect("collector address").port();
    let (calls, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let calls = calls.clone();
            let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
                let calls = calls.clone();
                async move {
                    let path = request.uri().path().to_owned();
                    let body: hyper::body::Incoming = request.into_body();
                    let bytes = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let _ = calls.send((path, bytes));
                    let mut trailers = hyper::HeaderMap::new();
                    trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
                    // One gRPC message: not compressed, length 0 (an empty response).
                    let body = http_body_util::Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]))
                        .with_trailers(async move { Some(Ok(trailers)) });
                    hyper::Response::builder()
                        .header("content-type", "application/grpc")
                        .body(body)
                }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    (port, received)
}

#[tokio::test]
async fn metrics_are_pushed_by_otlp_when_an_endpoint_is_set() {
    let setup = Setup::new(1, 5, false).await;
    let (port, mut calls) = otlp_collector().await;
    let mut child = setup.spawn_with_env(
        "regular",
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{port}"),
            ),
            ("OTEL_METRIC_EXPORT_INTERVAL", "500".into()),
        ],
    );
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(60)))
            .await
            .expect("join");
    assert!(status.success(), "writer failed: {status}\n{}", setup.log());
    // The last export is pushed on shutdown, so every call is in by now.
    let mut exports = Vec::new();
    while let Ok((path, body)) = calls.try_recv() {
        assert_eq!(
            path, "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            "an OTLP metrics export"
        );
        exports.push(body);
    }
    // Protobuf keeps strings as they are: the metric and attribute names are in the bodies.
    let contains = |needle: &[u8]| {
        exports
            .iter()
            .any(|body| body.windows(needle.len()).any(|w| w == needle))
    };
    assert!(
        contains(b"revrepl.writer.records_applied"),
        "{} export(s), none with revrepl.writer.records_applied\n{}",
        exports.len(),
        setup.log()
    );
    assert!(contains(b"revrepl-writer"), "the service name is sent");
}
