//! etcd's auth requests on the store (feature `etcd`): the permission checks of a
//! write as etcd makes them at apply time, and the auth requests of an
//! `InternalRaftRequest` applied with etcd's rules on who may make them.

use cairn_api::authpb;
use cairn_api::etcdserverpb::request_op::Request as Op;
use cairn_api::etcdserverpb::{InternalRaftRequest, TxnRequest};

use crate::{Access, AuthInfo, AuthStore, Error, Permission, PermissionType, Result, UserPassword};

/// etcd's permission checks for a write request, at apply time: write access to
/// every key put or deleted, read access to what a put or delete returns with
/// `prev_kv`, to every range read and to every key compared, in both branches of
/// every txn.
pub fn check_write(store: &AuthStore, info: &AuthInfo, request: &InternalRaftRequest) -> Result<()> {
    let info = Some(info);
    if let Some(put) = &request.put {
        store.is_permitted(info, &put.key, &[], Access::Write)?;
        if put.prev_kv {
            store.is_permitted(info, &put.key, &[], Access::Read)?;
        }
    } else if let Some(delete) = &request.delete_range {
        store.is_permitted(info, &delete.key, &delete.range_end, Access::Write)?;
        if delete.prev_kv {
            store.is_permitted(info, &delete.key, &delete.range_end, Access::Read)?;
        }
    } else if let Some(txn) = &request.txn {
        check_txn(store, info, txn)?;
    }
    Ok(())
}

/// Checks that `info` may write every key in `keys` (the keys attached to a lease).
pub fn check_lease_keys(store: &AuthStore, info: &AuthInfo, keys: &[Vec<u8>]) -> Result<()> {
    for key in keys {
        store.is_permitted(Some(info), key, &[], Access::Write)?;
    }
    Ok(())
}

fn check_txn(store: &AuthStore, info: Option<&AuthInfo>, txn: &TxnRequest) -> Result<()> {
    for compare in &txn.compare {
        store.is_permitted(info, &compare.key, &compare.range_end, Access::Read)?;
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match &op.request {
            Some(Op::RequestRange(range)) => {
                store.is_permitted(info, &range.key, &range.range_end, Access::Read)?
            }
            Some(Op::RequestPut(put)) => {
                store.is_permitted(info, &put.key, &[], Access::Write)?;
                if put.prev_kv {
                    store.is_permitted(info, &put.key, &[], Access::Read)?;
                }
            }
            Some(Op::RequestDeleteRange(delete)) => {
                store.is_permitted(info, &delete.key, &delete.range_end, Access::Write)?;
                if delete.prev_kv {
                    store.is_permitted(info, &delete.key, &delete.range_end, Access::Read)?;
                }
            }
            Some(Op::RequestTxn(nested)) => check_txn(store, info, nested)?,
            None => {}
        }
    }
    Ok(())
}

/// What applying an auth request gives back.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthApplied {
    /// The change was made.
    Done,
    /// `AuthStatus`.
    Status {
        /// Whether auth is enabled.
        enabled: bool,
        /// The auth revision.
        revision: u64,
    },
    /// `Authenticate`: the token issued.
    Token(String),
    /// `UserGet`: the user's roles.
    Roles(Vec<String>),
    /// `UserList` or `RoleList`.
    Names(Vec<String>),
    /// `RoleGet`: the role's permissions.
    Permissions(Vec<authpb::Permission>),
}

/// Whether `request` changes or reads the auth store (or authenticates).
pub fn is_auth_request(request: &InternalRaftRequest) -> bool {
    request.auth_enable.is_some()
        || request.auth_disable.is_some()
        || request.auth_status.is_some()
        || request.authenticate.is_some()
        || request.auth_user_add.is_some()
        || request.auth_user_delete.is_some()
        || request.auth_user_change_password.is_some()
        || request.auth_user_grant_role.is_some()
        || request.auth_user_revoke_role.is_some()
        || request.auth_user_get.is_some()
        || request.auth_user_list.is_some()
        || request.auth_role_add.is_some()
        || request.auth_role_delete.is_some()
        || request.auth_role_get.is_some()
        || request.auth_role_list.is_some()
        || request.auth_role_grant_permission.is_some()
        || request.auth_role_revoke_permission.is_some()
}

