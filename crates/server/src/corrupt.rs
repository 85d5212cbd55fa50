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

/// A peer's hash at `revision`, as `cairn-transport` asks it.
pub(crate) async fn ask(
    urls: &[String],
    tls: Option<&PeerTls>,
    revision: i64,
    timeout: Duration,
) -> Result<HashKv, cairn_transport::Error> {
    let remote = cairn_transport::ask_hash(urls, tls, revision, timeout).await?;
    let (hash, compact_revision) = (remote.hash, remote.compact_revision);
    Ok(HashKv { hash, revision: remote.revision, compact_revision, hash_revision: revision })
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
        let peer_hex = format_args!("{peer:x}");
        match ask(urls, tls, local.revision, timeout)
            .await
            .map(|remote| (initial_mismatch(&local, &remote), remote))
        {
            Ok((None, _)) => {}
            Ok((Some(InitialMismatch::Hash), remote)) => {
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
            Ok((Some(InitialMismatch::CompactRevision), remote)) => warn!(
                peer = %peer_hex,
                local_compact_revision = local.compact_revision,
                remote_compact_revision = remote.compact_revision,
                "found different compact revision values from remote peer"
            ),
            Err(error) => {
                warn!(peer = %peer_hex, revision = local.revision, %error, "cannot fetch hash from remote peer")
            }
        }
    }
    if mismatches > 0 {
        anyhow::bail!("{member_id:x} found data inconsistency with peers");
    }
    info!(member = format_args!("{member_id:x}"), "initial corruption checking passed; no corruption");
    Ok(())
}
