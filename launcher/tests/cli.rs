//! The real `revrepl` binary against real services: `init` against the Spanner emulator and
//! MariaDB shards, `status` and `reprocess` against an SQLite metadata store, `validate`
//! finding rows changed by hand in MariaDB.

use std::path::{Path, PathBuf};
use std::process::Output;

use google_cloud_spanner::client::{DatabaseClient, Spanner};
use google_cloud_spanner::mutation::Mutation;
use google_cloud_spanner::statement::Statement;
use google_cloud_spanner::value::Value;
use mysql_async::prelude::Queryable;
use revrepl_metadata::{
    CreatedWindows, MetadataStore, MissingTables, ProcessProgress, ProcessStatus, RunId, RunRecord,
    SqliteMetadataStore, SqliteOptions,
};
use revrepl_record::{ShardId, Timestamp, WindowDuration};
use revrepl_test_services::workload::WORKLOAD_SESSION;
use revrepl_test_services::{MariaDb, SpannerEmulator};

const PROJECT: &str = "test-project";
const INSTANCE: &str = "test-instance";
const DATABASE: &str = "app";
const STREAM: &str = "revrepl_stream";

/// The workload's tables without its change stream (init creates it).
const TABLES_DDL: [&str; 3] = [
    "CREATE TABLE Users (id INT64 NOT NULL, shard STRING(50) NOT NULL, name STRING(MAX), \
     score FLOAT64) PRIMARY KEY (id)",
    "CREATE TABLE Orders (user_id INT64 NOT NULL, id INT64 NOT NULL, shard STRING(50) NOT NULL, \
     amount NUMERIC, note STRING(MAX)) PRIMARY KEY (user_id, id)",
    "CREATE TABLE Audit (id INT64 NOT NULL, msg STRING(MAX)) PRIMARY KEY (id)",
];

/// The MySQL side of [`WORKLOAD_SESSION`].
const MYSQL_DDL: [&str; 2] = [
    "CREATE TABLE users (id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(255), score DOUBLE)",
    "CREATE TABLE orders (user_id BIGINT NOT NULL, id BIGINT NOT NULL, amount DECIMAL(20,2), \
     note TEXT, PRIMARY KEY (user_id, id))",
];

fn database_path() -> String {
    format!("projects/{PROJECT}/instances/{INSTANCE}/databases/{DATABASE}")
}

