//! One shard's replication loop (DESIGN §6): wait for the reader, read the shard's window files
//! in order, and apply them with the checkpointed applier.
//!
//! Invariants:
//! - Windows are applied strictly in order; a window is read only once the reader's
//!   `created_upto` for the shard covers its end, and windows without a `data_seen` row are
//!   skipped in one step.
//! - `shard_file_process_progress` says `SUCCESS` only for windows whose changes are committed
//!   in MySQL (the applier's checkpoint commits with the data, so a crash between the two
//!   replays nothing: the checkpoint skips what was applied). It may lag behind the checkpoint:
//!   windows applied back to back are recorded at most every `PROGRESS_EVERY` (1 s), always the
//!   first (so a `resume` finds the shard) and the last before the shard waits for the reader
//!   or stops at `until`.
//! - An error that stops this shard records `ERROR` at the failing window, its text in
//!   `shard_errors` for `revrepl status` (also a failure before the loop, see
//!   `app::run_shard`; not the loss of the lease, after which nothing is recorded). With the
//!   dead-letter policy, an error caused by a record's content
//!   ([`WriterError::is_record_fault`]) sets the failing transaction aside in `dlq/` instead
//!   and goes on; nothing else is ever set aside. Transient errors are retried forever with
//!   jittered backoff (capped, see `app::RETRY`).
//!
//! Batches across windows: when several windows are ready at once (the writer is behind, or
//! windows are short), a batch takes in the following windows' transactions while it stays
//! within the batch limits ([`WindowBatcher`], at most [`WINDOWS_PER_BATCH`] windows), so 1 s
//! windows cost no more MySQL commits than 10 s windows. A window counts as applied once the
//! batch holding its last transaction is committed. Errors keep their window: a batch spanning
//! windows that fails definitely is applied again window by window, so the failure is met —
//! and recorded as `ERROR`, or its transaction set aside — in its own window, after the windows
//! before it are applied.
//!
//! Pipelining: while one batch is applied (MySQL working, the writer waiting), the next
//! batches are planned ([`PLANNED_AHEAD`] at most) and the next windows' files are read,
//! decoded and grouped, on blocking threads. So besides the window being decoded, only a few
//! batches are held. Only the applying side changes MySQL or progress, in order, so the
//! invariants above are those of a sequential loop; an error met ahead is acted on only when
//! the applying side reaches its window.

use std::sync::Arc;
use std::time::Duration;

use revrepl_metadata::{LeaseKeeper, MetadataStore, ProcessProgress, ProcessStatus, RunId};
use revrepl_record::{
    Backoff, BufferStore, Classify, Destination, ErrorClass, PutOutcome, ShardId, Timestamp,
    Window, WindowDuration, WindowFileName, decode_window_file, with_backoff,
};
use tokio_util::sync::CancellationToken;

use crate::apply::{BatchPlanner, PlannedBatch, ShardApplier};
use crate::batch::{Assembled, BatchLimits, BatchWindows, SpannerTransaction, WindowBatcher};
use crate::error::WriterError;
use crate::reader_progress::ReaderProgress;
use crate::telemetry::WriterMetrics;

/// Most windows listed from the metadata store per query.
const WINDOWS_PER_QUERY: usize = 256;

/// Batches planned ahead of the one being applied.
pub const PLANNED_AHEAD: usize = 2;

/// Most windows one batch spans: beyond it, a batch is applied even if it is small, so that a
/// shard behind on windows with few records records progress now and then.
pub const WINDOWS_PER_BATCH: usize = 64;

