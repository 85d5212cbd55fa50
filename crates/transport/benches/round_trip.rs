//! One raft message to a peer and its answer back, over loopback: what the transport
//! adds to each round trip between a leader and a follower (a write on three
//! members takes one).
//!
//! Run with `cargo bench -p cairn-transport --bench round_trip`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use cairn_api::cairnpb::peer_server::PeerServer;
use cairn_transport::{Receiver, Transport};
use criterion::{Criterion, criterion_group, criterion_main};
use raft::eraftpb::{Message, MessageType};

const CLUSTER: u64 = 0xc1;

fn message(kind: MessageType, from: u64, to: u64, commit: u64) -> Message {
    let mut message = Message::default();
    message.set_msg_type(kind);
    (message.from, message.to, message.commit) = (from, to, commit);
    message
}

async fn serve(receiver: Receiver) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder().add_service(PeerServer::new(receiver));
    tokio::spawn(server.serve_with_incoming(cairn_net::grpc::plain_incoming(listener)));
    addr
}

fn round_trip(c: &mut Criterion) {
    // Two workers, as the server runs on this machine kind.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (answers, answered) = std::sync::mpsc::channel();
    let leader = runtime.block_on(async {
        // Member 1 hears answers; member 2 answers each heartbeat at once, as a
        // follower's raft loop would.
        let one = serve(Receiver::new(CLUSTER, 1 << 20, move |message| answers.send(message).unwrap())).await;
        let peers = HashMap::from([(1, vec![format!("http://{one}")])]);
        let follower = Transport::start(CLUSTER, 2, &peers, Arc::new(tokio::sync::Notify::new()), None);
        let two = serve(Receiver::new(CLUSTER, 1 << 20, move |heartbeat: Message| {
            follower.send(vec![message(MessageType::MsgHeartbeatResponse, 2, 1, heartbeat.commit)]);
        }))
        .await;
        let peers = HashMap::from([(2, vec![format!("http://{two}")])]);
        Transport::start(CLUSTER, 1, &peers, Arc::new(tokio::sync::Notify::new()), None)
    });
    // The raft thread is a thread of its own: so is the one sending here.
    let mut commit = 0;
    let mut exchange = || {
        commit += 1;
        leader.send(vec![message(MessageType::MsgHeartbeat, 1, 2, commit)]);
        let answer = answered.recv().unwrap();
        assert_eq!(answer.commit, commit);
    };
    // Both streams open before anything is timed.
    exchange();
    c.bench_function("heartbeat and its answer over loopback", |b| b.iter(&mut exchange));
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
