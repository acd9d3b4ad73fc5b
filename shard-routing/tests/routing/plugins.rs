//! Plugins built from source with cargo and loaded from disk: the example hash router, a
//! plugin that panics and a plugin built for another ABI version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use revrepl_record::{Classify, Destination, ErrorClass, ShardId};
use revrepl_shard_routing::{PluginRouter, RoutingError, RowNeed, ShardAssigner, ShardRouter};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::records::{RowHistory, commit_time, request};
use crate::session_file::music_session;

const EXAMPLE: &str = "revrepl-example-shard-router-plugin";
const PANICKING: &str = "revrepl-test-panicking-router";
const WRONG_ABI: &str = "revrepl-test-wrong-abi-router";

/// Longest a cold build of the plugins may take on a small CI machine.
const BUILD_DEADLINE: Duration = Duration::from_secs(600);

/// The libraries of the plugin packages, by package name, built once per test process.
async fn plugin(package: &str) -> PathBuf {
    static BUILT: OnceCell<BTreeMap<String, PathBuf>> = OnceCell::const_new();
    let libraries = BUILT.get_or_init(build_plugins).await;
    libraries
        .get(package)
        .unwrap_or_else(|| panic!("cargo reported no cdylib for {package}: {libraries:?}"))
        .clone()
}

/// Runs `cargo build` for the plugin packages (a no-op when they are up to date, as after
/// `make plugin`) in this workspace and target directory, and reads the library paths from
/// cargo's JSON messages.
async fn build_plugins() -> BTreeMap<String, PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = tokio::process::Command::new(cargo);
    command
        .args(["build", "--message-format=json-render-diagnostics"])
        .args(["-p", EXAMPLE, "-p", PANICKING, "-p", WRONG_ABI])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(BUILD_DEADLINE, command.output())
        .await
        .expect("cargo builds the test plugins within the deadline")
        .expect("cargo can be started");
    assert!(
        output.status.success(),
        "cargo build of the test plugins failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut libraries = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let is_cdylib = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|kind| kind == "cdylib"));
        let package = message["target"]["name"].as_str().unwrap_or_default();
        if !is_cdylib {
            continue;
        }
        let library = message["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find(|file| file.ends_with(std::env::consts::DLL_SUFFIX));
        if let Some(library) = library {
            libraries.insert(package.replace('_', "-"), PathBuf::from(library));
        }
    }
    libraries
}

fn shard(id: &str) -> ShardId {
    ShardId::new(id).expect("a valid shard id")
}

/// The example's hash, computed independently: FNV-1a, 64 bits.
fn fnv1a(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn hashed<'a>(text: &str, shards: &[&'a str]) -> &'a str {
    let index = fnv1a(text) % shards.len() as u64;
    shards[usize::try_from(index).expect("small index")]
}

async fn example(params: &Value) -> PluginRouter {
    PluginRouter::load(&plugin(EXAMPLE).await, &params.to_string()).expect("the example loads")
}

#[tokio::test]
async fn the_example_plugin_routes_rows_by_a_hash_of_a_column() {
    let params = json!({"column": "SingerId", "shards": ["ls1", "ls2"],
                        "tables": {"Concerts": "VenueId"}});
    let assigner = ShardAssigner::new(
        Box::new(example(&params).await),
        [shard("ls1"), shard("ls2")],
    );
    let mut used = std::collections::BTreeSet::new();
    for singer in 0..20 {
        let id = singer.to_string();
        let insert = request(
            "Singers",
            "INSERT",
            json!({"SingerId": id}),
            json!({"FirstName": "x"}),
            json!({}),
        );
        let expected = hashed(&id, &["ls1", "ls2"]);
        assert_eq!(
            assigner.assign(&insert).await.expect("routed"),
            Destination::Shard(shard(expected)),
            "SingerId {id}"
        );
        used.insert(expected);
    }
    assert_eq!(used.len(), 2, "twenty singers spread over both shards");

    let concert = request(
        "Concerts",
        "UPDATE",
        json!({"ConcertId": "1"}),
        json!({"VenueId": "v-17"}),
        json!({}),
    );
    assert_eq!(
        assigner.assign(&concert).await.expect("routed"),
        Destination::Shard(shard(hashed("v-17", &["ls1", "ls2"])))
    );
}

