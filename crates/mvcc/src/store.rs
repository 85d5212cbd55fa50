//! The store: the `kv` table, the key index, reads, writes and compaction.
//!
//! A store revision counts write requests (a txn is one revision). Each key carries
//! the revision it was created at, the revision of its last change and its version
//! (changes since creation). Every revision of a key stays readable until compacted.
//!
//! As in etcd, changes are stored by revision (`kv`, appended to at its end, which
//! keeps each commit's dirty pages few) and found by key through an in-memory index.

use cairn_api::mvccpb::event::EventType;
use cairn_api::mvccpb::{Event, KeyValue};
use prost::Message;
use redb::{ReadableTable, Table};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::{Error, KV, META};

/// The changes by position, in a write transaction.
pub type KvTable<'txn> = Table<'txn, Position, &'static [u8]>;

/// Which keys a request names, by etcd's `key`/`range_end` conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpan<'a> {
    /// `range_end` empty: one key.
    Single(&'a [u8]),
    /// `range_end` `"\0"`: every key from `key` on.
    From(&'a [u8]),
    /// `[key, range_end)`; empty when `range_end <= key`.
    Range(&'a [u8], &'a [u8]),
}

impl<'a> KeySpan<'a> {
    /// The keys named by etcd's `key` and `range_end`.
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        match range_end {
            [] => Self::Single(key),
            [0] => Self::From(key),
            end => Self::Range(key, end),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Self::Range(key, end) if end <= key)
    }

    /// Whether `candidate` is one of the keys named.
    pub fn contains(&self, candidate: &[u8]) -> bool {
        match *self {
            Self::Single(key) => candidate == key,
            Self::From(key) => candidate >= key,
            Self::Range(key, end) => candidate >= key && candidate < end,
        }
    }
}

fn decode(bytes: &[u8]) -> Result<KeyValue, Error> {
    KeyValue::decode(bytes).map_err(|_| Error::Corrupt("key-value record"))
}

/// Where a change is stored: its revision, and its place among that revision's
/// changes (etcd's main and sub revision).
pub type Position = (u64, u32);

/// One change of a key in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Change {
    at: Position,
    deleted: bool,
}

/// Every key's changes, in memory (etcd's `treeIndex`): the `kv` table is keyed by
/// revision, so this is how a key's value is found. Rebuilt from the table at start.
///
/// The apply loop adds changes before its transaction commits, so the index may run
/// ahead of a reader's snapshot: reads look only at changes at or below their
/// snapshot's revision. Compaction removes changes after its commit, and a restore
/// replaces the index after its commit: a reader whose snapshot predates either must
/// take a new one ([`KeyIndex::serves`]).
#[derive(Debug, Default)]
pub struct KeyIndex {
    keys: BTreeMap<Vec<u8>, Vec<Change>>,
    /// The compaction revision the index reflects.
    compacted: u64,
    /// The store revision of the snapshot the index was restored from.
    restored: u64,
}

/// The key index, shared by the apply loop and readers.
pub type SharedIndex = Arc<RwLock<KeyIndex>>;

/// Reads the shared index.
pub fn read_index(index: &SharedIndex) -> RwLockReadGuard<'_, KeyIndex> {
    index.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Changes the shared index.
pub fn write_index(index: &SharedIndex) -> RwLockWriteGuard<'_, KeyIndex> {
    index.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `read` on one read transaction (its `kv` table and revisions) and the shared
