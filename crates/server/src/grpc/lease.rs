//! `etcdserverpb.Lease`: grants and revocations through raft; keep-alives and TTL
//! queries answered by the leader's lessor.

use std::pin::Pin;

use cairn_api::cairnpb::LeaseTtlResponse;
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
use crate::lease::{self, Renewal};

/// How long a member waits before asking the leader again when it could not reach
/// it (etcd's 50 ms).
const FORWARD_RETRY: std::time::Duration = std::time::Duration::from_millis(50);
/// Most lease checkpoints in one proposal (etcd's `maxLeaseCheckpointBatchSize`).
const CHECKPOINT_BATCH: usize = 1000;

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
        let internal = InternalRaftRequest { lease_grant: Some(request), ..Default::default() };
        let Applied::LeaseGrant(mut response) = self.write(internal, &credentials).await? else {
            return Err(super::unexpected("LeaseGrant"));
        };
        self.fill(&mut response.header);
        Ok(Response::new(response))
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let credentials = self.credentials(&request).await?;
        let request = request.into_inner();
        let internal = InternalRaftRequest { lease_revoke: Some(request), ..Default::default() };
        let Applied::LeaseRevoke(mut response) = self.write(internal, &credentials).await? else {
            return Err(super::unexpected("LeaseRevoke"));
        };
        self.fill(&mut response.header);
        Ok(Response::new(response))
    }

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        self.check_member(request.metadata(), false)?;
        let lost = self.leader_lost_signal(request.metadata());
        let service = self.clone();
        let inbound = request.into_inner();
        let state = (service, inbound, lost, false);
        let responses = futures::stream::unfold(state, |(service, mut inbound, mut lost, done)| async move {
            if done {
                return None;
            }
            let next = async {
                let request = inbound.message().await.ok()??;
                // As etcd: the header is taken before the renewal, so that its revision
                // is never past a revocation the renewal raced with.
                let header = service.plain_header();
                Some(match service.renew(request.id).await {
                    Ok(ttl) => Ok(LeaseKeepAliveResponse { header, id: request.id, ttl: ttl.unwrap_or(0) }),
                    Err(status) => Err(status),
                })
            };
            let item = tokio::select! {
                item = next => item?,
                () = super::LeaderLoss::lost_if_asked(&mut lost) => Err(Status::from(Error::Proposal(cairn_proposal::Error::NoLeader))),
            };
            // Any error ends the stream, as etcd's keep-alive loop ends.
            let done = item.is_err();
            Some((item, (service, inbound, lost, done)))
        });
        Ok(Response::new(Box::pin(responses)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let credentials = self.credentials(&request).await?;
        let request = request.into_inner();
        let found = self.time_to_live(request.id, request.keys).await?;
        let response = match found {
            Some(found) => {
                if request.keys {
                    // CVE-2023-32082: the keys are listed only to a caller that may read
                    // every one of them.
                    for key in &found.keys {
                        self.check_read(&credentials, key, &[])?;
                    }
                }
                LeaseTimeToLiveResponse {
                    header: self.plain_header(),
                    id: request.id,
                    ttl: found.ttl,
                    granted_ttl: found.granted_ttl,
                    keys: found.keys,
                }
            }
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

    /// etcd's `LeaseRenew`: renews lease `id` where expiry times are kept, here
    /// when this member leads (after a read-index round confirms that a quorum still
    /// follows it), else on the leader over the peer connection, retrying for up to
    /// the request timeout while there is no leader or it cannot be reached. `None`
    /// when the lease is unknown or expired.
    pub(crate) async fn renew(&self, id: i64) -> Result<Option<i64>, Status> {
        let deadline = Instant::now() + self.config.request_timeout;
        loop {
            let leader = self.shared.leader_id();
            if leader == self.shared.member_id() {
                match tokio::time::timeout_at(deadline, self.renew_here(id)).await {
                    Ok(Ok(Renewal::Renewed(ttl))) => return Ok(Some(ttl)),
                    Ok(Ok(Renewal::NotFound)) => return Ok(None),
                    // Leading, but not keeping expiry yet: the lessor is promoted once
                    // what was committed before this term is applied.
                    Ok(Ok(Renewal::NotPrimary)) => {}
                    Ok(Err(error)) => return Err(error.into()),
                    Err(_) => {}
                }
            } else if leader != 0
                && let Some(renewed) =
                    cairn_transport::forward_renew(self.shared.peer_channels(leader), id, deadline).await
            {
                return Ok(renewed);
            }
            if Instant::now() >= deadline {
                return Err(self.no_leader_or_timeout());
            }
            tokio::time::sleep(FORWARD_RETRY).await;
        }
    }

    /// Renews lease `id` on this member, which must lead: a read-index round first
    /// confirms that it still does, then its applied state is brought up to the
    /// commit index, so that a lease granted just before is known.
    pub(crate) async fn renew_here(&self, id: i64) -> Result<Renewal, Error> {
        let index = self.proposer.read_index().await?;
        self.shared.applied_wait().wait(index).await;
        if self.shared.leader_id() != self.shared.member_id() {
            return Err(Error::LeaderChanged);
        }
        Ok(lease::lock(&self.lessor).renew(id, Instant::now().into_std()))
    }

    /// etcd's `LeaseTimeToLive`: answered by the leader's lessor, here or over the
    /// peer connection; `None` for an unknown lease.
    pub(crate) async fn time_to_live(&self, id: i64, keys: bool) -> Result<Option<LeaseTtlResponse>, Status> {
        let deadline = Instant::now() + self.config.request_timeout;
        loop {
            let leader = self.shared.leader_id();
            if leader == self.shared.member_id() {
                if let Ok(Some(found)) =
                    tokio::time::timeout_at(deadline, self.time_to_live_here(id, keys)).await
                {
                    return Ok(found.found.then_some(found));
                }
            } else if leader != 0 {
                let channels = self.shared.peer_channels(leader);
                if let Some(found) = cairn_transport::forward_time_to_live(channels, id, keys, deadline).await
                {
                    return Ok(found);
                }
            }
            if Instant::now() >= deadline {
                return Err(self.no_leader_or_timeout());
            }
            tokio::time::sleep(FORWARD_RETRY).await;
        }
    }

    /// Lease `id` as this member's primary lessor knows it, once everything committed
    /// is applied; `None` when this member does not keep expiry times.
    pub(crate) async fn time_to_live_here(&self, id: i64, keys: bool) -> Option<LeaseTtlResponse> {
        use cairn_proposal::IndexSource as _;
        self.shared.applied_wait().wait(self.shared.committed_index()).await;
        let lessor = lease::lock(&self.lessor);
        if !lessor.is_primary() || self.shared.leader_id() != self.shared.member_id() {
            return None;
        }
        Some(match lessor.time_to_live(id, Instant::now().into_std()) {
            Some((granted_ttl, ttl, attached)) => LeaseTtlResponse {
                found: true,
                ttl,
                granted_ttl,
                keys: if keys { attached } else { Vec::new() },
            },
            None => LeaseTtlResponse::default(),
        })
    }

    fn no_leader_or_timeout(&self) -> Status {
        let error = if self.shared.leader_id() == 0 {
            cairn_proposal::Error::NoLeader
        } else {
            cairn_proposal::Error::Timeout
        };
        Error::Proposal(error).into()
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
                if service.shared.leader_id() != service.shared.member_id() {
                    continue;
                }
                // As etcd: while the data is corrupt, leases do not expire.
                if crate::alarms::corrupt(&crate::alarms::lock(&service.alarms)) {
                    continue;
                }
                let now = Instant::now().into_std();
                let expired = lease::lock(&service.lessor).take_expired(now, 500);
                for id in expired {
                    let service = service.clone();
                    tokio::spawn(async move { service.revoke_expired(id).await });
                }
                let all = rounds.is_multiple_of(full_every);
                if all || rounds.is_multiple_of(2) {
                    let checkpoints =
                        lease::lock(&service.lessor).take_checkpoints(now, all, checkpoint_interval);
                    for batch in checkpoints.chunks(CHECKPOINT_BATCH) {
                        let checkpoints = batch
                            .iter()
                            .map(|&(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl })
                            .collect();
                        let request = LeaseCheckpointRequest { checkpoints };
                        let internal =
                            InternalRaftRequest { lease_checkpoint: Some(request), ..Default::default() };
                        if let Err(error) = service.write(internal, &Credentials::server()).await {
                            tracing::warn!(%error, "lease checkpoint failed");
                            break;
                        }
                    }
                }
            }
        });
    }

    async fn revoke_expired(&self, id: i64) {
        let internal =
            InternalRaftRequest { lease_revoke: Some(LeaseRevokeRequest { id }), ..Default::default() };
        // As etcd's `WithRoot`: expiry deletes the keys whoever wrote them.
        match self.write(internal, &Credentials::server()).await {
            Ok(_) => tracing::debug!(lease = format_args!("{id:x}"), "revoked an expired lease"),
            Err(status) if status.message() == cairn_apply::Error::LeaseNotFound.to_string() => {}
            Err(status) => {
                tracing::warn!(lease = format_args!("{id:x}"), error = %status.message(), "revoking an expired lease failed");
                lease::lock(&self.lessor).revoke_failed(id);
            }
        }
    }
}

