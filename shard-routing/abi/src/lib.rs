//! The C ABI between revrepl and its plugins: shard routers (DESIGN §5) and transformations
//! (docs/transformations.md). One library may be either or both.
//!
//! A transformation plugin implements [`TransformationPlugin`] and calls
//! [`export_transformer!`]; see [`TransformRequest`] and [`Transformed`] for what crosses the
//! boundary. The rest of this page is about routers; transformations follow the same rules
//! with their own entry symbol, [`TRANSFORMER_ENTRY_SYMBOL`].
//!
//! A shard-router plugin is a `cdylib` that decides the logical shard of a Spanner row. It
//! depends on this crate only, implements [`ShardRouterPlugin`] and calls [`export_router!`]
//! once; it writes no `unsafe` code:
//!
//! ```
//! use revrepl_shard_router_abi::{export_router, PluginError, RouteRequest, ShardRouterPlugin};
//!
//! /// Even singers live on `ls0`, odd ones on `ls1`.
//! pub struct SingerParity;
//!
//! impl ShardRouterPlugin for SingerParity {
//!     fn init(_params: &str) -> Result<Self, PluginError> {
//!         Ok(Self)
//!     }
//!
//!     fn route(&self, request: &RouteRequest) -> Result<String, PluginError> {
//!         let singer = request.int64("SingerId")?;
//!         Ok(format!("ls{}", singer.rem_euclid(2)))
//!     }
//! }
//!
//! export_router!(SingerParity);
//! ```
//!
//! # The ABI, version 1
//!
//! - The library exports one symbol, [`ENTRY_SYMBOL`] (`revrepl_shard_router_v1`), an
//!   [`EntryFn`] that returns a pointer to a static [`RouterVTable`]. The table's first field is
//!   its [`abi_version`](RouterVTable::abi_version); every future version keeps that field first,
//!   so the host can read it and refuse a plugin built for another version with a clear message.
//! - Text crosses the boundary as UTF-8 bytes, a pointer and a length. The host calls
//!   [`init`](RouterVTable::init) once with the user's parameter string; the plugin returns an
//!   opaque router handle. For each row the host calls [`route`](RouterVTable::route) with a
//!   [`RouteRequest`] as JSON (`{"table": ..., "row": {...}}`) and receives a [`RouteResponse`]
//!   as JSON (`{"logicalShardId": ...}`).
//! - Every call returns a status: [`STATUS_OK`], [`STATUS_ERROR`] (the plugin refused: the buffer
//!   holds its message) or [`STATUS_PANIC`] (the plugin panicked: the buffer holds the panic
//!   message). Panics never cross the boundary: the functions are `extern "C-unwind"` and catch
//!   every unwind. A plugin must therefore be built with `panic = "unwind"` (the default).
//! - Buffers are allocated by the plugin and given back to it with
//!   [`free_buffer`](RouterVTable::free_buffer), so host and plugin never free each other's
//!   memory.
//! - [`route`](RouterVTable::route) may be called from several threads at once, which is why a
//!   [`ShardRouterPlugin`] is `Send + Sync`.
//!
//! Row values use Spanner's change-stream JSON encoding: INT64 and NUMERIC arrive as strings,
//! BYTES as base64, TIMESTAMP as RFC 3339 text. [`RouteRequest::text`] and
//! [`RouteRequest::int64`] read them either way.

use std::ffi::c_void;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[doc(hidden)]
pub mod export;
mod transform;

pub use transform::{
    DropTransformerFn, Operation, SourceRow, TRANSFORMER_ENTRY_SYMBOL,
    TRANSFORMER_ENTRY_SYMBOL_PREFIX, TransformFn, TransformRequest, TransformationPlugin,
    Transformed, TransformerEntryFn, TransformerInitFn, TransformerVTable,
};

/// The ABI version this crate implements; bumped on any incompatible change of
/// [`RouterVTable`] or of the JSON shapes.
pub const ABI_VERSION: u32 = 1;

/// The name of the entry symbol of ABI version [`ABI_VERSION`].
pub const ENTRY_SYMBOL: &str = "revrepl_shard_router_v1";

/// The prefix of the entry symbol of every ABI version: `revrepl_shard_router_v<N>`.
pub const ENTRY_SYMBOL_PREFIX: &str = "revrepl_shard_router_v";

/// The call succeeded; the output buffer holds the JSON result (empty after `init`).
pub const STATUS_OK: i32 = 0;
/// The plugin refused the call; the output buffer holds its message.
pub const STATUS_ERROR: i32 = 1;
/// The plugin panicked; the output buffer holds the panic message.
pub const STATUS_PANIC: i32 = 2;

/// Bytes the plugin allocated and hands to the host, which gives them back with
/// [`RouterVTable::free_buffer`] once it has copied them.
#[repr(C)]
#[derive(Debug)]
pub struct PluginBuffer {
    /// Start of the bytes; null for "no buffer".
    pub ptr: *mut u8,
    /// Number of bytes.
    pub len: usize,
    /// Allocated capacity, needed to free the allocation.
    pub capacity: usize,
}

