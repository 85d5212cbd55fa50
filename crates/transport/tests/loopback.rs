//! Two members' transports over loopback: order, batching, refusals, removal and
//! a full queue.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_api::cairnpb::RaftBatch;
use cairn_api::cairnpb::peer_client::PeerClient;
use cairn_api::cairnpb::peer_server::PeerServer;
use cairn_transport::{Receiver, Transport};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::sync::{Notify, mpsc};

const CLUSTER: u64 = 0xc1;
const DEADLINE: Duration = Duration::from_secs(10);

fn heartbeat(from: u64, to: u64, commit: u64) -> Message {
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgHeartbeat);
    (message.from, message.to, message.commit) = (from, to, commit);
    message
}

/// Serves `receiver` on a free loopback port.
async fn serve(receiver: Receiver) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder().add_service(PeerServer::new(receiver));
    tokio::spawn(server.serve_with_incoming(cairn_net::grpc::plain_incoming(listener)));
    addr
}

/// A receiver for member 2 whose delivered messages arrive on the returned channel.
fn inbox(cluster: u64) -> (Receiver, mpsc::UnboundedReceiver<Message>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Receiver::new(cluster, 1024, move |message| tx.send(message).unwrap()), rx)
}

#[tokio::test]
async fn messages_reach_the_peer_in_order_and_the_connection_is_reported_up() {
    let (receiver, mut delivered) = inbox(CLUSTER);
    let addr = serve(receiver).await;
    let peers = HashMap::from([(2, vec![format!("http://{addr}")])]);
    let transport = Transport::start(CLUSTER, 1, &peers, Arc::new(Notify::new()), None);
    // More than a batch, sent in pieces as a raft loop would.
    for start in (0..1000).step_by(100) {
        transport.send((start..start + 100).map(|commit| heartbeat(1, 2, commit)).collect());
    }
    // Messages to unknown members go nowhere and are not counted as dropped.
    transport.send(vec![heartbeat(1, 9, 0)]);
    for expected in 0..1000 {
        let message = tokio::time::timeout(DEADLINE, delivered.recv()).await.unwrap().unwrap();
        assert_eq!((message.from, message.to, message.commit), (1, 2, expected));
    }
    assert_eq!(transport.dropped(), 0);
    assert!(transport.connected_since(2).is_some());
    assert_eq!(transport.active_peers(), [(2, true)]);
    assert_eq!(transport.channels(2).len(), 1);
    assert!(transport.channels(9).is_empty());
}

#[tokio::test]
async fn a_stream_names_its_sender_as_it_opens_before_any_message() {
    let (tx, mut opened) = mpsc::unbounded_channel();
    let (receiver, mut delivered) = inbox(CLUSTER);
    let addr = serve(receiver.on_stream(move |from| tx.send(from).unwrap())).await;
    let peers = HashMap::from([(2, vec![format!("http://{addr}")])]);
    let transport = Transport::start(CLUSTER, 1, &peers, Arc::new(Notify::new()), None);
    assert_eq!(tokio::time::timeout(DEADLINE, opened.recv()).await.unwrap(), Some(1));
    assert!(delivered.try_recv().is_err(), "the opening batch is empty");
    // Waking a sender that is connected, or one to an unknown member, changes nothing.
    transport.wake(2);
    transport.wake(9);
    transport.send(vec![heartbeat(1, 2, 3)]);
    assert_eq!(tokio::time::timeout(DEADLINE, delivered.recv()).await.unwrap().unwrap().commit, 3);
}

#[tokio::test]
async fn a_peer_that_says_this_member_was_removed_stops_it() {
    let (receiver, _delivered) = inbox(CLUSTER);
    let addr = serve(receiver.removed(|id| id == 1)).await;
    let peers = HashMap::from([(2, vec![format!("http://{addr}")])]);
    let removed = Arc::new(Notify::new());
    let transport = Transport::start(CLUSTER, 1, &peers, Arc::clone(&removed), None);
    transport.send(vec![heartbeat(1, 2, 1)]);
    tokio::time::timeout(DEADLINE, removed.notified()).await.expect("told it was removed");
}

#[tokio::test]
async fn a_peer_that_cannot_be_reached_loses_what_is_queued_for_it_and_counts_it() {
    // A port nothing listens on: bound, then released.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let peers = HashMap::from([(2, vec![format!("http://{addr}")])]);
    let transport = Transport::start(CLUSTER, 1, &peers, Arc::new(Notify::new()), None);
    transport.send((0..5000).map(|commit| heartbeat(1, 2, commit)).collect());
    // The queue holds 4,096; the sender takes at most one batch of 256 off it.
    assert!((5000 - 4096 - 256..=5000 - 4096).contains(&transport.dropped()), "{}", transport.dropped());
    assert_eq!(transport.active_peers(), [(2, false)]);
    // Once a connection fails, what was queued is dropped too: a peer that comes
    // back is not fed a backlog.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while transport.dropped() < 5000 {
        assert!(tokio::time::Instant::now() < deadline, "{} dropped", transport.dropped());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    transport.remove_peer(2);
    assert!(transport.active_peers().is_empty());
}