/// A temp directory with `shards.json`, `session.json` and `revrepl.toml` for `shards`.
struct Workspace {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Workspace {
    fn new(shards: &[(&str, u16)], spanner: Option<&SpannerEmulator>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let entries: Vec<_> = shards
            .iter()
            .map(|(id, port)| {
                serde_json::json!({"logicalShardId": id, "host": "127.0.0.1", "port": port,
                                   "user": "root", "password": "", "dbName": DATABASE})
            })
            .collect();
        write(
            &dir.path().join("shards.json"),
            &serde_json::to_string_pretty(&entries).expect("json"),
        );
        write(&dir.path().join("session.json"), WORKLOAD_SESSION);
        let (grpc, rest) = spanner.map_or(
            (
                "http://127.0.0.1:1".to_string(),
                "http://127.0.0.1:1".to_string(),
            ),
            |e| (e.grpc_endpoint(), e.rest_endpoint()),
        );
        let config = format!(
            r#"run_id = "cli"
shards_file = "{dir}/shards.json"
session_file = "{dir}/session.json"

[spanner]
database = "{database}"
change_stream = "{STREAM}"
endpoint = "{grpc}"
admin_endpoint = "{rest}"

[buffer]
url = "{dir}/buffer"

[metadata]
path = "{dir}/metadata.db"
"#,
            dir = dir.path().display(),
            database = database_path(),
        );
        let config_path = dir.path().join("revrepl.toml");
        write(&config_path, &config);
        Self {
            dir,
            config: config_path,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `revrepl <args> --config <this config>`.
    async fn revrepl(&self, args: &[&str]) -> Run {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_revrepl"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "warn")
            .output()
            .await
            .expect("run revrepl");
        Run::from(output)
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write test file");
}

/// What one run of the binary printed and returned.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    #[track_caller]
    fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

async fn start_spanner(ddl: &[&str]) -> SpannerEmulator {
    let emulator = SpannerEmulator::start().expect("start the emulator");
    emulator
        .create_instance(PROJECT, INSTANCE)
        .await
        .expect("create instance");
    emulator
        .create_database(PROJECT, INSTANCE, DATABASE, ddl)
        .await
        .expect("create database");
    emulator
}

async fn mysql(server: &MariaDb) -> mysql_async::Conn {
    mysql_async::Conn::from_url(server.url())
        .await
        .expect("connect to MariaDB")
}

async fn create_shard_database(server: &MariaDb, tables: &[&str]) {
    let mut conn = mysql(server).await;
    conn.query_drop(format!("CREATE DATABASE {DATABASE}"))
        .await
        .expect("create database");
    conn.query_drop(format!("USE {DATABASE}"))
        .await
        .expect("use");
    for ddl in tables {
        conn.query_drop(*ddl).await.expect("create table");
    }
    let _ = conn.disconnect().await;
}

async fn spanner_client(emulator: &SpannerEmulator) -> DatabaseClient {
    Spanner::builder()
        .with_endpoint(emulator.grpc_endpoint())
        .build()
        .await
        .expect("spanner client")
        .database_client(database_path())
        .build()
        .await
        .expect("database client")
}

#[tokio::test]
async fn help_shows_examples_for_every_command() {
    for command in ["init", "status", "reprocess", "validate", "run", "demo"] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_revrepl"))
            .args([command, "--help"])
            .output()
            .await
            .expect("run revrepl");
        let run = Run::from(output);
        run.expect_code(0);
        assert!(
            run.stdout.contains("Examples:"),
            "{command}: {}",
            run.stdout
        );
        assert!(run.stdout.contains("--config"), "{command}: {}", run.stdout);
    }
}

#[tokio::test]
async fn init_creates_the_stream_and_tables_then_verifies_them() {
    let emulator = start_spanner(&TABLES_DDL).await;
    let shards = MariaDb::start_many(2).expect("start MariaDB shards");
    for server in &shards {
        create_shard_database(server, &MYSQL_DDL).await;
    }
    let workspace = Workspace::new(
        &[("s1", shards[0].port()), ("s2", shards[1].port())],
        Some(&emulator),
    );
    // A read-only shard fails init, with the fix.
    mysql(&shards[1])
        .await
        .query_drop("SET GLOBAL read_only = 1")
        .await
        .expect("make s2 read-only");
    let run = workspace.revrepl(&["init", "--verify-only"]).await;
    run.expect_code(1);
    let text = run.all();
    assert!(
        text.contains("@@read_only = 1") && text.contains("SET GLOBAL read_only = 0"),
        "{text}"
    );
    assert!(text.contains("it does not exist"), "{text}");
    assert!(text.contains("FAIL  metadata store"), "{text}");
    assert!(
        !workspace.path("metadata.db").exists(),
        "--verify-only created the metadata file"
    );

    mysql(&shards[1])
        .await
        .query_drop("SET GLOBAL read_only = 0")
        .await
        .expect("make s2 writable");
    let run = workspace.revrepl(&["init"]).await;
    eprintln!("{}", run.all());
    run.expect_code(0);
    let text = run.all();
    for expected in [
        "ok    shards file",
        "2 shard(s): s1, s2",
        "ok    session file",
        "ok    routing: by the session file's shard-id columns",
        // Which tables are replicated or skipped, and why (Audit is not in the session).
        "ok    table Users: replicated to MySQL table `users`, shard from column shard",
        "ok    table Orders: replicated to MySQL table `orders`",
        "warn  table Audit: skipped: it is not in the session file",
        "ok    shard s1 (root@127.0.0.1:",
        "ok    shard s2 (root@127.0.0.1:",
        "ok    buffer",
        "change stream revrepl_stream: created: value_capture_type NEW_ROW_AND_OLD_VALUES, retention 7d",
        "shard_file_process_progress",
        "init: ready",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    // One probe object per init (the --verify-only run above wrote one too).
    assert_eq!(
        std::fs::read_dir(workspace.path("buffer/revrepl-probe"))
            .expect("probe directory")
            .count(),
        2
    );

    // The stream and the tables exist now; a second init verifies them.
    let client = spanner_client(&emulator).await;
    let mut rows = client
        .single_use()
        .build()
        .execute_query(
            Statement::builder(
                "SELECT option_value FROM information_schema.change_stream_options \
                 WHERE change_stream_name = 'revrepl_stream' AND option_name = 'value_capture_type'",
            )
            .build(),
        )
        .await
        .expect("query options");
    let row = rows.next().await.expect("one row").expect("row");
    let capture: String = row.get(0usize).expect("option value");
    assert!(capture.contains("NEW_ROW_AND_OLD_VALUES"), "{capture}");

    let run = workspace.revrepl(&["init", "--verify-only"]).await;
    run.expect_code(0);
    assert!(
        run.stdout.contains("change stream revrepl_stream: exists"),
        "{}",
        run.stdout
    );

    // A Spanner metadata store: init creates its database, then its tables.
    let metadata = format!("projects/{PROJECT}/instances/{INSTANCE}/databases/revrepl_metadata");
    let spanner_metadata = [
        "--set",
        "metadata.store=spanner",
        "--set",
        &format!("metadata.database={metadata}"),
    ];
    let run = workspace
        .revrepl(&[&["init"][..], &spanner_metadata[..]].concat())
        .await;
    run.expect_code(0);
    assert!(
        run.stdout.contains(&format!(
            "ok    metadata store spanner {metadata}: database created; tables"
        )),
        "{}",
        run.stdout
    );
    let run = workspace
        .revrepl(&[&["init", "--verify-only"][..], &spanner_metadata[..]].concat())
        .await;
    run.expect_code(0);
    let run = workspace
        .revrepl(&[&["status"][..], &spanner_metadata[..]].concat())
        .await;
    run.expect_code(2);
    assert!(
        run.stderr.contains("run \"cli\" is not recorded"),
        "{}",
        run.stderr
    );
}

/// Issue 12.12, 12.13 and 12.14: an unrelated `REVREPL_BIN` is not configuration; without any
/// configuration file every program says none was found and where it looked, instead of
/// ``missing field `run_id` ``; logs written to a pipe hold no colour codes.
#[tokio::test]
async fn without_a_configuration_file_every_program_says_where_it_looked() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The reader and the writer are built next to `revrepl` (as for `run_command.rs`).
    let revrepl = PathBuf::from(env!("CARGO_BIN_EXE_revrepl"));
    let sibling = |name: &str| {
        let path = revrepl.with_file_name(name);
        assert!(
            path.is_file(),
            "{name} is not built next to revrepl: run `cargo build -p revrepl-reader -p \
             revrepl-writer`"
        );
        path
    };
    let programs: [(PathBuf, &[&str]); 3] = [
        (revrepl.clone(), &["status"]),
        (sibling("revrepl-reader"), &[]),
        (sibling("revrepl-writer"), &[]),
    ];
    for (program, args) in programs {
        let program = program.display().to_string();
        let output = tokio::process::Command::new(&program)
            .args(args)
            .current_dir(dir.path())
            .env_remove("REVREPL_CONFIG")
            .env("REVREPL_BIN", "/usr/local/bin/revrepl")
            .env_remove("NO_COLOR")
            .output()
            .await
            .expect("run the program");
        let run = Run::from(output);
        run.expect_code(2);
        let looked_for = dir.path().join("revrepl.toml");
        assert!(
            run.stderr.contains("no configuration file was found")
                && run.stderr.contains(&looked_for.display().to_string()),
            "{program}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("unknown field"), "{}", run.stderr);
        assert!(
            !run.stderr.contains('\u{1b}'),
            "{program} coloured its log on a pipe: {:?}",
            run.stderr
        );
    }
}

/// Issue 12.15: a session file the reader refuses stops `revrepl run` at once (the reader
/// exits 2, which is never restarted) with the file, the JSON path and the fix — not a dozen
/// restarts over five minutes. `init` reports the same problem among its first checks.
#[tokio::test]
async fn run_stops_at_once_on_a_session_file_the_reader_refuses() {
    // No service is needed: the reader reads the session file before it connects to anything.
    let workspace = Workspace::new(&[("s1", 1), ("s2", 2)], None);
    let mut session: serde_json::Value =
        serde_json::from_str(WORKLOAD_SESSION).expect("the workload session is JSON");
    let (table_id, _) = session["SrcSchema"]
        .as_object()
        .and_then(|tables| tables.iter().next())
        .expect("a source table");
    let table_id = table_id.clone();
    session["SrcSchema"][&table_id]
        .as_object_mut()
        .expect("a table")
        .remove("Name");
    write(&workspace.path("session.json"), &session.to_string());
    let expected_path = format!("SrcSchema[{table_id:?}].Name: the name is missing");

    let started = std::time::Instant::now();
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        workspace.revrepl(&[
            "run",
            "--reader-mode",
            "regular",
            "--writer-mode",
            "regular",
        ]),
    )
    .await
    .expect("revrepl run stops by itself within a minute");
    output.expect_code(2);
    let text = output.all();
    assert!(
        text.contains(&expected_path) && text.contains("fix the session file"),
        "{text}"
    );
    assert_eq!(
        text.matches("reader started").count(),
        1,
        "a configuration error is never retried: {text}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{text}"
    );

    let init = workspace
        .revrepl(&["init", "--verify-only", "--timeout", "1s"])
        .await;
    let text = init.all();
    assert!(
        text.contains("FAIL  session file") && text.contains(&expected_path),
        "{text}"
    );
}

#[tokio::test]
async fn init_names_what_to_fix_in_a_broken_configuration() {
    let shards = MariaDb::start_many(1).expect("start MariaDB");
    // No database on the shard, a shards file with two shards and no session file.
    let workspace = Workspace::new(&[("s1", shards[0].port()), ("s2", 1)], None);
    write(
        &workspace.config,
        &std::fs::read_to_string(&workspace.config)
            .expect("config")
            .replace("session_file", "# session_file"),
    );
    let run = workspace.revrepl(&["init", "--timeout", "5s"]).await;
    eprintln!("{}", run.all());
    run.expect_code(1);
    let text = run.all();
    assert!(text.contains("FAIL  routing"), "{text}");
    assert!(
        text.contains("database `app` does not exist: create it on the shard"),
        "{text}"
    );
    assert!(
        text.contains("FAIL  shard s2") && text.contains("check host and port"),
        "{text}"
    );
    assert!(text.contains("FAIL  change stream"), "{text}");

    let run = workspace
        .revrepl(&["init", "--set", "reader.windw=1m"])
        .await;
    run.expect_code(2);
    assert!(run.stderr.contains("windw"), "{}", run.stderr);
}

async fn seeded_store(path: &Path) -> SqliteMetadataStore {
    let store = SqliteMetadataStore::open(path, SqliteOptions::default())
        .await
        .expect("open sqlite");
    store
        .ensure_tables(MissingTables::Create)
        .await
        .expect("tables");
    store
}

fn ts(seconds: i64) -> Timestamp {
    Timestamp::new(seconds, 0).expect("timestamp")
}

#[tokio::test]
async fn status_and_reprocess_against_an_sqlite_store() {
    let workspace = Workspace::new(&[("s1", 3306), ("s2", 3306), ("s3", 3306)], None);
    let run = workspace.revrepl(&["status"]).await;
    run.expect_code(2);
    assert!(
        run.stderr.contains("does not exist") && run.stderr.contains("revrepl init"),
        "{}",
        run.stderr
    );

    let store = seeded_store(&workspace.path("metadata.db")).await;
    let run_id = RunId::new("cli").expect("run id");
    let window: WindowDuration = "10s".parse().expect("window");
    let start = ts(1_704_450_800);
    store
        .record_run(&RunRecord::new(run_id.clone(), start, window).expect("run"))
        .await
        .expect("record run");
    let shards: Vec<ShardId> = ["s1", "s2", "s3"]
        .iter()
        .map(|s| ShardId::new(*s).expect("shard"))
        .collect();
    store
        .register_shards(&run_id, &shards, start)
        .await
        .expect("register");
    let windows = CreatedWindows::new(ts(1_704_450_900), shards.clone(), []).expect("windows");
    store
        .record_windows(&run_id, &windows)
        .await
        .expect("record windows");
    for (shard, status, at) in [
        (&shards[0], ProcessStatus::Success, 1_704_450_890),
        (&shards[1], ProcessStatus::Error, 1_704_450_850),
    ] {
        store
            .set_process_progress(
                &run_id,
                &ProcessProgress {
                    shard: shard.clone(),
                    status,
                    file_start_interval: ts(at),
                },
            )
            .await
            .expect("progress");
    }
    // The writer's error texts: s2's is about the window it stopped at; s1's is an old one
    // (s1 recovered since), which status does not show.
    let s2_error = "shard s2, table users, column name (varchar(5)), key {\"id\":\"5\"}: a JSON \
                    string value is 16 characters long, more than the column's 5";
    store
        .record_shard_error(&run_id, &shards[1], ts(1_704_450_850), s2_error)
        .await
        .expect("record s2's error");
    store
        .record_shard_error(&run_id, &shards[0], ts(1_704_450_820), "s1's old error")
        .await
        .expect("record s1's error");

    let run = workspace.revrepl(&["status"]).await;
    run.expect_code(3);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[1].starts_with("SHARD"), "{}", run.stdout);
    let s1 = lines
        .iter()
        .find(|l| l.starts_with("s1 "))
        .expect("s1 line");
    assert!(
        s1.contains("SUCCESS") && s1.contains("2024-01-05T10:35:00.000Z") && s1.contains(" 0.0s"),
        "{s1}"
    );
    let s2 = lines
        .iter()
        .find(|l| l.starts_with("s2 "))
        .expect("s2 line");
    assert!(
        s2.contains("ERROR") && s2.contains("2024-01-05T10:34:10.000Z") && s2.contains("50.0s"),
        "{s2}"
    );
    assert!(
        s2.ends_with(s2_error),
        "status shows the writer's error text: {s2}"
    );
    assert!(!run.stdout.contains("s1's old error"), "{}", run.stdout);
    let s3 = lines
        .iter()
        .find(|l| l.starts_with("s3 "))
        .expect("s3 line");
    assert!(s3.contains("NOT_STARTED"), "{s3}");
    assert!(run.stdout.contains("1 shard(s) in ERROR"), "{}", run.stdout);

    let run = workspace.revrepl(&["status", "--json"]).await;
    run.expect_code(3);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("status JSON");
    assert_eq!(json["run_id"], "cli");
    assert_eq!(json["shards"][1]["shard"], "s2");
    assert_eq!(json["shards"][1]["status"], "ERROR");
    assert_eq!(json["shards"][1]["behind_reader_seconds"], 50.0);
    assert_eq!(json["shards"][1]["last_error"], s2_error);
    assert_eq!(json["shards"][0]["last_error"], serde_json::Value::Null);
    assert_eq!(json["shards"][0]["applied_upto"], "2024-01-05T10:35:00Z");

    // Reprocess the failed shard from an unaligned time: it is aligned down.
    let run = workspace
        .revrepl(&[
            "reprocess",
            "--shard",
            "s2",
            "--from",
            "2024-01-05T10:33:37Z",
        ])
        .await;
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("shard s2: REPROCESS from 2024-01-05T10:33:30.000Z (was ERROR at"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("--mode reprocess"), "{}", run.stdout);
    let progress = store
        .process_progress(&run_id, &shards[1])
        .await
        .expect("read progress")
        .expect("a row");
    assert_eq!(progress.status, ProcessStatus::Reprocess);
    assert_eq!(progress.file_start_interval, ts(1_704_450_810));

    // Without --from, a shard with no progress starts at the run's start.
    let run = workspace.revrepl(&["reprocess", "--shard", "s3"]).await;
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("shard s3: REPROCESS from 2024-01-05T10:33:20.000Z (no progress recorded)"),
        "{}",
        run.stdout
    );

