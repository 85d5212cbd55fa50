//! `etcdserverpb.Lease`: grants and revocations through raft; keep-alives and TTL
//! queries answered by the leader's lessor.

use std::pin::Pin;

use cairn_api::etcdserverpb::lease_server::Lease;
use cairn_api::etcdserverpb::{
    InternalRaftRequest, LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest, LeaseGrantResponse,
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
    ResponseHeader,
};
use futures::Stream;
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};

use super::{Credentials, Service};
use crate::apply::Applied;
use crate::error::Error;
use crate::lease;

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Lease for Service {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let credentials = self.credentials(&request).await?;
        let mut request = request.into_inner();
        if request.id == 0 {
            // etcd's default lease IDs: a request ID with the top bit cleared.
            request.id = (self.gate.parts().ids.next() & (i64::MAX as u64)) as i64;
        }
        match self
            .write(InternalRaftRequest { lease_grant: Some(request), ..Default::default() }, &credentials)
            .await?
        {
            Applied::LeaseGrant(mut response) => {
                self.fill(&mut response.header);
                Ok(Response::new(response))
            }
            other => Err(Status::internal(format!("etcdserver: unexpected apply result {other:?}"))),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let credentials = self.credentials(&request).await?;
        let request = request.into_inner();
        match self
            .write(InternalRaftRequest { lease_revoke: Some(request), ..Default::default() }, &credentials)
            .await?
        {
            Applied::LeaseRevoke(mut response) => {
                self.fill(&mut response.header);
                Ok(Response::new(response))
            }
            other => Err(Status::internal(format!("etcdserver: unexpected apply result {other:?}"))),
        }
    }

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let service = self.clone();
        let inbound = request.into_inner();
        let responses = futures::stream::unfold((service, inbound), |(service, mut inbound)| async move {
            match inbound.message().await {
                Ok(Some(request)) => {
                    let ttl = lease::lock(&service.lessor).renew(request.id, Instant::now()).unwrap_or(0);
                    let response =
                        LeaseKeepAliveResponse { header: service.plain_header(), id: request.id, ttl };
                    Some((Ok(response), (service, inbound)))
                }
                Ok(None) | Err(_) => None,
            }
        });
        Ok(Response::new(Box::pin(responses)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let request = request.into_inner();
        let found = lease::lock(&self.lessor).time_to_live(request.id, Instant::now());
        let response = match found {
            Some((granted_ttl, ttl, keys)) => LeaseTimeToLiveResponse {
                header: self.plain_header(),
                id: request.id,
                ttl,
                granted_ttl,
                keys: if request.keys { keys } else { Vec::new() },
            },
            // etcd answers an expired or unknown lease with a TTL of -1.
            None => LeaseTimeToLiveResponse {
                header: self.plain_header(),
                id: request.id,
                ttl: -1,
                ..Default::default()
            },
        };
        Ok(Response::new(response))
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let leases = lease::lock(&self.lessor).ids().into_iter().map(|id| LeaseStatus { id }).collect();
        Ok(Response::new(LeaseLeasesResponse { header: self.plain_header(), leases }))
    }
}

impl Service {
    /// A filled header at the current revision.
    fn plain_header(&self) -> Option<ResponseHeader> {
        let revision = self.current_revision().unwrap_or_default();
        let mut header = Some(ResponseHeader { revision: revision as i64, ..ResponseHeader::default() });
        self.fill(&mut header);
        header
    }

    /// The leader's lease duties, until the process ends: revoke expired leases
    /// (at most 500 each half second, as etcd rate-limits), and checkpoint remaining
    /// TTLs so that they survive a restart: renewed leases every second, all of them
    /// every `checkpoint_interval` (etcd's `--experimental-lease-checkpoint-interval`).
    pub(crate) fn spawn_lease_duties(&self, checkpoint_interval: std::time::Duration) {
        let service = self.clone();
        tokio::spawn(async move {
            let tick = std::time::Duration::from_millis(500);
            let mut ticks = tokio::time::interval(tick);
            let full_every = (checkpoint_interval.as_millis() / tick.as_millis()).max(1) as u64;
            let mut rounds: u64 = 0;
            loop {
                ticks.tick().await;
                rounds += 1;
                if service.shared.leader_id() != service.shared.member_id {
                    continue;
                }
                let now = Instant::now();
                let expired = lease::lock(&service.lessor).take_expired(now, 500);
                for id in expired {
                    let service = service.clone();
                    tokio::spawn(async move { service.revoke_expired(id).await });
                }
                let all = rounds.is_multiple_of(full_every);
                if all || rounds.is_multiple_of(2) {
                    let checkpoints = lease::lock(&service.lessor).take_checkpoints(now, all);
                    if !checkpoints.is_empty() {
                        let checkpoints = checkpoints
                            .into_iter()
                            .map(|(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl })
                            .collect();
                        let request = LeaseCheckpointRequest { checkpoints };
                        let none = Credentials { pairs: Vec::new() };
                        let internal =
                            InternalRaftRequest { lease_checkpoint: Some(request), ..Default::default() };
                        if let Err(error) = service.write(internal, &none).await {
                            tracing::warn!(%error, "lease checkpoint failed");
                        }
                    }
                }
            }
        });
    }

    async fn revoke_expired(&self, id: i64) {
        let none = Credentials { pairs: Vec::new() };
        let internal =
            InternalRaftRequest { lease_revoke: Some(LeaseRevokeRequest { id }), ..Default::default() };
        match self.write(internal, &none).await {
            Ok(_) => tracing::debug!(lease = format_args!("{id:x}"), "revoked an expired lease"),
            Err(status) if status.message() == Error::LeaseNotFound.to_string() => {}
            Err(status) => {
                tracing::warn!(lease = format_args!("{id:x}"), error = %status.message(), "revoking an expired lease failed");
                lease::lock(&self.lessor).revoke_failed(id);
            }
        }
    }
}
