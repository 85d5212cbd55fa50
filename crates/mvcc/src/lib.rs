//! etcd's multi-version key-value model on [redb](https://docs.rs/redb): revisions,
//! every version of every key kept until compacted, ranges at any revision, writes
//! that share one revision (etcd's put, delete-range and txn requests applied as etcd
//! applies them), compaction, the change feed that watchers follow, etcd's
//! `HashKV` and its [`corrupt`] verdicts, and [`check`], etcd's checks of a request
//! before it is proposed.
//!
//! A store revision counts write requests (a txn is one revision). Each key carries
//! the revision it was created at, the revision of its last change and its version
//! (changes since creation). As in etcd, changes are stored by revision in the `kv`
//! table (appended to at its end, which keeps each commit's dirty pages few) and found
//! by key through an in-memory [`KeyIndex`] (etcd's `treeIndex`), rebuilt at start.
//!
//! Writes happen inside a redb write transaction that the caller owns, so a server
//! commits the key-value state together with whatever else it keeps (its applied
//! index, leases, members). No raft, no gRPC, no async runtime: the feed is a
//! `tokio::sync::broadcast` channel, which needs none.
//!
//! **Invariant:** a read at revision `r` sees every key exactly as the writes up to `r`
//! left it, or fails because `r` was compacted; a change stays readable until a
//! compaction at or above a later change of its key (or its deletion) drops it.
//!
//! ```
//! use cairn_mvcc::{KeyIndex, KeySpan, Writer};
//!
//! let dir = tempfile::tempdir()?;
//! let db = redb::Database::create(dir.path().join("kv.redb"))?;
//! let mut index = KeyIndex::default();
//! let txn = db.begin_write()?;
//! {
//!     let mut tables = cairn_mvcc::open_tables(&txn)?;
//!     // Revision 2: two puts in one write (the store starts at revision 1).
//!     let mut writer = Writer::new(&mut tables.kv, &mut index, 2);
//!     writer.put(b"a", b"1".to_vec(), 0)?;
//!     writer.put(b"b", b"2".to_vec(), 0)?;
//!     // Revision 3: a's second version.
//!     let mut writer = Writer::new(&mut tables.kv, &mut index, 3);
//!     writer.put(b"a", b"3".to_vec(), 0)?;
//!     let at_2 = cairn_mvcc::range(&tables.kv, &index, KeySpan::From(b""), 2)?;
//!     assert_eq!(at_2.iter().map(|kv| kv.value.as_slice()).collect::<Vec<_>>(), [b"1", b"2"]);
//!     let a = cairn_mvcc::live(&tables.kv, &index, b"a", 3)?.unwrap();
//!     assert_eq!((a.version, a.create_revision, a.mod_revision), (2, 2, 3));
//! }
//! txn.commit()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod backend;
pub mod bbolt;
pub mod check;
pub mod compactor;
pub mod corrupt;
mod feed;
mod requests;
mod store;
pub mod watch;

pub use feed::{Batch, Hub};
pub use requests::{compare_holds, delete_range, put, range_request, range_revision, txn};
pub use store::*;

use redb::TableDefinition;

/// Every change of every key by position (revision, place in the revision) to an
/// encoded `mvccpb.KeyValue`; a deletion is a tombstone with version 0.
pub const KV: TableDefinition<'_, (u64, u32), &[u8]> = TableDefinition::new("kv");
/// Counters: `revision` and `compact_revision` (a server may keep its own here too).
pub const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// Why the store could not be read or written: redb's error, or data that does not
/// decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// redb failed.
    #[error("storage: {0}")]
    Redb(String),
    /// Stored data that does not decode, or an index that names a missing change.
    #[error("storage: corrupt {0}")]
    Corrupt(&'static str),
    /// A read at a revision that a compaction dropped.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// A read at a revision the store has not reached.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// A put with `ignore_value` or `ignore_lease` of a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A put under a lease that does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A bbolt file (etcd's backend format) that could not be written or read.
    #[error("{0}")]
    Backend(String),
}

macro_rules! from_redb {
    ($($error:ty),*) => {$(
        impl From<$error> for Error {
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

/// The store's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
