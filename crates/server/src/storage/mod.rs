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

/// Storage failures: redb's, or undecodable data. The server cannot go on after one.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StorageError {
    #[error("storage: {0}")]
    Redb(String),
    #[error("storage: corrupt {0}")]
    Corrupt(&'static str),
    /// Damage in the write-ahead log that a torn write cannot explain: reading on
    /// would silently drop acknowledged entries, so the member refuses to start.
    #[error("storage: corrupt write-ahead log: {0}")]
    CorruptWal(String),
}

impl From<cairn_wal::Error> for StorageError {
    fn from(error: cairn_wal::Error) -> Self {
        match error {
            cairn_wal::Error::Undecodable(what) => Self::Corrupt(what),
            cairn_wal::Error::Corrupt(why) => Self::CorruptWal(why),
            other => Self::Redb(other.to_string()),
        }
    }
}

impl From<cairn_utl::Error> for StorageError {
    fn from(error: cairn_utl::Error) -> Self {
        match error {
            cairn_utl::Error::Backend(error) => error.into(),
            cairn_utl::Error::Wal(error) => error.into(),
            cairn_utl::Error::Corrupt(what) => Self::Corrupt(what),
            other => Self::Redb(other.to_string()),
        }
    }
}

impl From<cairn_mvcc::Error> for StorageError {
    fn from(error: cairn_mvcc::Error) -> Self {
        match error {
            cairn_mvcc::Error::Corrupt(what) => Self::Corrupt(what),
            other => Self::Redb(other.to_string().trim_start_matches("storage: ").to_owned()),
        }
    }
}

macro_rules! from_redb {
    ($($error:ty),*) => {$(
        impl From<$error> for StorageError {
            fn from(error: $error) -> Self {
                Self::Redb(error.to_string())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);
