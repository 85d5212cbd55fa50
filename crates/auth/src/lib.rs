//! Who is calling, and which keys they may touch: etcd's auth model, independent of
//! storage and transport.
//!
//! - [`AuthStore`]: users, roles, key-range permissions, the enabled flag and the auth
//!   revision, as a deterministic state machine. The server applies every mutation
//!   through raft, in log order, on every member, and persists [`AuthStore::snapshot`]
//!   beside its key-value data.
//! - [`TokenProvider`]: turns a token into an [`AuthInfo`]; [`SimpleTokens`] (random
//!   tokens kept in memory with a TTL) and [`JwtTokens`] (signed, self-contained), chosen
//!   by etcd's `--auth-token` syntax with [`provider_from_spec`].
//! - [`token_from_metadata`]: the token of a request, from its metadata as key/value
//!   pairs (the server adapts gRPC metadata to this).
//! - `etcd` (feature `etcd`): etcd's auth requests and the permission checks of its
//!   writes, on `cairn-api`'s message types (no gRPC).
//! - [`hash_password`] and [`PasswordCheck`]: bcrypt, run by the server before it
//!   proposes (so a plain password never enters the raft log) and outside any lock
//!   that appliers take.
//!
//! **Invariant:** every mutation of the [`AuthStore`] bumps its revision, so a caller
//! whose [`AuthInfo`] predates the change is refused with `etcdserver: revision of auth
//! store is old` and must re-authenticate; a permission check never grants what etcd
//! would refuse. Given the same mutations in the same order, two stores are equal.
//!
//! ```
//! use cairn_auth::{Access, AuthInfo, AuthStore, Permission, PermissionType, UserPassword};
//!
//! let mut store = AuthStore::new();
//! store.user_add("root", UserPassword::NoPassword)?;
//! store.role_add("root")?;
//! store.user_grant_role("root", "root")?;
//! store.user_add("app", UserPassword::NoPassword)?;
//! store.role_add("app-rw")?;
//! store.role_grant_permission("app-rw", Permission::prefix(PermissionType::ReadWrite, b"/app/"))?;
//! store.user_grant_role("app", "app-rw")?;
//! store.enable()?;
//!
//! let app = AuthInfo::new("app", store.revision());
//! assert!(store.is_permitted(Some(&app), b"/app/config", b"", Access::Write).is_ok());
//! let outside = store.is_permitted(Some(&app), b"/other", b"", Access::Read).unwrap_err();
//! assert_eq!(outside.to_string(), "etcdserver: permission denied");
//! # Ok::<(), cairn_auth::Error>(())
//! ```

mod clock;
mod error;
#[cfg(feature = "etcd")]
pub mod etcd;
mod info;
mod password;
mod perms;
mod snapshot;
pub use snapshot::EtcdAuthBuckets;
mod store;
mod token;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use info::{AuthInfo, token_from_metadata};
pub use password::{DEFAULT_BCRYPT_COST, MAX_BCRYPT_COST, MIN_BCRYPT_COST, PasswordCheck, hash_password};
pub use store::{Access, AuthStore, Permission, PermissionType, ROOT, UserPassword, prefix_end};
pub use token::{
    DEFAULT_JWT_TTL, DEFAULT_SIMPLE_TOKEN_TTL, JwtTokens, SignMethod, SimpleTokens, TokenProvider,
    parse_go_duration, provider_from_spec, simple_token_index,
};
