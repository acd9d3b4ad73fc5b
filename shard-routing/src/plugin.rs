//! Shard-router plugins: shared libraries that implement `revrepl-shard-router-abi`, loaded with
//! `libloading` (DESIGN §5) by [`crate::plugin_host`], which states the loading invariants
//! (version checked first, never unloaded, every call behind `catch_unwind`, buffers copied
//! then freed by the plugin).

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;

use revrepl_record::Destination;
use revrepl_shard_router_abi::{
    self as abi, ABI_VERSION, ENTRY_SYMBOL, PluginBuffer, RouterVTable, STATUS_ERROR, STATUS_OK,
    STATUS_PANIC,
};

use crate::error::RoutingError;
use crate::plugin_host::{self, LoadFailure, take_buffer, text};
use crate::request::RouteRequest;
use crate::router::{RowNeed, ShardRouter};
use crate::session::Session;

/// A router implemented by a shared library. With a session file, tables the session does not
/// know, and tables that exist only in Spanner, go to `skip/` without asking the plugin.
pub struct PluginRouter {
    path: String,
    table: &'static RouterVTable,
    router: NonNull<c_void>,
    session: Option<Arc<Session>>,
    spanner_only: crate::router::SpannerOnlyTables,
}

// SAFETY: the ABI requires the router behind the handle to be `Send + Sync` (the ABI crate's
// `ShardRouterPlugin` trait has those bounds) and its functions to be callable from any
// thread; the function table is immutable static data of a library that is never unloaded.
unsafe impl Send for PluginRouter {}
// SAFETY: as for `Send`.
unsafe impl Sync for PluginRouter {}

impl std::fmt::Debug for PluginRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRouter")
            .field("path", &self.path)
            .field("session", &self.session.as_ref().map(|s| s.origin()))
            .finish_non_exhaustive()
    }
}

impl PluginRouter {
    /// Loads the plugin at `path`, checks its ABI version and calls its `init` with `params`
    /// (the user's parameter string) once.
    pub fn load(path: &Path, params: &str) -> Result<Self, RoutingError> {
        let shown = path.display().to_string();
        let loaded = plugin_host::load::<RouterVTable>(path, params)
            .map_err(|failure| load_error(failure, &shown))?;
        Ok(Self {
            path: shown,
            table: loaded.table,
            router: loaded.handle,
            session: None,
            spanner_only: Default::default(),
        })
    }

    /// Sends tables unknown to `session` to `skip/` instead of asking the plugin.
    pub fn with_session(mut self, session: Arc<Session>) -> Self {
        self.session = Some(session);
        self
    }

    /// The plugin's path, as given.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether the plugin is asked about `table`: always without a session file; with one,
    /// when the session knows the table and it has a source table.
    fn knows(&self, table: &str) -> bool {
        self.session.as_ref().is_none_or(|session| {
            session.table(table).is_some() && !self.spanner_only.skips(session, table)
        })
    }

    /// Calls `route` and returns the status and the bytes of the output buffer.
    fn call_route(&self, request: &[u8]) -> Result<(i32, Vec<u8>), String> {
        let mut output = PluginBuffer::EMPTY;
        let status = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: `router` came from this table's `init` and is alive until `drop`;
            // `request` is valid for its length; `output` is a valid place for one buffer.
            unsafe {
                (self.table.route)(
                    self.router.as_ptr(),
                    request.as_ptr(),
                    request.len(),
                    &mut output,
                )
            }
        }));
        // SAFETY: `output` is empty or was written by this table's `route`.
        let bytes = unsafe { take_buffer(self.table, output) };
        match status {
            Ok(status) => Ok((status, bytes)),
            Err(_) => Err("a panic escaped the plugin's route function".to_string()),
        }
    }
}

impl ShardRouter for PluginRouter {
    fn row_need(&self, table: &str) -> RowNeed {
        if self.knows(table) {
            RowNeed::WholeRow
        } else {
            RowNeed::Nothing
        }
    }

