//! The generic side of [`export_router!`](crate::export_router) and
//! [`export_transformer!`](crate::export_transformer): the function tables of a
//! [`ShardRouterPlugin`] and of a [`TransformationPlugin`], and the `extern "C-unwind"`
//! functions in them.
//!
//! Invariants every function here keeps:
//! - no unwind leaves it: the plugin's code runs inside `catch_unwind`, and a panic becomes
//!   [`STATUS_PANIC`] with the panic message in the output buffer;
//! - output buffers are written only through the pointer the host passed, and only once;
//! - a null input pointer with length 0 is the empty input.

use std::any::Any;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::{
    ABI_VERSION, PluginBuffer, PluginError, RouteRequest, RouteResponse, RouterVTable,
    STATUS_ERROR, STATUS_OK, STATUS_PANIC, ShardRouterPlugin, TransformRequest,
    TransformationPlugin, TransformerVTable,
};

/// The static function table of router type `R`.
pub fn vtable<R: ShardRouterPlugin>() -> *const RouterVTable {
    const {
        &RouterVTable {
            abi_version: ABI_VERSION,
            init: init::<R>,
            route: route::<R>,
            free_buffer,
            drop_router: drop_handle::<R>,
        }
    }
}

/// The static function table of transformer type `T`.
pub fn transformer_vtable<T: TransformationPlugin>() -> *const TransformerVTable {
    const {
        &TransformerVTable {
            abi_version: ABI_VERSION,
            init: init_transformer::<T>,
            transform: transform::<T>,
            free_buffer,
            drop_transformer: drop_handle::<T>,
        }
    }
}

/// What a call produced: a value, the plugin's refusal, or a panic message.
enum Outcome<T> {
    Done(T),
    Refused(PluginError),
    Panicked(String),
}

fn run<T>(call: impl FnOnce() -> Result<T, PluginError>) -> Outcome<T> {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(value)) => Outcome::Done(value),
        Ok(Err(error)) => Outcome::Refused(error),
        Err(payload) => Outcome::Panicked(panic_message(payload)),
    }
}

/// The message of a panic; the payload is dropped without letting a second panic escape.
fn panic_message(payload: Box<dyn Any + Send>) -> String {
    let message = if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "the plugin panicked with a payload that is not text".to_string()
    };
    if let Err(second) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        // Dropping the payload panicked too: leak that one rather than unwind into the host.
        std::mem::forget(second);
    }
    message
}

/// The `len` bytes at `ptr`.
///
/// # Safety
///
/// `ptr` must be valid for reads of `len` bytes for `'a`, or `len` must be 0.
unsafe fn input<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: the caller guarantees `ptr` is valid for `len` bytes.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

/// Writes `bytes` to `out` as a buffer the host frees with [`free_buffer`].
///
/// # Safety
///
/// `out` must be null or valid for one write of a [`PluginBuffer`].
unsafe fn output(out: *mut PluginBuffer, bytes: Vec<u8>) {
    if out.is_null() {
        return;
    }
    // SAFETY: the caller guarantees `out` is valid for a write.
    unsafe { out.write(PluginBuffer::from_vec(bytes)) }
}

/// The value of a finished call, or `None` after writing the refusal or panic message to
/// `out`.
///
/// # Safety
///
/// As [`output`].
unsafe fn report<T>(outcome: Outcome<T>, out: *mut PluginBuffer) -> Option<T> {
    let message = match outcome {
        Outcome::Done(value) => return Some(value),
        Outcome::Refused(error) => error.to_string(),
        Outcome::Panicked(message) => message,
    };
    // SAFETY: forwarded from the caller.
    unsafe { output(out, message.into_bytes()) };
    None
}

fn status_of<T>(outcome: &Outcome<T>) -> i32 {
    match outcome {
        Outcome::Done(_) => STATUS_OK,
        Outcome::Refused(_) => STATUS_ERROR,
        Outcome::Panicked(_) => STATUS_PANIC,
    }
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, PluginError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|error| PluginError::new(format!("the {what} is not UTF-8: {error}")))
}

