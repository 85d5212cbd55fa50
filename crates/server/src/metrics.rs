//! `/metrics` in Prometheus text with etcd's metric names, and `/health` as etcd
//! answers it, served on `--listen-metrics-urls`.

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use cairn_api::etcdserverpb::AlarmType;
use cairn_proposal::IndexSource;
use opentelemetry::metrics::{Histogram, Meter};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use tokio::net::TcpListener;
use tracing::info;

use crate::node::{RaftProposer, Shared};

/// The Prometheus registry every metric lands in, once installed.
#[derive(Clone)]
pub(crate) struct Registry {
    registry: prometheus::Registry,
    /// Kept alive: dropping the provider stops collection.
    _provider: SdkMeterProvider,
}

/// Installs the global meter provider. Must run before any instrument is created:
/// instruments made before it are silently dead.
pub(crate) fn install() -> anyhow::Result<Registry> {
    let registry = prometheus::Registry::new();
    let exporter = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .without_units()
        .without_target_info()
        .scope_info_enabled(false)
        .build()
        .context("cannot build the Prometheus exporter")?;
    let provider = SdkMeterProvider::builder().with_reader(exporter).build();
    opentelemetry::global::set_meter_provider(provider.clone());
    Ok(Registry { registry, _provider: provider })
}

/// The server's meter.
pub(crate) fn meter() -> Meter {
    opentelemetry::global::meter("cairn-server")
}

/// Disk latency histograms the raft thread records.
#[derive(Debug, Clone)]
pub(crate) struct DiskMetrics {
    /// etcd_disk_wal_fsync_duration_seconds: commits that fsync the raft log.
    pub(crate) wal_fsync: Histogram<f64>,
    /// etcd_disk_backend_commit_duration_seconds: commits of applied state.
    pub(crate) backend_commit: Histogram<f64>,
}

impl DiskMetrics {
    pub(crate) fn new(meter: &Meter) -> Self {
        // etcd's buckets: 1 ms doubling to about 8 s.
        let buckets: Vec<f64> = (0..14).map(|i| 0.001 * f64::from(1u32 << i)).collect();
        Self {
            wal_fsync: meter
                .f64_histogram("etcd_disk_wal_fsync_duration_seconds")
                .with_description("The latency distributions of fsync called by WAL.")
                .with_boundaries(buckets.clone())
                .build(),
            backend_commit: meter
                .f64_histogram("etcd_disk_backend_commit_duration_seconds")
                .with_description("The latency distributions of commit called by backend.")
                .with_boundaries(buckets)
                .build(),
        }
    }
}

/// Registers the gauges and counters read from the node's shared state.
pub(crate) fn observe_node(meter: &Meter, shared: &Arc<Shared>, data_file: std::path::PathBuf) {
    let s = Arc::clone(shared);
    meter
        .i64_observable_gauge("etcd_server_has_leader")
        .with_description("Whether or not a leader exists. 1 is existence, 0 is not.")
        .with_callback(move |gauge| gauge.observe(i64::from(s.leader_id() != 0), &[]))
        .build();
    let s = Arc::clone(shared);
    meter
        .i64_observable_gauge("etcd_network_active_peers")
        .with_description("The current number of active peer connections.")
        .with_callback(move |gauge| {
            let local = opentelemetry::KeyValue::new("Local", format!("{:x}", s.member_id));
            for (peer, up) in s.active_peers() {
                let remote = opentelemetry::KeyValue::new("Remote", format!("{peer:x}"));
                gauge.observe(i64::from(up), &[local.clone(), remote]);
            }
        })
        .build();
    let s = Arc::clone(shared);
    meter
        .i64_observable_gauge("etcd_server_is_leader")
        .with_description("Whether or not this member is a leader. 1 if is, 0 otherwise.")
        .with_callback(move |gauge| gauge.observe(i64::from(s.leader_id() == s.member_id), &[]))
        .build();
    let s = Arc::clone(shared);
    meter
        .u64_observable_counter("etcd_server_leader_changes_seen")
        .with_description("The number of leader changes seen.")
        .with_callback(move |counter| {
            counter.observe(s.leader_changes.load(std::sync::atomic::Ordering::Relaxed), &[])
        })
        .build();
    let s = Arc::clone(shared);
    meter
        .u64_observable_counter("etcd_server_slow_read_indexes")
        .with_description("The total number of pending read indexes not in sync with leader's or timed out read index requests.")
        .with_callback(move |counter| {
            counter.observe(s.slow_read_indexes.load(std::sync::atomic::Ordering::Relaxed), &[])
        })
        .build();
    let s = Arc::clone(shared);
    meter
        .u64_observable_gauge("etcd_server_proposals_committed_total")
        .with_description("The total number of consensus proposals committed.")
        .with_callback(move |gauge| gauge.observe(s.committed_index(), &[]))
        .build();
    let s = Arc::clone(shared);
    meter
        .u64_observable_gauge("etcd_server_proposals_applied_total")
        .with_description("The total number of consensus proposals applied.")
        .with_callback(move |gauge| gauge.observe(s.applied_index(), &[]))
        .build();
    meter
        .i64_observable_gauge("etcd_mvcc_db_total_size_in_bytes")
        .with_description("Total size of the underlying database physically allocated in bytes.")
        .with_callback(move |gauge| {
            let size = data_file.metadata().map(|metadata| metadata.len() as i64).unwrap_or_default();
            gauge.observe(size, &[]);
        })
        .build();
}

/// etcd's health checks of this member, from its own state.
#[derive(Clone)]
struct MemberProbe {
    shared: Arc<Shared>,
    proposer: RaftProposer,
    alarms: crate::alarms::SharedAlarms,
}

impl cairn_gateway::health::Probe for MemberProbe {
    async fn alarms(&self) -> Option<Vec<AlarmType>> {
        let raised = crate::alarms::lock(&self.alarms);
        Some(raised.iter().map(|&(_, alarm)| AlarmType::try_from(alarm).unwrap_or(AlarmType::None)).collect())
    }

    async fn has_leader(&self) -> bool {
        self.shared.leader_id() != 0
    }

    async fn linearizable_read(&self) -> bool {
        let read = self.proposer.read_index();
        matches!(tokio::time::timeout(cairn_gateway::health::READ_TIMEOUT, read).await, Ok(Ok(_)))
    }
}

/// What etcd serves over HTTP beside gRPC on a client URL: `/metrics`, and
/// `cairn-gateway`'s `/health`, `/livez`, `/readyz` and `/version`.
pub(crate) fn routes(
    registry: Registry,
    shared: Arc<Shared>,
    proposer: RaftProposer,
    alarms: crate::alarms::SharedAlarms,
) -> Router {
    let probe = MemberProbe { shared, proposer, alarms };
    Router::new()
        .route("/metrics", get(move || metrics(registry.clone())))
        .merge(cairn_gateway::health::routes(probe, crate::grpc::ETCD_VERSION))
}

/// Serves `/metrics` and `/health` on `listeners` (`--listen-metrics-urls`) until the
/// process ends.
pub(crate) fn serve(app: Router, listeners: Vec<TcpListener>) {
    for listener in listeners {
        if let Ok(addr) = listener.local_addr() {
            info!(address = %addr, "serving metrics and health");
        }
        let app = app.clone();
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "metrics server failed");
            }
        });
    }
}

async fn metrics(registry: Registry) -> impl IntoResponse {
    let mut text = String::new();
    let families = registry.registry.gather();
    match prometheus::TextEncoder::new().encode_utf8(&families, &mut text) {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text),
        Err(error) => {
            (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], error.to_string())
        }
    }
}
