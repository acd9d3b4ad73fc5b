//! The writer's metrics, through the OpenTelemetry metrics API (exported by whatever meter
//! provider the binary installs; no-op otherwise). Every instrument has a `shard` attribute;
//! the transformation plugin's also a `table` attribute (the Spanner table).

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};
use revrepl_record::{ShardId, Timestamp};

use crate::error::WriterError;
use crate::transformation::TransformCounts;

/// Instruments of the writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct WriterMetrics {
    files_read: Counter<u64>,
    records_read: Counter<u64>,
    records_applied: Counter<u64>,
    replication_lag: Histogram<f64>,
    retries: Counter<u64>,
    reader_waits: Counter<u64>,
    dead_lettered: Counter<u64>,
    failed: Gauge<u64>,
    records_transformed: Counter<u64>,
    records_kept_by_plugin: Counter<u64>,
    records_dropped_by_plugin: Counter<u64>,
    plugin_errors: Counter<u64>,
}

impl WriterMetrics {
    /// Instruments from the global meter provider.
    pub fn global() -> Self {
        Self::new(&opentelemetry::global::meter("revrepl-writer"))
    }

    /// Instruments from `meter`.
    pub fn new(meter: &Meter) -> Self {
        Self {
            files_read: meter
                .u64_counter("revrepl.writer.files_read")
                .with_description("Window files read from the buffer")
                .build(),
            records_read: meter
                .u64_counter("revrepl.writer.records_read")
                .with_description("Records read from window files")
                .build(),
            records_applied: meter
                .u64_counter("revrepl.writer.records_applied")
                .with_description("Records applied to MySQL (not counting ones already applied)")
                .build(),
            replication_lag: meter
                .f64_histogram("revrepl.writer.replication_lag")
                .with_unit("s")
                .with_description("Spanner commit to MySQL commit, per record")
                .with_boundaries(vec![
                    0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
                    3600.0,
                ])
                .build(),
            retries: meter
                .u64_counter("revrepl.writer.retries")
                .with_description("Transient MySQL or store errors retried")
                .build(),
            reader_waits: meter
                .u64_counter("revrepl.writer.reader_waits")
                .with_description("Polls that found the reader had not created the next window")
                .build(),
            dead_lettered: meter
                .u64_counter("revrepl.writer.dead_lettered")
                .with_description("Spanner transactions written to dlq/ instead of applied")
                .build(),
            failed: meter
                .u64_gauge("revrepl.writer.shard_failed")
                .with_description("1 while a shard is stopped by a definite error, else 0")
                .build(),
            records_transformed: meter
                .u64_counter("revrepl.writer.records_transformed")
                .with_description(
                    "Records the transformation plugin replaced by source row changes, applied",
                )
                .build(),
            records_kept_by_plugin: meter
                .u64_counter("revrepl.writer.records_kept_by_plugin")
                .with_description("Records the transformation plugin kept as they are, applied")
                .build(),
            records_dropped_by_plugin: meter
                .u64_counter("revrepl.writer.records_dropped_by_plugin")
                .with_description("Records the transformation plugin dropped (nothing applied)")
                .build(),
            plugin_errors: meter
                .u64_counter("revrepl.writer.plugin_errors")
                .with_description(
                    "Records the transformation plugin failed on (the shard stopped or the \
                     transaction was set aside)",
                )
                .build(),
        }
    }

    fn shard(shard: &ShardId) -> [KeyValue; 1] {
        [KeyValue::new("shard", shard.to_string())]
    }

    pub(crate) fn file_read(&self, shard: &ShardId, records: usize) {
        let attributes = Self::shard(shard);
        self.files_read.add(1, &attributes);
        self.records_read.add(records as u64, &attributes);
    }

