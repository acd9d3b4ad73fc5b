//! The whole pipeline on real parts: the Spanner emulator with partition churn and a mixed
//! workload → `revrepl-reader` → a local buffer → `revrepl-writer` → two MariaDB shards, with the
//! SQLite metadata store. At the end every shard holds exactly the Spanner rows routed to it.
//! While it runs, both binaries' Prometheus endpoints (`--metrics-addr`) are scraped over HTTP
//! and their counters must move.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use google_cloud_spanner::client::Spanner;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use revrepl_record::{Timestamp, WindowDuration};
use revrepl_test_services::workload::{WORKLOAD_DDL, WORKLOAD_SESSION, WORKLOAD_STREAM, Workload};
use revrepl_test_services::{EmulatorOptions, MariaDb, SpannerEmulator};

const DATABASE: &str = "projects/e2e/instances/e2e/databases/app";
const SHARDS: [&str; 2] = ["s1", "s2"];
const MYSQL_SCHEMA: [&str; 2] = [
    "CREATE TABLE users (id BIGINT PRIMARY KEY, name VARCHAR(255), score DOUBLE)",
    "CREATE TABLE orders (user_id BIGINT NOT NULL, id BIGINT NOT NULL, amount DECIMAL(20,2), \
     note TEXT, PRIMARY KEY (user_id, id))",
];

/// The binaries built next to this test (`target/<profile>/`).
fn binary(name: &str) -> PathBuf {
    revrepl_test_services::workspace_binary(name, "cargo build --workspace --bins")
}

fn spawn(
    binary_name: &str,
    config: &std::path::Path,
    mode: &str,
    until: Timestamp,
    log: &std::path::Path,
    metrics_port: u16,
) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    Command::new(binary(binary_name))
        .arg("--config")
        .arg(config)
        .args(["--mode", mode, "--until", &until.to_rfc3339()])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn")
}

fn wait_exit(child: &mut Child, deadline: Duration) -> std::process::ExitStatus {
    revrepl_test_services::wait_for_exit(child, deadline)
        .unwrap_or_else(|| panic!("process did not finish within {deadline:?}"))
}

type Rows = BTreeMap<String, BTreeMap<String, String>>;

