//! etcd's key-value requests on the store: a `RangeRequest` with every option, a
//! `PutRequest`, a `DeleteRangeRequest`, and a `TxnRequest` with its compares and
//! nested txns, as etcd's `applierV3backend` applies them.

use std::cmp::Ordering;

use cairn_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_api::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_api::etcdserverpb::request_op::Request as Op;
use cairn_api::etcdserverpb::response_op::Response as OpResponse;
use cairn_api::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use cairn_api::mvccpb::KeyValue;
use redb::ReadableTable;

use crate::{Error, KeyIndex, KeySpan, Position, Revisions, Writer};

/// A response header carrying only `revision`; the server fills in the rest.
pub(crate) fn header(revision: u64) -> Option<ResponseHeader> {
    Some(ResponseHeader { revision: revision as i64, ..ResponseHeader::default() })
}

/// etcd's answer to `request` at the store's `revisions`, through any transaction's
/// `kv` table: its revision (the current one for 0 or less), sort, limit, revision
/// filters, `count_only` and `keys_only`, as etcd's `applierV3backend.Range`.
pub fn range_request(
    kv: &impl ReadableTable<Position, &'static [u8]>,
    index: &KeyIndex,
    revisions: Revisions,
    request: &RangeRequest,
) -> Result<RangeResponse, Error> {
    let revision = range_revision(request, revisions)?;
    let span = KeySpan::new(&request.key, &request.range_end);
    // Without revision filters, the index alone answers a count, and a limit in key
    // order reads only the values returned (a paginated list of a big prefix).
    let filtered = [
        request.min_mod_revision,
        request.max_mod_revision,
        request.min_create_revision,
        request.max_create_revision,
    ] != [0; 4];
    if request.count_only && !filtered {
        let count = index.count(span, revision) as i64;
        return Ok(RangeResponse { header: header(revisions.current), kvs: Vec::new(), more: false, count });
    }
    let positions = index.positions(span, revision);
    let count = positions.len() as i64;
    let limit = usize::try_from(request.limit).unwrap_or(0);
    if !filtered && limit > 0 && limits_before_sorting(request) {
        // As etcd: the first `limit + 1` keys in key order, sorted, then truncated.
        let mut kvs = crate::fetch(kv, &positions[..(limit + 1).min(positions.len())])?;
        sort(&mut kvs, request);
        let more = kvs.len() > limit;
        kvs.truncate(limit);
        if request.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        return Ok(RangeResponse { header: header(revisions.current), kvs, more, count });
    }
    let mut kvs = crate::fetch(kv, &positions)?;
    let within = |value: i64, min: i64, max: i64| (min == 0 || value >= min) && (max == 0 || value <= max);
    kvs.retain(|kv| {
        within(kv.mod_revision, request.min_mod_revision, request.max_mod_revision)
            && within(kv.create_revision, request.min_create_revision, request.max_create_revision)
    });
    sort(&mut kvs, request);
    let mut more = false;
    if request.limit > 0 && kvs.len() > request.limit as usize {
        kvs.truncate(request.limit as usize);
        more = true;
    }
    if request.count_only {
        kvs.clear();
        more = false;
    }
    if request.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(RangeResponse { header: header(revisions.current), kvs, more, count })
}

/// The revision `request` reads at: the current one for 0 or less; an error for a
/// compacted or a future one.
pub fn range_revision(request: &RangeRequest, revisions: Revisions) -> Result<u64, Error> {
    if request.revision <= 0 {
        return Ok(revisions.current);
    }
    let revision = request.revision as u64;
    if revision > revisions.current {
        return Err(Error::FutureRevision);
    }
    if revision < revisions.compacted {
        return Err(Error::Compacted);
    }
    Ok(revision)
}

/// The sort a range asks for, as etcd reads it: a target other than the key with no
/// order sorts ascending.
fn sort_of(request: &RangeRequest) -> (SortTarget, SortOrder) {
    let target = SortTarget::try_from(request.sort_target).unwrap_or(SortTarget::Key);
    let order = SortOrder::try_from(request.sort_order).unwrap_or(SortOrder::None);
    if target != SortTarget::Key && order == SortOrder::None {
        return (target, SortOrder::Ascend);
    }
    (target, order)
}

