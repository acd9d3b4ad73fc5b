//! The apply engine against real MariaDB shards: golden values per Spanner type × MySQL column
//! type, statement order, foreign keys, the checkpoint, rollback on definite errors and retry
//! of transient ones. One MariaDB server per test (nextest runs each test in its own process).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Row, Value};
use revrepl_record::{
    Backoff, ChangeRecord, Classify, ErrorClass, Mod, ModType, ShardId, Timestamp, Window,
};
use revrepl_test_services::MariaDb;
use revrepl_writer::{
    ApplierConfig, BatchWindows, ColumnMapping, SchemaMapping, ShardApplier, SpannerScalar,
    SpannerTransaction, SpannerType, TableMapping, WriterError,
};
use serde_json::json;

const SHARD: &str = "ls1";
/// Start of the test window: 2023-11-14T22:13:20Z.
const BASE: i64 = 1_700_000_000;

fn window() -> Window {
    window_at(0)
}

/// The `index`-th 10-second window from [`BASE`].
fn window_at(index: i64) -> Window {
    Window::from_bounds(
        Timestamp::new(BASE + 10 * index, 0).expect("valid start"),
        Timestamp::new(BASE + 10 * index + 10, 0).expect("valid end"),
    )
    .expect("valid window")
}

/// A record of transaction `txid` committed `offset_ms` milliseconds after [`BASE`].
fn record(
    offset_ms: i64,
    txid: &str,
    sequence: u32,
    table: &str,
    mod_type: ModType,
    keys: serde_json::Value,
    new_values: serde_json::Value,
) -> ChangeRecord {
    let nanos = u32::try_from(offset_ms.rem_euclid(1_000) * 1_000_000).expect("small");
    ChangeRecord {
        commit_timestamp: Timestamp::new(BASE + offset_ms.div_euclid(1_000), nanos)
            .expect("valid timestamp"),
        server_transaction_id: txid.to_string(),
        record_sequence: format!("{sequence:08}"),
        table_name: table.to_string(),
        mods: [Mod {
            keys_json: keys.to_string(),
            old_values_json: "{}".to_string(),
            new_values_json: new_values.to_string(),
        }],
        mod_type,
        number_of_records_in_transaction: 1,
        transaction_tag: String::new(),
        shard: SHARD.to_string(),
    }
}

fn shard() -> ShardId {
    ShardId::new(SHARD).expect("valid shard id")
}

/// Creates database `name` with `ddl` and returns connection options for it.
async fn database(server: &MariaDb, name: &str, ddl: &[&str]) -> Opts {
    let mut conn = Conn::from_url(server.url()).await.expect("connect as root");
    conn.query_drop(format!("CREATE DATABASE `{name}`"))
        .await
        .expect("create database");
    conn.query_drop(format!("USE `{name}`")).await.expect("use");
    for statement in ddl {
        conn.query_drop(*statement).await.expect("ddl");
    }
    conn.disconnect().await.expect("disconnect");
    Opts::from_url(&format!("{}/{name}", server.url())).expect("valid url")
}

async fn applier(opts: &Opts, zone: &str, mapping: SchemaMapping) -> ShardApplier {
    let mut config = ApplierConfig::new("run-1", shard(), opts.clone());
    config.time_zone = zone.parse().expect("valid zone");
    config.mapping = Arc::new(mapping);
    ShardApplier::connect(config)
        .await
        .expect("applier connects")
}

/// A reading connection in UTC.
async fn reader(opts: &Opts) -> Conn {
    let mut conn = Conn::new(opts.clone()).await.expect("connect reader");
    conn.query_drop("SET time_zone = '+00:00'")
        .await
        .expect("utc session");
    conn
}

