//! Transformation plugins through the `revrepl-writer` binary against a real MariaDB shard,
//! real window files and a real SQLite metadata store (issue 14, docs/transformations.md):
//!
//! - the example plugin (`examples/transformation-plugin`): two columns combined into one, a
//!   source-only `NOT NULL` column given a value, a string shortened, INT64 cents into
//!   `DECIMAL`, a filter, one row into two tables; then random transactions applied across
//!   SIGKILLs (exactly once, checked against a model and by triggers counting row changes),
//!   and `reprocess` with changed parameters;
//! - plugins that panic, answer malformed JSON, name an unknown table or column, or were built
//!   for another ABI version: a clear definite error naming the plugin, the table and the key,
//!   and nothing of the failing transaction applied.
//!
//! The plugins are built from source with cargo (a no-op after `make plugin`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

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
use serde_json::{Value, json};
use tokio::sync::OnceCell;

const RUN: &str = "trun";
const START: i64 = 1_700_000_000;
const SHARD: &str = "s0";

const EXAMPLE: &str = "revrepl-example-transformation-plugin";
const FAULTY: &str = "revrepl-test-faulty-transformer";
const GARBLED: &str = "revrepl-test-garbled-transformer";
const WRONG_ABI: &str = "revrepl-test-wrong-abi-router";

/// Longest a cold build of the plugins may take on a small CI machine.
const BUILD_DEADLINE: Duration = Duration::from_secs(600);

/// The example plugin's source schema, a table kept as it is, and triggers counting every
/// change MySQL applies to `customer` (so a transaction applied twice shows).
const CUSTOMER_SCHEMA: &[&str] = &[
    "CREATE TABLE customer (id BIGINT PRIMARY KEY, full_name VARCHAR(100), \
     bio VARCHAR(20), region VARCHAR(8) NOT NULL)",
    "CREATE TABLE customer_balance (customer_id BIGINT PRIMARY KEY, \
     balance DECIMAL(14,2) NOT NULL, \
     FOREIGN KEY (customer_id) REFERENCES customer (id))",
    "CREATE TABLE notes (id BIGINT PRIMARY KEY, body VARCHAR(64))",
    "CREATE TABLE applied (id BIGINT PRIMARY KEY, changes INT NOT NULL)",
    "CREATE TRIGGER customer_ai AFTER INSERT ON customer FOR EACH ROW \
     INSERT INTO applied VALUES (NEW.id, 1) ON DUPLICATE KEY UPDATE changes = changes + 1",
    "CREATE TRIGGER customer_au AFTER UPDATE ON customer FOR EACH ROW \
     INSERT INTO applied VALUES (NEW.id, 1) ON DUPLICATE KEY UPDATE changes = changes + 1",
    "CREATE TRIGGER customer_ad AFTER DELETE ON customer FOR EACH ROW \
     INSERT INTO applied VALUES (OLD.id, 1) ON DUPLICATE KEY UPDATE changes = changes + 1",
];

/// The example plugin's parameters in these tests.
const EXAMPLE_PARAMS: &str = r#"{"region": "eu", "bioLength": 20, "dropStatuses": ["test"]}"#;

/// The libraries of the plugin packages, by package name, built once per test process.
async fn plugin(package: &str) -> PathBuf {
    static BUILT: OnceCell<BTreeMap<String, PathBuf>> = OnceCell::const_new();
    let libraries = BUILT.get_or_init(build_plugins).await;
    libraries
        .get(package)
        .unwrap_or_else(|| panic!("cargo reported no cdylib for {package}: {libraries:?}"))
        .clone()
}

