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
    /// revisions), or the store's failure; auth's refusals are [`Error::Auth`].
    #[error(transparent)]
    Apply(cairn_apply::Error),
    #[error(transparent)]
    Proposal(#[from] cairn_proposal::Error),
    #[error(transparent)]
    Auth(#[from] cairn_auth::Error),
}

impl From<cairn_apply::Error> for Error {
    /// Auth's refusals stay auth's, so that the write path can tell a stale auth
    /// revision (which it proposes again) from the rest.
    fn from(error: cairn_apply::Error) -> Self {
        match error {
            cairn_apply::Error::Auth(error) => Self::Auth(error),
            other => Self::Apply(other),
        }
    }
}

impl From<StorageError> for Error {
    fn from(error: StorageError) -> Self {
        Self::Apply(cairn_apply::Error::Storage(error.to_string()))
    }
}

impl From<cairn_mvcc::Error> for Error {
    fn from(error: cairn_mvcc::Error) -> Self {
        Self::Apply(cairn_apply::Error::from(error))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_auth_revision_from_the_applier_stays_an_auth_error_the_write_path_retries() {
        let refused = cairn_apply::Error::Auth(cairn_auth::Error::AuthOldRevision);
        assert_eq!(Error::from(refused), Error::Auth(cairn_auth::Error::AuthOldRevision));
        let status = Status::from(Error::from(cairn_apply::Error::Compacted));
        assert_eq!(status.code(), Code::OutOfRange);
        assert_eq!(status.message(), "etcdserver: mvcc: required revision has been compacted");
        assert_eq!(Status::from(Error::from(cairn_mvcc::Error::FutureRevision)).code(), Code::OutOfRange);
        assert_eq!(Status::from(Error::Apply(cairn_apply::Error::NoSpace)).code(), Code::ResourceExhausted);
    }
}