#[tokio::test]
async fn plugin_deletes_get_the_row_from_old_values_or_the_lookup() {
    let params = json!({"column": "Region", "shards": ["ls1", "ls2", "ls3"]});
    let router = example(&params).await;
    assert_eq!(router.row_need("Singers"), RowNeed::WholeRow);
    let keys = json!({"SingerId": "7"});
    let history = RowHistory::default().write(
        "Singers",
        keys.clone(),
        revrepl_record::Timestamp::new(1_700_000_000, 0).expect("ts"),
        Some(json!({"SingerId": "7", "Region": "eu-west"})),
    );
    let assigner = ShardAssigner::new(Box::new(router), ["ls1", "ls2", "ls3"].map(shard))
        .with_row_lookup(history);
    let expected = Destination::Shard(shard(hashed("eu-west", &["ls1", "ls2", "ls3"])));

    let with_old_values = request(
        "Singers",
        "DELETE",
        keys.clone(),
        json!({}),
        json!({"SingerId": "7", "Region": "eu-west"}),
    );
    assert_eq!(
        assigner.assign(&with_old_values).await.expect("routed"),
        expected
    );
    let lookup = assigner.row_lookup().expect("a lookup");
    assert!(
        lookup.calls().is_empty(),
        "old values made the lookup unnecessary"
    );

    let keys_only = request("Singers", "DELETE", keys.clone(), json!({}), json!({}));
    assert_eq!(assigner.assign(&keys_only).await.expect("routed"), expected);
    let calls = lookup.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].columns, RowNeed::WholeRow);
    assert!(calls[0].read_timestamp < commit_time());
}

