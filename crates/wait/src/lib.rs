//! Waiting for the apply loop: by request ID ([`Wait`]) and by index ([`IndexWait`]);
//! and linearizable reads waiting for read-index rounds ([`ReadRounds`]).
//!
//! These are etcd's `pkg/wait` `Wait` and `WaitTime`, done with Rust ownership.
//!
//! **Invariant:** an ID is registered exactly as long as its [`Waiter`] is alive and
//! untriggered. A waiter that is dropped (timed out, cancelled, or never polled)
//! removes its own entry, so callers never clean up by hand and the registry cannot
//! leak; an [`IndexWaiter`] likewise leaves nothing behind when dropped.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use cairn_wait::Wait;
//!
//! let wait = Wait::new();
//! let waiter = wait.register(7).expect("7 is not registered yet");
//! assert!(wait.is_registered(7));
//! assert!(wait.trigger(7, "applied"));
//! assert_eq!(waiter.await, Ok("applied"));
//! assert!(!wait.is_registered(7));
//! # });
//! ```

mod index;
mod read;
mod registry;

pub use index::{IndexWait, IndexWaiter};
pub use read::{ReadReply, ReadRounds};
pub use registry::{DEFAULT_SHARDS, Wait, Waiter};

/// What can go wrong when registering or awaiting a waiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The ID already has a live waiter. Request IDs are unique, so this is a bug in
    /// the caller, reported instead of etcd's panic.
    #[error("wait: duplicate id {0:x}")]
    DuplicateId(u64),
    /// The registry was dropped before the ID was triggered.
    #[error("wait: registry closed before the id was triggered")]
    Closed,
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
