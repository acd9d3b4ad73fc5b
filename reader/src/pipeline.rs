//! The running reader: one task per partition, a coordinator that owns the partition tracker
//! and the window assembler, and an output stage that makes windows durable (DESIGN §3).
//!
//! ```text
//! partition tasks ──events (bounded)──▶ coordinator ──releases (bounded)──▶ output
//!   query, route        tracker, watermark, assembler       file first, then one metadata write
//!   ▲ pause when far ahead ◀──── watermark (watch) ─────┘
//! ```
//!
//! Invariants:
//! - A partition's events reach the coordinator in the order the partition sent its records,
//!   so the watermark only moves after the records before it were added to their windows.
//! - The metadata store learns of a window only after its files are durable; a shutdown at any
//!   point records nothing past durable work.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use revrepl_metadata::{CreatedWindows, MetadataStore, RunId};
use revrepl_record::{
    Backoff, BufferStore, Classify, Destination, ErrorClass, PutOutcome, ShardId, Timestamp,
    WindowDuration, WindowFileName, with_backoff,
};
use revrepl_shard_routing::{RowLookup, ShardAssigner};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::assembly::{Release, WindowAssembler};
use crate::change_stream::{ChangeStreamRecord, ChildPartition};
use crate::error::ReaderError;
use crate::partition::{PartitionStart, PartitionTracker, QueryEnd, Token, short_token};
use crate::routing::{RecordFilter, RoutedRecord, TableFilter, route_data_change};
use crate::source::ChangeStreamSource;
use crate::telemetry::ReaderMetrics;

/// How the reader runs; the run's identity and where it starts.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// The run.
    pub run_id: RunId,
    /// Window length.
    pub window: WindowDuration,
    /// Where the first window starts (on the window grid): every window before it is
    /// recorded already.
    pub start: Timestamp,
    /// Where the first partition query starts: `start`, or later within its window when the
    /// run was asked to start there. The stream is never read before it, so a start just after
    /// the stream was created is never moved back before the stream existed.
    pub read_from: Timestamp,
    /// Stop after the window that ends at or after this time is recorded.
    pub until: Option<Timestamp>,
    /// Which records are dropped.
    pub filter: RecordFilter,
    /// Which tables are replicated.
    pub tables: TableFilter,
    /// A partition whose records are this far ahead of the low watermark pauses.
    pub max_ahead: Duration,
    /// A partition query that sends nothing for this long is re-issued.
    pub stall_timeout: Duration,
    /// Backoff for transient errors of Spanner, the buffer and the metadata store.
    pub retry: Backoff,
    /// Capacity of the channel from partitions to the coordinator.
    pub event_capacity: usize,
}

/// What a finished (or stopped) reader did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelineSummary {
    /// Every shard is created up to here (recorded in the metadata store).
    pub recorded_up_to: Timestamp,
    /// Files written (not counting ones that already existed with the same content).
    pub files_written: u64,
    /// Whether it stopped because `until` was reached (rather than by cancellation).
    pub reached_until: bool,
}

/// The systems the reader works with.
pub struct PipelineParts<L> {
    /// The change stream.
    pub source: Arc<dyn ChangeStreamSource>,
    /// Routes records to shards.
    pub assigner: Arc<ShardAssigner<L>>,
    /// Where window files go.
    pub buffer: Arc<dyn BufferStore>,
    /// Where progress goes.
    pub metadata: Arc<dyn MetadataStore>,
    /// Every shard of the shards file (all advance together).
    pub shards: Vec<ShardId>,
    /// Counters.
    pub metrics: ReaderMetrics,
}

enum Event {
    Lines {
        token: Token,
        commit: Timestamp,
        record: RoutedRecord,
    },
    Filtered {
        token: Token,
        commit: Timestamp,
    },
    Heartbeat {
        token: Token,
        timestamp: Timestamp,
    },
    Children {
        token: Token,
        start: Timestamp,
        children: Vec<ChildPartition>,
    },
    Finished {
        token: Token,
    },
}

