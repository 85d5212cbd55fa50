//! The proposal gate over its in-memory seams: a toy apply loop answers requests, and
//! the gate refuses, times out, cancels and stops the rest, each with one etcd error
//! and no waiter left behind. Time is paused, so the 7 s timeout takes no real time.
//!
//! Run with `cargo run -p cairn-proposal --example gate_in_memory`.

use std::sync::Arc;
use std::time::Duration;

use cairn_auth::AuthInfo;
use cairn_idgen::Generator;
use cairn_proposal::memory::{
    ChannelProposer, MemIndexes, MemLeadership, MemRequest, ProposerMode, StaticTokens,
};
use cairn_proposal::{Config, DEFAULT_MAX_GAP, DEFAULT_MAX_REQUEST_BYTES, Error, Gate, Parts};
use cairn_wait::Wait;
use tokio::time::Instant;

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let (proposer, mut proposals) = ChannelProposer::new();
    let proposer = Arc::new(proposer);
    let indexes = Arc::new(MemIndexes::new(0, 0));
    let leadership = Arc::new(MemLeadership::single(1, Instant::now()));
    let wait = Wait::new();
    let gate = Gate::new(
        Parts {
            proposer: Arc::clone(&proposer),
            indexes: Arc::clone(&indexes),
            leadership: Arc::clone(&leadership),
            auth: StaticTokens::default().with("alice-token", AuthInfo::new("alice", 7)),
            ids: Arc::new(Generator::new(1, 0x3456)),
            wait: wait.clone(),
        },
        Config::default(),
    );

    // The apply loop: commits and applies each proposal, then hands the decoded
    // request back to the caller waiting under its header ID.
    tokio::spawn({
        let (indexes, wait) = (Arc::clone(&indexes), wait.clone());
        async move {
            let mut index = 0;
            while let Some(data) = proposals.recv().await {
                index += 1;
                indexes.set_committed(index);
                indexes.set_applied(index);
                let request = MemRequest::decode(&data).expect("the gate proposes MemRequests");
                wait.trigger(request.header.id, request);
            }
        }
    });

    // A write with a token is stamped with an ID and the caller's identity.
    let applied = gate.propose(MemRequest::new("put a=1"), &[("token", "alice-token")]).await.unwrap();
    let header = &applied.header;
    println!(
        "applied {:?} as id {:#018x}, user {:?}, auth revision {}",
        String::from_utf8_lossy(&applied.payload),
        header.id,
        header.username,
        header.auth_revision
    );
    assert_eq!(
        (header.id, header.username.as_str(), header.auth_revision),
        (0x0001_0000_0034_5601, "alice", 7)
    );
    assert_eq!(applied.payload, b"put a=1");

    // Refusals before anything is proposed: a bad token, an oversized request, and
    // an apply loop more than 5000 entries behind commit.
    let mut errors = Vec::new();
    errors.push(("bad token", gate.propose(MemRequest::new("put b=2"), &[("token", "forged")]).await));
    let huge = MemRequest::new(vec![0; DEFAULT_MAX_REQUEST_BYTES + 1]);
    errors.push(("over 1.5 MiB", gate.propose(huge, &[]).await));
    indexes.set_committed(1 + DEFAULT_MAX_GAP + 1);
    errors.push(("apply lagging", gate.propose(MemRequest::new("put c=3"), &[]).await));
    indexes.set_committed(1);

    // Consensus stalls with no leader: the request times out after 5 s + 2 election
    // timeouts, and the error says why.
    proposer.set_mode(ProposerMode::Hang);
    leadership.set_leader(None, Instant::now());
    let started = Instant::now();
    errors.push(("no leader for 7 s", gate.propose(MemRequest::new("put d=4"), &[]).await));
    assert_eq!(started.elapsed(), Duration::from_secs(7));

    // The caller gives up first (a client cancelled its RPC, say).
    let cancel = tokio::time::sleep(Duration::from_millis(300));
    errors.push(("caller cancelled", gate.propose_with(MemRequest::new("put e=5"), &[], None, cancel).await));

    // Shutdown fails this request and every later one.
    gate.stop();
    errors.push(("after stop", gate.propose(MemRequest::new("put f=6"), &[]).await));

    let errors: Vec<Error> = errors
        .into_iter()
        .map(|(what, result)| {
            let error = result.expect_err("every one of these fails");
            println!("  {what:<18} {error} (gRPC code {})", error.grpc_code());
            error
        })
        .collect();
    let expected = [
        Error::Auth(cairn_auth::Error::InvalidAuthToken),
        Error::RequestTooLarge { size: DEFAULT_MAX_REQUEST_BYTES + 21, limit: DEFAULT_MAX_REQUEST_BYTES },
        Error::TooManyRequests,
        Error::NoLeader,
        Error::Canceled,
        Error::Stopped,
    ];
    assert_eq!(errors, expected);
    assert!(wait.is_empty(), "no path leaves a waiter behind");
    println!("waiters left: {}", wait.len());
}
