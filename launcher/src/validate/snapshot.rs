//! The exact point a shard is compared at.
//!
//! The writer applies each shard's Spanner transactions whole, in commit order, and never ends
//! a MySQL transaction between Spanner transactions that share a commit timestamp; every
//! MySQL transaction also updates the shard's checkpoint row (`revrepl_checkpoint`). So in
//! any MySQL snapshot, the checkpoint's commit timestamp T says exactly what the shard holds:
//! every change routed to it with a commit timestamp up to T, none after. Spanner read at
//! exactly T (a stale read at a fixed timestamp), restricted to the rows routed to the shard,
//! is therefore what the shard must equal — while both sides keep moving.
//!
//! [`open`] starts `START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY` on the shard's
//! connection and reads the checkpoint inside it; every later read of the shard in the same
//! transaction sees that snapshot.
//!
//! **Quiet shards.** The checkpoint moves only when a change of the shard is applied, so on a
//! shard without changes for a while T lies far back — possibly before the database's
//! `version_retention_period` (default 1 hour), where Spanner refuses to read. The metadata
//! store says more: a window recorded `SUCCESS` for the shard is applied (its changes
//! committed in MySQL, or it had none). [`Progress::applied_through`] reads that before the snapshot is
//! taken; when the end E of the last such window lies after T, nothing of the shard was
//! committed in Spanner between T and E, so the snapshot also equals Spanner at E − 1 ns,
//! which is where the shard is compared (the report shows both).

use google_cloud_spanner::transaction::TimestampBound;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use revrepl_record::{ShardId, Timestamp};
use revrepl_writer::checkpoint::{self, CheckpointReadError};
use serde::Serialize;

use crate::error::LauncherError;

/// Where Spanner is read for a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReadPoint {
    /// Exactly at this commit timestamp: the shard's checkpoint.
    At(Timestamp),
    /// Spanner's current state (strong read): no checkpoint to compare at.
    Current,
}

impl ReadPoint {
    /// The Spanner timestamp bound of this point.
    pub fn bound(self) -> Result<TimestampBound, String> {
        match self {
            Self::Current => Ok(TimestampBound::strong()),
            Self::At(at) => {
                let nanos = i32::try_from(at.nanos()).map_err(|e| e.to_string())?;
                let timestamp =
                    google_cloud_wkt::Timestamp::new(at.seconds(), nanos).map_err(|e| {
                        format!("commit timestamp {at} is not a Spanner timestamp: {e}")
                    })?;
                Ok(TimestampBound::read_timestamp(timestamp))
            }
        }
    }

    /// The commit timestamp, if any.
    pub fn timestamp(self) -> Option<Timestamp> {
        match self {
            Self::At(at) => Some(at),
            Self::Current => None,
        }
    }
}

/// Where one shard was compared, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShardPoint {
    /// The shard.
    pub shard: String,
    /// The Spanner commit timestamp compared at (RFC 3339, nanoseconds), when the shard's
    /// checkpoint gave one; `None`: the current state of both sides.
    pub compared_at: Option<String>,
    /// Why the shard was compared at the current state instead, if it was.
    pub note: Option<String>,
}

/// What [`open`] found.
#[derive(Debug, Clone)]
pub struct Opened {
    /// Where to read Spanner.
    pub point: ReadPoint,
    /// As reported.
    pub report: ShardPoint,
}

/// MySQL error: table does not exist.
const NO_SUCH_TABLE: u16 = 1146;
/// MySQL error: command denied to the user for the table.
const TABLE_ACCESS_DENIED: u16 = 1142;

/// The run's progress in the metadata store, to read [`Progress::applied_through`] from.
pub struct Progress {
    store: std::sync::Arc<dyn revrepl_metadata::MetadataStore>,
    run: revrepl_metadata::RunRecord,
}

impl Progress {
    /// Opens the configured metadata store; `None` when it or the run cannot be read (then
    /// only checkpoints count).
    pub async fn open(config: &revrepl_config::Config) -> Option<Self> {
        let run_id = revrepl_metadata::RunId::new(config.run_id.clone()).ok()?;
        let store = crate::store::open_existing(config).await.ok()?;
        let run = store.run(&run_id).await.ok()??;
        Some(Self { store, run })
    }

