//! The gate's errors, with etcd's texts and gRPC codes.

/// Why a request did not get its applied result.
///
/// Messages are the texts etcd's clients see; each variant's doc names the gRPC code
/// to answer with, and [`Error::grpc_code`] returns its number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The applied index trails the committed index by more than the gap.
    /// `ResourceExhausted` (etcd itself sends `Unknown` here by accident).
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    /// The encoded request is over the limit. `InvalidArgument`.
    #[error("etcdserver: request is too large")]
    RequestTooLarge {
        /// Length of the encoded request, in bytes.
        size: usize,
        /// The limit it went over.
        limit: usize,
    },
    /// The caller's identity could not be established (an invalid token).
    /// The inner error's code.
    #[error(transparent)]
    Auth(#[from] cairn_auth::Error),
    /// The deadline passed. `Unavailable`.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The deadline passed for a request proposed while the previous leader was
    /// failing. `Unavailable`.
    #[error("etcdserver: request timed out, possibly due to previous leader failure")]
    TimeoutDueToLeaderFail,
    /// The deadline passed and the leader (or, on the leader, a quorum) has not been
    /// connected since the request was proposed. `Unavailable`.
    #[error("etcdserver: request timed out, possibly due to connection lost")]
    TimeoutDueToConnectionLost,
    /// The deadline passed with no leader. `Unavailable`.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// The caller cancelled. `Canceled`.
    #[error("etcdserver: request cancelled")]
    Canceled,
    /// The server is shutting down. `Unavailable`.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// The proposer refused the proposal (raft dropped it, for example during a leader
    /// transfer). `Unavailable`, so that clients retry.
    #[error("raft proposal dropped")]
    ProposalDropped,
    /// A waiter is already registered under the request's ID: IDs must be unique.
    /// `Internal`.
    #[error("etcdserver: duplicate request id {0:x}")]
    DuplicateRequestId(u64),
}

impl Error {
    /// The number of the gRPC status code to answer this error with
    /// (`tonic::Code::from(error.grpc_code())` on the server side).
    pub fn grpc_code(&self) -> i32 {
        const CANCELLED: i32 = 1;
        const INVALID_ARGUMENT: i32 = 3;
        const RESOURCE_EXHAUSTED: i32 = 8;
        const INTERNAL: i32 = 13;
        const UNAVAILABLE: i32 = 14;
        match self {
            Self::TooManyRequests => RESOURCE_EXHAUSTED,
            Self::RequestTooLarge { .. } => INVALID_ARGUMENT,
            Self::Auth(inner) => inner.grpc_code(),
            Self::Timeout
            | Self::TimeoutDueToLeaderFail
            | Self::TimeoutDueToConnectionLost
            | Self::NoLeader
            | Self::Stopped
            | Self::ProposalDropped => UNAVAILABLE,
            Self::Canceled => CANCELLED,
            Self::DuplicateRequestId(_) => INTERNAL,
        }
    }

    /// A short name for metrics.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            Self::TooManyRequests => "too_many_requests",
            Self::RequestTooLarge { .. } => "too_large",
            Self::Auth(_) => "auth",
            Self::Timeout => "timeout",
            Self::TimeoutDueToLeaderFail => "timeout_leader_fail",
            Self::TimeoutDueToConnectionLost => "timeout_connection_lost",
            Self::NoLeader => "no_leader",
            Self::Canceled => "canceled",
            Self::Stopped => "stopped",
            Self::ProposalDropped => "dropped",
            Self::DuplicateRequestId(_) => "duplicate_id",
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
