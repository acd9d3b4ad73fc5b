//! A generated, seeded simulation of the reader pipeline, checked against a model.
//!
//! Each seed builds a change stream: partitions that split, merge and move at random (their
//! child partitions announced in one or several records per query), transactions whose records
//! are spread over the partitions alive at their commit time and over shards, heartbeats with
//! gaps (late first records), and forward-migration transactions to drop. The real pipeline
//! reads it through a source that answers partition queries as Spanner does (records at or
//! after the query's start), a real local-directory buffer and a real SQLite metadata store.
//!
//! Faults, drawn from the seed: a transient error after any record, a query failing to start,
//! a query ending early without child partitions, a stall, the duplicate replays that every
//! re-query causes, a buffer write failing (before or after the object is written), a metadata
//! write failing, and process restarts (the pipeline dropped at a random moment and resumed
//! from the metadata store, as `--mode resume` does).
//!
//! Checked for every seed:
//! - every kept mod is in exactly one file, the one of its shard and window; no dropped mod is;
//! - the files are byte-identical to those of a fault-free run of the same stream;
//! - no window is recorded in the metadata store before its file exists;
//! - `created_upto` never moves backwards, and ends at `until` for every shard;
//! - the run finishes: every pipeline run has a deadline, a hang is a failure.
//!
//! `SIM_SEEDS=N` runs seeds 0..N (default 500) split over the `simulation_seeds_*` tests;
//! `SIM_SEED=s` with `simulation_replays_one_seed` replays one (the failure message prints the
//! command).

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, stream};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use revrepl_metadata::{
    CreateProgress, CreatedWindows, Lease, LeaseAttempt, MetadataError, MetadataStore,
    MissingTables, ProcessProgress, ProcessStatus, RunId, RunRecord, ShardError,
    SqliteMetadataStore, SqliteOptions, TableNames,
};
use revrepl_reader::ReaderError;
use revrepl_reader::change_stream::{
    ChangeStreamRecord, ChildPartition, ChildPartitionsRecord, DataChangeRecord, ModKind, ModValues,
};
use revrepl_reader::partition::Token;
use revrepl_reader::pipeline::{PipelineParts, PipelineSettings, run_pipeline};
use revrepl_reader::routing::{RecordFilter, TableFilter};
use revrepl_reader::source::{ChangeStreamSource, RecordStream};
use revrepl_reader::telemetry::ReaderMetrics;
use revrepl_record::buffer::{BufferError, LocalDirectory, PutOutcome};
use revrepl_record::{
    Backoff, BufferStore, Destination, ErrorClass, ShardId, Timestamp, WindowDuration,
    WindowFileName, decode_window_file,
};
use revrepl_shard_routing::{SessionRouter, ShardAssigner};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

mod common;

/// Stream time starts here (seconds); the model works in microseconds after it.
const START_SECONDS: i64 = 100;
const SHARDS: [&str; 3] = ["s1", "s2", "s3"];
/// How long one pipeline run may take before the simulation calls it a hang.
const RUN_DEADLINE: Duration = Duration::from_secs(30);

fn at(micros: i64) -> Timestamp {
    Timestamp::from_nanos(i128::from(START_SECONDS) * 1_000_000_000 + i128::from(micros) * 1_000)
        .expect("in range")
}

fn micros_of(ts: Timestamp) -> i64 {
    let nanos = ts.as_nanos() - i128::from(START_SECONDS) * 1_000_000_000;
    // Round up: a start inside a microsecond excludes records earlier in it.
    i64::try_from((nanos + 999).div_euclid(1_000)).expect("small")
}

/// One record a partition sends, at `micros`.
#[derive(Debug, Clone)]
enum Event {
    Data(Box<DataChangeRecord>),
    Heartbeat,
}

#[derive(Debug, Clone)]
struct Partition {
    start: i64,
    /// Where it ends (its children start); `None` lives past the end of the run.
    end: Option<i64>,
    /// Its children, each with all its parents.
    children: Vec<ChildPartition>,
    /// Sorted by time; a heartbeat comes after every record at or before its time.
    events: Vec<(i64, Event)>,
}

/// A mod the model expects in a file: (path, commit, transaction, sequence, keys).
type ExpectedMod = (String, Timestamp, String, String, String);

#[derive(Debug)]
struct Scenario {
    window: WindowDuration,
    until: Timestamp,
    max_ahead: Duration,
    partitions: BTreeMap<String, Partition>,
    expected: Vec<ExpectedMod>,
    transactions: usize,
}

