//! etcd's lessor as a deterministic state machine: grants, revocations, attached
//! keys, checkpoints of remaining TTLs, expiry order, and the primary/secondary role
//! change. No clock is read: every call that needs the time takes `now`, so a test
//! (or a simulation) drives it exactly.
//!
//! What raft applies (grants, revocations, checkpoints, which keys are attached) is
//! the same on every member. Expiry times are the leader's alone (the primary
//! lessor): it renews leases on keep-alive (other members forward keep-alives to
//! it), proposes the revocation of expired ones, and, when it becomes leader, gives
//! every lease its remaining TTL again from that moment plus an election timeout
//! (etcd's `Promote(extend)`), so that no lease expires only because leadership
//! moved: a client was never granted more than that by the old leader, which stepped
//! down before the new one could be elected.
//!
//! The remaining TTL a new leader starts from is the granted TTL unless a checkpoint
//! recorded less: a renewal clears a recorded remainder (a checkpoint of the full
//! TTL), and the periodic checkpoint records remainders only for leases that would
//! outlive the next one, as etcd schedules them.
//!
//! **Invariant:** a lease never expires on a primary before the TTL last granted to a
//! client has run out, counted from the grant, the renewal, or (after a role change)
//! the promotion plus the extension; and only the primary renews or expires leases.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use cairn_lease::{Lessor, Renewal};
//!
//! let start = Instant::now();
//! let mut lessor = Lessor::default();
//! lessor.promote(start, Duration::ZERO); // this member leads: it keeps expiry times
//! assert!(lessor.grant(7, 10, start)); // lease 7, TTL 10 s
//! lessor.attach(7, b"service/a");
//! let later = start + Duration::from_secs(8);
//! assert_eq!(lessor.renew(7, later), Renewal::Renewed(10));
//! assert!(lessor.take_expired(later + Duration::from_secs(9), 100).is_empty());
//! assert_eq!(lessor.take_expired(later + Duration::from_secs(11), 100), [7]);
//! assert_eq!(lessor.revoke(7), Some(vec![b"service/a".to_vec()]));
//! ```

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// etcd's largest lease TTL, in seconds.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

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

/// What renewing a lease came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed for this TTL, in seconds.
    Renewed(i64),
    /// No such lease, or it expired and is being revoked (etcd waits for the
    /// revocation and then answers not found).
    NotFound,
    /// This member does not keep expiry times: the leader must renew it.
    NotPrimary,
}

/// Every lease of the member.
#[derive(Debug, Default)]
pub struct Lessor {
    leases: HashMap<i64, Lease>,
    /// Whether this member leads and so keeps expiry times.
    primary: bool,
    /// Leases renewed since the last checkpoint.
    dirty: BTreeSet<i64>,
    /// Leases whose remainder a full checkpoint proposed and raft has not applied
    /// yet: a renewal meanwhile must still clear it afterwards.
    proposed: BTreeSet<i64>,
}

impl Lessor {
    /// Restores a lease from disk (not yet attached to any key).
    pub fn restore(&mut self, id: i64, ttl: i64, remaining: i64) {
        let lease = Lease { ttl, remaining, expiry: None, keys: BTreeSet::new(), revoking: false };
        self.leases.insert(id, lease);
    }

    /// Whether lease `id` exists.
    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// Grants a lease (applied through raft). False when the ID is taken.
    pub fn grant(&mut self, id: i64, ttl: i64, now: Instant) -> bool {
        if self.leases.contains_key(&id) {
            return false;
        }
        let expiry = self.primary.then(|| now + seconds(ttl));
        self.leases.insert(id, Lease { ttl, remaining: ttl, expiry, keys: BTreeSet::new(), revoking: false });
        true
    }

    /// Removes a lease, giving back its keys.
    pub fn revoke(&mut self, id: i64) -> Option<Vec<Vec<u8>>> {
        self.dirty.remove(&id);
        self.proposed.remove(&id);
        self.leases.remove(&id).map(|lease| lease.keys.into_iter().collect())
    }

    /// The keys attached to `id`.
    pub fn keys(&self, id: i64) -> Option<Vec<Vec<u8>>> {
        self.leases.get(&id).map(|lease| lease.keys.iter().cloned().collect())
    }

