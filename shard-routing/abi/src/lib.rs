//! The C ABI that shard-router plugins implement (DESIGN §5).
//!
//! The versioned entry symbol and the `export_router!` macro arrive with the shard-routing
//! issue; this crate exports nothing yet.
