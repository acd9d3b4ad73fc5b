//! The contracts every [`MetadataStore`] keeps (DESIGN §3.4-3.5, §6.4-6.5, §7, §8).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use revrepl_metadata::{
    CreatedWindows, Lease, LeaseAttempt, LeaseKeeper, LeaseOwner, LeaseRole, MAX_ERROR_TEXT_BYTES,
    MIN_LEASE_TTL, MetadataError, MetadataStore, MissingTables, ProcessProgress, ProcessStatus,
    RunId, RunRecord, ShardError,
};
use revrepl_record::{Classify, ErrorClass, ShardId, Timestamp, Window, WindowDuration};

use crate::backend::Backend;

/// An epoch second on the 10 s grid (2024-01-05T10:33:20Z).
const T0: i64 = 1_704_450_800;
/// How long a polling loop may wait before the test fails.
const DEADLINE: Duration = Duration::from_secs(60);

fn ts(seconds: i64) -> Timestamp {
    Timestamp::new(seconds, 0).expect("valid test timestamp")
}

fn shard(id: &str) -> ShardId {
    ShardId::new(id).expect("valid test shard id")
}

fn run(id: &str) -> RunId {
    RunId::new(id).expect("valid test run id")
}

fn ten_seconds() -> WindowDuration {
    "10s".parse().expect("valid duration")
}

/// The `n`-th 10 s window after T0.
fn window(n: i64) -> Window {
    ten_seconds()
        .window_of(ts(T0 + 10 * n))
        .expect("window in range")
}

fn end(n: i64) -> Timestamp {
    window(n).end()
}

/// All windows ends of a shard for a run (a range wide enough for every test).
async fn all_windows(store: &dyn MetadataStore, run_id: &RunId, shard_id: &str) -> Vec<Timestamp> {
    store
        .windows_with_data(run_id, &shard(shard_id), ts(0)..=ts(T0 + 100_000), 10_000)
        .await
        .expect("windows are listed")
}

async fn ready<B: Backend>(backend: &B) -> Arc<dyn MetadataStore> {
    let store = backend.open().await;
    store
        .ensure_tables(MissingTables::Create)
        .await
        .expect("tables are created");
    store
}

fn progress(shard_id: &str, status: ProcessStatus, start: Timestamp) -> ProcessProgress {
    ProcessProgress {
        shard: shard(shard_id),
        status,
        file_start_interval: start,
    }
}

pub async fn tables_are_created_idempotently_and_concurrently<B: Backend>(backend: &B) {
    let (a, b) = (backend.open().await, backend.open().await);
    let missing = a.ensure_tables(MissingTables::Fail).await;
    assert!(
        matches!(&missing, Err(MetadataError::MalformedTable { reason, .. }) if reason.contains("does not exist")),
        "{missing:?}"
    );
    // Two processes creating the tables at once both succeed.
    let (ra, rb) = tokio::join!(
        a.ensure_tables(MissingTables::Create),
        b.ensure_tables(MissingTables::Create)
    );
    ra.expect("first creator succeeds");
    rb.expect("second creator succeeds");
    a.ensure_tables(MissingTables::Create)
        .await
        .expect("creating again is a no-op");
    b.ensure_tables(MissingTables::Fail)
        .await
        .expect("the tables exist");
}

pub async fn run_is_recorded_once_and_required_for_resume<B: Backend>(backend: &B) {
    let store = ready(backend).await;
    let r1 = run("run-1");
    let record = RunRecord::new(r1.clone(), ts(T0), ten_seconds()).expect("aligned start");
    assert_eq!(store.run(&r1).await.expect("read run"), None);
    store.record_run(&record).await.expect("record run");
    store
        .record_run(&record)
        .await
        .expect("recording the same run again is a no-op");
    assert_eq!(
        store.run(&r1).await.expect("read run"),
        Some(record.clone())
    );
    assert_eq!(store.require_run(&r1).await, Ok(record));

    let other = RunRecord::new(r1.clone(), ts(T0 + 60), ten_seconds()).expect("aligned start");
    let conflict = store.record_run(&other).await.expect_err("another start");
    assert!(
        matches!(conflict, MetadataError::RunConflict { .. }),
        "{conflict}"
    );
    assert_eq!(conflict.class(), ErrorClass::Fatal);
    assert!(
        conflict.to_string().contains("2024-01-05T10:33:20.000Z"),
        "{conflict}"
    );

    let missing = store
        .require_run(&run("never-ran"))
        .await
        .expect_err("the run was never recorded");
    assert_eq!(missing.class(), ErrorClass::Fatal);
    let message = missing.to_string();
    assert!(
        matches!(missing, MetadataError::MissingRun { .. }),
        "{message}"
    );
    assert!(message.contains("\"never-ran\""), "{message}");
    assert!(message.contains(store.location()), "{message}");
    assert!(message.contains("spanner_to_gcs_metadata"), "{message}");
}

