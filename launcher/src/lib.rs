//! The `revrepl` command (DESIGN §1, §7): run modes, status, reprocess and validation.
//!
//! The command-line interface arrives with the launcher issue; this crate exports nothing yet.
