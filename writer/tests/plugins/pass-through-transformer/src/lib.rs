//! A transformation plugin that keeps every record as it is. `make bench-writer` loads it to
//! measure what a plugin costs per row: the request built and parsed, the answer built and
//! parsed, and the calls across the boundary.
#![forbid(unsafe_code)]

use revrepl_shard_router_abi::{
    PluginError, TransformRequest, TransformationPlugin, Transformed, export_transformer,
};

/// Keeps every record.
#[derive(Debug)]
pub struct PassThrough;

impl TransformationPlugin for PassThrough {
    fn init(_params: &str) -> Result<Self, PluginError> {
        Ok(Self)
    }

    fn transform(&self, _request: &TransformRequest) -> Result<Transformed, PluginError> {
        Ok(Transformed::Keep)
    }
}

export_transformer!(PassThrough);
