//! Integration tests of shard routing: the session file, routing and deletes, and plugins
//! built from source and loaded from disk.

mod assignment;
mod connection_properties;
mod plugins;
mod records;
mod session_file;
