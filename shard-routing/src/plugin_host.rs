//! Loading plugin libraries of the revrepl plugin ABI, whatever they implement (routing here,
//! transformation in the writer): the unsafe plumbing both kinds share.
//!
//! Invariants:
//! - a library is accepted only if it exports the kind's entry symbol of [`ABI_VERSION`] and
//!   its function table declares that version; the version is read before any other field,
//!   so a library built for another version is refused naming both versions;
//! - a loaded library is never unloaded: its code stays mapped for the life of the process, so
//!   the function table, the handle and any thread-local destructors the plugin registered
//!   stay valid;
//! - `init` runs once, at load; every call is wrapped in `catch_unwind` (the ABI's exported
//!   functions already catch the plugin's panics; this also covers hand-written plugins), so a
//!   plugin panic is an error, never a crash;
//! - buffers the plugin returns are copied, then handed back to the plugin to free.

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::ptr::NonNull;

use libloading::Library;
use revrepl_shard_router_abi::{
    ABI_VERSION, FreeBufferFn, InitFn, PluginBuffer, RouterVTable, STATUS_ERROR, STATUS_OK,
    STATUS_PANIC, TransformerVTable,
};

/// Other ABI versions looked for when the entry symbol is missing, to say which version a
/// plugin was built for.
const OTHER_VERSIONS: std::ops::RangeInclusive<u32> = 0..=32;

/// A function table of the plugin ABI.
///
/// # Safety
///
/// Implement only for `#[repr(C)]` tables whose first field is the `u32` ABI version, in every
/// version of the ABI, and whose entry function (exported as [`PluginTable::ENTRY_SYMBOL`])
/// takes nothing and returns a pointer to a static table.
pub unsafe trait PluginTable: Sync + 'static {
    /// The entry symbol of [`ABI_VERSION`].
    const ENTRY_SYMBOL: &'static str;
    /// The entry symbol without its version number.
    const ENTRY_SYMBOL_PREFIX: &'static str;
    /// The table's `init`.
    fn init_fn(&self) -> InitFn;
    /// The table's `free_buffer`.
    fn free_buffer_fn(&self) -> FreeBufferFn;
}

// SAFETY: `RouterVTable` is `#[repr(C)]` with the version first; `revrepl_shard_router_v<N>`
// returns a pointer to a static table.
unsafe impl PluginTable for RouterVTable {
    const ENTRY_SYMBOL: &'static str = revrepl_shard_router_abi::ENTRY_SYMBOL;
    const ENTRY_SYMBOL_PREFIX: &'static str = revrepl_shard_router_abi::ENTRY_SYMBOL_PREFIX;
    fn init_fn(&self) -> InitFn {
        self.init
    }
    fn free_buffer_fn(&self) -> FreeBufferFn {
        self.free_buffer
    }
}

// SAFETY: as for `RouterVTable`, with `revrepl_transformer_v<N>`.
unsafe impl PluginTable for TransformerVTable {
    const ENTRY_SYMBOL: &'static str = revrepl_shard_router_abi::TRANSFORMER_ENTRY_SYMBOL;
    const ENTRY_SYMBOL_PREFIX: &'static str =
        revrepl_shard_router_abi::TRANSFORMER_ENTRY_SYMBOL_PREFIX;
    fn init_fn(&self) -> InitFn {
        self.init
    }
    fn free_buffer_fn(&self) -> FreeBufferFn {
        self.free_buffer
    }
}

/// Why a plugin could not be loaded; each kind of plugin words it in its own error type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadFailure {
    /// The file could not be opened as a library.
    Open(String),
    /// No entry symbol of any version.
    NotAPlugin,
    /// Built for another ABI version.
    AbiMismatch {
        /// The version the plugin declares.
        found: u32,
    },
    /// The entry function broke the ABI (panicked, returned no table).
    BrokenEntry(&'static str),
    /// `init` refused the parameters with this message.
    InitRefused(String),
    /// `init` panicked (the message, or that a panic escaped it).
    InitPanicked(String),
    /// `init` said it succeeded but returned no handle.
    NoHandle,
    /// `init` returned a status the ABI does not define.
    UnknownStatus(i32),
}

/// A loaded plugin: its function table and the handle its `init` returned.
#[derive(Debug)]
pub struct Loaded<T: 'static> {
    /// The function table, static data of a library that is never unloaded.
    pub table: &'static T,
    /// What `init` returned, passed to every other function.
    pub handle: NonNull<c_void>,
}

/// Loads the library at `path`, checks its ABI version and calls its `init` with `params`
/// once.
pub fn load<T: PluginTable>(path: &Path, params: &str) -> Result<Loaded<T>, LoadFailure> {
    // An absolute path, so the loader never searches the system library path instead.
    let absolute =
        std::fs::canonicalize(path).map_err(|error| LoadFailure::Open(error.to_string()))?;
    // SAFETY: loading runs the library's initialisers. The operator configured this file as a
    // revrepl plugin, which is the trust any plugin needs.
    let library =
        unsafe { Library::new(&absolute) }.map_err(|error| LoadFailure::Open(error.to_string()))?;
    // SAFETY: every version of the ABI gives the entry symbol this type (`PluginTable`).
    let entry = match unsafe { library.get::<unsafe extern "C" fn() -> *const T>(T::ENTRY_SYMBOL) }
    {
        Ok(symbol) => *symbol,
        Err(_) => return Err(missing_entry::<T>(&library)),
    };
    // SAFETY: as above; the library stays loaded (forgotten just below on success).
    let table = unsafe { table_from_entry(entry) }?;
    // Never unload: `table` and everything `init` creates live as long as the process.
    std::mem::forget(library);
    let handle = init(table, params)?;
    Ok(Loaded { table, handle })
}

