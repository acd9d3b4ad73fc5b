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
use serde_json::{Map, Value};

use crate::record::{ChangeRecord, ModType};
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

/// The fields of one window-file line, borrowed, with the three value documents still JSON
/// objects: what a [`ChangeRecord`] holds, without building its strings first.
///
/// [`LineFields::write`] gives exactly the bytes `serde_json` writes for the equivalent
/// [`ChangeRecord`] (whose `keysJson`, `oldValuesJson` and `newValuesJson` are the objects as
/// compact JSON text), in one pass.
#[derive(Debug, Clone, Copy)]
pub struct LineFields<'a> {
    /// When the Spanner transaction committed.
    pub commit_timestamp: Timestamp,
    /// Spanner's id of the transaction.
    pub server_transaction_id: &'a str,
    /// The record's position in the partition's stream for this transaction.
    pub record_sequence: &'a str,
    /// The Spanner table changed.
    pub table_name: &'a str,
    /// Primary-key columns and values.
    pub keys: &'a Map<String, Value>,
    /// Old values (`{}` unless captured).
    pub old_values: &'a Map<String, Value>,
    /// New values (`{}` for deletes).
    pub new_values: &'a Map<String, Value>,
    /// Insert, update or delete.
    pub mod_type: ModType,
    /// How many data-change records the whole transaction has.
    pub number_of_records_in_transaction: u64,
    /// The transaction tag.
    pub transaction_tag: &'a str,
    /// The logical shard directory (`skip` for unknown tables).
    pub shard: &'a str,
}

impl LineFields<'_> {
    /// Appends the line (without its newline) to `out`.
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        out.extend_from_slice(b"{\"commitTimestamp\":{\"seconds\":");
        serde_json::to_writer(&mut *out, &self.commit_timestamp.seconds())?;
        out.extend_from_slice(b",\"nanos\":");
        serde_json::to_writer(&mut *out, &self.commit_timestamp.nanos())?;
        out.extend_from_slice(b"},\"serverTransactionId\":");
        write_str(out, self.server_transaction_id);
        out.extend_from_slice(b",\"recordSequence\":");
        write_str(out, self.record_sequence);
        out.extend_from_slice(b",\"tableName\":");
        write_str(out, self.table_name);
        out.extend_from_slice(b",\"mods\":[{\"keysJson\":\"");
        write_object_as_text(out, self.keys)?;
        out.extend_from_slice(b"\",\"oldValuesJson\":\"");
        write_object_as_text(out, self.old_values)?;
        out.extend_from_slice(b"\",\"newValuesJson\":\"");
        write_object_as_text(out, self.new_values)?;
        out.extend_from_slice(b"\"}],\"modType\":\"");
        out.extend_from_slice(match self.mod_type {
            ModType::Insert => b"INSERT",
            ModType::Update => b"UPDATE",
            ModType::Delete => b"DELETE",
        });
        out.extend_from_slice(b"\",\"numberOfRecordsInTransaction\":");
        serde_json::to_writer(&mut *out, &self.number_of_records_in_transaction)?;
        out.extend_from_slice(b",\"transactionTag\":");
        write_str(out, self.transaction_tag);
        out.extend_from_slice(b",\"shard\":");
        write_str(out, self.shard);
        out.push(b'}');
        Ok(())
    }
}

/// `serde_json`'s escapes: `"`, `\` and control characters (`\b \t \n \f \r`, else `\u00XX`).
const fn escape_table() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = b'u';
        byte += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0A] = b'n';
    table[0x0C] = b'f';
    table[0x0D] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
}

static ESCAPE: [u8; 256] = escape_table();
static HEX_DIGITS: [u8; 16] = *b"0123456789abcdef";

/// Appends `text` escaped as `serde_json` escapes string contents; with `twice`, escaped again
/// (the contents of a string inside JSON text that is itself a string value).
fn escape(out: &mut Vec<u8>, text: &str, twice: bool) {
    let bytes = text.as_bytes();
    // Most strings need no escape at all: find the first byte that does, eight at a time.
    let first = first_to_escape(bytes);
    out.extend_from_slice(&bytes[..first]);
    let mut start = first;
    for (i, &byte) in bytes.iter().enumerate().skip(first) {
        let escape = ESCAPE[byte as usize];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        // Once: `\` then the escape letter (`"`, `\`, `b`, ...). Twice: that pair escaped again,
        // which doubles the backslash and escapes a `"` or `\` letter once more.
        out.extend_from_slice(if twice { b"\\\\" } else { b"\\" });
        if twice && (escape == b'"' || escape == b'\\') {
            out.push(b'\\');
        }
        out.push(escape);
        if escape == b'u' {
            out.extend_from_slice(&[
                b'0',
                b'0',
                HEX_DIGITS[usize::from(byte >> 4)],
                HEX_DIGITS[usize::from(byte & 0xF)],
            ]);
        }
    }
    out.extend_from_slice(&bytes[start..]);
}