/// Sends `batches` on one stream, as a peer (or anyone reaching the port) would.
async fn stream(addr: SocketAddr, batches: Vec<RaftBatch>) -> Result<(), tonic::Status> {
    let mut client = PeerClient::connect(format!("http://{addr}")).await.unwrap();
    client.raft(futures::stream::iter(batches)).await.map(|_| ())
}

fn batch(cluster_id: u64, from: u64, messages: Vec<Vec<u8>>) -> RaftBatch {
    RaftBatch { cluster_id, from, messages }
}

#[tokio::test]
async fn another_cluster_a_removed_member_and_bad_messages_are_refused() {
    let refused = Arc::new(Mutex::new(Vec::new()));
    let (receiver, mut delivered) = inbox(CLUSTER);
    let receiver = receiver.removed(|id| id == 7).on_refused({
        let refused = Arc::clone(&refused);
        move |from| refused.lock().unwrap().push(from)
    });
    let addr = serve(receiver).await;
    let good = heartbeat(3, 2, 5).write_to_bytes().unwrap();

    let status = stream(addr, vec![batch(0xc2, 3, vec![good.clone()])]).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        "cluster ID mismatch: this member belongs to cluster c1, member 3 to c2 \
         (check --initial-cluster-token and --initial-cluster)"
    );
    let status = stream(addr, vec![batch(CLUSTER, 7, vec![good.clone()])]).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);

    // An append at the limit passes; one byte over it, garbage, and a snapshot (whose
    // data comes on a call of its own) are dropped and reported.
    let mut at_limit = heartbeat(3, 2, 6);
    at_limit.set_msg_type(MessageType::MsgAppend);
    let padding = 1024 - at_limit.write_to_bytes().unwrap().len() - 3;
    at_limit.context = vec![b'x'; padding].into();
    let at_limit = at_limit.write_to_bytes().unwrap();
    assert_eq!(at_limit.len(), 1024);
    let mut over = Message::parse_from_bytes(&at_limit).unwrap();
    over.commit = 7;
    over.context = vec![b'x'; padding + 1].into();
    let over = over.write_to_bytes().unwrap();
    assert_eq!(over.len(), 1025);
    let mut snapshot = heartbeat(3, 2, 8);
    snapshot.set_msg_type(MessageType::MsgSnapshot);
    snapshot.mut_snapshot().data = vec![0; 4096].into();
    let messages = vec![good, at_limit, over, vec![0xff; 3], snapshot.write_to_bytes().unwrap()];
    stream(addr, vec![batch(CLUSTER, 3, messages)]).await.unwrap();
    let commits: Vec<u64> = [(); 2].iter().map(|()| delivered.try_recv().unwrap().commit).collect();
    assert_eq!(commits, [5, 6]);
    assert!(delivered.try_recv().is_err());
    assert_eq!(*refused.lock().unwrap(), [3, 3, 3]);
}

/// A member's answers to its peers' membership calls, fixed.
struct Fixed;

impl cairn_transport::Members for Fixed {
    fn members(&self) -> Vec<cairn_api::etcdserverpb::Member> {
        let member =
            |id, name: &str| cairn_api::etcdserverpb::Member { id, name: name.into(), ..Default::default() };
        vec![member(1, "one"), member(2, "two")]
    }

    async fn progress(&self, id: u64) -> Option<(u64, u64)> {
        (id == 2).then_some((7, 9))
    }

    fn hash_kv(&self, revision: i64) -> Result<cairn_api::cairnpb::HashKvResponse, tonic::Status> {
        if revision > 5 {
            return Err(tonic::Status::out_of_range("mvcc: required revision is a future revision"));
        }
        Ok(cairn_api::cairnpb::HashKvResponse { member_id: 1, revision: 5, compact_revision: -1, hash: 42 })
    }
}

