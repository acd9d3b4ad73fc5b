//! Groups routed mods into per-destination window files and releases whole windows once the
//! low watermark has passed their end (DESIGN §3.3).
//!
//! Invariants:
//! - Once a window is released, a mod for it is an error ([`LateRecord`]), never a silent drop
//!   or a second file.
//! - A window is released only if every transaction in it is complete: as many distinct
//!   data-change records as its `number_of_records_in_transaction` says (they may come from
//!   several partitions). Otherwise it is an error ([`IncompleteTransaction`]), never a file
//!   with half a transaction.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use revrepl_record::{
    ChangeRecord, Destination, LineFields, Timestamp, Window, WindowDuration, WindowFileEncoder,
};

/// A window released for writing: one file per destination that had data.
#[derive(Debug)]
pub struct CompleteWindow {
    /// The window.
    pub window: Window,
    /// Deterministic file contents, by destination, with their line counts.
    pub files: Vec<WindowFile>,
}

/// One file of a complete window.
#[derive(Debug)]
pub struct WindowFile {
    /// The shard (or `skip`) directory.
    pub destination: Destination,
    /// The encoded file.
    pub bytes: Bytes,
    /// Lines pushed (before identical replays were merged).
    pub mods: usize,
}

/// What the watermark released: the windows with data, and how far every shard is complete.
#[derive(Debug)]
pub struct Release {
    /// Windows with data, oldest first.
    pub windows: Vec<CompleteWindow>,
    /// The end of the last released window: every shard is complete up to here.
    pub complete_up_to: Timestamp,
}

/// A mod for a window that was already released.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "record of table {table:?} committed at {commit} arrived after its window was written \
     (windows are complete up to {complete_up_to}); the low watermark was wrong"
)]
pub struct LateRecord {
    /// The record's table.
    pub table: String,
    /// Its commit timestamp.
    pub commit: Timestamp,
    /// Where released windows end.
    pub complete_up_to: Timestamp,
}

/// A transaction of a window that is due for release lacks some of its records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "transaction {transaction:?} committed at {commit} has {seen} of its {expected} data-change \
     records although the low watermark passed it; its window is not written"
)]
pub struct IncompleteTransaction {
    /// The transaction's `server_transaction_id`.
    pub transaction: String,
    /// Its commit timestamp.
    pub commit: Timestamp,
    /// Distinct records seen.
    pub seen: usize,
    /// `number_of_records_in_transaction`.
    pub expected: u64,
}

