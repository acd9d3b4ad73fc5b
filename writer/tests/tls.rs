//! TLS to the shards (`writer.tls_ca_file`) with the real `revrepl-writer` binary against a
//! MariaDB shard that requires secure transport, with certificates made here by `openssl`:
//!
//! - a CA other than the server's: the shard fails at once with a certificate error (fatal, not
//!   retried), and nothing is applied;
//! - no TLS at all: the server refuses the connection (so the last run really used TLS);
//! - the server's CA: the windows are applied.
//!
//! And mutual TLS, against a MariaDB user that `REQUIRE X509`: without a client certificate
//! the server refuses; with one (`writer.tls_client_cert_file`, or a shard's own
//! `sslCa`/`sslCert`/`sslKey` connection properties, which win over a wrong configured CA) the
//! windows are applied; a certificate file that does not exist stops the writer at once (exit
//! 2) naming the shard and the path.

#[path = "common/custom_mariadb.rs"]
mod custom_mariadb;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use custom_mariadb::CustomMariaDb;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
#[path = "common/recorded_run.rs"]
mod recorded_run;
use recorded_run::recorded_run;
use revrepl_metadata::{CreatedWindows, MetadataStore, ProcessStatus, RunId, SqliteMetadataStore};
use revrepl_record::buffer::LocalDirectory;
use revrepl_record::{
    BufferStore, ChangeRecord, Destination, Mod, ModType, ShardId, Timestamp, Window,
    WindowDuration, WindowFileEncoder, WindowFileName,
};
use serde_json::json;

const RUN: &str = "tlsrun";
const SHARD: &str = "s0";
const START: i64 = 1_700_000_000;
const WINDOWS: i64 = 3;
const ROWS_PER_WINDOW: i64 = 5;
/// How long one writer run may take; a run that retries forever hits this.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `openssl` in `dir`; panics with its output when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let output = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs (the CLI must be installed)");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A self-signed CA `<name>.pem` / `<name>.key`.
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "30",
            "-subj",
            &format!("/CN=revrepl test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    dir.join(format!("{name}.pem"))
}

/// `server.pem` / `server.key` for IP 127.0.0.1, signed by CA `ca`.
fn make_server_cert(dir: &Path, ca: &str) -> (PathBuf, PathBuf) {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("extensions file");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "30",
            "-extfile",
            "server.ext",
        ],
    );
    (dir.join("server.pem"), dir.join("server.key"))
}

/// `<name>.pem` / `<name>.key`: a client certificate signed by CA `ca`.
fn make_client_cert(dir: &Path, ca: &str, name: &str) -> (PathBuf, PathBuf) {
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=clientAuth\n",
    )
    .expect("extensions file");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN=revrepl {name}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "30",
            "-extfile",
            "client.ext",
        ],
    );
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    )
}

fn window_duration() -> WindowDuration {
    "1s".parse().expect("duration")
}

fn window(index: i64) -> Window {
    window_duration()
        .window_of(Timestamp::new(START + index, 0).expect("ts"))
        .expect("window")
}

/// Window `w`: one transaction per row, inserting ids `w*10 ..`.
fn window_file(w: i64) -> Bytes {
    let mut encoder = WindowFileEncoder::new();
    for i in 0..ROWS_PER_WINDOW {
        let id = w * 10 + i;
        let record = ChangeRecord {
            commit_timestamp: Timestamp::new(START + w, u32::try_from(i).expect("small") * 1_000)
                .expect("ts"),
            server_transaction_id: format!("txn-{id}"),
            record_sequence: "00000000".into(),
            table_name: "users".into(),
            mods: [Mod {
                keys_json: json!({"id": id.to_string()}).to_string(),
                old_values_json: "{}".into(),
                new_values_json: json!({"name": format!("user {id}")}).to_string(),
            }],
            mod_type: ModType::Insert,
            number_of_records_in_transaction: 1,
            transaction_tag: String::new(),
            shard: SHARD.into(),
        };
        encoder.push(&record, 0).expect("encode");
    }
    encoder.finish()
}

