//! What the peer port serves besides raft messages (`cairn-transport`'s): the
//! membership a joining member asks for, a learner's progress, this member's `HashKV`
//! for the corruption check, and lease calls forwarded to the leader.

use std::sync::Arc;

use tonic::{Request, Response, Status};

/// Everything served on the peer port.
#[derive(Clone)]
pub(crate) struct PeerServices {
    pub(crate) peer: cairn_transport::Receiver,
    pub(crate) membership: MembershipService,
    /// Lease calls forwarded by other members to this one while it leads.
    pub(crate) leases: crate::grpc::PeerLeases,
}

/// Answers a joining member with the cluster's members, and any member with a
/// learner's progress while this one leads.
#[derive(Clone)]
pub(crate) struct MembershipService {
    pub(crate) cluster_id: u64,
    pub(crate) members: Arc<dyn Fn() -> Vec<cairn_api::etcdserverpb::Member> + Send + Sync>,
    pub(crate) proposer: crate::node::RaftProposer,
    /// This member's `HashKV` at a revision (0: the current one).
    pub(crate) hash_kv: Arc<dyn Fn(i64) -> Result<crate::corrupt::HashKv, Status> + Send + Sync>,
    pub(crate) member_id: u64,
}

#[tonic::async_trait]
impl cairn_api::cairnpb::membership_server::Membership for MembershipService {
    async fn members(
        &self,
        _request: Request<cairn_api::cairnpb::MembersRequest>,
    ) -> Result<Response<cairn_api::cairnpb::MembersResponse>, Status> {
        use prost::Message as _;
        let members = (self.members)().iter().map(|member| member.encode_to_vec()).collect();
        Ok(Response::new(cairn_api::cairnpb::MembersResponse { cluster_id: self.cluster_id, members }))
    }

    async fn progress(
        &self,
        request: Request<cairn_api::cairnpb::ProgressRequest>,
    ) -> Result<Response<cairn_api::cairnpb::ProgressResponse>, Status> {
        let progress = self.proposer.progress(request.into_inner().id).await;
        let (matched, leader_matched) = progress.unwrap_or_default();
        let known = progress.is_some();
        Ok(Response::new(cairn_api::cairnpb::ProgressResponse { known, matched, leader_matched }))
    }

    async fn hash_kv(
        &self,
        request: Request<cairn_api::cairnpb::HashKvRequest>,
    ) -> Result<Response<cairn_api::cairnpb::HashKvResponse>, Status> {
        let hashed = (self.hash_kv)(request.into_inner().revision)?;
        Ok(Response::new(cairn_api::cairnpb::HashKvResponse {
            member_id: self.member_id,
            revision: hashed.revision,
            compact_revision: hashed.compact_revision,
            hash: hashed.hash,
        }))
    }
}