/// Whether etcd applies the range's limit in key order before sorting: with no sort
/// order asked for (a target other than the key then sorts only the keys kept), or
/// when the sort is by key ascending anyway.
fn limits_before_sorting(request: &RangeRequest) -> bool {
    let order = SortOrder::try_from(request.sort_order).unwrap_or(SortOrder::None);
    order == SortOrder::None || sort_of(request) == (SortTarget::Key, SortOrder::Ascend)
}

/// etcd's sort: by key ascending unless asked otherwise.
fn sort(kvs: &mut [KeyValue], request: &RangeRequest) {
    let (target, order) = sort_of(request);
    let by = |a: &KeyValue, b: &KeyValue| -> Ordering {
        match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    match order {
        SortOrder::None => {}
        SortOrder::Ascend => kvs.sort_by(by),
        SortOrder::Descend => kvs.sort_by(|a, b| by(b, a)),
    }
}

/// Whether `compare` holds at `revision` for every key it names. A value compare on no key fails;
/// other compares on no key compare against an absent key's zeros, as in etcd.
pub fn compare_holds(
    kv: &impl ReadableTable<Position, &'static [u8]>,
    index: &KeyIndex,
    revision: u64,
    compare: &Compare,
) -> Result<bool, Error> {
    let span = KeySpan::new(&compare.key, &compare.range_end);
    let kvs = crate::range(kv, index, span, revision)?;
    let target = CompareTarget::try_from(compare.target).unwrap_or(CompareTarget::Version);
    if kvs.is_empty() {
        return Ok(target != CompareTarget::Value && compare_kv(compare, target, &KeyValue::default()));
    }
    Ok(kvs.iter().all(|kv| compare_kv(compare, target, kv)))
}

fn compare_kv(compare: &Compare, target: CompareTarget, kv: &KeyValue) -> bool {
    let union = compare.target_union.as_ref();
    let ordering = match target {
        CompareTarget::Version => kv.version.cmp(&match union {
            Some(TargetUnion::Version(v)) => *v,
            _ => 0,
        }),
        CompareTarget::Create => kv.create_revision.cmp(&match union {
            Some(TargetUnion::CreateRevision(v)) => *v,
            _ => 0,
        }),
        CompareTarget::Mod => kv.mod_revision.cmp(&match union {
            Some(TargetUnion::ModRevision(v)) => *v,
            _ => 0,
        }),
        CompareTarget::Value => kv.value.as_slice().cmp(match union {
            Some(TargetUnion::Value(v)) => v.as_slice(),
            _ => &[],
        }),
        CompareTarget::Lease => kv.lease.cmp(&match union {
            Some(TargetUnion::Lease(v)) => *v,
            _ => 0,
        }),
    };
    match CompareResult::try_from(compare.result).unwrap_or(CompareResult::Equal) {
        CompareResult::Equal => ordering == Ordering::Equal,
        CompareResult::Greater => ordering == Ordering::Greater,
        CompareResult::Less => ordering == Ordering::Less,
        CompareResult::NotEqual => ordering != Ordering::Equal,
    }
}

/// Applies `request` through `writer`: etcd's checks first (`ignore_value` and
/// `ignore_lease` need the key, a lease must exist by `lease_exists`), then the put.
/// The response has no header: the caller knows the revision it ends at.
pub fn put(
    writer: &mut Writer<'_, '_>,
    request: &PutRequest,
    lease_exists: &dyn Fn(i64) -> bool,
) -> Result<PutResponse, Error> {
    check_put(writer, request, lease_exists)?;
    put_checked(writer, request)
}

fn check_put(
    writer: &Writer<'_, '_>,
    request: &PutRequest,
    lease_exists: &dyn Fn(i64) -> bool,
) -> Result<(), Error> {
    if (request.ignore_value || request.ignore_lease) && writer.get(&request.key)?.is_none() {
        return Err(Error::KeyNotFound);
    }
    if request.lease != 0 && !lease_exists(request.lease) {
        return Err(Error::LeaseNotFound);
    }
    Ok(())
}

fn put_checked(writer: &mut Writer<'_, '_>, request: &PutRequest) -> Result<PutResponse, Error> {
    let mut value = request.value.clone();
    let mut lease = request.lease;
    if request.ignore_value || request.ignore_lease {
        let previous = writer.get(&request.key)?.ok_or(Error::KeyNotFound)?;
        if request.ignore_value {
            value = previous.value;
        }
        if request.ignore_lease {
            lease = previous.lease;
        }
    }
    let previous = writer.put(&request.key, value, lease)?;
    Ok(PutResponse { header: None, prev_kv: previous.filter(|_| request.prev_kv) })
}

/// Applies `request` through `writer`: deletes the key or range, answering how many
/// keys went (and which, with `prev_kv`). No header, as [`put`].
pub fn delete_range(
    writer: &mut Writer<'_, '_>,
    request: &DeleteRangeRequest,
) -> Result<DeleteRangeResponse, Error> {
    let deleted = writer.delete(KeySpan::new(&request.key, &request.range_end))?;
    Ok(DeleteRangeResponse {
        header: None,
        deleted: deleted.len() as i64,
        prev_kvs: if request.prev_kv { deleted } else { Vec::new() },
    })
}

/// Applies `request` through `writer`, with the store at `before`, as etcd does:
/// every compare of every nested txn is decided on the state before the txn, and every
/// op on the path taken is checked (ranges' revisions, puts as [`put`]) before anything
/// is written, so a refused txn writes nothing. Ranges see the txn's own earlier
/// writes; each op's response carries the revision the txn is at after it. No header
/// on the outer response, as [`put`].
pub fn txn(
    writer: &mut Writer<'_, '_>,
    before: Revisions,
    request: &TxnRequest,
    lease_exists: &dyn Fn(i64) -> bool,
) -> Result<TxnResponse, Error> {
    let path = txn_path(writer, request)?;
    check_txn(writer, before, request, &mut path.iter().copied(), lease_exists)?;
    apply_txn(writer, before, request, &mut path.iter().copied())
}

/// Which branch each txn takes, depth first in op order, decided before it writes.
fn txn_path(writer: &Writer<'_, '_>, request: &TxnRequest) -> Result<Vec<bool>, Error> {
    fn walk(writer: &Writer<'_, '_>, request: &TxnRequest, path: &mut Vec<bool>) -> Result<(), Error> {
        let mut succeeded = true;
        for compare in &request.compare {
            if !compare_holds(&*writer.kv, writer.index, writer.revision, compare)? {
                succeeded = false;
                break;
            }
        }
        path.push(succeeded);
        let ops = if succeeded { &request.success } else { &request.failure };
        for op in ops {
            if let Some(Op::RequestTxn(nested)) = &op.request {
                walk(writer, nested, path)?;
            }
        }
        Ok(())
    }
    let mut path = Vec::new();
    walk(writer, request, &mut path)?;
    Ok(path)
}

fn check_txn(
    writer: &Writer<'_, '_>,
    revisions: Revisions,
    request: &TxnRequest,
    path: &mut impl Iterator<Item = bool>,
    lease_exists: &dyn Fn(i64) -> bool,
) -> Result<(), Error> {
    let ops = if path.next().unwrap_or(false) { &request.success } else { &request.failure };
    for op in ops {
        match &op.request {
            Some(Op::RequestRange(range)) => {
                range_revision(range, revisions)?;
            }
            Some(Op::RequestPut(put)) => check_put(writer, put, lease_exists)?,
            Some(Op::RequestTxn(nested)) => check_txn(writer, revisions, nested, path, lease_exists)?,
            Some(Op::RequestDeleteRange(_)) | None => {}
        }
    }
    Ok(())
}

fn apply_txn(
    writer: &mut Writer<'_, '_>,
    before: Revisions,
    request: &TxnRequest,
    path: &mut impl Iterator<Item = bool>,
) -> Result<TxnResponse, Error> {
    let succeeded = path.next().unwrap_or(false);
    let ops = if succeeded { &request.success } else { &request.failure };
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        let response = match &op.request {
            Some(Op::RequestRange(range)) => {
                let revisions = Revisions { current: at(writer, before), ..before };
                OpResponse::ResponseRange(range_request(&*writer.kv, writer.index, revisions, range)?)
            }
            Some(Op::RequestPut(put)) => {
                let response = put_checked(writer, put)?;
                OpResponse::ResponsePut(PutResponse { header: header(at(writer, before)), ..response })
            }
            Some(Op::RequestDeleteRange(delete)) => {
                let response = delete_range(writer, delete)?;
                let header = header(at(writer, before));
                OpResponse::ResponseDeleteRange(DeleteRangeResponse { header, ..response })
            }
            Some(Op::RequestTxn(nested)) => {
                let response = apply_txn(writer, before, nested, path)?;
                OpResponse::ResponseTxn(TxnResponse { header: header(at(writer, before)), ..response })
            }
            None => continue,
        };
        responses.push(ResponseOp { response: Some(response) });
    }
    Ok(TxnResponse { header: None, succeeded, responses })
}

