//! Drop-in parity with the reference writer against a real MariaDB shard (issue 12): decimals
//! with more fractional digits than their column are rounded exactly as MySQL rounds them, and
//! arrays written to text columns become the reference's comma-joined text.

use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use revrepl_record::{ChangeRecord, Mod, ModType, ShardId, Timestamp, Window};
use revrepl_test_services::MariaDb;
use revrepl_writer::{
    ApplierConfig, ArrayText, ColumnMapping, ConversionRules, DecimalOverflow, SchemaMapping,
    ShardApplier, SpannerScalar, SpannerTransaction, SpannerType, TableMapping, WriterError,
};
use serde_json::json;

const SHARD: &str = "ls1";
/// Start of the test window: 2023-11-14T22:13:20Z.
const BASE: i64 = 1_700_000_000;

fn window() -> Window {
    Window::from_bounds(
        Timestamp::new(BASE, 0).expect("valid start"),
        Timestamp::new(BASE + 10, 0).expect("valid end"),
    )
    .expect("valid window")
}

/// An INSERT of `table` with `keys` and `values`, transaction `sequence`.
fn insert(
    sequence: i64,
    table: &str,
    keys: serde_json::Value,
    values: serde_json::Value,
) -> ChangeRecord {
    ChangeRecord {
        commit_timestamp: Timestamp::new(BASE, u32::try_from(sequence).expect("small") * 1_000)
            .expect("valid timestamp"),
        server_transaction_id: format!("t{sequence}"),
        record_sequence: "00000000".to_string(),
        table_name: table.to_string(),
        mods: [Mod {
            keys_json: keys.to_string(),
            old_values_json: "{}".to_string(),
            new_values_json: values.to_string(),
        }],
        mod_type: ModType::Insert,
        number_of_records_in_transaction: 1,
        transaction_tag: String::new(),
        shard: SHARD.to_string(),
    }
}

const TABLE: &str = "CREATE TABLE parity (
    id BIGINT NOT NULL PRIMARY KEY,
    price DECIMAL(10,2), whole DECIMAL(5,0),
    tags VARCHAR(100), numbers TEXT, doc JSON
)";

/// The Spanner types of the test table (ARRAY columns need them to be known as arrays).
fn mapping(rules: ConversionRules) -> SchemaMapping {
    let column = |scalar: SpannerType| ColumnMapping {
        source_column: None,
        spanner_type: Some(scalar),
    };
    let mut table = TableMapping {
        source_table: Some("parity".to_string()),
        ..TableMapping::default()
    };
    for (name, spanner_type) in [
        ("id", SpannerType::scalar(SpannerScalar::Int64)),
        ("price", SpannerType::scalar(SpannerScalar::Numeric)),
        ("whole", SpannerType::scalar(SpannerScalar::Numeric)),
        ("tags", SpannerType::array(SpannerScalar::String)),
        ("numbers", SpannerType::array(SpannerScalar::Int64)),
        ("doc", SpannerType::array(SpannerScalar::String)),
    ] {
        let mut mapped = column(spanner_type);
        mapped.source_column = Some(name.to_string());
        table.columns.insert(name.to_string(), mapped);
    }
    SchemaMapping::identity()
        .with_table("parity", table)
        .with_rules(rules)
}

async fn database(server: &MariaDb, name: &str) -> Opts {
    let mut conn = Conn::from_url(server.url()).await.expect("connect as root");
    conn.query_drop(format!("CREATE DATABASE `{name}`"))
        .await
        .expect("create database");
    conn.query_drop(format!("USE `{name}`")).await.expect("use");
    conn.query_drop(TABLE).await.expect("ddl");
    conn.disconnect().await.expect("disconnect");
    Opts::from_url(&format!("{}/{name}", server.url())).expect("valid url")
}

async fn applier(opts: &Opts, rules: ConversionRules) -> ShardApplier {
    let shard = ShardId::new(SHARD).expect("valid shard id");
    let mut config = ApplierConfig::new("run-1", shard, opts.clone());
    config.mapping = Arc::new(mapping(rules));
    ShardApplier::connect(config)
        .await
        .expect("applier connects")
}

