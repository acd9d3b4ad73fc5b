//! The `revrepl-reader` binary against the Spanner emulator with partition churn: the window
//! files must hold exactly the committed mods — none missing, none duplicated, every file
//! sorted, every record inside its file's window — across partition changes and across
//! SIGKILLs followed by `resume`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rand::Rng;
use revrepl_record::buffer::LocalDirectory;
use revrepl_record::{
    BufferStore, Destination, Timestamp, WindowDuration, WindowFileName, decode_window_file,
    sort_in_commit_order,
};
use revrepl_test_services::workload::{
    CommittedMod, WORKLOAD_DDL, WORKLOAD_SESSION, WORKLOAD_STREAM, Workload,
};
use revrepl_test_services::{EmulatorOptions, SpannerEmulator};

const PROJECT: &str = "test-project";
const INSTANCE: &str = "test-instance";
const DATABASE: &str = "app";
const SHARDS: [&str; 3] = ["s1", "s2", "s3"];

struct Setup {
    emulator: SpannerEmulator,
    dir: tempfile::TempDir,
    config: PathBuf,
    start: Timestamp,
}

fn database_path() -> String {
    database_path_of(DATABASE)
}

fn database_path_of(database: &str) -> String {
    format!("projects/{PROJECT}/instances/{INSTANCE}/databases/{database}")
}

async fn setup(churn_seconds: u32) -> Setup {
    setup_database(churn_seconds, DATABASE, &WORKLOAD_DDL).await
}

async fn setup_database(churn_seconds: u32, database: &str, ddl: &[&str]) -> Setup {
    let emulator = start_emulator(churn_seconds).await;
    create_and_configure(emulator, database, ddl).await
}

async fn start_emulator(churn_seconds: u32) -> SpannerEmulator {
    let emulator = SpannerEmulator::start_with(EmulatorOptions {
        partition_token_alive_seconds: (churn_seconds > 0).then_some(churn_seconds),
        fault_injection: false,
    })
    .expect("start emulator");
    emulator
        .create_instance(PROJECT, INSTANCE)
        .await
        .expect("instance");
    emulator
}

/// Creates `database` (and its change stream) and writes a configuration for it.
async fn create_and_configure(emulator: SpannerEmulator, database: &str, ddl: &[&str]) -> Setup {
    emulator
        .create_database(PROJECT, INSTANCE, database, ddl)
        .await
        .expect("database");
    let dir = tempfile::tempdir().expect("temp dir");
    let shards: Vec<_> = SHARDS
        .iter()
        .map(|s| {
            serde_json::json!({"logicalShardId": s, "host": "127.0.0.1", "port": "3306",
                               "user": "root", "password": "", "dbName": "app"})
        })
        .collect();
    std::fs::write(
        dir.path().join("shards.json"),
        serde_json::to_vec(&shards).expect("json"),
    )
    .expect("shards file");
    std::fs::write(dir.path().join("session.json"), WORKLOAD_SESSION).expect("session file");
    // Start on the next whole second after the stream exists (the emulator refuses earlier
    // starts and accepts starts a little in the future).
    let now = Timestamp::from(chrono::Utc::now());
    let window: WindowDuration = "2s".parse().expect("window");
    let start = window
        .align_down(Timestamp::new(now.seconds() + 3, 0).expect("start"))
        .expect("aligned");
    let config = format!(
        r#"run_id = "churn"
shards_file = "{dir}/shards.json"
session_file = "{dir}/session.json"

[spanner]
database = "{database}"
change_stream = "{WORKLOAD_STREAM}"
endpoint = "{grpc}"
admin_endpoint = "{rest}"

[buffer]
url = "{dir}/buffer"

[metadata]
path = "{dir}/metadata.db"

[reader]
window = "2s"
start_timestamp = "{start}"
heartbeat = "1s"
stall_timeout = "20s"
"#,
        dir = dir.path().display(),
        database = database_path_of(database),
        grpc = emulator.grpc_endpoint(),
        rest = emulator.rest_endpoint(),
        start = start.to_rfc3339(),
    );
    let config_path = dir.path().join("revrepl.toml");
    std::fs::write(&config_path, config).expect("config");
    Setup {
        emulator,
        dir,
        config: config_path,
        start,
    }
}

