//! etcd's `v3lock` and `v3election` gRPC services, built on the KV, Lease and Watch
//! services of any etcd v3 endpoint (a remote etcd, or a server's own services through
//! an in-process channel) exactly as etcd builds them on its `concurrency` package,
//! with each caller's token (and `hasleader`) on every call made for it.
//!
//! A lock on `name` is the key `name/<lease in hex>`; the holder is the key under
//! `name/` created first, and a waiter waits until every key created before its own is
//! deleted (released, or its lease expired): it watches the newest of them for its
//! deletion, then looks again, as etcd's `waitDeletes`. An election is the same, with
//! the value of the first key as the leader's. A request made with lease 0 gets a
//! lease of its own, 60 seconds, never renewed (etcd's orphaned session). A caller that
//! goes away while it waits takes its key with it, as etcd's does.
//!
//! **Invariant:** a lock is granted, or a campaign won, only once every key created
//! before the caller's under the name has been seen deleted, and the caller's own key
//! still exists; a waiter that goes away leaves no key behind.

use std::pin::Pin;
use std::time::Duration;

use cairn_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_api::etcdserverpb::kv_client::KvClient;
use cairn_api::etcdserverpb::lease_client::LeaseClient;
use cairn_api::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_api::etcdserverpb::request_op::Request as Op;
use cairn_api::etcdserverpb::response_op::Response as OpResponse;
use cairn_api::etcdserverpb::watch_client::WatchClient;
use cairn_api::etcdserverpb::watch_request::RequestUnion;
use cairn_api::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RequestOp, ResponseHeader,
    TxnRequest, TxnResponse, WatchCreateRequest, WatchRequest,
};
use cairn_api::mvccpb::KeyValue;
use cairn_api::mvccpb::event::EventType;
use cairn_api::v3electionpb::election_server::{Election, ElectionServer};
use cairn_api::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use cairn_api::v3lockpb::lock_server::{Lock, LockServer};
use cairn_api::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use futures::StreamExt as _;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// How long a waiter watches without hearing of the deletion before it looks again
/// (a member that restores a snapshot from its leader may send no event for it).
const RECHECK: Duration = Duration::from_secs(1);

/// How long a waiter pauses before looking again after the endpoint was unavailable.
const UNAVAILABLE_RETRY: Duration = Duration::from_millis(100);

/// Whether `status` is a passing unavailability (a leader change, an election) that a
/// waiter rides out, keeping its key and its place: unless its caller asked to fail
/// without a leader (`hasleader`).
fn passing(metadata: &MetadataMap, status: &Status) -> bool {
    status.code() == tonic::Code::Unavailable && metadata.get("hasleader").is_none_or(|v| v != "true")
}

/// The TTL of the lease a request with lease 0 gets (etcd's session default).
const SESSION_TTL: i64 = 60;

/// Both services on one endpoint: `Concurrency::new(channel)`, then
/// [`Concurrency::lock_server`] and [`Concurrency::election_server`] on a tonic router.
#[derive(Debug, Clone)]
pub struct Concurrency {
    channel: Channel,
}

impl Concurrency {
    /// The services, calling the KV, Lease and Watch services behind `channel`.
    pub fn new(channel: Channel) -> Self {
        Self { channel }
    }

    /// `v3lockpb.Lock`, ready to add to a router.
    pub fn lock_server(&self) -> LockServer<Self> {
        LockServer::new(self.clone())
    }

    /// `v3electionpb.Election`, ready to add to a router.
    pub fn election_server(&self) -> ElectionServer<Self> {
        ElectionServer::new(self.clone())
    }

