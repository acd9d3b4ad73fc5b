//! Spanner transactions and the batches they are applied in (DESIGN §6.1–6.3).
//!
//! A window file's records are grouped into [`SpannerTransaction`]s — all records of one shard
//! sharing a commit timestamp and server transaction id, in commit order. A batch is a run of
//! consecutive whole transactions applied in one MySQL transaction; [`batches`] cuts a
//! window's transactions into batches by record count and size, never splitting a transaction
//! and never ending a batch between transactions that share a commit timestamp (so a shard's
//! checkpoint at commit timestamp T means: every change of the shard up to T is applied, none
//! after — what `revrepl validate` compares with a Spanner read at exactly T).
//!
//! When several windows are ready at once (the writer is behind), [`WindowBatcher`] lets a batch
//! take in the transactions of the following windows while it stays within the limits, so short
//! windows cost no more MySQL commits than long ones. [`BatchWindows`] says which window each
//! transaction of such a batch came from.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::fmt;

use revrepl_record::{ChangeRecord, Timestamp, Window, sort_in_commit_order};

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

/// Which windows a batch's transactions come from: consecutive runs of the batch's
/// transactions, each with its window, windows in order. A batch spans several windows only
/// when they were ready together; each transaction still belongs to exactly one window, the
/// one an error or a dead letter names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchWindows {
    /// Each window and how many of the batch's transactions are from it (at least one, unless
    /// made by [`BatchWindows::single`]).
    parts: Vec<(Window, usize)>,
}

impl BatchWindows {
    /// `transactions` transactions, all from `window` (also none: the batch is then about
    /// `window` alone).
    pub fn single(window: Window, transactions: usize) -> Self {
        Self {
            parts: vec![(window, transactions)],
        }
    }

    /// The next `transactions` transactions of the batch are from `window` (the same window as
    /// the last part, or a later one); nothing for zero.
    pub fn push(&mut self, window: Window, transactions: usize) {
        if transactions == 0 {
            return;
        }
        match self.parts.last_mut() {
            Some((last, count)) if *last == window => *count += transactions,
            _ => self.parts.push((window, transactions)),
        }
    }

    /// Each window with how many of the batch's transactions are from it, in order.
    pub fn parts(&self) -> &[(Window, usize)] {
        &self.parts
    }

    /// The window of the batch's first transaction.
    pub fn first(&self) -> Option<Window> {
        self.parts.first().map(|(window, _)| *window)
    }

    /// The window of the batch's last transaction.
    pub fn last(&self) -> Option<Window> {
        self.parts.last().map(|(window, _)| *window)
    }

    /// How many transactions the batch holds.
    pub fn transactions(&self) -> usize {
        self.parts.iter().map(|(_, count)| count).sum()
    }

    /// `items` (one per transaction of the batch) cut by window: each window with its items.
    /// Items beyond [`BatchWindows::transactions`] are left out.
    pub fn split<'a, T>(&'a self, items: &'a [T]) -> impl Iterator<Item = (Window, &'a [T])> {
        let mut rest = items;
        self.parts.iter().map(move |&(window, count)| {
            let (part, tail) = rest.split_at(count.min(rest.len()));
            rest = tail;
            (window, part)
        })
    }
}

impl fmt::Display for BatchWindows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.first(), self.last()) {
            (Some(first), Some(last)) if first == last => write!(f, "{first}"),
            (Some(first), Some(last)) => write!(
                f,
                "[{}, {}) ({} windows)",
                first.start().to_rfc3339_millis(),
                last.end().to_rfc3339_millis(),
                self.parts.len()
            ),
            _ => f.write_str("no window"),
        }
    }
}

