//! How far the reader has created each shard's windows, watched once for the whole process.
//!
//! A shard that caught up with the reader waits for its next window. Instead of every shard
//! asking the metadata store on its own, one task reads every shard's `created_upto` in one
//! query every `writer.poll_interval` (short: 200 ms by default, one small read whatever the
//! number of shards) and wakes exactly the shards whose next window became ready. So a window
//! the reader records is noticed within one short poll, not within a shard's own long one.
//!
//! This is only a wake-up signal: a woken shard still reads its own `created_upto` before it
//! applies anything (and handles that read's errors as before), so a failing or slow watcher
//! can delay a shard, never make it apply a window the reader has not finished. A shard that
//! hears nothing for [`FALLBACK`] looks by itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use revrepl_metadata::{MetadataStore, RunId};
use revrepl_record::{ShardId, Timestamp};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Longest a waiting shard goes without reading its own `created_upto`, should the watcher
/// fail.
pub const FALLBACK: Duration = Duration::from_secs(5);

/// Every shard's `created_upto` as last read, shared by the shards of one writer process.
#[derive(Debug, Clone)]
pub struct ReaderProgress {
    created: watch::Receiver<Arc<HashMap<ShardId, Timestamp>>>,
}

impl ReaderProgress {
    /// Starts the task that reads the run's progress every `interval` until `cancel`.
    pub fn watch(
        metadata: Arc<dyn MetadataStore>,
        run_id: RunId,
        interval: Duration,
        cancel: CancellationToken,
    ) -> Self {
        let (tx, created) = watch::channel(Arc::new(HashMap::new()));
        let interval = interval.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                match metadata.create_progress(&run_id).await {
                    Ok(progress) => {
                        if failing {
                            tracing::info!("reading the reader's progress works again");
                            failing = false;
                        }
                        let latest: HashMap<ShardId, Timestamp> = progress
                            .into_iter()
                            .map(|p| (p.shard, p.created_upto))
                            .collect();
                        tx.send_if_modified(|current| {
                            let moved = **current != latest;
                            if moved {
                                *current = Arc::new(latest);
                            }
                            moved
                        });
                    }
                    // The shards look by themselves every FALLBACK meanwhile.
                    Err(error) if !failing => {
                        tracing::warn!(%error, "reading the reader's progress failed; retrying");
                        failing = true;
                    }
                    Err(_) => {}
                }
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tx.closed() => return,
                    () = tokio::time::sleep(interval) => {}
                }
            }
        });
        Self { created }
    }

    /// Waits until the reader has created `shard`'s windows up to `end`, or at most
    /// [`FALLBACK`]. Returns at once if that is known already.
    pub async fn wait_for(&self, shard: &ShardId, end: Timestamp) {
        let mut created = self.created.clone();
        let ready = async {
            let ready = created.wait_for(|map| map.get(shard).is_some_and(|c| *c >= end));
            if ready.await.is_err() {
                // The watcher ended (the writer is stopping): wait out the fallback.
                std::future::pending::<()>().await;
            }
        };
        let _ = tokio::time::timeout(FALLBACK, ready).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str) -> ShardId {
        ShardId::new(id).expect("valid shard id")
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_shard_wakes_when_its_window_is_created_and_not_for_another_shard() {
        let (tx, created) = watch::channel(Arc::new(HashMap::new()));
        let progress = ReaderProgress { created };
        let end = Timestamp::from_nanos(10_000_000_000).expect("valid");
        let waiting = tokio::spawn({
            let progress = progress.clone();
            async move {
                let started = tokio::time::Instant::now();
                progress.wait_for(&shard("a"), end).await;
                started.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.send_replace(Arc::new(HashMap::from([(shard("b"), end)])));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "woke for another shard's window");
        tx.send_replace(Arc::new(HashMap::from([(shard("a"), end)])));
        let waited = waiting.await.expect("joined");
        assert_eq!(
            waited,
            Duration::from_millis(200),
            "woke when its window was created"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_shard_hearing_nothing_looks_by_itself_after_the_fallback() {
        let (_tx, created) = watch::channel(Arc::new(HashMap::new()));
        let progress = ReaderProgress { created };
        let started = tokio::time::Instant::now();
        progress
            .wait_for(&shard("a"), Timestamp::from_nanos(1).expect("valid"))
            .await;
        assert_eq!(started.elapsed(), FALLBACK);
    }
}