/// Runs `cargo build` for the plugin packages in this workspace and target directory, and
/// reads the library paths from cargo's JSON messages.
async fn build_plugins() -> BTreeMap<String, PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = tokio::process::Command::new(cargo);
    command
        .args(["build", "--message-format=json-render-diagnostics"])
        .args(["-p", EXAMPLE, "-p", FAULTY, "-p", GARBLED, "-p", WRONG_ABI])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(BUILD_DEADLINE, command.output())
        .await
        .expect("cargo builds the test plugins within the deadline")
        .expect("cargo can be started");
    assert!(
        output.status.success(),
        "cargo build of the test plugins failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut libraries = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let is_cdylib = message["reason"] == "compiler-artifact"
            && message["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|kind| kind == "cdylib"));
        if !is_cdylib {
            continue;
        }
        let package = message["target"]["name"].as_str().unwrap_or_default();
        let library = message["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find(|file| file.ends_with(std::env::consts::DLL_SUFFIX));
        if let Some(library) = library {
            libraries.insert(package.replace('_', "-"), PathBuf::from(library));
        }
    }
    libraries
}

fn window_duration() -> WindowDuration {
    "1s".parse().expect("duration")
}

fn window(index: i64) -> Window {
    window_duration()
        .window_of(Timestamp::new(START + index, 0).expect("ts"))
        .expect("window")
}

/// One change record of transaction `txn` (committed in window `w`, `t`-th of it).
fn record(
    table: &str,
    mod_type: ModType,
    (w, t, txn): (i64, u32, u64),
    seq: u32,
    keys: Value,
    new_values: Value,
    old_values: Value,
) -> ChangeRecord {
    ChangeRecord {
        commit_timestamp: Timestamp::new(START + w, t * 1_000_000 + 7).expect("ts"),
        server_transaction_id: format!("txn-{txn:06}"),
        record_sequence: format!("{seq:08}"),
        table_name: table.into(),
        mods: [Mod {
            keys_json: keys.to_string(),
            old_values_json: old_values.to_string(),
            new_values_json: new_values.to_string(),
        }],
        mod_type,
        number_of_records_in_transaction: 1,
        transaction_tag: String::new(),
        shard: SHARD.into(),
    }
}

/// Window files of `records` (each transaction's records in one window), with
/// `number_of_records_in_transaction` set.
fn files(records: Vec<ChangeRecord>) -> Vec<(Window, Bytes)> {
    let mut per_txn: BTreeMap<String, u64> = BTreeMap::new();
    for r in &records {
        *per_txn.entry(r.server_transaction_id.clone()).or_default() += 1;
    }
    let mut by_window: BTreeMap<i64, Vec<ChangeRecord>> = BTreeMap::new();
    for mut r in records {
        r.number_of_records_in_transaction = per_txn[&r.server_transaction_id];
        let index = r.commit_timestamp.as_nanos() / 1_000_000_000 - i128::from(START);
        by_window
            .entry(i64::try_from(index).expect("small"))
            .or_default()
            .push(r);
    }
    by_window
        .into_iter()
        .map(|(w, records)| {
            let mut encoder = WindowFileEncoder::new();
            for r in &records {
                encoder.push(r, 0).expect("encode");
            }
            (window(w), encoder.finish())
        })
        .collect()
}

/// A shard database with `schema`, window files in a local buffer, the run recorded in SQLite,
/// and a configuration loading a transformation plugin.
struct Setup {
    dir: tempfile::TempDir,
    url: String,
    metadata: Arc<SqliteMetadataStore>,
    config: PathBuf,
    last_window: i64,
}

impl Setup {
    async fn new(
        server: &MariaDb,
        database: &str,
        schema: &[&str],
        files: Vec<(Window, Bytes)>,
        plugin: &Path,
        params: &str,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = connect(&server.url()).await;
        conn.query_drop(format!("CREATE DATABASE {database}"))
            .await
            .expect("create database");
        conn.query_drop(format!("USE {database}"))
            .await
            .expect("use");
        for statement in schema {
            conn.query_drop(*statement).await.expect("schema");
        }
        let shards = json!([{"logicalShardId": SHARD, "host": "127.0.0.1",
            "port": server.port(), "user": "root", "password": "", "dbName": database}]);
        std::fs::write(dir.path().join("shards.json"), shards.to_string()).expect("shards");
        let run_id = RunId::new(RUN).expect("run id");
        let start = Timestamp::new(START, 0).expect("ts");
        let shard = ShardId::new(SHARD).expect("id");
        let metadata = recorded_run(
            &dir.path().join("meta.db"),
            &run_id,
            start,
            window_duration(),
            std::slice::from_ref(&shard),
        )
        .await;
        let buffer = LocalDirectory::new(dir.path().join("buffer"));
        let mut seen = Vec::new();
        let mut last_window = 0;
        for (window, bytes) in files {
            let path = WindowFileName::new(Destination::Shard(shard.clone()), window).path();
            buffer.put_if_absent(&path, bytes).await.expect("put");
            seen.push((shard.clone(), window.end()));
            last_window = last_window.max(window_index(window));
        }
        let created =
            CreatedWindows::new(window(last_window).end(), vec![shard], seen).expect("windows");
        metadata
            .record_windows(&run_id, &created)
            .await
            .expect("record windows");
        let setup = Self {
            dir,
            url: format!("{}/{database}", server.url()),
            metadata: Arc::new(metadata),
            config: PathBuf::new(),
            last_window,
        };
        setup.configure(plugin, params)
    }

    /// Writes the configuration with the plugin at `plugin` and its parameters.
    fn configure(self, plugin: &Path, params: &str) -> Self {
        self.configure_with(plugin, params, "")
    }

    /// [`Setup::configure`] with `extra` lines in the `[writer]` section.
    fn configure_with(mut self, plugin: &Path, params: &str, extra: &str) -> Self {
        let config = self.dir.path().join("revrepl.toml");
        let text = format!(
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
{extra}
[writer.transformation]
library = {library}
parameters = {params}
"#,
            dir = self.dir.path().display(),
            library = toml_string(&plugin.display().to_string()),
            params = toml_string(params),
        );
        std::fs::write(&config, text).expect("config");
        self.config = config;
        self
    }

    fn spawn(&self, mode: &str) -> Child {
        self.spawn_with_env(mode, &[])
    }

    /// [`Setup::spawn`] with extra environment variables.
    fn spawn_with_env(&self, mode: &str, env: &[(&str, String)]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("writer.log"))
            .expect("log");
        Command::new(env!("CARGO_BIN_EXE_revrepl-writer"))
            .arg("--config")
            .arg(&self.config)
            .args(["--mode", mode, "--until"])
            .arg(window(self.last_window).end().to_rfc3339())
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn revrepl-writer")
    }

    async fn finish(&self, mode: &str) -> std::process::ExitStatus {
        self.finish_with_env(mode, &[]).await
    }

    async fn finish_with_env(
        &self,
        mode: &str,
        env: &[(&str, String)],
    ) -> std::process::ExitStatus {
        let mut child = self.spawn_with_env(mode, env);
        tokio::task::spawn_blocking(move || {
            revrepl_test_services::wait_for_exit(&mut child, Duration::from_secs(180))
                .expect("revrepl-writer finishes within 3 minutes")
        })
        .await
        .expect("join")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("writer.log")).unwrap_or_default()
    }

    async fn status(&self) -> Option<ProcessProgress> {
        self.metadata
            .process_progress(
                &RunId::new(RUN).expect("run"),
                &ShardId::new(SHARD).expect("id"),
            )
            .await
            .expect("progress")
    }

    async fn conn(&self) -> Conn {
        connect(&self.url).await
    }

    /// `customer`, `customer_balance` and the change counts.
    async fn customers(&self) -> Customers {
        let mut conn = self.conn().await;
        let rows: Vec<(i64, Option<String>, Option<String>, String)> = conn
            .query("SELECT id, full_name, bio, region FROM customer ORDER BY id")
            .await
            .expect("customers");
        let balances: Vec<(i64, String)> = conn
            .query("SELECT customer_id, CAST(balance AS CHAR) FROM customer_balance ORDER BY 1")
            .await
            .expect("balances");
        let changes: Vec<(i64, i64)> = conn
            .query("SELECT id, changes FROM applied ORDER BY id")
            .await
            .expect("changes");
        Customers {
            rows: rows
                .into_iter()
                .map(|(id, name, bio, region)| (id, (name, bio, region)))
                .collect(),
            balances: balances.into_iter().collect(),
            changes: changes.into_iter().collect(),
        }
    }
}