/// A connection through the unix socket (secure transport as far as the server is concerned).
async fn socket_conn(server: &CustomMariaDb, db: Option<&str>) -> Conn {
    let opts = OptsBuilder::default()
        .socket(Some(server.socket_path().display().to_string()))
        .user(Some("root"))
        .db_name(db);
    Conn::new(opts).await.expect("connect through the socket")
}

async fn rows(conn: &mut Conn) -> u64 {
    let n: Option<u64> = conn
        .query_first("SELECT COUNT(*) FROM app.users")
        .await
        .expect("count");
    n.unwrap_or_default()
}

struct Run {
    code: Option<i32>,
    log: String,
}

/// Runs the writer with `writer_tls` added to the `[writer]` section and returns its exit code
/// and log; fails the test if it runs longer than [`RUN_DEADLINE`].
async fn run_writer(dir: &Path, name: &str, writer_tls: &str) -> Run {
    let config = dir.join(format!("{name}.toml"));
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
poll_interval = "200ms"
{writer_tls}
"#,
            dir = dir.display()
        ),
    )
    .expect("config");
    let log_path = dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).expect("log file");
    let until = window(WINDOWS - 1).end().to_rfc3339();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_revrepl-writer"))
        .arg("--config")
        .arg(&config)
        .args(["--mode", "regular", "--until", &until])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn revrepl-writer");
    let status = tokio::time::timeout(RUN_DEADLINE, child.wait()).await;
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    match status {
        Ok(status) => Run {
            code: status.expect("wait for the writer").code(),
            log,
        },
        Err(_) => {
            let _ = child.kill().await;
            panic!("{name}: the writer still ran after {RUN_DEADLINE:?} (retrying forever?)\n{log}")
        }
    }
}

/// The metadata (run, windows with data) and window files, as the reader leaves them.
async fn prepare_run(dir: &Path) -> (SqliteMetadataStore, RunId, ShardId) {
    let run_id = RunId::new(RUN).expect("run id");
    let start = Timestamp::new(START, 0).expect("ts");
    let shard = ShardId::new(SHARD).expect("shard id");
    let metadata = recorded_run(
        &dir.join("meta.db"),
        &run_id,
        start,
        window_duration(),
        std::slice::from_ref(&shard),
    )
    .await;
    let buffer = LocalDirectory::new(dir.join("buffer"));
    let mut seen = Vec::new();
    for w in 0..WINDOWS {
        let path = WindowFileName::new(Destination::Shard(shard.clone()), window(w)).path();
        buffer
            .put_if_absent(&path, window_file(w))
            .await
            .expect("put");
        seen.push((shard.clone(), window(w).end()));
    }
    let created =
        CreatedWindows::new(window(WINDOWS - 1).end(), vec![shard.clone()], seen).expect("windows");
    metadata
        .record_windows(&run_id, &created)
        .await
        .expect("record windows");
    (metadata, run_id, shard)
}