fn window_of(window: WindowDuration, commit: Timestamp) -> revrepl_record::Window {
    window.window_of(commit).expect("window")
}

impl Scenario {
    fn generate(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let window_seconds = [1i64, 2, 5][rng.random_range(0..3)];
        let window: WindowDuration = format!("{window_seconds}s").parse().expect("window");
        let length: i64 = rng.random_range(3..=8) * window_seconds * 1_000_000;
        let until = at(length);
        let until_end = window_of(window, until).start();
        let until_end = if until_end == until {
            until
        } else {
            window_of(window, until).end()
        };
        let max_ahead = [
            Duration::from_secs(1),
            Duration::from_secs(3),
            Duration::from_secs(3600),
        ][rng.random_range(0..3)];

        // Topology: partitions alive at the start, then splits, merges and moves.
        let mut partitions: BTreeMap<String, Partition> = BTreeMap::new();
        let mut next_token = 0;
        let mut token = |prefix: &str| {
            next_token += 1;
            format!("{prefix}{next_token:03}")
        };
        let mut alive: Vec<String> = Vec::new();
        for _ in 0..rng.random_range(1..=3) {
            let t = token("p");
            partitions.insert(t.clone(), new_partition(0));
            alive.push(t);
        }
        let mut changes: Vec<i64> = (0..rng.random_range(0..=7))
            .map(|_| rng.random_range(1..length))
            .collect();
        changes.sort_unstable();
        changes.dedup();
        for when in changes {
            let action = rng.random_range(0..3);
            if action == 1 && alive.len() >= 2 {
                // Merge two into one child, announced by both.
                alive.shuffle(&mut rng);
                let (a, b) = (alive.remove(0), alive.remove(0));
                let child = token("m");
                let parents = vec![a.clone(), b.clone()];
                for parent in [&a, &b] {
                    let p = partitions.get_mut(parent).expect("known");
                    p.end = Some(when);
                    p.children = vec![ChildPartition {
                        token: child.clone(),
                        parent_partition_tokens: parents.clone(),
                    }];
                }
                partitions.insert(child.clone(), new_partition(when));
                alive.push(child);
            } else {
                // Split into two or three, or move (one child).
                let index = rng.random_range(0..alive.len());
                let parent = alive.remove(index);
                let count = if action == 2 {
                    1
                } else {
                    rng.random_range(2..=3)
                };
                let mut kids = Vec::new();
                for _ in 0..count {
                    let child = token("c");
                    partitions.insert(child.clone(), new_partition(when));
                    alive.push(child.clone());
                    kids.push(ChildPartition {
                        token: child,
                        parent_partition_tokens: vec![parent.clone()],
                    });
                }
                let p = partitions.get_mut(&parent).expect("known");
                p.end = Some(when);
                p.children = kids;
            }
        }

        // Transactions: records spread over the partitions alive at the commit time.
        let mut expected = Vec::new();
        let mut commits: Vec<i64> = Vec::new();
        let transactions = rng.random_range(3..=25);
        let mut next_id = 0u32;
        for n in 0..transactions {
            let commit = if !commits.is_empty() && rng.random_bool(0.2) {
                commits[rng.random_range(0..commits.len())]
            } else {
                rng.random_range(0..length)
            };
            commits.push(commit);
            let alive_then: Vec<String> = partitions
                .iter()
                .filter(|(_, p)| p.start <= commit && p.end.is_none_or(|end| commit < end))
                .map(|(t, _)| t.clone())
                .collect();
            let txn = format!("tx{n:03}");
            let forward = rng.random_bool(0.1);
            let records = rng.random_range(1..=3usize);
            for sequence in 0..records {
                let partition = &alive_then[rng.random_range(0..alive_then.len())];
                let mods: Vec<(u32, &str)> = (0..rng.random_range(1..=3))
                    .map(|_| {
                        next_id += 1;
                        (next_id, SHARDS[rng.random_range(0..SHARDS.len())])
                    })
                    .collect();
                let record = data_record(&txn, sequence, records, commit, &mods, forward);
                if !forward {
                    for (id, shard) in &mods {
                        let shard = ShardId::new(*shard).expect("shard");
                        let path = WindowFileName::new(
                            Destination::Shard(shard),
                            window_of(window, at(commit)),
                        )
                        .path();
                        expected.push((
                            path,
                            at(commit),
                            txn.clone(),
                            format!("{sequence:08}"),
                            json!({"id": id.to_string()}).to_string(),
                        ));
                    }
                }
                partitions
                    .get_mut(partition)
                    .expect("alive")
                    .events
                    .push((commit, Event::Data(Box::new(record))));
            }
        }

        // Heartbeats: some partitions send none for long stretches (a late first record);
        // those alive at the end send one past the end of the run.
        let final_beat = micros_of(until_end) + window_seconds * 1_000_000 + 1;
        for p in partitions.values_mut() {
            let last = p.end.map_or(final_beat, |end| end - 1);
            if last <= p.start {
                continue;
            }
            let quiet_until = if rng.random_bool(0.3) {
                rng.random_range(p.start..=last)
            } else {
                p.start
            };
            let beats = rng.random_range(0..=6);
            for _ in 0..beats {
                let when = rng.random_range(quiet_until..=last);
                p.events.push((when, Event::Heartbeat));
            }
            if p.end.is_none() {
                p.events.push((final_beat, Event::Heartbeat));
            }
            p.events
                .sort_by(|(a, x), (b, y)| a.cmp(b).then_with(|| order_key(x).cmp(&order_key(y))));
        }
        expected.sort();
        Self {
            window,
            until,
            max_ahead,
            partitions,
            expected,
            transactions,
        }
    }

