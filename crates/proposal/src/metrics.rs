//! The gate's metrics, with etcd's names, through the OpenTelemetry API.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, UpDownCounter};

#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    /// etcd_server_proposals_pending: proposed, not yet applied or failed.
    pub(crate) pending: UpDownCounter<i64>,
    /// etcd_server_proposals_failed_total (the Prometheus exporter appends `_total` to
    /// counters): propose errors, timeouts and cancellations, as etcd counts them.
    pub(crate) failed: Counter<u64>,
    /// etcd_server_request_duration_seconds{type, outcome}.
    pub(crate) duration: Histogram<f64>,
}

impl Metrics {
    pub(crate) fn new(meter: &Meter) -> Self {
        let metrics = Self {
            pending: meter
                .i64_up_down_counter("etcd_server_proposals_pending")
                .with_description("The current number of pending proposals to commit.")
                .build(),
            failed: meter
                .u64_counter("etcd_server_proposals_failed")
                .with_description("The total number of failed proposals seen.")
                .build(),
            duration: meter
                .f64_histogram("etcd_server_request_duration_seconds")
                .with_description("The latency distribution of requests through the proposal gate.")
                .with_unit("s")
                .with_boundaries(vec![
                    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
                    5.0, 10.0,
                ])
                .build(),
        };
        // Export the series from the start, at zero, as etcd's do.
        metrics.pending.add(0, &[]);
        metrics.failed.add(0, &[]);
        metrics
    }

    pub(crate) fn observe(&self, kind: &'static str, outcome: &'static str, seconds: f64) {
        self.duration.record(seconds, &[KeyValue::new("type", kind), KeyValue::new("outcome", outcome)]);
    }
}

/// Counts one proposal as pending while alive.
pub(crate) struct PendingGuard<'a>(&'a UpDownCounter<i64>);

impl<'a> PendingGuard<'a> {
    pub(crate) fn new(pending: &'a UpDownCounter<i64>) -> Self {
        pending.add(1, &[]);
        Self(pending)
    }
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.add(-1, &[]);
    }
}
