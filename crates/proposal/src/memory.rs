//! In-memory implementations of the gate's seams, for tests and for users who drive
//! the gate without raft.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_auth::AuthInfo;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::traits::{AuthSource, Header, IndexSource, Leadership, Proposer, Request};
use crate::{Error, Result};

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Applied and committed indexes set by hand.
#[derive(Debug, Default)]
pub struct MemIndexes {
    applied: AtomicU64,
    committed: AtomicU64,
}

impl MemIndexes {
    /// Indexes at `applied` and `committed`.
    pub fn new(applied: u64, committed: u64) -> Self {
        Self { applied: AtomicU64::new(applied), committed: AtomicU64::new(committed) }
    }

    /// Sets the applied index.
    pub fn set_applied(&self, index: u64) {
        self.applied.store(index, Ordering::Release);
    }

    /// Sets the committed index.
    pub fn set_committed(&self, index: u64) {
        self.committed.store(index, Ordering::Release);
    }
}

impl IndexSource for MemIndexes {
    fn applied_index(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    fn committed_index(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }
}

/// Leadership and peer connectivity set by hand.
#[derive(Debug)]
pub struct MemLeadership {
    member_id: u64,
    state: Mutex<LeadershipState>,
}

#[derive(Debug, Default)]
struct LeadershipState {
    leader: Option<u64>,
    elected_at: Option<Instant>,
    members: Vec<u64>,
    connected: HashMap<u64, Instant>,
}

impl MemLeadership {
    /// A single-member cluster of `member_id`, which leads since `elected_at`.
    pub fn single(member_id: u64, elected_at: Instant) -> Self {
        let state = LeadershipState {
            leader: Some(member_id),
            elected_at: Some(elected_at),
            members: vec![member_id],
            connected: HashMap::new(),
        };
        Self { member_id, state: Mutex::new(state) }
    }

    /// Member `member_id` of a cluster of `members` with no leader yet.
    pub fn new(member_id: u64, members: Vec<u64>) -> Self {
        let state = LeadershipState { members, ..LeadershipState::default() };
        Self { member_id, state: Mutex::new(state) }
    }

    /// `leader` was elected at `at` (`None`: the leader was lost, `at` unchanged).
    pub fn set_leader(&self, leader: Option<u64>, at: Instant) {
        let mut state = lock(&self.state);
        state.leader = leader;
        if leader.is_some() {
            state.elected_at = Some(at);
        }
    }

    /// The transport to `peer` is connected since `since`, or not connected (`None`).
    pub fn set_connected(&self, peer: u64, since: Option<Instant>) {
        let mut state = lock(&self.state);
        match since {
            Some(since) => state.connected.insert(peer, since),
            None => state.connected.remove(&peer),
        };
    }
}

impl Leadership for MemLeadership {
    fn member_id(&self) -> u64 {
        self.member_id
    }

    fn leader(&self) -> Option<u64> {
        lock(&self.state).leader
    }

    fn leader_elected_at(&self) -> Option<Instant> {
        lock(&self.state).elected_at
    }

    fn members(&self) -> Vec<u64> {
        lock(&self.state).members.clone()
    }

    fn connected_since(&self, peer: u64) -> Option<Instant> {
        lock(&self.state).connected.get(&peer).copied()
    }
}

/// No authentication: every caller is anonymous, as with auth disabled.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAuth;

impl AuthSource for NoAuth {
    fn auth_info(&self, _metadata: &[(&str, &str)]) -> Result<Option<AuthInfo>, cairn_auth::Error> {
        Ok(None)
    }
}

/// Fixed tokens: metadata `token` values mapped to identities; any other token is
/// invalid.
#[derive(Debug, Clone, Default)]
pub struct StaticTokens {
    tokens: HashMap<String, AuthInfo>,
}

impl StaticTokens {
    /// Accepts `token` as `info`.
    pub fn with(mut self, token: impl Into<String>, info: AuthInfo) -> Self {
        self.tokens.insert(token.into(), info);
        self
    }
}

impl AuthSource for StaticTokens {
    fn auth_info(&self, metadata: &[(&str, &str)]) -> Result<Option<AuthInfo>, cairn_auth::Error> {
        match cairn_auth::token_from_metadata(metadata.iter().copied()) {
            Some(token) => {
                self.tokens.get(token).cloned().map(Some).ok_or(cairn_auth::Error::InvalidAuthToken)
            }
            None => Ok(None),
        }
    }
}

/// How a [`ChannelProposer`] answers proposals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposerMode {
    /// Accept and pass the proposal to the receiver.
    Accept,
    /// Refuse with this error.
    Fail(Error),
    /// Never answer, as raft does while there is no leader.
    Hang,
}

