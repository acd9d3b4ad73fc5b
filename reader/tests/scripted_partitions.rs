//! The reader pipeline against scripted partition streams (a double of Spanner for the
//! partition logic), a real local-directory buffer and a real SQLite metadata store.
//!
//! Covers: merges reported by two parents, a query that ends without child partitions, errors
//! mid-stream, heartbeats only, many records at one timestamp, `--until`, and the durability
//! order (files, then metadata).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, stream};
use revrepl_metadata::{
    MetadataStore, MissingTables, RunId, RunRecord, SqliteMetadataStore, SqliteOptions,
};
use revrepl_reader::ReaderError;
use revrepl_reader::change_stream::{
    ChangeStreamRecord, ChildPartition, ChildPartitionsRecord, DataChangeRecord, ModKind, ModValues,
};
use revrepl_reader::partition::Token;
use revrepl_reader::pipeline::{PipelineParts, PipelineSettings, PipelineSummary, run_pipeline};
use revrepl_reader::routing::{RecordFilter, TableFilter};
use revrepl_reader::source::{ChangeStreamSource, RecordStream};
use revrepl_reader::telemetry::ReaderMetrics;
use revrepl_record::buffer::LocalDirectory;
use revrepl_record::{
    Backoff, BufferStore, ChangeRecord, ErrorClass, ShardId, Timestamp, WindowDuration,
    WindowFileName, decode_window_file,
};
use revrepl_shard_routing::{SessionRouter, ShardAssigner, ShardRouter, SingleShardRouter};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

mod common;
use common::SESSION;

/// One scripted query: what the stream yields, in order, then it ends.
type Script = Vec<Step>;

/// Unless a script ends with `End` (or an error, or child partitions), its stream stays open
/// after the last step, like an unbounded partition query with nothing more to say.
#[derive(Debug, Clone)]
enum Step {
    Record(Box<ChangeStreamRecord>),
    Fail(ErrorClass),
    End,
}

#[derive(Debug, Default)]
struct ScriptedSource {
    scripts: Mutex<HashMap<Token, VecDeque<Script>>>,
    queries: Mutex<Vec<(Token, Timestamp)>>,
}

impl ScriptedSource {
    fn new(scripts: Vec<(Token, Script)>) -> Arc<Self> {
        let source = Self::default();
        {
            let mut map = source.scripts.lock().expect("lock");
            for (token, script) in scripts {
                map.entry(token).or_default().push_back(script);
            }
        }
        Arc::new(source)
    }

    fn queries_of(&self, token: &str) -> Vec<Timestamp> {
        let queries = self.queries.lock().expect("lock");
        queries
            .iter()
            .filter(|(t, _)| t.as_deref() == Some(token))
            .map(|(_, start)| *start)
            .collect()
    }
}

#[async_trait]
impl ChangeStreamSource for ScriptedSource {
    async fn query(&self, token: &Token, start: Timestamp) -> Result<RecordStream, ReaderError> {
        self.queries
            .lock()
            .expect("lock")
            .push((token.clone(), start));
        let script = self
            .scripts
            .lock()
            .expect("lock")
            .get_mut(token)
            .and_then(VecDeque::pop_front);
        let Some(script) = script else {
            // An exhausted script behaves like an idle partition that never answers.
            return Ok(Box::pin(stream::pending()));
        };
        let ends = match script.last() {
            Some(Step::End | Step::Fail(_)) => true,
            Some(Step::Record(r)) => matches!(**r, ChangeStreamRecord::ChildPartitions(_)),
            None => false,
        };
        let items: Vec<Result<ChangeStreamRecord, ReaderError>> = script
            .into_iter()
            .filter_map(|step| match step {
                Step::Record(r) => Some(Ok(*r)),
                Step::Fail(class) => Some(Err(ReaderError::Query {
                    location: "scripted".into(),
                    partition: "p".into(),
                    message: format!("scripted {class:?} failure"),
                    class,
                })),
                Step::End => None,
            })
            .collect();
        if ends {
            Ok(Box::pin(stream::iter(items)))
        } else {
            Ok(Box::pin(stream::iter(items).chain(stream::pending())))
        }
    }

    fn location(&self) -> &str {
        "scripted"
    }
}

