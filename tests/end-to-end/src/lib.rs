//! End-to-end tests of revrepl live in `tests/`: they run the real `revrepl-reader` and
//! `revrepl-writer` binaries against the Spanner emulator and MariaDB shards.
