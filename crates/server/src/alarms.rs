//! Alarms (etcd's `v3alarm`): raised and cleared through raft, kept in the `alarms`
//! table, the same on every member. While any member's NOSPACE alarm is raised,
//! every member refuses the writes that would grow the store (etcd's capped
//! applier); reads, deletes, compaction and lease revocations go on.
//!
//! A member raises NOSPACE itself when the file system holding its data dir runs
//! low (see [`watch_disk`]), before a write could fail for want of space.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cairn_api::etcdserverpb::alarm_request::AlarmAction;
use cairn_api::etcdserverpb::request_op::Request as Op;
use cairn_api::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, InternalRaftRequest, TxnRequest,
};

use crate::error::Error;
use crate::storage::{ALARMS, StorageError};

/// The raised alarms: (member ID, `AlarmType`).
pub(crate) type SharedAlarms = Arc<Mutex<BTreeSet<(u64, i32)>>>;

pub(crate) fn lock(alarms: &SharedAlarms) -> MutexGuard<'_, BTreeSet<(u64, i32)>> {
    alarms.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The alarms saved in `db`.
pub(crate) fn load(db: &redb::Database) -> Result<BTreeSet<(u64, i32)>, StorageError> {
    use redb::{ReadableDatabase, ReadableTable};
    let txn = db.begin_read()?;
    let mut alarms = BTreeSet::new();
    for entry in txn.open_table(ALARMS)?.iter()? {
        alarms.insert(entry?.0.value());
    }
    Ok(alarms)
}

fn members(alarms: impl IntoIterator<Item = (u64, i32)>) -> Vec<AlarmMember> {
    alarms.into_iter().map(|(member_id, alarm)| AlarmMember { member_id, alarm }).collect()
}

/// The raised alarms, all of them or those of `kind`, as etcd lists them.
pub(crate) fn list(alarms: &BTreeSet<(u64, i32)>, kind: i32) -> Vec<AlarmMember> {
    members(alarms.iter().copied().filter(|&(_, alarm)| kind == AlarmType::None as i32 || alarm == kind))
}

/// Applies an alarm request (etcd's `applierV3backend.Alarm`): activating raises the
/// alarm (again is fine), deactivating clears exactly that member's alarm of that
/// type (one not raised is fine, and answers an empty list).
pub(crate) fn apply(
    alarms: &mut BTreeSet<(u64, i32)>,
    table: &mut redb::Table<'_, (u64, i32), ()>,
    request: &AlarmRequest,
) -> Result<AlarmResponse, Error> {
    let key = (request.member_id, request.alarm);
    let changed = match AlarmAction::try_from(request.action) {
        Ok(AlarmAction::Get) => {
            return Ok(AlarmResponse { header: None, alarms: list(alarms, request.alarm) });
        }
        Ok(AlarmAction::Activate) if request.alarm == AlarmType::None as i32 => Vec::new(),
        Ok(AlarmAction::Activate) => {
            if alarms.insert(key) {
                table.insert(key, ())?;
                tracing::warn!(member = format_args!("{:x}", key.0), alarm = key.1, "alarm raised");
            }
            members([key])
        }
        Ok(AlarmAction::Deactivate) => {
            if alarms.remove(&key) {
                table.remove(key)?;
                tracing::info!(member = format_args!("{:x}", key.0), alarm = key.1, "alarm cleared");
                members([key])
            } else {
                Vec::new()
            }
        }
        Err(_) => return Err(Error::Storage("unknown alarm action".into())),
    };
    Ok(AlarmResponse { header: None, alarms: changed })
}

/// Whether a NOSPACE alarm is raised.
pub(crate) fn no_space(alarms: &BTreeSet<(u64, i32)>) -> bool {
    alarms.iter().any(|&(_, alarm)| alarm == AlarmType::Nospace as i32)
}

/// Whether a CORRUPT alarm is raised.
pub(crate) fn corrupt(alarms: &BTreeSet<(u64, i32)>) -> bool {
    alarms.iter().any(|&(_, alarm)| alarm == AlarmType::Corrupt as i32)
}

/// Whether `request` changes the store, and so is refused under CORRUPT (etcd's
/// `applierV3Corrupt`: puts, deletes, txns that write, compactions, lease grants and
/// revocations). A read-only txn is still served.
pub(crate) fn changes_store(request: &InternalRaftRequest) -> bool {
    fn txn_writes(txn: &TxnRequest) -> bool {
        txn.success.iter().chain(&txn.failure).any(|op| match &op.request {
            Some(Op::RequestPut(_) | Op::RequestDeleteRange(_)) => true,
            Some(Op::RequestTxn(nested)) => txn_writes(nested),
            _ => false,
        })
    }
    request.put.is_some()
        || request.delete_range.is_some()
        || request.compaction.is_some()
        || request.lease_grant.is_some()
        || request.lease_revoke.is_some()
        || request.txn.as_ref().is_some_and(txn_writes)
}

/// Whether `request` would grow the store, and so is refused under NOSPACE (etcd's
/// capped applier: puts, txns that put, lease grants).
pub(crate) fn grows_store(request: &InternalRaftRequest) -> bool {
    fn txn_puts(txn: &TxnRequest) -> bool {
        txn.success.iter().chain(&txn.failure).any(|op| match &op.request {
            Some(Op::RequestPut(_)) => true,
            Some(Op::RequestTxn(nested)) => txn_puts(nested),
            _ => false,
        })
    }
    request.put.is_some() || request.lease_grant.is_some() || request.txn.as_ref().is_some_and(txn_puts)
}

/// What a request adds to the store, as etcd's quota counts it (`v3rpc/quota.go`):
/// a put 256 bytes plus its key and value, a txn its costlier branch (nested txns
/// counted), a lease grant 64 bytes, the rest nothing.
pub(crate) fn cost(request: &InternalRaftRequest) -> u64 {
    fn put(put: &cairn_api::etcdserverpb::PutRequest) -> u64 {
        256 + put.key.len() as u64 + put.value.len() as u64
    }
    fn branch(ops: &[cairn_api::etcdserverpb::RequestOp]) -> u64 {
        ops.iter()
            .map(|op| match &op.request {
                Some(Op::RequestPut(request)) => put(request),
                Some(Op::RequestTxn(nested)) => txn(nested),
                _ => 0,
            })
            .sum()
    }
    fn txn(txn: &TxnRequest) -> u64 {
        branch(&txn.success).max(branch(&txn.failure))
    }
    if let Some(request) = &request.put {
        put(request)
    } else if let Some(request) = &request.txn {
        txn(request)
    } else if request.lease_grant.is_some() {
        64
    } else {
        0
    }
}

/// Whether a write of `cost` bytes fits a store of `size` bytes under `quota`
/// (etcd's `backendQuota.Available`: strictly below).
pub(crate) fn fits(quota: Option<u64>, size: u64, cost: u64) -> bool {
    match quota {
        Some(quota) if cost > 0 => size.saturating_add(cost) < quota,
        _ => true,
    }
}

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
