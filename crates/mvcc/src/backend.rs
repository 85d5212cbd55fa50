//! The store in etcd's backend format: its `key` bucket, and the compaction
//! revisions of its `meta` bucket, in a bbolt file ([`crate::bbolt`]).
//!
//! etcd keeps each change under a 17-byte revision key ([`revision_key`]), with a
//! `t` after a deletion, and the marshalled `mvccpb.KeyValue` as the value (a
//! deletion keeps the key alone). Writing that bucket from the `kv` table and reading
//! it back is all a snapshot needs from the store: the key index is rebuilt from the
//! table at start, as etcd rebuilds its `treeIndex`.

use std::io::{Seek, Write};

use cairn_api::mvccpb::KeyValue;
use prost::Message;
use redb::ReadableTable;

use crate::bbolt::{BoltError, BoltReader, BoltWriter};
use crate::{Error, KvTable, Position, revision_key};

/// etcd's bucket of changes.
pub const KEY_BUCKET: &[u8] = b"key";
/// etcd's bucket of counters and markers.
pub const META_BUCKET: &[u8] = b"meta";
/// The `meta` key of the compaction revision etcd has scheduled.
pub const SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
/// The `meta` key of the compaction revision etcd has finished.
pub const FINISHED_COMPACT: &[u8] = b"finishedCompactRev";

impl From<BoltError> for Error {
    fn from(error: BoltError) -> Self {
        Self::Backend(error.to_string())
    }
}

/// The position and deletion mark of an etcd revision key; `None` for a key of
/// another shape.
pub fn parse_revision_key(key: &[u8]) -> Option<(Position, bool)> {
    let deleted = match key.len() {
        17 => false,
        18 if key[17] == b't' => true,
        _ => return None,
    };
    if key[8] != b'_' {
        return None;
    }
    let main = u64::from_be_bytes(key[..8].try_into().ok()?);
    let sub = u32::try_from(u64::from_be_bytes(key[9..17].try_into().ok()?)).ok()?;
    Some(((main, sub), deleted))
}

/// Writes etcd's `key` bucket: every change in `kv`, in revision order.
///
/// # Errors
///
/// [`Error::Redb`] or [`Error::Backend`] if reading or writing fails,
/// [`Error::Corrupt`] for a change that does not decode.
pub fn write_key_bucket<F: Write + Seek>(
    writer: &mut BoltWriter<F>,
    kv: &impl ReadableTable<Position, &'static [u8]>,
) -> Result<(), Error> {
    let mut bucket = writer.bucket(KEY_BUCKET);
    for entry in kv.iter()? {
        let (at, value) = entry?;
        let change = KeyValue::decode(value.value()).map_err(|_| Error::Corrupt("key-value record"))?;
        if change.version == 0 {
            let tombstone = KeyValue { key: change.key, ..KeyValue::default() };
            bucket.put(&revision_key(at.value(), true), &tombstone.encode_to_vec())?;
        } else {
            bucket.put(&revision_key(at.value(), false), value.value())?;
        }
    }
    bucket.finish()?;
    Ok(())
}

/// etcd's encoding of a compaction revision in `meta`: the revision key of
/// `(revision, 0)`.
pub fn compact_revision_value(revision: u64) -> Vec<u8> {
    revision_key((revision, 0), false)
}

/// Reads etcd's `key` bucket from `reader` into `kv` (which should be empty), giving
/// the highest revision it holds (0 for none). A deletion becomes a tombstone at its
/// revision; an entry without a key (etcd's placeholder after a revision bump) is
/// skipped.
///
/// # Errors
///
/// [`Error::Backend`] for an unreadable file, [`Error::Corrupt`] for a key that is
/// not a revision or a value that is not a `mvccpb.KeyValue`.
pub fn read_key_bucket(reader: &BoltReader, kv: &mut KvTable<'_>) -> Result<u64, Error> {
    let mut highest = 0;
    reader.for_each(KEY_BUCKET, |key, value| {
        let (at, deleted) =
            parse_revision_key(key).ok_or(Error::Corrupt("revision key in the key bucket"))?;
        let mut change =
            KeyValue::decode(value).map_err(|_| Error::Corrupt("mvccpb.KeyValue in the key bucket"))?;
        highest = highest.max(at.0);
        if change.key.is_empty() {
            return Ok(());
        }
        if deleted {
            change = KeyValue { key: change.key, mod_revision: at.0 as i64, ..KeyValue::default() };
        } else if change.version == 0 {
            return Err(Error::Corrupt("a live key with version 0 in the key bucket"));
        }
        kv.insert(at, change.encode_to_vec().as_slice())?;
        Ok(())
    })?;
    Ok(highest)
}

