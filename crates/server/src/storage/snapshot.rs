//! The state machine as bytes, for raft snapshots sent to members that fell behind
//! the leader's compacted log.
//!
//! A snapshot holds every table the state machine owns: the key history (from which
//! the live keys are rebuilt), the change log, leases, the auth store and the store
//! revisions. Restoring one replaces all of it, with the applied index, in one
//! transaction.

use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};

use super::mvcc::Revisions;
use super::{AUTH, KV_EVENTS, KV_HISTORY, KV_LATEST, LEASES, MEMBERS, META, StorageError};

#[derive(Clone, PartialEq, Message)]
struct StateSnapshot {
    #[prost(message, repeated, tag = "1")]
    history: Vec<HistoryEntry>,
    #[prost(message, repeated, tag = "2")]
    events: Vec<EventEntry>,
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
}

#[derive(Clone, PartialEq, Message)]
struct HistoryEntry {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(uint64, tag = "2")]
    revision: u64,
    #[prost(bytes = "vec", tag = "3")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct EventEntry {
    #[prost(uint64, tag = "1")]
    revision: u64,
    #[prost(uint32, tag = "2")]
    position: u32,
    #[prost(bytes = "vec", tag = "3")]
    key: Vec<u8>,
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
pub(crate) fn take(db: &Database) -> Result<(u64, Vec<u8>), StorageError> {
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
    for entry in txn.open_table(KV_HISTORY)?.iter()? {
        let (key, value) = entry?;
        let (key, revision) = key.value();
        snapshot.history.push(HistoryEntry { key: key.to_vec(), revision, value: value.value().to_vec() });
    }
    for entry in txn.open_table(KV_EVENTS)?.iter()? {
        let (position, key) = entry?;
        let (revision, position) = position.value();
        snapshot.events.push(EventEntry { revision, position, key: key.value().to_vec() });
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
        let member = cairn_api::etcdserverpb::Member::decode(bytes.value())
            .map_err(|_| StorageError::Corrupt("member"))?;
        snapshot.members.push(member);
    }
    Ok((applied_index, snapshot.encode_to_vec()))
}

/// Replaces the state machine in `txn` with `data`, applied up to `index`.
pub(crate) fn restore(txn: &WriteTransaction, data: &[u8], index: u64) -> Result<(), StorageError> {
    let snapshot = StateSnapshot::decode(data).map_err(|_| StorageError::Corrupt("state snapshot"))?;
    let mut history = txn.open_table(KV_HISTORY)?;
    let mut latest = txn.open_table(KV_LATEST)?;
    let mut events = txn.open_table(KV_EVENTS)?;
    let mut leases = txn.open_table(LEASES)?;
    let mut auth = txn.open_table(AUTH)?;
    let mut meta = txn.open_table(META)?;
    let mut members = txn.open_table(MEMBERS)?;
    members.retain(|_, _| false)?;
    for member in &snapshot.members {
        members.insert(member.id, member.encode_to_vec().as_slice())?;
    }
    history.retain(|_, _| false)?;
    latest.retain(|_, _| false)?;
    events.retain(|_, _| false)?;
    leases.retain(|_, _| false)?;
    auth.retain(|_, _| false)?;
    for entry in &snapshot.history {
        history.insert((entry.key.as_slice(), entry.revision), entry.value.as_slice())?;
        // Entries come by key, revisions ascending: the last one of a key is its
        // current state, live unless it is a tombstone.
        let kv = cairn_api::mvccpb::KeyValue::decode(entry.value.as_slice())
            .map_err(|_| StorageError::Corrupt("key-value record"))?;
        if kv.version == 0 {
            latest.remove(entry.key.as_slice())?;
        } else {
            latest.insert(entry.key.as_slice(), entry.value.as_slice())?;
        }
    }
    for entry in &snapshot.events {
        events.insert((entry.revision, entry.position), entry.key.as_slice())?;
    }
    for entry in &snapshot.leases {
        leases.insert(entry.id, (entry.ttl, entry.remaining))?;
    }
    if !snapshot.auth.is_empty() {
        auth.insert("store", snapshot.auth.as_slice())?;
    }
    Revisions { current: snapshot.revision, compacted: snapshot.compact_revision }.save(&mut meta)?;
    meta.insert("applied_index", index)?;
    Ok(())
}
