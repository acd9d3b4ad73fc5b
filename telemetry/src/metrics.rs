//! The process's meter provider and its exporters.
//!
//! Libraries record through `opentelemetry::global::meter(...)`; until [`Telemetry::install`]
//! runs, those instruments are no-ops. Exporters:
//!
//! - **Prometheus**: a pull endpoint serving the text exposition format at `GET /metrics` on
//!   the `--metrics-addr` address (plus `GET /healthz` for probes). OpenTelemetry names become
//!   Prometheus names by the exporter's rules: dots become underscores, counters get `_total`,
//!   the unit `s` becomes `_seconds` (`revrepl.reader.records_read` →
//!   `revrepl_reader_records_read_total`).
//! - **OTLP**: when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`) is
//!   set, metrics are pushed over gRPC every `OTEL_METRIC_EXPORT_INTERVAL` milliseconds
//!   (default 60 000); the other `OTEL_EXPORTER_OTLP_*` variables (headers, timeout,
//!   compression) apply as the OpenTelemetry specification defines them.

use std::net::SocketAddr;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

use crate::endpoint::MetricsEndpoint;
use crate::error::TelemetryError;

/// Environment variables that turn on the OTLP exporter (any of them, non-empty).
pub const OTLP_ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
];

/// Environment variables that choose the OTLP protocol; only `grpc` is built in.
const OTLP_PROTOCOL_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];

/// What a binary exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsOptions {
    service: String,
    prometheus: Option<SocketAddr>,
    otlp_endpoint: Option<String>,
}

impl MetricsOptions {
    /// Nothing exported yet; `service` becomes the `service.name` resource attribute (unless
    /// `OTEL_SERVICE_NAME` says otherwise).
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            prometheus: None,
            otlp_endpoint: None,
        }
    }

    /// Serves `GET /metrics` on `addr` (port 0 picks a free port; see
    /// [`Telemetry::prometheus_addr`]).
    pub fn with_prometheus(mut self, addr: SocketAddr) -> Self {
        self.prometheus = Some(addr);
        self
    }

    /// Serves `GET /metrics` on `addr` when one is given.
    pub fn with_optional_prometheus(mut self, addr: Option<SocketAddr>) -> Self {
        self.prometheus = addr;
        self
    }

    /// Pushes metrics by OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` is set in the environment.
    pub fn with_otlp_from_env(mut self) -> Self {
        self.otlp_endpoint = OTLP_ENDPOINT_VARIABLES
            .iter()
            .filter_map(|name| std::env::var(name).ok())
            .find(|value| !value.trim().is_empty());
        self
    }

    /// Whether anything is exported.
    pub fn exports_anything(&self) -> bool {
        self.prometheus.is_some() || self.otlp_endpoint.is_some()
    }
}

/// Why the OTLP protocol asked for by the environment (read through `variable`) cannot be
/// used, if it cannot: only `grpc` is built in.
fn unsupported_protocol(variable: impl Fn(&str) -> Option<String>) -> Option<String> {
    OTLP_PROTOCOL_VARIABLES.iter().find_map(|name| {
        let protocol = variable(name)?;
        let protocol = protocol.trim();
        (!protocol.is_empty() && protocol != "grpc").then(|| {
            format!(
                "{name}={protocol} is not supported: revrepl exports OTLP over gRPC only (unset \
                 it or set it to grpc, and point the endpoint at the collector's gRPC port, \
                 usually 4317)"
            )
        })
    })
}

/// The installed meter provider and the Prometheus endpoint. Keep it alive for the life of
/// the process and call [`Telemetry::shutdown`] at the end, which pushes the last OTLP
/// export.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkMeterProvider>,
    endpoint: Option<MetricsEndpoint>,
}

impl Telemetry {
    /// Installs the global meter provider with the exporters `options` ask for, and starts the
    /// Prometheus endpoint. With no exporter asked for, installs nothing (instruments stay
    /// no-ops). Call from within a Tokio runtime: the endpoint and the OTLP client run on it.
    pub fn install(options: MetricsOptions) -> Result<Self, TelemetryError> {
        if !options.exports_anything() {
            return Ok(Self {
                provider: None,
                endpoint: None,
            });
        }
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(options.service.clone());
        }
        let mut builder = SdkMeterProvider::builder().with_resource(resource.build());
        let mut endpoint = None;
        if let Some(addr) = options.prometheus {
            let registry = prometheus::Registry::new();
            let exporter = opentelemetry_prometheus::exporter()
                .with_registry(registry.clone())
                .build()
                .map_err(|e| TelemetryError::Prometheus(e.to_string()))?;
            builder = builder.with_reader(exporter);
            endpoint = Some(MetricsEndpoint::start(addr, registry)?);
        }
        if let Some(otlp) = &options.otlp_endpoint {
            let otlp_error = |reason: String| TelemetryError::Otlp {
                endpoint: otlp.clone(),
                reason,
            };
            if let Some(problem) = unsupported_protocol(|name| std::env::var(name).ok()) {
                return Err(otlp_error(problem));
            }
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .build()
                .map_err(|e| otlp_error(e.to_string()))?;
            builder = builder.with_reader(PeriodicReader::builder(exporter).build());
        }
        let provider = builder.build();
        opentelemetry::global::set_meter_provider(provider.clone());
        tracing::debug!(
            prometheus = ?endpoint.as_ref().map(MetricsEndpoint::addr),
            otlp = ?options.otlp_endpoint,
            "metrics exporters installed"
        );
        Ok(Self {
            provider: Some(provider),
            endpoint,
        })
    }

    /// The address the Prometheus endpoint listens on, if one was asked for.
    pub fn prometheus_addr(&self) -> Option<SocketAddr> {
        self.endpoint.as_ref().map(MetricsEndpoint::addr)
    }

    /// Pushes the last OTLP export, stops the exporters and the endpoint. Blocking work runs
    /// on Tokio's blocking pool.
    pub async fn shutdown(self) {
        if let Some(endpoint) = self.endpoint {
            endpoint.stop();
        }
        if let Some(provider) = self.provider {
            let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            match flushed {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!("metrics exporters did not shut down: {error}"),
                Err(error) => tracing::warn!("metrics shutdown task failed: {error}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_grpc_is_accepted_as_otlp_protocol() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(unsupported_protocol(env(&[])), None);
        assert_eq!(
            unsupported_protocol(env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])),
            None
        );
        let problem = unsupported_protocol(env(&[(
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
            "http/protobuf",
        )]))
        .expect("refused");
        assert!(
            problem.contains("http/protobuf") && problem.contains("4317"),
            "{problem}"
        );
    }

    #[test]
    fn nothing_is_installed_without_an_exporter() {
        let telemetry = Telemetry::install(MetricsOptions::new("t")).expect("install");
        assert_eq!(telemetry.prometheus_addr(), None);
        assert!(!MetricsOptions::new("t").exports_anything());
    }
}
