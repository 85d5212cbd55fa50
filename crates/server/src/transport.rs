//! The peer transport: raft messages between members over gRPC (`cairnpb.Peer`).
//!
//! Each peer has a sender task with a bounded queue: the raft thread never waits for
//! the network, a slow or dead peer only loses messages (raft retransmits), and
//! dropped messages are counted. Each sender remembers since when its connection has
//! been up, which the proposal gate uses to classify timeouts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_api::cairnpb::peer_client::PeerClient;
use cairn_api::cairnpb::peer_server::Peer;
use cairn_api::cairnpb::{RaftAck, RaftBatch};
use cairn_net::peer::{PeerTls, connect, lazy_channel};
use protobuf::Message as _;
use raft::eraftpb::Message;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

/// Messages queued for one peer before new ones are dropped.
const QUEUE: usize = 4096;
/// Most messages sent in one batch.
const BATCH: usize = 256;

/// Sending side of the transport, shared with the raft thread.
#[derive(Debug)]
pub(crate) struct Transport {
    cluster_id: u64,
    member_id: u64,
    peers: Mutex<HashMap<u64, PeerSender>>,
    /// The runtime sender tasks run on (peers are added from the raft thread).
    runtime: tokio::runtime::Handle,
    /// Notified when a peer says this member was removed from the cluster.
    removed: Arc<tokio::sync::Notify>,
    /// TLS for `https://` peer URLs.
    tls: Option<PeerTls>,
    /// Messages dropped because a peer's queue was full.
    pub(crate) dropped: AtomicU64,
}

#[derive(Debug)]
struct PeerSender {
    queue: mpsc::Sender<Message>,
    connected_since: Arc<Mutex<Option<Instant>>>,
    urls: Vec<String>,
    /// Channels for calls to the peer (lease forwarding), one per URL, made on first
    /// use; they connect lazily and reconnect by themselves.
    channels: Vec<tonic::transport::Channel>,
}

