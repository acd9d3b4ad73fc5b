//! `revrepl reprocess`: marks shards `REPROCESS` in `shard_file_process_progress`, so that
//! the writer's `reprocess` mode applies them again from a chosen window (DESIGN §7).
//!
//! Every shard named is checked before anything is written: it must belong to the run, the
//! start must lie inside the run, and it must not lie past where the shard has applied to
//! (the window after its last `SUCCESS` window, or its `ERROR`/`REPROCESS` window): the
//! windows in between would never be applied. `--force` allows that, and says what is
//! skipped. Then each shard's row is replaced.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use revrepl_metadata::{MetadataStore, ProcessProgress, ProcessStatus, RunId};
use revrepl_record::{ShardId, Timestamp};

use crate::error::LauncherError;

/// One shard marked for reprocessing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    /// The shard.
    pub shard: ShardId,
    /// The window start the writer reprocesses from.
    pub from: Timestamp,
    /// The shard's row before, if it had one.
    pub previous: Option<ProcessProgress>,
    /// The windows `[start, end)` that will never be applied: `from` lies past where the
    /// shard had applied to (only with `force`).
    pub skipped: Option<(Timestamp, Timestamp)>,
}

/// Marks `shards` of `run_id` `REPROCESS` from the window containing `from`, or from the
/// window each shard is at. A `from` past where a shard has applied to is refused, unless
/// `force`.
pub async fn reprocess(
    store: &dyn MetadataStore,
    run_id: &RunId,
    shards: &[String],
    from: Option<Timestamp>,
    force: bool,
) -> Result<Vec<Marked>, LauncherError> {
    let run = store.require_run(run_id).await?;
    let known: BTreeSet<ShardId> = store
        .create_progress(run_id)
        .await?
        .into_iter()
        .map(|p| p.shard)
        .chain(
            store
                .list_process_progress(run_id, None)
                .await?
                .into_iter()
                .map(|p| p.shard),
        )
        .collect();
    let from = match from {
        Some(from) => {
            let aligned = run.window().align_down(from).map_err(|e| {
                LauncherError::Usage(format!("--from {from} cannot be aligned: {e}"))
            })?;
            if aligned < run.start() {
                return Err(LauncherError::Usage(format!(
                    "--from {from} is before run {run_id}'s start {}: no window files exist \
                     before it",
                    run.start()
                )));
            }
            Some(aligned)
        }
        None => None,
    };
    let mut planned = Vec::new();
    for name in shards {
        let shard = ShardId::new(name.trim())
            .map_err(|e| LauncherError::Usage(format!("--shard {name:?}: {e}")))?;
        if !known.contains(&shard) {
            let list: Vec<String> = known.iter().map(ToString::to_string).collect();
            return Err(LauncherError::Usage(format!(
                "shard {shard} is not part of run {run_id} (its shards: {}); check --shard \
                 and --run-id",
                if list.is_empty() {
                    "none yet".to_string()
                } else {
                    list.join(", ")
                }
            )));
        }
        let previous = store.process_progress(run_id, &shard).await?;
        let start = from
            .or(previous.as_ref().map(|p| p.file_start_interval))
            .unwrap_or(run.start());
        // Where the writer would go on without reprocessing: everything before is applied.
        let applied_to = previous
            .as_ref()
            .map_or(run.start(), |p| p.resume_from(run.window()));
        let skipped = (start > applied_to).then_some((applied_to, start));
        planned.push(Marked {
            shard,
            from: start,
            previous,
            skipped,
        });
    }
    let gaps: Vec<String> = planned
        .iter()
        .filter_map(|m| {
            let (applied_to, start) = m.skipped?;
            Some(format!(
                "shard {} has applied up to {} only, so reprocessing from {} would skip the \
                 windows from {} to {}",
                m.shard,
                applied_to.to_rfc3339_millis(),
                start.to_rfc3339_millis(),
                applied_to.to_rfc3339_millis(),
                start.to_rfc3339_millis()
            ))
        })
        .collect();
    if !gaps.is_empty() && !force {
        return Err(LauncherError::Usage(format!(
            "{}; nothing was marked. Choose an earlier --from, or add --force to skip those \
             windows for good",
            gaps.join("; ")
        )));
    }
    for marked in &planned {
        store
            .set_process_progress(
                run_id,
                &ProcessProgress {
                    shard: marked.shard.clone(),
                    status: ProcessStatus::Reprocess,
                    file_start_interval: marked.from,
                },
            )
            .await?;
        tracing::info!(shard = %marked.shard, from = %marked.from, "marked REPROCESS");
    }
    Ok(planned)
}

/// What was done, and the command that applies it.
pub fn render_text(run_id: &RunId, marked: &[Marked], config: Option<&std::path::Path>) -> String {
    let mut out = String::new();
    for m in marked {
        let before = m
            .previous
            .as_ref()
            .map_or("no progress recorded".to_string(), |p| {
                format!(
                    "was {} at {}",
                    p.status,
                    p.file_start_interval.to_rfc3339_millis()
                )
            });
        let skipped = m.skipped.map_or(String::new(), |(start, end)| {
            format!(
                "; skips the windows from {} to {}",
                start.to_rfc3339_millis(),
                end.to_rfc3339_millis()
            )
        });
        let _ = writeln!(
            out,
            "shard {}: REPROCESS from {} ({before}){skipped}",
            m.shard,
            m.from.to_rfc3339_millis()
        );
    }
    let config = config.map_or(String::new(), |c| {
        format!(" --config {}", shell_word(&c.display().to_string()))
    });
    let _ = writeln!(
        out,
        "apply it with: revrepl-writer{config} --set run_id={} --mode reprocess",
        shell_word(run_id.as_str())
    );
    out
}

/// `text` quoted for a POSIX shell when it needs quoting.
pub fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("run-1"), "run-1");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
