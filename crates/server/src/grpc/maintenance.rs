//! `etcdserverpb.Maintenance`: `Status`, alarms, `HashKV`, `MoveLeader` and
//! `Snapshot`.

use cairn_api::etcdserverpb::alarm_request::AlarmAction;
use cairn_api::etcdserverpb::maintenance_server::Maintenance;
use cairn_api::etcdserverpb::{
    AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse, DowngradeRequest,
    DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse, InternalRaftRequest,
    MoveLeaderRequest, MoveLeaderResponse, ResponseHeader, SnapshotRequest, SnapshotResponse, StatusRequest,
    StatusResponse,
};
use std::pin::Pin;

use futures::Stream;

use crate::apply::Applied;
use crate::error::Error;
use cairn_proposal::IndexSource;
use tonic::{Request, Response, Status};

use super::Service;

/// The etcd version Cairn answers as: the API it implements.
pub(crate) const ETCD_VERSION: &str = "3.5.0";

/// etcd's chunk of a snapshot stream.
const SNAPSHOT_CHUNK: usize = 32 * 1024;

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Maintenance for Service {
    /// etcd's `Snapshot`: the state machine as one read transaction sees it, as an etcd
    /// backend file (bbolt) streamed in 32 KiB blobs with the bytes still to come, then
    /// one last blob with the SHA-256 of the file. The file is built in an unnamed
    /// temporary file beside the database, so memory stays bounded and neither writes
    /// nor the raft loop wait for it.
    async fn snapshot(&self, request: Request<SnapshotRequest>) -> Result<Response<SnapshotStream>, Status> {
        self.check_maintenance_admin(&request).await?;
        let db = self.db.get();
        let dir = self.db.path().parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let send = |blob, remaining_bytes| {
                let response = SnapshotResponse { remaining_bytes, blob, ..SnapshotResponse::default() };
                sender.blocking_send(Ok(response)).is_ok()
            };
            if let Err(error) = crate::storage::backup::stream(&db, &dir, ETCD_VERSION, SNAPSHOT_CHUNK, send)
            {
                tracing::warn!(%error, "sending a snapshot failed");
                let _ = sender.blocking_send(Err(Status::unknown(error.to_string())));
            }
        });
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn alarm(&self, request: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let credentials = self.credentials(&request).await?;
        let request = request.into_inner();
        let mut response = match AlarmAction::try_from(request.action) {
            Ok(AlarmAction::Get) => {
                let alarms = crate::alarms::list(&crate::alarms::lock(&self.alarms), request.alarm);
                AlarmResponse { header: None, alarms }
            }
            Ok(AlarmAction::Activate | AlarmAction::Deactivate) => {
                let internal = InternalRaftRequest { alarm: Some(request), ..Default::default() };
                let Applied::Alarm(response) = self.write(internal, &credentials).await? else {
                    return Err(super::unexpected("Alarm"));
                };
                response
            }
            Err(_) => return Err(Status::invalid_argument("etcdserver: unknown alarm action")),
        };
        self.fill(&mut response.header);
        Ok(Response::new(response))
    }

    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        self.check_maintenance_admin(&request).await?;
        let hashed = self.hash_kv(request.into_inner().revision)?;
        let mut response = HashKvResponse {
            header: Some(ResponseHeader { revision: hashed.revision, ..ResponseHeader::default() }),
            hash: hashed.hash,
            compact_revision: hashed.compact_revision,
            hash_revision: hashed.hash_revision,
        };
        self.fill(&mut response.header);
        Ok(Response::new(response))
    }

    /// etcd's `Defragment`, on this member alone: the database rewritten into a
    /// compact file (see `storage::defrag`). Reads never wait for it; writes wait only
    /// for its last step, which copies what was written while the rest was copied.
    async fn defragment(
        &self,
        request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        self.check_maintenance_admin(&request).await?;
        // The whole defragmentation runs in a task of its own that holds the lock to
        // the end: a client that gives up stops waiting, not the work, so a second
        // defragmentation never starts while the first still has a copy in flight.
        let turn = self.db.defrag_turn().await;
        let service = self.clone();
        let task = tokio::spawn(async move {
            // Rows an earlier compaction still has to delete would come back in the
            // copy: let them go first.
            let compacted = service.view(|_, _, revisions| Ok(revisions.compacted)).unwrap_or_default();
            let mut physical = service.shared.physically_compacted.subscribe();
            let _ = physical.wait_for(|done| *done >= compacted).await;
            let store = std::sync::Arc::clone(&service.db);
            let copy = tokio::task::spawn_blocking(move || crate::storage::defrag::copy(&store, turn))
                .await
                .map_err(|error| Status::internal(error.to_string()))?;
            let copy = copy.map_err(|error| Status::unknown(error.to_string()))?;
            service.proposer.defragment(copy).await.map_err(Status::unknown)
        });
        let outcome = task.await.map_err(|error| Status::internal(error.to_string()))??;
        tracing::info!(
            size_before = outcome.size_before,
            size_after = outcome.size_after,
            writes_blocked_ms = outcome.blocked.as_millis() as u64,
            took_ms = outcome.took.as_millis() as u64,
            "defragmented"
        );
        let mut response = DefragmentResponse { header: None };
        self.fill(&mut response.header);
        Ok(Response::new(response))
    }

    /// etcd's `Hash`: CRC-32C over the whole state in etcd's backend layout, leaving
    /// out the applied index, so that members with the same state agree. It reads
    /// the whole state; `HashKV` is the cheaper check.
    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        self.check_maintenance_admin(&request).await?;
        let db = self.db.get();
        let dir = self.db.path().parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        let hashed = tokio::task::spawn_blocking(move || {
            crate::storage::backup::backend_hash(&db, &dir, ETCD_VERSION)
        })
        .await
        .map_err(|error| Status::internal(error.to_string()))?;
        let (hash, revision) = hashed.map_err(|error| Status::unknown(error.to_string()))?;
        let mut response = HashResponse {
            header: Some(ResponseHeader { revision: revision as i64, ..ResponseHeader::default() }),
            hash,
        };
        self.fill(&mut response.header);
        Ok(Response::new(response))
    }

    /// etcd 3.5's `Downgrade`, for a cluster that supports no downgrade target: a
    /// version in the wrong format, or any target (etcd allows only one minor below
    /// the cluster's, which would need members that run etcd 3.4's storage), is
    /// refused with etcd's errors, and there is never a downgrade to cancel.
    async fn downgrade(
        &self,
        request: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        use cairn_api::etcdserverpb::downgrade_request::DowngradeAction;
        self.check_maintenance_admin(&request).await?;
        let request = request.into_inner();
        let action = DowngradeAction::try_from(request.action)
            .map_err(|_| Status::unknown("etcdserver: unknown method"))?;
        if action != DowngradeAction::Cancel && !is_cluster_version(&request.version) {
            return Err(Status::invalid_argument("etcdserver: wrong downgrade target version format"));
        }
        self.wait_read_index().await?;
        Err(match action {
            DowngradeAction::Cancel => Status::failed_precondition("etcdserver: no inflight downgrade job"),
            DowngradeAction::Validate | DowngradeAction::Enable => {
                Status::invalid_argument("etcdserver: invalid downgrade target version")
            }
        })
    }

    /// etcd's `MoveLeader`: on the leader only, to a voting member, answered once the
    /// target leads. etcd waits for as long as the client does; Cairn gives up after
    /// the request timeout with etcd's text for a transfer that took too long.
    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        self.check_maintenance_admin(&request).await?;
        let target = request.into_inner().target_id;
        if self.shared.leader_id() != self.shared.member_id() {
            return Err(Status::failed_precondition("etcdserver: not leader"));
        }
        if !self.members().iter().any(|member| member.id == target && !member.is_learner) {
            return Err(Status::failed_precondition("etcdserver: bad leader transferee"));
        }
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        while self.shared.leader_id() != target {
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::unknown("etcdserver: request timed out, leader transfer took too long"));
            }
            // raft-rs gives up a transfer the target does not take within an election
            // timeout; asking again while the target lags restarts it.
            self.proposer.transfer_leader(target);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let mut response = MoveLeaderResponse { header: None };
        self.fill(&mut response.header);
        Ok(Response::new(response))
    }

    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let db_size = self.db_size();
        let mut response = StatusResponse {
            header: None,
            version: ETCD_VERSION.to_owned(),
            db_size,
            leader: self.shared.leader_id(),
            raft_index: self.shared.committed_index(),
            raft_term: self.shared.term(),
            raft_applied_index: self.shared.applied_index(),
            errors: self.status_errors(),
            db_size_in_use: db_size,
            is_learner: self.members().iter().any(|m| m.id == self.shared.member_id() && m.is_learner),
            ..StatusResponse::default()
        };
        let revision = self.read(false, |_, _, revisions| Ok(revisions.current)).await.unwrap_or_default();
        response.header =
            Some(cairn_api::etcdserverpb::ResponseHeader { revision: revision as i64, ..Default::default() });
        self.fill(&mut response.header);
        Ok(Response::new(response))
    }
}

