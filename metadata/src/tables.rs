//! The names and columns of the metadata tables, the same as the reference's (DESIGN §8), with
//! the optional `metadata_table_suffix`, plus revrepl's own `shard_errors` table (the text of
//! each shard's last definite error, which the reference's tables have no column for) and
//! `leases` table (which process runs a run's reader and each shard's writer).

use crate::error::MetadataError;

/// The longest `metadata_table_suffix` accepted; keeps every name within Spanner's 128
/// characters.
pub const MAX_SUFFIX_LEN: usize = 64;

/// Base name of the run table.
pub const RUN_TABLE: &str = "spanner_to_gcs_metadata";
/// Base name of the reader's per-shard progress table.
pub const CREATE_PROGRESS_TABLE: &str = "shard_file_create_progress";
/// Base name of the table of windows that had data.
pub const DATA_SEEN_TABLE: &str = "data_seen";
/// Base name of the writer's per-shard progress table.
pub const PROCESS_PROGRESS_TABLE: &str = "shard_file_process_progress";
/// Base name of revrepl's own table of each shard's last definite error (not in the
/// reference: a metadata database the reference created lacks it, and works without it).
pub const SHARD_ERRORS_TABLE: &str = "shard_errors";
/// Base name of revrepl's own table of leases: which process runs the reader of a run, and the
/// writer of each (run, shard), so that a second one is refused (not in the reference).
pub const LEASES_TABLE: &str = "leases";

/// The kind of value a column holds, mapped to each store's own type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// Text (`STRING(MAX)` in Spanner).
    Text,
    /// A point in time (`TIMESTAMP` in Spanner, fixed-width RFC 3339 text in SQLite).
    Timestamp,
}

/// The columns each store reads and writes, per table: (name, kind).
pub const RUN_COLUMNS: &[(&str, ColumnKind)] = &[
    ("run_id", ColumnKind::Text),
    ("start_time", ColumnKind::Text),
    ("duration", ColumnKind::Text),
];
/// Columns of `shard_file_create_progress`.
pub const CREATE_PROGRESS_COLUMNS: &[(&str, ColumnKind)] = &[
    ("run_id", ColumnKind::Text),
    ("shard", ColumnKind::Text),
    ("created_upto", ColumnKind::Timestamp),
];
/// Columns of `data_seen`.
pub const DATA_SEEN_COLUMNS: &[(&str, ColumnKind)] = &[
    ("id", ColumnKind::Text),
    ("run_id", ColumnKind::Text),
    ("shard", ColumnKind::Text),
    ("window_seen", ColumnKind::Timestamp),
    ("update_ts", ColumnKind::Timestamp),
];
/// Columns of `shard_file_process_progress`.
pub const PROCESS_PROGRESS_COLUMNS: &[(&str, ColumnKind)] = &[
    ("run_id", ColumnKind::Text),
    ("shard", ColumnKind::Text),
    ("file_start_interval", ColumnKind::Timestamp),
    ("status", ColumnKind::Text),
];

/// Columns of `shard_errors` (revrepl's own table).
pub const SHARD_ERRORS_COLUMNS: &[(&str, ColumnKind)] = &[
    ("run_id", ColumnKind::Text),
    ("shard", ColumnKind::Text),
    ("file_start_interval", ColumnKind::Timestamp),
    ("error", ColumnKind::Text),
    ("update_ts", ColumnKind::Timestamp),
];

/// Columns of `leases` (revrepl's own table).
pub const LEASES_COLUMNS: &[(&str, ColumnKind)] = &[
    ("run_id", ColumnKind::Text),
    ("role", ColumnKind::Text),
    ("owner", ColumnKind::Text),
    ("expires_at", ColumnKind::Timestamp),
    ("update_ts", ColumnKind::Timestamp),
];

/// The table (and index) names one store uses: the reference's names, each followed by
/// `_<suffix>` when a `metadata_table_suffix` is set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableNames {
    run: String,
    create_progress: String,
    data_seen: String,
    data_seen_index: String,
    process_progress: String,
    shard_errors: String,
    leases: String,
}

impl TableNames {
    /// The names for `suffix`: `None` or `Some("")` means no suffix; otherwise the suffix must
    /// match `[A-Za-z0-9_]+` and have at most [`MAX_SUFFIX_LEN`] characters.
    pub fn new(suffix: Option<&str>) -> Result<Self, MetadataError> {
        let tail = match suffix {
            None | Some("") => String::new(),
            Some(s) => {
                let valid = s.len() <= MAX_SUFFIX_LEN
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !valid {
                    return Err(MetadataError::InvalidSuffix {
                        suffix: s.to_owned(),
                        max: MAX_SUFFIX_LEN,
                    });
                }
                format!("_{s}")
            }
        };
        let data_seen = format!("{DATA_SEEN_TABLE}{tail}");
        Ok(Self {
            run: format!("{RUN_TABLE}{tail}"),
            create_progress: format!("{CREATE_PROGRESS_TABLE}{tail}"),
            data_seen_index: format!("{data_seen}_by_run_shard_window"),
            data_seen,
            process_progress: format!("{PROCESS_PROGRESS_TABLE}{tail}"),
            shard_errors: format!("{SHARD_ERRORS_TABLE}{tail}"),
            leases: format!("{LEASES_TABLE}{tail}"),
        })
    }