fn spawn_reader(setup: &Setup, mode: &str, until: Timestamp, log: &Path) -> Child {
    spawn_reader_with(setup, mode, until, log, &[])
}

fn spawn_reader_with(
    setup: &Setup,
    mode: &str,
    until: Timestamp,
    log: &Path,
    overrides: &[String],
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    Command::new(env!("CARGO_BIN_EXE_revrepl-reader"))
        .arg("--config")
        .arg(&setup.config)
        .args(["--mode", mode, "--until", &until.to_rfc3339()])
        .args(overrides.iter().flat_map(|o| ["--set", o.as_str()]))
        .env(
            "RUST_LOG",
            "info,revrepl_reader=debug,revrepl_reader::pipeline=trace",
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn revrepl-reader")
}

fn wait_exit(child: &mut Child, deadline: Duration) -> std::process::ExitStatus {
    revrepl_test_services::wait_for_exit(child, deadline)
        .unwrap_or_else(|| panic!("revrepl-reader did not finish within {deadline:?}"))
}

/// Runs the workload until `stop_at` (wall clock), returning every committed mod.
async fn run_workload(setup: &Setup, seed: u64, stop_at: Timestamp) -> Vec<CommittedMod> {
    let mut workload = Workload::connect(
        &setup.emulator.grpc_endpoint(),
        &database_path(),
        &SHARDS,
        seed,
    )
    .await
    .expect("workload");
    while Timestamp::from(chrono::Utc::now()) < stop_at {
        workload.step().await.expect("workload step");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    workload.committed()
}

/// Every file of the buffer: checks that each is sorted and only holds records of its window,
/// and returns the mods found plus the raw bytes by path.
async fn read_buffer(dir: &Path) -> (Vec<CommittedMod>, BTreeMap<String, Vec<u8>>) {
    let buffer = LocalDirectory::new(dir.join("buffer"));
    let mut found = Vec::new();
    let mut raw = BTreeMap::new();
    for path in buffer.list("").await.expect("list buffer") {
        let name = WindowFileName::parse(&path).expect("window file name");
        let bytes = buffer.get(&path).await.expect("get").expect("exists");
        let records = decode_window_file(&bytes).expect("decodes");
        let mut sorted = records.clone();
        sort_in_commit_order(&mut sorted);
        assert_eq!(records, sorted, "{path} is sorted");
        for record in &records {
            assert!(
                name.window.contains(record.commit_timestamp),
                "{path} holds a record committed at {}",
                record.commit_timestamp
            );
            let expected_dir = match &name.destination {
                Destination::Shard(s) => s.to_string(),
                Destination::Skip => "skip".to_string(),
            };
            assert_eq!(
                record.shard, expected_dir,
                "{path}: record of another shard"
            );
            let keys: serde_json::Value =
                serde_json::from_str(&record.the_mod().keys_json).expect("keys json");
            found.push(CommittedMod {
                commit: (
                    record.commit_timestamp.seconds(),
                    i32::try_from(record.commit_timestamp.nanos()).expect("nanos"),
                ),
                table: record.table_name.clone(),
                keys: keys.to_string(),
                mod_type: match record.mod_type {
                    revrepl_record::ModType::Insert => "INSERT",
                    revrepl_record::ModType::Update => "UPDATE",
                    revrepl_record::ModType::Delete => "DELETE",
                },
                shard: record.shard.clone(),
            });
        }
        raw.insert(path, bytes.to_vec());
    }
    found.sort();
    (found, raw)
}

/// The files must hold exactly the mods committed in `[start, until)`. On a difference, the
/// reader's log lines about each missing commit say whether it ever received the record.
fn assert_exact(
    expected: &[CommittedMod],
    found: &[CommittedMod],
    start: Timestamp,
    until: Timestamp,
    log: &Path,
) {
    let in_run = |m: &&CommittedMod| {
        let at = Timestamp::new(m.commit.0, m.commit.1 as u32).expect("ts");
        start <= at && at < until
    };
    let expected: Vec<CommittedMod> = expected.iter().filter(in_run).cloned().collect();
    assert!(
        expected.len() > 100,
        "the workload wrote {} mods",
        expected.len()
    );
    if expected != found {
        let missing: Vec<_> = expected
            .iter()
            .filter(|m| !found.contains(m))
            .take(5)
            .collect();
        let extra: Vec<_> = found
            .iter()
            .filter(|m| !expected.contains(m))
            .take(5)
            .collect();
        let log_text = std::fs::read_to_string(log).unwrap_or_default();
        for m in &missing {
            let at = Timestamp::new(m.commit.0, m.commit.1 as u32)
                .expect("ts")
                .to_rfc3339();
            let seen: Vec<&str> = log_text.lines().filter(|l| l.contains(&at)).collect();
            eprintln!("log lines for missing commit {at}:\n{}", seen.join("\n"));
        }
        let events: Vec<&str> = log_text
            .lines()
            .filter(|l| !l.contains("data record"))
            .collect();
        eprintln!("partition events:\n{}", events.join("\n"));
        panic!(
            "files differ from the committed mods: expected {}, found {}; missing {missing:?}; \
             unexpected {extra:?}",
            expected.len(),
            found.len()
        );
    }
}

fn count_in_log(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

fn end_of(start: Timestamp, seconds: i64) -> Timestamp {
    let window: WindowDuration = "2s".parse().expect("window");
    let at = Timestamp::new(start.seconds() + seconds, 0).expect("ts");
    window.align_down(at).expect("aligned")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churning_partitions_deliver_every_mod_exactly_once() {
    let setup = setup(2).await;
    let until = end_of(setup.start, 70);
    let log = setup.dir.path().join("reader.log");
    // Low priority (issue 12, point 9): the emulator accepts it on every change-stream query
    // (it does not schedule by priority, so only acceptance is checked here; the request
    // carrying it is checked by the reader's unit tests).
    let mut reader = spawn_reader_with(
        &setup,
        "regular",
        until,
        &log,
        &["spanner.priority=low".to_string()],
    );
    let stop_writing = Timestamp::new(setup.start.seconds() + 62, 0).expect("ts");
    let committed = run_workload(&setup, 7, stop_writing).await;
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut reader, Duration::from_secs(180)))
            .await
            .expect("join");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "reader failed: {status}\n{}",
        tail(&log_text)
    );
    let (found, _) = read_buffer(setup.dir.path()).await;
    assert_exact(&committed, &found, setup.start, until, &log);
    let changes = count_in_log(&log, "partition announced children");
    eprintln!("{} mods in files, {changes} partition changes", found.len());
    assert!(changes >= 20, "only {changes} partition changes seen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_killed_at_random_and_resumed_writes_the_same_files() {
    let setup = setup(3).await;
    let until = end_of(setup.start, 60);
    let log = setup.dir.path().join("reader.log");
    let stop_writing = Timestamp::new(setup.start.seconds() + 50, 0).expect("ts");
    let kills = async {
        let mut seen: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut mode = "regular";
        for kill in 0..5 {
            let mut reader = spawn_reader(&setup, mode, until, &log);
            let wait = Duration::from_millis(rand::rng().random_range(3_000..8_000));
            tokio::time::sleep(wait).await;
            reader.kill().expect("SIGKILL");
            let _ = reader.wait();
            let (_, files) = read_buffer(setup.dir.path()).await;
            for (path, bytes) in files {
                if let Some(before) = seen.get(&path) {
                    assert_eq!(before, &bytes, "{path} changed after kill {kill}");
                }
                seen.insert(path, bytes);
            }
            mode = "resume";
        }
        let mut reader = spawn_reader(&setup, "resume", until, &log);
        let status =
            tokio::task::spawn_blocking(move || wait_exit(&mut reader, Duration::from_secs(180)))
                .await
                .expect("join");
        (seen, status)
    };
    let (committed, (seen, status)) = tokio::join!(run_workload(&setup, 11, stop_writing), kills);
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "reader failed: {status}\n{}",
        tail(&log_text)
    );
    let (found, files) = read_buffer(setup.dir.path()).await;
    for (path, bytes) in &seen {
        assert_eq!(
            files.get(path),
            Some(bytes),
            "{path} was rewritten differently"
        );
    }
    assert_exact(&committed, &found, setup.start, until, &log);
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[tokio::test]
async fn a_start_older_than_the_retention_is_refused() {
    let setup = setup(0).await;
    let log = setup.dir.path().join("reader.log");
    let two_days_ago = Timestamp::from(chrono::Utc::now() - chrono::Duration::days(2));
    let overrides = [format!(
        "reader.start_timestamp={}",
        two_days_ago.to_rfc3339()
    )];
    let mut reader = spawn_reader_with(&setup, "regular", setup.start, &log, &overrides);
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut reader, Duration::from_secs(60)))
            .await
            .expect("join");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!status.success(), "a start before the retention must fail");
    assert!(
        log_text.contains("keeps data for 1d") && log_text.contains("Start a new run"),
        "{}",
        tail(&log_text)
    );
}

