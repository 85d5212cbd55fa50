//! The raft state kept with the state machine in redb (the conf state, and the point
//! the log restarted at after a snapshot from the leader), and the recovery of
//! raft-rs's in-memory log from it and the write-ahead log at start.
//!
//! Both records are written with the state machine they describe, in the
//! transaction that applies a membership change, or in the last transaction of a
//! database file restored from a snapshot, which takes the old file's place whole
//! (by a rename): a crash never leaves a conf state that disagrees with the members
//! applied, nor a restored state machine without the mark that restarts the log.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use raft::Storage as _;
use raft::eraftpb::{ConfState, Entry, SnapshotMetadata};
use raft::storage::MemStorage;
use redb::{Database, ReadableDatabase, WriteTransaction};

use cairn_backend::{META, RAFT_STATE, Store, snapshot};
use cairn_wal::{Recovered, Wal};

use crate::Error;

fn encode(message: &impl protobuf::Message) -> Result<Vec<u8>, Error> {
    message.write_to_bytes().map_err(|_| Error::Corrupt("raft message"))
}

fn decode<M: protobuf::Message>(bytes: &[u8]) -> Result<M, Error> {
    M::parse_from_bytes(bytes).map_err(|_| Error::Corrupt("raft record"))
}

/// Saves the conf state in `txn`.
pub fn save_conf_state(txn: &WriteTransaction, conf_state: &ConfState) -> Result<(), Error> {
    txn.open_table(RAFT_STATE)?.insert("conf_state", encode(conf_state)?.as_slice())?;
    Ok(())
}

/// Records in `txn`, with the restored state machine, that it came from a snapshot
/// at `index` of `term`.
pub fn save_restored(txn: &WriteTransaction, index: u64, term: u64) -> Result<(), Error> {
    let meta = SnapshotMetadata { index, term, ..Default::default() };
    txn.open_table(RAFT_STATE)?.insert("restored", encode(&meta)?.as_slice())?;
    Ok(())
}

/// A member's raft log as it starts.
pub struct Opened {
    /// The write-ahead log, open for appending.
    pub wal: Wal,
    /// raft-rs's in-memory log, as the write-ahead log and `db` recovered it, or a new
    /// one holding only the voters.
    pub storage: MemStorage,
    /// The state machine's applied index (cairn-apply's `applied_index`).
    pub applied: u64,
    /// Whether nothing was ever saved: a new member, bootstrapped now.
    pub fresh: bool,
}

/// Opens the write-ahead log in `wal_dir` and recovers raft-rs's log with `db`'s
/// state ([`recover`]), or starts a new one with `voters` (saving its conf state).
///
/// # Errors
/// [`Error::Corrupt`] when the state machine was applied past the end of the log:
/// entries are applied only once durable in it, so the log was lost or replaced, and
/// raft must not run on a log that contradicts the state. A saved commit index below
/// the applied index only means it was saved late (it is synced with entries, not on
/// its own), and is moved up.
pub fn open(db: &Database, wal_dir: &Path, voters: Vec<u64>) -> Result<Opened, Error> {
    let (mut wal, recovered) = Wal::open(wal_dir)?;
    let (storage, fresh) = match recover(db, &mut wal, recovered)? {
        Some(storage) => (storage, false),
        None => {
            let storage = MemStorage::new_with_conf_state((voters, vec![]));
            let txn = db.begin_write()?;
            save_conf_state(&txn, &storage.initial_state().map_err(cairn_wal::Error::from)?.conf_state)?;
            txn.commit()?;
            (storage, true)
        }
    };
    let applied = db.begin_read()?.open_table(META)?.get("applied_index")?.map_or(0, |v| v.value());
    if applied > storage.last_index().map_err(cairn_wal::Error::from)? {
        return Err(Error::Corrupt("write-ahead log: it ends before the applied index"));
    }
    if applied > storage.rl().hard_state().commit {
        storage.wl().mut_hard_state().commit = applied;
    }
    Ok(Opened { wal, storage, applied, fresh })
}

/// Rebuilds raft-rs's storage from the state in `db` and what the write-ahead log
/// `log` held when opened (`recovered`). `None` when nothing was ever saved: a fresh
/// member, which the caller bootstraps.
pub fn recover(db: &Database, log: &mut Wal, mut recovered: Recovered) -> Result<Option<MemStorage>, Error> {
    let txn = db.begin_read()?;
    let state = txn.open_table(RAFT_STATE)?;
    let Some(conf_state) = state.get("conf_state")?.map(|v| decode::<ConfState>(v.value())).transpose()?
    else {
        return Ok(None);
    };
    let restored = state.get("restored")?.map(|v| decode::<SnapshotMetadata>(v.value())).transpose()?;
    if let Some(restored) = restored
        && restored.index > recovered.compacted.0
    {
        // The state machine was replaced by a snapshot, but the process stopped
        // before the log was restarted after it: everything in the log predates the
        // snapshot. Restart it now, before anything is appended after it.
        log.restart_at(restored.index, restored.term)?;
        recovered.entries.clear();
        recovered.compacted = (restored.index, restored.term);
    }

    let storage = cairn_wal::recover(recovered, conf_state)?;
    Ok(Some(storage))
}