#[tokio::test]
async fn writer_applies_over_verified_tls_and_refuses_an_unknown_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = dir.path().join("pki");
    std::fs::create_dir(&pki).expect("pki dir");
    let ca = make_ca(&pki, "ca");
    let other_ca = make_ca(&pki, "other-ca");
    let (cert, key) = make_server_cert(&pki, "ca");
    let server = CustomMariaDb::start(&[
        format!("--ssl-ca={}", ca.display()),
        format!("--ssl-cert={}", cert.display()),
        format!("--ssl-key={}", key.display()),
        "--require-secure-transport=ON".to_string(),
    ])
    .expect("mariadb starts with TLS");

    let mut admin = socket_conn(&server, None).await;
    let have_ssl: Option<(String, String)> = admin
        .query_first("SHOW GLOBAL VARIABLES LIKE 'have_ssl'")
        .await
        .expect("have_ssl");
    assert_eq!(
        have_ssl.map(|(_, v)| v).as_deref(),
        Some("YES"),
        "the server has TLS on\n{}",
        server.log_tail()
    );
    admin
        .query_drop("CREATE DATABASE app")
        .await
        .expect("database");
    admin
        .query_drop("CREATE TABLE app.users (id BIGINT PRIMARY KEY, name VARCHAR(64))")
        .await
        .expect("table");

    // Shards file, metadata (run, windows with data) and window files, as the reader leaves them.
    std::fs::write(
        dir.path().join("shards.json"),
        json!([{"logicalShardId": SHARD, "host": "127.0.0.1", "port": server.port(),
                "user": "root", "password": "", "dbName": "app"}])
        .to_string(),
    )
    .expect("shards file");
    let (metadata, run_id, shard) = prepare_run(dir.path()).await;

    // 1. A CA that did not sign the server's certificate: a definite, fatal error at once.
    let ca_path = |path: &Path| format!("tls_ca_file = \"{}\"", path.display());
    let wrong = run_writer(dir.path(), "wrong-ca", &ca_path(&other_ca)).await;
    assert_eq!(
        wrong.code,
        Some(3),
        "a shard that cannot connect fails the run\n{}",
        wrong.log
    );
    assert!(
        wrong.log.contains("shard s0")
            && wrong.log.contains("connecting failed")
            && wrong.log.contains("TLS")
            && wrong.log.contains("UnknownIssuer"),
        "the error says the certificate is not trusted\n{}",
        wrong.log
    );
    assert!(
        !wrong.log.contains("retrying"),
        "a certificate error is not retried\n{}",
        wrong.log
    );
    assert_eq!(rows(&mut admin).await, 0, "nothing applied");

    // 2. No TLS: the server refuses plain connections (MariaDB answers `require_secure_transport`
    // with "access denied", error 1045), so run 3 below must use TLS.
    let plain = run_writer(dir.path(), "plain", "").await;
    assert_eq!(plain.code, Some(3), "{}", plain.log);
    assert!(
        plain.log.contains("connecting failed") && plain.log.contains("MySQL error 1045"),
        "the server refused the plain connection\n{}",
        plain.log
    );
    assert_eq!(rows(&mut admin).await, 0, "nothing applied");

    // 3. The server's CA: every window is applied over a verified TLS connection.
    let ok = run_writer(dir.path(), "right-ca", &ca_path(&ca)).await;
    assert_eq!(ok.code, Some(0), "the writer succeeds over TLS\n{}", ok.log);
    assert_eq!(
        rows(&mut admin).await,
        u64::try_from(WINDOWS * ROWS_PER_WINDOW).expect("small")
    );
    let names: Vec<(i64, String)> = admin
        .query("SELECT id, name FROM app.users ORDER BY id")
        .await
        .expect("rows");
    assert!(
        names.iter().all(|(id, name)| *name == format!("user {id}")),
        "{names:?}"
    );
    let progress = metadata
        .process_progress(&run_id, &shard)
        .await
        .expect("progress")
        .expect("a progress row");
    assert_eq!(progress.status, ProcessStatus::Success);
    assert_eq!(progress.file_start_interval, window(WINDOWS - 1).start());
    let accepts: Option<(String, u64)> = admin
        .query_first("SHOW GLOBAL STATUS LIKE 'Ssl_finished_accepts'")
        .await
        .expect("ssl status");
    assert!(
        accepts.is_some_and(|(_, n)| n > 0),
        "the server accepted TLS connections"
    );
    admin.disconnect().await.expect("disconnect");
}

