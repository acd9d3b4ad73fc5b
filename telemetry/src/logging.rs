//! Logs: `tracing` events to stderr.

/// The environment variable that selects the log format: `json` for one JSON object per line
/// (for log collectors), anything else or unset for human-readable text.
pub const LOG_FORMAT_VARIABLE: &str = "REVREPL_LOG_FORMAT";

/// The filter when `RUST_LOG` is unset: `info`, but only warnings from the OpenTelemetry
/// libraries (they announce their own setup at `info`).
pub const DEFAULT_FILTER: &str = "info,opentelemetry=warn";

/// Installs the global `tracing` subscriber: stderr, filtered by `RUST_LOG` (default
/// [`DEFAULT_FILTER`]), JSON lines when `REVREPL_LOG_FORMAT=json`. Does nothing if a subscriber
/// is already installed (tests).
pub fn init_logging() {
    init_logging_with_default(DEFAULT_FILTER);
}

/// [`init_logging`] with another filter for when `RUST_LOG` is unset, such as `warn` for
/// commands whose results go to stdout.
pub fn init_logging_with_default(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let json = std::env::var(LOG_FORMAT_VARIABLE).is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
