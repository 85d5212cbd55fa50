//! The etcd v3 gRPC services on the client listeners.
//!
//! `KV`, `Maintenance.Status`, `Maintenance.Alarm` (listing) and `Cluster.MemberList`
//! are served; the other RPCs answer `Unimplemented` through the generated default
//! methods until their issues land (watch and lease, auth, membership changes).

mod auth;

mod cluster;
mod kv;
mod lease;
mod maintenance;
mod watch;

pub(crate) use maintenance::ETCD_VERSION;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cairn_api::etcdserverpb::auth_server::AuthServer;
use cairn_api::etcdserverpb::cluster_server::ClusterServer;
use cairn_api::etcdserverpb::kv_server::KvServer;
use cairn_api::etcdserverpb::lease_server::LeaseServer;
use cairn_api::etcdserverpb::maintenance_server::MaintenanceServer;
use cairn_api::etcdserverpb::watch_server::WatchServer;
use cairn_api::etcdserverpb::{InternalRaftRequest, ResponseHeader};
use cairn_proposal::{Gate, NodeStatus};
use redb::ReadOnlyTable;
use tokio::net::TcpListener;
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::apply::{Applied, ApplyResult};
use crate::auth::SharedAuth;
use crate::error::Error;
use crate::lease::SharedLessor;
use crate::node::{RaftProposer, Shared};
use crate::storage::mvcc::Revisions;
use crate::storage::mvcc::{KeyIndex, Position, SharedIndex};
use crate::storage::{META, StorageError};
use crate::watch::Hub;

/// How long open client connections may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Most times a request refused for a stale auth revision is proposed again.
const AUTH_RETRIES: usize = 8;

pub(crate) use cairn_proposal::LeaderLoss;

/// etcd's extra room for gRPC framing above `--max-request-bytes`.
pub(crate) const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The proposal gate as the server composes it.
pub(crate) type ServerGate =
    Gate<RaftProposer, Arc<NodeStatus>, Arc<NodeStatus>, crate::auth::ServerAuth, ApplyResult>;

/// What the services need to know about the member.
#[derive(Debug, Clone)]
pub(crate) struct ServiceConfig {
    /// `--quota-backend-bytes`, if any.
    pub(crate) quota: Option<u64>,
    /// The initial cluster token, which new members' IDs derive from.
    pub(crate) cluster_token: String,
    pub(crate) max_txn_ops: usize,
    pub(crate) max_request_bytes: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) bcrypt_cost: u32,
    /// Refuse membership changes that would put the quorum at risk.
    pub(crate) strict_reconfig_check: bool,
    pub(crate) watch_progress_notify_interval: Duration,
    /// How long this member may be without a leader before streams that asked for
    /// one are ended.
    pub(crate) leader_loss_grace: Duration,
}

/// The state every service shares.
#[derive(Clone)]
pub(crate) struct Service {
    inner: Arc<Inner>,
}

/// What the services are made of.
pub(crate) struct Inner {
    pub(crate) gate: ServerGate,
    pub(crate) proposer: RaftProposer,
    pub(crate) shared: Arc<Shared>,
    pub(crate) db: Arc<crate::storage::Store>,
    pub(crate) index: SharedIndex,
    pub(crate) auth: SharedAuth,
    pub(crate) lessor: SharedLessor,
    pub(crate) hub: Hub,
    pub(crate) alarms: crate::alarms::SharedAlarms,
    pub(crate) config: ServiceConfig,
}

impl std::ops::Deref for Service {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl Service {
    pub(crate) fn new(parts: Inner) -> Self {
        Self { inner: Arc::new(parts) }
    }

    /// The store's current revision, from disk.
    pub(crate) fn current_revision(&self) -> Result<u64, StorageError> {
        Ok(self.revisions()?.current)
    }

    fn revisions(&self) -> Result<Revisions, StorageError> {
        let txn = self.db.begin_read()?;
        Ok(Revisions::load(&txn.open_table(META)?)?)
    }

    /// Stops the gate: requests in flight fail with `etcdserver: server stopped`.
    pub(crate) fn stop(&self) {
        self.gate.stop();
    }

    /// etcd's gRPC interceptor checks: a learner serves only `Status` and serializable
    /// reads, and a caller that sent `hasleader=true` gets `no leader` from a member
    /// that has none.
    fn check_member(&self, metadata: &MetadataMap, serializable_read: bool) -> Result<(), Status> {
        if metadata.get("hasleader").is_some_and(|value| value == "true") && self.shared.leader_id() == 0 {
            return Err(Status::unavailable("etcdserver: no leader"));
        }
        if !serializable_read {
            let members = self.shared.members.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if members.get(&self.shared.member_id()).is_some_and(|member| member.is_learner) {
                return Err(Status::unavailable("etcdserver: rpc not supported for learner"));
            }
        }
        Ok(())
    }

