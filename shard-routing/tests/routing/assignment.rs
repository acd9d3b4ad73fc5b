//! Routing decisions: single shard, session-file shard columns, skip, unknown shards, and
//! deletes completed from old values or a row lookup just before the commit.

use std::sync::Arc;

use revrepl_record::{Classify, Destination, ErrorClass, ShardId, Timestamp};
use revrepl_shard_routing::{
    NoRowLookup, RoutingError, RowNeed, SessionRouter, ShardAssigner, ShardRouter, ShardsFile,
    SingleShardRouter,
};
use serde_json::json;

use crate::records::{RowHistory, commit_time, object, record, request};
use crate::session_file::music_session;

fn shard(id: &str) -> ShardId {
    ShardId::new(id).expect("a valid shard id")
}

fn to(id: &str) -> Destination {
    Destination::Shard(shard(id))
}

fn session_assigner() -> ShardAssigner<NoRowLookup> {
    ShardAssigner::new(
        Box::new(SessionRouter::new(Arc::new(music_session()))),
        [shard("ls1"), shard("ls2")],
    )
}

/// One nanosecond before the test records' commit.
fn just_before_commit() -> Timestamp {
    Timestamp::from_nanos(commit_time().as_nanos() - 1).expect("a valid timestamp")
}

#[tokio::test]
async fn single_shard_routes_every_table_there() {
    let shards = ShardsFile::from_json(
        "shards.json",
        r#"[{"logicalShardId": "only", "host": "h", "user": "u", "password": "", "dbName": "d"}]"#,
    )
    .expect("valid shards file");
    let router = SingleShardRouter::from_shards_file(&shards).expect("one shard");
    assert_eq!(router.row_need("Anything"), RowNeed::Nothing);
    let assigner = ShardAssigner::new(Box::new(router), shards.shard_ids().cloned());
    for table in ["Singers", "NotInAnySession"] {
        let delete = request(table, "DELETE", json!({"id": "1"}), json!({}), json!({}));
        assert_eq!(assigner.assign(&delete).await.expect("routed"), to("only"));
    }

    let two = ShardsFile::from_json(
        "shards.json",
        r#"[{"logicalShardId": "a", "host": "h", "user": "u", "password": "", "dbName": "d"},
            {"logicalShardId": "b", "host": "h", "user": "u", "password": "", "dbName": "d"}]"#,
    )
    .expect("valid shards file");
    let error = SingleShardRouter::from_shards_file(&two).expect_err("two shards");
    assert_eq!(
        error.to_string(),
        "single-shard routing needs exactly one shard in the shards file, found 2; with several \
         shards, configure a session file with shard-id columns or a router plugin"
    );
    assert_eq!(error.class(), ErrorClass::Fatal);
}

#[tokio::test]
async fn inserts_and_updates_route_by_the_shard_column() {
    let assigner = session_assigner();
    // Shard column in the key (Singers' key starts with migration_shard_id).
    let insert = record(
        "Singers",
        "INSERT",
        json!({"migration_shard_id": "ls2", "SingerId": "1"}),
        json!({"FirstName": "Ella"}),
        json!({}),
    );
    assert_eq!(
        assigner.assign_record(&insert).await.expect("routed"),
        to("ls2")
    );
    // Shard column among the new values (Accounts.RegionShard is not a key column).
    let update = request(
        "Accounts",
        "UPDATE",
        json!({"AccountId": "a-1"}),
        json!({"Balance": 1.5, "RegionShard": "ls1"}),
        json!({}),
    );
    assert_eq!(assigner.assign(&update).await.expect("routed"), to("ls1"));
    // An update whose new values lack the column, with old values that have it.
    let partial = request(
        "Accounts",
        "UPDATE",
        json!({"AccountId": "a-1"}),
        json!({"Balance": 2.5}),
        json!({"Balance": 1.5, "RegionShard": "ls2"}),
    );
    assert_eq!(assigner.assign(&partial).await.expect("routed"), to("ls2"));
}

#[tokio::test]
async fn tables_unknown_to_the_session_go_to_skip() {
    let assigner = session_assigner();
    for table in ["Audit", "audit_log", "singers"] {
        let insert = request(table, "INSERT", json!({"id": "1"}), json!({}), json!({}));
        assert_eq!(
            assigner.assign(&insert).await.expect("skipped"),
            Destination::Skip,
            "{table}"
        );
    }
}

/// Issue 12.3: a table of the session file without a source table (added after the migration)
/// goes to `skip/` at the reader, even with a valid shard id, and a delete needs no row lookup.
#[tokio::test]
async fn spanner_only_tables_go_to_skip() {
    let assigner = session_assigner();
    for (mod_type, new_values) in [
        ("INSERT", json!({"migration_shard_id": "ls1"})),
        ("DELETE", json!({})),
    ] {
        let change = request(
            "SpannerOnlyEvents",
            mod_type,
            json!({"EventId": "1"}),
            new_values,
            json!({}),
        );
        assert_eq!(
            assigner.assign(&change).await.expect("skipped"),
            Destination::Skip,
            "{mod_type}"
        );
    }
}

