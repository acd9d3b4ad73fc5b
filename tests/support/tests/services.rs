//! Each service does one real round trip, and dropping a service (or killing its owner) stops it.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use revrepl_test_services::{
    EmulatorOptions, FakeGcs, MariaDb, SpannerEmulator, process_is_running, scripts_dir,
};
use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn http() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder().no_proxy().build()
}

/// Polls until `pid` is gone (or a zombie); false after `deadline`.
fn wait_gone(pid: u32, deadline: Duration) -> bool {
    let started = Instant::now();
    while process_is_running(pid) {
        if started.elapsed() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Running processes whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut members = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return members;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(") ").and_then(|i| stat.get(i + 2..)) else {
            continue;
        };
        let fields: Vec<&str> = rest.split(' ').collect();
        // rest = state ppid pgrp ...
        if fields.get(2) == Some(&pgid.to_string().as_str()) && process_is_running(pid) {
            members.push(pid);
        }
    }
    members
}

async fn post_json(client: &reqwest::Client, url: &str, body: &Value) -> Result<Value, String> {
    let response = client
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("POST {url}: HTTP {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("POST {url}: {e}: {text}"))
}

#[tokio::test]
async fn services_spanner_emulator_round_trip() -> TestResult {
    let started = Instant::now();
    let emulator = SpannerEmulator::start()?;
    eprintln!("spanner emulator started in {:?}", started.elapsed());
    assert!(emulator.grpc_endpoint().starts_with("http://127.0.0.1:"));
    assert_eq!(
        emulator.grpc_endpoint(),
        format!("http://{}", emulator.host_port())
    );

    emulator
        .create_instance("test-project", "test-instance")
        .await?;
    emulator
        .create_database(
            "test-project",
            "test-instance",
            "test-db",
            &["CREATE TABLE Singers (SingerId INT64 NOT NULL, Name STRING(MAX)) PRIMARY KEY (SingerId)"],
        )
        .await?;
    emulator
        .update_ddl(
            "test-project",
            "test-instance",
            "test-db",
            &["CREATE CHANGE STREAM SingersStream FOR Singers OPTIONS (value_capture_type = 'NEW_ROW')"],
        )
        .await?;

    let client = http()?;
    let db = format!(
        "{}/v1/projects/test-project/instances/test-instance/databases/test-db",
        emulator.rest_endpoint()
    );
    let session = post_json(&client, &format!("{db}/sessions"), &json!({})).await?;
    let session_name = session["name"].as_str().ok_or("session without a name")?;
    let session_url = format!("{}/v1/{session_name}", emulator.rest_endpoint());

    let commit = post_json(
        &client,
        &format!("{session_url}:commit"),
        &json!({
            "singleUseTransaction": { "readWrite": {} },
            "mutations": [{ "insert": {
                "table": "Singers",
                "columns": ["SingerId", "Name"],
                "values": [["1", "Marc Richards"]],
            }}],
        }),
    )
    .await?;
    assert!(
        commit["commitTimestamp"].is_string(),
        "commit answer: {commit}"
    );

    let result = post_json(
        &client,
        &format!("{session_url}:executeSql"),
        &json!({ "sql": "SELECT SingerId, Name FROM Singers WHERE SingerId = 1" }),
    )
    .await?;
    assert_eq!(result["rows"], json!([["1", "Marc Richards"]]), "{result}");

    // Errors name the service and carry the log.
    let error = emulator
        .create_database(
            "test-project",
            "test-instance",
            "bad-db",
            &["CREATE TABLE ("],
        )
        .await
        .err()
        .ok_or("bad DDL was accepted")?;
    let message = error.to_string();
    assert!(message.contains("spanner emulator"), "{message}");
    assert!(message.contains("spanner-emulator.log"), "{message}");
    Ok(())
}

#[tokio::test]
async fn services_spanner_emulator_with_options() -> TestResult {
    let emulator = SpannerEmulator::start_with(EmulatorOptions {
        partition_token_alive_seconds: Some(2),
        fault_injection: true,
    })?;
    emulator.create_instance("p", "opts-instance").await?;
    let pid = emulator.pid().ok_or("no pid")?;
    let members = group_members(pid);
    let mut found = false;
    for member in members {
        let cmdline = std::fs::read(format!("/proc/{member}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline
            .split(' ')
            .next()
            .is_some_and(|argv0| argv0.ends_with("emulator_main"))
        {
            found = true;
            assert!(cmdline.contains("--enable_fault_injection"), "{cmdline}");
            assert!(
                cmdline.contains("--override_change_stream_partition_token_alive_seconds=2"),
                "{cmdline}"
            );
        }
    }
    assert!(found, "no emulator_main in the emulator's process group");
    Ok(())
}

#[tokio::test]
async fn services_mariadb_round_trip_and_restart() -> TestResult {
    let started = Instant::now();
    let mut shards = MariaDb::start_many(2)?;
    eprintln!("2 mariadb servers started in {:?}", started.elapsed());
    assert_eq!(shards.len(), 2);
    assert_ne!(shards[0].port(), shards[1].port());

    for (i, shard) in shards.iter().enumerate() {
        assert_eq!(
            shard.url(),
            format!("mysql://root@127.0.0.1:{}", shard.port())
        );
        let mut conn = mysql_async::Conn::from_url(shard.url()).await?;
        conn.query_drop("CREATE DATABASE app").await?;
        conn.query_drop("CREATE TABLE app.t (id BIGINT PRIMARY KEY, name VARCHAR(64))")
            .await?;
        conn.exec_drop(
            "INSERT INTO app.t (id, name) VALUES (?, ?)",
            (i as u64, format!("shard-{i}-é")),
        )
        .await?;
        let name: Option<String> = conn
            .exec_first("SELECT name FROM app.t WHERE id = ?", (i as u64,))
            .await?;
        assert_eq!(name.as_deref(), Some(format!("shard-{i}-é").as_str()));
        conn.disconnect().await?;
    }

    let shard = &mut shards[1];
    let port = shard.port();
    let old_pid = shard.pid().ok_or("no pid")?;
    let stop_started = Instant::now();
    shard.stop()?;
    eprintln!("mariadb stopped in {:?}", stop_started.elapsed());
    assert!(
        !process_is_running(old_pid),
        "mariadbd still runs after stop()"
    );
    assert!(
        mysql_async::Conn::from_url(shard.url()).await.is_err(),
        "connected to a stopped server"
    );
    shard.stop()?; // idempotent

    let restart_started = Instant::now();
    shard.restart()?;
    eprintln!("mariadb restarted in {:?}", restart_started.elapsed());
    assert_eq!(shard.port(), port);
    let mut conn = mysql_async::Conn::from_url(shard.url()).await?;
    let name: Option<String> = conn
        .query_first("SELECT name FROM app.t WHERE id = 1")
        .await?;
    assert_eq!(name.as_deref(), Some("shard-1-é"));
    conn.disconnect().await?;
    Ok(())
}

#[tokio::test]
async fn services_fake_gcs_round_trip() -> TestResult {
    let started = Instant::now();
    let gcs = FakeGcs::start()?;
    eprintln!("fake-gcs started in {:?}", started.elapsed());
    gcs.create_bucket("test-bucket").await?;

    let payload: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let client = http()?;
    let upload = client
        .post(format!(
            "{}/upload/storage/v1/b/test-bucket/o?uploadType=media&name=dir%2Fobject.bin",
            gcs.endpoint()
        ))
        .header("content-type", "application/octet-stream")
        .body(payload.clone())
        .send()
        .await?;
    let status = upload.status();
    let body: Value = upload.json().await?;
    assert!(status.is_success(), "upload: {status} {body}");
    assert_eq!(body["name"], "dir/object.bin");
    assert_eq!(body["size"], payload.len().to_string());

    let download = client
        .get(format!(
            "{}/storage/v1/b/test-bucket/o/dir%2Fobject.bin?alt=media",
            gcs.endpoint()
        ))
        .send()
        .await?;
    assert!(
        download.status().is_success(),
        "download: {}",
        download.status()
    );
    let bytes = download.bytes().await?;
    assert_eq!(bytes.as_ref(), payload.as_slice());
    Ok(())
}

#[test]
fn services_drop_stops_processes() -> TestResult {
    let emulator = SpannerEmulator::start()?;
    let mariadb = MariaDb::start()?;
    let gcs = FakeGcs::start()?;

    let emulator_pid = emulator.pid().ok_or("no emulator pid")?;
    let emulator_group = group_members(emulator_pid);
    assert!(
        emulator_group.len() >= 2,
        "gateway + emulator_main: {emulator_group:?}"
    );
    let mut pids = emulator_group;
    pids.push(mariadb.pid().ok_or("no mariadb pid")?);
    pids.push(gcs.pid().ok_or("no fake-gcs pid")?);
    for pid in &pids {
        assert!(process_is_running(*pid), "{pid} is not running");
    }
    let dirs = [
        emulator.dir().to_path_buf(),
        mariadb.dir().to_path_buf(),
        gcs.dir().to_path_buf(),
    ];

    drop(emulator);
    drop(mariadb);
    drop(gcs);
    for pid in pids {
        assert!(
            wait_gone(pid, Duration::from_secs(30)),
            "{pid} still runs after drop"
        );
    }
    if std::env::var_os("REVREPL_KEEP_SERVICES").is_none() {
        for dir in dirs {
            assert!(!dir.exists(), "{} was not removed", dir.display());
        }
    }
    Ok(())
}

#[test]
fn services_drop_on_panic_stops_process() -> TestResult {
    let (tx, rx) = std::sync::mpsc::channel();
    let joined = std::thread::spawn(move || -> Result<(), String> {
        let gcs = FakeGcs::start().map_err(|e| e.to_string())?;
        tx.send(gcs.pid()).map_err(|e| e.to_string())?;
        panic!("test panics while holding a service");
    })
    .join();
    assert!(joined.is_err(), "the thread should have panicked");
    let pid = rx.recv()?.ok_or("no pid")?;
    assert!(
        wait_gone(pid, Duration::from_secs(30)),
        "{pid} still runs after the panic"
    );
    Ok(())
}

#[test]
fn services_watchdog_stops_server_when_owner_dies() -> TestResult {
    // An owner process that we SIGKILL, as a test-runner timeout would.
    let mut owner = Command::new("sleep").arg("600").spawn()?;
    let dir = tempfile::tempdir()?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let output = Command::new("bash")
        .arg(scripts_dir().join("fake-gcs.sh"))
        .args([
            "start",
            &dir.path().display().to_string(),
            &port.to_string(),
        ])
        .arg(owner.id().to_string())
        .env("FAKE_GCS_BIN", FakeGcs::binary()?)
        .stdin(Stdio::null())
        .output()?;
    assert!(output.status.success(), "start failed: {output:?}");
    let pid: u32 = std::fs::read_to_string(dir.path().join("server.pid"))?
        .trim()
        .parse()?;
    assert!(process_is_running(pid));

    owner.kill()?;
    owner.wait()?;
    let gone = wait_gone(pid, Duration::from_secs(30));
    // Clean up either way.
    let _ = Command::new("bash")
        .arg(scripts_dir().join("fake-gcs.sh"))
        .args(["stop", &dir.path().display().to_string()])
        .output();
    assert!(gone, "fake-gcs-server {pid} outlived its owner");
    Ok(())
}

#[test]
fn services_script_reports_port_in_use() -> TestResult {
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let dir = tempfile::tempdir()?;
    let output = Command::new("bash")
        .arg(scripts_dir().join("fake-gcs.sh"))
        .args([
            "start",
            &dir.path().display().to_string(),
            &port.to_string(),
        ])
        .arg(std::process::id().to_string())
        .env("FAKE_GCS_BIN", FakeGcs::binary()?)
        .stdin(Stdio::null())
        .output()?;
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(!dir.path().join("server.pid").exists());
    Ok(())
}