/// One row of `sql` as texts (text protocol), `None` for NULL.
async fn texts(conn: &mut Conn, sql: &str) -> Vec<Option<String>> {
    let row: Option<Row> = conn.query_first(sql).await.expect("query");
    let row = row.unwrap_or_else(|| panic!("no row for {sql}"));
    (0..row.len())
        .map(|i| match row.as_ref(i) {
            None | Some(Value::NULL) => None,
            Some(Value::Bytes(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
            Some(other) => Some(other.as_sql(true)),
        })
        .collect()
}

async fn prepares(conn: &mut Conn) -> u64 {
    let status: Option<(String, u64)> = conn
        .query_first("SHOW GLOBAL STATUS LIKE 'Com_stmt_prepare'")
        .await
        .expect("status");
    status.map_or(0, |(_, n)| n)
}

async fn count(conn: &mut Conn, sql: &str) -> u64 {
    let n: Option<u64> = conn.query_first(sql).await.expect("count query");
    n.unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn some(text: &str) -> Option<String> {
    Some(text.to_string())
}

const GOLDEN_TABLE: &str = "CREATE TABLE golden (
    id BIGINT NOT NULL PRIMARY KEY,
    i8 TINYINT, u8 TINYINT UNSIGNED, i16 SMALLINT, i24 MEDIUMINT, i32 INT,
    u32 INT UNSIGNED, i64 BIGINT, u64 BIGINT UNSIGNED, flag TINYINT(1),
    dec38 DECIMAL(38,9), dec2 DECIMAL(10,2), f FLOAT, d DOUBLE, bits BIT(12),
    c CHAR(10), vc VARCHAR(100), t TEXT, mt MEDIUMTEXT,
    e ENUM('small','medium','large'), s SET('read','write','admin'),
    bin BINARY(4), vb VARBINARY(300), bl BLOB, lb LONGBLOB,
    dt DATE, dtm DATETIME, dtm6 DATETIME(6), ts TIMESTAMP(6) NULL DEFAULT NULL, tm TIME(6),
    yr YEAR, j JSON
) DEFAULT CHARSET=utf8mb4";

const GOLDEN_COLUMNS: &str = "i8, u8, i16, i24, i32, u32, i64, u64, flag, CAST(dec38 AS CHAR), \
    CAST(dec2 AS CHAR), f, d, bits+0, c, HEX(vc), t, HEX(mt), e, s, HEX(bin), HEX(vb), HEX(bl), \
    LENGTH(lb), dt, dtm, dtm6, ts, tm, yr, j";

#[tokio::test]
async fn golden_values_for_every_type() {
    let server = MariaDb::start().expect("mariadb starts");
    let opts = database(&server, "golden", &[GOLDEN_TABLE]).await;
    let applier = applier(&opts, "America/New_York", SchemaMapping::identity()).await;

    let tricky = "it's a \\ \"quote\" \0 NUL, 'x'' and 🦀 🎉 𝄞";
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let nul_bytes = b"\0a\0'\\\0".to_vec();
    let large: Vec<u8> = (0..1_500_000u32).map(|i| (i * 7 % 251) as u8).collect();

    let typical = json!({
        "i8": "-128", "u8": "255", "i16": "-32768", "i24": "8388607", "i32": "-2147483648",
        "u32": "4294967295", "i64": "-9223372036854775808", "u64": "18446744073709551615",
        "flag": true, "dec38": "12345678901234567890123456789.123456789", "dec2": "-0.5",
        "f": 1.5, "d": 2.718281828459045e10, "bits": "2730", "c": "abc", "vc": tricky, "t": "",
        "mt": "𝄞🦀'\\\"", "e": "medium", "s": ["read", "admin"], "bin": base64(&[0, 1, 2, 3]),
        "vb": base64(&all_bytes), "bl": base64(&nul_bytes), "lb": base64(&large),
        "dt": "2024-02-29", "dtm": "2024-03-10T07:00:00Z",
        // The last microsecond before the 2024-03-10 spring-forward in New York (EST).
        "dtm6": "2024-03-10T06:59:59.999999Z",
        "ts": "2024-03-10T07:00:00.000001Z", "tm": "-12:34:56.789", "yr": "2024",
        "j": "{\"a\": [1, 2], \"q\": \"it's\"}"
    });
    let nulls = json!({
        "i8": null, "u8": null, "i16": null, "i24": null, "i32": null, "u32": null, "i64": null,
        "u64": null, "flag": null, "dec38": null, "dec2": null, "f": null, "d": null,
        "bits": null, "c": null, "vc": null, "t": null, "mt": null, "e": null, "s": null,
        "bin": null, "vb": null, "bl": null, "lb": null, "dt": null, "dtm": null, "dtm6": null,
        "ts": null, "tm": null, "yr": null, "j": null
    });
    let edges = json!({
        "i8": "127", "u8": "0", "i16": "32767", "i24": "-8388608", "i32": "2147483647",
        "u32": "0", "i64": "9223372036854775807", "u64": "0", "flag": false,
        "dec38": "-99999999999999999999999999999.999999999", "dec2": "12345678.99",
        "f": -0.25, "d": "1e-300", "bits": "0", "c": "", "vc": "", "t": "\\\\'\"\0",
        "mt": "", "e": "small", "s": "", "bin": base64(&[]), "vb": "", "bl": base64(&[0]),
        "lb": "", "dt": "0001-01-01",
        // The fall-back hour happens twice in New York: 01:30 EDT, then 01:30 EST.
        "dtm": "2024-11-03T05:30:00Z", "dtm6": "2024-11-03T06:30:00.000001Z",
        "ts": "2024-11-03T05:30:00.5Z", "tm": "838:59:59", "yr": "0",
        "j": ["x", "1", null]
    });
    let transactions = SpannerTransaction::group(vec![
        record(
            1,
            "t1",
            0,
            "golden",
            ModType::Insert,
            json!({"id": "1"}),
            typical,
        ),
        record(
            1,
            "t1",
            1,
            "golden",
            ModType::Insert,
            json!({"id": "2"}),
            nulls,
        ),
        record(
            2,
            "t2",
            0,
            "golden",
            ModType::Insert,
            json!({"id": "3"}),
            edges,
        ),
    ]);
    let outcome = applier
        .apply_batch(window(), &transactions)
        .await
        .expect("golden batch applies");
    assert_eq!(outcome.applied_records, 3);

    let mut conn = reader(&opts).await;
    let row = |id: u32| format!("SELECT {GOLDEN_COLUMNS} FROM golden WHERE id = {id}");
    let expected_typical = vec![
        some("-128"),
        some("255"),
        some("-32768"),
        some("8388607"),
        some("-2147483648"),
        some("4294967295"),
        some("-9223372036854775808"),
        some("18446744073709551615"),
        some("1"),
        some("12345678901234567890123456789.123456789"),
        some("-0.50"),
        some("1.5"),
        some("27182818284.59045"),
        some("2730"),
        some("abc"),
        some(&hex(tricky.as_bytes())),
        some(""),
        some(&hex("𝄞🦀'\\\"".as_bytes())),
        some("medium"),
        some("read,admin"),
        some("00010203"),
        some(&hex(&all_bytes)),
        some(&hex(&nul_bytes)),
        some("1500000"),
        some("2024-02-29"),
        some("2024-03-10 03:00:00"),
        some("2024-03-10 01:59:59.999999"),
        some("2024-03-10 07:00:00.000001"),
        some("-12:34:56.789000"),
        some("2024"),
        some("{\"a\": [1, 2], \"q\": \"it's\"}"),
    ];
    assert_eq!(texts(&mut conn, &row(1)).await, expected_typical);
    assert_eq!(
        texts(&mut conn, &row(2)).await,
        vec![None; expected_typical.len()]
    );
    let expected_edges = vec![
        some("127"),
        some("0"),
        some("32767"),
        some("-8388608"),
        some("2147483647"),
        some("0"),
        some("9223372036854775807"),
        some("0"),
        some("0"),
        some("-99999999999999999999999999999.999999999"),
        some("12345678.99"),
        some("-0.25"),
        some("1e-300"),
        some("0"),
        some(""),
        some(""),
        some("\\\\'\"\0"),
        some(""),
        some("small"),
        some(""),
        // BINARY(4) pads with zero bytes.
        some("00000000"),
        some(""),
        some("00"),
        some("0"),
        some("0001-01-01"),
        some("2024-11-03 01:30:00"),
        some("2024-11-03 01:30:00.000001"),
        some("2024-11-03 05:30:00.500000"),
        some("838:59:59.000000"),
        some("0000"),
        some("[\"x\",\"1\",null]"),
    ];
    assert_eq!(texts(&mut conn, &row(3)).await, expected_edges);

    // The large BYTES value, byte for byte, through the binary protocol.
    let stored: Option<Vec<u8>> = conn
        .exec_first("SELECT lb FROM golden WHERE id = ?", (1,))
        .await
        .expect("read blob");
    assert!(
        stored.as_deref() == Some(large.as_slice()),
        "large blob differs"
    );
    conn.disconnect().await.expect("disconnect");
    applier.close().await;
}

#[tokio::test]
async fn reserved_words_composite_and_key_only_tables_with_a_mapping() {
    let server = MariaDb::start().expect("mariadb starts");
    let opts = database(
        &server,
        "names",
        &[
            "CREATE TABLE `order` (`key` VARCHAR(20) NOT NULL, `select` INT NOT NULL, \
             `desc` TEXT, `we``ird` INT, PRIMARY KEY (`key`, `select`))",
            "CREATE TABLE `tag` (`name` VARCHAR(50) NOT NULL PRIMARY KEY)",
            "CREATE TABLE `users` (user_id BIGINT NOT NULL PRIMARY KEY, photo BLOB, \
             nick VARBINARY(20), note TEXT)",
        ],
    )
    .await;
    let typed = |source: &str, scalar: SpannerScalar| ColumnMapping {
        source_column: Some(source.to_string()),
        spanner_type: Some(SpannerType::scalar(scalar)),
    };
    let users = TableMapping {
        source_table: Some("users".into()),
        columns: [
            ("UserId".to_string(), typed("user_id", SpannerScalar::Int64)),
            ("Photo".to_string(), typed("photo", SpannerScalar::Bytes)),
            // A STRING kept in a binary column: its bytes, not base64.
            ("Nick".to_string(), typed("nick", SpannerScalar::String)),
            // BYTES kept in a text column: decoded.
            ("Note".to_string(), typed("note", SpannerScalar::Bytes)),
            (
                "migration_shard_id".to_string(),
                ColumnMapping {
                    source_column: None,
                    spanner_type: None,
                },
            ),
        ]
        .into_iter()
        .collect(),
    };
    let mapping = SchemaMapping::identity().with_table("Users", users);
    let applier = applier(&opts, "+00:00", mapping).await;

    let batch = SpannerTransaction::group(vec![
        record(
            1,
            "a",
            0,
            "order",
            ModType::Insert,
            json!({"key": "k'1", "select": "1"}),
            json!({"desc": "first", "we`ird": "7"}),
        ),
        record(
            1,
            "a",
            1,
            "order",
            ModType::Insert,
            json!({"key": "k2", "select": "2"}),
            json!({"desc": "second", "we`ird": "8"}),
        ),
        record(
            2,
            "b",
            0,
            "order",
            ModType::Update,
            json!({"key": "k'1", "select": "1"}),
            json!({"desc": "changed", "we`ird": "9"}),
        ),
        record(
            3,
            "c",
            0,
            "order",
            ModType::Delete,
            json!({"key": "k2", "select": "2"}),
            json!({}),
        ),
        record(
            4,
            "d",
            0,
            "tag",
            ModType::Insert,
            json!({"name": "rust"}),
            json!({}),
        ),
        record(
            5,
            "e",
            0,
            "tag",
            ModType::Insert,
            json!({"name": "rust"}),
            json!({}),
        ),
        record(
            5,
            "e",
            1,
            "tag",
            ModType::Insert,
            json!({"name": "sql"}),
            json!({}),
        ),
        record(
            6,
            "f",
            0,
            "tag",
            ModType::Delete,
            json!({"name": "sql"}),
            json!({}),
        ),
        record(
            7,
            "g",
            0,
            "Users",
            ModType::Insert,
            json!({"UserId": "5"}),
            json!({"Photo": base64(b"\x89PNG\0"), "Nick": "AP8A", "Note": base64("héllo".as_bytes()),
                      "migration_shard_id": "ls1"}),
        ),
    ]);
    applier
        .apply_batch(window(), &batch)
        .await
        .expect("batch applies");

    let mut conn = reader(&opts).await;
    assert_eq!(
        texts(
            &mut conn,
            "SELECT COUNT(*), MIN(`key`), MIN(`desc`), MIN(`we``ird`) FROM `order`"
        )
        .await,
        vec![some("1"), some("k'1"), some("changed"), some("9")]
    );
    assert_eq!(
        texts(&mut conn, "SELECT GROUP_CONCAT(name) FROM tag").await,
        vec![some("rust")]
    );
    assert_eq!(
        texts(
            &mut conn,
            "SELECT HEX(photo), nick, note FROM users WHERE user_id = 5"
        )
        .await,
        vec![some(&hex(b"\x89PNG\0")), some("AP8A"), some("héllo")]
    );
    conn.disconnect().await.expect("disconnect");
}

#[tokio::test]
async fn one_key_inserted_updated_deleted_and_reinserted() {
    let server = MariaDb::start().expect("mariadb starts");
    let opts = database(
        &server,
        "ordering",
        &[
            "CREATE TABLE item (id INT NOT NULL PRIMARY KEY, v VARCHAR(10))",
            "CREATE TABLE applications (n INT NOT NULL)",
            "INSERT INTO applications VALUES (0)",
            "CREATE TRIGGER item_insert AFTER INSERT ON item FOR EACH ROW UPDATE applications SET n = n + 1",
            "CREATE TRIGGER item_update AFTER UPDATE ON item FOR EACH ROW UPDATE applications SET n = n + 1",
        ],
    )
    .await;
    let applier = applier(&opts, "UTC", SchemaMapping::identity()).await;
    let upsert = |ms, tx: &str, kind, v: &str| {
        record(ms, tx, 0, "item", kind, json!({"id": "1"}), json!({"v": v}))
    };
    // Separate transactions in one batch, shuffled as the reference writes files.
    let mut records = vec![
        upsert(4, "d", ModType::Insert, "v3"),
        upsert(1, "a", ModType::Insert, "v1"),
        record(
            3,
            "c",
            0,
            "item",
            ModType::Delete,
            json!({"id": "1"}),
            json!({}),
        ),
        upsert(2, "b", ModType::Update, "v2"),
    ];
    // And the same inside one transaction, for key 2.
    for (sequence, kind, v) in [
        (0, ModType::Insert, Some("w1")),
        (1, ModType::Update, Some("w2")),
        (2, ModType::Delete, None),
        (3, ModType::Insert, Some("w3")),
    ] {
        let values = v.map_or(json!({}), |v| json!({"v": v}));
        records.push(record(
            5,
            "e",
            sequence,
            "item",
            kind,
            json!({"id": "2"}),
            values,
        ));
    }
    let transactions = SpannerTransaction::group(records);
    let outcome = applier
        .apply_batch(window(), &transactions)
        .await
        .expect("batch applies");
    assert_eq!(outcome.applied_transactions, 5);

    let mut conn = reader(&opts).await;
    assert_eq!(
        texts(
            &mut conn,
            "SELECT GROUP_CONCAT(CONCAT(id, '=', v) ORDER BY id) FROM item"
        )
        .await,
        vec![some("1=v3,2=w3")]
    );
    // 1: insert, update, insert (separate transactions); 2: one insert, as a transaction's
    // records of one row are combined into the row's state at commit.
    assert_eq!(count(&mut conn, "SELECT n FROM applications").await, 4);

    // Across windows: delete in the next window, re-insert in the one after.
    let delete = SpannerTransaction::group(vec![record(
        10_001,
        "f",
        0,
        "item",
        ModType::Delete,
        json!({"id": "1"}),
        json!({}),
    )]);
    applier
        .apply_batch(window_at(1), &delete)
        .await
        .expect("delete applies");
    assert_eq!(
        count(&mut conn, "SELECT COUNT(*) FROM item WHERE id = 1").await,
        0
    );
    let reinsert = SpannerTransaction::group(vec![upsert(20_001, "g", ModType::Insert, "v4")]);
    applier
        .apply_batch(window_at(2), &reinsert)
        .await
        .expect("re-insert applies");
    assert_eq!(
        texts(&mut conn, "SELECT v FROM item WHERE id = 1").await,
        vec![some("v4")]
    );
    conn.disconnect().await.expect("disconnect");
}

#[tokio::test]
async fn parent_and_child_tables_apply_in_child_first_record_order() {
    let server = MariaDb::start().expect("mariadb starts");
    let opts = database(
        &server,
        "family",
        &[
            "CREATE TABLE parent (id INT NOT NULL PRIMARY KEY, name VARCHAR(10))",
            "CREATE TABLE child (id INT NOT NULL PRIMARY KEY, parent_id INT NOT NULL, \
             FOREIGN KEY (parent_id) REFERENCES parent (id))",
            "CREATE TABLE grandchild (id INT NOT NULL PRIMARY KEY, child_id INT NOT NULL, \
             FOREIGN KEY (child_id) REFERENCES child (id))",
        ],
    )
    .await;
    let applier = applier(&opts, "UTC", SchemaMapping::identity()).await;
    // Transaction 1, records child-first: grandchild, child, parent.
    let t1 = vec![
        record(
            1,
            "a",
            0,
            "grandchild",
            ModType::Insert,
            json!({"id": "100"}),
            json!({"child_id": "10"}),
        ),
        record(
            1,
            "a",
            1,
            "child",
            ModType::Insert,
            json!({"id": "10"}),
            json!({"parent_id": "1"}),
        ),
        record(
            1,
            "a",
            2,
            "parent",
            ModType::Insert,
            json!({"id": "1"}),
            json!({"name": "p1"}),
        ),
    ];
    // Transaction 2: a new parent, the child moves to it, the old parent goes — parent first.
    let t2 = vec![
        record(
            2,
            "b",
            0,
            "parent",
            ModType::Delete,
            json!({"id": "1"}),
            json!({}),
        ),
        record(
            2,
            "b",
            1,
            "child",
            ModType::Update,
            json!({"id": "10"}),
            json!({"parent_id": "2"}),
        ),
        record(
            2,
            "b",
            2,
            "parent",
            ModType::Insert,
            json!({"id": "2"}),
            json!({"name": "p2"}),
        ),
    ];
    // Transaction 3: everything goes, parents first.
    let t3 = vec![
        record(
            3,
            "c",
            0,
            "parent",
            ModType::Delete,
            json!({"id": "2"}),
            json!({}),
        ),
        record(
            3,
            "c",
            1,
            "child",
            ModType::Delete,
            json!({"id": "10"}),
            json!({}),
        ),
        record(
            3,
            "c",
            2,
            "grandchild",
            ModType::Delete,
            json!({"id": "100"}),
            json!({}),
        ),
    ];
    let mut conn = reader(&opts).await;
    let first = SpannerTransaction::group([t1, t2].concat());
    applier
        .apply_batch(window(), &first)
        .await
        .expect("inserts and moves apply");
    assert_eq!(
        texts(&mut conn, "SELECT (SELECT GROUP_CONCAT(id) FROM parent), (SELECT parent_id FROM child WHERE id = 10), (SELECT COUNT(*) FROM grandchild)").await,
        vec![some("2"), some("2"), some("1")]
    );
    let last = SpannerTransaction::group(t3);
    applier
        .apply_batch(window(), &last)
        .await
        .expect("deletes apply");
    assert_eq!(
        texts(&mut conn, "SELECT (SELECT COUNT(*) FROM parent) + (SELECT COUNT(*) FROM child) + (SELECT COUNT(*) FROM grandchild)").await,
        vec![some("0")]
    );
    // Foreign-key checks stayed on: a child of a missing parent is refused, definitely.
    let orphan = SpannerTransaction::group(vec![record(
        4,
        "d",
        0,
        "child",
        ModType::Insert,
        json!({"id": "11"}),
        json!({"parent_id": "99"}),
    )]);
    let error = applier
        .apply_batch(window(), &orphan)
        .await
        .expect_err("orphan is refused");
    assert_eq!(error.class(), ErrorClass::Definite);
    assert_eq!(error.mysql_code(), Some(1452));
    let message = error.to_string();
    assert!(
        message.contains("table child") && message.contains(r#"key {"id":"11"}"#),
        "{message}"
    );
    conn.disconnect().await.expect("disconnect");
}

#[tokio::test]
async fn checkpoint_moves_with_the_data_and_replays_are_skipped() {
    let server = MariaDb::start().expect("mariadb starts");
    let opts = database(
        &server,
        "exactly_once",
        &[
            "CREATE TABLE item (id INT NOT NULL PRIMARY KEY, v INT)",
            "CREATE TABLE applications (n INT NOT NULL)",
            "INSERT INTO applications VALUES (0)",
            "CREATE TRIGGER item_insert AFTER INSERT ON item FOR EACH ROW UPDATE applications SET n = n + 1",
            "CREATE TRIGGER item_update AFTER UPDATE ON item FOR EACH ROW UPDATE applications SET n = n + 1",
        ],
    )
    .await;
    let bump = |ms: i64, tx: &str, id: u32, v: u32| {
        record(
            ms,
            tx,
            0,
            "item",
            ModType::Insert,
            json!({"id": id.to_string()}),
            json!({"v": v.to_string()}),
        )
    };
    let all = SpannerTransaction::group(vec![
        bump(1, "a", 1, 10),
        bump(2, "b", 1, 11),
        bump(3, "c", 2, 20),
        bump(4, "d", 1, 12),
    ]);

    let first = applier(&opts, "UTC", SchemaMapping::identity()).await;
    assert_eq!(first.read_checkpoint().await.expect("read"), None);
    let outcome = first
        .apply_batch(window(), &all[..2])
        .await
        .expect("first batch");
    assert_eq!(
        (outcome.applied_transactions, outcome.skipped_transactions),
        (2, 0)
    );
    // "Crash": drop the applier without closing, start another.
    drop(first);
    let second = applier(&opts, "UTC", SchemaMapping::identity()).await;
    let checkpoint = second
        .read_checkpoint()
        .await
        .expect("read")
        .expect("checkpoint exists");
    assert_eq!(checkpoint.window, window());
    assert_eq!(checkpoint.position, Some(all[1].last_position()));
    assert_eq!(
        (checkpoint.applied_records, checkpoint.applied_transactions),
        (2, 2)
    );

    // The whole window again: the two applied transactions are skipped by position.
    let outcome = second.apply_batch(window(), &all).await.expect("replay");
    assert_eq!(
        (outcome.applied_transactions, outcome.skipped_transactions),
        (2, 2)
    );
    // Once more, as after a lost COMMIT reply: nothing to do.
    let outcome = second
        .apply_batch(window(), &all)
        .await
        .expect("replay again");
    assert_eq!(
        (outcome.applied_transactions, outcome.skipped_transactions),
        (0, 4)
    );

    let mut conn = reader(&opts).await;
    assert_eq!(count(&mut conn, "SELECT n FROM applications").await, 4);
    assert_eq!(
        texts(
            &mut conn,
            "SELECT GROUP_CONCAT(CONCAT(id, '=', v) ORDER BY id) FROM item"
        )
        .await,
        vec![some("1=12,2=20")]
    );
    let checkpoint = second
        .read_checkpoint()
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(checkpoint.position, Some(all[3].last_position()));
    assert_eq!(checkpoint.applied_records, 4);
    // Exact nanoseconds survive the round trip.
    assert_eq!(
        checkpoint.position.map(|p| p.commit_timestamp.nanos()),
        Some(4_000_000)
    );

    // Reprocess: rewind, and the window applies again.
    second.rewind_checkpoint(window()).await.expect("rewind");
    let outcome = second.apply_batch(window(), &all).await.expect("reprocess");
    assert_eq!(outcome.applied_transactions, 4);
    assert_eq!(count(&mut conn, "SELECT n FROM applications").await, 8);
    conn.disconnect().await.expect("disconnect");
    second.close().await;
}

/// A batch may span windows (short windows, a writer behind): one MySQL transaction, the
/// checkpoint naming the last window; each transaction must lie in the window said for it.
#[tokio::test]
async fn a_batch_spanning_windows_checkpoints_its_last_window() {
    let server = MariaDb::start().expect("mariadb starts");
    let opts = database(
        &server,
        "spanning",
        &["CREATE TABLE item (id INT NOT NULL PRIMARY KEY, v INT)"],
    )
    .await;
    let put = |ms: i64, tx: &str, id: u32| {
        record(
            ms,
            tx,
            0,
            "item",
            ModType::Insert,
            json!({"id": id.to_string()}),
            json!({"v": "1"}),
        )
    };
    // Windows 0, 1 and 3 (10 s each); window 2 has nothing.
    let all = SpannerTransaction::group(vec![
        put(1_000, "a", 1),
        put(2_000, "b", 2),
        put(12_000, "c", 3),
        put(31_000, "d", 4),
    ]);
    let applier = applier(&opts, "UTC", SchemaMapping::identity()).await;

    // Transactions said to be in the wrong window, or more transactions than the windows
    // account for, are refused before anything is applied.
    let mut wrong = BatchWindows::single(window_at(0), 1);
    wrong.push(window_at(1), 3);
    let mut short = BatchWindows::single(window_at(0), 2);
    short.push(window_at(1), 1);
    for windows in [wrong, short] {
        let refused = applier
            .apply_planned_batch(&windows, &all, None)
            .await
            .expect_err("refused");
        assert!(
            matches!(refused, WriterError::InvalidBatch { .. }),
            "{refused}"
        );
    }
    assert_eq!(applier.read_checkpoint().await.expect("read"), None);

    let mut windows = BatchWindows::default();
    windows.push(window_at(0), 2);
    windows.push(window_at(1), 1);
    windows.push(window_at(3), 1);
    assert_eq!(windows.first(), Some(window_at(0)));
    let outcome = applier
        .apply_planned_batch(&windows, &all, None)
        .await
        .expect("applies");
    assert_eq!(outcome.applied_transactions, 4);
    let checkpoint = applier
        .read_checkpoint()
        .await
        .expect("read")
        .expect("checkpoint exists");
    assert_eq!(checkpoint.window, window_at(3));
    assert_eq!(checkpoint.position, Some(all[3].last_position()));
    // Window 1 alone again: everything is covered.
    let outcome = applier
        .apply_batch(window_at(1), &all[2..3])
        .await
        .expect("replay");
    assert_eq!(
        (outcome.applied_transactions, outcome.skipped_transactions),
        (0, 1)
    );
    let mut conn = reader(&opts).await;
    assert_eq!(count(&mut conn, "SELECT COUNT(*) FROM item").await, 4);
    conn.disconnect().await.expect("disconnect");
    applier.close().await;
}

#[tokio::test]
async fn a_definite_error_rolls_back_data_and_checkpoint() {
    let server = MariaDb::start().expect("mariadb starts");
    let opts = database(
        &server,
        "rollback",
        &["CREATE TABLE item (id INT NOT NULL PRIMARY KEY, v VARCHAR(5), n TINYINT)"],
    )
    .await;
    let applier = applier(&opts, "UTC", SchemaMapping::identity()).await;
    let good = record(
        1,
        "a",
        0,
        "item",
        ModType::Insert,
        json!({"id": "1"}),
        json!({"v": "ok", "n": "1"}),
    );
    let baseline = SpannerTransaction::group(vec![good.clone()]);
    applier
        .apply_batch(window(), &baseline)
        .await
        .expect("baseline");
    let before = applier.read_checkpoint().await.expect("read");

    let cases: Vec<(ChangeRecord, &str)> = vec![
        // Found by the conversion, before MySQL sees anything.
        (
            record(
                3,
                "c",
                0,
                "item",
                ModType::Insert,
                json!({"id": "3"}),
                json!({"v": "too-long-secret"}),
            ),
            "column v (varchar(5))",
        ),
        (
            record(
                3,
                "c",
                0,
                "item",
                ModType::Insert,
                json!({"id": "3"}),
                json!({"n": "300"}),
            ),
            "column n (tinyint(4))",
        ),
        (
            record(
                3,
                "c",
                0,
                "item",
                ModType::Insert,
                json!({"id": "3"}),
                json!({"missing": "1"}),
            ),
            "\"missing\"",
        ),
        (
            record(
                3,
                "c",
                0,
                "nope",
                ModType::Insert,
                json!({"id": "3"}),
                json!({}),
            ),
            "\"nope\"",
        ),
    ];
    for (bad, expected) in cases {
        let batch = SpannerTransaction::group(vec![
            record(
                2,
                "b",
                0,
                "item",
                ModType::Insert,
                json!({"id": "2"}),
                json!({"v": "fine"}),
            ),
            record(
                2,
                "b",
                1,
                "item",
                ModType::Update,
                json!({"id": "1"}),
                json!({"v": "new"}),
            ),
            bad,
        ]);
        let error = applier
            .apply_batch(window(), &batch)
            .await
            .expect_err("bad batch fails");
        assert_eq!(error.class(), ErrorClass::Definite);
        let message = error.to_string();
        assert!(
            message.contains("shard ls1") && message.contains(expected),
            "{message}"
        );
        assert!(!message.contains("secret"), "{message}");
        assert_eq!(applier.read_checkpoint().await.expect("read"), before);
    }
    // MySQL itself refuses the second of two statements: the first is rolled back too.
    let mut conn = reader(&opts).await;
    conn.query_drop("ALTER TABLE item DROP COLUMN n")
        .await
        .expect("drop column");
    let batch = SpannerTransaction::group(vec![
        record(
            2,
            "b",
            0,
            "item",
            ModType::Insert,
            json!({"id": "2"}),
            json!({"v": "fine"}),
        ),
        record(
            2,
            "b",
            1,
            "item",
            ModType::Insert,
            json!({"id": "3"}),
            json!({"v": "x", "n": "2"}),
        ),
    ]);
    // The applier still has the old schema: MySQL itself refuses the second statement.
    let error = applier
        .apply_batch(window(), &batch)
        .await
        .expect_err("unknown column");
    assert_eq!(error.class(), ErrorClass::Definite);
    assert_eq!(error.mysql_code(), Some(1054));
    assert_eq!(applier.read_checkpoint().await.expect("read"), before);
    assert_eq!(
        texts(
            &mut conn,
            "SELECT GROUP_CONCAT(CONCAT(id, '=', v) ORDER BY id) FROM item"
        )
        .await,
        vec![some("1=ok")]
    );
    conn.disconnect().await.expect("disconnect");
}

#[tokio::test]
async fn transient_errors_are_retried_until_the_shard_is_back() {
    let mut server = MariaDb::start().expect("mariadb starts");
    let opts = database(
        &server,
        "transient",
        &["CREATE TABLE item (id INT NOT NULL PRIMARY KEY, v INT)"],
    )
    .await;
    let applier = applier(&opts, "UTC", SchemaMapping::identity()).await;
    let batch = SpannerTransaction::group(vec![record(
        1,
        "a",
        0,
        "item",
        ModType::Insert,
        json!({"id": "1"}),
        json!({"v": "1"}),
    )]);

    // A lock held elsewhere: lock wait timeout, transient, nothing applied.
    let mut blocker = reader(&opts).await;
    blocker
        .query_drop("SET GLOBAL innodb_lock_wait_timeout = 1")
        .await
        .expect("short lock waits for new sessions");
    blocker
        .query_drop("INSERT INTO item VALUES (1, 0)")
        .await
        .expect("row");
    blocker
        .query_drop("START TRANSACTION")
        .await
        .expect("begin");
    blocker
        .query_drop("SELECT * FROM item WHERE id = 1 FOR UPDATE")
        .await
        .expect("lock the row");
    // A fresh applier picks up the short lock wait.
    let impatient = self::applier(&opts, "UTC", SchemaMapping::identity()).await;
    let error = impatient
        .apply_batch(window(), &batch)
        .await
        .expect_err("lock wait timeout");
    assert_eq!(error.class(), ErrorClass::Transient, "{error}");
    assert_eq!(error.mysql_code(), Some(1205));
    blocker.query_drop("ROLLBACK").await.expect("release");
    impatient
        .apply_batch(window(), &batch)
        .await
        .expect("applies after the lock is gone");

    // The server goes away mid-run and comes back: retried with backoff until it converges.
    server.stop().expect("stop");
    let next = SpannerTransaction::group(vec![record(
        2,
        "b",
        0,
        "item",
        ModType::Insert,
        json!({"id": "2"}),
        json!({"v": "2"}),
    )]);
    let error = applier
        .apply_batch(window(), &next)
        .await
        .expect_err("server is down");
    assert_eq!(error.class(), ErrorClass::Transient, "{error}");
    let policy = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
        multiplier: 2,
        max_attempts: None,
    };
    let mut stopped = Some(server);
    let mut restarting: Option<tokio::task::JoinHandle<MariaDb>> = None;
    let mut retries = 0;
    let started = Instant::now();
    let outcome = applier
        .apply_batch_with_retry(window(), &next, policy, |error: &WriterError, _| {
            assert_eq!(error.class(), ErrorClass::Transient);
            retries += 1;
            // Bring the server back after a few failed attempts.
            if retries == 3
                && let Some(mut server) = stopped.take()
            {
                restarting = Some(tokio::task::spawn_blocking(move || {
                    server.restart().expect("restart");
                    server
                }));
            }
        })
        .await
        .expect("converges");
    assert_eq!(outcome.applied_transactions, 1);
    assert!(retries >= 3, "{retries} retries");
    assert!(started.elapsed() < Duration::from_secs(60));
    let server = restarting
        .expect("restart began")
        .await
        .expect("restart finished");
    let mut conn = reader(&opts).await;
    assert_eq!(count(&mut conn, "SELECT COUNT(*) FROM item").await, 2);
    conn.disconnect().await.expect("disconnect");
    drop(server);
}

#[tokio::test]
async fn many_rows_merge_into_few_prepared_statements() {
    let server = MariaDb::start().expect("mariadb starts");
    let opts = database(
        &server,
        "bulk",
        &["CREATE TABLE item (id INT NOT NULL PRIMARY KEY, v VARCHAR(20), w INT)"],
    )
    .await;
    let applier = applier(&opts, "UTC", SchemaMapping::identity()).await;
    let window_records = |w: i64| -> Vec<ChangeRecord> {
        let mut records = Vec::new();
        for i in 0..1_000u32 {
            let ms = w * 10_000 + i64::from(i);
            records.push(record(
                ms,
                &format!("t{w}-{i}"),
                0,
                "item",
                ModType::Insert,
                json!({"id": (i + 1).to_string()}),
                json!({"v": format!("row {i} of {w}"), "w": w.to_string()}),
            ));
        }
        for i in 0..300u32 {
            let ms = w * 10_000 + 1_000 + i64::from(i);
            records.push(record(
                ms,
                &format!("d{w}-{i}"),
                0,
                "item",
                ModType::Delete,
                json!({"id": (i * 3 + 1).to_string()}),
                json!({}),
            ));
        }
        records
    };
    let mut conn = reader(&opts).await;
    let first = SpannerTransaction::group(window_records(0));
    let outcome = applier
        .apply_batch(window(), &first)
        .await
        .expect("first window");
    assert!(outcome.statements < 40, "{} statements", outcome.statements);
    let prepared_after_first = prepares(&mut conn).await;
    assert!(prepared_after_first > 0, "statements are prepared");
    let second = SpannerTransaction::group(window_records(1));
    applier
        .apply_batch(window_at(1), &second)
        .await
        .expect("second window");
    // Same shapes: no new prepares (the reader's own query is not prepared).
    assert_eq!(prepares(&mut conn).await, prepared_after_first);
    assert_eq!(count(&mut conn, "SELECT COUNT(*) FROM item").await, 700);
    assert_eq!(
        count(&mut conn, "SELECT COUNT(*) FROM item WHERE w = 1").await,
        700
    );
    conn.disconnect().await.expect("disconnect");
}

#[tokio::test]
async fn a_cancelled_apply_leaves_nothing_half_done() {
    let server = MariaDb::start().expect("mariadb starts");
    let opts = database(
        &server,
        "cancelled",
        &[
            "CREATE TABLE item (id INT NOT NULL PRIMARY KEY, v INT)",
            "INSERT INTO item VALUES (1, 0)",
        ],
    )
    .await;
    let applier = applier(&opts, "UTC", SchemaMapping::identity()).await;
    let batch = SpannerTransaction::group(vec![
        record(
            1,
            "a",
            0,
            "item",
            ModType::Insert,
            json!({"id": "10"}),
            json!({"v": "10"}),
        ),
        record(
            1,
            "a",
            1,
            "item",
            ModType::Update,
            json!({"id": "1"}),
            json!({"v": "1"}),
        ),
    ]);
    // Another session holds row 1: the batch's second statement waits for it.
    let mut blocker = reader(&opts).await;
    blocker
        .query_drop("START TRANSACTION")
        .await
        .expect("begin");
    blocker
        .query_drop("SELECT * FROM item WHERE id = 1 FOR UPDATE")
        .await
        .expect("lock the row");
    // The caller gives up (as on shutdown): the apply future is dropped mid-transaction.
    let cut_short = tokio::time::timeout(
        Duration::from_millis(500),
        applier.apply_batch(window(), &batch),
    )
    .await;
    assert!(
        cut_short.is_err(),
        "the apply was still waiting for the lock"
    );
    blocker.query_drop("ROLLBACK").await.expect("release");

    // Applying again starts afresh: the first attempt's insert was never committed.
    let outcome = applier
        .apply_batch(window(), &batch)
        .await
        .expect("applies");
    assert_eq!(outcome.applied_transactions, 1);
    let checkpoint = applier
        .read_checkpoint()
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(checkpoint.applied_transactions, 1);
    assert_eq!(
        texts(
            &mut blocker,
            "SELECT GROUP_CONCAT(CONCAT(id, '=', v) ORDER BY id) FROM item"
        )
        .await,
        vec![some("1=1,10=10")]
    );
    blocker.disconnect().await.expect("disconnect");
}

#[tokio::test]
async fn random_mixes_end_like_a_sequential_model() {
    use revrepl_writer::{BatchLimits, batches};
    use std::collections::BTreeMap;

    let server = MariaDb::start().expect("mariadb starts");
    let opts = database(
        &server,
        "model",
        &[
            // Integer key: changes commute across keys and merge in rounds.
            "CREATE TABLE numbered (id INT NOT NULL PRIMARY KEY, v VARCHAR(20), w INT)",
            // Case-insensitive text key: kept in record order.
            "CREATE TABLE named (id VARCHAR(20) NOT NULL PRIMARY KEY, v VARCHAR(20), w INT) \
             DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci",
        ],
    )
    .await;
    let applier = applier(&opts, "UTC", SchemaMapping::identity()).await;
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound
    };
    let mut records = Vec::new();
    let mut model: BTreeMap<u64, String> = BTreeMap::new();
    for i in 0..3_000i64 {
        let id = next(40);
        let (kind, values) = match next(10) {
            0..=5 => (ModType::Insert, Some(format!("v{i}"))),
            6..=7 => (ModType::Update, Some(format!("u{i}"))),
            _ => (ModType::Delete, None),
        };
        match &values {
            Some(v) => model.insert(id, v.clone()),
            None => model.remove(&id),
        };
        let new_values = values.map_or(json!({}), |v| json!({"v": v, "w": i.to_string()}));
        // Several changes per transaction, as Spanner transactions touch several rows.
        let (txid, sequence) = (format!("t{}", i / 3), u32::try_from(i % 3).expect("small"));
        for (offset, table, key) in [
            (0, "numbered", id.to_string()),
            (3, "named", format!("k{id}")),
        ] {
            records.push(record(
                i,
                &txid,
                sequence + offset,
                table,
                kind,
                json!({"id": key}),
                new_values.clone(),
            ));
        }
    }
    let transactions = SpannerTransaction::group(records);
    let limits = BatchLimits {
        max_records: 700,
        max_bytes: usize::MAX,
    };
    let mut statements = 0;
    for batch in batches(&transactions, limits) {
        statements += applier
            .apply_batch(window(), batch)
            .await
            .expect("applies")
            .statements;
    }
    let mut conn = reader(&opts).await;
    let numbered: Vec<(u64, String)> = conn
        .query("SELECT id, v FROM numbered ORDER BY id")
        .await
        .expect("numbered rows");
    let expected: Vec<(u64, String)> = model.clone().into_iter().collect();
    assert_eq!(numbered, expected);
    let named: Vec<(String, String)> = conn
        .query("SELECT id, v FROM named")
        .await
        .expect("named rows");
    let mut named: Vec<(u64, String)> = named
        .into_iter()
        .map(|(id, v)| (id[1..].parse().expect("numeric suffix"), v))
        .collect();
    named.sort();
    assert_eq!(named, expected);
    assert!(
        statements < 6_000,
        "{statements} statements for 6000 records"
    );
    conn.disconnect().await.expect("disconnect");
}

#[tokio::test]
async fn a_plan_made_ahead_is_used_only_for_what_the_checkpoint_leaves() {
    let server = MariaDb::start().expect("mariadb starts");
    let opts = database(
        &server,
        "ahead",
        &[
            "CREATE TABLE item (id INT NOT NULL PRIMARY KEY, v VARCHAR(20))",
            // Counts every row change MySQL applies, so a change applied twice shows.
            "CREATE TABLE applied (id INT NOT NULL PRIMARY KEY, n INT NOT NULL)",
            "CREATE TRIGGER item_ai AFTER INSERT ON item FOR EACH ROW \
             INSERT INTO applied VALUES (NEW.id, 1) ON DUPLICATE KEY UPDATE n = n + 1",
            "CREATE TRIGGER item_au AFTER UPDATE ON item FOR EACH ROW \
             INSERT INTO applied VALUES (NEW.id, 1) ON DUPLICATE KEY UPDATE n = n + 1",
        ],
    )
    .await;
    let applier = applier(&opts, "UTC", SchemaMapping::identity()).await;
    let insert = |ms: i64, txid: &str, id: u32| {
        record(
            ms,
            txid,
            0,
            "item",
            ModType::Insert,
            json!({"id": id.to_string()}),
            json!({"v": format!("v{id}")}),
        )
    };
    let batch = SpannerTransaction::group(vec![
        insert(1, "a", 1),
        insert(2, "b", 2),
        insert(3, "c", 3),
    ]);
    let planner = applier.batch_planner();

    // A plan for exactly the batch is used.
    let planned = planner.plan(&batch[..1]).expect("plannable");
    assert_eq!(planned.statements(), 1);
    let outcome = applier
        .apply_planned_batch(
            &BatchWindows::single(window(), 1),
            &batch[..1],
            Some(planned),
        )
        .await
        .expect("applies");
    assert_eq!(outcome.applied_transactions, 1);

    // The checkpoint now covers the first transaction: a plan for all three must not be
    // executed (it would apply the first one again); the two others are planned again.
    let planned = planner.plan(&batch).expect("plannable");
    let outcome = applier
        .apply_planned_batch(&BatchWindows::single(window(), 3), &batch, Some(planned))
        .await
        .expect("applies");
    assert_eq!(
        (outcome.skipped_transactions, outcome.applied_transactions),
        (1, 2)
    );
    let mut conn = reader(&opts).await;
    let counts: Vec<(u32, u32)> = conn
        .query("SELECT id, n FROM applied ORDER BY id")
        .await
        .expect("counts");
    assert_eq!(
        counts,
        vec![(1, 1), (2, 1), (3, 1)],
        "each change applied once"
    );
    conn.disconnect().await.expect("disconnect");
}

/// A record with old values (as `NEW_ROW_AND_OLD_VALUES` captures them).
#[allow(clippy::too_many_arguments)]
fn record_with_old(
    offset_ms: i64,
    txid: &str,
    sequence: u32,
    table: &str,
    mod_type: ModType,
    keys: serde_json::Value,
    new_values: serde_json::Value,
    old_values: serde_json::Value,
) -> ChangeRecord {
    let mut record = record(offset_ms, txid, sequence, table, mod_type, keys, new_values);
    record.mods[0].old_values_json = old_values.to_string();
    record
}

/// All rows of `sql` (one text column) joined with `;`.
async fn rows_text(conn: &mut Conn, sql: &str) -> String {
    let rows: Vec<Option<String>> = conn.query(sql).await.expect("rows query");
    rows.into_iter()
        .map(|r| r.unwrap_or_else(|| "NULL".into()))
        .collect::<Vec<_>>()
        .join(";")
}

/// Issue 11, finding 1: upserts on tables with a secondary unique index. Spanner checks
/// uniqueness at commit and a transaction's records are not in the application's order, so
/// MySQL must end in Spanner's state whatever the record order, never change a row the record
/// does not key, and never cascade a delete-and-reinsert of a parent.
#[tokio::test]
async fn unique_indexes_end_in_spanners_state_in_any_record_order() {
    let server = MariaDb::start().expect("mariadb starts");
    let u = |id: u32, email: Option<&str>, name: &str| json!({"id": id.to_string(), "email": email, "name": name});
    let insert = |seq, id, email, name| {
        let row = u(id, email, name);
        record(
            1,
            "t",
            seq,
            "u",
            ModType::Insert,
            json!({"id": row["id"]}),
            json!({"email": row["email"], "name": row["name"]}),
        )
    };
    let update = |seq, id, email, name| {
        let mut r = insert(seq, id, email, name);
        r.mod_type = ModType::Update;
        r
    };
    let delete = |seq, id: u32| {
        record(
            1,
            "t",
            seq,
            "u",
            ModType::Delete,
            json!({"id": id.to_string()}),
            json!({}),
        )
    };
    type Case = (&'static str, &'static str, Vec<ChangeRecord>, &'static str);
    let cases: Vec<Case> = vec![
        (
            "insert taking a deleted row's value",
            "(1,'x','A')",
            vec![insert(0, 2, Some("x"), "B"), delete(1, 1)],
            "2,x,B",
        ),
        (
            "insert taking the value an update gives up",
            "(1,'x','A')",
            vec![insert(0, 2, Some("x"), "B"), update(1, 1, Some("y"), "A")],
            "1,y,A;2,x,B",
        ),
        (
            "swap",
            "(1,'x','A'),(2,'y','B')",
            vec![update(0, 1, Some("y"), "A"), update(1, 2, Some("x"), "B")],
            "1,y,A;2,x,B",
        ),
        (
            "rotation of three",
            "(1,'x','A'),(2,'y','B'),(3,'z','C')",
            vec![
                update(0, 1, Some("y"), "A"),
                update(1, 2, Some("z"), "B"),
                update(2, 3, Some("x"), "C"),
            ],
            "1,y,A;2,z,B;3,x,C",
        ),
        (
            "delete and re-insert of the holder",
            "(1,'x','A'),(2,'y','B')",
            vec![
                delete(0, 1),
                delete(1, 2),
                insert(2, 2, Some("x"), "B2"),
                insert(3, 1, Some("y"), "A2"),
            ],
            "1,y,A2;2,x,B2",
        ),
    ];
    for (index, (name, seed, records, expected)) in cases.into_iter().enumerate() {
        for reversed in [false, true] {
            let nullable = index % 2 == 0;
            let db = format!("uniq{index}{}", if reversed { "r" } else { "f" });
            let email = if nullable {
                "email VARCHAR(20)"
            } else {
                "email VARCHAR(20) NOT NULL"
            };
            let opts = database(
                &server,
                &db,
                &[
                    &format!(
                        "CREATE TABLE u (id INT NOT NULL PRIMARY KEY, {email}, name VARCHAR(20), \
                         UNIQUE KEY by_email (email))"
                    ),
                    // Children that a delete of their parent would take along.
                    "CREATE TABLE c (id INT NOT NULL PRIMARY KEY, u_id INT NOT NULL, \
                     FOREIGN KEY (u_id) REFERENCES u (id) ON DELETE CASCADE)",
                    &format!("INSERT INTO u VALUES {seed}"),
                    "INSERT INTO c SELECT id + 100, id FROM u",
                ],
            )
            .await;
            let applier = applier(&opts, "UTC", SchemaMapping::identity()).await;
            let mut records = records.clone();
            if reversed {
                // The same transaction with the keys in the other order; a key's own records
                // keep their order.
                let mut by_key: Vec<(String, Vec<ChangeRecord>)> = Vec::new();
                for r in records {
                    let key = r.mods[0].keys_json.clone();
                    match by_key.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, own)) => own.push(r),
                        None => by_key.push((key, vec![r])),
                    }
                }
                records = by_key.into_iter().rev().flat_map(|(_, own)| own).collect();
                for (sequence, record) in records.iter_mut().enumerate() {
                    record.record_sequence = format!("{sequence:08}");
                }
            }
            let transactions = SpannerTransaction::group(records);
            let outcome = applier.apply_batch(window(), &transactions).await;
            let mut conn = reader(&opts).await;
            let rows = rows_text(
                &mut conn,
                "SELECT CONCAT_WS(',', id, IFNULL(email, 'NULL'), name) FROM u ORDER BY id",
            )
            .await;
            let children =
                rows_text(&mut conn, "SELECT CONCAT(id, '>', u_id) FROM c ORDER BY id").await;
            assert!(
                outcome.is_ok(),
                "{name} (reversed: {reversed}, nullable: {nullable}): {:?}",
                outcome.err().map(|e| e.to_string())
            );
            assert_eq!(
                rows, expected,
                "{name} (reversed: {reversed}, nullable: {nullable})"
            );
            // Every parent still in Spanner keeps its child: nothing cascaded.
            let parents: Vec<&str> = expected
                .split(';')
                .filter_map(|row| row.split(',').next())
                .collect();
            let seeded: Vec<String> = (1..=3)
                .filter(|id| seed.contains(&format!("({id},")))
                .filter(|id| parents.contains(&id.to_string().as_str()))
                .map(|id| format!("{}>{id}", id + 100))
                .collect();
            assert_eq!(
                children,
                seeded.join(";"),
                "{name} (reversed: {reversed}, nullable: {nullable}): children"
            );
            conn.disconnect().await.expect("disconnect");
            applier.close().await;
        }
    }
}

