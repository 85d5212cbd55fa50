//! The state readers share with the applier, each behind its own lock, and how it is
//! loaded from and saved to the backend.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use cairn_auth::{AuthStore, TokenProvider};
use cairn_backend::members::Members;
use cairn_backend::{AUTH, KV, LEASES, META};
use cairn_lease::Lessor;
use cairn_mvcc::{KeyIndex, Revisions, SharedIndex};
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};

use crate::Error;

/// The lessor, shared by the applier and the request handlers.
pub type SharedLessor = Arc<Mutex<Lessor>>;
/// The auth store: the applier writes, request handlers read.
pub type SharedAuth = Arc<RwLock<AuthStore>>;
/// The raised alarms: (member ID, `AlarmType`).
pub type SharedAlarms = Arc<Mutex<BTreeSet<(u64, i32)>>>;
/// The members, by ID, removed ones included.
pub type SharedMembers = Arc<Mutex<Members>>;

/// The lessor, locked (a poisoned lock is taken as is: every change is one call).
pub fn lessor(lessor: &SharedLessor) -> MutexGuard<'_, Lessor> {
    lessor.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The alarms, locked.
pub fn alarms(alarms: &SharedAlarms) -> MutexGuard<'_, BTreeSet<(u64, i32)>> {
    alarms.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The members, locked.
pub fn members(members: &SharedMembers) -> MutexGuard<'_, Members> {
    members.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The auth store, to read.
pub fn auth_read(auth: &SharedAuth) -> RwLockReadGuard<'_, AuthStore> {
    auth.read().unwrap_or_else(PoisonError::into_inner)
}

/// The auth store, to change.
pub fn auth_write(auth: &SharedAuth) -> RwLockWriteGuard<'_, AuthStore> {
    auth.write().unwrap_or_else(PoisonError::into_inner)
}

/// A member's state as readers and the applier share it.
#[derive(Debug, Clone)]
pub struct State {
    /// The store's revisions as loaded (the applier keeps them from then on).
    pub revisions: Revisions,
    /// The key index of the `kv` table.
    pub index: SharedIndex,
    /// The leases, with their attached keys.
    pub lessor: SharedLessor,
    /// Users, roles, permissions, the enabled flag and the auth revision.
    pub auth: SharedAuth,
    /// The raised alarms.
    pub alarms: SharedAlarms,
    /// The cluster's members.
    pub members: SharedMembers,
}

impl State {
    /// Everything `db` holds, the auth store issuing tokens with `tokens`.
    pub fn load(db: &Database, tokens: Arc<dyn TokenProvider>) -> Result<Self, Error> {
        let txn = db.begin_read()?;
        let revisions = Revisions::load(&txn.open_table(META)?)?;
        let (index, attached) = KeyIndex::load(&txn.open_table(KV)?)?;
        drop(txn);
        let lessor = load_lessor(db, attached)?;
        Ok(Self {
            revisions,
            index: Arc::new(RwLock::new(index)),
            lessor: Arc::new(Mutex::new(lessor)),
            auth: Arc::new(RwLock::new(load_auth(db, tokens)?)),
            alarms: Arc::new(Mutex::new(cairn_backend::alarms::load(db)?)),
            members: Arc::new(Mutex::new(cairn_backend::members::load(db)?)),
        })
    }
}

/// The leases saved in `db`, with the keys `attached` to them (as
/// [`KeyIndex::load`] gives them).
pub fn load_lessor(db: &Database, attached: cairn_mvcc::Attached) -> Result<Lessor, Error> {
    let txn = db.begin_read()?;
    let mut lessor = Lessor::default();
    for entry in txn.open_table(LEASES)?.iter()? {
        let (id, ttls) = entry?;
        let (ttl, remaining) = ttls.value();
        lessor.restore(id.value(), ttl, remaining);
    }
    for (lease, key) in attached {
        lessor.attach(lease, &key);
    }
    Ok(lessor)
}

/// The auth store saved in `db`, or a new one, issuing tokens with `tokens`.
pub fn load_auth(db: &Database, tokens: Arc<dyn TokenProvider>) -> Result<AuthStore, Error> {
    let txn = db.begin_read()?;
    let table = txn.open_table(AUTH)?;
    match table.get("store")? {
        Some(bytes) => AuthStore::restore(bytes.value(), tokens)
            .map_err(|_| Error::Storage(cairn_mvcc::Error::Corrupt("auth store").to_string())),
        None => Ok(AuthStore::with_tokens(tokens)),
    }
}

/// Saves the auth store in `txn`, beside the applied index it corresponds to.
pub fn save_auth(txn: &WriteTransaction, store: &AuthStore) -> Result<(), Error> {
    txn.open_table(AUTH)?.insert("store", store.snapshot().as_slice())?;
    Ok(())
}
