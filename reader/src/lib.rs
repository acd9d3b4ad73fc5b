//! The revrepl reader (DESIGN §3): change-stream partitions to per-shard window files.
//!
//! The partition manager, window assembler and `revrepl-reader` binary arrive with the reader
//! issue; this crate exports nothing yet.