fn window_index(window: Window) -> i64 {
    i64::try_from(window.start().as_nanos() / 1_000_000_000 - i128::from(START)).expect("small")
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

async fn connect(url: &str) -> Conn {
    Conn::new(Opts::from_url(url).expect("url"))
        .await
        .expect("connect")
}

/// The source state of the example's tables.
#[derive(Debug, Default, Clone, PartialEq)]
struct Customers {
    /// id → (full_name, bio, region).
    rows: BTreeMap<i64, (Option<String>, Option<String>, String)>,
    /// customer_id → balance as MySQL prints it.
    balances: BTreeMap<i64, String>,
    /// id → changes MySQL applied to `customer`.
    changes: BTreeMap<i64, i64>,
}

fn customer_keys(id: i64) -> Value {
    json!({"CustomerId": id.to_string()})
}

#[tokio::test]
async fn the_example_plugin_reshapes_filters_and_splits_rows_and_reprocess_reapplies_it() {
    let example = plugin(EXAMPLE).await;
    let server = MariaDb::start().expect("mariadb");
    let long_bio = "Née à Paris 🦀, pionnière de l'informatique";
    let records = vec![
        // Window 0, one transaction: customer 1 with every column; customer 2 is a test
        // account, filtered out; a note kept as it is (the table exists as it is in MySQL).
        record(
            "Customers",
            ModType::Insert,
            (0, 1, 1),
            0,
            customer_keys(1),
            json!({"FirstName": "Ada", "LastName": "Lovelace", "Bio": long_bio,
                   "BalanceCents": "-1205", "Status": "active"}),
            json!({}),
        ),
        record(
            "Customers",
            ModType::Insert,
            (0, 1, 1),
            1,
            customer_keys(2),
            json!({"FirstName": "Test", "LastName": "Account", "Bio": null,
                   "BalanceCents": "100", "Status": "test"}),
            json!({}),
        ),
        record(
            "notes",
            ModType::Insert,
            (0, 1, 1),
            2,
            json!({"id": "1"}),
            json!({"body": "kept as it is"}),
            json!({}),
        ),
        // Window 1: customer 3, then an update of customer 1's first name only, with old
        // values (the last name comes from them) and a new balance.
        record(
            "Customers",
            ModType::Insert,
            (1, 1, 2),
            0,
            customer_keys(3),
            json!({"FirstName": "Grace", "LastName": null, "Bio": "short",
                   "BalanceCents": "99999999999", "Status": "active"}),
            json!({}),
        ),
        record(
            "Customers",
            ModType::Update,
            (1, 2, 3),
            0,
            customer_keys(1),
            json!({"FirstName": "Augusta Ada", "BalanceCents": "5"}),
            json!({"FirstName": "Ada", "LastName": "Lovelace", "BalanceCents": "-1205"}),
        ),
        // Window 2: customer 3 deleted (both rows); customer 1's balance-only update.
        record(
            "Customers",
            ModType::Delete,
            (2, 1, 4),
            0,
            customer_keys(3),
            json!({}),
            json!({}),
        ),
        record(
            "Customers",
            ModType::Update,
            (2, 2, 5),
            0,
            customer_keys(1),
            json!({"BalanceCents": "7"}),
            json!({}),
        ),
    ];
    let setup = Setup::new(
        &server,
        "example",
        CUSTOMER_SCHEMA,
        files(records),
        &example,
        EXAMPLE_PARAMS,
    )
    .await;
    let (port, mut calls) = otlp_collector().await;
    let status = setup.finish_with_env("regular", &otlp_env(port)).await;
    assert!(status.success(), "writer failed: {status}\n{}", setup.log());
    let exports = received(&mut calls);
    for metric in [
        "revrepl.writer.records_transformed",
        "revrepl.writer.records_dropped_by_plugin",
        "revrepl.writer.records_kept_by_plugin",
    ] {
        assert!(
            exported(&exports, metric),
            "{metric} is exported (counted only when non-zero)"
        );
    }
    assert!(
        !exported(&exports, "revrepl.writer.plugin_errors"),
        "no plugin errors"
    );
    let state = setup.customers().await;
    let shortened: String = long_bio.chars().take(20).collect();
    assert_eq!(
        state.rows,
        BTreeMap::from([(
            1,
            (
                // Two Spanner columns combined into one, the last name from the old values.
                Some("Augusta Ada Lovelace".to_string()),
                // Shortened by the plugin to the column's 20 characters.
                Some(shortened.clone()),
                // The source-only NOT NULL column, from the parameters.
                "eu".to_string()
            )
        )]),
        "customer 2 filtered out, customer 3 deleted\n{}",
        setup.log()
    );
    // INT64 cents into DECIMAL(14,2); the second table of the same Spanner row.
    assert_eq!(state.balances, BTreeMap::from([(1, "0.07".to_string())]));
    assert_eq!(
        state.changes,
        BTreeMap::from([(1, 3), (3, 2)]),
        "each transaction changed each customer row once"
    );
    let mut conn = setup.conn().await;
    let notes: Vec<(i64, String)> = conn
        .query("SELECT id, body FROM notes")
        .await
        .expect("notes");
    assert_eq!(notes, vec![(1, "kept as it is".to_string())]);
    let log = setup.log();
    assert!(
        log.contains("transformation plugin loaded"),
        "the plugin load is logged\n{log}"
    );

    // Window files stay raw: reprocessing with changed parameters applies the new shape.
    let setup = setup.configure(
        &example,
        r#"{"region": "us", "bioLength": 5, "dropStatuses": []}"#,
    );
    let progress = ProcessProgress {
        shard: ShardId::new(SHARD).expect("id"),
        status: ProcessStatus::Reprocess,
        file_start_interval: window(0).start(),
    };
    setup
        .metadata
        .set_process_progress(&RunId::new(RUN).expect("run"), &progress)
        .await
        .expect("mark for reprocessing");
    let status = setup.finish("reprocess").await;
    assert!(
        status.success(),
        "reprocess failed: {status}\n{}",
        setup.log()
    );
    let state = setup.customers().await;
    assert_eq!(
        state.rows,
        BTreeMap::from([
            (
                1,
                (
                    Some("Augusta Ada Lovelace".to_string()),
                    Some(long_bio.chars().take(5).collect()),
                    "us".to_string()
                )
            ),
            (
                2,
                (Some("Test Account".to_string()), None, "us".to_string())
            ),
        ]),
        "{}",
        setup.log()
    );
    assert_eq!(
        state.balances,
        BTreeMap::from([(1, "0.07".to_string()), (2, "1.00".to_string())])
    );
}

/// The MySQL state the example plugin must produce, and the change counts, for random
/// `Customers` transactions.
#[derive(Debug, Default)]
struct Model {
    /// Spanner: the rows that exist.
    spanner: BTreeSet<i64>,
    expected: Customers,
}

fn decimal_of_cents(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let magnitude = cents.unsigned_abs();
    format!("{sign}{}.{:02}", magnitude / 100, magnitude % 100)
}

/// `windows` windows of random `Customers` transactions (full rows in new values, about one
/// record in six a test account the plugin drops), and the state they must produce.
fn random_customers(windows: i64, seed: u64) -> (Vec<ChangeRecord>, Customers) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Model::default();
    let mut records = Vec::new();
    let mut txn = 0u64;
    let alphabet: Vec<char> = "abcé🦀 xyz".chars().collect();
    for w in 0..windows {
        for t in 0..rng.random_range(1..6u32) {
            txn += 1;
            let mut touched: BTreeMap<i64, bool> = BTreeMap::new();
            for seq in 0..rng.random_range(1..4u32) {
                let id: i64 = rng.random_range(1..25);
                let exists = model.spanner.contains(&id);
                let mod_type = match rng.random_range(0..10) {
                    0..=2 if exists => ModType::Delete,
                    _ if exists => ModType::Update,
                    _ => ModType::Insert,
                };
                let at = (w, t, txn);
                if mod_type == ModType::Delete {
                    model.spanner.remove(&id);
                    records.push(record(
                        "Customers",
                        mod_type,
                        at,
                        seq,
                        customer_keys(id),
                        json!({}),
                        json!({}),
                    ));
                    let existed = model.expected.rows.contains_key(&id);
                    touched.entry(id).or_insert(existed);
                    model.expected.rows.remove(&id);
                    model.expected.balances.remove(&id);
                    continue;
                }
                let first = format!("F{id}.{txn}.{seq}");
                let last = rng
                    .random_bool(0.8)
                    .then(|| format!("L{}", rng.random_range(0..99)));
                let bio = rng.random_bool(0.9).then(|| {
                    (0..rng.random_range(0..30))
                        .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                        .collect::<String>()
                });
                let cents: i64 = rng.random_range(-1_000_000..1_000_000);
                let status = if rng.random_range(0..6) == 0 {
                    "test"
                } else {
                    "active"
                };
                model.spanner.insert(id);
                records.push(record(
                    "Customers",
                    mod_type,
                    at,
                    seq,
                    customer_keys(id),
                    json!({"FirstName": first, "LastName": last, "Bio": bio,
                           "BalanceCents": cents.to_string(), "Status": status}),
                    json!({}),
                ));
                if status == "test" {
                    continue;
                }
                let existed = model.expected.rows.contains_key(&id);
                touched.entry(id).or_insert(existed);
                let name = match &last {
                    Some(last) => format!("{first} {last}"),
                    None => first.clone(),
                };
                let bio = bio.map(|bio| bio.chars().take(20).collect());
                model
                    .expected
                    .rows
                    .insert(id, (Some(name), bio, "eu".to_string()));
                model.expected.balances.insert(id, decimal_of_cents(cents));
            }
            for (id, existed) in touched {
                if existed || model.expected.rows.contains_key(&id) {
                    *model.expected.changes.entry(id).or_default() += 1;
                }
            }
        }
    }
    (records, model.expected)
}

