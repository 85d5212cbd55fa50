//! The raft node: one thread that ticks raft-rs, takes proposals and read-index
//! requests, persists each `Ready` with one fsync, applies committed entries and
//! wakes their waiters.
//!
//! It runs on its own OS thread because every step blocks on the disk; the async
//! world talks to it through a channel and oneshot replies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_api::etcdserverpb::InternalRaftRequest;
use cairn_proposal::{NodeStatus, Proposer};
use cairn_wait::Wait;
use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, Entry, EntryType};
use raft::storage::MemStorage;
use raft::{RawNode, Storage as _};
use redb::Durability;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::apply::ApplyResult;
use crate::auth::SharedAuth;
use crate::error::Error;
use crate::lease::{self, SharedLessor};
use crate::storage::defrag::Outcome;
use crate::storage::mvcc::{Revisions, SharedIndex};
use crate::storage::{META, StorageError, Store, raft_log, snapshot};
use crate::watch::Hub;
use cairn_apply::{Applier, Limits, MemberChange, PeerChange};
use cairn_transport::Transport;
use cairn_utl::raft_state::SnapshotStorage;
use cairn_wal::Wal;

use crate::log_budget::{LogBudget, entry_bytes};

/// Entries kept after a log compaction, for followers that lag a little (etcd's
/// `snapshotCatchUpEntries`).
const CATCH_UP_ENTRIES: u64 = 5000;
/// Most bytes of entries raft-rs's in-memory log holds before it is compacted,
/// whatever `--snapshot-count` allows (see [`LogBudget`]).
const MAX_LOG_BYTES: u64 = 128 * 1024 * 1024;
/// Entries read from the in-memory log at a time to measure them (each read clones
/// them).
const SIZE_WINDOW: u64 = 16;
/// Most commands taken from the channel before handling a `Ready`, so that a burst
/// of proposals shares one fsync without starving ticks.
const MAX_BATCH: usize = 4096;

/// What the rest of the server reads about the node, updated by the raft thread: its
/// [`NodeStatus`] (indexes, term, leader, voters), and the rest.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cluster_id: u64,
    pub(crate) status: Arc<NodeStatus>,
    /// Read-index rounds that went unanswered and were asked again.
    pub(crate) slow_read_indexes: AtomicU64,
    /// Every member, with names and URLs.
    pub(crate) members: cairn_apply::SharedMembers,
    /// Notified when this member is removed from the cluster.
    pub(crate) removed: Arc<tokio::sync::Notify>,
    /// The peer transport, in a cluster of more than one member.
    transport: Option<Arc<Transport>>,
    /// The compaction revision whose dropped rows are all deleted from `kv` (what a
    /// `physical` compaction waits for).
    pub(crate) physically_compacted: tokio::sync::watch::Sender<u64>,
}

impl std::ops::Deref for Shared {
    type Target = NodeStatus;
    fn deref(&self) -> &NodeStatus {
        &self.status
    }
}

impl Shared {
    /// Whether member `id` was removed from the cluster.
    pub(crate) fn is_removed(&self, id: u64) -> bool {
        let members = self.members.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        members.get(&id).is_some_and(|member| member.name == crate::members::REMOVED)
    }

    /// Every peer, and whether the connection to it is up.
    pub(crate) fn active_peers(&self) -> Vec<(u64, bool)> {
        self.transport.as_ref().map_or_else(Vec::new, |transport| transport.active_peers())
    }

    /// Channels to member `id`'s peer URLs, for calls other than raft messages.
    pub(crate) fn peer_channels(&self, id: u64) -> Vec<tonic::transport::Channel> {
        self.transport.as_ref().map_or_else(Vec::new, |transport| transport.channels(id))
    }
}

/// Where a read-index round's answer goes: the index to read at, or
/// [`Error::LeaderChanged`] when leadership moved before the round was answered.
type ReadReply = cairn_wait::ReadReply<Error>;

/// Where a membership change's outcome goes once it is applied.
type ChangeReply = oneshot::Sender<Result<(), String>>;

/// Requests to the raft thread.
pub(crate) enum Command {
    /// Propose `data`; the reply says whether raft took it.
    Propose(Vec<u8>, oneshot::Sender<cairn_proposal::Result<()>>),
    /// Confirm leadership and reply with the commit index to read at.
    ReadIndex(ReadReply),
    /// A raft message from a peer.
    Step(raft::eraftpb::Message),
    /// Change the membership; the reply comes once the change is applied here.
    ConfChange(ConfChange, oneshot::Sender<Result<(), String>>),
    /// Hand leadership to another voter.
    TransferLeader(u64),
    /// On the leader: how far member `id`'s log matches, and the leader's own.
    Progress(u64, oneshot::Sender<Option<(u64, u64)>>),
    /// Put a defragmented copy of the database in place, between two applies.
    Defragment(crate::storage::defrag::Copy, oneshot::Sender<Result<Outcome, String>>),
    /// Whether member `to` received the snapshot streamed to it.
    ReportSnapshot(u64, bool),
    /// Finish the current step and stop.
    Stop,
}

