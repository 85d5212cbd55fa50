//! The raft state kept with the state machine in redb (the conf state, and the point
//! the log restarted at after a snapshot from the leader), and recovery of raft-rs's
//! in-memory log from it and the write-ahead log at start.

use raft::eraftpb::{ConfState, SnapshotMetadata};
use raft::storage::MemStorage;
use redb::{Database, ReadableDatabase, WriteTransaction};

use super::{RAFT_STATE, StorageError};
use cairn_wal::{Recovered, Wal};

fn encode(message: &impl protobuf::Message) -> Result<Vec<u8>, StorageError> {
    message.write_to_bytes().map_err(|_| StorageError::Corrupt("raft message"))
}

fn decode<M: protobuf::Message>(bytes: &[u8]) -> Result<M, StorageError> {
    M::parse_from_bytes(bytes).map_err(|_| StorageError::Corrupt("raft record"))
}

/// Saves the conf state in `txn`.
pub(crate) fn save_conf_state(txn: &WriteTransaction, conf_state: &ConfState) -> Result<(), StorageError> {
    txn.open_table(RAFT_STATE)?.insert("conf_state", encode(conf_state)?.as_slice())?;
    Ok(())
}

/// Records in `txn`, with the restored state machine, that it came from a snapshot
/// at `index` of `term`.
pub(crate) fn save_restored(txn: &WriteTransaction, index: u64, term: u64) -> Result<(), StorageError> {
    let meta = SnapshotMetadata { index, term, ..Default::default() };
    txn.open_table(RAFT_STATE)?.insert("restored", encode(&meta)?.as_slice())?;
    Ok(())
}

/// Rebuilds raft-rs's storage from the state in `db` and what the write-ahead log
/// `log` held when opened (`recovered`). `None` when nothing was ever saved: a fresh
/// member, which the caller bootstraps.
pub(crate) fn recover(
    db: &Database,
    log: &mut Wal,
    mut recovered: Recovered,
) -> Result<Option<MemStorage>, StorageError> {
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

#[cfg(test)]
mod tests {
    use raft::Storage as _;
    use raft::eraftpb::Entry;

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
    fn a_restore_the_log_never_heard_of_restarts_it_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::storage::open(dir.path()).unwrap();
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
        let db = crate::storage::open(dir.path()).unwrap();
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
}
