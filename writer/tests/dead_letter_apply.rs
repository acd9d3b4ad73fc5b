//! [`ShardApplier::apply_dead_letter`] against a real MariaDB shard: the connection killed
//! before `COMMIT` applies nothing, killed after it (the reply lost) applies once — the retry
//! then finds the letter in the ledger — and a letter applied once is never applied again.
//! A trigger counts every row change, so a letter applied twice shows.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use revrepl_record::{ChangeRecord, Classify, ErrorClass, Mod, ModType, ShardId, Timestamp};
use revrepl_test_services::MariaDb;
use revrepl_writer::apply::FaultPoint;
use revrepl_writer::{ApplierConfig, DeadLetterApply, ShardApplier, SpannerTransaction};
use serde_json::json;

fn letter(id: i64, name: &str) -> SpannerTransaction {
    let record = ChangeRecord {
        commit_timestamp: Timestamp::new(1_700_000_000 + id, 0).expect("ts"),
        server_transaction_id: format!("txn-{id}"),
        record_sequence: "00000000".into(),
        table_name: "users".into(),
        mods: [Mod {
            keys_json: json!({"id": id.to_string()}).to_string(),
            old_values_json: "{}".into(),
            new_values_json: json!({"name": name}).to_string(),
        }],
        mod_type: ModType::Insert,
        number_of_records_in_transaction: 1,
        transaction_tag: String::new(),
        shard: "s0".into(),
    };
    SpannerTransaction::group(vec![record]).remove(0)
}

/// How many row changes MySQL applied to row `id`.
async fn changes(url: &str, id: i64) -> i64 {
    let mut conn = Conn::new(Opts::from_url(url).expect("url"))
        .await
        .expect("connect");
    let n: Option<i64> = conn
        .exec_first("SELECT changes FROM app.applied WHERE id = ?", (id,))
        .await
        .expect("changes");
    n.unwrap_or(0)
}

/// Kills the connection once, at `point`.
fn kill_once_at(point: FaultPoint) -> revrepl_writer::apply::FaultHook {
    let done = Arc::new(AtomicBool::new(false));
    Arc::new(move |at| at == point && !done.swap(true, Ordering::SeqCst))
}

#[tokio::test]
async fn a_dead_letter_is_applied_once_whatever_the_connection_does() {
    let server = MariaDb::start().expect("mariadb");
    let mut admin = Conn::new(Opts::from_url(&server.url()).expect("url"))
        .await
        .expect("connect");
    for statement in [
        "CREATE DATABASE app",
        "CREATE TABLE app.users (id BIGINT PRIMARY KEY, name VARCHAR(16))",
        "CREATE TABLE app.applied (id BIGINT PRIMARY KEY, changes INT NOT NULL)",
        "CREATE TRIGGER app.users_ai AFTER INSERT ON app.users FOR EACH ROW \
         INSERT INTO app.applied VALUES (NEW.id, 1) ON DUPLICATE KEY UPDATE changes = changes + 1",
        "CREATE TRIGGER app.users_au AFTER UPDATE ON app.users FOR EACH ROW \
         INSERT INTO app.applied VALUES (NEW.id, 1) ON DUPLICATE KEY UPDATE changes = changes + 1",
    ] {
        admin.query_drop(statement).await.expect(statement);
    }
    let opts = Opts::from_url(&format!("{}/app", server.url())).expect("url");
    let config = ApplierConfig::new("run", ShardId::new("s0").expect("id"), opts);
    let applier = ShardApplier::connect(config).await.expect("applier");
    let url = server.url();
    let changes = |id: i64| changes(&url, id);

    // Killed before COMMIT: nothing applied, nothing recorded; the next attempt applies.
    applier.set_fault_hook(Some(kill_once_at(FaultPoint::Commit)));
    let error = applier
        .apply_dead_letter("dlq/s0/a.json", &letter(1, "one"), false)
        .await
        .expect_err("killed");
    assert_eq!(error.class(), ErrorClass::Transient, "{error}");
    assert_eq!(changes(1).await, 0);
    let applied = applier
        .apply_dead_letter("dlq/s0/a.json", &letter(1, "one"), false)
        .await
        .expect("applied");
    assert!(matches!(
        applied,
        DeadLetterApply::Applied { records: 1, .. }
    ));
    assert_eq!(changes(1).await, 1);

    // Killed after COMMIT (the reply lost): applied once; the retry finds it in the ledger.
    applier.set_fault_hook(Some(kill_once_at(FaultPoint::Committed)));
    assert!(
        applier
            .apply_dead_letter("dlq/s0/b.json", &letter(2, "two"), false)
            .await
            .is_err()
    );
    assert_eq!(changes(2).await, 1);
    let again = applier
        .apply_dead_letter("dlq/s0/b.json", &letter(2, "two"), false)
        .await
        .expect("answered");
    assert_eq!(again, DeadLetterApply::AlreadyApplied);
    assert_eq!(changes(2).await, 1);

    // Applied letters stay applied, also when severe ones are asked for.
    applier.set_fault_hook(None);
    let again = applier
        .apply_dead_letter("dlq/s0/a.json", &letter(1, "one"), true)
        .await
        .expect("answered");
    assert_eq!(again, DeadLetterApply::AlreadyApplied);
    assert_eq!(changes(1).await, 1);

    // A severe letter is left alone unless asked for.
    applier
        .record_severe_dead_letter("dlq/s0/c.json", "it failed")
        .await
        .expect("recorded");
    assert_eq!(
        applier
            .apply_dead_letter("dlq/s0/c.json", &letter(3, "three"), false)
            .await
            .expect("answered"),
        DeadLetterApply::Severe
    );
    assert_eq!(changes(3).await, 0);
    assert!(matches!(
        applier
            .apply_dead_letter("dlq/s0/c.json", &letter(3, "three"), true)
            .await
            .expect("answered"),
        DeadLetterApply::Applied { .. }
    ));
    assert_eq!(changes(3).await, 1);
    let ledger = applier.dead_letter_ledger().await.expect("ledger");
    assert_eq!(ledger.len(), 3);
    applier.close().await;
}
