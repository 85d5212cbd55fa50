//! [`NodeStatus`]: a raft node's progress as its loop publishes it, for the gate and
//! for everyone else who asks whether there is a leader or waits for an index.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cairn_wait::IndexWait;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::{IndexSource, Leadership};

type ConnectedSince = Box<dyn Fn(u64) -> Option<Instant> + Send + Sync>;

/// A raft node's applied and committed index, term, leader and voters: written by
/// the one thread that drives raft, read by any other. It is the gate's
/// [`IndexSource`] and [`Leadership`].
///
/// Leadership changes go through [`NodeStatus::observe_leader`], which keeps since
/// when the member has been without a leader (what a [`LeaderLoss`](crate::LeaderLoss)
/// watches), when a leader was last elected, and how many times one was.
pub struct NodeStatus {
    member_id: u64,
    applied: AtomicU64,
    committed: AtomicU64,
    term: AtomicU64,
    /// The leader's ID, 0 for none.
    leader: AtomicU64,
    elected_at: Mutex<Option<Instant>>,
    leader_changes: AtomicU64,
    voters: Mutex<Vec<u64>>,
    applied_wait: IndexWait,
    leaderless_since: watch::Sender<Option<Instant>>,
    connected_since: Option<ConnectedSince>,
}

impl std::fmt::Debug for NodeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeStatus")
            .field("member_id", &self.member_id)
            .field("applied", &self.applied_index())
            .field("committed", &self.committed_index())
            .field("term", &self.term())
            .field("leader", &self.leader_id())
            .finish_non_exhaustive()
    }
}

impl NodeStatus {
    /// The status of member `member_id` as it starts: `applied` and `committed` as
    /// recovered, at `term`, with `voters`, leaderless since now.
    pub fn new(member_id: u64, applied: u64, committed: u64, term: u64, voters: Vec<u64>) -> Self {
        Self {
            member_id,
            applied: AtomicU64::new(applied),
            committed: AtomicU64::new(committed.max(applied)),
            term: AtomicU64::new(term),
            leader: AtomicU64::new(0),
            elected_at: Mutex::new(None),
            leader_changes: AtomicU64::new(0),
            voters: Mutex::new(voters),
            applied_wait: IndexWait::starting_at(applied),
            leaderless_since: watch::Sender::new(Some(Instant::now())),
            connected_since: None,
        }
    }

    /// Answers [`Leadership::connected_since`] with `connected_since` (the
    /// transport's); without it no peer counts as connected.
    #[must_use]
    pub fn with_connections(
        mut self,
        connected_since: impl Fn(u64) -> Option<Instant> + Send + Sync + 'static,
    ) -> Self {
        self.connected_since = Some(Box::new(connected_since));
        self
    }

    /// This member's ID.
    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Acquire)
    }

    /// The leader's ID, 0 for none.
    pub fn leader_id(&self) -> u64 {
        self.leader.load(Ordering::Acquire)
    }

    /// How many times this member saw a leader elected.
    pub fn leader_changes(&self) -> u64 {
        self.leader_changes.load(Ordering::Relaxed)
    }

    /// Woken with the applied index as it moves.
    pub fn applied_wait(&self) -> &IndexWait {
        &self.applied_wait
    }

    /// Since when this member has had no leader (`None` while it has one).
    pub fn leaderless_since(&self) -> watch::Receiver<Option<Instant>> {
        self.leaderless_since.subscribe()
    }

    /// Completes once there is a leader (at once when there is one).
    pub async fn leader_elected(&self) {
        let mut since = self.leaderless_since.subscribe();
        let _ = since.wait_for(Option::is_none).await;
    }

    /// Records the term of a saved hard state.
    pub fn set_term(&self, term: u64) {
        self.term.store(term, Ordering::Release);
    }

    /// Records that entries up to `commit` are committed (never moves back).
    pub fn set_committed(&self, commit: u64) {
        self.committed.fetch_max(commit, Ordering::AcqRel);
    }

    /// Records that entries up to `applied` are applied, and wakes who waits for it.
    pub fn set_applied(&self, applied: u64) {
        self.applied.store(applied, Ordering::Release);
        self.applied_wait.trigger(applied);
    }

    /// Records the voters after a configuration change.
    pub fn set_voters(&self, voters: Vec<u64>) {
        *self.voters.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = voters;
    }

    /// Records the leader raft reports (0 for none) and gives back the previous one.
    /// A leader that steps down within its own term (`stepped_down_in_term`) did so
    /// for want of a quorum (CheckQuorum; handing leadership over ends its term): it
    /// is cut off, not in an election, so it counts as leaderless for
    /// `election_timeout` already, and streams that asked for a leader end at once.
    pub fn observe_leader(&self, leader: u64, stepped_down_in_term: bool, election_timeout: Duration) -> u64 {
        let previous = self.leader.swap(leader, Ordering::AcqRel);
        if leader == previous {
            return previous;
        }
        let now = Instant::now();
        let quorum_lost = previous == self.member_id && stepped_down_in_term;
        let leaderless = (leader == 0)
            .then(|| if quorum_lost { now.checked_sub(election_timeout).unwrap_or(now) } else { now });
        self.leaderless_since.send_if_modified(|since| {
            let modified = since.is_some() != leaderless.is_some();
            if modified {
                *since = leaderless;
            }
            modified
        });
        if leader != 0 {
            self.leader_changes.fetch_add(1, Ordering::Relaxed);
            *self.elected_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(now);
        }
        previous
    }
}

