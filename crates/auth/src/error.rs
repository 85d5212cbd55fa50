//! The crate's error type, with etcd's texts and gRPC codes.

/// Everything that can go wrong in authentication and authorization.
///
/// Messages are the texts etcd's clients see. Each variant's doc names the gRPC code
/// etcd answers it with; [`Error::grpc_code`] returns that code's number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Auth cannot be enabled without user `root`. `FailedPrecondition`.
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    /// Auth cannot be enabled while `root` lacks role `root`. `FailedPrecondition`.
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    /// `FailedPrecondition`.
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    /// No user given: an anonymous request while auth is enabled, or an empty name.
    /// `InvalidArgument`.
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// `FailedPrecondition`.
    #[error("etcdserver: user name not found")]
    UserNotFound,
    /// `FailedPrecondition`.
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    /// `FailedPrecondition`.
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    /// `InvalidArgument`.
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// `InvalidArgument`.
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    /// Unknown user or wrong password. `InvalidArgument`.
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// A password was given for a user created without one. etcd has no gRPC mapping
    /// for it, so clients see `Unknown` with this text.
    #[error("auth: authentication failed, password was given for no password user")]
    NoPasswordUser,
    /// `PermissionDenied`.
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// `FailedPrecondition`.
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    /// `FailedPrecondition`.
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    /// `FailedPrecondition`.
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    /// The caller's auth revision predates a change to the auth store; clients
    /// re-authenticate on it. `InvalidArgument`.
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
    /// Unknown, expired, altered or foreign token. `Unauthenticated`.
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    /// A change that would lock the cluster out (root) or an invalid permission range.
    /// `InvalidArgument`.
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// A bad `--auth-token` value; the text says what is wrong.
    #[error("auth: invalid auth options: {0}")]
    InvalidAuthOptions(String),
    /// A JWT key that cannot be read or parsed; the text names the file or the problem.
    #[error("auth: invalid key: {0}")]
    InvalidKey(String),
    /// `pub-key` and `priv-key` are not a pair.
    #[error("auth: public and private keys don't match")]
    KeyMismatch,
    /// JWT configured with a public key only: it verifies tokens but cannot issue them.
    #[error("auth: token signing attempted with verify-only key")]
    VerifyOnly,
    /// A bcrypt cost outside 4..=31.
    #[error("invalid bcrypt cost {0}: must be between 4 and 31")]
    InvalidBcryptCost(u32),
    /// bcrypt or JWT signing failed; the text says why.
    #[error("auth: {0}")]
    Crypto(String),
    /// Bytes that are not a snapshot of an [`crate::AuthStore`].
    #[error("auth: invalid snapshot: {0}")]
    InvalidSnapshot(String),
}

impl Error {
    /// The number of the gRPC status code etcd answers this error with
    /// (`tonic::Code::from(error.grpc_code())` on the server side).
    pub fn grpc_code(&self) -> i32 {
        const UNKNOWN: i32 = 2;
        const INVALID_ARGUMENT: i32 = 3;
        const PERMISSION_DENIED: i32 = 7;
        const FAILED_PRECONDITION: i32 = 9;
        const UNAUTHENTICATED: i32 = 16;
        match self {
            Self::RootUserNotExist
            | Self::RootRoleNotExist
            | Self::UserAlreadyExist
            | Self::UserNotFound
            | Self::RoleAlreadyExist
            | Self::RoleNotFound
            | Self::RoleNotGranted
            | Self::PermissionNotGranted
            | Self::AuthNotEnabled => FAILED_PRECONDITION,
            Self::UserEmpty
            | Self::RoleEmpty
            | Self::PermissionNotGiven
            | Self::AuthFailed
            | Self::AuthOldRevision
            | Self::InvalidAuthMgmt => INVALID_ARGUMENT,
            Self::PermissionDenied => PERMISSION_DENIED,
            Self::InvalidAuthToken => UNAUTHENTICATED,
            Self::NoPasswordUser
            | Self::InvalidAuthOptions(_)
            | Self::InvalidKey(_)
            | Self::KeyMismatch
            | Self::VerifyOnly
            | Self::InvalidBcryptCost(_)
            | Self::Crypto(_)
            | Self::InvalidSnapshot(_) => UNKNOWN,
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
