//! Membership changes as the applier sees them: raft decides who votes; the applier
//! keeps the member registry (names, URLs, tombstones of removed members) in step,
//! and tells the caller whom to send to.

use cairn_api::etcdserverpb::Member;

/// A membership change raft has committed (raft-rs's `ConfChange`, without raft).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange<'a> {
    /// Member `id` joins, as a learner or a voter; `context` is the proposer's
    /// encoded [`Member`] (a promotion's is empty: the registry keeps the member).
    Add {
        /// The member's ID.
        id: u64,
        /// Whether it joins as a learner.
        learner: bool,
        /// The encoded member, if the proposer sent one.
        context: &'a [u8],
    },
    /// Member `id` leaves for good.
    Remove(u64),
}

impl MemberChange<'_> {
    /// etcd's checks of a change on the applied membership (`voters` and `learners`
    /// as raft has them), made again at apply because checks made before proposing
    /// saw one member's view: the last voter is never removed, and there is at most
    /// one learner. Every member decides alike; `Some` is etcd's refusal text.
    pub fn refusal(&self, voters: &[u64], learners: &[u64]) -> Option<&'static str> {
        match *self {
            Self::Remove(id) => (voters.contains(&id) && voters.iter().all(|&voter| voter == id))
                .then_some("etcdserver: re-configuration failed due to not enough started members"),
            Self::Add { id, learner: true, .. } => learners
                .iter()
                .any(|&other| other != id)
                .then_some("etcdserver: too many learner members in cluster"),
            Self::Add { learner: false, .. } => None,
        }
    }
}

/// Whom the caller's transport sends to, in the order the changes were applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerChange {
    /// Send to member `id` at these peer URLs (a new member, new URLs of a known
    /// one, or every member after a restored snapshot): a sender already running
    /// starts again.
    Connect(u64, Vec<String>),
    /// Stop sending to member `id`: it was removed (this member too, when `id` is
    /// its own: it must stop).
    Disconnect(u64),
}

/// The registry's member for an added one: the proposer's, or the one it had.
pub(crate) fn added(id: u64, learner: bool, context: &[u8], known: Option<&Member>) -> Member {
    use prost::Message as _;
    let mut member = match Member::decode(context) {
        Ok(member) if member.id == id => member,
        _ => known.cloned().unwrap_or_default(),
    };
    member.id = id;
    member.is_learner = learner;
    member
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_at_apply_are_etcds() {
        let add = |id, learner| MemberChange::Add { id, learner, context: &[] };
        assert_eq!(
            MemberChange::Remove(1).refusal(&[1], &[]),
            Some("etcdserver: re-configuration failed due to not enough started members")
        );
        assert_eq!(MemberChange::Remove(1).refusal(&[1, 2], &[]), None);
        // A learner is not a voter: removing it leaves the last voter.
        assert_eq!(MemberChange::Remove(3).refusal(&[1], &[3]), None);
        assert_eq!(add(3, true).refusal(&[1], &[2]), Some("etcdserver: too many learner members in cluster"));
        // The same learner again (a retried proposal) is not a second one.
        assert_eq!(add(2, true).refusal(&[1], &[2]), None);
        assert_eq!(add(2, false).refusal(&[1], &[2]), None);
    }
}
