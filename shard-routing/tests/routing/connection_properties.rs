//! Issue 12.7: a shards-file entry's `connectionProperties` are applied to real MariaDB
//! connections (session variables, socket timeout, TLS mode), and unknown ones are refused
//! when the shards file is loaded.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use revrepl_shard_routing::ShardsFile;
use revrepl_test_services::MariaDb;
use serde_json::json;

fn shards_file(port: u16, properties: &str) -> Result<ShardsFile, String> {
    let text = json!([{"logicalShardId": "s1", "host": "127.0.0.1", "port": port,
                       "user": "root", "password": "", "dbName": "mysql",
                       "connectionProperties": properties}])
    .to_string();
    ShardsFile::from_json("shards.json", &text).map_err(|e| e.to_string())
}

fn options(file: &ShardsFile) -> OptsBuilder {
    let shard = &file.shards()[0];
    let builder = OptsBuilder::default()
        .ip_or_hostname(shard.host.clone())
        .tcp_port(shard.port)
        .user(Some(shard.user.clone()))
        .db_name(Some(shard.db_name.clone()));
    shard.connection.apply(builder, None)
}

#[tokio::test]
async fn connection_properties_reach_the_server() {
    let server = MariaDb::start().expect("mariadb starts");
    let file = shards_file(
        server.port(),
        "useSSL=false\nsocketTimeout=90000\n\
         sessionVariables=innodb_lock_wait_timeout=17,sql_mode='STRICT_ALL_TABLES,NO_ZERO_DATE'",
    )
    .expect("valid properties");
    let mut conn = Conn::new(options(&file)).await.expect("connects");
    let row: Option<(u64, u64, u64, String)> = conn
        .query_first(
            "SELECT @@SESSION.net_read_timeout, @@SESSION.net_write_timeout, \
             @@SESSION.innodb_lock_wait_timeout, @@SESSION.sql_mode",
        )
        .await
        .expect("query");
    assert_eq!(
        row,
        Some((90, 90, 17, "STRICT_ALL_TABLES,NO_ZERO_DATE".to_string()))
    );
    conn.disconnect().await.expect("disconnect");

    // The test server speaks no TLS: a shard that requires it must not connect in plain text.
    let tls = shards_file(server.port(), "useSSL=true").expect("valid properties");
    assert!(
        Conn::new(options(&tls)).await.is_err(),
        "useSSL=true is applied (the server has no TLS)"
    );

    let unknown = shards_file(server.port(), "useSSL=false\nfancyOption=1").expect_err("refused");
    assert!(
        unknown.contains("entry [0] (logicalShardId \"s1\"), field \"connectionProperties\"")
            && unknown.contains("\"fancyOption\" is not supported"),
        "{unknown}"
    );
}
