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
#[path = "common/recorded_run.rs"]
mod recorded_run;
use recorded_run::recorded_run;
use revrepl_metadata::{
    CreatedWindows, MetadataStore, ProcessProgress, ProcessStatus, RunId, SqliteMetadataStore,
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
            // Rows of this transaction as they were before it: a transaction is applied as its
            // net effect per row, so a row changes once per transaction that leaves it present
            // or finds it present (a row inserted and deleted again in one transaction, not).
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
        let run_id = RunId::new(RUN).expect("run id");
        let start = Timestamp::new(START, 0).expect("ts");
        let ids: Vec<ShardId> = (0..shards)
            .map(|i| ShardId::new(format!("s{i}")).expect("id"))
            .collect();
        let metadata = recorded_run(
            &dir.path().join("meta.db"),
            &run_id,
            start,
            window_duration(),
            &ids,
        )
        .await;
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

    /// Like [`Setup::spawn`], with `--until until` instead of the end of the last window.
    fn spawn_until(&self, mode: &str, extra: &[&str], until: &str) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("writer.log"))
            .expect("log");
        Command::new(env!("CARGO_BIN_EXE_revrepl-writer"))
            .args(extra)
            .arg("--config")
            .arg(&self.config)
            .args(["--mode", mode, "--until", until])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn revrepl-writer")
    }

    /// The whole log.
    fn full_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("writer.log")).unwrap_or_default()
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
        // The killed writer's lease is still recorded; the next writer, on the same host,
        // sees its process is gone and takes the lease over at once.
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

