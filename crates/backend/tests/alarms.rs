//! Alarms as etcd's `v3alarm` keeps them, and requests as its quota and its NOSPACE
//! and CORRUPT appliers see them.

use std::collections::BTreeSet;

use cairn_api::etcdserverpb::alarm_request::AlarmAction;
use cairn_api::etcdserverpb::request_op::Request as Op;
use cairn_api::etcdserverpb::{
    AlarmRequest, AlarmType, DeleteRangeRequest, InternalRaftRequest, LeaseGrantRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest,
};
use cairn_backend::{ALARMS, alarms};
use redb::ReadableTableMetadata as _;

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest { key: key.into(), value: value.into(), ..PutRequest::default() }
}

fn txn(success: Vec<Op>, failure: Vec<Op>) -> TxnRequest {
    let ops = |ops: Vec<Op>| ops.into_iter().map(|op| RequestOp { request: Some(op) }).collect();
    TxnRequest { compare: Vec::new(), success: ops(success), failure: ops(failure) }
}

#[test]
fn a_request_costs_what_etcds_quota_counts() {
    let request = InternalRaftRequest { put: Some(put("key", "value")), ..Default::default() };
    assert_eq!(alarms::cost(&request), 256 + 3 + 5);
    // A txn costs its costlier branch, nested txns counted.
    let nested = txn(vec![Op::RequestPut(put("a", "1")), Op::RequestPut(put("b", "2"))], Vec::new());
    let outer = txn(vec![Op::RequestTxn(nested)], vec![Op::RequestPut(put("c", "3"))]);
    let request = InternalRaftRequest { txn: Some(outer), ..Default::default() };
    assert_eq!(alarms::cost(&request), 2 * (256 + 2));
    let grant =
        InternalRaftRequest { lease_grant: Some(LeaseGrantRequest { ttl: 5, id: 1 }), ..Default::default() };
    assert_eq!(alarms::cost(&grant), 64);
    let delete =
        InternalRaftRequest { delete_range: Some(DeleteRangeRequest::default()), ..Default::default() };
    assert_eq!(alarms::cost(&delete), 0);

    assert!(alarms::fits(Some(1000), 900, 99), "strictly below the quota");
    assert!(!alarms::fits(Some(1000), 900, 100));
    assert!(alarms::fits(Some(1000), 5000, 0), "what costs nothing always fits");
    assert!(alarms::fits(None, u64::MAX, 100));
}

#[test]
fn nospace_refuses_what_grows_the_store_and_corrupt_what_changes_it() {
    let read_only = InternalRaftRequest {
        txn: Some(txn(vec![Op::RequestRange(RangeRequest::default())], Vec::new())),
        ..Default::default()
    };
    let deleting = InternalRaftRequest {
        txn: Some(txn(Vec::new(), vec![Op::RequestDeleteRange(DeleteRangeRequest::default())])),
        ..Default::default()
    };
    let putting = InternalRaftRequest {
        txn: Some(txn(
            vec![Op::RequestTxn(txn(vec![Op::RequestPut(put("a", "b"))], Vec::new()))],
            Vec::new(),
        )),
        ..Default::default()
    };
    assert!(!alarms::grows_store(&read_only) && !alarms::changes_store(&read_only));
    assert!(!alarms::grows_store(&deleting) && alarms::changes_store(&deleting));
    assert!(alarms::grows_store(&putting) && alarms::changes_store(&putting));
}

#[test]
fn alarms_are_raised_once_cleared_exactly_and_listed_by_type() {
    let dir = tempfile::tempdir().unwrap();
    let db = cairn_backend::open(dir.path()).unwrap();
    let txn = db.begin_write().unwrap();
    let mut table = txn.open_table(ALARMS).unwrap();
    let mut raised = BTreeSet::new();
    let request = |action: AlarmAction, member_id: u64, alarm: AlarmType| AlarmRequest {
        action: action as i32,
        member_id,
        alarm: alarm as i32,
    };
    for _ in 0..2 {
        let response =
            alarms::apply(&mut raised, &mut table, &request(AlarmAction::Activate, 1, AlarmType::Nospace))
                .unwrap();
        assert_eq!(response.alarms.len(), 1);
    }
    alarms::apply(&mut raised, &mut table, &request(AlarmAction::Activate, 2, AlarmType::Corrupt)).unwrap();
    assert_eq!(table.len().unwrap(), 2);
    assert!(alarms::no_space(&raised) && alarms::corrupt(&raised));

    let listed =
        alarms::apply(&mut raised, &mut table, &request(AlarmAction::Get, 0, AlarmType::Corrupt)).unwrap();
    assert_eq!(listed.alarms.iter().map(|a| a.member_id).collect::<Vec<_>>(), [2]);
    let not_raised = request(AlarmAction::Deactivate, 2, AlarmType::Nospace);
    assert!(alarms::apply(&mut raised, &mut table, &not_raised).unwrap().alarms.is_empty());
    alarms::apply(&mut raised, &mut table, &request(AlarmAction::Deactivate, 1, AlarmType::Nospace)).unwrap();
    assert!(!alarms::no_space(&raised));
    assert_eq!(table.len().unwrap(), 1);
    let unknown = AlarmRequest { action: 9, member_id: 1, alarm: 1 };
    assert!(alarms::apply(&mut raised, &mut table, &unknown).is_err());
    drop(table);
    txn.commit().unwrap();
    assert_eq!(alarms::load(&db).unwrap(), raised);
}

#[tokio::test(start_paused = true)]
async fn a_disk_below_the_low_water_mark_raises_nospace_until_it_is_up_and_again_once_cleared() {
    use cairn_backend::alarms::{DISK_CHECK_INTERVAL, Watermarks, watch_disk};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let watch = |marks: Watermarks| {
        let (up, asked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let (raised, raise) = (Arc::clone(&up), (Arc::clone(&up), Arc::clone(&asked)));
        watch_disk(
            dir.path().to_owned(),
            marks,
            move || raised.load(Ordering::SeqCst),
            move || {
                let (up, asked) = raise.clone();
                async move {
                    asked.fetch_add(1, Ordering::SeqCst);
                    up.store(true, Ordering::SeqCst);
                }
            },
        );
        (up, asked)
    };
    // No file system has more free bytes than u64::MAX, and none fewer than 0.
    let (up, asked) = watch(Watermarks { low: u64::MAX, high: u64::MAX });
    let (_, never) = watch(Watermarks { low: 0, high: 0 });
    tokio::time::sleep(DISK_CHECK_INTERVAL * 10).await;
    assert_eq!(asked.load(Ordering::SeqCst), 1, "raised once, then seen up");
    up.store(false, Ordering::SeqCst);
    tokio::time::sleep(DISK_CHECK_INTERVAL * 10).await;
    assert_eq!(asked.load(Ordering::SeqCst), 2, "raised again after an operator cleared it");
    assert_eq!(never.load(Ordering::SeqCst), 0);
}
