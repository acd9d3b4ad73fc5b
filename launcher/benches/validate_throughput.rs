//! `make bench-validate`: how fast `revrepl validate` compares one shard at its checkpoint, and
//! the load `revrepl validate --continuous` puts on MySQL at its default rate.
//!
//! The Spanner emulator and one MariaDB shard on loopback. A table of `--rows` rows (six
//! columns: INT64 key, STRING, NUMERIC, FLOAT64, BOOL, STRING(MAX); about 120 bytes a row) is
//! written to Spanner and the same rows to MySQL, with a checkpoint row at the last Spanner
//! commit, as the writer would have left it.
//!
//! 1. **Baseline**, in the same run: one plain streaming read of each side (Spanner
//!    `SELECT *` at the checkpoint, MySQL `SELECT *`), rows counted, nothing compared — the
//!    least any comparison that reads both sides once must take.
//! 2. **validate**: the library's `validate` at the checkpoint (consistent snapshot, Spanner
//!    read at exactly T, canonical form and bucket hashes of every row; equal sides, so one
//!    pass). Rows per second = rows / wall time, and the ratio to the baseline.
//! 3. **continuous load** at the default rate (100 rows/s per shard, every 10 s), for
//!    `--continuous-seconds` (default 30): MariaDB's CPU time (from `/proc`), rows read
//!    (`Handler_read_%`) and statements, minus the same measured over an idle period of equal length.
//!
//! Options (after `--`, or `BENCH_VALIDATE_ARGS` with make): `--rows N` (default 2,000),
//! `--continuous-seconds N` (0 skips step 3).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use google_cloud_spanner::client::{DatabaseClient, Spanner};
use google_cloud_spanner::mutation::Mutation;
use google_cloud_spanner::statement::Statement;
use google_cloud_spanner::transaction::TimestampBound;
use google_cloud_spanner::value::Value;
use mysql_async::prelude::Queryable;
use revrepl_launcher::validate::continuous::{ContinuousOptions, ValidateMetrics, run};
use revrepl_launcher::validate::{ValidateOptions, canonical::WriterChoices, validate};
use revrepl_test_services::{MariaDb, SpannerEmulator};

const DATABASE: &str = "projects/bench/instances/bench/databases/app";
const SPANNER_DDL: &str = "CREATE TABLE Items (Id INT64 NOT NULL, Name STRING(100), \
     Amount NUMERIC, Score FLOAT64, Active BOOL, Note STRING(MAX)) PRIMARY KEY (Id)";
const MYSQL_DDL: &str = "CREATE TABLE Items (Id BIGINT NOT NULL PRIMARY KEY, \
     Name VARCHAR(100), Amount DECIMAL(20,2), Score DOUBLE, Active TINYINT(1), Note TEXT)";
/// Rows per Spanner commit and per MySQL insert.
const CHUNK: usize = 2_000;

struct Args {
    rows: usize,
    continuous_seconds: u64,
}

fn args() -> Args {
    let mut parsed = Args {
        rows: 2_000,
        continuous_seconds: 30,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut number = || -> u64 {
            words
                .next()
                .and_then(|n| n.replace('_', "").parse().ok())
                .unwrap_or_else(|| panic!("{word} needs a number"))
        };
        match word.as_str() {
            "--rows" => parsed.rows = number() as usize,
            "--continuous-seconds" => parsed.continuous_seconds = number(),
            "--bench" => {}
            other => panic!("unknown option {other}; use --rows N, --continuous-seconds N"),
        }
    }
    parsed
}

fn name(id: usize) -> String {
    format!("item {id} ünï")
}
fn amount(id: usize) -> String {
    format!("{}.{:02}", id * 7, id % 100)
}
fn score(id: usize) -> f64 {
    id as f64 / 3.0
}
fn note(id: usize) -> String {
    format!("note for item {id}: {}", "x".repeat(40 + id % 40))
}

