//! The applier through its public interface, on a real redb backend: revisions,
//! refusals that change nothing, compaction, leases, alarms and the quota, a restart,
//! and two members reaching the same state.

use std::time::Instant;

use cairn_api::etcdserverpb::alarm_request::AlarmAction;
use cairn_api::etcdserverpb::{
    AlarmRequest, AlarmType, CompactionRequest, DeleteRangeRequest, InternalRaftRequest, LeaseGrantRequest,
    LeaseRevokeRequest, PutRequest,
};
use cairn_apply::{Applied, Applier, Error, Limits, State};
use cairn_mvcc::KeySpan;
use redb::{Database, ReadableDatabase as _, ReadableTableMetadata as _};

struct Member {
    _dir: tempfile::TempDir,
    db: Database,
    applier: Applier,
    applied: u64,
}

impl Member {
    fn new(limits: Limits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = cairn_backend::open(dir.path()).unwrap();
        let tokens = cairn_auth::AuthStore::default().tokens().clone();
        let applier = Applier::new(State::load(&db, tokens).unwrap(), limits);
        Self { _dir: dir, db, applier, applied: 0 }
    }

    /// Applies `requests` as one batch in one transaction, as a raft loop would.
    fn apply(&mut self, requests: &[InternalRaftRequest]) -> Vec<Result<Applied, Error>> {
        let txn = self.db.begin_write().unwrap();
        let size = std::fs::metadata(self._dir.path().join("member/cairn.redb")).unwrap().len();
        let mut batch = self.applier.begin(&txn, size, Instant::now()).unwrap();
        let mut results = Vec::new();
        for request in requests {
            self.applied += 1;
            results.push(self.applier.apply(&mut batch, request, self.applied));
        }
        self.applier.commit(batch, self.applied).unwrap();
        txn.commit().unwrap();
        results
    }

    fn one(&mut self, request: InternalRaftRequest) -> Result<Applied, Error> {
        self.apply(&[request]).pop().unwrap()
    }

    /// The live keys and values, read from disk through the shared index.
    fn keys(&self) -> Vec<(String, String, i64)> {
        let txn = self.db.begin_read().unwrap();
        let kv = txn.open_table(cairn_backend::KV).unwrap();
        let index = cairn_mvcc::read_index(&self.applier.state().index);
        cairn_mvcc::range(&kv, &index, KeySpan::From(b""), u64::MAX)
            .unwrap()
            .into_iter()
            .map(|kv| (String::from_utf8(kv.key).unwrap(), String::from_utf8(kv.value).unwrap(), kv.lease))
            .collect()
    }
}

fn put(key: &str, value: &str, lease: i64) -> InternalRaftRequest {
    let put = PutRequest { key: key.into(), value: value.into(), lease, ..Default::default() };
    InternalRaftRequest { put: Some(put), ..Default::default() }
}

fn delete(key: &str) -> InternalRaftRequest {
    let delete = DeleteRangeRequest { key: key.into(), ..Default::default() };
    InternalRaftRequest { delete_range: Some(delete), ..Default::default() }
}

fn compact(revision: i64) -> InternalRaftRequest {
    let compaction = CompactionRequest { revision, physical: false };
    InternalRaftRequest { compaction: Some(compaction), ..Default::default() }
}

fn grant(id: i64, ttl: i64) -> InternalRaftRequest {
    InternalRaftRequest { lease_grant: Some(LeaseGrantRequest { id, ttl }), ..Default::default() }
}

fn alarm(action: AlarmAction, alarm: AlarmType) -> InternalRaftRequest {
    let request = AlarmRequest { action: action as i32, member_id: 7, alarm: alarm as i32 };
    InternalRaftRequest { alarm: Some(request), ..Default::default() }
}

fn revision(result: &Result<Applied, Error>) -> i64 {
    match result {
        Ok(Applied::Put(response)) => response.header.as_ref().unwrap().revision,
        Ok(Applied::DeleteRange(response)) => response.header.as_ref().unwrap().revision,
        other => panic!("{other:?}"),
    }
}

#[test]
fn writes_move_the_revision_and_refusals_change_nothing() {
    let mut member = Member::new(Limits::default());
    let results = member.apply(&[put("a", "1", 0), put("b", "2", 0), delete("a"), delete("missing")]);
    let revisions: Vec<i64> = results.iter().map(revision).collect();
    // A delete of nothing writes nothing: the revision stays.
    assert_eq!(revisions, [2, 3, 4, 4]);
    // Watchers get each revision once the transaction is committed.
    let changes: Vec<u64> = member.applier.take_changes().iter().map(|(revision, _)| *revision).collect();
    assert_eq!(changes, [2, 3, 4]);

    let mut ignore = put("a", "", 0);
    ignore.put.as_mut().unwrap().ignore_value = true;
    assert_eq!(member.one(ignore), Err(Error::KeyNotFound));
    assert_eq!(member.one(put("c", "3", 42)), Err(Error::LeaseNotFound));
    assert_eq!(member.applier.revisions().current, 4);
    assert!(member.applier.take_changes().is_empty());
    assert_eq!(member.keys(), [("b".into(), "2".into(), 0)]);
}

