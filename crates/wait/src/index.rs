//! Waiting for an index (etcd's `WaitTime`), typically the applied raft index.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Wakes tasks once a monotonically increasing index reaches what they wait for.
///
/// The apply loop calls [`IndexWait::trigger`] with each new applied index; readers
/// await [`IndexWait::wait`]. Triggers with an index at or below the highest one seen
/// change nothing: the index only moves forward. Cloning gives another handle to the
/// same state.
#[derive(Clone, Default)]
pub struct IndexWait {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// The highest index triggered so far.
    reached: u64,
    /// Pending waiters, ordered by the index they wait for, then by arrival.
    waiters: BTreeMap<(u64, u64), Waker>,
    next_token: u64,
}

impl IndexWait {
    /// Creates a waiter set whose index starts at 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates a waiter set whose index starts at `reached`, for example the applied
    /// index recovered at start.
    pub fn starting_at(reached: u64) -> Self {
        let wait = Self::new();
        wait.lock().reached = reached;
        wait
    }

    /// The highest index triggered so far.
    pub fn reached(&self) -> u64 {
        self.lock().reached
    }

    /// A future that completes once the index reaches `index`: at its first poll if it
    /// already has.
    pub fn wait(&self, index: u64) -> IndexWaiter {
        IndexWaiter { wait: self.clone(), index, token: None }
    }

    /// Records that the index reached `index` and wakes every waiter at or below it,
    /// lowest index first.
    pub fn trigger(&self, index: u64) {
        let woken = {
            let mut state = self.lock();
            // Every parked waiter waits for more than `reached`, so nothing is due.
            if index <= state.reached {
                return;
            }
            state.reached = index;
            let later = match index.checked_add(1) {
                Some(next) => state.waiters.split_off(&(next, 0)),
                None => BTreeMap::new(),
            };
            std::mem::replace(&mut state.waiters, later)
        };
        for waker in woken.into_values() {
            waker.wake();
        }
    }

    /// Number of tasks waiting for an index not yet reached.
    pub fn pending(&self) -> usize {
        self.lock().waiters.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl std::fmt::Debug for IndexWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("IndexWait")
            .field("reached", &state.reached)
            .field("pending", &state.waiters.len())
            .finish()
    }
}

/// Completes once the [`IndexWait`] it came from reaches its index.
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct IndexWaiter {
    wait: IndexWait,
    index: u64,
    /// The key of this waiter's waker in the pending map, once it has been parked.
    token: Option<u64>,
}

impl Future for IndexWaiter {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut state = this.wait.lock();
        if state.reached >= this.index {
            if let Some(token) = this.token.take() {
                state.waiters.remove(&(this.index, token));
            }
            return Poll::Ready(());
        }
        let token = *this.token.get_or_insert_with(|| {
            let token = state.next_token;
            state.next_token = token.wrapping_add(1);
            token
        });
        state.waiters.insert((this.index, token), cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for IndexWaiter {
    fn drop(&mut self) {
        if let Some(token) = self.token {
            self.wait.lock().waiters.remove(&(self.index, token));
        }
    }
}
