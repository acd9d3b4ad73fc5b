//! Spanner transactions and the batches they are applied in (DESIGN §6.1–6.3).
//!
//! A window file's records are grouped into [`SpannerTransaction`]s — all records of one shard
//! sharing a commit timestamp and server transaction id, in commit order. A batch is a run of
//! consecutive whole transactions applied in one MySQL transaction; [`batches`] cuts a
//! window's transactions into batches by record count and size, never splitting a transaction
//! and never ending a batch between transactions that share a commit timestamp (so a shard's
//! checkpoint at commit timestamp T means: every change of the shard up to T is applied, none
//! after — what `revrepl validate` compares with a Spanner read at exactly T).

use std::cmp::Ordering;
use std::fmt;

use revrepl_record::{ChangeRecord, Timestamp, sort_in_commit_order};

/// A record's place in commit order: `(commit_timestamp, server_transaction_id,
/// record_sequence)`. The checkpoint stores the position of the last applied record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CommitPosition {
    /// The Spanner commit timestamp.
    pub commit_timestamp: Timestamp,
    /// Spanner's transaction id.
    pub server_transaction_id: String,
    /// The record's sequence within the transaction.
    pub record_sequence: String,
}

impl CommitPosition {
    /// The position of `record`.
    pub fn of(record: &ChangeRecord) -> Self {
        Self {
            commit_timestamp: record.commit_timestamp,
            server_transaction_id: record.server_transaction_id.clone(),
            record_sequence: record.record_sequence.clone(),
        }
    }

    /// Compares the transactions of two positions: `(commit_timestamp, server_transaction_id)`.
    pub fn cmp_transaction(&self, other: &Self) -> Ordering {
        self.commit_timestamp
            .cmp(&other.commit_timestamp)
            .then_with(|| self.server_transaction_id.cmp(&other.server_transaction_id))
    }
}

impl Ord for CommitPosition {
    /// Commit order, as [`ChangeRecord::commit_order`]: sequences compare as numbers when both
    /// are decimal, otherwise as text.
    fn cmp(&self, other: &Self) -> Ordering {
        self.cmp_transaction(other).then_with(|| {
            revrepl_record::compare_sequences(&self.record_sequence, &other.record_sequence)
        })
    }
}

impl PartialOrd for CommitPosition {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for CommitPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} transaction {:?} record {:?}",
            self.commit_timestamp, self.server_transaction_id, self.record_sequence
        )
    }
}

/// The records of one Spanner transaction for one shard, in commit order; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpannerTransaction {
    records: Vec<ChangeRecord>,
}

impl SpannerTransaction {
    /// Sorts `records` into commit order (they may come in any order, as in the reference's
    /// files) and groups them into transactions.
    pub fn group(mut records: Vec<ChangeRecord>) -> Vec<Self> {
        sort_in_commit_order(&mut records);
        let mut transactions: Vec<Self> = Vec::new();
        for record in records {
            match transactions.last_mut() {
                Some(last) if last.contains_transaction_of(&record) => last.records.push(record),
                _ => transactions.push(Self {
                    records: vec![record],
                }),
            }
        }
        transactions
    }

    fn contains_transaction_of(&self, record: &ChangeRecord) -> bool {
        self.records.first().is_some_and(|first| {
            first.commit_timestamp == record.commit_timestamp
                && first.server_transaction_id == record.server_transaction_id
        })
    }

    /// The records, in commit order.
    pub fn records(&self) -> &[ChangeRecord] {
        &self.records
    }

    /// The transaction's commit timestamp.
    pub fn commit_timestamp(&self) -> Timestamp {
        self.records
            .first()
            .map_or(Timestamp::EPOCH, |r| r.commit_timestamp)
    }

    /// Spanner's transaction id.
    pub fn server_transaction_id(&self) -> &str {
        self.records
            .first()
            .map_or("", |r| r.server_transaction_id.as_str())
    }

    /// The position of the transaction's last record.
    pub fn last_position(&self) -> CommitPosition {
        match self.records.last() {
            Some(record) => CommitPosition::of(record),
            None => CommitPosition {
                commit_timestamp: Timestamp::EPOCH,
                server_transaction_id: String::new(),
                record_sequence: String::new(),
            },
        }
    }