    /// The records of a query of `token` (`None`: the initial query) from `start`, in order;
    /// `true` when the query ends after them (otherwise it stays open).
    fn answer(
        &self,
        token: &Token,
        start: Timestamp,
        rng: &mut StdRng,
    ) -> (Vec<ChangeStreamRecord>, bool) {
        let from = micros_of(start);
        match token {
            None => {
                let alive: Vec<ChildPartition> = self
                    .partitions
                    .iter()
                    .filter(|(_, p)| p.start <= from && p.end.is_none_or(|end| from < end))
                    .map(|(t, _)| ChildPartition {
                        token: t.clone(),
                        parent_partition_tokens: Vec::new(),
                    })
                    .collect();
                (child_records(start, alive, rng), true)
            }
            Some(token) => {
                let Some(p) = self.partitions.get(token) else {
                    return (Vec::new(), false);
                };
                let mut records: Vec<ChangeStreamRecord> = p
                    .events
                    .iter()
                    .filter(|(when, _)| *when >= from)
                    .map(|(when, event)| match event {
                        Event::Data(record) => ChangeStreamRecord::DataChange((**record).clone()),
                        Event::Heartbeat => ChangeStreamRecord::Heartbeat(at(*when)),
                    })
                    .collect();
                match p.end {
                    Some(end) => {
                        records.extend(child_records(at(end), p.children.clone(), rng));
                        (records, true)
                    }
                    None => (records, false),
                }
            }
        }
    }
}

fn new_partition(start: i64) -> Partition {
    Partition {
        start,
        end: None,
        children: Vec::new(),
        events: Vec::new(),
    }
}

/// Data before heartbeats at one time, then by transaction and sequence.
fn order_key(event: &Event) -> (u8, String, String) {
    match event {
        Event::Data(r) => (
            0,
            r.server_transaction_id.clone(),
            r.record_sequence.clone(),
        ),
        Event::Heartbeat => (1, String::new(), String::new()),
    }
}

