//! The source Spanner database as the launcher uses it: the data client (through the
//! reader's connection code), the database admin client for DDL, and the change stream's
//! existence and creation.

use std::time::Duration;

use google_cloud_gax::error::rpc::Code;
use google_cloud_lro::Poller;
use google_cloud_spanner::client::DatabaseClient;
use google_cloud_spanner::result::Row;
use google_cloud_spanner::statement::Statement;
use google_cloud_spanner::types;
use google_cloud_spanner_admin_database_v1::client::DatabaseAdmin;
use revrepl_config::Config;
use revrepl_reader::spanner::{SpannerDatabase, check_stream_name, parse_retention};

use crate::error::LauncherError;

/// A connected source database.
#[derive(Debug, Clone)]
pub struct SourceDatabase {
    /// `projects/<p>/instances/<i>/databases/<d>`.
    pub name: String,
    /// The data client.
    pub client: DatabaseClient,
    /// The priority of reads of table data (`spanner.priority`).
    pub priority: revrepl_config::SpannerPriority,
}

/// A statement reading table data with `priority`.
fn data_statement(priority: revrepl_config::SpannerPriority, sql: impl Into<String>) -> Statement {
    Statement::builder(sql)
        .set_priority(revrepl_reader::spanner::request_priority(priority))
        .build()
}

impl SourceDatabase {
    /// Connects to `spanner.database` (at `spanner.endpoint` when configured).
    pub async fn connect(config: &Config, timeout: Duration) -> Result<Self, LauncherError> {
        let database = SpannerDatabase {
            database: config.spanner.database.clone(),
            endpoint: config.spanner.endpoint.clone(),
        };
        let client = tokio::time::timeout(timeout, database.connect())
            .await
            .map_err(|_| LauncherError::Spanner {
                location: database.database.clone(),
                operation: "connect".into(),
                message: format!("no answer within {timeout:?}"),
            })??;
        Ok(Self {
            name: database.database,
            client,
            priority: config.spanner.priority,
        })
    }

    /// A statement reading table data, with the configured priority (`spanner.priority`).
    pub fn data_statement(&self, sql: impl Into<String>) -> Statement {
        data_statement(self.priority, sql)
    }

    /// Runs a read-only query (single use, strong) and collects its rows.
    pub async fn query(
        &self,
        operation: &str,
        statement: Statement,
    ) -> Result<Vec<Row>, LauncherError> {
        let mut result = self
            .client
            .single_use()
            .build()
            .execute_query(statement)
            .await
            .map_err(|e| self.error(operation, &e))?;
        let mut rows = Vec::new();
        while let Some(row) = result.next().await {
            rows.push(row.map_err(|e| self.error(operation, &e))?);
        }
        Ok(rows)
    }

    /// An error of `operation` on this database.
    pub fn error(&self, operation: &str, error: &dyn std::fmt::Display) -> LauncherError {
        LauncherError::Spanner {
            location: self.name.clone(),
            operation: operation.to_string(),
            message: error.to_string(),
        }
    }

    /// Whether the change stream `stream` exists.
    pub async fn stream_exists(&self, stream: &str) -> Result<bool, LauncherError> {
        let statement = Statement::builder(
            "SELECT change_stream_name FROM information_schema.change_streams \
             WHERE change_stream_name = @name",
        )
        .add_typed_param("name", stream.to_string(), types::string())
        .build();
        Ok(!self
            .query("look up the change stream", statement)
            .await?
            .is_empty())
    }

    /// Whether the change stream `stream` watches every table (`FOR ALL`), if Spanner says.
    pub async fn stream_watches_all(&self, stream: &str) -> Option<bool> {
        let statement = Statement::builder(
            "SELECT `all` FROM information_schema.change_streams WHERE change_stream_name = @name",
        )
        .add_typed_param("name", stream.to_string(), types::string())
        .build();
        let rows = self.query("read the change stream", statement).await.ok()?;
        rows.first()?.get::<Option<bool>>(0usize).ok().flatten()
    }
}

/// The `CREATE CHANGE STREAM` statement `init` runs.
pub fn create_stream_ddl(
    stream: &str,
    capture: &str,
    retention: &str,
) -> Result<String, LauncherError> {
    check_stream_name(stream)?;
    if parse_retention(retention).is_none() {
        return Err(LauncherError::Usage(format!(
            "--retention {retention:?} is not a retention period like 7d, 36h or 1440m"
        )));
    }
    Ok(format!(
        "CREATE CHANGE STREAM {stream} FOR ALL OPTIONS (value_capture_type = '{capture}', \
         retention_period = '{retention}')"
    ))
}

/// The database admin client for the source database: at `spanner.admin_endpoint` (anonymous
/// for `http://` endpoints, such as the emulator's REST gateway), otherwise Google's endpoint
/// with application default credentials.
pub async fn admin_client(config: &Config) -> Result<DatabaseAdmin, LauncherError> {
    admin_client_at(
        config.spanner.admin_endpoint.as_deref(),
        &config.spanner.database,
    )
    .await
}

