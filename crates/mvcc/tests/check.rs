//! etcd's checks of a request before it is proposed, at their limits.

use cairn_api::etcdserverpb::request_op::Request as Op;
use cairn_api::etcdserverpb::{Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};
use cairn_mvcc::check::{self, Invalid};

fn put(key: &str) -> RequestOp {
    RequestOp { request: Some(Op::RequestPut(PutRequest { key: key.into(), ..Default::default() })) }
}

fn delete(key: &str, end: &str) -> RequestOp {
    let delete = DeleteRangeRequest { key: key.into(), range_end: end.into(), ..Default::default() };
    RequestOp { request: Some(Op::RequestDeleteRange(delete)) }
}

fn nested(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
    RequestOp { request: Some(Op::RequestTxn(TxnRequest { compare: vec![], success, failure })) }
}

fn txn(success: Vec<RequestOp>) -> TxnRequest {
    TxnRequest { compare: vec![], success, failure: vec![] }
}

#[test]
fn keys_and_options_must_be_given_and_exist() {
    assert_eq!(check::range(&RangeRequest::default()), Err(Invalid::EmptyKey));
    let sorted = RangeRequest { key: b"k".to_vec(), sort_order: 3, ..Default::default() };
    assert_eq!(check::range(&sorted), Err(Invalid::SortOption));
    let ignore =
        PutRequest { key: b"k".to_vec(), ignore_value: true, value: b"v".to_vec(), ..Default::default() };
    assert_eq!(check::put(&ignore), Err(Invalid::ValueProvided));
    let ignore = PutRequest { key: b"k".to_vec(), ignore_lease: true, lease: 7, ..Default::default() };
    assert_eq!(check::put(&ignore), Err(Invalid::LeaseProvided));
    assert_eq!(check::delete_range(&DeleteRangeRequest::default()), Err(Invalid::EmptyKey));
    let compare = TxnRequest { compare: vec![Compare::default()], ..Default::default() };
    assert_eq!(check::txn(&compare, 128), Err(Invalid::EmptyKey));
    assert_eq!(check::txn(&txn(vec![nested(vec![delete("", "")], vec![])]), 128), Err(Invalid::EmptyKey));
    assert_eq!(Invalid::DuplicateKey.to_string(), "etcdserver: duplicate key given in txn request");
}

#[test]
fn a_txn_may_have_max_ops_per_branch_at_every_level_and_no_more() {
    let ops = |n: usize| (0..n).map(|i| put(&format!("k{i}"))).collect::<Vec<_>>();
    assert_eq!(check::txn(&txn(ops(3)), 3), Ok(()));
    assert_eq!(check::txn(&txn(ops(4)), 3), Err(Invalid::TooManyOps));
    assert_eq!(check::txn(&txn(vec![nested(ops(3), ops(3))]), 3), Ok(()));
    assert_eq!(check::txn(&txn(vec![nested(vec![], ops(4))]), 3), Err(Invalid::TooManyOps));
}

#[test]
fn no_key_is_written_twice_in_one_branch() {
    assert_eq!(check::txn(&txn(vec![put("a"), put("a")]), 128), Err(Invalid::DuplicateKey));
    // Put and deleted, by a range or a prefix to the end.
    assert_eq!(check::txn(&txn(vec![delete("a", "c"), put("b")]), 128), Err(Invalid::DuplicateKey));
    assert_eq!(check::txn(&txn(vec![delete("a", "\0"), put("z")]), 128), Err(Invalid::DuplicateKey));
    assert_eq!(check::txn(&txn(vec![delete("a", "c"), put("c")]), 128), Ok(()));
    // The two branches of a nested txn may put the same key: only one runs.
    assert_eq!(check::txn(&txn(vec![nested(vec![put("a")], vec![put("a")])]), 128), Ok(()));
    // But not one the outer branch puts too.
    assert_eq!(
        check::txn(&txn(vec![put("a"), nested(vec![put("a")], vec![])]), 128),
        Err(Invalid::DuplicateKey)
    );
    // The success and failure branches of the txn itself are separate.
    let both = TxnRequest { compare: vec![], success: vec![put("a")], failure: vec![put("a")] };
    assert_eq!(check::txn(&both, 128), Ok(()));
}
