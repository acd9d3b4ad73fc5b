//! The window-file codec: JSON lines, one mod per line (DESIGN §3.3, §4).
//!
//! The encoder is deterministic: the same set of mods always gives the same bytes, whatever
//! order they were pushed in, so a window written again after a crash is byte-identical and
//! create-if-absent is safe. The decoder streams and names the line and the reason of anything
//! malformed instead of panicking.

use std::collections::BTreeMap;
use std::io::BufRead;

use bytes::Bytes;
use serde::de::IgnoredAny;

use crate::record::{ChangeRecord, compare_sequences};
use crate::timestamp::Timestamp;

/// A line of a window file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct DecodeError {
    /// 1-based line number in the file.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// Builds the bytes of one window file.
#[derive(Debug, Default)]
pub struct WindowFileEncoder {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    commit_timestamp: Timestamp,
    server_transaction_id: String,
    record_sequence: String,
    mod_index: u32,
    line: Vec<u8>,
}

impl Entry {
    fn order(&self, other: &Self) -> std::cmp::Ordering {
        self.commit_timestamp
            .cmp(&other.commit_timestamp)
            .then_with(|| self.server_transaction_id.cmp(&other.server_transaction_id))
            .then_with(|| compare_sequences(&self.record_sequence, &other.record_sequence))
            .then_with(|| self.mod_index.cmp(&other.mod_index))
            .then_with(|| self.line.cmp(&other.line))
    }
}

impl WindowFileEncoder {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one line: `record` carries the `mod_index`-th mod of its data-change record.
    pub fn push(&mut self, record: &ChangeRecord, mod_index: u32) -> Result<(), serde_json::Error> {
        let line = serde_json::to_vec(record)?;
        self.entries.push(Entry {
            commit_timestamp: record.commit_timestamp,
            server_transaction_id: record.server_transaction_id.clone(),
            record_sequence: record.record_sequence.clone(),
            mod_index,
            line,
        });
        Ok(())
    }

    /// Number of lines pushed so far (before duplicates are merged).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The file: lines sorted by commit timestamp, server transaction id, record sequence and
    /// mod index, each followed by `\n`. A mod pushed twice with identical content is written
    /// once.
    pub fn finish(mut self) -> Bytes {
        self.entries.sort_by(Entry::order);
        self.entries.dedup_by(|a, b| a.order(b).is_eq());
        let size = self.entries.iter().map(|e| e.line.len() + 1).sum();
        let mut out = Vec::with_capacity(size);
        for entry in &self.entries {
            out.extend_from_slice(&entry.line);
            out.push(b'\n');
        }
        Bytes::from(out)
    }
}

/// Streams the records of a window file, one per non-blank line.
#[derive(Debug)]
pub struct WindowFileDecoder<R> {
    input: R,
    line_number: usize,
    buffer: Vec<u8>,
    failed: bool,
}

impl<R: BufRead> WindowFileDecoder<R> {
    /// A decoder over `input`.
    pub fn new(input: R) -> Self {
        Self {
            input,
            line_number: 0,
            buffer: Vec::new(),
            failed: false,
        }
    }

    fn error(&mut self, reason: String) -> Option<Result<ChangeRecord, DecodeError>> {
        // Stop after the first error: the rest of a damaged file is not trustworthy.
        self.failed = true;
        Some(Err(DecodeError {
            line: self.line_number,
            reason,
        }))
    }
}

impl<R: BufRead> Iterator for WindowFileDecoder<R> {
    type Item = Result<ChangeRecord, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            self.buffer.clear();
            self.line_number += 1;
            match self.input.read_until(b'\n', &mut self.buffer) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return self.error(format!("read failed: {e}")),
            }
            let line = self.buffer.trim_ascii();
            if line.is_empty() {
                continue;
            }
            let record = match serde_json::from_slice::<ChangeRecord>(line) {
                Ok(record) => record,
                Err(e) => return self.error(format!("not a change record: {e}")),
            };
            if let Err(reason) = check_inner_json(&record) {
                return self.error(reason);
            }
            return Some(Ok(record));
        }
    }
}

/// The three value strings must each hold a JSON object, or the writer could not apply them.
fn check_inner_json(record: &ChangeRecord) -> Result<(), String> {
    let m = record.the_mod();
    for (field, text) in [
        ("keysJson", &m.keys_json),
        ("oldValuesJson", &m.old_values_json),
        ("newValuesJson", &m.new_values_json),
    ] {
        serde_json::from_str::<BTreeMap<String, IgnoredAny>>(text)
            .map_err(|e| format!("{field} is not a JSON object: {e}"))?;
    }
    Ok(())
}

