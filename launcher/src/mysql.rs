//! The MySQL shards as the launcher reaches them: connection options from the shards file,
//! and the checks `revrepl init` makes (reachable, writable, privileged).

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, SslOpts};
use revrepl_config::Config;
use revrepl_shard_routing::{
    GoogleSecretManager, NoSecretManager, PasswordSource, RoutingError, Shard, ShardsFile,
};

/// The privileges the writer needs on its database: it reads the schema and its checkpoint
/// (`SELECT`), applies changes (`INSERT`, `UPDATE`, `DELETE`) and creates its checkpoint
/// table (`CREATE`).
pub const WRITER_PRIVILEGES: [&str; 5] = ["SELECT", "INSERT", "UPDATE", "DELETE", "CREATE"];

/// TLS to the shards as the writer uses it: verified against `writer.tls_ca_file` when set,
/// against the system roots when `writer.tls = true`, none otherwise; with the client
/// certificate of `writer.tls_client_cert_file` / `writer.tls_client_key_file` (mutual TLS).
pub fn tls_options(config: &Config) -> Result<Option<SslOpts>, String> {
    let writer = &config.writer;
    let identity = match (&writer.tls_client_cert_file, &writer.tls_client_key_file) {
        (Some(cert), Some(key)) => Some(revrepl_shard_routing::connection::client_identity(
            ("writer.tls_client_cert_file", cert),
            ("writer.tls_client_key_file", key),
        )?),
        (None, None) => None,
        (Some(_), None) => {
            return Err(
                "writer.tls_client_key_file: missing: writer.tls_client_cert_file \
                        needs its private key"
                    .into(),
            );
        }
        (None, Some(_)) => {
            return Err(
                "writer.tls_client_cert_file: missing: writer.tls_client_key_file \
                        needs its certificate"
                    .into(),
            );
        }
    };
    let tls = match &writer.tls_ca_file {
        Some(path) if !path.is_file() => {
            return Err(format!(
                "writer.tls_ca_file: {} does not exist",
                path.display()
            ));
        }
        Some(path) => Some(SslOpts::default().with_root_certs(vec![path.clone().into()])),
        None if writer.tls || identity.is_some() => Some(SslOpts::default()),
        None => None,
    };
    Ok(tls.map(|opts| opts.with_client_identity(identity)))
}

/// Connection options for a shard: host, port, user, password, database and TLS, as the
/// writer connects.
pub fn shard_opts(shard: &Shard, tls: Option<&SslOpts>) -> Opts {
    let builder = OptsBuilder::default()
        .ip_or_hostname(shard.config.host.clone())
        .tcp_port(shard.config.port)
        .user(Some(shard.config.user.clone()))
        .pass(Some(shard.password.expose().to_string()))
        .db_name(Some(shard.config.db_name.clone()));
    // The shard's `connectionProperties` (TLS mode, keep-alive, session variables).
    shard.config.connection.apply(builder, tls.cloned()).into()
}

/// Every shard of `file` with its password, from Google Secret Manager when an entry names a
/// `secretManagerUri` (application default credentials).
pub async fn resolve_shards(file: &ShardsFile) -> Result<Vec<Shard>, RoutingError> {
    let needs_secret_manager = file
        .shards()
        .iter()
        .any(|s| matches!(s.password, PasswordSource::SecretManager(_)));
    if needs_secret_manager {
        file.resolve(&GoogleSecretManager::connect().await?).await
    } else {
        file.resolve(&NoSecretManager).await
    }
}

/// `user@host:port/db`, for messages (never the password).
pub fn shard_address(shard: &Shard) -> String {
    let config = &shard.config;
    format!(
        "{}@{}:{}/{}",
        config.user, config.host, config.port, config.db_name
    )
}

/// Connects to `shard` within `timeout`; the error says what to fix.
pub async fn connect(
    shard: &Shard,
    tls: Option<&SslOpts>,
    timeout: Duration,
) -> Result<Conn, String> {
    let address = shard_address(shard);
    // The shard's `connectTimeout` shortens the deadline.
    let timeout = shard
        .config
        .connection
        .connect_timeout
        .map_or(timeout, |own| own.min(timeout));
    match tokio::time::timeout(timeout, Conn::new(shard_opts(shard, tls))).await {
        Err(_) => Err(format!(
            "no answer from {address} within {timeout:?}: check host and port in the shards \
             file, that MySQL runs there and that the network allows the connection"
        )),
        Ok(Err(error)) => Err(connect_problem(&address, &shard.config.db_name, &error)),
        Ok(Ok(conn)) => Ok(conn),
    }
}

