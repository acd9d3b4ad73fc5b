//! `revrepl init`: checks the configuration and every service the pipeline needs, creates
//! the change stream and the metadata tables when they are missing, and reports each check
//! with what to fix.
//!
//! Checks run in order and go on after a failure where they can, so that one run lists every
//! problem. Nothing is printed that could hold a password.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use revrepl_config::{Config, MetadataKind};
use revrepl_metadata::MissingTables;
use revrepl_reader::spanner::check_stream;
use revrepl_record::{BufferStore, PutOutcome};
use revrepl_shard_routing::{Session, Shard, ShardsFile, choose_router};

use crate::cli::InitArgs;
use crate::error::LauncherError;
use crate::mysql;
use crate::spanner::{
    SourceDatabase, admin_client, admin_client_at, apply_ddl, create_stream_ddl, ensure_database,
};
use crate::store;

/// The retention the reference's guide recommends; shorter ones get a warning.
const RECOMMENDED_RETENTION: Duration = Duration::from_secs(7 * 86_400);

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Ready.
    Ok,
    /// Works, but something deserves attention.
    Warn,
    /// Must be fixed.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// How it ended.
    pub verdict: Verdict,
    /// What was checked: `shards file`, `shard ls1`, `change stream s`...
    pub subject: String,
    /// What was found, or what to fix.
    pub detail: String,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        write!(f, "  {tag}  {}: {}", self.subject, self.detail)
    }
}

/// Every check `init` made.
#[derive(Debug, Default)]
pub struct InitReport {
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
}

impl InitReport {
    /// How many checks failed.
    pub fn failures(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.verdict == Verdict::Fail)
            .count()
    }
}

struct Reporter<'a> {
    report: InitReport,
    on_check: &'a mut dyn FnMut(&Check),
}

impl Reporter<'_> {
    fn add(&mut self, verdict: Verdict, subject: impl Into<String>, detail: impl Into<String>) {
        let check = Check {
            verdict,
            subject: subject.into(),
            detail: detail.into(),
        };
        (self.on_check)(&check);
        self.report.checks.push(check);
    }

    fn ok(&mut self, subject: impl Into<String>, detail: impl Into<String>) {
        self.add(Verdict::Ok, subject, detail);
    }

    fn warn(&mut self, subject: impl Into<String>, detail: impl Into<String>) {
        self.add(Verdict::Warn, subject, detail);
    }

    fn fail(&mut self, subject: impl Into<String>, detail: impl Into<String>) {
        self.add(Verdict::Fail, subject, detail);
    }
}

/// Runs every check, calling `on_check` as each one ends.
pub async fn init(
    config: &Config,
    args: &InitArgs,
    on_check: &mut dyn FnMut(&Check),
) -> InitReport {
    let mut out = Reporter {
        report: InitReport::default(),
        on_check,
    };
    let shards_file = check_shards_file(config, &mut out);
    let session = check_session(config, &mut out);
    check_schema_overrides(config, &mut out);
    if let Some(session) = &session {
        let spanner_tables = list_spanner_tables(config, args.timeout).await;
        let plugin = config.routing.plugin.is_some();
        for (verdict, subject, detail) in table_verdicts(session, spanner_tables.as_deref(), plugin)
        {
            out.add(verdict, subject, detail);
        }
    }
    if let Some(shards_file) = &shards_file {
        check_routing(config, shards_file, session.clone(), &mut out);
        let tls = match mysql::tls_options(config) {
            Ok(tls) => Some(tls),
            Err(problem) => {
                out.fail("MySQL TLS", problem);
                None
            }
        };
        if let (Some(shards), Some(tls)) = (resolve_passwords(shards_file, &mut out).await, tls) {
            for shard in &shards {
                check_mysql(shard, tls.as_ref(), args.timeout, &mut out).await;
            }
        }
    }
    check_buffer(config, args.timeout, &mut out).await;
    check_change_stream(config, args, &mut out).await;
    check_metadata(config, args, &mut out).await;
    out.report
}

fn check_shards_file(config: &Config, out: &mut Reporter<'_>) -> Option<ShardsFile> {
    let subject = format!("shards file {}", config.shards_file.display());
    match ShardsFile::load(&config.shards_file) {
        Ok(file) => {
            let ids: Vec<String> = file.shard_ids().map(ToString::to_string).collect();
            out.ok(
                subject,
                format!("{} shard(s): {}", ids.len(), ids.join(", ")),
            );
            Some(file)
        }
        Err(error) => {
            out.fail(
                subject,
                format!("{error} (fix the file or the shards_file key)"),
            );
            None
        }
    }
}

