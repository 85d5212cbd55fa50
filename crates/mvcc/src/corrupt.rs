//! etcd's corruption verdicts on [`HashKv`]s: the check a member makes at start
//! against each peer (`CheckInitialHashKV`) and the leader's periodic one
//! (`checkHashKV`). Pure: the caller gathers the hashes and raises the alarm.

use crate::HashKv;

/// How a peer's hash at this member's revision differs from this member's, at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialMismatch {
    /// Another hash at the same compaction revision: the stores disagree, and this
    /// member must not start.
    Hash,
    /// Another hash, but the peer compacted to another revision: only logged.
    CompactRevision,
}

/// etcd's `CheckInitialHashKV` for one peer: `None` when `remote` (the peer's hash at
/// `local.revision`) agrees with `local`.
pub fn initial_mismatch(local: &HashKv, remote: &HashKv) -> Option<InitialMismatch> {
    if remote.hash == local.hash {
        None
    } else if remote.compact_revision == local.compact_revision {
        Some(InitialMismatch::Hash)
    } else {
        Some(InitialMismatch::CompactRevision)
    }
}

/// What the leader's periodic check saw: its own hash before and after confirming
/// it leads, and each peer's answer at the first one's revision.
#[derive(Debug, Clone)]
pub struct PeriodicFindings {
    /// The leader's member ID.
    pub member_id: u64,
    /// The leader's hash before asking the peers.
    pub first: HashKv,
    /// The leader's hash after a read-index round confirmed it still leads.
    pub second: HashKv,
    /// Each peer that answered, with its hash at `first.revision`.
    pub peers: Vec<(u64, HashKv)>,
}

/// The member a periodic check finds corrupt, and etcd's words for why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suspect {
    /// The leader itself or a peer.
    pub member_id: u64,
    /// etcd's log message for the finding.
    pub reason: &'static str,
}

/// etcd's `checkHashKV` verdict: the member that looks corrupt, if any. The leader
/// itself when its hash changed with neither revision moving; a peer ahead of the
/// leader's revision or compaction revision, or with another hash at the same
/// compaction revision.
pub fn periodic_verdict(findings: &PeriodicFindings) -> Option<Suspect> {
    let PeriodicFindings { member_id, first, second, peers } = findings;
    if second.hash != first.hash
        && second.revision == first.revision
        && second.compact_revision == first.compact_revision
    {
        return Some(Suspect { member_id: *member_id, reason: "found hash mismatch with itself" });
    }
    peers.iter().find_map(|&(peer, remote)| {
        let reason = if remote.revision > second.revision {
            "revision from follower must be less than or equal to leader's"
        } else if remote.compact_revision > second.compact_revision {
            "compact revision from follower must be less than or equal to leader's"
        } else if remote.compact_revision == first.compact_revision && remote.hash != first.hash {
            "same compact revision then hashes must match"
        } else {
            return None;
        };
        Some(Suspect { member_id: peer, reason })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(hash: u32, revision: i64, compact_revision: i64) -> HashKv {
        HashKv { hash, revision, compact_revision, hash_revision: revision }
    }

    #[test]
    fn the_initial_verdict_is_etcds() {
        let local = hash(7, 10, 5);
        assert_eq!(initial_mismatch(&local, &hash(7, 12, 5)), None);
        assert_eq!(initial_mismatch(&local, &hash(8, 10, 5)), Some(InitialMismatch::Hash));
        assert_eq!(initial_mismatch(&local, &hash(8, 10, 6)), Some(InitialMismatch::CompactRevision));
    }

    #[test]
    fn the_periodic_verdict_is_etcds() {
        let findings = |second: HashKv, peer: HashKv| PeriodicFindings {
            member_id: 1,
            first: hash(7, 10, 5),
            second,
            peers: vec![(2, peer)],
        };
        let member = |findings: PeriodicFindings| periodic_verdict(&findings).map(|s| s.member_id);
        assert_eq!(member(findings(hash(7, 10, 5), hash(7, 10, 5))), None);
        // A peer behind, or compacted less, is fine; at the same compaction it must agree.
        assert_eq!(member(findings(hash(7, 10, 5), hash(3, 8, 2))), None);
        assert_eq!(member(findings(hash(7, 10, 5), hash(8, 10, 5))), Some(2));
        assert_eq!(member(findings(hash(7, 10, 5), hash(7, 11, 5))), Some(2));
        assert_eq!(member(findings(hash(7, 10, 5), hash(7, 10, 6))), Some(2));
        // The leader's own hash moved while nothing was written: the leader.
        let itself = periodic_verdict(&findings(hash(9, 10, 5), hash(7, 10, 5)));
        assert_eq!(itself, Some(Suspect { member_id: 1, reason: "found hash mismatch with itself" }));
        // It moved because a write came in between: not a sign of anything.
        assert_eq!(member(findings(hash(9, 11, 5), hash(7, 10, 5))), None);
    }
}
