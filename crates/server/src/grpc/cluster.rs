//! `etcdserverpb.Cluster`: listing the members.

use cairn_api::etcdserverpb::cluster_server::Cluster;
use cairn_api::etcdserverpb::{Member, MemberListRequest, MemberListResponse};
use tonic::{Request, Response, Status};

use super::Service;

#[tonic::async_trait]
impl Cluster for Service {
    async fn member_list(
        &self,
        _request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let member = Member {
            id: self.shared.member_id,
            name: self.config.name.clone(),
            peer_ur_ls: self.config.peer_urls.clone(),
            client_ur_ls: self.config.client_urls.clone(),
            is_learner: false,
        };
        let mut response = MemberListResponse { header: None, members: vec![member] };
        self.fill(&mut response.header);
        Ok(Response::new(response))
    }
}
