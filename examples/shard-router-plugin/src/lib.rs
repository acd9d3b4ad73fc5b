//! An example revrepl shard-router plugin: routes each row by a hash of one column.
//!
//! Parameters (the `init` string) are JSON:
//!
//! ```json
//! {"column": "SingerId", "shards": ["ls1", "ls2"], "tables": {"Concerts": "VenueId"}}
//! ```
//!
//! A row goes to `shards[fnv1a(text of its column) % shards.len()]`, where the column is the
//! table's entry in `tables`, or `column` for every other table. The hash is FNV-1a (64 bits)
//! of the value's text in Spanner's change-stream encoding (INT64 values are decimal strings),
//! so the choice is stable across builds, platforms and Rust versions.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use revrepl_shard_router_abi::{PluginError, RouteRequest, ShardRouterPlugin, export_router};
use serde::Deserialize;

/// The parameters of [`HashRouter`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// The column hashed for tables not listed in `tables`.
    column: String,
    /// The logical shards, in the order the hash indexes them.
    shards: Vec<String>,
    /// Per-table column overrides.
    #[serde(default)]
    tables: BTreeMap<String, String>,
}

/// Routes a row to one of the configured shards by the hash of one column.
#[derive(Debug)]
pub struct HashRouter {
    params: Params,
}

impl ShardRouterPlugin for HashRouter {
    fn init(params: &str) -> Result<Self, PluginError> {
        let params: Params = serde_json::from_str(params)
            .map_err(|error| PluginError::new(format!("invalid parameters: {error}")))?;
        if params.shards.is_empty() {
            return Err(PluginError::new("invalid parameters: \"shards\" is empty"));
        }
        Ok(Self { params })
    }

    fn route(&self, request: &RouteRequest) -> Result<String, PluginError> {
        let column = self
            .params
            .tables
            .get(&request.table)
            .unwrap_or(&self.params.column);
        let value = request.text(column)?;
        let count = self.params.shards.len() as u64;
        let index = (fnv1a(value.as_bytes()) % count) as usize;
        Ok(self.params.shards[index].clone())
    }
}

/// The 64-bit FNV-1a hash of `bytes`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

export_router!(HashRouter);
