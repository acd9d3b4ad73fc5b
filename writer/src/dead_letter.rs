//! Dead letters (DESIGN §6.9): transactions the writer set aside under `writer.dead_letter`,
//! and what an operator does with them (`revrepl dlq list | show | retry`).
//!
//! A dead letter is one JSON object in the buffer at
//! `dlq/<shard>/<window start>-<window end>/<commit timestamp>-<transaction id>.json`, holding
//! the shard, the window file it came from, the error and its cause, and the transaction's
//! records as the window file had them. Objects in the buffer are never changed or deleted.
//!
//! What became of each dead letter is recorded in the shard itself, in the ledger table
//! `revrepl_dead_letters` (one row per retried letter): `applied`, written in the same MySQL
//! transaction as the letter's changes, so that a crash at any point applies a letter at most
//! once and a retry after it goes on with the next; or `severe`, with the error it met again
//! (a copy of the letter with that error is also written at `dlq/<shard>/severe/…` in the
//! buffer: inside the shard's own directory, so no shard id needs reserving, and apart from the
//! letters, whose second level is a window).
//! A letter without a row is pending.
//!
//! [`retry`] applies a shard's pending letters in commit order through the writer's own apply
//! path ([`ShardApplier::apply_dead_letter`]), holding the shard's writer lease so that no
//! writer of the run applies the shard meanwhile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use revrepl_config::Config;
use revrepl_metadata::{LeaseKeeper, LeaseOwner, LeaseRole, MissingTables, RunId, open_store};
use revrepl_record::{
    Backoff, BufferStore, ChangeRecord, Classify, ErrorClass, ShardId, Window, with_backoff,
};
use revrepl_shard_routing::{Shard, ShardsFile};
use serde::Serialize;

use crate::apply::{DeadLetterApply, ShardApplier};
use crate::batch::SpannerTransaction;
use crate::error::WriterError;

/// Where dead letters are written in the buffer.
pub const DEAD_LETTER_PREFIX: &str = "dlq/";

/// The directory, inside a shard's dead-letter directory, of copies of letters that failed
/// again on retry, with the new error: `dlq/<shard>/severe/<window>/<file>.json`.
pub const SEVERE_DIRECTORY: &str = "severe";

/// How often a transient failure is tried while retrying dead letters, before the retry stops
/// (what it applied stays applied; run it again later).
const TRANSIENT_ATTEMPTS: u32 = 8;

/// One dead-lettered transaction, as read from the buffer.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its object path in the buffer (`dlq/<shard>/…`).
    pub path: String,
    /// The shard.
    pub shard: ShardId,
    /// The window file it came from.
    pub file: Option<String>,
    /// The error that set it aside.
    pub error: String,
    /// That error's cause, without keys or values ([`WriterError::cause`]); the error text
    /// for letters written before causes were recorded.
    pub cause: String,
    /// The transaction.
    pub transaction: SpannerTransaction,
}

/// The object path of a dead letter.
pub fn dead_letter_path(
    shard: &ShardId,
    window: Window,
    transaction: &SpannerTransaction,
) -> String {
    format!(
        "{DEAD_LETTER_PREFIX}{shard}/{}-{}/{}-{}.json",
        window.start().to_rfc3339_millis(),
        window.end().to_rfc3339_millis(),
        transaction.commit_timestamp().to_rfc3339(),
        sanitize(transaction.server_transaction_id()),
    )
}

/// The path of the `severe` copy of the dead letter at `path`:
/// `dlq/<shard>/<window>/<file>` → `dlq/<shard>/severe/<window>/<file>`.
pub fn severe_path(path: &str) -> String {
    let rest = path.strip_prefix(DEAD_LETTER_PREFIX).unwrap_or(path);
    match rest.split_once('/') {
        Some((shard, rest)) => format!("{DEAD_LETTER_PREFIX}{shard}/{SEVERE_DIRECTORY}/{rest}"),
        None => format!("{DEAD_LETTER_PREFIX}{SEVERE_DIRECTORY}/{rest}"),
    }
}

/// Whether `path` is a dead letter (`dlq/<shard>/<window>/<file>.json`), not a `severe` copy.
fn is_letter(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    parts.len() == 4 && parts[2] != SEVERE_DIRECTORY && path.ends_with(".json")
}