/// What [`WindowBatcher::take`] hands on, in the order it must be applied and recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assembled {
    /// Whole transactions, in commit order, from one or more consecutive windows; `ends`: the
    /// windows whose last transaction is in it (applied once it is).
    Batch {
        /// Which window each transaction is from.
        windows: BatchWindows,
        /// The transactions.
        transactions: Vec<SpannerTransaction>,
        /// The windows this batch completes, in order.
        ends: Vec<Window>,
    },
    /// A window with no transaction left to hand on (it had none, or they all went in the
    /// batches handed on before): applied once they are.
    End(Window),
}

/// Cuts the transactions of consecutive windows into batches as [`batches`] cuts one window's,
/// a batch taking in the following windows' transactions while it stays within the limits.
///
/// Windows are pushed in order; [`WindowBatcher::take`] hands on the batches that are complete
/// with the windows each completes. It holds back the last batch, which the next
/// window may still fill, unless told to flush (no next window is ready yet, or enough windows
/// are held).
#[derive(Debug)]
pub struct WindowBatcher {
    limits: BatchLimits,
    /// Transactions not handed on yet, in commit order.
    held: Vec<SpannerTransaction>,
    /// The windows not ended yet, in order, each with how many of `held` are from it (zero for
    /// a window whose transactions were all handed on, or that had none).
    windows: VecDeque<(Window, usize)>,
}

impl WindowBatcher {
    /// A batcher cutting batches within `limits`.
    pub fn new(limits: BatchLimits) -> Self {
        Self {
            limits,
            held: Vec::new(),
            windows: VecDeque::new(),
        }
    }

    /// Adds the next window's transactions, in commit order (all of them after every
    /// transaction pushed before, as windows follow each other).
    pub fn push(&mut self, window: Window, transactions: Vec<SpannerTransaction>) {
        self.windows.push_back((window, transactions.len()));
        self.held.extend(transactions);
    }

    /// How many windows are pushed and not yet ended.
    pub fn windows_held(&self) -> usize {
        self.windows.len()
    }

    /// The complete batches, each with the windows it completes; with `flush`, everything
    /// held. Without it, the last batch stays held: the next window may fill it.
    pub fn take(&mut self, flush: bool) -> Vec<Assembled> {
        let mut sizes: Vec<usize> = batches(&self.held, self.limits).map(<[_]>::len).collect();
        if !flush {
            sizes.pop();
        }
        // Windows with nothing held before the first batch (empty windows) end at once.
        let mut out: Vec<Assembled> = self
            .end_empty_windows()
            .into_iter()
            .map(Assembled::End)
            .collect();
        for size in sizes {
            let transactions: Vec<SpannerTransaction> = self.held.drain(..size).collect();
            let mut windows = BatchWindows::default();
            let mut left = size;
            for (window, count) in &mut self.windows {
                if left == 0 {
                    break;
                }
                let taken = (*count).min(left);
                windows.push(*window, taken);
                *count -= taken;
                left -= taken;
            }
            let ends = self.end_empty_windows();
            out.push(Assembled::Batch {
                windows,
                transactions,
                ends,
            });
        }
        out
    }

    /// Removes and returns the leading windows of which nothing is held.
    fn end_empty_windows(&mut self) -> Vec<Window> {
        let mut ended = Vec::new();
        while let Some(&(window, 0)) = self.windows.front() {
            self.windows.pop_front();
            ended.push(window);
        }
        ended
    }
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

