//! etcd's `v3lock` and `v3election` services: locks and elections held as keys under
//! a lease, built on the KV and Lease services exactly as etcd builds them on its
//! `concurrency` package, with the caller's credentials.
//!
//! A lock on `name` is the key `name/<lease in hex>`; the holder is the key under
//! `name/` created first, and a waiter waits until every key created before its own is
//! deleted (released, or its lease expired). An election is the same, with the value
//! of the first key as the leader's. A request made with lease 0 gets a lease of its
//! own, 60 seconds, never renewed (etcd's orphaned session). A caller that goes away
//! while it waits takes its key with it, as etcd's does.

use cairn_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_api::etcdserverpb::kv_server::Kv;
use cairn_api::etcdserverpb::lease_server::Lease;
use cairn_api::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_api::etcdserverpb::request_op::Request as Op;
use cairn_api::etcdserverpb::response_op::Response as OpResponse;
use cairn_api::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RequestOp, ResponseHeader,
    TxnRequest, TxnResponse,
};
use cairn_api::mvccpb::KeyValue;
use cairn_api::mvccpb::event::EventType;
use cairn_api::v3electionpb::election_server::Election;
use cairn_api::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use cairn_api::v3lockpb::lock_server::Lock;
use cairn_api::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use cairn_auth::prefix_end;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::Service;

/// How long a waiter goes without looking again when it hears of no change.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// The TTL of the lease a request with lease 0 gets (etcd's session default).
const SESSION_TTL: i64 = 60;

type ObserveStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<LeaderResponse, Status>> + Send + 'static>>;

fn with_metadata<T>(metadata: &MetadataMap, message: T) -> Request<T> {
    let mut request = Request::new(message);
    *request.metadata_mut() = metadata.clone();
    request
}

fn op(request: Op) -> RequestOp {
    RequestOp { request: Some(request) }
}

fn created_at(key: &[u8], revision: i64) -> Compare {
    Compare {
        key: key.to_vec(),
        target: CompareTarget::Create as i32,
        result: CompareResult::Equal as i32,
        target_union: Some(TargetUnion::CreateRevision(revision)),
        ..Compare::default()
    }
}

/// The first (or last) key created under `prefix`, at most at `max_create` when not 0.
fn top(prefix: &[u8], order: SortOrder, max_create: i64) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        sort_order: order as i32,
        sort_target: SortTarget::Create as i32,
        limit: 1,
        max_create_revision: max_create,
        ..RangeRequest::default()
    }
}

fn range_kvs(response: &TxnResponse, at: usize) -> Vec<KeyValue> {
    match response.responses.get(at).and_then(|response| response.response.as_ref()) {
        Some(OpResponse::ResponseRange(range)) => range.kvs.clone(),
        _ => Vec::new(),
    }
}

/// A key that goes away (deleted through raft) unless disarmed: the lock or
/// candidacy of a caller that stopped waiting.
struct Claim {
    service: Service,
    metadata: MetadataMap,
    key: Vec<u8>,
    armed: bool,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.armed {
            let (service, metadata, key) = (self.service.clone(), self.metadata.clone(), self.key.clone());
            tokio::spawn(async move {
                let delete = DeleteRangeRequest { key, ..DeleteRangeRequest::default() };
                let _ = Kv::delete_range(&service, with_metadata(&metadata, delete)).await;
            });
        }
    }
}

impl Service {
    async fn txn(&self, metadata: &MetadataMap, txn: TxnRequest) -> Result<TxnResponse, Status> {
        Ok(Kv::txn(self, with_metadata(metadata, txn)).await?.into_inner())
    }

    /// The lease to hold a key under: `lease`, or a new one of [`SESSION_TTL`].
    async fn session_lease(&self, metadata: &MetadataMap, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let grant = LeaseGrantRequest { ttl: SESSION_TTL, id: 0 };
        Ok(Lease::lease_grant(self, with_metadata(metadata, grant)).await?.into_inner().id)
    }

    /// The key under `prefix` created first, and the header of the read.
    async fn first_created(
        &self,
        metadata: &MetadataMap,
        prefix: &[u8],
    ) -> Result<(Option<KeyValue>, Option<ResponseHeader>), Status> {
        let range = top(prefix, SortOrder::Ascend, 0);
        let response = Kv::range(self, with_metadata(metadata, range)).await?.into_inner();
        Ok((response.kvs.into_iter().next(), response.header))
    }