/// With `NEW_ROW` capture a delete carries only its keys; the shard column is read from the
/// row as it was just before the delete (a stale read at commit - 1 ns).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_without_old_values_are_routed_by_a_stale_read() {
    let ddl = [
        WORKLOAD_DDL[0],
        "CREATE CHANGE STREAM revrepl_stream FOR Users OPTIONS (value_capture_type = 'NEW_ROW')",
    ];
    let setup = setup_database(0, "newrow", &ddl).await;
    let until = end_of(setup.start, 6);
    let log = setup.dir.path().join("reader.log");
    let mut reader = spawn_reader(&setup, "regular", until, &log);
    // Commit after the run's start.
    while Timestamp::from(chrono::Utc::now()) <= setup.start {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spanner = google_cloud_spanner::client::Spanner::builder()
        .with_endpoint(setup.emulator.grpc_endpoint())
        .build()
        .await
        .expect("client");
    let client = spanner
        .database_client(database_path_of("newrow"))
        .build()
        .await
        .expect("database client");
    for statement in [
        "INSERT INTO Users (id, shard, name) VALUES (7, 's2', 'seven')",
        "DELETE FROM Users WHERE id = 7",
    ] {
        client
            .read_write_transaction()
            .build()
            .run(async |transaction| {
                transaction.execute_update(statement).await?;
                Ok(())
            })
            .await
            .expect("dml");
    }
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut reader, Duration::from_secs(60)))
            .await
            .expect("join");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "reader failed: {status}\n{}",
        tail(&log_text)
    );
    let (found, _) = read_buffer(setup.dir.path()).await;
    let kinds: Vec<(&str, &str)> = found
        .iter()
        .map(|m| (m.mod_type, m.shard.as_str()))
        .collect();
    assert_eq!(kinds, vec![("INSERT", "s2"), ("DELETE", "s2")]);
}