/// raft-rs's in-memory log (as [`recover`] rebuilt it), with snapshots of the whole
/// state machine at its applied index. Taking one only opens a read transaction on
/// `db`: raft's message carries the metadata, and the data is read from that
/// transaction in chunks ([`cairn_backend::snapshot::Chunks`]) while the transport
/// streams it ([`Outgoing`]), off the raft thread. A snapshot that cannot be taken
/// is reported to raft as temporarily unavailable, which asks again later.
pub struct SnapshotStorage {
    log: MemStorage,
    db: Arc<Store>,
    outgoing: Arc<Outgoing>,
}

impl std::fmt::Debug for SnapshotStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStorage").finish_non_exhaustive()
    }
}

impl SnapshotStorage {
    /// The log `log`, whose snapshots are taken from the database `db` holds; the
    /// outcome of sending each goes to `report` (raft-rs's `report_snapshot`).
    pub fn new(log: MemStorage, db: Arc<Store>, report: impl Fn(u64, bool) + Send + Sync + 'static) -> Self {
        let outgoing = Arc::new(Outgoing { taken: Mutex::default(), report: Box::new(report) });
        Self { log, db, outgoing }
    }

    /// Where the transport reads the data of the snapshots taken.
    pub fn outgoing(&self) -> Arc<Outgoing> {
        Arc::clone(&self.outgoing)
    }
}

/// The snapshots taken for members and not yet sent, at most one per member (a
/// later one replaces it), each with the read transaction its data comes from.
pub struct Outgoing {
    taken: Mutex<HashMap<u64, (u64, snapshot::Chunks)>>,
    report: Box<dyn Fn(u64, bool) + Send + Sync>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing").finish_non_exhaustive()
    }
}

impl Outgoing {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (u64, snapshot::Chunks)>> {
        self.taken.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl cairn_transport::Snapshots for Outgoing {
    fn data(&self, message: &raft::eraftpb::Message) -> Option<cairn_transport::SnapshotData> {
        let mut taken = self.lock();
        let index = message.get_snapshot().get_metadata().index;
        // A stale message leaves the current snapshot's data alone.
        if taken.get(&message.to)?.0 != index {
            return None;
        }
        let (_, chunks) = taken.remove(&message.to)?;
        Some(Box::new(chunks.map(|chunk| chunk.map_err(std::io::Error::other))))
    }

    fn report(&self, to: u64, delivered: bool) {
        // A snapshot dropped before it was read no longer holds its transaction open.
        if !delivered {
            self.lock().remove(&to);
        }
        (self.report)(to, delivered);
    }
}

impl raft::Storage for SnapshotStorage {
    fn initial_state(&self) -> raft::Result<raft::RaftState> {
        self.log.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: raft::GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.log.entries(low, high, max_size, context)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        self.log.term(index)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.log.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.log.last_index()
    }

    fn snapshot(&self, _request_index: u64, to: u64) -> raft::Result<raft::eraftpb::Snapshot> {
        let unavailable = || raft::Error::Store(raft::StorageError::SnapshotTemporarilyUnavailable);
        let opened = self.db.begin_read().map_err(cairn_backend::Error::from);
        let (index, chunks) = opened.and_then(snapshot::Chunks::new).map_err(|error| {
            tracing::error!(%error, "cannot take a snapshot");
            unavailable()
        })?;
        let mut snapshot = raft::eraftpb::Snapshot::default();
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = self.log.term(index).map_err(|_| unavailable())?;
        meta.set_conf_state(self.log.initial_state()?.conf_state);
        self.outgoing.lock().insert(to, (index, chunks));
        tracing::info!(index, to = format_args!("{to:x}"), "took a snapshot to send");
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use raft::Storage as _;

    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: vec![0; 1000].into(), ..Default::default() }
    }

    fn restored_at(db: &Database, index: u64, term: u64) {
        let txn = db.begin_write().unwrap();
        save_conf_state(&txn, &ConfState { voters: vec![1], ..Default::default() }).unwrap();
        save_restored(&txn, index, term).unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn a_new_log_starts_with_its_voters_and_a_state_ahead_of_the_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = cairn_backend::open(dir.path()).unwrap();
        let wal_dir = dir.path().join("wal");
        let opened = open(&db, &wal_dir, vec![1, 2, 3]).unwrap();
        assert!(opened.fresh);
        assert_eq!(
            (opened.applied, opened.storage.initial_state().unwrap().conf_state.voters),
            (0, vec![1, 2, 3])
        );
        let mut wal = opened.wal;
        let mut hard_state = raft::eraftpb::HardState { term: 1, commit: 1, ..Default::default() };
        wal.append(&[entry(1, 1), entry(2, 1)], Some(&hard_state), true).unwrap();
        drop(wal);
        // Applied up to the log's end, past its saved commit: the commit moves up.
        let applied_to = |index: u64| {
            let txn = db.begin_write().unwrap();
            txn.open_table(META).unwrap().insert("applied_index", index).unwrap();
            txn.commit().unwrap();
        };
        applied_to(2);
        let opened = open(&db, &wal_dir, vec![9]).unwrap();
        assert!(!opened.fresh);
        hard_state.commit = 2;
        assert_eq!(opened.storage.initial_state().unwrap().hard_state, hard_state);
        assert_eq!(opened.storage.initial_state().unwrap().conf_state.voters, [1, 2, 3]);
        drop(opened);
        // Applied past the log's end: the log was lost or replaced.
        applied_to(3);
        let refused = open(&db, &wal_dir, vec![1]).err().unwrap();
        assert_eq!(refused.to_string(), "storage: corrupt write-ahead log: it ends before the applied index");
    }

