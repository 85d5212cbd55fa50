//! Integration tests of `cairn-wal` through its public API: the log and the
//! `raft::Storage` over it, across reopens.

mod t10_storage;
