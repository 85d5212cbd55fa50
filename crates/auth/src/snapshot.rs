//! The whole store as bytes, for the server to persist beside its key-value data.
//!
//! The encoding is protobuf, with users and roles laid out as etcd's `authpb.User` and
//! `authpb.Role`, so a snapshot is readable with etcd's definitions.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message;

use crate::store::{AuthStore, Permission, PermissionType, Role, User};
use crate::token::TokenProvider;
use crate::{Error, Result};

#[derive(Clone, PartialEq, Message)]
struct SnapshotPb {
    #[prost(bool, tag = "1")]
    enabled: bool,
    #[prost(uint64, tag = "2")]
    revision: u64,
    #[prost(message, repeated, tag = "3")]
    users: Vec<UserPb>,
    #[prost(message, repeated, tag = "4")]
    roles: Vec<RolePb>,
}

/// etcd's `authpb.User`.
#[derive(Clone, PartialEq, Message)]
struct UserPb {
    #[prost(bytes = "vec", tag = "1")]
    name: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    password: Vec<u8>,
    #[prost(string, repeated, tag = "3")]
    roles: Vec<String>,
    #[prost(message, optional, tag = "4")]
    options: Option<UserOptionsPb>,
}

/// etcd's `authpb.UserAddOptions`.
#[derive(Clone, PartialEq, Message)]
struct UserOptionsPb {
    #[prost(bool, tag = "1")]
    no_password: bool,
}

/// etcd's `authpb.Role`.
#[derive(Clone, PartialEq, Message)]
struct RolePb {
    #[prost(bytes = "vec", tag = "1")]
    name: Vec<u8>,
    #[prost(message, repeated, tag = "2")]
    key_permission: Vec<PermissionPb>,
}

/// etcd's `authpb.Permission`.
#[derive(Clone, PartialEq, Message)]
struct PermissionPb {
    #[prost(int32, tag = "1")]
    perm_type: i32,
    #[prost(bytes = "vec", tag = "2")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    range_end: Vec<u8>,
}

impl AuthStore {
    /// The whole state (enabled flag, revision, users with password hashes, roles) as
    /// bytes. Issued tokens are not included: simple tokens die with the process, as
    /// in etcd, and JWTs need no state.
    pub fn snapshot(&self) -> Vec<u8> {
        let users = self
            .users()
            .iter()
            .map(|(name, user)| UserPb {
                name: name.clone().into_bytes(),
                password: user.password.clone().unwrap_or_default().into_bytes(),
                roles: user.roles.clone(),
                options: Some(UserOptionsPb { no_password: user.password.is_none() }),
            })
            .collect();
        let roles = self
            .roles()
            .iter()
            .map(|(name, role)| RolePb {
                name: name.clone().into_bytes(),
                key_permission: role
                    .permissions
                    .iter()
                    .map(|permission| PermissionPb {
                        perm_type: permission.perm_type as i32,
                        key: permission.key.clone(),
                        range_end: permission.range_end.clone(),
                    })
                    .collect(),
            })
            .collect();
        SnapshotPb { enabled: self.is_enabled(), revision: self.revision(), users, roles }.encode_to_vec()
    }

    /// A store with the state of `snapshot`, issuing tokens with `tokens`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSnapshot`] for bytes that are not a snapshot.
    pub fn restore(snapshot: &[u8], tokens: Arc<dyn TokenProvider>) -> Result<Self> {
        let invalid = |why: String| Error::InvalidSnapshot(why);
        let decoded = SnapshotPb::decode(snapshot).map_err(|error| invalid(error.to_string()))?;
        let mut users = BTreeMap::new();
        for user in decoded.users {
            let name = String::from_utf8(user.name).map_err(|_| invalid("user name is not UTF-8".into()))?;
            let no_password = user.options.is_some_and(|options| options.no_password);
            let password = if no_password {
                None
            } else {
                Some(
                    String::from_utf8(user.password)
                        .map_err(|_| invalid(format!("password hash of {name}")))?,
                )
            };
            let mut roles = user.roles;
            roles.sort();
            roles.dedup();
            users.insert(name, User { password, roles });
        }
        let mut roles = BTreeMap::new();
        for role in decoded.roles {
            let name = String::from_utf8(role.name).map_err(|_| invalid("role name is not UTF-8".into()))?;
            let mut permissions = Vec::with_capacity(role.key_permission.len());
            for permission in role.key_permission {
                let perm_type = PermissionType::from_i32(permission.perm_type).ok_or_else(|| {
                    invalid(format!("permission type {} in role {name}", permission.perm_type))
                })?;
                permissions.push(Permission::new(perm_type, permission.key, permission.range_end));
            }
            permissions.sort_by(|a, b| (&a.key, &a.range_end).cmp(&(&b.key, &b.range_end)));
            roles.insert(name, Role { permissions });
        }
        if decoded.enabled {
            tokens.enable();
        }
        Ok(AuthStore::from_parts(decoded.enabled, decoded.revision.max(1), users, roles, tokens))
    }
}