/// Runs the reader until `until` is recorded, `cancel` fires, or a fatal error.
pub async fn run_pipeline<L: RowLookup + 'static>(
    settings: PipelineSettings,
    parts: PipelineParts<L>,
    cancel: CancellationToken,
) -> Result<PipelineSummary, ReaderError> {
    let until_end = match settings.until {
        Some(until) => Some(end_of_window_at_or_after(settings.window, until)?),
        None => None,
    };
    let first_window_end = settings
        .window
        .window_of(settings.start)
        .map_err(|e| ReaderError::Config {
            key: "reader.start_timestamp".into(),
            reason: e.to_string(),
        })?
        .end();
    if settings.read_from < settings.start || settings.read_from >= first_window_end {
        return Err(ReaderError::Config {
            key: "reader.start_timestamp".into(),
            reason: format!(
                "reading would start at {}, outside the first window [{}, {first_window_end})",
                settings.read_from, settings.start
            ),
        });
    }
    parts.metrics.started();
    let mut tracker = PartitionTracker::new(settings.read_from);
    let mut assembler = WindowAssembler::new(settings.window, settings.start)?;
    let pipeline_cancel = cancel.child_token();
    let (events_tx, mut events_rx) =
        mpsc::channel::<Result<Event, ReaderError>>(settings.event_capacity.max(1));
    let (watermark_tx, watermark_rx) = watch::channel(assembler.complete_up_to());
    let (release_tx, release_rx) = mpsc::channel::<Release>(2);
    let (recorded_tx, mut recorded_rx) = watch::channel(assembler.complete_up_to());

    let output = Output {
        run_id: settings.run_id.clone(),
        retry: settings.retry,
        buffer: Arc::clone(&parts.buffer),
        metadata: Arc::clone(&parts.metadata),
        shards: parts.shards.clone(),
        metrics: parts.metrics.clone(),
    };
    let mut output_task =
        tokio::spawn(output.run(release_rx, recorded_tx, pipeline_cancel.clone()));

    let context = Arc::new(PartitionContext {
        source: Arc::clone(&parts.source),
        assigner: Arc::clone(&parts.assigner),
        filter: settings.filter,
        tables: settings.tables.clone(),
        max_ahead: settings.max_ahead,
        stall_timeout: settings.stall_timeout,
        retry: settings.retry,
        metrics: parts.metrics.clone(),
    });
    let mut partitions = JoinSet::new();
    let spawn_ready = |tracker: &mut PartitionTracker, partitions: &mut JoinSet<()>| {
        for start in tracker.take_startable() {
            tracing::info!(partition = %short_token(&start.token), start = %start.start, "partition started");
            let context = Arc::clone(&context);
            let events = events_tx.clone();
            let watermark = watermark_rx.clone();
            let cancel = pipeline_cancel.clone();
            partitions.spawn(
                async move {
                    let result = context.read(start, &events, watermark, cancel).await;
                    if let Err(error) = result {
                        // The coordinator stops on the first error; a closed channel means it has.
                        let _ = events.send(Err(error)).await;
                    }
                }
                .instrument(tracing::Span::current()),
            );
        }
    };
    spawn_ready(&mut tracker, &mut partitions);

    // Set when the output stage ended on its own (an error, or its channel closed).
    let mut output_result: Option<Result<u64, ReaderError>> = None;
    let outcome: Result<bool, ReaderError> = loop {
        if let Some(end) = until_end
            && *recorded_rx.borrow() >= end
        {
            break Ok(true);
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => break Ok(false),
            joined = &mut output_task => {
                // Its error, if any, is returned below.
                output_result = Some(flatten(joined));
                break Ok(false);
            }
            changed = recorded_rx.changed() => {
                if changed.is_err() { break Ok(false); }
                continue;
            }
            event = events_rx.recv() => {
                let Some(event) = event else { break Ok(false) };
                let event = match event {
                    Ok(event) => event,
                    Err(error) => break Err(error),
                };
                if let Err(error) = apply_event(event, &mut tracker, &mut assembler, &parts.metrics) {
                    break Err(error);
                }
                spawn_ready(&mut tracker, &mut partitions);
            }
        }
        parts.metrics.partitions(tracker.counts());
        let Some(watermark) = tracker.low_watermark() else {
            break Err(ReaderError::Task(
                "every partition finished: the change stream ended or was dropped".into(),
            ));
        };
        watermark_tx.send_if_modified(|current| {
            let moved = watermark > *current;
            if moved {
                *current = watermark;
            }
            moved
        });
        parts
            .metrics
            .watermark(watermark, assembler.buffered_mods());
        let target = until_end.map_or(watermark, |end| watermark.min(end));
        let release = match assembler.release(target) {
            Ok(release) => release,
            Err(error) => break Err(error.into()),
        };
        if let Some(release) = release {
            tokio::select! {
                () = cancel.cancelled() => break Ok(false),
                // A closed channel means the output stage ended; the loop reads why.
                _ = release_tx.send(release) => {}
            }
        }
    };

    // Stop reading. When `until` was reached the output stage has recorded everything it was
    // given and ends when its channel closes; otherwise it is cancelled between writes.
    partitions.abort_all();
    drop(release_tx);
    if !matches!(outcome, Ok(true)) {
        pipeline_cancel.cancel();
    }
    let output_result = match output_result {
        Some(result) => result,
        None => flatten(output_task.await),
    };
    let reached_until = outcome?;
    let files_written = output_result?;
    let recorded_up_to = *recorded_rx.borrow();
    Ok(PipelineSummary {
        recorded_up_to,
        files_written,
        reached_until,
    })
}