/// Issue 12.6: lines without a `shard` field, or naming another shard than their folder, are
/// applied to the folder's shard as the reference does, with one warning naming the file;
/// `writer.strict_line_shard = true` keeps the strict refusal.
#[tokio::test]
async fn lines_without_or_with_another_shard_apply_to_the_folders_shard() {
    let setup = Setup::new(1, 4, false).await;
    let shard = ShardId::new("s0").expect("id");
    let rewrite = |index: i64, replacement: &str| {
        let path = WindowFileName::new(Destination::Shard(shard.clone()), window(index)).path();
        let file = setup.dir.path().join("buffer").join(&path);
        let text = std::fs::read_to_string(&file).expect("window file");
        assert!(text.contains(r#","shard":"s0""#), "{text}");
        std::fs::write(&file, text.replace(r#","shard":"s0""#, replacement))
            .expect("rewrite the window file");
        path
    };
    let without = rewrite(1, "");
    let other = rewrite(2, r#","shard":"s7""#);

    let status = finish(&setup, "regular").await;
    assert_eq!(status.code(), Some(0), "{}", setup.log());
    assert_eq!(
        setup.state(0).await,
        setup.expected["s0"],
        "{}",
        setup.log()
    );
    let log = std::fs::read_to_string(setup.dir.path().join("writer.log")).expect("log");
    for path in [&without, &other] {
        assert_eq!(
            log.lines()
                .filter(|line| line.contains("applying every line") && line.contains(path.as_str()))
                .count(),
            1,
            "one warning for {path}:\n{log}"
        );
    }

    // The strict option refuses the first such file.
    let strict = Setup::new(1, 4, false).await;
    let path = WindowFileName::new(Destination::Shard(shard.clone()), window(2)).path();
    let file = strict.dir.path().join("buffer").join(&path);
    let text = std::fs::read_to_string(&file).expect("window file");
    std::fs::write(&file, text.replace(r#","shard":"s0""#, r#","shard":"s7""#)).expect("rewrite");
    let mut child = strict.spawn("regular", &["--set", "writer.strict_line_shard=true"]);
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(120)))
            .await
            .expect("join");
    assert_eq!(status.code(), Some(3), "{}", strict.log());
    assert!(
        strict.log().contains("a record of shard \"s7\""),
        "{}",
        strict.log()
    );
}

#[tokio::test]
async fn a_shard_down_for_25_seconds_converges_while_others_go_on_and_recovers_within_5_seconds() {
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
        if down_at.elapsed() > Duration::from_secs(25) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        s0_done,
        "s0 did not finish while s1 was down\n{}",
        setup.log()
    );
    while down_at.elapsed() < Duration::from_secs(25) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        setup.status("s1").await.is_none(),
        "s1 cannot have progressed"
    );
    setup.shards[1].restart().expect("restart s1");
    // Issue 11 finding 6: the retry delay is capped, so the shard applies again within 5 s of
    // its server accepting connections, however long it was down.
    let back_at = Instant::now();
    let recovery = loop {
        if setup.status("s1").await.is_some() {
            break back_at.elapsed();
        }
        assert!(
            back_at.elapsed() < Duration::from_secs(60),
            "s1 applied nothing within a minute of its restart\n{}",
            setup.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        recovery < Duration::from_secs(5),
        "s1 applied its first window {recovery:?} after its server came back (at most 5 s)"
    );
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(180)))
            .await
            .expect("join");
    assert!(status.success(), "writer failed: {status}\n{}", setup.log());
    assert_eq!(setup.state(0).await, setup.expected["s0"]);
    assert_eq!(setup.state(1).await, setup.expected["s1"]);
    assert!(setup.log().contains("retrying"), "retries are logged");
    eprintln!("s1 applied again {recovery:?} after its server came back");
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

/// Issue 11 finding 4: with the dead-letter policy, what is not a record's fault (here a table
/// missing in MySQL, as after a DDL change) stops the shard with `ERROR`; nothing is set
/// aside.
#[tokio::test]
async fn dead_letter_policy_does_not_set_aside_what_is_not_a_records_fault() {
    let setup = Setup::new(1, 10, false).await;
    let mut s0 = connect(&format!("{}/app", setup.shards[0].url())).await;
    s0.query_drop("DROP TABLE users").await.expect("drop");
    let mut child = setup.spawn("regular", &["--set", "writer.dead_letter=true"]);
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(120)))
            .await
            .expect("join");
    let buffer = LocalDirectory::new(setup.dir.path().join("buffer"));
    let letters = buffer.list("dlq/").await.expect("list dlq");
    assert!(
        letters.is_empty(),
        "{} transaction(s) set aside for a missing table: {letters:?}",
        letters.len()
    );
    assert_eq!(
        status.code(),
        Some(3),
        "a missing table stops the shard\n{}",
        setup.log()
    );
    let progress = setup.status("s0").await.expect("progress row");
    assert_eq!(
        (progress.status, progress.file_start_interval),
        (ProcessStatus::Error, window(0).start())
    );
}

/// Issue 11 finding 5: a shard that fails before it applies anything (an unreadable
/// checkpoint at start-up) is recorded as `ERROR` with its error text, like any other failure.
#[tokio::test]
async fn a_shard_failing_before_it_applies_anything_is_recorded_as_error() {
    let setup = Setup::new(1, 5, false).await;
    let mut s0 = connect(&format!("{}/app", setup.shards[0].url())).await;
    s0.query_drop(revrepl_writer::checkpoint::CREATE_CHECKPOINT_TABLE)
        .await
        .expect("checkpoint table");
    // A window that ends where it starts: unreadable.
    s0.query_drop(
        "INSERT INTO revrepl_checkpoint (run_id, shard, window_start, window_end) \
         VALUES ('wrun', 's0', '2023-11-14 22:13:20', '2023-11-14 22:13:20')",
    )
    .await
    .expect("corrupt checkpoint");
    let status = finish(&setup, "regular").await;
    assert_eq!(status.code(), Some(3), "{}", setup.log());
    let progress = setup.status("s0").await;
    assert_eq!(
        progress.map(|p| (p.status, p.file_start_interval)),
        Some((ProcessStatus::Error, window(0).start())),
        "the failure is recorded for resumeFailed and `revrepl status`\n{}",
        setup.log()
    );
    let errors = setup
        .metadata
        .shard_errors(&RunId::new(RUN).expect("run"))
        .await
        .expect("read shard errors");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].error.contains("checkpoint"),
        "the text says what failed: {}",
        errors[0].error
    );
}