/// Decodes a whole window file held in memory.
pub fn decode_window_file(bytes: &[u8]) -> Result<Vec<ChangeRecord>, DecodeError> {
    WindowFileDecoder::new(bytes).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Mod, ModType};

    fn record(seconds: i64, nanos: u32, txn: &str, seq: &str, key: &str) -> ChangeRecord {
        ChangeRecord {
            commit_timestamp: Timestamp::new(seconds, nanos).expect("valid"),
            server_transaction_id: txn.to_string(),
            record_sequence: seq.to_string(),
            table_name: "Users".to_string(),
            mods: [Mod {
                keys_json: format!(r#"{{"id":"{key}"}}"#),
                old_values_json: "{}".to_string(),
                new_values_json: r#"{"name":"x"}"#.to_string(),
            }],
            mod_type: ModType::Update,
            number_of_records_in_transaction: 1,
            transaction_tag: String::new(),
            shard: "ls1".to_string(),
        }
    }

    fn sample() -> Vec<(ChangeRecord, u32)> {
        vec![
            (record(10, 5, "b", "00000000", "1"), 0),
            (record(10, 5, "a", "00000001", "2"), 0),
            (record(10, 5, "a", "00000000", "3"), 1),
            (record(10, 5, "a", "00000000", "4"), 0),
            (record(9, 999_999_999, "z", "00000000", "5"), 0),
            (record(10, 4, "a", "00000000", "6"), 0),
        ]
    }

    fn encode(items: &[(ChangeRecord, u32)]) -> Bytes {
        let mut enc = WindowFileEncoder::new();
        for (r, i) in items {
            enc.push(r, *i).expect("serializable");
        }
        enc.finish()
    }

    #[test]
    fn encoding_is_sorted_and_independent_of_input_order() {
        let items = sample();
        let forward = encode(&items);
        let reversed: Vec<_> = items.into_iter().rev().collect();
        assert_eq!(forward, encode(&reversed));
        let keys: Vec<String> = decode_window_file(&forward)
            .expect("decodes")
            .iter()
            .map(|r| r.the_mod().keys_json.clone())
            .collect();
        let expected: Vec<String> = ["5", "6", "4", "3", "2", "1"]
            .iter()
            .map(|k| format!(r#"{{"id":"{k}"}}"#))
            .collect();
        assert_eq!(keys, expected);
        assert!(forward.ends_with(b"\n"));
    }

    #[test]
    fn identical_mods_pushed_twice_are_written_once() {
        let mut items = sample();
        items.push(items[0].clone());
        assert_eq!(encode(&items), encode(&sample()));
    }

    #[test]
    fn decoder_names_the_malformed_line() {
        let good = encode(&sample()[..2]);
        let mut text = good.to_vec();
        text.extend_from_slice(b"\n{\"commitTimestamp\": oops}\n");
        let err = decode_window_file(&text).expect_err("malformed");
        assert_eq!(err.line, 4, "blank line 3 is counted");
        assert!(
            err.to_string().starts_with("line 4: not a change record"),
            "{err}"
        );
    }

    #[test]
    fn decoder_checks_inner_json_and_mod_count() {
        let line = serde_json::to_string(&record(1, 0, "t", "0", "1")).expect("json");
        let broken = line.replace(r#"{\"name\":\"x\"}"#, r#"{\"name\":"#);
        let err = decode_window_file(broken.as_bytes()).expect_err("bad inner");
        assert!(
            err.reason.starts_with("newValuesJson is not a JSON object"),
            "{err}"
        );
        let two = line.replace(r#""mods":["#, r#""mods":[{"keysJson":"{}"},"#);
        let err = decode_window_file(two.as_bytes()).expect_err("two mods");
        assert!(
            err.reason
                .contains("mods must have exactly one element, found 2"),
            "{err}"
        );
        let err = decode_window_file(b"\xff\xfe").expect_err("not utf-8");
        assert_eq!(err.line, 1);
    }

    #[test]
    fn decoder_accepts_crlf_and_missing_final_newline() {
        let mut text = encode(&sample()).to_vec();
        let text_crlf: Vec<u8> = String::from_utf8(text.clone())
            .expect("utf8")
            .replace('\n', "\r\n")
            .into_bytes();
        text.pop();
        assert_eq!(decode_window_file(&text).map(|v| v.len()).ok(), Some(6));
        assert_eq!(
            decode_window_file(&text_crlf).map(|v| v.len()).ok(),
            Some(6)
        );
    }
}