/// Finding: the reader aligned its start down to the window grid, which can fall before the
/// change stream was created; Spanner refuses such a start, and `revrepl run` restarted the
/// reader with the same start forever. Now the stream is read from the requested start (the
/// window grid is unchanged), and a start the stream refuses is a clear error with exit code 2,
/// which `revrepl run` does not restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_started_right_after_the_stream_was_created_reads_from_its_start() {
    let emulator = start_emulator(0).await;
    // Create the stream just after a 10 s boundary, so that the window containing "now" begins
    // before the stream existed.
    let window: WindowDuration = "10s".parse().expect("window");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let now = Timestamp::from(chrono::Utc::now());
        let into_window = now.as_nanos() - window.align_down(now).expect("aligned").as_nanos();
        if (100_000_000..3_000_000_000).contains(&into_window) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no 10 s boundary in 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before_stream = Timestamp::from(chrono::Utc::now());
    let setup = create_and_configure(emulator, DATABASE, &WORKLOAD_DDL).await;
    let requested = Timestamp::from(chrono::Utc::now());
    let grid_start = window.align_down(requested).expect("aligned");
    assert!(
        grid_start < before_stream,
        "the test needs the window to begin before the stream: {grid_start} vs {before_stream}"
    );
    let until = window.window_of(requested).expect("window").end();
    let log = setup.dir.path().join("reader.log");

    // A start before the stream existed: a clear error at once, exit code 2 (not restarted).
    let early = [
        "reader.window=10s".to_string(),
        format!("reader.start_timestamp={}", grid_start.to_rfc3339()),
        "run_id=too-early".to_string(),
    ];
    let mut reader = spawn_reader_with(&setup, "regular", until, &log, &early);
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut reader, Duration::from_secs(60)))
            .await
            .expect("join");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(2), "{}", tail(&log_text));
    assert!(
        log_text.contains("refuses to be read from") && log_text.contains("did not exist yet"),
        "{}",
        tail(&log_text)
    );

    // The requested start (after the stream was created) in a window that began before it:
    // the run works, and a change made after the start is in its file.
    let log = setup.dir.path().join("reader-quick.log");
    let quick = [
        "reader.window=10s".to_string(),
        format!("reader.start_timestamp={}", requested.to_rfc3339()),
        "run_id=quick".to_string(),
    ];
    let mut reader = spawn_reader_with(&setup, "regular", until, &log, &quick);
    let mut workload = Workload::connect(
        &setup.emulator.grpc_endpoint(),
        &database_path(),
        &SHARDS,
        11,
    )
    .await
    .expect("workload");
    for _ in 0..3 {
        workload.step().await.expect("workload step");
    }
    let committed = workload.committed();
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut reader, Duration::from_secs(60)))
            .await
            .expect("join");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "reader failed: {status}\n{}",
        tail(&log_text)
    );
    let (found, _) = read_buffer(setup.dir.path()).await;
    let expected: Vec<CommittedMod> = committed
        .into_iter()
        .filter(|m| {
            let at = Timestamp::new(m.commit.0, m.commit.1 as u32).expect("ts");
            requested <= at && at < until
        })
        .collect();
    assert!(
        !expected.is_empty(),
        "the workload committed nothing in the run"
    );
    assert_eq!(
        found, expected,
        "every change of the run is in its file, once"
    );
}

