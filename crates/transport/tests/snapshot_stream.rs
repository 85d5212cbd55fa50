//! A snapshot far larger than any one message a member takes goes from one member's
//! transport to another's in chunks, with the memory of both bounded, and a failed
//! one is reported as failed. A test binary of its own: the peak memory it checks
//! is the process's.

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_api::cairnpb::peer_server::PeerServer;
use cairn_transport::{Receiver, SnapshotData, Snapshots, Transport};
use raft::eraftpb::{Message, MessageType};
use tokio::sync::{Notify, mpsc};

const CLUSTER: u64 = 0xc1;
const DEADLINE: Duration = Duration::from_secs(60);
const CHUNK: usize = 1024 * 1024;
/// Far over the receiver's message limit below, and over what the test lets the
/// process's memory grow by.
const CHUNKS: usize = 256;

/// Chunks made on the fly: byte `i` of chunk `n` is `(n + i) % 251`.
fn chunk(n: usize) -> Vec<u8> {
    (0..CHUNK).map(|i| ((n + i) % 251) as u8).collect()
}

struct Generated {
    fail_after: Option<usize>,
    reports: Mutex<Vec<(u64, bool)>>,
    done: Notify,
}

impl Snapshots for Generated {
    fn data(&self, message: &Message) -> Option<SnapshotData> {
        assert_eq!(message.get_snapshot().get_metadata().index, 77);
        let fail_after = self.fail_after;
        Some(Box::new((0..CHUNKS).map(move |n| match fail_after {
            Some(after) if n >= after => Err(std::io::Error::other("disk on fire")),
            _ => Ok(chunk(n)),
        })))
    }

    fn report(&self, to: u64, delivered: bool) {
        self.reports.lock().unwrap().push((to, delivered));
        self.done.notify_one();
    }
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|line| line.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn snapshot_message() -> Message {
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgSnapshot);
    (message.from, message.to, message.term) = (1, 2, 3);
    let metadata = message.mut_snapshot().mut_metadata();
    (metadata.index, metadata.term) = (77, 3);
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_larger_than_any_message_streams_in_chunks_with_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut delivered) = mpsc::unbounded_channel();
    // Messages of at most 2 MiB: the old single-message snapshot of 256 MiB would
    // never have passed.
    let receiver = Receiver::new(CLUSTER, 2 * CHUNK, move |message| tx.send(message).unwrap())
        .snapshots_in(dir.path().join("snap"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(PeerServer::new(receiver).max_decoding_message_size(2 * CHUNK + 1024));
    tokio::spawn(server.serve_with_incoming(cairn_net::grpc::plain_incoming(listener)));
    let peers = HashMap::from([(2, vec![format!("http://{addr}")])]);
    let transport = Transport::start(CLUSTER, 1, &peers, Arc::new(Notify::new()), None);

    // A snapshot whose data fails half way is reported as failed, and nothing is
    // delivered nor left behind.
    let failing = Arc::new(Generated { fail_after: Some(3), reports: Mutex::default(), done: Notify::new() });
    transport.set_snapshots(failing.clone());
    transport.send(vec![snapshot_message()]);
    tokio::time::timeout(DEADLINE, failing.done.notified()).await.unwrap();
    assert_eq!(*failing.reports.lock().unwrap(), [(2, false)]);
    assert!(delivered.try_recv().is_err());
    // The receiver removes what it wrote once it sees the stream end.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while std::fs::read_dir(dir.path().join("snap")).unwrap().count() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "a snapshot cut short is removed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Only the first source counts: a transport of its own for the whole one.
    let transport = Transport::start(CLUSTER, 1, &peers, Arc::new(Notify::new()), None);
    let whole = Arc::new(Generated { fail_after: None, reports: Mutex::default(), done: Notify::new() });
    transport.set_snapshots(whole.clone());
    let before = peak_rss_kib();
    // Heartbeats around the snapshot go through without waiting for it.
    let mut heartbeat = Message::default();
    heartbeat.set_msg_type(MessageType::MsgHeartbeat);
    (heartbeat.from, heartbeat.to) = (1, 2);
    transport.send(vec![heartbeat.clone(), snapshot_message(), heartbeat]);
    tokio::time::timeout(DEADLINE, whole.done.notified()).await.unwrap();
    assert_eq!(*whole.reports.lock().unwrap(), [(2, true)]);
    let mut kinds = Vec::new();
    let mut snapshot = None;
    while let Ok(message) = delivered.try_recv() {
        kinds.push(message.get_msg_type());
        if message.get_msg_type() == MessageType::MsgSnapshot {
            snapshot = Some(message);
        }
    }
    assert_eq!(kinds, [MessageType::MsgHeartbeat, MessageType::MsgHeartbeat, MessageType::MsgSnapshot]);
    let grown_mib = (peak_rss_kib() - before) / 1024;
    assert!(grown_mib < 64, "peak memory grew by {grown_mib} MiB for a {CHUNKS} MiB snapshot");

    // The message names the file that holds the data, byte for byte.
    let snapshot = snapshot.unwrap();
    assert_eq!(snapshot.get_snapshot().get_metadata().index, 77);
    let path = cairn_transport::received_path(&snapshot.get_snapshot().data);
    assert!(path.starts_with(dir.path()));
    let mut file = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
    let mut buf = vec![0; CHUNK];
    for n in 0..CHUNKS {
        file.read_exact(&mut buf).unwrap();
        assert!(buf == chunk(n), "chunk {n} differs");
    }
    assert_eq!(file.read(&mut buf).unwrap(), 0, "nothing after the last chunk");
}