#[tokio::test]
async fn routing_errors_name_table_key_and_cause() {
    let assigner = session_assigner();
    let message = |error: RoutingError| (error.class(), error.to_string());

    let unknown = request(
        "Accounts",
        "INSERT",
        json!({"AccountId": "a-9"}),
        json!({"RegionShard": "ls9"}),
        json!({}),
    );
    assert_eq!(
        message(assigner.assign(&unknown).await.expect_err("ls9 is not a shard")),
        (
            ErrorClass::Definite,
            r#"record of table "Accounts" with key {"AccountId":"a-9"} routes to logical shard "ls9", which is not in the shards file"#
                .to_string()
        )
    );

    let null = request(
        "Accounts",
        "INSERT",
        json!({"AccountId": "a-1"}),
        json!({"RegionShard": null}),
        json!({}),
    );
    assert_eq!(
        message(assigner.assign(&null).await.expect_err("NULL shard")).1,
        r#"record of table "Accounts" with key {"AccountId":"a-1"}: shard column "RegionShard" is NULL"#
    );

    let missing = request(
        "Accounts",
        "UPDATE",
        json!({"AccountId": "a-1"}),
        json!({"Balance": 3}),
        json!({}),
    );
    assert_eq!(
        message(
            assigner
                .assign(&missing)
                .await
                .expect_err("no shard column")
        )
        .1,
        r#"record of table "Accounts" with key {"AccountId":"a-1"} has no value for shard column "RegionShard" (UPDATE; the change stream must capture NEW_ROW or NEW_ROW_AND_OLD_VALUES)"#
    );

    let reserved = request(
        "Accounts",
        "INSERT",
        json!({"AccountId": "a-1"}),
        json!({"RegionShard": "skip"}),
        json!({}),
    );
    assert_eq!(
        message(assigner.assign(&reserved).await.expect_err("reserved id")).1,
        r#"record of table "Accounts" with key {"AccountId":"a-1"} routes to an invalid logical shard id: shard id "skip" is reserved for the buffer's own directory"#
    );

    let countries = request(
        "Countries",
        "INSERT",
        json!({"Code": "FR"}),
        json!({}),
        json!({}),
    );
    let (class, text) = message(
        assigner
            .assign(&countries)
            .await
            .expect_err("no shard column"),
    );
    assert_eq!(class, ErrorClass::Fatal);
    assert!(
        text.starts_with(
            r#"record of table "Countries" with key {"Code":"FR"}: the table has no ShardIdColumn in session file ""#
        ),
        "{text}"
    );

    let mut broken = record("Singers", "INSERT", json!({}), json!({}), json!({}));
    broken.mods[0].keys_json = "{\"SingerId\":".to_string();
    assert!(
        message(
            assigner
                .assign_record(&broken)
                .await
                .expect_err("bad keysJson")
        )
        .1
        .starts_with(r#"record of table "Singers": keysJson is not a JSON object"#)
    );
}

#[tokio::test]
async fn int64_and_other_scalar_shard_values_are_used_as_text() {
    let assigner = ShardAssigner::new(
        Box::new(SessionRouter::new(Arc::new(music_session()))),
        [shard("1"), shard("true")],
    );
    for (value, expected) in [(json!("1"), "1"), (json!(1), "1"), (json!(true), "true")] {
        let insert = request(
            "Accounts",
            "INSERT",
            json!({"AccountId": "a"}),
            json!({"RegionShard": value}),
            json!({}),
        );
        assert_eq!(
            assigner.assign(&insert).await.expect("routed"),
            to(expected)
        );
    }
}

#[tokio::test]
async fn deletes_with_the_shard_column_in_the_key_need_no_lookup() {
    let history = RowHistory::unavailable();
    let assigner = session_assigner().with_row_lookup(history);
    let delete = request(
        "Singers",
        "DELETE",
        json!({"migration_shard_id": "ls1", "SingerId": "1"}),
        json!({}),
        json!({}),
    );
    assert_eq!(assigner.assign(&delete).await.expect("routed"), to("ls1"));
}

#[tokio::test]
async fn deletes_use_old_values_when_the_stream_has_them() {
    let assigner = session_assigner().with_row_lookup(RowHistory::unavailable());
    let delete = request(
        "Accounts",
        "DELETE",
        json!({"AccountId": "a-1"}),
        json!({}),
        json!({"Balance": 1.5, "RegionShard": "ls2"}),
    );
    assert_eq!(assigner.assign(&delete).await.expect("routed"), to("ls2"));
}

#[tokio::test]
async fn deletes_without_old_values_read_the_row_just_before_the_commit() {
    let keys = json!({"AccountId": "a-1"});
    let history = RowHistory::default()
        .write(
            "Accounts",
            keys.clone(),
            Timestamp::new(1_700_000_000, 0).expect("ts"),
            Some(json!({"AccountId": "a-1", "Balance": 1.0, "RegionShard": "ls1"})),
        )
        .write(
            "Accounts",
            keys.clone(),
            Timestamp::new(1_719_000_000, 0).expect("ts"),
            Some(json!({"AccountId": "a-1", "Balance": 2.0, "RegionShard": "ls2"})),
        )
        // The delete itself: a read at the commit timestamp would find no row.
        .write("Accounts", keys.clone(), commit_time(), None);
    let assigner = session_assigner().with_row_lookup(history);
    let delete = request("Accounts", "DELETE", keys.clone(), json!({}), json!({}));
    assert_eq!(assigner.assign(&delete).await.expect("routed"), to("ls2"));
}

#[tokio::test]
async fn the_lookup_is_asked_for_the_table_key_columns_and_timestamp() {
    let keys = json!({"AccountId": "a-1"});
    let history = RowHistory::default().write(
        "Accounts",
        keys.clone(),
        Timestamp::new(1_700_000_000, 0).expect("ts"),
        Some(json!({"RegionShard": "ls1"})),
    );
    let assigner = session_assigner().with_row_lookup(history);
    // Old values without the shard column (OLD_AND_NEW_VALUES of an unrelated column) still
    // need the lookup.
    let delete = request(
        "Accounts",
        "DELETE",
        keys.clone(),
        json!({}),
        json!({"Balance": 1}),
    );
    assert_eq!(assigner.assign(&delete).await.expect("routed"), to("ls1"));
    let insert = request(
        "Accounts",
        "INSERT",
        keys.clone(),
        json!({"RegionShard": "ls2"}),
        json!({}),
    );
    assert_eq!(assigner.assign(&insert).await.expect("routed"), to("ls2"));
    let skipped = request("Audit", "DELETE", json!({"id": "1"}), json!({}), json!({}));
    assert_eq!(
        assigner.assign(&skipped).await.expect("skipped"),
        Destination::Skip
    );

    let history = assigner_history(&assigner);
    let calls = history.calls();
    assert_eq!(
        calls.len(),
        1,
        "only the delete lacking its shard column reads: {calls:?}"
    );
    assert_eq!(calls[0].table, "Accounts");
    assert_eq!(calls[0].keys, object(keys));
    assert_eq!(
        calls[0].columns,
        RowNeed::Columns(vec!["RegionShard".to_string()])
    );
    assert_eq!(calls[0].read_timestamp, just_before_commit());
}

/// The lookup inside an assigner built by these tests.
fn assigner_history(assigner: &ShardAssigner<RowHistory>) -> &RowHistory {
    assigner
        .row_lookup()
        .expect("the assigner was given a row lookup")
}

#[tokio::test]
async fn failed_lookups_keep_their_class_and_name_the_row() {
    let assigner = session_assigner().with_row_lookup(RowHistory::unavailable());
    let delete = request(
        "Accounts",
        "DELETE",
        json!({"AccountId": "a-1"}),
        json!({}),
        json!({}),
    );
    let error = assigner.assign(&delete).await.expect_err("unavailable");
    assert_eq!(error.class(), ErrorClass::Transient);
    assert_eq!(
        error.to_string(),
        format!(
            r#"reading the deleted row of table "Accounts" with key {{"AccountId":"a-1"}} at {} failed: spanner is unavailable (test)"#,
            just_before_commit().to_rfc3339()
        )
    );
}

#[tokio::test]
async fn a_row_missing_before_its_delete_is_a_definite_error() {
    let assigner = session_assigner().with_row_lookup(RowHistory::default());
    let delete = request(
        "Accounts",
        "DELETE",
        json!({"AccountId": "a-1"}),
        json!({}),
        json!({}),
    );
    let error = assigner.assign(&delete).await.expect_err("no row");
    assert_eq!(error.class(), ErrorClass::Definite);
    assert!(
        error.to_string().starts_with(
            r#"record of table "Accounts" with key {"AccountId":"a-1"} deletes a row that did not exist at "#
        ),
        "{error}"
    );
}

#[tokio::test]
async fn without_a_lookup_such_deletes_are_refused_clearly() {
    let delete = request(
        "Accounts",
        "DELETE",
        json!({"AccountId": "a-1"}),
        json!({}),
        json!({}),
    );
    let error = session_assigner()
        .assign(&delete)
        .await
        .expect_err("no lookup");
    assert_eq!(
        error.to_string(),
        r#"record of table "Accounts" with key {"AccountId":"a-1"} is a delete without old values, and no row lookup is configured to find its shard"#
    );
    assert_eq!(error.class(), ErrorClass::Fatal);
}
