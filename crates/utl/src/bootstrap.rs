//! What a member starts as (etcd's `bootstrap`): the membership and IDs its data dir
//! holds, or, for a fresh data dir, those of the new cluster its flags describe, or
//! of the running cluster it joins. Whatever it starts as is stored before raft
//! starts, so that a restart finds it.

use std::collections::BTreeMap;

use cairn_api::etcdserverpb::Member;
use cairn_backend::members::{self, REMOVED};
use redb::Database;

use crate::Error;

/// A member's identity and the membership it starts from.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    /// This member's ID.
    pub member_id: u64,
    /// Its cluster's ID.
    pub cluster_id: u64,
    /// Every member it knows, removed ones included.
    pub members: Vec<Member>,
    /// The voters raft starts from, before it has applied any entry (see [`voters`]).
    pub voters: Vec<u64>,
    /// Whether the data dir had been started before.
    pub had_data: bool,
}

/// How a member with a fresh data dir starts.
#[derive(Debug, Clone)]
pub enum Fresh {
    /// A member of a new cluster: `initial` (name to sorted peer URLs, from
    /// `--initial-cluster`), IDs derived from `token`.
    New {
        /// The cluster's members by name.
        initial: BTreeMap<String, Vec<String>>,
        /// `--initial-cluster-token`.
        token: String,
    },
    /// A member added to a running cluster, whose ID and members a peer gave
    /// (`cairn_transport::fetch_members`); this member is the one with `peer_urls`.
    Join {
        /// The running cluster's ID.
        cluster_id: u64,
        /// Its members, this one included.
        members: Vec<Member>,
        /// This member's sorted peer URLs.
        peer_urls: Vec<String>,
    },
}

/// What a member's flags say about its start.
#[derive(Debug, Clone)]
pub struct Flags {
    /// `--name`.
    pub name: String,
    /// `--initial-cluster`: member names to sorted peer URLs.
    pub initial: BTreeMap<String, Vec<String>>,
    /// `--initial-cluster-token`.
    pub token: String,
    /// `--initial-cluster-state=existing`: the member joins a running cluster.
    pub existing: bool,
    /// This member's sorted peer URLs (`--initial-advertise-peer-urls`).
    pub peer_urls: Vec<String>,
}

/// How a member starts: from its data dir ([`stored`]) when it was started before,
/// else fresh ([`fresh`]) as its flags say; a member joining a running cluster asks
/// the other peers of `--initial-cluster` (with `tls`) for its ID and the members.
///
/// # Errors
/// [`stored`]'s and [`fresh`]'s refusals, and [`Error::Refused`] when no peer answers.
pub async fn start(
    db: &Database,
    flags: Flags,
    tls: Option<&cairn_net::peer::PeerTls>,
) -> Result<Start, Error> {
    if let Some(start) = stored(db, flags.existing)? {
        tracing::info!(
            member = format_args!("{:x}", start.member_id),
            "restarting from the membership in the data dir"
        );
        return Ok(start);
    }
    let Flags { name, initial, token, existing, peer_urls } = flags;
    if !existing {
        return fresh(db, &name, Fresh::New { initial, token });
    }
    let others: Vec<String> =
        initial.into_values().flatten().filter(|url| !peer_urls.contains(url)).collect();
    let (cluster_id, members) = cairn_transport::fetch_members(&others, tls).await.map_err(|error| {
        Error::Refused(format!(
            "cannot learn the cluster's members from its peers (--initial-cluster): {error}"
        ))
    })?;
    fresh(db, &name, Fresh::Join { cluster_id, members, peer_urls })
}

/// The voters a member's raft configuration starts from before it has applied any
/// entry: for a new cluster, its members; for a member joining a running one, the
/// voters the cluster has now, itself left out. A joiner replays the leader's log
/// from its start on top of them (its own addition, later changes; adding a member
/// twice or removing one already gone changes nothing), which brings it to the
/// cluster's configuration. Starting from nothing instead would leave it, after
/// replaying only the changes since the cluster began, believing itself the only
/// voter, free to elect itself.
pub fn voters(members: &[Member], me: u64, joining: bool) -> Vec<u64> {
    members
        .iter()
        .filter(|member| !member.is_learner && member.name != REMOVED)
        .filter(|member| !joining || member.id != me)
        .map(|member| member.id)
        .collect()
}

/// The start `db` holds, if it was started before. As etcd: once a data dir exists,
/// the `--initial-cluster*` flags are ignored and the member starts from the
/// membership it has applied, so that members added since, and a cluster whose
/// members all joined later, come back. A member removed from the cluster is refused.
pub fn stored(db: &Database, joining: bool) -> Result<Option<Start>, Error> {
    let Some((member_id, cluster_id)) = members::stored_ids(db)? else { return Ok(None) };
    let members: Vec<Member> = members::load(db)?.into_values().collect();
    if members.iter().any(|member| member.id == member_id && member.name == REMOVED) {
        return Err(Error::Refused("the member has been permanently removed from the cluster".into()));
    }
    // Used only if the member stopped before it saved any raft state.
    let voters = voters(&members, member_id, joining);
    Ok(Some(Start { member_id, cluster_id, members, voters, had_data: true }))
}

