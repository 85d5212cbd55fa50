//! Lease calls a member forwards to its leader, whose lessor alone keeps expiry times
//! (etcd's `leasehttp`: the `/leases` and `/leases/internal` peer handlers and the
//! calls to them): keep-alive renewals and TTL queries.

use std::sync::Arc;

use cairn_api::cairnpb::leases_client::LeasesClient;
use cairn_api::cairnpb::leases_server::{Leases, LeasesServer};
use cairn_api::cairnpb::{LeaseRenewRequest, LeaseRenewResponse, LeaseTtlRequest, LeaseTtlResponse};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// What the leader answers forwarded lease calls with.
pub trait LeaseKeeper: Send + Sync + 'static {
    /// Renews lease `id` for its whole TTL: the TTL, `None` for a lease unknown or
    /// expired. An error (not the primary lessor, timed out) is the caller's answer.
    fn renew(&self, id: i64) -> impl Future<Output = Result<Option<i64>, Status>> + Send;
    /// Lease `id` as the primary lessor knows it (`found` false when unknown), with
    /// its keys when `keys`.
    fn time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> impl Future<Output = Result<LeaseTtlResponse, Status>> + Send;
}

/// `cairnpb.Leases` over a [`LeaseKeeper`].
#[derive(Debug)]
pub struct LeasesService<K>(Arc<K>);

impl<K> Clone for LeasesService<K> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<K: LeaseKeeper> LeasesService<K> {
    /// The service of `keeper`, as a tonic server for the peer port's routes.
    pub fn server(keeper: Arc<K>) -> LeasesServer<Self> {
        LeasesServer::new(Self(keeper))
    }
}

#[tonic::async_trait]
impl<K: LeaseKeeper> Leases for LeasesService<K> {
    async fn renew(
        &self,
        request: Request<LeaseRenewRequest>,
    ) -> Result<Response<LeaseRenewResponse>, Status> {
        let renewed = self.0.renew(request.into_inner().id).await?;
        Ok(Response::new(LeaseRenewResponse { found: renewed.is_some(), ttl: renewed.unwrap_or(0) }))
    }

    async fn time_to_live(
        &self,
        request: Request<LeaseTtlRequest>,
    ) -> Result<Response<LeaseTtlResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(self.0.time_to_live(request.id, request.keys).await?))
    }
}

/// Renews lease `id` on the leader over `channels` (its peer URLs', tried in turn
/// until `deadline`): `Some` with the leader's answer (the TTL, `None` for an unknown
/// lease), `None` when no channel answered.
pub async fn forward_renew(channels: Vec<Channel>, id: i64, deadline: Instant) -> Option<Option<i64>> {
    for channel in channels {
        let mut client = LeasesClient::new(channel);
        if let Ok(Ok(response)) =
            tokio::time::timeout_at(deadline, client.renew(LeaseRenewRequest { id })).await
        {
            let response = response.into_inner();
            return Some(response.found.then_some(response.ttl));
        }
    }
    None
}

/// Lease `id` as the leader knows it, asked over `channels` as [`forward_renew`]
/// asks: `Some(None)` for a lease the leader does not know.
pub async fn forward_time_to_live(
    channels: Vec<Channel>,
    id: i64,
    keys: bool,
    deadline: Instant,
) -> Option<Option<LeaseTtlResponse>> {
    for channel in channels {
        let mut client = LeasesClient::new(channel);
        let call = client.time_to_live(LeaseTtlRequest { id, keys });
        if let Ok(Ok(response)) = tokio::time::timeout_at(deadline, call).await {
            let response = response.into_inner();
            return Some(response.found.then_some(response));
        }
    }
    None
}