/// `children` announced in one or several child-partitions records at `start`.
fn child_records(
    start: Timestamp,
    children: Vec<ChildPartition>,
    rng: &mut StdRng,
) -> Vec<ChangeStreamRecord> {
    if children.is_empty() {
        return Vec::new();
    }
    let groups = rng.random_range(1..=children.len());
    let mut records: Vec<Vec<ChildPartition>> = vec![Vec::new(); groups];
    for (i, child) in children.into_iter().enumerate() {
        records[i % groups].push(child);
    }
    records
        .into_iter()
        .map(|child_partitions| {
            ChangeStreamRecord::ChildPartitions(ChildPartitionsRecord {
                start_timestamp: start,
                record_sequence: "00000000".into(),
                child_partitions,
            })
        })
        .collect()
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn data_record(
    txn: &str,
    sequence: usize,
    records: usize,
    commit: i64,
    mods: &[(u32, &str)],
    forward: bool,
) -> DataChangeRecord {
    DataChangeRecord {
        commit_timestamp: at(commit),
        record_sequence: format!("{sequence:08}"),
        server_transaction_id: txn.into(),
        is_last_record_in_transaction_in_partition: true,
        table_name: "Users".into(),
        column_types: Vec::new(),
        mods: mods
            .iter()
            .map(|(id, shard)| ModValues {
                keys: object(json!({"id": id.to_string()})),
                new_values: object(json!({"shard": shard, "v": format!("{txn}-{id}")})),
                old_values: Map::new(),
            })
            .collect(),
        mod_type: ModKind::Insert,
        value_capture_type: "NEW_ROW".into(),
        number_of_records_in_transaction: i64::try_from(records).expect("small"),
        number_of_partitions_in_transaction: 1,
        transaction_tag: if forward {
            "txBy=forward-migration".into()
        } else {
            String::new()
        },
        is_system_transaction: false,
    }
}

/// Answers partition queries from a [`Scenario`], with faults drawn per query.
#[derive(Debug)]
struct SimulatedSource {
    scenario: Arc<Scenario>,
    faults: bool,
    seed: u64,
    queries: Mutex<HashMap<Token, u32>>,
}

/// What goes wrong with one query.
#[derive(Debug, Clone, Copy)]
enum QueryFault {
    None,
    FailToStart,
    ErrorAfter(usize),
    EndAfter(usize),
    StallAfter(usize),
}

impl SimulatedSource {
    fn fault(
        &self,
        token: &Token,
        attempt: u32,
        records: usize,
        data_records: usize,
    ) -> (QueryFault, StdRng) {
        let name = token.as_deref().unwrap_or("initial");
        let mut hash = self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(attempt);
        for b in name.bytes() {
            hash = hash.rotate_left(7) ^ u64::from(b);
        }
        let mut rng = StdRng::seed_from_u64(hash);
        // Faults stop after a few attempts, so every partition gets through in the end.
        if !self.faults || attempt > 6 || rng.random_bool(0.45) {
            return (QueryFault::None, rng);
        }
        let k = rng.random_range(0..=records);
        let fault = match rng.random_range(0..4) {
            0 => QueryFault::FailToStart,
            1 => QueryFault::ErrorAfter(k),
            // A query that ends normally has sent every child-partitions record or none.
            2 if k < records => QueryFault::EndAfter(k.min(data_records)),
            _ => QueryFault::StallAfter(k),
        };
        (fault, rng)
    }
}

fn transient(message: &str) -> ReaderError {
    ReaderError::Query {
        location: "simulated".into(),
        partition: "p".into(),
        message: message.into(),
        class: ErrorClass::Transient,
    }
}

#[async_trait]
impl ChangeStreamSource for SimulatedSource {
    async fn query(&self, token: &Token, start: Timestamp) -> Result<RecordStream, ReaderError> {
        let attempt = {
            let mut queries = self.queries.lock().expect("lock");
            let n = queries.entry(token.clone()).or_default();
            *n += 1;
            *n
        };
        // The grouping of child records is drawn from the seed alone, so fault-free runs of
        // a seed are identical.
        let mut grouping = StdRng::seed_from_u64(self.seed ^ u64::from(attempt));
        let (records, ends) = self.scenario.answer(token, start, &mut grouping);
        let before_children = records
            .iter()
            .take_while(|r| !matches!(r, ChangeStreamRecord::ChildPartitions(_)))
            .count();
        let (fault, _) = self.fault(token, attempt, records.len(), before_children);
        tracing::debug!(partition = ?token, %start, attempt, ?fault, records = records.len(), "simulated query");
        let items = |n: usize| -> Vec<Result<ChangeStreamRecord, ReaderError>> {
            records.iter().take(n).cloned().map(Ok).collect()
        };
        let open = |items: Vec<Result<ChangeStreamRecord, ReaderError>>| -> RecordStream {
            Box::pin(stream::iter(items).chain(stream::pending()))
        };
        Ok(match fault {
            QueryFault::FailToStart => return Err(transient("simulated: query refused")),
            QueryFault::None if ends => Box::pin(stream::iter(items(records.len()))),
            QueryFault::None => open(items(records.len())),
            QueryFault::ErrorAfter(k) => {
                let mut items = items(k);
                items.push(Err(transient("simulated: stream reset")));
                Box::pin(stream::iter(items))
            }
            QueryFault::EndAfter(k) => Box::pin(stream::iter(items(k))),
            QueryFault::StallAfter(k) => open(items(k)),
        })
    }

    fn location(&self) -> &str {
        "simulated"
    }
}

/// A local directory whose writes fail at random, before or after the object is written.
#[derive(Debug)]
struct FlakyBuffer {
    inner: LocalDirectory,
    rng: Mutex<Option<StdRng>>,
    failures: Mutex<HashMap<String, u32>>,
}

impl FlakyBuffer {
    fn failure(&self, path: &str) -> Option<bool> {
        let mut rng = self.rng.lock().expect("lock");
        let rng = rng.as_mut()?;
        let mut failures = self.failures.lock().expect("lock");
        let count = failures.entry(path.to_string()).or_default();
        if *count >= 2 || !rng.random_bool(0.25) {
            return None;
        }
        *count += 1;
        Some(rng.random_bool(0.5))
    }
}

#[async_trait]
impl BufferStore for FlakyBuffer {
    async fn put_if_absent(&self, path: &str, bytes: Bytes) -> Result<PutOutcome, BufferError> {
        let failure = self.failure(path);
        let error = || BufferError::Io {
            operation: "write",
            location: "simulated".into(),
            path: path.to_string(),
            source: std::io::Error::other("simulated write failure"),
        };
        match failure {
            Some(false) => Err(error()),
            Some(true) => {
                // Written, but the caller is told it failed.
                self.inner.put_if_absent(path, bytes).await?;
                Err(error())
            }
            None => self.inner.put_if_absent(path, bytes).await,
        }
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

/// The SQLite store, checking on each `record_windows` that the files of the windows with data
/// exist and that `created_upto` does not move backwards; it also fails some writes.
#[derive(Debug)]
struct CheckedMetadata {
    inner: SqliteMetadataStore,
    buffer: Arc<LocalDirectory>,
    window: WindowDuration,
    violations: Mutex<Vec<String>>,
    recorded_upto: Mutex<Option<Timestamp>>,
    rng: Mutex<Option<StdRng>>,
}

#[async_trait]
impl MetadataStore for CheckedMetadata {
    fn location(&self) -> &str {
        self.inner.location()
    }

    fn tables(&self) -> &TableNames {
        self.inner.tables()
    }

    async fn ensure_tables(&self, missing: MissingTables) -> Result<(), MetadataError> {
        self.inner.ensure_tables(missing).await
    }

    async fn record_run(&self, run: &RunRecord) -> Result<(), MetadataError> {
        self.inner.record_run(run).await
    }

    async fn run(&self, run_id: &RunId) -> Result<Option<RunRecord>, MetadataError> {
        self.inner.run(run_id).await
    }

    async fn register_shards(
        &self,
        run_id: &RunId,
        shards: &[ShardId],
        created_upto: Timestamp,
    ) -> Result<(), MetadataError> {
        self.inner
            .register_shards(run_id, shards, created_upto)
            .await
    }

    async fn record_windows(
        &self,
        run_id: &RunId,
        windows: &CreatedWindows,
    ) -> Result<(), MetadataError> {
        let fail = self
            .rng
            .lock()
            .expect("lock")
            .as_mut()
            .is_some_and(|rng| rng.random_bool(0.1));
        if fail {
            return Err(MetadataError::Unavailable {
                store: "simulated".into(),
                operation: "record windows".into(),
                message: "simulated failure".into(),
            });
        }
        let mut problems = Vec::new();
        for (shard, end) in windows.seen() {
            let last = Timestamp::from_nanos(end.as_nanos() - 1).expect("ts");
            let path = WindowFileName::new(
                Destination::Shard(shard.clone()),
                window_of(self.window, last),
            )
            .path();
            if self.buffer.get(&path).await.ok().flatten().is_none() {
                problems.push(format!("window {path} recorded before its file exists"));
            }
        }
        {
            let mut last = self.recorded_upto.lock().expect("lock");
            if last.is_some_and(|last| windows.upto() < last) {
                problems.push(format!(
                    "created_upto moved backwards from {last:?} to {}",
                    windows.upto()
                ));
            }
            *last = Some(last.map_or(windows.upto(), |l| l.max(windows.upto())));
        }
        self.violations.lock().expect("lock").extend(problems);
        self.inner.record_windows(run_id, windows).await
    }

    async fn created_upto(
        &self,
        run_id: &RunId,
        shard: &ShardId,
    ) -> Result<Option<Timestamp>, MetadataError> {
        self.inner.created_upto(run_id, shard).await
    }

    async fn create_progress(&self, run_id: &RunId) -> Result<Vec<CreateProgress>, MetadataError> {
        self.inner.create_progress(run_id).await
    }

    async fn windows_with_data(
        &self,
        run_id: &RunId,
        shard: &ShardId,
        ends: RangeInclusive<Timestamp>,
        limit: usize,
    ) -> Result<Vec<Timestamp>, MetadataError> {
        self.inner
            .windows_with_data(run_id, shard, ends, limit)
            .await
    }

    async fn set_process_progress(
        &self,
        run_id: &RunId,
        progress: &ProcessProgress,
    ) -> Result<(), MetadataError> {
        self.inner.set_process_progress(run_id, progress).await
    }

    async fn process_progress(
        &self,
        run_id: &RunId,
        shard: &ShardId,
    ) -> Result<Option<ProcessProgress>, MetadataError> {
        self.inner.process_progress(run_id, shard).await
    }

    async fn list_process_progress(
        &self,
        run_id: &RunId,
        status: Option<ProcessStatus>,
    ) -> Result<Vec<ProcessProgress>, MetadataError> {
        self.inner.list_process_progress(run_id, status).await
    }

    async fn record_shard_error(
        &self,
        run_id: &RunId,
        shard: &ShardId,
        window_start: Timestamp,
        error: &str,
    ) -> Result<(), MetadataError> {
        self.inner
            .record_shard_error(run_id, shard, window_start, error)
            .await
    }

    async fn shard_errors(&self, run_id: &RunId) -> Result<Vec<ShardError>, MetadataError> {
        self.inner.shard_errors(run_id).await
    }

    async fn acquire_lease(
        &self,
        run_id: &RunId,
        role: &str,
        owner: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<LeaseAttempt, MetadataError> {
        self.inner
            .acquire_lease(run_id, role, owner, now, expires_at)
            .await
    }

    async fn release_lease(
        &self,
        run_id: &RunId,
        role: &str,
        owner: &str,
    ) -> Result<(), MetadataError> {
        self.inner.release_lease(run_id, role, owner).await
    }

    async fn leases(&self, run_id: &RunId) -> Result<Vec<Lease>, MetadataError> {
        self.inner.leases(run_id).await
    }
}

/// What one simulated run left behind.
struct Outcome {
    files: BTreeMap<String, Bytes>,
    restarts: u32,
}

/// Runs the pipeline over `scenario` until `until` is recorded, with or without faults.
async fn simulate(scenario: &Arc<Scenario>, seed: u64, faults: bool) -> Result<Outcome, String> {
    // Memory-backed when available: the files and the store still sync, but cheaply, so that
    // hundreds of seeds run in seconds.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .map_err(|e| e.to_string())?;
    let local = Arc::new(LocalDirectory::new(dir.path().join("buffer")));
    let buffer = Arc::new(FlakyBuffer {
        inner: LocalDirectory::new(dir.path().join("buffer")),
        rng: Mutex::new(faults.then(|| StdRng::seed_from_u64(seed ^ 0xB0FF))),
        failures: Mutex::new(HashMap::new()),
    });
    let sqlite = SqliteMetadataStore::open(dir.path().join("meta.db"), SqliteOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let metadata = Arc::new(CheckedMetadata {
        inner: sqlite,
        buffer: Arc::clone(&local),
        window: scenario.window,
        violations: Mutex::new(Vec::new()),
        recorded_upto: Mutex::new(None),
        rng: Mutex::new(faults.then(|| StdRng::seed_from_u64(seed ^ 0x3E7A))),
    });
    metadata
        .inner
        .ensure_tables(MissingTables::Create)
        .await
        .map_err(|e| e.to_string())?;
    let run_id = RunId::new("sim").map_err(|e| e.to_string())?;
    let shards: Vec<ShardId> = SHARDS
        .iter()
        .map(|s| ShardId::new(*s).expect("id"))
        .collect();
    metadata
        .inner
        .record_run(
            &RunRecord::new(run_id.clone(), at(0), scenario.window).map_err(|e| e.to_string())?,
        )
        .await
        .map_err(|e| e.to_string())?;
    metadata
        .inner
        .register_shards(&run_id, &shards, at(0))
        .await
        .map_err(|e| e.to_string())?;
    let source = Arc::new(SimulatedSource {
        scenario: Arc::clone(scenario),
        faults,
        seed,
        queries: Mutex::new(HashMap::new()),
    });
    let session = revrepl_shard_routing::Session::from_json("simulation session", common::SESSION)
        .map_err(|e| e.to_string())?;
    let assigner = Arc::new(ShardAssigner::new(
        Box::new(SessionRouter::new(Arc::new(session))),
        shards.clone(),
    ));
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5EED);
    let planned_restarts = if faults { rng.random_range(0..=2) } else { 0 };
    let mut restarts = 0;
    loop {
        let start = metadata
            .inner
            .min_created_upto(&run_id)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or(at(0));
        let settings = PipelineSettings {
            run_id: run_id.clone(),
            window: scenario.window,
            start,
            read_from: start,
            until: Some(scenario.until),
            filter: RecordFilter::default(),
            tables: TableFilter::default(),
            max_ahead: scenario.max_ahead,
            stall_timeout: Duration::from_millis(if faults { 15 } else { 2_000 }),
            retry: Backoff {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(4),
                multiplier: 2,
                max_attempts: None,
            },
            event_capacity: rng.random_range(1..=8),
        };
        let parts = PipelineParts {
            source: Arc::clone(&source) as Arc<dyn ChangeStreamSource>,
            assigner: Arc::clone(&assigner),
            buffer: Arc::clone(&buffer) as Arc<dyn BufferStore>,
            metadata: Arc::clone(&metadata) as Arc<dyn MetadataStore>,
            shards: shards.clone(),
            metrics: ReaderMetrics::global(),
        };
        let cancel = CancellationToken::new();
        if restarts < planned_restarts {
            // The process dies at a random moment.
            let kill = cancel.clone();
            let after = Duration::from_millis(rng.random_range(0..20));
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                kill.cancel();
            });
        }
        let summary = tokio::time::timeout(RUN_DEADLINE, run_pipeline(settings, parts, cancel))
            .await
            .map_err(|_| format!("hang: the pipeline did not finish within {RUN_DEADLINE:?}"))?
            .map_err(|e| format!("the pipeline failed: {e}"))?;
        if summary.reached_until {
            break;
        }
        restarts += 1;
        if restarts > planned_restarts {
            return Err("the pipeline stopped before `until` without being cancelled".into());
        }
    }

    let violations = metadata.violations.lock().expect("lock").clone();
    if !violations.is_empty() {
        return Err(violations.join("; "));
    }
    let until_end = {
        let w = window_of(scenario.window, scenario.until);
        if w.start() == scenario.until {
            scenario.until
        } else {
            w.end()
        }
    };
    for shard in &shards {
        let created = metadata
            .inner
            .created_upto(&run_id, shard)
            .await
            .map_err(|e| e.to_string())?;
        if created != Some(until_end) {
            return Err(format!(
                "shard {shard} is created up to {created:?}, not {until_end}"
            ));
        }
    }
    let mut files = BTreeMap::new();
    for path in local.list("").await.map_err(|e| e.to_string())? {
        let bytes = local
            .get(&path)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{path} listed but missing"))?;
        files.insert(path, bytes);
    }
    Ok(Outcome { files, restarts })
}

/// The mods in `files`, as the model lists them.
fn mods_in(files: &BTreeMap<String, Bytes>) -> Result<Vec<ExpectedMod>, String> {
    let mut found = Vec::new();
    for (path, bytes) in files {
        let records = decode_window_file(bytes).map_err(|e| format!("{path}: {e}"))?;
        for r in records {
            found.push((
                path.clone(),
                r.commit_timestamp,
                r.server_transaction_id.clone(),
                r.record_sequence.clone(),
                r.the_mod().keys_json.clone(),
            ));
        }
    }
    found.sort();
    Ok(found)
}

fn difference(expected: &[ExpectedMod], found: &[ExpectedMod]) -> String {
    let missing: Vec<_> = expected
        .iter()
        .filter(|m| !found.contains(m))
        .take(3)
        .collect();
    let extra: Vec<_> = found
        .iter()
        .filter(|m| !expected.contains(m))
        .take(3)
        .collect();
    format!(
        "{} expected, {} found; missing (first 3): {missing:?}; unexpected or duplicated (first 3): {extra:?}",
        expected.len(),
        found.len()
    )
}

/// Runs one seed: a fault-free run and a faulted run, both checked against the model.
async fn check_seed(seed: u64) -> Result<String, String> {
    let scenario = Arc::new(Scenario::generate(seed));
    let timer = std::time::Instant::now();
    let clean = simulate(&scenario, seed, false)
        .await
        .map_err(|e| format!("fault-free run: {e}"))?;
    let found = mods_in(&clean.files)?;
    if found != scenario.expected {
        return Err(format!(
            "fault-free run: files differ from the model: {}",
            difference(&scenario.expected, &found)
        ));
    }
    let clean_time = timer.elapsed();
    let faulted = simulate(&scenario, seed, true)
        .await
        .map_err(|e| format!("faulted run: {e}"))?;
    let found = mods_in(&faulted.files)?;
    if found != scenario.expected {
        return Err(format!(
            "faulted run: files differ from the model: {}",
            difference(&scenario.expected, &found)
        ));
    }
    if faulted.files != clean.files {
        let differing: Vec<&String> = clean
            .files
            .keys()
            .chain(faulted.files.keys())
            .filter(|p| clean.files.get(*p) != faulted.files.get(*p))
            .take(3)
            .collect();
        return Err(format!(
            "faulted run's files are not byte-identical to the fault-free run's: {differing:?}"
        ));
    }
    if std::env::var_os("SIM_TIMING").is_some() {
        eprintln!(
            "seed {seed}: clean {clean_time:?}, faulted {:?}",
            timer.elapsed() - clean_time
        );
    }
    Ok(format!(
        "{} partitions, {} transactions, {} mods, {} files, {} restarts",
        scenario.partitions.len(),
        scenario.transactions,
        scenario.expected.len(),
        clean.files.len(),
        faulted.restarts
    ))
}

fn replay_command(seed: u64) -> String {
    format!(
        "SIM_SEED={seed} cargo nextest run -p revrepl-reader --test simulation \
         simulation_replays_one_seed --no-capture"
    )
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs this part's share of seeds 0..SIM_SEEDS; fails with every failing seed's replay command.
async fn run_part(part: u64) {
    const PARTS: u64 = 4;
    let seeds = env_number("SIM_SEEDS", 500);
    let mut failures = Vec::new();
    let mut ran = 0;
    for seed in (0..seeds).filter(|s| s % PARTS == part) {
        ran += 1;
        if let Err(e) = check_seed(seed).await {
            failures.push(format!(
                "seed {seed}: {e}\n  replay: {}",
                replay_command(seed)
            ));
        }
    }
    assert!(ran > 0 || seeds < PARTS, "no seeds ran");
    assert!(
        failures.is_empty(),
        "{} of {ran} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn simulation_seeds_part_0() {
    run_part(0).await;
}

#[tokio::test]
async fn simulation_seeds_part_1() {
    run_part(1).await;
}

#[tokio::test]
async fn simulation_seeds_part_2() {
    run_part(2).await;
}

#[tokio::test]
async fn simulation_seeds_part_3() {
    run_part(3).await;
}

/// Replays `SIM_SEED` (seed 0 when unset), printing what it generated.
#[tokio::test]
async fn simulation_replays_one_seed() {
    let seed = env_number("SIM_SEED", 0);
    if std::env::var_os("RUST_LOG").is_some() {
        revrepl_telemetry::init_logging();
    }
    let scenario = Scenario::generate(seed);
    eprintln!(
        "seed {seed}: window {}, until {}, max_ahead {:?}",
        scenario.window, scenario.until, scenario.max_ahead
    );
    for (token, p) in &scenario.partitions {
        let children: Vec<&str> = p.children.iter().map(|c| c.token.as_str()).collect();
        eprintln!(
            "  {token}: [{}, {:?}) children {children:?}, {} events",
            p.start,
            p.end,
            p.events.len()
        );
    }
    match check_seed(seed).await {
        Ok(summary) => eprintln!("seed {seed}: {summary}"),
        Err(e) => panic!("seed {seed}: {e}\n  replay: {}", replay_command(seed)),
    }
}

/// The generator itself: seeds produce splits, merges, several child records, multi-partition
/// transactions and dropped transactions — otherwise the simulation would prove little.
#[test]
fn simulation_generator_covers_the_interesting_cases() {
    let (mut merges, mut splits, mut spread, mut dropped, mut late) = (0, 0, 0, 0, 0);
    for seed in 0..200 {
        let s = Scenario::generate(seed);
        for p in s.partitions.values() {
            match p.children.as_slice() {
                [only] if only.parent_partition_tokens.len() == 2 => merges += 1,
                kids if kids.len() >= 2 => splits += 1,
                _ => {}
            }
            if p.events
                .first()
                .is_some_and(|(t, _)| *t > p.start + 1_000_000)
            {
                late += 1;
            }
        }
        let mut by_txn: HashMap<String, usize> = HashMap::new();
        for p in s.partitions.values() {
            for (_, e) in &p.events {
                if let Event::Data(r) = e {
                    *by_txn.entry(r.server_transaction_id.clone()).or_default() += 1;
                    if r.transaction_tag.starts_with("txBy=") {
                        dropped += 1;
                    }
                }
            }
        }
        spread += by_txn.values().filter(|n| **n > 1).count();
    }
    for (name, count) in [
        ("merges", merges),
        ("splits", splits),
        ("multi-record transactions", spread),
        ("dropped records", dropped),
        ("late first records", late),
    ] {
        assert!(count >= 20, "only {count} {name} in 200 seeds");
    }
}
