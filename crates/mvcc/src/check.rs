//! etcd's checks of a request before it is proposed (`v3rpc/key.go`): keys given,
//! options that exist, txns within the op limit at every level, and no key written
//! twice (or written and deleted) in one branch of a txn. A request these refuse never
//! reaches the log.

use std::collections::HashSet;

use cairn_api::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_api::etcdserverpb::request_op::Request as Op;
use cairn_api::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};

/// Why a request is malformed, with etcd's texts (all gRPC `InvalidArgument`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// A request, compare or op without a key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// A put with `ignore_value` and a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// A put with `ignore_lease` and a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// More compares, or ops in a branch, than `--max-txn-ops`.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A key put twice, or put and deleted, in one branch of a txn.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A sort order or target that does not exist.
    #[error("etcdserver: invalid sort option")]
    SortOption,
}

/// etcd's `checkRangeRequest`.
pub fn range(request: &RangeRequest) -> Result<(), Invalid> {
    if request.key.is_empty() {
        return Err(Invalid::EmptyKey);
    }
    if SortOrder::try_from(request.sort_order).is_err() || SortTarget::try_from(request.sort_target).is_err()
    {
        return Err(Invalid::SortOption);
    }
    Ok(())
}

/// etcd's `checkPutRequest`.
pub fn put(request: &PutRequest) -> Result<(), Invalid> {
    if request.key.is_empty() {
        return Err(Invalid::EmptyKey);
    }
    if request.ignore_value && !request.value.is_empty() {
        return Err(Invalid::ValueProvided);
    }
    if request.ignore_lease && request.lease != 0 {
        return Err(Invalid::LeaseProvided);
    }
    Ok(())
}

/// etcd's `checkDeleteRequest`.
pub fn delete_range(request: &DeleteRangeRequest) -> Result<(), Invalid> {
    if request.key.is_empty() { Err(Invalid::EmptyKey) } else { Ok(()) }
}

/// etcd's `checkTxnRequest` and `checkIntervals`: at most `max_ops` compares and ops
/// per branch at every level, every op well formed, and no key put twice, or put and
/// deleted, in one branch (nested txns included; the two branches of a nested txn may
/// put the same key, since only one runs).
pub fn txn(request: &TxnRequest, max_ops: usize) -> Result<(), Invalid> {
    ops(request, max_ops)?;
    intervals(&request.success)?;
    intervals(&request.failure)?;
    Ok(())
}

fn ops(request: &TxnRequest, max_ops: usize) -> Result<(), Invalid> {
    if request.compare.len() > max_ops || request.success.len() > max_ops || request.failure.len() > max_ops {
        return Err(Invalid::TooManyOps);
    }
    if request.compare.iter().any(|compare| compare.key.is_empty()) {
        return Err(Invalid::EmptyKey);
    }
    for op in request.success.iter().chain(&request.failure) {
        match &op.request {
            Some(Op::RequestRange(request)) => range(request)?,
            Some(Op::RequestPut(request)) => put(request)?,
            Some(Op::RequestDeleteRange(request)) => delete_range(request)?,
            Some(Op::RequestTxn(nested)) => ops(nested, max_ops)?,
            None => {}
        }
    }
    Ok(())
}

/// A deleted range, `end` `None` for one key.
struct Deleted {
    key: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Deleted {
    fn contains(&self, key: &[u8]) -> bool {
        match self.end.as_deref() {
            None => self.key == key,
            Some([0]) => key >= self.key.as_slice(),
            Some(end) => key >= self.key.as_slice() && key < end,
        }
    }
}

/// The keys a branch puts and the ranges it deletes.
fn intervals(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<Deleted>), Invalid> {
    let mut deleted: Vec<Deleted> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Op::RequestDeleteRange(delete)) => Some(Deleted {
                key: delete.key.clone(),
                end: (!delete.range_end.is_empty()).then(|| delete.range_end.clone()),
            }),
            _ => None,
        })
        .collect();
    let mut puts = HashSet::new();
    for op in ops {
        let Some(Op::RequestTxn(nested)) = &op.request else { continue };
        let (puts_then, deleted_then) = intervals(&nested.success)?;
        let (puts_else, deleted_else) = intervals(&nested.failure)?;
        for key in &puts_then {
            if puts.contains(key) || deleted.iter().any(|range| range.contains(key)) {
                return Err(Invalid::DuplicateKey);
            }
        }
        for key in &puts_else {
            if (puts.contains(key) && !puts_then.contains(key))
                || deleted.iter().any(|range| range.contains(key))
            {
                return Err(Invalid::DuplicateKey);
            }
        }
        puts.extend(puts_then);
        puts.extend(puts_else);
        deleted.extend(deleted_then);
        deleted.extend(deleted_else);
    }
    for op in ops {
        let Some(Op::RequestPut(put)) = &op.request else { continue };
        if !puts.insert(put.key.clone()) || deleted.iter().any(|range| range.contains(&put.key)) {
            return Err(Invalid::DuplicateKey);
        }
    }
    Ok((puts, deleted))
}
