//! Window files in the reference reader's style: Gson field order and HTML escapes (`\u003d`,
//! `\u0027`, ...), lines in arbitrary order, all three mod types, NULLs, unicode, quotes and
//! backslashes inside the inner JSON strings.

use revrepl_record::{
    ChangeRecord, ModType, Timestamp, WindowFileEncoder, decode_window_file, sort_in_commit_order,
};
use serde_json::{Value, json};

const FIXTURE: &str = include_str!("fixtures/reference-style-lines.txt");

fn inner(text: &str) -> Value {
    serde_json::from_str(text).expect("inner JSON")
}

/// What Gson escapes and serde_json writes as is.
fn without_gson_escapes(line: &str) -> String {
    line.replace(r"\u003d", "=")
        .replace(r"\u003c", "<")
        .replace(r"\u003e", ">")
        .replace(r"\u0026", "&")
        .replace(r"\u0027", "'")
}

#[test]
fn decodes_every_field_and_value() {
    let records = decode_window_file(FIXTURE.as_bytes()).expect("fixture decodes");
    assert_eq!(records.len(), 4);

    let insert = &records[0];
    assert_eq!(insert.mod_type, ModType::Insert);
    assert_eq!(insert.server_transaction_id, "NzkxOTE5OTY4NTQzNjMzODY3Mg==");
    assert_eq!(
        inner(&insert.the_mod().new_values_json),
        json!({"name": "O'Brien & <Sons>", "bio": null, "age": "42"})
    );

    let quoted = &records[1];
    assert_eq!(
        inner(&quoted.the_mod().new_values_json),
        json!({"name": "Zoë \"Z\" \\ back\\slash", "score": 1.5, "tags": ["a", null], "raw": "AAEC/w=="})
    );

    let update = &records[2];
    assert_eq!(update.mod_type, ModType::Update);
    assert_eq!(update.transaction_tag, "app=checkout");
    assert_eq!(
        update.commit_timestamp,
        Timestamp::new(1_719_247_985, 1).expect("ts")
    );
    let new = inner(&update.the_mod().new_values_json);
    assert_eq!(
        new["amount"],
        json!("99999999999999999999999.999999999"),
        "NUMERIC kept exact"
    );
    assert_eq!(new["note"], json!("日本語 🦀"));
    assert_eq!(
        new["meta"],
        json!("{\"k\": [1, 2]}"),
        "JSON columns stay text"
    );
    assert_eq!(
        inner(&update.the_mod().old_values_json),
        json!({"amount": "10.50"})
    );
    assert_eq!(
        inner(&update.the_mod().keys_json),
        json!({"id": "10", "user_id": "1"})
    );

    let delete = &records[3];
    assert_eq!(delete.mod_type, ModType::Delete);
    assert_eq!(inner(&delete.the_mod().new_values_json), json!({}));
    assert_eq!(inner(&delete.the_mod().old_values_json)["bio"], Value::Null);
}

#[test]
fn unordered_lines_sort_into_commit_order() {
    let mut records = decode_window_file(FIXTURE.as_bytes()).expect("fixture decodes");
    sort_in_commit_order(&mut records);
    let order: Vec<(String, String)> = records
        .iter()
        .map(|r| (r.table_name.clone(), r.the_mod().keys_json.clone()))
        .collect();
    let expected = [
        ("Users", r#"{"id":"1"}"#),
        ("Users", r#"{"id":"2"}"#),
        ("Orders", r#"{"id":"10","user_id":"1"}"#),
        ("Users", r#"{"id":"2"}"#),
    ]
    .map(|(t, k)| (t.to_string(), k.to_string()));
    assert_eq!(order, expected);
}

#[test]
fn written_lines_equal_the_reference_lines_but_for_gson_escapes() {
    let records = decode_window_file(FIXTURE.as_bytes()).expect("fixture decodes");
    for (record, line) in records.iter().zip(FIXTURE.lines()) {
        let written = serde_json::to_string(record).expect("serializable");
        assert_eq!(written, without_gson_escapes(line));
        let back: ChangeRecord = serde_json::from_str(&written).expect("reads back");
        assert_eq!(&back, record);
    }
}

#[test]
fn re_encoding_sorts_and_is_stable() {
    let records = decode_window_file(FIXTURE.as_bytes()).expect("fixture decodes");
    let encode = |items: &[ChangeRecord]| {
        let mut encoder = WindowFileEncoder::new();
        for record in items {
            encoder.push(record, 0).expect("encode");
        }
        encoder.finish()
    };
    let forward = encode(&records);
    let reversed: Vec<ChangeRecord> = records.iter().rev().cloned().collect();
    assert_eq!(
        forward,
        encode(&reversed),
        "same bytes whatever the input order"
    );
    let mut sorted = records;
    sort_in_commit_order(&mut sorted);
    assert_eq!(decode_window_file(&forward).expect("decodes"), sorted);
}

#[test]
fn float_values_survive_parsing_exactly() {
    // Needs 17 significant digits; serde_json's default float parsing can be one ulp off
    // without its `float_roundtrip` feature, which the workspace enables.
    let text = r#"{"score":0.43735781348537484,"x":5e-324,"y":1.7976931348623157e+308}"#;
    let parsed: Value = serde_json::from_str(text).expect("json");
    assert_eq!(parsed["score"].as_f64(), Some(0.437_357_813_485_374_84));
    assert_eq!(
        parsed.to_string(),
        text,
        "printing gives the same digits back"
    );
}