/// The gate's proposer: hands data to the raft thread.
#[derive(Debug, Clone)]
pub(crate) struct RaftProposer {
    commands: Sender<Command>,
}

impl Proposer for RaftProposer {
    async fn propose(&self, data: Vec<u8>) -> cairn_proposal::Result<()> {
        let stopped = cairn_proposal::Error::Stopped;
        self.ask(|reply| Command::Propose(data, reply)).await.ok_or(stopped)?
    }
}

impl RaftProposer {
    /// Sends the command `make` builds around a reply channel and waits for the
    /// reply; `None` once the raft thread has stopped.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(make(reply)).ok()?;
        answer.await.ok()
    }

    /// Proposes a membership change and waits until it is applied on this member.
    pub(crate) async fn change_membership(&self, change: ConfChange) -> Result<(), String> {
        let applied = self.ask(|reply| Command::ConfChange(change, reply)).await;
        applied.unwrap_or_else(|| Err("etcdserver: server stopped".to_owned()))
    }

    /// On the leader, how far member `id`'s log matches the leader's: `(member,
    /// leader)`; `None` on other members or for an unknown member.
    pub(crate) async fn progress(&self, id: u64) -> Option<(u64, u64)> {
        self.ask(|reply| Command::Progress(id, reply)).await.flatten()
    }

    /// Puts a defragmented copy in place of the database, on the raft thread so that
    /// no write happens meanwhile.
    pub(crate) async fn defragment(&self, copy: crate::storage::defrag::Copy) -> Result<Outcome, String> {
        let done = self.ask(|reply| Command::Defragment(copy, reply)).await;
        done.unwrap_or_else(|| Err("etcdserver: server stopped".to_owned()))
    }

    /// Asks raft to hand leadership to `to`.
    pub(crate) fn transfer_leader(&self, to: u64) {
        let _ = self.commands.send(Command::TransferLeader(to));
    }

    /// Hands a message from a peer to the raft thread.
    pub(crate) fn deliver(&self, message: raft::eraftpb::Message) {
        let _ = self.commands.send(Command::Step(message));
    }

    /// The commit index to serve a linearizable read at, once applied. The round
    /// confirms that a quorum still follows the leader, so it also tells a leader
    /// that it still leads (etcd's `ensureLeadership`).
    ///
    /// # Errors
    /// [`Error::LeaderChanged`] when leadership moved before the round was answered;
    /// `etcdserver: server stopped` when the node stops.
    pub(crate) async fn read_index(&self) -> Result<u64, Error> {
        let index = self.ask(Command::ReadIndex).await;
        index.unwrap_or(Err(Error::Proposal(cairn_proposal::Error::Stopped)))
    }
}

/// How the node is set up.
#[derive(Debug, Clone)]
pub(crate) struct NodeConfig {
    pub(crate) member_id: u64,
    pub(crate) cluster_id: u64,
    pub(crate) heartbeat: Duration,
    pub(crate) election_ticks: usize,
    pub(crate) snapshot_count: u64,
    /// Where the write-ahead log lives.
    pub(crate) wal_dir: std::path::PathBuf,
    /// Where snapshots from the leader are saved as they arrive, until restored.
    pub(crate) snap_dir: std::path::PathBuf,
    /// The voting members a new cluster starts with.
    pub(crate) voters: Vec<u64>,
    /// Notified when this member is removed from the cluster.
    pub(crate) removed: Arc<tokio::sync::Notify>,
    /// The smallest lease TTL granted, in seconds.
    pub(crate) min_lease_ttl: i64,
    /// `--quota-backend-bytes`, if any.
    pub(crate) quota: Option<u64>,
    /// Rows a compaction deletes per transaction (`--experimental-compaction-batch-limit`).
    pub(crate) compaction_batch: usize,
    /// Notified when an applied write leaves the store over its quota.
    pub(crate) quota_exceeded: Arc<tokio::sync::Notify>,
}

/// A started node: the shared view, the proposer, and the thread.
pub(crate) struct Node {
    pub(crate) shared: Arc<Shared>,
    pub(crate) proposer: RaftProposer,
    thread: std::thread::JoinHandle<()>,
}

impl Node {
    /// Stops the raft thread after the step it is in, and waits for it.
    pub(crate) fn stop(self) {
        let _ = self.proposer.commands.send(Command::Stop);
        if self.thread.join().is_err() {
            error!("the raft thread panicked");
        }
    }
}

/// What the apply loop keeps in step with the store, shared with the services.
pub(crate) struct StateHandles {
    pub(crate) wait: Wait<ApplyResult>,
    pub(crate) auth: SharedAuth,
    pub(crate) lessor: SharedLessor,
    pub(crate) index: SharedIndex,
    pub(crate) hub: Hub,
    pub(crate) alarms: crate::alarms::SharedAlarms,
}

