//! The raft state kept with the state machine in redb (the conf state, and the point
//! the log restarted at after a snapshot from the leader), and recovery of raft-rs's
//! in-memory log from it and the write-ahead log at start.

use raft::eraftpb::{ConfState, Snapshot, SnapshotMetadata};
use raft::storage::MemStorage;
use redb::{Database, ReadableDatabase, WriteTransaction};

use super::wal::Recovered;
use super::{RAFT_STATE, StorageError};

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
/// held. `None` when nothing was ever saved: a fresh member, which the caller
/// bootstraps.
pub(crate) fn recover(db: &Database, mut wal: Recovered) -> Result<Option<MemStorage>, StorageError> {
    let txn = db.begin_read()?;
    let state = txn.open_table(RAFT_STATE)?;
    let Some(conf_state) = state.get("conf_state")?.map(|v| decode::<ConfState>(v.value())).transpose()?
    else {
        return Ok(None);
    };
    let restored = state.get("restored")?.map(|v| decode::<SnapshotMetadata>(v.value())).transpose()?;
    if let Some(restored) = restored
        && restored.index > wal.snapshot_index
    {
        // The state machine was replaced by a snapshot, but the log was not restarted
        // after it: everything in the log predates the snapshot.
        wal.entries.clear();
        wal.compacted = (restored.index, restored.term);
    }

    let storage = MemStorage::new();
    {
        let mut core = storage.wl();
        let (index, term) = wal.compacted;
        if index > 0 {
            let mut meta = SnapshotMetadata { index, term, ..Default::default() };
            meta.set_conf_state(conf_state.clone());
            let mut snapshot = Snapshot::default();
            snapshot.set_metadata(meta);
            core.apply_snapshot(snapshot).map_err(|_| StorageError::Corrupt("snapshot metadata"))?;
        }
        core.set_conf_state(conf_state);
        core.append(&wal.entries).map_err(|_| StorageError::Corrupt("raft log is not contiguous"))?;
        if let Some(hard_state) = wal.hard_state {
            core.set_hardstate(hard_state);
        }
    }
    Ok(Some(storage))
}