#[test]
fn a_compaction_refuses_the_past_and_the_future_and_its_rows_go_in_batches() {
    let mut member = Member::new(Limits::default());
    let puts: Vec<_> = (0..10).map(|i| put("k", &i.to_string(), 0)).collect();
    member.apply(&puts);
    assert_eq!(member.one(compact(12)), Err(Error::FutureRevision));
    assert!(matches!(member.one(compact(8)), Ok(Applied::Compaction(_))));
    assert_eq!(member.one(compact(8)), Err(Error::Compacted));
    assert_eq!(member.one(compact(-1)), Err(Error::Compacted));
    member.applier.take_changes();
    // Revisions 2..=7 of the key are dropped; 8 is the one seen at the compaction.
    assert_eq!(member.applier.doomed(), 6);
    let txn = member.db.begin_write().unwrap();
    member.applier.delete_doomed(&txn, 4).unwrap();
    txn.commit().unwrap();
    assert_eq!(member.applier.doomed(), 2);
    let txn = member.db.begin_write().unwrap();
    member.applier.delete_doomed(&txn, 4).unwrap();
    txn.commit().unwrap();
    assert!(!member.applier.has_doomed());
    let rows = member.db.begin_read().unwrap().open_table(cairn_backend::KV).unwrap().len().unwrap();
    assert_eq!(rows, 4);
    assert_eq!(member.keys(), [("k".into(), "9".into(), 0)]);
}

#[test]
fn leases_get_the_minimum_ttl_and_a_revocation_deletes_their_keys_in_one_revision() {
    let mut member = Member::new(Limits { min_lease_ttl: 5, quota: None });
    match member.one(grant(1, 1)) {
        Ok(Applied::LeaseGrant(response)) => assert_eq!(response.ttl, 5),
        other => panic!("{other:?}"),
    }
    assert_eq!(member.one(grant(1, 60)), Err(Error::LeaseExists));
    assert_eq!(member.one(grant(2, 9_000_000_001)), Err(Error::LeaseTtlTooLarge));
    member.apply(&[put("a", "1", 1), put("b", "2", 1), put("c", "3", 0)]);
    let revoke =
        InternalRaftRequest { lease_revoke: Some(LeaseRevokeRequest { id: 1 }), ..Default::default() };
    match member.one(revoke.clone()) {
        Ok(Applied::LeaseRevoke(response)) => assert_eq!(response.header.unwrap().revision, 5),
        other => panic!("{other:?}"),
    }
    assert_eq!(member.keys(), [("c".into(), "3".into(), 0)]);
    assert_eq!(member.one(revoke), Err(Error::LeaseNotFound));
    let changes = member.applier.take_changes();
    assert_eq!(changes.last().map(|(revision, events)| (*revision, events.len())), Some((5, 2)));
}

#[test]
fn alarms_and_the_quota_refuse_what_they_must_and_let_the_rest_through() {
    let mut member = Member::new(Limits::default());
    member.one(put("a", "1", 0)).unwrap();
    member.one(alarm(AlarmAction::Activate, AlarmType::Nospace)).unwrap();
    assert_eq!(member.one(put("b", "2", 0)), Err(Error::NoSpace));
    assert_eq!(revision(&member.one(delete("a"))), 3);
    member.one(alarm(AlarmAction::Deactivate, AlarmType::Nospace)).unwrap();
    member.one(alarm(AlarmAction::Activate, AlarmType::Corrupt)).unwrap();
    assert_eq!(member.one(delete("a")), Err(Error::CorruptCluster));
    assert_eq!(member.one(put("b", "2", 0)), Err(Error::CorruptCluster));
    member.one(alarm(AlarmAction::Deactivate, AlarmType::Corrupt)).unwrap();
    assert_eq!(revision(&member.one(put("b", "2", 0))), 4);
    let unknown = InternalRaftRequest {
        alarm: Some(AlarmRequest { action: 9, member_id: 7, alarm: 1 }),
        ..Default::default()
    };
    assert_eq!(member.one(unknown), Err(Error::Storage("unknown alarm action".into())));

    // Over the quota, a write is applied and answered NOSPACE; the caller is asked
    // once to raise the alarm.
    let mut small = Member::new(Limits { min_lease_ttl: 2, quota: Some(1) });
    assert_eq!(small.one(put("a", "1", 0)), Err(Error::NoSpace));
    assert!(small.applier.take_quota_exceeded());
    assert!(!small.applier.take_quota_exceeded());
    assert_eq!(small.keys(), [("a".into(), "1".into(), 0)]);
}

