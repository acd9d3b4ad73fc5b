//! The session file: a realistic Spanner Migration Tool session with renamed tables and
//! columns, Spanner-only columns and tables, a synthetic primary key and a table without a
//! shard column.

use std::path::{Path, PathBuf};

use revrepl_record::{Classify, ErrorClass};
use revrepl_shard_routing::{Session, SessionTable};
use serde_json::{Value, json};

/// The path of a fixture of this crate.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The music session: Singers, Albums, Accounts, Persons, Countries, SpannerOnlyEvents.
pub fn music_session() -> Session {
    Session::load(&fixture("music-session.json")).expect("the fixture is a valid session")
}

fn table<'s>(session: &'s Session, name: &str) -> &'s SessionTable {
    session
        .table(name)
        .unwrap_or_else(|| panic!("the session has table {name}"))
}

#[test]
fn joins_tables_and_columns_by_id_across_renames() {
    let session = music_session();
    let names: Vec<&str> = session.tables().map(|t| t.spanner_name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Accounts",
            "Albums",
            "Countries",
            "Persons",
            "Singers",
            "SpannerOnlyEvents"
        ]
    );

    let singers = table(&session, "Singers");
    assert_eq!(singers.id, "t1");
    assert_eq!(singers.source_name(), Some("singers"));
    assert_eq!(
        singers.source.as_ref().map(|s| s.schema.as_str()),
        Some("music")
    );
    let singer_id = singers.column("SingerId").expect("column SingerId");
    assert_eq!(singer_id.spanner_type.name, "INT64");
    let source = singer_id
        .source
        .as_ref()
        .expect("SingerId has a source column");
    assert_eq!(
        (
            source.name.as_str(),
            source.type_name.as_deref(),
            source.type_mods.as_slice()
        ),
        ("singer_id", Some("bigint"), &[20][..])
    );
    assert!(source.not_null);
    let tags = singers.column("Tags").expect("column Tags");
    assert!(tags.spanner_type.is_array);
    assert_eq!(
        tags.source.as_ref().and_then(|s| s.type_name.as_deref()),
        Some("json")
    );
    let columns: Vec<&str> = singers
        .columns
        .iter()
        .map(|c| c.spanner_name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "SingerId",
            "FirstName",
            "LastName",
            "Tags",
            "migration_shard_id"
        ]
    );
}

#[test]
fn keeps_shard_columns_primary_keys_and_spanner_only_parts() {
    let session = music_session();
    let singers = table(&session, "Singers");
    assert_eq!(
        singers.shard_id_column.as_deref(),
        Some("migration_shard_id")
    );
    // The Spanner key is ordered by `Order`, not by listing order.
    assert_eq!(
        singers.spanner_primary_key,
        ["migration_shard_id", "SingerId"]
    );
    assert_eq!(singers.source_primary_key, ["singer_id"]);
    let shard_column = singers.column("migration_shard_id").expect("shard column");
    assert_eq!(
        shard_column.source, None,
        "the shard column exists only in Spanner"
    );

    let albums = table(&session, "Albums");
    let price = albums.column("Price").and_then(|c| c.source.as_ref());
    assert_eq!(
        price.map(|s| (s.type_name.as_deref(), s.type_mods.clone())),
        Some((Some("decimal"), vec![10, 2]))
    );
    assert_eq!(
        albums
            .column("Title")
            .and_then(|c| c.source.as_ref())
            .map(|s| s.name.as_str()),
        Some("album_title")
    );
    assert_eq!(albums.source_primary_key, ["singer_id", "album_id"]);

    let persons = table(&session, "Persons");
    assert_eq!(persons.synthetic_primary_key.as_deref(), Some("synth_id"));
    assert_eq!(persons.spanner_primary_key, ["synth_id"]);
    assert!(persons.source_primary_key.is_empty());

    let countries = table(&session, "Countries");
    assert_eq!(countries.shard_id_column, None);
    assert_eq!(countries.source_name(), Some("countries"));

    let events = table(&session, "SpannerOnlyEvents");
    assert_eq!(events.source, None);
    assert!(events.columns.iter().all(|c| c.source.is_none()));
    assert!(events.source_primary_key.is_empty());

    // A source table dropped from the migration, and a table never migrated.
    assert!(session.table("audit_log").is_none());
    assert!(session.table("Audit").is_none());
}

