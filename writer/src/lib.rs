//! The revrepl writer (DESIGN §6): ordered, exactly-once apply of window files to MySQL shards.
//!
//! The per-shard applier and `revrepl-writer` binary arrive with the writer issue; this crate
//! exports nothing yet.
