//! `make bench-lag`: end-to-end lag, from a Spanner commit to the same change in MySQL, measured
//! outside revrepl.
//!
//! The Spanner emulator and two MariaDB shards with durable settings
//! (`innodb_flush_log_at_trx_commit=1`, binary log with `sync_binlog=1`) on loopback. For each
//! window length (default 1 s, 2 s and 10 s) a fresh database and change stream, the release
//! `revrepl-reader` and `revrepl-writer` binaries as child processes, and a workload that
//! commits inserts at a steady rate per shard (default 1,000 mods/s per shard, in ten
//! transactions a second per shard) for a warm-up and a measured period.
//!
//! Every row's lag is its MySQL-side time of apply minus its Spanner commit timestamp:
//! - the commit timestamp is the one Spanner returned to the workload's commit;
//! - the apply time is a MySQL-only column `applied_at TIMESTAMP(6) DEFAULT
//!   CURRENT_TIMESTAMP(6)`, which revrepl does not write: MySQL sets it when the writer's
//!   statement inserts the row (the commit follows within the same batch).
//!
//! Neither side trusts revrepl's own metric. Both clocks are this machine's. Reported per window:
//! p50 / p99 / max over the rows committed after the warm-up, the drain time (from the last
//! commit to every row in MySQL), the reader's and the writer's CPU, and where the slowest 1 %
//! spent their time: waiting for their window to end, in the reader (watermark wait and file
//! write, up to the window's metadata record, read from the reader's debug log), and in the
//! writer (noticing the window, reading and applying it).
//!
//! Options (after `--`, or `BENCH_LAG_ARGS` with make): `--rate N` mods/s per shard,
//! `--seconds N` measured, `--warmup N`, `--windows 1,2,10`.

#[path = "../../../writer/tests/common/custom_mariadb.rs"]
mod custom_mariadb;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use custom_mariadb::CustomMariaDb;
use google_cloud_spanner::client::{DatabaseClient, Spanner};
use google_cloud_spanner::mutation::Mutation;
use mysql_async::prelude::Queryable;
use revrepl_record::{Timestamp, WindowDuration};
use revrepl_test_services::SpannerEmulator;

const PROJECT: &str = "bench-project";
const INSTANCE: &str = "bench-instance";
const SHARDS: [&str; 2] = ["s1", "s2"];
const STREAM: &str = "lag_stream";
const TRANSACTIONS_PER_SECOND: u32 = 10;

struct Options {
    rate: u32,
    seconds: u64,
    warmup: u64,
    windows: Vec<u64>,
}

impl Options {
    fn parse() -> Self {
        let mut options = Self {
            rate: 1_000,
            seconds: 60,
            warmup: 10,
            windows: vec![1, 2, 10],
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut i = 0;
        while i < args.len() {
            let value = args.get(i + 1).cloned().unwrap_or_default();
            match args[i].as_str() {
                "--rate" => options.rate = value.parse().expect("--rate N"),
                "--seconds" => options.seconds = value.parse().expect("--seconds N"),
                "--warmup" => options.warmup = value.parse().expect("--warmup N"),
                "--windows" => {
                    options.windows = value
                        .split(',')
                        .map(|w| w.trim().parse().expect("--windows 1,2,10"))
                        .collect();
                }
                // `cargo bench` passes --bench.
                _ => {
                    i += 1;
                    continue;
                }
            }
            i += 2;
        }
        options
    }
}

/// The release binaries next to this benchmark (`target/release/`).
fn binary(name: &str) -> PathBuf {
    revrepl_test_services::workspace_binary(
        name,
        "cargo build --release -p revrepl-reader -p revrepl-writer",
    )
}

const SESSION: &str = r#"{
  "SpSchema": {
    "t1": {"Name": "Events", "Id": "t1", "ColIds": ["c1", "c2", "c3"], "ShardIdColumn": "c2",
           "ColDefs": {"c1": {"Name": "id", "Id": "c1", "T": {"Name": "INT64"}},
                       "c2": {"Name": "shard", "Id": "c2", "T": {"Name": "STRING"}},
                       "c3": {"Name": "payload", "Id": "c3", "T": {"Name": "STRING"}}},
           "PrimaryKeys": [{"ColId": "c1", "Order": 1}]}
  },
  "SrcSchema": {
    "t1": {"Name": "events", "Id": "t1", "ColIds": ["c1", "c3"],
           "ColDefs": {"c1": {"Name": "id", "Id": "c1", "Type": {"Name": "bigint"}},
                       "c3": {"Name": "payload", "Id": "c3", "Type": {"Name": "varchar"}}},
           "PrimaryKeys": [{"ColId": "c1", "Order": 1}]}
  },
  "SyntheticPKeys": {}
}"#;