fn session_error(document: &Value) -> String {
    Session::from_json("session.json", &document.to_string())
        .map(|_| "accepted".to_string())
        .unwrap_or_else(|error| error.to_string())
}

fn music_json() -> Value {
    let text = std::fs::read_to_string(fixture("music-session.json")).expect("fixture readable");
    serde_json::from_str(&text).expect("fixture is JSON")
}

#[test]
fn a_file_without_the_schema_sections_is_refused() {
    for section in ["SpSchema", "SrcSchema"] {
        let mut document = music_json();
        document.as_object_mut().expect("an object").remove(section);
        assert_eq!(
            session_error(&document),
            format!(
                "session file \"session.json\", top level: \"{section}\" is missing (is this a \
                 Spanner Migration Tool session file?)"
            )
        );
    }
}

#[test]
fn a_file_without_synthetic_keys_has_none() {
    let mut document = music_json();
    document
        .as_object_mut()
        .expect("an object")
        .remove("SyntheticPKeys");
    let session = Session::from_json("session.json", &document.to_string()).expect("accepted");
    assert_eq!(table(&session, "Persons").synthetic_primary_key, None);
}

/// Some real session files call the source column type `T` (like the Spanner side), some
/// omit it: revrepl reads column types from the shard, so both load.
#[test]
fn source_column_types_named_t_or_missing_are_accepted() {
    let mut document = music_json();
    let columns = document["SrcSchema"]["t1"]["ColDefs"]
        .as_object_mut()
        .expect("ColDefs is an object");
    let first = columns
        .get_mut("c1")
        .and_then(Value::as_object_mut)
        .expect("c1");
    let kind = first.remove("Type").expect("c1 has a Type");
    first.insert("T".to_string(), kind);
    for column in ["c2", "c3"] {
        columns
            .get_mut(column)
            .and_then(Value::as_object_mut)
            .expect("column")
            .remove("Type");
    }
    let session = Session::from_json("session.json", &document.to_string()).expect("accepted");
    let singers = table(&session, "Singers");
    let source_of = |name: &str| {
        singers
            .column(name)
            .and_then(|c| c.source.clone())
            .expect("a source column")
    };
    assert_eq!(source_of("SingerId").type_name.as_deref(), Some("bigint"));
    assert_eq!(source_of("SingerId").type_mods, [20]);
    let first_name = source_of("FirstName");
    assert_eq!(first_name.name, "first_name");
    assert_eq!(first_name.type_name, None);
    assert!(first_name.type_mods.is_empty());
}

#[test]
fn missing_required_pieces_name_their_json_path() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["SrcSchema", "t1", "ColDefs", "c2", "Name"],
            "SrcSchema[\"t1\"].ColDefs[\"c2\"].Name: the name is missing",
        ),
        (
            &["SpSchema", "t1", "ColDefs", "c2", "T"],
            "SpSchema[\"t1\"].ColDefs[\"c2\"].T: the Spanner type is missing",
        ),
        (
            &["SpSchema", "t2", "Name"],
            "SpSchema[\"t2\"].Name: the name is missing",
        ),
        (
            &["SrcSchema", "t2", "Name"],
            "SrcSchema[\"t2\"].Name: the name is missing",
        ),
        (
            &["SpSchema", "t1", "ColDefs", "c1", "T", "Name"],
            "SpSchema[\"t1\"].ColDefs[\"c1\"].T.Name: the name is missing",
        ),
    ];
    for (path, expected) in cases {
        let mut document = music_json();
        let (last, parents) = path.split_last().expect("a path");
        let parent = parents
            .iter()
            .fold(&mut document, |value, key| &mut value[*key]);
        parent
            .as_object_mut()
            .expect("an object")
            .remove(*last)
            .expect("the piece exists in the fixture");
        let error = session_error(&document);
        assert_eq!(error, format!("session file \"session.json\", {expected}"));
    }

    // A piece of the wrong shape names its table.
    let mut document = music_json();
    document["SrcSchema"]["t2"]["ColDefs"] = json!(["not", "a", "map"]);
    let error = session_error(&document);
    assert!(
        error.starts_with("session file \"session.json\", SrcSchema[\"t2\"]: invalid type"),
        "{error}"
    );
}

