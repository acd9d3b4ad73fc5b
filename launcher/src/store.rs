//! Opening the metadata store the configuration names, for commands that only read or mark
//! progress: nothing is created.

use std::sync::Arc;

use revrepl_config::{Config, MetadataKind};
use revrepl_metadata::{MetadataError, MetadataStore, MissingTables, open_store};

use crate::error::LauncherError;

/// Opens the configured store and checks that its tables exist, creating nothing: an SQLite
/// file that does not exist, or missing tables, are errors that point at `revrepl init`.
pub async fn open_existing(config: &Config) -> Result<Arc<dyn MetadataStore>, LauncherError> {
    let metadata = &config.metadata;
    if metadata.store == MetadataKind::Sqlite && !metadata.path.is_file() {
        return Err(LauncherError::Usage(format!(
            "metadata file {} does not exist: check metadata.path, or run `revrepl init` (or \
             the reader) first",
            metadata.path.display()
        )));
    }
    open_store(config, MissingTables::Fail)
        .await
        .map_err(|error| match error {
            MetadataError::MalformedTable { .. } | MetadataError::InvalidRequest { .. } => {
                LauncherError::Usage(format!(
                    "{error}; fix the [metadata] section, or run `revrepl init` to create the \
                     metadata tables"
                ))
            }
            other => other.into(),
        })
}
