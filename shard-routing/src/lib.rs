//! Logical shard routing (DESIGN §5).
//!
//! The `ShardRouter` trait and its single-shard, session-file and plugin implementations arrive
//! with the shard-routing issue; this crate exports nothing yet.
