//! The state machine as bytes, for raft snapshots sent to members that fell behind
//! the leader's compacted log.
//!
//! A snapshot holds every table the state machine owns: every change of every key
//! (from which the key index is rebuilt), leases, the auth store and the store
//! revisions. It is a stream of chunks, each a length-delimited protobuf message of
//! about [`CHUNK_BYTES`] of rows, read from one read transaction ([`Chunks`]) and
//! ended by a chunk that says it is the last: reading it, and restoring it, hold one
//! chunk at a time, and nothing bounds its size but the disk. Restoring one replaces
//! all of it, with the applied index, in one transaction ([`restore_from`]), whose
//! dirty pages redb keeps in memory until it commits; one cut short is refused.

use prost::Message;
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction};

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
    /// Set on the last chunk alone, which holds no rows: a snapshot cut short
    /// between two chunks is told from a whole one.
    #[prost(bool, tag = "10")]
    last: bool,
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

/// Bytes of rows after which a chunk is closed; a chunk holds at least one row, so
/// one may be larger by a row.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// Most bytes of one chunk read back: a chunk of rows plus the largest row, which
/// is bounded by the largest message members exchange (512 MiB, far over any
/// `--max-request-bytes` in use). Anything larger is not a chunk.
pub const MAX_CHUNK_BYTES: usize = 512 * 1024 * 1024;

/// The state machine as of a read transaction, as the chunks of a snapshot: the
/// first holds the revisions, auth store, members and alarms, the rest the `kv` and
/// `leases` rows in key order. Each chunk resumes after the last key of the one
/// before, so no table is held open between chunks.
pub struct Chunks {
    txn: ReadTransaction,
    next: Next,
    chunk_bytes: usize,
}

impl std::fmt::Debug for Chunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunks").finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
enum Next {
    Header,
    Kv(Option<(u64, u32)>),
    Leases(Option<i64>),
    End,
    Done,
}

impl Chunks {
    /// The chunks of the state `txn` reads, and the applied index that state is at.
    pub fn new(txn: ReadTransaction) -> Result<(u64, Self), Error> {
        Self::with_chunk_bytes(txn, CHUNK_BYTES)
    }

    /// As [`Chunks::new`], closing chunks after `chunk_bytes` of rows.
    pub fn with_chunk_bytes(txn: ReadTransaction, chunk_bytes: usize) -> Result<(u64, Self), Error> {
        let applied_index = txn.open_table(META)?.get("applied_index")?.map_or(0, |v| v.value());
        Ok((applied_index, Self { txn, next: Next::Header, chunk_bytes }))
    }

    fn chunk(&mut self) -> Result<Option<Vec<u8>>, Error> {
        let mut chunk = StateSnapshot::default();
        let mut bytes = 0;
        match self.next {
            Next::Header => {
                let meta = self.txn.open_table(META)?;
                let revisions = Revisions::load(&meta)?;
                chunk.revision = revisions.current;
                chunk.compact_revision = revisions.compacted;
                chunk.applied_index = meta.get("applied_index")?.map_or(0, |v| v.value());
                if let Some(auth) = self.txn.open_table(AUTH)?.get("store")? {
                    chunk.auth = auth.value().to_vec();
                }
                for entry in self.txn.open_table(MEMBERS)?.iter()? {
                    let (_, bytes) = entry?;
                    let member = cairn_api::etcdserverpb::Member::decode(bytes.value())
                        .map_err(|_| Error::Corrupt("member"))?;
                    chunk.members.push(member);
                }
                for entry in self.txn.open_table(ALARMS)?.iter()? {
                    let (key, _) = entry?;
                    let (member_id, alarm) = key.value();
                    chunk.alarms.push(cairn_api::etcdserverpb::AlarmMember { member_id, alarm });
                }
                self.next = Next::Kv(None);
            }
            Next::Kv(after) => {
                let table = self.txn.open_table(KV)?;
                let rows = match after {
                    None => table.range::<(u64, u32)>(..)?,
                    Some(after) => {
                        table.range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))?
                    }
                };
                self.next = Next::Leases(None);
                for entry in rows {
                    let (at, value) = entry?;
                    let (revision, sub) = at.value();
                    bytes += value.value().len() + 16;
                    chunk.changes.push(Change { revision, sub, value: value.value().to_vec() });
                    if bytes >= self.chunk_bytes {
                        self.next = Next::Kv(Some((revision, sub)));
                        break;
                    }
                }
            }
            Next::Leases(after) => {
                let table = self.txn.open_table(LEASES)?;
                let rows = match after {
                    None => table.range::<i64>(..)?,
                    Some(after) => {
                        table.range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))?
                    }
                };
                self.next = Next::End;
                for entry in rows {
                    let (id, ttls) = entry?;
                    let (ttl, remaining) = ttls.value();
                    bytes += 24;
                    chunk.leases.push(LeaseEntry { id: id.value(), ttl, remaining });
                    if bytes >= self.chunk_bytes {
                        self.next = Next::Leases(Some(id.value()));
                        break;
                    }
                }
            }
            Next::End => {
                chunk.last = true;
                self.next = Next::Done;
            }
            Next::Done => return Ok(None),
        }
        Ok(Some(chunk.encode_length_delimited_to_vec()))
    }
}