impl PluginBuffer {
    /// No buffer: what the host passes in before a call.
    pub const EMPTY: Self = Self {
        ptr: std::ptr::null_mut(),
        len: 0,
        capacity: 0,
    };

    /// Hands `bytes` over as a buffer; [`PluginBuffer::into_vec`] takes it back.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        let mut bytes = std::mem::ManuallyDrop::new(bytes);
        Self {
            ptr: bytes.as_mut_ptr(),
            len: bytes.len(),
            capacity: bytes.capacity(),
        }
    }

    /// Takes back a buffer made by [`PluginBuffer::from_vec`]; `None` for an empty one.
    ///
    /// # Safety
    ///
    /// The buffer must come from [`PluginBuffer::from_vec`] in this same library (same
    /// allocator) and must not be used again.
    pub unsafe fn into_vec(self) -> Option<Vec<u8>> {
        if self.ptr.is_null() {
            return None;
        }
        // SAFETY: the caller guarantees ptr, len and capacity come from a `Vec<u8>` of this
        // library's allocator that was forgotten by `from_vec` and not yet reclaimed.
        Some(unsafe { Vec::from_raw_parts(self.ptr, self.len, self.capacity) })
    }
}

/// `init(params, params_len, router_out, message_out) -> status`: builds the router from the
/// user's parameter string; on [`STATUS_OK`] writes the router handle to `router_out`.
pub type InitFn = unsafe extern "C-unwind" fn(
    params: *const u8,
    params_len: usize,
    router_out: *mut *mut c_void,
    message_out: *mut PluginBuffer,
) -> i32;

/// `route(router, request, request_len, response_out) -> status`: routes one row; the request
/// is a JSON [`RouteRequest`], the response a JSON [`RouteResponse`].
pub type RouteFn = unsafe extern "C-unwind" fn(
    router: *const c_void,
    request: *const u8,
    request_len: usize,
    response_out: *mut PluginBuffer,
) -> i32;

/// `free_buffer(buffer)`: releases a buffer the plugin returned.
pub type FreeBufferFn = unsafe extern "C-unwind" fn(buffer: PluginBuffer);

/// `drop_router(router)`: releases the router handle `init` returned.
pub type DropRouterFn = unsafe extern "C-unwind" fn(router: *mut c_void);

/// The type of the entry symbol: returns the plugin's static function table.
pub type EntryFn = unsafe extern "C" fn() -> *const RouterVTable;

/// The plugin's function table, ABI version 1.
#[repr(C)]
#[derive(Debug)]
pub struct RouterVTable {
    /// The ABI version the plugin was built for. Always the first field, in every version.
    pub abi_version: u32,
    /// Builds the router; called once, before any `route`.
    pub init: InitFn,
    /// Routes one row; may be called from several threads at once.
    pub route: RouteFn,
    /// Releases a buffer returned by `init` or `route`.
    pub free_buffer: FreeBufferFn,
    /// Releases the router.
    pub drop_router: DropRouterFn,
}

/// One row to route, as the plugin receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteRequest {
    /// The Spanner table of the row.
    pub table: String,
    /// The row's columns: key columns plus the new values (for deletes, the values the row had
    /// just before it was deleted), in Spanner's change-stream JSON encoding.
    pub row: Map<String, Value>,
}

impl RouteRequest {
    /// The value of `column`, or an error naming the table and the column if the row lacks it.
    pub fn value(&self, column: &str) -> Result<&Value, PluginError> {
        self.row.get(column).ok_or_else(|| {
            PluginError::new(format!(
                "the row of table {:?} has no column {column:?}",
                self.table
            ))
        })
    }

    /// The value of `column` as text: strings as they are (INT64 and NUMERIC arrive as
    /// strings), numbers and booleans in their JSON spelling. NULL, arrays and objects are
    /// errors.
    pub fn text(&self, column: &str) -> Result<String, PluginError> {
        text_of(&self.table, column, self.value(column)?)
    }

    /// The value of `column` as a 64-bit integer, from a decimal string (Spanner's INT64
    /// encoding) or a JSON integer.
    pub fn int64(&self, column: &str) -> Result<i64, PluginError> {
        int64_of(&self.table, column, self.value(column)?)
    }
}

fn unusable(table: &str, column: &str, problem: &str) -> PluginError {
    PluginError::new(format!("column {column:?} of table {table:?} {problem}"))
}

/// `value` of `column` as text (see [`RouteRequest::text`]).
pub(crate) fn text_of(table: &str, column: &str, value: &Value) -> Result<String, PluginError> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Number(number) => Ok(number.to_string()),
        Value::Bool(flag) => Ok(flag.to_string()),
        Value::Null => Err(unusable(table, column, "is NULL")),
        Value::Array(_) => Err(unusable(table, column, "is an array")),
        Value::Object(_) => Err(unusable(table, column, "is an object")),
    }
}

