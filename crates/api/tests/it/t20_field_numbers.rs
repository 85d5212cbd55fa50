//! Field numbers and types checked byte by byte against etcd's wire contract.
//!
//! A protobuf field key is `(number << 3) | wire type`: 0 for varints, 2 for
//! length-delimited bytes, strings and messages.

use cairn_api::{authpb, etcdserverpb, mvccpb};
use prost::Message;

fn key(number: u32, wire_type: u32) -> u8 {
    u8::try_from((number << 3) | wire_type).expect("a one-byte key")
}

#[test]
fn range_request_fields() {
    let serializable = etcdserverpb::RangeRequest { serializable: true, ..Default::default() };
    assert_eq!(serializable.encode_to_vec(), [key(7, 0), 1]);
    let range_end = etcdserverpb::RangeRequest { range_end: b"z".to_vec(), ..Default::default() };
    assert_eq!(range_end.encode_to_vec(), [key(2, 2), 1, b'z']);
    let count_only = etcdserverpb::RangeRequest { count_only: true, ..Default::default() };
    assert_eq!(count_only.encode_to_vec(), [key(9, 0), 1]);
    let max_create = etcdserverpb::RangeRequest { max_create_revision: 4, ..Default::default() };
    assert_eq!(max_create.encode_to_vec(), [key(13, 0), 4]);
    let sort = etcdserverpb::RangeRequest {
        sort_order: etcdserverpb::range_request::SortOrder::Descend as i32,
        sort_target: etcdserverpb::range_request::SortTarget::Mod as i32,
        ..Default::default()
    };
    assert_eq!(sort.encode_to_vec(), [key(5, 0), 2, key(6, 0), 3]);
}

#[test]
fn key_value_fields() {
    let kv = mvccpb::KeyValue { mod_revision: 3, ..Default::default() };
    assert_eq!(kv.encode_to_vec(), [key(3, 0), 3]);
    let kv = mvccpb::KeyValue { key: b"k".to_vec(), lease: 5, ..Default::default() };
    assert_eq!(kv.encode_to_vec(), [key(1, 2), 1, b'k', key(6, 0), 5]);
    let delete = mvccpb::Event { r#type: mvccpb::event::EventType::Delete as i32, ..Default::default() };
    assert_eq!(delete.encode_to_vec(), [key(1, 0), 1]);
}

#[test]
fn response_header_and_put_fields() {
    let header = etcdserverpb::ResponseHeader { cluster_id: 1, member_id: 2, revision: 3, raft_term: 4 };
    assert_eq!(header.encode_to_vec(), [key(1, 0), 1, key(2, 0), 2, key(3, 0), 3, key(4, 0), 4]);
    let put = etcdserverpb::PutRequest { prev_kv: true, ignore_lease: true, ..Default::default() };
    assert_eq!(put.encode_to_vec(), [key(4, 0), 1, key(6, 0), 1]);
}

#[test]
fn txn_compare_fields() {
    use etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
    let compare = etcdserverpb::Compare {
        result: CompareResult::NotEqual as i32,
        target: CompareTarget::Lease as i32,
        key: b"a".to_vec(),
        target_union: Some(TargetUnion::Lease(9)),
        range_end: b"b".to_vec(),
    };
    // range_end is field 64, whose key takes two bytes: (64 << 3 | 2) = 514 = 0x82 0x04.
    assert_eq!(
        compare.encode_to_vec(),
        [key(1, 0), 3, key(2, 0), 4, key(3, 2), 1, b'a', key(8, 0), 9, 0x82, 0x04, 1, b'b']
    );
    let op = etcdserverpb::RequestOp {
        request: Some(etcdserverpb::request_op::Request::RequestDeleteRange(Default::default())),
    };
    assert_eq!(op.encode_to_vec(), [key(3, 2), 0]);
}

#[test]
fn auth_permission_fields() {
    let permission = authpb::Permission {
        perm_type: authpb::permission::Type::Readwrite as i32,
        key: b"k".to_vec(),
        range_end: b"l".to_vec(),
    };
    assert_eq!(permission.encode_to_vec(), [key(1, 0), 2, key(2, 2), 1, b'k', key(3, 2), 1, b'l']);
}

#[test]
fn internal_raft_request_fields() {
    let header = etcdserverpb::RequestHeader { id: 1, username: "u".into(), auth_revision: 2 };
    assert_eq!(header.encode_to_vec(), [key(1, 0), 1, key(2, 2), 1, b'u', key(3, 0), 2]);
    // header is field 100: key (100 << 3 | 2) = 802 = 0xa2 0x06.
    let request =
        etcdserverpb::InternalRaftRequest { header: Some(Default::default()), ..Default::default() };
    assert_eq!(request.encode_to_vec(), [0xa2, 0x06, 0]);
    let authenticate =
        etcdserverpb::InternalAuthenticateRequest { simple_token: "t".into(), ..Default::default() };
    assert_eq!(authenticate.encode_to_vec(), [key(3, 2), 1, b't']);
}
