//! The cluster's members as every member knows them: written at bootstrap (or when
//! joining), changed by applied configuration changes, kept on disk.

use std::collections::BTreeMap;

use cairn_api::etcdserverpb::Member;
use prost::Message as _;
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};

use crate::storage::{MEMBERS, StorageError};

/// Every member, by ID, removed ones included (named [`REMOVED`]).
pub(crate) type Members = BTreeMap<u64, Member>;

/// The name a removed member's entry keeps, so that its messages are refused.
pub(crate) const REMOVED: &str = "\u{0}removed";

/// The members saved in `db`.
pub(crate) fn load(db: &Database) -> Result<Members, StorageError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(MEMBERS)?;
    let mut members = Members::new();
    for entry in table.iter()? {
        let (id, bytes) = entry?;
        let member = Member::decode(bytes.value()).map_err(|_| StorageError::Corrupt("member"))?;
        members.insert(id.value(), member);
    }
    Ok(members)
}

/// Saves `member` in `txn`.
pub(crate) fn save(txn: &WriteTransaction, member: &Member) -> Result<(), StorageError> {
    txn.open_table(MEMBERS)?.insert(member.id, member.encode_to_vec().as_slice())?;
    Ok(())
}

/// Saves every one of `members` that `db` does not know yet.
pub(crate) fn save_missing(db: &Database, members: &[Member]) -> Result<(), StorageError> {
    let known = load(db)?;
    let txn = db.begin_write()?;
    for member in members.iter().filter(|member| !known.contains_key(&member.id)) {
        save(&txn, member)?;
    }
    txn.commit()?;
    Ok(())
}