/// Issue 11 finding 7: a writer whose run is not recorded logs the wait once (not every poll),
/// and gives up with a clear message when `--until` lies before anything the run could hold.
#[tokio::test]
async fn a_writer_whose_run_is_never_recorded_logs_once_and_gives_up_when_until_is_past() {
    let setup = Setup::new(1, 1, false).await;
    // Waiting makes sense (until far ahead): the wait is logged once, not every 200 ms.
    let mut child = setup.spawn_until(
        "regular",
        &["--set", "run_id=never-recorded"],
        "2100-01-01T00:00:00Z",
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = child.kill();
    let _ = child.wait();
    let waits = setup
        .full_log()
        .matches("waiting for the reader to record the run")
        .count();
    assert_eq!(waits, 1, "the wait is logged once\n{}", setup.log());

    // --until is long past and no start is configured: a reader starting now records a run
    // starting now, so nothing up to --until can ever be applied.
    let mut child = setup.spawn("regular", &["--set", "run_id=never-recorded"]);
    let status = tokio::task::spawn_blocking(move || {
        revrepl_test_services::wait_for_exit(&mut child, Duration::from_secs(20))
    })
    .await
    .expect("join");
    let status = status.unwrap_or_else(|| {
        panic!(
            "the writer still waited after 20 s although --until is in the past\n{}",
            setup.log()
        )
    });
    assert_eq!(status.code(), Some(2), "{}", setup.log());
    let log = setup.log();
    assert!(
        log.contains("\"never-recorded\" is not recorded") && log.contains("--until"),
        "{log}"
    );
}

/// Issue 11 finding 3(a): a shard still marked `REPROCESS` is re-applied from its
/// `file_start_interval` by a writer restarted in `resume` (as `revrepl run` restarts a
/// crashed `reprocess` writer), not skipped because the checkpoint covers it.
#[tokio::test]
async fn resume_reapplies_a_shard_still_marked_reprocess() {
    let setup = Setup::new(1, 30, false).await;
    let status = finish(&setup, "regular").await;
    assert!(status.success(), "writer failed: {status}\n{}", setup.log());
    let run = RunId::new(RUN).expect("run");
    let progress = ProcessProgress {
        shard: ShardId::new("s0").expect("id"),
        status: ProcessStatus::Reprocess,
        file_start_interval: window(20).start(),
    };
    setup
        .metadata
        .set_process_progress(&run, &progress)
        .await
        .expect("mark");
    let before = setup.state(0).await;
    let status = finish(&setup, "resume").await;
    assert!(status.success(), "resume failed: {status}\n{}", setup.log());
    let after = setup.state(0).await;
    assert_eq!(after.rows, before.rows, "re-applying gives the same rows");
    let more: i64 = after.changes.values().sum::<i64>() - before.changes.values().sum::<i64>();
    assert!(
        more > 0,
        "resume applied windows 20.. again\n{}",
        setup.log()
    );
    let done = setup.status("s0").await.expect("progress");
    assert_eq!(
        (done.status, done.file_start_interval),
        (ProcessStatus::Success, window(setup.windows - 1).start())
    );
}

/// Issue 11 finding 8: a second writer of the same run and shard is refused (naming the
/// holder and the expiry) while the first runs; once the first is killed with SIGKILL, a new
/// writer on the same host takes its lease over.
#[tokio::test]
async fn a_second_writer_of_a_shard_is_refused_while_the_first_runs() {
    let setup = Setup::new(1, 10, false).await;
    let ttl = ["--set", "metadata.lease_ttl=3s"];
    // The first writer applies everything, then keeps waiting for more.
    let mut first = setup.spawn_until("regular", &ttl, "2100-01-01T00:00:00Z");
    let deadline = Instant::now() + Duration::from_secs(60);
    while setup.status("s0").await.map(|p| p.file_start_interval)
        != Some(window(setup.windows - 1).start())
    {
        assert!(
            Instant::now() < deadline,
            "the first writer applied nothing\n{}",
            setup.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut second = setup.spawn("resume", &ttl);
    let status = tokio::task::spawn_blocking(move || {
        revrepl_test_services::wait_for_exit(&mut second, Duration::from_secs(20))
    })
    .await
    .expect("join");
    let log = setup.full_log();
    let status = status.unwrap_or_else(|| panic!("the second writer ran beside the first\n{log}"));
    assert!(!status.success(), "the second writer is refused\n{log}");
    let refusal = format!(
        "run \"wrun\": the writer of shard s0 is already running: {} pid {} #",
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default(),
        first.id()
    );
    assert!(log.contains(&refusal), "{refusal:?} not in\n{log}");
    assert!(log.contains("until 20"), "the expiry is named\n{log}");

    // SIGKILL: no release. A writer started on another host would wait for the lease to
    // expire; one on this host sees that the holder's process is gone and takes over at once.
    let _ = first.kill();
    let _ = first.wait();
    let run = RunId::new(RUN).expect("run");
    let leases = setup.metadata.leases(&run).await.expect("leases");
    assert!(
        leases.iter().any(|l| l.role == "writer:s0"),
        "the killed writer's lease is still there: {leases:?}"
    );
    let status = finish(&setup, "resume").await;
    assert!(
        status.success(),
        "a writer after the holder died runs: {status}\n{}",
        setup.log()
    );
    assert!(
        setup.log().contains("taking the lease over"),
        "{}",
        setup.log()
    );
    // It released its lease when it stopped.
    let left: Vec<String> = setup
        .metadata
        .leases(&run)
        .await
        .expect("leases")
        .into_iter()
        .map(|l| l.role)
        .collect();
    assert!(left.is_empty(), "a clean stop releases the lease: {left:?}");
}

/// A writer whose lease of a shard is taken over (as by another writer after a long metadata
/// outage) stops that shard within the lease's time to live, says why, and records nothing
/// more for it: no `ERROR`, the other writer owns the shard now.
#[tokio::test]
async fn a_writer_that_loses_its_lease_stops_the_shard_and_records_nothing() {
    let setup = Setup::new(1, 10, false).await;
    let mut writer = setup.spawn_until(
        "regular",
        &["--set", "metadata.lease_ttl=3s"],
        "2100-01-01T00:00:00Z",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while setup.status("s0").await.map(|p| p.file_start_interval)
        != Some(window(setup.windows - 1).start())
    {
        assert!(
            Instant::now() < deadline,
            "the writer applied nothing\n{}",
            setup.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = setup.status("s0").await;
    let run = RunId::new(RUN).expect("run");
    let now = Timestamp::from(chrono::Utc::now() + chrono::Duration::hours(1));
    let later = Timestamp::from(chrono::Utc::now() + chrono::Duration::hours(2));
    setup
        .metadata
        .acquire_lease(&run, "writer:s0", "another host pid 1 #01", now, later)
        .await
        .expect("take the lease over");
    let status = tokio::task::spawn_blocking(move || {
        revrepl_test_services::wait_for_exit(&mut writer, Duration::from_secs(10))
    })
    .await
    .expect("join");
    let log = setup.full_log();
    let status = status.unwrap_or_else(|| panic!("the writer ran on without its lease\n{log}"));
    assert_eq!(status.code(), Some(3), "{log}");
    assert!(
        log.contains("the writer of shard s0 lost its lease")
            && log.contains("another host pid 1 #01 holds it now"),
        "{log}"
    );
    assert_eq!(
        setup.status("s0").await,
        before,
        "nothing recorded after the loss"
    );
    let leases = setup.metadata.leases(&run).await.expect("leases");
    assert_eq!(
        leases.iter().map(|l| l.owner.as_str()).collect::<Vec<_>>(),
        vec!["another host pid 1 #01"],
        "the new owner's lease is left alone"
    );
}
