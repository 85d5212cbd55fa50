//! The applier: requests applied in log order inside the caller's transaction.

use std::collections::VecDeque;
use std::time::Instant;

use cairn_api::etcdserverpb::alarm_request::AlarmAction;
use cairn_api::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeResponse, InternalRaftRequest, LeaseCheckpointRequest,
    LeaseCheckpointResponse, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    Member, MemberAttributesRequest, MemberUpdateRequest, PutResponse, ResponseHeader, TxnResponse,
};
use cairn_api::mvccpb::Event;
use cairn_api::mvccpb::event::EventType;
use cairn_auth::AuthInfo;
use cairn_auth::etcd as auth;
use cairn_backend::{ALARMS, LEASES, alarms, members};
use cairn_lease::{Lessor, MAX_LEASE_TTL};
use cairn_mvcc::{KeyIndex, KeySpan, Position, Revisions, Tables, Writer};
use redb::{Database, ReadableDatabase, WriteTransaction};

use crate::membership::{MemberChange, PeerChange};

use crate::state::{self, State};
use crate::{Applied, Error};

/// The limits every member applies alike (they must be the same on every member).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The shortest TTL a lease is granted (etcd: 1.5 election timeouts).
    pub min_lease_ttl: i64,
    /// The backend quota in bytes (`None`: no quota).
    pub quota: Option<u64>,
}

impl Default for Limits {
    /// etcd's defaults: a 1 s election timeout's minimum TTL, a 2 GiB quota.
    fn default() -> Self {
        Self { min_lease_ttl: 2, quota: Some(2 * 1024 * 1024 * 1024) }
    }
}

/// The tables of one write transaction, open for a batch of requests.
pub struct Batch<'txn> {
    txn: &'txn WriteTransaction,
    tables: Tables<'txn>,
    leases: redb::Table<'txn, i64, (i64, i64)>,
    auth_revision: u64,
    db_size: u64,
    now: Instant,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("db_size", &self.db_size).finish_non_exhaustive()
    }
}

/// Applies requests in log order, keeping the store's revisions, the leases'
/// attached keys, the auth store, the alarms and the members, and collecting the
/// changes for watchers.
#[derive(Debug)]
pub struct Applier {
    revisions: Revisions,
    state: State,
    limits: Limits,
    /// Changes applied since last taken: each revision with its events.
    changes: Vec<(u64, Vec<Event>)>,
    /// A compaction applied but not yet committed: the index forgets what it dropped
    /// only once it has.
    compacted: Option<u64>,
    /// Rows that compactions dropped and that are still to be deleted from `kv`.
    doomed: VecDeque<Position>,
    quota_exceeded: bool,
    peer_changes: Vec<PeerChange>,
}

fn header(revision: u64) -> Option<ResponseHeader> {
    Some(ResponseHeader { revision: revision as i64, ..ResponseHeader::default() })
}

/// The identity a request was proposed with.
fn proposer_of(request: &InternalRaftRequest) -> AuthInfo {
    match &request.header {
        Some(header) => AuthInfo::new(header.username.clone(), header.auth_revision),
        None => AuthInfo::new("", 0),
    }
}

impl Applier {
    /// An applier of `state`. A compaction whose rows were not all deleted before the
    /// process stopped goes on (etcd resumes an unfinished compaction at start).
    pub fn new(state: State, limits: Limits) -> Self {
        let doomed = {
            let mut index = cairn_mvcc::write_index(&state.index);
            let doomed = index.obsolete(state.revisions.compacted);
            index.compact(state.revisions.compacted);
            doomed.into()
        };
        Self {
            revisions: state.revisions,
            state,
            limits,
            changes: Vec::new(),
            compacted: None,
            doomed,
            quota_exceeded: false,
            peer_changes: Vec::new(),
        }
    }

    /// The store's revisions as applied so far.
    pub fn revisions(&self) -> Revisions {
        self.revisions
    }