/// [`RouterVTable::init`] for router type `R`.
///
/// # Safety
///
/// As [`init_handle`].
unsafe extern "C-unwind" fn init<R: ShardRouterPlugin>(
    params: *const u8,
    params_len: usize,
    router_out: *mut *mut c_void,
    message_out: *mut PluginBuffer,
) -> i32 {
    // SAFETY: forwarded from the caller.
    unsafe { init_handle(params, params_len, router_out, message_out, R::init) }
}

/// [`TransformerVTable::init`] for transformer type `T`.
///
/// # Safety
///
/// As [`init_handle`].
unsafe extern "C-unwind" fn init_transformer<T: TransformationPlugin>(
    params: *const u8,
    params_len: usize,
    transformer_out: *mut *mut c_void,
    message_out: *mut PluginBuffer,
) -> i32 {
    // SAFETY: forwarded from the caller.
    unsafe { init_handle(params, params_len, transformer_out, message_out, T::init) }
}

/// Builds a handle with `make` from the parameter string.
///
/// # Safety
///
/// `params` valid for `params_len` bytes (or `params_len == 0`); `handle_out` and
/// `message_out` valid for one write each.
unsafe fn init_handle<T>(
    params: *const u8,
    params_len: usize,
    handle_out: *mut *mut c_void,
    message_out: *mut PluginBuffer,
    make: fn(&str) -> Result<T, PluginError>,
) -> i32 {
    // SAFETY: forwarded from the caller.
    let params = unsafe { input(params, params_len) };
    let outcome = run(|| make(&utf8(params, "parameter string")?));
    let status = status_of(&outcome);
    // SAFETY: forwarded from the caller.
    if let Some(handle) = unsafe { report(outcome, message_out) } {
        if handle_out.is_null() {
            drop(handle);
            return STATUS_ERROR;
        }
        let handle = Box::into_raw(Box::new(handle)).cast::<c_void>();
        // SAFETY: checked non-null; the caller guarantees it is valid for a write.
        unsafe { handle_out.write(handle) };
    }
    status
}

/// [`RouterVTable::route`] for router type `R`.
///
/// # Safety
///
/// As [`answer`].
unsafe extern "C-unwind" fn route<R: ShardRouterPlugin>(
    router: *const c_void,
    request: *const u8,
    request_len: usize,
    response_out: *mut PluginBuffer,
) -> i32 {
    // SAFETY: forwarded from the caller.
    unsafe {
        answer(
            router,
            request,
            request_len,
            response_out,
            |router: &R, request: RouteRequest| {
                let logical_shard_id = router.route(&request)?;
                Ok(serde_json::to_vec(&RouteResponse { logical_shard_id })?)
            },
        )
    }
}

/// [`TransformerVTable::transform`] for transformer type `T`.
///
/// # Safety
///
/// As [`answer`].
unsafe extern "C-unwind" fn transform<T: TransformationPlugin>(
    transformer: *const c_void,
    request: *const u8,
    request_len: usize,
    response_out: *mut PluginBuffer,
) -> i32 {
    // SAFETY: forwarded from the caller.
    unsafe {
        answer(
            transformer,
            request,
            request_len,
            response_out,
            |transformer: &T, request: TransformRequest| {
                Ok(serde_json::to_vec(&transformer.transform(&request)?)?)
            },
        )
    }
}

/// Decodes the JSON request, lets `call` answer it with the plugin behind `handle`, and
/// writes the answer (or the refusal or panic message) to `response_out`.
///
/// # Safety
///
/// `handle` must be a handle `init_handle::<H>` returned and not yet dropped; `request` valid
/// for `request_len` bytes; `response_out` valid for one write.
unsafe fn answer<H: Sync, Q: serde::de::DeserializeOwned>(
    handle: *const c_void,
    request: *const u8,
    request_len: usize,
    response_out: *mut PluginBuffer,
    call: impl FnOnce(&H, Q) -> Result<Vec<u8>, PluginError>,
) -> i32 {
    // SAFETY: forwarded from the caller.
    let request = unsafe { input(request, request_len) };
    let outcome = run(|| {
        // SAFETY: the caller guarantees `handle` is a live `Box<H>` made by `init_handle`;
        // `H: Sync`, so shared use from several threads is sound.
        let plugin = unsafe { handle.cast::<H>().as_ref() }
            .ok_or_else(|| PluginError::new("the plugin handle is null"))?;
        let request: Q = serde_json::from_slice(request)
            .map_err(|error| PluginError::new(format!("the request is not valid: {error}")))?;
        call(plugin, request)
    });
    let status = status_of(&outcome);
    // SAFETY: forwarded from the caller.
    if let Some(response) = unsafe { report(outcome, response_out) } {
        // SAFETY: forwarded from the caller.
        unsafe { output(response_out, response) };
    }
    status
}

