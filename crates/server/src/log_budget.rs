//! How much of the raft log a member keeps in memory.

/// When to compact raft-rs's in-memory log, and from where. By count, as etcd does:
/// once `--snapshot-count` entries have been applied since the first one kept,
/// keeping the last few thousand (etcd's `snapshotCatchUpEntries`) for followers that
/// lag a little. And by bytes, which etcd does not bound: counting entries alone, its
/// default of 100,000 entries of requests up to 1.5 MiB each would let the log hold
/// 150 GB, and a load of 100-put transactions held 300 MB for a million keys. A
/// compaction by bytes on a leader keeps what its slowest active follower still
/// needs, up to four times the bound, so that large entries do not turn a follower's
/// short lag into a whole snapshot.
#[derive(Debug)]
pub(crate) struct LogBudget {
    max_entries: u64,
    catch_up_entries: u64,
    max_bytes: u64,
    /// Bytes of applied entries kept by a compaction, at most.
    keep_bytes: u64,
    /// Bytes of the entries in the log, about ([`entry_bytes`] each).
    bytes: u64,
    /// `bytes` from which a compaction is due.
    due_at: u64,
}

/// What an entry costs in memory: its data and context, and about as much again as
/// the struct and its allocations take.
pub(crate) fn entry_bytes(entry: &raft::eraftpb::Entry) -> u64 {
    (entry.data.len() + entry.context.len()) as u64 + 64
}

/// Why a compaction is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// `--snapshot-count` entries were applied since the first kept, as etcd counts.
    Count,
    /// The log holds more than its bytes.
    Bytes,
}

impl LogBudget {
    /// Compacts after `max_entries` applied entries or `max_bytes` held, keeping
    /// `catch_up_entries` at most and, of those, a quarter of `max_bytes` at most.
    pub(crate) fn new(max_entries: u64, catch_up_entries: u64, max_bytes: u64) -> Self {
        Self {
            max_entries,
            catch_up_entries: catch_up_entries.min(max_entries),
            max_bytes,
            keep_bytes: max_bytes / 4,
            bytes: 0,
            due_at: max_bytes,
        }
    }

    /// Entries of `bytes` were appended to the log.
    pub(crate) fn appended(&mut self, bytes: u64) {
        self.bytes += bytes;
    }

    /// Bytes of the entries in the log, about.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether a log whose first entry is `first`, applied up to `applied`, is due
    /// for a compaction, and why.
    pub(crate) fn due(&self, first: u64, applied: u64) -> Option<Due> {
        if applied >= first + self.max_entries {
            Some(Due::Count)
        } else if self.bytes >= self.due_at && applied >= first {
            Some(Due::Bytes)
        } else {
            None
        }
    }

    /// The first entry a compaction kept: the last `catch_up_entries` applied ones
    /// at most (never the first entry itself), fewer if they hold more than the bytes
    /// kept. `sizes` gives each applied entry's index and bytes, from `applied` back.
    /// `slowest` is what a leader's slowest active follower has (its matched index):
    /// a compaction by bytes keeps the entries after it, while the log holds less
    /// than four times the bound.
    pub(crate) fn keep_from(
        &self,
        (first, applied): (u64, u64),
        due: Due,
        sizes: impl Iterator<Item = (u64, u64)>,
        slowest: Option<u64>,
    ) -> u64 {
        let floor = applied.saturating_sub(self.catch_up_entries).max(first + 1);
        let mut keep_from = floor;
        let mut kept = 0;
        for (index, bytes) in sizes.take_while(|(index, _)| *index >= floor) {
            kept += bytes;
            if kept > self.keep_bytes {
                keep_from = (index + 1).max(floor);
                break;
            }
        }
        match slowest {
            Some(matched) if due == Due::Bytes && self.bytes < 4 * self.max_bytes => {
                keep_from.min(matched + 1).max(first + 1)
            }
            _ => keep_from,
        }
    }

    /// The log was compacted, and holds `remaining` bytes. Entries not yet applied
    /// cannot be dropped: if they alone pass the bound, the next compaction waits
    /// for a quarter of it more, instead of running after every append.
    pub(crate) fn compacted(&mut self, remaining: u64) {
        self.bytes = remaining;
        self.due_at = self.max_bytes.max(remaining + self.max_bytes / 4);
    }
}

#[cfg(test)]
mod tests {
    use super::{Due, LogBudget};

    /// Entries 1..=n of `bytes` each, from `applied` back.
    fn back(applied: u64, bytes: u64) -> impl Iterator<Item = (u64, u64)> {
        (1..=applied).rev().map(move |index| (index, bytes))
    }

    #[test]
    fn by_count_the_log_is_compacted_as_etcd_compacts_it() {
        let mut budget = LogBudget::new(100, 20, 1 << 30);
        budget.appended(150 * 10);
        assert_eq!(budget.due(1, 99), None, "99 applied entries");
        assert_eq!(budget.due(1, 101), Some(Due::Count));
        // The last 20 applied entries are kept, whatever a follower lacks (as etcd).
        assert_eq!(budget.keep_from((1, 101), Due::Count, back(101, 10), Some(3)), 81);
        // Never the first entry: it stands for the compacted point.
        assert_eq!(budget.keep_from((90, 101), Due::Count, back(101, 10), None), 91);
    }

    #[test]
    fn by_bytes_large_entries_are_compacted_long_before_the_count() {
        // Entries of 1 MiB; 64 MiB at most, 16 MiB kept.
        let mib = 1 << 20;
        let mut budget = LogBudget::new(100_000, 5_000, 64 * mib);
        budget.appended(63 * mib);
        assert_eq!(budget.due(1, 63), None);
        budget.appended(mib);
        assert_eq!(budget.due(1, 64), Some(Due::Bytes), "64 MiB held");
        assert_eq!(budget.due(65, 64), None, "nothing applied to drop");
        // The 16 entries that fill the 16 MiB kept; the 17th would pass it.
        assert_eq!(budget.keep_from((1, 64), Due::Bytes, back(64, mib), None), 49);
        // A follower that has everything, or none to wait for, changes nothing.
        assert_eq!(budget.keep_from((1, 64), Due::Bytes, back(64, mib), Some(64)), 49);
        // A follower that lacks entries 31 on keeps them, the log being under 4x.
        assert_eq!(budget.keep_from((1, 64), Due::Bytes, back(64, mib), Some(30)), 31);
        budget.compacted(16 * mib);
        assert_eq!(budget.due(49, 100), None);
        budget.appended(48 * mib);
        assert_eq!(budget.due(49, 112), Some(Due::Bytes));
        // One entry larger than all that is kept is dropped with the rest.
        assert_eq!(budget.keep_from((1, 64), Due::Bytes, back(64, 20 * mib), None), 65);
        // Past four times the bound, a lagging follower no longer holds entries.
        budget.appended(4 * 64 * mib);
        assert_eq!(budget.keep_from((1, 64), Due::Bytes, back(64, mib), Some(30)), 49);
    }

    #[test]
    fn entries_not_yet_applied_do_not_make_every_append_compact() {
        let mib = 1 << 20;
        let mut budget = LogBudget::new(100_000, 5_000, 64 * mib);
        // 80 MiB remain after a compaction, not yet applied.
        budget.compacted(80 * mib);
        assert_eq!(budget.due(10, 20), None);
        budget.appended(15 * mib);
        assert_eq!(budget.due(10, 20), None);
        budget.appended(mib);
        assert_eq!(budget.due(10, 20), Some(Due::Bytes), "a quarter of the bound more");
    }
}
