//! `make bench-reader`: the reader's throughput and memory benchmark.
//!
//! A recorded change stream (the `ChangeRecord` column values as the Spanner client hands them:
//! `serde_json::Value` of the `ARRAY<STRUCT<…>>`) is fed through the real [`run_pipeline`] by an
//! in-process [`ChangeStreamSource`] that decodes every row with
//! [`decode_change_record_column`], into a real local-directory buffer and a real SQLite
//! metadata store, on a current-thread tokio runtime pinned to one CPU. Three measurements:
//!
//! 1. **Throughput**: a stream generated in memory before timing (≈1,000,000 mods over 10 min of
//!    commit time, four tables, eight shards routed by a session file's shard column, inserts,
//!    updates and deletes, forward-migration transactions that are filtered, a table unknown to
//!    the session file that goes to `skip/`, heartbeats, a split and a merge). Reports mods/s
//!    and CPU seconds.
//! 2. **Baseline**, in the same run: the same rows as JSON text lines, parsed and written out
//!    unchanged into as many files through the same buffer. The ratio says how close the reader
//!    is to "parse JSON and write it".
//! 3. **Memory**, in a child process so its peak RSS is its own: records generated while they
//!    are read (nothing pre-built), one slow partition that holds the low watermark back for
//!    60 s of input at a time while the others run ahead until the reader's `max_ahead` pause
//!    stops them. Reports peak RSS (`VmHWM`) and the most mods held in memory; a control run
//!    without the pause shows what it bounds.
//!
//! Exits with status 1 when a target is missed: at least 100,000 mods/s, at most 256 MiB.
//! Run `cargo bench -p revrepl-reader --bench reader_throughput -- --help` for the options.

use std::collections::{HashMap, VecDeque};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, stream};
use revrepl_metadata::{
    MetadataStore, MissingTables, RunId, RunRecord, SqliteMetadataStore, SqliteOptions,
};
use revrepl_reader::ReaderError;
use revrepl_reader::change_stream::{ChangeStreamRecord, decode_change_record_column};
use revrepl_reader::partition::{Token, short_token};
use revrepl_reader::pipeline::{PipelineParts, PipelineSettings, PipelineSummary, run_pipeline};
use revrepl_reader::routing::{RecordFilter, TableFilter};
use revrepl_reader::source::{ChangeStreamSource, RecordStream};
use revrepl_reader::telemetry::ReaderMetrics;
use revrepl_record::buffer::LocalDirectory;
use revrepl_record::{
    Backoff, BufferError, BufferStore, ErrorClass, PutOutcome, ShardId, Timestamp, WindowDuration,
};
use revrepl_shard_routing::{Session, SessionRouter, ShardAssigner};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

/// The allocator: the reader frees a JSON tree of some ninety small allocations per mod (the
/// Spanner client's `serde_json::Value`s), which glibc's malloc makes the largest cost of the
/// whole pipeline (1.8x slower). The reader binary should use the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The targets of the reader issue.
const TARGET_MODS_PER_SECOND: f64 = 100_000.0;
const TARGET_PEAK_RSS_MIB: f64 = 256.0;

/// 2024-06-24T16:53:20Z, on the 10 s window grid.
const T0_SECONDS: i64 = 1_719_248_000;
const MICROS: i64 = 1_000_000;
const SHARDS: u64 = 8;
const HEARTBEAT_US: i64 = 2 * MICROS;
const FORWARD_TAG: &str = "txBy=forward-migration-job-42";

// ------------------------------------------------------------------------------------------
// Options

#[derive(Debug, Clone)]
struct Options {
    scenario: Scenario,
    /// Mods of the throughput stream (approximate: the generator is random).
    mods: u64,
    /// Commit-time length of the throughput stream.
    seconds: i64,
    /// Commit rate (mods/s) of the memory scenario's stream.
    memory_rate: u64,
    /// Commit-time length of the memory scenario's stream.
    memory_seconds: i64,
    /// How far (commit time) the slow partition falls behind before it catches up.
    lag_seconds: i64,
    /// The reader's `max_ahead`.
    max_ahead_seconds: u64,
    /// Also run the memory scenario without the pause, for comparison.
    control: bool,
    /// Pin the process to one CPU.
    pin: bool,
    /// Run the baseline after the throughput run.
    baseline: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    All,
    Throughput,
    Memory,
    /// Internal: one memory run in this (child) process.
    MemoryChild,
    /// Internal: only generate the throughput stream (to subtract it from profiles).
    Generate,
}

const HELP: &str = "\
reader_throughput: the revrepl reader benchmark (make bench-reader)

options (defaults in brackets):
  --scenario all|throughput|memory  what to run [all]
  --mods N               mods of the throughput stream [1000000]
  --seconds S            commit time of the throughput stream [600]
  --memory-rate R        commit rate (mods/s) of the memory stream [4000]
  --memory-seconds S     commit time of the memory stream [240]
  --lag S                how far the slow partition falls behind [60]
  --max-ahead S          the reader's max_ahead [30]
  --no-control           skip the memory run without the pause
  --no-pin               do not pin the process to one CPU
  --no-baseline          skip the baseline (for profiling)
";

impl Options {
    fn parse() -> Result<Self, String> {
        let mut options = Self {
            scenario: Scenario::All,
            mods: 1_000_000,
            seconds: 600,
            memory_rate: 4_000,
            memory_seconds: 240,
            lag_seconds: 60,
            max_ahead_seconds: 30,
            control: true,
            pin: true,
            baseline: true,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                // cargo bench passes --bench; libtest-style filters are ignored.
                "--bench" => {}
                "--help" | "-h" => return Err(HELP.to_string()),
                "--scenario" => {
                    options.scenario = match value("--scenario")?.as_str() {
                        "all" => Scenario::All,
                        "throughput" => Scenario::Throughput,
                        "memory" => Scenario::Memory,
                        "memory-child" => Scenario::MemoryChild,
                        "generate" => Scenario::Generate,
                        other => return Err(format!("unknown scenario {other:?}\n\n{HELP}")),
                    }
                }
                "--mods" => options.mods = number(&value("--mods")?)?,
                "--seconds" => options.seconds = number(&value("--seconds")?)?,
                "--memory-rate" => options.memory_rate = number(&value("--memory-rate")?)?,
                "--memory-seconds" => {
                    options.memory_seconds = number(&value("--memory-seconds")?)?;
                }
                "--lag" => options.lag_seconds = number(&value("--lag")?)?,
                "--max-ahead" => options.max_ahead_seconds = number(&value("--max-ahead")?)?,
                "--no-control" => options.control = false,
                "--control" => options.control = true,
                "--no-pin" => options.pin = false,
                "--no-baseline" => options.baseline = false,
                other if other.starts_with('-') => {
                    return Err(format!("unknown option {other:?}\n\n{HELP}"));
                }
                _ => {}
            }
        }
        if options.seconds < 20 || options.memory_seconds < 20 {
            return Err("streams must be at least 20 s of commit time".into());
        }
        Ok(options)
    }
}

