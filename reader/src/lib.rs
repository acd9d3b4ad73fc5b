//! The revrepl reader (DESIGN §3): change-stream partitions to per-shard window files.
//!
//! - [`change_stream`]: change-stream records decoded into our own types.
//! - [`partition`]: which partitions may start, and the low watermark.
//! - [`routing`]: filtering and routing records into window-file lines.
//! - [`assembly`]: per-destination window files, released when the watermark passes them.
//! - [`pipeline`]: the running reader — partition tasks, coordinator, durable output.
//! - [`source`]: the seam to the change stream.

pub mod app;
pub mod assembly;
pub mod change_stream;
pub mod error;
pub mod partition;
pub mod pipeline;
pub mod routing;
pub mod source;
pub mod spanner;
pub mod telemetry;

pub use error::ReaderError;