/// CPU seconds (user + system) of a live process, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(ticks / 100.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// `window end -> when the reader recorded it` from the reader's debug log.
fn recorded_windows(log: &Path) -> BTreeMap<i128, i128> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut recorded = BTreeMap::new();
    for line in text.lines().filter(|l| l.contains("windows recorded")) {
        let Some(at) = line
            .split_whitespace()
            .next()
            .and_then(|t| Timestamp::parse_rfc3339(t).ok())
        else {
            continue;
        };
        let Some(upto) = line
            .split("created_upto=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|t| Timestamp::parse_rfc3339(t).ok())
        else {
            continue;
        };
        recorded.entry(upto.as_nanos()).or_insert(at.as_nanos());
    }
    recorded
}

struct Outcome {
    window: u64,
    lags: Vec<f64>,
    drain: f64,
    reader_cpu: f64,
    writer_cpu: f64,
    /// Mean seconds of the slowest 1 %: (window end wait, reader, writer).
    breakdown: (f64, f64, f64),
    mods: usize,
}

async fn mysql(server: &CustomMariaDb, database: Option<&str>) -> mysql_async::Conn {
    let url = match database {
        Some(db) => format!("{}/{db}", server.url().trim_end_matches('/')),
        None => server.url(),
    };
    mysql_async::Conn::from_url(url).await.expect("mysql")
}

