//! The raft log, hard state and conf state on disk, and recovery into raft-rs's
//! in-memory storage at start.

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::storage::MemStorage;
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};

use super::{RAFT_LOG, RAFT_STATE, StorageError};

fn encode(message: &impl protobuf::Message) -> Result<Vec<u8>, StorageError> {
    message.write_to_bytes().map_err(|_| StorageError::Corrupt("raft message"))
}

fn decode<M: protobuf::Message>(bytes: &[u8]) -> Result<M, StorageError> {
    M::parse_from_bytes(bytes).map_err(|_| StorageError::Corrupt("raft record"))
}

/// Appends `entries` in `txn`, dropping any conflicting suffix of the log first.
pub(crate) fn append(txn: &WriteTransaction, entries: &[Entry]) -> Result<(), StorageError> {
    let Some(first) = entries.first() else {
        return Ok(());
    };
    let mut log = txn.open_table(RAFT_LOG)?;
    log.retain_in(first.index.., |_, _| false)?;
    for entry in entries {
        log.insert(entry.index, encode(entry)?.as_slice())?;
    }
    Ok(())
}

/// Saves the hard state in `txn`.
pub(crate) fn save_hard_state(txn: &WriteTransaction, hard_state: &HardState) -> Result<(), StorageError> {
    txn.open_table(RAFT_STATE)?.insert("hard_state", encode(hard_state)?.as_slice())?;
    Ok(())
}

/// Saves the conf state in `txn`.
pub(crate) fn save_conf_state(txn: &WriteTransaction, conf_state: &ConfState) -> Result<(), StorageError> {
    txn.open_table(RAFT_STATE)?.insert("conf_state", encode(conf_state)?.as_slice())?;
    Ok(())
}

/// Drops the entries before `first_kept`, remembering the index and term of the last
/// one dropped so that recovery can start the log after it.
pub(crate) fn compact(
    txn: &WriteTransaction,
    first_kept: u64,
    last_dropped_term: u64,
) -> Result<(), StorageError> {
    let mut log = txn.open_table(RAFT_LOG)?;
    log.retain_in(..first_kept, |_, _| false)?;
    let meta = SnapshotMetadata { index: first_kept - 1, term: last_dropped_term, ..Default::default() };
    txn.open_table(RAFT_STATE)?.insert("snapshot_meta", encode(&meta)?.as_slice())?;
    Ok(())
}

/// Rebuilds raft-rs's storage from disk. `None` when nothing was ever saved: a fresh
/// member, which the caller bootstraps.
pub(crate) fn recover(db: &Database) -> Result<Option<MemStorage>, StorageError> {
    let txn = db.begin_read()?;
    let state = txn.open_table(RAFT_STATE)?;
    let Some(conf_state) = state.get("conf_state")?.map(|v| decode::<ConfState>(v.value())).transpose()?
    else {
        return Ok(None);
    };
    let hard_state = state.get("hard_state")?.map(|v| decode::<HardState>(v.value())).transpose()?;
    let snapshot_meta =
        state.get("snapshot_meta")?.map(|v| decode::<SnapshotMetadata>(v.value())).transpose()?;

    let storage = MemStorage::new();
    {
        let mut core = storage.wl();
        if let Some(mut meta) = snapshot_meta {
            meta.set_conf_state(conf_state.clone());
            let mut snapshot = Snapshot::default();
            snapshot.set_metadata(meta);
            core.apply_snapshot(snapshot).map_err(|_| StorageError::Corrupt("snapshot metadata"))?;
        }
        core.set_conf_state(conf_state);
        let log = txn.open_table(RAFT_LOG)?;
        let mut entries = Vec::new();
        for entry in log.iter()? {
            let (_, bytes) = entry?;
            entries.push(decode::<Entry>(bytes.value())?);
        }
        core.append(&entries).map_err(|_| StorageError::Corrupt("raft log is not contiguous"))?;
        if let Some(hard_state) = hard_state {
            core.set_hardstate(hard_state);
        }
    }
    Ok(Some(storage))
}