fn flatten(
    joined: Result<Result<u64, ReaderError>, tokio::task::JoinError>,
) -> Result<u64, ReaderError> {
    joined.map_err(|e| ReaderError::Task(e.to_string()))?
}

/// The end of the window that ends at or after `until`.
fn end_of_window_at_or_after(
    window: WindowDuration,
    until: Timestamp,
) -> Result<Timestamp, ReaderError> {
    let containing = window.window_of(until).map_err(|e| ReaderError::Config {
        key: "until".into(),
        reason: e.to_string(),
    })?;
    Ok(if containing.start() == until {
        until
    } else {
        containing.end()
    })
}

fn apply_event(
    event: Event,
    tracker: &mut PartitionTracker,
    assembler: &mut WindowAssembler,
    metrics: &ReaderMetrics,
) -> Result<(), ReaderError> {
    match event {
        Event::Lines {
            token,
            commit,
            record,
        } => {
            let mut index = 0;
            while let Some((destination, line)) = record.line(index) {
                if *destination == Destination::Skip {
                    metrics.skipped(1);
                }
                let mod_index = u32::try_from(index).unwrap_or(u32::MAX);
                assembler.add_fields(destination, &line, mod_index)?;
                index += 1;
            }
            tracker.on_data(&token, commit)?;
        }
        Event::Filtered { token, commit } => tracker.on_data(&token, commit)?,
        Event::Heartbeat { token, timestamp } => tracker.on_heartbeat(&token, timestamp)?,
        Event::Children {
            token,
            start,
            children,
        } => {
            tracing::info!(
                partition = %short_token(&token),
                children = children.len(),
                start = %start,
                "partition announced children"
            );
            tracker.on_children(&token, start, &children)?;
        }
        Event::Finished { token } => {
            if tracker.on_query_end(&token)? == QueryEnd::Requery {
                return Err(ReaderError::Task(format!(
                    "partition {} reported finished without child partitions",
                    short_token(&token)
                )));
            }
            tracing::info!(partition = %short_token(&token), "partition finished");
        }
    }
    Ok(())
}

struct PartitionContext<L> {
    source: Arc<dyn ChangeStreamSource>,
    assigner: Arc<ShardAssigner<L>>,
    filter: RecordFilter,
    tables: TableFilter,
    max_ahead: Duration,
    stall_timeout: Duration,
    retry: Backoff,
    metrics: ReaderMetrics,
}