fn connect_problem(address: &str, database: &str, error: &mysql_async::Error) -> String {
    match error {
        mysql_async::Error::Server(server) => match server.code {
            1044 | 1045 => format!(
                "{address}: access denied ({}): check user and the password source \
                 (password, passwordFile, passwordEnv or secretManagerUri) in the shards file",
                server.message
            ),
            1049 => format!(
                "{address}: database `{database}` does not exist: create it on the shard (the \
                 writer does not create databases) or fix dbName in the shards file"
            ),
            _ => format!(
                "{address}: the server refused the connection: {}",
                server.message
            ),
        },
        other => format!(
            "cannot connect to {address}: {other}; check host and port in the shards file and \
             that MySQL runs there"
        ),
    }
}

/// What `init` learned about a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardCheck {
    /// The server's version string.
    pub version: String,
    /// Problems, each with its fix; empty when the shard is ready.
    pub problems: Vec<String>,
}

/// Checks that the shard accepts writes (`@@read_only = 0`) and that the user holds
/// [`WRITER_PRIVILEGES`] on the database, globally or on the database. Privileges granted
/// through roles are not visible to this check.
pub async fn check_shard(
    shard: &Shard,
    tls: Option<&SslOpts>,
    timeout: Duration,
) -> Result<ShardCheck, String> {
    let mut conn = connect(shard, tls, timeout).await?;
    let address = shard_address(shard);
    let checked = tokio::time::timeout(timeout, inspect(&mut conn, shard))
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
        .map_err(|e| format!("{address}: {e}"));
    let _ = conn.disconnect().await;
    checked
}

async fn inspect(conn: &mut Conn, shard: &Shard) -> Result<ShardCheck, String> {
    let fail = |what: &str, e: mysql_async::Error| format!("{what} failed: {e}");
    let version: Option<String> = conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(|e| fail("SELECT VERSION()", e))?;
    let read_only: Option<i64> = conn
        .query_first("SELECT @@GLOBAL.read_only")
        .await
        .map_err(|e| fail("SELECT @@GLOBAL.read_only", e))?;
    let mut problems = Vec::new();
    if read_only.unwrap_or(0) != 0 {
        problems.push(
            "the server is read-only (@@read_only = 1): point the shards file at the primary, \
             or run SET GLOBAL read_only = 0 on it"
                .to_string(),
        );
    }
    let current: Option<String> = conn
        .query_first("SELECT CURRENT_USER()")
        .await
        .map_err(|e| fail("SELECT CURRENT_USER()", e))?;
    let current = current.unwrap_or_default();
    let (user, host) = current.rsplit_once('@').unwrap_or((current.as_str(), "%"));
    let grantee = format!("'{user}'@'{host}'");
    let granted: Vec<String> = conn
        .exec(
            "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = ? \
             UNION SELECT PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES \
             WHERE GRANTEE = ? AND ? LIKE TABLE_SCHEMA",
            (&grantee, &grantee, &shard.config.db_name),
        )
        .await
        .map_err(|e| fail("reading privileges from information_schema", e))?;
    let missing = missing_privileges(&granted);
    if !missing.is_empty() {
        problems.push(format!(
            "user {grantee} lacks {} on `{db}`: GRANT {} ON `{db}`.* TO {grantee} (privileges \
             granted through roles are not seen by this check)",
            missing.join(", "),
            WRITER_PRIVILEGES.join(", "),
            db = shard.config.db_name,
        ));
    }
    Ok(ShardCheck {
        version: version.unwrap_or_default(),
        problems,
    })
}

/// The [`WRITER_PRIVILEGES`] not in `granted` (`ALL PRIVILEGES` grants them all).
pub fn missing_privileges(granted: &[String]) -> Vec<&'static str> {
    let has = |p: &str| granted.iter().any(|g| g.trim().eq_ignore_ascii_case(p));
    if has("ALL PRIVILEGES") || has("ALL") {
        return Vec::new();
    }
    WRITER_PRIVILEGES.into_iter().filter(|p| !has(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_privileges_are_listed_in_order() {
        let granted = vec!["SELECT".to_string(), "update".to_string()];
        assert_eq!(missing_privileges(&granted), ["INSERT", "DELETE", "CREATE"]);
        assert!(missing_privileges(&["ALL PRIVILEGES".to_string()]).is_empty());
    }
}
