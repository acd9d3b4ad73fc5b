//! The [`ShardRouter`] trait and the two built-in routers: one shard, and the session file's
//! shard column (DESIGN §5).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use revrepl_record::{Destination, ShardId};

use crate::error::RoutingError;
use crate::request::RouteRequest;
use crate::session::Session;
use crate::shards::ShardsFile;

/// Which values of a row a router reads, so that a delete that carries only its keys can be
/// completed with the row as it was just before the delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowNeed {
    /// The router decides without looking at the row.
    Nothing,
    /// The router reads these columns.
    Columns(Vec<String>),
    /// The router reads any column (plugins).
    WholeRow,
}

/// Decides the destination of one change: a logical shard, or `skip/` for tables the
/// configuration does not know. Synchronous and without I/O: a delete that lacks the values
/// the router needs is completed beforehand by [`ShardAssigner`](crate::ShardAssigner).
pub trait ShardRouter: Send + Sync + std::fmt::Debug {
    /// What the router reads from rows of `table`.
    fn row_need(&self, table: &str) -> RowNeed;

    /// The destination of `request`. The shard returned is not yet checked against the shards
    /// file; [`ShardAssigner`](crate::ShardAssigner) does that.
    fn route(&self, request: &RouteRequest) -> Result<Destination, RoutingError>;
}

/// Sends every change to one shard (the reference's `single_shard` mode), whatever its table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SingleShardRouter {
    shard: ShardId,
}

impl SingleShardRouter {
    /// Routes everything to `shard`.
    pub fn new(shard: ShardId) -> Self {
        Self { shard }
    }

    /// Routes everything to the only shard of `shards`; an error if it has several.
    pub fn from_shards_file(shards: &ShardsFile) -> Result<Self, RoutingError> {
        match shards.shards() {
            [only] => Ok(Self::new(only.logical_shard_id.clone())),
            all => Err(RoutingError::SingleShard { count: all.len() }),
        }
    }
}

impl ShardRouter for SingleShardRouter {
    fn row_need(&self, _table: &str) -> RowNeed {
        RowNeed::Nothing
    }

    fn route(&self, _request: &RouteRequest) -> Result<Destination, RoutingError> {
        Ok(Destination::Shard(self.shard.clone()))
    }
}

/// Tables of a session file that exist only in Spanner: their changes go to `skip/`, with one
/// log line per table (the `records_skipped` metric of the reader counts them).
#[derive(Debug, Default)]
pub(crate) struct SpannerOnlyTables {
    logged: Mutex<HashSet<String>>,
}

impl SpannerOnlyTables {
    /// Whether `table` of `session` exists only in Spanner; logs the first time per table.
    pub(crate) fn skips(&self, session: &Session, table: &str) -> bool {
        let Some(known) = session.table(table) else {
            return false;
        };
        if !known.is_spanner_only() {
            return false;
        }
        let first = self
            .logged
            .lock()
            .map(|mut logged| logged.insert(table.to_string()))
            .unwrap_or(false);
        if first {
            tracing::warn!(
                table,
                session = session.origin(),
                "table {table:?} exists only in Spanner (the session file has no source table \
                 for it): its changes go to skip/ and are never applied; logged once per table"
            );
        }
        true
    }
}

/// Routes by the value of each table's `ShardIdColumn` in the session file; tables the
/// session file does not know, and tables that exist only in Spanner, go to `skip/`.
#[derive(Debug, Clone)]
pub struct SessionRouter {
    session: Arc<Session>,
    spanner_only: Arc<SpannerOnlyTables>,
}

impl SessionRouter {
    /// Routes by the shard columns of `session`.
    pub fn new(session: Arc<Session>) -> Self {
        Self {
            session,
            spanner_only: Arc::default(),
        }
    }
}

impl ShardRouter for SessionRouter {
    fn row_need(&self, table: &str) -> RowNeed {
        match self
            .session
            .table(table)
            .filter(|table| !table.is_spanner_only())
            .and_then(|table| table.shard_id_column.clone())
        {
            Some(column) => RowNeed::Columns(vec![column]),
            None => RowNeed::Nothing,
        }
    }

    fn route(&self, request: &RouteRequest) -> Result<Destination, RoutingError> {
        let Some(table) = self.session.table(&request.table) else {
            return Ok(Destination::Skip);
        };
        if self.spanner_only.skips(&self.session, &request.table) {
            return Ok(Destination::Skip);
        }
        let Some(column) = &table.shard_id_column else {
            return Err(RoutingError::NoShardColumn {
                table: request.table.clone(),
                key: request.key_text(),
                session: self.session.origin().to_string(),
            });
        };
        request.shard_id_in(column).map(Destination::Shard)
    }
}

/// The router a configuration asks for: a plugin when one is given (told about the session
/// file's tables, if any); otherwise the session file's shard-id columns; otherwise the only
/// shard of the shards file.
pub fn choose_router(
    shards: &ShardsFile,
    session: Option<Arc<Session>>,
    plugin: Option<(&std::path::Path, &str)>,
) -> Result<Box<dyn ShardRouter>, RoutingError> {
    if let Some((path, params)) = plugin {
        let router = crate::plugin::PluginRouter::load(path, params)?;
        return Ok(match session {
            Some(session) => Box::new(router.with_session(session)),
            None => Box::new(router),
        });
    }
    match session {
        Some(session) => Ok(Box::new(SessionRouter::new(session))),
        None => Ok(Box::new(SingleShardRouter::from_shards_file(shards)?)),
    }
}
