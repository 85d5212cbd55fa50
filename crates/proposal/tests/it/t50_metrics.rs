use std::time::Duration;

use cairn_proposal::memory::{MemLeadership, MemRequest};
use cairn_proposal::{Config, Error};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use tokio::time::Instant;

use crate::support::{MEMBER, harness_metered};

#[tokio::test(start_paused = true)]
async fn metrics_have_etcds_names_and_count_as_etcd_counts() {
    let exporter = InMemoryMetricExporter::default();
    let provider =
        SdkMeterProvider::builder().with_reader(PeriodicReader::builder(exporter.clone()).build()).build();
    let meter = provider.meter("cairn-proposal");
    let mut h = harness_metered(Config::default(), MemLeadership::single(MEMBER, Instant::now()), &meter);

    // A timeout and a cancellation count as failed; too many requests does not.
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(h.gate.propose(MemRequest::new("x"), &[]).await.unwrap_err(), Error::Timeout);
    let cancel = tokio::time::sleep(Duration::from_millis(10));
    assert_eq!(
        h.gate.propose_with(MemRequest::new("x"), &[], None, cancel).await.unwrap_err(),
        Error::Canceled
    );
    h.indexes.set_committed(1_000_000);
    assert_eq!(h.gate.propose(MemRequest::new("x"), &[]).await.unwrap_err(), Error::TooManyRequests);
    h.indexes.set_committed(10);
    h.spawn_applier();
    h.gate.propose(MemRequest::new("ok"), &[]).await.unwrap();
    h.gate.propose(MemRequest::new("ok"), &[]).await.unwrap();

    provider.force_flush().unwrap();
    let exported = exporter.get_finished_metrics().unwrap();
    let metrics: Vec<_> = exported.iter().flat_map(|r| r.scope_metrics()).flat_map(|s| s.metrics()).collect();
    let find =
        |name: &str| *metrics.iter().find(|m| m.name() == name).unwrap_or_else(|| panic!("{name} missing"));

    match find("etcd_server_proposals_failed").data() {
        AggregatedMetrics::U64(MetricData::Sum(sum)) => {
            assert_eq!(sum.data_points().map(|p| p.value()).sum::<u64>(), 2);
        }
        other => panic!("failed proposals is a u64 sum, got {other:?}"),
    }
    match find("etcd_server_proposals_pending").data() {
        AggregatedMetrics::I64(MetricData::Sum(sum)) => {
            assert_eq!(sum.data_points().map(|p| p.value()).sum::<i64>(), 0, "nothing pending at the end");
        }
        other => panic!("pending proposals is an i64 sum, got {other:?}"),
    }
    let duration = find("etcd_server_request_duration_seconds");
    assert_eq!(duration.unit(), "s");
    match duration.data() {
        AggregatedMetrics::F64(MetricData::Histogram(histogram)) => {
            let mut by_outcome: Vec<(String, u64)> = histogram
                .data_points()
                .map(|point| {
                    let outcome = point.attributes().find(|kv| kv.key.as_str() == "outcome").unwrap();
                    (outcome.value.to_string(), point.count())
                })
                .collect();
            by_outcome.sort();
            let expected = [("canceled", 1), ("success", 2), ("timeout", 1), ("too_many_requests", 1)];
            assert_eq!(by_outcome, expected.map(|(outcome, count)| (outcome.to_owned(), count)));
        }
        other => panic!("request duration is an f64 histogram, got {other:?}"),
    }
    provider.shutdown().unwrap();
}
