//! What etcd's `etcdutl` does for an etcd data dir, for a Cairn member's: the raft
//! state kept beside the state machine and the recovery of raft-rs's log from it at
//! start, and backups in etcd's format, saved from any etcd v3 endpoint
//! (`etcdctl snapshot save`), inspected (`etcdutl snapshot status`) and restored into
//! the data dir of one member of a new cluster (`etcdutl snapshot restore`).
//!
//! A member's data dir holds the write-ahead log of [`cairn_wal`] and one redb
//! database with the tables of [`cairn_backend`]. [`raft_state`] is what joins them:
//! the conf state and the point the log restarted at after a snapshot, written in the
//! state machine's own transactions. [`bootstrap`] decides what a member starts as:
//! the membership its data dir holds, or that of the new cluster or running cluster
//! its flags name. [`snapshot`] builds and reads backups; [`Command`] is the
//! `snapshot` command line that the `cairn` binary carries.
//!
//! ```no_run
//! # fn run() -> Result<(), cairn_utl::Error> {
//! use std::path::Path;
//! // `etcdutl snapshot restore backup.db --name m1 --initial-cluster ...`
//! let cluster = cairn_utl::snapshot::NewCluster {
//!     name: "m1".into(),
//!     initial_cluster: "m1=http://10.0.0.1:2380,m2=http://10.0.0.2:2380".into(),
//!     token: "prod".into(),
//!     peer_urls: "http://10.0.0.1:2380".into(),
//! };
//! let done = cairn_utl::snapshot::restore(Path::new("backup.db"), Path::new("m1.cairn"), &cluster, false)?;
//! println!("restored at revision {} into cluster {:x}", done.restored.revisions.current, done.cluster_id);
//! # Ok(())
//! # }
//! ```
//!
//! **Invariant:** a restore either builds the whole data dir, with every member of
//! the new cluster starting from the same state and the same raft index, or leaves no
//! data dir behind; a backup is only ever kept under its name once its SHA-256 trailer
//! matched what was received.

pub mod bootstrap;
mod cli;
pub mod raft_state;
pub mod snapshot;

pub use cli::{Command, Snapshot, run};

/// What can go wrong with a data dir or a backup.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend: redb, undecodable state, or a backup file that is not one.
    #[error(transparent)]
    Backend(#[from] cairn_mvcc::Error),
    /// The write-ahead log.
    #[error(transparent)]
    Wal(#[from] cairn_wal::Error),
    /// A raft record in the backend that does not decode.
    #[error("storage: corrupt {0}")]
    Corrupt(&'static str),
    /// A file or directory that could not be read or written.
    #[error("{context}: {error}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The system's error (in the text, so not also a `source`).
        error: std::io::Error,
    },
    /// A refusal with etcd's text: a flag that does not fit, a data dir that is not
    /// empty, an endpoint's error, a stream that ended without its hash.
    #[error("{0}")]
    Refused(String),
}

impl Error {
    fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |error| Self::Io { context, error }
    }
}

macro_rules! from_redb {
    ($($error:ty),*) => {$(
        impl From<$error> for Error {
            fn from(error: $error) -> Self {
                Self::Backend(error.into())
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