/// Writes the rows to Spanner; returns the last commit's timestamp (seconds, nanos).
async fn fill_spanner(client: &DatabaseClient, rows: usize) -> (i64, i32) {
    let mut last = (0, 0);
    for start in (0..rows).step_by(CHUNK) {
        let mutations: Vec<Mutation> = (start..(start + CHUNK).min(rows))
            .map(|id| {
                Mutation::new_insert_builder("Items")
                    .set("Id")
                    .to(id as i64)
                    .set("Name")
                    .to(name(id))
                    .set("Amount")
                    .to(Value::from(amount(id)))
                    .set("Score")
                    .to(score(id))
                    .set("Active")
                    .to(id % 2 == 0)
                    .set("Note")
                    .to(note(id))
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
            .expect("commit to Spanner");
        let commit = result.commit_timestamp().expect("a commit timestamp");
        last = (commit.seconds(), commit.nanos());
    }
    last
}

async fn fill_mysql(conn: &mut mysql_async::Conn, rows: usize, last: (i64, i32)) {
    conn.query_drop(MYSQL_DDL).await.expect("create table");
    for start in (0..rows).step_by(CHUNK) {
        let ids: Vec<usize> = (start..(start + CHUNK).min(rows)).collect();
        let values = vec!["(?,?,?,?,?,?)"; ids.len()].join(",");
        let mut params: Vec<mysql_async::Value> = Vec::new();
        for id in ids {
            params.push((id as i64).into());
            params.push(name(id).into());
            params.push(amount(id).into());
            params.push(score(id).into());
            params.push(i64::from(id % 2 == 0).into());
            params.push(note(id).into());
        }
        conn.exec_drop(format!("INSERT INTO Items VALUES {values}"), params)
            .await
            .expect("insert");
    }
    conn.query_drop(revrepl_writer::checkpoint::CREATE_CHECKPOINT_TABLE)
        .await
        .expect("checkpoint table");
    conn.exec_drop(
        "INSERT INTO revrepl_checkpoint (run_id, shard, window_start, window_end, \
         commit_timestamp, commit_nanos, server_transaction_id, record_sequence) \
         VALUES ('bench', 'bench', FROM_UNIXTIME(?), FROM_UNIXTIME(?), FROM_UNIXTIME(?), ?, \
         'bench', '00000000')",
        (last.0, last.0 + 1, last.0, last.1),
    )
    .await
    .expect("checkpoint row");
}

fn write_config(dir: &Path, emulator: &SpannerEmulator, server: &MariaDb) -> PathBuf {
    let shards = serde_json::json!([{"logicalShardId": "bench", "host": "127.0.0.1",
        "port": server.port(), "user": "root", "password": "", "dbName": "app"}]);
    std::fs::write(dir.join("shards.json"), shards.to_string()).expect("shards file");
    let config = dir.join("revrepl.toml");
    std::fs::write(
        &config,
        format!(
            r#"run_id = "bench"
shards_file = "{dir}/shards.json"
[spanner]
database = "{DATABASE}"
change_stream = "unused"
endpoint = "{grpc}"
[buffer]
url = "{dir}/buffer"
[metadata]
path = "{dir}/metadata.db"
"#,
            dir = dir.display(),
            grpc = emulator.grpc_endpoint(),
        ),
    )
    .expect("config");
    config
}

/// MariaDB's user + system CPU time.
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15; after ") " the first field is 3 (state).
    let total = ticks(11) + ticks(12);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(total * 1000 / hz)
}

/// (rows read through the storage engine — the sum of `Handler_read_%` —, statements).
async fn status(conn: &mut mysql_async::Conn) -> (u64, u64) {
    let rows: Vec<(String, String)> = conn
        .query("SHOW GLOBAL STATUS WHERE Variable_name LIKE 'Handler_read%' OR Variable_name = 'Questions'")
        .await
        .expect("status");
    let mut read = 0;
    let mut questions = 0;
    for (name, value) in rows {
        let value: u64 = value.parse().unwrap_or(0);
        if name.eq_ignore_ascii_case("Questions") {
            questions = value;
        } else {
            read += value;
        }
    }
    (read, questions)
}

/// (CPU, rows read, statements) of MariaDB over `seconds` while `work` runs.
async fn mysql_load(
    pid: u32,
    probe: &mut mysql_async::Conn,
    seconds: u64,
    work: impl std::future::Future<Output = ()>,
) -> (Duration, u64, u64) {
    let cpu = cpu_of(pid);
    let (rows, statements) = status(probe).await;
    let deadline = tokio::time::sleep(Duration::from_secs(seconds));
    tokio::select! {
        () = deadline => {}
        () = work => {}
    }
    let (rows_after, statements_after) = status(probe).await;
    (
        cpu_of(pid).saturating_sub(cpu),
        rows_after - rows,
        // The probe's own two statements.
        (statements_after - statements).saturating_sub(2),
    )
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench(args));
}