/// The index of the first byte of `bytes` that [`ESCAPE`] escapes, or its length.
fn first_to_escape(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Whether any byte of `word` is zero; exact as a yes/no answer.
    let has_zero = |word: u64| word.wrapping_sub(ONES) & !word & HIGH != 0;
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in chunks.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        // A byte below 0x20, a `"` or a `\`.
        let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGH != 0;
        if below_space
            || has_zero(word ^ (ONES * u64::from(b'"')))
            || has_zero(word ^ (ONES * u64::from(b'\\')))
        {
            break;
        }
        offset += 8;
    }
    offset
        + bytes[offset..]
            .iter()
            .position(|&byte| ESCAPE[usize::from(byte)] != 0)
            .unwrap_or(bytes.len() - offset)
}

/// A JSON string.
fn write_str(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    escape(out, text, false);
    out.push(b'"');
}

/// The compact JSON text of `object`, escaped as the contents of a JSON string.
fn write_object_as_text(
    out: &mut Vec<u8>,
    object: &Map<String, Value>,
) -> Result<(), serde_json::Error> {
    out.push(b'{');
    for (i, (key, value)) in object.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"\\\"");
        escape(out, key, true);
        out.extend_from_slice(b"\\\":");
        write_value_as_text(out, value)?;
    }
    out.push(b'}');
    Ok(())
}

fn write_value_as_text(out: &mut Vec<u8>, value: &Value) -> Result<(), serde_json::Error> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // Digits, signs, `.` and `e`: nothing to escape.
        Value::Number(number) => serde_json::to_writer(&mut *out, number)?,
        Value::String(text) => {
            out.extend_from_slice(b"\\\"");
            escape(out, text, true);
            out.extend_from_slice(b"\\\"");
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value_as_text(out, item)?;
            }
            out.push(b']');
        }
        Value::Object(object) => write_object_as_text(out, object)?,
    }
    Ok(())
}

/// Builds the bytes of one window file.
///
/// Lines are kept in a few large blocks rather than one allocation each: a window holds
/// hundreds of thousands of lines when the reader is far ahead of its watermark, and this keeps
/// both the allocator's work and the memory per buffered line small.
#[derive(Debug, Default)]
pub struct WindowFileEncoder {
    entries: Vec<Entry>,
    /// Each entry's server transaction id, record sequence and line, back to back.
    blocks: Vec<Vec<u8>>,
    /// The line being encoded (its allocation is reused).
    scratch: Vec<u8>,
}

/// The first block of a file; later blocks double up to [`MAX_BLOCK`].
const FIRST_BLOCK: usize = 4 * 1024;
const MAX_BLOCK: usize = 1024 * 1024;

#[derive(Debug)]
struct Entry {
    commit_timestamp: Timestamp,
    /// The record sequence as a number, when it is one (see `compare_sequences`).
    sequence_number: Option<u64>,
    mod_index: u32,
    block: u32,
    /// Where the transaction id starts in its block; the sequence and the line follow it.
    start: u32,
    transaction_len: u32,
    sequence_len: u32,
    line_len: u32,
}

impl Entry {
    fn transaction<'a>(&self, blocks: &'a [Vec<u8>]) -> &'a [u8] {
        let start = self.start as usize;
        &blocks[self.block as usize][start..start + self.transaction_len as usize]
    }

    fn sequence<'a>(&self, blocks: &'a [Vec<u8>]) -> &'a [u8] {
        let start = self.start as usize + self.transaction_len as usize;
        &blocks[self.block as usize][start..start + self.sequence_len as usize]
    }

    fn line<'a>(&self, blocks: &'a [Vec<u8>]) -> &'a [u8] {
        let start =
            self.start as usize + self.transaction_len as usize + self.sequence_len as usize;
        &blocks[self.block as usize][start..start + self.line_len as usize]
    }

    /// Commit timestamp, server transaction id, record sequence (as `compare_sequences`),
    /// mod index, then the line itself.
    fn order(&self, other: &Self, blocks: &[Vec<u8>]) -> std::cmp::Ordering {
        self.commit_timestamp
            .cmp(&other.commit_timestamp)
            .then_with(|| self.transaction(blocks).cmp(other.transaction(blocks)))
            .then_with(|| match (self.sequence_number, other.sequence_number) {
                (Some(a), Some(b)) => a.cmp(&b),
                _ => self.sequence(blocks).cmp(other.sequence(blocks)),
            })
            .then_with(|| self.mod_index.cmp(&other.mod_index))
            .then_with(|| self.line(blocks).cmp(other.line(blocks)))
    }
}

