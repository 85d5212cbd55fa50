use cairn_proposal::memory::MemRequest;
use cairn_proposal::{Config, DEFAULT_MAX_GAP, DEFAULT_MAX_REQUEST_BYTES, Error, Header};

use crate::support::{FIRST_ID, harness};

#[tokio::test(start_paused = true)]
async fn a_request_is_stamped_proposed_and_answered() {
    let mut h = harness(Config::default());
    h.spawn_applier();
    let applied = h.gate.propose(MemRequest::new("put a=1"), &[("token", "alice-token")]).await.unwrap();
    assert_eq!(applied.header, Header { id: FIRST_ID, username: "alice".into(), auth_revision: 7 });
    assert_eq!(applied.payload, b"put a=1");
    let anonymous = h.gate.propose(MemRequest::new("put b=2"), &[]).await.unwrap();
    assert_eq!(anonymous.header, Header { id: FIRST_ID + 1, username: String::new(), auth_revision: 0 });
    assert!(h.wait.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_gap_is_checked_first_and_priority_requests_get_twice_it() {
    let mut h = harness(Config::default());
    h.spawn_applier();
    h.indexes.set_applied(100);
    h.indexes.set_committed(100 + DEFAULT_MAX_GAP);
    assert!(h.gate.propose(MemRequest::new("at the gap"), &[]).await.is_ok());
    h.indexes.set_committed(100 + DEFAULT_MAX_GAP + 1);
    assert_eq!(h.gate.propose(MemRequest::new("past it"), &[]).await.unwrap_err(), Error::TooManyRequests);

    let priority = |payload: &str| MemRequest { priority: true, ..MemRequest::new(payload) };
    assert!(h.gate.propose(priority("priority within twice"), &[]).await.is_ok());
    h.indexes.set_committed(100 + 2 * DEFAULT_MAX_GAP);
    assert!(h.gate.propose(priority("priority at twice"), &[]).await.is_ok());
    h.indexes.set_committed(100 + 2 * DEFAULT_MAX_GAP + 1);
    assert_eq!(h.gate.propose(priority("past twice"), &[]).await.unwrap_err(), Error::TooManyRequests);

    // Over the gap and too large and with a bad token: the gap wins, before an ID is
    // drawn.
    let huge = MemRequest::new(vec![0u8; DEFAULT_MAX_REQUEST_BYTES + 1]);
    assert_eq!(h.gate.propose(huge, &[("token", "forged")]).await.unwrap_err(), Error::TooManyRequests);
    h.indexes.set_committed(100);
    let next = h.gate.propose(MemRequest::new("after"), &[]).await.unwrap();
    assert_eq!(next.header.id, FIRST_ID + 3, "refused requests drew no ID");
    assert!(h.wait.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_gap_is_configurable() {
    let mut h = harness(Config { max_gap: 3, ..Config::default() });
    h.spawn_applier();
    h.indexes.set_committed(13);
    assert!(h.gate.propose(MemRequest::new("at"), &[]).await.is_ok());
    h.indexes.set_committed(14);
    assert_eq!(h.gate.propose(MemRequest::new("past"), &[]).await.unwrap_err(), Error::TooManyRequests);
}

#[tokio::test(start_paused = true)]
async fn an_invalid_token_fails_at_stamping_but_authenticate_skips_it() {
    let mut h = harness(Config::default());
    h.spawn_applier();
    let error = h.gate.propose(MemRequest::new("x"), &[("token", "forged")]).await.unwrap_err();
    assert_eq!(error, Error::Auth(cairn_auth::Error::InvalidAuthToken));
    assert_eq!(error.to_string(), "etcdserver: invalid auth token");
    assert_eq!(error.grpc_code(), 16);

    let login = MemRequest { authenticate: true, ..MemRequest::new("authenticate alice") };
    let applied = h.gate.propose(login, &[("token", "forged")]).await.unwrap();
    assert_eq!(applied.header.username, "", "an Authenticate request carries no caller identity");
    assert_eq!(applied.header.id, FIRST_ID + 1);
    assert!(h.wait.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_size_limit_counts_the_whole_encoded_request() {
    // The encoding is a 20-byte header, the user name, then the payload.
    let limit = 100;
    let mut h = harness(Config { max_request_bytes: limit, ..Config::default() });
    h.spawn_applier();
    assert!(h.gate.propose(MemRequest::new(vec![7u8; 80]), &[]).await.is_ok(), "exactly at the limit");
    let error = h.gate.propose(MemRequest::new(vec![7u8; 81]), &[]).await.unwrap_err();
    assert_eq!(error, Error::RequestTooLarge { size: 101, limit });
    assert_eq!(error.to_string(), "etcdserver: request is too large");
    assert_eq!(error.grpc_code(), 3);
    // The caller's name counts too: "alice" makes 80 bytes of payload too many.
    let error =
        h.gate.propose(MemRequest::new(vec![7u8; 80]), &[("token", "alice-token")]).await.unwrap_err();
    assert_eq!(error, Error::RequestTooLarge { size: 105, limit });
    assert!(h.wait.is_empty());
    assert_eq!(Config::default().max_request_bytes, 1_572_864);
}

#[tokio::test(start_paused = true)]
async fn the_waiter_is_registered_under_the_legacy_id_when_there_is_one() {
    let mut h = harness(Config::default());
    h.spawn_applier();
    let request = MemRequest { legacy_id: 4242, ..MemRequest::new("legacy:4242") };
    let applied = h.gate.propose(request, &[]).await.unwrap();
    assert_eq!(applied.header.id, FIRST_ID);
    assert!(h.wait.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_duplicate_request_id_is_refused_and_the_first_still_completes() {
    let mut h = harness(Config::default());
    let first = {
        let gate = h.gate.clone();
        tokio::spawn(async move {
            gate.propose(MemRequest { legacy_id: 9, ..MemRequest::new("legacy:9") }, &[]).await
        })
    };
    while !h.wait.is_registered(9) {
        tokio::task::yield_now().await;
    }
    let second = h.gate.propose(MemRequest { legacy_id: 9, ..MemRequest::new("legacy:9") }, &[]).await;
    assert_eq!(second.unwrap_err(), Error::DuplicateRequestId(9));
    h.spawn_applier();
    assert!(first.await.unwrap().is_ok());
    assert!(h.wait.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_refused_proposal_fails_with_the_proposers_error() {
    let h = harness(Config::default());
    h.proposer.set_mode(cairn_proposal::memory::ProposerMode::Fail(Error::ProposalDropped));
    let error = h.gate.propose(MemRequest::new("x"), &[]).await.unwrap_err();
    assert_eq!(error, Error::ProposalDropped);
    assert_eq!(error.grpc_code(), 14);
    assert!(h.wait.is_empty());
}
