//! The cluster's members as every member knows them: written at bootstrap (or when
//! joining), changed by applied configuration changes, kept on disk.

use std::collections::BTreeMap;

use cairn_api::etcdserverpb::Member;
use prost::Message as _;
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};

use crate::{Error, MEMBERS};

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
