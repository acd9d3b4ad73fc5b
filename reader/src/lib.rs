//! The revrepl reader (DESIGN §3): change-stream partitions to per-shard window files.
//!
//! - [`change_stream`]: change-stream records decoded into our own types.
//! - [`partition`]: which partitions may start, and the low watermark.
//! - [`assembly`]: per-destination window files, released when the watermark passes them.

pub mod assembly;
pub mod change_stream;
pub mod partition;
