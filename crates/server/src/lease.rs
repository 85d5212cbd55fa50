//! Leases: the lessor's state, applied through raft, with expiry kept by the leader.
//!
//! What raft applies (grants, revocations, checkpoints, which keys are attached) is
//! the same on every member. Expiry times are the leader's alone: it renews leases on
//! keep-alive, proposes the revocation of expired ones, and, when it becomes leader,
//! gives every lease its remaining TTL again from that moment, so that no lease
//! expires only because leadership moved.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// etcd's largest lease TTL, in seconds.
pub(crate) const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// The lessor, shared by the apply loop and the request handlers.
pub(crate) type SharedLessor = Arc<Mutex<Lessor>>;

pub(crate) fn lock(lessor: &SharedLessor) -> MutexGuard<'_, Lessor> {
    lessor.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug)]
struct Lease {
    /// The TTL granted, in seconds.
    ttl: i64,
    /// The remaining TTL recorded by the last checkpoint, in seconds.
    remaining: i64,
    /// When the lease expires, on the leader only.
    expiry: Option<Instant>,
    /// The keys attached to it.
    keys: BTreeSet<Vec<u8>>,
    /// Whether a revocation for it has been proposed.
    revoking: bool,
}

/// Every lease of the member.
#[derive(Debug, Default)]
pub(crate) struct Lessor {
    leases: HashMap<i64, Lease>,
    /// Whether this member leads and so keeps expiry times.
    primary: bool,
    /// Leases renewed since the last checkpoint.
    dirty: BTreeSet<i64>,
}

impl Lessor {
    /// Restores a lease from disk (not yet attached to any key).
    pub(crate) fn restore(&mut self, id: i64, ttl: i64, remaining: i64) {
        let lease = Lease { ttl, remaining, expiry: None, keys: BTreeSet::new(), revoking: false };
        self.leases.insert(id, lease);
    }

    pub(crate) fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// Grants a lease (applied through raft). False when the ID is taken.
    pub(crate) fn grant(&mut self, id: i64, ttl: i64, now: Instant) -> bool {
        if self.leases.contains_key(&id) {
            return false;
        }
        let expiry = self.primary.then(|| now + seconds(ttl));
        self.leases.insert(id, Lease { ttl, remaining: ttl, expiry, keys: BTreeSet::new(), revoking: false });
        true
    }

    /// Removes a lease, giving back its keys.
    pub(crate) fn revoke(&mut self, id: i64) -> Option<Vec<Vec<u8>>> {
        self.dirty.remove(&id);
        self.leases.remove(&id).map(|lease| lease.keys.into_iter().collect())
    }

    /// The keys attached to `id`.
    pub(crate) fn keys(&self, id: i64) -> Option<Vec<Vec<u8>>> {
        self.leases.get(&id).map(|lease| lease.keys.iter().cloned().collect())
    }

    pub(crate) fn attach(&mut self, id: i64, key: &[u8]) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.insert(key.to_vec());
        }
    }

    pub(crate) fn detach(&mut self, id: i64, key: &[u8]) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.remove(key);
        }
    }

    /// Records a checkpoint's remaining TTL (applied through raft).
    pub(crate) fn checkpoint(&mut self, id: i64, remaining: i64) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.remaining = remaining;
        }
    }

    /// The granted and the persisted remaining TTL of `id`.
    pub(crate) fn ttls(&self, id: i64) -> Option<(i64, i64)> {
        self.leases.get(&id).map(|lease| (lease.ttl, lease.remaining))
    }

    /// Renews `id` for its whole TTL from `now`, giving the TTL; `None` if unknown.
    pub(crate) fn renew(&mut self, id: i64, now: Instant) -> Option<i64> {
        let lease = self.leases.get_mut(&id)?;
        if self.primary {
            lease.expiry = Some(now + seconds(lease.ttl));
        }
        self.dirty.insert(id);
        Some(lease.ttl)
    }

    /// The granted TTL and the whole seconds left of `id`, and its keys.
    pub(crate) fn time_to_live(&self, id: i64, now: Instant) -> Option<(i64, i64, Vec<Vec<u8>>)> {
        let lease = self.leases.get(&id)?;
        let left = match lease.expiry {
            Some(expiry) => expiry.saturating_duration_since(now).as_secs() as i64,
            None => lease.remaining,
        };
        Some((lease.ttl, left, lease.keys.iter().cloned().collect()))
    }

    /// Every lease ID.
    pub(crate) fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.leases.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// This member became leader at `now`: every lease gets its remaining TTL from now.
    pub(crate) fn promote(&mut self, now: Instant) {
        self.primary = true;
        for lease in self.leases.values_mut() {
            lease.expiry = Some(now + seconds(lease.remaining.max(1)));
            lease.revoking = false;
        }
    }

    /// This member stopped leading: expiry is the new leader's business.
    pub(crate) fn demote(&mut self) {
        self.primary = false;
        for lease in self.leases.values_mut() {
            lease.expiry = None;
        }
    }

    /// Up to `limit` expired leases not yet being revoked, marked as being revoked.
    pub(crate) fn take_expired(&mut self, now: Instant, limit: usize) -> Vec<i64> {
        let mut expired: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, lease)| !lease.revoking && lease.expiry.is_some_and(|expiry| expiry <= now))
            .map(|(id, _)| *id)
            .collect();
        expired.sort_unstable();
        expired.truncate(limit);
        for id in &expired {
            if let Some(lease) = self.leases.get_mut(id) {
                lease.revoking = true;
            }
        }
        expired
    }

    /// A revocation proposal failed: try again at the next round.
    pub(crate) fn revoke_failed(&mut self, id: i64) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.revoking = false;
        }
    }

    /// Remaining TTLs to checkpoint: the renewed leases, or every lease when `all`.
    pub(crate) fn take_checkpoints(&mut self, now: Instant, all: bool) -> Vec<(i64, i64)> {
        let ids: Vec<i64> =
            if all { self.ids() } else { std::mem::take(&mut self.dirty).into_iter().collect() };
        if all {
            self.dirty.clear();
        }
        ids.into_iter()
            .filter_map(|id| {
                let lease = self.leases.get(&id)?;
                let expiry = lease.expiry?;
                let left = expiry.saturating_duration_since(now).as_secs_f64().ceil() as i64;
                Some((id, left.max(1)))
            })
            .collect()
    }
}

fn seconds(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

/// The smallest TTL etcd grants: one and a half election timeouts, in whole seconds
/// rounded up.
pub(crate) fn min_ttl(election_timeout: Duration) -> i64 {
    (election_timeout.as_secs_f64() * 1.5).ceil() as i64
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
