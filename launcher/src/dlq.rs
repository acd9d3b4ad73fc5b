//! `revrepl dlq list | show | retry`: the transactions the writer set aside under
//! `writer.dead_letter`, and applying them again once their cause is fixed. The work is the
//! writer's own ([`revrepl_writer::dead_letter`]); this module prints it.

use std::fmt::Write as _;

use revrepl_config::Config;
use revrepl_writer::dead_letter::{self, LetterState, RetryOptions, RetryReport, ShardLetters};

use crate::cli::DlqCommand;
use crate::error::LauncherError;

/// Runs a `dlq` subcommand; returns the exit code: 0, or 1 when `retry` moved letters to
/// `severe`.
pub async fn command(config: &Config, command: DlqCommand) -> Result<u8, LauncherError> {
    match command {
        DlqCommand::List(args) => {
            let shards = dead_letter::inspect(config, &args.shards).await?;
            if args.json {
                println!("{}", json(&shards)?);
            } else {
                print!("{}", render_list(&shards));
            }
            Ok(0)
        }
        DlqCommand::Show(args) => {
            let mut shards = dead_letter::inspect(config, &args.shards).await?;
            if !args.all {
                for shard in &mut shards {
                    shard.letters.retain(|l| l.state != LetterState::Applied);
                }
            }
            if args.json {
                println!("{}", json(&shards)?);
            } else {
                print!("{}", render_show(&shards));
            }
            Ok(0)
        }
        DlqCommand::Retry(args) => {
            let options = RetryOptions {
                shards: args.shards,
                retry_severe: args.include_severe,
            };
            let reports =
                dead_letter::retry(config, &options, &mut |line| println!("{line}")).await?;
            print!("{}", render_retry(&reports));
            Ok(if reports.iter().any(|r| !r.severe.is_empty()) {
                1
            } else {
                0
            })
        }
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, LauncherError> {
    serde_json::to_string_pretty(value)
        .map_err(|e| LauncherError::Usage(format!("cannot write JSON: {e}")))
}

/// `dlq list` as text: one block per shard.
pub fn render_list(shards: &[ShardLetters]) -> String {
    let mut out = String::new();
    if shards.is_empty() {
        out.push_str("no dead letters\n");
        return out;
    }
    for shard in shards {
        let outstanding: Vec<_> = shard.outstanding().collect();
        let first = outstanding
            .first()
            .map_or("-", |l| l.commit_timestamp.as_str());
        let last = outstanding
            .last()
            .map_or("-", |l| l.commit_timestamp.as_str());
        let _ = writeln!(
            out,
            "shard {}: {} pending, {} severe, {} applied by retry{}; first commit {first}, last \
             commit {last}",
            shard.shard,
            shard.count(LetterState::Pending),
            shard.count(LetterState::Severe),
            shard.count(LetterState::Applied),
            match shard.count(LetterState::Unknown) {
                0 => String::new(),
                n => format!(", {n} unknown"),
            },
        );
        if let Some(error) = &shard.ledger_error {
            let _ = writeln!(out, "  ledger not readable: {error}");
        }
        for (cause, count) in shard.causes() {
            let _ = writeln!(out, "  {count:>6} × {cause}");
        }
    }
    out
}

/// `dlq show` as text: one block per letter.
pub fn render_show(shards: &[ShardLetters]) -> String {
    let mut out = String::new();
    for shard in shards {
        for letter in &shard.letters {
            let _ = writeln!(out, "{} [{:?}]", letter.path, letter.state);
            let _ = writeln!(
                out,
                "  shard {}, commit {}, transaction {}",
                shard.shard, letter.commit_timestamp, letter.server_transaction_id
            );
            if let Some(file) = &letter.file {
                let _ = writeln!(out, "  from window file {file}");
            }
            let _ = writeln!(out, "  error: {}", letter.error);
            if let Some(error) = &letter.retry_error {
                let _ = writeln!(out, "  failed again on retry: {error}");
            }
            for change in &letter.changes {
                let _ = writeln!(out, "  {change}");
            }
        }
    }
    if out.is_empty() {
        out.push_str("no dead letters\n");
    }
    out
}

/// `dlq retry`'s summary.
pub fn render_retry(reports: &[RetryReport]) -> String {
    let mut out = String::new();
    for report in reports {
        let _ = writeln!(
            out,
            "shard {}: {} applied, {} applied before, {} failed again (severe){}",
            report.shard,
            report.applied,
            report.already_applied,
            report.severe.len(),
            match report.severe_skipped {
                0 => String::new(),
                n => format!(", {n} severe left alone (--include-severe retries them)"),
            }
        );
    }
    if reports.iter().any(|r| r.applied > 0) {
        out.push_str(
            "dead letters were applied after later writes: check the rows they change with \
             `revrepl validate` (docs/operations.md)\n",
        );
    }
    out
}