#[tokio::test]
async fn killed_writers_with_the_example_plugin_resume_to_the_exact_state_applying_nothing_twice() {
    let example = plugin(EXAMPLE).await;
    let server = MariaDb::start().expect("mariadb");
    let (records, expected) = random_customers(300, 14);
    let setup = Setup::new(
        &server,
        "resumed",
        CUSTOMER_SCHEMA,
        files(records),
        &example,
        EXAMPLE_PARAMS,
    )
    .await;
    let mut rng = StdRng::seed_from_u64(1414);
    let mut mode = "regular";
    let mut interrupted = 0;
    for _ in 0..5 {
        let mut child = setup.spawn(mode);
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1_500))).await;
        let _ = child.kill();
        let _ = child.wait();
        mode = "resume";
        let done = setup
            .status()
            .await
            .is_some_and(|p| p.file_start_interval == window(setup.last_window).start());
        interrupted += usize::from(!done);
    }
    assert!(interrupted > 0, "no kill landed before the writer finished");
    let status = setup.finish("resume").await;
    assert!(status.success(), "writer failed: {status}\n{}", setup.log());
    let state = setup.customers().await;
    assert_eq!(state.rows, expected.rows);
    assert_eq!(state.balances, expected.balances);
    assert_eq!(
        state.changes, expected.changes,
        "every transaction applied exactly once"
    );
    let progress = setup.status().await.expect("progress row");
    assert_eq!(
        (progress.status, progress.file_start_interval),
        (ProcessStatus::Success, window(setup.last_window).start())
    );
}

