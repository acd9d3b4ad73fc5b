//! Which change-stream partitions exist, which may start, and how far the stream is complete
//! (DESIGN §3.1–3.2).
//!
//! Invariants:
//! - A child partition is started exactly once, and only after every one of its parents has
//!   finished (a merged child is announced by each parent; the first announcement registers it).
//! - A partition is finished only after its query ended *and* a child-partitions record was
//!   seen; a query that ends without one must be re-issued from the partition's own position.
//! - The low watermark is the minimum, over partitions that are pending (announced, not started)
//!   or running, of the time before which each has proven every record delivered. It only uses
//!   timestamps that were observed, never a query bound we chose.

use std::collections::HashMap;

use revrepl_record::Timestamp;

use crate::change_stream::ChildPartition;

/// A partition token; `None` is the initial query.
pub type Token = Option<String>;

/// A short, log-friendly form of a token.
pub fn short_token(token: &Token) -> String {
    match token {
        None => "initial".to_string(),
        Some(t) => t.chars().take(12).collect(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Running,
    Finished,
}

#[derive(Debug, Clone)]
struct Partition {
    parents: Vec<String>,
    /// The partitions whose child-partitions records named it: its parents, or the initial
    /// query (whose children have no parents and start while it may still be running).
    announced_by: Vec<Token>,
    start: Timestamp,
    status: Status,
    /// Every record of this partition with a commit timestamp before this has been seen.
    complete_before: Timestamp,
    saw_children: bool,
}

/// A partition that may be queried now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStart {
    /// The token (`None` for the initial query).
    pub token: Token,
    /// The start timestamp of its query.
    pub start: Timestamp,
}

/// What to do when a partition's query stream ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryEnd {
    /// The partition is done; its children are registered.
    Finished,
    /// No child-partitions record was seen: query the partition again from its own position.
    Requery,
}

/// Counts of partitions by state, for metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionCounts {
    /// Announced, waiting for parents.
    pub pending: usize,
    /// Being queried.
    pub running: usize,
    /// Done.
    pub finished: usize,
}

/// Tracks the partitions of one change-stream read.
#[derive(Debug)]
pub struct PartitionTracker {
    partitions: HashMap<Token, Partition>,
    /// Finished partitions no longer held in `partitions` (see [`PartitionTracker::take_startable`]).
    forgotten: usize,
}

/// Something that should not happen if Spanner and the caller keep the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    /// An event for a partition that was never started.
    #[error("partition {0} is not running")]
    NotRunning(String),
}

impl PartitionTracker {
    /// A read starting at `start` with the initial query.
    pub fn new(start: Timestamp) -> Self {
        let initial = Partition {
            parents: Vec::new(),
            announced_by: Vec::new(),
            start,
            status: Status::Pending,
            complete_before: start,
            saw_children: false,
        };
        Self {
            partitions: HashMap::from([(None, initial)]),
            forgotten: 0,
        }
    }

    fn running(&mut self, token: &Token) -> Result<&mut Partition, PartitionError> {
        match self.partitions.get_mut(token) {
            Some(p) if p.status == Status::Running => Ok(p),
            _ => Err(PartitionError::NotRunning(short_token(token))),
        }
    }

    /// Marks every pending partition whose parents have all finished as running, and returns
    /// them, in a stable order (by start, then token).
    ///
    /// Then forgets finished partitions that nothing can name again, so memory stays flat over
    /// weeks of partition churn (see `PartitionTracker::forget_finished`).
    pub fn take_startable(&mut self) -> Vec<PartitionStart> {
        let ready: Vec<Token> = self
            .partitions
            .iter()
            .filter(|(_, p)| p.status == Status::Pending)
            .filter(|(_, p)| {
                p.parents.iter().all(|parent| {
                    self.partitions
                        .get(&Some(parent.clone()))
                        .is_none_or(|q| q.status == Status::Finished)
                })
            })
            .map(|(token, _)| token.clone())
            .collect();
        let mut starts: Vec<PartitionStart> = ready
            .into_iter()
            .filter_map(|token| {
                let p = self.partitions.get_mut(&token)?;
                p.status = Status::Running;
                Some(PartitionStart {
                    token,
                    start: p.start,
                })
            })
            .collect();
        starts.sort_by(|a, b| a.start.cmp(&b.start).then_with(|| a.token.cmp(&b.token)));
        self.forget_finished();
        starts
    }

