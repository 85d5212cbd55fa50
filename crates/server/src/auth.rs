//! Auth on the server: the auth store applied through raft and persisted with the
//! key-value data, and the permission checks of every request.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use cairn_api::authpb;
use cairn_api::etcdserverpb::request_op::Request as Op;
use cairn_api::etcdserverpb::{InternalRaftRequest, TxnRequest};
use cairn_auth::{Access, AuthInfo, AuthStore, Permission, PermissionType, TokenProvider, UserPassword};
use redb::{Database, ReadableDatabase, WriteTransaction};

use crate::error::Error;
use crate::storage::{AUTH, StorageError};

/// The auth store, shared by the apply loop (writer) and request handlers (readers).
pub(crate) type SharedAuth = Arc<RwLock<AuthStore>>;

/// The metadata key under which the server passes a client certificate's common name
/// to the gate. Clients cannot set it: only `token` and `authorization` are taken
/// from their metadata.
pub(crate) const CERTIFICATE_USER: &str = "cairn-certificate-user";

/// Who is calling: the token's user, or else a verified client certificate's common
/// name at the current auth revision; `None` when auth is disabled or neither is given.
pub(crate) fn caller(
    store: &AuthStore,
    pairs: &[(&str, &str)],
) -> cairn_auth::Result<Option<cairn_auth::AuthInfo>> {
    if let Some(info) = store.auth_info(pairs.iter().copied())? {
        return Ok(Some(info));
    }
    let certified = pairs.iter().find(|(key, _)| *key == CERTIFICATE_USER).map(|(_, name)| *name);
    Ok(certified.filter(|_| store.is_enabled()).map(|name| cairn_auth::AuthInfo::new(name, store.revision())))
}

/// The gate's view of who is calling.
#[derive(Clone)]
pub(crate) struct ServerAuth(pub(crate) SharedAuth);

impl cairn_proposal::AuthSource for ServerAuth {
    fn auth_info(&self, metadata: &[(&str, &str)]) -> cairn_auth::Result<Option<cairn_auth::AuthInfo>> {
        caller(&read(&self.0), metadata)
    }
}

pub(crate) fn read(auth: &SharedAuth) -> RwLockReadGuard<'_, AuthStore> {
    auth.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn write(auth: &SharedAuth) -> RwLockWriteGuard<'_, AuthStore> {
    auth.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The auth store saved in `db`, or a new one, issuing tokens with `tokens`.
pub(crate) fn load(db: &Database, tokens: Arc<dyn TokenProvider>) -> Result<AuthStore, StorageError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(AUTH)?;
    let saved = redb::ReadableTable::get(&table, "store")?;
    match saved {
        Some(bytes) => {
            AuthStore::restore(bytes.value(), tokens).map_err(|_| StorageError::Corrupt("auth store"))
        }
        None => Ok(AuthStore::with_tokens(tokens)),
    }
}

/// Saves the auth store in `txn`, beside the applied index it corresponds to.
pub(crate) fn save(txn: &WriteTransaction, store: &AuthStore) -> Result<(), StorageError> {
    txn.open_table(AUTH)?.insert("store", store.snapshot().as_slice())?;
    Ok(())
}

/// The identity a request was proposed with.
pub(crate) fn proposer_of(request: &InternalRaftRequest) -> AuthInfo {
    match &request.header {
        Some(header) => AuthInfo::new(header.username.clone(), header.auth_revision),
        None => AuthInfo::new("", 0),
    }
}

/// etcd's permission checks for a write request, at apply time: write access to
/// every key put or deleted, read access to what a put or delete returns with
/// `prev_kv`, to every range read and to every key compared, in both branches of
/// every txn.
pub(crate) fn check_write(
    store: &AuthStore,
    info: &AuthInfo,
    request: &InternalRaftRequest,
) -> Result<(), Error> {
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
pub(crate) fn check_lease_keys(store: &AuthStore, info: &AuthInfo, keys: &[Vec<u8>]) -> Result<(), Error> {
    for key in keys {
        store.is_permitted(Some(info), key, &[], Access::Write)?;
    }
    Ok(())
}

fn check_txn(store: &AuthStore, info: Option<&AuthInfo>, txn: &TxnRequest) -> Result<(), Error> {
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
pub(crate) enum AuthApplied {
    Done,
    Status { enabled: bool, revision: u64 },
    Token(String),
    Roles(Vec<String>),
    Names(Vec<String>),
    Permissions(Vec<authpb::Permission>),
}

/// Whether `request` changes or reads the auth store (or authenticates).
pub(crate) fn is_auth_request(request: &InternalRaftRequest) -> bool {
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
pub(crate) fn apply(
    store: &mut AuthStore,
    info: &AuthInfo,
    request: &InternalRaftRequest,
    index: u64,
) -> Option<Result<AuthApplied, Error>> {
    let admin = |store: &AuthStore| store.is_admin(Some(info)).map_err(Error::from);
    let done = |result: cairn_auth::Result<()>| result.map(|()| AuthApplied::Done).map_err(Error::from);
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
        store
            .authenticate(&authenticate.name, &authenticate.simple_token, index)
            .map(AuthApplied::Token)
            .map_err(Error::from)
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
        allowed.and_then(|()| store.user_get(&get.name).map(AuthApplied::Roles).map_err(Error::from))
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
            None => Err(cairn_auth::Error::PermissionNotGiven.into()),
            Some(permission) => {
                let perm_type = PermissionType::from_i32(permission.perm_type)
                    .ok_or(cairn_auth::Error::PermissionNotGiven)?;
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