const USERS_SCHEMA: &[&str] = &["CREATE TABLE users (id BIGINT PRIMARY KEY, name VARCHAR(64))"];

/// `users` rows: 1 and 2 in window 0; 12 and 13 in one transaction of window 1; 20 in window 2.
fn users_files() -> Vec<(Window, Bytes)> {
    let user = |at: (i64, u32, u64), seq: u32, id: i64| {
        record(
            "users",
            ModType::Insert,
            at,
            seq,
            json!({"id": id.to_string()}),
            json!({"name": format!("user {id}")}),
            json!({}),
        )
    };
    files(vec![
        user((0, 1, 1), 0, 1),
        user((0, 1, 1), 1, 2),
        user((1, 1, 2), 0, 12),
        user((1, 1, 2), 1, 13),
        user((2, 1, 3), 0, 20),
    ])
}

#[tokio::test]
async fn a_failing_plugin_stops_the_shard_with_a_clear_error_and_applies_nothing_of_the_transaction()
 {
    let server = MariaDb::start().expect("mariadb");
    let faulty = plugin(FAULTY).await;
    let garbled = plugin(GARBLED).await;
    let cases = [
        (
            &faulty,
            "panic:13",
            "panicked: the faulty transformer panics on id 13",
        ),
        (
            &faulty,
            "unknown-table:13",
            "wrote to table \"no_such_table\", which does not exist in database",
        ),
        (
            &faulty,
            "unknown-column:13",
            "wrote column \"no_such_column\", which table \"users\" does not have",
        ),
        (
            &faulty,
            "refuse:13",
            "refused the record: refused on purpose",
        ),
        (
            &garbled,
            "",
            "broke the plugin ABI: its response is not a transformation",
        ),
    ];
    for (n, (library, params, problem)) in cases.into_iter().enumerate() {
        let setup = Setup::new(
            &server,
            &format!("fault{n}"),
            USERS_SCHEMA,
            users_files(),
            library,
            params,
        )
        .await;
        let status = setup.finish("regular").await;
        assert_eq!(
            status.code(),
            Some(3),
            "{params}: the shard fails\n{}",
            setup.log()
        );
        let progress = setup.status().await.expect("progress row");
        assert_eq!(
            (progress.status, progress.file_start_interval),
            (ProcessStatus::Error, window(1).start()),
            "{params}: ERROR at the failing window"
        );
        let mut conn = setup.conn().await;
        let ids: Vec<i64> = conn
            .query("SELECT id FROM users ORDER BY id")
            .await
            .expect("users");
        assert_eq!(
            ids,
            vec![1, 2],
            "{params}: the window before applied, nothing of the failing transaction (12 and 13)"
        );
        let errors = setup
            .metadata
            .shard_errors(&RunId::new(RUN).expect("run"))
            .await
            .expect("shard errors");
        let recorded = &errors.first().expect("an error recorded").error;
        for part in [
            format!("transformation plugin {:?}", library.display().to_string()),
            problem.to_string(),
            "Spanner table \"users\"".to_string(),
            r#"key {"id":"13"}"#.to_string(),
            "shard s0".to_string(),
        ] {
            assert!(
                recorded.contains(&part),
                "{params}: the error names {part:?}: {recorded}"
            );
        }
        assert!(
            setup.log().contains(recorded.as_str()),
            "{params}: the log has the error"
        );
    }
}