fn check_session(config: &Config, out: &mut Reporter<'_>) -> Option<Arc<Session>> {
    let path: &PathBuf = config.session_file.as_ref()?;
    let subject = format!("session file {}", path.display());
    match Session::load(path) {
        Ok(session) => {
            let tables = session.tables().count();
            let sharded = session
                .tables()
                .filter(|t| t.shard_id_column.is_some())
                .count();
            out.ok(
                subject,
                format!("{tables} table(s), {sharded} with a shard-id column"),
            );
            Some(Arc::new(session))
        }
        Err(error) => {
            out.fail(
                subject,
                format!("{error} (fix the file or the session_file key)"),
            );
            None
        }
    }
}

/// The schema overrides (`schema_overrides_file`, `table_overrides`, `column_overrides`), when
/// configured: readable, well formed, unambiguous.
fn check_schema_overrides(config: &Config, out: &mut Reporter<'_>) {
    let subject = match &config.schema_overrides_file {
        Some(path) => format!("schema overrides file {}", path.display()),
        None => "schema overrides (table_overrides, column_overrides)".to_string(),
    };
    match revrepl_writer::app::schema_overrides(config) {
        Ok(None) => {}
        Ok(Some(overrides)) => {
            let columns: usize = overrides.renamed_columns().values().map(|c| c.len()).sum();
            out.ok(
                subject,
                format!(
                    "{} table(s) and {columns} column(s) renamed; everything else keeps its name",
                    overrides.renamed_tables().len()
                ),
            );
        }
        Err(error) => out.fail(subject, format!("{error} ({})", error.fix())),
    }
}

fn check_routing(
    config: &Config,
    shards_file: &ShardsFile,
    session: Option<Arc<Session>>,
    out: &mut Reporter<'_>,
) {
    let plugin = config
        .routing
        .plugin
        .as_deref()
        .map(|path| (path, config.routing.plugin_params.as_str()));
    let how = match (&plugin, &session) {
        (Some((path, _)), _) => format!("plugin {} (loaded, init accepted)", path.display()),
        (None, Some(_)) => "by the session file's shard-id columns".to_string(),
        (None, None) => "every record to the only shard".to_string(),
    };
    if config.session_file.is_some() && session.is_none() && plugin.is_none() {
        // The session file already failed; routing by it cannot be checked.
        return;
    }
    match choose_router(shards_file, session, plugin) {
        Ok(_) => out.ok("routing", how),
        Err(error) => out.fail(
            "routing",
            format!("{error} (configure session_file or routing.plugin, or list a single shard)"),
        ),
    }
}

/// The Spanner database's table names, or `None` when it cannot be read (the change-stream
/// check reports why).
async fn list_spanner_tables(config: &Config, timeout: Duration) -> Option<Vec<String>> {
    let database = SourceDatabase::connect(config, timeout).await.ok()?;
    let tables = tokio::time::timeout(timeout, crate::validate::plan::spanner_tables(&database))
        .await
        .ok()?
        .ok()?;
    Some(tables.into_keys().collect())
}

/// For each table of `session` (and each table of `spanner_tables` the session does not
/// know): whether its changes will be replicated, skipped or refused, and why. `plugin`: a
/// router plugin decides the shards of the session's tables.
pub fn table_verdicts(
    session: &Session,
    spanner_tables: Option<&[String]>,
    plugin: bool,
) -> Vec<(Verdict, String, String)> {
    let mut verdicts = Vec::new();
    for table in session.tables() {
        let subject = format!("table {}", table.spanner_name);
        let (verdict, detail) = match table.source_name() {
            None => (
                Verdict::Warn,
                "skipped: it exists only in Spanner (no SrcSchema entry in the session file); \
                 its changes go to skip/ and are never applied"
                    .to_string(),
            ),
            Some(source) => match (&table.shard_id_column, plugin) {
                (_, true) => (
                    Verdict::Ok,
                    format!("replicated to MySQL table `{source}`, shard chosen by the plugin"),
                ),
                (Some(column), false) => (
                    Verdict::Ok,
                    format!("replicated to MySQL table `{source}`, shard from column {column}"),
                ),
                (None, false) => (
                    Verdict::Fail,
                    format!(
                        "refused: it has no ShardIdColumn in the session file, so the reader \
                         cannot route its changes and stops on the first one (set ShardIdColumn \
                         on SpSchema[{:?}], or configure routing.plugin)",
                        table.id
                    ),
                ),
            },
        };
        verdicts.push((verdict, subject, detail));
    }
    match spanner_tables {
        Some(names) => {
            for name in names.iter().filter(|name| session.table(name).is_none()) {
                verdicts.push((
                    Verdict::Warn,
                    format!("table {name}"),
                    "skipped: it is not in the session file; its changes go to skip/ and are \
                     never applied (add it with the Spanner Migration Tool to replicate it)"
                        .to_string(),
                ));
            }
        }
        None => verdicts.push((
            Verdict::Warn,
            "tables not in the session file".to_string(),
            "not listed: the Spanner database cannot be read (see the change stream check); \
             changes of such tables go to skip/"
                .to_string(),
        )),
    }
    verdicts
}

