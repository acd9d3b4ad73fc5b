//! The reader's metrics, through the OpenTelemetry metrics API (exported by whatever meter
//! provider the binary installs; no-op otherwise). One instrument per concept; shards and
//! states are attributes, never part of a name. Partition tokens are never attributes.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Meter};
use revrepl_record::{Destination, Timestamp};

use crate::partition::PartitionCounts;

/// Instruments of the reader; cheap to clone.
#[derive(Debug, Clone)]
pub struct ReaderMetrics {
    records_read: Counter<u64>,
    records_filtered: Counter<u64>,
    records_skipped: Counter<u64>,
    records_excluded: Counter<u64>,
    files_written: Counter<u64>,
    mods_written: Counter<u64>,
    requeries: Counter<u64>,
    watermark_lag: Gauge<f64>,
    partitions: Gauge<u64>,
    buffered_mods: Gauge<u64>,
}

impl ReaderMetrics {
    /// Instruments from the global meter provider.
    pub fn global() -> Self {
        Self::new(&opentelemetry::global::meter("revrepl-reader"))
    }

    /// Instruments from `meter`.
    pub fn new(meter: &Meter) -> Self {
        Self {
            records_read: meter
                .u64_counter("revrepl.reader.records_read")
                .with_description("Mods read from the change stream")
                .build(),
            records_filtered: meter
                .u64_counter("revrepl.reader.records_filtered")
                .with_description("Mods dropped by filtering (forward migration, system)")
                .build(),
            records_skipped: meter
                .u64_counter("revrepl.reader.records_skipped")
                .with_description("Mods of tables unknown to the session file, written to skip/")
                .build(),
            records_excluded: meter
                .u64_counter("revrepl.reader.records_excluded")
                .with_description(
                    "Mods of tables left out by reader.include_tables / reader.exclude_tables",
                )
                .build(),
            files_written: meter
                .u64_counter("revrepl.reader.files_written")
                .with_description("Window files written, by shard")
                .build(),
            mods_written: meter
                .u64_counter("revrepl.reader.mods_written")
                .with_description("Mods in window files written, by shard")
                .build(),
            requeries: meter
                .u64_counter("revrepl.reader.partition_requeries")
                .with_description("Partition queries issued again, by reason")
                .build(),
            watermark_lag: meter
                .f64_gauge("revrepl.reader.watermark_lag")
                .with_unit("s")
                .with_description("Now minus the low watermark of the change stream")
                .build(),
            partitions: meter
                .u64_gauge("revrepl.reader.partitions")
                .with_description("Partitions by state: pending, running, finished")
                .build(),
            buffered_mods: meter
                .u64_gauge("revrepl.reader.buffered_mods")
                .with_description("Mods held in memory in windows not yet complete")
                .build(),
        }
    }

    pub(crate) fn records_read(&self, mods: usize) {
        self.records_read.add(mods as u64, &[]);
    }

    pub(crate) fn filtered(&self, mods: usize) {
        self.records_filtered.add(mods as u64, &[]);
    }

    pub(crate) fn skipped(&self, mods: usize) {
        self.records_skipped.add(mods as u64, &[]);
    }

    /// Makes the counters without a shard exist at zero from the start (every re-query
    /// reason too), so dashboards and alerts see a series instead of none.
    pub(crate) fn started(&self) {
        for counter in [
            &self.records_read,
            &self.records_filtered,
            &self.records_skipped,
        ] {
            counter.add(0, &[]);
        }
        for reason in ["stall", "ended_without_children", "error"] {
            self.requeries.add(0, &[KeyValue::new("reason", reason)]);
        }
    }

    pub(crate) fn excluded(&self, table: &str, mods: usize) {
        self.records_excluded
            .add(mods as u64, &[KeyValue::new("table", table.to_string())]);
    }

    pub(crate) fn requery(&self, reason: &'static str) {
        self.requeries.add(1, &[KeyValue::new("reason", reason)]);
    }

    pub(crate) fn file_written(&self, destination: &Destination, mods: usize) {
        let shard = [KeyValue::new("shard", destination.directory().to_string())];
        self.files_written.add(1, &shard);
        self.mods_written.add(mods as u64, &shard);
    }

    pub(crate) fn partitions(&self, counts: PartitionCounts) {
        for (state, count) in [
            ("pending", counts.pending),
            ("running", counts.running),
            ("finished", counts.finished),
        ] {
            self.partitions
                .record(count as u64, &[KeyValue::new("state", state)]);
        }
    }

    pub(crate) fn watermark(&self, watermark: Timestamp, buffered_mods: usize) {
        let now = Timestamp::from(chrono::Utc::now());
        let lag = (now.as_nanos() - watermark.as_nanos()) as f64 / 1e9;
        self.watermark_lag.record(lag.max(0.0), &[]);
        self.buffered_mods.record(buffered_mods as u64, &[]);
    }
}