    /// The shared state this applier changes.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Opens a batch in `txn`, for a store of `db_size` bytes (the quota's measure)
    /// at `now` (when granted leases start).
    pub fn begin<'txn>(
        &self,
        txn: &'txn WriteTransaction,
        db_size: u64,
        now: Instant,
    ) -> Result<Batch<'txn>, Error> {
        Ok(Batch {
            txn,
            tables: cairn_mvcc::open_tables(txn)?,
            leases: txn.open_table(LEASES)?,
            auth_revision: state::auth_read(&self.state.auth).revision(),
            db_size,
            now,
        })
    }

    /// Applies `request`, the entry at `index`. A refused request changes nothing,
    /// except one over the quota, which is applied and answered [`Error::NoSpace`].
    pub fn apply(
        &mut self,
        batch: &mut Batch<'_>,
        request: &InternalRaftRequest,
        index: u64,
    ) -> Result<Applied, Error> {
        if let Some(alarm) = &request.alarm {
            if AlarmAction::try_from(alarm.action).is_err() {
                return Err(Error::Storage("unknown alarm action".into()));
            }
            let mut table = batch.txn.open_table(ALARMS)?;
            let response = alarms::apply(&mut state::alarms(&self.state.alarms), &mut table, alarm)?;
            return Ok(Applied::Alarm(response));
        }
        let result = self.apply_request(batch, request, index);
        self.over_quota(batch, result, request)
    }

    /// Saves, in the batch's transaction, the applied index with the revisions and
    /// the auth store when it changed.
    pub fn commit(&mut self, mut batch: Batch<'_>, applied: u64) -> Result<(), Error> {
        batch.tables.meta.insert("applied_index", applied)?;
        self.revisions.save(&mut batch.tables.meta)?;
        let store = state::auth_read(&self.state.auth);
        if store.revision() != batch.auth_revision {
            state::save_auth(batch.txn, &store)?;
        }
        Ok(())
    }

    /// The changes for watchers since last taken, each revision with its events; to
    /// be taken once the transaction is committed, when the key index also forgets
    /// what a compaction in it dropped.
    pub fn take_changes(&mut self) -> Vec<(u64, Vec<Event>)> {
        if let Some(revision) = self.compacted.take() {
            cairn_mvcc::write_index(&self.state.index).compact(revision);
        }
        std::mem::take(&mut self.changes)
    }

    /// Whether a write left the store over its quota, with no NOSPACE alarm raised
    /// yet, since last asked: the caller raises the alarm (through consensus).
    pub fn take_quota_exceeded(&mut self) -> bool {
        std::mem::take(&mut self.quota_exceeded)
    }

    /// Whom to send to, as changed since last taken, in the order applied: to be
    /// taken once the transaction is committed.
    pub fn take_peer_changes(&mut self) -> Vec<PeerChange> {
        std::mem::take(&mut self.peer_changes)
    }

    /// Records a membership change raft applied, in the batch's transaction: an added
    /// member joins the registry; a removed one stays as a tombstone, so that its
    /// messages are refused. The caller checks [`MemberChange::refusal`] first.
    pub fn apply_member_change(&mut self, batch: &Batch<'_>, change: MemberChange<'_>) -> Result<(), Error> {
        let mut members = state::members(&self.state.members);
        let (member, peer) = match change {
            MemberChange::Add { id, learner, context } => {
                let member = crate::membership::added(id, learner, context, members.get(&id));
                let peer = PeerChange::Connect(id, member.peer_ur_ls.clone());
                (member, peer)
            }
            MemberChange::Remove(id) => {
                let tombstone = Member { id, name: members::REMOVED.to_owned(), ..Default::default() };
                (tombstone, PeerChange::Disconnect(id))
            }
        };
        // Saved first: a failure leaves the registry as it was.
        members::save(batch.txn, &member)?;
        members.insert(member.id, member);
        self.peer_changes.push(peer);
        Ok(())
    }

    /// Whether rows dropped by compactions are still to be deleted.
    pub fn has_doomed(&self) -> bool {
        !self.doomed.is_empty()
    }

    /// How many rows dropped by compactions are still to be deleted.
    pub fn doomed(&self) -> usize {
        self.doomed.len()
    }

    /// Deletes up to `limit` of the rows compactions dropped, in `txn`, as etcd's
    /// `compaction-batch-limit` does, so that a large compaction never holds up the
    /// caller for long.
    pub fn delete_doomed(&mut self, txn: &WriteTransaction, limit: usize) -> Result<(), Error> {
        let mut kv = txn.open_table(cairn_backend::KV)?;
        let batch = self.doomed.len().min(limit);
        for at in self.doomed.drain(..batch) {
            kv.remove(at)?;
        }
        Ok(())
    }

    /// Reloads everything from `db` after its tables were replaced (a raft snapshot
    /// restored), into `index` (the key index's write guard, which the caller held
    /// since before the replacement, so that no reader saw tables and index
    /// disagree), and the lessor, auth store, alarms and members (with a
    /// [`PeerChange`] for each member).
    pub fn reload(&mut self, db: &Database, index: &mut KeyIndex) -> Result<(), Error> {
        let read = db.begin_read()?;
        self.revisions = Revisions::load(&read.open_table(cairn_backend::META)?)?;
        let (mut restored, attached) = KeyIndex::load(&read.open_table(cairn_backend::KV)?)?;
        drop(read);
        // The rows a compaction was deleting were replaced with the rest, which may
        // hold rows the leader had still to delete.
        self.doomed = restored.obsolete(self.revisions.compacted).into();
        restored.compact(self.revisions.compacted);
        restored.restored_at(self.revisions);
        *index = restored;
        self.compacted = None;
        *state::lessor(&self.state.lessor) = state::load_lessor(db, attached)?;
        let tokens = std::sync::Arc::clone(state::auth_read(&self.state.auth).tokens());
        *state::auth_write(&self.state.auth) = state::load_auth(db, tokens)?;
        let restored = members::load(db)?;
        // Every member's sender follows its restored URLs (started again where they
        // changed: a member update the snapshot holds), removed members' stop.
        self.peer_changes = restored
            .values()
            .map(|member| match member.name == members::REMOVED {
                true => PeerChange::Disconnect(member.id),
                false => PeerChange::Connect(member.id, member.peer_ur_ls.clone()),
            })
            .collect();
        *state::members(&self.state.members) = restored;
        *state::alarms(&self.state.alarms) = alarms::load(db)?;
        Ok(())
    }

    /// etcd's `quotaApplierV3`: a write that leaves the store over its quota is
    /// applied, and answered `database space exceeded`; the first one asks for the
    /// NOSPACE alarm.
    fn over_quota(
        &mut self,
        batch: &Batch<'_>,
        result: Result<Applied, Error>,
        request: &InternalRaftRequest,
    ) -> Result<Applied, Error> {
        let cost = alarms::cost(request);
        if result.is_err() || alarms::fits(self.limits.quota, batch.db_size, cost) {
            return result;
        }
        if !alarms::no_space(&state::alarms(&self.state.alarms)) {
            self.quota_exceeded = true;
        }
        Err(Error::NoSpace)
    }

    fn apply_request(
        &mut self,
        batch: &mut Batch<'_>,
        request: &InternalRaftRequest,
        index: u64,
    ) -> Result<Applied, Error> {
        // etcd's corrupt applier: while members disagree on the data, nothing changes it.
        let raised = state::alarms(&self.state.alarms);
        if alarms::corrupt(&raised) && alarms::changes_store(request) {
            return Err(Error::CorruptCluster);
        }
        // etcd's capped applier: while space is short, nothing that grows the store.
        if alarms::grows_store(request) && alarms::no_space(&raised) {
            return Err(Error::NoSpace);
        }
        drop(raised);
        let proposer = proposer_of(request);
        if auth::is_auth_request(request) {
            let result = auth::apply(&mut state::auth_write(&self.state.auth), &proposer, request, index);
            return match result {
                Some(result) => Ok(Applied::Auth(result?)),
                None => Err(Error::Storage("unsupported auth request".into())),
            };
        }
        let store = state::auth_read(&self.state.auth);
        auth::check_write(&store, &proposer, request)?;
        if store.is_enabled()
            && (request.lease_grant.is_some() || request.lease_revoke.is_some())
            && proposer.username.is_empty()
        {
            // As etcd 3.5.28: granting and revoking need a logged-in user.
            return Err(cairn_auth::Error::UserEmpty.into());
        }
        // etcd's `checkLeasePuts`: revoking a lease deletes its keys, so it needs write
        // permission on every one of them; attaching a key to a lease needs the same,
        // or the caller could not revoke what it attached to.
        let lease = match (&request.lease_revoke, &request.put) {
            (Some(revoke), _) => revoke.id,
            (None, Some(put)) => put.lease,
            (None, None) => 0,
        };
        if lease != 0 && store.is_enabled() {
            let keys = state::lessor(&self.state.lessor).keys(lease).unwrap_or_default();
            auth::check_lease_keys(&store, &proposer, &keys)?;
        }
        drop(store);
        let tables = &mut batch.tables;
        if let Some(put) = &request.put {
            let response = self.write(tables, |writer, lessor| {
                Ok(cairn_mvcc::put(writer, put, &|id| lessor.contains(id))?)
            })?;
            Ok(Applied::Put(PutResponse { header: header(self.revisions.current), ..response }))
        } else if let Some(delete) = &request.delete_range {
            let response = self.write(tables, |writer, _| Ok(cairn_mvcc::delete_range(writer, delete)?))?;
            Ok(Applied::DeleteRange(DeleteRangeResponse {
                header: header(self.revisions.current),
                ..response
            }))
        } else if let Some(txn) = &request.txn {
            let before = self.revisions;
            let response = self.write(tables, |writer, lessor| {
                Ok(cairn_mvcc::txn(writer, before, txn, &|id| lessor.contains(id))?)
            })?;
            Ok(Applied::Txn(TxnResponse { header: header(self.revisions.current), ..response }))
        } else if let Some(compaction) = &request.compaction {
            self.compact(compaction)
        } else if let Some(grant) = &request.lease_grant {
            self.lease_grant(&mut batch.leases, grant, batch.now)
        } else if let Some(revoke) = &request.lease_revoke {
            self.lease_revoke(&mut batch.tables, &mut batch.leases, revoke)
        } else if let Some(checkpoint) = &request.lease_checkpoint {
            self.lease_checkpoint(&mut batch.leases, checkpoint)
        } else if let Some(update) = &request.cairn_member_update {
            self.update_member(batch.txn, update)
        } else if let Some(attributes) = &request.cairn_member_attributes {
            self.publish_attributes(batch.txn, attributes)
        } else {
            Err(Error::Storage("unsupported request in the raft log".into()))
        }
    }

    fn compact(&mut self, request: &CompactionRequest) -> Result<Applied, Error> {
        // etcd's compaction revision is -1 before the first compaction, so a
        // compaction at 0 is then accepted (and compacts nothing); a negative one never.
        let Ok(revision) = u64::try_from(request.revision) else { return Err(Error::Compacted) };
        if revision == 0 && self.revisions.compacted == 0 {
            return Ok(Applied::Compaction(CompactionResponse { header: header(self.revisions.current) }));
        }
        if revision <= self.revisions.compacted {
            return Err(Error::Compacted);
        }
        if revision > self.revisions.current {
            return Err(Error::FutureRevision);
        }
        // Reads below the revision are refused from now on; the rows they could have
        // seen go later, in batches (`delete_doomed`).
        self.doomed.extend(cairn_mvcc::read_index(&self.state.index).obsolete(revision));
        self.revisions.compacted = revision;
        self.compacted = Some(revision);
        Ok(Applied::Compaction(CompactionResponse { header: header(self.revisions.current) }))
    }

    /// Grants a lease: at least the minimum TTL, at most etcd's largest.
    fn lease_grant(
        &mut self,
        leases: &mut redb::Table<'_, i64, (i64, i64)>,
        request: &LeaseGrantRequest,
        now: Instant,
    ) -> Result<Applied, Error> {
        if request.ttl > MAX_LEASE_TTL {
            return Err(Error::LeaseTtlTooLarge);
        }
        let ttl = request.ttl.max(self.limits.min_lease_ttl);
        if !state::lessor(&self.state.lessor).grant(request.id, ttl, now) {
            return Err(Error::LeaseExists);
        }
        leases.insert(request.id, (ttl, ttl))?;
        Ok(Applied::LeaseGrant(LeaseGrantResponse {
            header: header(self.revisions.current),
            id: request.id,
            ttl,
            error: String::new(),
        }))
    }

    /// Revokes a lease, deleting every attached key in one revision.
    fn lease_revoke(
        &mut self,
        tables: &mut Tables<'_>,
        leases: &mut redb::Table<'_, i64, (i64, i64)>,
        request: &LeaseRevokeRequest,
    ) -> Result<Applied, Error> {
        let keys = state::lessor(&self.state.lessor).keys(request.id).ok_or(Error::LeaseNotFound)?;
        self.write(tables, |writer, _| {
            for key in &keys {
                writer.delete(KeySpan::Single(key))?;
            }
            Ok(())
        })?;
        state::lessor(&self.state.lessor).revoke(request.id);
        leases.remove(request.id)?;
        Ok(Applied::LeaseRevoke(LeaseRevokeResponse { header: header(self.revisions.current) }))
    }

    /// Records remaining TTLs, so that they survive a restart.
    fn lease_checkpoint(
        &mut self,
        leases: &mut redb::Table<'_, i64, (i64, i64)>,
        request: &LeaseCheckpointRequest,
    ) -> Result<Applied, Error> {
        let mut lessor = state::lessor(&self.state.lessor);
        for checkpoint in &request.checkpoints {
            if let Some((ttl, _)) = lessor.ttls(checkpoint.id) {
                lessor.checkpoint(checkpoint.id, checkpoint.remaining_ttl);
                leases.insert(checkpoint.id, (ttl, checkpoint.remaining_ttl))?;
            }
        }
        Ok(Applied::LeaseCheckpoint(LeaseCheckpointResponse { header: header(self.revisions.current) }))
    }

    /// Records the name and client URLs a member published.
    fn publish_attributes(
        &mut self,
        txn: &WriteTransaction,
        attributes: &MemberAttributesRequest,
    ) -> Result<Applied, Error> {
        let mut members = state::members(&self.state.members);
        if let Some(member) = members.get_mut(&attributes.id) {
            let mut updated = member.clone();
            updated.name = attributes.name.clone();
            updated.client_ur_ls = attributes.client_urls.clone();
            // Saved first: a refusal leaves the registry as it was.
            members::save(txn, &updated)?;
            *member = updated;
        }
        Ok(Applied::MemberAttributes)
    }

    /// Records a member's new peer URLs; the caller's transport sends to them once it
    /// takes the change ([`take_peer_changes`](Self::take_peer_changes)).
    fn update_member(
        &mut self,
        txn: &WriteTransaction,
        update: &MemberUpdateRequest,
    ) -> Result<Applied, Error> {
        let mut members = state::members(&self.state.members);
        let member = members
            .get_mut(&update.id)
            .filter(|member| member.name != members::REMOVED)
            .ok_or(Error::MemberNotFound)?;
        let mut urls = update.peer_ur_ls.clone();
        urls.sort();
        let mut updated = member.clone();
        updated.peer_ur_ls = urls.clone();
        members::save(txn, &updated)?;
        *member = updated;
        self.peer_changes.push(PeerChange::Connect(update.id, urls));
        tracing::info!(member = format_args!("{:x}", update.id), urls = ?update.peer_ur_ls, "member peer URLs updated");
        Ok(Applied::MemberAttributes)
    }

    /// Runs `write` at the next revision, and moves the store to it if it wrote.
    fn write<T>(
        &mut self,
        tables: &mut Tables<'_>,
        write: impl FnOnce(&mut Writer<'_, '_>, &Lessor) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let shared = std::sync::Arc::clone(&self.state.index);
        let mut index = cairn_mvcc::write_index(&shared);
        let mut writer = Writer {
            kv: &mut tables.kv,
            index: &mut index,
            events: Vec::new(),
            revision: self.revisions.current + 1,
            wrote: false,
        };
        let result = write(&mut writer, &state::lessor(&self.state.lessor))?;
        self.keep(writer);
        Ok(result)
    }

    /// Moves the store to the writer's revision if it wrote, keeps leases' keys in
    /// step with the changes, and queues the changes for watchers.
    fn keep(&mut self, writer: Writer<'_, '_>) {
        if !writer.wrote {
            return;
        }
        self.revisions.current = writer.revision;
        let mut lessor = state::lessor(&self.state.lessor);
        for event in &writer.events {
            let key = event.kv.as_ref().map(|kv| kv.key.as_slice()).unwrap_or_default();
            let before = event.prev_kv.as_ref().map_or(0, |kv| kv.lease);
            let after = if event.r#type == EventType::Put as i32 {
                event.kv.as_ref().map_or(0, |kv| kv.lease)
            } else {
                0
            };
            if before != after && before != 0 {
                lessor.detach(before, key);
            }
            if after != 0 {
                lessor.attach(after, key);
            }
        }
        drop(lessor);
        self.changes.push((writer.revision, writer.events));
    }
}
