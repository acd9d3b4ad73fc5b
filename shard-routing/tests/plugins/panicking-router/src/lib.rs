//! A test shard-router plugin that panics, to prove a panic becomes an error, not a crash.
//!
//! `init` panics when its parameter string is `panic in init`; `route` sends table `Calm` to
//! `ls1` and panics on every other table.
#![forbid(unsafe_code)]

use revrepl_shard_router_abi::{PluginError, RouteRequest, ShardRouterPlugin, export_router};

/// Panics on request.
#[derive(Debug)]
pub struct PanickingRouter;

impl ShardRouterPlugin for PanickingRouter {
    fn init(params: &str) -> Result<Self, PluginError> {
        assert_ne!(params, "panic in init", "init was told to panic");
        Ok(Self)
    }

    fn route(&self, request: &RouteRequest) -> Result<String, PluginError> {
        if request.table == "Calm" {
            return Ok("ls1".to_string());
        }
        panic!("no route for table {}", request.table)
    }
}

export_router!(PanickingRouter);