/// Lease calls forwarded to this member by the others while it leads (etcd's
/// `/leases` and `/leases/internal` peer handlers).
impl cairn_transport::LeaseKeeper for Service {
    async fn renew(&self, id: i64) -> Result<Option<i64>, Status> {
        let not_primary = || Status::unavailable("etcdserver: not a primary lessor");
        if self.shared.leader_id() != self.shared.member_id() {
            return Err(not_primary());
        }
        let renewal = tokio::time::timeout(self.config.request_timeout, self.renew_here(id))
            .await
            .map_err(|_| Error::Proposal(cairn_proposal::Error::Timeout))??;
        match renewal {
            Renewal::Renewed(ttl) => Ok(Some(ttl)),
            Renewal::NotFound => Ok(None),
            Renewal::NotPrimary => Err(not_primary()),
        }
    }

    async fn time_to_live(&self, id: i64, keys: bool) -> Result<LeaseTtlResponse, Status> {
        // etcd waits at most a second for its applied index here.
        let found = tokio::time::timeout(std::time::Duration::from_secs(1), self.time_to_live_here(id, keys))
            .await
            .map_err(|_| {
                Status::unavailable(
                    "etcdserver: request timed out, waiting for the applied index took too long",
                )
            })?;
        found.ok_or_else(|| Status::unavailable("etcdserver: not a primary lessor"))
    }
}