impl Service {
    /// etcd's `HashKV` at `revision` (0: the current one) of this member's store.
    fn hash_kv(&self, revision: i64) -> Result<crate::corrupt::HashKv, Status> {
        let hashed =
            self.view(|kv, index, revisions| Ok(cairn_mvcc::hash_kv_at(kv, index, revisions, revision)));
        Ok(hashed.map_err(Error::from)?.map_err(Error::from)?)
    }

    /// etcd's `PeriodicCheck`, every `interval` on the leader, until the process ends
    /// (`--experimental-corrupt-check-time`): its hash, each peer's at the same
    /// revision, a read-index round to confirm it still leads, its hash again; CORRUPT
    /// is raised when `cairn-mvcc`'s [`periodic_verdict`](cairn_mvcc::corrupt::periodic_verdict)
    /// names a member.
    pub(crate) fn spawn_corrupt_check(
        &self,
        interval: std::time::Duration,
        tls: Option<cairn_net::peer::PeerTls>,
    ) {
        let service = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let leads = service.shared.leader_id() == service.shared.member_id();
                if !leads || crate::alarms::corrupt(&crate::alarms::lock(&service.alarms)) {
                    continue;
                }
                if let Err(error) = service.corrupt_check_once(tls.as_ref()).await {
                    tracing::warn!(error = %error.message(), "periodic corruption check failed");
                }
            }
        });
    }

    async fn corrupt_check_once(&self, tls: Option<&cairn_net::peer::PeerTls>) -> Result<(), Status> {
        let first = self.hash_kv(0)?;
        let me = self.shared.member_id();
        let others = self.members().into_iter().filter(|member| member.id != me);
        let others = others.map(|member| (member.id, member.peer_ur_ls));
        let peers =
            crate::corrupt::peer_hashes(others, tls, first.revision, self.config.request_timeout).await;
        self.wait_read_index().await?;
        let second = self.hash_kv(0)?;
        let findings = cairn_mvcc::corrupt::PeriodicFindings { member_id: me, first, second, peers };
        if let Some(suspect) = cairn_mvcc::corrupt::periodic_verdict(&findings) {
            tracing::warn!(member = format_args!("{:x}", suspect.member_id), "{}", suspect.reason);
            // As etcd 3.5.7 and later: the alarm names no member.
            let request = AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: 0,
                alarm: AlarmType::Corrupt as i32,
            };
            let internal = InternalRaftRequest { alarm: Some(request), ..Default::default() };
            self.write(internal, &super::Credentials::server()).await?;
        }
        tracing::info!(peers = findings.peers.len(), "finished peer corruption check");
        Ok(())
    }

    /// Raises this member's NOSPACE alarm through raft.
    pub(crate) async fn raise_no_space(&self) {
        let request = AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: self.shared.member_id(),
            alarm: AlarmType::Nospace as i32,
        };
        let internal = InternalRaftRequest { alarm: Some(request), ..Default::default() };
        if let Err(error) = self.write(internal, &super::Credentials::server()).await {
            tracing::warn!(error = %error.message(), "raising NOSPACE failed");
        }
    }

    /// What `Status` lists as errors, as etcd words them: no leader, then the raised
    /// alarms.
    fn status_errors(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.shared.leader_id() == 0 {
            errors.push("etcdserver: no leader".to_owned());
        }
        let alarms = crate::alarms::lock(&self.alarms);
        let name = |alarm: i32| AlarmType::try_from(alarm).map_or("UNKNOWN", |alarm| alarm.as_str_name());
        errors.extend(
            alarms.iter().map(|&(member, alarm)| format!("memberID:{member} alarm:{} ", name(alarm))),
        );
        errors
    }

    /// etcd's `authMaintenanceServer.isAuthenticated`: with auth on, root only. Its
    /// errors reach the client unconverted, as gRPC `Unknown` with the auth store's
    /// own `auth: …` text.
    async fn check_maintenance_admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let credentials = self.credentials(request).await?;
        let store = crate::auth::read(&self.auth);
        let raw = |error: cairn_auth::Error| {
            Status::unknown(error.to_string().replacen("etcdserver: ", "auth: ", 1))
        };
        let info = crate::auth::caller(&store, &credentials.as_pairs()).map_err(raw)?;
        store.is_admin(info.as_ref()).map_err(raw)
    }

    fn db_size(&self) -> i64 {
        self.db.size() as i64
    }
}

/// What this member answers its peers (`cairn-transport`'s membership service).
impl cairn_transport::Members for Service {
    fn members(&self) -> Vec<cairn_api::etcdserverpb::Member> {
        cairn_apply::members(&self.shared.members).values().cloned().collect()
    }

    async fn progress(&self, id: u64) -> Option<(u64, u64)> {
        self.proposer.progress(id).await
    }

    fn hash_kv(&self, revision: i64) -> Result<cairn_api::cairnpb::HashKvResponse, Status> {
        let hashed = Service::hash_kv(self, revision)?;
        Ok(cairn_api::cairnpb::HashKvResponse {
            member_id: self.shared.member_id(),
            revision: hashed.revision,
            compact_revision: hashed.compact_revision,
            hash: hashed.hash,
        })
    }
}

/// Whether `version` parses as etcd's downgrade target does: semver, or
/// `major.minor`.
fn is_cluster_version(version: &str) -> bool {
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    (2..=3).contains(&parts.len())
        && parts.iter().all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
}
