//! The proposal gate: etcd's `processInternalRaftRequestOnce` as a reusable crate.
//!
//! A write enters [`Gate::propose`] and leaves with the value the apply loop handed
//! back for it, or with exactly one classified [`Error`]. In etcd's order:
//!
//! 1. refuse when the committed index is more than the gap ahead of the applied index
//!    (`etcdserver: too many requests`; twice the gap for priority requests);
//! 2. stamp a [`Header`]: a fresh ID, and unless the request authenticates, the
//!    caller's user and auth revision from the [`AuthSource`];
//! 3. encode, and refuse an encoding over the limit (`etcdserver: request is too
//!    large`);
//! 4. register a waiter under the request's own ID, or else the header ID;
//! 5. propose under the request timeout, or the caller's deadline if sooner;
//! 6. await the applied value, the deadline (classified as etcd does: previous leader
//!    failure, connection lost, no leader, plain timeout), the caller's cancellation, or
//!    shutdown.
//!
//! The gate knows nothing of raft or gRPC: it is generic over a [`Proposer`], an
//! [`IndexSource`], a view of [`Leadership`], an [`AuthSource`] and the [`Request`]
//! type, with in-memory implementations of each in [`memory`]. With the `etcd`
//! feature, `etcd::Proposal` is etcd's `InternalRaftRequest` as a [`Request`].
//! [`NodeStatus`] is a raft loop's side of [`IndexSource`] and [`Leadership`], and
//! [`LeaderLoss`] the other side of a leader requirement: what ends a stream once its
//! member has been leaderless too long.
//!
//! **Invariant:** every request that enters the gate leaves it with the applied
//! result or exactly one classified error, and leaves no waiter behind: the waiter is
//! a drop guard, so no path cleans up by hand.

mod error;
#[cfg(feature = "etcd")]
pub mod etcd;
mod gate;
mod leader_loss;
pub mod memory;
mod metrics;
mod status;
mod traits;

pub use error::{Error, Result};
pub use gate::{Config, DEFAULT_MAX_GAP, DEFAULT_MAX_REQUEST_BYTES, Gate, Parts};
pub use leader_loss::LeaderLoss;
pub use status::NodeStatus;
pub use traits::{AuthSource, Header, IndexSource, Leadership, Proposer, Request};