/// The sum over every label set of the samples of `metric` scraped from
/// `http://127.0.0.1:<port>/metrics`; `None` while the endpoint is not up (or the metric not
/// yet recorded).
async fn scrape_sum(client: &reqwest::Client, port: u16, metric: &str) -> Option<f64> {
    let response = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .ok()?;
    assert!(
        response.status().is_success(),
        "GET /metrics on port {port}: {}",
        response.status()
    );
    let body = response.text().await.ok()?;
    let samples: Vec<f64> = body
        .lines()
        .filter(|line| {
            line.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum())
}

/// The whole `/metrics` text of `http://127.0.0.1:<port>/metrics`, if it answers.
async fn scrape_body(client: &reqwest::Client, port: u16) -> Option<String> {
    let response = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .ok()?;
    response.text().await.ok()
}

/// Values of one counter seen during the run, in scrape order.
#[derive(Debug, Default)]
struct Scraped {
    values: Vec<f64>,
}

impl Scraped {
    /// Whether the counter was seen above zero and then higher again: it moved during the run.
    fn moved(&self) -> bool {
        let first_positive = self.values.iter().position(|&v| v > 0.0);
        first_positive.is_some_and(|i| self.values[i + 1..].iter().any(|&v| v > self.values[i]))
    }
}

/// Spanner's rows per shard: `table -> key -> canonical values`.
async fn spanner_rows(emulator: &SpannerEmulator) -> BTreeMap<String, Rows> {
    let spanner = Spanner::builder()
        .with_endpoint(emulator.grpc_endpoint())
        .build()
        .await
        .expect("client");
    let client = spanner
        .database_client(DATABASE)
        .build()
        .await
        .expect("database client");
    let mut by_shard: BTreeMap<String, Rows> = BTreeMap::new();
    let tx = client.single_use().build();
    let mut users = tx
        .execute_query("SELECT id, shard, name, score FROM Users")
        .await
        .expect("users");
    while let Some(row) = users.next().await {
        let row = row.expect("row");
        let id: i64 = row.get(0).expect("id");
        let shard: String = row.get(1).expect("shard");
        let name: Option<String> = row.get(2).expect("name");
        let score: Option<f64> = row.get(3).expect("score");
        by_shard
            .entry(shard)
            .or_default()
            .entry("users".into())
            .or_default()
            .insert(id.to_string(), format!("{name:?}|{score:?}"));
    }
    let tx = client.single_use().build();
    let mut orders = tx
        .execute_query("SELECT user_id, id, shard, CAST(amount AS STRING), note FROM Orders")
        .await
        .expect("orders");
    while let Some(row) = orders.next().await {
        let row = row.expect("row");
        let user: i64 = row.get(0).expect("user_id");
        let id: i64 = row.get(1).expect("id");
        let shard: String = row.get(2).expect("shard");
        let amount: Option<String> = row.get(3).expect("amount");
        let note: Option<String> = row.get(4).expect("note");
        let amount = amount.map(|a| format!("{:.2}", a.parse::<f64>().expect("numeric")));
        by_shard
            .entry(shard)
            .or_default()
            .entry("orders".into())
            .or_default()
            .insert(format!("{user}/{id}"), format!("{amount:?}|{note:?}"));
    }
    by_shard
}

async fn mysql_rows(server: &MariaDb) -> Rows {
    let mut conn = Conn::new(Opts::from_url(&format!("{}/app", server.url())).expect("url"))
        .await
        .expect("connect");
    let mut rows: Rows = BTreeMap::new();
    let users: Vec<(i64, Option<String>, Option<f64>)> = conn
        .query("SELECT id, name, score FROM users")
        .await
        .expect("users");
    for (id, name, score) in users {
        rows.entry("users".into())
            .or_default()
            .insert(id.to_string(), format!("{name:?}|{score:?}"));
    }
    let orders: Vec<(i64, i64, Option<String>, Option<String>)> = conn
        .query("SELECT user_id, id, CAST(amount AS CHAR), note FROM orders")
        .await
        .expect("orders");
    for (user, id, amount, note) in orders {
        rows.entry("orders".into())
            .or_default()
            .insert(format!("{user}/{id}"), format!("{amount:?}|{note:?}"));
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spanner_changes_reach_the_right_mysql_shards_exactly() {
    let emulator = SpannerEmulator::start_with(EmulatorOptions {
        partition_token_alive_seconds: Some(3),
        fault_injection: false,
    })
    .expect("emulator");
    emulator
        .create_instance("e2e", "e2e")
        .await
        .expect("instance");
    emulator
        .create_database("e2e", "e2e", "app", &WORKLOAD_DDL)
        .await
        .expect("database");
    let servers = MariaDb::start_many(2).expect("mariadb");
    let dir = tempfile::tempdir().expect("temp dir");
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
        shards.push(
            serde_json::json!({"logicalShardId": shard, "host": "127.0.0.1",
            "port": server.port(), "user": "root", "password": "", "dbName": "app"}),
        );
    }
    std::fs::write(
        dir.path().join("shards.json"),
        serde_json::json!(shards).to_string(),
    )
    .expect("shards file");
    std::fs::write(dir.path().join("session.json"), WORKLOAD_SESSION).expect("session file");
    let window: WindowDuration = "2s".parse().expect("window");
    let now = Timestamp::from(chrono::Utc::now());
    let start = window
        .align_down(Timestamp::new(now.seconds() + 3, 0).expect("ts"))
        .expect("start");
    let until = Timestamp::new(start.seconds() + 30, 0).expect("until");
    let config = dir.path().join("revrepl.toml");
    std::fs::write(
        &config,
        format!(
            r#"run_id = "e2e"
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
start_timestamp = "{start}"
heartbeat = "1s"
[writer]
poll_interval = "200ms"
"#,
            dir = dir.path().display(),
            grpc = emulator.grpc_endpoint(),
            rest = emulator.rest_endpoint(),
            start = start.to_rfc3339(),
        ),
    )
    .expect("config");

    let reader_metrics = revrepl_test_services::free_port().expect("a port for the reader");
    let writer_metrics = revrepl_test_services::free_port().expect("a port for the writer");
    let mut reader = spawn(
        "revrepl-reader",
        &config,
        "regular",
        until,
        &dir.path().join("reader.log"),
        reader_metrics,
    );
    let mut writer = spawn(
        "revrepl-writer",
        &config,
        "regular",
        until,
        &dir.path().join("writer.log"),
        writer_metrics,
    );
    // Write only inside [start, until - 4 s), so every committed change belongs to the run.
    while Timestamp::from(chrono::Utc::now()) <= start {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stop = Timestamp::new(until.seconds() - 4, 0).expect("stop");
    let mut workload = Workload::connect(&emulator.grpc_endpoint(), DATABASE, &SHARDS, 5)
        .await
        .expect("workload");
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("HTTP client");
    let (mut written, mut applied) = (Scraped::default(), Scraped::default());
    let mut exported = std::collections::BTreeSet::new();
    let mut next_scrape = std::time::Instant::now();
    while Timestamp::from(chrono::Utc::now()) < stop {
        workload.step().await.expect("workload step");
        if std::time::Instant::now() >= next_scrape {
            let (w, a) = tokio::join!(
                scrape_sum(&http, reader_metrics, "revrepl_reader_mods_written_total"),
                scrape_sum(
                    &http,
                    writer_metrics,
                    "revrepl_writer_records_applied_total"
                ),
            );
            written.values.extend(w);
            applied.values.extend(a);
            let (r, w) = tokio::join!(
                scrape_body(&http, reader_metrics),
                scrape_body(&http, writer_metrics)
            );
            exported.extend(r.into_iter().chain(w).flat_map(|body| {
                body.lines()
                    .filter(|l| !l.starts_with('#'))
                    .filter_map(|l| l.split(['{', ' ']).next().map(str::to_string))
                    .collect::<Vec<_>>()
            }));
            next_scrape = std::time::Instant::now() + Duration::from_secs(2);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let committed = workload.committed().len();
    let statuses = tokio::task::spawn_blocking(move || {
        (
            wait_exit(&mut reader, Duration::from_secs(180)),
            wait_exit(&mut writer, Duration::from_secs(180)),
        )
    })
    .await
    .expect("join");
    let log = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    assert!(
        statuses.0.success(),
        "reader failed:\n{}",
        log("reader.log")
    );
    assert!(
        statuses.1.success(),
        "writer failed:\n{}",
        log("writer.log")
    );

    assert!(
        written.moved(),
        "the reader's mods_written counter moved during the run: {written:?}"
    );
    assert!(
        applied.moved(),
        "the writer's records_applied counter moved during the run: {applied:?}"
    );

    // Every metric the Grafana dashboard queries is exported by a real reader or writer.
    let dashboard = revrepl_test_services::dashboard::dashboard_path();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dashboard).expect("read the dashboard"))
            .expect("dashboard JSON");
    for metric in revrepl_test_services::dashboard::dashboard_metrics(&dashboard) {
        let family = |name: &String| {
            name == &metric
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(metric.as_str()))
        };
        assert!(
            exported.iter().any(family),
            "{metric}, queried by deploy/grafana/revrepl-dashboard.json, was never exported; \
             exported: {exported:?}"
        );
    }

    let expected = spanner_rows(&emulator).await;
    assert!(committed > 100, "the workload committed {committed} mods");
    for (server, shard) in servers.iter().zip(SHARDS) {
        let actual = mysql_rows(server).await;
        let wanted = expected.get(shard).cloned().unwrap_or_default();
        assert!(!wanted.is_empty(), "shard {shard} got some rows in Spanner");
        assert_eq!(actual, wanted, "shard {shard} differs from Spanner");
    }
}
