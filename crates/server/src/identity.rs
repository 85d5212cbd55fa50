//! Member and cluster IDs, derived as etcd derives them so that the same flags give
//! the same IDs, and kept in the data dir so that they never change afterwards.

use redb::{Database, ReadableDatabase};
use sha1::{Digest, Sha1};

use crate::storage::{META, StorageError};

/// etcd's member ID: the first 8 bytes (big-endian) of the SHA-1 of the member's
/// sorted peer URLs joined, followed by the cluster token.
pub(crate) fn member_id(sorted_peer_urls: &[String], token: &str) -> u64 {
    let mut hasher = Sha1::new();
    hasher.update(sorted_peer_urls.concat().as_bytes());
    hasher.update(token.as_bytes());
    first_u64(&hasher.finalize())
}

/// etcd's cluster ID: the first 8 bytes of the SHA-1 of the sorted member IDs, each
/// big-endian.
pub(crate) fn cluster_id(member_ids: &[u64]) -> u64 {
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

/// The IDs stored in `db`, or else `fresh` stored for good.
/// The member and cluster IDs this data dir belongs to, once it has been started.
pub(crate) fn stored(db: &Database) -> Result<Option<(u64, u64)>, StorageError> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let member = meta.get("member_id")?.map(|v| v.value());
    let cluster = meta.get("cluster_id")?.map(|v| v.value());
    Ok(member.zip(cluster))
}

pub(crate) fn load_or_store(db: &Database, fresh: (u64, u64)) -> Result<(u64, u64), StorageError> {
    if let Some(ids) = stored(db)? {
        return Ok(ids);
    }
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        meta.insert("member_id", fresh.0)?;
        meta.insert("cluster_id", fresh.1)?;
    }
    txn.commit()?;
    Ok(fresh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_etcds_for_its_defaults() {
        // A default etcd reports member 8e9e05c52164694d in cluster cdf818194e3a8c32.
        let member = member_id(&["http://localhost:2380".to_owned()], "etcd-cluster");
        assert_eq!(member, 0x8e9e_05c5_2164_694d);
        assert_eq!(cluster_id(&[member]), 0xcdf8_1819_4e3a_8c32);
    }
}