/// The decimal texts MySQL itself stores for `literals` in a `DECIMAL(10,2)` column, strict mode.
async fn mysql_rounding(conn: &mut Conn, literals: &[&str]) -> Vec<String> {
    conn.query_drop("CREATE TEMPORARY TABLE rounding (n INT PRIMARY KEY, v DECIMAL(10,2))")
        .await
        .expect("temporary table");
    conn.query_drop("SET SESSION sql_mode = 'STRICT_ALL_TABLES'")
        .await
        .expect("strict mode");
    for (n, literal) in literals.iter().enumerate() {
        conn.exec_drop(
            format!("INSERT INTO rounding VALUES (?, {literal})"),
            (n as i64,),
        )
        .await
        .expect("MySQL accepts the value (with a note)");
    }
    conn.query("SELECT CAST(v AS CHAR) FROM rounding ORDER BY n")
        .await
        .expect("read back")
}

#[tokio::test]
async fn decimals_round_as_mysql_and_arrays_join_as_the_reference() {
    let server = MariaDb::start().expect("mariadb starts");
    let opts = database(&server, "parity").await;
    let applier = applier(&opts, ConversionRules::default()).await;

    let decimals = [
        "444.222", "444.225", "-444.225", "0.005", "-0.004", "12.3449",
    ];
    let records: Vec<ChangeRecord> = decimals
        .iter()
        .enumerate()
        .map(|(n, text)| {
            insert(
                n as i64 + 1,
                "parity",
                json!({"id": (n as i64 + 1).to_string()}),
                json!({"price": text, "whole": "2.5", "tags": ["1", "2"],
                       "numbers": ["7", null, "9"], "doc": ["a", "b"]}),
            )
        })
        .collect();
    let outcome = applier
        .apply_batch(window(), &SpannerTransaction::group(records))
        .await
        .expect("the rounded values apply");
    assert_eq!(outcome.applied_records, decimals.len());

    let mut conn = Conn::new(opts.clone()).await.expect("connect reader");
    let stored: Vec<(String, String, String, String, String)> = conn
        .query(
            "SELECT CAST(price AS CHAR), CAST(whole AS CHAR), tags, numbers, doc FROM parity \
             ORDER BY id",
        )
        .await
        .expect("read rows");
    let literals: Vec<&str> = decimals.to_vec();
    let by_mysql = mysql_rounding(&mut conn, &literals).await;
    let prices: Vec<String> = stored.iter().map(|row| row.0.clone()).collect();
    assert_eq!(prices, by_mysql, "revrepl rounds exactly as MySQL does");
    assert_eq!(
        prices,
        ["444.22", "444.23", "-444.23", "0.01", "0.00", "12.34"]
    );
    let first = &stored[0];
    assert_eq!(
        first.1, "3",
        "2.5 into DECIMAL(5,0) rounds half away from zero"
    );
    assert_eq!(
        first.2, "1,2",
        "ARRAY<STRING> into VARCHAR: the reference's text"
    );
    assert_eq!(first.3, "7,,9", "a NULL element is an empty element");
    assert_eq!(first.4, r#"["a","b"]"#, "JSON columns keep JSON");
    applier.close().await;

    // Too many integer digits stays a definite error, and `decimal_overflow = "error"`
    // refuses what would be rounded; `array_text = "json"` writes JSON text.
    let strict = ConversionRules {
        decimal_overflow: DecimalOverflow::Error,
        array_text: ArrayText::Json,
    };
    let applier = self::applier(&opts, strict).await;
    for (id, price) in [(101, "123456789.1"), (102, "1.234")] {
        let record = insert(
            50,
            "parity",
            json!({"id": id.to_string()}),
            json!({"price": price}),
        );
        let error = applier
            .apply_batch(window(), &SpannerTransaction::group(vec![record]))
            .await
            .expect_err("refused");
        assert!(
            matches!(error, WriterError::Conversion(_)),
            "a conversion error, got {error}"
        );
    }
    let record = insert(
        60,
        "parity",
        json!({"id": "103"}),
        json!({"tags": ["1", "2"]}),
    );
    applier
        .apply_batch(window(), &SpannerTransaction::group(vec![record]))
        .await
        .expect("applies");
    let tags: Option<String> = conn
        .query_first("SELECT tags FROM parity WHERE id = 103")
        .await
        .expect("read");
    assert_eq!(tags.as_deref(), Some(r#"["1","2"]"#));
    conn.disconnect().await.expect("disconnect");
    applier.close().await;
}
