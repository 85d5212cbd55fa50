//! Waiters keyed by request ID.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};

use hashbrown::HashMap;
use tokio::sync::oneshot;

use crate::{Error, Result};

/// Number of shards a [`Wait`] uses unless told otherwise, as in etcd since 3.5.
pub const DEFAULT_SHARDS: usize = 64;

/// A registry of waiters keyed by request ID.
///
/// The apply loop calls [`Wait::trigger`] with the result of each applied request; the
/// task that proposed it awaits the [`Waiter`] it got from [`Wait::register`]. IDs are
/// spread over shards by `id % shards`, each a mutex around a hash map, so that many
/// tasks register and trigger at once. Cloning a `Wait` gives another handle to the
/// same registry.
pub struct Wait<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    shards: Box<[Mutex<Shard<T>>]>,
}

struct Shard<T> {
    entries: HashMap<u64, Entry<T>>,
    /// Source of registration tokens, so that a dropped waiter never removes a later
    /// registration of the same ID.
    next_token: u64,
}

struct Entry<T> {
    token: u64,
    sender: oneshot::Sender<T>,
}

impl<T> Wait<T> {
    /// Creates a registry with [`DEFAULT_SHARDS`] shards.
    pub fn new() -> Self {
        Self::with_shards(DEFAULT_SHARDS)
    }

    /// Creates a registry with `shards` shards (at least one).
    pub fn with_shards(shards: usize) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| Mutex::new(Shard { entries: HashMap::new(), next_token: 0 }))
            .collect();
        Self { inner: Arc::new(Inner { shards }) }
    }

    /// Registers a waiter for `id`.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateId`] if `id` already has a live, untriggered waiter.
    pub fn register(&self, id: u64) -> Result<Waiter<T>> {
        let (sender, receiver) = oneshot::channel();
        let mut shard = self.inner.shard(id);
        if shard.entries.contains_key(&id) {
            return Err(Error::DuplicateId(id));
        }
        let token = shard.next_token;
        shard.next_token = token.wrapping_add(1);
        shard.entries.insert(id, Entry { token, sender });
        drop(shard);
        Ok(Waiter { registry: Arc::downgrade(&self.inner), id, token, receiver, done: false })
    }

    /// Completes the waiter of `id` with `value` and unregisters it.
    ///
    /// Returns `false`, and drops `value`, when `id` has no live waiter: it was never
    /// registered, was already triggered, or its waiter was dropped.
    pub fn trigger(&self, id: u64, value: T) -> bool {
        let entry = self.inner.shard(id).entries.remove(&id);
        match entry {
            Some(entry) => entry.sender.send(value).is_ok(),
            None => false,
        }
    }

    /// Whether `id` has a live, untriggered waiter.
    pub fn is_registered(&self, id: u64) -> bool {
        self.inner.shard(id).entries.contains_key(&id)
    }

    /// Number of live, untriggered waiters.
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|shard| lock(shard).entries.len()).sum()
    }

    /// Whether no waiter is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Default for Wait<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for Wait<T> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

impl<T> std::fmt::Debug for Wait<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wait").field("shards", &self.inner.shards.len()).finish_non_exhaustive()
    }
}

impl<T> Inner<T> {
    fn shard(&self, id: u64) -> MutexGuard<'_, Shard<T>> {
        // The modulo of a u64 by a usize-sized length always fits in usize.
        let index = (id % self.shards.len() as u64) as usize;
        lock(&self.shards[index])
    }
}

/// Locks a shard. A panic while a shard was locked cannot leave its map half-updated
/// (every critical section is a single map operation), so poisoning is ignored.
fn lock<T>(shard: &Mutex<T>) -> MutexGuard<'_, T> {
    shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The future side of one registration: completes with the triggered value.
///
/// Dropping it before it completes unregisters its ID.
#[must_use = "a waiter unregisters its id when dropped"]
pub struct Waiter<T> {
    /// Weak, so that dropping every [`Wait`] handle closes pending waiters.
    registry: Weak<Inner<T>>,
    id: u64,
    token: u64,
    receiver: oneshot::Receiver<T>,
    /// Set once the receiver produced a result: the entry is then known to be gone.
    done: bool,
}

impl<T> Waiter<T> {
    /// The ID this waiter is registered under.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl<T> Future for Waiter<T> {
    /// The triggered value, or [`Error::Closed`] when the registry was dropped first.
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = std::task::ready!(Pin::new(&mut self.receiver).poll(cx));
        self.done = true;
        Poll::Ready(result.map_err(|_| Error::Closed))
    }
}

impl<T> Drop for Waiter<T> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Some(registry) = self.registry.upgrade() else {
            return;
        };
        let mut shard = registry.shard(self.id);
        if shard.entries.get(&self.id).is_some_and(|entry| entry.token == self.token) {
            shard.entries.remove(&self.id);
        }
    }
}

impl<T> std::fmt::Debug for Waiter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter").field("id", &self.id).field("done", &self.done).finish()
    }
}
