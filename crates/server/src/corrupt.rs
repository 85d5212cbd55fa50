//! Corruption checks: etcd's `HashKV` of this member's store, and the check at start
//! that compares it with the peers' (`--experimental-initial-corrupt-check`).
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
use crate::transport::PeerTls;

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
async fn ask(
    urls: &[String],
    tls: Option<&PeerTls>,
    revision: i64,
    timeout: Duration,
) -> anyhow::Result<HashKv> {
    let mut last = anyhow::anyhow!("no peer URLs");
    for url in urls {
        let asked = tokio::time::timeout(timeout, async {
            let channel = crate::transport::connect(url, tls).await?;
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
