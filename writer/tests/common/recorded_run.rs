//! Test setup shared by the writer's tests and benchmark (and `launcher/tests/dlq.rs`), included
//! with `#[path = ...] mod recorded_run;`: a run as the reader records it in an SQLite metadata
//! store, and a fresh MySQL database.

// Not every includer uses every function.
#![allow(dead_code)]

use std::path::Path;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use revrepl_metadata::{
    MetadataStore, MissingTables, RunId, RunRecord, SqliteMetadataStore, SqliteOptions,
};
use revrepl_record::{ShardId, Timestamp, WindowDuration};

/// An SQLite metadata store at `path` with its tables, run `run` (from `start`, windows of
/// `window`) recorded and `shards` registered, as a regular reader start leaves it.
pub async fn recorded_run(
    path: &Path,
    run: &RunId,
    start: Timestamp,
    window: WindowDuration,
    shards: &[ShardId],
) -> SqliteMetadataStore {
    let store = SqliteMetadataStore::open(path, SqliteOptions::default())
        .await
        .expect("sqlite metadata store opens");
    store
        .ensure_tables(MissingTables::Create)
        .await
        .expect("metadata tables");
    store
        .record_run(&RunRecord::new(run.clone(), start, window).expect("run record"))
        .await
        .expect("record run");
    store
        .register_shards(run, shards, start)
        .await
        .expect("register shards");
    store
}

/// Database `database` on the server at `server_url`, dropped first if it exists, with `ddl`
/// run in it; returns a connection using it and options to connect to it, or which statement of
/// `ddl` failed and why.
pub async fn fresh_database<S: AsRef<str>>(
    server_url: &str,
    database: &str,
    ddl: &[S],
) -> Result<(Conn, Opts), String> {
    let mut conn = Conn::from_url(server_url).await.expect("connect as root");
    for statement in [
        format!("DROP DATABASE IF EXISTS `{database}`"),
        format!("CREATE DATABASE `{database}`"),
        format!("USE `{database}`"),
    ] {
        conn.query_drop(&statement)
            .await
            .expect("create the database");
    }
    for statement in ddl {
        let statement = statement.as_ref();
        conn.query_drop(statement)
            .await
            .map_err(|e| format!("{statement}: {e}"))?;
    }
    let opts = Opts::from_url(&format!("{server_url}/{database}")).expect("database url");
    Ok((conn, opts))
}