#[test]
fn a_restart_finds_what_was_applied_and_two_members_agree() {
    let log: Vec<InternalRaftRequest> = vec![
        grant(1, 30),
        put("a", "1", 1),
        put("b", "2", 0),
        put("a", "3", 0),
        delete("b"),
        compact(3),
        put("c", "4", 1),
    ];
    let mut first = Member::new(Limits::default());
    let mut second = Member::new(Limits::default());
    let answers: Vec<_> = log.iter().map(|request| first.one(request.clone())).collect();
    assert_eq!(second.apply(&log), answers);
    assert_eq!(first.keys(), second.keys());
    assert_eq!(first.applier.revisions(), second.applier.revisions());

    // A restart: the state comes back from the backend alone.
    let tokens = cairn_auth::AuthStore::default().tokens().clone();
    let state = State::load(&first.db, tokens).unwrap();
    assert_eq!(state.revisions, first.applier.revisions());
    let restarted = Applier::new(state, Limits::default());
    assert_eq!(cairn_apply::lessor(&restarted.state().lessor).keys(1), Some(vec![b"c".to_vec()]));
    let index = cairn_mvcc::read_index(&restarted.state().index);
    assert_eq!(index.positions(KeySpan::From(b""), u64::MAX).len(), 2);
}

#[test]
fn membership_changes_keep_the_registry_and_say_whom_to_send_to_in_order() {
    use cairn_apply::{MemberChange, PeerChange};
    use prost::Message as _;
    let mut member = Member::new(Limits { min_lease_ttl: 1, quota: None });
    let joining = cairn_api::etcdserverpb::Member {
        id: 2,
        peer_ur_ls: vec!["http://10.0.0.2:2380".into()],
        ..Default::default()
    };
    let context = joining.encode_to_vec();
    let update = cairn_api::etcdserverpb::MemberUpdateRequest {
        id: 2,
        peer_ur_ls: vec!["http://b:2380".into(), "http://a:2380".into()],
    };
    // One batch: member 2 joins as a learner, moves, then leaves; member 3 joins.
    let txn = member.db.begin_write().unwrap();
    let mut batch = member.applier.begin(&txn, 0, Instant::now()).unwrap();
    let add = |id, context| MemberChange::Add { id, learner: id == 2, context };
    member.applier.apply_member_change(&batch, add(2, &context)).unwrap();
    let moved = InternalRaftRequest { cairn_member_update: Some(update), ..Default::default() };
    member.applier.apply(&mut batch, &moved, 1).unwrap();
    member.applier.apply_member_change(&batch, MemberChange::Remove(2)).unwrap();
    member.applier.apply_member_change(&batch, add(3, &[])).unwrap();
    member.applier.commit(batch, 1).unwrap();
    txn.commit().unwrap();
    let sorted = vec!["http://a:2380".to_owned(), "http://b:2380".to_owned()];
    assert_eq!(
        member.applier.take_peer_changes(),
        [
            PeerChange::Connect(2, joining.peer_ur_ls.clone()),
            PeerChange::Connect(2, sorted),
            PeerChange::Disconnect(2),
            PeerChange::Connect(3, Vec::new()),
        ]
    );
    assert!(member.applier.take_peer_changes().is_empty());
    // A removed member stays as a tombstone, on disk too; an update of it is refused.
    let stored = cairn_backend::members::load(&member.db).unwrap();
    assert_eq!(stored[&2].name, cairn_backend::members::REMOVED);
    assert_eq!(stored, *cairn_apply::members(&member.applier.state().members));
    let update = cairn_api::etcdserverpb::MemberUpdateRequest { id: 2, peer_ur_ls: vec![] };
    let refused = member.one(InternalRaftRequest { cairn_member_update: Some(update), ..Default::default() });
    assert!(matches!(refused, Err(Error::MemberNotFound)), "{refused:?}");
    // After a restored snapshot, every member's sender is set again.
    let shared = member.applier.state().index.clone();
    let mut index = cairn_mvcc::write_index(&shared);
    member.applier.reload(&member.db, &mut index).unwrap();
    drop(index);
    assert_eq!(
        member.applier.take_peer_changes(),
        [PeerChange::Disconnect(2), PeerChange::Connect(3, Vec::new())]
    );
}