/// The object (path and bytes) that sets `transaction` of `shard`, read from window file
/// `file`, aside with `error`.
pub fn encode(
    shard: &ShardId,
    window: Window,
    transaction: &SpannerTransaction,
    file: &str,
    error: &WriterError,
) -> (String, Bytes) {
    let body = serde_json::json!({
        "shard": shard.as_str(),
        "file": file,
        "error": error.to_string(),
        "cause": error.cause(),
        "commitTimestamp": transaction.commit_timestamp().to_rfc3339(),
        "serverTransactionId": transaction.server_transaction_id(),
        "records": transaction.records(),
    });
    (
        dead_letter_path(shard, window, transaction),
        Bytes::from(body.to_string()),
    )
}

/// Reads the dead letter at `path` of buffer `location`.
pub fn decode(location: &str, path: &str, bytes: &[u8]) -> Result<DeadLetter, WriterError> {
    let malformed = |reason: String| WriterError::MalformedDeadLetter {
        location: location.to_string(),
        path: path.to_string(),
        reason,
    };
    let body: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| malformed(format!("not JSON: {e}")))?;
    let text = |field: &str| body.get(field).and_then(serde_json::Value::as_str);
    let shard = text("shard").ok_or_else(|| malformed("no \"shard\" text".into()))?;
    let shard = ShardId::new(shard).map_err(|e| malformed(format!("\"shard\": {e}")))?;
    let records: Vec<ChangeRecord> = serde_json::from_value(
        body.get("records")
            .cloned()
            .ok_or_else(|| malformed("no \"records\"".into()))?,
    )
    .map_err(|e| malformed(format!("\"records\": {e}")))?;
    let mut transactions = SpannerTransaction::group(records);
    if transactions.len() != 1 {
        return Err(malformed(format!(
            "\"records\" hold {} transactions, not one",
            transactions.len()
        )));
    }
    let transaction = transactions.remove(0);
    if let Some(other) = transaction
        .records()
        .iter()
        .find(|r| !r.shard.is_empty() && r.shard != shard.as_str())
    {
        return Err(malformed(format!(
            "a record names shard {:?}, the letter {shard}",
            other.shard
        )));
    }
    let error = text("error").unwrap_or_default().to_string();
    Ok(DeadLetter {
        path: path.to_string(),
        shard,
        file: text("file").map(str::to_string),
        cause: text("cause").map_or_else(|| error.clone(), str::to_string),
        error,
        transaction,
    })
}

/// Every dead letter in `buffer` (of `shard` only, if given), by shard, then in commit order.
pub async fn read_all(
    buffer: &dyn BufferStore,
    shard: Option<&ShardId>,
) -> Result<Vec<DeadLetter>, WriterError> {
    let prefix = match shard {
        Some(shard) => format!("{DEAD_LETTER_PREFIX}{shard}/"),
        None => DEAD_LETTER_PREFIX.to_string(),
    };
    let mut letters = Vec::new();
    for path in buffer.list(&prefix).await? {
        if !is_letter(&path) {
            continue;
        }
        // Listed, so present; gone only if someone removed it meanwhile.
        let Some(bytes) = buffer.get(&path).await? else {
            continue;
        };
        letters.push(decode(buffer.location(), &path, &bytes)?);
    }
    letters.sort_by(|a, b| {
        a.shard.cmp(&b.shard).then_with(|| {
            a.transaction
                .last_position()
                .cmp_transaction(&b.transaction.last_position())
        })
    });
    Ok(letters)
}

/// The ledger table in each shard: what became of retried dead letters.
pub mod ledger {
    use std::collections::BTreeMap;

    use mysql_async::prelude::Queryable;
    use mysql_async::{Row, Value};
    use revrepl_record::ShardId;

    /// The ledger table's name.
    pub const TABLE: &str = "revrepl_dead_letters";

