//! Defragmentation (etcd's `Defragment`): the database rewritten into a fresh,
//! compact file that takes the old one's place.
//!
//! redb reuses the pages a compaction frees but never gives them back to the file
//! system, so the file only grows. A rewrite copies every table, in key order, into a
//! new file beside it, in two steps:
//!
//! 1. [`copy`], on any thread: everything one read transaction sees, in batches, while
//!    reads and writes go on against the old file.
//! 2. [`finish`], on the apply thread between two applies, so that no write happens
//!    meanwhile: the changes made since step 1 (new revisions of `kv`, rows a
//!    compaction dropped, and the small tables whole), then a durable commit, a rename
//!    over the old file and a sync of the directory. Only this step holds up writes;
//!    reads never wait: a read that began on the old file finishes there.
//!
//! A crash before the rename leaves the old file in place and a stray copy, which the
//! next start deletes; after it, the new file is complete and durable.

use std::path::{Path, PathBuf};
use std::time::Instant;

use redb::{Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};

use crate::{ALARMS, AUTH, Error, KV, LEASES, MEMBERS, META, RAFT_STATE, Store, SwapFailed};
use cairn_mvcc::Revisions;

/// Rows of `kv` per commit while copying (etcd's defrag commits every 10,000 keys).
const BATCH: usize = 10_000;

/// Where the copy is built, beside the database file.
pub fn copy_path(path: &Path) -> PathBuf {
    path.with_extension("redb.defrag")
}

/// The one defragmentation of a [`Store`] under way ([`Store::defrag_turn`]): held
/// by its [`struct@Copy`] until [`finish`] puts it in place or it is dropped.
#[derive(Debug)]
pub struct Turn(#[allow(dead_code, reason = "held, never read")] pub(crate) tokio::sync::OwnedMutexGuard<()>);

/// A copy of the database as of one read transaction, not yet in place.
#[derive(Debug)]
pub struct Copy {
    _turn: Turn,
    db: Database,
    path: PathBuf,
    /// The store revisions the copy has.
    revisions: Revisions,
    /// The `restored` record of `raft_state` the copy has: if it differs at the end,
    /// a snapshot from the leader replaced the state meanwhile.
    restored: Option<Vec<u8>>,
    started: Instant,
    /// The database file's size when the copy began.
    pub size_before: u64,
}

fn restored_record(txn: &ReadTransaction) -> Result<Option<Vec<u8>>, Error> {
    Ok(txn.open_table(RAFT_STATE)?.get("restored")?.map(|value| value.value().to_vec()))
}

/// Replaces table `table` of `to` with `from`'s.
pub(crate) fn copy_whole<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &ReadTransaction,
    to: &redb::WriteTransaction,
    table: TableDefinition<'_, K, V>,
) -> Result<(), Error> {
    let source = from.open_table(table)?;
    let mut target = to.open_table(table)?;
    target.retain(|_, _| false)?;
    for entry in source.iter()? {
        let (key, value) = entry?;
        target.insert(key.value(), value.value())?;
    }
    Ok(())
}

/// Copies every table but `kv` whole.
fn copy_small_tables(from: &ReadTransaction, to: &redb::WriteTransaction) -> Result<(), Error> {
    copy_whole(from, to, RAFT_STATE)?;
    copy_whole(from, to, META)?;
    copy_whole(from, to, AUTH)?;
    copy_whole(from, to, LEASES)?;
    copy_whole(from, to, MEMBERS)?;
    copy_whole(from, to, ALARMS)?;
    Ok(())
}

/// Copies the rows of `kv` from `start` on, committing every [`BATCH`] rows.
fn copy_kv_from(from: &ReadTransaction, to: &Database, start: (u64, u32)) -> Result<(), Error> {
    let source = from.open_table(KV)?;
    let mut next = Some(start);
    while let Some(start) = next.take() {
        let mut txn = to.begin_write()?;
        txn.set_durability(Durability::None)?;
        {
            let mut target = txn.open_table(KV)?;
            for (n, entry) in source.range(start..)?.enumerate() {
                let (key, value) = entry?;
                if n == BATCH {
                    next = Some(key.value());
                    break;
                }
                target.insert(key.value(), value.value())?;
            }
        }
        txn.commit()?;
    }
    Ok(())
}