/// Issue 10 finding 5: a second reader of the same run is refused (naming the holder) while
/// the first runs, instead of reading beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_reader_of_a_run_is_refused_while_the_first_runs() {
    let setup = setup(0).await;
    let until = end_of(setup.start, 600);
    let first_log = setup.dir.path().join("first.log");
    let mut first = spawn_reader(&setup, "regular", until, &first_log);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while count_in_log(&first_log, "reader starting") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first reader did not start\n{}",
            tail(&std::fs::read_to_string(&first_log).unwrap_or_default())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second_log = setup.dir.path().join("second.log");
    let mut second = spawn_reader(&setup, "resume", until, &second_log);
    let status = tokio::task::spawn_blocking(move || {
        revrepl_test_services::wait_for_exit(&mut second, Duration::from_secs(30))
    })
    .await
    .expect("join");
    let text = std::fs::read_to_string(&second_log).unwrap_or_default();
    let status =
        status.unwrap_or_else(|| panic!("the second reader ran beside the first\n{}", tail(&text)));
    assert!(
        !status.success(),
        "the second reader is refused\n{}",
        tail(&text)
    );
    let refusal = format!(
        "run \"churn\": the reader is already running: {} pid {} #",
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default(),
        first.id()
    );
    assert!(
        text.contains(&refusal),
        "{refusal:?} not in\n{}",
        tail(&text)
    );
    assert!(
        first.try_wait().expect("poll the first reader").is_none(),
        "the first reader runs on"
    );
    let _ = first.kill();
    let _ = first.wait();
}