/// Why a mod cannot be added.
#[derive(Debug, thiserror::Error)]
pub enum AssemblyError {
    /// The watermark invariant was broken.
    #[error(transparent)]
    Late(#[from] LateRecord),
    /// The record cannot be serialized.
    #[error("cannot encode record of table {table:?}: {source}")]
    Encode {
        /// The record's table.
        table: String,
        /// The serializer's error.
        source: serde_json::Error,
    },
    /// A timestamp outside Spanner's range.
    #[error("window of {0} is outside the supported time range")]
    Range(Timestamp),
    /// A window due for release lacks records of a transaction.
    #[error(transparent)]
    Incomplete(#[from] IncompleteTransaction),
}

/// The records seen of one transaction.
#[derive(Debug, Default)]
struct TransactionRecords {
    expected: u64,
    sequences: BTreeSet<String>,
}

/// A window under construction: its files, and its transactions' record counts (by commit
/// timestamp, then server transaction id).
#[derive(Debug, Default)]
struct OpenWindow {
    files: BTreeMap<Destination, WindowFileEncoder>,
    transactions: BTreeMap<Timestamp, BTreeMap<String, TransactionRecords>>,
}

impl OpenWindow {
    /// Notes record `sequence` of transaction `id` at `commit`, which has `expected` records.
    fn note_record(&mut self, commit: Timestamp, id: &str, sequence: &str, expected: u64) {
        let at_commit = self.transactions.entry(commit).or_default();
        if !at_commit.contains_key(id) {
            at_commit.insert(id.to_string(), TransactionRecords::default());
        }
        if let Some(transaction) = at_commit.get_mut(id) {
            transaction.expected = expected;
            if !transaction.sequences.contains(sequence) {
                transaction.sequences.insert(sequence.to_string());
            }
        }
    }
}

/// Per-destination window files under construction.
#[derive(Debug)]
pub struct WindowAssembler {
    duration: WindowDuration,
    complete_up_to: Timestamp,
    open: BTreeMap<Window, OpenWindow>,
    buffered_mods: usize,
}

impl WindowAssembler {
    /// Assembles windows of `duration`; `start` is aligned down to the window grid and every
    /// window before it counts as released.
    pub fn new(duration: WindowDuration, start: Timestamp) -> Result<Self, AssemblyError> {
        let aligned = duration
            .align_down(start)
            .map_err(|_| AssemblyError::Range(start))?;
        Ok(Self {
            duration,
            complete_up_to: aligned,
            open: BTreeMap::new(),
            buffered_mods: 0,
        })
    }

    /// Where released windows end.
    pub fn complete_up_to(&self) -> Timestamp {
        self.complete_up_to
    }

    /// Mods held in memory.
    pub fn buffered_mods(&self) -> usize {
        self.buffered_mods
    }

    /// Adds `record` (the `mod_index`-th mod of its data-change record) to `destination`'s
    /// file of the window that contains its commit timestamp.
    pub fn add(
        &mut self,
        destination: Destination,
        record: &ChangeRecord,
        mod_index: u32,
    ) -> Result<(), AssemblyError> {
        let open = self.open_window(record.commit_timestamp, &record.table_name)?;
        let pushed = match open.files.get_mut(&destination) {
            Some(encoder) => encoder.push(record, mod_index),
            None => open
                .files
                .entry(destination)
                .or_default()
                .push(record, mod_index),
        };
        pushed.map_err(|source| AssemblyError::Encode {
            table: record.table_name.clone(),
            source,
        })?;
        open.note_record(
            record.commit_timestamp,
            &record.server_transaction_id,
            &record.record_sequence,
            record.number_of_records_in_transaction,
        );
        self.buffered_mods += 1;
        Ok(())
    }

    /// Adds one line given by its fields (see [`LineFields`]) to `destination`'s file of the
    /// window that contains its commit timestamp: the same as [`WindowAssembler::add`] of the
    /// equivalent [`ChangeRecord`], without building it.
    pub fn add_fields(
        &mut self,
        destination: &Destination,
        line: &LineFields<'_>,
        mod_index: u32,
    ) -> Result<(), AssemblyError> {
        let open = self.open_window(line.commit_timestamp, line.table_name)?;
        let pushed = match open.files.get_mut(destination) {
            Some(encoder) => encoder.push_fields(line, mod_index),
            None => open
                .files
                .entry(destination.clone())
                .or_default()
                .push_fields(line, mod_index),
        };
        pushed.map_err(|source| AssemblyError::Encode {
            table: line.table_name.to_string(),
            source,
        })?;
        open.note_record(
            line.commit_timestamp,
            line.server_transaction_id,
            line.record_sequence,
            line.number_of_records_in_transaction,
        );
        self.buffered_mods += 1;
        Ok(())
    }

    /// The window containing `commit`; an error if it was released already.
    fn open_window(
        &mut self,
        commit: Timestamp,
        table: &str,
    ) -> Result<&mut OpenWindow, AssemblyError> {
        if commit < self.complete_up_to {
            return Err(LateRecord {
                table: table.to_string(),
                commit,
                complete_up_to: self.complete_up_to,
            }
            .into());
        }
        let window = self
            .duration
            .window_of(commit)
            .map_err(|_| AssemblyError::Range(commit))?;
        Ok(self.open.entry(window).or_default())
    }

    /// Releases every window that ends at or before `complete_before` (the low watermark:
    /// every record before it has been added). `Ok(None)` when no window became complete; an
    /// error, releasing nothing, when a due window lacks records of a transaction.
    pub fn release(
        &mut self,
        complete_before: Timestamp,
    ) -> Result<Option<Release>, AssemblyError> {
        let Some(last_end) = self
            .duration
            .align_down(complete_before)
            .ok()
            .filter(|end| *end > self.complete_up_to)
        else {
            return Ok(None);
        };
        for (window, open) in self.open.range(..) {
            if window.end() > last_end {
                break;
            }
            for (commit, transactions) in &open.transactions {
                for (id, records) in transactions {
                    if (records.sequences.len() as u64) < records.expected {
                        return Err(IncompleteTransaction {
                            transaction: id.clone(),
                            commit: *commit,
                            seen: records.sequences.len(),
                            expected: records.expected,
                        }
                        .into());
                    }
                }
            }
        }
        let mut windows = Vec::new();
        while let Some(entry) = self.open.first_entry() {
            if entry.key().end() > last_end {
                break;
            }
            let (window, open) = entry.remove_entry();
            let files = open
                .files
                .into_iter()
                .map(|(destination, encoder)| {
                    let mods = encoder.len();
                    self.buffered_mods -= mods;
                    WindowFile {
                        destination,
                        bytes: encoder.finish(),
                        mods,
                    }
                })
                .collect();
            windows.push(CompleteWindow { window, files });
        }
        self.complete_up_to = last_end;
        Ok(Some(Release {
            windows,
            complete_up_to: last_end,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use revrepl_record::{Mod, ModType, ShardId, decode_window_file};

    fn ts(seconds: i64, nanos: u32) -> Timestamp {
        Timestamp::new(seconds, nanos).expect("valid")
    }

    fn shard(id: &str) -> Destination {
        Destination::Shard(ShardId::new(id).expect("valid"))
    }

    fn record(commit: Timestamp, txn: &str, key: u32) -> ChangeRecord {
        ChangeRecord {
            commit_timestamp: commit,
            server_transaction_id: txn.to_string(),
            record_sequence: "00000000".to_string(),
            table_name: "T".to_string(),
            mods: [Mod {
                keys_json: format!(r#"{{"id":"{key}"}}"#),
                old_values_json: "{}".to_string(),
                new_values_json: "{}".to_string(),
            }],
            mod_type: ModType::Insert,
            number_of_records_in_transaction: 1,
            transaction_tag: String::new(),
            shard: "s".to_string(),
        }
    }

    fn assembler(start: i64) -> WindowAssembler {
        WindowAssembler::new("10s".parse().expect("duration"), ts(start, 0)).expect("new")
    }

    #[test]
    fn releases_only_windows_below_the_watermark() {
        let mut a = assembler(100);
        a.add(shard("s1"), &record(ts(101, 0), "t1", 1), 0)
            .expect("add");
        a.add(shard("s2"), &record(ts(109, 999_999_999), "t2", 2), 0)
            .expect("add");
        a.add(shard("s1"), &record(ts(110, 0), "t3", 3), 0)
            .expect("add");
        assert!(
            a.release(ts(109, 999_999_999)).expect("ok").is_none(),
            "window [100,110) not complete"
        );
        let release = a.release(ts(110, 0)).expect("ok").expect("one window");
        assert_eq!(release.complete_up_to, ts(110, 0));
        assert_eq!(release.windows.len(), 1);
        let files = &release.windows[0].files;
        assert_eq!(
            files
                .iter()
                .map(|f| f.destination.to_string())
                .collect::<Vec<_>>(),
            ["s1", "s2"]
        );
        assert_eq!(a.buffered_mods(), 1);
    }

    #[test]
    fn empty_windows_advance_in_one_release() {
        let mut a = assembler(100);
        a.add(shard("s1"), &record(ts(135, 0), "t1", 1), 0)
            .expect("add");
        let release = a.release(ts(1000, 0)).expect("ok").expect("released");
        assert_eq!(release.complete_up_to, ts(1000, 0));
        assert_eq!(
            release.windows.len(),
            1,
            "only windows with data have files"
        );
        assert_eq!(release.windows[0].window.start(), ts(130, 0));
    }

    #[test]
    fn records_after_release_are_errors() {
        let mut a = assembler(100);
        a.release(ts(120, 0)).expect("ok").expect("released");
        let err = a
            .add(shard("s1"), &record(ts(119, 5), "t", 1), 0)
            .expect_err("late");
        assert!(matches!(err, AssemblyError::Late(_)), "{err}");
        a.add(shard("s1"), &record(ts(120, 0), "t", 1), 0)
            .expect("on time");
    }

    #[test]
    fn many_records_at_one_timestamp_keep_a_deterministic_order() {
        let mut a = assembler(100);
        let at = ts(105, 123_456_789);
        for (i, txn) in ["c", "a", "b"].iter().enumerate() {
            for key in 0..50u32 {
                a.add(shard("s1"), &record(at, txn, key), key).expect("add");
                if i == 0 && key == 3 {
                    // A replayed record (re-query from the same position) is merged.
                    a.add(shard("s1"), &record(at, txn, key), key)
                        .expect("add replay");
                }
            }
        }
        let release = a.release(ts(110, 0)).expect("ok").expect("released");
        let bytes = &release.windows[0].files[0].bytes;
        let lines = decode_window_file(bytes).expect("decodes");
        assert_eq!(lines.len(), 150);
        let txns: String = lines
            .iter()
            .map(|l| l.server_transaction_id.as_str())
            .collect::<Vec<_>>()
            .concat();
        assert_eq!(
            txns,
            format!("{}{}{}", "a".repeat(50), "b".repeat(50), "c".repeat(50))
        );
    }

    #[test]
    fn windows_with_incomplete_transactions_are_not_released() {
        let mut a = assembler(100);
        let mut first = record(ts(101, 0), "t1", 1);
        first.number_of_records_in_transaction = 2;
        a.add(shard("s1"), &first, 0).expect("add");
        // Two mods of one data-change record are one record, not two.
        a.add(shard("s1"), &first, 1).expect("add second mod");
        let err = a.release(ts(110, 0)).expect_err("one record of two");
        assert!(
            err.to_string()
                .contains("has 1 of its 2 data-change records"),
            "{err}"
        );
        // The other record (another partition, another shard) completes it.
        let mut second = first.clone();
        second.record_sequence = "00000001".into();
        a.add(shard("s2"), &second, 0).expect("add");
        let release = a.release(ts(110, 0)).expect("complete").expect("released");
        assert_eq!(release.windows[0].files.len(), 2);
    }

    #[test]
    fn start_is_aligned_down() {
        let a = assembler(105);
        assert_eq!(a.complete_up_to(), ts(100, 0));
    }
}