async fn bench(args: Args) {
    let emulator = SpannerEmulator::start().expect("emulator");
    emulator
        .create_instance("bench", "bench")
        .await
        .expect("instance");
    emulator
        .create_database("bench", "bench", "app", &[SPANNER_DDL])
        .await
        .expect("database");
    let server = MariaDb::start().expect("mariadb");
    let pid = server.pid().expect("mariadb pid");
    let mut conn = mysql_async::Conn::from_url(server.url())
        .await
        .expect("connect");
    conn.query_drop("CREATE DATABASE app").await.expect("db");
    conn.query_drop("USE app").await.expect("use");
    conn.query_drop("SET time_zone = '+00:00'")
        .await
        .expect("zone");
    let client = Spanner::builder()
        .with_endpoint(emulator.grpc_endpoint())
        .build()
        .await
        .expect("spanner")
        .database_client(DATABASE.to_string())
        .build()
        .await
        .expect("database client");
    let filling = Instant::now();
    let last = fill_spanner(&client, args.rows).await;
    fill_mysql(&mut conn, args.rows, last).await;
    println!(
        "filled {} rows on both sides in {:.1}s; checkpoint at {}.{:09}",
        args.rows,
        filling.elapsed().as_secs_f64(),
        last.0,
        last.1
    );

    // 1. Baseline: each side read once, nothing compared.
    let started = Instant::now();
    let at = google_cloud_wkt::Timestamp::new(last.0, last.1).expect("timestamp");
    let mut result = client
        .single_use()
        .set_timestamp_bound(TimestampBound::read_timestamp(at))
        .build()
        .execute_query(
            Statement::builder("SELECT Id, Name, Amount, Score, Active, Note FROM Items").build(),
        )
        .await
        .expect("read Spanner");
    let mut spanner_rows = 0usize;
    while let Some(row) = result.next().await {
        row.expect("row");
        spanner_rows += 1;
    }
    let spanner_time = started.elapsed();
    let started = Instant::now();
    let mut mysql_rows = 0usize;
    {
        let mut rows = conn
            .exec_iter(
                "SELECT Id, Name, Amount, Score, Active, Note FROM Items",
                (),
            )
            .await
            .expect("read MySQL");
        while rows.next().await.expect("row").is_some() {
            mysql_rows += 1;
        }
    }
    let mysql_time = started.elapsed();
    assert_eq!((spanner_rows, mysql_rows), (args.rows, args.rows));
    let baseline = spanner_time + mysql_time;

    // 2. validate at the checkpoint.
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = write_config(dir.path(), &emulator, &server);
    let (config, _) =
        revrepl_config::Config::locate_and_load(Some(&config_path), &[]).expect("config");
    let options = ValidateOptions {
        tables: Vec::new(),
        shards: Vec::new(),
        zone: "UTC".parse().expect("zone"),
        max_listed: 10,
        detail_rows: 200_000,
        connect_timeout: Duration::from_secs(30),
        ignore_columns: Vec::new(),
        writer_choices: WriterChoices {
            emulator_timestamps: true,
            ..WriterChoices::from(&config.writer)
        },
        run_id: "bench".into(),
        at_checkpoint: true,
    };
    let started = Instant::now();
    let report = validate(&config, &options).await.expect("validate");
    let validate_time = started.elapsed();
    assert_eq!(report.differences(), 0, "{report:?}");
    assert!(
        report.shards[0].compared_at.is_some(),
        "not compared at the checkpoint: {report:?}"
    );
    let per_second = |d: Duration| args.rows as f64 / d.as_secs_f64();
    println!();
    println!("| step | wall | rows/s per shard |");
    println!("|---|---|---|");
    println!(
        "| baseline: Spanner read at T | {:.2}s | {:.0} |",
        spanner_time.as_secs_f64(),
        per_second(spanner_time)
    );
    println!(
        "| baseline: MySQL read | {:.2}s | {:.0} |",
        mysql_time.as_secs_f64(),
        per_second(mysql_time)
    );
    println!(
        "| baseline: both, one after the other | {:.2}s | {:.0} |",
        baseline.as_secs_f64(),
        per_second(baseline)
    );
    println!(
        "| validate at the checkpoint ({} rows) | {:.2}s | {:.0} ({:.2}× the baseline's time) |",
        args.rows,
        validate_time.as_secs_f64(),
        per_second(validate_time),
        validate_time.as_secs_f64() / baseline.as_secs_f64()
    );

    // 3. Continuous mode's load on MySQL at its default rate, against idle.
    if args.continuous_seconds > 0 {
        let seconds = args.continuous_seconds;
        let idle = mysql_load(pid, &mut conn, seconds, std::future::pending()).await;
        let cancel = tokio_util::sync::CancellationToken::new();
        let metrics = ValidateMetrics::global();
        let defaults = ContinuousOptions::default();
        let busy = mysql_load(pid, &mut conn, seconds, async {
            let mut printed = Vec::new();
            let _ = run(
                &config,
                &options,
                defaults,
                &metrics,
                &cancel,
                &mut |line| printed.push(line),
            )
            .await;
        })
        .await;
        cancel.cancel();
        let share = |cpu: Duration| 100.0 * cpu.as_secs_f64() / seconds as f64;
        println!();
        println!(
            "continuous mode, default rate ({} rows/s per shard, every {}s), {seconds}s:",
            defaults.rows_per_second,
            defaults.interval.as_secs()
        );
        println!("| MariaDB | idle | continuous | difference |");
        println!("|---|---|---|---|");
        println!(
            "| CPU (% of one core) | {:.2} | {:.2} | {:.2} |",
            share(idle.0),
            share(busy.0),
            share(busy.0.saturating_sub(idle.0))
        );
        println!(
            "| rows read /s (Handler_read_*) | {:.1} | {:.1} | {:.1} |",
            idle.1 as f64 / seconds as f64,
            busy.1 as f64 / seconds as f64,
            (busy.1.saturating_sub(idle.1)) as f64 / seconds as f64
        );
        println!(
            "| statements /s | {:.2} | {:.2} | {:.2} |",
            idle.2 as f64 / seconds as f64,
            busy.2 as f64 / seconds as f64,
            (busy.2.saturating_sub(idle.2)) as f64 / seconds as f64
        );
    }
    let _ = conn.disconnect().await;
}