async fn resolve_passwords(shards_file: &ShardsFile, out: &mut Reporter<'_>) -> Option<Vec<Shard>> {
    match mysql::resolve_shards(shards_file).await {
        Ok(shards) => {
            out.ok("passwords", format!("read for {} shard(s)", shards.len()));
            Some(shards)
        }
        Err(error) => {
            out.fail("passwords", error.to_string());
            None
        }
    }
}

async fn check_mysql(
    shard: &Shard,
    tls: Option<&mysql_async::SslOpts>,
    timeout: Duration,
    out: &mut Reporter<'_>,
) {
    let subject = format!(
        "shard {} ({})",
        shard.config.logical_shard_id,
        mysql::shard_address(shard)
    );
    let transport = if tls.is_some() { "TLS, " } else { "" };
    match mysql::check_shard(shard, tls, timeout).await {
        Ok(check) if check.problems.is_empty() => out.ok(
            subject,
            format!(
                "{}, {transport}writable, {} granted",
                check.version,
                mysql::WRITER_PRIVILEGES.join("/")
            ),
        ),
        Ok(check) => out.fail(subject, check.problems.join("; ")),
        Err(problem) => out.fail(subject, problem),
    }
}

async fn check_buffer(config: &Config, timeout: Duration, out: &mut Reporter<'_>) {
    let subject = format!("buffer {}", config.buffer.url);
    let probe = async {
        let buffer = config.buffer.open().await?;
        probe_buffer(buffer.as_ref()).await
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(Ok(path)) => out.ok(subject, format!("wrote and read back {path}")),
        Ok(Err(error)) => out.fail(
            subject,
            format!(
                "{error} (check buffer.url, the directory's permissions or the bucket's IAM: \
                 the reader needs to create objects, the writer to read them)"
            ),
        ),
        Err(_) => out.fail(subject, format!("no answer within {timeout:?}")),
    }
}

/// Writes a small object under `revrepl-probe/` and reads it back; returns its path. Each
/// init leaves one probe object (the buffer has no delete; they are a few bytes each).
async fn probe_buffer(buffer: &dyn BufferStore) -> Result<String, LauncherError> {
    let now = chrono::Utc::now();
    let path = format!(
        "revrepl-probe/init-{}-{}.txt",
        now.format("%Y%m%dT%H%M%S%.9fZ"),
        std::process::id()
    );
    let body = format!("revrepl init probe written at {}\n", now.to_rfc3339());
    let outcome = buffer
        .put_if_absent(&path, bytes_of(&body))
        .await
        .map_err(LauncherError::from)?;
    if outcome != PutOutcome::Created {
        return Err(LauncherError::Usage(format!(
            "probe object {path} in buffer {} already existed",
            buffer.location()
        )));
    }
    match buffer.get(&path).await? {
        Some(read) if read.as_ref() == body.as_bytes() => Ok(path),
        Some(_) => Err(LauncherError::Usage(format!(
            "probe object {path} in buffer {} read back with other content",
            buffer.location()
        ))),
        None => Err(LauncherError::Usage(format!(
            "probe object {path} in buffer {} was written but cannot be read",
            buffer.location()
        ))),
    }
}

fn bytes_of(text: &str) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(text.as_bytes())
}

