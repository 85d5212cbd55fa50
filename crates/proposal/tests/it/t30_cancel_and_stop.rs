use std::time::Duration;

use cairn_proposal::memory::{MemRequest, ProposerMode};
use cairn_proposal::{Config, Error};

use crate::support::harness;

#[tokio::test(start_paused = true)]
async fn the_callers_cancellation_ends_the_wait() {
    let h = harness(Config::default());
    let cancel = tokio::time::sleep(Duration::from_millis(300));
    let error = h.gate.propose_with(MemRequest::new("x"), &[], None, cancel).await.unwrap_err();
    assert_eq!(error, Error::Canceled);
    assert_eq!(error.to_string(), "etcdserver: request cancelled");
    assert_eq!(error.grpc_code(), 1);
    assert!(h.wait.is_empty());

    // Also while the proposal itself is still waiting for consensus.
    h.proposer.set_mode(ProposerMode::Hang);
    let cancel = tokio::time::sleep(Duration::from_millis(300));
    let error = h.gate.propose_with(MemRequest::new("x"), &[], None, cancel).await.unwrap_err();
    assert_eq!(error, Error::Canceled);
    assert!(h.wait.is_empty());
}

#[tokio::test(start_paused = true)]
async fn dropping_the_callers_future_leaves_no_waiter() {
    let h = harness(Config::default());
    let mut call = Box::pin(h.gate.propose(MemRequest::new("x"), &[]));
    assert!(futures::poll!(call.as_mut()).is_pending());
    assert_eq!(h.wait.len(), 1);
    drop(call);
    assert!(h.wait.is_empty());
}

#[tokio::test(start_paused = true)]
async fn stopping_fails_requests_in_flight_and_later_ones() {
    let h = harness(Config::default());
    let waiting = h.spawn_propose("applied never");
    h.proposer.set_mode(ProposerMode::Hang);
    let proposing = h.spawn_propose("proposed never");
    while h.wait.len() < 2 {
        tokio::task::yield_now().await;
    }
    h.gate.stop();
    for task in [waiting, proposing] {
        let error = task.await.unwrap().unwrap_err();
        assert_eq!(error, Error::Stopped);
        assert_eq!(error.to_string(), "etcdserver: server stopped");
        assert_eq!(error.grpc_code(), 14);
    }
    assert_eq!(h.gate.propose(MemRequest::new("after"), &[]).await.unwrap_err(), Error::Stopped);
    assert!(h.wait.is_empty());
}