    /// The caller's credentials from the request metadata (`token`, `authorization`),
    /// once this member knows the token: a simple token issued at a raft index this
    /// member has not applied yet is waited for.
    async fn credentials<T>(&self, request: &tonic::Request<T>) -> Result<Credentials, Status> {
        self.credentials_for(request, false).await
    }

    /// [`Service::credentials`], after the member checks; `serializable_read` for the
    /// requests a learner may serve.
    async fn credentials_for<T>(
        &self,
        request: &tonic::Request<T>,
        serializable_read: bool,
    ) -> Result<Credentials, Status> {
        let metadata = request.metadata();
        self.check_member(metadata, serializable_read)?;
        let mut pairs: Vec<(String, String)> = ["token", "authorization"]
            .into_iter()
            .filter_map(|key| Some((key.to_owned(), metadata.get(key)?.to_str().ok()?.to_owned())))
            .collect();
        // As etcd: without a token, a verified client certificate's common name is the user.
        if pairs.is_empty()
            && let Some(certificates) = request.peer_certs()
            && let Some(name) =
                certificates.first().and_then(|certificate| cairn_net::tls::common_name(certificate))
        {
            pairs.push((crate::auth::CERTIFICATE_USER.to_owned(), name));
        }
        let token = cairn_auth::token_from_metadata(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Some(index) = token.and_then(cairn_auth::simple_token_index) {
            // A token from the future of this member's log may be one it has not applied yet.
            let _ = tokio::time::timeout(self.config.request_timeout, self.shared.applied_wait().wait(index))
                .await;
        }
        Ok(Credentials { pairs })
    }

    /// Proposes a write for a caller with `credentials` and waits for its result.
    ///
    /// A request refused at apply because the auth store changed after it was
    /// stamped changed nothing (permissions are checked before any write), so it is
    /// proposed again under the caller's fresh identity, as etcd's `raftRequest`
    /// does; the caller sees `auth store revision is old` only when its identity
    /// itself is stale (a JWT issued before the change).
    async fn write(
        &self,
        mut request: InternalRaftRequest,
        credentials: &Credentials,
    ) -> Result<Applied, Status> {
        if !crate::alarms::fits(self.config.quota, self.db.size(), crate::alarms::cost(&request)) {
            // etcd's quota servers: this member's NOSPACE alarm, then the refusal.
            if !crate::alarms::no_space(&crate::alarms::lock(&self.alarms)) {
                Box::pin(self.raise_no_space()).await;
            }
            return Err(Error::Apply(cairn_apply::Error::NoSpace).into());
        }
        let pairs = credentials.as_pairs();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = match self.gate.propose(cairn_proposal::etcd::Proposal(&mut request), &pairs).await {
                Ok(result) => result,
                Err(error) => Err(Error::Proposal(error)),
            };
            match result {
                Err(Error::Auth(cairn_auth::Error::AuthOldRevision))
                    if attempts < AUTH_RETRIES && self.identity_is_fresh(&pairs) => {}
                other => return other.map_err(Status::from),
            }
        }
    }

    /// Whether the caller's identity is stamped with the auth store's current
    /// revision, so that a request refused as stale may be proposed again.
    fn identity_is_fresh(&self, pairs: &[(&str, &str)]) -> bool {
        let store = crate::auth::read(&self.auth);
        matches!(crate::auth::caller(&store, pairs), Ok(Some(info)) if info.revision >= store.revision())
    }

    /// For a call whose metadata asks for a leader (`hasleader=true`, etcd's
    /// `WithRequireLeader`): what tells its stream that the leader is lost.
    fn leader_lost_signal(&self, metadata: &MetadataMap) -> Option<LeaderLoss> {
        let required = metadata.get("hasleader").is_some_and(|value| value == "true");
        required.then(|| LeaderLoss::new(self.shared.leaderless_since(), self.config.leader_loss_grace))
    }

    /// Checks that the caller may read `[key, range_end)`.
    fn check_read(&self, credentials: &Credentials, key: &[u8], range_end: &[u8]) -> Result<(), Status> {
        let store = crate::auth::read(&self.auth);
        let info = crate::auth::caller(&store, &credentials.as_pairs()).map_err(Error::from)?;
        store.is_permitted(info.as_ref(), key, range_end, cairn_auth::Access::Read).map_err(Error::from)?;
        Ok(())
    }