#[tokio::test]
async fn a_plugin_built_for_another_abi_version_is_refused_at_start() {
    let server = MariaDb::start().expect("mariadb");
    let wrong = plugin(WRONG_ABI).await;
    let setup = Setup::new(&server, "abi", USERS_SCHEMA, users_files(), &wrong, "").await;
    let status = setup.finish("regular").await;
    assert_eq!(
        status.code(),
        Some(2),
        "a configuration error\n{}",
        setup.log()
    );
    let expected = format!(
        "transformation plugin {:?} was built for plugin ABI version 2, but this revrepl loads \
         version 1",
        wrong.display().to_string()
    );
    assert!(setup.log().contains(&expected), "{}", setup.log());
    let mut conn = setup.conn().await;
    let count: Option<i64> = conn
        .query_first("SELECT COUNT(*) FROM users")
        .await
        .expect("count");
    assert_eq!(count, Some(0), "nothing applied");
    assert!(setup.status().await.is_none(), "no progress recorded");
}

#[tokio::test]
async fn with_the_dead_letter_policy_a_refused_record_sets_its_transaction_aside_a_broken_plugin_still_stops()
 {
    let server = MariaDb::start().expect("mariadb");
    let faulty = plugin(FAULTY).await;
    let setup = Setup::new(
        &server,
        "dlq_refused",
        USERS_SCHEMA,
        users_files(),
        &faulty,
        "refuse:13",
    )
    .await
    .configure_with(&faulty, "refuse:13", "dead_letter = true");
    let (port, mut calls) = otlp_collector().await;
    let status = setup.finish_with_env("regular", &otlp_env(port)).await;
    assert!(status.success(), "writer failed: {status}\n{}", setup.log());
    assert!(
        exported(&received(&mut calls), "revrepl.writer.plugin_errors"),
        "the refusal is counted"
    );
    let mut conn = setup.conn().await;
    let ids: Vec<i64> = conn
        .query("SELECT id FROM users ORDER BY id")
        .await
        .expect("users");
    assert_eq!(
        ids,
        vec![1, 2, 20],
        "the refused transaction (12, 13) set aside"
    );
    let dlq = setup.dir.path().join("buffer/dlq/s0");
    let letters: Vec<String> = walk(&dlq)
        .into_iter()
        .map(|file| std::fs::read_to_string(file).expect("dead letter"))
        .collect();
    assert_eq!(letters.len(), 1, "one transaction set aside: {letters:?}");
    assert!(
        letters[0].contains("refused on purpose") && letters[0].contains("txn-000002"),
        "{}",
        letters[0]
    );

    // A plugin that names an unknown column is broken, not the record: the shard stops.
    let setup = Setup::new(
        &server,
        "dlq_broken",
        USERS_SCHEMA,
        users_files(),
        &faulty,
        "unknown-column:13",
    )
    .await
    .configure_with(&faulty, "unknown-column:13", "dead_letter = true");
    let status = setup.finish("regular").await;
    assert_eq!(status.code(), Some(3), "{}", setup.log());
    assert!(
        !setup.dir.path().join("buffer/dlq").exists(),
        "nothing set aside"
    );
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// A stand-in OTLP gRPC collector on a free port: every request's path and body.
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

fn otlp_env(port: u16) -> Vec<(&'static str, String)> {
    vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        ),
        ("OTEL_METRIC_EXPORT_INTERVAL", "500".into()),
    ]
}

/// The bodies received so far (the writer pushes its last export on exit).
fn received(calls: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Bytes)>) -> Vec<Bytes> {
    let mut bodies = Vec::new();
    while let Ok((_, body)) = calls.try_recv() {
        bodies.push(body);
    }
    bodies
}

/// Whether a metric named `name` is in the exports (protobuf keeps strings as they are).
fn exported(exports: &[Bytes], name: &str) -> bool {
    let needle = name.as_bytes();
    exports
        .iter()
        .any(|body| body.windows(needle.len()).any(|w| w == needle))
}
