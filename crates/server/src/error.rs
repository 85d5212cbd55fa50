//! The server's errors, with etcd's texts and gRPC codes: the applier's refusals and
//! the store's failures (`cairn-apply`), the gate's (`cairn-proposal`), auth's, and a
//! read whose leadership ended.

use tonic::{Code, Status};

use crate::storage::StorageError;

/// Why a request failed on this server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Error {
    /// A read-index round waiting when leadership changed (etcd's
    /// `ErrLeaderChanged`, which clients retry).
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// A refusal by the state machine (also for reads: compacted or future
    /// revisions), or the store's failure.
    #[error(transparent)]
    Apply(#[from] cairn_apply::Error),
    #[error(transparent)]
    Proposal(#[from] cairn_proposal::Error),
    #[error(transparent)]
    Auth(#[from] cairn_auth::Error),
}

impl From<StorageError> for Error {
    fn from(error: StorageError) -> Self {
        Self::Apply(cairn_apply::Error::Storage(error.to_string()))
    }
}

impl From<cairn_mvcc::Error> for Error {
    fn from(error: cairn_mvcc::Error) -> Self {
        Self::Apply(error.into())
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
            Error::LeaderChanged => Code::Unavailable,
            Error::Apply(inner) => Code::from(inner.grpc_code()),
            Error::Proposal(inner) => Code::from(inner.grpc_code()),
            Error::Auth(inner) => Code::from(inner.grpc_code()),
        };
        Status::new(code, error.to_string())
    }
}
