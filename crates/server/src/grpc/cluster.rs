//! `etcdserverpb.Cluster`: the members, and changing them through raft
//! configuration changes.

use std::time::Duration;

use cairn_api::etcdserverpb::cluster_server::Cluster;
use cairn_api::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest,
    MemberUpdateResponse,
};
use prost::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType};
use tonic::{Request, Response, Status};

use cairn_backend::members::{Refusal, View};

use super::Service;

impl Service {
    /// The current members (removed ones left out).
    pub(super) fn members(&self) -> Vec<Member> {
        let members = self.shared.members.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        members.values().filter(|member| member.name != crate::members::REMOVED).cloned().collect()
    }

    fn member(&self, id: u64) -> Option<Member> {
        self.members().into_iter().find(|member| member.id == id)
    }

    /// etcd's `checkMembershipOperationPermission`: with auth on, changing the
    /// members takes the root role.
    async fn check_admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let credentials = self.credentials(request).await?;
        let store = crate::auth::read(&self.auth);
        let info = crate::auth::caller(&store, &credentials.as_pairs()).map_err(crate::error::Error::from)?;
        store.is_admin(info.as_ref()).map_err(crate::error::Error::from)?;
        Ok(())
    }

    /// Decides with etcd's readiness checks on this member's view of the cluster.
    fn decide(&self, check: impl FnOnce(&View<'_>) -> Result<(), Refusal>) -> Result<(), Status> {
        use cairn_proposal::Leadership as _;
        let members = self.members();
        let connected = |id| self.shared.connected_since(id).map(|since| since.elapsed());
        let view = View {
            members: &members,
            me: self.shared.member_id(),
            connected: &connected,
            strict: self.config.strict_reconfig_check,
        };
        check(&view).map_err(|refusal| match refusal {
            Refusal::Unhealthy => Status::unavailable(refusal.to_string()),
            Refusal::NoPeerUrls => Status::invalid_argument(refusal.to_string()),
            other => Status::failed_precondition(other.to_string()),
        })
    }

    /// etcd's `mayPromoteMember`, with the learner's progress asked of the leader.
    async fn may_promote(&self, member: &Member) -> Result<(), Status> {
        let leader = self.shared.leader_id();
        let (matched, leader_matched) = match self.proposer.progress(member.id).await {
            Some(progress) => progress,
            // The leader does not track it (etcd: not in raft's progress).
            None if leader == self.shared.member_id() => return Err(member_not_found()),
            None if leader == 0 => {
                return Err(crate::error::Error::Proposal(cairn_proposal::Error::NoLeader).into());
            }
            None => self.leader_progress(leader, member.id).await?,
        };
        self.decide(|view| view.may_promote(matched, leader_matched))
    }

    /// Member `id`'s progress as `leader` tracks it, asked over the peer connection.
    async fn leader_progress(&self, leader: u64, id: u64) -> Result<(u64, u64), Status> {
        let channels = self.shared.peer_channels(leader);
        match cairn_transport::ask_progress(channels, id, self.config.request_timeout).await {
            Ok(Some(progress)) => Ok(progress),
            Ok(None) => Err(member_not_found()),
            Err(_) => Err(crate::error::Error::Proposal(cairn_proposal::Error::Timeout).into()),
        }
    }

    /// Proposes a membership change and waits until it is applied here.
    async fn change(&self, kind: ConfChangeType, id: u64, context: Vec<u8>) -> Result<(), Status> {
        let mut change = ConfChange::default();
        change.set_change_type(kind);
        change.set_node_id(id);
        change.set_context(context.into());
        match tokio::time::timeout(self.config.request_timeout, self.proposer.change_membership(change)).await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(Status::failed_precondition(message)),
            Err(_) => Err(Status::unavailable("etcdserver: request timed out")),
        }
    }
}