    pub(crate) fn applied(&self, shard: &ShardId, commits: &[(Timestamp, usize)]) {
        let attributes = Self::shard(shard);
        let now = Timestamp::from(chrono::Utc::now()).as_nanos();
        let mut total = 0;
        for (commit, records) in commits {
            let lag = ((now - commit.as_nanos()) as f64 / 1e9).max(0.0);
            for _ in 0..*records {
                self.replication_lag.record(lag, &attributes);
            }
            total += *records as u64;
        }
        self.records_applied.add(total, &attributes);
    }

    /// Counts what the transformation plugin did with records just applied.
    pub(crate) fn transformations(&self, shard: &ShardId, counts: &TransformCounts) {
        for (table, counts) in counts.tables() {
            let attributes = [
                KeyValue::new("shard", shard.to_string()),
                KeyValue::new("table", table.to_string()),
            ];
            for (counter, value) in [
                (&self.records_transformed, counts.transformed),
                (&self.records_kept_by_plugin, counts.kept),
                (&self.records_dropped_by_plugin, counts.dropped),
            ] {
                if value > 0 {
                    counter.add(value, &attributes);
                }
            }
        }
    }

    /// Counts a record the transformation plugin failed on, when `error` is such a failure.
    pub(crate) fn plugin_error(&self, error: &WriterError) {
        if let WriterError::Transformation(failure) = error {
            let attributes = [
                KeyValue::new("shard", failure.shard.to_string()),
                KeyValue::new("table", failure.table.clone()),
            ];
            self.plugin_errors.add(1, &attributes);
        }
    }

    pub(crate) fn retry(&self, shard: &ShardId) {
        self.retries.add(1, &Self::shard(shard));
    }

    pub(crate) fn reader_wait(&self, shard: &ShardId) {
        self.reader_waits.add(1, &Self::shard(shard));
    }

    pub(crate) fn dead_letter(&self, shard: &ShardId) {
        self.dead_lettered.add(1, &Self::shard(shard));
    }

    pub(crate) fn shard_failed(&self, shard: &ShardId, failed: bool) {
        self.failed.record(u64::from(failed), &Self::shard(shard));
    }

    /// Makes every counter of `shard` exist at zero and marks it running, so dashboards and
    /// alerts (`deploy/grafana/`) see a series from the start instead of none until the first
    /// event.
    pub(crate) fn shard_started(&self, shard: &ShardId) {
        let attributes = Self::shard(shard);
        for counter in [
            &self.files_read,
            &self.records_read,
            &self.records_applied,
            &self.retries,
            &self.reader_waits,
            &self.dead_lettered,
        ] {
            counter.add(0, &attributes);
        }
        self.failed.record(0, &attributes);
    }
}

/// Counts a decimal rounded to its column's scale (`writer.decimal_overflow = "round"`) in
/// `revrepl.writer.decimals_rounded` and logs the first one of each (shard, table, column) —
/// never the value.
pub(crate) fn decimal_rounded(shard: &ShardId, table: &str, column: &str) {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};

    static COUNTER: OnceLock<Counter<u64>> = OnceLock::new();
    static LOGGED: OnceLock<Mutex<HashSet<(String, String, String)>>> = OnceLock::new();
    COUNTER
        .get_or_init(|| {
            opentelemetry::global::meter("revrepl-writer")
                .u64_counter("revrepl.writer.decimals_rounded")
                .with_description(
                    "Decimal values rounded to their MySQL column's scale (as MySQL rounds)",
                )
                .build()
        })
        .add(1, &WriterMetrics::shard(shard));
    let key = (shard.to_string(), table.to_string(), column.to_string());
    let first = LOGGED
        .get_or_init(Default::default)
        .lock()
        .map(|mut logged| logged.insert(key))
        .unwrap_or(false);
    if first {
        tracing::warn!(
            %shard,
            table,
            column,
            "rounding decimals with more fractional digits than the column's scale, half away \
             from zero as MySQL does (writer.decimal_overflow = \"round\"); logged once per \
             column, counted in revrepl.writer.decimals_rounded"
        );
    }
}