    /// A KV client taking answers of any size: the endpoint enforces its own limits.
    fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone()).max_decoding_message_size(usize::MAX)
    }

    async fn txn(&self, metadata: &MetadataMap, txn: TxnRequest) -> Result<TxnResponse, Status> {
        Ok(self.kv().txn(with_metadata(metadata, txn)).await?.into_inner())
    }

    async fn range(
        &self,
        metadata: &MetadataMap,
        range: RangeRequest,
    ) -> Result<cairn_api::etcdserverpb::RangeResponse, Status> {
        Ok(self.kv().range(with_metadata(metadata, range)).await?.into_inner())
    }

    async fn delete(
        &self,
        metadata: &MetadataMap,
        key: Vec<u8>,
    ) -> Result<cairn_api::etcdserverpb::DeleteRangeResponse, Status> {
        let delete = DeleteRangeRequest { key, ..DeleteRangeRequest::default() };
        Ok(self.kv().delete_range(with_metadata(metadata, delete)).await?.into_inner())
    }

    /// The lease to hold a key under: `lease`, or a new one of [`SESSION_TTL`].
    async fn session_lease(&self, metadata: &MetadataMap, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let grant = LeaseGrantRequest { ttl: SESSION_TTL, id: 0 };
        let client = &mut LeaseClient::new(self.channel.clone()).max_decoding_message_size(usize::MAX);
        Ok(client.lease_grant(with_metadata(metadata, grant)).await?.into_inner().id)
    }

    /// The key under `prefix` created first, and the header of the read.
    async fn first_created(
        &self,
        metadata: &MetadataMap,
        prefix: &[u8],
    ) -> Result<(Option<KeyValue>, Option<ResponseHeader>), Status> {
        let response = self.range(metadata, top(prefix, SortOrder::Ascend, 0)).await?;
        Ok((response.kvs.into_iter().next(), response.header))
    }

    /// A watch of `key` (with `range_end`) from `revision` on: the stream of its
    /// events, ended when dropped.
    async fn watch(
        &self,
        metadata: &MetadataMap,
        key: Vec<u8>,
        range_end: Vec<u8>,
        revision: i64,
    ) -> Result<tonic::Streaming<cairn_api::etcdserverpb::WatchResponse>, Status> {
        let create = WatchCreateRequest { key, range_end, start_revision: revision, ..Default::default() };
        let first = WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) };
        // The request side stays open as long as the stream is read.
        let requests = futures::stream::iter([first]).chain(futures::stream::pending());
        let client = &mut WatchClient::new(self.channel.clone()).max_decoding_message_size(usize::MAX);
        Ok(client.watch(with_metadata(metadata, requests)).await?.into_inner())
    }

    /// etcd's `waitDeletes`: waits until no key under `prefix` created at or before
    /// `max_create` is left, and answers the header of the read that saw none.
    async fn wait_deletes(
        &self,
        metadata: &MetadataMap,
        prefix: &[u8],
        max_create: i64,
    ) -> Result<Option<ResponseHeader>, Status> {
        loop {
            let response = match self.range(metadata, top(prefix, SortOrder::Descend, max_create)).await {
                Err(status) if passing(metadata, &status) => {
                    tokio::time::sleep(UNAVAILABLE_RETRY).await;
                    continue;
                }
                response => response?,
            };
            let Some(last) = response.kvs.into_iter().next() else { return Ok(response.header) };
            let from = response.header.as_ref().map_or(0, |header| header.revision);
            let mut events = match self.watch(metadata, last.key.clone(), Vec::new(), from).await {
                Err(status) if passing(metadata, &status) => {
                    tokio::time::sleep(UNAVAILABLE_RETRY).await;
                    continue;
                }
                events => events?,
            };
            // Until the deletion is seen, or a compaction cancels the watch, or a
            // while passes without either: then look again. Any other cancellation
            // ends the wait with its reason, as etcd's `waitDelete`.
            let seen = tokio::time::timeout(RECHECK, async {
                loop {
                    match events.message().await? {
                        Some(response) if response.canceled && response.compact_revision == 0 => {
                            return Err(Status::unknown(response.cancel_reason));
                        }
                        Some(response)
                            if response.canceled
                                || response.events.iter().any(|e| e.r#type == EventType::Delete as i32) =>
                        {
                            return Ok(());
                        }
                        Some(_) => {}
                        None => return Err(Status::unknown("lost watcher waiting for delete")),
                    }
                }
            })
            .await;
            match seen {
                Ok(Err(status)) if passing(metadata, &status) => tokio::time::sleep(UNAVAILABLE_RETRY).await,
                Ok(Err(status)) => return Err(status),
                _ => {}
            }
        }
    }
}

type ObserveStream = Pin<Box<dyn futures::Stream<Item = Result<LeaderResponse, Status>> + Send + 'static>>;

/// The caller's metadata that its calls carry on: who it is (`token`,
/// `authorization`) and whether it requires a leader (`hasleader`). Its deadline and
/// the rest stay with the call it made.
const FORWARDED: [&str; 3] = ["token", "authorization", "hasleader"];

