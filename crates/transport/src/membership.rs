//! The rest of the peer port: what members ask each other besides raft messages
//! (`cairnpb.Membership`: the members a joining member learns, a learner's progress
//! on the leader, a member's `HashKV` for the corruption checks), the calls that ask
//! it, and serving the peer services on the peer listeners.

use std::sync::Arc;
use std::time::Duration;

use cairn_api::cairnpb::membership_client::MembershipClient;
use cairn_api::cairnpb::membership_server::{Membership, MembershipServer};
use cairn_api::cairnpb::{
    HashKvRequest, HashKvResponse, MembersRequest, MembersResponse, ProgressRequest, ProgressResponse,
};
use cairn_api::etcdserverpb::Member;
use cairn_net::peer::{PeerTls, connect};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::Error;

/// What a member answers its peers' membership calls with.
pub trait Members: Send + Sync + 'static {
    /// Every member, removed ones included (as the member registry keeps them).
    fn members(&self) -> Vec<Member>;
    /// On the leader: how far member `id`'s log matches, and the leader's own;
    /// `None` on other members or for a member raft does not track.
    fn progress(&self, id: u64) -> impl Future<Output = Option<(u64, u64)>> + Send;
    /// This member's etcd `HashKV` at `revision` (0: the current one), with etcd's
    /// errors for a compacted or a future revision.
    fn hash_kv(&self, revision: i64) -> Result<HashKvResponse, Status>;
}

/// `cairnpb.Membership` over a [`Members`].
#[derive(Debug)]
pub struct MembershipService<M> {
    cluster_id: u64,
    members: Arc<M>,
}

impl<M> Clone for MembershipService<M> {
    fn clone(&self) -> Self {
        Self { cluster_id: self.cluster_id, members: Arc::clone(&self.members) }
    }
}

impl<M: Members> MembershipService<M> {
    /// The service of a member of cluster `cluster_id`.
    pub fn new(cluster_id: u64, members: Arc<M>) -> Self {
        Self { cluster_id, members }
    }

    /// The tonic server to add to the peer port's routes.
    pub fn into_server(self) -> MembershipServer<Self> {
        MembershipServer::new(self)
    }
}

#[tonic::async_trait]
impl<M: Members> Membership for MembershipService<M> {
    async fn members(&self, _request: Request<MembersRequest>) -> Result<Response<MembersResponse>, Status> {
        use prost::Message as _;
        let members = self.members.members().iter().map(Member::encode_to_vec).collect();
        Ok(Response::new(MembersResponse { cluster_id: self.cluster_id, members }))
    }

    async fn progress(
        &self,
        request: Request<ProgressRequest>,
    ) -> Result<Response<ProgressResponse>, Status> {
        let progress = self.members.progress(request.into_inner().id).await;
        let (matched, leader_matched) = progress.unwrap_or_default();
        Ok(Response::new(ProgressResponse { known: progress.is_some(), matched, leader_matched }))
    }

    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        Ok(Response::new(self.members.hash_kv(request.into_inner().revision)?))
    }
}

/// A peer's `HashKV` at `revision`, from the first of its `urls` that answers within
/// `timeout`.
///
/// # Errors
/// [`Error::Unreachable`] with the last URL's error when none answers.
pub async fn ask_hash(
    urls: &[String],
    tls: Option<&PeerTls>,
    revision: i64,
    timeout: Duration,
) -> Result<HashKvResponse, Error> {
    let mut last = Error::Unreachable("no peer URLs".into());
    for url in urls {
        let asked = tokio::time::timeout(timeout, async {
            let channel = connect(url, tls).await.map_err(|error| error.to_string())?;
            let response = MembershipClient::new(channel).hash_kv(HashKvRequest { revision }).await;
            response.map(Response::into_inner).map_err(|status| status.message().to_owned())
        })
        .await;
        match asked {
            Ok(Ok(hash)) => return Ok(hash),
            Ok(Err(error)) => last = Error::Unreachable(format!("{url}: {error}")),
            Err(_) => last = Error::Unreachable(format!("{url}: timed out")),
        }
    }
    Err(last)
}

/// Member `id`'s progress as the leader tracks it, asked over `channels` (the
/// leader's, each tried in turn for up to `timeout`): `Ok(None)` when the leader does
/// not track `id`.
///
/// # Errors
/// [`Error::Unreachable`] when no channel answers.
pub async fn ask_progress(
    channels: Vec<tonic::transport::Channel>,
    id: u64,
    timeout: Duration,
) -> Result<Option<(u64, u64)>, Error> {
    for channel in channels {
        let mut client = MembershipClient::new(channel);
        let answer = tokio::time::timeout(timeout, client.progress(ProgressRequest { id }));
        if let Ok(Ok(response)) = answer.await {
            let response = response.into_inner();
            return Ok(response.known.then_some((response.matched, response.leader_matched)));
        }
    }
    Err(Error::Unreachable("the leader did not answer".into()))
}

/// Serves `routes` (the peer services: a [`Receiver`](crate::Receiver), a
/// [`MembershipService`], whatever else members call on each other) on every peer
/// listener until the process ends; `https` listeners (the `bool`) use `tls`, and
/// one without it is logged and not served.
pub fn serve(
    routes: tonic::service::Routes,
    listeners: Vec<(TcpListener, bool)>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    for (listener, is_tls) in listeners {
        let router = tonic::transport::Server::builder().add_routes(routes.clone());
        let failed = |error: tonic::transport::Error| tracing::error!(%error, "peer server failed");
        match (is_tls, &tls) {
            (true, Some(config)) => {
                let incoming = cairn_net::tls::accept(listener, Arc::clone(config));
                tokio::spawn(async move { router.serve_with_incoming(incoming).await.map_err(failed) });
            }
            (true, None) => tracing::error!("an https:// peer URL without peer TLS files: not serving it"),
            (false, _) => {
                let incoming = cairn_net::grpc::plain_incoming(listener);
                tokio::spawn(async move { router.serve_with_incoming(incoming).await.map_err(failed) });
            }
        }
    }
}
