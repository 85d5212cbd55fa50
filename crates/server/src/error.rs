//! The server's errors, with etcd's texts and gRPC codes.

use tonic::{Code, Status};

use crate::storage::StorageError;

/// Why a request failed on this server (apart from the gate's and auth's errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Error {
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// A CORRUPT alarm is raised: writes are refused until it is cleared.
    #[error("etcdserver: corrupt cluster")]
    CorruptCluster,
    #[error("etcdserver: {0}")]
    Storage(String),
    #[error(transparent)]
    Proposal(#[from] cairn_proposal::Error),
    #[error(transparent)]
    Auth(#[from] cairn_auth::Error),
}

impl From<StorageError> for Error {
    fn from(error: StorageError) -> Self {
        Self::Storage(error.to_string())
    }
}

impl From<cairn_apply::Error> for Error {
    fn from(error: cairn_apply::Error) -> Self {
        use cairn_apply::Error as Refused;
        match error {
            Refused::KeyNotFound => Self::KeyNotFound,
            Refused::Compacted => Self::Compacted,
            Refused::FutureRevision => Self::FutureRevision,
            Refused::LeaseNotFound => Self::LeaseNotFound,
            Refused::LeaseExists => Self::LeaseExists,
            Refused::LeaseTtlTooLarge => Self::LeaseTtlTooLarge,
            Refused::MemberNotFound => Self::MemberNotFound,
            Refused::NoSpace => Self::NoSpace,
            Refused::CorruptCluster => Self::CorruptCluster,
            Refused::Auth(error) => Self::Auth(error),
            Refused::Storage(why) => Self::Storage(why),
            other => Self::Storage(other.to_string()),
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
            other => StorageError::from(other).into(),
        }
    }
}

impl From<redb::StorageError> for Error {
    fn from(error: redb::StorageError) -> Self {
        StorageError::from(error).into()
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let code = match &error {
            Error::KeyNotFound => Code::InvalidArgument,
            Error::Compacted | Error::FutureRevision => Code::OutOfRange,
            Error::LeaseNotFound => Code::NotFound,
            Error::LeaseExists => Code::FailedPrecondition,
            Error::LeaseTtlTooLarge => Code::OutOfRange,
            Error::LeaderChanged => Code::Unavailable,
            Error::MemberNotFound => Code::NotFound,
            Error::NoSpace => Code::ResourceExhausted,
            Error::CorruptCluster => Code::DataLoss,
            Error::Storage(_) => Code::Internal,
            Error::Proposal(inner) => Code::from(inner.grpc_code()),
            Error::Auth(inner) => Code::from(inner.grpc_code()),
        };
        Status::new(code, error.to_string())
    }
}
