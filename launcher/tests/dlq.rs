//! `revrepl dlq list | show | retry` as real processes against a real MariaDB shard, a local
//! buffer holding dead letters as the writer writes them, and an SQLite metadata store: commit
//! order, exactly once across a SIGKILL mid-retry, `severe`, and the writer lease.
//!
//! Triggers count every row change MySQL applies, so a letter applied twice shows.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use revrepl_metadata::{
    LeaseKeeper, LeaseOwner, LeaseRole, MetadataStore, MissingTables, RunId, SqliteMetadataStore,
    SqliteOptions,
};
use revrepl_record::buffer::LocalDirectory;
use revrepl_record::{BufferStore, ChangeRecord, Mod, ModType, ShardId, Timestamp, Window};
use revrepl_test_services::MariaDb;
use revrepl_writer::{SpannerTransaction, WriterError};
use serde_json::json;

const RUN: &str = "dlqrun";
const START: i64 = 1_700_000_000;

const SCHEMA: [&str; 6] = [
    "CREATE TABLE users (id BIGINT PRIMARY KEY, name VARCHAR(8))",
    "CREATE TABLE applied (id BIGINT PRIMARY KEY, changes INT NOT NULL)",
    "CREATE TRIGGER users_ai AFTER INSERT ON users FOR EACH ROW \
     INSERT INTO applied VALUES (NEW.id, 1) ON DUPLICATE KEY UPDATE changes = changes + 1",
    "CREATE TRIGGER users_au AFTER UPDATE ON users FOR EACH ROW \
     INSERT INTO applied VALUES (NEW.id, 1) ON DUPLICATE KEY UPDATE changes = changes + 1",
    "CREATE TRIGGER users_ad AFTER DELETE ON users FOR EACH ROW \
     INSERT INTO applied VALUES (OLD.id, 1) ON DUPLICATE KEY UPDATE changes = changes + 1",
    // The cause of the dead letters: ids of 100 and more were refused.
    "ALTER TABLE users ADD CONSTRAINT small_ids CHECK (id < 100)",
];

struct Setup {
    dir: tempfile::TempDir,
    server: MariaDb,
    config: PathBuf,
    metadata: Arc<SqliteMetadataStore>,
}