impl WindowFileEncoder {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one line: `record` carries the `mod_index`-th mod of its data-change record.
    pub fn push(&mut self, record: &ChangeRecord, mod_index: u32) -> Result<(), serde_json::Error> {
        self.scratch.clear();
        serde_json::to_writer(&mut self.scratch, record)?;
        self.store(
            record.commit_timestamp,
            &record.server_transaction_id,
            &record.record_sequence,
            mod_index,
        )
    }

    /// Adds one line from its fields: the same bytes as [`WindowFileEncoder::push`] of the
    /// equivalent [`ChangeRecord`], without building it.
    pub fn push_fields(
        &mut self,
        line: &LineFields<'_>,
        mod_index: u32,
    ) -> Result<(), serde_json::Error> {
        self.scratch.clear();
        line.write(&mut self.scratch)?;
        self.store(
            line.commit_timestamp,
            line.server_transaction_id,
            line.record_sequence,
            mod_index,
        )
    }

    /// Files the line in `scratch` with its sort key.
    fn store(
        &mut self,
        commit_timestamp: Timestamp,
        server_transaction_id: &str,
        record_sequence: &str,
        mod_index: u32,
    ) -> Result<(), serde_json::Error> {
        let transaction = server_transaction_id.as_bytes();
        let sequence = record_sequence.as_bytes();
        let size = transaction.len() + sequence.len() + self.scratch.len();
        let too_long =
            || <serde_json::Error as serde::ser::Error>::custom("a window-file line over 4 GiB");
        let room = self
            .blocks
            .last()
            .is_some_and(|block| block.capacity() - block.len() >= size);
        if !room {
            let next = self
                .blocks
                .last()
                .map_or(FIRST_BLOCK, |block| (block.capacity() * 2).min(MAX_BLOCK));
            self.blocks.push(Vec::with_capacity(next.max(size)));
        }
        let block_index = u32::try_from(self.blocks.len() - 1).map_err(|_| too_long())?;
        let Some(block) = self.blocks.last_mut() else {
            return Err(too_long());
        };
        let entry = Entry {
            commit_timestamp,
            sequence_number: record_sequence.parse().ok(),
            mod_index,
            block: block_index,
            start: u32::try_from(block.len()).map_err(|_| too_long())?,
            transaction_len: u32::try_from(transaction.len()).map_err(|_| too_long())?,
            sequence_len: u32::try_from(sequence.len()).map_err(|_| too_long())?,
            line_len: u32::try_from(self.scratch.len()).map_err(|_| too_long())?,
        };
        block.extend_from_slice(transaction);
        block.extend_from_slice(sequence);
        block.extend_from_slice(&self.scratch);
        self.entries.push(entry);
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
    pub fn finish(self) -> Bytes {
        let Self {
            mut entries,
            blocks,
            ..
        } = self;
        entries.sort_by(|a, b| a.order(b, &blocks));
        entries.dedup_by(|a, b| a.order(b, &blocks).is_eq());
        let size = entries.iter().map(|e| e.line_len as usize + 1).sum();
        let mut out = Vec::with_capacity(size);
        for entry in &entries {
            out.extend_from_slice(entry.line(&blocks));
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

    mod line_fields {
        use super::*;
        use proptest::prelude::*;
        use serde_json::{Map, Value, json};

        fn object(value: Value) -> Map<String, Value> {
            match value {
                Value::Object(map) => map,
                _ => Map::new(),
            }
        }

        /// What the reader built before `LineFields`: a record with the objects as text.
        fn via_record(fields: &LineFields<'_>) -> Vec<u8> {
            let text = |map: &Map<String, Value>| Value::Object(map.clone()).to_string();
            let record = ChangeRecord {
                commit_timestamp: fields.commit_timestamp,
                server_transaction_id: fields.server_transaction_id.to_string(),
                record_sequence: fields.record_sequence.to_string(),
                table_name: fields.table_name.to_string(),
                mods: [Mod {
                    keys_json: text(fields.keys),
                    old_values_json: text(fields.old_values),
                    new_values_json: text(fields.new_values),
                }],
                mod_type: fields.mod_type,
                number_of_records_in_transaction: fields.number_of_records_in_transaction,
                transaction_tag: fields.transaction_tag.to_string(),
                shard: fields.shard.to_string(),
            };
            serde_json::to_vec(&record).expect("serializable")
        }

        fn written(fields: &LineFields<'_>) -> Vec<u8> {
            let mut out = Vec::new();
            fields.write(&mut out).expect("writes");
            out
        }

        #[test]
        fn writes_what_serde_json_writes_for_the_record() {
            let keys = object(json!({"id": "1", "k\"ey": "a\\b"}));
            let new_values = object(json!({
                "text": "quote \" backslash \\ newline \n tab \t nul \u{0} del \u{7f} é 🎉 </tag>",
                "json": "{\"k\":[1,2]}", "n": 12.5, "neg": -3, "big": 18_446_744_073_709_551_615u64,
                "t": true, "f": false, "z": null, "list": ["a", 1, null, {"x": "\u{1f}"}],
                "nested": {"a": {"b": []}, "": {}}
            }));
            let old_values = Map::new();
            let fields = LineFields {
                commit_timestamp: Timestamp::new(1_719_247_984, 109_263_000).expect("valid"),
                server_transaction_id: "NzkxOTE5OTY4NTQzNjMzODY3Mg==",
                record_sequence: "00000001",
                table_name: "Us\"ers",
                keys: &keys,
                old_values: &old_values,
                new_values: &new_values,
                mod_type: ModType::Update,
                number_of_records_in_transaction: 3,
                transaction_tag: "txBy=\u{8}",
                shard: "ls1",
            };
            assert_eq!(
                String::from_utf8(written(&fields)).expect("utf-8"),
                String::from_utf8(via_record(&fields)).expect("utf-8")
            );
        }

        fn text() -> impl Strategy<Value = String> {
            // Plain letters, everything serde_json escapes, and multi-byte characters.
            prop::collection::vec(
                prop_oneof![
                    prop::char::range('a', 'z'),
                    prop::char::range('\u{0}', '\u{21}'),
                    Just('"'),
                    Just('\\'),
                    Just('/'),
                    Just('\u{7f}'),
                    Just('é'),
                    Just('\u{2028}'),
                    Just('🎉'),
                ],
                0..24,
            )
            .prop_map(|chars| chars.into_iter().collect())
        }

        fn value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>().prop_map(
                    |f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
                ),
                text().prop_map(Value::String),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map(text(), inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn map() -> impl Strategy<Value = Map<String, Value>> {
            prop::collection::btree_map(text(), value(), 0..5).prop_map(|m| m.into_iter().collect())
        }

        proptest! {
            #[test]
            fn finds_the_first_byte_to_escape(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
                let expected = bytes.iter().position(|&b| ESCAPE[usize::from(b)] != 0);
                prop_assert_eq!(first_to_escape(&bytes), expected.unwrap_or(bytes.len()));
            }

            #[test]
            fn matches_serde_json_for_any_values(
                keys in map(), old_values in map(), new_values in map(),
                transaction in text(), sequence in text(), table in text(), tag in text(),
                seconds in -62_135_596_800i64..253_402_300_799, nanos in 0u32..1_000_000_000,
                records in any::<u64>(), kind in 0..3u8,
            ) {
                let fields = LineFields {
                    commit_timestamp: Timestamp::new(seconds, nanos).expect("in range"),
                    server_transaction_id: &transaction,
                    record_sequence: &sequence,
                    table_name: &table,
                    keys: &keys,
                    old_values: &old_values,
                    new_values: &new_values,
                    mod_type: [ModType::Insert, ModType::Update, ModType::Delete][usize::from(kind)],
                    number_of_records_in_transaction: records,
                    transaction_tag: &tag,
                    shard: "s",
                };
                prop_assert_eq!(written(&fields), via_record(&fields));
                // And the encoder files it as it files the record.
                let mut by_fields = WindowFileEncoder::new();
                by_fields.push_fields(&fields, 2).expect("push");
                let mut by_record = WindowFileEncoder::new();
                let record: ChangeRecord =
                    serde_json::from_slice(&via_record(&fields)).expect("reads back");
                by_record.push(&record, 2).expect("push");
                prop_assert_eq!(by_fields.finish(), by_record.finish());
            }
        }
    }
}