/// While a shard applies windows that were ready together, their `SUCCESS` is recorded at most
/// this often (and always for the last of them), not once per window.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What one shard's task needs besides its applier.
#[derive(Debug, Clone)]
pub struct ShardContext {
    /// The run.
    pub run_id: RunId,
    /// The run's window length.
    pub window: WindowDuration,
    /// Where progress is read and recorded.
    pub metadata: Arc<dyn MetadataStore>,
    /// Where window files are.
    pub buffer: Arc<dyn BufferStore>,
    /// Size of MySQL transactions.
    pub limits: BatchLimits,
    /// Backoff of transient errors (retried forever).
    pub retry: Backoff,
    /// Wakes the shard when the reader created its next window.
    pub reader_progress: ReaderProgress,
    /// Stop after the window that ends at or after this time.
    pub until: Option<Timestamp>,
    /// Set failing transactions aside in `dlq/` instead of stopping the shard.
    pub dead_letter: bool,
    /// Refuse lines whose `shard` field is missing or names another shard
    /// (`writer.strict_line_shard`); otherwise they are applied to the folder's shard.
    pub strict_line_shard: bool,
    /// Counters.
    pub metrics: WriterMetrics,
    /// This process's lease of the shard: no progress is recorded once it is lost.
    pub lease: Option<Arc<LeaseKeeper>>,
}

/// How a shard's task ended.
#[derive(Debug)]
pub enum ShardOutcome {
    /// Every window up to `until` is applied.
    ReachedUntil,
    /// Stopped by cancellation; progress is recorded up to the last applied window.
    Cancelled,
    /// Stopped by a definite or fatal error; recorded as `ERROR` when definite.
    Failed(WriterError),
}

enum Step {
    Continue,
    Stop(ShardOutcome),
}

/// What the preparing side hands to the applying side: batches, each with the windows it
/// completes; windows completed without one (`End`); or why a window cannot be applied.
enum Prepared {
    /// A batch from `windows` (owned, so each batch's memory goes once it is applied), planned
    /// ahead unless planning failed (the applier then plans it again and meets the error where
    /// it belongs).
    /// `ends`: the windows this batch completes, applied with it (in the same message, so that
    /// they take no room in the channel and the next windows are read while it is applied).
    Batch {
        windows: BatchWindows,
        transactions: Vec<SpannerTransaction>,
        planned: Option<PlannedBatch>,
        ends: Vec<Window>,
    },
    /// Every transaction of `window` was in the batches sent before (a window without any).
    End(Window),
    /// `window`'s file cannot be read or is malformed.
    Failed(Window, WriterError),
}

impl ShardContext {
    fn until_end(&self) -> Option<Timestamp> {
        let until = self.until?;
        let containing = self.window.window_of(until).ok()?;
        Some(if containing.start() == until {
            until
        } else {
            containing.end()
        })
    }

    async fn retrying<T, F, Fut>(
        &self,
        shard: &ShardId,
        what: &'static str,
        cancel: &CancellationToken,
        op: F,
    ) -> Option<Result<T, WriterError>>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, WriterError>>,
    {
        let on_retry = |error: &WriterError, delay: Duration| {
            tracing::warn!(%shard, %error, ?delay, "{what} failed; retrying");
            self.metrics.retry(shard);
        };
        tokio::select! {
            () = cancel.cancelled() => None,
            result = with_backoff(self.retry.forever(), on_retry, op) => Some(result),
        }
    }

    /// Runs the shard from the window starting at `from` (aligned down to the grid).
    pub async fn run(
        &self,
        applier: &ShardApplier,
        from: Timestamp,
        cancel: CancellationToken,
    ) -> ShardOutcome {
        let shard = applier.shard().clone();
        let mut next = match self.window.window_of(from) {
            Ok(window) => window,
            Err(e) => {
                return ShardOutcome::Failed(WriterError::Config {
                    key: "start".into(),
                    reason: e.to_string(),
                });
            }
        };
        self.metrics.shard_started(&shard);
        tracing::info!(%shard, from = %next.start(), "shard started");
        loop {
            match self.step(applier, &shard, &mut next, &cancel).await {
                Step::Continue => {}
                Step::Stop(outcome) => {
                    if let ShardOutcome::Failed(error) = &outcome {
                        self.metrics.shard_failed(&shard, true);
                        tracing::error!(%shard, window = %next, %error, "shard stopped");
                    }
                    return outcome;
                }
            }
        }
    }

