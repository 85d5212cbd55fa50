//! `etcdserverpb.Cluster`: listing the members.

use cairn_api::etcdserverpb::cluster_server::Cluster;
use cairn_api::etcdserverpb::{MemberListRequest, MemberListResponse};
use tonic::{Request, Response, Status};

use super::Service;

#[tonic::async_trait]
impl Cluster for Service {
    async fn member_list(
        &self,
        _request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let mut response = MemberListResponse { header: None, members: self.config.members.clone() };
        self.fill(&mut response.header);
        Ok(Response::new(response))
    }
}
