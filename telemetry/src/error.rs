//! The one error type of telemetry setup.

use std::net::SocketAddr;

use revrepl_record::{Classify, ErrorClass};

/// Telemetry could not be set up; the binary reports it and stops.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The Prometheus endpoint cannot listen on the address asked for.
    #[error(
        "cannot serve metrics on {addr}: {source}; choose another --metrics-addr (host:port, \
         port 0 picks a free one)"
    )]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The Prometheus exporter could not be built.
    #[error("cannot set up the Prometheus exporter: {0}")]
    Prometheus(String),
    /// The OTLP exporter could not be built from `OTEL_EXPORTER_OTLP_*`.
    #[error(
        "cannot set up the OTLP metrics exporter for {endpoint}: {reason}; check \
         OTEL_EXPORTER_OTLP_ENDPOINT (for example http://otel-collector:4317)"
    )]
    Otlp {
        /// The endpoint configured.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
}

impl Classify for TelemetryError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Fatal
    }
}