/// The auth store as etcd's backend keeps it: the `auth` bucket's `authEnabled` and
/// `authRevision`, and the `authUsers` and `authRoles` buckets, by name, of
/// marshalled `authpb.User` and `authpb.Role`. A snapshot taken by
/// [`AuthStore::snapshot`] converts to this and back without loss, which is how a
/// server writes and reads etcd's backup files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdAuthBuckets {
    /// `authEnabled`.
    pub enabled: bool,
    /// `authRevision`.
    pub revision: u64,
    /// `authUsers`: name to marshalled `authpb.User`, by name.
    pub users: Vec<(Vec<u8>, Vec<u8>)>,
    /// `authRoles`: name to marshalled `authpb.Role`, by name.
    pub roles: Vec<(Vec<u8>, Vec<u8>)>,
}

impl EtcdAuthBuckets {
    /// The buckets holding the state of `snapshot` (bytes from
    /// [`AuthStore::snapshot`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSnapshot`] for bytes that are not a snapshot.
    pub fn from_snapshot(snapshot: &[u8]) -> Result<Self> {
        let decoded =
            SnapshotPb::decode(snapshot).map_err(|error| Error::InvalidSnapshot(error.to_string()))?;
        let mut users: Vec<_> =
            decoded.users.iter().map(|user| (user.name.clone(), user.encode_to_vec())).collect();
        let mut roles: Vec<_> =
            decoded.roles.iter().map(|role| (role.name.clone(), role.encode_to_vec())).collect();
        users.sort();
        roles.sort();
        Ok(Self { enabled: decoded.enabled, revision: decoded.revision.max(1), users, roles })
    }

    /// The snapshot (for [`AuthStore::restore`]) holding these buckets' state.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSnapshot`] for a user or role that does not decode or whose
    /// name differs from the key it is stored under.
    pub fn to_snapshot(&self) -> Result<Vec<u8>> {
        let invalid = |why: String| Error::InvalidSnapshot(why);
        let mut users = Vec::with_capacity(self.users.len());
        for (name, bytes) in &self.users {
            let user = UserPb::decode(bytes.as_slice()).map_err(|error| invalid(error.to_string()))?;
            if user.name != *name {
                return Err(invalid(format!("user stored as {}", String::from_utf8_lossy(name))));
            }
            users.push(user);
        }
        let mut roles = Vec::with_capacity(self.roles.len());
        for (name, bytes) in &self.roles {
            let role = RolePb::decode(bytes.as_slice()).map_err(|error| invalid(error.to_string()))?;
            if role.name != *name {
                return Err(invalid(format!("role stored as {}", String::from_utf8_lossy(name))));
            }
            roles.push(role);
        }
        Ok(SnapshotPb { enabled: self.enabled, revision: self.revision.max(1), users, roles }.encode_to_vec())
    }
}

#[cfg(test)]
mod etcd_bucket_tests {
    use super::*;
    use crate::{AuthStore, UserPassword};

    #[test]
    fn a_store_survives_etcds_buckets() {
        let mut store = AuthStore::new();
        store.role_add("reader").unwrap();
        store.role_grant_permission("reader", Permission::prefix(PermissionType::Read, "app/")).unwrap();
        store.user_add("alice", UserPassword::Hashed("$2b$04$abc".into())).unwrap();
        store.user_add("bob", UserPassword::NoPassword).unwrap();
        store.user_grant_role("alice", "reader").unwrap();
        let snapshot = store.snapshot();
        let buckets = EtcdAuthBuckets::from_snapshot(&snapshot).unwrap();
        assert_eq!(
            buckets.users.iter().map(|(name, _)| name.as_slice()).collect::<Vec<_>>(),
            [b"alice".as_slice(), b"bob"]
        );
        assert_eq!(buckets.revision, store.revision());
        assert_eq!(buckets.to_snapshot().unwrap(), snapshot);
        let mut renamed = buckets.clone();
        renamed.users[0].0 = b"mallory".to_vec();
        assert!(renamed.to_snapshot().is_err());
    }
}