/// Starts member `name` of a fresh data dir as `fresh` says, and stores its IDs and
/// the members in `db`. This member's own entry carries `name`; its client URLs are
/// published through raft once it runs, so that every member learns them.
pub fn fresh(db: &Database, name: &str, fresh: Fresh) -> Result<Start, Error> {
    let (member_id, cluster_id, members, voters) = match fresh {
        Fresh::Join { cluster_id, members, peer_urls } => {
            let Some(me) = members.iter().find(|member| {
                let mut urls = member.peer_ur_ls.clone();
                urls.sort();
                urls == peer_urls
            }) else {
                return Err(Error::Refused(format!(
                    "this member's peer URLs {} are not a member of the cluster: add it first (etcdctl member add)",
                    peer_urls.join(",")
                )));
            };
            let (member_id, cluster_id) = members::load_or_store_ids(db, (me.id, cluster_id))?;
            let voters = voters(&members, member_id, true);
            (member_id, cluster_id, members, voters)
        }
        Fresh::New { initial, token } => {
            let Some(urls) = initial.get(name) else {
                return Err(Error::Refused(format!(
                    "couldn't find local name {name:?} in the initial cluster configuration"
                )));
            };
            let ids: Vec<u64> = initial.values().map(|urls| members::member_id(urls, &token)).collect();
            let fresh = (members::member_id(urls, &token), members::cluster_id(&ids));
            let (member_id, cluster_id) = members::load_or_store_ids(db, fresh)?;
            let members: Vec<Member> = initial
                .iter()
                .map(|(name, urls)| Member {
                    id: members::member_id(urls, &token),
                    name: name.clone(),
                    peer_ur_ls: urls.clone(),
                    ..Member::default()
                })
                .collect();
            (member_id, cluster_id, members, ids)
        }
    };
    let members: Vec<Member> = members
        .into_iter()
        .map(|mut member| {
            if member.id == member_id && member.name.is_empty() {
                member.name = name.to_owned();
            }
            member
        })
        .collect();
    members::save_missing(db, &members)?;
    Ok(Start { member_id, cluster_id, members, voters, had_data: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(url: &str) -> Vec<String> {
        vec![url.to_owned()]
    }

    #[test]
    fn a_new_member_gets_etcds_ids_and_a_restart_finds_them_whatever_the_flags_say() {
        let dir = tempfile::tempdir().unwrap();
        let db = cairn_backend::open(dir.path()).unwrap();
        assert_eq!(stored(&db, false).unwrap(), None);
        let initial = BTreeMap::from([("default".to_owned(), urls("http://localhost:2380"))]);
        let start = fresh(&db, "default", Fresh::New { initial, token: "etcd-cluster".into() }).unwrap();
        // A default etcd is member 8e9e05c52164694d of cluster cdf818194e3a8c32.
        assert_eq!((start.member_id, start.cluster_id), (0x8e9e_05c5_2164_694d, 0xcdf8_1819_4e3a_8c32));
        assert_eq!(start.voters, [0x8e9e_05c5_2164_694d]);
        let again = stored(&db, false).unwrap().unwrap();
        assert_eq!(
            (again.member_id, again.cluster_id, again.had_data),
            (start.member_id, start.cluster_id, true)
        );
        assert_eq!(again.members[0].name, "default");
        let elsewhere = BTreeMap::from([("x".to_owned(), urls("http://x:1"))]);
        let refused = fresh(&db, "y", Fresh::New { initial: elsewhere, token: "t".into() }).unwrap_err();
        assert!(refused.to_string().contains("couldn't find local name \"y\""), "{refused}");
    }

    #[test]
    fn a_joiner_starts_from_the_voters_it_is_not_and_a_removed_member_never_starts() {
        let dir = tempfile::tempdir().unwrap();
        let db = cairn_backend::open(dir.path()).unwrap();
        let member = |id, name: &str, url: &str| Member {
            id,
            name: name.into(),
            peer_ur_ls: urls(url),
            ..Member::default()
        };
        let members = vec![
            member(1, "a", "http://a:2380"),
            member(2, "b", "http://b:2380"),
            member(3, "", "http://c:2380"),
        ];
        let stranger =
            Fresh::Join { cluster_id: 9, members: members.clone(), peer_urls: urls("http://d:2380") };
        assert!(fresh(&db, "d", stranger).unwrap_err().to_string().contains("add it first"));
        let join = Fresh::Join { cluster_id: 9, members, peer_urls: urls("http://c:2380") };
        let start = fresh(&db, "c", join).unwrap();
        assert_eq!((start.member_id, start.cluster_id, start.voters.clone()), (3, 9, vec![1, 2]));
        assert_eq!(members::load(&db).unwrap()[&3].name, "c");

        let txn = db.begin_write().unwrap();
        members::save(&txn, &Member { id: 3, name: REMOVED.into(), ..Member::default() }).unwrap();
        txn.commit().unwrap();
        let refused = stored(&db, false).unwrap_err().to_string();
        assert_eq!(refused, "the member has been permanently removed from the cluster");
    }
}