impl Iterator for Chunks {
    type Item = Result<Vec<u8>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let chunk = self.chunk();
        if chunk.is_err() {
            self.next = Next::Done;
        }
        chunk.transpose()
    }
}

/// The state machine as of its applied index, and that index: every chunk of
/// [`Chunks`], one after the other.
pub fn take(db: &Database) -> Result<(u64, Vec<u8>), Error> {
    let (applied_index, chunks) = Chunks::new(db.begin_read()?)?;
    let mut data = Vec::new();
    for chunk in chunks {
        data.extend(chunk?);
    }
    Ok((applied_index, data))
}

/// Replaces the state machine in `txn` with the snapshot `data`, applied up to
/// `index`.
pub fn restore(txn: &WriteTransaction, data: &[u8], index: u64) -> Result<(), Error> {
    restore_from(txn, data, index)
}

/// Replaces the state machine in `txn` with the snapshot read from `reader`, one
/// chunk at a time, applied up to `index`. A chunk that is cut short or does not
/// decode refuses the whole snapshot (the transaction must then be dropped).
pub fn restore_from(txn: &WriteTransaction, reader: impl std::io::Read, index: u64) -> Result<(), Error> {
    let corrupt = || Error::Corrupt("state snapshot");
    let mut reader = std::io::BufReader::new(reader);
    let mut kv = txn.open_table(KV)?;
    let mut leases = txn.open_table(LEASES)?;
    let mut auth = txn.open_table(AUTH)?;
    let mut meta = txn.open_table(META)?;
    let mut members = txn.open_table(MEMBERS)?;
    let mut alarms = txn.open_table(ALARMS)?;
    members.retain(|_, _| false)?;
    kv.retain(|_, _| false)?;
    leases.retain(|_, _| false)?;
    auth.retain(|_, _| false)?;
    alarms.retain(|_, _| false)?;
    let mut revisions = None;
    let mut buf = Vec::new();
    let mut ended = false;
    while let Some(length) = read_length(&mut reader).map_err(|_| corrupt())? {
        if ended {
            return Err(corrupt());
        }
        if length > MAX_CHUNK_BYTES {
            return Err(corrupt());
        }
        buf.resize(length, 0);
        std::io::Read::read_exact(&mut reader, &mut buf).map_err(|_| corrupt())?;
        let chunk = StateSnapshot::decode(buf.as_slice()).map_err(|_| corrupt())?;
        if revisions.is_none() {
            // The first chunk is the header.
            revisions = Some(Revisions { current: chunk.revision, compacted: chunk.compact_revision });
            for member in &chunk.members {
                members.insert(member.id, member.encode_to_vec().as_slice())?;
            }
            if !chunk.auth.is_empty() {
                auth.insert("store", chunk.auth.as_slice())?;
            }
            for alarm in &chunk.alarms {
                alarms.insert((alarm.member_id, alarm.alarm), ())?;
            }
        }
        for change in &chunk.changes {
            kv.insert((change.revision, change.sub), change.value.as_slice())?;
        }
        for entry in &chunk.leases {
            leases.insert(entry.id, (entry.ttl, entry.remaining))?;
        }
        ended = chunk.last;
    }
    if !ended {
        return Err(corrupt());
    }
    revisions.ok_or_else(corrupt)?.save(&mut meta)?;
    meta.insert("applied_index", index)?;
    Ok(())
}

/// Reads a chunk's varint length; `None` at the end of the stream, before a chunk.
fn read_length(reader: &mut impl std::io::BufRead) -> std::io::Result<Option<usize>> {
    let mut length = 0u64;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8];
        if reader.read(&mut byte)? == 0 {
            return if shift == 0 { Ok(None) } else { Err(std::io::ErrorKind::UnexpectedEof.into()) };
        }
        length |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            return usize::try_from(length).map(Some).map_err(|_| std::io::ErrorKind::InvalidData.into());
        }
    }
    Err(std::io::ErrorKind::InvalidData.into())
}