fn number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a number"))
}

// ------------------------------------------------------------------------------------------
// Process measurements

/// User + system CPU time of the whole process (every thread).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// A `/proc/self/status` field in MiB (`VmHWM`: peak RSS, `VmRSS`: current RSS).
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Pins this process (and the threads it starts later) to one CPU; returns it.
fn pin_to_one_cpu() -> Option<usize> {
    // SAFETY: the cpu_set_t is ours and sized correctly for both calls.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        let cpu = (0..libc::CPU_SETSIZE as usize)
            .rev()
            .find(|&cpu| libc::CPU_ISSET(cpu, &set))?;
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        (libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one) == 0)
            .then_some(cpu)
    }
}

// ------------------------------------------------------------------------------------------
// The recorded stream

/// SplitMix64: small, fast and deterministic.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// The logical shard id (derived from the row's first id, so a row stays on its shard).
    Shard,
    Id,
    Text(u64, u64),
    Email,
    Time,
    Numeric,
    Bool,
    Float,
    Json,
    Bytes(u64),
}

impl Kind {
    fn spanner_code(self) -> &'static str {
        match self {
            Kind::Shard | Kind::Text(..) | Kind::Email => "STRING",
            Kind::Id => "INT64",
            Kind::Time => "TIMESTAMP",
            Kind::Numeric => "NUMERIC",
            Kind::Bool => "BOOL",
            Kind::Float => "FLOAT64",
            Kind::Json => "JSON",
            Kind::Bytes(_) => "BYTES",
        }
    }
}

#[derive(Debug)]
struct Column {
    name: &'static str,
    kind: Kind,
    key: bool,
}

const fn key(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        key: true,
    }
}

const fn col(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        key: false,
    }
}

#[derive(Debug)]
struct Table {
    name: &'static str,
    columns: &'static [Column],
    /// In the session file, with this shard-id column; `None`: unknown table (`skip/`).
    shard_column: Option<&'static str>,
    /// `NEW_ROW_AND_OLD_VALUES` (deletes carry the old row) rather than `NEW_ROW`.
    old_values: bool,
    /// Share of records, in percent.
    weight: u64,
}

/// Users routes by a key column; Orders and OrderItems by a non-key column, with old values
/// captured so deletes carry it; AuditEvents is unknown to the session file.
static TABLES: &[Table] = &[
    Table {
        name: "Users",
        columns: &[
            key("migration_shard_id", Kind::Shard),
            key("user_id", Kind::Id),
            col("name", Kind::Text(8, 24)),
            col("email", Kind::Email),
            col("created_at", Kind::Time),
            col("balance", Kind::Numeric),
            col("active", Kind::Bool),
            col("score", Kind::Float),
            col("preferences", Kind::Json),
            col("avatar", Kind::Bytes(24)),
            col("bio", Kind::Text(20, 220)),
        ],
        shard_column: Some("migration_shard_id"),
        old_values: false,
        weight: 40,
    },
    Table {
        name: "Orders",
        columns: &[
            key("order_id", Kind::Id),
            col("migration_shard_id", Kind::Shard),
            col("customer_id", Kind::Id),
            col("status", Kind::Text(6, 10)),
            col("placed_at", Kind::Time),
            col("total", Kind::Numeric),
            col("currency", Kind::Text(3, 3)),
            col("shipping_address", Kind::Text(40, 140)),
            col("notes", Kind::Text(0, 120)),
        ],
        shard_column: Some("migration_shard_id"),
        old_values: true,
        weight: 35,
    },
    Table {
        name: "OrderItems",
        columns: &[
            key("order_id", Kind::Id),
            key("item_no", Kind::Id),
            col("migration_shard_id", Kind::Shard),
            col("sku", Kind::Text(8, 12)),
            col("quantity", Kind::Id),
            col("unit_price", Kind::Numeric),
            col("description", Kind::Text(30, 200)),
            col("updated_at", Kind::Time),
        ],
        shard_column: Some("migration_shard_id"),
        old_values: true,
        weight: 24,
    },
    Table {
        name: "AuditEvents",
        columns: &[
            key("event_id", Kind::Id),
            col("actor", Kind::Text(6, 20)),
            col("action", Kind::Text(6, 14)),
            col("payload", Kind::Json),
            col("at", Kind::Time),
        ],
        shard_column: None,
        old_values: false,
        weight: 1,
    },
];

const TEXT: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor \
incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud \"exercitation\" \
ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in \
voluptate velit esse cillum dolore eu fugiat nulla pariatur. Excepteur sint occaecat cupidatat non \
proident, sunt in culpa qui officia deserunt mollit anim id est laborum. 42 Main St\\Apt 7.";

fn shard_name(index: u64) -> String {
    format!("shard-{index:02}")
}

fn shard_of(id: u64) -> u64 {
    mix(id ^ 0x5EED) % SHARDS
}