/// The compaction revision recorded in etcd's `meta` bucket (the scheduled one, which
/// a restart finishes), 0 if none.
///
/// # Errors
///
/// [`Error::Backend`] for an unreadable file, [`Error::Corrupt`] for a value that is
/// not a revision key.
pub fn read_compact_revision(reader: &BoltReader) -> Result<u64, Error> {
    let mut compacted = 0;
    reader.for_each(META_BUCKET, |key, value| {
        if key == SCHEDULED_COMPACT || key == FINISHED_COMPACT {
            let ((revision, _), _) =
                parse_revision_key(value).ok_or(Error::Corrupt("compaction revision in meta"))?;
            compacted = compacted.max(revision);
        }
        Ok::<_, Error>(())
    })?;
    Ok(compacted)
}

#[cfg(test)]
mod tests {
    use redb::ReadableDatabase as _;

    use super::*;
    use crate::{KeyIndex, KeySpan, Writer};

    #[test]
    fn revision_keys_parse_back() {
        assert_eq!(parse_revision_key(&revision_key((9, 2), false)), Some(((9, 2), false)));
        assert_eq!(parse_revision_key(&revision_key((9, 0), true)), Some(((9, 0), true)));
        assert_eq!(parse_revision_key(b"short"), None);
        let mut bad = revision_key((1, 0), false);
        bad[8] = b'-';
        assert_eq!(parse_revision_key(&bad), None);
    }

    #[test]
    fn the_key_bucket_round_trips_with_deletions_as_etcd_stores_them() {
        let dir = tempfile::tempdir().unwrap();
        let source = redb::Database::create(dir.path().join("a")).unwrap();
        let mut index = KeyIndex::default();
        let txn = source.begin_write().unwrap();
        {
            let mut tables = crate::open_tables(&txn).unwrap();
            Writer::new(&mut tables.kv, &mut index, 2).put(b"a", b"1".to_vec(), 0).unwrap();
            Writer::new(&mut tables.kv, &mut index, 3).put(b"b", b"2".to_vec(), 7).unwrap();
            Writer::new(&mut tables.kv, &mut index, 4).delete(KeySpan::Single(b"a")).unwrap();
        }
        txn.commit().unwrap();

        let path = dir.path().join("snap.db");
        let mut writer = BoltWriter::new(std::fs::File::create(&path).unwrap()).unwrap();
        let read = source.begin_read().unwrap();
        write_key_bucket(&mut writer, &read.open_table(crate::KV).unwrap()).unwrap();
        writer.finish().unwrap();

        let reader = BoltReader::open(&path).unwrap();
        let mut tombstone = None;
        reader
            .for_each(KEY_BUCKET, |key, value| {
                if key.len() == 18 {
                    tombstone = Some(value.to_vec());
                }
                Ok::<_, BoltError>(())
            })
            .unwrap();
        let expected = KeyValue { key: b"a".to_vec(), ..KeyValue::default() }.encode_to_vec();
        assert_eq!(tombstone, Some(expected), "etcd keeps only the key of a deletion");

        let copy = redb::Database::create(dir.path().join("b")).unwrap();
        let txn = copy.begin_write().unwrap();
        assert_eq!(read_key_bucket(&reader, &mut txn.open_table(crate::KV).unwrap()).unwrap(), 4);
        txn.commit().unwrap();
        let rows = |txn: &redb::ReadTransaction| -> Vec<(Position, Vec<u8>)> {
            let table = txn.open_table(crate::KV).unwrap();
            table
                .iter()
                .unwrap()
                .map(|e| e.unwrap())
                .map(|(at, value)| (at.value(), value.value().to_vec()))
                .collect()
        };
        let (original, restored) = (rows(&read), rows(&copy.begin_read().unwrap()));
        assert_eq!(restored, original);
    }
}