/// Recovers or bootstraps the node from `db` and starts its thread.
pub(crate) fn start(
    db: Arc<Store>,
    config: NodeConfig,
    handles: StateHandles,
    transport: Option<Arc<Transport>>,
) -> Result<Node, StorageError> {
    let StateHandles { wait, auth, lessor, index, hub, alarms } = handles;
    let raft_log::Opened { wal, storage, applied, fresh } =
        raft_log::open(&db.get(), &config.wal_dir, config.voters.clone())?;
    let revisions = Revisions::load(&db.begin_read()?.open_table(META)?)?;
    let initial = storage.initial_state().map_err(raft_error)?;
    let hard_state = initial.hard_state.clone();
    let single_voter =
        initial.conf_state.voters == [config.member_id] && initial.conf_state.learners.is_empty();
    let raft_config = raft::Config {
        id: config.member_id,
        election_tick: config.election_ticks,
        heartbeat_tick: 1,
        applied,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        pre_vote: true,
        // As etcd: a leader that has not heard from a quorum for an election timeout
        // steps down, so that a leader cut off from the majority stops taking writes
        // and keeping leases, and followers that hear from their leader ignore
        // disruptive votes.
        check_quorum: true,
        ..raft::Config::default()
    };
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    // Snapshots left from before a restart were either restored or are sent again.
    match std::fs::remove_dir_all(&config.snap_dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(StorageError::Io { context: "cannot clear the snapshot dir".into(), error });
        }
        _ => {}
    }
    let (commands, receiver) = std::sync::mpsc::channel();
    let reports = commands.clone();
    let snapshots = SnapshotStorage::new(storage.clone(), Arc::clone(&db), move |to, delivered| {
        let _ = reports.send(Command::ReportSnapshot(to, delivered));
    });
    if let Some(transport) = &transport {
        transport.set_snapshots(snapshots.outgoing());
    }
    let mut node = RawNode::new(&raft_config, snapshots, &logger).map_err(raft_error)?;
    if single_voter {
        // A single voter need not wait an election timeout to lead.
        node.campaign().map_err(raft_error)?;
    }
    info!(fresh, applied, term = hard_state.term, commit = hard_state.commit, "raft node started");

    let mut status = NodeStatus::new(
        config.member_id,
        applied,
        hard_state.commit,
        hard_state.term,
        initial.conf_state.voters,
    );
    if let Some(transport) = transport.clone() {
        status = status.with_connections(move |peer| transport.connected_since(peer));
    }
    let shared = Arc::new(Shared {
        cluster_id: config.cluster_id,
        status: Arc::new(status),
        slow_read_indexes: AtomicU64::new(0),
        members: Arc::new(Mutex::new(crate::members::load(&db.get())?)),
        removed: Arc::clone(&config.removed),
        transport: transport.clone(),
        physically_compacted: tokio::sync::watch::Sender::new(revisions.compacted),
    });
    let state = cairn_apply::State {
        revisions,
        index,
        lessor: Arc::clone(&lessor),
        auth,
        alarms,
        members: Arc::clone(&shared.members),
    };
    let limits = Limits { min_lease_ttl: config.min_lease_ttl, quota: config.quota };
    let mut log_budget = LogBudget::new(config.snapshot_count, CATCH_UP_ENTRIES, MAX_LOG_BYTES);
    let (first, last) =
        (storage.first_index().map_err(raft_error)?, storage.last_index().map_err(raft_error)?);
    log_budget.appended(entries_back(&storage, first, last).map(|(_, bytes)| bytes).sum());
    let mut runner = Runner {
        node,
        storage,
        wal,
        last_durable: std::time::Instant::now(),
        transport,
        db,
        shared: Arc::clone(&shared),
        wait,
        applier: Applier::new(state, limits),
        promote_at: None,
        pending_conf: None,
        lessor,
        hub,
        applied,
        reads: cairn_wait::ReadRounds::new(config.member_id),
        config,
        log_budget,
        pending_proposals: Vec::new(),
    };
    let thread = std::thread::Builder::new()
        .name("raft".into())
        .spawn(move || {
            if let Err(error) = runner.run(&receiver) {
                // Fail-stop, as etcd's fatal storage errors: after a failed write or
                // sync the page cache can no longer be trusted, and a member that
                // stayed up would answer from a frozen state. Exiting lets a
                // supervisor notice; the next start recovers what was acknowledged.
                error!(%error, "storage failed: stopping the member");
                std::process::exit(1);
            }
        })
        .map_err(|error| StorageError::Io { context: "cannot start the raft thread".into(), error })?;
    Ok(Node { shared, proposer: RaftProposer { commands }, thread })
}

fn raft_error(error: raft::Error) -> StorageError {
    cairn_wal::Error::from(error).into()
}