#[tokio::test]
async fn plugin_refusals_and_foreign_shards_are_errors_naming_the_record() {
    let path = plugin(EXAMPLE).await;
    let router =
        PluginRouter::load(&path, r#"{"column": "SingerId", "shards": ["ls1"]}"#).expect("loads");
    let assigner = ShardAssigner::new(Box::new(router), [shard("ls1")]);
    let no_column = request(
        "Albums",
        "INSERT",
        json!({"AlbumId": "3"}),
        json!({}),
        json!({}),
    );
    let error = assigner.assign(&no_column).await.expect_err("no SingerId");
    assert_eq!(
        error.to_string(),
        format!(
            r#"shard-router plugin "{}" could not route the record of table "Albums" with key {{"AlbumId":"3"}}: the row of table "Albums" has no column "SingerId""#,
            path.display()
        )
    );
    assert_eq!(error.class(), ErrorClass::Definite);

    let router =
        PluginRouter::load(&path, r#"{"column": "SingerId", "shards": ["ls9"]}"#).expect("loads");
    let assigner = ShardAssigner::new(Box::new(router), [shard("ls1")]);
    let singer = request(
        "Singers",
        "INSERT",
        json!({"SingerId": "1"}),
        json!({}),
        json!({}),
    );
    let error = assigner
        .assign(&singer)
        .await
        .expect_err("ls9 is not a shard");
    assert!(
        matches!(error, RoutingError::UnknownShard { ref shard, .. } if shard.as_str() == "ls9")
    );

    let router =
        PluginRouter::load(&path, r#"{"column": "SingerId", "shards": ["a/b"]}"#).expect("loads");
    let error = router.route(&singer).expect_err("invalid id");
    assert!(
        error
            .to_string()
            .ends_with("routes to an invalid logical shard id: shard id \"a/b\" contains '/'"),
        "{error}"
    );
}

#[tokio::test]
async fn plugin_parameters_are_checked_once_at_load() {
    let path = plugin(EXAMPLE).await;
    let error = PluginRouter::load(&path, r#"{"column": "SingerId"}"#).expect_err("no shards");
    assert_eq!(
        error.to_string(),
        format!(
            r#"shard-router plugin "{}" refused its parameters: invalid parameters: missing field `shards` at line 1 column 22"#,
            path.display()
        )
    );
    assert_eq!(error.class(), ErrorClass::Fatal);
}

#[tokio::test]
async fn with_a_session_unknown_tables_skip_the_plugin() {
    let params = json!({"column": "SingerId", "shards": ["ls1"]});
    let router = example(&params)
        .await
        .with_session(Arc::new(music_session()));
    assert_eq!(router.row_need("Audit"), RowNeed::Nothing);
    let audit = request("Audit", "DELETE", json!({"id": "1"}), json!({}), json!({}));
    assert_eq!(router.route(&audit).expect("skipped"), Destination::Skip);
    let singer = request(
        "Singers",
        "INSERT",
        json!({"SingerId": "1"}),
        json!({}),
        json!({}),
    );
    assert_eq!(
        router.route(&singer).expect("routed"),
        Destination::Shard(shard("ls1"))
    );
}

#[tokio::test]
async fn a_panicking_plugin_gives_errors_not_crashes() {
    let path = plugin(PANICKING).await;
    let error = PluginRouter::load(&path, "panic in init").expect_err("init panics");
    let text = error.to_string();
    assert!(
        text.starts_with(&format!(
            r#"shard-router plugin "{}" panicked in init: "#,
            path.display()
        )) && text.contains("init was told to panic"),
        "{text}"
    );
    assert_eq!(error.class(), ErrorClass::Fatal);

    let router = PluginRouter::load(&path, "").expect("loads");
    let boom = request("Boom", "INSERT", json!({"id": "1"}), json!({}), json!({}));
    let error = router.route(&boom).expect_err("route panics");
    assert_eq!(
        error.to_string(),
        format!(
            r#"shard-router plugin "{}" panicked while routing the record of table "Boom" with key {{"id":"1"}}: no route for table Boom"#,
            path.display()
        )
    );
    // The process and the plugin survive the panic.
    let calm = request("Calm", "INSERT", json!({"id": "2"}), json!({}), json!({}));
    assert_eq!(
        router.route(&calm).expect("routed"),
        Destination::Shard(shard("ls1"))
    );
}

#[tokio::test]
async fn a_plugin_built_for_another_abi_version_is_refused_clearly() {
    let path = plugin(WRONG_ABI).await;
    let error = PluginRouter::load(&path, "").expect_err("ABI version 2");
    assert!(matches!(
        error,
        RoutingError::PluginAbiMismatch {
            found: 2,
            expected: 1,
            ..
        }
    ));
    assert_eq!(
        error.to_string(),
        format!(
            r#"shard-router plugin "{}" was built for plugin ABI version 2, but this revrepl loads version 1: rebuild the plugin against the revrepl-shard-router-abi crate of this revrepl release"#,
            path.display()
        )
    );
    assert_eq!(error.class(), ErrorClass::Fatal);
}

#[test]
fn files_that_are_not_plugins_are_refused_clearly() {
    let error =
        PluginRouter::load(Path::new("/nonexistent/libplugin.so"), "").expect_err("no such file");
    assert!(
        error
            .to_string()
            .starts_with(r#"cannot load shard-router plugin "/nonexistent/libplugin.so": "#),
        "{error}"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let garbage = dir.path().join("libgarbage.so");
    std::fs::write(&garbage, b"not a shared library").expect("write");
    let error = PluginRouter::load(&garbage, "").expect_err("not a library");
    assert!(matches!(error, RoutingError::PluginLoad { .. }), "{error}");
}

/// A real shared library without the entry symbol: the C library this test process uses.
#[cfg(target_os = "linux")]
#[test]
fn a_library_without_the_entry_symbol_is_not_a_plugin() {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    let libc = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| {
            Path::new(path)
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("libc.so") || name.starts_with("libc-"))
        })
        .expect("a dynamically linked test process maps the C library");
    let error = PluginRouter::load(Path::new(libc), "").expect_err("libc is no plugin");
    assert_eq!(
        error.to_string(),
        format!(
            r#""{libc}" is not a revrepl shard-router plugin: it exports no "revrepl_shard_router_v1" symbol (plugins use revrepl-shard-router-abi's export_router! macro)"#
        )
    );
    assert_eq!(error.class(), ErrorClass::Fatal);
}
