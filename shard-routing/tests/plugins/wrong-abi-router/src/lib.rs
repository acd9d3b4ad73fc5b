//! A test plugin (shard router and transformation) built for another ABI version, to prove the
//! hosts refuse it with a clear message.
//!
//! It stands for a plugin built against a future `revrepl-shard-router-abi` with ABI version 2:
//! it exports `revrepl_shard_router_v2` and `revrepl_transformer_v2` (not `_v1`), whose tables
//! start with `abi_version: 2`.
//! It deliberately does not depend on the ABI crate, whose macro only produces version 1.

/// The start of a version-2 function table: only the version field is read by a version-1
/// host.
#[repr(C)]
#[derive(Debug)]
pub struct VTableV2 {
    /// Always 2.
    pub abi_version: u32,
    /// Stands for the fields a version-2 table would have.
    pub flags: u32,
}

static VTABLE: VTableV2 = VTableV2 {
    abi_version: 2,
    flags: 0,
};

/// The entry point of ABI version 2.
#[unsafe(no_mangle)]
pub extern "C" fn revrepl_shard_router_v2() -> *const VTableV2 {
    &VTABLE
}

/// The transformation entry point of ABI version 2.
#[unsafe(no_mangle)]
pub extern "C" fn revrepl_transformer_v2() -> *const VTableV2 {
    &VTABLE
}
