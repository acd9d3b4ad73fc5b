//! The generated test of batches spanning windows (issue 15): one shard's task
//! (`ShardContext::run`, the writer's loop) applies many short windows from a real local buffer,
//! with a real SQLite metadata store, to a real MariaDB, while batches take in several windows.
//!
//! Each seed makes, deterministically:
//!
//! - 1-second windows, some without data (no file, no `data_seen` row), the others with a few
//!   Spanner transactions (sometimes several sharing a commit timestamp) of inserts, updates and
//!   deletes, the lines of each file shuffled;
//! - poison transactions, whose records violate a `CHECK` constraint of the shard (a definite
//!   error caused by a record);
//! - random batch limits, the dead-letter policy on or off, the reader's windows created in
//!   one to three stages (each run of the task goes up to the end of the current stage);
//! - faults at the applier's fault points: the connection killed (the batch is retried) or the
//!   writer "killed" (the connection killed and the task cancelled, then a new applier and task
//!   start where the writer's start would: from the progress row, or the checkpoint's window).
//!
//! After every run of the task, the shard must hold exactly the transactions up to its
//! checkpoint (each applied once: triggers count row changes), minus the transactions set aside,
//! and the progress row must not be ahead of the checkpoint: `SUCCESS` at a window means every
//! transaction up to its end is applied, `ERROR` names the window of the first transaction not
//! applied — a poison one. Without the dead-letter policy the task stops there; the test then
//! drops the constraint (the operator's fix) and resumes from the `ERROR` window. With it, the
//! poison transactions end in `dlq/`, each letter naming its own window and window file. At the
//! end the shard equals the model.
//!
//! `WINDOW_BATCH_SEEDS=N` runs seeds 1..=N (default 25), `WINDOW_BATCH_SEED=s` only seed `s`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use revrepl_metadata::{CreatedWindows, MetadataStore, ProcessStatus, RunId};
use revrepl_record::buffer::LocalDirectory;
use revrepl_record::{
    Backoff, BufferStore, ChangeRecord, Destination, Mod, ModType, ShardId, Timestamp, Window,
    WindowDuration, WindowFileEncoder, WindowFileName,
};
use revrepl_test_services::MariaDb;
use revrepl_writer::apply::{FaultHook, FaultPoint};
use revrepl_writer::dead_letter::dead_letter_path;
use revrepl_writer::reader_progress::ReaderProgress;
use revrepl_writer::shard_task::{ShardContext, ShardOutcome};
use revrepl_writer::telemetry::WriterMetrics;
use revrepl_writer::{
    ApplierConfig, BatchLimits, CommitPosition, ShardApplier, SpannerTransaction,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[path = "common/recorded_run.rs"]
mod recorded_run;
use recorded_run::{fresh_database, recorded_run};

const SHARD: &str = "s0";
const RUN: &str = "window-batches";
/// 2023-11-14T22:13:20Z.
const START: i64 = 1_700_000_000;
const DEFAULT_SEEDS: u64 = 25;
/// A value of `n` the shard's constraint refuses.
const POISON: i64 = 5_000_000;

const SCHEMA: [&str; 5] = [
    "CREATE TABLE item (id BIGINT PRIMARY KEY, v VARCHAR(64), n BIGINT, \
     CONSTRAINT small_n CHECK (n < 1000000))",
    "CREATE TABLE changes (id BIGINT PRIMARY KEY, c INT NOT NULL)",
    "CREATE TRIGGER item_ai AFTER INSERT ON item FOR EACH ROW \
     INSERT INTO changes VALUES (NEW.id, 1) ON DUPLICATE KEY UPDATE c = c + 1",
    "CREATE TRIGGER item_au AFTER UPDATE ON item FOR EACH ROW \
     INSERT INTO changes VALUES (NEW.id, 1) ON DUPLICATE KEY UPDATE c = c + 1",
    "CREATE TRIGGER item_ad AFTER DELETE ON item FOR EACH ROW \
     INSERT INTO changes VALUES (OLD.id, 1) ON DUPLICATE KEY UPDATE c = c + 1",
];

fn duration() -> WindowDuration {
    WindowDuration::from_seconds(1).expect("1 s")
}

fn window(index: usize) -> Window {
    let start = START + i64::try_from(index).expect("small");
    Window::from_bounds(
        Timestamp::new(start, 0).expect("start"),
        Timestamp::new(start + 1, 0).expect("end"),
    )
    .expect("window")
}

fn shard() -> ShardId {
    ShardId::new(SHARD).expect("shard id")
}

/// One generated Spanner transaction.
#[derive(Debug, Clone)]
struct Txn {
    window: usize,
    transaction: SpannerTransaction,
    poison: bool,
}

/// Rows (`id` → `(v, n)`) and row changes per id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct State {
    rows: BTreeMap<i64, (String, i64)>,
    changes: BTreeMap<i64, i64>,
}

