//! The state machine as bytes, for raft snapshots sent to members that fell behind
//! the leader's compacted log.
//!
//! A snapshot holds every table the state machine owns: every change of every key
//! (from which the key index is rebuilt), leases, the auth store and the store
//! revisions. Restoring one replaces all of it, with the applied index, in one
//! transaction.

use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};

use crate::{ALARMS, AUTH, Error, KV, LEASES, MEMBERS, META};
use cairn_mvcc::Revisions;

#[derive(Clone, PartialEq, Message)]
struct StateSnapshot {
    #[prost(message, repeated, tag = "1")]
    changes: Vec<Change>,
    #[prost(message, repeated, tag = "3")]
    leases: Vec<LeaseEntry>,
    #[prost(bytes = "vec", tag = "4")]
    auth: Vec<u8>,
    #[prost(uint64, tag = "5")]
    revision: u64,
    #[prost(uint64, tag = "6")]
    compact_revision: u64,
    #[prost(uint64, tag = "7")]
    applied_index: u64,
    #[prost(message, repeated, tag = "8")]
    members: Vec<cairn_api::etcdserverpb::Member>,
    #[prost(message, repeated, tag = "9")]
    alarms: Vec<cairn_api::etcdserverpb::AlarmMember>,
}

/// One row of the `kv` table.
#[derive(Clone, PartialEq, Message)]
struct Change {
    #[prost(uint64, tag = "1")]
    revision: u64,
    #[prost(uint32, tag = "2")]
    sub: u32,
    #[prost(bytes = "vec", tag = "3")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct LeaseEntry {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(int64, tag = "2")]
    ttl: i64,
    #[prost(int64, tag = "3")]
    remaining: i64,
}

/// The state machine as of its applied index, and that index.
pub fn take(db: &Database) -> Result<(u64, Vec<u8>), Error> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let applied_index = meta.get("applied_index")?.map_or(0, |v| v.value());
    let revisions = Revisions::load(&meta)?;
    let mut snapshot = StateSnapshot {
        revision: revisions.current,
        compact_revision: revisions.compacted,
        applied_index,
        ..StateSnapshot::default()
    };
    for entry in txn.open_table(KV)?.iter()? {
        let (at, value) = entry?;
        let (revision, sub) = at.value();
        snapshot.changes.push(Change { revision, sub, value: value.value().to_vec() });
    }
    for entry in txn.open_table(LEASES)?.iter()? {
        let (id, ttls) = entry?;
        let (ttl, remaining) = ttls.value();
        snapshot.leases.push(LeaseEntry { id: id.value(), ttl, remaining });
    }
    if let Some(auth) = txn.open_table(AUTH)?.get("store")? {
        snapshot.auth = auth.value().to_vec();
    }
    for entry in txn.open_table(MEMBERS)?.iter()? {
        let (_, bytes) = entry?;
        let member =
            cairn_api::etcdserverpb::Member::decode(bytes.value()).map_err(|_| Error::Corrupt("member"))?;
        snapshot.members.push(member);
    }
    for entry in txn.open_table(ALARMS)?.iter()? {
        let (key, _) = entry?;
        let (member_id, alarm) = key.value();
        snapshot.alarms.push(cairn_api::etcdserverpb::AlarmMember { member_id, alarm });
    }
    Ok((applied_index, snapshot.encode_to_vec()))
}

/// Replaces the state machine in `txn` with `data`, applied up to `index`.
pub fn restore(txn: &WriteTransaction, data: &[u8], index: u64) -> Result<(), Error> {
    let snapshot = StateSnapshot::decode(data).map_err(|_| Error::Corrupt("state snapshot"))?;
    let mut kv = txn.open_table(KV)?;
    let mut leases = txn.open_table(LEASES)?;
    let mut auth = txn.open_table(AUTH)?;
    let mut meta = txn.open_table(META)?;
    let mut members = txn.open_table(MEMBERS)?;
    members.retain(|_, _| false)?;
    for member in &snapshot.members {
        members.insert(member.id, member.encode_to_vec().as_slice())?;
    }
    kv.retain(|_, _| false)?;
    leases.retain(|_, _| false)?;
    auth.retain(|_, _| false)?;
    for change in &snapshot.changes {
        kv.insert((change.revision, change.sub), change.value.as_slice())?;
    }
    for entry in &snapshot.leases {
        leases.insert(entry.id, (entry.ttl, entry.remaining))?;
    }
    if !snapshot.auth.is_empty() {
        auth.insert("store", snapshot.auth.as_slice())?;
    }
    let mut alarms = txn.open_table(ALARMS)?;
    alarms.retain(|_, _| false)?;
    for alarm in &snapshot.alarms {
        alarms.insert((alarm.member_id, alarm.alarm), ())?;
    }
    Revisions { current: snapshot.revision, compacted: snapshot.compact_revision }.save(&mut meta)?;
    meta.insert("applied_index", index)?;
    Ok(())
}
