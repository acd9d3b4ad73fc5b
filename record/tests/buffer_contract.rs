//! The buffer-store contract, run against every implementation: a local directory and GCS
//! (fake-gcs-server). Each store is opened through a buffer URL with a nested prefix.

use std::sync::Arc;

use bytes::Bytes;
use revrepl_record::buffer::{self, BufferError, BufferStore, GcsOptions, PutOutcome};
use revrepl_record::{
    ChangeRecord, Classify, Destination, ErrorClass, Mod, ModType, ShardId, Timestamp,
    WindowDuration, WindowFileEncoder, WindowFileName, decode_window_file,
};

/// Keeps whatever backs a store (temp dir, server) alive for the test.
type Guard = Box<dyn std::any::Any>;

async fn local_directory() -> (Arc<dyn BufferStore>, Guard) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("file://{}/rr/run1", dir.path().display());
    let store = buffer::open(&url, GcsOptions::default())
        .await
        .expect("open local buffer");
    (store, Box::new(dir))
}

async fn gcs_fake_server() -> (Arc<dyn BufferStore>, Guard) {
    let server = revrepl_test_services::FakeGcs::start().expect("start fake-gcs-server");
    server
        .create_bucket("revrepl-test")
        .await
        .expect("create bucket");
    let options = GcsOptions {
        endpoint: Some(server.endpoint()),
        anonymous: true,
    };
    let store = buffer::open("gs://revrepl-test/rr/run1", options)
        .await
        .expect("open gcs buffer");
    (store, Box::new(server))
}

fn window_file_path(shard: &str, seconds: i64) -> String {
    let duration: WindowDuration = "10s".parse().expect("duration");
    let window = duration
        .window_of(Timestamp::new(seconds, 0).expect("timestamp"))
        .expect("window");
    let shard = ShardId::new(shard).expect("shard id");
    WindowFileName::new(Destination::Shard(shard), window).path()
}