#[derive(Debug)]
struct Seed {
    windows: usize,
    /// Windows with data, and their file.
    files: Vec<(usize, Bytes)>,
    /// Every transaction, in commit order.
    txns: Vec<Txn>,
    /// Windows created by the reader at each stage (increasing; the last is `windows`).
    stages: Vec<usize>,
    limits: BatchLimits,
    dead_letter: bool,
    /// Chance, per fault point, of a dropped connection and of a killed writer.
    drop_rate: f64,
    kill_rate: f64,
}

impl Seed {
    fn generate(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let windows = rng.random_range(4..40);
        let limits = BatchLimits {
            max_records: rng.random_range(1..30),
            max_bytes: usize::MAX,
        };
        let dead_letter = rng.random_bool(0.5);
        let mut exists: BTreeSet<i64> = BTreeSet::new();
        let mut fresh = 1_000;
        let mut next_tx = 0;
        let mut files = Vec::new();
        let mut txns = Vec::new();
        for w in 0..windows {
            if rng.random_bool(0.25) {
                continue;
            }
            let mut records = Vec::new();
            let mut nanos = 0u32;
            for t in 0..rng.random_range(1..6) {
                next_tx += 1;
                // Several transactions may share a commit timestamp.
                if t == 0 || rng.random_bool(0.7) {
                    nanos += rng.random_range(1..100_000_000);
                }
                let commit = Timestamp::new(START + w as i64, nanos).expect("timestamp");
                let poison = rng.random_bool(0.06);
                let ids: Vec<i64> = if poison {
                    // Rows nothing else touches, so that setting it aside changes nothing else.
                    (0..rng.random_range(1..3))
                        .map(|_| {
                            fresh += 1;
                            fresh
                        })
                        .collect()
                } else {
                    let all: Vec<i64> = (1..25).collect();
                    let count = rng.random_range(1..4);
                    all.choose_multiple(&mut rng, count).copied().collect()
                };
                let mut transaction = Vec::new();
                for (seq, id) in ids.iter().enumerate() {
                    let mod_type = if poison || !exists.contains(id) {
                        ModType::Insert
                    } else if rng.random_bool(0.3) {
                        ModType::Delete
                    } else {
                        ModType::Update
                    };
                    let n = if poison && seq == 0 {
                        POISON
                    } else {
                        rng.random_range(0..1000)
                    };
                    let new_values = match mod_type {
                        ModType::Delete => json!({}),
                        _ => json!({"v": format!("t{next_tx}-{seq}"), "n": n.to_string()}),
                    };
                    if !poison {
                        match mod_type {
                            ModType::Delete => exists.remove(id),
                            _ => exists.insert(*id),
                        };
                    }
                    transaction.push(ChangeRecord {
                        commit_timestamp: commit,
                        server_transaction_id: format!("tx-{next_tx:05}"),
                        record_sequence: format!("{seq:08}"),
                        table_name: "item".into(),
                        mods: [Mod {
                            keys_json: json!({"id": id.to_string()}).to_string(),
                            old_values_json: "{}".into(),
                            new_values_json: new_values.to_string(),
                        }],
                        mod_type,
                        number_of_records_in_transaction: ids.len() as u64,
                        transaction_tag: String::new(),
                        shard: SHARD.into(),
                    });
                }
                records.extend(transaction.iter().cloned());
                txns.push((w, transaction, poison));
            }
            records.shuffle(&mut rng);
            let mut encoder = WindowFileEncoder::new();
            for record in &records {
                encoder.push(record, 0).expect("encode");
            }
            files.push((w, encoder.finish()));
        }
        let txns: Vec<Txn> = txns
            .into_iter()
            .map(|(window, records, poison)| {
                let mut grouped = SpannerTransaction::group(records);
                assert_eq!(grouped.len(), 1, "one transaction");
                Txn {
                    window,
                    transaction: grouped.remove(0),
                    poison,
                }
            })
            .collect();
        let mut stages: Vec<usize> = (0..rng.random_range(0..3))
            .map(|_| rng.random_range(1..windows))
            .collect();
        stages.push(windows);
        stages.sort_unstable();
        stages.dedup();
        let (drop_rate, kill_rate) = match rng.random_range(0..4) {
            0 => (0.0, 0.0),
            1 => (0.05, 0.0),
            _ => (0.04, 0.03),
        };
        Self {
            windows,
            files,
            txns,
            stages,
            limits,
            dead_letter,
            drop_rate,
            kill_rate,
        }
    }

