//! The server's side of the lessor (crate `cairn-lease`): one shared behind a lock
//! for the apply loop and the request handlers, and loaded from the database at start.

use std::sync::{Arc, Mutex, MutexGuard};

pub(crate) use cairn_lease::{Lessor, MAX_LEASE_TTL, Renewal, min_ttl};

/// The lessor, shared by the apply loop and the request handlers.
pub(crate) type SharedLessor = Arc<Mutex<Lessor>>;

pub(crate) fn lock(lessor: &SharedLessor) -> MutexGuard<'_, Lessor> {
    lessor.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The leases saved in `db`, with the keys attached to them, found through `index`.
pub(crate) fn load(
    db: &redb::Database,
    index: &crate::storage::mvcc::KeyIndex,
) -> Result<Lessor, crate::storage::StorageError> {
    use crate::storage::mvcc::{self, KeySpan};
    use redb::{ReadableDatabase, ReadableTable};
    let txn = db.begin_read()?;
    let mut lessor = Lessor::default();
    for entry in txn.open_table(crate::storage::LEASES)?.iter()? {
        let (id, ttls) = entry?;
        let (ttl, remaining) = ttls.value();
        lessor.restore(id.value(), ttl, remaining);
    }
    let kv = txn.open_table(crate::storage::KV)?;
    for kv in mvcc::range(&kv, index, KeySpan::From(b""), u64::MAX)? {
        if kv.lease != 0 {
            lessor.attach(kv.lease, &kv.key);
        }
    }
    Ok(lessor)
}