    /// Applies what the reader has created beyond `next`, or waits once for it.
    async fn step(
        &self,
        applier: &ShardApplier,
        shard: &ShardId,
        next: &mut Window,
        cancel: &CancellationToken,
    ) -> Step {
        let until_end = self.until_end();
        if until_end.is_some_and(|end| next.start() >= end) {
            return Step::Stop(ShardOutcome::ReachedUntil);
        }
        let created = self
            .retrying(shard, "reading created_upto", cancel, || async {
                Ok(self.metadata.created_upto(&self.run_id, shard).await?)
            })
            .await;
        let created = match created {
            None => return Step::Stop(ShardOutcome::Cancelled),
            Some(Err(e)) => return Step::Stop(ShardOutcome::Failed(e)),
            Some(Ok(created)) => created,
        };
        let ready_up_to = match (created, until_end) {
            (Some(created), Some(end)) => created.min(end),
            (Some(created), None) => created,
            (None, _) => Timestamp::EPOCH,
        };
        if ready_up_to < next.end() {
            self.metrics.reader_wait(shard);
            tokio::select! {
                () = cancel.cancelled() => return Step::Stop(ShardOutcome::Cancelled),
                () = self.reader_progress.wait_for(shard, next.end()) => return Step::Continue,
            }
        }
        let listed = self
            .retrying(shard, "listing windows with data", cancel, || async {
                Ok(self
                    .metadata
                    .windows_with_data(
                        &self.run_id,
                        shard,
                        next.end()..=ready_up_to,
                        WINDOWS_PER_QUERY,
                    )
                    .await?)
            })
            .await;
        let ends = match listed {
            None => return Step::Stop(ShardOutcome::Cancelled),
            Some(Err(e)) => return Step::Stop(ShardOutcome::Failed(e)),
            Some(Ok(ends)) => ends,
        };
        let complete = ends.len() < WINDOWS_PER_QUERY;
        let windows: Result<Vec<Window>, WriterError> = ends
            .into_iter()
            .map(|end| self.window_ending_at(end))
            .collect();
        let windows = match windows {
            Ok(windows) => windows,
            Err(e) => return Step::Stop(ShardOutcome::Failed(e)),
        };
        if let Some(outcome) = self
            .apply_windows(applier, shard, &windows, next, cancel)
            .await
        {
            return Step::Stop(outcome);
        }
        // Every window up to `ready_up_to` without a data_seen row is empty: skip them at once.
        if complete && next.end() <= ready_up_to {
            let last = match self.window_ending_at(ready_up_to) {
                Ok(window) => window,
                Err(e) => return Step::Stop(ShardOutcome::Failed(e)),
            };
            if let Some(outcome) = self.record_success(shard, last, cancel).await {
                return Step::Stop(outcome);
            }
            *next = match last.next() {
                Ok(window) => window,
                Err(e) => {
                    return Step::Stop(ShardOutcome::Failed(WriterError::Config {
                        key: "window".into(),
                        reason: e.to_string(),
                    }));
                }
            };
        }
        Step::Continue
    }

    fn window_ending_at(&self, end: Timestamp) -> Result<Window, WriterError> {
        let start = Timestamp::from_nanos(
            end.as_nanos() - i128::from(self.window.seconds()) * 1_000_000_000,
        )
        .ok()
        .and_then(|start| Window::from_bounds(start, end));
        start.ok_or_else(|| WriterError::Config {
            key: "window".into(),
            reason: format!("no window ends at {end}"),
        })
    }

    async fn record_success(
        &self,
        shard: &ShardId,
        window: Window,
        cancel: &CancellationToken,
    ) -> Option<ShardOutcome> {
        self.record_status(shard, window, ProcessStatus::Success, cancel)
            .await
    }

