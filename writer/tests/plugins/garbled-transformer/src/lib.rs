//! A hand-written test transformation plugin (no `export_transformer!`, whose answers are
//! always valid) that answers malformed JSON for records whose request mentions
//! `"id":"13"`, and `{"action":"keep"}` for every other record: the host must refuse the
//! malformed answer with a clear error.

use std::ffi::c_void;

use revrepl_shard_router_abi::{ABI_VERSION, PluginBuffer, STATUS_OK, TransformerVTable};

static VTABLE: TransformerVTable = TransformerVTable {
    abi_version: ABI_VERSION,
    init,
    transform,
    free_buffer,
    drop_transformer,
};

/// The transformation entry point, ABI version 1.
#[unsafe(no_mangle)]
pub extern "C" fn revrepl_transformer_v1() -> *const TransformerVTable {
    &VTABLE
}

/// A dangling but non-null handle: this plugin keeps no state.
unsafe extern "C-unwind" fn init(
    _params: *const u8,
    _params_len: usize,
    handle_out: *mut *mut c_void,
    _message_out: *mut PluginBuffer,
) -> i32 {
    // SAFETY: the host passes a pointer valid for one write.
    unsafe { handle_out.write(std::ptr::NonNull::<u8>::dangling().as_ptr().cast()) };
    STATUS_OK
}

unsafe extern "C-unwind" fn transform(
    _handle: *const c_void,
    request: *const u8,
    request_len: usize,
    response_out: *mut PluginBuffer,
) -> i32 {
    // SAFETY: the host passes a request valid for `request_len` bytes.
    let request = unsafe { std::slice::from_raw_parts(request, request_len) };
    let garbled = request.windows(9).any(|w| w == br#""id":"13""#);
    let answer: &[u8] = if garbled {
        br#"{"action":"write","rows":[{"table":"users","#
    } else {
        br#"{"action":"keep"}"#
    };
    // SAFETY: the host passes a pointer valid for one write.
    unsafe { response_out.write(PluginBuffer::from_vec(answer.to_vec())) };
    STATUS_OK
}

unsafe extern "C-unwind" fn free_buffer(buffer: PluginBuffer) {
    // SAFETY: every buffer this plugin hands out comes from `PluginBuffer::from_vec` here.
    drop(unsafe { buffer.into_vec() });
}

unsafe extern "C-unwind" fn drop_transformer(_handle: *mut c_void) {}