impl<L: RowLookup> PartitionContext<L> {
    /// Reads one partition to its end: re-queries from its own position after a transient
    /// error, a stall, or an end without child partitions.
    async fn read(
        &self,
        start: PartitionStart,
        events: &mpsc::Sender<Result<Event, ReaderError>>,
        mut watermark: watch::Receiver<Timestamp>,
        cancel: CancellationToken,
    ) -> Result<(), ReaderError> {
        let token = start.token;
        let short = short_token(&token);
        let mut position = start.start;
        let mut failures: u32 = 0;
        let send = |event: Event| async {
            // A closed channel means the coordinator stopped; nothing more to do.
            events.send(Ok(event)).await.is_ok()
        };
        'query: loop {
            // A partition is finished only by a query that sent child partitions and then
            // ended normally. A query may send several child-partitions records (the initial
            // query one per partition, a split several); an error or a stall after some of them
            // re-queries from the partition's position, which sends them all again (the
            // tracker skips children it knows).
            let mut saw_children = false;
            tracing::debug!(partition = %short, %position, "querying partition");
            let mut stream = match self.source.query(&token, position).await {
                Ok(stream) => stream,
                Err(error) => {
                    self.backoff_or_fail(&short, error, &mut failures, &cancel)
                        .await?;
                    continue 'query;
                }
            };
            loop {
                let next = tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    next = tokio::time::timeout(self.stall_timeout, stream.next()) => next,
                };
                let record = match next {
                    Err(_) => {
                        tracing::warn!(partition = %short, position = %position, "partition query stalled; querying again");
                        self.metrics.requery("stall");
                        continue 'query;
                    }
                    Ok(None) if saw_children => {
                        send(Event::Finished {
                            token: token.clone(),
                        })
                        .await;
                        return Ok(());
                    }
                    Ok(None) => {
                        tracing::warn!(partition = %short, position = %position, "partition query ended without child partitions; querying again");
                        self.metrics.requery("ended_without_children");
                        continue 'query;
                    }
                    Ok(Some(Err(error))) => {
                        self.backoff_or_fail(&short, error, &mut failures, &cancel)
                            .await?;
                        continue 'query;
                    }
                    Ok(Some(Ok(record))) => record,
                };
                failures = 0;
                let keep_going = match record {
                    ChangeStreamRecord::DataChange(data) => {
                        let commit = data.commit_timestamp;
                        tracing::trace!(
                            partition = %short,
                            %commit,
                            transaction = %data.server_transaction_id,
                            sequence = %data.record_sequence,
                            table = %data.table_name,
                            mods = data.mods.len(),
                            "data record"
                        );
                        self.wait_until_near_watermark(commit, position, &mut watermark, &cancel)
                            .await;
                        self.metrics.records_read(data.mods.len());
                        let event = if !self.tables.keeps(&data.table_name) {
                            self.metrics.excluded(&data.table_name, data.mods.len());
                            Event::Filtered {
                                token: token.clone(),
                                commit,
                            }
                        } else if self.filter.keeps(&data) {
                            let record = route_data_change(data, &self.assigner).await?;
                            Event::Lines {
                                token: token.clone(),
                                commit,
                                record,
                            }
                        } else {
                            self.metrics.filtered(data.mods.len());
                            Event::Filtered {
                                token: token.clone(),
                                commit,
                            }
                        };
                        position = position.max(commit);
                        send(event).await
                    }
                    ChangeStreamRecord::Heartbeat(timestamp) => {
                        // Re-query from the heartbeat itself, not just after it: a start with
                        // sub-microsecond digits can put the emulator's snapshot inside a
                        // commit; anything replayed at `timestamp` is merged again.
                        position = position.max(timestamp);
                        send(Event::Heartbeat {
                            token: token.clone(),
                            timestamp,
                        })
                        .await
                    }
                    ChangeStreamRecord::ChildPartitions(children) => {
                        tracing::debug!(partition = %short, start = %children.start_timestamp, "child partitions record");
                        saw_children = true;
                        // Every record of this partition before the children's start was sent
                        // (the tracker counts it complete up to there): a re-query after this
                        // must not replay them, as their windows may be written already.
                        position = position.max(children.start_timestamp);
                        send(Event::Children {
                            token: token.clone(),
                            start: children.start_timestamp,
                            children: children.child_partitions,
                        })
                        .await
                    }
                };
                if !keep_going {
                    return Ok(());
                }
            }
        }
    }

    async fn backoff_or_fail(
        &self,
        partition: &str,
        error: ReaderError,
        failures: &mut u32,
        cancel: &CancellationToken,
    ) -> Result<(), ReaderError> {
        let exhausted = self
            .retry
            .max_attempts
            .is_some_and(|max| *failures + 1 >= max);
        if error.class() != ErrorClass::Transient || exhausted {
            return Err(error);
        }
        let delay = self.retry.delay(*failures);
        *failures += 1;
        tracing::warn!(partition, %error, ?delay, "partition query failed; querying again from its position");
        self.metrics.requery("error");
        tokio::select! {
            () = cancel.cancelled() => {}
            () = tokio::time::sleep(delay) => {}
        }
        Ok(())
    }

    /// Pauses while `commit` is more than `max_ahead` past the low watermark, so memory stays
    /// bounded when one partition is slow.
    ///
    /// `position` is how far this partition has proven its records delivered. A partition at or
    /// behind the watermark may be the one holding it, and only it can move it: it never
    /// pauses. One that pauses is strictly past the watermark, so another partition holds it,
    /// and that one does not pause.
    async fn wait_until_near_watermark(
        &self,
        commit: Timestamp,
        position: Timestamp,
        watermark: &mut watch::Receiver<Timestamp>,
        cancel: &CancellationToken,
    ) {
        let ahead = i128::try_from(self.max_ahead.as_nanos()).unwrap_or(i128::MAX);
        loop {
            let current = *watermark.borrow();
            let limit = current.as_nanos().saturating_add(ahead);
            if commit.as_nanos() <= limit || position <= current {
                return;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                changed = watermark.changed() => if changed.is_err() { return },
            }
        }
    }
}