/// The session file: one Spanner table per routed table, its shard column named.
fn session_json() -> String {
    let mut sp = Map::new();
    let mut src = Map::new();
    for (t, table) in TABLES.iter().enumerate() {
        let Some(shard_column) = table.shard_column else {
            continue;
        };
        let id = format!("t{t}");
        let mut col_ids = Vec::new();
        let mut sp_defs = Map::new();
        let mut src_defs = Map::new();
        let mut keys = Vec::new();
        let mut src_keys = Vec::new();
        let mut shard_id = String::new();
        for (c, column) in table.columns.iter().enumerate() {
            let cid = format!("c{t}_{c}");
            col_ids.push(Value::String(cid.clone()));
            sp_defs.insert(
                cid.clone(),
                json!({"Name": column.name, "Id": cid, "T": {"Name": column.kind.spanner_code()}}),
            );
            if column.name == shard_column {
                shard_id.clone_from(&cid);
            } else {
                src_defs.insert(
                    cid.clone(),
                    json!({"Name": column.name, "Id": cid, "Type": {"Name": "varchar"}}),
                );
                if column.key {
                    src_keys.push(json!({"ColId": cid, "Order": src_keys.len() + 1}));
                }
            }
            if column.key {
                keys.push(json!({"ColId": cid, "Order": keys.len() + 1}));
            }
        }
        sp.insert(
            id.clone(),
            json!({"Name": table.name, "Id": id, "ColIds": col_ids, "ShardIdColumn": shard_id,
                   "ColDefs": sp_defs, "PrimaryKeys": keys}),
        );
        src.insert(
            id.clone(),
            json!({"Name": table.name.to_lowercase(), "Id": id, "Schema": "shop",
                   "ColDefs": src_defs, "PrimaryKeys": src_keys}),
        );
    }
    json!({"SpSchema": sp, "SrcSchema": src, "SyntheticPKeys": {}}).to_string()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A partition token as long as Spanner's, readable in logs by its first characters.
fn token(name: &str) -> String {
    let mut filler = Vec::new();
    let mut rng = Rng(name.bytes().fold(7, |h, b| mix(h ^ u64::from(b))));
    for _ in 0..108 {
        filler.push(rng.next() as u8);
    }
    format!("{name:_<8}{}", base64(&filler))
}

fn rfc3339(offset_us: i64) -> String {
    let nanos = (i128::from(T0_SECONDS) * 1_000_000 + i128::from(offset_us)) * 1000;
    Timestamp::from_nanos(nanos)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

/// One partition of the recorded stream: its records lie in `[start_us, end_us)` (commit
/// time, relative to T0); it ends with a child-partitions record, or (a final partition) with
/// a heartbeat a second after the end, and then stays open.
#[derive(Debug, Clone)]
struct PartitionPlan {
    name: String,
    start_us: i64,
    end_us: i64,
    /// Mods per second of commit time in this partition.
    rate: f64,
    /// Children announced at `end_us`: (name, parent names).
    children: Option<Vec<(String, Vec<String>)>>,
}

/// Counts of what the generators produced.
#[derive(Debug, Default)]
struct GenStats {
    records: AtomicU64,
    mods: AtomicU64,
    kept_mods: AtomicU64,
    skipped_mods: AtomicU64,
    filtered_mods: AtomicU64,
    heartbeats: AtomicU64,
    child_records: AtomicU64,
}

impl GenStats {
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// One row of the recorded stream.
struct Item {
    at_us: i64,
    value: Value,
    /// Mods of it that end up in a file (not filtered).
    kept_mods: u64,
}

/// Mods per transaction on average: records per transaction 1.32, mods per record 2.55.
const MODS_PER_TXN: f64 = 1.32 * 2.55;

/// Generates one partition's rows in commit order.
struct PartitionGen {
    plan: PartitionPlan,
    index: u64,
    rng: Rng,
    next_txn_us: i64,
    next_heartbeat_us: i64,
    mean_gap_us: u64,
    ended: bool,
    pending: VecDeque<Item>,
    txn_counter: u64,
    column_types: Vec<Value>,
    stats: Arc<GenStats>,
}

impl PartitionGen {
    fn new(plan: PartitionPlan, index: u64, stats: Arc<GenStats>) -> Self {
        let txn_rate = plan.rate / MODS_PER_TXN;
        let mean_gap_us = ((MICROS as f64) / txn_rate).max(1.0) as u64;
        let mut rng = Rng(mix(index + 1));
        let next_txn_us = plan.start_us + rng.range(1, 2 * mean_gap_us) as i64;
        let column_types = TABLES
            .iter()
            .map(|table| {
                Value::Array(
                    table
                        .columns
                        .iter()
                        .enumerate()
                        .map(|(i, c)| {
                            json!({"name": c.name, "type": {"code": c.kind.spanner_code()},
                                   "is_primary_key": c.key, "ordinal_position": (i + 1).to_string()})
                        })
                        .collect(),
                )
            })
            .collect();
        Self {
            next_heartbeat_us: plan.start_us + HEARTBEAT_US,
            plan,
            index,
            rng,
            next_txn_us,
            mean_gap_us,
            ended: false,
            pending: VecDeque::new(),
            txn_counter: 0,
            column_types,
            stats,
        }
    }

    fn heartbeat(&self, at_us: i64) -> Item {
        self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
        Item {
            at_us,
            value: json!([{"data_change_record": [], "heartbeat_record": [{"timestamp": rfc3339(at_us)}],
                           "child_partitions_record": []}]),
            kept_mods: 0,
        }
    }

    fn children(&self, kids: &[(String, Vec<String>)]) -> Item {
        self.stats.child_records.fetch_add(1, Ordering::Relaxed);
        let children: Vec<Value> = kids
            .iter()
            .map(|(name, parents)| {
                let parents: Vec<String> = parents.iter().map(|p| token(p)).collect();
                json!({"token": token(name), "parent_partition_tokens": parents})
            })
            .collect();
        Item {
            at_us: self.plan.end_us,
            value: json!([{"data_change_record": [], "heartbeat_record": [],
                           "child_partitions_record": [{"start_timestamp": rfc3339(self.plan.end_us),
                                                        "record_sequence": "00000001",
                                                        "child_partitions": children}]}]),
            kept_mods: 0,
        }
    }

    fn value(&mut self, kind: Kind, id: u64, commit: &str) -> Value {
        let rng = &mut self.rng;
        match kind {
            Kind::Shard => Value::String(shard_name(shard_of(id))),
            Kind::Id => Value::String(rng.range(1, 9_999_999).to_string()),
            Kind::Text(low, high) => {
                let len = rng.range(low, high) as usize;
                let start = rng.below((TEXT.len() - len) as u64) as usize;
                Value::String(TEXT[start..start + len].to_string())
            }
            Kind::Email => Value::String(format!("user{id}@example{}.com", rng.below(50))),
            Kind::Time => Value::String(commit.to_string()),
            Kind::Numeric => Value::String(format!("{}.{:02}", rng.below(100_000), rng.below(100))),
            Kind::Bool => Value::Bool(rng.percent(50)),
            Kind::Float => json!(rng.below(1_000_000) as f64 / 100.0),
            Kind::Json => Value::String(format!(
                r#"{{"theme":"{}","lang":"en","flags":[{},{}]}}"#,
                if rng.percent(50) { "dark" } else { "light" },
                rng.below(10),
                rng.below(10)
            )),
            Kind::Bytes(n) => {
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                Value::String(base64(&bytes))
            }
        }
    }

    /// The full row of `table` for ids `ids` (first id decides the shard): (keys, non-keys).
    fn row(
        &mut self,
        table: &Table,
        ids: [u64; 2],
        commit: &str,
    ) -> (Map<String, Value>, Map<String, Value>) {
        let mut keys = Map::new();
        let mut values = Map::new();
        let mut key_index = 0;
        for column in table.columns {
            let value = if column.key && matches!(column.kind, Kind::Id) {
                key_index += 1;
                Value::String(ids[key_index - 1].to_string())
            } else {
                self.value(column.kind, ids[0], commit)
            };
            if column.key {
                keys.insert(column.name.to_string(), value);
            } else {
                values.insert(column.name.to_string(), value);
            }
        }
        (keys, values)
    }

    fn transaction(&mut self, at_us: i64) {
        self.txn_counter += 1;
        let commit = rfc3339(at_us);
        let txn_id =
            base64(format!("{}", mix((self.index << 40) | self.txn_counter) >> 1).as_bytes());
        let tag = match self.rng.below(100) {
            0..5 => FORWARD_TAG,
            5..50 => "",
            50..80 => "app=checkout",
            _ => "app=profile-service",
        };
        let system = tag.is_empty() && self.rng.percent(1);
        let records = match self.rng.below(100) {
            0..75 => 1,
            75..93 => 2,
            _ => 3,
        };
        for sequence in 0..records {
            let table = {
                let mut pick = self.rng.below(100);
                let mut chosen = &TABLES[0];
                for table in TABLES {
                    if pick < table.weight {
                        chosen = table;
                        break;
                    }
                    pick -= table.weight;
                }
                chosen
            };
            let mod_type = if system {
                "DELETE"
            } else {
                match self.rng.below(100) {
                    0..60 => "INSERT",
                    60..90 => "UPDATE",
                    _ => "DELETE",
                }
            };
            let count = match self.rng.below(100) {
                0..60 => 1,
                60..90 => self.rng.range(2, 4),
                _ => self.rng.range(5, 16),
            };
            let mut mods = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let ids = [self.rng.range(1, 50_000_000), self.rng.range(1, 20)];
                let (keys, row) = self.row(table, ids, &commit);
                let (new_values, old_values) = match (mod_type, table.old_values) {
                    ("INSERT", _) => (row, Map::new()),
                    ("UPDATE", false) => (row, Map::new()),
                    ("UPDATE", true) => {
                        // The whole new row, and the old values of two changed columns.
                        let (_, old_row) = self.row(table, ids, &commit);
                        let old: Map<String, Value> = old_row
                            .into_iter()
                            .filter(|(name, _)| {
                                Some(name.as_str()) != table.shard_column && self.rng.percent(30)
                            })
                            .take(2)
                            .collect();
                        (row, old)
                    }
                    (_, false) => (Map::new(), Map::new()),
                    (_, true) => (Map::new(), row),
                };
                mods.push(
                    json!({"keys": keys, "new_values": new_values, "old_values": old_values}),
                );
            }
            let mods_count = mods.len() as u64;
            self.stats.records.fetch_add(1, Ordering::Relaxed);
            self.stats.mods.fetch_add(mods_count, Ordering::Relaxed);
            let kept = if tag == FORWARD_TAG {
                self.stats
                    .filtered_mods
                    .fetch_add(mods_count, Ordering::Relaxed);
                0
            } else {
                if table.shard_column.is_none() {
                    self.stats
                        .skipped_mods
                        .fetch_add(mods_count, Ordering::Relaxed);
                }
                self.stats
                    .kept_mods
                    .fetch_add(mods_count, Ordering::Relaxed);
                mods_count
            };
            let table_index = TABLES
                .iter()
                .position(|t| std::ptr::eq(t, table))
                .unwrap_or(0);
            let record = json!({
                "commit_timestamp": commit,
                "record_sequence": format!("{sequence:08}"),
                "server_transaction_id": txn_id,
                "is_last_record_in_transaction_in_partition": sequence + 1 == records,
                "table_name": table.name,
                "column_types": self.column_types[table_index],
                "mods": mods,
                "mod_type": mod_type,
                "value_capture_type": if table.old_values { "NEW_ROW_AND_OLD_VALUES" } else { "NEW_ROW" },
                "number_of_records_in_transaction": records.to_string(),
                "number_of_partitions_in_transaction": "1",
                "transaction_tag": tag,
                "is_system_transaction": system,
            });
            self.pending.push_back(Item {
                at_us,
                value: json!([{"data_change_record": [record], "heartbeat_record": [],
                               "child_partitions_record": []}]),
                kept_mods: kept,
            });
        }
    }
}

impl Iterator for PartitionGen {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.ended {
                return None;
            }
            if self.next_heartbeat_us < self.next_txn_us.min(self.plan.end_us) {
                let at = self.next_heartbeat_us;
                self.next_heartbeat_us += HEARTBEAT_US;
                return Some(self.heartbeat(at));
            }
            if self.next_txn_us >= self.plan.end_us {
                self.ended = true;
                return Some(match self.plan.children.clone() {
                    Some(kids) => self.children(&kids),
                    None => self.heartbeat(self.plan.end_us + MICROS),
                });
            }
            let at = self.next_txn_us;
            self.next_txn_us += self.rng.range(1, 2 * self.mean_gap_us) as i64;
            self.transaction(at);
        }
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: clock_gettime only writes the struct we pass.
    let t = unsafe {
        let mut t: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t);
        t
    };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Time spent generating input while the clock runs; subtracted from the measurements.
#[derive(Debug, Default)]
struct Excluded {
    wall_nanos: AtomicU64,
    cpu_nanos: AtomicU64,
}

impl Excluded {
    fn measure<T>(&self, work: impl FnOnce() -> T) -> T {
        let (wall, cpu) = (Instant::now(), thread_cpu());
        let out = work();
        let add = |counter: &AtomicU64, d: Duration| {
            counter.fetch_add(
                u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            )
        };
        add(&self.cpu_nanos, thread_cpu().saturating_sub(cpu));
        add(&self.wall_nanos, wall.elapsed());
        out
    }

    fn wall(&self) -> Duration {
        Duration::from_nanos(self.wall_nanos.load(Ordering::Relaxed))
    }

    fn cpu(&self) -> f64 {
        self.cpu_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }
}

/// Rows generated per chunk: pre-building the whole stream as `serde_json::Value`s would take
/// about 10 KB per mod (every small map is a B-tree node), so the stream is generated a chunk
/// at a time, just before it is read, with the clock stopped.
const CHUNK_ROWS: usize = 400;

/// A partition's rows, generated a chunk at a time outside the measured time.
struct Chunked {
    generator: PartitionGen,
    chunk: VecDeque<Item>,
    /// Rows per chunk.
    rows: usize,
    excluded: Arc<Excluded>,
}

impl Chunked {
    fn new(generator: PartitionGen, excluded: Arc<Excluded>, rows: usize) -> Self {
        Self {
            generator,
            chunk: VecDeque::with_capacity(rows),
            rows,
            excluded,
        }
    }
}

impl Iterator for Chunked {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        if self.chunk.is_empty() {
            let Self {
                generator,
                chunk,
                rows,
                excluded,
            } = self;
            excluded.measure(|| chunk.extend(generator.by_ref().take(*rows)));
        }
        self.chunk.pop_front()
    }
}