    /// `spanner_to_gcs_metadata[_suffix]`.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// `shard_file_create_progress[_suffix]`.
    pub fn create_progress(&self) -> &str {
        &self.create_progress
    }

    /// `data_seen[_suffix]`.
    pub fn data_seen(&self) -> &str {
        &self.data_seen
    }

    /// `data_seen[_suffix]_by_run_shard_window`: revrepl's secondary index on
    /// `(run_id, shard, window_seen)`, so that the writer lists a shard's windows in one range
    /// scan (the reference has no such index and looks windows up one id at a time).
    pub fn data_seen_index(&self) -> &str {
        &self.data_seen_index
    }

    /// `shard_file_process_progress[_suffix]`.
    pub fn process_progress(&self) -> &str {
        &self.process_progress
    }

    /// `shard_errors[_suffix]`: revrepl's own table of each shard's last definite error.
    pub fn shard_errors(&self) -> &str {
        &self.shard_errors
    }

    /// `leases[_suffix]`: revrepl's own table of the leases of readers and writers.
    pub fn leases(&self) -> &str {
        &self.leases
    }

    /// Each of the reference's four tables with the columns revrepl uses in it: they must
    /// exist for revrepl to work.
    pub fn with_columns(&self) -> [(&str, &'static [(&'static str, ColumnKind)]); 4] {
        [
            (self.run.as_str(), RUN_COLUMNS),
            (self.create_progress.as_str(), CREATE_PROGRESS_COLUMNS),
            (self.data_seen.as_str(), DATA_SEEN_COLUMNS),
            (self.process_progress.as_str(), PROCESS_PROGRESS_COLUMNS),
        ]
    }

    /// revrepl's own tables with their columns: created with the others, but optional, since
    /// a metadata database the reference (or an older revrepl) created lacks them.
    pub fn own_with_columns(&self) -> [(&str, &'static [(&'static str, ColumnKind)]); 2] {
        [
            (self.shard_errors.as_str(), SHARD_ERRORS_COLUMNS),
            (self.leases.as_str(), LEASES_COLUMNS),
        ]
    }

    /// Whether `table` is one of revrepl's own, optional tables ([`Self::own_with_columns`]).
    pub fn is_own(&self, table: &str) -> bool {
        self.own_with_columns()
            .iter()
            .any(|(own, _)| own.eq_ignore_ascii_case(table))
    }
}

impl Default for TableNames {
    /// The reference's names, without suffix.
    fn default() -> Self {
        let data_seen = DATA_SEEN_TABLE.to_owned();
        Self {
            run: RUN_TABLE.to_owned(),
            create_progress: CREATE_PROGRESS_TABLE.to_owned(),
            data_seen_index: format!("{data_seen}_by_run_shard_window"),
            data_seen,
            process_progress: PROCESS_PROGRESS_TABLE.to_owned(),
            shard_errors: SHARD_ERRORS_TABLE.to_owned(),
            leases: LEASES_TABLE.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_is_appended_with_an_underscore() {
        let names = TableNames::new(Some("blue_2")).expect("valid suffix");
        assert_eq!(names.run(), "spanner_to_gcs_metadata_blue_2");
        assert_eq!(names.create_progress(), "shard_file_create_progress_blue_2");
        assert_eq!(names.data_seen(), "data_seen_blue_2");
        assert_eq!(
            names.process_progress(),
            "shard_file_process_progress_blue_2"
        );
        assert_eq!(
            names.data_seen_index(),
            "data_seen_blue_2_by_run_shard_window"
        );
        assert_eq!(names.shard_errors(), "shard_errors_blue_2");
        assert!(names.is_own("shard_errors_blue_2"));
        assert_eq!(names.leases(), "leases_blue_2");
        assert!(names.is_own("leases_blue_2"));
        assert!(!names.is_own("shard_file_process_progress_blue_2"));
        assert_eq!(TableNames::new(None), Ok(TableNames::default()));
        assert_eq!(TableNames::new(Some("")), Ok(TableNames::default()));
    }

    #[test]
    fn suffix_allows_only_letters_digits_and_underscores() {
        for bad in ["a-b", "a b", "x;DROP", "ü", "a.b", "`", &"x".repeat(65)] {
            let err = TableNames::new(Some(bad)).expect_err("invalid suffix");
            assert!(
                matches!(err, MetadataError::InvalidSuffix { .. }),
                "{bad:?}: {err}"
            );
        }
        let message = TableNames::new(Some("a-b")).map_err(|e| e.to_string());
        assert_eq!(
            message.err().as_deref(),
            Some(
                "metadata table suffix \"a-b\" is invalid: use only ASCII letters, digits and '_' (at most 64 characters)"
            )
        );
    }
}
