//! Raft snapshots between members, streamed in chunks on a call of their own (etcd's
//! rafthttp snapshot sender): a large snapshot never waits behind heartbeats, nor
//! heartbeats behind it, and neither side holds more than a few chunks in memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_api::cairnpb::SnapshotChunk;
use cairn_api::cairnpb::peer_client::PeerClient;
use cairn_net::peer::{PeerTls, connect};
use protobuf::Message as _;
use raft::eraftpb::Message;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;
use tonic::{Request, Status, Streaming};
use tracing::{info, warn};

/// The chunks of one snapshot's data, read on a blocking thread.
pub type SnapshotData = Box<dyn Iterator<Item = std::io::Result<Vec<u8>>> + Send>;

/// Chunks read ahead of the peer, per snapshot being sent.
const READ_AHEAD: usize = 2;

/// How long a peer may take no chunk, or not answer once it has all of them,
/// before the snapshot is given up as failed (and raft sends another).
const STALLED: std::time::Duration = std::time::Duration::from_secs(30);

/// The sending member's side of snapshots: where their data comes from, and where
/// their outcome goes.
pub trait Snapshots: Send + Sync + 'static {
    /// The data of the snapshot `message` (a `MsgSnapshot` raft made, its data
    /// empty), in chunks; `None` when it cannot be read.
    fn data(&self, message: &Message) -> Option<SnapshotData>;
    /// Whether member `to` received the whole snapshot (raft-rs's
    /// `report_snapshot`, which lets raft send another one after a failure).
    fn report(&self, to: u64, delivered: bool);
}

/// Streams the snapshot `message` to member `to` at the first of `urls` that
/// answers, and reports the outcome to `snapshots`.
pub(crate) async fn send(
    (cluster_id, from, to): (u64, u64, u64),
    urls: Vec<String>,
    tls: Option<PeerTls>,
    message: Message,
    snapshots: Arc<dyn Snapshots>,
) {
    let index = message.get_snapshot().get_metadata().index;
    let delivered = match stream(cluster_id, from, &urls, tls.as_ref(), message, &*snapshots).await {
        Ok(bytes) => {
            info!(to = format_args!("{to:x}"), index, bytes, "sent a snapshot");
            true
        }
        Err(error) => {
            warn!(to = format_args!("{to:x}"), index, %error, "cannot send a snapshot");
            false
        }
    };
    snapshots.report(to, delivered);
}

async fn stream(
    cluster_id: u64,
    from: u64,
    urls: &[String],
    tls: Option<&PeerTls>,
    message: Message,
    snapshots: &dyn Snapshots,
) -> Result<u64, String> {
    let mut data = snapshots.data(&message).ok_or("its data is no longer there")?;
    let mut channel = Err("no peer URLs".to_owned());
    for url in urls {
        channel = connect(url, tls).await.map_err(|error| format!("{url}: {error}"));
        if channel.is_ok() {
            break;
        }
    }
    let mut client = PeerClient::new(channel?).max_encoding_message_size(usize::MAX);
    let (chunks, outgoing) = mpsc::channel::<SnapshotChunk>(READ_AHEAD);
    let encoded = message.write_to_bytes().map_err(|error| error.to_string())?;
    let first = SnapshotChunk { cluster_id, from, message: encoded, data: Vec::new(), last: false };
    // The reader stops at the first error, or when the peer takes nothing for
    // `STALLED`, without marking a last chunk: the receiver then refuses the stream
    // as cut short.
    let runtime = tokio::runtime::Handle::current();
    let mut reader = tokio::task::spawn_blocking(move || {
        let send = |chunk| {
            runtime.block_on(chunks.send_timeout(chunk, STALLED)).map_err(|error| match error {
                mpsc::error::SendTimeoutError::Timeout(_) => format!("the peer took nothing for {STALLED:?}"),
                mpsc::error::SendTimeoutError::Closed(_) => "the call ended".to_owned(),
            })
        };
        let mut sent = 0u64;
        send(first)?;
        for chunk in data.by_ref() {
            let chunk = chunk.map_err(|error| format!("cannot read the snapshot: {error}"))?;
            sent += chunk.len() as u64;
            send(SnapshotChunk { cluster_id, from, message: Vec::new(), data: chunk, last: false })?;
        }
        send(SnapshotChunk { cluster_id, from, message: Vec::new(), data: Vec::new(), last: true })?;
        Ok::<u64, String>(sent)
    });
    let stream = futures::stream::unfold(outgoing, |mut outgoing| async move {
        outgoing.recv().await.map(|chunk| (chunk, outgoing))
    });
    let mut call = tokio::spawn(async move { client.snapshot(Request::new(stream)).await });
    // A peer that stops reading (gone, cut off) fails the reader, which ends the call
    // rather than waiting for TCP to give up.
    let sent = tokio::select! {
        read = &mut reader => read.map_err(|error| error.to_string())?,
        answered = &mut call => {
            answered.map_err(|error| error.to_string())?.map_err(|status| status.message().to_owned())?;
            reader.await.map_err(|error| error.to_string())?
        }
    };
    let sent = match sent {
        Ok(sent) => sent,
        Err(error) => {
            call.abort();
            return Err(error);
        }
    };
    match tokio::time::timeout(STALLED, call).await {
        Ok(answered) => {
            answered.map_err(|error| error.to_string())?.map_err(|status| status.message().to_owned())?;
        }
        Err(_) => return Err(format!("the peer did not answer in {STALLED:?}")),
    }
    Ok(sent)
}