/// The initial query's only row: the first partitions.
fn initial_children(names: &[&str]) -> Value {
    let children: Vec<Value> = names
        .iter()
        .map(|name| json!({"token": token(name), "parent_partition_tokens": []}))
        .collect();
    json!([{"data_change_record": [], "heartbeat_record": [],
            "child_partitions_record": [{"start_timestamp": rfc3339(0), "record_sequence": "00000000",
                                         "child_partitions": children}]}])
}

/// The throughput stream's partitions: four from the start; p0 splits at a third, p2 and p3
/// merge at two thirds. The total rate stays the same throughout.
fn throughput_plan(mods: u64, seconds: i64) -> Vec<PartitionPlan> {
    let rate = mods as f64 / seconds as f64;
    let end = seconds * MICROS;
    let split = (seconds / 3) * MICROS;
    let merge = (2 * seconds / 3) * MICROS;
    let plan = |name: &str, start, end, share: f64, children: Option<Vec<(&str, Vec<&str>)>>| {
        PartitionPlan {
            name: name.to_string(),
            start_us: start,
            end_us: end,
            rate: rate * share,
            children: children.map(|kids| {
                kids.into_iter()
                    .map(|(n, ps)| (n.to_string(), ps.into_iter().map(str::to_string).collect()))
                    .collect()
            }),
        }
    };
    vec![
        plan(
            "p0",
            0,
            split,
            0.25,
            Some(vec![("p0a", vec!["p0"]), ("p0b", vec!["p0"])]),
        ),
        plan("p1", 0, end, 0.25, None),
        plan("p2", 0, merge, 0.25, Some(vec![("m23", vec!["p2", "p3"])])),
        plan("p3", 0, merge, 0.25, Some(vec![("m23", vec!["p2", "p3"])])),
        plan("p0a", split, end, 0.125, None),
        plan("p0b", split, end, 0.125, None),
        plan("m23", merge, end, 0.5, None),
    ]
}

