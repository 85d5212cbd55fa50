//! etcd's applier (`etcdserver/apply`): what a committed `InternalRaftRequest` does to
//! a member's state. Puts, deletes and txns through [`cairn_mvcc`]'s requests at the
//! next revision; compactions; lease grants, revocations (every attached key deleted
//! in one revision) and checkpoints through [`cairn_lease`]; auth requests and the
//! permission checks of every write through [`cairn_auth`]; alarms, and what NOSPACE
//! and CORRUPT refuse; the quota; members' published attributes and peer URLs, and
//! the member registry's side of membership changes ([`MemberChange`], with etcd's
//! checks at apply), with the [`PeerChange`]s a transport follows.
//!
//! Everything runs inside a redb write transaction that the caller owns
//! ([`Applier::begin`] … [`Applier::commit`]), so the state machine and its applied
//! index change together: a raft loop applies a `Ready`'s committed entries in one
//! transaction and commits it once. Raft itself stays outside: raft applies a
//! membership change to its configuration, the applier to the registry; deciding
//! when a transaction is made durable is the caller's.
//!
//! The state readers share ([`State`]: the key index, lessor, auth store, alarms and
//! members) is behind locks, each held for the shortest span (a write holds the key
//! index and the lessor together; a reload after a restore holds them all); the changes
//! for watchers and the rows a compaction dropped are handed over after commit.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use cairn_api::etcdserverpb::{InternalRaftRequest, PutRequest};
//! use cairn_apply::{Applied, Applier, Limits, State};
//!
//! let dir = tempfile::tempdir()?;
//! let db = cairn_backend::open(dir.path())?;
//! let state = State::load(&db, cairn_auth::AuthStore::default().tokens().clone())?;
//! let mut applier = Applier::new(state, Limits::default());
//! let txn = db.begin_write()?;
//! let mut batch = applier.begin(&txn, 0, std::time::Instant::now())?;
//! let put = PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() };
//! let request = InternalRaftRequest { put: Some(put), ..Default::default() };
//! let Applied::Put(response) = applier.apply(&mut batch, &request, 1)? else { unreachable!() };
//! assert_eq!(response.header.unwrap().revision, 2);
//! applier.commit(batch, 1)?;
//! txn.commit()?;
//! assert_eq!(applier.take_changes().len(), 1); // for watchers, once committed
//! # Ok(())
//! # }
//! ```
//!
//! **Invariant:** every member that applies the same requests in the same order from
//! the same state reaches the same state and gives the same answers: a request is
//! decided on the applied state (never on a clock or a member's view of the cluster),
//! and a refused request changes nothing. The one exception is etcd's: the quota is
//! measured on this member's own database file, and a write that leaves it over the
//! quota is applied, and answered NOSPACE.

mod applier;
mod membership;
mod state;

pub use applier::{Applier, Batch, Limits};
pub use membership::{MemberChange, PeerChange};
pub use state::{
    SharedAlarms, SharedAuth, SharedLessor, SharedMembers, State, alarms, auth_read, auth_write, lessor,
    load_auth, load_lessor, members, save_auth,
};

use cairn_api::etcdserverpb::{
    AlarmResponse, CompactionResponse, DeleteRangeResponse, LeaseCheckpointResponse, LeaseGrantResponse,
    LeaseRevokeResponse, PutResponse, TxnResponse,
};

/// What applying a request gives back to whoever proposed it.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum Applied {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    LeaseCheckpoint(LeaseCheckpointResponse),
    Auth(cairn_auth::etcd::AuthApplied),
    /// A member's published attributes or new peer URLs were recorded.
    MemberAttributes,
    Alarm(AlarmResponse),
}

/// Why a request was refused when applied, with etcd's texts. A refused request
/// changed nothing, except [`Error::NoSpace`] after the quota (see its text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A put with `ignore_value` or `ignore_lease` of a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A compaction at or below the compaction revision.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// A compaction past the current revision.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// A lease that does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A grant of an ID in use.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A grant over etcd's largest TTL.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// A member update of a member that is not (or no longer) in the cluster.
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// The write would grow a store that is out of space, or left it over its quota
    /// (it was applied: etcd's `quotaApplierV3` answers so after the fact).
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// A CORRUPT alarm is raised: nothing changes the store until it is cleared.
    #[error("etcdserver: corrupt cluster")]
    CorruptCluster,
    /// The caller may not make this request, or auth refused it.
    #[error(transparent)]
    Auth(#[from] cairn_auth::Error),
    /// The store failed, or the log holds a request this member cannot apply.
    #[error("etcdserver: {0}")]
    Storage(String),
}

impl Error {
    /// The gRPC status code etcd answers this error with (as an `i32`, so that the
    /// crate needs no gRPC library).
    pub fn grpc_code(&self) -> i32 {
        const INVALID_ARGUMENT: i32 = 3;
        const NOT_FOUND: i32 = 5;
        const RESOURCE_EXHAUSTED: i32 = 8;
        const FAILED_PRECONDITION: i32 = 9;
        const OUT_OF_RANGE: i32 = 11;
        const INTERNAL: i32 = 13;
        const DATA_LOSS: i32 = 15;
        match self {
            Self::KeyNotFound => INVALID_ARGUMENT,
            Self::Compacted | Self::FutureRevision | Self::LeaseTtlTooLarge => OUT_OF_RANGE,
            Self::LeaseNotFound | Self::MemberNotFound => NOT_FOUND,
            Self::LeaseExists => FAILED_PRECONDITION,
            Self::NoSpace => RESOURCE_EXHAUSTED,
            Self::CorruptCluster => DATA_LOSS,
            Self::Auth(inner) => inner.grpc_code(),
            Self::Storage(_) => INTERNAL,
        }
    }
}

impl From<cairn_mvcc::Error> for Error {
    fn from(error: cairn_mvcc::Error) -> Self {
        match error {
            cairn_mvcc::Error::Compacted => Self::Compacted,
            cairn_mvcc::Error::FutureRevision => Self::FutureRevision,
            cairn_mvcc::Error::KeyNotFound => Self::KeyNotFound,
            cairn_mvcc::Error::LeaseNotFound => Self::LeaseNotFound,
            other => Self::Storage(other.to_string()),
        }
    }
}

macro_rules! from_redb {
    ($($error:ty),*) => {$(
        impl From<$error> for Error {
            fn from(error: $error) -> Self {
                cairn_mvcc::Error::from(error).into()
            }
        }
    )*};
}
from_redb!(redb::Error, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);
