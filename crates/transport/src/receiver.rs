//! The receiving side: `cairnpb.Peer`'s stream of batches, each message handed on.

use std::sync::Arc;

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

/// Most bytes of a raft snapshot message (etcd takes snapshots of up to 512 MiB):
/// the decoding limit a server of [`Receiver`] needs, with gRPC's overhead on top.
pub const MAX_SNAPSHOT_MESSAGE: usize = 512 * 1024 * 1024;

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
        }
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

    fn refused(&self, from: u64) {
        (self.on_refused)(from);
    }
}

#[tonic::async_trait]
impl Peer for Receiver {
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