// ------------------------------------------------------------------------------------------
// The in-process source

/// Where the slow partition of the memory scenario stands against the others.
#[derive(Debug)]
struct Race {
    /// Commit time (µs after T0) of the last row each fast partition delivered.
    fast: Vec<AtomicI64>,
    /// Rows the fast partitions delivered.
    progress: AtomicU64,
    /// How far behind the slow partition falls before it catches up.
    lag_us: i64,
    /// Largest lead of the fast partitions over the slow one seen.
    max_lead_us: AtomicI64,
    /// Times the slow partition stalled.
    stalls: AtomicU64,
    /// Kept mods delivered by every partition, and lines written to files.
    delivered: AtomicU64,
    written: Arc<AtomicU64>,
    /// Most mods read but not yet in a written file.
    max_held: AtomicU64,
}

impl Race {
    fn min_fast(&self) -> i64 {
        self.fast
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }

    fn delivered(&self, kept: u64) {
        let delivered = self.delivered.fetch_add(kept, Ordering::Relaxed) + kept;
        let held = delivered.saturating_sub(self.written.load(Ordering::Relaxed));
        self.max_held.fetch_max(held, Ordering::Relaxed);
    }
}

enum Input {
    /// Rows given up front (the initial query's); `true`: the query stays open after them.
    Fixed(Vec<Value>, bool),
    /// A partition's rows, generated as they are read.
    Generated(Box<Chunked>, Role, bool),
}

/// A partition's part in the memory scenario.
#[derive(Debug, Clone, Copy)]
enum Role {
    /// Throughput: no race.
    Plain,
    /// Runs ahead: index into [`Race::fast`].
    Fast(usize),
    /// Holds the watermark back.
    Slow,
}

/// Serves each partition's rows once, decoding every row like the Spanner source does.
struct RecordedSource {
    inputs: Mutex<HashMap<Token, Input>>,
    race: Option<Arc<Race>>,
}

impl std::fmt::Debug for RecordedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordedSource")
    }
}

type Decoded = stream::Iter<std::vec::IntoIter<Result<ChangeStreamRecord, ReaderError>>>;

/// What the Spanner source does with each row's `ChangeRecord` column.
fn decode_row(value: Value, token: &Token) -> Decoded {
    let items: Vec<Result<ChangeStreamRecord, ReaderError>> =
        match decode_change_record_column(value) {
            Ok(records) => records.into_iter().map(Ok).collect(),
            Err(source) => vec![Err(ReaderError::Decode {
                partition: short_token(token),
                source,
            })],
        };
    stream::iter(items)
}