    /// Waits until this member has applied everything committed when the call was
    /// made, confirmed by a read-index round: what a linearizable read needs first.
    async fn wait_read_index(&self) -> Result<(), Status> {
        let index = tokio::time::timeout(self.config.request_timeout, self.proposer.read_index())
            .await
            .map_err(|_| Error::Proposal(cairn_proposal::Error::Timeout))??;
        tokio::time::timeout(self.config.request_timeout, self.shared.applied_wait().wait(index))
            .await
            .map_err(|_| Error::Proposal(cairn_proposal::Error::Timeout))?;
        Ok(())
    }

    /// Runs `read` on a consistent view of the store: for a linearizable read, once
    /// this member has applied everything committed when the read arrived.
    async fn read<T>(
        &self,
        linearizable: bool,
        read: impl FnOnce(&ReadOnlyTable<Position, &'static [u8]>, &KeyIndex, Revisions) -> Result<T, Error>,
    ) -> Result<T, Status> {
        if linearizable {
            self.wait_read_index().await?;
        }
        let result = self.view(|kv, index, revisions| Ok(read(kv, index, revisions)));
        result.map_err(Error::from)?.map_err(Status::from)
    }

    /// Runs `read` on one redb snapshot and the key index (`cairn-mvcc`'s [`view`](cairn_mvcc::view)).
    pub(crate) fn view<T>(
        &self,
        read: impl FnOnce(
            &ReadOnlyTable<Position, &'static [u8]>,
            &KeyIndex,
            Revisions,
        ) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        cairn_mvcc::view(|| self.db.begin_read(), &self.index, read)
    }

    /// etcd's `header.fill`: cluster and member IDs and the raft term; the revision
    /// is the one the request was served at.
    fn fill(&self, header: &mut Option<ResponseHeader>) {
        let header = header.get_or_insert_with(ResponseHeader::default);
        header.cluster_id = self.shared.cluster_id;
        header.member_id = self.shared.member_id();
        header.raft_term = self.shared.term();
    }
}

/// The error for a write whose apply result is not the kind its request makes.
fn unexpected(expected: &str) -> Status {
    Status::internal(format!("etcdserver: unexpected apply result, not {expected}"))
}

/// A caller's token metadata, owned so that it outlives the request's metadata map.
pub(crate) struct Credentials {
    pairs: Vec<(String, String)>,
}

impl Credentials {
    /// The server itself, as root (etcd's `WithRoot`): for the requests a member
    /// makes on its own, such as revoking expired leases.
    pub(crate) fn server() -> Self {
        Self { pairs: vec![(crate::auth::CERTIFICATE_USER.to_owned(), cairn_auth::ROOT.to_owned())] }
    }

    fn as_pairs(&self) -> Vec<(&str, &str)> {
        self.pairs.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect()
    }
}

/// etcd's six client services, added to `routes`.
fn grpc_routes(
    routes: tonic::service::Routes,
    service: &Service,
    max_receive: usize,
) -> tonic::service::Routes {
    routes
        .add_service(KvServer::new(service.clone()).max_decoding_message_size(max_receive))
        .add_service(MaintenanceServer::new(service.clone()).max_decoding_message_size(max_receive))
        .add_service(ClusterServer::new(service.clone()).max_decoding_message_size(max_receive))
        .add_service(WatchServer::new(service.clone()).max_decoding_message_size(max_receive))
        .add_service(LeaseServer::new(service.clone()).max_decoding_message_size(max_receive))
        .add_service(AuthServer::new(service.clone()).max_decoding_message_size(max_receive))
}

/// Serves every service on every listener until `shutdown` completes.
pub(crate) async fn serve(
    service: Service,
    listeners: Vec<(TcpListener, bool)>,
    tls: Option<Arc<rustls::ServerConfig>>,
    http: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let max_receive = service.config.max_request_bytes + GRPC_OVERHEAD_BYTES;
    // etcd's `v3lock` and `v3election`, and its JSON gateway, call the services as any
    // client would, here through channels inside the process.
    let core = grpc_routes(tonic::service::Routes::default(), &service, max_receive);
    let concurrency = cairn_concurrency::Concurrency::new(cairn_net::grpc::in_process_channel(core.clone()));
    let with_concurrency = |routes: tonic::service::Routes| {
        routes.add_service(concurrency.lock_server()).add_service(concurrency.election_server())
    };
    let gateway = cairn_gateway::router(cairn_net::grpc::in_process_channel(with_concurrency(core)));
    // The standard gRPC health service, as etcd registers it: serving.
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    let routes = with_concurrency(grpc_routes(
        tonic::service::Routes::from(gateway.merge(http)),
        &service,
        max_receive,
    ))
    .add_service(health);
    // HTTP/1.1 for the gateway and the health endpoints next to gRPC, as etcd serves
    // both on a client URL.
    let stopping = || service.stop();
    Ok(cairn_net::listen::serve_clients(routes, listeners, tls, shutdown, stopping, SHUTDOWN_GRACE).await?)
}
