//! A gate over the in-memory seams, and an apply loop for it.

use std::sync::Arc;
use std::time::Duration;

use cairn_auth::AuthInfo;
use cairn_idgen::Generator;
use cairn_proposal::memory::{ChannelProposer, MemIndexes, MemLeadership, MemRequest, StaticTokens};
use cairn_proposal::{Config, Gate, Parts};
use cairn_wait::Wait;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What the apply loop hands back: the applied request's header and payload.
pub(crate) type Applied = MemRequest;

pub(crate) type TestGate =
    Gate<Arc<ChannelProposer>, Arc<MemIndexes>, Arc<MemLeadership>, StaticTokens, Applied>;

pub(crate) const MEMBER: u64 = 0x12;

pub(crate) struct Harness {
    pub(crate) gate: Arc<TestGate>,
    pub(crate) proposer: Arc<ChannelProposer>,
    pub(crate) indexes: Arc<MemIndexes>,
    pub(crate) leadership: Arc<MemLeadership>,
    pub(crate) wait: Wait<Applied>,
    pub(crate) proposals: mpsc::UnboundedReceiver<Vec<u8>>,
}

pub(crate) fn tokens() -> StaticTokens {
    StaticTokens::default().with("alice-token", AuthInfo::new("alice", 7))
}

/// A gate for member 0x12 at millisecond 0x3456, leading a single-member cluster
/// since an hour before now.
pub(crate) fn harness(config: Config) -> Harness {
    harness_with(config, MemLeadership::single(MEMBER, Instant::now()))
}

/// A gate for member 0x12 with the given view of leadership.
pub(crate) fn harness_with(config: Config, leadership: MemLeadership) -> Harness {
    harness_metered(config, leadership, &opentelemetry::global::meter("test"))
}

/// A gate for member 0x12 recording its metrics through `meter`.
pub(crate) fn harness_metered(
    config: Config,
    leadership: MemLeadership,
    meter: &opentelemetry::metrics::Meter,
) -> Harness {
    let (proposer, proposals) = ChannelProposer::new();
    let proposer = Arc::new(proposer);
    let indexes = Arc::new(MemIndexes::new(10, 10));
    let leadership = Arc::new(leadership);
    let wait = Wait::new();
    let parts = Parts {
        proposer: Arc::clone(&proposer),
        indexes: Arc::clone(&indexes),
        leadership: Arc::clone(&leadership),
        auth: tokens(),
        ids: Arc::new(Generator::new(MEMBER, 0x3456)),
        wait: wait.clone(),
    };
    let gate = Arc::new(Gate::with_meter(parts, config, meter));
    Harness { gate, proposer, indexes, leadership, wait, proposals }
}

/// The first ID the harness's generator gives.
pub(crate) const FIRST_ID: u64 = 0x0012_0000_0034_5601;

impl Harness {
    /// Proposes a request with `payload`, without a token, on another task.
    pub(crate) fn spawn_propose(
        &self,
        payload: &'static str,
    ) -> tokio::task::JoinHandle<cairn_proposal::Result<Applied>> {
        let gate = Arc::clone(&self.gate);
        tokio::spawn(async move { gate.propose(MemRequest::new(payload), &[]).await })
    }

    /// Applies every proposal in order on another task, triggering its waiter with the
    /// decoded request, under its legacy ID if it has one (given by `legacy`).
    pub(crate) fn spawn_applier(&mut self) -> tokio::task::JoinHandle<u64> {
        let mut proposals = std::mem::replace(&mut self.proposals, mpsc::unbounded_channel().1);
        let wait = self.wait.clone();
        tokio::spawn(async move {
            let mut applied = 0;
            while let Some(data) = proposals.recv().await {
                let request = MemRequest::decode(&data).expect("a MemRequest");
                // Payloads starting with "legacy:" carry their wait ID after the colon.
                let id = match request.payload.strip_prefix(b"legacy:") {
                    Some(id) => std::str::from_utf8(id).unwrap().parse().unwrap(),
                    None => request.header.id,
                };
                wait.trigger(id, request);
                applied += 1;
            }
            applied
        })
    }
}

pub(crate) const ELECTION: Duration = Duration::from_secs(1);