/// Explains why a library has no entry symbol: built for another ABI version, or not a plugin
/// of this kind at all.
fn missing_entry<T: PluginTable>(library: &Library) -> LoadFailure {
    for version in OTHER_VERSIONS.filter(|version| *version != ABI_VERSION) {
        let symbol = format!("{}{version}", T::ENTRY_SYMBOL_PREFIX);
        // SAFETY: only the symbol's presence is checked; it is never called or read.
        if unsafe { library.get::<*const c_void>(symbol.as_str()) }.is_ok() {
            return LoadFailure::AbiMismatch { found: version };
        }
    }
    LoadFailure::NotAPlugin
}

/// Calls the entry function and checks the table it returns.
///
/// # Safety
///
/// `entry` must stay valid for the life of the process, and the pointer it returns must be
/// null or point to static data whose first field is a `u32`.
pub unsafe fn table_from_entry<T: PluginTable>(
    entry: unsafe extern "C" fn() -> *const T,
) -> Result<&'static T, LoadFailure> {
    // SAFETY: guaranteed by the caller; the entry function only returns a pointer.
    let table = catch_unwind(|| unsafe { entry() })
        .map_err(|_| LoadFailure::BrokenEntry("the entry function panicked"))?;
    if table.is_null() {
        return Err(LoadFailure::BrokenEntry(
            "the entry function returned a null table",
        ));
    }
    // SAFETY: every ABI version starts its table with the `u32` version, so reading only that
    // field is valid whatever version the plugin was built for.
    let version = unsafe { table.cast::<u32>().read() };
    if version != ABI_VERSION {
        return Err(LoadFailure::AbiMismatch { found: version });
    }
    // SAFETY: the version says the table has the layout of `T`; it is static data of a
    // library that is never unloaded.
    Ok(unsafe { &*table })
}

/// Calls `init` once and returns the handle.
fn init<T: PluginTable>(table: &'static T, params: &str) -> Result<NonNull<c_void>, LoadFailure> {
    let mut handle: *mut c_void = std::ptr::null_mut();
    let mut message = PluginBuffer::EMPTY;
    let init = table.init_fn();
    let status = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `params` is valid for its length; `handle` and `message` are valid places
        // for one write each.
        unsafe { init(params.as_ptr(), params.len(), &mut handle, &mut message) }
    }));
    // SAFETY: `message` is empty or was written by this table's `init`.
    let message = text(&unsafe { take_buffer(table, message) });
    match status {
        Err(_) => Err(LoadFailure::InitPanicked(
            "a panic escaped the plugin's init function".to_string(),
        )),
        Ok(STATUS_OK) => NonNull::new(handle).ok_or(LoadFailure::NoHandle),
        Ok(STATUS_ERROR) => Err(LoadFailure::InitRefused(message)),
        Ok(STATUS_PANIC) => Err(LoadFailure::InitPanicked(message)),
        Ok(other) => Err(LoadFailure::UnknownStatus(other)),
    }
}

/// Copies a buffer the plugin returned and gives it back to the plugin.
///
/// # Safety
///
/// `buffer` must be [`PluginBuffer::EMPTY`] or a buffer returned by `table`'s functions and
/// not yet freed.
pub unsafe fn take_buffer<T: PluginTable>(table: &T, buffer: PluginBuffer) -> Vec<u8> {
    if buffer.ptr.is_null() {
        return Vec::new();
    }
    // SAFETY: guaranteed by the caller: the plugin wrote `len` bytes at `ptr`.
    let bytes = unsafe { std::slice::from_raw_parts(buffer.ptr, buffer.len) }.to_vec();
    let free = table.free_buffer_fn();
    let freed = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: guaranteed by the caller; freed once, not used afterwards.
        unsafe { free(buffer) }
    }));
    if freed.is_err() {
        tracing::warn!("a panic escaped the plugin's free_buffer function");
    }
    bytes
}

/// Plugin text, which should be UTF-8, shown even when it is not.
pub fn text(bytes: &[u8]) -> String {
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

    unsafe extern "C" fn future_entry() -> *const TransformerVTable {
        (&raw const FUTURE).cast()
    }

    unsafe extern "C" fn null_entry() -> *const RouterVTable {
        std::ptr::null()
    }

    #[test]
    fn a_table_of_another_version_is_refused_by_its_version_field() {
        // SAFETY: `future_entry` returns static data starting with a `u32`.
        let failure = unsafe { table_from_entry(future_entry) }.expect_err("version 9");
        assert_eq!(failure, LoadFailure::AbiMismatch { found: 9 });
    }

    #[test]
    fn a_null_table_is_refused_before_any_read() {
        // SAFETY: `null_entry` returns null, which is checked before any read.
        let failure = unsafe { table_from_entry(null_entry) }.expect_err("null");
        assert_eq!(
            failure,
            LoadFailure::BrokenEntry("the entry function returned a null table")
        );
    }

    #[test]
    fn a_missing_file_cannot_be_opened() {
        let failure = load::<RouterVTable>(Path::new("/nonexistent/libplugin.so"), "")
            .expect_err("no such file");
        assert!(matches!(failure, LoadFailure::Open(_)), "{failure:?}");
    }
}
