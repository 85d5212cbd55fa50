//! The stream of applied changes that watchers follow.
//!
//! The apply loop publishes every write's changes, once committed, into a bounded
//! broadcast channel. A watch stream that keeps up reads them from there; one that
//! falls behind loses its place in the channel and catches up from the change log on
//! disk instead, so that a slow consumer neither blocks writes nor grows memory.

use std::sync::Arc;

use cairn_api::mvccpb::Event;
use tokio::sync::broadcast;

/// How many published revisions a watch stream may fall behind before it catches up
/// from disk instead.
const CAPACITY: usize = 4096;

/// The changes of one revision.
#[derive(Debug)]
pub struct Batch {
    /// The revision the changes were made at.
    pub revision: u64,
    /// The changes, in the order they were made.
    pub events: Vec<Event>,
}

/// Where the apply loop publishes changes and watch streams subscribe to them.
#[derive(Debug, Clone)]
pub struct Hub {
    sender: broadcast::Sender<Arc<Batch>>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    /// A feed nobody listens to yet.
    pub fn new() -> Self {
        Self { sender: broadcast::channel(CAPACITY).0 }
    }

    /// Publishes the changes of `revision`; nobody listening is fine.
    pub fn publish(&self, revision: u64, events: Vec<Event>) {
        let _ = self.sender.send(Arc::new(Batch { revision, events }));
    }

    /// A receiver of every batch published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Batch>> {
        self.sender.subscribe()
    }
}
