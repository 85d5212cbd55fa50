//! raft-rs messages between members over gRPC (`cairnpb.Peer`): the transport every
//! raft-rs program has to write, as etcd's `rafthttp` is etcd's.
//!
//! [`Transport`] is the sending side. Each peer has a task with a bounded queue and
//! one client stream, reopened across the peer's URLs after 50 ms, the pause doubling
//! up to 1 s while connections fail or the peer ends each stream at once; queued messages go out in batches of up to 256. The raft thread hands
//! over a `Ready`'s messages with [`Transport::send`], which never waits: a slow or
//! dead peer only loses messages, which raft retransmits, and the losses are counted.
//! Each sender remembers since when its connection has been up, which etcd uses to
//! tell a lost connection from a slow leader when a proposal times out.
//!
//! A raft snapshot goes on a call of its own, its data read in chunks from the
//! member's [`Snapshots`] (two ahead at most) and written to a file by the receiving
//! member as it comes; raft's message reaches the receiver's raft loop naming that
//! file ([`received_path`]) once the last chunk is in, and the sender reports the
//! outcome for raft-rs's `report_snapshot`. No side holds a whole snapshot in memory.
//!
//! [`Receiver`] is the receiving side, a tonic service: it refuses batches from
//! another cluster and from removed members, drops messages that do not decode or are
//! oversized, and hands the rest to a callback.
//!
//! [`MembershipService`] answers what members ask each other besides raft messages
//! (the members, a learner's progress, a `HashKV`), over a [`Members`] the member
//! implements; [`fetch_members`], [`ask_progress`] and [`ask_hash`] ask it, and
//! [`serve`] serves the peer services on the peer listeners. [`LeasesService`] and
//! [`forward_renew`]/[`forward_time_to_live`] carry keep-alives and TTL queries to the
//! leader, which alone keeps lease expiry.
//!
//! ```no_run
//! # async fn run(
//! #     step: impl Fn(raft::eraftpb::Message) + Send + Sync + 'static,
//! #     listener: tokio::net::TcpListener,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use std::collections::HashMap;
//! use cairn_api::cairnpb::peer_server::PeerServer;
//!
//! let peers = HashMap::from([(2, vec!["http://10.0.0.2:2380".to_owned()])]);
//! let removed = std::sync::Arc::new(tokio::sync::Notify::new());
//! let transport = cairn_transport::Transport::start(0xc1, 1, &peers, removed, None);
//! // In the raft loop: transport.send(ready.take_messages());
//! let receiver = cairn_transport::Receiver::new(0xc1, 2 << 20, step);
//! let incoming = cairn_net::grpc::plain_incoming(listener);
//! let server = tonic::transport::Server::builder().add_service(PeerServer::new(receiver));
//! server.serve_with_incoming(incoming).await?;
//! # drop(transport);
//! # Ok(())
//! # }
//! ```
//!
//! **Invariant:** `send` never blocks the raft thread; messages to one peer are
//! delivered in the order they were sent, or dropped (and counted), never reordered,
//! but for snapshots, which go on their own call and may arrive after later
//! messages; only messages of this cluster from members not removed reach
//! `deliver`, and a snapshot only once all its data is on the receiver's disk.

mod leases;
mod membership;
mod receiver;
mod sender;
mod snapshot;

pub use leases::{LeaseKeeper, LeasesService, forward_renew, forward_time_to_live};
pub use membership::{Members, MembershipService, ask_hash, ask_progress, serve};
pub use receiver::{MAX_PEER_MESSAGE, Receiver, fetch_members};
pub use sender::Transport;
pub use snapshot::{SnapshotData, Snapshots, received_path};

/// What the transport's calls to peers can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No peer answered: the last one's error.
    #[error("{0}")]
    Unreachable(String),
    /// A peer's answer that does not decode.
    #[error("undecodable {0} from a peer")]
    Undecodable(&'static str),
}
