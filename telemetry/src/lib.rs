//! What every revrepl binary sets up before it does its work (DESIGN §9): structured logs,
//! the OpenTelemetry metrics exporters, and the signals that stop it cleanly.
//!
//! - [`logging`]: [`init_logging`] — `tracing` to stderr, filtered by `RUST_LOG` (default
//!   `info`, OpenTelemetry's own chatter at `warn`), JSON lines when `REVREPL_LOG_FORMAT=json`.
//! - [`metrics`]: [`Telemetry`] — installs the global meter provider with a Prometheus
//!   `/metrics` endpoint (`--metrics-addr`) and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, an
//!   OTLP (gRPC) exporter. Libraries only use the `opentelemetry` API; what is exported is
//!   decided here, once per process.
//! - [`signals`]: [`cancel_on_signals`] — SIGTERM and SIGINT cancel a token.
//!
//! ```no_run
//! # async fn example() -> Result<(), revrepl_telemetry::TelemetryError> {
//! use revrepl_telemetry::{MetricsOptions, Telemetry, cancel_on_signals, init_logging};
//!
//! init_logging();
//! let addr = "127.0.0.1:9464".parse().expect("a socket address");
//! let telemetry = Telemetry::install(
//!     MetricsOptions::new("revrepl-reader").with_prometheus(addr).with_otlp_from_env(),
//! )?;
//! let cancel = tokio_util::sync::CancellationToken::new();
//! cancel_on_signals(cancel.clone());
//! // ... run, recording through opentelemetry::global::meter(...) ...
//! telemetry.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod error;
pub mod logging;
pub mod metrics;
pub mod signals;

mod endpoint;

pub use error::TelemetryError;
pub use logging::{DEFAULT_FILTER, LOG_FORMAT_VARIABLE, init_logging, init_logging_with_default};
pub use metrics::{MetricsOptions, Telemetry};
pub use signals::cancel_on_signals;