    let run = workspace.revrepl(&["status"]).await;
    run.expect_code(0);
    assert!(!run.stdout.contains(" ERROR "), "{}", run.stdout);
    assert_eq!(
        run.stdout.matches(" REPROCESS ").count(),
        2,
        "{}",
        run.stdout
    );

    // Mistakes are refused before anything is written.
    let run = workspace
        .revrepl(&["reprocess", "--shard", "s1,nope"])
        .await;
    run.expect_code(2);
    assert!(
        run.stderr.contains("shard nope is not part of run cli"),
        "{}",
        run.stderr
    );
    let run = workspace
        .revrepl(&[
            "reprocess",
            "--shard",
            "s1",
            "--from",
            "2020-01-01T00:00:00Z",
        ])
        .await;
    run.expect_code(2);
    assert!(
        run.stderr.contains("before run cli's start"),
        "{}",
        run.stderr
    );
    let run = workspace.revrepl(&["status", "--run-id", "other"]).await;
    run.expect_code(2);
    assert!(
        run.stderr.contains("run \"other\" is not recorded"),
        "{}",
        run.stderr
    );
    assert_eq!(
        store
            .process_progress(&run_id, &shards[0])
            .await
            .expect("read")
            .map(|p| p.status),
        Some(ProcessStatus::Success)
    );
}

/// Seeds the same users and orders into Spanner and into the MariaDB shard each is routed to.
async fn seed(client: &DatabaseClient, shards: &[MariaDb]) {
    let mut mutations = Vec::new();
    let mut per_shard: Vec<Vec<String>> = vec![Vec::new(); shards.len()];
    for id in 1..=40i64 {
        let shard = (id % 2) as usize;
        let shard_id = format!("s{}", shard + 1);
        let name = format!("user {id} \"quoted\" \\ ünï 🦀");
        let score = id as f64 / 3.0;
        mutations.push(
            Mutation::new_insert_builder("Users")
                .set("id")
                .to(id)
                .set("shard")
                .to(shard_id.clone())
                .set("name")
                .to(name.clone())
                .set("score")
                .to(score)
                .build(),
        );
        let amount = format!("{id}.{:02}", id % 100);
        mutations.push(
            Mutation::new_insert_builder("Orders")
                .set("user_id")
                .to(id)
                .set("id")
                .to(id * 10)
                .set("shard")
                .to(shard_id)
                .set("amount")
                .to(Value::from(amount.clone()))
                .set("note")
                .to(if id % 5 == 0 {
                    Value::null()
                } else {
                    Value::from(format!("order {id}"))
                })
                .build(),
        );
        per_shard[shard].push(format!(
            "INSERT INTO users VALUES ({id}, {}, {score:?})",
            sql_string(&name)
        ));
        let note = if id % 5 == 0 {
            "NULL".to_string()
        } else {
            sql_string(&format!("order {id}"))
        };
        per_shard[shard].push(format!(
            "INSERT INTO orders VALUES ({id}, {}, {amount}, {note})",
            id * 10
        ));
    }
    for id in 1..=3i64 {
        mutations.push(
            Mutation::new_insert_builder("Audit")
                .set("id")
                .to(id)
                .set("msg")
                .to(format!("audit {id}"))
                .build(),
        );
    }
    client
        .read_write_transaction()
        .build()
        .run(async |transaction| {
            transaction.buffer(mutations.clone())?;
            Ok(())
        })
        .await
        .expect("write to Spanner");
    for (server, statements) in shards.iter().zip(per_shard) {
        let mut conn = mysql(server).await;
        conn.query_drop(format!("USE {DATABASE}"))
            .await
            .expect("use");
        for statement in statements {
            conn.query_drop(statement).await.expect("insert");
        }
        let _ = conn.disconnect().await;
    }
}

fn sql_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Issue 12: `validate` compares by the writer's rules — a decimal rounded to its column's
/// scale and an array comma-joined into a text column match their Spanner values — and, on
/// the emulator (whose change records cut TIMESTAMP values to seconds), compares TIMESTAMP
/// columns to the second and says so. Anything else that differs is still reported.
#[tokio::test]
async fn validate_compares_by_the_writers_rules_and_knows_the_emulator() {
    let emulator = start_spanner(&[
        "CREATE TABLE prices (id INT64 NOT NULL, price NUMERIC, tags ARRAY<STRING(MAX)>, \
         updated TIMESTAMP) PRIMARY KEY (id)",
    ])
    .await;
    let shard = MariaDb::start().expect("start MariaDB");
    create_shard_database(
        &shard,
        &[
            "CREATE TABLE prices (id BIGINT NOT NULL PRIMARY KEY, price DECIMAL(10,2), \
           tags VARCHAR(100), updated DATETIME(6))",
        ],
    )
    .await;
    let client = spanner_client(&emulator).await;
    client
        .read_write_transaction()
        .build()
        .run(async |transaction| {
            transaction
                .execute_update(
                    "INSERT INTO prices (id, price, tags, updated) VALUES \
                     (1, NUMERIC '444.225', ['1', '2'], TIMESTAMP '2024-01-05T10:33:50.789Z'), \
                     (2, NUMERIC '7.5', ['x'], TIMESTAMP '2024-01-05T10:33:51Z')",
                )
                .await?;
            Ok(())
        })
        .await
        .expect("write to Spanner");
    // What the writer stores from the emulator's change records.
    let mut conn = mysql(&shard).await;
    conn.query_drop(format!(
        "INSERT INTO {DATABASE}.prices VALUES (1, 444.23, '1,2', '2024-01-05 10:33:50'), \
         (2, 7.50, 'x', '2024-01-05 10:33:51')"
    ))
    .await
    .expect("insert into MariaDB");

    let workspace = Workspace::new(&[("s1", shard.port())], Some(&emulator));
    write(
        &workspace.config,
        &std::fs::read_to_string(&workspace.config)
            .expect("config")
            .replace("session_file", "# session_file"),
    );
    let run = workspace.revrepl(&["validate"]).await;
    let text = run.all();
    run.expect_code(0);
    assert!(
        text.contains("shard s1: 2 row(s) in Spanner, 2 in MySQL: match"),
        "{text}"
    );
    assert!(text.contains("note: Spanner emulator detected"), "{text}");

    // A real difference is still one.
    conn.query_drop(format!(
        "UPDATE {DATABASE}.prices SET price = 444.22, tags = '2,1' WHERE id = 1"
    ))
    .await
    .expect("change by hand");
    let run = workspace.revrepl(&["validate"]).await;
    let text = run.all();
    run.expect_code(4);
    assert!(
        text.contains("1 different") && text.contains("(columns: price, tags)"),
        "{text}"
    );
    let _ = conn.disconnect().await;
}

#[tokio::test]
async fn validate_finds_rows_changed_by_hand() {
    let emulator = start_spanner(&TABLES_DDL).await;
    let shards = MariaDb::start_many(2).expect("start MariaDB shards");
    for server in &shards {
        create_shard_database(server, &MYSQL_DDL).await;
    }
    seed(&spanner_client(&emulator).await, &shards).await;
    let workspace = Workspace::new(
        &[("s1", shards[0].port()), ("s2", shards[1].port())],
        Some(&emulator),
    );

    let run = workspace.revrepl(&["validate"]).await;
    run.expect_code(0);
    for expected in [
        "table Users -> users",
        "shard s1: 20 row(s) in Spanner, 20 in MySQL: match",
        "shard s2: 20 row(s) in Spanner, 20 in MySQL: match",
        "table Orders -> orders",
        "every compared row matches",
    ] {
        assert!(
            run.stdout.contains(expected),
            "missing {expected:?} in\n{}",
            run.stdout
        );
    }
    assert!(!run.stdout.contains("Audit"), "{}", run.stdout);

    // By hand on shard s2 (odd ids): change a name, drop an order, add a stray user.
    let mut conn = mysql(&shards[1]).await;
    conn.query_drop(format!("USE {DATABASE}"))
        .await
        .expect("use");
    for statement in [
        "UPDATE users SET name = 'changed by hand' WHERE id = 7",
        "UPDATE users SET score = score + 1e-12 WHERE id = 9",
        "DELETE FROM orders WHERE user_id = 3",
        "INSERT INTO users VALUES (1001, 'stray', NULL)",
    ] {
        conn.query_drop(statement).await.expect("change by hand");
    }
    let _ = conn.disconnect().await;

    let run = workspace.revrepl(&["validate"]).await;
    eprintln!("{}", run.all());
    run.expect_code(4);
    let text = &run.stdout;
    for expected in [
        "shard s1: 20 row(s) in Spanner, 20 in MySQL: match",
        "shard s2: 20 row(s) in Spanner, 21 in MySQL: 1 extra in MySQL, 2 different",
        r#"different        {"id":"7"} (columns: name)"#,
        r#"different        {"id":"9"} (columns: score)"#,
        r#"extra in MySQL   {"id":"1001"}"#,
        "shard s2: 20 row(s) in Spanner, 19 in MySQL: 1 missing in MySQL",
        r#"missing in MySQL {"user_id":"3","id":"30"}"#,
        "validate: 4 difference(s)",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert!(
        !text.contains("changed by hand"),
        "values must not be printed:\n{text}"
    );

    let run = workspace
        .revrepl(&["validate", "--table", "Orders", "--shard", "s2", "--json"])
        .await;
    run.expect_code(4);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("validate JSON");
    let tables = json["tables"].as_array().expect("tables");
    assert_eq!(tables.len(), 1);
    assert_eq!(tables[0]["shards"][0]["missing_in_mysql"], 1);
    assert_eq!(
        tables[0]["shards"][0]["listed"][0]["kind"],
        "missing_in_mysql"
    );

    // Bounded detail: with room for no rows, differences are still counted, by bucket.
    let run = workspace
        .revrepl(&["validate", "--table", "Users", "--detail-rows", "0"])
        .await;
    run.expect_code(4);
    assert!(
        run.stdout
            .contains("hash bucket(s) differ beyond --detail-rows"),
        "{}",
        run.stdout
    );
}

/// `revrepl drain`: waits while a shard is behind the target and says which, exits 0 once every
/// shard applied past it, 1 when `--timeout` passes first, 3 when a shard is in ERROR; `now` is
/// Spanner's time.
#[tokio::test]
async fn drain_waits_until_every_shard_applied_the_target() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let emulator = start_spanner(&TABLES_DDL).await;
    let workspace = Workspace::new(&[("s1", 3306), ("s2", 3306)], Some(&emulator));
    let store = seeded_store(&workspace.path("metadata.db")).await;
    let run_id = RunId::new("cli").expect("run id");
    let window: WindowDuration = "10s".parse().expect("window");
    let start = ts(1_704_450_800);
    store
        .record_run(&RunRecord::new(run_id.clone(), start, window).expect("run"))
        .await
        .expect("record run");
    let shards: Vec<ShardId> = ["s1", "s2"]
        .iter()
        .map(|s| ShardId::new(*s).expect("shard"))
        .collect();
    store
        .register_shards(&run_id, &shards, start)
        .await
        .expect("register");
    let applied = |shard: &ShardId, status, window_start| ProcessProgress {
        shard: shard.clone(),
        status,
        file_start_interval: ts(window_start),
    };
    // s1 applied up to 10:34:20 (past the target 10:34:05); s2 up to 10:34:00.
    for (shard, at) in [(&shards[0], 1_704_450_850), (&shards[1], 1_704_450_830)] {
        store
            .set_process_progress(&run_id, &applied(shard, ProcessStatus::Success, at))
            .await
            .expect("progress");
    }
    let target = "2024-01-05T10:34:05Z";

    let run = workspace
        .revrepl(&[
            "drain",
            "--until",
            target,
            "--interval",
            "100ms",
            "--timeout",
            "1s",
        ])
        .await;
    run.expect_code(1);
    assert!(
        run.stdout.contains("waiting for s2 (5.0s behind)")
            && run.stdout.contains("still behind: s2"),
        "{}",
        run.stdout
    );

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_revrepl"))
        .args([
            "drain",
            "--until",
            target,
            "--interval",
            "100ms",
            "--timeout",
            "60s",
        ])
        .arg("--config")
        .arg(&workspace.config)
        .current_dir(workspace.dir.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn revrepl drain");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    while let Some(line) = lines.next_line().await.expect("read") {
        let behind = line.contains("waiting for s2");
        seen.push(line);
        if behind {
            break;
        }
    }
    assert!(
        seen.last()
            .is_some_and(|l| l.contains("1 of 2 shard(s) caught up")),
        "{seen:?}"
    );
    // The writer applies s2's window holding the target.
    store
        .set_process_progress(
            &run_id,
            &applied(&shards[1], ProcessStatus::Success, 1_704_450_840),
        )
        .await
        .expect("progress");
    while let Some(line) = lines.next_line().await.expect("read") {
        seen.push(line);
    }
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait())
        .await
        .expect("drain exits")
        .expect("wait");
    assert_eq!(status.code(), Some(0), "{seen:?}");
    assert!(
        seen.iter()
            .any(|l| l.starts_with("drained: every shard has applied everything up to")),
        "{seen:?}"
    );