    /// Attaches `key` to lease `id` (a put with the lease), if the lease exists.
    pub fn attach(&mut self, id: i64, key: &[u8]) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.insert(key.to_vec());
        }
    }

    /// Detaches `key` from lease `id` (a put without it, or a delete).
    pub fn detach(&mut self, id: i64, key: &[u8]) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.remove(key);
        }
    }

    /// Records a checkpoint's remaining TTL (applied through raft).
    pub fn checkpoint(&mut self, id: i64, remaining: i64) {
        if remaining != self.leases.get(&id).map_or(0, |lease| lease.ttl) {
            self.proposed.remove(&id);
        }
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.remaining = remaining;
        }
    }

    /// The granted and the persisted remaining TTL of `id`.
    pub fn ttls(&self, id: i64) -> Option<(i64, i64)> {
        self.leases.get(&id).map(|lease| (lease.ttl, lease.remaining))
    }

    /// Renews `id` for its whole TTL from `now`, on the primary lessor only.
    pub fn renew(&mut self, id: i64, now: Instant) -> Renewal {
        if !self.primary {
            return Renewal::NotPrimary;
        }
        let Some(lease) = self.leases.get_mut(&id) else { return Renewal::NotFound };
        if lease.revoking || lease.expiry.is_some_and(|expiry| expiry <= now) {
            return Renewal::NotFound;
        }
        lease.expiry = Some(now + seconds(lease.ttl));
        if lease.remaining != lease.ttl || self.proposed.contains(&id) {
            // A recorded (or proposed) remainder no longer holds: clear it at the
            // next checkpoint.
            self.dirty.insert(id);
        }
        Renewal::Renewed(lease.ttl)
    }

    /// Whether this member keeps expiry times.
    pub fn is_primary(&self) -> bool {
        self.primary
    }

    /// The granted TTL and the whole seconds left of `id`, and its keys.
    pub fn time_to_live(&self, id: i64, now: Instant) -> Option<(i64, i64, Vec<Vec<u8>>)> {
        let lease = self.leases.get(&id)?;
        let left = match lease.expiry {
            Some(expiry) => expiry.saturating_duration_since(now).as_secs() as i64,
            None => lease.remaining,
        };
        Some((lease.ttl, left, lease.keys.iter().cloned().collect()))
    }

    /// Every lease ID.
    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.leases.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// This member became leader at `now`: every lease gets its remaining TTL from
    /// now, plus `extend` (an election timeout, as etcd's `Promote(extend)`).
    pub fn promote(&mut self, now: Instant, extend: Duration) {
        self.primary = true;
        for lease in self.leases.values_mut() {
            lease.expiry = Some(now + extend + seconds(lease.remaining.max(1)));
            lease.revoking = false;
        }
    }

    /// This member stopped leading: expiry is the new leader's business.
    pub fn demote(&mut self) {
        self.primary = false;
        for lease in self.leases.values_mut() {
            lease.expiry = None;
        }
    }

    /// Up to `limit` expired leases not yet being revoked, marked as being revoked.
    pub fn take_expired(&mut self, now: Instant, limit: usize) -> Vec<i64> {
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
    pub fn revoke_failed(&mut self, id: i64) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.revoking = false;
        }
    }

    /// Remaining TTLs to checkpoint, leaving out what is already recorded: with
    /// `all`, the remainder of every lease that will outlive `interval` (the next full
    /// checkpoint), as etcd schedules them; and the full TTL of every lease renewed
    /// since the last call, which clears a recorded remainder.
    pub fn take_checkpoints(&mut self, now: Instant, all: bool, interval: Duration) -> Vec<(i64, i64)> {
        let mut checkpoints = std::collections::BTreeMap::new();
        if all {
            for (&id, lease) in &self.leases {
                let Some(expiry) = lease.expiry else { continue };
                let left = expiry.saturating_duration_since(now);
                if left > interval {
                    checkpoints.insert(id, (left.as_secs_f64().ceil() as i64).clamp(1, lease.ttl));
                }
            }
        }
        for id in std::mem::take(&mut self.dirty) {
            if let Some(lease) = self.leases.get(&id) {
                checkpoints.insert(id, lease.ttl);
            }
        }
        checkpoints.retain(|id, remaining| {
            let recorded = self.leases.get(id).map(|lease| lease.remaining);
            recorded.is_some_and(|recorded| recorded != *remaining) || self.proposed.contains(id)
        });
        for (&id, &remaining) in &checkpoints {
            if self.leases.get(&id).is_some_and(|lease| remaining < lease.ttl) {
                self.proposed.insert(id);
            }
        }
        checkpoints.into_iter().collect()
    }
}