/// A snapshot file being received: removed when dropped, unless it was delivered
/// (a stream that fails, or that the sender or the connection ends, leaves nothing).
struct Part {
    path: PathBuf,
    delivered: bool,
}

impl Drop for Part {
    fn drop(&mut self) {
        if !self.delivered {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Tells apart the files of snapshots received at the same index from the same
/// member: a stream never writes over another's file.
static RECEIVED: AtomicU64 = AtomicU64::new(0);

/// The receiving side: writes the chunks of one snapshot to a file of its own in
/// `dir`, and returns its message with the file's path as its data once the last
/// chunk came. The first chunk has been checked by the caller, and is given as
/// `first`.
pub(crate) async fn receive(
    dir: &Path,
    mut message: Message,
    first: SnapshotChunk,
    chunks: &mut Streaming<SnapshotChunk>,
) -> Result<Message, Status> {
    let index = message.get_snapshot().get_metadata().index;
    let n = RECEIVED.fetch_add(1, Ordering::Relaxed);
    let mut part =
        Part { path: dir.join(format!("{:016x}-{index:016x}-{n}.snap", message.from)), delivered: false };
    let bytes = write(&part.path, first, chunks).await?;
    info!(from = format_args!("{:x}", message.from), index, bytes, "received a snapshot");
    message.mut_snapshot().data = path_bytes(&part.path).into();
    part.delivered = true;
    Ok(message)
}

async fn write(
    path: &Path,
    first: SnapshotChunk,
    chunks: &mut Streaming<SnapshotChunk>,
) -> Result<u64, Status> {
    let io = |error: std::io::Error| Status::internal(format!("cannot save the snapshot: {error}"));
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
    }
    let mut file = tokio::fs::OpenOptions::new().write(true).create_new(true).open(path).await.map_err(io)?;
    let mut bytes = 0u64;
    let mut chunk = first;
    loop {
        file.write_all(&chunk.data).await.map_err(io)?;
        bytes += chunk.data.len() as u64;
        if chunk.last {
            break;
        }
        chunk = chunks
            .message()
            .await?
            .ok_or_else(|| Status::data_loss("the snapshot stream ended before its last chunk"))?;
    }
    file.flush().await.map_err(io)?;
    Ok(bytes)
}

fn path_bytes(path: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt as _;
    path.as_os_str().as_bytes().to_vec()
}

/// The file a snapshot delivered by [`crate::Receiver`] was saved to, which its data
/// names.
pub fn received_path(data: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt as _;
    PathBuf::from(std::ffi::OsStr::from_bytes(data))
}