/// key index, agreeing: a compaction or a restore can move the index past the
/// transaction's snapshot, and then a newer one is begun (with `begin_read`, on the
/// current database, which a defragmentation may have replaced).
///
/// # Errors
/// `read`'s, redb's, and [`Error::Corrupt`] for an index ahead of every snapshot (a
/// broken store: the index only moves past a snapshot after a commit that takes the
/// store past it too, so the second snapshot is enough).
pub fn view<T, E: From<Error>, R: std::borrow::Borrow<redb::ReadTransaction>>(
    begin_read: impl Fn() -> Result<R, redb::TransactionError>,
    index: &SharedIndex,
    read: impl FnOnce(&redb::ReadOnlyTable<Position, &'static [u8]>, &KeyIndex, Revisions) -> Result<T, E>,
) -> Result<T, E> {
    let storage = |error: redb::Error| E::from(Error::from(error));
    for _ in 0..100 {
        let held = begin_read().map_err(|e| storage(e.into()))?;
        let txn: &redb::ReadTransaction = held.borrow();
        let revisions = Revisions::load(&txn.open_table(crate::META).map_err(|e| storage(e.into()))?)?;
        let index = read_index(index);
        if index.serves(revisions) {
            return read(&txn.open_table(crate::KV).map_err(|e| storage(e.into()))?, &index, revisions);
        }
    }
    Err(Error::Corrupt("key index ahead of every snapshot of the store").into())
}

/// What the index and the lessor need of a stored change (an `mvccpb.KeyValue`):
/// decoded without copying its value.
#[derive(Clone, PartialEq, prost::Message)]
struct Head {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(int64, tag = "4")]
    version: i64,
    #[prost(int64, tag = "6")]
    lease: i64,
}

/// The lease each live key is attached to, `(lease, key)`, for the keys that are.
pub type Attached = Vec<(i64, Vec<u8>)>;

impl KeyIndex {
    /// Builds the index from every change stored in `kv`, in one pass that reads no
    /// value, and gives the lease of every live key attached to one.
    pub fn load(kv: &impl ReadableTable<Position, &'static [u8]>) -> Result<(Self, Attached), Error> {
        let mut index = Self::default();
        let mut leases: std::collections::HashMap<Vec<u8>, i64> = std::collections::HashMap::new();
        for entry in kv.iter()? {
            let (at, value) = entry?;
            let head = Head::decode(value.value()).map_err(|_| Error::Corrupt("key-value record"))?;
            let deleted = head.version == 0;
            index.push(&head.key, at.value(), deleted);
            // Changes come in revision order: a key's last one says its lease.
            if deleted || head.lease == 0 {
                leases.remove(&head.key);
            } else {
                leases.insert(head.key, head.lease);
            }
        }
        Ok((index, leases.into_iter().map(|(key, lease)| (lease, key)).collect()))
    }

    /// Whether a reader whose snapshot has `revisions` can use the index: the
    /// snapshot must include every compaction and restore the index reflects; if it
    /// does not, a newer snapshot does.
    pub fn serves(&self, revisions: Revisions) -> bool {
        revisions.compacted >= self.compacted && revisions.current >= self.restored
    }

    /// Records a change of `key` at `at`, a deletion when `deleted`.
    fn push(&mut self, key: &[u8], at: Position, deleted: bool) {
        let change = Change { at, deleted };
        match self.keys.get_mut(key) {
            Some(changes) => changes.push(change),
            None => {
                self.keys.insert(key.to_vec(), vec![change]);
            }
        }
    }

    /// Where the value `key` had at `revision` is stored; `None` when it had none.
    fn live(changes: &[Change], revision: u64) -> Option<Position> {
        let visible = changes.partition_point(|change| change.at.0 <= revision);
        changes[..visible].last().filter(|change| !change.deleted).map(|change| change.at)
    }

    /// Where the values of the live keys in `span` at `revision` are, in key order:
    /// counting them reads nothing from disk.
    pub fn positions(&self, span: KeySpan<'_>, revision: u64) -> Vec<Position> {
        self.live_in(span, revision).collect()
    }

    /// How many keys in `span` are live at `revision`, without collecting where.
    pub fn count(&self, span: KeySpan<'_>, revision: u64) -> usize {
        self.live_in(span, revision).count()
    }