impl Setup {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = MariaDb::start().expect("mariadb");
        let mut conn = connect(&server.url()).await;
        conn.query_drop("CREATE DATABASE app").await.expect("db");
        conn.query_drop("USE app").await.expect("use");
        for statement in SCHEMA {
            conn.query_drop(statement).await.expect("schema");
        }
        std::fs::write(
            dir.path().join("shards.json"),
            json!([{"logicalShardId": "s0", "host": "127.0.0.1", "port": server.port(),
                    "user": "root", "password": "", "dbName": "app"}])
            .to_string(),
        )
        .expect("shards file");
        let metadata =
            SqliteMetadataStore::open(dir.path().join("meta.db"), SqliteOptions::default())
                .await
                .expect("sqlite");
        metadata
            .ensure_tables(MissingTables::Create)
            .await
            .expect("tables");
        let config = dir.path().join("revrepl.toml");
        std::fs::write(
            &config,
            format!(
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
dead_letter = true
"#,
                dir = dir.path().display()
            ),
        )
        .expect("config");
        Self {
            dir,
            server,
            config,
            metadata: Arc::new(metadata),
        }
    }

    fn buffer(&self) -> LocalDirectory {
        LocalDirectory::new(self.dir.path().join("buffer"))
    }

    async fn conn(&self) -> Conn {
        connect(&format!("{}/app", self.server.url())).await
    }

    /// Sets a transaction aside as the writer does: `changes` are (id, name or `None` to
    /// delete) written at `START + second`.
    async fn dead_letter(&self, second: i64, changes: &[(i64, Option<&str>)]) -> String {
        let shard = ShardId::new("s0").expect("id");
        let commit = Timestamp::new(START + second, 0).expect("ts");
        let records: Vec<ChangeRecord> = changes
            .iter()
            .enumerate()
            .map(|(seq, (id, name))| ChangeRecord {
                commit_timestamp: commit,
                server_transaction_id: format!("txn-{second}"),
                record_sequence: format!("{seq:08}"),
                table_name: "users".into(),
                mods: [Mod {
                    keys_json: json!({"id": id.to_string()}).to_string(),
                    old_values_json: "{}".into(),
                    new_values_json: match name {
                        Some(name) => json!({"name": name}).to_string(),
                        None => "{}".into(),
                    },
                }],
                mod_type: if name.is_some() {
                    ModType::Update
                } else {
                    ModType::Delete
                },
                number_of_records_in_transaction: changes.len() as u64,
                transaction_tag: String::new(),
                shard: "s0".into(),
            })
            .collect();
        let transaction = SpannerTransaction::group(records).remove(0);
        let window = Window::from_bounds(
            Timestamp::new(START + second, 0).expect("ts"),
            Timestamp::new(START + second + 1, 0).expect("ts"),
        )
        .expect("window");
        let error = WriterError::Config {
            key: "test".into(),
            reason: "CONSTRAINT `small_ids` failed for `app`.`users`".into(),
        };
        let (path, bytes) = revrepl_writer::dead_letter::encode(
            &shard,
            window,
            &transaction,
            "s0/file.txt",
            &error,
        );
        self.buffer()
            .put_if_absent(&path, bytes)
            .await
            .expect("write letter");
        path
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_revrepl"));
        command
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    async fn revrepl(&self, args: &[&str]) -> (Option<i32>, String) {
        let output = tokio::time::timeout(Duration::from_secs(120), self.command(args).output())
            .await
            .expect("revrepl finishes within 120 s")
            .expect("run revrepl");
        let text = format!(
            "{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.code(), text)
    }

    async fn changes(&self, id: i64) -> i64 {
        let changes: Option<i64> = self
            .conn()
            .await
            .exec_first("SELECT changes FROM applied WHERE id = ?", (id,))
            .await
            .expect("changes");
        changes.unwrap_or(0)
    }

    async fn name(&self, id: i64) -> Option<Option<String>> {
        self.conn()
            .await
            .exec_first("SELECT name FROM users WHERE id = ?", (id,))
            .await
            .expect("name")
    }

    async fn ledger(&self) -> Vec<(String, String)> {
        self.conn()
            .await
            .query("SELECT dead_letter, state FROM revrepl_dead_letters ORDER BY dead_letter")
            .await
            .unwrap_or_default()
    }
}

async fn connect(url: &str) -> Conn {
    Conn::new(Opts::from_url(url).expect("url"))
        .await
        .expect("connect")
}

#[tokio::test]
async fn retry_applies_in_commit_order_once_and_moves_what_fails_again_to_severe() {
    let setup = Setup::new().await;
    // Written out of commit order on purpose: the retry sorts.
    let second = setup.dead_letter(2, &[(200, Some("b"))]).await;
    let first = setup
        .dead_letter(1, &[(200, Some("a")), (201, Some("x"))])
        .await;
    // Too long for VARCHAR(8): still fails after the constraint is dropped.
    let hopeless = setup.dead_letter(3, &[(202, Some("much too long"))]).await;

    let (code, out) = setup.revrepl(&["dlq", "list"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("shard s0: 3 pending, 0 severe, 0 applied"),
        "{out}"
    );
    assert!(
        out.contains("3 × configuration: test: CONSTRAINT"),
        "causes grouped\n{out}"
    );
    assert!(
        out.contains(&format!(
            "first commit {}",
            Timestamp::new(START + 1, 0).expect("ts").to_rfc3339()
        )),
        "{out}"
    );
    let (code, out) = setup.revrepl(&["dlq", "show", "--shard", "s0"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&first) && out.contains("Update users {\"id\":\"201\"}"),
        "{out}"
    );

    // A writer of the shard runs: the retry is refused and applies nothing.
    let lease = LeaseKeeper::acquire(
        Arc::clone(&setup.metadata) as Arc<dyn MetadataStore>,
        RunId::new(RUN).expect("run"),
        LeaseRole::Writer(ShardId::new("s0").expect("id")),
        LeaseOwner::this_process(),
        Duration::from_secs(30),
    )
    .await
    .expect("lease");
    let (code, out) = setup.revrepl(&["dlq", "retry", "--shard", "s0"]).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("stop it"), "{out}");
    assert_eq!(setup.changes(200).await, 0);
    lease.release().await;

    // The operator fixes the cause, then retries.
    setup
        .conn()
        .await
        .query_drop("ALTER TABLE users DROP CONSTRAINT small_ids")
        .await
        .expect("drop constraint");
    let (code, out) = setup.revrepl(&["dlq", "retry", "--shard", "s0"]).await;
    assert_eq!(code, Some(1), "a letter failed again\n{out}");
    assert!(
        out.contains("2 applied, 0 applied before, 1 failed again"),
        "{out}"
    );
    assert_eq!(
        setup.name(200).await,
        Some(Some("b".into())),
        "commit order"
    );
    assert_eq!(setup.changes(200).await, 2);
    assert_eq!(setup.changes(201).await, 1);
    assert_eq!(setup.name(202).await, None);
    let ledger = setup.ledger().await;
    assert_eq!(
        ledger,
        vec![
            (first.clone(), "applied".to_string()),
            (second.clone(), "applied".to_string()),
            (hopeless.clone(), "severe".to_string()),
        ]
    );
    let severe = setup
        .buffer()
        .get(&revrepl_writer::dead_letter::severe_path(&hopeless))
        .await
        .expect("get")
        .expect("severe copy written");
    let severe: serde_json::Value = serde_json::from_slice(&severe).expect("json");
    assert!(
        severe["retryError"]
            .as_str()
            .is_some_and(|e| e.contains("1406") || e.contains("name")),
        "{severe}"
    );

    // Again: nothing is applied twice, the severe letter is left alone.
    let (code, out) = setup.revrepl(&["dlq", "retry"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("0 applied, 2 applied before, 0 failed again"),
        "{out}"
    );
    assert!(out.contains("1 severe left alone"), "{out}");
    assert_eq!(setup.changes(200).await, 2);
    let (code, out) = setup.revrepl(&["dlq", "list"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("shard s0: 0 pending, 1 severe, 2 applied"),
        "{out}"
    );
    assert!(
        out.contains("1 × shard s0"),
        "the severe letter's new error\n{out}"
    );
}

#[tokio::test]
async fn a_retry_killed_midway_applies_nothing_twice() {
    let setup = Setup::new().await;
    setup
        .conn()
        .await
        .query_drop("ALTER TABLE users DROP CONSTRAINT small_ids")
        .await
        .expect("drop constraint");
    let mut letters = Vec::new();
    for i in 0..6 {
        letters.push(
            setup
                .dead_letter(i, &[(300 + i, Some("v")), (400, Some(&*format!("n{i}")))])
                .await,
        );
    }
    // Another session holds row 303: the retry applies the first three letters and waits
    // inside the fourth's MySQL transaction.
    let mut blocker = setup.conn().await;
    blocker
        .query_drop("START TRANSACTION")
        .await
        .expect("begin");
    blocker
        .query_drop("INSERT INTO users VALUES (303, 'lock')")
        .await
        .expect("lock row 303");
    let mut child = setup
        .command(&["dlq", "retry", "--shard", "s0"])
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let applied = setup.ledger().await.len();
        assert!(applied <= 3, "applied past the held row");
        if applied == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the retry did not reach the held row"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("wait");
    blocker.query_drop("ROLLBACK").await.expect("rollback");
    drop(blocker);

    let (code, out) = setup.revrepl(&["dlq", "retry", "--shard", "s0"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("3 applied, 3 applied before, 0 failed again"),
        "{out}"
    );
    for i in 0..6 {
        assert_eq!(setup.changes(300 + i).await, 1, "letter {i} applied once");
    }
    assert_eq!(
        setup.changes(400).await,
        6,
        "row 400 changed once per letter"
    );
    assert_eq!(
        setup.name(400).await,
        Some(Some("n5".into())),
        "commit order"
    );
    assert!(
        setup
            .ledger()
            .await
            .iter()
            .all(|(_, state)| state == "applied")
    );
}