/// [`RouterVTable::free_buffer`].
///
/// # Safety
///
/// `buffer` must come from this library's `init` or `route` and not have been freed.
unsafe extern "C-unwind" fn free_buffer(buffer: PluginBuffer) {
    // SAFETY: forwarded from the caller; dropping a `Vec<u8>` cannot panic.
    drop(unsafe { buffer.into_vec() });
}

/// [`RouterVTable::drop_router`] and [`TransformerVTable::drop_transformer`] for plugin
/// type `H`.
///
/// # Safety
///
/// `handle` must be a handle `init_handle::<H>` returned, not used again afterwards.
unsafe extern "C-unwind" fn drop_handle<H>(handle: *mut c_void) {
    if handle.is_null() {
        return;
    }
    // SAFETY: the caller guarantees `handle` is the `Box<H>` made by `init_handle::<H>`.
    let handle = unsafe { Box::from_raw(handle.cast::<H>()) };
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(handle))) {
        drop(panic_message(payload));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Routes `Singers` rows by `shard`, refuses other tables, panics on `Boom`.
    struct Echo {
        prefix: String,
    }

    impl ShardRouterPlugin for Echo {
        fn init(params: &str) -> Result<Self, PluginError> {
            match params {
                "panic" => panic!("init asked to panic"),
                "" => Err(PluginError::new("no prefix given")),
                prefix => Ok(Self {
                    prefix: prefix.to_string(),
                }),
            }
        }

        fn route(&self, request: &RouteRequest) -> Result<String, PluginError> {
            match request.table.as_str() {
                "Boom" => panic!("route asked to panic on {}", request.table),
                "Singers" => Ok(format!("{}{}", self.prefix, request.text("shard")?)),
                other => Err(PluginError::new(format!("unknown table {other:?}"))),
            }
        }
    }

    /// Calls through the function table exactly as the host does.
    struct Host {
        table: &'static RouterVTable,
    }

    impl Host {
        fn new() -> Self {
            // SAFETY: `vtable` returns a pointer to a promoted constant.
            let table = unsafe { &*vtable::<Echo>() };
            Self { table }
        }

        fn take(&self, buffer: PluginBuffer) -> String {
            if buffer.ptr.is_null() {
                return String::new();
            }
            // SAFETY: the buffer came from this table's functions and is read once.
            let bytes = unsafe { std::slice::from_raw_parts(buffer.ptr, buffer.len) }.to_vec();
            // SAFETY: as above; freed exactly once.
            unsafe { (self.table.free_buffer)(buffer) };
            String::from_utf8(bytes).expect("the plugin writes UTF-8")
        }

        fn init(&self, params: &str) -> (i32, *mut c_void, String) {
            let mut router = std::ptr::null_mut();
            let mut message = PluginBuffer::EMPTY;
            // SAFETY: valid pointers and lengths.
            let status = unsafe {
                (self.table.init)(params.as_ptr(), params.len(), &mut router, &mut message)
            };
            (status, router, self.take(message))
        }

        fn route(&self, router: *mut c_void, request: &str) -> (i32, String) {
            let mut response = PluginBuffer::EMPTY;
            // SAFETY: `router` came from `init`; valid pointers and lengths.
            let status = unsafe {
                (self.table.route)(router, request.as_ptr(), request.len(), &mut response)
            };
            (status, self.take(response))
        }
    }

    /// Keeps `Kept` records, drops `Gone` ones, panics on `Boom`.
    struct Sorter;

    impl TransformationPlugin for Sorter {
        fn init(_params: &str) -> Result<Self, PluginError> {
            Ok(Self)
        }

        fn transform(&self, request: &TransformRequest) -> Result<crate::Transformed, PluginError> {
            match request.table.as_str() {
                "Kept" => Ok(crate::Transformed::Keep),
                "Gone" => Ok(crate::Transformed::Drop),
                other => panic!("transform asked to panic on {other}"),
            }
        }
    }

    #[test]
    fn transformers_answer_json_and_panics_become_a_status() {
        // SAFETY: `transformer_vtable` returns a pointer to a promoted constant.
        let table = unsafe { &*transformer_vtable::<Sorter>() };
        assert_eq!(table.abi_version, ABI_VERSION);
        let mut handle = std::ptr::null_mut();
        let mut message = PluginBuffer::EMPTY;
        // SAFETY: valid pointers; an empty parameter string.
        let status = unsafe { (table.init)(std::ptr::null(), 0, &mut handle, &mut message) };
        assert_eq!(status, STATUS_OK);
        let call = |table_name: &str| -> (i32, String) {
            let request = format!(
                r#"{{"table":"{table_name}","logicalShardId":"ls1","modType":"INSERT","keys":{{}},"commitTimestamp":"t","serverTransactionId":"x"}}"#
            );
            let mut response = PluginBuffer::EMPTY;
            // SAFETY: `handle` came from `init`; valid pointers and lengths.
            let status = unsafe {
                (table.transform)(handle, request.as_ptr(), request.len(), &mut response)
            };
            // SAFETY: the buffer came from this table and is taken back once.
            let bytes = unsafe { response.into_vec() }.unwrap_or_default();
            (status, String::from_utf8(bytes).expect("UTF-8"))
        };
        assert_eq!(
            call("Kept"),
            (STATUS_OK, r#"{"action":"keep"}"#.to_string())
        );
        assert_eq!(
            call("Gone"),
            (STATUS_OK, r#"{"action":"drop"}"#.to_string())
        );
        assert_eq!(
            call("Boom"),
            (STATUS_PANIC, "transform asked to panic on Boom".to_string())
        );
        // SAFETY: `handle` came from `init` and is not used again.
        unsafe { (table.drop_transformer)(handle) };
    }

    #[test]
    fn the_table_carries_the_abi_version() {
        assert_eq!(Host::new().table.abi_version, ABI_VERSION);
    }

    #[test]
    fn init_route_and_drop() {
        let host = Host::new();
        let (status, router, message) = host.init("shard-");
        assert_eq!((status, message.as_str()), (STATUS_OK, ""));
        assert!(!router.is_null());
        let answer = host.route(router, r#"{"table":"Singers","row":{"shard":"7"}}"#);
        assert_eq!(
            answer,
            (STATUS_OK, r#"{"logicalShardId":"shard-7"}"#.to_string())
        );
        // SAFETY: `router` came from `init` and is not used again.
        unsafe { (host.table.drop_router)(router) };
    }

    #[test]
    fn refusals_and_bad_requests_are_errors() {
        let host = Host::new();
        assert_eq!(host.init("").0, STATUS_ERROR);
        let (_, router, _) = host.init("p");
        let (status, message) = host.route(router, r#"{"table":"Albums","row":{}}"#);
        assert_eq!(
            (status, message.as_str()),
            (STATUS_ERROR, r#"unknown table "Albums""#)
        );
        let (status, message) = host.route(router, "not json");
        assert_eq!(status, STATUS_ERROR);
        assert!(message.starts_with("the request is not valid"), "{message}");
        // SAFETY: `router` came from `init` and is not used again.
        unsafe { (host.table.drop_router)(router) };
    }

    #[test]
    fn panics_become_a_status_with_the_message() {
        let host = Host::new();
        let (status, router, message) = host.init("panic");
        assert_eq!(
            (status, message.as_str()),
            (STATUS_PANIC, "init asked to panic")
        );
        assert!(router.is_null());
        let (_, router, _) = host.init("p");
        let (status, message) = host.route(router, r#"{"table":"Boom","row":{}}"#);
        assert_eq!(
            (status, message.as_str()),
            (STATUS_PANIC, "route asked to panic on Boom")
        );
        // The router still works after a panic.
        let (status, _) = host.route(router, r#"{"table":"Singers","row":{"shard":"1"}}"#);
        assert_eq!(status, STATUS_OK);
        // SAFETY: `router` came from `init` and is not used again.
        unsafe { (host.table.drop_router)(router) };
    }
}
