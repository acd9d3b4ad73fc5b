//! Logical shard routing (DESIGN §5): which MySQL shard each Spanner change belongs to.
//!
//! - [`shards`]: the shards file (`[{logicalShardId, host, port, user, password |
//!   secretManagerUri, dbName}]` or `{"shardConfigs": [...]}`), validated, with passwords
//!   fetched at start through [`secret`] sources ([`GoogleSecretManager`] in production) and
//!   never printed.
//! - [`session`]: the Spanner Migration Tool session file as a typed mapping (Spanner ↔ source
//!   names and types, primary keys, each table's shard column), for routing and the writer.
//! - [`router`]: the [`ShardRouter`] trait, [`SingleShardRouter`] and [`SessionRouter`];
//!   [`plugin`]: [`PluginRouter`], a shared library implementing `revrepl-shard-router-abi`.
//! - [`assigner`]: [`ShardAssigner`], which completes deletes through a [`RowLookup`], asks
//!   the router, and refuses shard ids that are not in the shards file.
//! - [`request`]: [`RouteRequest`], one decoded change.
//!
//! Every error is a [`RoutingError`], which names the file, entry and field, or the table, key
//! and column, and knows its [`ErrorClass`](revrepl_record::ErrorClass).
//!
//! ```no_run
//! # async fn example(record: revrepl_record::ChangeRecord) -> Result<(), revrepl_shard_routing::RoutingError> {
//! use std::path::Path;
//! use std::sync::Arc;
//! use revrepl_shard_routing::{SecretDirectory, Session, SessionRouter, ShardAssigner, ShardsFile};
//!
//! let shards = ShardsFile::load(Path::new("shards.json"))?;
//! let _connections = shards.resolve(&SecretDirectory::new("/run/secrets")).await?;
//! let session = Arc::new(Session::load(Path::new("session.json"))?);
//! let assigner = ShardAssigner::new(
//!     Box::new(SessionRouter::new(session)),
//!     shards.shard_ids().cloned(),
//! );
//! let destination = assigner.assign_record(&record).await?;
//! # let _ = destination;
//! # Ok(())
//! # }
//! ```

pub mod assigner;
pub mod connection;
pub mod error;
pub mod google_secret_manager;
pub mod overrides;
pub mod plugin;
pub mod plugin_host;
pub mod request;
pub mod router;
pub mod secret;
pub mod session;
pub mod shards;

pub use assigner::{NoRowLookup, RowLookup, RowLookupRequest, ShardAssigner};
pub use connection::{ConnectionProperties, TlsMode};
pub use error::RoutingError;
pub use google_secret_manager::GoogleSecretManager;
pub use overrides::SchemaOverrides;
pub use plugin::PluginRouter;
pub use request::RouteRequest;
pub use router::{RowNeed, SessionRouter, ShardRouter, SingleShardRouter, choose_router};
pub use secret::{
    NoSecretManager, Password, SecretDirectory, SecretEnvironment, SecretStore, SecretVersion,
};
pub use session::{Session, SessionColumn, SessionTable, SourceColumn, SourceTable, SpannerType};
pub use shards::{DEFAULT_PORT, PasswordSource, Shard, ShardConfig, ShardsFile};
