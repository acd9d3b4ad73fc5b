//! Logs: `tracing` events to stderr.

use std::io::IsTerminal;

/// The environment variable that selects the log format: `json` for one JSON object per line
/// (for log collectors), anything else or unset for human-readable text.
pub const LOG_FORMAT_VARIABLE: &str = "REVREPL_LOG_FORMAT";

/// The filter when `RUST_LOG` is unset: `info`, but only warnings from the OpenTelemetry
/// libraries (they announce their own setup at `info`).
pub const DEFAULT_FILTER: &str = "info,opentelemetry=warn";

/// Installs the global `tracing` subscriber: stderr, filtered by `RUST_LOG` (default
/// [`DEFAULT_FILTER`]), JSON lines when `REVREPL_LOG_FORMAT=json`. Text is coloured only when
/// stderr is a terminal and `NO_COLOR` is unset or empty (<https://no-color.org>), so logs
/// redirected to a file hold no escape codes. Does nothing if a subscriber is already
/// installed (tests).
pub fn init_logging() {
    init_logging_with_default(DEFAULT_FILTER);
}

/// [`init_logging`] with another filter for when `RUST_LOG` is unset, such as `warn` for
/// commands whose results go to stdout.
pub fn init_logging_with_default(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let json = std::env::var(LOG_FORMAT_VARIABLE).is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let colour = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// Whether text logs are coloured: only on a terminal, and not when `NO_COLOR` is set to a
/// non-empty value.
fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
    }
}
