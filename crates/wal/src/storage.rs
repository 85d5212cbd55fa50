//! A durable `raft::Storage`: raft-rs's `MemStorage` for reads, a [`Wal`] underneath
//! for durability.

use std::path::Path;

use raft::GetEntriesContext;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::storage::{MemStorage, RaftState, Storage};

use crate::{Recovered, Result, Wal};

/// Rebuilds raft-rs's in-memory log from what a [`Wal`] held when it was opened, with
/// `conf_state`, which the state machine keeps (raft-rs asks the application for it).
pub fn recover(recovered: Recovered, conf_state: ConfState) -> Result<MemStorage> {
    let storage = MemStorage::new();
    {
        let mut core = storage.wl();
        let (index, term) = recovered.compacted;
        if index > 0 {
            let mut meta = SnapshotMetadata { index, term, ..Default::default() };
            meta.set_conf_state(conf_state.clone());
            let mut snapshot = Snapshot::default();
            snapshot.set_metadata(meta);
            core.apply_snapshot(snapshot)?;
        }
        core.set_conf_state(conf_state);
        core.append(&recovered.entries)?;
        if let Some(hard_state) = recovered.hard_state {
            core.set_hardstate(hard_state);
        }
    }
    Ok(storage)
}

/// A `raft::Storage` whose entries and hard state survive a crash: every change is
/// written to the log (and synced) before raft-rs's in-memory copy sees it.
///
/// The conf state is the application's: give the one its state machine applied last
/// to [`WalStorage::open`], and each new one to [`WalStorage::set_conf_state`].
/// Snapshots carry metadata only, as `MemStorage`'s; a state machine that sends its
/// data fills it in.
pub struct WalStorage {
    wal: Wal,
    mem: MemStorage,
}

impl std::fmt::Debug for WalStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let core = self.mem.rl();
        f.debug_struct("WalStorage")
            .field("wal", &self.wal)
            .field("hard_state", core.hard_state())
            .finish_non_exhaustive()
    }
}

impl WalStorage {
    /// Opens (or creates) the log in `dir` and recovers what it holds.
    pub fn open(dir: &Path, conf_state: ConfState) -> Result<Self> {
        let (wal, recovered) = Wal::open(dir)?;
        let mem = recover(recovered, conf_state)?;
        Ok(Self { wal, mem })
    }

    /// Appends `entries` (a later entry replaces any at its index and after it) and
    /// the new `hard_state`, durable on return: what raft-rs's `Ready` asks to
    /// persist before its messages go out.
    pub fn append(&mut self, entries: &[Entry], hard_state: Option<&HardState>) -> Result<()> {
        self.wal.append(entries, hard_state, true)?;
        let mut core = self.mem.wl();
        core.append(entries)?;
        if let Some(hard_state) = hard_state {
            core.set_hardstate(hard_state.clone());
        }
        Ok(())
    }

    /// Records the commit index of a `LightReady`, durably.
    pub fn commit_to(&mut self, commit: u64) -> Result<()> {
        let mut hard_state = self.mem.rl().hard_state().clone();
        hard_state.commit = commit;
        self.wal.append(&[], Some(&hard_state), true)?;
        self.mem.wl().commit_to(commit)?;
        Ok(())
    }

    /// The conf state after the application applied a configuration change.
    pub fn set_conf_state(&mut self, conf_state: ConfState) {
        self.mem.wl().set_conf_state(conf_state);
    }

    /// Drops the entries before `index` from memory and from the log (deleting the
    /// old segments that held only them). The state machine must be durable past
    /// `index - 1` first: the entries are gone for good.
    pub fn compact(&mut self, index: u64) -> Result<()> {
        let term = self.mem.term(index - 1)?;
        self.wal.compact(index - 1, term)?;
        self.mem.wl().compact(index)?;
        Ok(())
    }

    /// Replaces the log with `snapshot` received from the leader: every entry before
    /// it and after it is dropped. Restore the state machine from its data first.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<()> {
        let meta = snapshot.get_metadata();
        self.wal.restart_at(meta.index, meta.term)?;
        self.mem.wl().apply_snapshot(snapshot)?;
        Ok(())
    }
}

impl Storage for WalStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        self.mem.term(index)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        self.mem.snapshot(request_index, to)
    }
}
