//! Whether the records of a window file belong where the file is (the shard of its folder and
//! its window).
//!
//! A record outside the file's window is always refused: applying it would break commit
//! order. The `shard` field is another matter: some files written by the reference have lines
//! without it, or naming another shard than their folder, and the reference applies every line
//! of a folder to that folder's shard. revrepl does the same, with one warning per file, unless
//! `writer.strict_line_shard` asks for the refusal.

use revrepl_record::{ChangeRecord, ShardId, Window};

use crate::error::WriterError;

/// Checks `records` of the file at `path` of `shard`'s folder for `window`; `strict` refuses
/// lines whose `shard` field is missing or names another shard, otherwise such lines are
/// given the folder's shard.
pub(crate) fn check_placement(
    shard: &ShardId,
    window: Window,
    path: &str,
    records: &mut [ChangeRecord],
    strict: bool,
) -> Result<(), WriterError> {
    let misplaced = |reason: String| WriterError::MisplacedRecord {
        shard: shard.clone(),
        path: path.to_string(),
        reason,
    };
    let mut without_shard = 0usize;
    let mut other_shard: Option<String> = None;
    let mut others = 0usize;
    for record in records.iter() {
        if !window.contains(record.commit_timestamp) {
            return Err(misplaced(format!(
                "a record committed at {} lies outside the file's window {window}",
                record.commit_timestamp
            )));
        }
        if record.shard.is_empty() {
            without_shard += 1;
        } else if record.shard != shard.as_str() {
            others += 1;
            other_shard.get_or_insert_with(|| record.shard.clone());
        }
    }
    if without_shard == 0 && others == 0 {
        return Ok(());
    }
    if strict {
        return Err(misplaced(match other_shard {
            Some(other) => format!(
                "a record of shard {other:?} is in this shard's file \
                 (writer.strict_line_shard = true)"
            ),
            None => "a record has no shard field (writer.strict_line_shard = true)".to_string(),
        }));
    }
    tracing::warn!(
        %shard,
        file = path,
        lines_without_shard = without_shard,
        lines_of_other_shards = others,
        example_other_shard = other_shard.as_deref().unwrap_or(""),
        "applying every line of this file to the shard of its folder, as the reference does \
         (set writer.strict_line_shard = true to refuse such files)"
    );
    for record in records.iter_mut() {
        if record.shard != shard.as_str() {
            record.shard = shard.to_string();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use revrepl_record::{Mod, ModType, Timestamp};

    fn record(seconds: i64, shard: &str) -> ChangeRecord {
        ChangeRecord {
            commit_timestamp: Timestamp::new(seconds, 0).expect("valid"),
            server_transaction_id: "t".into(),
            record_sequence: "00000000".into(),
            table_name: "users".into(),
            mods: [Mod {
                keys_json: "{}".into(),
                old_values_json: "{}".into(),
                new_values_json: "{}".into(),
            }],
            mod_type: ModType::Insert,
            number_of_records_in_transaction: 1,
            transaction_tag: String::new(),
            shard: shard.into(),
        }
    }

    #[test]
    fn lines_of_other_or_no_shard_are_applied_unless_strict() {
        let shard = ShardId::new("s1").expect("id");
        let window = Window::from_bounds(
            Timestamp::new(10, 0).expect("ts"),
            Timestamp::new(20, 0).expect("ts"),
        )
        .expect("window");
        let records = [record(11, "s1"), record(12, ""), record(13, "s2")];
        let error = check_placement(&shard, window, "s1/f", &mut records.clone(), true)
            .expect_err("strict refuses");
        assert!(error.to_string().contains("\"s2\""), "{error}");
        let missing = check_placement(&shard, window, "s1/f", &mut records[..2].to_vec(), true)
            .expect_err("strict refuses a missing shard");
        assert!(missing.to_string().contains("no shard field"), "{missing}");
        let mut lenient = records;
        assert!(check_placement(&shard, window, "s1/f", &mut lenient, false).is_ok());
        assert!(
            lenient.iter().all(|r| r.shard == "s1"),
            "given the folder's shard"
        );
        let mut late = [record(25, "s1")];
        assert!(check_placement(&shard, window, "s1/f", &mut late, false).is_err());
    }
}