/// Step 1: copies the database as one read transaction of `store` sees it into a new
/// file, in `store`'s `turn`. Reads and writes go on meanwhile. On failure the
/// partial copy is deleted.
pub fn copy(store: &Store, turn: Turn) -> Result<Copy, Error> {
    let path = copy_path(store.path());
    copy_in_turn(store, turn).inspect_err(|_| {
        let _ = std::fs::remove_file(&path);
    })
}

fn copy_in_turn(store: &Store, turn: Turn) -> Result<Copy, Error> {
    let started = Instant::now();
    store.refresh_size();
    let size_before = store.size();
    let source = store.get();
    let read = source.begin_read()?;
    let path = copy_path(store.path());
    let _ = std::fs::remove_file(&path);
    let db = crate::create_building(&path)?;
    crate::create_tables(&db)?;
    copy_kv_from(&read, &db, (0, 0))?;
    // Durable here, off the raft thread: the last step then syncs only its own few
    // pages, not the whole copy.
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    copy_small_tables(&read, &txn)?;
    txn.commit()?;
    let revisions = Revisions::load(&read.open_table(META)?)?;
    let restored = restored_record(&read)?;
    Ok(Copy { _turn: turn, db, path, revisions, restored, started, size_before })
}

/// What a defragmentation did.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// The file's size before.
    pub size_before: u64,
    /// The new file's size.
    pub size_after: u64,
    /// How long writes waited for the last step.
    pub blocked: std::time::Duration,
    /// How long the whole defragmentation took.
    pub took: std::time::Duration,
}

/// Step 2: brings `copy` up to date with `store`, makes it durable, renames it over
/// the database file and makes it the current database. No write may happen to
/// `store` meanwhile: a server runs it between two applies.
pub fn finish(store: &Store, copy: Copy) -> Result<Outcome, Failed> {
    let blocked_since = Instant::now();
    let (path, started, size_before) = (copy.path.clone(), copy.started, copy.size_before);
    // The turn is held to the end: the copy's file is this defragmentation's alone.
    let (_turn, caught_up) = catch_up(store, copy);
    let db = match caught_up {
        Ok(db) => db,
        Err(error) => {
            let _ = std::fs::remove_file(&path);
            return Err(Failed::Before(error));
        }
    };
    store.swap_in(db, &path).map_err(|failed| match failed {
        SwapFailed::Before(error) => Failed::Before(error),
        SwapFailed::After(error) => Failed::After(error),
    })?;
    Ok(Outcome {
        size_before,
        size_after: store.size(),
        blocked: blocked_since.elapsed(),
        took: started.elapsed(),
    })
}

/// How a defragmentation failed: before the copy took the database's place (nothing
/// changed, the caller may go on), or after (the member cannot trust its files).
#[derive(Debug, thiserror::Error)]
pub enum Failed {
    /// Before the rename: the old file is still the database.
    #[error("defragmentation failed: {0}")]
    Before(Error),
    /// After the rename: the member cannot trust its files.
    #[error("defragmentation failed after the copy took the database's place: {0}")]
    After(Error),
}

/// Brings `copy` up to date with `store` and makes it durable, giving back its turn.
fn catch_up(store: &Store, copy: Copy) -> (Turn, Result<Database, Error>) {
    let Copy { _turn: turn, db, revisions, restored, .. } = copy;
    (turn, bring_up_to_date(store, db, revisions, restored))
}

fn bring_up_to_date(
    store: &Store,
    db: Database,
    revisions: Revisions,
    restored: Option<Vec<u8>>,
) -> Result<Database, Error> {
    let source = store.get();
    let read = source.begin_read()?;
    let now = Revisions::load(&read.open_table(META)?)?;
    if restored_record(&read)? != restored {
        // A snapshot from the leader replaced every table: copy `kv` again.
        let txn = db.begin_write()?;
        txn.open_table(KV)?.retain(|_, _| false)?;
        txn.commit()?;
        copy_kv_from(&read, &db, (0, 0))?;
    } else {
        copy_kv_from(&read, &db, (revisions.current + 1, 0))?;
        if now.compacted > revisions.compacted {
            // A compaction since step 1 dropped rows the copy still has.
            let txn = db.begin_write()?;
            {
                let source = read.open_table(KV)?;
                let mut target = txn.open_table(KV)?;
                let mut dropped = Vec::new();
                // A later compaction also drops the newest change of a key that the
                // copy's own compaction kept, so every row up to it is looked at.
                for entry in target.range(..=(now.compacted, u32::MAX))? {
                    let key = entry?.0.value();
                    if source.get(key)?.is_none() {
                        dropped.push(key);
                    }
                }
                for key in dropped {
                    target.remove(key)?;
                }
            }
            txn.commit()?;
        }
    }
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    copy_small_tables(&read, &txn)?;
    txn.commit()?;
    drop(read);
    Ok(db)
}