    /// Drops each finished partition that no pending partition waits for as a parent and
    /// that no unfinished partition announced. Nothing can name it again: a partition is named
    /// only by the records of the partitions that announce it, and a finished partition's
    /// query sends nothing more. (The initial query's children start while it may still run:
    /// a re-query of it after an error or a stall announces them again, so they are kept
    /// until it finished — otherwise they would be started a second time.) A child stays
    /// pending, keeping all its parents, until every one of them has finished, so a parent
    /// that is not held any more is one that finished.
    fn forget_finished(&mut self) {
        let awaited: std::collections::HashSet<String> = self
            .partitions
            .values()
            .filter(|p| p.status == Status::Pending)
            .flat_map(|p| p.parents.iter().cloned())
            .collect();
        let unfinished: std::collections::HashSet<Token> = self
            .partitions
            .iter()
            .filter(|(_, p)| p.status != Status::Finished)
            .map(|(token, _)| token.clone())
            .collect();
        let before = self.partitions.len();
        self.partitions.retain(|token, p| {
            p.status != Status::Finished
                || token.as_ref().is_some_and(|token| awaited.contains(token))
                || p.announced_by.iter().any(|a| unfinished.contains(a))
        });
        self.forgotten += before - self.partitions.len();
    }

    /// A data record at `commit_timestamp`: everything before it in this partition was seen
    /// (records arrive in commit-timestamp order within a partition).
    pub fn on_data(
        &mut self,
        token: &Token,
        commit_timestamp: Timestamp,
    ) -> Result<(), PartitionError> {
        let p = self.running(token)?;
        p.complete_before = p.complete_before.max(commit_timestamp);
        Ok(())
    }

    /// A heartbeat at `timestamp`: everything up to and including it was seen.
    pub fn on_heartbeat(
        &mut self,
        token: &Token,
        timestamp: Timestamp,
    ) -> Result<(), PartitionError> {
        let p = self.running(token)?;
        let after = Timestamp::from_nanos(timestamp.as_nanos() + 1).unwrap_or(timestamp);
        p.complete_before = p.complete_before.max(after);
        Ok(())
    }

    /// A child-partitions record: registers unknown children as pending (each counts in the
    /// watermark from its start at once) and notes that `token` has announced its children.
    pub fn on_children(
        &mut self,
        token: &Token,
        start_timestamp: Timestamp,
        children: &[ChildPartition],
    ) -> Result<(), PartitionError> {
        let p = self.running(token)?;
        p.saw_children = true;
        p.complete_before = p.complete_before.max(start_timestamp);
        for child in children {
            let known = self
                .partitions
                .entry(Some(child.token.clone()))
                .or_insert_with(|| Partition {
                    parents: child.parent_partition_tokens.clone(),
                    announced_by: Vec::new(),
                    start: start_timestamp,
                    status: Status::Pending,
                    complete_before: start_timestamp,
                    saw_children: false,
                });
            if !known.announced_by.contains(token) {
                known.announced_by.push(token.clone());
            }
        }
        Ok(())
    }

    /// The query of `token` ended without an error.
    pub fn on_query_end(&mut self, token: &Token) -> Result<QueryEnd, PartitionError> {
        let p = self.running(token)?;
        if p.saw_children {
            p.status = Status::Finished;
            Ok(QueryEnd::Finished)
        } else {
            Ok(QueryEnd::Requery)
        }
    }

    /// Every record with a commit timestamp before the returned time has been delivered by
    /// every partition. `None` when no partition is pending or running (the stream ended).
    pub fn low_watermark(&self) -> Option<Timestamp> {
        self.partitions
            .values()
            .filter(|p| p.status != Status::Finished)
            .map(|p| p.complete_before)
            .min()
    }

    /// How far `token` itself is complete (for pausing partitions far ahead).
    pub fn complete_before(&self, token: &Token) -> Option<Timestamp> {
        self.partitions.get(token).map(|p| p.complete_before)
    }

    /// How many partitions the tracker holds in memory (pending, running, and finished ones
    /// still needed to start a child).
    pub fn tracked(&self) -> usize {
        self.partitions.len()
    }

    /// Counts by state.
    pub fn counts(&self) -> PartitionCounts {
        let mut counts = PartitionCounts::default();
        for p in self.partitions.values() {
            match p.status {
                Status::Pending => counts.pending += 1,
                Status::Running => counts.running += 1,
                Status::Finished => counts.finished += 1,
            }
        }
        counts.finished += self.forgotten;
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64) -> Timestamp {
        Timestamp::new(seconds, 0).expect("valid")
    }