#[tokio::test]
async fn writer_presents_a_client_certificate_and_a_shard_may_bring_its_own_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = dir.path().join("pki");
    std::fs::create_dir(&pki).expect("pki dir");
    let ca = make_ca(&pki, "ca");
    let other_ca = make_ca(&pki, "other-ca");
    let (cert, key) = make_server_cert(&pki, "ca");
    let (client_cert, client_key) = make_client_cert(&pki, "ca", "client");
    let server = CustomMariaDb::start(&[
        format!("--ssl-ca={}", ca.display()),
        format!("--ssl-cert={}", cert.display()),
        format!("--ssl-key={}", key.display()),
    ])
    .expect("mariadb starts with TLS");
    let mut admin = socket_conn(&server, None).await;
    for statement in [
        "CREATE DATABASE app",
        "CREATE TABLE app.users (id BIGINT PRIMARY KEY, name VARCHAR(64))",
        "CREATE USER 'mtls'@'127.0.0.1' REQUIRE X509",
        "GRANT ALL ON app.* TO 'mtls'@'127.0.0.1'",
    ] {
        admin.query_drop(statement).await.expect(statement);
    }
    let (metadata, run_id, shard) = prepare_run(dir.path()).await;
    let shards_file = |properties: Option<String>| {
        let mut entry = json!({"logicalShardId": SHARD, "host": "127.0.0.1",
            "port": server.port(), "user": "mtls", "password": "", "dbName": "app"});
        if let Some(properties) = properties {
            entry["connectionProperties"] = json!(properties);
        }
        std::fs::write(dir.path().join("shards.json"), json!([entry]).to_string())
            .expect("shards file");
    };
    let path = |p: &Path| p.display().to_string();

    // 1. The shard's own CA, no client certificate: the server refuses the user.
    shards_file(Some(format!("sslCa={}", path(&ca))));
    let refused = run_writer(dir.path(), "no-client-cert", "").await;
    assert_eq!(refused.code, Some(3), "{}", refused.log);
    assert!(
        refused.log.contains("connecting failed") && refused.log.contains("MySQL error 1045"),
        "the server wants a client certificate\n{}",
        refused.log
    );
    assert_eq!(rows(&mut admin).await, 0, "nothing applied");

    // 2. A client certificate file that does not exist: exit 2 before connecting, naming the
    // shard, the property and the path.
    let missing = pki.join("missing-client.pem");
    shards_file(Some(format!(
        "sslCa={}\nsslCert={}\nsslKey={}",
        path(&ca),
        path(&missing),
        path(&client_key)
    )));
    let bad = run_writer(dir.path(), "missing-cert", "").await;
    assert_eq!(bad.code, Some(2), "{}", bad.log);
    assert!(
        bad.log.contains("\"s0\"")
            && bad.log.contains("property sslCert")
            && bad.log.contains(&path(&missing)),
        "the error names the shard and the file\n{}",
        bad.log
    );

    // 3. The configuration's CA and client certificate: every window is applied.
    shards_file(None);
    let global = run_writer(
        dir.path(),
        "configured-client-cert",
        &format!(
            "tls_ca_file = \"{}\"\ntls_client_cert_file = \"{}\"\ntls_client_key_file = \"{}\"",
            path(&ca),
            path(&client_cert),
            path(&client_key)
        ),
    )
    .await;
    assert_eq!(global.code, Some(0), "mutual TLS works\n{}", global.log);
    assert_eq!(
        rows(&mut admin).await,
        u64::try_from(WINDOWS * ROWS_PER_WINDOW).expect("small")
    );
    let progress = metadata
        .process_progress(&run_id, &shard)
        .await
        .expect("progress")
        .expect("a progress row");
    assert_eq!(progress.status, ProcessStatus::Success);

    // 4. The shard's own CA and certificate win over a configured CA that did not sign the
    // server's certificate (which alone fails, as the other test shows).
    shards_file(Some(format!(
        "sslCa={}\nsslCert={}\nsslKey={}",
        path(&ca),
        path(&client_cert),
        path(&client_key)
    )));
    let own = run_writer(
        dir.path(),
        "shard-own-ca",
        &format!("tls_ca_file = \"{}\"", path(&other_ca)),
    )
    .await;
    assert_eq!(own.code, Some(0), "the shard's CA is used\n{}", own.log);
    let x509_users: Option<u64> = admin
        .query_first("SHOW GLOBAL STATUS LIKE 'Ssl_accepts'")
        .await
        .expect("status")
        .map(|(_, n): (String, u64)| n);
    assert!(
        x509_users.is_some_and(|n| n >= 3),
        "TLS connections were made"
    );
    admin.disconnect().await.expect("disconnect");
}