fn ts(seconds: i64, nanos: u32) -> Timestamp {
    Timestamp::new(seconds, nanos).expect("valid")
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn data(at: Timestamp, txn: &str, table: &str, keys: &[(u32, &str)]) -> Step {
    Step::Record(Box::new(ChangeStreamRecord::DataChange(DataChangeRecord {
        commit_timestamp: at,
        record_sequence: "00000000".into(),
        server_transaction_id: txn.into(),
        is_last_record_in_transaction_in_partition: true,
        table_name: table.into(),
        column_types: Vec::new(),
        mods: keys
            .iter()
            .map(|(id, shard)| ModValues {
                keys: object(json!({"id": id.to_string()})),
                new_values: object(json!({"shard": shard, "v": format!("{txn}-{id}")})),
                old_values: Map::new(),
            })
            .collect(),
        mod_type: ModKind::Insert,
        value_capture_type: "NEW_ROW".into(),
        number_of_records_in_transaction: 1,
        number_of_partitions_in_transaction: 1,
        transaction_tag: String::new(),
        is_system_transaction: false,
    })))
}

fn heartbeat(at: Timestamp) -> Step {
    Step::Record(Box::new(ChangeStreamRecord::Heartbeat(at)))
}

fn children(start: Timestamp, kids: &[(&str, &[&str])]) -> Step {
    Step::Record(Box::new(ChangeStreamRecord::ChildPartitions(
        ChildPartitionsRecord {
            start_timestamp: start,
            record_sequence: "00000000".into(),
            child_partitions: kids
                .iter()
                .map(|(token, parents)| ChildPartition {
                    token: token.to_string(),
                    parent_partition_tokens: parents.iter().map(|p| p.to_string()).collect(),
                })
                .collect(),
        },
    )))
}

fn tok(t: &str) -> Token {
    Some(t.to_string())
}

struct Harness {
    _dir: tempfile::TempDir,
    buffer: Arc<LocalDirectory>,
    metadata: Arc<SqliteMetadataStore>,
    run_id: RunId,
    shards: Vec<ShardId>,
}

impl Harness {
    async fn new(shards: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let buffer = Arc::new(LocalDirectory::new(dir.path().join("buffer")));
        let metadata =
            SqliteMetadataStore::open(dir.path().join("meta.db"), SqliteOptions::default())
                .await
                .expect("open sqlite");
        metadata
            .ensure_tables(MissingTables::Create)
            .await
            .expect("tables");
        let run_id = RunId::new("run1").expect("run id");
        let shards: Vec<ShardId> = shards
            .iter()
            .map(|s| ShardId::new(*s).expect("id"))
            .collect();
        let window: WindowDuration = "10s".parse().expect("duration");
        let run = RunRecord::new(run_id.clone(), ts(100, 0), window).expect("run");
        metadata.record_run(&run).await.expect("record run");
        metadata
            .register_shards(&run_id, &shards, ts(100, 0))
            .await
            .expect("register");
        Self {
            _dir: dir,
            buffer,
            metadata: Arc::new(metadata),
            run_id,
            shards,
        }
    }

    fn settings(&self, until: i64) -> PipelineSettings {
        PipelineSettings {
            run_id: self.run_id.clone(),
            window: "10s".parse().expect("duration"),
            start: ts(100, 0),
            read_from: ts(100, 0),
            until: Some(ts(until, 0)),
            filter: RecordFilter::default(),
            tables: TableFilter::default(),
            max_ahead: Duration::from_secs(3600),
            stall_timeout: Duration::from_secs(30),
            retry: Backoff {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(5),
                multiplier: 2,
                max_attempts: Some(5),
            },
            event_capacity: 16,
        }
    }

    fn assigner(&self, router: Box<dyn ShardRouter>) -> Arc<ShardAssigner> {
        Arc::new(ShardAssigner::new(router, self.shards.clone()))
    }

    fn single_shard(&self) -> Arc<ShardAssigner> {
        self.assigner(Box::new(SingleShardRouter::new(self.shards[0].clone())))
    }

    fn by_column(&self) -> Arc<ShardAssigner> {
        // A session file whose Users table names "shard" as its shard-id column.
        let session =
            revrepl_shard_routing::Session::from_json("test session", SESSION).expect("session");
        self.assigner(Box::new(SessionRouter::new(Arc::new(session))))
    }

    async fn run(
        &self,
        source: Arc<ScriptedSource>,
        assigner: Arc<ShardAssigner>,
        until: i64,
    ) -> Result<PipelineSummary, ReaderError> {
        self.run_with(source, assigner, self.settings(until)).await
    }

    async fn run_with(
        &self,
        source: Arc<ScriptedSource>,
        assigner: Arc<ShardAssigner>,
        settings: PipelineSettings,
    ) -> Result<PipelineSummary, ReaderError> {
        let parts = PipelineParts {
            source,
            assigner,
            buffer: Arc::clone(&self.buffer) as Arc<dyn BufferStore>,
            metadata: Arc::clone(&self.metadata) as Arc<dyn MetadataStore>,
            shards: self.shards.clone(),
            metrics: ReaderMetrics::global(),
        };
        let run = run_pipeline(settings, parts, CancellationToken::new());
        tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("pipeline finished within 60 s")
    }

    /// Every file in the buffer, decoded, by path.
    async fn files(&self) -> BTreeMap<String, Vec<ChangeRecord>> {
        let mut files = BTreeMap::new();
        for path in self.buffer.list("").await.expect("list") {
            let bytes = self.buffer.get(&path).await.expect("get").expect("exists");
            files.insert(path, decode_window_file(&bytes).expect("decodes"));
        }
        files
    }

    async fn created_upto(&self, shard: &str) -> Option<Timestamp> {
        let shard = ShardId::new(shard).expect("id");
        self.metadata
            .created_upto(&self.run_id, &shard)
            .await
            .expect("read")
    }
}

fn keys_of(records: &[ChangeRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| r.the_mod().keys_json.clone())
        .collect()
}

fn path(shard: &str, start: i64) -> String {
    let window: WindowDuration = "10s".parse().expect("duration");
    let w = window.window_of(ts(start, 0)).expect("window");
    let id = ShardId::new(shard).expect("id");
    WindowFileName::new(revrepl_record::Destination::Shard(id), w).path()
}

#[tokio::test]
async fn merge_reported_by_two_parents_starts_the_child_once_after_both() {
    let h = Harness::new(&["s1", "s2"]).await;
    let source = ScriptedSource::new(vec![
        (None, vec![children(ts(100, 0), &[("a", &[]), ("b", &[])])]),
        (
            tok("a"),
            vec![
                data(ts(101, 0), "t1", "Users", &[(1, "s1"), (2, "s2")]),
                data(ts(112, 0), "t3", "Users", &[(3, "s1")]),
                children(ts(115, 0), &[("m", &["a", "b"])]),
            ],
        ),
        (
            tok("b"),
            vec![
                heartbeat(ts(105, 0)),
                data(ts(109, 999_999_999), "t2", "Users", &[(4, "s2")]),
                children(ts(115, 0), &[("m", &["a", "b"])]),
            ],
        ),
        (
            tok("m"),
            vec![
                data(ts(115, 0), "t4", "Users", &[(5, "s1")]),
                heartbeat(ts(131, 0)),
            ],
        ),
    ]);
    let summary = h
        .run(Arc::clone(&source), h.by_column(), 130)
        .await
        .expect("runs");
    assert!(summary.reached_until);
    assert_eq!(summary.recorded_up_to, ts(130, 0));
    assert_eq!(
        source.queries_of("m"),
        vec![ts(115, 0)],
        "merged child queried once"
    );

    let files = h.files().await;
    let expected: BTreeMap<String, Vec<&str>> = BTreeMap::from([
        (path("s1", 100), vec![r#"{"id":"1"}"#]),
        (path("s2", 100), vec![r#"{"id":"2"}"#, r#"{"id":"4"}"#]),
        (path("s1", 110), vec![r#"{"id":"3"}"#, r#"{"id":"5"}"#]),
    ]);
    let actual: BTreeMap<String, Vec<String>> =
        files.iter().map(|(p, r)| (p.clone(), keys_of(r))).collect();
    let expected: BTreeMap<String, Vec<String>> = expected
        .into_iter()
        .map(|(p, k)| (p, k.into_iter().map(str::to_string).collect()))
        .collect();
    assert_eq!(actual, expected);
    assert_eq!(h.created_upto("s1").await, Some(ts(130, 0)));
    assert_eq!(h.created_upto("s2").await, Some(ts(130, 0)));
    let windows = h
        .metadata
        .windows_with_data(
            &h.run_id,
            &ShardId::new("s2").expect("id"),
            ts(0, 0)..=ts(200, 0),
            10,
        )
        .await
        .expect("data_seen");
    assert_eq!(
        windows,
        vec![ts(110, 0)],
        "one data_seen row per window with data"
    );
}

#[tokio::test]
async fn query_ending_without_children_is_requeried_from_its_position_without_duplicates() {
    let h = Harness::new(&["s1"]).await;
    let source = ScriptedSource::new(vec![
        (None, vec![children(ts(100, 0), &[("a", &[])])]),
        // First query of a ends after one record, without child partitions.
        (
            tok("a"),
            vec![
                data(ts(103, 0), "t1", "Users", &[(1, "s1"), (2, "s1")]),
                Step::End,
            ],
        ),
        // The second query restarts at 103 and sends that record again, then more.
        (
            tok("a"),
            vec![
                data(ts(103, 0), "t1", "Users", &[(1, "s1"), (2, "s1")]),
                data(ts(104, 0), "t2", "Users", &[(3, "s1")]),
                heartbeat(ts(125, 0)),
            ],
        ),
    ]);
    h.run(Arc::clone(&source), h.single_shard(), 120)
        .await
        .expect("runs");
    assert_eq!(source.queries_of("a"), vec![ts(100, 0), ts(103, 0)]);
    let files = h.files().await;
    assert_eq!(files.len(), 1);
    let records = &files[&path("s1", 100)];
    assert_eq!(
        keys_of(records),
        [r#"{"id":"1"}"#, r#"{"id":"2"}"#, r#"{"id":"3"}"#]
    );
}

#[tokio::test]
async fn transient_errors_mid_stream_are_retried_from_the_partition_position() {
    let h = Harness::new(&["s1"]).await;
    let source = ScriptedSource::new(vec![
        (None, vec![children(ts(100, 0), &[("a", &[])])]),
        (
            tok("a"),
            vec![
                data(ts(101, 0), "t1", "Users", &[(1, "s1")]),
                heartbeat(ts(106, 0)),
                Step::Fail(ErrorClass::Transient),
            ],
        ),
        (tok("a"), vec![Step::Fail(ErrorClass::Transient)]),
        (
            tok("a"),
            vec![
                data(ts(107, 0), "t2", "Users", &[(2, "s1")]),
                heartbeat(ts(121, 0)),
            ],
        ),
    ]);
    h.run(Arc::clone(&source), h.single_shard(), 120)
        .await
        .expect("runs");
    assert_eq!(
        source.queries_of("a"),
        vec![ts(100, 0), ts(106, 0), ts(106, 0)],
        "re-queried from the last heartbeat (inclusive; replays are merged)"
    );
    let files = h.files().await;
    assert_eq!(
        keys_of(&files[&path("s1", 100)]),
        [r#"{"id":"1"}"#, r#"{"id":"2"}"#]
    );
}

#[tokio::test]
async fn fatal_errors_stop_the_reader_and_record_nothing_after_them() {
    let h = Harness::new(&["s1"]).await;
    let source = ScriptedSource::new(vec![
        (None, vec![children(ts(100, 0), &[("a", &[])])]),
        (
            tok("a"),
            vec![
                data(ts(101, 0), "t1", "Users", &[(1, "s1")]),
                heartbeat(ts(111, 0)),
                Step::Fail(ErrorClass::Fatal),
            ],
        ),
    ]);
    let err = h
        .run(Arc::clone(&source), h.single_shard(), 200)
        .await
        .expect_err("fatal");
    assert!(err.to_string().contains("scripted Fatal failure"), "{err}");
    let created = h.created_upto("s1").await;
    assert!(
        created <= Some(ts(110, 0)),
        "nothing recorded past durable work: {created:?}"
    );
    if created == Some(ts(110, 0)) {
        assert!(
            h.files().await.contains_key(&path("s1", 100)),
            "file before metadata"
        );
    }
}

#[tokio::test]
async fn heartbeats_only_advance_every_shard_without_files() {
    let h = Harness::new(&["s1", "s2"]).await;
    let beats: Vec<Step> = (101..=141).map(|s| heartbeat(ts(s, 0))).collect();
    let source = ScriptedSource::new(vec![
        (None, vec![children(ts(100, 0), &[("a", &[])])]),
        (tok("a"), beats),
    ]);
    let summary = h.run(source, h.single_shard(), 135).await.expect("runs");
    assert_eq!(
        summary.recorded_up_to,
        ts(140, 0),
        "the window ending at or after 135"
    );
    assert_eq!(summary.files_written, 0);
    assert!(h.files().await.is_empty());
    assert_eq!(h.created_upto("s2").await, Some(ts(140, 0)));
}

#[tokio::test]
async fn many_records_at_one_timestamp_land_in_one_sorted_file() {
    let h = Harness::new(&["s1"]).await;
    let at = ts(104, 250_000_000);
    let mut script = Vec::new();
    for txn in 0..20u32 {
        let keys: Vec<(u32, &str)> = (0..25).map(|k| (txn * 100 + k, "s1")).collect();
        script.push(data(at, &format!("txn-{:03}", 19 - txn), "Users", &keys));
    }
    script.push(heartbeat(ts(111, 0)));
    let source = ScriptedSource::new(vec![
        (None, vec![children(ts(100, 0), &[("a", &[])])]),
        (tok("a"), script),
    ]);
    h.run(source, h.single_shard(), 110).await.expect("runs");
    let files = h.files().await;
    let records = &files[&path("s1", 100)];
    assert_eq!(records.len(), 500);
    let mut sorted = records.clone();
    revrepl_record::sort_in_commit_order(&mut sorted);
    assert_eq!(&sorted, records, "the file is in commit order");
    assert_eq!(records[0].server_transaction_id, "txn-000");
}

#[tokio::test]
async fn rewriting_a_window_after_a_restart_is_byte_identical() {
    let h = Harness::new(&["s1"]).await;
    let script = || {
        ScriptedSource::new(vec![
            (None, vec![children(ts(100, 0), &[("a", &[])])]),
            (
                tok("a"),
                vec![
                    data(ts(102, 0), "t2", "Users", &[(2, "s1")]),
                    data(ts(102, 0), "t1", "Users", &[(1, "s1")]),
                    heartbeat(ts(111, 0)),
                ],
            ),
        ])
    };
    h.run(script(), h.single_shard(), 110)
        .await
        .expect("first run");
    let first = h.files().await;
    // A second run over the same stream finds its files already written, identical.
    h.run(script(), h.single_shard(), 110)
        .await
        .expect("second run");
    assert_eq!(h.files().await, first);
}

#[tokio::test]
async fn a_stalled_partition_is_queried_again_from_its_position() {
    let h = Harness::new(&["s1"]).await;
    let source = ScriptedSource::new(vec![
        (None, vec![children(ts(100, 0), &[("a", &[])])]),
        // Sends one record, then nothing at all (not even heartbeats).
        (
            tok("a"),
            vec![data(ts(102, 0), "t1", "Users", &[(1, "s1")])],
        ),
        (
            tok("a"),
            vec![
                data(ts(102, 0), "t1", "Users", &[(1, "s1")]),
                heartbeat(ts(111, 0)),
            ],
        ),
    ]);
    let mut settings = h.settings(110);
    settings.stall_timeout = Duration::from_millis(300);
    h.run_with(Arc::clone(&source), h.single_shard(), settings)
        .await
        .expect("runs");
    assert_eq!(source.queries_of("a"), vec![ts(100, 0), ts(102, 0)]);
    let files = h.files().await;
    assert_eq!(keys_of(&files[&path("s1", 100)]), [r#"{"id":"1"}"#]);
}

#[tokio::test]
async fn a_partition_far_ahead_pauses_without_deadlock_or_loss() {
    let h = Harness::new(&["s1"]).await;
    // Partition a races 100 s ahead; b holds the watermark back until it sends its heartbeat.
    let ahead: Vec<Step> = (0..100)
        .map(|i| {
            data(
                ts(101 + i, 0),
                &format!("a{i}"),
                "Users",
                &[(i as u32, "s1")],
            )
        })
        .collect();
    let source = ScriptedSource::new(vec![
        (None, vec![children(ts(100, 0), &[("a", &[]), ("b", &[])])]),
        (
            tok("a"),
            ahead.into_iter().chain([heartbeat(ts(300, 0))]).collect(),
        ),
        (tok("b"), vec![heartbeat(ts(105, 0)), heartbeat(ts(300, 0))]),
    ]);
    let mut settings = h.settings(290);
    settings.max_ahead = Duration::from_secs(10);
    let summary = h
        .run_with(Arc::clone(&source), h.single_shard(), settings)
        .await
        .expect("runs");
    assert_eq!(summary.recorded_up_to, ts(290, 0));
    let total: usize = h.files().await.values().map(Vec::len).sum();
    assert_eq!(total, 100, "every record arrives once the watermark moves");
}

/// Finding: an error after the first of several child-partitions records ended the partition,
/// so children announced later were never queried and their data was lost.
#[tokio::test]
async fn an_error_after_some_child_partitions_requeries_and_finds_the_rest() {
    let h = Harness::new(&["s1"]).await;
    let source = ScriptedSource::new(vec![
        (
            None,
            vec![
                children(ts(100, 0), &[("a", &[])]),
                Step::Fail(ErrorClass::Transient),
            ],
        ),
        (
            None,
            vec![
                children(ts(100, 0), &[("a", &[])]),
                children(ts(100, 0), &[("b", &[])]),
            ],
        ),
        (tok("a"), vec![heartbeat(ts(300, 0))]),
        (
            tok("b"),
            vec![
                data(ts(105, 0), "t1", "Users", &[(1, "s1")]),
                heartbeat(ts(300, 0)),
            ],
        ),
    ]);
    let summary = h
        .run(Arc::clone(&source), h.single_shard(), 290)
        .await
        .expect("runs");
    assert_eq!(summary.recorded_up_to, ts(290, 0));
    assert_eq!(source.queries_of("a"), vec![ts(100, 0)], "a started once");
    assert_eq!(source.queries_of("b"), vec![ts(100, 0)], "b was queried");
    let files = h.files().await;
    assert_eq!(
        files.get(&path("s1", 100)).map(|r| keys_of(r)),
        Some(vec![r#"{"id":"1"}"#.to_string()]),
        "b's record is in its window's file"
    );
}

/// Finding: the partition that holds the low watermark paused itself when its next record was
/// more than `max_ahead` past the watermark, waiting for a watermark only it could move.
#[tokio::test]
async fn the_partition_holding_the_watermark_never_pauses_itself() {
    let h = Harness::new(&["s1"]).await;
    let source = ScriptedSource::new(vec![
        (None, vec![children(ts(100, 0), &[("a", &[])])]),
        (
            tok("a"),
            vec![
                data(ts(120, 0), "t1", "Users", &[(1, "s1")]),
                heartbeat(ts(141, 0)),
            ],
        ),
    ]);
    let mut settings = h.settings(140);
    settings.max_ahead = Duration::from_secs(10);
    let run = h.run_with(Arc::clone(&source), h.single_shard(), settings);
    let summary = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("no hang: the only partition holds the watermark and must not wait for it")
        .expect("runs");
    assert_eq!(summary.recorded_up_to, ts(140, 0));
    let files = h.files().await;
    assert_eq!(keys_of(&files[&path("s1", 120)]), [r#"{"id":"1"}"#]);
}

/// Found by the simulation: after a child-partitions record, a re-query (an error or a stall
/// before the query ended) started from the last data record and replayed it, although the
/// children's start had let the watermark release its window: a "late record" error.
#[tokio::test]
async fn a_requery_after_child_partitions_starts_at_the_children_start() {
    let h = Harness::new(&["s1"]).await;
    let source = ScriptedSource::new(vec![
        (None, vec![children(ts(100, 0), &[("a", &[])])]),
        (
            tok("a"),
            vec![
                data(ts(105, 0), "t1", "Users", &[(1, "s1")]),
                children(ts(110, 0), &[("b", &["a"])]),
                Step::Fail(ErrorClass::Transient),
            ],
        ),
        (tok("a"), vec![children(ts(110, 0), &[("b", &["a"])])]),
        (tok("b"), vec![heartbeat(ts(121, 0))]),
    ]);
    h.run(Arc::clone(&source), h.single_shard(), 120)
        .await
        .expect("runs");
    assert_eq!(source.queries_of("a"), vec![ts(100, 0), ts(110, 0)]);
    let files = h.files().await;
    assert_eq!(keys_of(&files[&path("s1", 100)]), [r#"{"id":"1"}"#]);
}

const TWO_TABLES: &str = r#"{
  "SpSchema": {
    "t1": {"Name": "Users", "Id": "t1", "ColIds": ["c1", "c2", "c3"], "ShardIdColumn": "c2",
           "ColDefs": {"c1": {"Name": "id", "Id": "c1", "T": {"Name": "INT64"}},
                       "c2": {"Name": "shard", "Id": "c2", "T": {"Name": "STRING"}},
                       "c3": {"Name": "v", "Id": "c3", "T": {"Name": "STRING"}}},
           "PrimaryKeys": [{"ColId": "c1", "Order": 1}]},
    "t2": {"Name": "Orders", "Id": "t2", "ColIds": ["c1", "c2", "c3"], "ShardIdColumn": "c2",
           "ColDefs": {"c1": {"Name": "id", "Id": "c1", "T": {"Name": "INT64"}},
                       "c2": {"Name": "shard", "Id": "c2", "T": {"Name": "STRING"}},
                       "c3": {"Name": "v", "Id": "c3", "T": {"Name": "STRING"}}},
           "PrimaryKeys": [{"ColId": "c1", "Order": 1}]}
  },
  "SrcSchema": {
    "t1": {"Name": "app_users", "Id": "t1", "ColIds": ["c1", "c2", "c3"],
           "ColDefs": {"c1": {"Name": "id", "Id": "c1", "Type": {"Name": "bigint"}},
                       "c2": {"Name": "shard", "Id": "c2", "Type": {"Name": "varchar"}},
                       "c3": {"Name": "v", "Id": "c3", "Type": {"Name": "varchar"}}},
           "PrimaryKeys": [{"ColId": "c1", "Order": 1}]},
    "t2": {"Name": "app_orders", "Id": "t2", "ColIds": ["c1", "c2", "c3"],
           "ColDefs": {"c1": {"Name": "id", "Id": "c1", "Type": {"Name": "bigint"}},
                       "c2": {"Name": "shard", "Id": "c2", "Type": {"Name": "varchar"}},
                       "c3": {"Name": "v", "Id": "c3", "Type": {"Name": "varchar"}}},
           "PrimaryKeys": [{"ColId": "c1", "Order": 1}]}
  },
  "SyntheticPKeys": {}
}"#;

/// `reader.include_tables` / `reader.exclude_tables`: records of left-out tables never reach
/// the buffer; names may be the session file's source names; an unknown name is refused.
#[tokio::test]
async fn table_filters_keep_left_out_tables_out_of_the_buffer() {
    let session = Arc::new(
        revrepl_shard_routing::Session::from_json("two tables", TWO_TABLES).expect("session"),
    );
    let names = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    for (include, exclude) in [
        (names(&["app_users"]), names(&[])),
        (names(&[]), names(&["Orders"])),
    ] {
        let h = Harness::new(&["s1"]).await;
        let source = ScriptedSource::new(vec![
            (None, vec![children(ts(100, 0), &[("a", &[])])]),
            (
                tok("a"),
                vec![
                    data(ts(101, 0), "t1", "Users", &[(1, "s1")]),
                    data(ts(102, 0), "t2", "Orders", &[(2, "s1"), (3, "s1")]),
                    data(ts(103, 0), "t3", "Users", &[(4, "s1")]),
                    heartbeat(ts(111, 0)),
                ],
            ),
        ]);
        let mut settings = h.settings(110);
        settings.tables =
            TableFilter::new(&include, &exclude, Some(&session)).expect("known tables");
        let assigner = h.assigner(Box::new(SessionRouter::new(Arc::clone(&session))));
        h.run_with(source, assigner, settings).await.expect("runs");
        let files = h.files().await;
        let tables: Vec<&str> = files
            .values()
            .flatten()
            .map(|r| r.table_name.as_str())
            .collect();
        assert_eq!(
            tables,
            ["Users", "Users"],
            "include {include:?}, exclude {exclude:?}"
        );
    }
    let error = TableFilter::new(&names(&["app_user"]), &[], Some(&session)).expect_err("typo");
    assert!(
        error.to_string().contains("reader.include_tables")
            && error.to_string().contains("\"app_user\"")
            && error.to_string().contains("Orders, Users"),
        "{error}"
    );
}
