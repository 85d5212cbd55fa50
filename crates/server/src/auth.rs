//! Auth on the server: the auth store applied through raft and persisted with the
//! key-value data, and the permission checks of every request.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use cairn_api::etcdserverpb::InternalRaftRequest;
pub(crate) use cairn_auth::etcd::{AuthApplied, apply, check_lease_keys, check_write, is_auth_request};
use cairn_auth::{AuthInfo, AuthStore, TokenProvider};
use redb::{Database, ReadableDatabase, WriteTransaction};

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
