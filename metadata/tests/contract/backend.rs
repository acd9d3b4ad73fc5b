//! The two stores under test, each with what the suite needs to break it on purpose.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use revrepl_metadata::{
    MetadataError, MetadataStore, SpannerMetadataStore, SpannerOptions, SqliteMetadataStore,
    SqliteOptions,
};
use revrepl_record::Backoff;
use revrepl_test_services::{EmulatorOptions, SpannerEmulator};

/// A store implementation with a fresh, empty location of its own.
pub trait Backend: Sized + Send + Sync {
    /// A fresh location (a new emulator and database, or a new temp file).
    async fn start() -> Self;

    /// A new store instance (its own client or connection) on the location; tables not created.
    async fn open_with(
        &self,
        suffix: Option<&str>,
    ) -> Result<Arc<dyn MetadataStore>, MetadataError>;

    /// Makes every later insert of a `data_seen` row (no suffix) for `shard` fail.
    async fn poison_data_seen(&self, shard: &str);

    /// Creates `shard_file_create_progress` (no suffix) with a wrong column.
    async fn create_malformed_create_progress(&self);

    /// Drops revrepl's own `shard_errors` table (no suffix), leaving the reference's four
    /// tables: what a database the reference (or an older revrepl) created looks like.
    async fn drop_shard_errors(&self);

    /// Drops one of revrepl's own tables (no suffix), such as `leases`.
    async fn drop_table(&self, table: &str);

    /// The error of a call on a store that cannot be reached.
    async fn unreachable_error(&self) -> MetadataError;

    /// A new store instance without suffix.
    async fn open(&self) -> Arc<dyn MetadataStore> {
        self.open_with(None).await.expect("the store opens")
    }
}

/// Few, quick retries, so that failing calls fail fast.
fn quick_retry() -> Backoff {
    Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        multiplier: 2,
        max_attempts: Some(3),
    }
}

/// The SQLite store on a file in a temp directory.
pub struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    fn path(&self) -> PathBuf {
        self.dir.path().join("metadata.db")
    }
}

impl Backend for Sqlite {
    async fn start() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temp dir for the SQLite file"),
        }
    }

    async fn open_with(
        &self,
        suffix: Option<&str>,
    ) -> Result<Arc<dyn MetadataStore>, MetadataError> {
        let mut options = SqliteOptions::default();
        if let Some(suffix) = suffix {
            options = options.with_table_suffix(suffix);
        }
        let store = SqliteMetadataStore::open(self.path(), options).await?;
        Ok(Arc::new(store))
    }

    async fn poison_data_seen(&self, shard: &str) {
        let connection = rusqlite::Connection::open(self.path()).expect("open the SQLite file");
        connection
            .execute_batch(&format!(
                "CREATE TRIGGER poison BEFORE INSERT ON data_seen WHEN NEW.shard = '{shard}'
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
            ))
            .expect("create the failing trigger");
    }

    async fn create_malformed_create_progress(&self) {
        let connection = rusqlite::Connection::open(self.path()).expect("open the SQLite file");
        connection
            .execute_batch(
                "CREATE TABLE shard_file_create_progress (run_id TEXT, shard TEXT, upto TEXT)",
            )
            .expect("create the malformed table");
    }

    async fn drop_shard_errors(&self) {
        let connection = rusqlite::Connection::open(self.path()).expect("open the SQLite file");
        connection
            .execute_batch("DROP TABLE shard_errors")
            .expect("drop the table");
    }

    async fn drop_table(&self, table: &str) {
        let connection = rusqlite::Connection::open(self.path()).expect("open the SQLite file");
        connection
            .execute_batch(&format!("DROP TABLE {table}"))
            .expect("drop the table");
    }

    async fn unreachable_error(&self) -> MetadataError {
        let store = SqliteMetadataStore::open(
            self.path(),
            SqliteOptions::default()
                .with_busy_timeout(Duration::from_millis(50))
                .with_retry(quick_retry()),
        )
        .await
        .expect("the store opens");
        store
            .ensure_tables(revrepl_metadata::MissingTables::Create)
            .await
            .expect("tables are created");
        // Another process holds the write lock and does not let go.
        let holder = rusqlite::Connection::open(self.path()).expect("open the SQLite file");
        holder
            .execute_batch("BEGIN EXCLUSIVE")
            .expect("take the write lock");
        let run = revrepl_metadata::RunId::new("r").expect("valid run id");
        let progress = revrepl_metadata::ProcessProgress {
            shard: revrepl_record::ShardId::new("s").expect("valid shard"),
            status: revrepl_metadata::ProcessStatus::Success,
            file_start_interval: revrepl_record::Timestamp::EPOCH,
        };
        let error = store
            .set_process_progress(&run, &progress)
            .await
            .expect_err("the file is locked");
        holder.execute_batch("ROLLBACK").expect("release the lock");
        error
    }
}

