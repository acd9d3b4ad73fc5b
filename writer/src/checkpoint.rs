//! The checkpoint row inside each shard (DESIGN §6.3).
//!
//! Table `revrepl_checkpoint`, created by the writer if missing, holds one row per (run id,
//! shard): the last window applied to and the commit position of the last applied record. It is
//! updated in the same MySQL transaction as the data, so after a crash at any point the row
//! says exactly which Spanner transactions are in the shard; the applier reads it (locked)
//! at the start of every batch and skips what it covers.
//!
//! Times are stored in UTC: `DATETIME(6)` columns for people to read, plus the nanoseconds of
//! the commit timestamp so that positions compare exactly.

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use mysql_async::prelude::Queryable;
use mysql_async::{Row, Value};
use revrepl_record::{ShardId, Timestamp, Window};

use crate::batch::CommitPosition;

/// The checkpoint table's name.
pub const CHECKPOINT_TABLE: &str = "revrepl_checkpoint";

/// The checkpoint table's definition; `IF NOT EXISTS`, so running it again is harmless.
pub const CREATE_CHECKPOINT_TABLE: &str = "CREATE TABLE IF NOT EXISTS `revrepl_checkpoint` (\
  `run_id` VARCHAR(128) NOT NULL, \
  `shard` VARCHAR(128) NOT NULL, \
  `window_start` DATETIME(6) NOT NULL COMMENT 'UTC', \
  `window_end` DATETIME(6) NOT NULL COMMENT 'UTC', \
  `commit_timestamp` DATETIME(6) NULL COMMENT 'UTC, last applied record; NULL: nothing applied in the window yet', \
  `commit_nanos` INT UNSIGNED NULL COMMENT 'nanoseconds within the second of commit_timestamp', \
  `server_transaction_id` VARCHAR(1024) NULL, \
  `record_sequence` VARCHAR(255) NULL, \
  `applied_records` BIGINT UNSIGNED NOT NULL DEFAULT 0, \
  `applied_transactions` BIGINT UNSIGNED NOT NULL DEFAULT 0, \
  `updated_at` TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), \
  PRIMARY KEY (`run_id`, `shard`)\
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

const SELECT: &str = "SELECT `window_start`, `window_end`, `commit_timestamp`, `commit_nanos`, \
  `server_transaction_id`, `record_sequence`, `applied_records`, `applied_transactions` \
  FROM `revrepl_checkpoint` WHERE `run_id` = ? AND `shard` = ?";

const UPSERT: &str = "INSERT INTO `revrepl_checkpoint` (`run_id`, `shard`, `window_start`, \
  `window_end`, `commit_timestamp`, `commit_nanos`, `server_transaction_id`, `record_sequence`, \
  `applied_records`, `applied_transactions`) VALUES (?,?,?,?,?,?,?,?,?,?) \
  ON DUPLICATE KEY UPDATE `window_start`=VALUES(`window_start`), \
  `window_end`=VALUES(`window_end`), `commit_timestamp`=VALUES(`commit_timestamp`), \
  `commit_nanos`=VALUES(`commit_nanos`), `server_transaction_id`=VALUES(`server_transaction_id`), \
  `record_sequence`=VALUES(`record_sequence`), \
  `applied_records`=`applied_records`+VALUES(`applied_records`), \
  `applied_transactions`=`applied_transactions`+VALUES(`applied_transactions`)";

/// What one shard has applied for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The run.
    pub run_id: String,
    /// The shard.
    pub shard: ShardId,
    /// The window of the last apply.
    pub window: Window,
    /// The position of the last applied record; `None` when nothing of `window` is applied
    /// yet (after a rewind).
    pub position: Option<CommitPosition>,
    /// Records applied by this run, in total.
    pub applied_records: u64,
    /// Spanner transactions applied by this run, in total.
    pub applied_transactions: u64,
}

impl Checkpoint {
    /// Whether the Spanner transaction ending at `position` is already applied.
    pub fn covers(&self, position: &CommitPosition) -> bool {
        self.position
            .as_ref()
            .is_some_and(|applied| position.cmp_transaction(applied).is_le())
    }
}

/// Why a checkpoint row cannot be read.
#[derive(Debug)]
pub enum CheckpointReadError {
    /// MySQL failed (a missing table is error 1146).
    Database(mysql_async::Error),
    /// The row holds something that is not a checkpoint; says which column.
    Invalid(String),
}

impl From<mysql_async::Error> for CheckpointReadError {
    fn from(error: mysql_async::Error) -> Self {
        Self::Database(error)
    }
}