fn record(key: u32, text: &str) -> ChangeRecord {
    ChangeRecord {
        commit_timestamp: Timestamp::new(1_719_247_984, key * 1_000).expect("timestamp"),
        server_transaction_id: format!("txn-{key}"),
        record_sequence: "00000000".to_string(),
        table_name: "Users".to_string(),
        mods: [Mod {
            keys_json: format!(r#"{{"id":"{key}"}}"#),
            old_values_json: "{}".to_string(),
            new_values_json: serde_json::json!({ "name": text }).to_string(),
        }],
        mod_type: ModType::Insert,
        number_of_records_in_transaction: 1,
        transaction_tag: String::new(),
        shard: "ls1".to_string(),
    }
}

async fn put_then_get_round_trips(store: &dyn BufferStore) {
    let path = window_file_path("ls1", 1_704_450_830);
    assert_eq!(store.get(&path).await.expect("get missing"), None);
    let bytes = Bytes::from_static(b"{\"a\":1}\n");
    let outcome = store
        .put_if_absent(&path, bytes.clone())
        .await
        .expect("put");
    assert_eq!(outcome, PutOutcome::Created);
    assert_eq!(store.get(&path).await.expect("get"), Some(bytes));
}

async fn put_if_absent_keeps_the_first_object(store: &dyn BufferStore) {
    let path = "ls1/object.txt";
    let first = Bytes::from_static(b"first");
    let outcome = store
        .put_if_absent(path, first.clone())
        .await
        .expect("put 1");
    assert_eq!(outcome, PutOutcome::Created);
    let second = store
        .put_if_absent(path, Bytes::from_static(b"second"))
        .await
        .expect("put 2");
    assert_eq!(second, PutOutcome::AlreadyExists);
    assert_eq!(store.get(path).await.expect("get"), Some(first));
}

async fn racing_writers_have_exactly_one_winner(store: Arc<dyn BufferStore>) {
    for round in 0..10 {
        let path = format!("race/object-{round}.txt");
        let writers = ["writer-a", "writer-b"].map(|name| {
            let store = Arc::clone(&store);
            let path = path.clone();
            tokio::spawn(async move {
                let outcome = store.put_if_absent(&path, Bytes::from(name)).await;
                (name, outcome)
            })
        });
        let results = futures::future::join_all(writers).await;
        let mut winners = Vec::new();
        for joined in results {
            let (name, outcome) = joined.expect("writer task");
            match outcome.expect("put") {
                PutOutcome::Created => winners.push(name),
                PutOutcome::AlreadyExists => {}
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let stored = store.get(&path).await.expect("get").expect("object exists");
        assert_eq!(
            stored,
            Bytes::from(winners[0]),
            "the loser must not overwrite"
        );
    }
}

async fn large_objects_round_trip(store: &dyn BufferStore) {
    // 6 MiB of varied bytes, so truncation or reordering shows.
    let large: Vec<u8> = (0..6 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let large = Bytes::from(large);
    let path = "ls1/large.bin";
    let outcome = store.put_if_absent(path, large.clone()).await.expect("put");
    assert_eq!(outcome, PutOutcome::Created);
    let back = store.get(path).await.expect("get").expect("exists");
    assert_eq!(back.len(), large.len());
    assert!(back == large, "content differs");
}

async fn list_returns_sorted_paths_under_a_prefix(store: &dyn BufferStore) {
    let mut expected_ls1 = Vec::new();
    for seconds in [1_704_450_850, 1_704_450_830, 1_704_450_840] {
        let path = window_file_path("ls1", seconds);
        store
            .put_if_absent(&path, Bytes::from_static(b"x"))
            .await
            .expect("put ls1");
        expected_ls1.push(path);
    }
    let other = window_file_path("ls10", 1_704_450_830);
    store
        .put_if_absent(&other, Bytes::from_static(b"y"))
        .await
        .expect("put ls10");
    expected_ls1.sort();

    assert_eq!(store.list("ls1/").await.expect("list ls1/"), expected_ls1);
    let mut everything = expected_ls1.clone();
    everything.push(other);
    everything.sort();
    assert_eq!(store.list("").await.expect("list all"), everything);
    assert_eq!(
        store.list("ls1").await.expect("list ls1"),
        everything,
        "a prefix, not a directory"
    );
    assert!(store.list("nothing/").await.expect("list empty").is_empty());
    for path in &everything {
        assert!(
            WindowFileName::parse(path).is_ok(),
            "listed {path} parses back"
        );
    }
}

async fn window_files_round_trip(store: &dyn BufferStore) {
    let records: Vec<ChangeRecord> = vec![
        record(2, "quote \" backslash \\ nul \u{0} emoji 🦀"),
        record(1, "ünïcödé = <&>"),
    ];
    let mut encoder = WindowFileEncoder::new();
    for r in &records {
        encoder.push(r, 0).expect("encode");
    }
    let bytes = encoder.finish();
    let path = window_file_path("ls1", 1_719_247_984);
    store
        .put_if_absent(&path, bytes.clone())
        .await
        .expect("put");
    let back = store.get(&path).await.expect("get").expect("exists");
    assert_eq!(back, bytes);
    let decoded = decode_window_file(&back).expect("decode");
    assert_eq!(decoded, vec![records[1].clone(), records[0].clone()]);
}

async fn invalid_paths_are_refused(store: &dyn BufferStore) {
    for path in ["", "/abs", "../escape", "a/../b", "dir/"] {
        let err = store
            .put_if_absent(path, Bytes::new())
            .await
            .expect_err("invalid path");
        assert!(
            matches!(err, BufferError::InvalidPath { .. }),
            "{path:?}: {err}"
        );
        assert_eq!(err.class(), ErrorClass::Fatal);
        assert!(store.get(path).await.is_err(), "get {path:?}");
    }
}

macro_rules! buffer_contract {
    ($implementation:ident) => {
        mod $implementation {
            use super::*;

            #[tokio::test]
            async fn put_then_get() {
                let (store, _guard) = super::$implementation().await;
                put_then_get_round_trips(&*store).await;
            }

            #[tokio::test]
            async fn create_if_absent() {
                let (store, _guard) = super::$implementation().await;
                put_if_absent_keeps_the_first_object(&*store).await;
            }

            #[tokio::test]
            async fn create_if_absent_race() {
                let (store, _guard) = super::$implementation().await;
                racing_writers_have_exactly_one_winner(store).await;
            }

            #[tokio::test]
            async fn large_object() {
                let (store, _guard) = super::$implementation().await;
                large_objects_round_trip(&*store).await;
            }

            #[tokio::test]
            async fn list_prefix() {
                let (store, _guard) = super::$implementation().await;
                list_returns_sorted_paths_under_a_prefix(&*store).await;
            }

            #[tokio::test]
            async fn window_file() {
                let (store, _guard) = super::$implementation().await;
                window_files_round_trip(&*store).await;
            }

            #[tokio::test]
            async fn invalid_paths() {
                let (store, _guard) = super::$implementation().await;
                invalid_paths_are_refused(&*store).await;
            }
        }
    };
}

buffer_contract!(local_directory);
buffer_contract!(gcs_fake_server);

#[tokio::test]
async fn local_directory_under_a_file_is_a_fatal_error_naming_the_buffer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x").expect("write file");
    let store = buffer::open(&file.display().to_string(), GcsOptions::default())
        .await
        .expect("open");
    let err = store
        .put_if_absent("ls1/a.txt", Bytes::from_static(b"x"))
        .await
        .expect_err("cannot write under a file");
    assert_eq!(err.class(), ErrorClass::Fatal, "{err}");
    assert!(err.to_string().contains("not-a-directory"), "{err}");
}

#[tokio::test]
async fn gcs_missing_bucket_is_a_fatal_error_naming_the_buffer() {
    let server = revrepl_test_services::FakeGcs::start().expect("start fake-gcs-server");
    let options = GcsOptions {
        endpoint: Some(server.endpoint()),
        anonymous: true,
    };
    let store = buffer::open("gs://no-such-bucket/p", options)
        .await
        .expect("open");
    let err = store
        .put_if_absent("ls1/a.txt", Bytes::from_static(b"x"))
        .await
        .expect_err("bucket is missing");
    assert!(err.to_string().contains("gs://no-such-bucket/p"), "{err}");
    assert_eq!(err.class(), ErrorClass::Fatal, "{err}");
}

#[tokio::test]
async fn gcs_unreachable_endpoint_is_transient() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let options = GcsOptions {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        anonymous: true,
    };
    let store = buffer::open("gs://b/p", options).await.expect("open");
    let err = store.list("").await.expect_err("nothing listens");
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
}