struct Runner {
    node: RawNode<SnapshotStorage>,
    storage: MemStorage,
    wal: Wal,
    /// When the applied state was last committed durably.
    last_durable: std::time::Instant,
    transport: Option<Arc<Transport>>,
    db: Arc<Store>,
    shared: Arc<Shared>,
    wait: Wait<ApplyResult>,
    applier: Applier,
    /// A membership change: proposed yet?, and who waits for it.
    pending_conf: Option<(ConfChange, Option<ChangeReply>, bool)>,
    /// Set while this member leads but has not yet applied what was committed before:
    /// leases are promoted once it has.
    promote_at: Option<u64>,
    lessor: SharedLessor,
    hub: Hub,
    applied: u64,
    config: NodeConfig,
    /// When the in-memory log is compacted.
    log_budget: LogBudget,
    /// Proposals waiting for a leader.
    pending_proposals: Vec<(Vec<u8>, oneshot::Sender<cairn_proposal::Result<()>>)>,
    /// Linearizable reads waiting for read-index rounds.
    reads: cairn_wait::ReadRounds<Error>,
}

/// Longest the raft thread waits for commands between two compaction batches.
const COMPACTION_PAUSE: Duration = Duration::from_millis(1);

/// Longest time applied state stays in memory only: its entries are replayed from
/// the log after a crash (etcd's backend batch interval).
const STATE_SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// How long a read-index round may go unanswered before it is asked again
/// (etcd's `readIndexRetryTime`).
const READ_INDEX_RETRY: Duration = Duration::from_millis(500);