    /// Per shard, the end of the last window recorded as applied (`SUCCESS`), read now; empty
    /// when the store cannot be read.
    pub async fn applied_through(&self) -> std::collections::BTreeMap<ShardId, Timestamp> {
        let mut through = std::collections::BTreeMap::new();
        let Ok(progress) = self
            .store
            .list_process_progress(
                self.run.run_id(),
                Some(revrepl_metadata::ProcessStatus::Success),
            )
            .await
        else {
            return through;
        };
        let length = i128::from(self.run.window().seconds()) * 1_000_000_000;
        for row in progress {
            if let Ok(end) = Timestamp::from_nanos(row.file_start_interval.as_nanos() + length) {
                through.insert(row.shard, end);
            }
        }
        through
    }
}

/// Starts a read-only consistent snapshot on `conn` and reads the checkpoint of (`run_id`,
/// `shard`) in it. With `at_checkpoint = false`, or when the shard has no checkpoint of the run
/// (no checkpoint table, no row, or a row rewound by `reprocess` that holds no position yet),
/// the point is [`ReadPoint::Current`] and the note says why. `applied_through`: the end of
/// the last window recorded applied before the snapshot (see [`Progress`]).
pub async fn open(
    conn: &mut Conn,
    run_id: &str,
    shard: &ShardId,
    at_checkpoint: bool,
    applied_through: Option<Timestamp>,
) -> Result<Opened, LauncherError> {
    let failed = |operation: &str, error: &mysql_async::Error| LauncherError::MySql {
        shard: shard.to_string(),
        operation: operation.to_string(),
        message: error.to_string(),
    };
    // A consistent snapshot needs REPEATABLE READ (the server's default may differ).
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(|e| failed("set the isolation level", &e))?;
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await
        .map_err(|e| failed("start a consistent snapshot", &e))?;
    let current = |note: String| Opened {
        point: ReadPoint::Current,
        report: ShardPoint {
            shard: shard.to_string(),
            compared_at: None,
            note: Some(note),
        },
    };
    if !at_checkpoint {
        return Ok(current(
            "--current: compared at the current state of both sides".into(),
        ));
    }
    let read = checkpoint::read(conn, run_id, shard, false).await;
    let position = match read {
        Ok(Some(checkpoint)) => checkpoint.position,
        Ok(None) => {
            return Ok(current(format!(
                "no checkpoint of run {run_id:?} in the shard (the writer has applied nothing \
                 of this run): compared at the current state, exact only when replication has \
                 caught up and writes have paused"
            )));
        }
        Err(CheckpointReadError::Database(mysql_async::Error::Server(server)))
            if server.code == NO_SUCH_TABLE =>
        {
            return Ok(current(
                "no checkpoint table in the shard (the writer never ran against it): compared \
                 at the current state, exact only when writes have paused"
                    .into(),
            ));
        }
        Err(CheckpointReadError::Database(mysql_async::Error::Server(server)))
            if server.code == TABLE_ACCESS_DENIED =>
        {
            return Ok(current(format!(
                "the user may not read the checkpoint table revrepl_checkpoint ({}): compared \
                 at the current state, exact only when writes have paused; GRANT SELECT on it \
                 to compare at the checkpoint",
                server.message
            )));
        }
        Err(CheckpointReadError::Database(e)) => return Err(failed("read the checkpoint", &e)),
        Err(CheckpointReadError::Invalid(reason)) => {
            return Err(LauncherError::MySql {
                shard: shard.to_string(),
                operation: "read the checkpoint".into(),
                message: reason,
            });
        }
    };
    let Some(position) = position else {
        return Ok(current(format!(
            "the checkpoint of run {run_id:?} was rewound (reprocess) and holds no position yet: \
             compared at the current state"
        )));
    };
    let checkpoint = position.commit_timestamp;
    let quiet_until = applied_through
        .and_then(|end| Timestamp::from_nanos(end.as_nanos() - 1).ok())
        .filter(|last| *last > checkpoint);
    let (at, note) = match quiet_until {
        Some(last) => (
            last,
            Some(format!(
                "the checkpoint's last change is at {}; windows up to {} are applied with no \
                 later change for this shard, so the shard is compared at their end",
                checkpoint.to_rfc3339(),
                last.to_rfc3339()
            )),
        ),
        None => (checkpoint, None),
    };
    Ok(Opened {
        point: ReadPoint::At(at),
        report: ShardPoint {
            shard: shard.to_string(),
            compared_at: Some(at.to_rfc3339()),
            note,
        },
    })
}

/// Ends the snapshot.
pub async fn close(conn: &mut Conn) {
    let _ = conn.query_drop("ROLLBACK").await;
}
