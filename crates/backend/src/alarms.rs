//! Alarms (etcd's `v3alarm`) and the backend quota (etcd's `v3rpc/quota.go`): the
//! raised alarms as a set of (member ID, `AlarmType`) kept in the `alarms` table, what
//! an alarm request does to them, which requests NOSPACE and CORRUPT refuse, and what a
//! request costs against the quota.

use std::collections::BTreeSet;

use cairn_api::etcdserverpb::alarm_request::AlarmAction;
use cairn_api::etcdserverpb::request_op::Request as Op;
use cairn_api::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, InternalRaftRequest, TxnRequest,
};

use crate::{ALARMS, Error};

/// The alarms saved in `db`.
pub fn load(db: &redb::Database) -> Result<BTreeSet<(u64, i32)>, Error> {
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
pub fn list(alarms: &BTreeSet<(u64, i32)>, kind: i32) -> Vec<AlarmMember> {
    members(alarms.iter().copied().filter(|&(_, alarm)| kind == AlarmType::None as i32 || alarm == kind))
}

/// Applies an alarm request (etcd's `applierV3backend.Alarm`): activating raises the
/// alarm (again is fine), deactivating clears exactly that member's alarm of that
/// type (one not raised is fine, and answers an empty list).
pub fn apply(
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
        Err(_) => return Err(Error::Corrupt("alarm action")),
    };
    Ok(AlarmResponse { header: None, alarms: changed })
}

/// Whether a NOSPACE alarm is raised.
pub fn no_space(alarms: &BTreeSet<(u64, i32)>) -> bool {
    alarms.iter().any(|&(_, alarm)| alarm == AlarmType::Nospace as i32)
}

/// Whether a CORRUPT alarm is raised.
pub fn corrupt(alarms: &BTreeSet<(u64, i32)>) -> bool {
    alarms.iter().any(|&(_, alarm)| alarm == AlarmType::Corrupt as i32)
}

/// Whether `request` changes the store, and so is refused under CORRUPT (etcd's
/// `applierV3Corrupt`: puts, deletes, txns that write, compactions, lease grants and
/// revocations). A read-only txn is still served.
pub fn changes_store(request: &InternalRaftRequest) -> bool {
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
pub fn grows_store(request: &InternalRaftRequest) -> bool {
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
pub fn cost(request: &InternalRaftRequest) -> u64 {
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
pub fn fits(quota: Option<u64>, size: u64, cost: u64) -> bool {
    match quota {
        Some(quota) if cost > 0 => size.saturating_add(cost) < quota,
        _ => true,
    }
}

/// When a data dir's file system counts as low on space.
#[derive(Debug, Clone, Copy)]
pub struct Watermarks {
    /// Below this many free bytes, NOSPACE is raised.
    pub low: u64,
    /// Once raised, the alarm is raised again (after an operator clears it) until
    /// free space is back above this many bytes.
    pub high: u64,
}

/// How often [`watch_disk`] looks at the free space.
pub const DISK_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Watches the free space of `dir`'s file system until the process ends. Below the
/// low-water mark it asks (through `raise`) for the member's NOSPACE alarm unless
/// `raised` says it is up, so that writes are refused while the disk still has room
/// for what must go on (the alarm itself, deletes, compaction, the state commits);
/// and again if an operator clears the alarm before space is back above the
/// high-water mark.
pub fn watch_disk<R, F, Fut>(dir: std::path::PathBuf, marks: Watermarks, raised: R, raise: F)
where
    R: Fn() -> bool + Send + 'static,
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(DISK_CHECK_INTERVAL);
        let mut low = false;
        loop {
            ticks.tick().await;
            let Ok(stats) = rustix::fs::statvfs(&dir) else { continue };
            let free = stats.f_bavail.saturating_mul(stats.f_frsize);
            low = if low { free < marks.high } else { free < marks.low };
            if low && !raised() {
                tracing::warn!(free, low_water = marks.low, "low on disk space: raising NOSPACE");
                raise().await;
            }
        }
    });
}
