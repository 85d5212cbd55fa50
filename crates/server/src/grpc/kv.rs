//! `etcdserverpb.KV`: reads served from the store (linearizable ones after a
//! read-index round), writes through the proposal gate.

use cairn_api::etcdserverpb::kv_server::Kv;
use cairn_api::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, InternalRaftRequest,
    PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use cairn_mvcc::check;
use tonic::{Request, Response, Status};

use super::Service;
use crate::apply::Applied;

#[tonic::async_trait]
impl Kv for Service {
    async fn range(&self, request: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let serializable = request.get_ref().serializable;
        let credentials = self.credentials_for(&request, serializable).await?;
        let request = request.into_inner();
        check::range(&request).map_err(invalid)?;
        // As etcd: permissions are checked after the read index is reached, so that a
        // change applied before the read is enforced by it.
        if !request.serializable {
            self.wait_read_index().await?;
        }
        self.check_read(&credentials, &request.key, &request.range_end)?;
        let mut response = self
            .read(false, |kv, index, revisions| {
                Ok(cairn_mvcc::range_request(kv, index, revisions, &request)?)
            })
            .await?;
        self.fill(&mut response.header);
        Ok(Response::new(response))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let credentials = self.credentials(&request).await?;
        let request = request.into_inner();
        check::put(&request).map_err(invalid)?;
        let internal = InternalRaftRequest { put: Some(request), ..Default::default() };
        let Applied::Put(mut response) = self.write(internal, &credentials).await? else {
            return Err(super::unexpected("Put"));
        };
        self.fill(&mut response.header);
        Ok(Response::new(response))
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let credentials = self.credentials(&request).await?;
        let request = request.into_inner();
        check::delete_range(&request).map_err(invalid)?;
        let internal = InternalRaftRequest { delete_range: Some(request), ..Default::default() };
        let Applied::DeleteRange(mut response) = self.write(internal, &credentials).await? else {
            return Err(super::unexpected("DeleteRange"));
        };
        self.fill(&mut response.header);
        Ok(Response::new(response))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let credentials = self.credentials(&request).await?;
        let request = request.into_inner();
        check::txn(&request, self.config.max_txn_ops).map_err(invalid)?;
        let internal = InternalRaftRequest { txn: Some(request), ..Default::default() };
        let Applied::Txn(mut response) = self.write(internal, &credentials).await? else {
            return Err(super::unexpected("Txn"));
        };
        self.fill(&mut response.header);
        Ok(Response::new(response))
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let credentials = self.credentials(&request).await?;
        let request = request.into_inner();
        let (physical, revision) = (request.physical, request.revision.max(0) as u64);
        let internal = InternalRaftRequest { compaction: Some(request), ..Default::default() };
        let Applied::Compaction(mut response) = self.write(internal, &credentials).await? else {
            return Err(super::unexpected("Compaction"));
        };
        if physical {
            // etcd's physical compaction answers once the dropped rows are gone
            // from this member's store, not only from its reads.
            let mut done = self.shared.physically_compacted.subscribe();
            let _ = done.wait_for(|compacted| *compacted >= revision).await;
        }
        self.fill(&mut response.header);
        Ok(Response::new(response))
    }
}

impl Service {
    /// Compacts to `revision` through raft for the auto-compactor: true once done,
    /// or already covered by an earlier compaction.
    pub(crate) async fn auto_compact(&self, revision: u64) -> bool {
        let request = CompactionRequest { revision: revision as i64, physical: false };
        let internal = InternalRaftRequest { compaction: Some(request), ..Default::default() };
        match self.write(internal, &super::Credentials::server()).await {
            Ok(_) => {
                tracing::info!(revision, "compacted");
                true
            }
            Err(status) if status.message() == cairn_apply::Error::Compacted.to_string() => true,
            Err(status) => {
                tracing::warn!(revision, error = %status.message(), "auto compaction failed");
                false
            }
        }
    }
}

/// A malformed request: etcd's text, `InvalidArgument`.
fn invalid(invalid: check::Invalid) -> Status {
    Status::invalid_argument(invalid.to_string())
}