fn seconds(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

/// The smallest TTL etcd grants: one and a half election timeouts, in whole seconds
/// rounded up.
pub fn min_ttl(election_timeout: Duration) -> i64 {
    (election_timeout.as_secs_f64() * 1.5).ceil() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn primary_with(id: i64, ttl: i64, now: Instant) -> Lessor {
        let mut lessor = Lessor::default();
        lessor.promote(now, Duration::ZERO);
        assert!(lessor.grant(id, ttl, now));
        lessor
    }

    #[test]
    fn only_the_primary_renews_and_an_expired_lease_is_not_found() {
        let now = Instant::now();
        let mut follower = Lessor::default();
        assert!(follower.grant(1, 10, now));
        assert_eq!(follower.renew(1, now), Renewal::NotPrimary);
        let mut lessor = primary_with(1, 10, now);
        assert_eq!(lessor.renew(1, now + 9 * SECOND), Renewal::Renewed(10));
        assert_eq!(lessor.renew(2, now), Renewal::NotFound);
        // Expired, revocation not even proposed yet: it will not come back.
        assert_eq!(lessor.renew(1, now + 20 * SECOND), Renewal::NotFound);
        lessor.demote();
        assert_eq!(lessor.renew(1, now), Renewal::NotPrimary);
    }

    #[test]
    fn a_new_leader_extends_every_lease_by_the_election_timeout() {
        let now = Instant::now();
        let mut lessor = Lessor::default();
        assert!(lessor.grant(1, 10, now));
        lessor.checkpoint(1, 4);
        lessor.promote(now, SECOND);
        assert_eq!(lessor.time_to_live(1, now).map(|(granted, left, _)| (granted, left)), Some((10, 5)));
        assert!(lessor.take_expired(now + 4 * SECOND, 10).is_empty());
        assert_eq!(lessor.take_expired(now + 5 * SECOND, 10), [1]);
    }

    #[test]
    fn a_renewal_clears_a_recorded_remainder_and_full_checkpoints_skip_short_leases() {
        let now = Instant::now();
        let mut lessor = primary_with(1, 100, now);
        assert!(lessor.grant(2, 3, now));
        // Nothing renewed, nothing recorded: nothing to say.
        assert!(lessor.take_checkpoints(now, false, 5 * SECOND).is_empty());
        // A full checkpoint records what outlives the next one (lease 2 does not).
        assert_eq!(lessor.take_checkpoints(now + 10 * SECOND, true, 5 * SECOND), [(1, 90)]);
        lessor.checkpoint(1, 90);
        assert_eq!(lessor.renew(1, now + 20 * SECOND), Renewal::Renewed(100));
        assert_eq!(lessor.take_checkpoints(now + 20 * SECOND, false, 5 * SECOND), [(1, 100)]);
        lessor.checkpoint(1, 100);
        // A renewal of a lease whose full TTL is recorded needs no checkpoint.
        assert_eq!(lessor.renew(1, now + 21 * SECOND), Renewal::Renewed(100));
        assert!(lessor.take_checkpoints(now + 21 * SECOND, false, 5 * SECOND).is_empty());
        // A remainder proposed but not applied yet when the lease is renewed is still
        // cleared once it is.
        assert_eq!(lessor.take_checkpoints(now + 30 * SECOND, true, 5 * SECOND), [(1, 91)]);
        assert_eq!(lessor.renew(1, now + 31 * SECOND), Renewal::Renewed(100));
        lessor.checkpoint(1, 91);
        assert_eq!(lessor.take_checkpoints(now + 31 * SECOND, false, 5 * SECOND), [(1, 100)]);
    }
}