    /// etcd's `waitDeletes`: waits until no key under `prefix` created at or before
    /// `max_create` is left, and answers the header of the read that saw none.
    async fn wait_deletes(
        &self,
        metadata: &MetadataMap,
        prefix: &[u8],
        max_create: i64,
    ) -> Result<Option<ResponseHeader>, Status> {
        // Subscribed before each look, so that no deletion falls between the two.
        let mut feed = self.hub.subscribe();
        loop {
            let range = top(prefix, SortOrder::Descend, max_create);
            let response = Kv::range(self, with_metadata(metadata, range)).await?.into_inner();
            let Some(last) = response.kvs.into_iter().next() else { return Ok(response.header) };
            loop {
                // A snapshot from the leader replaces the state without events: look
                // again now and then even when nothing is heard.
                let Ok(received) = tokio::time::timeout(RECHECK, feed.recv()).await else { break };
                match received {
                    Ok(batch) => {
                        let deleted = batch.events.iter().any(|event| {
                            event.r#type == EventType::Delete as i32
                                && event.kv.as_ref().is_some_and(|kv| kv.key == last.key)
                        });
                        if deleted {
                            break;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        return Err(Status::unavailable("etcdserver: server stopped"));
                    }
                }
            }
        }
    }
}

#[tonic::async_trait]
impl Lock for Service {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let metadata = request.metadata().clone();
        let LockRequest { name, lease } = request.into_inner();
        let lease = self.session_lease(&metadata, lease).await?;
        let mut prefix = name;
        prefix.push(b'/');
        let key = [prefix.as_slice(), format!("{lease:x}").as_bytes()].concat();
        let owner = op(Op::RequestRange(top(&prefix, SortOrder::Ascend, 0)));
        let put = PutRequest { key: key.clone(), lease, ..PutRequest::default() };
        let get = RangeRequest { key: key.clone(), ..RangeRequest::default() };
        let txn = TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![op(Op::RequestPut(put)), owner.clone()],
            failure: vec![op(Op::RequestRange(get.clone())), owner],
        };
        let response = self.txn(&metadata, txn).await?;
        let mut header = response.header;
        let mine = if response.succeeded {
            header.as_ref().map_or(0, |header| header.revision)
        } else {
            range_kvs(&response, 0).first().map_or(0, |kv| kv.create_revision)
        };
        let holder = range_kvs(&response, 1);
        if holder.first().is_some_and(|kv| kv.create_revision != mine) {
            let mut claim =
                Claim { service: self.clone(), metadata: metadata.clone(), key: key.clone(), armed: true };
            header = self.wait_deletes(&metadata, &prefix, mine - 1).await?;
            // The key must still be there: its lease may have expired meanwhile.
            let still = Kv::range(self, with_metadata(&metadata, get)).await?.into_inner();
            if still.kvs.is_empty() {
                claim.armed = false;
                return Err(Status::unknown("session expired"));
            }
            claim.armed = false;
        }
        Ok(Response::new(LockResponse { header, key }))
    }

    async fn unlock(&self, request: Request<UnlockRequest>) -> Result<Response<UnlockResponse>, Status> {
        let metadata = request.metadata().clone();
        let delete = DeleteRangeRequest { key: request.into_inner().key, ..DeleteRangeRequest::default() };
        let response = Kv::delete_range(self, with_metadata(&metadata, delete)).await?.into_inner();
        Ok(Response::new(UnlockResponse { header: response.header }))
    }
}

fn missing_leader() -> Status {
    Status::unknown("\"leader\" field must be provided")
}