    /// The ledger table's definition; `IF NOT EXISTS`, so running it again is harmless.
    pub const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS `revrepl_dead_letters` (\
      `shard` VARCHAR(128) NOT NULL, \
      `dead_letter` VARCHAR(600) NOT NULL COMMENT 'object path in the buffer', \
      `run_id` VARCHAR(128) NOT NULL COMMENT 'the run whose retry wrote the row', \
      `state` VARCHAR(16) NOT NULL COMMENT 'applied or severe', \
      `error` TEXT NULL COMMENT 'severe: the error met on retry', \
      `attempts` INT UNSIGNED NOT NULL DEFAULT 1, \
      `updated_at` TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), \
      PRIMARY KEY (`shard`, `dead_letter`)\
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

    /// What became of a retried dead letter.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum LedgerState {
        /// Applied by a retry.
        Applied,
        /// Failed again on retry.
        Severe,
    }

    /// One row of the ledger.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct LedgerEntry {
        /// Applied or severe.
        pub state: LedgerState,
        /// The error met on the last retry (severe).
        pub error: Option<String>,
        /// Retries that reached MySQL.
        pub attempts: u64,
    }

    /// A shard's ledger, by dead-letter path.
    pub type Ledger = BTreeMap<String, LedgerEntry>;

    fn state_of(text: &str) -> Option<LedgerState> {
        match text {
            "applied" => Some(LedgerState::Applied),
            "severe" => Some(LedgerState::Severe),
            _ => None,
        }
    }

    fn text(row: &Row, index: usize) -> Option<String> {
        match row.as_ref(index) {
            Some(Value::Bytes(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        }
    }

    /// The state of `name`, locked until the transaction ends (inside one).
    pub(crate) async fn lock<Q: Queryable>(
        conn: &mut Q,
        shard: &ShardId,
        name: &str,
    ) -> Result<Option<LedgerState>, mysql_async::Error> {
        let row: Option<Row> = conn
            .exec_first(
                "SELECT `state` FROM `revrepl_dead_letters` WHERE `shard` = ? AND `dead_letter` = ? \
                 FOR UPDATE",
                (shard.as_str(), name),
            )
            .await?;
        Ok(row.and_then(|row| text(&row, 0)).and_then(|s| state_of(&s)))
    }

    /// Records `name` as applied (inside the transaction that applied it).
    pub(crate) async fn record_applied<Q: Queryable>(
        conn: &mut Q,
        run_id: &str,
        shard: &ShardId,
        name: &str,
    ) -> Result<(), mysql_async::Error> {
        conn.exec_drop(
            "INSERT INTO `revrepl_dead_letters` (`shard`, `dead_letter`, `run_id`, `state`) \
             VALUES (?, ?, ?, 'applied') ON DUPLICATE KEY UPDATE `state` = 'applied', \
             `error` = NULL, `run_id` = VALUES(`run_id`), `attempts` = `attempts` + 1",
            (shard.as_str(), name, run_id),
        )
        .await
    }

    /// Records `name` as severe with `error`, unless it is applied.
    pub(crate) async fn record_severe<Q: Queryable>(
        conn: &mut Q,
        run_id: &str,
        shard: &ShardId,
        name: &str,
        error: &str,
    ) -> Result<(), mysql_async::Error> {
        conn.query_drop(CREATE_TABLE).await?;
        conn.exec_drop(
            "INSERT INTO `revrepl_dead_letters` (`shard`, `dead_letter`, `run_id`, `state`, `error`) \
             VALUES (?, ?, ?, 'severe', ?) ON DUPLICATE KEY UPDATE \
             `error` = IF(`state` = 'applied', `error`, VALUES(`error`)), \
             `attempts` = IF(`state` = 'applied', `attempts`, `attempts` + 1), \
             `run_id` = IF(`state` = 'applied', `run_id`, VALUES(`run_id`))",
            (shard.as_str(), name, run_id, error),
        )
        .await
    }

    /// Every row of `shard`; none while the table does not exist (nothing was retried yet).
    pub(crate) async fn read<Q: Queryable>(
        conn: &mut Q,
        shard: &ShardId,
    ) -> Result<Ledger, mysql_async::Error> {
        let rows: Vec<Row> = match conn
            .exec(
                "SELECT `dead_letter`, `state`, `error`, `attempts` FROM `revrepl_dead_letters` \
                 WHERE `shard` = ?",
                (shard.as_str(),),
            )
            .await
        {
            Ok(rows) => rows,
            // ER_NO_SUCH_TABLE
            Err(mysql_async::Error::Server(e)) if e.code == 1146 => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut ledger = Ledger::new();
        for row in rows {
            let (Some(name), Some(state)) =
                (text(&row, 0), text(&row, 1).and_then(|s| state_of(&s)))
            else {
                continue;
            };
            let attempts = match row.as_ref(3) {
                Some(Value::UInt(n)) => *n,
                Some(Value::Int(n)) => u64::try_from(*n).unwrap_or_default(),
                Some(Value::Bytes(b)) => std::str::from_utf8(b)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_default(),
                _ => 0,
            };
            ledger.insert(
                name,
                LedgerEntry {
                    state,
                    error: text(&row, 2),
                    attempts,
                },
            );
        }
        Ok(ledger)
    }
}

/// Where a dead letter stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LetterState {
    /// Not retried yet (or a retry did not reach it).
    Pending,
    /// Applied by a retry.
    Applied,
    /// Failed again on retry; its new error is in the ledger and in its `severe` copy.
    Severe,
    /// The shard's ledger could not be read.
    Unknown,
}

/// One dead letter as `revrepl dlq list | show` present it (keys, never values).
#[derive(Debug, Clone, Serialize)]
pub struct LetterView {
    /// Its object path in the buffer.
    pub path: String,
    /// Where it stands.
    pub state: LetterState,
    /// The transaction's commit timestamp (RFC 3339).
    pub commit_timestamp: String,
    /// The transaction's id.
    pub server_transaction_id: String,
    /// The window file it came from.
    pub file: Option<String>,
    /// The cause of the error that set it aside, without keys or values.
    pub cause: String,
    /// The error that set it aside.
    pub error: String,
    /// The error met on the last retry (severe).
    pub retry_error: Option<String>,
    /// Each record: `<mod type> <table> <keys JSON>`.
    pub changes: Vec<String>,
}

/// A shard's dead letters.
#[derive(Debug, Clone, Serialize)]
pub struct ShardLetters {
    /// The shard.
    pub shard: String,
    /// Its letters in commit order.
    pub letters: Vec<LetterView>,
    /// Why the shard's ledger could not be read (states are then `unknown`).
    pub ledger_error: Option<String>,
}

impl ShardLetters {
    /// How many letters are in `state`.
    pub fn count(&self, state: LetterState) -> usize {
        self.letters.iter().filter(|l| l.state == state).count()
    }

    /// The letters not applied yet (pending, severe or unknown).
    pub fn outstanding(&self) -> impl Iterator<Item = &LetterView> {
        self.letters
            .iter()
            .filter(|l| l.state != LetterState::Applied)
    }

    /// The outstanding letters' causes, with how many letters each, most frequent first.
    pub fn causes(&self) -> Vec<(String, usize)> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for letter in self.outstanding() {
            let cause = match (&letter.state, &letter.retry_error) {
                (LetterState::Severe, Some(error)) => error.as_str(),
                _ => letter.cause.as_str(),
            };
            *counts.entry(cause).or_default() += 1;
        }
        let mut causes: Vec<(String, usize)> = counts
            .into_iter()
            .map(|(c, n)| (c.to_string(), n))
            .collect();
        causes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        causes
    }
}

