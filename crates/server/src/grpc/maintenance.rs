//! `etcdserverpb.Maintenance`: `Status` and listing alarms.

use cairn_api::etcdserverpb::alarm_request::AlarmAction;
use cairn_api::etcdserverpb::maintenance_server::Maintenance;
use cairn_api::etcdserverpb::{AlarmRequest, AlarmResponse, StatusRequest, StatusResponse};
use cairn_proposal::IndexSource;
use tonic::{Request, Response, Status};

use super::Service;

/// The etcd version Cairn answers as: the API it implements.
pub(crate) const ETCD_VERSION: &str = "3.5.0";

#[tonic::async_trait]
impl Maintenance for Service {
    async fn alarm(&self, request: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        match AlarmAction::try_from(request.into_inner().action) {
            Ok(AlarmAction::Get) => {
                // No alarm is ever raised yet: there is no space quota to exceed.
                let mut response = AlarmResponse::default();
                self.fill(&mut response.header);
                Ok(Response::new(response))
            }
            _ => Err(Status::unimplemented(
                "etcdserver: activating and deactivating alarms is not supported yet",
            )),
        }
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
            errors: Vec::new(),
            db_size_in_use: db_size,
            is_learner: false,
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
    fn db_size(&self) -> i64 {
        self.config.data_file.metadata().map(|metadata| metadata.len() as i64).unwrap_or_default()
    }
}