    fn live_in<'a>(&'a self, span: KeySpan<'a>, revision: u64) -> impl Iterator<Item = Position> + 'a {
        let bounds = match span {
            _ if span.is_empty() => None,
            KeySpan::Single(key) => Some((Bound::Included(key), Bound::Included(key))),
            KeySpan::From(key) => Some((Bound::Included(key), Bound::Unbounded)),
            KeySpan::Range(key, end) => Some((Bound::Included(key), Bound::Excluded(end))),
        };
        bounds
            .into_iter()
            .flat_map(|bounds| self.keys.range::<[u8], _>(bounds))
            .filter_map(move |(_, changes)| Self::live(changes, revision))
    }

    /// The value `key` had just before its change at `at`, if it had one.
    fn before(&self, key: &[u8], at: Position) -> Option<Position> {
        let changes = self.keys.get(key)?;
        let earlier = changes.partition_point(|change| change.at < at);
        changes[..earlier].last().filter(|change| !change.deleted).map(|change| change.at)
    }

    /// The changes no read at `revision` or later can see: of each key, all but its
    /// last change at or before `revision`, and that one too when it is a deletion.
    /// The changes a compaction at `revision` drops: every change of a key below its
    /// newest one at or below `revision`, and that one too when it is a deletion. In
    /// no particular order.
    pub fn obsolete(&self, revision: u64) -> Vec<Position> {
        let mut doomed = Vec::new();
        for changes in self.keys.values() {
            let visible = changes.partition_point(|change| change.at.0 <= revision);
            let Some(last) = visible.checked_sub(1) else { continue };
            doomed.extend(changes[..last].iter().map(|change| change.at));
            if changes[last].deleted {
                doomed.push(changes[last].at);
            }
        }
        doomed
    }

    /// Forgets what compaction at `revision` dropped from the `kv` table, once its
    /// transaction has committed.
    pub fn compact(&mut self, revision: u64) {
        self.keys.retain(|_, changes| {
            let visible = changes.partition_point(|change| change.at.0 <= revision);
            if let Some(last) = visible.checked_sub(1) {
                let keep_last = usize::from(!changes[last].deleted);
                changes.drain(..visible - keep_last);
            }
            !changes.is_empty()
        });
        self.compacted = self.compacted.max(revision);
    }

    /// Whether any key has a live value at `revision`.
    fn any_live(&self, revision: u64) -> bool {
        self.keys.values().any(|changes| Self::live(changes, revision).is_some())
    }

    /// Whether the change of `key` at `at` is the value the key had at `revision`
    /// (etcd's `keyIndex.keep`).
    fn keeps(&self, key: &[u8], at: Position, revision: u64) -> bool {
        self.keys.get(key).and_then(|changes| Self::live(changes, revision)) == Some(at)
    }

    /// Marks the index as built from a store restored at `revisions`, so that readers
    /// of older snapshots take new ones.
    pub fn restored_at(&mut self, revisions: Revisions) {
        self.compacted = revisions.compacted;
        self.restored = revisions.current;
    }
}

/// Builds the shared key index from the `kv` table in `db`, with the lease of every
/// live key attached to one ([`KeyIndex::load`]).
pub fn load_index(db: &redb::Database) -> Result<(SharedIndex, Attached), Error> {
    use redb::ReadableDatabase as _;
    let txn = db.begin_read()?;
    let (index, attached) = KeyIndex::load(&txn.open_table(KV)?)?;
    Ok((Arc::new(RwLock::new(index)), attached))
}

fn get(kv: &impl ReadableTable<Position, &'static [u8]>, at: Position) -> Result<KeyValue, Error> {
    let value = kv.get(at)?.ok_or(Error::Corrupt("key index names a missing change"))?;
    decode(value.value())
}

/// The live keys in `span` as they were at `revision`, in key order.
pub fn range(
    kv: &impl ReadableTable<Position, &'static [u8]>,
    index: &KeyIndex,
    span: KeySpan<'_>,
    revision: u64,
) -> Result<Vec<KeyValue>, Error> {
    fetch(kv, &index.positions(span, revision))
}