impl IndexSource for NodeStatus {
    fn applied_index(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    fn committed_index(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }
}

impl Leadership for NodeStatus {
    fn member_id(&self) -> u64 {
        self.member_id
    }

    fn leader(&self) -> Option<u64> {
        Some(self.leader_id()).filter(|&leader| leader != 0)
    }

    fn leader_elected_at(&self) -> Option<Instant> {
        *self.elected_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn members(&self) -> Vec<u64> {
        self.voters.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn connected_since(&self, peer: u64) -> Option<Instant> {
        self.connected_since.as_ref().and_then(|connected_since| connected_since(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_leader_ends_when_one_is_elected() {
        let status = std::sync::Arc::new(NodeStatus::new(1, 0, 0, 0, vec![1]));
        let waiting = std::sync::Arc::clone(&status);
        let elected = tokio::spawn(async move { waiting.leader_elected().await });
        tokio::time::sleep(TIMEOUT).await;
        assert!(!elected.is_finished(), "no leader yet");
        status.observe_leader(1, false, TIMEOUT);
        elected.await.unwrap();
        // With a leader, at once.
        tokio::time::timeout(Duration::ZERO, status.leader_elected()).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn leadership_changes_are_counted_and_leaderless_spells_kept() {
        let status = NodeStatus::new(1, 5, 3, 2, vec![1, 2, 3])
            .with_connections(|peer| (peer == 2).then(Instant::now));
        // The commit index is never behind what was applied.
        assert_eq!((status.applied_index(), status.committed_index(), status.term()), (5, 5, 2));
        let since = status.leaderless_since();
        let start = Instant::now();
        assert_eq!(*since.borrow(), Some(start));
        tokio::time::advance(TIMEOUT).await;

        assert_eq!(status.observe_leader(2, false, TIMEOUT), 0);
        assert_eq!((status.leader(), status.leader_changes()), (Some(2), 1));
        assert_eq!(status.leader_elected_at(), Some(start + TIMEOUT));
        assert_eq!(*since.borrow(), None);
        // The same leader again changes nothing.
        assert_eq!(status.observe_leader(2, false, TIMEOUT), 2);
        assert_eq!(status.leader_changes(), 1);
        // An election: leaderless from now.
        status.observe_leader(0, false, TIMEOUT);
        assert_eq!(*since.borrow(), Some(Instant::now()));
        status.observe_leader(1, false, TIMEOUT);
        assert_eq!(status.leader_changes(), 2);
        // This member, leading, steps down in its own term: cut off, leaderless for an
        // election timeout already.
        status.observe_leader(0, true, TIMEOUT);
        assert_eq!(*since.borrow(), Some(Instant::now() - TIMEOUT));
        assert_eq!(status.leader(), None);

        assert!(status.connected_since(2).is_some() && status.connected_since(3).is_none());
        status.set_voters(vec![1, 2]);
        assert_eq!(status.members(), [1, 2]);
        status.set_committed(9);
        status.set_committed(7);
        status.set_applied(8);
        assert_eq!((status.committed_index(), status.applied_index()), (9, 8));
        assert_eq!(status.applied_wait().reached(), 8);
    }
}