    /// Generated: windows of random transactions (some windows empty, often several
    /// transactions per commit timestamp) pushed into a [`WindowBatcher`] with random limits and
    /// random flushes, checked against the model: the batches are the transactions in order,
    /// each window ends exactly once, in order, after all of its transactions were handed on;
    /// each batch says the right window for each transaction, never ends inside a commit
    /// timestamp and stays within the limits unless it holds one commit timestamp alone; a
    /// final flush leaves nothing held. `BATCHER_SEED=<seed>` replays one seed;
    /// `BATCHER_SEEDS=N` runs seeds 0..N (default 300).
    #[test]
    fn window_batcher_hands_on_whole_windows_in_order_generated() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};

        let number = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
        let seeds: Vec<u64> = match number("BATCHER_SEED") {
            Some(seed) => vec![seed],
            None => (0..number("BATCHER_SEEDS").unwrap_or(300)).collect(),
        };
        for seed in seeds {
            let mut rng = StdRng::seed_from_u64(seed);
            let limits = BatchLimits {
                max_records: rng.random_range(1..25),
                max_bytes: usize::MAX,
            };
            let context = format!("seed {seed} (replay: BATCHER_SEED={seed}), {limits:?}");
            let mut batcher = WindowBatcher::new(limits);
            let mut all: Vec<(Window, SpannerTransaction)> = Vec::new();
            let mut out = Vec::new();
            let count = rng.random_range(1..20);
            let mut windows = Vec::new();
            for w in 0..count {
                let window = Window::from_bounds(
                    Timestamp::new(w * 10, 0).expect("valid"),
                    Timestamp::new(w * 10 + 10, 0).expect("valid"),
                )
                .expect("window");
                windows.push(window);
                let mut records = Vec::new();
                if !rng.random_bool(0.2) {
                    for t in 0..rng.random_range(1..12) {
                        let second = w * 10 + rng.random_range(0..10);
                        for s in 0..rng.random_range(1..4) {
                            records.push(record(second, &format!("tx{t:03}"), &format!("{s:08}")));
                        }
                    }
                }
                let transactions = SpannerTransaction::group(records);
                all.extend(transactions.iter().map(|t| (window, t.clone())));
                batcher.push(window, transactions);
                let flush = w + 1 == count || rng.random_bool(0.3);
                out.extend(batcher.take(flush));
            }
            assert_eq!(
                batcher.windows_held(),
                0,
                "{context}: windows held after a flush"
            );
            let mut handed = 0;
            let mut ended = Vec::new();
            let mut previous_batch_end: Option<Timestamp> = None;
            for item in &out {
                let ends = match item {
                    Assembled::Batch {
                        windows: parts,
                        transactions,
                        ends,
                    } => {
                        assert!(!transactions.is_empty(), "{context}: an empty batch");
                        assert_eq!(parts.transactions(), transactions.len(), "{context}");
                        for (i, transaction) in transactions.iter().enumerate() {
                            let (window, expected) = &all[handed + i];
                            assert_eq!(transaction, expected, "{context}: out of order");
                            let (said, _) = parts
                                .split(transactions)
                                .find(|(_, part)| part.iter().any(|t| std::ptr::eq(t, transaction)))
                                .expect("every transaction has a window");
                            assert_eq!(said, *window, "{context}: wrong window");
                        }
                        assert!(
                            parts.parts().windows(2).all(|p| p[0].0 < p[1].0),
                            "{context}: windows out of order in {parts}"
                        );
                        let first = transactions[0].commit_timestamp();
                        assert_ne!(
                            previous_batch_end,
                            Some(first),
                            "{context}: a batch boundary inside commit timestamp {first}"
                        );
                        previous_batch_end = transactions.last().map(|t| t.commit_timestamp());
                        let records: usize = transactions.iter().map(SpannerTransaction::len).sum();
                        let one_commit = transactions.iter().all(|t| t.commit_timestamp() == first);
                        assert!(
                            records <= limits.max_records || one_commit,
                            "{context}: {records} records in a batch of several commit timestamps"
                        );
                        assert!(
                            ended
                                .last()
                                .is_none_or(|e: &Window| *e < parts.first().expect("part")),
                            "{context}: a batch of an ended window"
                        );
                        handed += transactions.len();
                        ends.clone()
                    }
                    Assembled::End(window) => vec![*window],
                };
                for window in &ends {
                    assert!(
                        all[handed..].iter().all(|(w, _)| w != window),
                        "{context}: window {window} ended before all its transactions"
                    );
                    ended.push(*window);
                }
            }
            assert_eq!(handed, all.len(), "{context}: transactions lost");
            assert_eq!(
                ended, windows,
                "{context}: every window ends once, in order"
            );
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
