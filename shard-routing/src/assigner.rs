//! Assigning each change its destination: complete deletes that lack the values the router
//! needs, ask the router, and check the shard against the shards file (DESIGN §3.8 and §5).
//!
//! Deletes: with `NEW_ROW` capture a DELETE carries only its keys. When the router needs a
//! column that is not a key column, the old values are used if the stream captured them
//! (`NEW_ROW_AND_OLD_VALUES`); otherwise the row is read with a [`RowLookup`] as it was just
//! before the delete committed, at `commit_timestamp - 1ns` (a snapshot that holds every
//! commit before the delete and nothing after).

use std::collections::BTreeSet;
use std::future::Future;

use revrepl_record::{ChangeRecord, Classify, Destination, ModType, ShardId, Timestamp};
use serde_json::{Map, Value};

use crate::error::RoutingError;
use crate::request::RouteRequest;
use crate::router::{RowNeed, ShardRouter};

/// A request to read one row as it was at a past timestamp.
#[derive(Debug, Clone, Copy)]
pub struct RowLookupRequest<'a> {
    /// The Spanner table.
    pub table: &'a str,
    /// The row's primary key, in change-stream JSON encoding.
    pub keys: &'a Map<String, Value>,
    /// The columns wanted: [`RowNeed::Columns`] or [`RowNeed::WholeRow`].
    pub columns: &'a RowNeed,
    /// Read the row as of this timestamp (an exact-staleness read).
    pub read_timestamp: Timestamp,
}

/// Reads a row as it was at a past timestamp; the reader implements it with a Spanner stale
/// read. Values must use the change-stream JSON encoding (INT64 and NUMERIC as strings...), so
/// routers see the same values as for inserts and updates.
pub trait RowLookup: Send + Sync {
    /// The lookup's error; its class says whether trying again may help.
    type Error: std::error::Error + Classify + Send + Sync + 'static;

    /// The row's columns at `request.read_timestamp`, or `None` if no such row existed then.
    fn row_before(
        &self,
        request: &RowLookupRequest<'_>,
    ) -> impl Future<Output = Result<Option<Map<String, Value>>, Self::Error>> + Send;
}

/// The absence of a row lookup: a [`ShardAssigner`] without one refuses deletes whose shard
/// needs a lookup. Has no values.
#[derive(Debug, Clone, Copy)]
pub enum NoRowLookup {}

impl RowLookup for NoRowLookup {
    type Error = RoutingError;

    async fn row_before(
        &self,
        _request: &RowLookupRequest<'_>,
    ) -> Result<Option<Map<String, Value>>, RoutingError> {
        match *self {}
    }
}

/// Gives each change its [`Destination`]: the router's answer, after completing deletes and
/// before checking the shard against the shards file. A shard id that is not in the shards
/// file is an error naming the table, the key and the id, never a new directory.
#[derive(Debug)]
pub struct ShardAssigner<L = NoRowLookup> {
    router: Box<dyn ShardRouter>,
    shards: BTreeSet<ShardId>,
    lookup: Option<L>,
}

impl ShardAssigner<NoRowLookup> {
    /// Routes with `router` to the logical shards `shards` (those of the shards file), without
    /// a row lookup.
    pub fn new(router: Box<dyn ShardRouter>, shards: impl IntoIterator<Item = ShardId>) -> Self {
        Self {
            router,
            shards: shards.into_iter().collect(),
            lookup: None,
        }
    }
}

impl<L: RowLookup> ShardAssigner<L> {
    /// The same assigner, reading deleted rows with `lookup` when needed.
    pub fn with_row_lookup<M: RowLookup>(self, lookup: M) -> ShardAssigner<M> {
        ShardAssigner {
            router: self.router,
            shards: self.shards,
            lookup: Some(lookup),
        }
    }

    /// The router.
    pub fn router(&self) -> &dyn ShardRouter {
        self.router.as_ref()
    }

    /// The row lookup, if one was given.
    pub fn row_lookup(&self) -> Option<&L> {
        self.lookup.as_ref()
    }

    /// The destination of one window-file line (its `shard` field is ignored).
    pub async fn assign_record(&self, record: &ChangeRecord) -> Result<Destination, RoutingError> {
        self.assign(&RouteRequest::from_record(record)?).await
    }

    /// The destination of `request`.
    pub async fn assign(&self, request: &RouteRequest) -> Result<Destination, RoutingError> {
        let need = self.router.row_need(&request.table);
        let destination = if needs_lookup(request, &need) {
            let completed = self.complete_delete(request, &need).await?;
            self.router.route(&completed)?
        } else {
            self.router.route(request)?
        };
        match destination {
            Destination::Shard(shard) if !self.shards.contains(&shard) => {
                Err(RoutingError::UnknownShard {
                    table: request.table.clone(),
                    key: request.key_text(),
                    shard,
                })
            }
            destination => Ok(destination),
        }
    }

    /// `request` with the row read just before the delete as its old values.
    async fn complete_delete(
        &self,
        request: &RouteRequest,
        need: &RowNeed,
    ) -> Result<RouteRequest, RoutingError> {
        let Some(lookup) = &self.lookup else {
            return Err(RoutingError::NoRowLookup {
                table: request.table.clone(),
                key: request.key_text(),
            });
        };
        let read_timestamp = just_before(request.commit_timestamp);
        tracing::debug!(
            table = %request.table,
            read_timestamp = %read_timestamp.to_rfc3339(),
            "reading a deleted row to find its shard"
        );
        let lookup_request = RowLookupRequest {
            table: &request.table,
            keys: &request.keys,
            columns: need,
            read_timestamp,
        };
        let row = lookup
            .row_before(&lookup_request)
            .await
            .map_err(|error| RoutingError::RowLookup {
                table: request.table.clone(),
                key: request.key_text(),
                read_timestamp: read_timestamp.to_rfc3339(),
                class: error.class(),
                source: Box::new(error),
            })?
            .ok_or_else(|| RoutingError::DeletedRowNotFound {
                table: request.table.clone(),
                key: request.key_text(),
                read_timestamp: read_timestamp.to_rfc3339(),
            })?;
        let mut old_values = row;
        old_values.extend(request.old_values.clone());
        Ok(RouteRequest {
            old_values,
            ..request.clone()
        })
    }
}

/// Whether `request` is a delete that lacks values the router reads.
fn needs_lookup(request: &RouteRequest, need: &RowNeed) -> bool {
    if request.mod_type != ModType::Delete {
        return false;
    }
    match need {
        RowNeed::Nothing => false,
        RowNeed::Columns(columns) => columns.iter().any(|column| !request.has_column(column)),
        RowNeed::WholeRow => request.old_values.is_empty(),
    }
}

/// One nanosecond before `commit`: a snapshot with every commit before it and none after.
/// (Spanner's smallest timestamp has no predecessor; no change commits there.)
fn just_before(commit: Timestamp) -> Timestamp {
    Timestamp::from_nanos(commit.as_nanos() - 1).unwrap_or(commit)
}