/// `value` of `column` as a 64-bit integer (see [`RouteRequest::int64`]).
pub(crate) fn int64_of(table: &str, column: &str, value: &Value) -> Result<i64, PluginError> {
    match value {
        Value::String(text) => text
            .parse()
            .map_err(|_| unusable(table, column, "is not a decimal INT64 string")),
        Value::Number(number) => number
            .as_i64()
            .ok_or_else(|| unusable(table, column, "is not a 64-bit integer")),
        Value::Null => Err(unusable(table, column, "is NULL")),
        _ => Err(unusable(table, column, "is not an integer")),
    }
}

/// The plugin's answer: the logical shard id of the row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteResponse {
    /// A logical shard id of the shards file.
    pub logical_shard_id: String,
}

/// Why a plugin refused to initialise or to route a row; the message reaches the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    message: String,
}

impl PluginError {
    /// An error with this message (lowercase, no trailing period, naming what is wrong).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}

impl From<String> for PluginError {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<&str> for PluginError {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

impl From<serde_json::Error> for PluginError {
    fn from(error: serde_json::Error) -> Self {
        Self::new(error.to_string())
    }
}

/// What a plugin author implements: a router built once from a parameter string, then asked
/// for the logical shard of each row.
pub trait ShardRouterPlugin: Send + Sync + Sized + 'static {
    /// Builds the router from the user's parameter string (empty if none was configured).
    /// Called once, when revrepl loads the plugin.
    fn init(params: &str) -> Result<Self, PluginError>;

    /// The logical shard id of `request`'s row. Must be one of the shards file's ids.
    fn route(&self, request: &RouteRequest) -> Result<String, PluginError>;
}

/// Exports `$router` (a type implementing [`ShardRouterPlugin`]) as this library's shard
/// router: generates the [`ENTRY_SYMBOL`] function. Use it once per plugin crate, whose
/// `crate-type` must include `"cdylib"`.
#[macro_export]
macro_rules! export_router {
    ($router:ty) => {
        /// The revrepl shard-router entry point, ABI version 1.
        #[unsafe(no_mangle)]
        pub extern "C" fn revrepl_shard_router_v1() -> *const $crate::RouterVTable {
            $crate::export::vtable::<$router>()
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(row: Value) -> RouteRequest {
        let Value::Object(row) = row else {
            panic!("test rows are objects")
        };
        RouteRequest {
            table: "Singers".to_string(),
            row,
        }
    }

    #[test]
    fn entry_symbol_names_the_abi_version() {
        assert_eq!(ENTRY_SYMBOL, format!("{ENTRY_SYMBOL_PREFIX}{ABI_VERSION}"));
    }

    #[test]
    fn request_and_response_have_the_documented_json_shape() {
        let parsed: RouteRequest =
            serde_json::from_str(r#"{"table":"Singers","row":{"SingerId":"7"}}"#)
                .expect("documented request shape");
        assert_eq!(parsed, request(json!({"SingerId": "7"})));
        let response = RouteResponse {
            logical_shard_id: "ls1".to_string(),
        };
        assert_eq!(
            serde_json::to_string(&response).expect("serializable"),
            r#"{"logicalShardId":"ls1"}"#
        );
    }

    #[test]
    fn text_reads_spanner_encoded_values() {
        let r = request(json!({"s": "ls1", "n": 5, "b": true, "f": 1.5, "z": null, "a": [1]}));
        assert_eq!(r.text("s"), Ok("ls1".to_string()));
        assert_eq!(r.text("n"), Ok("5".to_string()));
        assert_eq!(r.text("b"), Ok("true".to_string()));
        assert_eq!(r.text("f"), Ok("1.5".to_string()));
        assert_eq!(
            r.text("z").map_err(|e| e.to_string()),
            Err(r#"column "z" of table "Singers" is NULL"#.to_string())
        );
        assert!(r.text("a").is_err());
        assert_eq!(
            r.text("missing").map_err(|e| e.to_string()),
            Err(r#"the row of table "Singers" has no column "missing""#.to_string())
        );
    }

    #[test]
    fn int64_reads_strings_and_numbers() {
        let r = request(json!({"s": "-9223372036854775808", "n": 42, "x": "4.2", "z": null}));
        assert_eq!(r.int64("s"), Ok(i64::MIN));
        assert_eq!(r.int64("n"), Ok(42));
        assert!(r.int64("x").is_err());
        assert!(r.int64("z").is_err());
    }

    #[test]
    fn buffers_round_trip() {
        let buffer = PluginBuffer::from_vec(b"hello".to_vec());
        // SAFETY: the buffer was made by `from_vec` just above and is used once.
        let bytes = unsafe { buffer.into_vec() };
        assert_eq!(bytes.as_deref(), Some(&b"hello"[..]));
        // SAFETY: an empty buffer owns nothing.
        assert_eq!(unsafe { PluginBuffer::EMPTY.into_vec() }, None);
    }
}
