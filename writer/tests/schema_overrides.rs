//! Schema overrides without a session file (issue 12, point 8) with the real `revrepl-writer`
//! binary against a real MariaDB shard: Spanner tables and columns renamed from the MySQL ones,
//! given inline (the reference's text and TOML tables) or as the reference's overrides file,
//! apply to the MySQL names; a session file beside them is a configuration error (exit 2).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
#[path = "common/recorded_run.rs"]
mod recorded_run;
use recorded_run::recorded_run;
use revrepl_metadata::{CreatedWindows, MetadataStore, RunId};
use revrepl_record::buffer::LocalDirectory;
use revrepl_record::{
    BufferStore, ChangeRecord, Destination, Mod, ModType, ShardId, Timestamp, Window,
    WindowDuration, WindowFileEncoder, WindowFileName,
};
use revrepl_test_services::MariaDb;
use serde_json::json;

const RUN: &str = "ovrun";
const SHARD: &str = "s0";
const START: i64 = 1_700_000_000;

fn window_duration() -> WindowDuration {
    "1s".parse().expect("duration")
}

fn window() -> Window {
    window_duration()
        .window_of(Timestamp::new(START, 0).expect("ts"))
        .expect("window")
}

/// One window: Spanner's `Person` rows 1..=3 (`PersonId`, `FirstName`, `Age`) and an `Orders`
/// row (`OrderId`, `Amount`).
fn window_file() -> Bytes {
    let mut encoder = WindowFileEncoder::new();
    let record =
        |n: u32, table: &str, keys: serde_json::Value, values: serde_json::Value| ChangeRecord {
            commit_timestamp: Timestamp::new(START, n * 1_000).expect("ts"),
            server_transaction_id: format!("txn-{n}"),
            record_sequence: "00000000".into(),
            table_name: table.into(),
            mods: [Mod {
                keys_json: keys.to_string(),
                old_values_json: "{}".into(),
                new_values_json: values.to_string(),
            }],
            mod_type: ModType::Insert,
            number_of_records_in_transaction: 1,
            transaction_tag: String::new(),
            shard: SHARD.into(),
        };
    for id in 1..=3u32 {
        let r = record(
            id,
            "Person",
            json!({"PersonId": id.to_string()}),
            json!({"FirstName": format!("name {id}"), "Age": id.to_string()}),
        );
        encoder.push(&r, 0).expect("encode");
    }
    let r = record(
        9,
        "Orders",
        json!({"OrderId": "7"}),
        json!({"Amount": "12.50"}),
    );
    encoder.push(&r, 0).expect("encode");
    encoder.finish()
}

async fn prepare(dir: &Path, server: &MariaDb) -> Conn {
    let mut conn = Conn::new(Opts::from_url(&server.url()).expect("url"))
        .await
        .expect("connect");
    for statement in [
        "CREATE DATABASE app",
        "CREATE TABLE app.person (person_id BIGINT PRIMARY KEY, first_name VARCHAR(64), Age INT)",
        "CREATE TABLE app.Orders (OrderId BIGINT PRIMARY KEY, total DECIMAL(10,2))",
    ] {
        conn.query_drop(statement).await.expect(statement);
    }
    std::fs::write(
        dir.join("shards.json"),
        json!([{"logicalShardId": SHARD, "host": "127.0.0.1", "port": server.port(),
                "user": "root", "password": "", "dbName": "app"}])
        .to_string(),
    )
    .expect("shards file");
    let run_id = RunId::new(RUN).expect("run id");
    let start = Timestamp::new(START, 0).expect("ts");
    let shard = ShardId::new(SHARD).expect("shard");
    let metadata = recorded_run(
        &dir.join("meta.db"),
        &run_id,
        start,
        window_duration(),
        std::slice::from_ref(&shard),
    )
    .await;
    let buffer = LocalDirectory::new(dir.join("buffer"));
    let path = WindowFileName::new(Destination::Shard(shard.clone()), window()).path();
    buffer
        .put_if_absent(&path, window_file())
        .await
        .expect("put");
    let created = CreatedWindows::new(
        window().end(),
        vec![shard.clone()],
        vec![(shard, window().end())],
    )
    .expect("windows");
    metadata
        .record_windows(&run_id, &created)
        .await
        .expect("record windows");
    conn
}