/// A proposer that sends accepted proposals down a channel, to an apply loop the
/// test or user runs.
#[derive(Debug)]
pub struct ChannelProposer {
    sender: mpsc::UnboundedSender<Vec<u8>>,
    mode: Mutex<ProposerMode>,
}

impl ChannelProposer {
    /// A proposer and the receiving end of its proposals.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Vec<u8>>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (Self { sender, mode: Mutex::new(ProposerMode::Accept) }, receiver)
    }

    /// Changes how later proposals are answered.
    pub fn set_mode(&self, mode: ProposerMode) {
        *lock(&self.mode) = mode;
    }
}

impl Proposer for ChannelProposer {
    async fn propose(&self, data: Vec<u8>) -> Result<()> {
        let mode = lock(&self.mode).clone();
        match mode {
            ProposerMode::Accept => self.sender.send(data).map_err(|_| Error::Stopped),
            ProposerMode::Fail(error) => Err(error),
            ProposerMode::Hang => std::future::pending().await,
        }
    }
}

/// A simple request: a payload and flags, encoded as
/// `id (8 bytes LE) | auth revision (8) | user length (4) | user | payload`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemRequest {
    /// The stamped header.
    pub header: Header,
    /// etcd's legacy ID; 0 for none.
    pub legacy_id: u64,
    /// Whether this stands for an Authenticate request.
    pub authenticate: bool,
    /// Whether this request may use twice the gap.
    pub priority: bool,
    /// Opaque content.
    pub payload: Vec<u8>,
}

impl MemRequest {
    /// A request carrying `payload`.
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
        Self { payload: payload.into(), ..Self::default() }
    }

    /// Reads back an encoded request (its header and payload; flags are not encoded).
    pub fn decode(data: &[u8]) -> Option<Self> {
        let id = u64::from_le_bytes(data.get(0..8)?.try_into().ok()?);
        let auth_revision = u64::from_le_bytes(data.get(8..16)?.try_into().ok()?);
        let user_len = u32::from_le_bytes(data.get(16..20)?.try_into().ok()?) as usize;
        let username = String::from_utf8(data.get(20..20 + user_len)?.to_vec()).ok()?;
        let payload = data.get(20 + user_len..)?.to_vec();
        Some(Self { header: Header { id, username, auth_revision }, payload, ..Self::default() })
    }
}

impl Request for MemRequest {
    fn legacy_id(&self) -> u64 {
        self.legacy_id
    }

    fn is_authenticate(&self) -> bool {
        self.authenticate
    }

    fn is_priority(&self) -> bool {
        self.priority
    }

    fn set_header(&mut self, header: Header) {
        self.header = header;
    }

    fn encode(&self) -> Vec<u8> {
        let user = self.header.username.as_bytes();
        let mut data = Vec::with_capacity(20 + user.len() + self.payload.len());
        data.extend_from_slice(&self.header.id.to_le_bytes());
        data.extend_from_slice(&self.header.auth_revision.to_le_bytes());
        data.extend_from_slice(&u32::try_from(user.len()).unwrap_or(u32::MAX).to_le_bytes());
        data.extend_from_slice(user);
        data.extend_from_slice(&self.payload);
        data
    }
}