async fn measure(
    options: &Options,
    emulator: &SpannerEmulator,
    servers: &[CustomMariaDb],
    window_seconds: u64,
) -> Outcome {
    let database = format!("lag{window_seconds}");
    emulator
        .create_database(
            PROJECT,
            INSTANCE,
            &database,
            &[
                "CREATE TABLE Events (id INT64 NOT NULL, shard STRING(20) NOT NULL, \
                 payload STRING(255)) PRIMARY KEY (id)",
                &format!(
                    "CREATE CHANGE STREAM {STREAM} FOR ALL OPTIONS \
                     (value_capture_type = 'NEW_ROW_AND_OLD_VALUES')"
                ),
            ],
        )
        .await
        .expect("database");
    for server in servers {
        let mut conn = mysql(server, None).await;
        conn.query_drop(format!(
            "CREATE DATABASE {database}; USE {database}; CREATE TABLE events (id BIGINT NOT NULL \
             PRIMARY KEY, payload VARCHAR(255), applied_at TIMESTAMP(6) NOT NULL DEFAULT \
             CURRENT_TIMESTAMP(6))"
        ))
        .await
        .expect("mysql schema");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let shards: Vec<_> = SHARDS
        .iter()
        .zip(servers)
        .map(|(id, server)| {
            serde_json::json!({"logicalShardId": id, "host": "127.0.0.1",
                "port": server.port().to_string(), "user": "root", "password": "",
                "dbName": database})
        })
        .collect();
    std::fs::write(
        dir.path().join("shards.json"),
        serde_json::to_vec(&shards).expect("json"),
    )
    .expect("shards");
    std::fs::write(dir.path().join("session.json"), SESSION).expect("session");
    let window: WindowDuration = format!("{window_seconds}s").parse().expect("window");
    let now = Timestamp::from(chrono::Utc::now());
    let start = Timestamp::new(now.seconds() + 2, 0).expect("start");
    let stop_writing = Timestamp::new(
        start.seconds() + i64::try_from(options.warmup + options.seconds).expect("small"),
        0,
    )
    .expect("stop");
    let measure_from = Timestamp::new(
        start.seconds() + i64::try_from(options.warmup).expect("small"),
        0,
    )
    .expect("from");
    let until = window
        .window_of(Timestamp::new(stop_writing.seconds() + 2, 0).expect("until"))
        .expect("window")
        .end();
    let config = dir.path().join("revrepl.toml");
    std::fs::write(
        &config,
        format!(
            r#"run_id = "lag{window_seconds}"
shards_file = "{dir}/shards.json"
session_file = "{dir}/session.json"
[spanner]
database = "projects/{PROJECT}/instances/{INSTANCE}/databases/{database}"
change_stream = "{STREAM}"
endpoint = "{grpc}"
[buffer]
url = "{dir}/buffer"
[metadata]
path = "{dir}/metadata.db"
[reader]
window = "{window_seconds}s"
start_timestamp = "{start}"
"#,
            dir = dir.path().display(),
            grpc = emulator.grpc_endpoint(),
            start = start.to_rfc3339(),
        ),
    )
    .expect("config");
    let spawn = |name: &str, log: &str, filter: &str| -> Child {
        Command::new(binary(name))
            .arg("--config")
            .arg(&config)
            .args(["--mode", "regular", "--until", &until.to_rfc3339()])
            .env("RUST_LOG", filter)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join(log)).expect("log"))
            .spawn()
            .expect("spawn")
    };
    let mut reader = spawn(
        "revrepl-reader",
        "reader.log",
        "info,revrepl_reader::pipeline=debug",
    );
    let mut writer = spawn("revrepl-writer", "writer.log", "info");
    let (reader_pid, writer_pid) = (reader.id(), writer.id());

    // The workload: TRANSACTIONS_PER_SECOND inserts transactions a second per shard.
    let spanner = Spanner::builder()
        .with_endpoint(emulator.grpc_endpoint())
        .build()
        .await
        .expect("spanner");
    let client: DatabaseClient = spanner
        .database_client(format!(
            "projects/{PROJECT}/instances/{INSTANCE}/databases/{database}"
        ))
        .build()
        .await
        .expect("client");
    while Timestamp::from(chrono::Utc::now()) < start {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let per_transaction = (options.rate / TRANSACTIONS_PER_SECOND).max(1);
    let tick = Duration::from_secs(1) / TRANSACTIONS_PER_SECOND;
    let mut commits: BTreeMap<i64, (usize, i128)> = BTreeMap::new();
    let mut next_id: i64 = 1;
    let mut next_tick = Instant::now();
    let mut last_commit = 0i128;
    let (mut reader_cpu, mut writer_cpu) = (0.0, 0.0);
    while Timestamp::from(chrono::Utc::now()) < stop_writing {
        for (shard_index, shard) in SHARDS.iter().enumerate() {
            let mutations: Vec<Mutation> = (0..per_transaction)
                .map(|i| {
                    Mutation::new_insert_builder("Events")
                        .set("id")
                        .to(next_id + i64::from(i))
                        .set("shard")
                        .to(shard.to_string())
                        .set("payload")
                        .to(format!("event {} on {shard}", next_id + i64::from(i)))
                        .build()
                })
                .collect();
            let result = client
                .read_write_transaction()
                .build()
                .run(async |transaction| {
                    transaction.buffer(mutations.clone())?;
                    Ok(())
                })
                .await
                .expect("commit");
            let commit = result.commit_timestamp().expect("commit timestamp");
            let at = i128::from(commit.seconds()) * 1_000_000_000 + i128::from(commit.nanos());
            last_commit = last_commit.max(at);
            for i in 0..per_transaction {
                commits.insert(next_id + i64::from(i), (shard_index, at));
            }
            next_id += i64::from(per_transaction);
        }
        reader_cpu = cpu_seconds(reader_pid).unwrap_or(reader_cpu);
        writer_cpu = cpu_seconds(writer_pid).unwrap_or(writer_cpu);
        next_tick += tick;
        if let Some(wait) = next_tick.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }

    // Drain: from the last commit until every row is in its shard.
    let mut conns = Vec::new();
    for server in servers {
        conns.push(mysql(server, Some(&database)).await);
    }
    let expected: Vec<usize> = (0..SHARDS.len())
        .map(|s| commits.values().filter(|(shard, _)| *shard == s).count())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut done = true;
        for (conn, wanted) in conns.iter_mut().zip(&expected) {
            let count: Option<u64> = conn
                .query_first("SELECT COUNT(*) FROM events")
                .await
                .expect("count");
            done &= count.unwrap_or(0) as usize >= *wanted;
        }
        reader_cpu = cpu_seconds(reader_pid).unwrap_or(reader_cpu);
        writer_cpu = cpu_seconds(writer_pid).unwrap_or(writer_cpu);
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rows missing 120 s after the last commit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let now = Timestamp::from(chrono::Utc::now()).as_nanos();
    let drain = (now - last_commit) as f64 / 1e9;
    let _ = tokio::task::spawn_blocking(move || {
        let a = revrepl_test_services::wait_for_exit(&mut reader, Duration::from_secs(120));
        let b = revrepl_test_services::wait_for_exit(&mut writer, Duration::from_secs(120));
        (a, b)
    })
    .await;

    // Lags of the rows committed after the warm-up, and where the slowest spent their time.
    let recorded = recorded_windows(&dir.path().join("reader.log"));
    let mut rows: Vec<(f64, (f64, f64, f64))> = Vec::new();
    for conn in &mut conns {
        let applied: Vec<(i64, i64)> = conn
            .query("SELECT id, CAST(UNIX_TIMESTAMP(applied_at) * 1000000 AS SIGNED) FROM events")
            .await
            .expect("rows");
        for (id, applied_micros) in applied {
            let Some((_, commit)) = commits.get(&id) else {
                continue;
            };
            if *commit < measure_from.as_nanos() {
                continue;
            }
            let applied = i128::from(applied_micros) * 1_000;
            let commit_ts = Timestamp::from_nanos(*commit).expect("ts");
            let window_end = window
                .window_of(commit_ts)
                .expect("window")
                .end()
                .as_nanos();
            let reader_done = recorded
                .range(window_end..)
                .next()
                .map_or(window_end, |(_, at)| *at);
            let seconds = |from: i128, to: i128| (to - from) as f64 / 1e9;
            rows.push((
                seconds(*commit, applied),
                (
                    seconds(*commit, window_end),
                    seconds(window_end, reader_done),
                    seconds(reader_done, applied),
                ),
            ));
        }
    }
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let lags: Vec<f64> = rows.iter().map(|r| r.0).collect();
    let slowest = &rows[rows.len() - (rows.len() / 100).max(1)..];
    let n = slowest.len() as f64;
    let breakdown = slowest.iter().fold((0.0, 0.0, 0.0), |acc, (_, (a, b, c))| {
        (acc.0 + a / n, acc.1 + b / n, acc.2 + c / n)
    });
    Outcome {
        window: window_seconds,
        mods: lags.len(),
        lags,
        drain,
        reader_cpu,
        writer_cpu,
        breakdown,
    }
}