impl Transport {
    /// Starts a sender task for each of `peers` (member ID to peer URLs). Must be
    /// called on the tokio runtime.
    pub(crate) fn start(
        cluster_id: u64,
        member_id: u64,
        peers: &HashMap<u64, Vec<String>>,
        removed: Arc<tokio::sync::Notify>,
        tls: Option<PeerTls>,
    ) -> Arc<Self> {
        let transport = Arc::new(Self {
            cluster_id,
            member_id,
            peers: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::current(),
            removed,
            tls,
            dropped: AtomicU64::new(0),
        });
        for (&id, urls) in peers {
            transport.add_peer(id, urls.clone());
        }
        transport
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, PeerSender>> {
        self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts sending to a new member (nothing for this member or a known one).
    pub(crate) fn add_peer(&self, id: u64, urls: Vec<String>) {
        if id == self.member_id || urls.is_empty() {
            return;
        }
        let mut peers = self.lock();
        if peers.contains_key(&id) {
            return;
        }
        let (queue, messages) = mpsc::channel(QUEUE);
        let connected_since = Arc::new(Mutex::new(None));
        let task = send_loop(
            (self.cluster_id, self.member_id, id),
            urls.clone(),
            messages,
            Arc::clone(&connected_since),
            Arc::clone(&self.removed),
            self.tls.clone(),
        );
        self.runtime.spawn(task);
        peers.insert(id, PeerSender { queue, connected_since, urls, channels: Vec::new() });
    }

    /// Stops sending to a removed member.
    pub(crate) fn remove_peer(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Queues `messages` for their peers without waiting.
    pub(crate) fn send(&self, messages: Vec<Message>) {
        let peers = self.lock();
        for message in messages {
            match peers.get(&message.to) {
                Some(peer) => {
                    if peer.queue.try_send(message).is_err() {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                None => debug!(to = message.to, "no route to member"),
            }
        }
    }

    /// Every peer, and whether the connection to it is up.
    pub(crate) fn active_peers(&self) -> Vec<(u64, bool)> {
        let peers = self.lock();
        let up = |peer: &PeerSender| {
            peer.connected_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_some()
        };
        peers.iter().map(|(&id, peer)| (id, up(peer))).collect()
    }

    /// Since when the connection to `peer` has been up.
    pub(crate) fn connected_since(&self, peer: u64) -> Option<Instant> {
        let peers = self.lock();
        let peer = peers.get(&peer)?;
        *peer.connected_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn member_id(&self) -> u64 {
        self.member_id
    }

    /// Channels to `peer`, one per peer URL, for calls other than raft messages;
    /// empty for an unknown peer.
    pub(crate) fn channels(&self, peer: u64) -> Vec<tonic::transport::Channel> {
        let mut peers = self.lock();
        let Some(sender) = peers.get_mut(&peer) else { return Vec::new() };
        if sender.channels.is_empty() {
            let _runtime = self.runtime.enter();
            sender.channels = sender
                .urls
                .iter()
                .filter_map(|url| match lazy_channel(url, self.tls.as_ref()) {
                    Ok(channel) => Some(channel),
                    Err(error) => {
                        warn!(peer = format_args!("{peer:x}"), %url, %error, "bad peer URL");
                        None
                    }
                })
                .collect();
        }
        sender.channels.clone()
    }
}

/// Keeps a stream open to one peer, reconnecting with backoff, and sends what is
/// queued in batches.
async fn send_loop(
    (cluster_id, from, to): (u64, u64, u64),
    urls: Vec<String>,
    mut messages: mpsc::Receiver<Message>,
    connected_since: Arc<Mutex<Option<Instant>>>,
    removed: Arc<tokio::sync::Notify>,
    tls: Option<PeerTls>,
) {
    let set_connected = |value: Option<Instant>| {
        *connected_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = value;
    };
    let mut backoff = Duration::from_millis(50);
    let mut attempt = 0usize;
    loop {
        let url = &urls[attempt % urls.len()];
        attempt += 1;
        let client = match connect(url, tls.as_ref()).await {
            Ok(channel) => PeerClient::new(channel),
            Err(error) => {
                debug!(peer = format_args!("{to:x}"), %url, %error, "cannot reach peer");
                set_connected(None);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        set_connected(Some(Instant::now()));
        let mut client = client.max_encoding_message_size(usize::MAX);
        let (batches, outgoing) = mpsc::channel::<RaftBatch>(16);
        let stream = futures::stream::unfold(outgoing, |mut outgoing| async move {
            outgoing.recv().await.map(|batch| (batch, outgoing))
        });
        let call = tokio::spawn(async move { client.raft(Request::new(stream)).await });
        // Feed the stream until it breaks.
        loop {
            let Some(first) = messages.recv().await else { return };
            let mut encoded = vec![first.write_to_bytes().unwrap_or_default()];
            while encoded.len() < BATCH {
                match messages.try_recv() {
                    Ok(message) => encoded.push(message.write_to_bytes().unwrap_or_default()),
                    Err(_) => break,
                }
            }
            let batch = RaftBatch { cluster_id, from, messages: encoded };
            if batches.send(batch).await.is_err() {
                break;
            }
        }
        if let Ok(Err(status)) = call.await {
            warn!(peer = format_args!("{to:x}"), error = %status.message(), "peer stream failed");
            if status.code() == tonic::Code::PermissionDenied {
                removed.notify_one();
                return;
            }
        }
        set_connected(None);
        tokio::time::sleep(backoff).await;
    }
}

/// Everything served on the peer port.
#[derive(Clone)]
pub(crate) struct PeerServices {
    pub(crate) peer: PeerService,
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

/// Asks the peers at `urls` for the cluster's ID and members, for a member joining a
/// running cluster.
pub(crate) async fn fetch_members(
    urls: &[String],
    tls: Option<&PeerTls>,
) -> anyhow::Result<(u64, Vec<cairn_api::etcdserverpb::Member>)> {
    use prost::Message as _;
    let mut last_error = None;
    for url in urls {
        match connect(url, tls).await.map(cairn_api::cairnpb::membership_client::MembershipClient::new) {
            Ok(mut client) => match client.members(cairn_api::cairnpb::MembersRequest {}).await {
                Ok(response) => {
                    let response = response.into_inner();
                    let members = response
                        .members
                        .iter()
                        .map(|bytes| cairn_api::etcdserverpb::Member::decode(bytes.as_slice()))
                        .collect::<Result<Vec<_>, _>>()?;
                    return Ok((response.cluster_id, members));
                }
                Err(status) => last_error = Some(anyhow::anyhow!("{url}: {}", status.message())),
            },
            Err(error) => last_error = Some(anyhow::anyhow!("{url}: {error}")),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no peer URLs to ask")))
}

/// Most bytes of a raft snapshot message (etcd takes snapshots of up to 512 MiB).
pub(crate) const MAX_SNAPSHOT_MESSAGE: usize = 512 * 1024 * 1024;

/// The receiving side: hands every message to the raft thread.
#[derive(Clone)]
pub(crate) struct PeerService {
    pub(crate) cluster_id: u64,
    pub(crate) deliver: Arc<dyn Fn(Message) + Send + Sync>,
    /// Whether a member ID was removed from the cluster.
    pub(crate) is_removed: Arc<dyn Fn(u64) -> bool + Send + Sync>,
    /// Most bytes of a raft message other than a snapshot: an append of up to
    /// raft's message size plus one entry of the largest request.
    pub(crate) max_message: usize,
    /// `etcd_network_peer_received_failures_total`, by sending member.
    pub(crate) received_failures: opentelemetry::metrics::Counter<u64>,
}

impl PeerService {
    fn refused(&self, from: u64) {
        let from = opentelemetry::KeyValue::new("From", format!("{from:x}"));
        self.received_failures.add(1, &[from]);
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft(&self, request: Request<Streaming<RaftBatch>>) -> Result<Response<RaftAck>, Status> {
        let mut batches = request.into_inner();
        while let Some(batch) = batches.message().await? {
            if batch.cluster_id != self.cluster_id {
                return Err(Status::failed_precondition(format!(
                    "cluster ID mismatch: this member belongs to cluster {:x}, member {:x} to {:x} \
                     (check --initial-cluster-token and --initial-cluster)",
                    self.cluster_id, batch.from, batch.cluster_id
                )));
            }
            if (self.is_removed)(batch.from) {
                return Err(Status::permission_denied(
                    "the member has been permanently removed from the cluster",
                ));
            }
            for bytes in batch.messages {
                let message = match Message::parse_from_bytes(&bytes) {
                    Ok(message) => message,
                    Err(error) => {
                        warn!(from = format_args!("{:x}", batch.from), %error, "undecodable raft message");
                        self.refused(batch.from);
                        continue;
                    }
                };
                let snapshot = message.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot;
                if !snapshot && bytes.len() > self.max_message {
                    // Nothing a member sends is this large: refuse it rather than let
                    // anyone who reaches the peer port make this member hold it.
                    warn!(
                        from = format_args!("{:x}", batch.from),
                        bytes = bytes.len(),
                        limit = self.max_message,
                        "refusing an oversized raft message"
                    );
                    self.refused(batch.from);
                    continue;
                }
                (self.deliver)(message);
            }
        }
        Ok(Response::new(RaftAck {}))
    }
}