async fn check_change_stream(config: &Config, args: &InitArgs, out: &mut Reporter<'_>) {
    let stream = &config.spanner.change_stream;
    let subject = format!("change stream {stream}");
    let database = match SourceDatabase::connect(config, args.timeout).await {
        Ok(database) => database,
        Err(error) => {
            out.fail(
                subject,
                format!("{error} (check spanner.database, spanner.endpoint and the credentials)"),
            );
            return;
        }
    };
    let exists = match tokio::time::timeout(args.timeout, database.stream_exists(stream)).await {
        Ok(Ok(exists)) => exists,
        Ok(Err(error)) => {
            out.fail(
                subject,
                format!("{error} (check spanner.database and that it exists)"),
            );
            return;
        }
        Err(_) => {
            out.fail(
                subject,
                format!("{}: no answer within {:?}", database.name, args.timeout),
            );
            return;
        }
    };
    let mut created = false;
    if !exists {
        if args.verify_only {
            out.fail(
                subject,
                format!(
                    "it does not exist in {}; run `revrepl init` without --verify-only to create \
                     it, or: CREATE CHANGE STREAM {stream} FOR ALL OPTIONS (value_capture_type = \
                     'NEW_ROW_AND_OLD_VALUES', retention_period = '7d')",
                    database.name
                ),
            );
            return;
        }
        match create_stream(config, args, &database).await {
            Ok(()) => created = true,
            Err(error) => {
                out.fail(
                    subject,
                    format!(
                        "cannot create it: {error} (check spanner.admin_endpoint and that the \
                         credentials may change the schema (roles/spanner.databaseAdmin))"
                    ),
                );
                return;
            }
        }
    }
    match check_stream(&database.client, &database.name, stream).await {
        Ok(options) => {
            let verb = if created { "created" } else { "exists" };
            let summary = format!(
                "{verb}: value_capture_type {}, retention {}",
                options.value_capture_type, options.retention_text
            );
            let mut warnings = Vec::new();
            if options.value_capture_type == "NEW_ROW" {
                warnings.push(
                    "NEW_ROW streams carry no old values, so deletes whose shard column is not a \
                     key are routed with an extra stale read (NEW_ROW_AND_OLD_VALUES avoids it)"
                        .to_string(),
                );
            }
            if options.retention < RECOMMENDED_RETENTION {
                warnings.push(format!(
                    "a stopped reader must resume within {}; 7d is recommended: ALTER CHANGE \
                     STREAM {stream} SET OPTIONS (retention_period = '7d')",
                    options.retention_text
                ));
            }
            if database.stream_watches_all(stream).await == Some(false) {
                warnings.push(
                    "it does not watch every table (not FOR ALL): changes to other tables are \
                     not replicated"
                        .to_string(),
                );
            }
            if warnings.is_empty() {
                out.ok(subject, summary);
            } else {
                out.warn(subject, format!("{summary}; {}", warnings.join("; ")));
            }
        }
        Err(error) => out.fail(subject, error.to_string()),
    }
}

async fn create_stream(
    config: &Config,
    args: &InitArgs,
    database: &SourceDatabase,
) -> Result<(), LauncherError> {
    let ddl = create_stream_ddl(
        &config.spanner.change_stream,
        args.value_capture_type.as_str(),
        &args.retention,
    )?;
    let admin = admin_client(config).await?;
    tracing::info!(%ddl, database = %database.name, "creating the change stream");
    apply_ddl(&admin, &database.name, vec![ddl], args.timeout).await
}

async fn check_metadata(config: &Config, args: &InitArgs, out: &mut Reporter<'_>) {
    let subject = "metadata store";
    let mut created_database = false;
    if config.metadata.store == MetadataKind::Spanner && !args.verify_only {
        match create_metadata_database(config, args.timeout).await {
            Ok(created) => created_database = created,
            Err(error) => {
                out.fail(
                    subject,
                    format!(
                        "{error} (check metadata.database, the admin endpoint and that the \
                         credentials may create databases (roles/spanner.databaseAdmin))"
                    ),
                );
                return;
            }
        }
    }
    let opened = if args.verify_only {
        tokio::time::timeout(args.timeout, store::open_existing(config)).await
    } else {
        tokio::time::timeout(args.timeout, async {
            revrepl_metadata::open_store(config, MissingTables::Create)
                .await
                .map_err(LauncherError::from)
        })
        .await
    };
    match opened {
        Ok(Ok(store)) => {
            let tables = store.tables();
            let database = if created_database {
                "database created; "
            } else {
                ""
            };
            out.ok(
                format!("{subject} {}", store.location()),
                format!(
                    "{database}tables {}, {}, {}, {} ready (and revrepl's own {})",
                    tables.run(),
                    tables.create_progress(),
                    tables.data_seen(),
                    tables.process_progress(),
                    tables.shard_errors()
                ),
            );
        }
        Ok(Err(error)) => out.fail(
            subject,
            format!(
                "{error} (check the [metadata] section: store, path or database, table_suffix)"
            ),
        ),
        Err(_) => out.fail(subject, format!("no answer within {:?}", args.timeout)),
    }
}

