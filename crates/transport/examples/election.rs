//! Three raft-rs nodes on loopback, talking only through `cairn-transport`: they
//! elect a leader, and an entry proposed to it commits on every node.
//!
//! Run with `cargo run -p cairn-transport --example election`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_api::cairnpb::peer_server::PeerServer;
use cairn_transport::{Receiver, Transport};
use raft::eraftpb::{ConfState, Message};
use raft::storage::MemStorage;
use raft::{Config, RawNode, StateRole};
use tokio::sync::{Notify, mpsc, watch};

const CLUSTER: u64 = 0xc1;

/// Runs node `id`: ticks every 10 ms, steps what the receiver delivers, and reports
/// (role, committed entries with data) after each `Ready`.
async fn run(
    id: u64,
    listener: tokio::net::TcpListener,
    peers: HashMap<u64, Vec<String>>,
    report: watch::Sender<(StateRole, usize)>,
) {
    let (inbox, mut messages) = mpsc::unbounded_channel::<Message>();
    let receiver = Receiver::new(CLUSTER, 1 << 20, move |message| {
        let _ = inbox.send(message);
    });
    let server = tonic::transport::Server::builder().add_service(PeerServer::new(receiver));
    tokio::spawn(server.serve_with_incoming(cairn_net::grpc::plain_incoming(listener)));
    let transport = Transport::start(CLUSTER, id, &peers, Arc::new(Notify::new()), None);

    let storage = MemStorage::new_with_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
    let config = Config { id, election_tick: 10, heartbeat_tick: 1, ..Default::default() };
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let mut node = RawNode::new(&config, storage, &logger).expect("a valid config");
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut proposed = false;
    let mut committed = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                node.tick();
            }
            Some(message) = messages.recv() => { let _ = node.step(message); }
        }
        if node.raft.state == StateRole::Leader && !proposed {
            proposed = node.propose(vec![], b"hello".to_vec()).is_ok();
        }
        if !node.has_ready() {
            continue;
        }
        let mut ready = node.ready();
        transport.send(ready.take_messages());
        let store = node.raft.raft_log.store.clone();
        if let Some(hard_state) = ready.hs() {
            store.wl().set_hardstate(hard_state.clone());
        }
        store.wl().append(ready.entries()).expect("in order");
        committed += ready.take_committed_entries().iter().filter(|e| !e.data.is_empty()).count();
        transport.send(ready.take_persisted_messages());
        let mut light = node.advance(ready);
        transport.send(light.take_messages());
        committed += light.take_committed_entries().iter().filter(|e| !e.data.is_empty()).count();
        node.advance_apply();
        report.send_replace((node.raft.state, committed));
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listeners = Vec::new();
    let mut urls = HashMap::new();
    for id in 1..=3u64 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        urls.insert(id, vec![format!("http://{}", listener.local_addr()?)]);
        listeners.push((id, listener));
    }
    let mut reports = Vec::new();
    for (id, listener) in listeners {
        let (report, seen) = watch::channel((StateRole::Follower, 0));
        tokio::spawn(run(id, listener, urls.clone(), report));
        reports.push(seen);
    }
    tokio::time::timeout(Duration::from_secs(20), async {
        for seen in &mut reports {
            seen.wait_for(|&(_, committed)| committed == 1).await.expect("the node runs");
        }
    })
    .await?;
    for (n, seen) in reports.iter().enumerate() {
        let (role, committed) = *seen.borrow();
        println!("node {}: {role:?}, {committed} entry committed", n + 1);
    }
    assert_eq!(reports.iter().filter(|seen| seen.borrow().0 == StateRole::Leader).count(), 1);
    Ok(())
}