    fn child(token: &str, parents: &[&str]) -> ChildPartition {
        ChildPartition {
            token: token.to_string(),
            parent_partition_tokens: parents.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn tok(t: &str) -> Token {
        Some(t.to_string())
    }

    fn tokens(starts: &[PartitionStart]) -> Vec<Token> {
        starts.iter().map(|s| s.token.clone()).collect()
    }

    #[test]
    fn initial_query_then_children_from_its_start() {
        let mut t = PartitionTracker::new(ts(100));
        assert_eq!(
            t.take_startable(),
            vec![PartitionStart {
                token: None,
                start: ts(100)
            }]
        );
        assert!(t.take_startable().is_empty(), "started once");
        t.on_children(&None, ts(100), &[child("a", &[]), child("b", &[])])
            .expect("running");
        assert_eq!(t.on_query_end(&None), Ok(QueryEnd::Finished));
        assert_eq!(tokens(&t.take_startable()), vec![tok("a"), tok("b")]);
        assert_eq!(t.low_watermark(), Some(ts(100)));
    }

    #[test]
    fn merged_child_starts_once_after_both_parents_finish() {
        let mut t = PartitionTracker::new(ts(100));
        t.take_startable();
        t.on_children(&None, ts(100), &[child("a", &[]), child("b", &[])])
            .expect("ok");
        t.on_query_end(&None).expect("ok");
        t.take_startable();
        // Both parents announce the same merged child.
        t.on_children(&tok("a"), ts(110), &[child("m", &["a", "b"])])
            .expect("ok");
        assert_eq!(t.on_query_end(&tok("a")), Ok(QueryEnd::Finished));
        assert!(t.take_startable().is_empty(), "b has not finished");
        t.on_heartbeat(&tok("b"), ts(109)).expect("ok");
        t.on_children(&tok("b"), ts(110), &[child("m", &["a", "b"])])
            .expect("ok");
        assert_eq!(t.on_query_end(&tok("b")), Ok(QueryEnd::Finished));
        assert_eq!(
            t.take_startable(),
            vec![PartitionStart {
                token: tok("m"),
                start: ts(110)
            }]
        );
        assert!(t.take_startable().is_empty());
        assert_eq!(
            t.counts(),
            PartitionCounts {
                pending: 0,
                running: 1,
                finished: 3
            }
        );
    }

    #[test]
    fn query_ending_without_children_is_requeried_not_finished() {
        let mut t = PartitionTracker::new(ts(100));
        t.take_startable();
        t.on_children(&None, ts(100), &[child("a", &[])])
            .expect("ok");
        t.on_query_end(&None).expect("ok");
        t.take_startable();
        t.on_data(&tok("a"), ts(105)).expect("ok");
        assert_eq!(t.on_query_end(&tok("a")), Ok(QueryEnd::Requery));
        assert_eq!(t.low_watermark(), Some(ts(105)), "still counts");
        // The re-issued query goes on; events keep being accepted.
        t.on_heartbeat(&tok("a"), ts(107)).expect("still running");
    }

    #[test]
    fn watermark_counts_announced_children_before_they_start() {
        let mut t = PartitionTracker::new(ts(100));
        t.take_startable();
        t.on_children(&None, ts(100), &[child("a", &[]), child("b", &[])])
            .expect("ok");
        t.on_query_end(&None).expect("ok");
        t.take_startable();
        t.on_heartbeat(&tok("a"), ts(150)).expect("ok");
        t.on_heartbeat(&tok("b"), ts(120)).expect("ok");
        // b splits at 121 into c and d; they are pending until b finishes.
        t.on_children(
            &tok("b"),
            ts(121),
            &[child("c", &["b"]), child("d", &["b"])],
        )
        .expect("ok");
        t.on_query_end(&tok("b")).expect("ok");
        assert_eq!(
            t.low_watermark(),
            Some(ts(121)),
            "pending children hold it at their start"
        );
        let started = t.take_startable();
        assert_eq!(tokens(&started), vec![tok("c"), tok("d")]);
        t.on_heartbeat(&tok("c"), ts(160)).expect("ok");
        assert_eq!(t.low_watermark(), Some(ts(121)), "d has proven nothing yet");
        t.on_data(&tok("d"), ts(130)).expect("ok");
        assert_eq!(
            t.low_watermark(),
            Some(ts(130)),
            "records at 130 may still come from d"
        );
        t.on_heartbeat(&tok("d"), ts(170)).expect("ok");
        let after = |s: i64| Timestamp::from_nanos(i128::from(s) * 1_000_000_000 + 1).ok();
        assert_eq!(
            t.low_watermark(),
            after(150),
            "a heartbeat proves its own timestamp"
        );
    }

    #[test]
    fn progress_never_moves_backwards_on_replayed_records() {
        let mut t = PartitionTracker::new(ts(100));
        t.take_startable();
        t.on_data(&None, ts(120)).expect("ok");
        t.on_data(&None, ts(110)).expect("ok");
        assert_eq!(t.low_watermark(), Some(ts(120)));
    }

    #[test]
    fn heartbeats_only_advance_the_watermark() {
        let mut t = PartitionTracker::new(ts(100));
        t.take_startable();
        for s in 101..110 {
            t.on_heartbeat(&None, ts(s)).expect("ok");
        }
        assert!(t.low_watermark() > Some(ts(109)));
    }

    #[test]
    fn events_for_unknown_partitions_are_errors() {
        let mut t = PartitionTracker::new(ts(100));
        assert!(t.on_data(&None, ts(101)).is_err(), "not started yet");
        assert!(t.on_heartbeat(&tok("zzz"), ts(101)).is_err());
    }

    #[test]
    fn memory_stays_flat_over_weeks_of_partition_churn() {
        let mut t = PartitionTracker::new(ts(100));
        t.take_startable();
        t.on_children(&None, ts(100), &[child("p0", &[])])
            .expect("ok");
        t.on_query_end(&None).expect("ok");
        t.take_startable();
        // Each step: the running partition splits in two, one half merges back with the other.
        for i in 0..10_000i64 {
            let parent = format!("p{i}");
            let (left, right) = (format!("l{i}"), format!("p{}", i + 1));
            let at = ts(101 + i);
            t.on_children(
                &tok(&parent),
                at,
                &[child(&left, &[&parent]), child(&right, &[&parent])],
            )
            .expect("running");
            assert_eq!(t.on_query_end(&tok(&parent)), Ok(QueryEnd::Finished));
            assert_eq!(tokens(&t.take_startable()), vec![tok(&left), tok(&right)]);
            t.on_children(&tok(&left), at, &[]).expect("running");
            assert_eq!(t.on_query_end(&tok(&left)), Ok(QueryEnd::Finished));
            assert!(t.take_startable().is_empty());
        }
        assert!(
            t.tracked() <= 4,
            "finished partitions are forgotten: {}",
            t.tracked()
        );
        assert_eq!(t.counts().running, 1);
        assert_eq!(
            t.counts().finished,
            20_001,
            "finished ones are still counted"
        );
        assert_eq!(t.low_watermark(), Some(ts(10_100)));
    }

    #[test]
    fn a_merged_child_waits_for_a_parent_that_finished_long_ago_and_starts_once() {
        let mut t = PartitionTracker::new(ts(100));
        t.take_startable();
        t.on_children(&None, ts(100), &[child("a", &[]), child("b", &[])])
            .expect("ok");
        t.on_query_end(&None).expect("ok");
        t.take_startable();
        t.on_children(&tok("a"), ts(110), &[child("m", &["a", "b"])])
            .expect("ok");
        t.on_query_end(&tok("a")).expect("ok");
        // Much churn elsewhere would prune, but "a" is kept: m still needs it.
        assert!(t.take_startable().is_empty());
        t.on_children(&tok("b"), ts(110), &[child("m", &["a", "b"])])
            .expect("ok");
        t.on_query_end(&tok("b")).expect("ok");
        assert_eq!(tokens(&t.take_startable()), vec![tok("m")]);
        assert!(t.take_startable().is_empty(), "started once");
        assert_eq!(t.tracked(), 1, "only m is left");
    }

    /// Found by the simulation: the initial query's children start while it runs; when it is
    /// queried again (a stall or an error after its child records), it announces them again.
    #[test]
    fn children_announced_again_by_a_requeried_initial_query_start_once() {
        let mut t = PartitionTracker::new(ts(100));
        t.take_startable();
        t.on_children(&None, ts(100), &[child("a", &[]), child("b", &[])])
            .expect("ok");
        assert_eq!(tokens(&t.take_startable()), vec![tok("a"), tok("b")]);
        t.on_children(&tok("a"), ts(105), &[child("c", &["a"])])
            .expect("ok");
        assert_eq!(t.on_query_end(&tok("a")), Ok(QueryEnd::Finished));
        assert_eq!(tokens(&t.take_startable()), vec![tok("c")]);
        // The initial query stalls and is queried again: it announces a and b once more.
        t.on_children(&None, ts(100), &[child("a", &[]), child("b", &[])])
            .expect("ok");
        assert!(
            t.take_startable().is_empty(),
            "a and b are not started again"
        );
        assert_eq!(t.on_query_end(&None), Ok(QueryEnd::Finished));
        t.take_startable();
        assert!(
            t.tracked() <= 3,
            "a is forgotten once the initial query finished"
        );
    }

    #[test]
    fn all_finished_means_no_watermark() {
        let mut t = PartitionTracker::new(ts(100));
        t.take_startable();
        t.on_children(&None, ts(100), &[]).expect("ok");
        t.on_query_end(&None).expect("ok");
        assert_eq!(t.low_watermark(), None);
    }
}