/// Issue 12.3: a table the session file has in `SpSchema` but not in `SrcSchema` (added to
/// Spanner after the migration) goes to `skip/` at the reader, with one log line per table,
/// instead of reaching a shard whose writer would stop on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spanner_only_tables_go_to_skip_with_one_log_line() {
    let ddl = [
        WORKLOAD_DDL[0],
        "CREATE TABLE Events (id INT64 NOT NULL, shard STRING(50)) PRIMARY KEY (id)",
        "CREATE CHANGE STREAM revrepl_stream FOR ALL \
         OPTIONS (value_capture_type = 'NEW_ROW_AND_OLD_VALUES')",
    ];
    let setup = setup_database(0, "spanneronly", &ddl).await;
    let mut session: serde_json::Value =
        serde_json::from_str(WORKLOAD_SESSION).expect("session JSON");
    session["SpSchema"]["t9"] = serde_json::json!({
        "Name": "Events", "ColIds": ["c90", "c91"], "ShardIdColumn": "c91",
        "ColDefs": {"c90": {"Name": "id", "T": {"Name": "INT64"}},
                    "c91": {"Name": "shard", "T": {"Name": "STRING"}}},
        "PrimaryKeys": [{"ColId": "c90", "Order": 1}]});
    std::fs::write(setup.dir.path().join("session.json"), session.to_string())
        .expect("session file");

    let until = end_of(setup.start, 6);
    let log = setup.dir.path().join("reader.log");
    let mut reader = spawn_reader(&setup, "regular", until, &log);
    while Timestamp::from(chrono::Utc::now()) <= setup.start {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spanner = google_cloud_spanner::client::Spanner::builder()
        .with_endpoint(setup.emulator.grpc_endpoint())
        .build()
        .await
        .expect("client");
    let client = spanner
        .database_client(database_path_of("spanneronly"))
        .build()
        .await
        .expect("database client");
    for statement in [
        "INSERT INTO Users (id, shard, name) VALUES (1, 's1', 'one')",
        "INSERT INTO Events (id, shard) VALUES (1, 's1')",
        "INSERT INTO Events (id, shard) VALUES (2, 's2')",
        "DELETE FROM Events WHERE id = 1",
    ] {
        client
            .read_write_transaction()
            .build()
            .run(async |transaction| {
                transaction.execute_update(statement).await?;
                Ok(())
            })
            .await
            .expect("dml");
    }
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut reader, Duration::from_secs(60)))
            .await
            .expect("join");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "reader failed: {status}\n{}",
        tail(&log_text)
    );
    let (found, _) = read_buffer(setup.dir.path()).await;
    let routed: Vec<(&str, &str, &str)> = found
        .iter()
        .map(|m| (m.table.as_str(), m.mod_type, m.shard.as_str()))
        .collect();
    assert_eq!(
        routed,
        vec![
            ("Users", "INSERT", "s1"),
            ("Events", "INSERT", "skip"),
            ("Events", "INSERT", "skip"),
            ("Events", "DELETE", "skip"),
        ]
    );
    assert_eq!(
        count_in_log(&log, "table \"Events\" exists only in Spanner"),
        1,
        "{}",
        tail(&log_text)
    );
}