/// The database admin client at `endpoint` (anonymous for `http://`), else Google's; `location`
/// names the database in errors.
pub async fn admin_client_at(
    endpoint: Option<&str>,
    location: &str,
) -> Result<DatabaseAdmin, LauncherError> {
    let built = match endpoint {
        Some(endpoint) => {
            let mut builder = DatabaseAdmin::builder().with_endpoint(endpoint);
            if endpoint.starts_with("http://") {
                builder = builder.with_credentials(
                    google_cloud_auth::credentials::anonymous::Builder::new().build(),
                );
            }
            builder.build().await
        }
        None => DatabaseAdmin::builder().build().await,
    };
    built.map_err(|e| LauncherError::Spanner {
        location: location.to_string(),
        operation: "create the database admin client".into(),
        message: e.to_string(),
    })
}

/// Creates `database` (`projects/<p>/instances/<i>/databases/<d>`, GoogleSQL dialect) unless it
/// exists; returns whether it was created.
pub async fn ensure_database(
    admin: &DatabaseAdmin,
    database: &str,
    timeout: Duration,
) -> Result<bool, LauncherError> {
    let failed = |operation: &str, message: String| LauncherError::Spanner {
        location: database.to_string(),
        operation: operation.to_string(),
        message,
    };
    let (parent, name) = database
        .rsplit_once("/databases/")
        .filter(|(parent, name)| parent.contains("/instances/") && !name.is_empty())
        .ok_or_else(|| {
            LauncherError::Usage(format!(
                "{database:?} is not a database name like projects/p/instances/i/databases/d"
            ))
        })?;
    // Listing rather than getting: the emulator's REST gateway answers a get of a missing
    // database with an internal error instead of NOT_FOUND.
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_databases()
            .set_parent(parent)
            .set_page_token(page_token.clone())
            .send()
            .await
            .map_err(|e| failed("list the instance's databases", e.to_string()))?;
        if page.databases.iter().any(|d| d.name == database) {
            return Ok(false);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let poll = admin
        .create_database()
        .set_parent(parent)
        .set_create_statement(format!("CREATE DATABASE `{name}`"))
        .poller()
        .until_done();
    match tokio::time::timeout(timeout, poll).await {
        Ok(Ok(_)) => Ok(true),
        // Another process created it meanwhile.
        Ok(Err(error))
            if error
                .status()
                .is_some_and(|s| s.code == Code::AlreadyExists) =>
        {
            Ok(false)
        }
        Ok(Err(error)) => Err(failed("create the database", error.to_string())),
        Err(_) => Err(failed(
            "create the database",
            format!("not finished within {timeout:?}"),
        )),
    }
}

/// Applies `statements` to `database` and waits for the schema change, at most `timeout`.
pub async fn apply_ddl(
    admin: &DatabaseAdmin,
    database: &str,
    statements: Vec<String>,
    timeout: Duration,
) -> Result<(), LauncherError> {
    let poll = admin
        .update_database_ddl()
        .set_database(database.to_string())
        .set_statements(statements)
        .poller()
        .until_done();
    let failed = |message: String| LauncherError::Spanner {
        location: database.to_string(),
        operation: "apply DDL".into(),
        message,
    };
    match tokio::time::timeout(timeout, poll).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(failed(error.to_string())),
        Err(_) => Err(failed(format!(
            "the schema change did not finish within {timeout:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_of_table_data_carry_the_configured_priority() {
        let config: revrepl_config::Config = toml_config("low");
        let text = format!("{:?}", data_statement(config.spanner.priority, "SELECT 1"));
        assert!(text.contains("priority: Low"), "{text}");
        let config: revrepl_config::Config = toml_config("medium");
        let text = format!("{:?}", data_statement(config.spanner.priority, "SELECT 1"));
        assert!(text.contains("priority: Medium"), "{text}");
    }

    fn toml_config(priority: &str) -> revrepl_config::Config {
        let overrides: Vec<String> = [
            "run_id=r",
            "shards_file=s.json",
            "spanner.database=projects/p/instances/i/databases/d",
            "spanner.change_stream=c",
        ]
        .iter()
        .map(ToString::to_string)
        .chain([format!("spanner.priority={priority}")])
        .collect();
        revrepl_config::Config::load(None, &overrides).expect("parses")
    }

    #[test]
    fn the_stream_ddl_is_checked() {
        assert_eq!(
            create_stream_ddl("s", "NEW_ROW", "7d").expect("valid"),
            "CREATE CHANGE STREAM s FOR ALL OPTIONS (value_capture_type = 'NEW_ROW', \
             retention_period = '7d')"
        );
        assert!(create_stream_ddl("bad name", "NEW_ROW", "7d").is_err());
        assert!(create_stream_ddl("s", "NEW_ROW", "a week").is_err());
    }
}