impl Runner {
    fn run(&mut self, commands: &Receiver<Command>) -> Result<(), StorageError> {
        let mut next_tick = std::time::Instant::now() + self.config.heartbeat;
        loop {
            let mut wait = next_tick.saturating_duration_since(std::time::Instant::now());
            if self.applier.has_doomed() {
                // Between compaction batches, take what has come in without waiting.
                wait = wait.min(COMPACTION_PAUSE);
            }
            match commands.recv_timeout(wait) {
                Ok(command) => {
                    let mut stop = self.take(command)?;
                    for command in commands.try_iter().take(MAX_BATCH) {
                        stop |= self.take(command)?;
                    }
                    if stop {
                        info!("raft node stopped");
                        return Ok(());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            let now = std::time::Instant::now();
            if now >= next_tick {
                self.node.tick();
                next_tick = tick_after(next_tick, now, self.config.heartbeat);
            }
            self.flush_proposals();
            self.start_read_round();
            self.handle_ready()?;
            self.compact_batch()?;
        }
    }

    /// Deletes the next batch of rows that compactions dropped, in a transaction of its
    /// own (not synced: a crash before the next durable commit leaves rows that the
    /// next start deletes again).
    fn compact_batch(&mut self) -> Result<(), StorageError> {
        if !self.applier.has_doomed() {
            let target = self.applier.revisions().compacted;
            self.shared
                .physically_compacted
                .send_if_modified(|done| std::mem::replace(done, target) != target);
            return Ok(());
        }
        let started = std::time::Instant::now();
        let mut txn = self.db.begin_write()?;
        self.applier.delete_doomed(&txn, self.config.compaction_batch).map_err(apply_error)?;
        txn.set_durability(Durability::None)?;
        self.db.commit(txn)?;
        tracing::debug!(left = self.applier.doomed(), took = ?started.elapsed(), "compaction batch");
        Ok(())
    }

    /// Queues a command; true for [`Command::Stop`].
    fn take(&mut self, command: Command) -> Result<bool, StorageError> {
        match command {
            Command::Propose(data, reply) => self.pending_proposals.push((data, reply)),
            Command::ReadIndex(reply) => self.reads.push(reply),
            Command::ConfChange(change, reply) => {
                if self.pending_conf.is_some() {
                    let _ = reply.send(Err("etcdserver: a membership change is already in progress".into()));
                } else {
                    self.pending_conf = Some((change, Some(reply), false));
                }
            }
            Command::TransferLeader(to) => self.node.transfer_leader(to),
            Command::Progress(id, reply) => {
                let raft = &self.node.raft;
                let progress = (raft.state == raft::StateRole::Leader)
                    .then(|| Some((raft.prs().get(id)?.matched, raft.prs().get(raft.id)?.matched)))
                    .flatten();
                let _ = reply.send(progress);
            }
            Command::Step(message) => {
                let snapshot = message.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot;
                let pending = |node: &RawNode<SnapshotStorage>| {
                    node.raft.raft_log.unstable.snapshot.as_ref().map(|pending| pending.data.clone())
                };
                // Only a snapshot names a file (the data is shared, not copied).
                let files = snapshot.then(|| (pending(&self.node), message.get_snapshot().data.clone()));
                if let Err(error) = self.node.step(message) {
                    tracing::debug!(%error, "raft refused a message");
                }
                // The file of a snapshot raft did not take (this member was not
                // behind it), or of one a newer snapshot replaced before it was
                // restored, is never read: it goes now.
                if let Some((before, data)) = files {
                    let after = pending(&self.node);
                    for file in [Some(data), before] {
                        if let Some(file) = file
                            && after.as_ref() != Some(&file)
                        {
                            let _ = std::fs::remove_file(cairn_transport::received_path(&file));
                        }
                    }
                }
            }
            Command::Defragment(copy, reply) => match crate::storage::defrag::finish(&self.db, copy) {
                Ok(outcome) => {
                    let _ = reply.send(Ok(outcome));
                }
                Err(crate::storage::defrag::Failed::Before(error)) => {
                    let _ = reply.send(Err(error.to_string()));
                }
                Err(crate::storage::defrag::Failed::After(error)) => return Err(error.into()),
            },
            Command::ReportSnapshot(to, delivered) => {
                let status =
                    if delivered { raft::SnapshotStatus::Finish } else { raft::SnapshotStatus::Failure };
                self.node.report_snapshot(to, status);
            }
            Command::Stop => return Ok(true),
        }
        Ok(false)
    }

    /// Hands waiting proposals to raft once there is a leader; proposals whose caller
    /// gave up are dropped.
    fn flush_proposals(&mut self) {
        self.pending_proposals.retain(|(_, reply)| !reply.is_closed());
        if self.node.raft.leader_id == raft::INVALID_ID {
            return;
        }
        if let Some((change, reply, proposed)) = &mut self.pending_conf
            && !*proposed
        {
            *proposed = true;
            if let Err(error) = self.node.propose_conf_change(Vec::new(), change.clone()) {
                if let Some(reply) = reply.take() {
                    let _ = reply.send(Err(format!("etcdserver: membership change refused: {error}")));
                }
                self.pending_conf = None;
            }
        }
        for (data, reply) in self.pending_proposals.drain(..) {
            let result = self.node.propose(Vec::new(), data).map_err(|error| match error {
                raft::Error::ProposalDropped => cairn_proposal::Error::ProposalDropped,
                other => {
                    warn!(error = %other, "proposal refused");
                    cairn_proposal::Error::ProposalDropped
                }
            });
            let _ = reply.send(result);
        }
    }

    /// Starts one read-index round for every read waiting (`cairn-wait`'s
    /// `ReadRounds`), once there is a leader; a round unanswered for
    /// [`READ_INDEX_RETRY`] is asked again under a new context, keeping its reads.
    fn start_read_round(&mut self) {
        let now = std::time::Instant::now();
        if self.reads.retry_stale(now, READ_INDEX_RETRY) {
            self.shared.slow_read_indexes.fetch_add(1, Ordering::Relaxed);
        }
        self.reads.forget_gone();
        if self.node.raft.leader_id != raft::INVALID_ID
            && let Some(context) = self.reads.start(now)
        {
            self.node.read_index(context);
        }
    }

    /// One round of raft-rs's `Ready`, in its documented order.
    fn handle_ready(&mut self) -> Result<(), StorageError> {
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut ready = self.node.ready();
        // 1. A leadership change (soft state).
        if let Some(soft) = ready.ss() {
            self.observe_leader(soft.leader_id);
        }
        // 2. Messages the leader may send before it persists.
        self.send(ready.take_messages());
        // 3. A snapshot from the leader replaces the state machine.
        if !ready.snapshot().is_empty() {
            self.restore_snapshot(ready.snapshot().clone())?;
        }
        // 4. Answers to read-index rounds.
        self.answer_reads(ready.take_read_states());
        // 5. New entries and hard state, persisted with one fdatasync.
        let mut committed = ready.take_committed_entries();
        self.persist(ready.take_entries(), ready.hs().cloned(), ready.must_sync())?;
        // 6. Messages sent only once persisted (a follower's votes and appends).
        self.send(ready.take_persisted_messages());
        // 7. Advance: the commit index, messages and committed entries it releases.
        let mut light = self.node.advance_append(ready);
        if let Some(commit) = light.commit_index() {
            self.storage.wl().mut_hard_state().set_commit(commit);
            self.publish_committed(commit);
        }
        self.send(light.take_messages());
        committed.extend(light.take_committed_entries());
        // 8. Committed entries applied to the state machine in one transaction.
        self.apply_committed(&committed)?;
        self.node.advance_apply();
        self.maybe_compact_log()
    }

    /// Releases the reads of the round each read state answers.
    fn answer_reads(&mut self, states: Vec<raft::ReadState>) {
        for state in states {
            self.reads.answer(&state.request_ctx, state.index);
        }
    }

    /// Appends `entries` and `hard_state` to the write-ahead log (one write, one
    /// fdatasync when `must_sync`), then to raft-rs's in-memory log.
    fn persist(
        &mut self,
        entries: Vec<Entry>,
        hard_state: Option<raft::eraftpb::HardState>,
        must_sync: bool,
    ) -> Result<(), StorageError> {
        self.wal.append(&entries, hard_state.as_ref(), must_sync)?;
        self.log_budget.appended(entries.iter().map(entry_bytes).sum());
        let mut core = self.storage.wl();
        core.append(&entries).map_err(raft_error)?;
        if let Some(hard_state) = hard_state {
            self.shared.set_term(hard_state.term);
            self.publish_committed(hard_state.commit);
            core.set_hardstate(hard_state);
        }
        Ok(())
    }

    /// Applies committed entries in one redb transaction and hands their results to
    /// their waiters once it is committed. The entries are durable in the log: their
    /// effects need no fsync of their own, and are replayed from the log after a
    /// crash. A durable commit now and then bounds that replay and lets redb reuse
    /// pages.
    fn apply_committed(&mut self, committed: &[Entry]) -> Result<(), StorageError> {
        if committed.is_empty() {
            return Ok(());
        }
        let mut txn = self.db.begin_write()?;
        let results = self.apply(&txn, committed)?;
        let durable = self.last_durable.elapsed() >= STATE_SYNC_INTERVAL;
        txn.set_durability(if durable { Durability::Immediate } else { Durability::None })?;
        self.db.commit(txn)?;
        if durable {
            self.last_durable = std::time::Instant::now();
        }
        self.publish(results);
        Ok(())
    }

    fn send(&self, messages: Vec<raft::eraftpb::Message>) {
        if messages.is_empty() {
            return;
        }
        match &self.transport {
            Some(transport) => transport.send(messages),
            None => warn!(count = messages.len(), "dropping raft messages: no peers"),
        }
    }

    fn observe_leader(&mut self, leader: u64) {
        let stepped_down_in_term = self.node.raft.term == self.shared.term();
        let election_timeout = self.config.heartbeat * self.config.election_ticks as u32;
        let previous = self.shared.observe_leader(leader, stepped_down_in_term, election_timeout);
        if leader == previous {
            return;
        }
        // Lease expiry is the leader's: a new leader restarts every lease's clock, once
        // it has applied what was committed before it led, checkpoints included.
        if leader == self.shared.member_id() {
            self.promote_at = Some(self.node.raft.raft_log.committed);
        } else {
            self.promote_at = None;
            lease::lock(&self.lessor).demote();
        }
        if previous != raft::INVALID_ID {
            // Reads waiting for a round confirm nothing about a leadership that ended:
            // they fail, as etcd's read loop fails them, and are retried by clients
            // (etcd's `ErrLeaderChanged` is Unavailable).
            self.reads.fail_all(|| Error::LeaderChanged);
        }
        if leader != raft::INVALID_ID {
            info!(leader = format_args!("{leader:x}"), term = self.node.raft.term, "leader elected");
        }
    }

    fn publish_committed(&self, commit: u64) {
        self.shared.set_committed(commit);
    }

    /// Applies `entries` in `txn`, saving the applied index and revisions with them.
    fn apply(
        &mut self,
        txn: &redb::WriteTransaction,
        entries: &[Entry],
    ) -> Result<Vec<(u64, ApplyResult)>, StorageError> {
        let mut results = Vec::new();
        if entries.iter().all(|entry| entry.index <= self.applied) {
            return Ok(results);
        }
        let now = Instant::now().into_std();
        let mut batch = self.applier.begin(txn, self.db.size(), now).map_err(apply_error)?;
        for entry in entries {
            if entry.index <= self.applied {
                continue;
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => {}
                EntryType::EntryNormal => match InternalRaftRequest::decode(entry.data.as_ref()) {
                    Ok(request) => {
                        let id = match request.id {
                            0 => request.header.as_ref().map_or(0, |header| header.id),
                            id => id,
                        };
                        let result = self.applier.apply(&mut batch, &request, entry.index);
                        results.push((id, result.map_err(Error::from)));
                    }
                    Err(error) => error!(index = entry.index, %error, "skipping an undecodable entry"),
                },
                EntryType::EntryConfChange => {
                    let change = ConfChange::parse_from_bytes(&entry.data)
                        .map_err(|_| StorageError::Corrupt("conf change"))?;
                    let member_change = member_change(&change);
                    // Checked again where it is applied, on the applied state, as etcd's
                    // `ValidateConfigurationChange`: a change raft cannot apply must
                    // not stop every member at every restart.
                    let conf = self.node.raft.prs().conf();
                    let voters: Vec<u64> = conf.voters().ids().iter().collect();
                    let learners: Vec<u64> = conf.learners().iter().copied().collect();
                    let applied = match member_change.refusal(&voters, &learners) {
                        Some(reason) => Err(reason.to_owned()),
                        None => self
                            .node
                            .apply_conf_change(&change)
                            .map_err(|error| format!("etcdserver: {error}")),
                    };
                    match applied {
                        Ok(conf_state) => {
                            raft_log::save_conf_state(txn, &conf_state)?;
                            self.applier.apply_member_change(&batch, member_change).map_err(apply_error)?;
                            self.shared.set_voters(conf_state.voters.clone());
                            self.storage.wl().set_conf_state(conf_state);
                            self.answer_conf_change(&change, Ok(()));
                        }
                        Err(reason) => {
                            warn!(node = change.node_id, %reason, "membership change refused at apply");
                            self.answer_conf_change(&change, Err(reason));
                        }
                    }
                }
                EntryType::EntryConfChangeV2 => {
                    let change = ConfChangeV2::parse_from_bytes(&entry.data)
                        .map_err(|_| StorageError::Corrupt("conf change"))?;
                    let conf_state = self.node.apply_conf_change(&change).map_err(raft_error)?;
                    raft_log::save_conf_state(txn, &conf_state)?;
                    self.storage.wl().set_conf_state(conf_state);
                }
            }
            self.applied = entry.index;
        }
        self.applier.commit(batch, self.applied).map_err(apply_error)?;
        Ok(results)
    }

    /// Answers whoever proposed `change` here, if anyone waits for it.
    fn answer_conf_change(&mut self, change: &ConfChange, outcome: Result<(), String>) {
        if let Some((pending, reply, _)) = &mut self.pending_conf
            && pending.node_id == change.node_id
            && pending.get_change_type() == change.get_change_type()
        {
            if let Some(reply) = reply.take() {
                let _ = reply.send(outcome);
            }
            self.pending_conf = None;
        }
    }

    /// Hands changes to watchers and results to their waiters, then announces the
    /// applied index.
    fn publish(&mut self, results: Vec<(u64, ApplyResult)>) {
        let changes = self.applier.take_changes();
        if self.applier.take_quota_exceeded() {
            self.config.quota_exceeded.notify_one();
        }
        self.connect_peers();
        if self.promote_at.is_some_and(|index| self.applied >= index) {
            self.promote_at = None;
            let extend = self.config.heartbeat * self.config.election_ticks as u32;
            lease::lock(&self.lessor).promote(Instant::now().into_std(), extend);
        }
        for (revision, events) in changes {
            self.hub.publish(revision, events);
        }
        self.shared.set_applied(self.applied);
        for (id, result) in results {
            self.wait.trigger(id, result);
        }
    }

    /// Keeps the transport in step with the member registry's changes, and stops this
    /// member once it is removed.
    fn connect_peers(&mut self) {
        for change in self.applier.take_peer_changes() {
            match change {
                PeerChange::Connect(id, urls) => {
                    if let Some(transport) = &self.transport {
                        transport.set_peer(id, urls);
                    }
                }
                PeerChange::Disconnect(id) => {
                    if let Some(transport) = &self.transport {
                        transport.remove_peer(id);
                    }
                    if id == self.shared.member_id() {
                        info!("the member has been permanently removed from the cluster");
                        self.shared.removed.notify_one();
                    }
                }
            }
        }
    }

    /// Replaces the state machine with a snapshot from the leader, for a member that
    /// fell behind its compacted log.
    fn restore_snapshot(&mut self, snapshot: raft::eraftpb::Snapshot) -> Result<(), StorageError> {
        let index = snapshot.get_metadata().index;
        let term = snapshot.get_metadata().term;
        // The transport saved the data to a file, which the message names.
        let path = cairn_transport::received_path(&snapshot.data);
        info!(index, term, path = %path.display(), "restoring a snapshot from the leader");
        let file = std::fs::File::open(&path).map_err(|error| StorageError::Io {
            context: format!("cannot open {}", path.display()),
            error,
        })?;
        let started = std::time::Instant::now();
        // Built in a file of its own while readers go on with the old state.
        let fresh = snapshot::restore(&self.db, file, index)?;
        let written = started.elapsed();
        // Readers wait from the swap until the index matches the restored tables.
        let shared_index = Arc::clone(&self.applier.state().index);
        let mut key_index = crate::storage::mvcc::write_index(&shared_index);
        fresh.install(&self.db, |txn| {
            raft_log::save_restored(txn, index, term)?;
            raft_log::save_conf_state(txn, snapshot.get_metadata().get_conf_state())
        })?;
        let committed = started.elapsed();
        // Only after the state is durable: a crash between the two is recovered
        // from the restored state (see `raft_log::recover`).
        self.wal.restart_at(index, term)?;
        self.last_durable = std::time::Instant::now();
        if let Err(error) = std::fs::remove_file(&path) {
            warn!(path = %path.display(), %error, "cannot remove a restored snapshot");
        }
        self.storage.wl().apply_snapshot(snapshot).map_err(raft_error)?;
        // The in-memory log starts again, empty, after the snapshot.
        self.log_budget.compacted(0);
        // Everything kept in memory follows the restored tables.
        self.applier.reload(&self.db.get(), &mut key_index).map_err(apply_error)?;
        drop(key_index);
        info!(index, ?written, ?committed, reloaded = ?started.elapsed(), "restored a snapshot");
        self.connect_peers();
        self.shared.set_voters(self.storage.initial_state().map_err(raft_error)?.conf_state.voters);
        self.applied = index;
        self.publish_committed(index);
        self.shared.set_applied(index);
        Ok(())
    }

    /// Drops log entries once more than `--snapshot-count` have been applied since
    /// the first one kept, or once they hold more than [`MAX_LOG_BYTES`], keeping the
    /// last few thousand (fewer if they are large, more if a follower needs them).
    fn maybe_compact_log(&mut self) -> Result<(), StorageError> {
        let first = self.storage.first_index().map_err(raft_error)?;
        let Some(due) = self.log_budget.due(first, self.applied) else {
            return Ok(());
        };
        // What the slowest follower still in touch lacks, when this member leads.
        let raft = &self.node.raft;
        let slowest = (raft.state == raft::StateRole::Leader)
            .then(|| {
                let followers = raft.prs().iter().filter(|(id, _)| **id != raft.id);
                followers
                    .filter(|(_, progress)| progress.recent_active)
                    .map(|(_, progress)| progress.matched)
                    .min()
            })
            .flatten();
        let sizes = entries_back(&self.storage, first, self.applied);
        let keep_from = self.log_budget.keep_from((first, self.applied), due, sizes, slowest);
        let term = self.storage.term(keep_from - 1).map_err(raft_error)?;
        // The dropped entries are no longer there to replay: the state they made
        // must be durable first.
        self.db.begin_write()?.commit()?;
        self.last_durable = std::time::Instant::now();
        self.wal.compact(keep_from - 1, term)?;
        self.storage.wl().compact(keep_from).map_err(raft_error)?;
        let last = self.storage.last_index().map_err(raft_error)?;
        self.log_budget.compacted(entries_back(&self.storage, keep_from, last).map(|(_, bytes)| bytes).sum());
        info!(
            first_kept = keep_from,
            applied = self.applied,
            bytes_kept = self.log_budget.bytes(),
            "compacted the raft log"
        );
        Ok(())
    }
}

/// The index and [`entry_bytes`] of each entry of `storage` from `last` back to
/// `first`, read [`SIZE_WINDOW`] entries at a time. A read that fails ends it early
/// (a compaction then keeps more than it might).
fn entries_back(storage: &MemStorage, first: u64, last: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
    let mut end = last + 1;
    let mut window = Vec::new().into_iter();
    std::iter::from_fn(move || {
        loop {
            if let Some(entry) = window.next() {
                return Some(entry);
            }
            if end <= first {
                return None;
            }
            let start = end.saturating_sub(SIZE_WINDOW).max(first);
            let entries = storage.entries(start, end, None, raft::GetEntriesContext::empty(false)).ok()?;
            let sizes: Vec<(u64, u64)> =
                entries.iter().rev().map(|entry| (entry.index, entry_bytes(entry))).collect();
            window = sizes.into_iter();
            end = start;
        }
    })
}

/// When the tick after the one due at `due` (fired at `now`) is due. Ticks missed
/// while the raft thread was busy (a large restore, a slow disk) are dropped, as
/// Go's ticker drops them for etcd: fired in a burst they would pass an election
/// timeout at once, and a follower would campaign, or a leader step down, without
/// cause.
fn tick_after(due: std::time::Instant, now: std::time::Instant, interval: Duration) -> std::time::Instant {
    let next = due + interval;
    if next <= now { now + interval } else { next }
}

/// The membership change `change` makes, as the applier takes it.
fn member_change(change: &ConfChange) -> MemberChange<'_> {
    use raft::eraftpb::ConfChangeType;
    let id = change.node_id;
    match change.get_change_type() {
        ConfChangeType::RemoveNode => MemberChange::Remove(id),
        kind => MemberChange::Add {
            id,
            learner: kind == ConfChangeType::AddLearnerNode,
            context: &change.context,
        },
    }
}

fn apply_error(error: cairn_apply::Error) -> StorageError {
    StorageError::Backend(cairn_mvcc::Error::Redb(error.to_string()))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    #[test]
    fn ticks_keep_their_pace_and_those_missed_in_a_stall_are_dropped() {
        let interval = Duration::from_millis(100);
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // On time, or a little late: the next tick keeps the pace.
        assert_eq!(super::tick_after(at(100), at(100), interval), at(200));
        assert_eq!(super::tick_after(at(100), at(130), interval), at(200));
        // After a stall of 3 s, one tick fires, and the next is a whole interval
        // later: not 29 more at once.
        assert_eq!(super::tick_after(at(100), at(3100), interval), at(3200));
        assert_eq!(super::tick_after(at(100), at(200), interval), at(300));
    }
}
