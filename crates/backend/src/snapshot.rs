//! The state machine as bytes, for raft snapshots sent to members that fell behind
//! the leader's compacted log.
//!
//! A snapshot holds every table the state machine owns: every change of every key
//! (from which the key index is rebuilt), leases, the auth store and the store
//! revisions. It is a stream of chunks, each a length-delimited protobuf message of
//! about [`CHUNK_BYTES`] of rows, read from one read transaction ([`Chunks`]) and
//! ended by a chunk that says it is the last: reading it, and restoring it, hold one
//! chunk at a time, and nothing bounds its size but the disk. Restoring one builds a
//! new database file in batches ([`restore`]) that takes the old one's place only
//! when whole and durable ([`Fresh::install`]), as a defragmentation's copy does: a
//! restore holds one batch in memory, and one cut short is refused.

use std::path::{Path, PathBuf};

use prost::Message;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, WriteTransaction};

use crate::{ALARMS, AUTH, Error, KV, LEASES, MEMBERS, META, RAFT_STATE, Removal, Store};
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
    txn: crate::Read,
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
    pub fn new(txn: impl Into<crate::Read>) -> Result<(u64, Self), Error> {
        Self::with_chunk_bytes(txn, CHUNK_BYTES)
    }

    /// As [`Chunks::new`], closing chunks after `chunk_bytes` of rows.
    pub fn with_chunk_bytes(txn: impl Into<crate::Read>, chunk_bytes: usize) -> Result<(u64, Self), Error> {
        let txn = txn.into();
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

/// Bytes of rows a restore writes per commit: what it holds in memory at most,
/// whatever the snapshot's size.
const RESTORE_BATCH_BYTES: usize = 16 * CHUNK_BYTES;

/// Where a restore builds its new database, beside the database file.
pub fn restore_path(path: &Path) -> PathBuf {
    path.with_extension("redb.restore")
}

/// A state machine restored from a snapshot into a new database file beside the
/// store's, not yet in its place: [`Fresh::install`] puts it there, and one dropped
/// instead is deleted.
#[derive(Debug)]
pub struct Fresh {
    db: Database,
    file: Removal,
}

impl Fresh {
    /// Records what goes with the restored state in one last transaction (`last`, as
    /// the raft state that restarts the log), makes the new file durable, renames it
    /// over `store`'s database file and makes it `store`'s current database. No write
    /// may happen to `store` meanwhile. An error before the rename leaves `store` as
    /// it was; one after it (the directory's sync) leaves the member unable to trust
    /// its files.
    pub fn install<E: From<Error>>(
        self,
        store: &Store,
        last: impl FnOnce(&WriteTransaction) -> Result<(), E>,
    ) -> Result<(), E> {
        let Self { db, file } = self;
        let mut txn = db.begin_write().map_err(Error::from)?;
        txn.set_durability(Durability::Immediate).map_err(Error::from)?;
        last(&txn)?;
        txn.commit().map_err(Error::from)?;
        let path = file.disarm();
        store.swap_in(db, &path).map_err(|failed| E::from(failed.into_inner()))
    }
}

/// Restores the snapshot read from `reader`, applied up to `index`, into a new
/// database file beside `store`'s, one chunk at a time, committing every
/// 16 MiB of rows without waiting for the disk: memory holds a batch
/// at most, whatever the snapshot's size, and `store` serves reads meanwhile. What a
/// snapshot does not hold (this member's IDs, its raft state) is carried over from
/// `store`. A chunk that is cut short or does not decode refuses the whole snapshot,
/// and the new file is deleted.
pub fn restore(store: &Store, reader: impl std::io::Read, index: u64) -> Result<Fresh, Error> {
    let path = restore_path(store.path());
    let _ = std::fs::remove_file(&path);
    let fresh = Fresh { db: crate::create_building(&path)?, file: Removal::new(path) };
    crate::create_tables(&fresh.db)?;
    let non_durable = || -> Result<WriteTransaction, Error> {
        let mut txn = fresh.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        Ok(txn)
    };
    let txn = non_durable()?;
    {
        let read = store.begin_read()?;
        crate::defrag::copy_whole(&read, &txn, META)?;
        crate::defrag::copy_whole(&read, &txn, RAFT_STATE)?;
    }
    let mut batch = Some(txn);
    let mut bytes = 0;
    let mut revisions = None;
    read_chunks(reader, |chunk| {
        let txn = match &mut batch {
            Some(txn) => txn,
            None => batch.insert(non_durable()?),
        };
        bytes += put_chunk(txn, &chunk, &mut revisions)?;
        if bytes >= RESTORE_BATCH_BYTES {
            batch.take().expect("a batch is open").commit()?;
            bytes = 0;
        }
        Ok(())
    })?;
    let txn = match batch {
        Some(txn) => txn,
        None => non_durable()?,
    };
    {
        let mut meta = txn.open_table(META)?;
        revisions.ok_or(Error::Corrupt("state snapshot"))?.save(&mut meta)?;
        meta.insert("applied_index", index)?;
    }
    txn.commit()?;
    Ok(fresh)
}

/// Writes the rows of `chunk` in `txn`, and from the first chunk (the header) the
/// revisions into `revisions`; gives back about how many bytes it wrote.
fn put_chunk(
    txn: &WriteTransaction,
    chunk: &StateSnapshot,
    revisions: &mut Option<Revisions>,
) -> Result<usize, Error> {
    if revisions.is_none() {
        *revisions = Some(Revisions { current: chunk.revision, compacted: chunk.compact_revision });
        let mut members = txn.open_table(MEMBERS)?;
        for member in &chunk.members {
            members.insert(member.id, member.encode_to_vec().as_slice())?;
        }
        if !chunk.auth.is_empty() {
            txn.open_table(AUTH)?.insert("store", chunk.auth.as_slice())?;
        }
        let mut alarms = txn.open_table(ALARMS)?;
        for alarm in &chunk.alarms {
            alarms.insert((alarm.member_id, alarm.alarm), ())?;
        }
    }
    let mut bytes = 0;
    if !chunk.changes.is_empty() {
        let mut kv = txn.open_table(KV)?;
        for change in &chunk.changes {
            kv.insert((change.revision, change.sub), change.value.as_slice())?;
            bytes += change.value.len() + 16;
        }
    }
    if !chunk.leases.is_empty() {
        let mut leases = txn.open_table(LEASES)?;
        for entry in &chunk.leases {
            leases.insert(entry.id, (entry.ttl, entry.remaining))?;
            bytes += 24;
        }
    }
    Ok(bytes)
}

/// Reads the chunks of a snapshot from `reader` and hands each to `each`, refusing a
/// stream cut short, one with anything after its last chunk, and a chunk that does
/// not decode.
fn read_chunks(
    reader: impl std::io::Read,
    mut each: impl FnMut(StateSnapshot) -> Result<(), Error>,
) -> Result<(), Error> {
    let corrupt = || Error::Corrupt("state snapshot");
    let mut reader = std::io::BufReader::new(reader);
    let mut buf = Vec::new();
    let mut ended = false;
    while let Some(length) = read_length(&mut reader).map_err(|_| corrupt())? {
        if ended || length > MAX_CHUNK_BYTES {
            return Err(corrupt());
        }
        buf.resize(length, 0);
        std::io::Read::read_exact(&mut reader, &mut buf).map_err(|_| corrupt())?;
        let chunk = StateSnapshot::decode(buf.as_slice()).map_err(|_| corrupt())?;
        ended = chunk.last;
        each(chunk)?;
    }
    if ended { Ok(()) } else { Err(corrupt()) }
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