    async fn record_status(
        &self,
        shard: &ShardId,
        window: Window,
        status: ProcessStatus,
        cancel: &CancellationToken,
    ) -> Option<ShardOutcome> {
        // Another writer may own the shard now: record nothing for it.
        if let Some(lease) = &self.lease
            && let Err(error) = lease.check()
        {
            return Some(ShardOutcome::Failed(error.into()));
        }
        let progress = ProcessProgress {
            shard: shard.clone(),
            status,
            file_start_interval: window.start(),
        };
        let written = self
            .retrying(shard, "recording progress", cancel, || async {
                Ok(self
                    .metadata
                    .set_process_progress(&self.run_id, &progress)
                    .await?)
            })
            .await;
        match written {
            None => Some(ShardOutcome::Cancelled),
            Some(Err(e)) => Some(ShardOutcome::Failed(e)),
            Some(Ok(())) => None,
        }
    }

    /// Applies `windows` in order, recording `SUCCESS` after each and moving `next` past it;
    /// `Some` when the shard must stop. Reading and planning run ahead (see the module
    /// documentation).
    async fn apply_windows(
        &self,
        applier: &ShardApplier,
        shard: &ShardId,
        windows: &[Window],
        next: &mut Window,
        cancel: &CancellationToken,
    ) -> Option<ShardOutcome> {
        let (sender, receiver) = tokio::sync::mpsc::channel(PLANNED_AHEAD);
        let prepare = self.prepare(applier.batch_planner(), shard, windows, sender, cancel);
        let apply = self.apply_prepared(applier, shard, windows.len(), receiver, next, cancel);
        tokio::pin!(prepare, apply);
        let mut preparing = true;
        loop {
            tokio::select! {
                // Dropping `prepare` once the applying side is done stops it.
                outcome = &mut apply => return outcome,
                () = &mut prepare, if preparing => preparing = false,
            }
        }
    }

    /// The preparing side: reads, decodes and groups each window's file, cuts batches (across
    /// windows while more are ready, see the module documentation), plans them, and sends them
    /// on; stops when the applying side is gone or on cancellation.
    async fn prepare(
        &self,
        planner: BatchPlanner,
        shard: &ShardId,
        windows: &[Window],
        sender: tokio::sync::mpsc::Sender<Prepared>,
        cancel: &CancellationToken,
    ) {
        let mut batcher = WindowBatcher::new(self.limits);
        for (index, &window) in windows.iter().enumerate() {
            let path = WindowFileName::new(Destination::Shard(shard.clone()), window).path();
            let transactions = match self.read_window(shard, window, &path, cancel).await {
                Ok(Some(transactions)) => transactions,
                Ok(None) => return,
                Err(error) => {
                    // The windows before it are applied first.
                    if send_assembled(&planner, batcher.take(true), &sender).await {
                        let _ = sender.send(Prepared::Failed(window, error)).await;
                    }
                    return;
                }
            };
            batcher.push(window, transactions);
            // Hold the last batch back while the next window, ready already, may fill it.
            let flush = index + 1 == windows.len() || batcher.windows_held() >= WINDOWS_PER_BATCH;
            if !send_assembled(&planner, batcher.take(flush), &sender).await {
                return;
            }
            // Read the next window only once the applying side has taken everything sent
            // (it applies the last of it meanwhile), so that at most about one window and a
            // few batches are held decoded.
            if sender.reserve_many(PLANNED_AHEAD).await.is_err() {
                return;
            }
        }
    }

