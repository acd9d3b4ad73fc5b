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

/// Starts a read-only consistent snapshot on `conn` and reads the checkpoint of (`run_id`,
/// `shard`) in it. With `at_checkpoint = false`, or when the shard has no checkpoint of the run
/// (no checkpoint table, no row, or a row rewound by `reprocess` that holds no position yet),
/// the point is [`ReadPoint::Current`] and the note says why.
pub async fn open(
    conn: &mut Conn,
    run_id: &str,
    shard: &ShardId,
    at_checkpoint: bool,
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
    let at = position.commit_timestamp;
    Ok(Opened {
        point: ReadPoint::At(at),
        report: ShardPoint {
            shard: shard.to_string(),
            compared_at: Some(at.to_rfc3339()),
            note: None,
        },
    })
}

/// Ends the snapshot.
pub async fn close(conn: &mut Conn) {
    let _ = conn.query_drop("ROLLBACK").await;
}
