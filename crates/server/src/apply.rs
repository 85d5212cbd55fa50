//! The apply dispatch of etcd's writes: puts, deletes and txns through
//! `cairn-mvcc`'s requests at the next revision, compaction, and leases, keeping the
//! leases' attached keys in step and the changes for watchers. Writes run inside the
//! apply loop's redb transaction.

use cairn_api::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, LeaseCheckpointRequest,
    LeaseCheckpointResponse, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    PutRequest, PutResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use cairn_api::mvccpb::Event;
use cairn_api::mvccpb::event::EventType;

use crate::error::Error;
use crate::lease::{self, Lessor, SharedLessor};
use crate::storage::mvcc::{self, KeySpan, Revisions, SharedIndex, Tables, Writer};

/// What applying a write gives back to its caller.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Applied {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    LeaseCheckpoint(LeaseCheckpointResponse),
    Auth(crate::auth::AuthApplied),
    MemberAttributes,
    Alarm(cairn_api::etcdserverpb::AlarmResponse),
}

/// The result the apply loop hands to the waiting caller.
pub(crate) type ApplyResult = Result<Applied, Error>;

fn header(revision: u64) -> Option<ResponseHeader> {
    Some(ResponseHeader { revision: revision as i64, ..ResponseHeader::default() })
}

/// Applies write requests in log order, keeping the store's revisions, the leases'
/// attached keys, and the changes for watchers.
#[derive(Debug)]
pub(crate) struct Applier {
    pub(crate) revisions: Revisions,
    pub(crate) lessor: SharedLessor,
    /// Changes applied since last taken: each revision with its events, for watchers.
    pub(crate) published: Vec<(u64, Vec<Event>)>,
    pub(crate) index: SharedIndex,
    /// A compaction applied but not yet committed: the index forgets what it dropped
    /// only once it has.
    pub(crate) compacted: Option<u64>,
    /// Changes that compactions dropped and that are still to be deleted from `kv`,
    /// a batch at a time, by the raft thread between applies.
    pub(crate) doomed: std::collections::VecDeque<mvcc::Position>,
}

impl Applier {
    pub(crate) fn put(&mut self, tables: &mut Tables<'_>, request: &PutRequest) -> ApplyResult {
        let response =
            self.write(tables, |writer, lessor| Ok(mvcc::put(writer, request, &|id| lessor.contains(id))?))?;
        Ok(Applied::Put(PutResponse { header: header(self.revisions.current), ..response }))
    }

    pub(crate) fn delete_range(
        &mut self,
        tables: &mut Tables<'_>,
        request: &DeleteRangeRequest,
    ) -> ApplyResult {
        let response = self.write(tables, |writer, _| Ok(mvcc::delete_range(writer, request)?))?;
        Ok(Applied::DeleteRange(DeleteRangeResponse { header: header(self.revisions.current), ..response }))
    }

    pub(crate) fn txn(&mut self, tables: &mut Tables<'_>, request: &TxnRequest) -> ApplyResult {
        let before = self.revisions;
        let response = self.write(tables, |writer, lessor| {
            Ok(mvcc::txn(writer, before, request, &|id| lessor.contains(id))?)
        })?;
        Ok(Applied::Txn(TxnResponse { header: header(self.revisions.current), ..response }))
    }

    pub(crate) fn compact(&mut self, request: &CompactionRequest) -> ApplyResult {
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
        // seen go later, in batches (etcd's `compaction-batch-limit`), so that a large
        // compaction never holds up the raft thread.
        self.doomed.extend(mvcc::read_index(&self.index).obsolete(revision));
        self.revisions.compacted = revision;
        self.compacted = Some(revision);
        Ok(Applied::Compaction(CompactionResponse { header: header(self.revisions.current) }))
    }

    /// Grants a lease: at least `min_ttl` seconds, at most etcd's largest TTL.
    pub(crate) fn lease_grant(
        &mut self,
        leases: &mut redb::Table<'_, i64, (i64, i64)>,
        request: &LeaseGrantRequest,
        min_ttl: i64,
    ) -> ApplyResult {
        if request.ttl > lease::MAX_LEASE_TTL {
            return Err(Error::LeaseTtlTooLarge);
        }
        let ttl = request.ttl.max(min_ttl);
        if !lease::lock(&self.lessor).grant(request.id, ttl, tokio::time::Instant::now().into_std()) {
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
    pub(crate) fn lease_revoke(
        &mut self,
        tables: &mut Tables<'_>,
        leases: &mut redb::Table<'_, i64, (i64, i64)>,
        request: &LeaseRevokeRequest,
    ) -> ApplyResult {
        let keys = lease::lock(&self.lessor).keys(request.id).ok_or(Error::LeaseNotFound)?;
        self.write(tables, |writer, _| {
            for key in &keys {
                writer.delete(KeySpan::Single(key))?;
            }
            Ok(())
        })?;
        lease::lock(&self.lessor).revoke(request.id);
        leases.remove(request.id)?;
        Ok(Applied::LeaseRevoke(LeaseRevokeResponse { header: header(self.revisions.current) }))
    }

    /// Records remaining TTLs, so that they survive a restart.
    pub(crate) fn lease_checkpoint(
        &mut self,
        leases: &mut redb::Table<'_, i64, (i64, i64)>,
        request: &LeaseCheckpointRequest,
    ) -> ApplyResult {
        let mut lessor = lease::lock(&self.lessor);
        for checkpoint in &request.checkpoints {
            if let Some((ttl, _)) = lessor.ttls(checkpoint.id) {
                lessor.checkpoint(checkpoint.id, checkpoint.remaining_ttl);
                leases.insert(checkpoint.id, (ttl, checkpoint.remaining_ttl))?;
            }
        }
        Ok(Applied::LeaseCheckpoint(LeaseCheckpointResponse { header: header(self.revisions.current) }))
    }

    /// Runs `write` at the next revision, and moves the store to it if it wrote.
    fn write<T>(
        &mut self,
        tables: &mut Tables<'_>,
        write: impl FnOnce(&mut Writer<'_, '_>, &Lessor) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let shared = std::sync::Arc::clone(&self.index);
        let mut index = mvcc::write_index(&shared);
        let mut writer = Writer {
            kv: &mut tables.kv,
            index: &mut index,
            events: Vec::new(),
            revision: self.revisions.current + 1,
            wrote: false,
        };
        let result = write(&mut writer, &lease::lock(&self.lessor))?;
        self.commit(writer);
        Ok(result)
    }

    /// Moves the store to the writer's revision if it wrote, keeps leases' keys in
    /// step with the changes, and queues the changes for watchers.
    fn commit(&mut self, writer: Writer<'_, '_>) {
        if !writer.wrote {
            return;
        }
        self.revisions.current = writer.revision;
        let mut lessor = lease::lock(&self.lessor);
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
        self.published.push((writer.revision, writer.events));
    }
}
