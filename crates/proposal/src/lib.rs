//! The proposal gate: etcd's `processInternalRaftRequestOnce`, generic over what
//! proposes, what reports indexes and leadership, and where callers' identities come
//! from. It knows nothing of raft or gRPC.
//!
//! **Invariant (once built):** every request that enters the gate leaves it with the
//! applied result or exactly one classified error, and leaves no waiter behind.
//!
//! This crate is being built (issue 5); it exports nothing yet.