/// The slow partition: stalls until the others are `lag` ahead or stop moving (paused by
/// `max_ahead`), then catches up to where they are, and stalls again.
fn slow_rows(rows: Chunked, race: Arc<Race>) -> impl futures::Stream<Item = Item> {
    stream::unfold(
        (rows, race, i64::MIN),
        |(mut rows, race, mut caught_up)| async move {
            let item = rows.next()?;
            if item.at_us > caught_up {
                race.stalls.fetch_add(1, Ordering::Relaxed);
                loop {
                    if race.min_fast() >= item.at_us + race.lag_us {
                        break;
                    }
                    let before = race.progress.load(Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if race.progress.load(Ordering::Relaxed) == before {
                        break;
                    }
                }
                caught_up = race.min_fast();
                race.max_lead_us
                    .fetch_max(caught_up - item.at_us, Ordering::Relaxed);
            }
            race.delivered(item.kept_mods);
            Some((item, (rows, race, caught_up)))
        },
    )
}

#[async_trait]
impl ChangeStreamSource for RecordedSource {
    async fn query(&self, token: &Token, _start: Timestamp) -> Result<RecordStream, ReaderError> {
        let input = self
            .inputs
            .lock()
            .map_err(|_| fatal(token, "poisoned"))?
            .remove(token)
            .ok_or_else(|| {
                fatal(
                    token,
                    "queried twice (a re-query: the benchmark expects none)",
                )
            })?;
        let owned = token.clone();
        let race = || self.race.clone().ok_or_else(|| fatal(token, "no race"));
        let (rows, stays_open): (RecordStream, bool) = match input {
            Input::Fixed(rows, open) => (
                Box::pin(stream::iter(rows).flat_map(move |row| decode_row(row, &owned))),
                open,
            ),
            Input::Generated(rows, Role::Plain, open) => (
                Box::pin(stream::iter(*rows).flat_map(move |item| decode_row(item.value, &owned))),
                open,
            ),
            Input::Generated(rows, Role::Fast(fast), open) => {
                let race = race()?;
                let rows = stream::iter(*rows).flat_map(move |item| {
                    race.fast[fast].store(item.at_us, Ordering::Relaxed);
                    race.progress.fetch_add(1, Ordering::Relaxed);
                    race.delivered(item.kept_mods);
                    decode_row(item.value, &owned)
                });
                (Box::pin(rows), open)
            }
            Input::Generated(rows, Role::Slow, open) => {
                let rows =
                    slow_rows(*rows, race()?).flat_map(move |item| decode_row(item.value, &owned));
                (Box::pin(rows), open)
            }
        };
        Ok(if stays_open {
            Box::pin(rows.chain(stream::pending()))
        } else {
            rows
        })
    }

    fn location(&self) -> &str {
        "recorded"
    }
}

fn fatal(token: &Token, message: &str) -> ReaderError {
    ReaderError::Query {
        location: "recorded".into(),
        partition: short_token(token),
        message: message.into(),
        class: ErrorClass::Fatal,
    }
}

/// The local-directory buffer, counting the lines it writes (memory runs only: counting is
/// not free).
#[derive(Debug)]
struct CountingBuffer {
    inner: LocalDirectory,
    lines: Option<Arc<AtomicU64>>,
}

#[async_trait]
impl BufferStore for CountingBuffer {
    async fn put_if_absent(&self, path: &str, bytes: Bytes) -> Result<PutOutcome, BufferError> {
        let lines = self
            .lines
            .as_ref()
            .map(|_| bytes.iter().filter(|&&b| b == b'\n').count() as u64);
        let outcome = self.inner.put_if_absent(path, bytes).await?;
        if let (Some(counter), Some(lines)) = (&self.lines, lines) {
            counter.fetch_add(lines, Ordering::Relaxed);
        }
        Ok(outcome)
    }

    async fn get(&self, path: &str) -> Result<Option<Bytes>, BufferError> {
        self.inner.get(path).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, BufferError> {
        self.inner.list(prefix).await
    }

    fn location(&self) -> &str {
        self.inner.location()
    }
}

// ------------------------------------------------------------------------------------------
// Running the reader

struct ReaderRun {
    summary: PipelineSummary,
    wall: Duration,
    cpu: f64,
    lines: u64,
    skip_lines: u64,
}

fn ts(offset_us: i64) -> Timestamp {
    let nanos = (i128::from(T0_SECONDS) * 1_000_000 + i128::from(offset_us)) * 1000;
    Timestamp::from_nanos(nanos).expect("in range")
}

async fn run_reader(
    dir: &std::path::Path,
    inputs: HashMap<Token, Input>,
    race: Option<Arc<Race>>,
    written: Option<Arc<AtomicU64>>,
    end_us: i64,
    max_ahead: Duration,
) -> ReaderRun {
    let window: WindowDuration = "10s".parse().expect("window");
    let run_id = RunId::new("bench").expect("run id");
    let shards: Vec<ShardId> = (0..SHARDS)
        .map(|s| ShardId::new(shard_name(s)).expect("shard id"))
        .collect();
    let metadata = SqliteMetadataStore::open(dir.join("metadata.db"), SqliteOptions::default())
        .await
        .expect("open sqlite");
    metadata
        .ensure_tables(MissingTables::Create)
        .await
        .expect("tables");
    metadata
        .record_run(&RunRecord::new(run_id.clone(), ts(0), window).expect("run"))
        .await
        .expect("record run");
    metadata
        .register_shards(&run_id, &shards, ts(0))
        .await
        .expect("register shards");
    let session = Session::from_json("bench session", &session_json()).expect("session file");
    let assigner = ShardAssigner::new(
        Box::new(SessionRouter::new(Arc::new(session))),
        shards.clone(),
    );
    let buffer_root = dir.join("buffer");
    let parts = PipelineParts {
        source: Arc::new(RecordedSource {
            inputs: Mutex::new(inputs),
            race,
        }),
        assigner: Arc::new(assigner),
        buffer: Arc::new(CountingBuffer {
            inner: LocalDirectory::new(&buffer_root),
            lines: written,
        }),
        metadata: Arc::new(metadata),
        shards,
        metrics: ReaderMetrics::global(),
    };
    let settings = PipelineSettings {
        run_id,
        window,
        start: ts(0),
        read_from: ts(0),
        until: Some(ts(end_us)),
        filter: RecordFilter::default(),
        tables: TableFilter::default(),
        max_ahead,
        stall_timeout: Duration::from_secs(3600),
        retry: Backoff::default(),
        event_capacity: 1024,
    };
    let cpu = cpu_seconds();
    let started = Instant::now();
    let summary = run_pipeline(settings, parts, CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("the reader failed: {e}"));
    let wall = started.elapsed();
    let cpu = cpu_seconds() - cpu;
    let (lines, skip_lines) = count_lines(&buffer_root);
    ReaderRun {
        summary,
        wall,
        cpu,
        lines,
        skip_lines,
    }
}

/// Lines in every file under `root`, and in those under `root/skip`.
fn count_lines(root: &std::path::Path) -> (u64, u64) {
    let mut total = 0;
    let mut skip = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read buffer").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).expect("read file");
            let lines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
            total += lines;
            if path.starts_with(root.join("skip")) {
                skip += lines;
            }
        }
    }
    (total, skip)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

// ------------------------------------------------------------------------------------------
// Throughput and baseline

struct Throughput {
    mods: u64,
    records: u64,
    heartbeats: u64,
    child_records: u64,
    filtered: u64,
    skipped: u64,
    partitions: usize,
    ours: ReaderRun,
    /// Generation time inside the reader's run, excluded from `ours`.
    ours_excluded: Duration,
    baseline: Option<Baseline>,
}

struct Baseline {
    wall: Duration,
    cpu: f64,
    files: u64,
    json_bytes: u64,
    excluded: Duration,
}

/// The throughput stream's inputs, generated as they are read (outside the measured time).
fn throughput_inputs(
    options: &Options,
    stats: &Arc<GenStats>,
    excluded: &Arc<Excluded>,
) -> Vec<(Token, Input)> {
    let mut inputs = vec![(
        None,
        Input::Fixed(vec![initial_children(&["p0", "p1", "p2", "p3"])], false),
    )];
    for (index, plan) in throughput_plan(options.mods, options.seconds)
        .into_iter()
        .enumerate()
    {
        let open = plan.children.is_none();
        let token = Some(token(&plan.name));
        let generator = PartitionGen::new(plan, index as u64, Arc::clone(stats));
        let rows = Chunked::new(generator, Arc::clone(excluded), CHUNK_ROWS);
        inputs.push((token, Input::Generated(Box::new(rows), Role::Plain, open)));
    }
    inputs
}

fn throughput(options: &Options, with_baseline: bool) -> Throughput {
    let rt = runtime();
    let stats = Arc::new(GenStats::default());
    let excluded = Arc::new(Excluded::default());
    let inputs = throughput_inputs(options, &stats, &excluded);
    let partitions = inputs.len();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ours = rt.block_on(run_reader(
        dir.path(),
        inputs.into_iter().collect(),
        None,
        None,
        options.seconds * MICROS,
        Duration::from_secs(options.max_ahead_seconds),
    ));
    drop(dir);
    assert_eq!(
        ours.lines,
        GenStats::get(&stats.kept_mods),
        "the files hold every kept mod exactly once"
    );
    assert_eq!(ours.skip_lines, GenStats::get(&stats.skipped_mods));
    ours.wall = ours.wall.saturating_sub(excluded.wall());
    ours.cpu -= excluded.cpu();

    let baseline = with_baseline.then(|| {
        let rows = GenStats::get(&stats.records)
            + GenStats::get(&stats.heartbeats)
            + GenStats::get(&stats.child_records)
            + 1;
        let files = ours.summary.files_written.max(1);
        let per_file = rows.div_ceil(files).max(1);
        let dir = tempfile::tempdir().expect("temp dir");
        let baseline_excluded = Arc::new(Excluded::default());
        // Generation and serialization are measured together around each chunk below.
        let inputs = throughput_inputs(
            options,
            &Arc::new(GenStats::default()),
            &Arc::new(Excluded::default()),
        );
        let (wall, cpu, json_bytes) = rt.block_on(baseline(
            dir.path(),
            inputs,
            per_file as usize,
            &baseline_excluded,
        ));
        Baseline {
            wall: wall.saturating_sub(baseline_excluded.wall()),
            cpu: cpu - baseline_excluded.cpu(),
            files,
            json_bytes,
            excluded: baseline_excluded.wall(),
        }
    });
    Throughput {
        mods: GenStats::get(&stats.mods),
        records: GenStats::get(&stats.records),
        heartbeats: GenStats::get(&stats.heartbeats),
        child_records: GenStats::get(&stats.child_records) + 1,
        filtered: GenStats::get(&stats.filtered_mods),
        skipped: GenStats::get(&stats.skipped_mods),
        partitions,
        ours,
        ours_excluded: excluded.wall(),
        baseline,
    }
}

/// The baseline: the same rows as JSON text lines (made outside the measured time), parsed
/// and written out unchanged, `per_file` lines a file, through the same buffer, the writes
/// overlapping the parsing as the reader's output stage does. Returns wall, CPU and bytes.
async fn baseline(
    dir: &std::path::Path,
    inputs: Vec<(Token, Input)>,
    per_file: usize,
    excluded: &Excluded,
) -> (Duration, f64, u64) {
    let buffer = Arc::new(LocalDirectory::new(dir.join("buffer")));
    let cpu = cpu_seconds();
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, Bytes)>(2);
    let writer = {
        let buffer = Arc::clone(&buffer);
        tokio::spawn(async move {
            while let Some((path, bytes)) = rx.recv().await {
                buffer
                    .put_if_absent(&path, bytes)
                    .await
                    .expect("baseline write");
            }
        })
    };
    let mut json_bytes = 0;
    let mut files = 0;
    let mut out = Vec::new();
    let mut in_file = 0;
    for (_, input) in inputs {
        let mut rows: Box<dyn Iterator<Item = Value>> = match input {
            Input::Fixed(rows, _) => Box::new(rows.into_iter()),
            Input::Generated(rows, _, _) => Box::new(rows.map(|item| item.value)),
        };
        loop {
            let lines: Vec<String> = excluded.measure(|| {
                rows.by_ref()
                    .take(CHUNK_ROWS)
                    .map(|row| row.to_string())
                    .collect()
            });
            if lines.is_empty() {
                break;
            }
            for line in &lines {
                let parsed: Value = serde_json::from_str(line).expect("valid JSON");
                std::hint::black_box(&parsed);
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
                in_file += 1;
                if in_file == per_file {
                    json_bytes += out.len() as u64;
                    tx.send((
                        format!("s/{files:06}.txt"),
                        Bytes::from(std::mem::take(&mut out)),
                    ))
                    .await
                    .expect("writer alive");
                    files += 1;
                    in_file = 0;
                }
            }
            excluded.measure(|| drop(lines));
        }
    }
    if !out.is_empty() {
        json_bytes += out.len() as u64;
        tx.send((format!("s/{files:06}.txt"), Bytes::from(out)))
            .await
            .expect("writer alive");
    }
    drop(tx);
    writer.await.expect("writer");
    (started.elapsed(), cpu_seconds() - cpu, json_bytes)
}