#[cfg(test)]
mod tests {
    use redb::TableHandle as _;

    use super::*;
    use cairn_mvcc::{self as mvcc, KeyIndex, KeySpan, Writer};

    fn table_names(db: &Database) -> Vec<String> {
        let read = db.begin_read().unwrap();
        let mut names: Vec<String> = read.list_tables().unwrap().map(|t| t.name().to_owned()).collect();
        names.sort();
        names
    }

    fn rows(db: &Database) -> Vec<((u64, u32), Vec<u8>)> {
        let read = db.begin_read().unwrap();
        let kv = read.open_table(KV).unwrap();
        kv.iter().unwrap().map(|e| e.unwrap()).map(|(k, v)| (k.value(), v.value().to_vec())).collect()
    }

    fn write(store: &Store, index: &mut KeyIndex, revision: u64, key: &str, size: usize) {
        let txn = store.begin_write().unwrap();
        {
            let mut tables = mvcc::open_tables(&txn).unwrap();
            Writer::new(&mut tables.kv, index, revision).put(key.as_bytes(), vec![7; size], 0).unwrap();
            Revisions { current: revision, compacted: 0 }.save(&mut tables.meta).unwrap();
        }
        txn.commit().unwrap();
    }

    #[test]
    fn a_rewrite_keeps_every_table_and_what_was_written_meanwhile_and_shrinks_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut index = KeyIndex::default();
        for revision in 2..2_000 {
            write(&store, &mut index, revision, &format!("k{}", revision % 50), 2_000);
        }
        let compact = |index: &mut KeyIndex, current: u64, revision: u64| {
            let txn = store.begin_write().unwrap();
            {
                let mut kv = txn.open_table(KV).unwrap();
                mvcc::compact(&mut kv, index, revision).unwrap();
                let revisions = Revisions { current, compacted: revision };
                revisions.save(&mut txn.open_table(META).unwrap()).unwrap();
            }
            txn.commit().unwrap();
            index.compact(revision);
        };
        compact(&mut index, 1_999, 1_900);
        let txn = store.begin_write().unwrap();
        txn.open_table(LEASES).unwrap().insert(5, (10, 10)).unwrap();
        txn.commit().unwrap();

        let copy = copy(&store, store.try_defrag_turn().unwrap()).unwrap();
        assert!(store.try_defrag_turn().is_none(), "one defragmentation at a time");
        // Written and compacted after step 1: the last step catches up.
        write(&store, &mut index, 2_000, "late", 10);
        compact(&mut index, 2_000, 1_990);
        let before = rows(&store.get());
        let tables = table_names(&store.get());

        let outcome = finish(&store, copy).unwrap();
        assert!(store.try_defrag_turn().is_some(), "the turn ends with the defragmentation");
        assert_eq!(rows(&store.get()), before);
        assert_eq!(table_names(&store.get()), tables, "every table is copied");
        assert!(outcome.size_after * 4 < outcome.size_before, "{outcome:?}");
        assert!(!copy_path(store.path()).exists());
        assert_eq!(
            mvcc::range(
                &store.begin_read().unwrap().open_table(KV).unwrap(),
                &index,
                KeySpan::Single(b"late"),
                2_000
            )
            .unwrap()
            .len(),
            1
        );
        // The file in place is the new one, whole, after a reopen.
        drop(store);
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(rows(&reopened.get()), before);
        let read = reopened.begin_read().unwrap();
        assert_eq!(read.open_table(LEASES).unwrap().get(5).unwrap().unwrap().value(), (10, 10));
    }
}
