//! The sending side: a bounded queue and a reconnecting stream per peer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cairn_api::cairnpb::RaftBatch;
use cairn_api::cairnpb::peer_client::PeerClient;
use cairn_net::peer::{PeerTls, connect, lazy_channel};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};

use crate::Snapshots;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Request;
use tracing::{debug, warn};

/// Messages queued for one peer before new ones are dropped.
const QUEUE: usize = 4096;
/// Most messages sent in one batch.
const BATCH: usize = 256;
/// How long a stream must have lasted for its end to reset the reconnection backoff.
const STABLE: Duration = Duration::from_secs(1);

/// The sending side, shared with the raft thread: [`send`](Self::send) never waits.
#[derive(Debug)]
pub struct Transport {
    cluster_id: u64,
    member_id: u64,
    peers: Mutex<HashMap<u64, PeerSender>>,
    /// The runtime sender tasks run on (peers are added from the raft thread).
    runtime: tokio::runtime::Handle,
    /// Notified when a peer says this member was removed from the cluster.
    removed: Arc<tokio::sync::Notify>,
    /// TLS for `https://` peer URLs.
    tls: Option<PeerTls>,
    /// Messages dropped because a peer's queue was full or it could not be reached.
    dropped: Arc<AtomicU64>,
    /// Where the data of snapshots comes from, once set.
    snapshots: SnapshotSource,
}

/// The [`Snapshots`] every sender task shares, set once the member has its store.
#[derive(Clone, Default)]
struct SnapshotSource(Arc<OnceLock<Arc<dyn Snapshots>>>);

impl std::fmt::Debug for SnapshotSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SnapshotSource").field(&self.0.get().is_some()).finish()
    }
}

#[derive(Debug)]
struct PeerSender {
    queue: mpsc::Sender<Message>,
    connected_since: Arc<Mutex<Option<Instant>>>,
    urls: Vec<String>,
    /// Channels for calls to the peer (lease forwarding), one per URL, made on first
    /// use; they connect lazily and reconnect by themselves.
    channels: Vec<tonic::transport::Channel>,
    /// Cuts the sender's pause between connection attempts short.
    wake: Arc<tokio::sync::Notify>,
}

