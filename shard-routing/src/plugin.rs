//! Shard-router plugins: shared libraries that implement `revrepl-shard-router-abi`, loaded with
//! `libloading` (DESIGN §5).
//!
//! Invariants:
//! - a library is accepted only if it exports [`ENTRY_SYMBOL`] and its function table declares
//!   [`ABI_VERSION`]; the version is read before any other field, so a library built for
//!   another version is refused with a message naming both versions;
//! - a loaded library is never unloaded: its code stays mapped for the life of the process, so
//!   the function table, the router handle and any thread-local destructors the plugin
//!   registered stay valid;
//! - `init` runs once, at load; every call is wrapped in `catch_unwind` (the ABI's functions
//!   already catch the plugin's panics; this also covers hand-written plugins), so a plugin
//!   panic is an error, never a crash;
//! - buffers the plugin returns are copied, then handed back to the plugin to free.

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;

use libloading::Library;
use revrepl_record::Destination;
use revrepl_shard_router_abi::{
    self as abi, ABI_VERSION, ENTRY_SYMBOL, ENTRY_SYMBOL_PREFIX, EntryFn, PluginBuffer,
    RouterVTable, STATUS_ERROR, STATUS_OK, STATUS_PANIC,
};

use crate::error::RoutingError;
use crate::request::RouteRequest;
use crate::router::{RowNeed, ShardRouter};
use crate::session::Session;

/// Other ABI versions looked for when [`ENTRY_SYMBOL`] is missing, to say which version a
/// plugin was built for.
const OTHER_VERSIONS: std::ops::RangeInclusive<u32> = 0..=32;

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
        let load_error = |reason: String| RoutingError::PluginLoad {
            path: shown.clone(),
            reason,
        };
        // An absolute path, so the loader never searches the system library path instead.
        let absolute =
            std::fs::canonicalize(path).map_err(|error| load_error(error.to_string()))?;
        // SAFETY: loading runs the library's initialisers. The operator configured this file
        // as a revrepl shard-router plugin, which is the trust any plugin needs.
        let library =
            unsafe { Library::new(&absolute) }.map_err(|error| load_error(error.to_string()))?;
        // SAFETY: every version of the ABI gives the entry symbol the type `EntryFn`.
        let entry = match unsafe { library.get::<EntryFn>(ENTRY_SYMBOL) } {
            Ok(symbol) => *symbol,
            Err(_) => return Err(missing_entry(&library, &shown)),
        };
        // SAFETY: the entry function of ABI version 1 takes nothing and returns a pointer to
        // a static table; the library stays loaded (forgotten just below on success).
        let table = unsafe { table_from_entry(entry, &shown) }?;
        // Never unload: `table` and everything `init` creates live as long as the process.
        std::mem::forget(library);
        let router = init(table, params, &shown)?;
        Ok(Self {
            path: shown,
            table,
            router,
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

/// Explains why a library has no [`ENTRY_SYMBOL`]: built for another ABI version, or not a
/// plugin at all.
fn missing_entry(library: &Library, path: &str) -> RoutingError {
    for version in OTHER_VERSIONS.filter(|version| *version != ABI_VERSION) {
        let symbol = format!("{ENTRY_SYMBOL_PREFIX}{version}");
        // SAFETY: only the symbol's presence is checked; it is never called or read.
        if unsafe { library.get::<*const c_void>(symbol.as_str()) }.is_ok() {
            return RoutingError::PluginAbiMismatch {
                path: path.to_string(),
                found: version,
                expected: ABI_VERSION,
            };
        }
    }
    RoutingError::NotAPlugin {
        path: path.to_string(),
        symbol: ENTRY_SYMBOL,
    }
}

/// Calls the entry function and checks the table it returns.
///
/// # Safety
///
/// `entry` must be callable as an [`EntryFn`] and stay valid for the life of the process, and
/// the pointer it returns must be null or point to static data whose first field is a `u32`.
unsafe fn table_from_entry(
    entry: EntryFn,
    path: &str,
) -> Result<&'static RouterVTable, RoutingError> {
    let protocol = |problem: &str| RoutingError::PluginProtocol {
        path: path.to_string(),
        during: "at load".to_string(),
        problem: problem.to_string(),
    };
    // SAFETY: guaranteed by the caller; the entry function only returns a pointer.
    let table =
        catch_unwind(|| unsafe { entry() }).map_err(|_| protocol("the entry function panicked"))?;
    if table.is_null() {
        return Err(protocol("the entry function returned a null table"));
    }
    // SAFETY: every ABI version starts its table with the `u32` version, so reading only that
    // field is valid whatever version the plugin was built for.
    let version = unsafe { table.cast::<u32>().read() };
    if version != ABI_VERSION {
        return Err(RoutingError::PluginAbiMismatch {
            path: path.to_string(),
            found: version,
            expected: ABI_VERSION,
        });
    }
    // SAFETY: the version says the table has the layout of `RouterVTable`; it is static data
    // of a library that is never unloaded.
    Ok(unsafe { &*table })
}

/// Calls `init` once and returns the router handle.
fn init(
    table: &'static RouterVTable,
    params: &str,
    path: &str,
) -> Result<NonNull<c_void>, RoutingError> {
    let mut router: *mut c_void = std::ptr::null_mut();
    let mut message = PluginBuffer::EMPTY;
    let status = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `params` is valid for its length; `router` and `message` are valid places
        // for one write each.
        unsafe { (table.init)(params.as_ptr(), params.len(), &mut router, &mut message) }
    }));
    // SAFETY: `message` is empty or was written by this table's `init`.
    let message = text(&unsafe { take_buffer(table, message) });
    let panicked = |message: String| RoutingError::PluginPanicked {
        path: path.to_string(),
        during: "in init".to_string(),
        message,
    };
    let protocol = |problem: String| RoutingError::PluginProtocol {
        path: path.to_string(),
        during: "in init".to_string(),
        problem,
    };
    match status {
        Err(_) => Err(panicked(
            "a panic escaped the plugin's init function".to_string(),
        )),
        Ok(STATUS_OK) => NonNull::new(router)
            .ok_or_else(|| protocol("init succeeded but returned no router".to_string())),
        Ok(STATUS_ERROR) => Err(RoutingError::PluginInit {
            path: path.to_string(),
            message,
        }),
        Ok(STATUS_PANIC) => Err(panicked(message)),
        Ok(other) => Err(protocol(format!("unknown status {other}"))),
    }
}

