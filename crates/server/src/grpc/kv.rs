//! `etcdserverpb.KV`: reads served from the store (linearizable ones after a
//! read-index round), writes through the proposal gate.

use std::collections::HashSet;

use cairn_api::etcdserverpb::kv_server::Kv;
use cairn_api::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_api::etcdserverpb::request_op::Request as Op;
use cairn_api::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, InternalRaftRequest,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
};
use tonic::{Request, Response, Status};

use super::Service;
use crate::apply::Applied;
use crate::error::Error;

#[tonic::async_trait]
impl Kv for Service {
    async fn range(&self, request: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let serializable = request.get_ref().serializable;
        let credentials = self.credentials_for(&request, serializable).await?;
        let request = request.into_inner();
        check_range(&request)?;
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
        check_put(&request)?;
        match self
            .write(InternalRaftRequest { put: Some(request), ..Default::default() }, &credentials)
            .await?
        {
            Applied::Put(mut response) => {
                self.fill(&mut response.header);
                Ok(Response::new(response))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let credentials = self.credentials(&request).await?;
        let request = request.into_inner();
        if request.key.is_empty() {
            return Err(Error::EmptyKey.into());
        }
        match self
            .write(InternalRaftRequest { delete_range: Some(request), ..Default::default() }, &credentials)
            .await?
        {
            Applied::DeleteRange(mut response) => {
                self.fill(&mut response.header);
                Ok(Response::new(response))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let credentials = self.credentials(&request).await?;
        let request = request.into_inner();
        check_txn(&request, self.config.max_txn_ops)?;
        check_intervals(&request.success)?;
        check_intervals(&request.failure)?;
        match self
            .write(InternalRaftRequest { txn: Some(request), ..Default::default() }, &credentials)
            .await?
        {
            Applied::Txn(mut response) => {
                self.fill(&mut response.header);
                Ok(Response::new(response))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let credentials = self.credentials(&request).await?;
        let request = request.into_inner();
        let (physical, revision) = (request.physical, request.revision.max(0) as u64);
        match self
            .write(InternalRaftRequest { compaction: Some(request), ..Default::default() }, &credentials)
            .await?
        {
            Applied::Compaction(mut response) => {
                if physical {
                    // etcd's physical compaction answers once the dropped rows are gone
                    // from this member's store, not only from its reads.
                    let mut done = self.shared.physically_compacted.subscribe();
                    let _ = done.wait_for(|compacted| *compacted >= revision).await;
                }
                self.fill(&mut response.header);
                Ok(Response::new(response))
            }
            other => Err(unexpected(other)),
        }
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
            Err(status) if status.message() == Error::Compacted.to_string() => true,
            Err(status) => {
                tracing::warn!(revision, error = %status.message(), "auto compaction failed");
                false
            }
        }
    }
}

fn unexpected(applied: Applied) -> Status {
    Status::internal(format!("etcdserver: unexpected apply result {applied:?}"))
}

fn check_range(request: &RangeRequest) -> Result<(), Status> {
    if request.key.is_empty() {
        return Err(Error::EmptyKey.into());
    }
    if SortOrder::try_from(request.sort_order).is_err() || SortTarget::try_from(request.sort_target).is_err()
    {
        return Err(Status::invalid_argument("etcdserver: invalid sort option"));
    }
    Ok(())
}

fn check_put(request: &PutRequest) -> Result<(), Status> {
    if request.key.is_empty() {
        return Err(Error::EmptyKey.into());
    }
    if request.ignore_value && !request.value.is_empty() {
        return Err(Error::ValueProvided.into());
    }
    if request.ignore_lease && request.lease != 0 {
        return Err(Error::LeaseProvided.into());
    }
    Ok(())
}

/// etcd's `checkTxnRequest`: at most `max_ops` compares and ops per branch, at every
/// level, and every op well formed.
fn check_txn(request: &TxnRequest, max_ops: usize) -> Result<(), Status> {
    if request.compare.len() > max_ops || request.success.len() > max_ops || request.failure.len() > max_ops {
        return Err(Error::TooManyOps.into());
    }
    for compare in &request.compare {
        if compare.key.is_empty() {
            return Err(Error::EmptyKey.into());
        }
    }
    for op in request.success.iter().chain(&request.failure) {
        match &op.request {
            Some(Op::RequestRange(range)) => check_range(range)?,
            Some(Op::RequestPut(put)) => check_put(put)?,
            Some(Op::RequestDeleteRange(delete)) if delete.key.is_empty() => {
                return Err(Error::EmptyKey.into());
            }
            Some(Op::RequestTxn(nested)) => check_txn(nested, max_ops)?,
            Some(Op::RequestDeleteRange(_)) | None => {}
        }
    }
    Ok(())
}

/// A deleted range, `end` `None` for one key.
struct Deleted {
    key: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Deleted {
    fn contains(&self, key: &[u8]) -> bool {
        match self.end.as_deref() {
            None => self.key == key,
            Some([0]) => key >= self.key.as_slice(),
            Some(end) => key >= self.key.as_slice() && key < end,
        }
    }
}

/// etcd's `checkIntervals`: no key is put twice, or put and deleted, in one branch
/// of a txn, nested txns included; the two branches of a nested txn may put the same
/// key since only one runs.
fn check_intervals(ops: &[RequestOp]) -> Result<(), Status> {
    intervals(ops).map(|_| ())
}

fn intervals(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<Deleted>), Status> {
    let duplicate = || Status::from(Error::DuplicateKey);
    let mut deleted: Vec<Deleted> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Op::RequestDeleteRange(delete)) => Some(Deleted {
                key: delete.key.clone(),
                end: (!delete.range_end.is_empty()).then(|| delete.range_end.clone()),
            }),
            _ => None,
        })
        .collect();
    let mut puts = HashSet::new();
    for op in ops {
        let Some(Op::RequestTxn(nested)) = &op.request else { continue };
        let (puts_then, deleted_then) = intervals(&nested.success)?;
        let (puts_else, deleted_else) = intervals(&nested.failure)?;
        for key in &puts_then {
            if puts.contains(key) || deleted.iter().any(|range| range.contains(key)) {
                return Err(duplicate());
            }
        }
        for key in &puts_else {
            if (puts.contains(key) && !puts_then.contains(key))
                || deleted.iter().any(|range| range.contains(key))
            {
                return Err(duplicate());
            }
        }
        puts.extend(puts_then);
        puts.extend(puts_else);
        deleted.extend(deleted_then);
        deleted.extend(deleted_else);
    }
    for op in ops {
        let Some(Op::RequestPut(put)) = &op.request else { continue };
        if !puts.insert(put.key.clone()) || deleted.iter().any(|range| range.contains(&put.key)) {
            return Err(duplicate());
        }
    }
    Ok((puts, deleted))
}
