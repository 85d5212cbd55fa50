//! etcd's metrics of the member (its instruments, with etcd's names, exported by
//! `cairn-gateway`'s `/metrics`), and the HTTP routes beside gRPC: `/metrics` and
//! `cairn-gateway`'s `/health` from this member's own state.

use std::sync::Arc;

use axum::Router;
use cairn_api::etcdserverpb::AlarmType;
use cairn_proposal::IndexSource;
use opentelemetry::metrics::Meter;

use crate::node::{RaftProposer, Shared};

/// The server's meter.
pub(crate) fn meter() -> Meter {
    opentelemetry::global::meter("cairn-server")
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
            let local = opentelemetry::KeyValue::new("Local", format!("{:x}", s.member_id()));
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
        .with_callback(move |gauge| gauge.observe(i64::from(s.leader_id() == s.member_id()), &[]))
        .build();
    let s = Arc::clone(shared);
    meter
        .u64_observable_counter("etcd_server_leader_changes_seen")
        .with_description("The number of leader changes seen.")
        .with_callback(move |counter| counter.observe(s.leader_changes(), &[]))
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
    registry: &cairn_gateway::metrics::Registry,
    shared: Arc<Shared>,
    proposer: RaftProposer,
    alarms: crate::alarms::SharedAlarms,
) -> Router {
    let probe = MemberProbe { shared, proposer, alarms };
    registry.routes().merge(cairn_gateway::health::routes(probe, crate::grpc::ETCD_VERSION))
}
