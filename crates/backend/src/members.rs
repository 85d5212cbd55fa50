//! The cluster's members as every member knows them: written at bootstrap (or when
//! joining), changed by applied configuration changes, kept on disk; and the member
//! and cluster IDs, derived as etcd derives them so that the same flags give the same
//! IDs, and kept in the data dir so that they never change afterwards.

use std::collections::BTreeMap;

use cairn_api::etcdserverpb::Member;
use prost::Message as _;
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};
use sha1::{Digest, Sha1};

use crate::{Error, MEMBERS, META};

/// Every member, by ID, removed ones included (named [`REMOVED`]).
pub type Members = BTreeMap<u64, Member>;

/// The name a removed member's entry keeps, so that its messages are refused.
pub const REMOVED: &str = "\u{0}removed";

/// The members saved in `db`.
pub fn load(db: &Database) -> Result<Members, Error> {
    let txn = db.begin_read()?;
    let table = txn.open_table(MEMBERS)?;
    let mut members = Members::new();
    for entry in table.iter()? {
        let (id, bytes) = entry?;
        let member = Member::decode(bytes.value()).map_err(|_| Error::Corrupt("member"))?;
        members.insert(id.value(), member);
    }
    Ok(members)
}

/// Saves `member` in `txn`.
pub fn save(txn: &WriteTransaction, member: &Member) -> Result<(), Error> {
    txn.open_table(MEMBERS)?.insert(member.id, member.encode_to_vec().as_slice())?;
    Ok(())
}

/// Saves every one of `members` that `db` does not know yet.
pub fn save_missing(db: &Database, members: &[Member]) -> Result<(), Error> {
    let known = load(db)?;
    let txn = db.begin_write()?;
    for member in members.iter().filter(|member| !known.contains_key(&member.id)) {
        save(&txn, member)?;
    }
    txn.commit()?;
    Ok(())
}

/// etcd's member ID: the first 8 bytes (big-endian) of the SHA-1 of the member's
/// sorted peer URLs joined, followed by the cluster token.
pub fn member_id(sorted_peer_urls: &[String], token: &str) -> u64 {
    let mut hasher = Sha1::new();
    hasher.update(sorted_peer_urls.concat().as_bytes());
    hasher.update(token.as_bytes());
    first_u64(&hasher.finalize())
}

/// etcd's cluster ID: the first 8 bytes of the SHA-1 of the sorted member IDs, each
/// big-endian.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut hasher = Sha1::new();
    for id in ids {
        hasher.update(id.to_be_bytes());
    }
    first_u64(&hasher.finalize())
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes)
}

/// The member and cluster IDs this data dir belongs to, once it has been started.
pub fn stored_ids(db: &Database) -> Result<Option<(u64, u64)>, Error> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let member = meta.get("member_id")?.map(|v| v.value());
    let cluster = meta.get("cluster_id")?.map(|v| v.value());
    Ok(member.zip(cluster))
}

/// Records in `txn` that this data dir belongs to member `member` of cluster `cluster`.
pub fn store_ids(txn: &WriteTransaction, (member, cluster): (u64, u64)) -> Result<(), Error> {
    let mut meta = txn.open_table(META)?;
    meta.insert("member_id", member)?;
    meta.insert("cluster_id", cluster)?;
    Ok(())
}

/// The IDs stored in `db`, or else `fresh`, stored for good.
pub fn load_or_store_ids(db: &Database, fresh: (u64, u64)) -> Result<(u64, u64), Error> {
    if let Some(ids) = stored_ids(db)? {
        return Ok(ids);
    }
    let txn = db.begin_write()?;
    store_ids(&txn, fresh)?;
    txn.commit()?;
    Ok(fresh)
}

/// Why etcd refuses a membership change, with its texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A second learner (etcd allows one).
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    /// Too few voters have started (published their name) for the change.
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStarted,
    /// Too few voters are connected to this member for the change to be safe.
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    /// A learner whose log is not within 90% of the leader's.
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotInSync,
    /// An added or updated member without peer URLs.
    #[error("etcdserver: member peer URLs are not provided")]
    NoPeerUrls,
    /// Peer URLs another member already has.
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlsExist,
}

/// How long a peer must have been connected to count in the active quorum (etcd's
/// `HealthInterval`).
pub const HEALTH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The cluster as a member deciding on a change sees it: etcd's `RaftCluster`
/// readiness checks (`IsReadyToAddVotingMember` and friends).
#[derive(Clone, Copy)]
#[allow(missing_debug_implementations)]
pub struct View<'a> {
    /// The current members, removed ones left out.
    pub members: &'a [Member],
    /// The member deciding.
    pub me: u64,
    /// For how long this member has been connected to each peer (`None`: not now).
    pub connected: &'a dyn Fn(u64) -> Option<std::time::Duration>,
    /// `--strict-reconfig-check`: refuse changes that would endanger the quorum.
    pub strict: bool,
}