/// The values at `positions`, in that order.
pub fn fetch(
    kv: &impl ReadableTable<Position, &'static [u8]>,
    positions: &[Position],
) -> Result<Vec<KeyValue>, Error> {
    positions.iter().map(|at| get(kv, *at)).collect()
}

/// The live value of `key` at `revision`.
pub fn live(
    kv: &impl ReadableTable<Position, &'static [u8]>,
    index: &KeyIndex,
    key: &[u8],
    revision: u64,
) -> Result<Option<KeyValue>, Error> {
    index
        .keys
        .get(key)
        .and_then(|changes| KeyIndex::live(changes, revision))
        .map(|at| get(kv, at))
        .transpose()
}

/// The store's counters, kept by the apply loop and persisted with every change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revisions {
    /// The current store revision: 1 for an empty store.
    pub current: u64,
    /// Revisions below this are gone; 0 before any compaction.
    pub compacted: u64,
}

impl Revisions {
    /// Reads the counters from the `meta` table (1 and 0 in a new store).
    pub fn load(meta: &impl ReadableTable<&'static str, u64>) -> Result<Self, Error> {
        let get = |name: &str| -> Result<Option<u64>, Error> { Ok(meta.get(name)?.map(|v| v.value())) };
        Ok(Self { current: get("revision")?.unwrap_or(1), compacted: get("compact_revision")?.unwrap_or(0) })
    }

    /// Writes the counters to the `meta` table.
    pub fn save(&self, meta: &mut Table<'_, &'static str, u64>) -> Result<(), Error> {
        meta.insert("revision", self.current)?;
        meta.insert("compact_revision", self.compacted)?;
        Ok(())
    }
}

/// Writes at one revision: a put or delete request, or every write of a txn.
pub struct Writer<'a, 'txn> {
    /// The `kv` table of the caller's write transaction.
    pub kv: &'a mut KvTable<'txn>,
    /// The key index, which the writes go into before the transaction commits.
    pub index: &'a mut KeyIndex,
    /// The changes made, in order, for watchers.
    pub events: Vec<Event>,
    /// The revision the writes get.
    pub revision: u64,
    /// Whether anything was written, so the store revision moves.
    pub wrote: bool,
}

impl<'a, 'txn> Writer<'a, 'txn> {
    /// A writer of changes at `revision`, into `kv` and `index`.
    pub fn new(kv: &'a mut KvTable<'txn>, index: &'a mut KeyIndex, revision: u64) -> Self {
        Self { kv, index, events: Vec::new(), revision, wrote: false }
    }

    /// The live value of `key`, seeing this writer's own writes.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, Error> {
        live(&*self.kv, self.index, key, self.revision)
    }

    /// Puts `key`, returning its previous live value.
    pub fn put(&mut self, key: &[u8], value: Vec<u8>, lease: i64) -> Result<Option<KeyValue>, Error> {
        let previous = self.get(key)?;
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision: previous.as_ref().map_or(self.revision as i64, |p| p.create_revision),
            mod_revision: self.revision as i64,
            version: previous.as_ref().map_or(1, |p| p.version + 1),
            value,
            lease,
        };
        self.record(Event { r#type: EventType::Put as i32, kv: Some(kv), prev_kv: previous.clone() })?;
        Ok(previous)
    }

    /// Deletes the live keys in `span`, returning them.
    pub fn delete(&mut self, span: KeySpan<'_>) -> Result<Vec<KeyValue>, Error> {
        let deleted = range(&*self.kv, self.index, span, self.revision)?;
        for kv in &deleted {
            let tombstone =
                KeyValue { key: kv.key.clone(), mod_revision: self.revision as i64, ..KeyValue::default() };
            self.record(Event {
                r#type: EventType::Delete as i32,
                kv: Some(tombstone),
                prev_kv: Some(kv.clone()),
            })?;
        }
        Ok(deleted)
    }

    /// Stores a change at the next position of this revision.
    fn record(&mut self, event: Event) -> Result<(), Error> {
        let sub = u32::try_from(self.events.len()).map_err(|_| Error::Corrupt("too many changes"))?;
        let kv = event.kv.as_ref().ok_or(Error::Corrupt("change without a key"))?;
        self.kv.insert((self.revision, sub), kv.encode_to_vec().as_slice())?;
        self.index.push(&kv.key, (self.revision, sub), kv.version == 0);
        self.events.push(event);
        self.wrote = true;
        Ok(())
    }
}