pub async fn created_upto_is_monotonic_under_concurrent_callers<B: Backend>(backend: &B) {
    const WRITERS: usize = 3;
    const WINDOWS: i64 = 8;
    let r = run("run-1");
    let shards = ["a", "b", "c"];
    ready(backend).await;
    let done = Arc::new(AtomicBool::new(false));

    // An observer that must never see created_upto go down.
    let observer = {
        let store = backend.open().await;
        let r = r.clone();
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut last = None;
            let mut reads = 0u32;
            while !done.load(Ordering::SeqCst) {
                let now = store.created_upto(&r, &shard("a")).await.expect("read");
                assert!(now >= last, "created_upto went from {last:?} to {now:?}");
                last = now;
                reads += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            reads
        })
    };

    // Several writers (separate clients, as separate processes would be) record the same
    // windows in different orders, as a restarted reader racing an old one could.
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = backend.open().await;
        let r = r.clone();
        writers.push(tokio::spawn(async move {
            let mut order: Vec<i64> = (0..WINDOWS).collect();
            order.rotate_left(w * 3 % WINDOWS as usize);
            if w % 2 == 1 {
                order.reverse();
            }
            for n in order {
                let windows =
                    CreatedWindows::window(window(n), shards.map(shard), [shard(shards[w])]);
                store
                    .record_windows(&r, &windows)
                    .await
                    .expect("record windows");
                for s in shards {
                    let now = store.created_upto(&r, &shard(s)).await.expect("read");
                    assert!(
                        now >= Some(end(n)),
                        "after recording window {n}, shard {s} is at {now:?}"
                    );
                }
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer task");
    }
    done.store(true, Ordering::SeqCst);
    let reads = observer.await.expect("observer task");
    assert!(reads > 0);

    let store = backend.open().await;
    for s in shards {
        assert_eq!(
            store.created_upto(&r, &shard(s)).await.expect("read"),
            Some(end(WINDOWS - 1))
        );
    }
    let expected: Vec<Timestamp> = (0..WINDOWS).map(end).collect();
    for s in shards {
        assert_eq!(all_windows(&*store, &r, s).await, expected, "shard {s}");
    }
    assert_eq!(
        store.min_created_upto(&r).await.expect("read"),
        Some(end(WINDOWS - 1))
    );
}

pub async fn one_store_serves_many_tasks_at_once<B: Backend>(backend: &B) {
    const TASKS: i64 = 8;
    let store = ready(backend).await;
    let r = run("run-1");
    // The writer's shard tasks share one store, as do the reader's window tasks.
    let mut tasks = Vec::new();
    for n in 0..TASKS {
        let store = Arc::clone(&store);
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("s{n}");
            let windows = CreatedWindows::window(window(n), [shard(&id)], [shard(&id)]);
            store.record_windows(&r, &windows).await.expect("record");
            let step = progress(&id, ProcessStatus::Success, window(n).start());
            store.set_process_progress(&r, &step).await.expect("write");
            assert_eq!(
                store.created_upto(&r, &shard(&id)).await.expect("read"),
                Some(end(n))
            );
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let rows = store.list_process_progress(&r, None).await.expect("list");
    assert_eq!(rows.len(), TASKS as usize);
    for n in 0..TASKS {
        assert_eq!(
            all_windows(&*store, &r, &format!("s{n}")).await,
            vec![end(n)]
        );
    }
}

pub async fn window_finalization_is_atomic_to_observers<B: Backend>(backend: &B) {
    const WINDOWS: i64 = 12;
    let r = run("run-1");
    ready(backend).await;
    let done = Arc::new(AtomicBool::new(false));

    // Whenever created_upto covers a window, that window's data_seen row is visible too.
    let observer = {
        let store = backend.open().await;
        let r = r.clone();
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut checks = 0u32;
            // Checks at least once more after the writer finished, so the final state is
            // always checked too, however fast the writes were.
            loop {
                let finished = done.load(Ordering::SeqCst);
                if let Some(upto) = store.created_upto(&r, &shard("a")).await.expect("read") {
                    let seen = store
                        .windows_with_data(&r, &shard("a"), end(0)..=upto, 10_000)
                        .await
                        .expect("list");
                    let expected: Vec<Timestamp> =
                        (0..WINDOWS).map(end).filter(|e| *e <= upto).collect();
                    assert_eq!(
                        seen, expected,
                        "created_upto {upto} without its data_seen rows"
                    );
                    checks += 1;
                }
                if finished {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            checks
        })
    };
    let store = backend.open().await;
    for n in 0..WINDOWS {
        let windows = CreatedWindows::window(window(n), [shard("a"), shard("b")], [shard("a")]);
        store.record_windows(&r, &windows).await.expect("record");
    }
    done.store(true, Ordering::SeqCst);
    let checks = observer.await.expect("observer task");
    assert!(checks > 0, "the observer saw no progress");
    assert!(all_windows(&*store, &r, "b").await.is_empty());
    assert_eq!(
        store.created_upto(&r, &shard("b")).await.expect("read"),
        Some(end(WINDOWS - 1))
    );
}

pub async fn failed_window_finalization_writes_nothing<B: Backend>(backend: &B) {
    let r = run("run-1");
    let store = ready(backend).await;
    store
        .record_windows(
            &r,
            &CreatedWindows::window(window(0), [shard("a")], [shard("a")]),
        )
        .await
        .expect("first window");
    backend.poison_data_seen("poison").await;

    // One write for two shards whose data_seen insert for `poison` fails: nothing of it lands.
    let failing = CreatedWindows::new(
        end(2),
        [shard("a"), shard("b")],
        [
            (shard("a"), end(1)),
            (shard("a"), end(2)),
            (shard("poison"), end(2)),
        ],
    )
    .expect("valid batch");
    let error = store
        .record_windows(&r, &failing)
        .await
        .expect_err("the injected failure");
    assert_ne!(error.class(), ErrorClass::Transient, "{error}");
    assert_eq!(
        store.created_upto(&r, &shard("a")).await.expect("read"),
        Some(end(0))
    );
    assert_eq!(
        store.created_upto(&r, &shard("b")).await.expect("read"),
        None
    );
    assert_eq!(
        store
            .created_upto(&r, &shard("poison"))
            .await
            .expect("read"),
        None
    );
    assert_eq!(all_windows(&*store, &r, "a").await, vec![end(0)]);
}

pub async fn windows_with_data_are_listed_by_range_in_one_query<B: Backend>(backend: &B) {
    let (r1, r2) = (run("run-1"), run("run-2"));
    let store = ready(backend).await;
    let seen_a = [1, 3, 4, 7];
    let batch = CreatedWindows::new(
        end(9),
        [shard("a"), shard("b")],
        seen_a
            .iter()
            .map(|n| (shard("a"), end(*n)))
            .chain([(shard("b"), end(2))]),
    )
    .expect("valid batch");
    store.record_windows(&r1, &batch).await.expect("record");
    // Recording the same windows again adds nothing.
    store
        .record_windows(&r1, &batch)
        .await
        .expect("record again");
    store
        .record_windows(&r2, &CreatedWindows::window(window(3), [], [shard("a")]))
        .await
        .expect("other run");

    let a = shard("a");
    let list = |from: Timestamp, to: Timestamp, limit: usize| {
        let store = Arc::clone(&store);
        let (r1, a) = (r1.clone(), a.clone());
        async move {
            store
                .windows_with_data(&r1, &a, from..=to, limit)
                .await
                .expect("list")
        }
    };
    assert_eq!(list(end(2), end(6), 100).await, vec![end(3), end(4)]);
    assert_eq!(
        list(end(3), end(4), 100).await,
        vec![end(3), end(4)],
        "bounds are inclusive"
    );
    assert_eq!(list(end(0), end(9), 2).await, vec![end(1), end(3)], "limit");
    assert_eq!(list(end(8), end(9), 100).await, Vec::<Timestamp>::new());
    assert_eq!(
        list(end(0), end(9), 100).await,
        seen_a.iter().map(|n| end(*n)).collect::<Vec<_>>()
    );
    assert_eq!(all_windows(&*store, &r1, "b").await, vec![end(2)]);
    assert_eq!(all_windows(&*store, &r2, "a").await, vec![end(3)]);
    assert_eq!(
        all_windows(&*store, &r2, "b").await,
        Vec::<Timestamp>::new()
    );
}

pub async fn process_status_transitions_and_listing_by_status<B: Backend>(backend: &B) {
    let r = run("run-1");
    let store = ready(backend).await;
    let (a, b, c) = (shard("a"), shard("b"), shard("c"));
    assert_eq!(store.process_progress(&r, &a).await.expect("read"), None);

    let steps = [
        progress("a", ProcessStatus::Success, ts(T0)),
        progress("a", ProcessStatus::Success, ts(T0 + 10)),
        progress("a", ProcessStatus::Error, ts(T0 + 20)),
        progress("a", ProcessStatus::Reprocess, ts(T0)),
        progress("a", ProcessStatus::Success, ts(T0 + 30)),
    ];
    for step in &steps {
        store.set_process_progress(&r, step).await.expect("write");
        assert_eq!(
            store.process_progress(&r, &a).await.expect("read").as_ref(),
            Some(step)
        );
    }
    store
        .set_process_progress(&r, &progress("b", ProcessStatus::Error, ts(T0 + 40)))
        .await
        .expect("write");
    store
        .set_process_progress(&r, &progress("c", ProcessStatus::Reprocess, ts(T0 + 50)))
        .await
        .expect("write");

    let shards_with = |status| {
        let store = Arc::clone(&store);
        let r = r.clone();
        async move {
            store
                .list_process_progress(&r, status)
                .await
                .expect("list")
                .into_iter()
                .map(|p| p.shard)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        shards_with(Some(ProcessStatus::Success)).await,
        vec![a.clone()]
    );
    assert_eq!(
        shards_with(Some(ProcessStatus::Error)).await,
        vec![b.clone()]
    );
    assert_eq!(
        shards_with(Some(ProcessStatus::Reprocess)).await,
        vec![c.clone()]
    );
    assert_eq!(shards_with(None).await, vec![a, b, c]);

    let all = store.list_process_progress(&r, None).await.expect("list");
    let resume: Vec<Timestamp> = all.iter().map(|p| p.resume_from(ten_seconds())).collect();
    assert_eq!(resume, vec![ts(T0 + 40), ts(T0 + 40), ts(T0 + 50)]);
}

/// `(shard, window start, text)` of each recorded error, for comparisons.
fn error_rows(errors: &[ShardError]) -> Vec<(String, Timestamp, String)> {
    errors
        .iter()
        .map(|e| (e.shard.to_string(), e.file_start_interval, e.error.clone()))
        .collect()
}

pub async fn shard_errors_are_kept_per_run_and_shard_and_overwritten<B: Backend>(backend: &B) {
    let store = ready(backend).await;
    let (r1, r2) = (run("run-1"), run("run-2"));
    assert!(store.shard_errors(&r1).await.expect("read").is_empty());

    let before = Timestamp::from(chrono::Utc::now());
    let first = "shard b, table users: column \"name\" is too narrow";
    store
        .record_shard_error(&r1, &shard("b"), ts(T0 + 20), first)
        .await
        .expect("record");
    store
        .record_shard_error(&r1, &shard("a"), ts(T0), "a's error")
        .await
        .expect("record");
    store
        .record_shard_error(&r2, &shard("b"), ts(T0 + 100), "another run's error")
        .await
        .expect("record");
    let errors = store.shard_errors(&r1).await.expect("read");
    assert_eq!(
        error_rows(&errors),
        vec![
            ("a".to_owned(), ts(T0), "a's error".to_owned()),
            ("b".to_owned(), ts(T0 + 20), first.to_owned()),
        ]
    );
    let after = Timestamp::from(chrono::Utc::now());
    for error in &errors {
        assert!(
            error.recorded_at >= ts(before.seconds() - 1)
                && error.recorded_at <= ts(after.seconds() + 1),
            "{error:?} recorded between {before} and {after}"
        );
    }

    // A later error of the same shard replaces the earlier one; the other run keeps its own.
    let long = format!("later: {}", "€".repeat(MAX_ERROR_TEXT_BYTES));
    store
        .record_shard_error(&r1, &shard("b"), ts(T0 + 50), &long)
        .await
        .expect("record again");
    let errors = store.shard_errors(&r1).await.expect("read");
    assert_eq!(errors.len(), 2);
    let b = &errors[1];
    assert_eq!(
        (b.shard.as_str(), b.file_start_interval),
        ("b", ts(T0 + 50))
    );
    assert!(b.error.len() <= MAX_ERROR_TEXT_BYTES, "{}", b.error.len());
    assert!(
        b.error.starts_with("later: €€") && b.error.ends_with(" …"),
        "{}",
        b.error.chars().take(20).collect::<String>()
    );
    assert_eq!(
        error_rows(&store.shard_errors(&r2).await.expect("read")),
        vec![(
            "b".to_owned(),
            ts(T0 + 100),
            "another run's error".to_owned()
        )]
    );
    assert!(
        store
            .shard_errors(&run("never-ran"))
            .await
            .expect("read")
            .is_empty()
    );

    // The error text does not touch the progress row.
    assert_eq!(
        store
            .process_progress(&r1, &shard("b"))
            .await
            .expect("read"),
        None
    );
}

pub async fn missing_shard_errors_table_reads_as_empty_and_skips_writes<B: Backend>(backend: &B) {
    let r = run("run-1");
    {
        let store = ready(backend).await;
        store
            .record_shard_error(&r, &shard("a"), ts(T0), "recorded before the drop")
            .await
            .expect("record");
    }
    // What a database the reference (or an older revrepl) created looks like.
    backend.drop_shard_errors().await;

    let store = backend.open().await;
    store
        .ensure_tables(MissingTables::Fail)
        .await
        .expect("the optional table may be missing");
    assert_eq!(store.shard_errors(&r).await, Ok(Vec::new()));
    store
        .record_shard_error(&r, &shard("a"), ts(T0 + 10), "nowhere to go")
        .await
        .expect("a missing table skips the write");
    assert_eq!(store.shard_errors(&r).await, Ok(Vec::new()));
    // Everything else works as before.
    store
        .set_process_progress(&r, &progress("a", ProcessStatus::Error, ts(T0 + 10)))
        .await
        .expect("write");

    // Creating the tables adds it, and only it.
    store
        .ensure_tables(MissingTables::Create)
        .await
        .expect("the table is created");
    store
        .record_shard_error(&r, &shard("a"), ts(T0 + 10), "now stored")
        .await
        .expect("record");
    assert_eq!(
        error_rows(&store.shard_errors(&r).await.expect("read")),
        vec![("a".to_owned(), ts(T0 + 10), "now stored".to_owned())]
    );
    assert_eq!(
        store.process_progress(&r, &shard("a")).await.expect("read"),
        Some(progress("a", ProcessStatus::Error, ts(T0 + 10)))
    );
}

pub async fn table_suffixes_keep_stores_apart<B: Backend>(backend: &B) {
    let plain = ready(backend).await;
    let blue = backend.open_with(Some("blue_1")).await.expect("open");
    blue.ensure_tables(MissingTables::Create)
        .await
        .expect("tables with suffix");
    assert_eq!(blue.tables().run(), "spanner_to_gcs_metadata_blue_1");
    assert_eq!(blue.tables().data_seen(), "data_seen_blue_1");
    assert_eq!(blue.tables().shard_errors(), "shard_errors_blue_1");

    let r = run("run-1");
    let in_plain = RunRecord::new(r.clone(), ts(T0), ten_seconds()).expect("aligned");
    let in_blue = RunRecord::new(r.clone(), ts(T0 + 60), ten_seconds()).expect("aligned");
    plain.record_run(&in_plain).await.expect("record");
    blue.record_run(&in_blue)
        .await
        .expect("same run id, other tables");
    plain
        .record_windows(&r, &CreatedWindows::window(window(0), [], [shard("a")]))
        .await
        .expect("record");
    blue.set_process_progress(&r, &progress("a", ProcessStatus::Error, ts(T0)))
        .await
        .expect("write");

    assert_eq!(plain.run(&r).await.expect("read"), Some(in_plain));
    assert_eq!(blue.run(&r).await.expect("read"), Some(in_blue));
    assert_eq!(all_windows(&*plain, &r, "a").await, vec![end(0)]);
    assert!(all_windows(&*blue, &r, "a").await.is_empty());
    assert_eq!(
        blue.created_upto(&r, &shard("a")).await.expect("read"),
        None
    );
    assert_eq!(
        plain.process_progress(&r, &shard("a")).await.expect("read"),
        None
    );

    let green = backend.open_with(Some("green")).await.expect("open");
    let missing = green
        .ensure_tables(MissingTables::Fail)
        .await
        .expect_err("no green tables");
    assert!(missing.to_string().contains("_green"), "{missing}");

    let invalid = backend
        .open_with(Some("a-b"))
        .await
        .expect_err("invalid suffix");
    assert!(
        matches!(invalid, MetadataError::InvalidSuffix { .. }),
        "{invalid}"
    );
    assert_eq!(invalid.class(), ErrorClass::Fatal);
}

pub async fn two_runs_do_not_see_each_others_rows<B: Backend>(backend: &B) {
    let store = ready(backend).await;
    let (r1, r2) = (run("run-1"), run("run-2"));
    let (a, b) = (shard("a"), shard("b"));
    for (r, start) in [(&r1, T0), (&r2, T0 + 100)] {
        let record = RunRecord::new(r.clone(), ts(start), ten_seconds()).expect("aligned");
        store.record_run(&record).await.expect("record run");
        store
            .register_shards(r, &[a.clone(), b.clone()], ts(start))
            .await
            .expect("register");
    }
    store
        .record_windows(
            &r1,
            &CreatedWindows::window(window(4), [a.clone(), b.clone()], [a.clone()]),
        )
        .await
        .expect("record");
    store
        .set_process_progress(&r2, &progress("b", ProcessStatus::Success, ts(T0 + 100)))
        .await
        .expect("write");

    assert_eq!(
        store.created_upto(&r1, &a).await.expect("read"),
        Some(end(4))
    );
    assert_eq!(
        store.created_upto(&r2, &a).await.expect("read"),
        Some(ts(T0 + 100))
    );
    assert_eq!(
        store.min_created_upto(&r2).await.expect("read"),
        Some(ts(T0 + 100))
    );
    assert_eq!(all_windows(&*store, &r1, "a").await, vec![end(4)]);
    assert!(all_windows(&*store, &r2, "a").await.is_empty());
    assert!(
        store
            .list_process_progress(&r1, None)
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        store
            .list_process_progress(&r2, None)
            .await
            .expect("list")
            .len(),
        1
    );
    assert_eq!(
        store.run(&r2).await.expect("read").map(|run| run.start()),
        Some(ts(T0 + 100))
    );
}

pub async fn reopening_the_store_keeps_every_row<B: Backend>(backend: &B) {
    let r = run("run-1");
    let record = RunRecord::new(r.clone(), ts(T0), ten_seconds()).expect("aligned");
    {
        let store = ready(backend).await;
        store.record_run(&record).await.expect("record");
        store
            .register_shards(&r, &[shard("a"), shard("b")], ts(T0))
            .await
            .expect("register");
        store
            .record_windows(
                &r,
                &CreatedWindows::window(window(1), [shard("a")], [shard("a")]),
            )
            .await
            .expect("record");
        store
            .set_process_progress(&r, &progress("a", ProcessStatus::Error, end(0)))
            .await
            .expect("write");
        // The store (and its connection) is dropped here, as at a process exit.
    }
    let store = backend.open().await;
    store
        .ensure_tables(MissingTables::Fail)
        .await
        .expect("the tables are still there");
    assert_eq!(store.require_run(&r).await, Ok(record));
    assert_eq!(
        store.min_created_upto(&r).await.expect("read"),
        Some(ts(T0))
    );
    assert_eq!(
        store.created_upto(&r, &shard("a")).await.expect("read"),
        Some(end(1))
    );
    assert_eq!(all_windows(&*store, &r, "a").await, vec![end(1)]);
    assert_eq!(
        store.process_progress(&r, &shard("a")).await.expect("read"),
        Some(progress("a", ProcessStatus::Error, end(0)))
    );
}

pub async fn shard_registration_never_moves_rows<B: Backend>(backend: &B) {
    let store = ready(backend).await;
    let r = run("run-1");
    store
        .register_shards(&r, &[shard("a"), shard("b")], ts(T0))
        .await
        .expect("register");
    store
        .record_windows(&r, &CreatedWindows::window(window(5), [shard("a")], []))
        .await
        .expect("record");
    // A restarted reader registers again, now with a new shard.
    store
        .register_shards(&r, &[shard("a"), shard("b"), shard("c")], end(5))
        .await
        .expect("register again");
    let rows: Vec<(String, Timestamp)> = store
        .create_progress(&r)
        .await
        .expect("read")
        .into_iter()
        .map(|p| (p.shard.to_string(), p.created_upto))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("a".to_owned(), end(5)),
            ("b".to_owned(), ts(T0)),
            ("c".to_owned(), end(5)),
        ]
    );
    assert_eq!(
        store.min_created_upto(&r).await.expect("read"),
        Some(ts(T0))
    );
    // An older window recorded late does not move anything back.
    store
        .record_windows(
            &r,
            &CreatedWindows::window(window(2), [shard("a"), shard("b")], []),
        )
        .await
        .expect("record late");
    assert_eq!(
        store.created_upto(&r, &shard("a")).await.expect("read"),
        Some(end(5))
    );
    assert_eq!(
        store.created_upto(&r, &shard("b")).await.expect("read"),
        Some(end(2))
    );
    assert_eq!(
        store.min_created_upto(&run("other")).await.expect("read"),
        None
    );
}

pub async fn malformed_table_is_fatal_and_names_the_table<B: Backend>(backend: &B) {
    backend.create_malformed_create_progress().await;
    let store = backend.open().await;
    for missing in [MissingTables::Create, MissingTables::Fail] {
        let error = store
            .ensure_tables(missing)
            .await
            .expect_err("the table lacks created_upto");
        assert_eq!(error.class(), ErrorClass::Fatal);
        assert!(
            matches!(&error, MetadataError::MalformedTable { table, .. } if table == "shard_file_create_progress"),
            "{error}"
        );
        let message = error.to_string();
        assert!(message.contains("shard_file_create_progress"), "{message}");
        assert!(message.contains("created_upto"), "{message}");
        assert!(message.contains(store.location()), "{message}");
    }
}

pub async fn unreachable_store_is_transient<B: Backend>(backend: &B) {
    let started = Instant::now();
    let error = backend.unreachable_error().await;
    eprintln!("unreachable store: {error} (after {:?})", started.elapsed());
    assert!(
        matches!(error, MetadataError::Unavailable { .. }),
        "{error}"
    );
    assert_eq!(error.class(), ErrorClass::Transient, "{error}");
    assert!(
        started.elapsed() < DEADLINE,
        "giving up took {:?}",
        started.elapsed()
    );
}

pub async fn writes_survive_aborted_transactions<B: Backend>(backend: &B) {
    // About 5% of the emulator's transactions abort with fault injection: 120 transactions
    // see a few aborts in all but about 0.2% of runs.
    const WINDOWS: i64 = 60;
    let store = ready(backend).await;
    let r = run("run-1");
    let record = RunRecord::new(r.clone(), ts(T0), ten_seconds()).expect("aligned");
    store.record_run(&record).await.expect("record run");
    store
        .register_shards(&r, &[shard("a"), shard("b")], ts(T0))
        .await
        .expect("register");
    for n in 0..WINDOWS {
        let windows = CreatedWindows::window(window(n), [shard("a"), shard("b")], [shard("a")]);
        store.record_windows(&r, &windows).await.expect("record");
        let step = progress("a", ProcessStatus::Success, window(n).start());
        store.set_process_progress(&r, &step).await.expect("write");
    }
    assert_eq!(store.require_run(&r).await, Ok(record));
    assert_eq!(
        store.min_created_upto(&r).await.expect("read"),
        Some(end(WINDOWS - 1))
    );
    assert_eq!(
        all_windows(&*store, &r, "a").await,
        (0..WINDOWS).map(end).collect::<Vec<_>>()
    );
    assert_eq!(
        store.process_progress(&r, &shard("a")).await.expect("read"),
        Some(progress(
            "a",
            ProcessStatus::Success,
            window(WINDOWS - 1).start()
        ))
    );
}

fn lease(role: &str, owner: &str, expires_at: Timestamp) -> Lease {
    Lease {
        role: role.to_owned(),
        owner: owner.to_owned(),
        expires_at,
    }
}

pub async fn a_lease_has_one_owner_until_it_expires_or_is_released<B: Backend>(backend: &B) {
    let store = ready(backend).await;
    let r = run("run-1");
    let (now, later) = (ts(T0), ts(T0 + 30));
    let take = |role: &'static str, owner: &'static str, now: Timestamp, until: Timestamp| {
        let store = Arc::clone(&store);
        let r = r.clone();
        async move {
            store
                .acquire_lease(&r, role, owner, now, until)
                .await
                .expect("the store answers")
        }
    };
    assert_eq!(
        take("reader", "a", now, later).await,
        LeaseAttempt::Acquired
    );
    // Another owner is refused, and told who holds it until when.
    assert_eq!(
        take("reader", "b", ts(T0 + 29), ts(T0 + 59)).await,
        LeaseAttempt::HeldBy(lease("reader", "a", later))
    );
    // The owner renews.
    assert_eq!(
        take("reader", "a", ts(T0 + 10), ts(T0 + 40)).await,
        LeaseAttempt::Acquired
    );
    assert_eq!(
        take("reader", "b", ts(T0 + 39), ts(T0 + 69)).await,
        LeaseAttempt::HeldBy(lease("reader", "a", ts(T0 + 40)))
    );
    // Other roles and other runs are other leases.
    assert_eq!(
        take("writer:s1", "b", ts(T0 + 39), ts(T0 + 69)).await,
        LeaseAttempt::Acquired
    );
    assert_eq!(
        store
            .acquire_lease(&run("run-2"), "reader", "b", ts(T0 + 39), ts(T0 + 69))
            .await,
        Ok(LeaseAttempt::Acquired)
    );
    // Expired (at or after its expiry): another owner takes it over, and the old owner's
    // renewal is refused.
    assert_eq!(
        take("reader", "b", ts(T0 + 40), ts(T0 + 70)).await,
        LeaseAttempt::Acquired
    );
    assert_eq!(
        take("reader", "a", ts(T0 + 41), ts(T0 + 71)).await,
        LeaseAttempt::HeldBy(lease("reader", "b", ts(T0 + 70)))
    );
    assert_eq!(
        store.leases(&r).await,
        Ok(vec![
            lease("reader", "b", ts(T0 + 70)),
            lease("writer:s1", "b", ts(T0 + 69)),
        ])
    );
    // Only the owner releases; then anyone takes it at once.
    store
        .release_lease(&r, "reader", "a")
        .await
        .expect("release");
    assert_eq!(
        take("reader", "c", ts(T0 + 42), ts(T0 + 72)).await,
        LeaseAttempt::HeldBy(lease("reader", "b", ts(T0 + 70)))
    );
    store
        .release_lease(&r, "reader", "b")
        .await
        .expect("release");
    assert_eq!(
        take("reader", "c", ts(T0 + 42), ts(T0 + 72)).await,
        LeaseAttempt::Acquired
    );
    assert_eq!(
        store.leases(&run("run-2")).await,
        Ok(vec![lease("reader", "b", ts(T0 + 69))])
    );
}

pub async fn concurrent_lease_requests_admit_exactly_one_owner<B: Backend>(backend: &B) {
    ready(backend).await;
    let r = run("run-1");
    let mut tasks = Vec::new();
    for i in 0..6 {
        // Separate store instances: separate processes.
        let store = backend.open().await;
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            let owner = format!("owner-{i}");
            let attempt = store
                .acquire_lease(&r, "writer:s1", &owner, ts(T0), ts(T0 + 30))
                .await
                .expect("the store answers");
            (owner, attempt)
        }));
    }
    let mut winners = Vec::new();
    let mut refused_by = Vec::new();
    for task in tasks {
        let (owner, attempt) = task.await.expect("task");
        match attempt {
            LeaseAttempt::Acquired => winners.push(owner),
            LeaseAttempt::HeldBy(held) => refused_by.push(held.owner),
            LeaseAttempt::NoTable => panic!("the table exists"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one owner: {winners:?}");
    assert!(
        refused_by.iter().all(|o| *o == winners[0]),
        "every other request names the winner: {refused_by:?} vs {winners:?}"
    );
}

pub async fn missing_leases_table_holds_nothing_and_says_so<B: Backend>(backend: &B) {
    ready(backend).await;
    // What a database the reference (or an older revrepl) created looks like.
    backend.drop_table("leases").await;
    let store = backend.open().await;
    store
        .ensure_tables(MissingTables::Fail)
        .await
        .expect("the optional table may be missing");
    let r = run("run-1");
    assert_eq!(
        store
            .acquire_lease(&r, "reader", "a", ts(T0), ts(T0 + 30))
            .await,
        Ok(LeaseAttempt::NoTable)
    );
    assert_eq!(store.release_lease(&r, "reader", "a").await, Ok(()));
    assert_eq!(store.leases(&r).await, Ok(Vec::new()));
    // A keeper runs without protection (and warns) rather than refusing to run.
    let keeper = LeaseKeeper::acquire(
        Arc::clone(&store),
        r.clone(),
        LeaseRole::Reader,
        LeaseOwner::new("a"),
        MIN_LEASE_TTL,
    )
    .await
    .expect("no table: nothing to hold");
    assert_eq!(keeper.check(), Ok(()));
    keeper.release().await;
    // Creating the tables adds it.
    store
        .ensure_tables(MissingTables::Create)
        .await
        .expect("the table is created");
    assert_eq!(
        store
            .acquire_lease(&r, "reader", "a", ts(T0), ts(T0 + 30))
            .await,
        Ok(LeaseAttempt::Acquired)
    );
}

pub async fn a_lease_keeper_refuses_a_second_holder_and_stops_when_taken_over<B: Backend>(
    backend: &B,
) {
    let store = ready(backend).await;
    let r = run("run-1");
    let role = LeaseRole::Writer(shard("s1"));
    let first = LeaseKeeper::acquire(
        Arc::clone(&store),
        r.clone(),
        role.clone(),
        LeaseOwner::new("host-a pid 1 #aa"),
        MIN_LEASE_TTL,
    )
    .await
    .expect("the first keeper takes the lease");
    let refused = LeaseKeeper::acquire(
        backend.open().await,
        r.clone(),
        role.clone(),
        LeaseOwner::new("host-b pid 2 #bb"),
        MIN_LEASE_TTL,
    )
    .await
    .expect_err("a second keeper is refused");
    assert!(
        matches!(refused, MetadataError::LeaseHeld { .. }),
        "{refused:?}"
    );
    assert_eq!(refused.class(), ErrorClass::Fatal);
    let message = refused.to_string();
    for part in [
        "run \"run-1\"",
        "the writer of shard s1",
        "host-a pid 1 #aa",
        "leases",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    // The first keeper renews: after more than its time to live it still holds the lease.
    tokio::time::sleep(MIN_LEASE_TTL + Duration::from_millis(500)).await;
    assert_eq!(first.check(), Ok(()));
    assert!(
        matches!(
            LeaseKeeper::acquire(
                backend.open().await,
                r.clone(),
                role.clone(),
                LeaseOwner::new("host-b pid 2 #bb"),
                MIN_LEASE_TTL,
            )
            .await,
            Err(MetadataError::LeaseHeld { .. })
        ),
        "renewed, so still refused"
    );
    // Another process takes it over (as if the first one's lease had expired on its clock):
    // the first keeper notices at its next renewal and says so.
    let far = Timestamp::from(chrono::Utc::now() + chrono::Duration::hours(1));
    let later = Timestamp::from(chrono::Utc::now() + chrono::Duration::hours(2));
    store
        .acquire_lease(&r, &role.key(), "intruder", far, later)
        .await
        .expect("taken over");
    let lost = first.lost();
    tokio::time::timeout(MIN_LEASE_TTL, lost.cancelled())
        .await
        .expect("the keeper notices the takeover within a renewal interval");
    let error = first.check().expect_err("the lease is lost");
    assert!(
        matches!(&error, MetadataError::LeaseLost { reason, .. } if reason.contains("intruder")),
        "{error:?}"
    );
    // Releasing a lost lease leaves the new owner's row alone.
    first.release().await;
    assert_eq!(
        store
            .leases(&r)
            .await
            .expect("read")
            .first()
            .map(|l| l.owner.clone()),
        Some("intruder".to_owned())
    );
    // A released lease is free at once.
    let reader = LeaseKeeper::acquire(
        Arc::clone(&store),
        r.clone(),
        LeaseRole::Reader,
        LeaseOwner::new("a"),
        MIN_LEASE_TTL,
    )
    .await
    .expect("taken");
    reader.release().await;
    let again = LeaseKeeper::acquire(
        backend.open().await,
        r.clone(),
        LeaseRole::Reader,
        LeaseOwner::new("b"),
        MIN_LEASE_TTL,
    )
    .await
    .expect("released leases are free at once");
    again.release().await;
}