    /// The number of records (at least one).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Always `false`: a transaction has at least one record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// An estimate of the transaction's size: the length of its JSON values.
    pub fn approximate_bytes(&self) -> usize {
        self.records
            .iter()
            .map(|r| {
                let m = r.the_mod();
                r.table_name.len() + m.keys_json.len() + m.new_values_json.len() + 64
            })
            .sum()
    }
}

/// How large one MySQL transaction may grow. A single Spanner transaction larger than the
/// limits still goes in one MySQL transaction, alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most records per batch.
    pub max_records: usize,
    /// Most bytes per batch (by [`SpannerTransaction::approximate_bytes`]).
    pub max_bytes: usize,
}

impl Default for BatchLimits {
    /// 5,000 records or 16 MiB.
    fn default() -> Self {
        Self {
            max_records: 5_000,
            max_bytes: 16 << 20,
        }
    }
}

/// Cuts `transactions` into consecutive batches within `limits`; every batch holds at least one
/// whole transaction, and transactions sharing a commit timestamp always land in the same batch
/// (a batch ends only where the commit timestamp changes). When the transactions of one commit
/// timestamp alone exceed the limits, they form one batch, like a single oversized transaction.
pub fn batches(
    transactions: &[SpannerTransaction],
    limits: BatchLimits,
) -> impl Iterator<Item = &[SpannerTransaction]> {
    let mut rest = transactions;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (batch, tail) = rest.split_at(batch_end(rest, limits));
        rest = tail;
        Some(batch)
    })
}