/// Drops from `kv` every change that no read at `revision` or later can see; the
/// index forgets them with [`KeyIndex::compact`] once this commits.
pub fn compact(kv: &mut KvTable<'_>, index: &KeyIndex, revision: u64) -> Result<usize, Error> {
    let doomed = index.obsolete(revision);
    for at in &doomed {
        kv.remove(*at)?;
    }
    Ok(doomed.len())
}

/// etcd's key in its `key` bucket for the change at `at`: the main revision and the
/// sub revision, each 8 bytes big-endian, joined by `_`, with `t` after a deletion.
pub fn revision_key(at: Position, deleted: bool) -> Vec<u8> {
    let mut key = Vec::with_capacity(18);
    key.extend_from_slice(&at.0.to_be_bytes());
    key.push(b'_');
    key.extend_from_slice(&u64::from(at.1).to_be_bytes());
    if deleted {
        key.push(b't');
    }
    key
}

/// etcd's `HashKV` at `revision` (`kvstore.HashByRev`): CRC-32C over the bucket name
/// `key`, then each change up to `revision` as etcd stores it (its revision key, then
/// the marshalled `mvccpb.KeyValue`; a deletion stores the key alone), leaving out the
/// changes at or below the compaction revision that a read at `revision` no longer
/// sees. The same history hashes the same on Cairn and on etcd. The caller checks
/// that `revision` is neither compacted nor in the future.
pub fn hash_kv(
    kv: &impl ReadableTable<Position, &'static [u8]>,
    index: &KeyIndex,
    compacted: u64,
    revision: u64,
) -> Result<u32, Error> {
    let filter = index.any_live(revision);
    let mut hash = crc32c::crc32c(b"key");
    for entry in kv.range(..=(revision, u32::MAX))? {
        let (at, value) = entry?;
        let at = at.value();
        let change = decode(value.value())?;
        let deleted = change.version == 0;
        if at.0 <= compacted && filter && !index.keeps(&change.key, at, revision) {
            continue;
        }
        hash = crc32c::crc32c_append(hash, &revision_key(at, deleted));
        hash = if deleted {
            let tombstone = KeyValue { key: change.key, ..KeyValue::default() };
            crc32c::crc32c_append(hash, &tombstone.encode_to_vec())
        } else {
            crc32c::crc32c_append(hash, value.value())
        };
    }
    Ok(hash)
}

/// What etcd's `HashKV` answers: the hash, the current revision, the compaction
/// revision (-1 before the first one, as etcd) and the revision hashed (etcd 3.6's
/// `hash_revision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashKv {
    /// [`hash_kv`] at `hash_revision`.
    pub hash: u32,
    /// The store's current revision.
    pub revision: i64,
    /// The compaction revision, -1 before the first compaction.
    pub compact_revision: i64,
    /// The revision hashed.
    pub hash_revision: i64,
}

/// etcd's `HashByRev` at `revision` (0: the current one), with its errors for a
/// compacted or a future revision.
pub fn hash_kv_at(
    kv: &impl ReadableTable<Position, &'static [u8]>,
    index: &KeyIndex,
    revisions: Revisions,
    revision: i64,
) -> Result<HashKv, Error> {
    let compact_revision = if revisions.compacted == 0 { -1 } else { revisions.compacted as i64 };
    let current = revisions.current as i64;
    if revision > 0 && revision <= compact_revision {
        return Err(Error::Compacted);
    }
    if revision > current {
        return Err(Error::FutureRevision);
    }
    let at = if revision == 0 { current } else { revision };
    let hash = hash_kv(kv, index, revisions.compacted, at.max(0) as u64)?;
    Ok(HashKv { hash, revision: current, compact_revision, hash_revision: at })
}