/// Creates the Spanner metadata database when it does not exist (as the reference's launcher
/// does); returns whether it was created.
async fn create_metadata_database(
    config: &Config,
    timeout: Duration,
) -> Result<bool, LauncherError> {
    let options = &config.metadata;
    let database = options.database.as_deref().ok_or_else(|| {
        LauncherError::Usage(
            "metadata.database is required when metadata.store = \"spanner\"".into(),
        )
    })?;
    let endpoint = options
        .admin_endpoint
        .as_deref()
        .or(config.spanner.admin_endpoint.as_deref());
    let admin = admin_client_at(endpoint, database).await?;
    ensure_database(&admin, database, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_overrides_are_checked_and_summarized() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("overrides.json");
        let check = |text: &str| -> Vec<Check> {
            std::fs::write(&file, text).expect("write");
            let config = Config::load(
                None,
                &[
                    "run_id=r".to_string(),
                    "shards_file=s.json".to_string(),
                    "spanner.database=projects/p/instances/i/databases/d".to_string(),
                    "spanner.change_stream=c".to_string(),
                    format!("schema_overrides_file={}", file.display()),
                ],
            )
            .expect("configuration");
            let mut seen = Vec::new();
            let mut out = Reporter {
                report: InitReport::default(),
                on_check: &mut |check: &Check| seen.push(check.clone()),
            };
            check_schema_overrides(&config, &mut out);
            drop(out);
            seen
        };
        let good = check(r#"{"renamedTables": {"a": "A"}, "renamedColumns": {"a": {"x": "X"}}}"#);
        assert_eq!(good.len(), 1);
        assert_eq!(good[0].verdict, Verdict::Ok);
        assert!(
            good[0]
                .detail
                .starts_with("1 table(s) and 1 column(s) renamed"),
            "{good:?}"
        );
        let bad = check(r#"{"renamedTables": {"a": "A", "b": "A"}}"#);
        assert_eq!(bad[0].verdict, Verdict::Fail);
        assert!(
            bad[0].detail.contains("both renamed")
                && bad[0].detail.contains("schema_overrides_file"),
            "{bad:?}"
        );
    }

    /// `revrepl init` says, per table of the session file, whether it will be replicated,
    /// skipped (Spanner-only or unknown) or refused, and why.
    #[test]
    fn tables_are_replicated_skipped_or_refused_with_the_reason() {
        let session = Session::from_json(
            "session.json",
            r#"{"SpSchema": {
                "t1": {"Name": "Users", "ShardIdColumn": "c2", "ColDefs": {
                    "c1": {"Name": "id", "T": {"Name": "INT64"}},
                    "c2": {"Name": "shard", "T": {"Name": "STRING"}}}},
                "t2": {"Name": "Events", "ShardIdColumn": "c3", "ColDefs": {
                    "c3": {"Name": "shard", "T": {"Name": "STRING"}}}},
                "t3": {"Name": "Audit", "ColDefs": {"c4": {"Name": "id", "T": {"Name": "INT64"}}}}},
              "SrcSchema": {
                "t1": {"Name": "users", "ColDefs": {"c1": {"Name": "id"}}},
                "t3": {"Name": "audit", "ColDefs": {"c4": {"Name": "id"}}}}}"#,
        )
        .expect("valid session");
        let spanner = ["Users".to_string(), "Later".to_string()];
        let verdicts = table_verdicts(&session, Some(&spanner), false);
        let find = |subject: &str| {
            verdicts
                .iter()
                .find(|(_, s, _)| s == subject)
                .unwrap_or_else(|| panic!("{subject} reported: {verdicts:?}"))
        };
        let users = find("table Users");
        assert_eq!(users.0, Verdict::Ok);
        assert!(
            users.2.contains("replicated to MySQL table `users`"),
            "{users:?}"
        );
        let events = find("table Events");
        assert_eq!(events.0, Verdict::Warn);
        assert!(
            events.2.starts_with("skipped: it exists only in Spanner"),
            "{events:?}"
        );
        let audit = find("table Audit");
        assert_eq!(audit.0, Verdict::Fail);
        assert!(
            audit.2.starts_with("refused: it has no ShardIdColumn"),
            "{audit:?}"
        );
        let later = find("table Later");
        assert!(
            later
                .2
                .starts_with("skipped: it is not in the session file"),
            "{later:?}"
        );
        // With a plugin, the plugin decides the shards.
        let with_plugin = table_verdicts(&session, None, true);
        assert!(
            with_plugin
                .iter()
                .any(|(v, s, _)| s == "table Audit" && *v == Verdict::Ok)
        );
    }
}
