//! The etcd v3 gRPC services on the client listeners.
//!
//! No service is implemented yet: every RPC answers `Unimplemented`, through the
//! generated default methods, until the server issue lands.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use cairn_api::etcdserverpb::auth_server::{Auth, AuthServer};
use cairn_api::etcdserverpb::cluster_server::{Cluster, ClusterServer};
use cairn_api::etcdserverpb::kv_server::{Kv, KvServer};
use cairn_api::etcdserverpb::lease_server::{Lease, LeaseServer};
use cairn_api::etcdserverpb::maintenance_server::{Maintenance, MaintenanceServer};
use cairn_api::etcdserverpb::watch_server::{Watch, WatchServer};
use futures::FutureExt;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tracing::info;

/// How long open client connections may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The services, all answering `Unimplemented` for now.
#[derive(Debug, Clone, Copy)]
struct NotYetServed;

impl Kv for NotYetServed {}
impl Watch for NotYetServed {}
impl Lease for NotYetServed {}
impl Cluster for NotYetServed {}
impl Maintenance for NotYetServed {}
impl Auth for NotYetServed {}

/// Serves every service on every listener until `shutdown` completes.
pub(crate) async fn serve(
    listeners: Vec<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shutdown = shutdown.boxed().shared();
    let mut servers = tokio::task::JoinSet::new();
    for listener in listeners {
        let addr = listener.local_addr().context("listener has no address")?;
        let router = Server::builder()
            .add_service(KvServer::new(NotYetServed))
            .add_service(WatchServer::new(NotYetServed))
            .add_service(LeaseServer::new(NotYetServed))
            .add_service(ClusterServer::new(NotYetServed))
            .add_service(MaintenanceServer::new(NotYetServed))
            .add_service(AuthServer::new(NotYetServed));
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let server_shutdown = shutdown.clone();
        servers.spawn(async move {
            router
                .serve_with_incoming_shutdown(incoming, server_shutdown)
                .await
                .with_context(|| format!("gRPC server on {addr} failed"))
        });
        info!(address = %addr, "serving client traffic (every RPC answers Unimplemented for now)");
    }
    info!("ready to serve client requests");
    let all_done = async {
        while let Some(result) = servers.join_next().await {
            result.context("gRPC server task panicked")??;
        }
        anyhow::Ok(())
    };
    // Graceful shutdown waits for open connections to close; clients such as watchers
    // keep theirs open, so after the signal they get a grace period, then are cut.
    let cut_off = async {
        shutdown.await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = all_done => result?,
        () = cut_off => info!(grace = ?SHUTDOWN_GRACE, "closing connections still open after shutdown"),
    }
    info!("stopped serving client traffic");
    Ok(())
}