/// Reads the checkpoint of (`run_id`, `shard`); `lock` adds `FOR UPDATE` (inside a
/// transaction, so that two writers of one shard cannot both apply; `revrepl validate
/// --repair` takes the same lock to hold the writer while it repairs).
pub async fn read<Q: Queryable>(
    conn: &mut Q,
    run_id: &str,
    shard: &ShardId,
    lock: bool,
) -> Result<Option<Checkpoint>, CheckpointReadError> {
    let query = if lock {
        format!("{SELECT} FOR UPDATE")
    } else {
        SELECT.to_string()
    };
    let row: Option<Row> = conn.exec_first(query, (run_id, shard.as_str())).await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let invalid = |what: &str| CheckpointReadError::Invalid(format!("column {what} is invalid"));
    let time = |index: usize, what: &str| -> Result<Option<Timestamp>, CheckpointReadError> {
        match row.as_ref(index) {
            None | Some(Value::NULL) => Ok(None),
            Some(value) => timestamp_of(value).map(Some).ok_or_else(|| invalid(what)),
        }
    };
    let text = |index: usize| -> Option<String> {
        match row.as_ref(index) {
            Some(Value::Bytes(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        }
    };
    let count = |index: usize| -> u64 {
        match row.as_ref(index) {
            Some(Value::UInt(n)) => *n,
            Some(Value::Int(n)) => u64::try_from(*n).unwrap_or_default(),
            Some(Value::Bytes(bytes)) => std::str::from_utf8(bytes)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_default(),
            _ => 0,
        }
    };
    let start = time(0, "window_start")?.ok_or_else(|| invalid("window_start"))?;
    let end = time(1, "window_end")?.ok_or_else(|| invalid("window_end"))?;
    let window = Window::from_bounds(start, end).ok_or_else(|| invalid("window_end"))?;
    let position = match time(2, "commit_timestamp")? {
        None => None,
        Some(commit) => {
            let nanos = u32::try_from(count(3)).map_err(|_| invalid("commit_nanos"))?;
            let commit_timestamp =
                Timestamp::new(commit.seconds(), nanos).map_err(|_| invalid("commit_nanos"))?;
            Some(CommitPosition {
                commit_timestamp,
                server_transaction_id: text(4).ok_or_else(|| invalid("server_transaction_id"))?,
                record_sequence: text(5).unwrap_or_default(),
            })
        }
    };
    Ok(Some(Checkpoint {
        run_id: run_id.to_string(),
        shard: shard.clone(),
        window,
        position,
        applied_records: count(6),
        applied_transactions: count(7),
    }))
}

/// Writes the checkpoint: the window and position replace the stored ones, the counts are
/// added to the stored ones.
pub(crate) async fn write<Q: Queryable>(
    conn: &mut Q,
    run_id: &str,
    shard: &ShardId,
    window: Window,
    position: Option<&CommitPosition>,
    added_records: u64,
    added_transactions: u64,
) -> Result<(), mysql_async::Error> {
    let (commit, nanos, transaction, sequence) = match position {
        Some(p) => (
            utc_value(p.commit_timestamp),
            Value::UInt(u64::from(p.commit_timestamp.nanos())),
            Value::Bytes(p.server_transaction_id.as_bytes().to_vec()),
            Value::Bytes(p.record_sequence.as_bytes().to_vec()),
        ),
        None => (Value::NULL, Value::NULL, Value::NULL, Value::NULL),
    };
    let params = vec![
        Value::Bytes(run_id.as_bytes().to_vec()),
        Value::Bytes(shard.as_str().as_bytes().to_vec()),
        utc_value(window.start()),
        utc_value(window.end()),
        commit,
        nanos,
        transaction,
        sequence,
        Value::UInt(added_records),
        Value::UInt(added_transactions),
    ];
    conn.exec_drop(UPSERT, params).await
}

/// A timestamp as a `DATETIME(6)` value in UTC (sub-microsecond digits are dropped).
fn utc_value(timestamp: Timestamp) -> Value {
    let time = timestamp.to_datetime().naive_utc();
    Value::Date(
        u16::try_from(time.year()).unwrap_or_default(),
        time.month() as u8,
        time.day() as u8,
        time.hour() as u8,
        time.minute() as u8,
        time.second() as u8,
        time.nanosecond() / 1_000,
    )
}

/// A `DATETIME` value in UTC as a timestamp.
fn timestamp_of(value: &Value) -> Option<Timestamp> {
    let time = match value {
        Value::Date(year, month, day, hour, minute, second, micros) => {
            NaiveDate::from_ymd_opt(i32::from(*year), u32::from(*month), u32::from(*day))?
                .and_hms_micro_opt(
                    u32::from(*hour),
                    u32::from(*minute),
                    u32::from(*second),
                    *micros,
                )?
        }
        Value::Bytes(bytes) => {
            let text = std::str::from_utf8(bytes).ok()?;
            NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").ok()?
        }
        _ => return None,
    };
    Some(Timestamp::from(time.and_utc()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(seconds: i64, txid: &str) -> CommitPosition {
        CommitPosition {
            commit_timestamp: Timestamp::new(seconds, 5).expect("valid"),
            server_transaction_id: txid.into(),
            record_sequence: "00000003".into(),
        }
    }

    #[test]
    fn covers_transactions_up_to_its_position() {
        let window = Window::from_bounds(
            Timestamp::new(0, 0).expect("valid"),
            Timestamp::new(10, 0).expect("valid"),
        )
        .expect("window");
        let mut checkpoint = Checkpoint {
            run_id: "r".into(),
            shard: ShardId::new("s").expect("valid"),
            window,
            position: Some(position(5, "b")),
            applied_records: 0,
            applied_transactions: 0,
        };
        assert!(checkpoint.covers(&position(4, "z")));
        assert!(checkpoint.covers(&position(5, "a")));
        assert!(checkpoint.covers(&CommitPosition {
            record_sequence: "00000009".into(),
            ..position(5, "b")
        }));
        assert!(!checkpoint.covers(&position(5, "c")));
        checkpoint.position = None;
        assert!(!checkpoint.covers(&position(1, "a")));
    }

    #[test]
    fn datetimes_round_trip_in_utc() {
        let ts = Timestamp::new(1_710_054_000, 123_456_000).expect("valid");
        assert_eq!(timestamp_of(&utc_value(ts)), Some(ts));
        assert_eq!(
            timestamp_of(&Value::Bytes(b"2024-03-10 07:00:00.123456".to_vec())),
            Some(ts)
        );
    }
}