    /// The shard's state after the transactions `applied` says, in commit order.
    fn model(&self, applied: impl Fn(&Txn) -> bool) -> State {
        let mut state = State::default();
        for txn in self.txns.iter().filter(|t| applied(t)) {
            for record in txn.transaction.records() {
                let m = record.the_mod();
                let keys: serde_json::Value = serde_json::from_str(&m.keys_json).expect("keys");
                let id: i64 = keys["id"].as_str().expect("id").parse().expect("number");
                let existed = state.rows.contains_key(&id);
                match record.mod_type {
                    ModType::Delete => {
                        state.rows.remove(&id);
                        if existed {
                            *state.changes.entry(id).or_default() += 1;
                        }
                    }
                    _ => {
                        let values: serde_json::Value =
                            serde_json::from_str(&m.new_values_json).expect("values");
                        let v = values["v"].as_str().expect("v").to_string();
                        let n = values["n"].as_str().expect("n").parse().expect("number");
                        state.rows.insert(id, (v, n));
                        *state.changes.entry(id).or_default() += 1;
                    }
                }
            }
        }
        state
    }

    fn describe(&self) -> String {
        let mut text = format!(
            "{} windows, stages {:?}, {:?}, dead letters {}, drop rate {}, kill rate {}\n",
            self.windows,
            self.stages,
            self.limits,
            self.dead_letter,
            self.drop_rate,
            self.kill_rate
        );
        for txn in &self.txns {
            text.push_str(&format!(
                "  window {:>2} {} {} records{}\n",
                txn.window,
                txn.transaction.last_position(),
                txn.transaction.len(),
                if txn.poison { " POISON" } else { "" }
            ));
        }
        text
    }
}

#[derive(Debug, Default)]
struct Stats {
    runs: usize,
    dropped: usize,
    killed: usize,
    stopped: usize,
    dead_letters: usize,
    /// Seeds whose MySQL commits were fewer than their windows with data: batches spanned
    /// windows.
    spanning: usize,
}

async fn mysql_state(conn: &mut Conn) -> State {
    let rows: Vec<(i64, String, i64)> = conn
        .query("SELECT id, v, n FROM item ORDER BY id")
        .await
        .expect("rows");
    let changes: Vec<(i64, i64)> = conn
        .query("SELECT id, c FROM changes ORDER BY id")
        .await
        .expect("changes");
    State {
        rows: rows.into_iter().map(|(id, v, n)| (id, (v, n))).collect(),
        changes: changes.into_iter().collect(),
    }
}