impl Transport {
    /// Starts a sender task for each of `peers` (member ID to peer URLs). `removed` is
    /// notified when a peer refuses this member as removed from the cluster; `tls` is
    /// used for `https://` peer URLs. Must be called on a tokio runtime, which every
    /// later sender task runs on.
    pub fn start(
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
            dropped: Arc::default(),
            snapshots: SnapshotSource::default(),
        });
        for (&id, urls) in peers {
            transport.add_peer(id, urls.clone());
        }
        transport
    }

    /// Sends snapshots with their data from `snapshots`, each on a call of its own;
    /// until then, snapshot messages are dropped. Only the first call counts.
    pub fn set_snapshots(&self, snapshots: Arc<dyn Snapshots>) {
        let _ = self.snapshots.0.set(snapshots);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, PeerSender>> {
        self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts sending to a new member (nothing for this member or a known one).
    pub fn add_peer(&self, id: u64, urls: Vec<String>) {
        if id == self.member_id || urls.is_empty() {
            return;
        }
        let mut peers = self.lock();
        if peers.contains_key(&id) {
            return;
        }
        let (queue, messages) = mpsc::channel(QUEUE);
        let connected_since = Arc::new(Mutex::new(None));
        let wake = Arc::new(tokio::sync::Notify::new());
        let task = send_loop(
            (self.cluster_id, self.member_id, id),
            urls.clone(),
            messages,
            Arc::clone(&connected_since),
            Arc::clone(&wake),
            Context {
                removed: Arc::clone(&self.removed),
                tls: self.tls.clone(),
                snapshots: self.snapshots.clone(),
                dropped: Arc::clone(&self.dropped),
            },
        );
        self.runtime.spawn(task);
        peers.insert(id, PeerSender { queue, connected_since, urls, channels: Vec::new(), wake });
    }

    /// Sends to member `id` at `urls`: starts its sender, or starts it again when its
    /// URLs changed.
    pub fn set_peer(&self, id: u64, urls: Vec<String>) {
        if self.lock().get(&id).is_some_and(|peer| peer.urls == urls) {
            return;
        }
        self.remove_peer(id);
        self.add_peer(id, urls);
    }

    /// Says that member `id` is up (it opened a stream to this member): a sender
    /// waiting to try connecting to it again tries at once, so that a restarted
    /// member hears from this one without waiting out the backoff.
    pub fn wake(&self, id: u64) {
        if let Some(peer) = self.lock().get(&id) {
            peer.wake.notify_one();
        }
    }

    /// Stops sending to a removed member.
    pub fn remove_peer(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Queues `messages` for their peers without waiting.
    pub fn send(&self, messages: Vec<Message>) {
        let peers = self.lock();
        for message in messages {
            let (to, snapshot) = (message.to, message.get_msg_type() == MessageType::MsgSnapshot);
            let sent = match peers.get(&to) {
                Some(peer) => {
                    let queued = peer.queue.try_send(message).is_ok();
                    if !queued {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    queued
                }
                None => {
                    debug!(to, "no route to member");
                    false
                }
            };
            // raft waits for the outcome of every snapshot it sends.
            if !sent
                && snapshot
                && let Some(snapshots) = self.snapshots.0.get()
            {
                snapshots.report(to, false);
            }
        }
    }

    /// Every peer, and whether the connection to it is up.
    pub fn active_peers(&self) -> Vec<(u64, bool)> {
        let peers = self.lock();
        let up = |peer: &PeerSender| {
            peer.connected_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_some()
        };
        peers.iter().map(|(&id, peer)| (id, up(peer))).collect()
    }

    /// Since when the connection to `peer` has been up.
    pub fn connected_since(&self, peer: u64) -> Option<Instant> {
        let peers = self.lock();
        let peer = peers.get(&peer)?;
        *peer.connected_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This member's ID, which every batch carries.
    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    /// Messages dropped so far because a peer's queue was full or it could not be
    /// reached.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Channels to `peer`, one per peer URL, for calls other than raft messages;
    /// empty for an unknown peer.
    pub fn channels(&self, peer: u64) -> Vec<tonic::transport::Channel> {
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

/// What every sender task shares with the transport.
struct Context {
    removed: Arc<tokio::sync::Notify>,
    tls: Option<PeerTls>,
    snapshots: SnapshotSource,
    dropped: Arc<AtomicU64>,
}

/// Keeps a stream open to one peer, reconnecting with backoff, and sends what is
/// queued in batches.
async fn send_loop(
    (cluster_id, from, to): (u64, u64, u64),
    urls: Vec<String>,
    mut messages: mpsc::Receiver<Message>,
    connected_since: Arc<Mutex<Option<Instant>>>,
    wake: Arc<tokio::sync::Notify>,
    Context { removed, tls, snapshots, dropped }: Context,
) {
    // Waits out `backoff`, and gives the next one: doubled up to 1 s, or back to the
    // shortest when the peer was said to be up (it may still be starting its
    // listener, so tries go on at short intervals).
    let pause = |backoff: Duration| {
        let wake = Arc::clone(&wake);
        async move {
            tokio::select! {
                () = tokio::time::sleep(backoff) => (backoff * 2).min(Duration::from_secs(1)),
                () = wake.notified() => Duration::from_millis(50),
            }
        }
    };
    // A snapshot goes on a call of its own, so that it neither waits for nor holds
    // up the messages after it.
    let send_snapshot = |message: Message| match snapshots.0.get() {
        Some(source) => {
            let call = crate::snapshot::send(
                (cluster_id, from, to),
                urls.clone(),
                tls.clone(),
                message,
                Arc::clone(source),
            );
            tokio::spawn(call);
        }
        None => warn!(peer = format_args!("{to:x}"), "dropping a snapshot: no snapshot source"),
    };
    let is_snapshot = |message: &Message| message.get_msg_type() == MessageType::MsgSnapshot;
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
                // Nothing is kept for a peer that cannot be reached (as etcd's rafthttp
                // drops messages while a peer's stream is down): raft sends again what
                // the peer still needs once it answers, and a restarted member is not
                // fed a backlog of stale appends. A snapshot fails on its own call,
                // which reports it failed.
                loop {
                    match messages.try_recv() {
                        Ok(message) if is_snapshot(&message) => send_snapshot(message),
                        Ok(_) => {
                            dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        // The peer was removed, or its URLs changed: a new sender took over.
                        Err(mpsc::error::TryRecvError::Disconnected) => return,
                    }
                }
                backoff = pause(backoff).await;
                continue;
            }
        };
        let connected_at = Instant::now();
        set_connected(Some(connected_at));
        let mut client = client.max_encoding_message_size(usize::MAX);
        let (batches, outgoing) = mpsc::channel::<RaftBatch>(16);
        // The stream opens with an empty batch, which tells the peer at once who is
        // up (and so lets a peer that restarted hear from this member right away).
        let hello = RaftBatch { cluster_id, from, messages: Vec::new() };
        let _ = batches.try_send(hello);
        let stream = futures::stream::unfold(outgoing, |mut outgoing| async move {
            outgoing.recv().await.map(|batch| (batch, outgoing))
        });
        let mut call = tokio::spawn(async move { client.raft(Request::new(stream)).await });
        // Feed the stream until it breaks, or the peer ends the call (a refusal, which
        // must be seen without waiting for the next message).
        let ended = loop {
            tokio::select! {
                ended = &mut call => break Some(ended),
                first = messages.recv() => {
                    // The peer was removed: the stream ends once the batches already
                    // queued are sent (the call goes on without this task).
                    let Some(first) = first else { return };
                    let mut encoded = Vec::new();
                    let mut next = Some(first);
                    while let Some(message) = next.take() {
                        if is_snapshot(&message) {
                            send_snapshot(message);
                        } else {
                            encoded.push(message.write_to_bytes().unwrap_or_default());
                        }
                        if encoded.len() < BATCH {
                            next = messages.try_recv().ok();
                        }
                    }
                    if encoded.is_empty() {
                        continue;
                    }
                    let batch = RaftBatch { cluster_id, from, messages: encoded };
                    if batches.send(batch).await.is_err() {
                        break None;
                    }
                }
            }
        };
        let ended = match ended {
            Some(ended) => ended,
            None => call.await,
        };
        if let Ok(Err(status)) = ended {
            warn!(peer = format_args!("{to:x}"), error = %status.message(), "peer stream failed");
            if status.code() == tonic::Code::PermissionDenied {
                removed.notify_one();
                return;
            }
        }
        set_connected(None);
        // A stream that lasted is reopened at once (after the shortest pause); one the
        // peer ends as soon as it opens backs off as a failed connection does.
        backoff = if connected_at.elapsed() >= STABLE { Duration::from_millis(50) } else { backoff };
        backoff = pause(backoff).await;
    }
}
