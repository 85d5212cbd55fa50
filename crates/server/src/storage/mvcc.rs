//! The multi-version key-value store: etcd's revision semantics over redb tables.
//!
//! A store revision counts write requests (a txn is one revision). Each key carries
//! the revision it was created at, the revision of its last change and its version
//! (changes since creation). Every revision of a key stays readable until compacted.

use cairn_api::mvccpb::event::EventType;
use cairn_api::mvccpb::{Event, KeyValue};
use prost::Message;
use redb::{ReadableTable, Table};

use super::{KV_EVENTS, KV_HISTORY, KV_LATEST, META, StorageError};

/// The `(key, revision)` history table, in a write transaction.
pub(crate) type HistoryTable<'txn> = Table<'txn, (&'static [u8], u64), &'static [u8]>;
/// The live keys table, in a write transaction.
pub(crate) type LatestTable<'txn> = Table<'txn, &'static [u8], &'static [u8]>;
/// The changes-by-revision table, in a write transaction.
pub(crate) type EventsTable<'txn> = Table<'txn, (u64, u32), &'static [u8]>;

/// Which keys a request names, by etcd's `key`/`range_end` conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeySpan<'a> {
    /// `range_end` empty: one key.
    Single(&'a [u8]),
    /// `range_end` `"\0"`: every key from `key` on.
    From(&'a [u8]),
    /// `[key, range_end)`; empty when `range_end <= key`.
    Range(&'a [u8], &'a [u8]),
}

impl<'a> KeySpan<'a> {
    pub(crate) fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
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
    pub(crate) fn contains(&self, candidate: &[u8]) -> bool {
        match *self {
            Self::Single(key) => candidate == key,
            Self::From(key) => candidate >= key,
            Self::Range(key, end) => candidate >= key && candidate < end,
        }
    }
}

fn decode(bytes: &[u8]) -> Result<KeyValue, StorageError> {
    KeyValue::decode(bytes).map_err(|_| StorageError::Corrupt("key-value record"))
}

/// The live keys in `span` at the current revision, in key order.
pub(crate) fn range_latest(
    latest: &impl ReadableTable<&'static [u8], &'static [u8]>,
    span: KeySpan<'_>,
) -> Result<Vec<KeyValue>, StorageError> {
    let mut kvs = Vec::new();
    if span.is_empty() {
        return Ok(kvs);
    }
    let entries = match span {
        KeySpan::Single(key) => {
            if let Some(value) = latest.get(key)? {
                kvs.push(decode(value.value())?);
            }
            return Ok(kvs);
        }
        KeySpan::From(key) => latest.range::<&[u8]>(key..)?,
        KeySpan::Range(key, end) => latest.range::<&[u8]>(key..end)?,
    };
    for entry in entries {
        let (_, value) = entry?;
        kvs.push(decode(value.value())?);
    }
    Ok(kvs)
}

/// The keys in `span` as they were at `revision`, in key order. Keys deleted at or
/// before `revision` are absent.
pub(crate) fn range_at(
    history: &impl ReadableTable<(&'static [u8], u64), &'static [u8]>,
    span: KeySpan<'_>,
    revision: u64,
) -> Result<Vec<KeyValue>, StorageError> {
    let mut kvs = Vec::new();
    if span.is_empty() {
        return Ok(kvs);
    }
    let entries = match span {
        KeySpan::Single(key) => history.range((key, 0)..=(key, u64::MAX))?,
        KeySpan::From(key) => history.range((key, 0)..)?,
        KeySpan::Range(key, end) => history.range((key, 0)..(end, 0))?,
    };
    // Entries come grouped by key, revisions ascending: keep each key's last one at
    // or before `revision`.
    let mut current: Option<(Vec<u8>, Option<KeyValue>)> = None;
    for entry in entries {
        let (stored_key, value) = entry?;
        let (key, stored_revision) = stored_key.value();
        if current.as_ref().is_none_or(|(held, _)| held.as_slice() != key) {
            if let Some((_, Some(kv))) = current.take() {
                kvs.push(kv);
            }
            current = Some((key.to_vec(), None));
        }
        if stored_revision <= revision
            && let Some((_, visible)) = current.as_mut()
        {
            let kv = decode(value.value())?;
            *visible = (kv.version != 0).then_some(kv);
        }
    }
    if let Some((_, Some(kv))) = current {
        kvs.push(kv);
    }
    Ok(kvs)
}

/// The store's counters, kept by the apply loop and persisted with every change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Revisions {
    /// The current store revision: 1 for an empty store.
    pub(crate) current: u64,
    /// Revisions below this are gone; 0 before any compaction.
    pub(crate) compacted: u64,
}

impl Revisions {
    pub(crate) fn load(meta: &impl ReadableTable<&'static str, u64>) -> Result<Self, StorageError> {
        let get =
            |name: &str| -> Result<Option<u64>, StorageError> { Ok(meta.get(name)?.map(|v| v.value())) };
        Ok(Self { current: get("revision")?.unwrap_or(1), compacted: get("compact_revision")?.unwrap_or(0) })
    }

    pub(crate) fn save(&self, meta: &mut Table<'_, &'static str, u64>) -> Result<(), StorageError> {
        meta.insert("revision", self.current)?;
        meta.insert("compact_revision", self.compacted)?;
        Ok(())
    }
}

/// Writes at one revision: a put or delete request, or every write of a txn.
pub(crate) struct Writer<'a, 'txn> {
    pub(crate) history: &'a mut HistoryTable<'txn>,
    pub(crate) latest: &'a mut LatestTable<'txn>,
    pub(crate) log: &'a mut EventsTable<'txn>,
    /// The changes made, in order, for watchers.
    pub(crate) events: Vec<Event>,
    /// The revision the writes get.
    pub(crate) revision: u64,
    /// Whether anything was written, so the store revision moves.
    pub(crate) wrote: bool,
}

impl Writer<'_, '_> {
    /// The live value of `key`, seeing this writer's own writes.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StorageError> {
        self.latest.get(key)?.map(|value| decode(value.value())).transpose()
    }

    /// Puts `key`, returning its previous live value.
    pub(crate) fn put(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        lease: i64,
    ) -> Result<Option<KeyValue>, StorageError> {
        let previous = self.get(key)?;
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision: previous.as_ref().map_or(self.revision as i64, |p| p.create_revision),
            mod_revision: self.revision as i64,
            version: previous.as_ref().map_or(1, |p| p.version + 1),
            value,
            lease,
        };
        let encoded = kv.encode_to_vec();
        self.latest.insert(key, encoded.as_slice())?;
        self.history.insert((key, self.revision), encoded.as_slice())?;
        self.record(Event { r#type: EventType::Put as i32, kv: Some(kv), prev_kv: previous.clone() })?;
        Ok(previous)
    }

    /// Deletes the live keys in `span`, returning them.
    pub(crate) fn delete(&mut self, span: KeySpan<'_>) -> Result<Vec<KeyValue>, StorageError> {
        let deleted = range_latest(self.latest, span)?;
        for kv in &deleted {
            self.latest.remove(kv.key.as_slice())?;
            let tombstone =
                KeyValue { key: kv.key.clone(), mod_revision: self.revision as i64, ..KeyValue::default() };
            self.history.insert((kv.key.as_slice(), self.revision), tombstone.encode_to_vec().as_slice())?;
            self.record(Event {
                r#type: EventType::Delete as i32,
                kv: Some(tombstone),
                prev_kv: Some(kv.clone()),
            })?;
        }
        Ok(deleted)
    }

    fn record(&mut self, event: Event) -> Result<(), StorageError> {
        let position =
            u32::try_from(self.events.len()).map_err(|_| StorageError::Corrupt("too many changes"))?;
        let key = event.kv.as_ref().map(|kv| kv.key.as_slice()).unwrap_or_default();
        self.log.insert((self.revision, position), key)?;
        self.events.push(event);
        self.wrote = true;
        Ok(())
    }
}

/// Drops every revision below `revision` that no read at `revision` or later can see:
/// of each key, all but its last revision at or before `revision`, and that one too
/// when it is a tombstone.
pub(crate) fn compact(history: &mut HistoryTable<'_>, revision: u64) -> Result<usize, StorageError> {
    let mut doomed: Vec<(Vec<u8>, u64)> = Vec::new();
    {
        let mut last: Option<(Vec<u8>, u64, bool)> = None;
        for entry in history.iter()? {
            let (stored_key, value) = entry?;
            let (key, stored_revision) = stored_key.value();
            if stored_revision > revision {
                continue;
            }
            let tombstone = decode(value.value())?.version == 0;
            // The entry held is superseded by this one of the same key, or is its key's
            // last at or before `revision` and is kept unless it is a tombstone.
            if let Some((held, held_revision, held_tombstone)) = last.take()
                && (held.as_slice() == key || held_tombstone)
            {
                doomed.push((held, held_revision));
            }
            last = Some((key.to_vec(), stored_revision, tombstone));
        }
        if let Some((held, held_revision, true)) = last {
            doomed.push((held, held_revision));
        }
    }
    for (key, stored_revision) in &doomed {
        history.remove((key.as_slice(), *stored_revision))?;
    }
    Ok(doomed.len())
}

/// The key-value tables of a write transaction.
pub(crate) struct Tables<'txn> {
    pub(crate) history: HistoryTable<'txn>,
    pub(crate) latest: LatestTable<'txn>,
    pub(crate) log: EventsTable<'txn>,
    pub(crate) meta: Table<'txn, &'static str, u64>,
}

/// Opens the key-value tables of a write transaction.
pub(crate) fn open_tables(txn: &redb::WriteTransaction) -> Result<Tables<'_>, StorageError> {
    Ok(Tables {
        history: txn.open_table(KV_HISTORY)?,
        latest: txn.open_table(KV_LATEST)?,
        log: txn.open_table(KV_EVENTS)?,
        meta: txn.open_table(META)?,
    })
}

