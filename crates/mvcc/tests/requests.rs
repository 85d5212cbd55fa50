//! etcd's write requests on the store: what a put checks, and a txn decided on the
//! state before it and checked whole before it writes.

use cairn_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_api::etcdserverpb::request_op::Request as Op;
use cairn_api::etcdserverpb::response_op::Response as OpResponse;
use cairn_api::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use cairn_mvcc::{Error, KeyIndex, Revisions, Writer};
use redb::Database;

fn put_request(key: &str, lease: i64) -> PutRequest {
    PutRequest { key: key.into(), value: b"v".to_vec(), lease, ..PutRequest::default() }
}

fn op(request: Op) -> RequestOp {
    RequestOp { request: Some(request) }
}

fn version_is(key: &str, version: i64) -> Compare {
    Compare {
        key: key.into(),
        target: CompareTarget::Version as i32,
        result: CompareResult::Equal as i32,
        target_union: Some(TargetUnion::Version(version)),
        ..Compare::default()
    }
}

/// Runs `write` at revision 2 on an empty store, giving back its result and whether
/// it wrote.
fn at_revision_2<T>(write: impl FnOnce(&mut Writer<'_, '_>) -> T) -> (T, bool) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("kv.redb")).unwrap();
    let mut index = KeyIndex::default();
    let txn = db.begin_write().unwrap();
    let mut tables = cairn_mvcc::open_tables(&txn).unwrap();
    let mut writer = Writer::new(&mut tables.kv, &mut index, 2);
    let result = write(&mut writer);
    (result, writer.wrote)
}

const NO_LEASES: &dyn Fn(i64) -> bool = &|_| false;

#[test]
fn a_put_needs_its_key_for_ignore_value_and_its_lease() {
    let ignore = PutRequest { ignore_value: true, ..put_request("a", 0) };
    let (result, wrote) = at_revision_2(|writer| cairn_mvcc::put(writer, &ignore, NO_LEASES));
    assert_eq!((result, wrote), (Err(Error::KeyNotFound), false));
    let (result, wrote) = at_revision_2(|writer| cairn_mvcc::put(writer, &put_request("a", 7), NO_LEASES));
    assert_eq!((result, wrote), (Err(Error::LeaseNotFound), false));
    let (result, wrote) =
        at_revision_2(|writer| cairn_mvcc::put(writer, &put_request("a", 7), &|id| id == 7));
    assert!(result.is_ok() && wrote);
}

#[test]
fn nested_compares_see_the_state_before_the_txn_and_ranges_see_its_writes() {
    // Outer: "a" is new, so put it; nested: "a" is still new as of before the txn, so
    // the nested success branch runs, and its range sees the outer put.
    let nested = TxnRequest {
        compare: vec![version_is("a", 0)],
        success: vec![op(Op::RequestRange(RangeRequest { key: b"a".to_vec(), ..RangeRequest::default() }))],
        failure: Vec::new(),
    };
    let request = TxnRequest {
        compare: vec![version_is("a", 0)],
        success: vec![op(Op::RequestPut(put_request("a", 0))), op(Op::RequestTxn(nested))],
        failure: Vec::new(),
    };
    let before = Revisions { current: 1, compacted: 0 };
    let (response, wrote) =
        at_revision_2(|writer| cairn_mvcc::txn(writer, before, &request, NO_LEASES).unwrap());
    assert!(wrote && response.succeeded);
    let Some(OpResponse::ResponsePut(put)) = &response.responses[0].response else { panic!("{response:?}") };
    assert_eq!(put.header.as_ref().unwrap().revision, 2, "each op's header is the txn's revision after it");
    let Some(OpResponse::ResponseTxn(inner)) = &response.responses[1].response else {
        panic!("{response:?}")
    };
    assert!(inner.succeeded, "decided before the outer put");
    let Some(OpResponse::ResponseRange(range)) = &inner.responses[0].response else { panic!("{inner:?}") };
    assert_eq!(range.kvs.len(), 1, "the range sees the txn's own put");
}

#[test]
fn a_txn_whose_later_op_is_refused_writes_nothing() {
    let request = TxnRequest {
        compare: Vec::new(),
        success: vec![op(Op::RequestPut(put_request("a", 0))), op(Op::RequestPut(put_request("b", 9)))],
        failure: Vec::new(),
    };
    let before = Revisions { current: 1, compacted: 0 };
    let (result, wrote) = at_revision_2(|writer| cairn_mvcc::txn(writer, before, &request, NO_LEASES));
    assert_eq!((result.map(|_| ()), wrote), (Err(Error::LeaseNotFound), false));
    let range = RangeRequest { key: b"a".to_vec(), revision: 5, ..RangeRequest::default() };
    let future = TxnRequest { success: vec![op(Op::RequestRange(range))], ..request };
    let (result, wrote) = at_revision_2(|writer| cairn_mvcc::txn(writer, before, &future, NO_LEASES));
    assert_eq!((result.map(|_| ()), wrote), (Err(Error::FutureRevision), false));
}