struct Output {
    run_id: RunId,
    retry: Backoff,
    buffer: Arc<dyn BufferStore>,
    metadata: Arc<dyn MetadataStore>,
    shards: Vec<ShardId>,
    metrics: crate::telemetry::ReaderMetrics,
}

impl Output {
    /// Makes each release durable in order; returns the number of files written.
    async fn run(
        self,
        mut releases: mpsc::Receiver<Release>,
        recorded: watch::Sender<Timestamp>,
        cancel: CancellationToken,
    ) -> Result<u64, ReaderError> {
        let mut written = 0;
        loop {
            let release = tokio::select! {
                () = cancel.cancelled() => return Ok(written),
                release = releases.recv() => match release {
                    Some(release) => release,
                    None => return Ok(written),
                },
            };
            tokio::select! {
                () = cancel.cancelled() => return Ok(written),
                result = self.record(&release) => written += result?,
            }
            recorded.send_replace(release.complete_up_to);
        }
    }

    async fn record(&self, release: &Release) -> Result<u64, ReaderError> {
        let mut written = 0;
        let mut seen = Vec::new();
        for complete in &release.windows {
            for file in &complete.files {
                let path = WindowFileName::new(file.destination.clone(), complete.window).path();
                self.write_file(&path, &file.bytes).await?;
                written += 1;
                self.metrics.file_written(&file.destination, file.mods);
                if let Destination::Shard(shard) = &file.destination {
                    seen.push((shard.clone(), complete.window.end()));
                }
            }
        }
        let windows =
            CreatedWindows::new(release.complete_up_to, self.shards.iter().cloned(), seen)?;
        with_backoff(
            self.retry,
            |e: &ReaderError, delay| {
                tracing::warn!(error = %e, ?delay, "recording windows failed; retrying");
            },
            || async {
                Ok::<_, ReaderError>(self.metadata.record_windows(&self.run_id, &windows).await?)
            },
        )
        .await?;
        tracing::debug!(created_upto = %release.complete_up_to, files = written, "windows recorded");
        Ok(written)
    }

    async fn write_file(&self, path: &str, bytes: &bytes::Bytes) -> Result<(), ReaderError> {
        let on_retry = |e: &ReaderError, delay: Duration| {
            tracing::warn!(path, error = %e, ?delay, "writing window file failed; retrying");
        };
        let outcome = with_backoff(self.retry, on_retry, || async {
            Ok::<_, ReaderError>(self.buffer.put_if_absent(path, bytes.clone()).await?)
        })
        .await?;
        if outcome == PutOutcome::AlreadyExists {
            let existing = with_backoff(self.retry, on_retry, || async {
                Ok::<_, ReaderError>(self.buffer.get(path).await?)
            })
            .await?;
            if existing.as_ref() != Some(bytes) {
                return Err(ReaderError::FileConflict {
                    location: self.buffer.location().to_string(),
                    path: path.to_string(),
                });
            }
            tracing::debug!(path, "window file already written with the same content");
        }
        Ok(())
    }
}