fn with_metadata<T>(metadata: &MetadataMap, message: T) -> Request<T> {
    let mut request = Request::new(message);
    for key in FORWARDED {
        if let Some(value) = metadata.get(key) {
            request.metadata_mut().insert(key, value.clone());
        }
    }
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

/// The end of the range of every key starting with `prefix` (etcd's `GetPrefixRangeEnd`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
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

/// `name/`, under which each holder or candidate has its key.
fn prefix_of(mut name: Vec<u8>) -> Vec<u8> {
    name.push(b'/');
    name
}

/// A key that goes away unless disarmed: the lock or candidacy of a caller that
/// stopped waiting.
struct Claim {
    service: Concurrency,
    metadata: MetadataMap,
    key: Vec<u8>,
    armed: bool,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.armed {
            let (service, metadata, key) = (self.service.clone(), self.metadata.clone(), self.key.clone());
            tokio::spawn(async move {
                let _ = service.delete(&metadata, key).await;
            });
        }
    }
}

#[tonic::async_trait]
impl Lock for Concurrency {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let metadata = request.metadata().clone();
        let LockRequest { name, lease } = request.into_inner();
        let lease = self.session_lease(&metadata, lease).await?;
        let prefix = prefix_of(name);
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
            let still = self.range(&metadata, get).await?;
            claim.armed = false;
            if still.kvs.is_empty() {
                return Err(Status::unknown("session expired"));
            }
        }
        Ok(Response::new(LockResponse { header, key }))
    }

    async fn unlock(&self, request: Request<UnlockRequest>) -> Result<Response<UnlockResponse>, Status> {
        let metadata = request.metadata().clone();
        let response = self.delete(&metadata, request.into_inner().key).await?;
        Ok(Response::new(UnlockResponse { header: response.header }))
    }
}

fn missing_leader() -> Status {
    Status::unknown("\"leader\" field must be provided")
}

fn not_leader() -> Status {
    Status::unknown("election: not leader")
}

#[tonic::async_trait]
impl Election for Concurrency {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let metadata = request.metadata().clone();
        let CampaignRequest { name, lease, value } = request.into_inner();
        let lease = self.session_lease(&metadata, lease).await?;
        let prefix = prefix_of(name.clone());
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
            let Some(kv) = existing.first() else { return Err(not_leader()) };
            rev = kv.create_revision;
            if kv.value != value {
                let proclaim = TxnRequest {
                    compare: vec![created_at(&key, rev)],
                    success: vec![op(Op::RequestPut(put))],
                    failure: Vec::new(),
                };
                if !self.txn(&metadata, proclaim).await?.succeeded {
                    return Err(not_leader());
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
            return Err(not_leader());
        }
        Ok(Response::new(ProclaimResponse { header: response.header }))
    }

    async fn leader(&self, request: Request<LeaderRequest>) -> Result<Response<LeaderResponse>, Status> {
        let metadata = request.metadata().clone();
        let prefix = prefix_of(request.into_inner().name);
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
        let prefix = prefix_of(request.into_inner().name);
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        let service = self.clone();
        tokio::spawn(async move {
            let mut last: Option<(Vec<u8>, i64)> = None;
            loop {
                let from = match service.first_created(&metadata, &prefix).await {
                    Ok((leader, header)) => {
                        if let Some(kv) = leader {
                            let seen = Some((kv.key.clone(), kv.mod_revision));
                            if seen != last {
                                last = seen;
                                let answer = LeaderResponse { header, kv: Some(kv) };
                                if sender.send(Ok(answer)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        header.map_or(0, |header| header.revision + 1)
                    }
                    Err(status) => {
                        let _ = sender.send(Err(status)).await;
                        return;
                    }
                };
                // Look again after a change under the prefix, or a while without one.
                let mut events =
                    match service.watch(&metadata, prefix.clone(), prefix_end(&prefix), from).await {
                        Ok(events) => events,
                        Err(status) => {
                            let _ = sender.send(Err(status)).await;
                            return;
                        }
                    };
                tokio::select! {
                    () = sender.closed() => return,
                    () = tokio::time::sleep(RECHECK) => {}
                    ended = async {
                        loop {
                            match events.message().await {
                                Ok(Some(response)) if response.canceled && response.compact_revision == 0 => {
                                    return Some(Status::unknown(response.cancel_reason));
                                }
                                Ok(Some(response)) if response.canceled || !response.events.is_empty() => {
                                    return None;
                                }
                                Ok(Some(_)) => {}
                                Ok(None) => return Some(Status::unknown("lost watcher observing the leader")),
                                Err(status) => return Some(status),
                            }
                        }
                    } => if let Some(status) = ended {
                        let _ = sender.send(Err(status)).await;
                        return;
                    },
                }
            }
        });
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_are_etcds() {
        assert_eq!(prefix_end(b"lock/"), b"lock0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), [0]);
    }
}
