//! Who is calling, and which keys they may touch: etcd's auth model, independent of
//! storage and transport.
//!
//! **Invariant (once built):** the auth store is a deterministic state machine whose
//! every mutation bumps the auth revision, and a permission check never grants what
//! etcd would refuse.
//!
//! This crate is being built (issue 4); it exports nothing yet.