/// Runs one seed; `Err` says what differs.
async fn run_seed(server: &MariaDb, seed: u64, stats: &mut Stats) -> Result<(), String> {
    let made = Seed::generate(seed);
    let fail = |what: String| Err(format!("seed {seed}: {what}\n{}", made.describe()));
    let (mut admin, opts) =
        fresh_database(&server.url(), &format!("window_batches_{seed}"), &SCHEMA)
            .await
            .expect("schema");
    let dir = tempfile::tempdir().expect("temp dir");
    let buffer = Arc::new(LocalDirectory::new(dir.path().join("buffer")));
    let run_id = RunId::new(RUN).expect("run id");
    let start = Timestamp::new(START, 0).expect("start");
    let store = recorded_run(
        &dir.path().join("meta.db"),
        &run_id,
        start,
        duration(),
        &[shard()],
    )
    .await;
    let metadata: Arc<dyn MetadataStore> = Arc::new(store);
    for (w, bytes) in &made.files {
        let path = WindowFileName::new(Destination::Shard(shard()), window(*w)).path();
        buffer
            .put_if_absent(&path, bytes.clone())
            .await
            .expect("put");
    }

    let mut fault_rng = StdRng::seed_from_u64(seed ^ 0xfa17_5eed);
    let mut stage = 0;
    let mut created = 0;
    let mut fixed = false;
    let mut failures = 0;
    let commits = Arc::new(AtomicUsize::new(0));
    for attempt in 0.. {
        if attempt > 200 {
            return fail("no end after 200 runs".into());
        }
        // The reader creates the stage's windows.
        if created < made.stages[stage] {
            let upto = made.stages[stage];
            let seen = made
                .files
                .iter()
                .filter(|(w, _)| (created..upto).contains(w))
                .map(|(w, _)| (shard(), window(*w).end()));
            let windows = CreatedWindows::new(window(upto - 1).end(), [shard()], seen)
                .expect("created windows");
            metadata
                .record_windows(&run_id, &windows)
                .await
                .expect("record windows");
            created = upto;
        }
        let until = window(created - 1).end();

        // Where the writer starts the shard: after its progress row, or at the checkpoint's
        // window if that is later (as `app::run_shard`).
        let progress = metadata
            .process_progress(&run_id, &shard())
            .await
            .expect("progress");
        let mut from = progress
            .as_ref()
            .map_or(start, |p| p.resume_from(duration()));
        let config = ApplierConfig::new(RUN, shard(), opts.clone());
        let applier = ShardApplier::connect(config).await.expect("applier");
        if let Some(checkpoint) = applier.read_checkpoint().await.expect("checkpoint") {
            from = from.max(checkpoint.window.start());
        }
        let cancel = CancellationToken::new();
        let killed = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        let hook_rng = Mutex::new(StdRng::seed_from_u64(fault_rng.random()));
        let (drop_rate, kill_rate) = (made.drop_rate, made.kill_rate);
        let hook: FaultHook = {
            let (cancel, killed, dropped) =
                (cancel.clone(), Arc::clone(&killed), Arc::clone(&dropped));
            let commits = Arc::clone(&commits);
            Arc::new(move |point: FaultPoint| {
                if point == FaultPoint::Commit {
                    commits.fetch_add(1, Ordering::Relaxed);
                }
                let mut rng = hook_rng.lock().expect("rng");
                if rng.random_bool(kill_rate) {
                    killed.fetch_add(1, Ordering::Relaxed);
                    cancel.cancel();
                    return true;
                }
                let drop = rng.random_bool(drop_rate);
                if drop {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
                drop
            })
        };
        applier.set_fault_hook(Some(hook));
        let context = ShardContext {
            run_id: run_id.clone(),
            window: duration(),
            metadata: Arc::clone(&metadata),
            buffer: Arc::clone(&buffer) as Arc<dyn BufferStore>,
            limits: made.limits,
            retry: Backoff {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(20),
                multiplier: 2,
                max_attempts: None,
            },
            reader_progress: ReaderProgress::watch(
                Arc::clone(&metadata),
                run_id.clone(),
                Duration::from_millis(20),
                cancel.child_token(),
            ),
            until: Some(until),
            dead_letter: made.dead_letter,
            strict_line_shard: true,
            metrics: WriterMetrics::global(),
            lease: None,
        };
        let outcome = tokio::time::timeout(
            Duration::from_secs(120),
            context.run(&applier, from, cancel.clone()),
        )
        .await;
        cancel.cancel();
        drop(applier);
        stats.runs += 1;
        stats.killed += killed.load(Ordering::Relaxed);
        stats.dropped += dropped.load(Ordering::Relaxed);
        let Ok(outcome) = outcome else {
            return fail(format!("run {attempt} did not end within 120 s"));
        };

        // The shard holds exactly the transactions up to its checkpoint, each once.
        let mut conn = Conn::new(opts.clone()).await.expect("connect");
        let checkpoint: Option<CommitPosition> = {
            let probe = ShardApplier::connect(ApplierConfig::new(RUN, shard(), opts.clone()))
                .await
                .expect("applier");
            let read = probe.read_checkpoint().await.expect("checkpoint");
            probe.close().await;
            read.and_then(|c| c.position)
        };
        let set_aside = |t: &Txn| made.dead_letter && t.poison;
        let upto = |t: &Txn| {
            checkpoint
                .as_ref()
                .is_some_and(|p| t.transaction.last_position().cmp_transaction(p).is_le())
        };
        let expected = made.model(|t| upto(t) && !set_aside(t));
        let actual = mysql_state(&mut conn).await;
        if actual != expected {
            return fail(format!(
                "after run {attempt} ({outcome:?}), the shard is not the model at checkpoint \
                 {checkpoint:?}:\n  expected {expected:?}\n  actual   {actual:?}"
            ));
        }
        // The first transaction not applied (nor set aside).
        let first_missing = made.txns.iter().find(|t| !upto(t) && !set_aside(t));
        let progress = metadata
            .process_progress(&run_id, &shard())
            .await
            .expect("progress");
        if let Some(progress) = &progress {
            let at = duration()
                .window_of(progress.file_start_interval)
                .expect("window");
            match progress.status {
                ProcessStatus::Success => {
                    if let Some(missing) = first_missing.filter(|t| window(t.window) <= at) {
                        return fail(format!(
                            "run {attempt}: SUCCESS at {at} but {} of window {} is not applied",
                            missing.transaction.last_position(),
                            missing.window
                        ));
                    }
                }
                ProcessStatus::Error => {
                    // Resuming at the ERROR window skips nothing. (The row may be older than
                    // this run: one killed after the fix, before it recorded anything.)
                    if let Some(missing) = first_missing.filter(|t| window(t.window) < at) {
                        return fail(format!(
                            "run {attempt}: ERROR at {at} but {} of window {} is not applied",
                            missing.transaction.last_position(),
                            missing.window
                        ));
                    }
                    // An ERROR this run recorded names the window of the first transaction
                    // not applied, which holds the poison transaction that stopped the shard
                    // (the transactions before it in its batch are not applied either).
                    if matches!(outcome, ShardOutcome::Failed(_)) {
                        let Some(missing) = first_missing else {
                            return fail(format!(
                                "run {attempt}: ERROR at {at} with nothing missing"
                            ));
                        };
                        let poisoned = made
                            .txns
                            .iter()
                            .any(|t| t.poison && t.window == missing.window && !upto(t));
                        if window(missing.window) != at || !poisoned {
                            return fail(format!(
                                "run {attempt}: ERROR at {at}, but the first transaction not \
                                 applied is {} (window {}, its window poisoned: {poisoned})",
                                missing.transaction.last_position(),
                                missing.window,
                            ));
                        }
                    }
                }
                ProcessStatus::Reprocess => {
                    return fail(format!("run {attempt}: REPROCESS recorded"));
                }
            }
        }
        match outcome {
            ShardOutcome::Cancelled => {
                if killed.load(Ordering::Relaxed) == 0 {
                    return fail(format!("run {attempt} cancelled without a kill"));
                }
            }
            ShardOutcome::Failed(error) => {
                failures += 1;
                stats.stopped += 1;
                let at = progress.as_ref().map(|p| (p.status, p.file_start_interval));
                if made.dead_letter || fixed || !matches!(at, Some((ProcessStatus::Error, _))) {
                    return fail(format!(
                        "run {attempt} failed ({error}), progress {at:?}, fixed {fixed}"
                    ));
                }
                let recorded = metadata.shard_errors(&run_id).await.expect("errors");
                let Some((_, window_start)) = at else {
                    unreachable!("matched above")
                };
                if !recorded
                    .iter()
                    .any(|e| e.file_start_interval == window_start && e.error.contains("item"))
                {
                    return fail(format!(
                        "run {attempt}: the error text is not recorded at its window: {recorded:?}"
                    ));
                }
                // The operator's fix; then resumeFailed starts at the ERROR window.
                admin
                    .query_drop("ALTER TABLE item DROP CONSTRAINT small_n")
                    .await
                    .expect("drop the constraint");
                fixed = true;
            }
            ShardOutcome::ReachedUntil => {
                if let Some(missing) = first_missing.filter(|t| t.window < created) {
                    return fail(format!(
                        "run {attempt} reached {until} without {} of window {}",
                        missing.transaction.last_position(),
                        missing.window
                    ));
                }
                let at = progress.as_ref().map(|p| (p.status, p.file_start_interval));
                if at != Some((ProcessStatus::Success, window(created - 1).start())) {
                    return fail(format!(
                        "run {attempt} reached {until}; progress {at:?}, not SUCCESS at the \
                         last window"
                    ));
                }
                if stage + 1 == made.stages.len() {
                    break;
                }
                stage += 1;
            }
        }
        conn.disconnect().await.expect("disconnect");
    }

    // The end: the model, with the poison transactions set aside or applied after the fix.
    let mut conn = Conn::new(opts.clone()).await.expect("connect");
    let expected = made.model(|t| !(made.dead_letter && t.poison));
    let actual = mysql_state(&mut conn).await;
    if actual != expected {
        return fail(format!(
            "at the end:\n  expected {expected:?}\n  actual   {actual:?}"
        ));
    }
    conn.disconnect().await.expect("disconnect");
    stats.spanning += usize::from(commits.load(Ordering::Relaxed) < made.files.len());
    let poison: Vec<&Txn> = made.txns.iter().filter(|t| t.poison).collect();
    let letters: BTreeSet<String> = buffer
        .list(&format!("dlq/{SHARD}/"))
        .await
        .expect("list")
        .into_iter()
        .collect();
    if made.dead_letter {
        // One letter per poison transaction, under its own window, naming its window file.
        let expected: BTreeSet<String> = poison
            .iter()
            .map(|t| dead_letter_path(&shard(), window(t.window), &t.transaction))
            .collect();
        if letters != expected {
            return fail(format!("dead letters {letters:?}, expected {expected:?}"));
        }
        for txn in &poison {
            let path = dead_letter_path(&shard(), window(txn.window), &txn.transaction);
            let bytes = buffer.get(&path).await.expect("get").expect("exists");
            let letter: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
            let file = WindowFileName::new(Destination::Shard(shard()), window(txn.window)).path();
            if letter["file"] != json!(file) {
                return fail(format!(
                    "letter {path} names file {}, not {file}",
                    letter["file"]
                ));
            }
        }
        stats.dead_letters += poison.len();
    } else {
        if !letters.is_empty() {
            return fail(format!("dead letters without the policy: {letters:?}"));
        }
        if failures != usize::from(!poison.is_empty()) {
            return fail(format!(
                "{failures} stops for {} poison transactions",
                poison.len()
            ));
        }
    }
    Ok(())
}

fn seeds() -> Vec<u64> {
    let number = |name: &str| {
        std::env::var(name).ok().map(|n| {
            n.trim()
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{name} is a number"))
        })
    };
    if let Some(seed) = number("WINDOW_BATCH_SEED") {
        return vec![seed];
    }
    (1..=number("WINDOW_BATCH_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_across_windows_keep_every_window_and_error_where_it_belongs() {
    let server = MariaDb::start().expect("mariadb starts");
    let started = Instant::now();
    let mut stats = Stats::default();
    let mut failures = Vec::new();
    let seeds = seeds();
    for &seed in &seeds {
        if let Err(report) = run_seed(&server, seed, &mut stats).await {
            eprintln!(
                "{report}\nreplay: WINDOW_BATCH_SEED={seed} cargo nextest run -p revrepl-writer \
                 --test window_batches\n"
            );
            failures.push(seed);
        }
    }
    eprintln!(
        "window batches: {} seeds in {:.1} s: {stats:?}",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "seeds {failures:?} failed (reports above); replay one with WINDOW_BATCH_SEED=<seed>"
    );
    if seeds.len() >= 10 {
        // The seeds must reach kills, stops and dead letters, or they prove less.
        assert!(
            stats.killed > 0
                && stats.dropped > 0
                && stats.stopped > 0
                && stats.dead_letters > 0
                && stats.spanning > 0,
            "{stats:?}"
        );
    }
}
