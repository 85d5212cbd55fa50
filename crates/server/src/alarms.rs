//! Alarms (etcd's `v3alarm`): raised and cleared through raft, kept in the `alarms`
//! table, the same on every member. While any member's NOSPACE alarm is raised,
//! every member refuses the writes that would grow the store (etcd's capped
//! applier); reads, deletes, compaction and lease revocations go on.
//!
//! A member raises NOSPACE itself when the file system holding its data dir runs
//! low (see [`watch_disk`]), before a write could fail for want of space.

use std::path::PathBuf;
use std::time::Duration;

use cairn_api::etcdserverpb::AlarmType;

pub(crate) use cairn_apply::{SharedAlarms, alarms as lock};
pub(crate) use cairn_backend::alarms::{corrupt, cost, fits, list, load, no_space};

/// When the data dir's file system counts as low on space.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watermarks {
    /// Below this many free bytes, NOSPACE is raised.
    pub(crate) low: u64,
    /// Once raised, the alarm is raised again (after an operator clears it) until
    /// free space is back above this many bytes.
    pub(crate) high: u64,
}

/// Watches the free space of `dir`'s file system until the process ends. Below the
/// low-water mark it asks (through `raise`) for this member's NOSPACE alarm, so that
/// writes are refused while the disk still has room for what must go on (the alarm
/// itself, deletes, compaction, the state commits); and again if an operator clears
/// the alarm before space is back above the high-water mark.
pub(crate) fn watch_disk<F, Fut>(dir: PathBuf, marks: Watermarks, alarms: SharedAlarms, member: u64, raise: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(100));
        let mut low = false;
        loop {
            ticks.tick().await;
            let Ok(stats) = rustix::fs::statvfs(&dir) else { continue };
            let free = stats.f_bavail.saturating_mul(stats.f_frsize);
            low = if low { free < marks.high } else { free < marks.low };
            let raised = lock(&alarms).contains(&(member, AlarmType::Nospace as i32));
            if low && !raised {
                tracing::warn!(free, low_water = marks.low, "low on disk space: raising NOSPACE");
                raise().await;
            }
        }
    });
}