/// Copies a buffer the plugin returned and gives it back to the plugin.
///
/// # Safety
///
/// `buffer` must be [`PluginBuffer::EMPTY`] or a buffer returned by `table`'s functions and
/// not yet freed.
unsafe fn take_buffer(table: &RouterVTable, buffer: PluginBuffer) -> Vec<u8> {
    if buffer.ptr.is_null() {
        return Vec::new();
    }
    // SAFETY: guaranteed by the caller: the plugin wrote `len` bytes at `ptr`.
    let bytes = unsafe { std::slice::from_raw_parts(buffer.ptr, buffer.len) }.to_vec();
    let freed = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: guaranteed by the caller; freed once, not used afterwards.
        unsafe { (table.free_buffer)(buffer) }
    }));
    if freed.is_err() {
        tracing::warn!("a panic escaped the plugin's free_buffer function");
    }
    bytes
}

/// Plugin text, which should be UTF-8, shown even when it is not.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of some other ABI version: only the version field is ever read.
    #[repr(C)]
    struct FutureTable {
        abi_version: u32,
    }

    static FUTURE: FutureTable = FutureTable { abi_version: 9 };

    unsafe extern "C" fn future_entry() -> *const RouterVTable {
        (&raw const FUTURE).cast()
    }

    unsafe extern "C" fn null_entry() -> *const RouterVTable {
        std::ptr::null()
    }

    #[test]
    fn a_table_of_another_version_is_refused_by_its_version_field() {
        // SAFETY: `future_entry` returns static data starting with a `u32`.
        let error = unsafe { table_from_entry(future_entry, "/p/libx.so") }
            .expect_err("version 9 is refused");
        assert_eq!(
            error.to_string(),
            "shard-router plugin \"/p/libx.so\" was built for plugin ABI version 9, but this \
             revrepl loads version 1: rebuild the plugin against the revrepl-shard-router-abi \
             crate of this revrepl release"
        );
    }

    #[test]
    fn a_null_table_is_a_protocol_error() {
        // SAFETY: `null_entry` returns null, which is checked before any read.
        let error =
            unsafe { table_from_entry(null_entry, "/p/libx.so") }.expect_err("null is refused");
        assert_eq!(
            error.to_string(),
            "shard-router plugin \"/p/libx.so\" broke the plugin ABI at load: the entry function returned a null table"
        );
    }
}