/// The revision a txn is at: the one its writes get once it has written.
fn at(writer: &Writer<'_, '_>, before: Revisions) -> u64 {
    if writer.wrote { writer.revision } else { before.current }
}

#[cfg(test)]
mod tests {
    use cairn_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
    use cairn_api::etcdserverpb::range_request::{SortOrder, SortTarget};
    use cairn_api::etcdserverpb::{Compare, RangeRequest};

    use crate::{Error, KeyIndex, Revisions, Writer};

    #[test]
    fn ranges_sort_limit_filter_and_refuse_compacted_or_future_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("db")).unwrap();
        let txn = db.begin_write().unwrap();
        let mut index = KeyIndex::default();
        let mut tables = crate::open_tables(&txn).unwrap();
        for (revision, (key, value)) in
            [("a", "3"), ("b", "1"), ("c", "2"), ("a", "4")].into_iter().enumerate()
        {
            let mut writer = Writer::new(&mut tables.kv, &mut index, revision as u64 + 2);
            writer.put(key.as_bytes(), value.into(), 0).unwrap();
        }
        let revisions = Revisions { current: 5, compacted: 3 };
        let range = |request: RangeRequest| super::range_request(&tables.kv, &index, revisions, &request);
        let all = || RangeRequest { key: b"a".to_vec(), range_end: vec![0], ..RangeRequest::default() };

        let by_value = RangeRequest {
            sort_target: SortTarget::Value as i32,
            sort_order: SortOrder::Descend as i32,
            limit: 2,
            ..all()
        };
        let answer = range(by_value).unwrap();
        let values: Vec<&[u8]> = answer.kvs.iter().map(|kv| kv.value.as_slice()).collect();
        assert_eq!((values, answer.more, answer.count), (vec![&b"4"[..], b"2"], true, 3));
        let created_late = RangeRequest { min_create_revision: 3, keys_only: true, ..all() };
        let keys: Vec<Vec<u8>> = range(created_late).unwrap().kvs.into_iter().map(|kv| kv.key).collect();
        assert_eq!(keys, [b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(range(RangeRequest { revision: 2, ..all() }).unwrap_err(), Error::Compacted);
        assert_eq!(range(RangeRequest { revision: 6, ..all() }).unwrap_err(), Error::FutureRevision);

        let compare = |key: &str, result: CompareResult, target: CompareTarget, union: TargetUnion| Compare {
            key: key.as_bytes().to_vec(),
            result: result as i32,
            target: target as i32,
            target_union: Some(union),
            ..Compare::default()
        };
        let holds = |compare: Compare| super::compare_holds(&tables.kv, &index, 5, &compare).unwrap();
        assert!(holds(compare("a", CompareResult::Equal, CompareTarget::Version, TargetUnion::Version(2))));
        assert!(holds(compare("a", CompareResult::Greater, CompareTarget::Mod, TargetUnion::ModRevision(4))));
        // On an absent key, a value compare fails and the others see zeros.
        assert!(!holds(compare(
            "z",
            CompareResult::NotEqual,
            CompareTarget::Value,
            TargetUnion::Value(vec![])
        )));
        assert!(holds(compare(
            "z",
            CompareResult::Equal,
            CompareTarget::Create,
            TargetUnion::CreateRevision(0)
        )));
    }
}
