//! Progress tables shared by the revrepl reader and writer (DESIGN §8).
//!
//! The `MetadataStore` trait and its Spanner and SQLite implementations arrive with the
//! metadata-store issue; this crate exports nothing yet.