    // A shard in ERROR ends the drain with 3.
    store
        .set_process_progress(
            &run_id,
            &applied(&shards[1], ProcessStatus::Error, 1_704_450_850),
        )
        .await
        .expect("progress");
    let run = workspace.revrepl(&["drain", "--until", target]).await;
    run.expect_code(3);
    assert!(run.stdout.contains("s2 in ERROR"), "{}", run.stdout);

    // `now` is Spanner's current time: both shards are far behind it.
    let run = workspace
        .revrepl(&["drain", "--until", "now", "--timeout", "1s"])
        .await;
    assert!(
        run.stdout.contains("drain to 20") || run.code == Some(3),
        "{}",
        run.all()
    );
    store
        .set_process_progress(
            &run_id,
            &applied(&shards[1], ProcessStatus::Success, 1_704_450_850),
        )
        .await
        .expect("progress");
    let before = chrono::Utc::now();
    let run = workspace
        .revrepl(&["drain", "--until", "now", "--timeout", "1s"])
        .await;
    run.expect_code(1);
    let line = run.stdout.lines().next().unwrap_or_default().to_string();
    let shown = line
        .strip_prefix("drain to ")
        .and_then(|rest| rest.split(": ").next())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .unwrap_or_else(|| panic!("no target time in {line:?}"));
    let skew = (shown.with_timezone(&chrono::Utc) - before)
        .num_seconds()
        .abs();
    assert!(skew < 60, "`now` is Spanner's current time: {line}");
}