/// An upsert whose unique value belongs to a row the transaction does not change must fail,
/// never change that other row.
#[tokio::test]
async fn an_upsert_never_changes_a_row_it_does_not_key() {
    let server = MariaDb::start().expect("mariadb starts");
    let opts = database(
        &server,
        "other_row",
        &[
            "CREATE TABLE u (id INT NOT NULL PRIMARY KEY, email VARCHAR(20), name VARCHAR(20), \
             UNIQUE KEY by_email (email))",
            "INSERT INTO u VALUES (1, 'x', 'A')",
        ],
    )
    .await;
    let applier = applier(&opts, "UTC", SchemaMapping::identity()).await;
    let batch = SpannerTransaction::group(vec![record(
        1,
        "a",
        0,
        "u",
        ModType::Insert,
        json!({"id": "2"}),
        json!({"email": "x", "name": "B"}),
    )]);
    let error = applier
        .apply_batch(window(), &batch)
        .await
        .expect_err("the unique value belongs to row 1");
    assert_eq!(error.class(), ErrorClass::Definite);
    let message = error.to_string();
    assert!(
        message.contains("table u") && message.contains(r#"{"id":"2"}"#),
        "{message}"
    );
    let mut conn = reader(&opts).await;
    assert_eq!(
        rows_text(&mut conn, "SELECT CONCAT_WS(',', id, email, name) FROM u").await,
        "1,x,A"
    );
    conn.disconnect().await.expect("disconnect");
}

/// Issue 11, finding 2: an update that changes a MySQL primary-key column Spanner does not
/// key on moves the row — never leaves the old one behind.
#[tokio::test]
async fn an_update_of_a_key_column_spanner_does_not_key_on_moves_the_row() {
    let server = MariaDb::start().expect("mariadb starts");
    let opts = database(
        &server,
        "moved",
        &[
            // Spanner keys the table on `id` alone; MySQL's key also has `region`.
            "CREATE TABLE m (id INT NOT NULL, region VARCHAR(5) NOT NULL, v VARCHAR(5), \
             PRIMARY KEY (id, region))",
            "INSERT INTO m VALUES (1, 'eu', 'a'), (2, 'eu', 'a'), (3, 'eu', 'a')",
        ],
    )
    .await;
    let applier = applier(&opts, "UTC", SchemaMapping::identity()).await;
    let update = |ms, tx: &str, id: &str, region: &str, v: &str, old: serde_json::Value| {
        record_with_old(
            ms,
            tx,
            0,
            "m",
            ModType::Update,
            json!({ "id": id }),
            json!({"region": region, "v": v}),
            old,
        )
    };
    let batch = SpannerTransaction::group(vec![
        // NEW_ROW_AND_OLD_VALUES: the old region is in the old values.
        update(1, "a", "1", "us", "b", json!({"region": "eu", "v": "a"})),
        // Same, and the region does not change.
        update(2, "b", "2", "eu", "b", json!({"v": "a"})),
        // NEW_ROW: no old values.
        update(3, "c", "3", "asia", "c", json!({})),
        update(4, "d", "1", "asia", "d", json!({})),
    ]);
    applier
        .apply_batch(window(), &batch)
        .await
        .expect("moves apply");
    let mut conn = reader(&opts).await;
    assert_eq!(
        rows_text(
            &mut conn,
            "SELECT CONCAT_WS(',', id, region, v) FROM m ORDER BY id, region"
        )
        .await,
        "1,asia,d;2,eu,b;3,asia,c"
    );
    // A delete without old values (NEW_ROW) deletes the row Spanner keys.
    let delete = SpannerTransaction::group(vec![record(
        5,
        "e",
        0,
        "m",
        ModType::Delete,
        json!({"id": "3"}),
        json!({}),
    )]);
    applier
        .apply_batch(window(), &delete)
        .await
        .expect("delete applies");
    assert_eq!(
        rows_text(
            &mut conn,
            "SELECT CONCAT_WS(',', id, region, v) FROM m ORDER BY id, region"
        )
        .await,
        "1,asia,d;2,eu,b"
    );
    conn.disconnect().await.expect("disconnect");
}
