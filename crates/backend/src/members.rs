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

    #[test]
    fn ids_once_stored_never_change() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::open(dir.path()).unwrap();
        assert_eq!(stored_ids(&db).unwrap(), None);
        assert_eq!(load_or_store_ids(&db, (1, 2)).unwrap(), (1, 2));
        assert_eq!(load_or_store_ids(&db, (3, 4)).unwrap(), (1, 2));
        assert_eq!(stored_ids(&db).unwrap(), Some((1, 2)));
    }
}
