//! Everything on disk: the write-ahead log (raft entries and hard state) in
//! `member/wal`, and one redb database in `member/cairn.redb` holding the MVCC
//! key-value state, the applied index and the rest of the state machine.
//!
//! An entry is in the fsync'd log before it is applied. The state machine and its
//! applied index change in one transaction, committed durably only now and then: a
//! crash loses the state since the last durable commit, and a restart replays its
//! entries from the log, so no entry is applied twice or skipped.

pub(crate) use cairn_utl::raft_state as raft_log;

pub(crate) use cairn_backend::{KV, META, Store, backup, defrag, snapshot};
pub(crate) use cairn_mvcc as mvcc;

/// Storage failures: redb's, the write-ahead log's, or undecodable data, with
/// etcd-like texts (`storage: …`); the server cannot go on after one. `cairn-utl`'s
/// error, which covers every layer below the server.
pub(crate) use cairn_utl::Error as StorageError;
