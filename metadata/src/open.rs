//! Opening the metadata store a configuration names.

use std::sync::Arc;

use revrepl_config::{Config, MetadataKind};

use crate::error::MetadataError;
use crate::spanner::{SpannerMetadataStore, SpannerOptions};
use crate::sqlite::{SqliteMetadataStore, SqliteOptions};
use crate::store::{MetadataStore, MissingTables};

/// Opens the configured store (`metadata.store`) and checks its tables, creating missing ones
/// when `missing` says so. The Spanner store's endpoints default to `spanner.endpoint` and
/// `spanner.admin_endpoint`.
pub async fn open_store(
    config: &Config,
    missing: MissingTables,
) -> Result<Arc<dyn MetadataStore>, MetadataError> {
    let metadata = &config.metadata;
    let store: Arc<dyn MetadataStore> = match metadata.store {
        MetadataKind::Sqlite => {
            let mut options = SqliteOptions::default();
            if let Some(suffix) = &metadata.table_suffix {
                options = options.with_table_suffix(suffix.clone());
            }
            Arc::new(SqliteMetadataStore::open(&metadata.path, options).await?)
        }
        MetadataKind::Spanner => {
            let database =
                metadata
                    .database
                    .clone()
                    .ok_or_else(|| MetadataError::InvalidRequest {
                        reason: "metadata.database is required when metadata.store = \"spanner\""
                            .into(),
                    })?;
            let mut options = SpannerOptions::new(database);
            if let Some(endpoint) = metadata
                .endpoint
                .as_ref()
                .or(config.spanner.endpoint.as_ref())
            {
                options = options.with_endpoint(endpoint.clone());
            }
            let admin = metadata
                .admin_endpoint
                .as_ref()
                .or(config.spanner.admin_endpoint.as_ref());
            if let Some(endpoint) = admin {
                options = options.with_admin_endpoint(endpoint.clone());
            }
            if let Some(suffix) = &metadata.table_suffix {
                options = options.with_table_suffix(suffix.clone());
            }
            Arc::new(SpannerMetadataStore::connect(options).await?)
        }
    };
    store.ensure_tables(missing).await?;
    Ok(store)
}