/// The key-value tables of a write transaction.
pub struct Tables<'txn> {
    /// Every change by position.
    pub kv: KvTable<'txn>,
    /// The counters.
    pub meta: Table<'txn, &'static str, u64>,
}

/// Opens the key-value tables of a write transaction.
pub fn open_tables(txn: &redb::WriteTransaction) -> Result<Tables<'_>, Error> {
    Ok(Tables { kv: txn.open_table(KV)?, meta: txn.open_table(META)? })
}

/// The changes to keys in `span` from revision `from` on, in revision order, about
/// `limit` of them and whole revisions (more may follow when at least as many come
/// back): each with its revision,
/// and with the key's previous value when `with_prev`.
pub fn events_since(
    kv: &impl ReadableTable<Position, &'static [u8]>,
    index: &KeyIndex,
    span: KeySpan<'_>,
    from: u64,
    limit: usize,
    with_prev: bool,
) -> Result<Vec<(u64, Event)>, Error> {
    let mut events = Vec::new();
    for entry in kv.range((from, 0)..)? {
        let (at, value) = entry?;
        let at = at.value();
        // A chunk ends between revisions, never inside one: callers go on from the
        // revision after the last one returned.
        if events.len() >= limit && events.last().is_some_and(|(revision, _)| *revision < at.0) {
            break;
        }
        let kv_now = decode(value.value())?;
        if !span.contains(&kv_now.key) {
            continue;
        }
        // The change before one at the compaction revision itself may be compacted.
        let prev_kv = match index.before(&kv_now.key, at).filter(|_| with_prev) {
            Some(before) => kv.get(before)?.map(|value| decode(value.value())).transpose()?,
            None => None,
        };
        let kind = if kv_now.version == 0 { EventType::Delete } else { EventType::Put };
        events.push((at.0, Event { r#type: kind as i32, kv: Some(kv_now), prev_kv }));
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(index: &mut KeyIndex, key: &str, revision: u64, deleted: bool) {
        index.push(key.as_bytes(), (revision, 0), deleted);
    }

    #[test]
    fn reads_see_each_key_as_it_was_at_their_revision() {
        let mut index = KeyIndex::default();
        change(&mut index, "a", 2, false);
        change(&mut index, "b", 3, false);
        change(&mut index, "a", 4, true);
        change(&mut index, "a", 5, false);
        assert_eq!(index.positions(KeySpan::From(b""), 3), [(2, 0), (3, 0)]);
        assert_eq!(index.positions(KeySpan::From(b""), 4), [(3, 0)]);
        assert_eq!(index.positions(KeySpan::Single(b"a"), 9), [(5, 0)]);
        assert_eq!(index.positions(KeySpan::Range(b"a", b"b"), 1), []);
        // A count finds as many as there are positions, without collecting them.
        assert_eq!(index.count(KeySpan::From(b""), 3), 2);
        assert_eq!(index.count(KeySpan::Single(b"a"), 9), 1);
        assert_eq!(index.count(KeySpan::Range(b"b", b"a"), 9), 0, "an empty range");
        assert_eq!(index.before(b"a", (5, 0)), None, "the change before is a deletion");
        assert_eq!(index.before(b"a", (4, 0)), Some((2, 0)));
    }

    #[test]
    fn revision_keys_are_etcds() {
        let key = revision_key((0x0102, 3), false);
        assert_eq!(key, [0, 0, 0, 0, 0, 0, 1, 2, b'_', 0, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(revision_key((7, 0), true).len(), 18);
        assert_eq!(revision_key((7, 0), true)[17], b't');
    }

    #[test]
    fn compaction_keeps_what_reads_at_or_after_it_can_see() {
        let mut index = KeyIndex::default();
        change(&mut index, "a", 2, false);
        change(&mut index, "a", 3, false);
        change(&mut index, "b", 4, false);
        change(&mut index, "b", 5, true);
        change(&mut index, "a", 6, false);
        assert_eq!(index.obsolete(5), [(2, 0), (4, 0), (5, 0)]);
        index.compact(5);
        let at = |current, compacted| Revisions { current, compacted };
        assert!(!index.serves(at(9, 0)) && index.serves(at(9, 5)));
        index.restored_at(at(12, 5));
        assert!(!index.serves(at(9, 5)) && index.serves(at(12, 5)));
        assert_eq!(index.positions(KeySpan::From(b""), 5), [(3, 0)]);
        assert_eq!(index.positions(KeySpan::From(b""), 6), [(6, 0)]);
        assert!(!index.keys.contains_key(b"b".as_slice()));
    }
}

#[cfg(test)]
mod catch_up_tests {
    use redb::ReadableDatabase as _;

    use super::*;

    #[test]
    fn a_chunk_of_changes_never_ends_inside_a_revision() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("db")).unwrap();
        let txn = db.begin_write().unwrap();
        let mut index = KeyIndex::default();
        {
            let mut table = txn.open_table(KV).unwrap();
            let mut writer =
                Writer { kv: &mut table, index: &mut index, events: Vec::new(), revision: 2, wrote: false };
            for key in ["a", "b", "c"] {
                writer.put(key.as_bytes(), b"v".to_vec(), 0).unwrap();
            }
            let mut writer =
                Writer { kv: &mut table, index: &mut index, events: Vec::new(), revision: 3, wrote: false };
            writer.put(b"a", b"w".to_vec(), 0).unwrap();
        }
        txn.commit().unwrap();
        let read = db.begin_read().unwrap();
        let table = read.open_table(KV).unwrap();
        let revisions =
            |events: Vec<(u64, Event)>| events.into_iter().map(|(revision, _)| revision).collect::<Vec<_>>();
        let first = events_since(&table, &index, KeySpan::From(b""), 2, 2, true).unwrap();
        assert_eq!(revisions(first), [2, 2, 2]);
        let rest = events_since(&table, &index, KeySpan::From(b""), 3, 2, true).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].1.prev_kv.as_ref().map(|kv| kv.value.as_slice()), Some(&b"v"[..]));
    }

    #[test]
    fn loading_the_index_gives_the_lease_of_each_live_key_from_its_last_change() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("db")).unwrap();
        let txn = db.begin_write().unwrap();
        let mut index = KeyIndex::default();
        {
            let mut table = txn.open_table(KV).unwrap();
            let changes: [(u64, &[u8], Option<i64>); 6] = [
                (2, b"a", Some(7)),
                (3, b"a", Some(0)), // detached
                (4, b"b", Some(7)),
                (5, b"c", Some(8)),
                (6, b"c", None), // deleted
                (7, b"d", Some(0)),
            ];
            for (revision, key, lease) in changes {
                let mut writer = Writer::new(&mut table, &mut index, revision);
                match lease {
                    Some(lease) => drop(writer.put(key, vec![b'v'; 100], lease).unwrap()),
                    None => drop(writer.delete(KeySpan::Single(key)).unwrap()),
                }
            }
        }
        txn.commit().unwrap();
        let read = db.begin_read().unwrap();
        let (loaded, mut attached) = KeyIndex::load(&read.open_table(KV).unwrap()).unwrap();
        attached.sort();
        assert_eq!(attached, [(7, b"b".to_vec())]);
        assert_eq!(loaded.positions(KeySpan::From(b""), 9), index.positions(KeySpan::From(b""), 9));
        assert_eq!(loaded.positions(KeySpan::From(b""), 9), [(3, 0), (4, 0), (7, 0)]);
    }
}