// ------------------------------------------------------------------------------------------
// Memory

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct MemoryResult {
    max_ahead_seconds: u64,
    peak_rss_mib: f64,
    max_held_mods: u64,
    max_lead_seconds: f64,
    stalls: u64,
    mods: u64,
    kept_mods: u64,
    wall_seconds: f64,
    cpu_seconds: f64,
}

/// Four partitions for the whole stream; the last one is slow.
fn memory_child(options: &Options) -> MemoryResult {
    let stats = Arc::new(GenStats::default());
    let end_us = options.memory_seconds * MICROS;
    let rate = options.memory_rate as f64 / 4.0;
    let names = ["p0", "p1", "p2", "p3"];
    let written = Arc::new(AtomicU64::new(0));
    let race = Arc::new(Race {
        fast: (0..names.len() - 1).map(|_| AtomicI64::new(0)).collect(),
        progress: AtomicU64::new(0),
        lag_us: options.lag_seconds * MICROS,
        max_lead_us: AtomicI64::new(0),
        stalls: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        written: Arc::clone(&written),
        max_held: AtomicU64::new(0),
    });
    let excluded = Arc::new(Excluded::default());
    let mut inputs: HashMap<Token, Input> =
        HashMap::from([(None, Input::Fixed(vec![initial_children(&names)], false))]);
    for (index, name) in names.iter().enumerate() {
        let plan = PartitionPlan {
            name: (*name).to_string(),
            start_us: 0,
            end_us,
            rate,
            children: None,
        };
        let generator = PartitionGen::new(plan, index as u64, Arc::clone(&stats));
        let role = if index + 1 < names.len() {
            Role::Fast(index)
        } else {
            Role::Slow
        };
        // Small chunks: the memory run measures the reader's memory, not the input's.
        let rows = Chunked::new(generator, Arc::clone(&excluded), 8);
        inputs.insert(
            Some(token(name)),
            Input::Generated(Box::new(rows), role, true),
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let run = runtime().block_on(run_reader(
        dir.path(),
        inputs,
        Some(Arc::clone(&race)),
        Some(written),
        end_us,
        Duration::from_secs(options.max_ahead_seconds),
    ));
    assert_eq!(
        run.lines,
        GenStats::get(&stats.kept_mods),
        "every kept mod written once"
    );
    MemoryResult {
        max_ahead_seconds: options.max_ahead_seconds,
        peak_rss_mib: status_mib("VmHWM"),
        max_held_mods: race.max_held.load(Ordering::Relaxed),
        max_lead_seconds: race.max_lead_us.load(Ordering::Relaxed) as f64 / 1e6,
        stalls: race.stalls.load(Ordering::Relaxed),
        mods: GenStats::get(&stats.mods),
        kept_mods: GenStats::get(&stats.kept_mods),
        wall_seconds: run.wall.as_secs_f64(),
        cpu_seconds: run.cpu,
    }
}

/// Runs one memory scenario in a child process (so the peak RSS is its own).
fn memory(options: &Options, max_ahead_seconds: u64) -> Result<MemoryResult, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let output = std::process::Command::new(exe)
        .args([
            "--scenario",
            "memory-child",
            "--memory-rate",
            &options.memory_rate.to_string(),
            "--memory-seconds",
            &options.memory_seconds.to_string(),
            "--lag",
            &options.lag_seconds.to_string(),
            "--max-ahead",
            &max_ahead_seconds.to_string(),
            "--no-pin",
        ])
        .output()
        .map_err(|e| format!("cannot start the memory run: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("MEMORY-RESULT "))
        .ok_or_else(|| {
            format!(
                "the memory run failed ({}):\n{}{}",
                output.status,
                stdout,
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    serde_json::from_str(line).map_err(|e| e.to_string())
}

// ------------------------------------------------------------------------------------------
// Report

fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn main() -> ExitCode {
    let options = match Options::parse() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let cpu = if options.pin { pin_to_one_cpu() } else { None };
    if options.scenario == Scenario::Generate {
        let stats = Arc::new(GenStats::default());
        let excluded = Arc::new(Excluded::default());
        for (_, input) in throughput_inputs(&options, &stats, &excluded) {
            if let Input::Generated(rows, _, _) = input {
                // Not dropped: in the reader's run, dropping is the reader's work.
                rows.for_each(std::mem::forget);
            }
        }
        println!(
            "generated {} mods in {:.2} s",
            GenStats::get(&stats.mods),
            excluded.wall().as_secs_f64()
        );
        return ExitCode::SUCCESS;
    }
    if options.scenario == Scenario::MemoryChild {
        let result = memory_child(&options);
        println!(
            "MEMORY-RESULT {}",
            serde_json::to_string(&result).expect("serializable")
        );
        return ExitCode::SUCCESS;
    }

    println!(
        "revrepl reader benchmark: current-thread runtime, {}",
        match cpu {
            Some(cpu) => format!("process pinned to CPU {cpu}"),
            None => "not pinned".to_string(),
        }
    );
    let mut missed = Vec::new();

    if matches!(options.scenario, Scenario::All | Scenario::Memory) {
        println!(
            "\nmemory: {} mods/s of commit time for {} s in 4 partitions, generated while read; \
             the slow one falls {} s behind, then catches up",
            thousands(options.memory_rate as f64),
            options.memory_seconds,
            options.lag_seconds
        );
        let mut runs = vec![(options.max_ahead_seconds, true)];
        if options.control {
            runs.push((24 * 3600, false));
        }
        for (max_ahead, gated) in runs {
            match memory(&options, max_ahead) {
                Ok(m) => {
                    let label = if gated {
                        format!("max_ahead {max_ahead} s")
                    } else {
                        "no pause (control)".to_string()
                    };
                    println!(
                        "  {label:<20} peak RSS {:>6.1} MiB   most mods held {:>9}   others led by up to {:>5.1} s   \
                         {} stalls   ({} mods in {:.1} s, {:.1} CPU s)",
                        m.peak_rss_mib,
                        thousands(m.max_held_mods as f64),
                        m.max_lead_seconds,
                        m.stalls,
                        thousands(m.mods as f64),
                        m.wall_seconds,
                        m.cpu_seconds
                    );
                    if gated && (m.peak_rss_mib.is_nan() || m.peak_rss_mib > TARGET_PEAK_RSS_MIB) {
                        missed.push(format!(
                            "peak RSS {:.1} MiB > {TARGET_PEAK_RSS_MIB} MiB",
                            m.peak_rss_mib
                        ));
                    }
                }
                Err(e) => {
                    println!("  memory run failed: {e}");
                    if gated {
                        missed.push("the memory run failed".to_string());
                    }
                }
            }
        }
    }

    if matches!(options.scenario, Scenario::All | Scenario::Throughput) {
        let t = throughput(&options, options.baseline);
        let ours_rate = t.mods as f64 / t.ours.wall.as_secs_f64();
        println!(
            "\nthroughput: {} mods in {} data-change records, {} heartbeats, {} child-partition \
             records, {} partition queries (a split, a merge), {} s of commit time, {} shards; \
             {} mods filtered (txBy=), {} to skip/",
            thousands(t.mods as f64),
            thousands(t.records as f64),
            thousands(t.heartbeats as f64),
            t.child_records,
            t.partitions,
            options.seconds,
            SHARDS,
            thousands(t.filtered as f64),
            thousands(t.skipped as f64),
        );
        println!(
            "  reader     {:>9} mods/s   wall {:>6.2} s   CPU {:>6.2} s   {} files, {} lines \
             (generating the input took {:.1} s more, not counted)",
            thousands(ours_rate),
            t.ours.wall.as_secs_f64(),
            t.ours.cpu,
            t.ours.summary.files_written,
            thousands(t.ours.lines as f64),
            t.ours_excluded.as_secs_f64()
        );
        if let Some(b) = &t.baseline {
            let base_rate = t.mods as f64 / b.wall.as_secs_f64();
            println!(
                "  baseline   {:>9} mods/s   wall {:>6.2} s   CPU {:>6.2} s   {} files, {:.0} MiB \
                 (parse the rows as JSON lines, write them unchanged)",
                thousands(base_rate),
                b.wall.as_secs_f64(),
                b.cpu,
                b.files,
                b.json_bytes as f64 / (1024.0 * 1024.0)
            );
            println!(
                "  ratio      {:.2} of the baseline's rate; reader {} mods per CPU second",
                ours_rate / base_rate,
                thousands(t.mods as f64 / t.ours.cpu)
            );
            std::hint::black_box(b.excluded);
        }
        if ours_rate < TARGET_MODS_PER_SECOND {
            missed.push(format!(
                "{} mods/s < {} mods/s",
                thousands(ours_rate),
                thousands(TARGET_MODS_PER_SECOND)
            ));
        }
    }

    if missed.is_empty() {
        println!(
            "\ntargets met: >= {} mods/s, peak RSS <= {TARGET_PEAK_RSS_MIB} MiB",
            thousands(TARGET_MODS_PER_SECOND)
        );
        ExitCode::SUCCESS
    } else {
        println!("\nTARGET MISSED: {}", missed.join("; "));
        ExitCode::FAILURE
    }
}
