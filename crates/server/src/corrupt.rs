//! Corruption checks: etcd's `HashKV` of this member's store, the check at start
//! that compares it with the peers' (`--experimental-initial-corrupt-check`), and the
//! leader's periodic check (`--experimental-corrupt-check-time`), which raises the
//! CORRUPT alarm.
//!
//! A member whose store hashes differently from a peer's at the same revision and
//! compaction revision refuses to start: serving it would answer reads with data the
//! cluster never agreed on. A peer that cannot answer (down, behind, compacted past
//! this member's revision) is only logged, as etcd does.

use std::collections::HashMap;
use std::time::Duration;

use redb::ReadableDatabase as _;
use tracing::{info, warn};

use crate::storage::mvcc::{KeyIndex, Revisions};
use crate::storage::{KV, META};
use cairn_net::peer::PeerTls;

pub(crate) use cairn_mvcc::HashKv;

/// This member's hash at its current revision, from its store as it was at start.
pub(crate) fn local_hash(db: &redb::Database, index: &KeyIndex, member_id: u64) -> anyhow::Result<HashKv> {
    let txn = db.begin_read()?;
    let revisions = Revisions::load(&txn.open_table(META)?)?;
    cairn_mvcc::hash_kv_at(&txn.open_table(KV)?, index, revisions, 0)
        .map_err(|error| anyhow::anyhow!("{member_id:x} failed to fetch hash ({error})"))
}

/// etcd's `CheckInitialHashKV`: this member's hash at its current revision (`local`)
/// against each peer's at that revision. Fails only on a mismatch at equal compaction
/// revisions.
pub(crate) async fn initial_check(
    local: HashKv,
    member_id: u64,
    peers: &HashMap<u64, Vec<String>>,
    tls: Option<&PeerTls>,
    timeout: Duration,
) -> anyhow::Result<()> {
    info!(member = format_args!("{member_id:x}"), ?timeout, "starting initial corruption check");
    let mut mismatches = 0;
    for (&peer, urls) in peers.iter().filter(|(peer, _)| **peer != member_id) {
        match ask(urls, tls, local.revision, timeout).await {
            Ok(remote) if remote.hash != local.hash && remote.compact_revision == local.compact_revision => {
                warn!(
                    member = format_args!("{member_id:x}"),
                    peer = format_args!("{peer:x}"),
                    revision = local.revision,
                    local_hash = local.hash,
                    remote_hash = remote.hash,
                    compact_revision = local.compact_revision,
                    "found different hash values from remote peer"
                );
                mismatches += 1;
            }
            Ok(remote) if remote.hash != local.hash => warn!(
                peer = format_args!("{peer:x}"),
                local_compact_revision = local.compact_revision,
                remote_compact_revision = remote.compact_revision,
                "found different compact revision values from remote peer"
            ),
            Ok(_) => {}
            Err(error) => warn!(
                peer = format_args!("{peer:x}"),
                revision = local.revision,
                %error,
                "cannot fetch hash from remote peer"
            ),
        }
    }
    if mismatches > 0 {
        anyhow::bail!("{member_id:x} found data inconsistency with peers");
    }
    info!(member = format_args!("{member_id:x}"), "initial corruption checking passed; no corruption");
    Ok(())
}

/// A peer's hash at `revision`, from the first of its URLs that answers.
pub(crate) async fn ask(
    urls: &[String],
    tls: Option<&PeerTls>,
    revision: i64,
    timeout: Duration,
) -> anyhow::Result<HashKv> {
    let mut last = anyhow::anyhow!("no peer URLs");
    for url in urls {
        let asked = tokio::time::timeout(timeout, async {
            let channel = cairn_net::peer::connect(url, tls).await?;
            let mut client = cairn_api::cairnpb::membership_client::MembershipClient::new(channel);
            let response = client.hash_kv(cairn_api::cairnpb::HashKvRequest { revision }).await?.into_inner();
            anyhow::Ok(HashKv {
                hash: response.hash,
                revision: response.revision,
                compact_revision: response.compact_revision,
                hash_revision: revision,
            })
        })
        .await;
        match asked {
            Ok(Ok(remote)) => return Ok(remote),
            Ok(Err(error)) => last = anyhow::anyhow!("{url}: {error}"),
            Err(_) => last = anyhow::anyhow!("{url}: timed out"),
        }
    }
    Err(last)
}

/// What the leader's periodic check saw: its own hash before and after confirming
/// it leads, and each peer's answer at the first one's revision.
pub(crate) struct PeriodicFindings {
    pub(crate) member_id: u64,
    pub(crate) first: HashKv,
    pub(crate) second: HashKv,
    pub(crate) peers: Vec<(u64, HashKv)>,
}

/// etcd's `checkHashKV` verdict: the member that looks corrupt, if any. The leader
/// itself when its hash changed with neither revision moving; a peer ahead of the
/// leader's revision or compaction revision, or with another hash at the same
/// compaction revision.
pub(crate) fn periodic_verdict(findings: &PeriodicFindings) -> Option<u64> {
    let PeriodicFindings { member_id, first, second, peers } = findings;
    if second.hash != first.hash
        && second.revision == first.revision
        && second.compact_revision == first.compact_revision
    {
        warn!(revision = first.revision, "found hash mismatch with itself");
        return Some(*member_id);
    }
    for (peer, remote) in peers {
        let peer_hex = format_args!("{peer:x}");
        if remote.revision > second.revision {
            warn!(peer = %peer_hex, "revision from follower must be less than or equal to leader's");
        } else if remote.compact_revision > second.compact_revision {
            warn!(peer = %peer_hex, "compact revision from follower must be less than or equal to leader's");
        } else if remote.compact_revision == first.compact_revision && remote.hash != first.hash {
            warn!(peer = %peer_hex, "same compact revision then hashes must match");
        } else {
            continue;
        }
        return Some(*peer);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(hash: u32, revision: i64, compact_revision: i64) -> HashKv {
        HashKv { hash, revision, compact_revision, hash_revision: revision }
    }

    #[test]
    fn the_periodic_verdict_is_etcds() {
        let findings = |second: HashKv, peer: HashKv| PeriodicFindings {
            member_id: 1,
            first: hash(7, 10, 5),
            second,
            peers: vec![(2, peer)],
        };
        assert_eq!(periodic_verdict(&findings(hash(7, 10, 5), hash(7, 10, 5))), None);
        // A peer behind, or compacted less, is fine; at the same compaction it must agree.
        assert_eq!(periodic_verdict(&findings(hash(7, 10, 5), hash(3, 8, 2))), None);
        assert_eq!(periodic_verdict(&findings(hash(7, 10, 5), hash(8, 10, 5))), Some(2));
        assert_eq!(periodic_verdict(&findings(hash(7, 10, 5), hash(7, 11, 5))), Some(2));
        assert_eq!(periodic_verdict(&findings(hash(7, 10, 5), hash(7, 10, 6))), Some(2));
        // The leader's own hash moved while nothing was written: the leader.
        assert_eq!(periodic_verdict(&findings(hash(9, 10, 5), hash(7, 10, 5))), Some(1));
        // It moved because a write came in between: not a sign of anything.
        assert_eq!(periodic_verdict(&findings(hash(9, 11, 5), hash(7, 10, 5))), None);
    }
}