#[tokio::test]
async fn the_peer_port_answers_members_progress_and_hashes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (receiver, _delivered) = inbox(CLUSTER);
    let routes = tonic::service::Routes::default()
        .add_service(PeerServer::new(receiver))
        .add_service(cairn_transport::MembershipService::new(CLUSTER, Arc::new(Fixed)).into_server());
    cairn_transport::serve(routes, vec![(listener, false)], None);

    let (cluster, members) = cairn_transport::fetch_members(std::slice::from_ref(&url), None).await.unwrap();
    assert_eq!(cluster, CLUSTER);
    assert_eq!(members.iter().map(|m| (m.id, m.name.as_str())).collect::<Vec<_>>(), [(1, "one"), (2, "two")]);

    let channels = || vec![tonic::transport::Endpoint::from_shared(url.clone()).unwrap().connect_lazy()];
    assert_eq!(cairn_transport::ask_progress(channels(), 2, DEADLINE).await.unwrap(), Some((7, 9)));
    assert_eq!(cairn_transport::ask_progress(channels(), 3, DEADLINE).await.unwrap(), None);

    let hash = cairn_transport::ask_hash(std::slice::from_ref(&url), None, 5, DEADLINE).await.unwrap();
    assert_eq!((hash.member_id, hash.revision, hash.compact_revision, hash.hash), (1, 5, -1, 42));
    // The member's refusal comes back with its text; a dead URL before a live one is
    // skipped.
    let refused = cairn_transport::ask_hash(std::slice::from_ref(&url), None, 6, DEADLINE).await.unwrap_err();
    assert_eq!(refused.to_string(), format!("{url}: mvcc: required revision is a future revision"));
    let dead = "http://127.0.0.1:1".to_owned();
    let hash = cairn_transport::ask_hash(&[dead.clone(), url.clone()], None, 0, DEADLINE).await.unwrap();
    assert_eq!(hash.hash, 42);
    let unreachable = cairn_transport::ask_hash(&[dead], None, 0, Duration::from_secs(2)).await.unwrap_err();
    assert!(unreachable.to_string().starts_with("http://127.0.0.1:1: "), "{unreachable}");
    assert!(cairn_transport::ask_progress(Vec::new(), 2, DEADLINE).await.is_err());
}

/// A leader's lessor that knows lease 1 (TTL 60, key `k`), not lease 2, and refuses
/// lease 3 as a member that is not the primary lessor would.
struct Keeper;

impl cairn_transport::LeaseKeeper for Keeper {
    async fn renew(&self, id: i64) -> Result<Option<i64>, tonic::Status> {
        match id {
            1 => Ok(Some(60)),
            2 => Ok(None),
            _ => Err(tonic::Status::unavailable("etcdserver: not a primary lessor")),
        }
    }

    async fn time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<cairn_api::cairnpb::LeaseTtlResponse, tonic::Status> {
        let keys = if keys { vec![b"k".to_vec()] } else { Vec::new() };
        match id {
            1 => Ok(cairn_api::cairnpb::LeaseTtlResponse { found: true, ttl: 42, granted_ttl: 60, keys }),
            2 => Ok(cairn_api::cairnpb::LeaseTtlResponse::default()),
            _ => Err(tonic::Status::unavailable("etcdserver: not a primary lessor")),
        }
    }
}

#[tokio::test]
async fn lease_calls_reach_the_leaders_lessor_and_a_refusal_is_no_answer() {
    use cairn_transport::{forward_renew, forward_time_to_live};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let routes = tonic::service::Routes::default()
        .add_service(cairn_transport::LeasesService::server(Arc::new(Keeper)));
    cairn_transport::serve(routes, vec![(listener, false)], None);
    let leader = || vec![tonic::transport::Endpoint::from_shared(url.clone()).unwrap().connect_lazy()];
    let deadline = || tokio::time::Instant::now() + DEADLINE;

    assert_eq!(forward_renew(leader(), 1, deadline()).await, Some(Some(60)));
    assert_eq!(forward_renew(leader(), 2, deadline()).await, Some(None));
    // A member that is not the primary lessor gives no answer: the caller asks again.
    assert_eq!(forward_renew(leader(), 3, deadline()).await, None);
    let found = forward_time_to_live(leader(), 1, true, deadline()).await.unwrap().unwrap();
    assert_eq!((found.ttl, found.granted_ttl, found.keys), (42, 60, vec![b"k".to_vec()]));
    assert!(forward_time_to_live(leader(), 1, false, deadline()).await.unwrap().unwrap().keys.is_empty());
    assert_eq!(forward_time_to_live(leader(), 2, false, deadline()).await, Some(None));
    assert_eq!(forward_time_to_live(leader(), 3, false, deadline()).await, None);
    // An unreachable leader: no answer by the deadline.
    let dead = vec![tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy()];
    let soon = tokio::time::Instant::now() + Duration::from_secs(2);
    assert_eq!(forward_renew(dead, 1, soon).await, None);
}