fn main() {
    let options = Options::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let emulator = SpannerEmulator::start().expect("emulator");
        emulator
            .create_instance(PROJECT, INSTANCE)
            .await
            .expect("instance");
        let servers: Vec<CustomMariaDb> = SHARDS
            .iter()
            .map(|_| CustomMariaDb::start(&custom_mariadb::durable_options()).expect("mariadb"))
            .collect();
        println!(
            "bench-lag: {} mods/s per shard, {} shards, {} s measured after {} s warm-up, \
             windows {:?} s; durable MariaDB; Spanner emulator",
            options.rate,
            SHARDS.len(),
            options.seconds,
            options.warmup,
            options.windows
        );
        let mut outcomes = Vec::new();
        for window in &options.windows {
            let outcome = measure(&options, &emulator, &servers, *window).await;
            println!(
                "  window {window} s measured: {} rows, drain {:.2} s, reader CPU {:.1} s, \
                 writer CPU {:.1} s; slowest 1 %: {:.2} s until their window ended, {:.2} s in \
                 the reader (watermark wait, file write, record), {:.2} s in the writer \
                 (notice, read, apply)",
                outcome.mods,
                outcome.drain,
                outcome.reader_cpu,
                outcome.writer_cpu,
                outcome.breakdown.0,
                outcome.breakdown.1,
                outcome.breakdown.2
            );
            outcomes.push(outcome);
        }
        println!();
        for o in &outcomes {
            println!(
                "window {} s: p50 {:.2} s, p99 {:.2} s, max {:.2} s",
                o.window,
                percentile(&o.lags, 50.0),
                percentile(&o.lags, 99.0),
                o.lags.last().copied().unwrap_or(f64::NAN)
            );
        }
    });
}