/// What one shard's retry did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetryReport {
    /// The shard.
    pub shard: String,
    /// Letters applied now.
    pub applied: usize,
    /// Letters an earlier retry applied (skipped).
    pub already_applied: usize,
    /// Severe letters left alone (without `retry_severe`).
    pub severe_skipped: usize,
    /// Letters that failed again now, moved to `severe`: path and error.
    pub severe: Vec<(String, String)>,
}

/// What [`retry`] works on.
#[derive(Debug, Clone, Default)]
pub struct RetryOptions {
    /// The shards; empty: every shard with dead letters.
    pub shards: Vec<String>,
    /// Retry letters that already failed again (`severe`) too.
    pub retry_severe: bool,
}

/// The shards file's shards with their passwords, and the ones selected by name.
async fn shards_of(config: &Config, names: &[String]) -> Result<Vec<Shard>, WriterError> {
    let shards_file = ShardsFile::load(&config.shards_file)?;
    let shards = crate::app::resolve_passwords(&shards_file).await?;
    for name in names {
        if !shards
            .iter()
            .any(|s| s.config.logical_shard_id.as_str() == name)
        {
            let known: Vec<&str> = shards
                .iter()
                .map(|s| s.config.logical_shard_id.as_str())
                .collect();
            return Err(WriterError::Config {
                key: "--shard".into(),
                reason: format!(
                    "shard {name:?} is not in shards file {} (its shards: {})",
                    config.shards_file.display(),
                    known.join(", ")
                ),
            });
        }
    }
    Ok(shards)
}