fn quorum(members: usize) -> usize {
    members / 2 + 1
}

/// A member counts as started once it has published its name.
fn is_started(member: &Member) -> bool {
    !member.name.is_empty()
}

impl View<'_> {
    fn voters(&self) -> Vec<&Member> {
        self.members.iter().filter(|member| !member.is_learner).collect()
    }

    /// Whether member `id` has been connected for long enough to count in the active
    /// quorum; the deciding member always does.
    fn active(&self, id: u64) -> bool {
        id == self.me || (self.connected)(id).is_some_and(|since| since >= HEALTH_INTERVAL)
    }

    /// etcd's checks of the peer URLs of a member added or updated (`id`, for an
    /// update: its own URLs may stay): some are given, and no other member has any.
    pub fn may_use_peer_urls(&self, urls: &[String], id: Option<u64>) -> Result<(), Refusal> {
        if urls.is_empty() {
            return Err(Refusal::NoPeerUrls);
        }
        let others = self.members.iter().filter(|member| Some(member.id) != id);
        match others.flat_map(|member| &member.peer_ur_ls).any(|url| urls.contains(url)) {
            true => Err(Refusal::PeerUrlsExist),
            false => Ok(()),
        }
    }

    /// etcd's `mayAddMember`: at most one learner; when strict, a new voter needs a
    /// quorum of the grown cluster already started (adding a second member to a
    /// one-member cluster aside, as restoring one does), and this member connected
    /// to a quorum of it unless it is the only voter.
    pub fn may_add(&self, is_learner: bool) -> Result<(), Refusal> {
        if is_learner && self.members.iter().any(|member| member.is_learner) {
            return Err(Refusal::TooManyLearners);
        }
        if !self.strict {
            return Ok(());
        }
        let voters = self.voters();
        let (members, started) =
            (voters.len() + 1, voters.iter().filter(|member| is_started(member)).count());
        let restoring = started == 1 && members == 2;
        if !is_learner && !restoring && started < quorum(members) {
            return Err(Refusal::NotEnoughStarted);
        }
        let connected = voters.iter().filter(|member| self.active(member.id)).count();
        if voters.len() > 1 && connected < quorum(members) {
            return Err(Refusal::Unhealthy);
        }
        Ok(())
    }

    /// etcd's `mayRemoveMember`: the last voter is never removed, strict or not (raft
    /// could not go on without one); when strict, the voters left need a started
    /// quorum and, unless the member removed is down anyway, the active quorum must
    /// survive.
    pub fn may_remove(&self, member: &Member) -> Result<(), Refusal> {
        if member.is_learner {
            return Ok(());
        }
        let voters = self.voters();
        let others: Vec<&&Member> = voters.iter().filter(|voter| voter.id != member.id).collect();
        if others.is_empty() {
            return Err(Refusal::NotEnoughStarted);
        }
        if !self.strict {
            return Ok(());
        }
        if others.iter().filter(|voter| is_started(voter)).count() < quorum(others.len()) {
            return Err(Refusal::NotEnoughStarted);
        }
        if member.id != self.me && (self.connected)(member.id).is_none() {
            return Ok(());
        }
        let active = voters.iter().filter(|voter| self.active(voter.id)).count();
        if active.saturating_sub(1) < 1 + (voters.len() - 1) / 2 {
            return Err(Refusal::Unhealthy);
        }
        Ok(())
    }

    /// etcd's `mayPromoteMember` and `isLearnerReady`, for a learner whose log matches
    /// the leader's up to `matched` while the leader's own reaches `leader_matched`:
    /// at least 90% of it; when strict, the grown set of voters needs a started quorum.
    pub fn may_promote(&self, matched: u64, leader_matched: u64) -> Result<(), Refusal> {
        if (matched as f64) < (leader_matched as f64) * 0.9 {
            return Err(Refusal::LearnerNotInSync);
        }
        if self.strict {
            let voters = self.voters();
            let started = voters.iter().filter(|voter| is_started(voter)).count();
            if started + 1 < quorum(voters.len() + 1) {
                return Err(Refusal::NotEnoughStarted);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_must_be_given_and_not_another_members() {
        let member = |id, url: &str| Member { id, peer_ur_ls: vec![url.into()], ..Default::default() };
        let members = [member(1, "http://a:2380"), member(2, "http://b:2380")];
        let connected = |_| None;
        let view = View { members: &members, me: 1, connected: &connected, strict: true };
        let urls = |list: &[&str]| list.iter().map(|url| url.to_string()).collect::<Vec<_>>();
        assert_eq!(view.may_use_peer_urls(&[], None), Err(Refusal::NoPeerUrls));
        assert_eq!(
            view.may_use_peer_urls(&urls(&["http://c:2380", "http://b:2380"]), None),
            Err(Refusal::PeerUrlsExist)
        );
        assert_eq!(view.may_use_peer_urls(&urls(&["http://c:2380"]), None), Ok(()));
        // An update may keep its own URLs, not take another member's.
        assert_eq!(view.may_use_peer_urls(&urls(&["http://b:2380", "http://d:2380"]), Some(2)), Ok(()));
        assert_eq!(view.may_use_peer_urls(&urls(&["http://a:2380"]), Some(2)), Err(Refusal::PeerUrlsExist));
    }

    #[test]
    fn ids_match_etcds_for_its_defaults() {
        // A default etcd reports member 8e9e05c52164694d in cluster cdf818194e3a8c32.
        let member = member_id(&["http://localhost:2380".to_owned()], "etcd-cluster");
        assert_eq!(member, 0x8e9e_05c5_2164_694d);
        assert_eq!(cluster_id(&[member]), 0xcdf8_1819_4e3a_8c32);
    }

    #[test]
    fn ids_once_stored_never_change() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::open(dir.path()).unwrap();
        assert_eq!(stored_ids(&db).unwrap(), None);
        assert_eq!(load_or_store_ids(&db, (1, 2)).unwrap(), (1, 2));
        assert_eq!(load_or_store_ids(&db, (3, 4)).unwrap(), (1, 2));
        assert_eq!(stored_ids(&db).unwrap(), Some((1, 2)));
    }

    fn member(id: u64, name: &str, is_learner: bool) -> Member {
        Member { id, name: name.into(), is_learner, ..Member::default() }
    }

    #[test]
    fn changes_that_would_endanger_the_quorum_are_refused() {
        use std::time::Duration;
        let up = |_: u64| Some(Duration::from_secs(60));
        let fresh = |_: u64| Some(Duration::from_secs(1));
        let down = |id: u64| (id != 3).then_some(Duration::from_secs(60));
        let three = [member(1, "a", false), member(2, "b", false), member(3, "c", false)];
        let view = |members, connected| View { members, me: 1, connected, strict: true };

        assert_eq!(view(&three, &up).may_add(false), Ok(()));
        assert_eq!(view(&three, &fresh).may_add(false), Err(Refusal::Unhealthy));
        let with_learner = [member(1, "a", false), member(2, "", true)];
        assert_eq!(view(&with_learner, &up).may_add(true), Err(Refusal::TooManyLearners));
        // One started member of two: too few for a third voter, but a second is a restore.
        let unstarted = [member(1, "a", false), member(2, "", false)];
        assert_eq!(view(&unstarted, &up).may_add(false), Err(Refusal::NotEnoughStarted));
        let one = [member(1, "a", false)];
        assert_eq!(view(&one, &up).may_add(false), Ok(()));

        // Removing a member that is down keeps the active quorum; removing one that is
        // up while another is down does not.
        assert_eq!(view(&three, &down).may_remove(&three[2]), Ok(()));
        assert_eq!(view(&three, &down).may_remove(&three[1]), Err(Refusal::Unhealthy));
        let alone = [member(1, "a", false)];
        assert_eq!(view(&alone, &up).may_remove(&alone[0]), Err(Refusal::NotEnoughStarted));
        let lax = View { members: &alone, me: 1, connected: &up, strict: false };
        assert_eq!(lax.may_remove(&alone[0]), Err(Refusal::NotEnoughStarted), "never the last voter");
        assert_eq!(view(&with_learner, &down).may_remove(&with_learner[1]), Ok(()));

        assert_eq!(view(&three, &up).may_promote(89, 100), Err(Refusal::LearnerNotInSync));
        assert_eq!(view(&three, &up).may_promote(90, 100), Ok(()));
        let mostly_unstarted = [member(1, "a", false), member(2, "", false), member(3, "", false)];
        assert_eq!(view(&mostly_unstarted, &up).may_promote(100, 100), Err(Refusal::NotEnoughStarted));
        assert_eq!(Refusal::Unhealthy.to_string(), "etcdserver: unhealthy cluster");
    }
}