/// Issue 11 finding 3(b): `reprocess --from T` with T past where a shard has applied to
/// would skip the windows between: refused, unless `--force`, which says what is skipped.
#[tokio::test]
async fn reprocess_from_past_a_shards_progress_is_refused_unless_forced() {
    let workspace = Workspace::new(&[("s1", 3306), ("s2", 3306)], None);
    let store = seeded_store(&workspace.path("metadata.db")).await;
    let run_id = RunId::new("cli").expect("run id");
    let window: WindowDuration = "10s".parse().expect("window");
    store
        .record_run(&RunRecord::new(run_id.clone(), ts(1_704_450_800), window).expect("run"))
        .await
        .expect("record run");
    let shards: Vec<ShardId> = ["s1", "s2"]
        .iter()
        .map(|s| ShardId::new(*s).expect("shard"))
        .collect();
    store
        .register_shards(&run_id, &shards, ts(1_704_450_800))
        .await
        .expect("register");
    // s1 applied up to 10:35:00 (its last window starts at 10:34:50); s2 failed at 10:34:10.
    for (shard, status, at) in [
        (&shards[0], ProcessStatus::Success, 1_704_450_890),
        (&shards[1], ProcessStatus::Error, 1_704_450_850),
    ] {
        store
            .set_process_progress(
                &run_id,
                &ProcessProgress {
                    shard: shard.clone(),
                    status,
                    file_start_interval: ts(at),
                },
            )
            .await
            .expect("progress");
    }
    let run = workspace
        .revrepl(&[
            "reprocess",
            "--shard",
            "s1,s2",
            "--from",
            "2024-01-05T10:34:40Z",
        ])
        .await;
    run.expect_code(2);
    assert!(
        run.stderr.contains("shard s2")
            && run.stderr.contains("2024-01-05T10:34:10.000Z")
            && run.stderr.contains("--force"),
        "{}",
        run.stderr
    );
    // Nothing was written, not even for s1 (whose --from was fine).
    for (shard, status) in [
        (&shards[0], ProcessStatus::Success),
        (&shards[1], ProcessStatus::Error),
    ] {
        let row = store
            .process_progress(&run_id, shard)
            .await
            .expect("read")
            .expect("row");
        assert_eq!(row.status, status, "{shard}");
    }
    // Right at the end of what s1 applied: nothing skipped.
    let run = workspace
        .revrepl(&[
            "reprocess",
            "--shard",
            "s1",
            "--from",
            "2024-01-05T10:35:00Z",
        ])
        .await;
    run.expect_code(0);
    let run = workspace
        .revrepl(&[
            "reprocess",
            "--shard",
            "s2",
            "--from",
            "2024-01-05T10:34:40Z",
            "--force",
        ])
        .await;
    run.expect_code(0);
    assert!(
        run.stdout.contains(
            "shard s2: REPROCESS from 2024-01-05T10:34:40.000Z (was ERROR at \
             2024-01-05T10:34:10.000Z); skips the windows from 2024-01-05T10:34:10.000Z to \
             2024-01-05T10:34:40.000Z"
        ),
        "{}",
        run.stdout
    );
}
