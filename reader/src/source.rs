//! Where change-stream records come from: a seam, so the partition logic can be tested with
//! scripted streams and run against Spanner.

use std::fmt;

use async_trait::async_trait;
use futures::stream::BoxStream;
use revrepl_record::Timestamp;

use crate::change_stream::ChangeStreamRecord;
use crate::error::ReaderError;
use crate::partition::Token;

/// The records of one partition query, in the order Spanner sends them.
pub type RecordStream = BoxStream<'static, Result<ChangeStreamRecord, ReaderError>>;

/// Runs change-stream partition queries.
#[async_trait]
pub trait ChangeStreamSource: Send + Sync + fmt::Debug {
    /// Queries partition `token` (`None`: the initial query) from `start` (inclusive), with no
    /// end, and no automatic resume: on any error the caller re-queries from its own position.
    async fn query(&self, token: &Token, start: Timestamp) -> Result<RecordStream, ReaderError>;

    /// The database and stream, for messages.
    fn location(&self) -> &str;
}