    #[test]
    fn a_restore_the_log_never_heard_of_restarts_it_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let db = cairn_backend::open(dir.path()).unwrap();
        let wal_dir = dir.path().join("wal");
        // Stale entries, then a crash after the restore committed but before the
        // log was restarted after it.
        let (mut wal, _) = Wal::open(&wal_dir).unwrap();
        wal.append(&[entry(40, 1), entry(41, 1)], None, true).unwrap();
        drop(wal);
        restored_at(&db, 100, 3);

        let (mut wal, recovered) = Wal::open(&wal_dir).unwrap();
        let storage = recover(&db, &mut wal, recovered).unwrap().unwrap();
        assert_eq!((storage.first_index().unwrap(), storage.last_index().unwrap()), (101, 100));
        wal.append(&[entry(101, 3)], None, true).unwrap();
        drop(wal);

        // The entry written after the restart survives the next start.
        let (mut wal, recovered) = Wal::open(&wal_dir).unwrap();
        let storage = recover(&db, &mut wal, recovered).unwrap().unwrap();
        assert_eq!((storage.first_index().unwrap(), storage.last_index().unwrap()), (101, 101));
    }

    #[test]
    fn a_restore_survives_the_compaction_of_the_segment_that_recorded_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = cairn_backend::open(dir.path()).unwrap();
        let wal_dir = dir.path().join("wal");
        restored_at(&db, 100, 3);
        let (mut wal, _) = Wal::open_sized(&wal_dir, 4096).unwrap();
        wal.restart_at(100, 3).unwrap();
        for index in 101..=130 {
            wal.append(&[entry(index, 3)], None, true).unwrap();
        }
        wal.compact(120, 3).unwrap();
        drop(wal);

        let (mut wal, recovered) = Wal::open_sized(&wal_dir, 4096).unwrap();
        let storage = recover(&db, &mut wal, recovered).unwrap().unwrap();
        assert_eq!((storage.first_index().unwrap(), storage.last_index().unwrap()), (121, 130));
    }

    #[test]
    fn a_snapshot_carries_the_state_at_the_applied_index_with_the_logs_term_and_voters() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let log = MemStorage::new_with_conf_state(ConfState { voters: vec![1, 2, 3], ..Default::default() });
        log.wl().append(&[entry(1, 2), entry(2, 2), entry(3, 4)]).unwrap();
        let txn = store.begin_write().unwrap();
        txn.open_table(cairn_backend::META).unwrap().insert("applied_index", 3).unwrap();
        txn.commit().unwrap();
        let reports = Arc::new(Mutex::new(Vec::new()));
        let reported = Arc::clone(&reports);
        let storage = SnapshotStorage::new(log, Arc::clone(&store), move |to, delivered| {
            reported.lock().unwrap().push((to, delivered));
        });
        let snapshot = storage.snapshot(0, 2).unwrap();
        let meta = snapshot.get_metadata().clone();
        assert_eq!((meta.index, meta.term, meta.get_conf_state().voters.clone()), (3, 4, vec![1, 2, 3]));
        // A write after the snapshot was taken is not in its data.
        let txn = store.begin_write().unwrap();
        txn.open_table(cairn_backend::META).unwrap().insert("applied_index", 4).unwrap();
        txn.commit().unwrap();
        // The transport reads the data once, for the member it was taken for.
        use cairn_transport::Snapshots as _;
        let mut message =
            raft::eraftpb::Message { to: 3, snapshot: Some(snapshot).into(), ..Default::default() };
        assert!(storage.outgoing().data(&message).is_none(), "taken for member 2");
        message.to = 2;
        let data: Vec<u8> = storage.outgoing().data(&message).unwrap().flat_map(Result::unwrap).collect();
        assert!(storage.outgoing().data(&message).is_none(), "read once");
        storage.outgoing().report(2, true);
        assert_eq!(*reports.lock().unwrap(), [(2, true)]);
        // The data restores the same state elsewhere.
        let other = Store::open(&dir.path().join("other")).unwrap();
        let fresh = snapshot::restore(&other, data.as_slice(), meta.index).unwrap();
        fresh.install(&other, |txn| save_restored(txn, meta.index, meta.term)).unwrap();
        let other = other.get();
        let applied =
            other.begin_read().unwrap().open_table(cairn_backend::META).unwrap().get("applied_index");
        assert_eq!(applied.unwrap().map(|v| v.value()), Some(3));
        // The rest of the log reads through.
        assert_eq!((storage.first_index().unwrap(), storage.last_index().unwrap()), (1, 3));
    }
}