impl Service {
    /// Publishes this member's name and client URLs through raft, unless the cluster
    /// already knows them, retrying until it is done or the server stops.
    pub(crate) async fn publish_member(&self, name: &str, client_urls: Vec<String>) {
        let id = self.shared.member_id();
        for _ in 0..20 {
            let known = self.member(id).is_some_and(|m| m.name == name && m.client_ur_ls == client_urls);
            if known {
                return;
            }
            let attributes = cairn_api::etcdserverpb::MemberAttributesRequest {
                id,
                name: name.to_owned(),
                client_urls: client_urls.clone(),
            };
            let request = cairn_api::etcdserverpb::InternalRaftRequest {
                cairn_member_attributes: Some(attributes),
                ..Default::default()
            };
            let none = super::Credentials { pairs: Vec::new() };
            if self.write(request, &none).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tracing::warn!("could not publish this member's name and client URLs");
    }
}

fn member_not_found() -> Status {
    Status::not_found("etcdserver: member not found")
}

#[tonic::async_trait]
impl Cluster for Service {
    async fn member_list(
        &self,
        _request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let mut response = MemberListResponse { header: None, members: self.members() };
        self.fill(&mut response.header);
        Ok(Response::new(response))
    }

    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        self.check_admin(&request).await?;
        let request = request.into_inner();
        let mut urls = request.peer_ur_ls.clone();
        urls.sort();
        self.decide(|view| view.may_use_peer_urls(&urls, None))?;
        // etcd's new member IDs: the peer URLs, the cluster token and the time.
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let id = cairn_backend::members::member_id(&urls, &format!("{}{now}", self.config.cluster_token));
        let member = Member {
            id,
            name: String::new(),
            peer_ur_ls: urls,
            client_ur_ls: Vec::new(),
            is_learner: request.is_learner,
        };
        self.decide(|view| view.may_add(request.is_learner))?;
        let kind = if request.is_learner { ConfChangeType::AddLearnerNode } else { ConfChangeType::AddNode };
        self.change(kind, id, member.encode_to_vec()).await?;
        let mut response = MemberAddResponse { header: None, member: Some(member), members: self.members() };
        self.fill(&mut response.header);
        Ok(Response::new(response))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.check_admin(&request).await?;
        let id = request.into_inner().id;
        let member = self.member(id).ok_or_else(member_not_found)?;
        self.decide(|view| view.may_remove(&member))?;
        if self.shared.leader_id() == id {
            // Hand leadership over first, so that the cluster is not left waiting for an
            // election timeout.
            let successor = self.members().into_iter().find(|member| member.id != id && !member.is_learner);
            if let Some(successor) = successor {
                self.proposer.transfer_leader(successor.id);
                let deadline = tokio::time::Instant::now() + self.config.request_timeout;
                while self.shared.leader_id() == id && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        self.change(ConfChangeType::RemoveNode, id, Vec::new()).await?;
        let mut response = MemberRemoveResponse { header: None, members: self.members() };
        self.fill(&mut response.header);
        Ok(Response::new(response))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        self.check_admin(&request).await?;
        let request = request.into_inner();
        self.member(request.id).ok_or_else(member_not_found)?;
        let mut urls = request.peer_ur_ls.clone();
        urls.sort();
        self.decide(|view| view.may_use_peer_urls(&urls, Some(request.id)))?;
        // Peer URLs are not raft state: an ordinary entry, through the proposal gate,
        // that every member applies to its registry and transport.
        let update = MemberUpdateRequest { id: request.id, peer_ur_ls: urls };
        let internal = cairn_api::etcdserverpb::InternalRaftRequest {
            cairn_member_update: Some(update),
            ..Default::default()
        };
        let credentials = super::Credentials::server();
        self.write(internal, &credentials).await?;
        let mut response = MemberUpdateResponse { header: None, members: self.members() };
        self.fill(&mut response.header);
        Ok(Response::new(response))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.check_admin(&request).await?;
        let id = request.into_inner().id;
        let member = self.member(id).ok_or_else(member_not_found)?;
        if !member.is_learner {
            return Err(Status::failed_precondition("etcdserver: can only promote a learner member"));
        }
        self.may_promote(&member).await?;
        let context = Member { is_learner: false, ..member }.encode_to_vec();
        self.change(ConfChangeType::AddNode, id, context).await?;
        let mut response = MemberPromoteResponse { header: None, members: self.members() };
        self.fill(&mut response.header);
        Ok(Response::new(response))
    }
}