/// Drops the change log below `revision`, which compaction made unreadable.
pub(crate) fn compact_log(log: &mut EventsTable<'_>, revision: u64) -> Result<(), StorageError> {
    log.retain_in(..(revision, 0), |_, _| false)?;
    Ok(())
}

/// The changes to keys in `span` from revision `from` on, in revision order, at most
/// `limit` of them (more may follow when as many come back): each with its revision.
pub(crate) fn events_since(
    log: &impl ReadableTable<(u64, u32), &'static [u8]>,
    history: &impl ReadableTable<(&'static [u8], u64), &'static [u8]>,
    span: KeySpan<'_>,
    from: u64,
    limit: usize,
) -> Result<Vec<(u64, Event)>, StorageError> {
    let mut events = Vec::new();
    for entry in log.range((from, 0)..)? {
        if events.len() >= limit {
            break;
        }
        let (position, key) = entry?;
        let (revision, _) = position.value();
        let key = key.value();
        if !span.contains(key) {
            continue;
        }
        let kv = match history.get((key, revision))? {
            Some(value) => decode(value.value())?,
            None => continue,
        };
        let previous = history.range((key, 0)..(key, revision))?.next_back().transpose()?;
        let prev_kv = match previous {
            Some((_, value)) => Some(decode(value.value())?).filter(|kv| kv.version != 0),
            None => None,
        };
        let kind = if kv.version == 0 { EventType::Delete } else { EventType::Put };
        events.push((revision, Event { r#type: kind as i32, kv: Some(kv), prev_kv }));
    }
    Ok(events)
}