#[tonic::async_trait]
impl Election for Service {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let metadata = request.metadata().clone();
        let CampaignRequest { name, lease, value } = request.into_inner();
        let lease = self.session_lease(&metadata, lease).await?;
        let mut prefix = name.clone();
        prefix.push(b'/');
        let key = [prefix.as_slice(), format!("{lease:x}").as_bytes()].concat();
        let put = PutRequest { key: key.clone(), value: value.clone(), lease, ..PutRequest::default() };
        let txn = TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![op(Op::RequestPut(put.clone()))],
            failure: vec![op(Op::RequestRange(RangeRequest { key: key.clone(), ..RangeRequest::default() }))],
        };
        let response = self.txn(&metadata, txn).await?;
        let mut claim =
            Claim { service: self.clone(), metadata: metadata.clone(), key: key.clone(), armed: true };
        let mut rev = response.header.as_ref().map_or(0, |header| header.revision);
        if !response.succeeded {
            let existing = range_kvs(&response, 0);
            let Some(kv) = existing.first() else { return Err(Status::unknown("election: not leader")) };
            rev = kv.create_revision;
            if kv.value != value {
                let proclaim = TxnRequest {
                    compare: vec![created_at(&key, rev)],
                    success: vec![op(Op::RequestPut(put))],
                    failure: Vec::new(),
                };
                if !self.txn(&metadata, proclaim).await?.succeeded {
                    return Err(Status::unknown("election: not leader"));
                }
            }
        }
        // As etcd: an error keeps the candidacy; only a caller that goes away resigns.
        let waited = self.wait_deletes(&metadata, &prefix, rev - 1).await;
        claim.armed = false;
        waited?;
        let leader = LeaderKey { name, key, rev, lease };
        Ok(Response::new(CampaignResponse { header: response.header, leader: Some(leader) }))
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let metadata = request.metadata().clone();
        let ProclaimRequest { leader, value } = request.into_inner();
        let leader = leader.ok_or_else(missing_leader)?;
        let put = PutRequest { key: leader.key.clone(), value, lease: leader.lease, ..PutRequest::default() };
        let txn = TxnRequest {
            compare: vec![created_at(&leader.key, leader.rev)],
            success: vec![op(Op::RequestPut(put))],
            failure: Vec::new(),
        };
        let response = self.txn(&metadata, txn).await?;
        if !response.succeeded {
            return Err(Status::unknown("election: not leader"));
        }
        Ok(Response::new(ProclaimResponse { header: response.header }))
    }

    async fn leader(&self, request: Request<LeaderRequest>) -> Result<Response<LeaderResponse>, Status> {
        let metadata = request.metadata().clone();
        let mut prefix = request.into_inner().name;
        prefix.push(b'/');
        match self.first_created(&metadata, &prefix).await? {
            (Some(kv), header) => Ok(Response::new(LeaderResponse { header, kv: Some(kv) })),
            (None, _) => Err(Status::unknown("election: no leader")),
        }
    }

    async fn resign(&self, request: Request<ResignRequest>) -> Result<Response<ResignResponse>, Status> {
        let metadata = request.metadata().clone();
        let leader = request.into_inner().leader.ok_or_else(missing_leader)?;
        let delete = DeleteRangeRequest { key: leader.key.clone(), ..DeleteRangeRequest::default() };
        let txn = TxnRequest {
            compare: vec![created_at(&leader.key, leader.rev)],
            success: vec![op(Op::RequestDeleteRange(delete))],
            failure: Vec::new(),
        };
        let response = self.txn(&metadata, txn).await?;
        Ok(Response::new(ResignResponse { header: response.header }))
    }

    /// The leader now (once there is one), then again each time it changes or
    /// proclaims a new value, until the caller goes away.
    async fn observe(&self, request: Request<LeaderRequest>) -> Result<Response<ObserveStream>, Status> {
        let metadata = request.metadata().clone();
        let mut prefix = request.into_inner().name;
        prefix.push(b'/');
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        let service = self.clone();
        tokio::spawn(async move {
            let mut feed = service.hub.subscribe();
            let mut last: Option<(Vec<u8>, i64)> = None;
            loop {
                match service.first_created(&metadata, &prefix).await {
                    Ok((Some(kv), header)) => {
                        let seen = Some((kv.key.clone(), kv.mod_revision));
                        if seen != last {
                            last = seen;
                            if sender.send(Ok(LeaderResponse { header, kv: Some(kv) })).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok((None, _)) => {}
                    Err(status) => {
                        let _ = sender.send(Err(status)).await;
                        return;
                    }
                }
                // Look again after a change under the prefix (or after falling behind).
                loop {
                    tokio::select! {
                        () = sender.closed() => return,
                        () = tokio::time::sleep(RECHECK) => break,
                        batch = feed.recv() => match batch {
                            Ok(batch) if !batch.events.iter().any(|event| {
                                event.kv.as_ref().is_some_and(|kv| kv.key.starts_with(&prefix))
                            }) => {}
                            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                        },
                    }
                }
            }
        });
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