fn view(letter: &DeadLetter, state: LetterState, retry_error: Option<String>) -> LetterView {
    LetterView {
        path: letter.path.clone(),
        state,
        commit_timestamp: letter.transaction.commit_timestamp().to_rfc3339(),
        server_transaction_id: letter.transaction.server_transaction_id().to_string(),
        file: letter.file.clone(),
        cause: letter.cause.clone(),
        error: letter.error.clone(),
        retry_error,
        changes: letter
            .transaction
            .records()
            .iter()
            .map(|r| format!("{:?} {} {}", r.mod_type, r.table_name, r.mods[0].keys_json))
            .collect(),
    }
}

/// Every dead letter of the buffer (of `shards`, if any are named), with its state from each
/// shard's ledger. A shard that cannot be reached is reported with its letters in state
/// `unknown`.
pub async fn inspect(config: &Config, shards: &[String]) -> Result<Vec<ShardLetters>, WriterError> {
    let buffer = config.buffer.open().await?;
    let all = shards_of(config, shards).await?;
    let letters = read_all(buffer.as_ref(), None).await?;
    let run_id = RunId::new(config.run_id.clone())?;
    let mapping = crate::app::schema_mapping(config)?;
    let time_zone = crate::app::source_time_zone(config)?;
    let tls = crate::app::tls_options(config)?;
    let mut by_shard: BTreeMap<ShardId, Vec<DeadLetter>> = BTreeMap::new();
    for letter in letters {
        if shards.is_empty() || shards.iter().any(|s| s == letter.shard.as_str()) {
            by_shard
                .entry(letter.shard.clone())
                .or_default()
                .push(letter);
        }
    }
    let mut reports = Vec::new();
    for (shard_id, letters) in by_shard {
        let ledger = match all.iter().find(|s| s.config.logical_shard_id == shard_id) {
            None => Err(format!("shard {shard_id} is not in the shards file")),
            Some(shard) => {
                let config = crate::app::applier_config(
                    &run_id,
                    shard,
                    tls.clone(),
                    &mapping,
                    time_zone,
                    None,
                );
                read_ledger(config).await.map_err(|e| e.to_string())
            }
        };
        let (views, ledger_error) = match ledger {
            Ok(ledger) => (
                letters
                    .iter()
                    .map(|l| match ledger.get(&l.path) {
                        None => view(l, LetterState::Pending, None),
                        Some(entry) if entry.state == ledger::LedgerState::Applied => {
                            view(l, LetterState::Applied, None)
                        }
                        Some(entry) => view(l, LetterState::Severe, entry.error.clone()),
                    })
                    .collect(),
                None,
            ),
            Err(error) => (
                letters
                    .iter()
                    .map(|l| view(l, LetterState::Unknown, None))
                    .collect(),
                Some(error),
            ),
        };
        reports.push(ShardLetters {
            shard: shard_id.to_string(),
            letters: views,
            ledger_error,
        });
    }
    Ok(reports)
}

async fn read_ledger(config: crate::apply::ApplierConfig) -> Result<ledger::Ledger, WriterError> {
    let policy = Backoff {
        max_attempts: Some(3),
        ..Backoff::default()
    };
    let applier = with_backoff(policy, |_, _| {}, || ShardApplier::connect(config.clone())).await?;
    let ledger = applier.dead_letter_ledger().await;
    applier.close().await;
    ledger
}

