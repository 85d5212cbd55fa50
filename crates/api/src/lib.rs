//! etcd's v3 wire API: the `etcdserverpb`, `mvccpb`, `authpb`, `v3lockpb` and
//! `v3electionpb` protobuf packages as Rust types, with tonic clients and servers for
//! the eight services (`KV`, `Watch`, `Lease`, `Cluster`, `Maintenance`, `Auth`,
//! `Lock`, `Election`), Cairn's internal raft request, and the encoded descriptors
//! (`FILE_DESCRIPTOR_SET`). Every service decodes through `codec::EtcdCodec`, which
//! bounds a txn's nesting before decoding (prost's own depth limit is off).
//!
//! **Invariant:** package, service, message and field names, field numbers and types
//! are etcd's (v3.6), so that etcd's own clients talk to Cairn unchanged. The
//! `.proto` files under `proto/` are ours, written from etcd's published wire
//! contract; code is generated at build time by `protox` and `tonic-prost-build`, so
//! no system `protoc` is needed.
//!
//! The `grpc` feature (on by default) generates the tonic clients and servers; without
//! it the crate holds the message types alone, for crates that use etcd's types but
//! no transport (`cairn-mvcc`).
//!
//! Services that a server does not implement answer `Unimplemented` (the generated
//! default methods), as an etcd of an older version would.
//!
//! `cairnpb` is Cairn's own: the `Peer` service that carries raft messages between
//! members, `Membership` for joining members, and `Leases` for lease calls a member
//! forwards to the leader. It is not part of etcd's API.

#![allow(missing_docs, unreachable_pub, clippy::all, rust_2018_idioms)]

/// Every package's descriptors, as an encoded `google.protobuf.FileDescriptorSet`:
/// for tools that work from the schema at run time (reflection, JSON mapping).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

#[cfg(feature = "grpc")]
pub mod codec;

#[cfg(feature = "grpc")]
include!(concat!(env!("OUT_DIR"), "/grpc/mod.rs"));
#[cfg(not(feature = "grpc"))]
include!(concat!(env!("OUT_DIR"), "/messages/mod.rs"));