/// Where the batch starting at `transactions[0]` ends: at the last commit-timestamp boundary
/// within `limits`, or after the first commit timestamp's transactions if they alone exceed
/// them.
fn batch_end(transactions: &[SpannerTransaction], limits: BatchLimits) -> usize {
    let (mut records, mut bytes) = (0usize, 0usize);
    // The latest index before which the batch may end (0: none yet).
    let mut boundary = 0;
    let mut previous: Option<Timestamp> = None;
    for (index, transaction) in transactions.iter().enumerate() {
        let commit = transaction.commit_timestamp();
        let (more_records, more_bytes) = (transaction.len(), transaction.approximate_bytes());
        let over =
            records + more_records > limits.max_records || bytes + more_bytes > limits.max_bytes;
        if previous.is_some_and(|p| p != commit) {
            if over {
                return index;
            }
            boundary = index;
        } else if over && boundary > 0 {
            // Inside a commit timestamp: end before it began.
            return boundary;
        }
        records += more_records;
        bytes += more_bytes;
        previous = Some(commit);
    }
    transactions.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use revrepl_record::{Mod, ModType};

    pub(crate) fn record(seconds: i64, txid: &str, sequence: &str) -> ChangeRecord {
        ChangeRecord {
            commit_timestamp: Timestamp::new(seconds, 0).expect("valid"),
            server_transaction_id: txid.into(),
            record_sequence: sequence.into(),
            table_name: "T".into(),
            mods: [Mod {
                keys_json: r#"{"id":"1"}"#.into(),
                old_values_json: "{}".into(),
                new_values_json: "{}".into(),
            }],
            mod_type: ModType::Insert,
            number_of_records_in_transaction: 1,
            transaction_tag: String::new(),
            shard: "s".into(),
        }
    }

    #[test]
    fn groups_unordered_records_into_transactions() {
        let records = vec![
            record(2, "b", "00000001"),
            record(1, "a", "00000000"),
            record(2, "b", "00000000"),
            record(2, "a", "00000000"),
        ];
        let transactions = SpannerTransaction::group(records);
        let shape: Vec<(i64, &str, usize)> = transactions
            .iter()
            .map(|t| {
                (
                    t.commit_timestamp().seconds(),
                    t.server_transaction_id(),
                    t.len(),
                )
            })
            .collect();
        assert_eq!(shape, vec![(1, "a", 1), (2, "a", 1), (2, "b", 2)]);
        assert_eq!(transactions[2].last_position().record_sequence, "00000001");
    }

    #[test]
    fn batches_never_split_transactions() {
        let mut records = Vec::new();
        for t in 0..5 {
            for s in 0..3 {
                records.push(record(t, "x", &format!("{s:08}")));
            }
        }
        let transactions = SpannerTransaction::group(records);
        let limits = BatchLimits {
            max_records: 7,
            max_bytes: usize::MAX,
        };
        let sizes: Vec<usize> = batches(&transactions, limits).map(<[_]>::len).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        let tiny = BatchLimits {
            max_records: 1,
            max_bytes: 1,
        };
        assert_eq!(batches(&transactions, tiny).count(), 5);
    }

    /// Generated: transactions of a few commit timestamps, often many sharing one, with random
    /// sizes and random limits, checked against the model: the batches are the transactions in
    /// order; each batch ends where the commit timestamp changes; it stays within the limits
    /// unless it holds one commit timestamp's transactions alone; and it could not have taken
    /// the next commit timestamp's transactions too (greedy). `BATCH_SEED=<seed>` replays one
    /// seed; `BATCH_SEEDS=N` runs seeds 0..N (default 300).
    #[test]
    fn batches_never_split_a_commit_timestamp_generated() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};

        let number = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
        let seeds: Vec<u64> = match number("BATCH_SEED") {
            Some(seed) => vec![seed],
            None => (0..number("BATCH_SEEDS").unwrap_or(300)).collect(),
        };
        for seed in seeds {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut records = Vec::new();
            for second in 0..rng.random_range(1..8) {
                let transactions = if rng.random_bool(0.5) {
                    rng.random_range(5..40)
                } else {
                    rng.random_range(1..4)
                };
                for t in 0..transactions {
                    let txid = format!("tx{t:03}");
                    for s in 0..rng.random_range(1..5) {
                        records.push(record(second, &txid, &format!("{s:08}")));
                    }
                }
            }
            let transactions = SpannerTransaction::group(records);
            let record_bytes = transactions[0].approximate_bytes() / transactions[0].len();
            let limits = BatchLimits {
                max_records: rng.random_range(1..30),
                max_bytes: if rng.random_bool(0.3) {
                    record_bytes * rng.random_range(1..30)
                } else {
                    usize::MAX
                },
            };
            let cut: Vec<&[SpannerTransaction]> = batches(&transactions, limits).collect();
            let context = format!("seed {seed} (replay: BATCH_SEED={seed}), {limits:?}");
            let flat: Vec<&SpannerTransaction> = cut.iter().flat_map(|b| b.iter()).collect();
            assert_eq!(flat.len(), transactions.len(), "{context}");
            assert!(
                flat.iter().zip(&transactions).all(|(a, b)| *a == b),
                "{context}: the batches are not the transactions in order"
            );
            let size = |batch: &[SpannerTransaction]| -> (usize, usize) {
                batch
                    .iter()
                    .fold((0, 0), |(r, b), t| (r + t.len(), b + t.approximate_bytes()))
            };
            let within = |(r, b): (usize, usize)| r <= limits.max_records && b <= limits.max_bytes;
            for (i, batch) in cut.iter().enumerate() {
                assert!(!batch.is_empty(), "{context}: batch {i} is empty");
                let first = batch[0].commit_timestamp();
                let one_commit = batch.iter().all(|t| t.commit_timestamp() == first);
                assert!(
                    within(size(batch)) || one_commit,
                    "{context}: batch {i} exceeds the limits with several commit timestamps"
                );
                let Some(next) = cut.get(i + 1) else {
                    continue;
                };
                let last = batch[batch.len() - 1].commit_timestamp();
                let following = next[0].commit_timestamp();
                assert_ne!(
                    last, following,
                    "{context}: batch {i} ends inside commit timestamp {last}"
                );
                let group: Vec<SpannerTransaction> = next
                    .iter()
                    .take_while(|t| t.commit_timestamp() == following)
                    .cloned()
                    .collect();
                let ((r, b), (gr, gb)) = (size(batch), size(&group));
                assert!(
                    !within((r + gr, b + gb)),
                    "{context}: batch {i} could have taken commit timestamp {following} too"
                );
            }
        }
    }

    #[test]
    fn positions_order_like_records() {
        let a = CommitPosition::of(&record(1, "a", "9"));
        let b = CommitPosition::of(&record(1, "a", "10"));
        let c = CommitPosition::of(&record(1, "b", "0"));
        assert!(a < b && b < c);
        assert_eq!(a.cmp_transaction(&b), Ordering::Equal);
    }
}