    /// The applying side: applies what `prepare` sends, `windows` windows in order; `Some`
    /// when the shard must stop.
    async fn apply_prepared(
        &self,
        applier: &ShardApplier,
        shard: &ShardId,
        windows: usize,
        mut receiver: tokio::sync::mpsc::Receiver<Prepared>,
        next: &mut Window,
        cancel: &CancellationToken,
    ) -> Option<ShardOutcome> {
        let mut done = 0;
        // The first window is recorded at once: a shard has a progress row as soon as it
        // applied something, which `resume` modes need to find it.
        let mut last_recorded: Option<tokio::time::Instant> = None;
        while done < windows {
            let prepared = tokio::select! {
                () = cancel.cancelled() => return Some(ShardOutcome::Cancelled),
                prepared = receiver.recv() => prepared,
            };
            // The preparing side only stops early on cancellation.
            let Some(prepared) = prepared else {
                return Some(ShardOutcome::Cancelled);
            };
            let ends = match prepared {
                Prepared::Batch {
                    windows,
                    transactions,
                    planned,
                    ends,
                } => {
                    if let Some(outcome) = self
                        .apply_one_batch(applier, shard, &windows, &transactions, planned, cancel)
                        .await
                    {
                        return Some(outcome);
                    }
                    ends
                }
                Prepared::End(window) => vec![window],
                Prepared::Failed(window, error) => {
                    return Some(self.fail(shard, window, error, cancel).await);
                }
            };
            for window in ends {
                // The checkpoint in MySQL already says the window is applied; the metadata row
                // is for the operator and the next start. Behind many short windows, write it
                // at most every PROGRESS_EVERY, and always for the last window listed, before
                // the shard waits or stops.
                let last = done + 1 == windows;
                if last || last_recorded.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY) {
                    if let Some(outcome) = self.record_success(shard, window, cancel).await {
                        return Some(outcome);
                    }
                    last_recorded = Some(tokio::time::Instant::now());
                }
                *next = match window.next() {
                    Ok(window) => window,
                    Err(e) => {
                        return Some(ShardOutcome::Failed(WriterError::Config {
                            key: "window".into(),
                            reason: e.to_string(),
                        }));
                    }
                };
                done += 1;
            }
        }
        None
    }

    /// Applies one batch; `Some` when the shard must stop. A batch spanning windows that fails
    /// definitely is applied again window by window ([`ShardContext::apply_window_batch`]), so
    /// that the error is met in its own window, after the windows before it are applied.
    async fn apply_one_batch(
        &self,
        applier: &ShardApplier,
        shard: &ShardId,
        windows: &BatchWindows,
        batch: &[SpannerTransaction],
        planned: Option<PlannedBatch>,
        cancel: &CancellationToken,
    ) -> Option<ShardOutcome> {
        let applied = self
            .apply_batch(applier, shard, windows, batch, planned, cancel)
            .await;
        let error = match applied {
            None => return Some(ShardOutcome::Cancelled),
            Some(Ok(())) => return None,
            Some(Err(error)) => error,
        };
        let (Some(first), true) = (windows.first(), windows.parts().len() > 1) else {
            return self
                .window_batch_failed(applier, shard, windows, batch, error, cancel)
                .await;
        };
        if error.class() != ErrorClass::Definite || error.is_lease() {
            // Nothing of the batch is applied: its first window is where the shard stopped.
            return Some(self.fail(shard, first, error, cancel).await);
        }
        tracing::debug!(
            %shard,
            windows = %windows,
            %error,
            "a batch spanning windows failed; applying it window by window"
        );
        for (window, part) in windows.split(batch) {
            let single = BatchWindows::single(window, part.len());
            let applied = self
                .apply_batch(applier, shard, &single, part, None, cancel)
                .await;
            match applied {
                None => return Some(ShardOutcome::Cancelled),
                Some(Ok(())) => {}
                Some(Err(error)) => {
                    // Set aside what failed (and go on with the next windows) or stop.
                    if let Some(outcome) = self
                        .window_batch_failed(applier, shard, &single, part, error, cancel)
                        .await
                    {
                        return Some(outcome);
                    }
                }
            }
        }
        None
    }

    /// After `error` on a batch of one window: with the dead-letter policy and an error caused
    /// by a record, the batch's transactions one by one (each failing one set aside);
    /// otherwise `ERROR` at the window. `Some` when the shard must stop.
    async fn window_batch_failed(
        &self,
        applier: &ShardApplier,
        shard: &ShardId,
        windows: &BatchWindows,
        batch: &[SpannerTransaction],
        error: WriterError,
        cancel: &CancellationToken,
    ) -> Option<ShardOutcome> {
        let Some(window) = windows.first() else {
            return Some(ShardOutcome::Failed(error));
        };
        if self.dead_letter && error.is_record_fault() {
            let path = WindowFileName::new(Destination::Shard(shard.clone()), window).path();
            return self
                .apply_one_by_one(applier, shard, window, batch, &path, cancel)
                .await;
        }
        Some(self.fail(shard, window, error, cancel).await)
    }

    async fn read_window(
        &self,
        shard: &ShardId,
        window: Window,
        path: &str,
        cancel: &CancellationToken,
    ) -> Result<Option<Vec<SpannerTransaction>>, WriterError> {
        let read = self
            .retrying(shard, "reading a window file", cancel, || async {
                Ok(self.buffer.get(path).await?)
            })
            .await;
        let bytes = match read {
            None => return Ok(None),
            Some(result) => result?,
        };
        let bytes = bytes.ok_or_else(|| WriterError::MissingFile {
            shard: shard.clone(),
            location: self.buffer.location().to_string(),
            path: path.to_string(),
        })?;
        // Decoding and sorting is CPU work: off the async threads.
        let (owner, file, strict) = (shard.clone(), path.to_string(), self.strict_line_shard);
        let decoded = tokio::task::spawn_blocking(move || {
            decode_and_group(&owner, window, &file, &bytes, strict)
        })
        .await;
        let (records, transactions) = match decoded {
            Ok(result) => result?,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down.
            Err(_) => return Ok(None),
        };
        self.metrics.file_read(shard, records);
        Ok(Some(transactions))
    }

    async fn apply_batch(
        &self,
        applier: &ShardApplier,
        shard: &ShardId,
        windows: &BatchWindows,
        batch: &[SpannerTransaction],
        planned: Option<PlannedBatch>,
        cancel: &CancellationToken,
    ) -> Option<Result<(), WriterError>> {
        // The plan serves the first attempt; a retry plans again.
        let mut planned = planned;
        let applied = self
            .retrying(shard, "applying a batch", cancel, || {
                applier.apply_planned_batch(windows, batch, planned.take())
            })
            .await?;
        Some(applied.map(|outcome| {
            if !outcome.transformations.is_empty() {
                self.metrics
                    .transformations(shard, &outcome.transformations);
            }
            if outcome.applied_transactions > 0 {
                let commits: Vec<(Timestamp, usize)> = batch
                    .iter()
                    .map(|t| (t.commit_timestamp(), t.len()))
                    .collect();
                self.metrics.applied(shard, &commits);
            }
        }))
    }

    /// After a definite error with the dead-letter policy: applies the batch's transactions
    /// one by one and sets each failing one aside in `dlq/<shard>/`.
    async fn apply_one_by_one(
        &self,
        applier: &ShardApplier,
        shard: &ShardId,
        window: Window,
        batch: &[SpannerTransaction],
        path: &str,
        cancel: &CancellationToken,
    ) -> Option<ShardOutcome> {
        for transaction in batch {
            let one = std::slice::from_ref(transaction);
            let single = BatchWindows::single(window, 1);
            match self
                .apply_batch(applier, shard, &single, one, None, cancel)
                .await
            {
                None => return Some(ShardOutcome::Cancelled),
                Some(Ok(())) => {}
                Some(Err(error)) if error.is_record_fault() => {
                    if let Err(dlq_error) = self
                        .dead_letter(shard, window, transaction, path, &error, cancel)
                        .await
                    {
                        return Some(self.fail(shard, window, dlq_error, cancel).await);
                    }
                }
                Some(Err(error)) => return Some(self.fail(shard, window, error, cancel).await),
            }
        }
        None
    }

    async fn dead_letter(
        &self,
        shard: &ShardId,
        window: Window,
        transaction: &SpannerTransaction,
        path: &str,
        error: &WriterError,
        cancel: &CancellationToken,
    ) -> Result<(), WriterError> {
        let (name, bytes) = crate::dead_letter::encode(shard, window, transaction, path, error);
        let written = self
            .retrying(shard, "writing a dead letter", cancel, || async {
                Ok(self.buffer.put_if_absent(&name, bytes.clone()).await?)
            })
            .await;
        match written {
            None | Some(Ok(PutOutcome::Created | PutOutcome::AlreadyExists)) => {
                tracing::warn!(%shard, %error, dead_letter = %name, "transaction set aside");
                self.metrics.dead_letter(shard);
                self.metrics.plugin_error(error);
                Ok(())
            }
            Some(Err(e)) => Err(e),
        }
    }

    /// Records `ERROR` at `window` (and the error's text) for an error that stops the shard,
    /// and returns the outcome. Every failure is recorded, also one met before the shard
    /// applied anything, except the loss of the lease: another writer owns the shard then.
    pub(crate) async fn fail(
        &self,
        shard: &ShardId,
        window: Window,
        error: WriterError,
        cancel: &CancellationToken,
    ) -> ShardOutcome {
        self.metrics.plugin_error(&error);
        if !error.is_lease() {
            // The text first, so that whoever sees `ERROR` finds it (`revrepl status`).
            self.record_error_text(shard, window, &error, cancel).await;
            if let Some(outcome) = self
                .record_status(shard, window, ProcessStatus::Error, cancel)
                .await
            {
                return outcome;
            }
        }
        ShardOutcome::Failed(error)
    }

    /// [`ShardContext::fail`] for a failure before the shard's loop started (connecting, the
    /// checkpoint), with the log line and metric the loop gives its own failures.
    pub(crate) async fn fail_at_start(
        &self,
        shard: &ShardId,
        window: Window,
        error: WriterError,
        cancel: &CancellationToken,
    ) -> ShardOutcome {
        self.metrics.shard_failed(shard, true);
        tracing::error!(%shard, %window, %error, "shard stopped before applying anything");
        self.fail(shard, window, error, cancel).await
    }

    /// Records `error`'s text with the failing window in `shard_errors`, once (the store
    /// retries transient failures a few times itself). A failure is only a warning: the text
    /// is in the log anyway, and the shard's outcome stays the same. The text is the
    /// error's `Display`, which carries no row values other than primary keys.
    async fn record_error_text(
        &self,
        shard: &ShardId,
        window: Window,
        error: &WriterError,
        cancel: &CancellationToken,
    ) {
        let text = error.to_string();
        let recorded = tokio::select! {
            () = cancel.cancelled() => return,
            recorded = self
                .metadata
                .record_shard_error(&self.run_id, shard, window.start(), &text) => recorded,
        };
        if let Err(record_error) = recorded {
            tracing::warn!(
                %shard,
                window = %window.start(),
                error = %record_error,
                "recording the error text for `revrepl status` failed; it is only in this log"
            );
        }
    }
}

