//! The receiving side: `cairnpb.Peer`'s stream of batches, each message handed on.

use std::sync::Arc;

use cairn_api::cairnpb::SnapshotChunk;
use cairn_api::cairnpb::peer_server::Peer;
use cairn_api::cairnpb::{RaftAck, RaftBatch};
use cairn_net::peer::{PeerTls, connect};
use protobuf::Message as _;
use raft::eraftpb::Message;
use tonic::{Request, Response, Status, Streaming};
use tracing::warn;

use crate::Error;

/// Asks the peers at `urls` for the cluster's ID and members, for a member joining a
/// running cluster.
pub async fn fetch_members(
    urls: &[String],
    tls: Option<&PeerTls>,
) -> Result<(u64, Vec<cairn_api::etcdserverpb::Member>), Error> {
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
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|_| Error::Undecodable("member"))?;
                    return Ok((response.cluster_id, members));
                }
                Err(status) => last_error = Some(Error::Unreachable(format!("{url}: {}", status.message()))),
            },
            Err(error) => last_error = Some(Error::Unreachable(format!("{url}: {error}"))),
        }
    }
    Err(last_error.unwrap_or_else(|| Error::Unreachable("no peer URLs to ask".into())))
}

/// Most bytes of one gRPC message between members (a batch of raft messages, or a
/// chunk of a snapshot): the decoding limit a server of [`Receiver`] needs, with
/// gRPC's overhead on top.
pub const MAX_PEER_MESSAGE: usize = 512 * 1024 * 1024;

type Deliver = Arc<dyn Fn(Message) + Send + Sync>;
type IsRemoved = Arc<dyn Fn(u64) -> bool + Send + Sync>;
type Refused = Arc<dyn Fn(u64) + Send + Sync>;

/// The receiving side, a `cairnpb.Peer` service: hands every message of a batch from
/// this cluster to `deliver` (the raft thread's inbox, which must not block).
///
/// A batch from another cluster ends the stream with `FailedPrecondition`, one from a
/// removed member with `PermissionDenied` (its sender then stops: it was removed).
/// A message that does not decode, or that is larger than `max_message` and not a
/// snapshot, is dropped and reported to `on_refused` with its sender.
#[derive(Clone)]
pub struct Receiver {
    cluster_id: u64,
    max_message: usize,
    deliver: Deliver,
    is_removed: IsRemoved,
    on_refused: Refused,
    /// Called with the sender of each stream opened, once it is let in.
    on_stream: Refused,
    /// Where snapshots are saved as they arrive; none are taken without it.
    snapshot_dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").field("cluster_id", &self.cluster_id).finish_non_exhaustive()
    }
}

impl Receiver {
    /// A receiver for members of `cluster_id` that hands messages to `deliver`, taking
    /// messages other than snapshots of up to `max_message` bytes.
    pub fn new(
        cluster_id: u64,
        max_message: usize,
        deliver: impl Fn(Message) + Send + Sync + 'static,
    ) -> Self {
        Self {
            cluster_id,
            max_message,
            deliver: Arc::new(deliver),
            is_removed: Arc::new(|_| false),
            on_refused: Arc::new(|_| {}),
            on_stream: Arc::new(|_| {}),
            snapshot_dir: None,
        }
    }

    /// Takes snapshots, saving each to a file in `dir` as it arrives: the snapshot
    /// message handed to `deliver` names that file as its data
    /// ([`crate::received_path`]), and whoever restores it removes it.
    #[must_use]
    pub fn snapshots_in(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.snapshot_dir = Some(dir.into());
        self
    }

    /// Refuses the batches of the members for which `is_removed` holds.
    #[must_use]
    pub fn removed(mut self, is_removed: impl Fn(u64) -> bool + Send + Sync + 'static) -> Self {
        self.is_removed = Arc::new(is_removed);
        self
    }

    /// Calls `on_refused` with the sender of every message dropped as undecodable or
    /// oversized (etcd counts them in `etcd_network_peer_received_failures_total`).
    #[must_use]
    pub fn on_refused(mut self, on_refused: impl Fn(u64) + Send + Sync + 'static) -> Self {
        self.on_refused = Arc::new(on_refused);
        self
    }

    /// Calls `on_stream` with the sender of every stream of raft messages opened to
    /// this member, once its first batch passed the checks ([`crate::Transport`]
    /// opens each stream with an empty one): that member is up, and the server wakes
    /// its sender to it with [`crate::Transport::wake`].
    #[must_use]
    pub fn on_stream(mut self, on_stream: impl Fn(u64) + Send + Sync + 'static) -> Self {
        self.on_stream = Arc::new(on_stream);
        self
    }

    fn refused(&self, from: u64) {
        (self.on_refused)(from);
    }

    /// Refuses a sender from another cluster or a removed one.
    fn check_sender(&self, cluster_id: u64, from: u64) -> Result<(), Status> {
        if cluster_id != self.cluster_id {
            return Err(Status::failed_precondition(format!(
                "cluster ID mismatch: this member belongs to cluster {:x}, member {:x} to {:x} \
                 (check --initial-cluster-token and --initial-cluster)",
                self.cluster_id, from, cluster_id
            )));
        }
        if (self.is_removed)(from) {
            return Err(Status::permission_denied(
                "the member has been permanently removed from the cluster",
            ));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Peer for Receiver {
    async fn raft(&self, request: Request<Streaming<RaftBatch>>) -> Result<Response<RaftAck>, Status> {
        let mut batches = request.into_inner();
        let mut opened = false;
        while let Some(batch) = batches.message().await? {
            self.check_sender(batch.cluster_id, batch.from)?;
            if !opened {
                opened = true;
                (self.on_stream)(batch.from);
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
                if message.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot {
                    // A snapshot's data comes on a call of its own, chunk by chunk.
                    warn!(
                        from = format_args!("{:x}", batch.from),
                        "refusing a snapshot sent as a raft message"
                    );
                    self.refused(batch.from);
                    continue;
                }
                if bytes.len() > self.max_message {
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

    async fn snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftAck>, Status> {
        let mut chunks = request.into_inner();
        let first =
            chunks.message().await?.ok_or_else(|| Status::invalid_argument("an empty snapshot stream"))?;
        self.check_sender(first.cluster_id, first.from)?;
        let Some(dir) = &self.snapshot_dir else {
            return Err(Status::unimplemented("this member takes no snapshots"));
        };
        let message = Message::parse_from_bytes(&first.message)
            .ok()
            .filter(|message| {
                message.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot
                    && message.from == first.from
                    && message.get_snapshot().data.is_empty()
            })
            .ok_or_else(|| {
                self.refused(first.from);
                Status::invalid_argument("the snapshot stream does not open with a snapshot message")
            })?;
        let message = crate::snapshot::receive(dir, message, first, &mut chunks).await?;
        (self.deliver)(message);
        Ok(Response::new(RaftAck {}))
    }
}