/// Applies an auth request, if `request` is one, checking the proposer's rights as
/// etcd does. `index` is the entry's raft index, which simple tokens are named after.
pub fn apply(
    store: &mut AuthStore,
    info: &AuthInfo,
    request: &InternalRaftRequest,
    index: u64,
) -> Option<Result<AuthApplied>> {
    let admin = |store: &AuthStore| store.is_admin(Some(info));
    let done = |result: Result<()>| result.map(|()| AuthApplied::Done);
    let result = if request.auth_enable.is_some() {
        admin(store).and_then(|()| done(store.enable()))
    } else if request.auth_disable.is_some() {
        admin(store).map(|()| {
            store.disable();
            AuthApplied::Done
        })
    } else if request.auth_status.is_some() {
        Ok(AuthApplied::Status { enabled: store.is_enabled(), revision: store.revision() })
    } else if let Some(authenticate) = &request.authenticate {
        store.authenticate(&authenticate.name, &authenticate.simple_token, index).map(AuthApplied::Token)
    } else if let Some(add) = &request.auth_user_add {
        admin(store).and_then(|()| {
            let no_password = add.options.as_ref().is_some_and(|options| options.no_password);
            let password = if no_password {
                UserPassword::NoPassword
            } else {
                UserPassword::Hashed(add.hashed_password.clone())
            };
            done(store.user_add(&add.name, password))
        })
    } else if let Some(delete) = &request.auth_user_delete {
        admin(store).and_then(|()| done(store.user_delete(&delete.name)))
    } else if let Some(change) = &request.auth_user_change_password {
        admin(store).and_then(|()| {
            done(
                store
                    .user_change_password(&change.name, UserPassword::Hashed(change.hashed_password.clone())),
            )
        })
    } else if let Some(grant) = &request.auth_user_grant_role {
        admin(store).and_then(|()| done(store.user_grant_role(&grant.user, &grant.role)))
    } else if let Some(revoke) = &request.auth_user_revoke_role {
        admin(store).and_then(|()| done(store.user_revoke_role(&revoke.name, &revoke.role)))
    } else if let Some(get) = &request.auth_user_get {
        // Users may read their own roles; reading anyone else's needs root.
        let allowed = if info.username == get.name { Ok(()) } else { admin(store) };
        allowed.and_then(|()| store.user_get(&get.name).map(AuthApplied::Roles))
    } else if request.auth_user_list.is_some() {
        admin(store).map(|()| AuthApplied::Names(store.user_list()))
    } else if let Some(add) = &request.auth_role_add {
        admin(store).and_then(|()| done(store.role_add(&add.name)))
    } else if let Some(delete) = &request.auth_role_delete {
        admin(store).and_then(|()| done(store.role_delete(&delete.role)))
    } else if let Some(get) = &request.auth_role_get {
        // Holders of a role may read it; anyone else needs root.
        let allowed = if store.has_role(&info.username, &get.role) { Ok(()) } else { admin(store) };
        allowed.and_then(|()| {
            let permissions = store.role_get(&get.role)?;
            Ok(AuthApplied::Permissions(permissions.into_iter().map(to_wire).collect()))
        })
    } else if request.auth_role_list.is_some() {
        admin(store).map(|()| AuthApplied::Names(store.role_list()))
    } else if let Some(grant) = &request.auth_role_grant_permission {
        admin(store).and_then(|()| match &grant.perm {
            None => Err(Error::PermissionNotGiven),
            Some(permission) => {
                let perm_type =
                    PermissionType::from_i32(permission.perm_type).ok_or(Error::PermissionNotGiven)?;
                let permission =
                    Permission::new(perm_type, permission.key.clone(), permission.range_end.clone());
                done(store.role_grant_permission(&grant.name, permission))
            }
        })
    } else if let Some(revoke) = &request.auth_role_revoke_permission {
        admin(store)
            .and_then(|()| done(store.role_revoke_permission(&revoke.role, &revoke.key, &revoke.range_end)))
    } else {
        return None;
    };
    Some(result)
}

fn to_wire(permission: Permission) -> authpb::Permission {
    authpb::Permission {
        perm_type: permission.perm_type as i32,
        key: permission.key,
        range_end: permission.range_end,
    }
}