/// Plans and sends `assembled` in order (each batch planned on a blocking thread); `false` when
/// the applying side is gone or the runtime shuts down.
async fn send_assembled(
    planner: &BatchPlanner,
    assembled: Vec<Assembled>,
    sender: &tokio::sync::mpsc::Sender<Prepared>,
) -> bool {
    for item in assembled {
        let prepared = match item {
            Assembled::End(window) => Prepared::End(window),
            Assembled::Batch {
                windows,
                transactions,
                ends,
            } => {
                let planner = planner.clone();
                let planned = tokio::task::spawn_blocking(move || {
                    let planned = planner.plan(&transactions).ok();
                    (transactions, planned)
                })
                .await;
                let (transactions, planned) = match planned {
                    Ok(done) => done,
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    // The runtime is shutting down.
                    Err(_) => return false,
                };
                Prepared::Batch {
                    windows,
                    transactions,
                    planned,
                    ends,
                }
            }
        };
        if sender.send(prepared).await.is_err() {
            return false;
        }
    }
    true
}

/// Decodes a window file, checks that every record belongs to the shard and the window
/// (`strict` also refuses lines of another or no shard), and groups the records into
/// transactions; returns the record count too.
fn decode_and_group(
    shard: &ShardId,
    window: Window,
    path: &str,
    bytes: &[u8],
    strict: bool,
) -> Result<(usize, Vec<SpannerTransaction>), WriterError> {
    let mut records = decode_window_file(bytes).map_err(|source| WriterError::MalformedFile {
        shard: shard.clone(),
        path: path.to_string(),
        source,
    })?;
    crate::placement::check_placement(shard, window, path, &mut records, strict)?;
    Ok((records.len(), SpannerTransaction::group(records)))
}
