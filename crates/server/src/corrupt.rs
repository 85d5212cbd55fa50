//! Corruption checks: the check at start that compares this member's `HashKV` with
//! the peers' (`--experimental-initial-corrupt-check`); the leader's periodic check
//! (`--experimental-corrupt-check-time`) is in the maintenance service, which raises
//! the CORRUPT alarm. The verdicts are `cairn-mvcc`'s, the calls `cairn-transport`'s.
//!
//! A member whose store hashes differently from a peer's at the same revision and
//! compaction revision refuses to start: serving it would answer reads with data the
//! cluster never agreed on. A peer that cannot answer (down, behind, compacted past
//! this member's revision) is only logged, as etcd does.

use std::collections::HashMap;
use std::time::Duration;

use cairn_mvcc::corrupt::{InitialMismatch, initial_mismatch};
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

/// Each peer's hash at `revision`, from those that answer (`cairn-transport`'s
/// `ask_hash`); the others are logged.
pub(crate) async fn peer_hashes(
    peers: impl IntoIterator<Item = (u64, Vec<String>)>,
    tls: Option<&PeerTls>,
    revision: i64,
    timeout: Duration,
) -> Vec<(u64, HashKv)> {
    let mut hashes = Vec::new();
    for (peer, urls) in peers {
        match cairn_transport::ask_hash(&urls, tls, revision, timeout).await {
            Ok(remote) => hashes.push((
                peer,
                HashKv {
                    hash: remote.hash,
                    revision: remote.revision,
                    compact_revision: remote.compact_revision,
                    hash_revision: revision,
                },
            )),
            Err(error) => {
                warn!(peer = format_args!("{peer:x}"), revision, %error, "cannot fetch hash from remote peer")
            }
        }
    }
    hashes
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
    let others =
        peers.iter().filter(|(peer, _)| **peer != member_id).map(|(&peer, urls)| (peer, urls.clone()));
    for (peer, remote) in peer_hashes(others, tls, local.revision, timeout).await {
        let peer_hex = format_args!("{peer:x}");
        match initial_mismatch(&local, &remote) {
            None => {}
            Some(InitialMismatch::Hash) => {
                warn!(
                    member = format_args!("{member_id:x}"),
                    peer = %peer_hex,
                    revision = local.revision,
                    local_hash = local.hash,
                    remote_hash = remote.hash,
                    compact_revision = local.compact_revision,
                    "found different hash values from remote peer"
                );
                mismatches += 1;
            }
            Some(InitialMismatch::CompactRevision) => warn!(
                peer = %peer_hex,
                local_compact_revision = local.compact_revision,
                remote_compact_revision = remote.compact_revision,
                "found different compact revision values from remote peer"
            ),
        }
    }
    if mismatches > 0 {
        anyhow::bail!("{member_id:x} found data inconsistency with peers");
    }
    info!(member = format_args!("{member_id:x}"), "initial corruption checking passed; no corruption");
    Ok(())
}