    fn route(&self, request: &RouteRequest) -> Result<Destination, RoutingError> {
        if !self.knows(&request.table) {
            return Ok(Destination::Skip);
        }
        let during = || {
            format!(
                "while routing the record of table {:?} with key {}",
                request.table,
                request.key_text()
            )
        };
        let protocol = |problem: String| RoutingError::PluginProtocol {
            path: self.path.clone(),
            during: during(),
            problem,
        };
        let wire = abi::RouteRequest {
            table: request.table.clone(),
            row: request.row(),
        };
        let json = serde_json::to_vec(&wire)
            .map_err(|error| protocol(format!("cannot encode the request: {error}")))?;
        let (status, bytes) =
            self.call_route(&json)
                .map_err(|message| RoutingError::PluginPanicked {
                    path: self.path.clone(),
                    during: during(),
                    message,
                })?;
        match status {
            STATUS_OK => {
                let response: abi::RouteResponse = serde_json::from_slice(&bytes)
                    .map_err(|error| protocol(format!("invalid response: {error}")))?;
                request
                    .shard_id(response.logical_shard_id)
                    .map(Destination::Shard)
            }
            STATUS_ERROR => Err(RoutingError::PluginRoute {
                path: self.path.clone(),
                table: request.table.clone(),
                key: request.key_text(),
                message: text(&bytes),
            }),
            STATUS_PANIC => Err(RoutingError::PluginPanicked {
                path: self.path.clone(),
                during: during(),
                message: text(&bytes),
            }),
            other => Err(protocol(format!("unknown status {other}"))),
        }
    }
}

impl Drop for PluginRouter {
    fn drop(&mut self) {
        let result = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: `router` came from this table's `init` and is not used after this.
            unsafe { (self.table.drop_router)(self.router.as_ptr()) }
        }));
        if result.is_err() {
            tracing::warn!(plugin = %self.path, "a panic escaped the plugin's drop_router function");
        }
    }
}

/// Words a loading failure as a routing error.
fn load_error(failure: LoadFailure, path: &str) -> RoutingError {
    let path = path.to_string();
    match failure {
        LoadFailure::Open(reason) => RoutingError::PluginLoad { path, reason },
        LoadFailure::NotAPlugin => RoutingError::NotAPlugin {
            path,
            symbol: ENTRY_SYMBOL,
        },
        LoadFailure::AbiMismatch { found } => RoutingError::PluginAbiMismatch {
            path,
            found,
            expected: ABI_VERSION,
        },
        LoadFailure::BrokenEntry(problem) => RoutingError::PluginProtocol {
            path,
            during: "at load".to_string(),
            problem: problem.to_string(),
        },
        LoadFailure::InitRefused(message) => RoutingError::PluginInit { path, message },
        LoadFailure::InitPanicked(message) => RoutingError::PluginPanicked {
            path,
            during: "in init".to_string(),
            message,
        },
        LoadFailure::NoHandle => RoutingError::PluginProtocol {
            path,
            during: "in init".to_string(),
            problem: "init succeeded but returned no router".to_string(),
        },
        LoadFailure::UnknownStatus(status) => RoutingError::PluginProtocol {
            path,
            during: "in init".to_string(),
            problem: format!("unknown status {status}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loading_failures_are_worded_as_routing_errors() {
        assert_eq!(
            load_error(LoadFailure::AbiMismatch { found: 9 }, "/p/libx.so").to_string(),
            "shard-router plugin \"/p/libx.so\" was built for plugin ABI version 9, but this \
             revrepl loads version 1: rebuild the plugin against the revrepl-shard-router-abi \
             crate of this revrepl release"
        );
        assert_eq!(
            load_error(
                LoadFailure::BrokenEntry("the entry function returned a null table"),
                "/p/libx.so"
            )
            .to_string(),
            "shard-router plugin \"/p/libx.so\" broke the plugin ABI at load: the entry function returned a null table"
        );
    }
}