const PROJECT: &str = "test-project";
const INSTANCE: &str = "test-instance";
const DATABASE: &str = "metadata";

/// The Spanner store on a database of its own emulator.
pub struct Spanner {
    emulator: SpannerEmulator,
}

impl Spanner {
    /// An emulator that aborts transactions at random.
    pub async fn start_with_fault_injection() -> Self {
        Self::with_options(EmulatorOptions {
            fault_injection: true,
            ..EmulatorOptions::default()
        })
        .await
    }

    async fn with_options(options: EmulatorOptions) -> Self {
        let emulator = SpannerEmulator::start_with(options).expect("the Spanner emulator starts");
        emulator
            .create_instance(PROJECT, INSTANCE)
            .await
            .expect("the instance is created");
        emulator
            .create_database(PROJECT, INSTANCE, DATABASE, &[])
            .await
            .expect("the database is created");
        Self { emulator }
    }

    fn database() -> String {
        format!("projects/{PROJECT}/instances/{INSTANCE}/databases/{DATABASE}")
    }

    async fn update_ddl(&self, statement: &str) {
        self.emulator
            .update_ddl(PROJECT, INSTANCE, DATABASE, &[statement])
            .await
            .expect("the DDL applies");
    }
}

impl Backend for Spanner {
    async fn start() -> Self {
        Self::with_options(EmulatorOptions::default()).await
    }

    async fn open_with(
        &self,
        suffix: Option<&str>,
    ) -> Result<Arc<dyn MetadataStore>, MetadataError> {
        let mut options = SpannerOptions::new(Self::database())
            .with_endpoint(self.emulator.grpc_endpoint())
            .with_admin_endpoint(self.emulator.rest_endpoint());
        if let Some(suffix) = suffix {
            options = options.with_table_suffix(suffix);
        }
        let store = SpannerMetadataStore::connect(options).await?;
        Ok(Arc::new(store))
    }

    async fn poison_data_seen(&self, shard: &str) {
        self.update_ddl(&format!(
            "ALTER TABLE data_seen ADD CONSTRAINT poison CHECK (shard != '{shard}')"
        ))
        .await;
    }

    async fn create_malformed_create_progress(&self) {
        self.update_ddl(
            "CREATE TABLE shard_file_create_progress (run_id STRING(MAX) NOT NULL, \
             shard STRING(MAX) NOT NULL, created_upto STRING(MAX)) PRIMARY KEY (run_id, shard)",
        )
        .await;
    }

    async fn drop_shard_errors(&self) {
        self.update_ddl("DROP TABLE shard_errors").await;
    }

    async fn drop_table(&self, table: &str) {
        self.update_ddl(&format!("DROP TABLE {table}")).await;
    }

    async fn unreachable_error(&self) -> MetadataError {
        // A port nobody listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let options = SpannerOptions::new(Self::database())
            .with_endpoint(format!("http://127.0.0.1:{port}"))
            .with_admin_endpoint(format!("http://127.0.0.1:{port}"))
            .with_retry(quick_retry())
            .with_attempt_timeout(Duration::from_secs(2));
        match SpannerMetadataStore::connect(options).await {
            Err(error) => error,
            Ok(store) => store
                .ensure_tables(revrepl_metadata::MissingTables::Create)
                .await
                .expect_err("nothing listens on the port"),
        }
    }
}