#[test]
fn dangling_column_ids_are_refused_with_their_location() {
    let mut document = music_json();
    document["SpSchema"]["t3"]["ShardIdColumn"] = json!("c99");
    assert_eq!(
        session_error(&document),
        "session file \"session.json\", SpSchema[\"t3\"].ShardIdColumn: column id \"c99\" is \
         not defined in SpSchema[\"t3\"].ColDefs"
    );

    let mut document = music_json();
    document["SpSchema"]["t1"]["ColIds"] = json!(["c1", "c7"]);
    assert!(session_error(&document).contains("SpSchema[\"t1\"].ColIds: column id \"c7\""));

    let mut document = music_json();
    document["SyntheticPKeys"]["t4"]["ColId"] = json!("c0");
    assert!(session_error(&document).contains("SyntheticPKeys[\"t4\"].ColId"));

    let mut document = music_json();
    document["SrcSchema"]["t2"]["PrimaryKeys"] = json!([{"ColId": "c19", "Order": 1}]);
    assert!(session_error(&document).contains("SrcSchema[\"t2\"].PrimaryKeys"));
}

#[test]
fn duplicate_spanner_table_names_are_refused() {
    let mut document = music_json();
    document["SpSchema"]["t5"]["Name"] = json!("Accounts");
    assert_eq!(
        session_error(&document),
        "session file \"session.json\", SpSchema[\"t5\"].Name: Spanner table name \"Accounts\" \
         is also used by table \"t3\""
    );
}

#[test]
fn syntax_and_shape_errors_name_the_file_and_the_line() {
    let error = Session::from_json("session.json", "{\n\"SpSchema\": [}").expect_err("not JSON");
    assert!(
        error
            .to_string()
            .starts_with("session file \"session.json\" is not valid:"),
        "{error}"
    );
    assert!(error.to_string().contains("line 2"), "{error}");
    assert_eq!(error.class(), ErrorClass::Fatal);
    let missing = Session::load(Path::new("/nonexistent/session.json")).expect_err("missing");
    assert!(
        missing
            .to_string()
            .starts_with("cannot read session file \"/nonexistent/session.json\""),
        "{missing}"
    );
}

#[test]
fn go_style_nulls_are_empty_lists() {
    let document = json!({
        "SpSchema": {"t1": {"Name": "T", "ColIds": null, "ColDefs": {
            "c1": {"Name": "id", "T": {"Name": "INT64", "Len": 0, "IsArray": false}}},
            "PrimaryKeys": null, "ShardIdColumn": ""}},
        "SrcSchema": {"t1": {"Name": "t", "Schema": "db", "ColIds": null, "ColDefs": null,
            "PrimaryKeys": null}},
        "SyntheticPKeys": {}
    });
    let session = Session::from_json("s", &document.to_string()).expect("valid session");
    let t = table(&session, "T");
    assert_eq!(t.columns.len(), 1, "ColDefs used when ColIds is null");
    assert_eq!(t.shard_id_column, None, "an empty ShardIdColumn means none");
    assert!(t.spanner_primary_key.is_empty());
    assert_eq!(t.columns[0].source, None);
}