/// Applies the pending dead letters of the chosen shards again, each shard's in commit order,
/// each exactly once; a letter that fails again with a definite error moves to `severe`
/// (ledger row and a copy under `dlq/<shard>/severe/` with the new error) and the retry goes on with the
/// next. Holds each shard's writer lease meanwhile: refused while a writer of the run applies
/// the shard. `progress` sees one line per letter.
pub async fn retry(
    config: &Config,
    options: &RetryOptions,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<Vec<RetryReport>, WriterError> {
    let buffer = config.buffer.open().await?;
    let shards = shards_of(config, &options.shards).await?;
    let run_id = RunId::new(config.run_id.clone())?;
    let mapping = crate::app::schema_mapping(config)?;
    let time_zone = crate::app::source_time_zone(config)?;
    let transformer = crate::app::load_transformer(&config.writer)?;
    let tls = crate::app::tls_options(config)?;
    let metadata = open_store(config, MissingTables::Fail).await?;
    let letters = read_all(buffer.as_ref(), None).await?;
    let mut by_shard: BTreeMap<ShardId, Vec<DeadLetter>> = BTreeMap::new();
    for letter in letters {
        by_shard
            .entry(letter.shard.clone())
            .or_default()
            .push(letter);
    }
    let chosen: Vec<&Shard> = shards
        .iter()
        .filter(|s| {
            let id = s.config.logical_shard_id.as_str();
            if options.shards.is_empty() {
                by_shard.keys().any(|k| k.as_str() == id)
            } else {
                options.shards.iter().any(|n| n == id)
            }
        })
        .collect();
    for (id, letters) in &by_shard {
        let known = shards.iter().any(|s| &s.config.logical_shard_id == id);
        if !known && (options.shards.is_empty() || options.shards.iter().any(|n| n == id.as_str()))
        {
            progress(format!(
                "shard {id}: {} dead letter(s), but the shards file {} has no such shard; \
                 left alone",
                letters.len(),
                config.shards_file.display()
            ));
        }
    }
    let mut reports = Vec::new();
    for shard in chosen {
        let id = shard.config.logical_shard_id.clone();
        let letters = by_shard.remove(&id).unwrap_or_default();
        let mut report = RetryReport {
            shard: id.to_string(),
            ..RetryReport::default()
        };
        if letters.is_empty() {
            progress(format!("shard {id}: no dead letters"));
            reports.push(report);
            continue;
        }
        let lease = LeaseKeeper::acquire(
            Arc::clone(&metadata),
            run_id.clone(),
            LeaseRole::Writer(id.clone()),
            LeaseOwner::this_process(),
            config.metadata.lease_ttl,
        )
        .await
        .map_err(|error| match error {
            revrepl_metadata::MetadataError::LeaseHeld { .. } => WriterError::Config {
                key: "--shard".into(),
                reason: format!(
                    "{error}: a writer of run {run_id} applies shard {id}; stop it (or wait \
                     for it to finish) before retrying its dead letters, so that they are not \
                     applied between its transactions"
                ),
            },
            other => other.into(),
        })?;
        let config = crate::app::applier_config(
            &run_id,
            shard,
            tls.clone(),
            &mapping,
            time_zone,
            transformer.clone(),
        );
        let outcome = retry_shard(
            buffer.as_ref(),
            &lease,
            config,
            &letters,
            options.retry_severe,
            &mut report,
            progress,
        )
        .await;
        lease.release().await;
        outcome?;
        reports.push(report);
    }
    Ok(reports)
}

async fn retry_shard(
    buffer: &dyn BufferStore,
    lease: &LeaseKeeper,
    config: crate::apply::ApplierConfig,
    letters: &[DeadLetter],
    retry_severe: bool,
    report: &mut RetryReport,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<(), WriterError> {
    let shard = config.shard.clone();
    let policy = Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(3),
        multiplier: 2,
        max_attempts: Some(TRANSIENT_ATTEMPTS),
    };
    let on_retry = |error: &WriterError, delay: Duration| {
        tracing::warn!(%shard, %error, ?delay, "retrying dead letters: transient failure; trying again");
    };
    let applier = with_backoff(policy, on_retry, || ShardApplier::connect(config.clone())).await?;
    let outcome = async {
        for letter in letters {
            lease.check()?;
            let applied = with_backoff(policy, on_retry, || {
                applier.apply_dead_letter(&letter.path, &letter.transaction, retry_severe)
            })
            .await;
            match applied {
                Ok(DeadLetterApply::Applied { records, .. }) => {
                    report.applied += 1;
                    progress(format!(
                        "shard {shard}: applied {} ({records} records)",
                        letter.path
                    ));
                }
                Ok(DeadLetterApply::AlreadyApplied) => report.already_applied += 1,
                Ok(DeadLetterApply::Severe) => report.severe_skipped += 1,
                Err(error) if error.class() == ErrorClass::Definite => {
                    let text = error.to_string();
                    write_severe(buffer, letter, &text).await?;
                    with_backoff(policy, on_retry, || {
                        applier.record_severe_dead_letter(&letter.path, &text)
                    })
                    .await?;
                    progress(format!(
                        "shard {shard}: {} failed again, moved to severe: {text}",
                        letter.path
                    ));
                    report.severe.push((letter.path.clone(), text));
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
    .await;
    applier.close().await;
    outcome
}

/// Writes the `severe` copy of `letter` with the error it met again (kept if one exists).
async fn write_severe(
    buffer: &dyn BufferStore,
    letter: &DeadLetter,
    error: &str,
) -> Result<(), WriterError> {
    let Some(bytes) = buffer.get(&letter.path).await? else {
        return Ok(());
    };
    let mut body: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| WriterError::MalformedDeadLetter {
            location: buffer.location().to_string(),
            path: letter.path.clone(),
            reason: format!("not JSON: {e}"),
        })?;
    if let Some(object) = body.as_object_mut() {
        object.insert("retryError".into(), error.into());
        object.insert(
            "retriedAt".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .into(),
        );
    }
    buffer
        .put_if_absent(&severe_path(&letter.path), Bytes::from(body.to_string()))
        .await?;
    Ok(())
}

/// Keeps a transaction id usable as part of an object name.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '=' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use revrepl_record::{Mod, ModType, Timestamp};

    fn transaction() -> SpannerTransaction {
        let record = |seq: &str| ChangeRecord {
            commit_timestamp: Timestamp::new(1_700_000_000, 5).expect("ts"),
            server_transaction_id: "tx/1".into(),
            record_sequence: seq.into(),
            table_name: "users".into(),
            mods: [Mod {
                keys_json: r#"{"id":"7"}"#.into(),
                old_values_json: "{}".into(),
                new_values_json: r#"{"name":"x"}"#.into(),
            }],
            mod_type: ModType::Insert,
            number_of_records_in_transaction: 2,
            transaction_tag: String::new(),
            shard: "s1".into(),
        };
        SpannerTransaction::group(vec![record("00000000"), record("00000001")]).remove(0)
    }

    #[test]
    fn a_dead_letter_round_trips_and_names_its_severe_copy() {
        let shard = ShardId::new("s1").expect("id");
        let window = Window::from_bounds(
            Timestamp::new(1_700_000_000, 0).expect("ts"),
            Timestamp::new(1_700_000_010, 0).expect("ts"),
        )
        .expect("window");
        let error = WriterError::MalformedRecord {
            shard: shard.clone(),
            table: "users".into(),
            position: "p".into(),
            reason: "bad".into(),
        };
        let (path, bytes) = encode(&shard, window, &transaction(), "s1/f.txt", &error);
        assert!(path.starts_with("dlq/s1/"), "{path}");
        assert!(path.ends_with("-tx_1.json"), "{path}");
        assert_eq!(severe_path(&path), format!("dlq/s1/severe/{}", &path[7..]));
        assert!(is_letter(&path));
        assert!(
            !is_letter(&severe_path(&path)),
            "a severe copy is not a letter"
        );
        let letter = decode("buf", &path, &bytes).expect("decodes");
        assert_eq!(letter.shard, shard);
        assert_eq!(letter.transaction.len(), 2);
        assert_eq!(letter.cause, "malformed record of table users");
        assert_eq!(letter.file.as_deref(), Some("s1/f.txt"));
        let bad = decode("buf", &path, b"{\"shard\":\"s1\"}").expect_err("no records");
        assert!(bad.to_string().contains(r#"no "records""#), "{bad}");
    }

    #[test]
    fn letters_written_before_causes_group_by_their_error() {
        let body = serde_json::json!({
            "shard": "s1", "file": "f", "error": "boom",
            "records": transaction().records(),
        });
        let letter = decode("buf", "dlq/s1/x.json", body.to_string().as_bytes()).expect("ok");
        assert_eq!(letter.cause, "boom");
    }
}