/// Runs the writer with `top` (top-level keys) in its configuration; exit code and log.
async fn run_writer(dir: &Path, name: &str, top: &str) -> (Option<i32>, String) {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"run_id = "{RUN}"
shards_file = "{dir}/shards.json"
{top}
[spanner]
database = "projects/p/instances/i/databases/unused"
change_stream = "unused"
[buffer]
url = "{dir}/buffer"
[metadata]
path = "{dir}/meta.db"
[writer]
poll_interval = "200ms"
"#,
            dir = dir.display()
        ),
    )
    .expect("config");
    let log_path = dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).expect("log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_revrepl-writer"))
        .arg("--config")
        .arg(&config)
        .args(["--mode", "regular", "--until", &window().end().to_rfc3339()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn revrepl-writer");
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the writer finishes within 60 s")
        .expect("wait");
    (
        status.code(),
        std::fs::read_to_string(&log_path).unwrap_or_default(),
    )
}

async fn people(conn: &mut Conn) -> Vec<(i64, String, i64)> {
    conn.query("SELECT person_id, first_name, Age FROM app.person ORDER BY person_id")
        .await
        .expect("rows")
}

#[tokio::test]
async fn inline_overrides_apply_renamed_tables_and_columns() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = MariaDb::start().expect("mariadb");
    let mut conn = prepare(dir.path(), &server).await;

    // A session file beside the overrides: refused before anything is applied.
    std::fs::write(dir.path().join("session.json"), "{}").expect("session");
    let (code, log) = run_writer(
        dir.path(),
        "conflict",
        &format!(
            "session_file = \"{}/session.json\"\ntable_overrides = \"[{{person, Person}}]\"",
            dir.path().display()
        ),
    )
    .await;
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("session_file and table_overrides/column_overrides are both set"),
        "{log}"
    );
    assert!(people(&mut conn).await.is_empty());

    // The reference's text for tables, a TOML table for columns.
    let (code, log) = run_writer(
        dir.path(),
        "inline",
        "table_overrides = \"[{person, Person}]\"\n\
         column_overrides = { person = { person_id = \"PersonId\", first_name = \"FirstName\" }, Orders = { total = \"Amount\" } }",
    )
    .await;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        people(&mut conn).await,
        [
            (1, "name 1".to_string(), 1),
            (2, "name 2".to_string(), 2),
            (3, "name 3".to_string(), 3)
        ]
    );
    let total: Option<String> = conn
        .query_first("SELECT CAST(total AS CHAR) FROM app.Orders WHERE OrderId = 7")
        .await
        .expect("order");
    assert_eq!(total.as_deref(), Some("12.50"));
}

#[tokio::test]
async fn the_reference_overrides_file_applies_and_a_bad_one_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = MariaDb::start().expect("mariadb");
    let mut conn = prepare(dir.path(), &server).await;
    let file = dir.path().join("overrides.json");

    std::fs::write(
        &file,
        r#"{"renamedTables": {"person": "Person", "other": "Person"}}"#,
    )
    .expect("file");
    let top = format!("schema_overrides_file = \"{}\"", file.display());
    let (code, log) = run_writer(dir.path(), "ambiguous", &top).await;
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains(&file.display().to_string())
            && log.contains("both renamed to Spanner table \"Person\""),
        "{log}"
    );

    std::fs::write(
        &file,
        r#"{"renamedTables": {"person": "Person"},
            "renamedColumns": {"person": {"person_id": "PersonId", "first_name": "FirstName"},
                               "Orders": {"total": "Amount"}}}"#,
    )
    .expect("file");
    let (code, log) = run_writer(dir.path(), "file", &top).await;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(people(&mut conn).await.len(), 3);
}
