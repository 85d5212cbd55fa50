use std::time::Duration;

use cairn_proposal::memory::{MemLeadership, MemRequest, ProposerMode};
use cairn_proposal::{Config, Error};
use tokio::time::Instant;

use crate::support::{ELECTION, Harness, MEMBER, harness, harness_with};

/// Proposes a request nobody applies and returns its error and how long it took.
async fn time_out(h: &Harness) -> (Error, Duration) {
    let started = Instant::now();
    let error = h.gate.propose(MemRequest::new("never applied"), &[]).await.unwrap_err();
    (error, started.elapsed())
}

#[tokio::test(start_paused = true)]
async fn the_default_timeout_is_five_seconds_plus_two_elections() {
    assert_eq!(Config::default().request_timeout, Duration::from_secs(7));
    assert_eq!(
        Config::with_election_timeout(Duration::from_millis(500)).request_timeout,
        Duration::from_secs(6)
    );
    let h = harness(Config::default());
    tokio::time::advance(Duration::from_secs(3600)).await;
    let (error, took) = time_out(&h).await;
    assert_eq!(error, Error::Timeout);
    assert_eq!(error.to_string(), "etcdserver: request timed out");
    assert_eq!(error.grpc_code(), 14);
    assert_eq!(took, Duration::from_secs(7));
    assert!(h.wait.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_sooner_caller_deadline_wins_and_a_later_one_does_not() {
    let h = harness(Config::default());
    tokio::time::advance(Duration::from_secs(3600)).await;
    let started = Instant::now();
    let soon = Some(started + Duration::from_secs(2));
    let error =
        h.gate.propose_with(MemRequest::new("x"), &[], soon, std::future::pending()).await.unwrap_err();
    assert_eq!((error, started.elapsed()), (Error::Timeout, Duration::from_secs(2)));

    let started = Instant::now();
    let late = Some(started + Duration::from_secs(60));
    let error =
        h.gate.propose_with(MemRequest::new("x"), &[], late, std::future::pending()).await.unwrap_err();
    assert_eq!((error, started.elapsed()), (Error::Timeout, Duration::from_secs(7)));
    assert!(h.wait.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_proposal_made_while_the_previous_leader_failed_says_so() {
    let h = harness(Config::default());
    tokio::time::advance(Duration::from_secs(3600)).await;
    let request = h.spawn_propose("x");
    tokio::task::yield_now().await;
    // A new leader is elected one election timeout after the proposal: the proposal
    // fell in the window of two election timeouts before the election.
    tokio::time::advance(ELECTION).await;
    h.leadership.set_leader(Some(2), Instant::now());
    h.leadership.set_connected(2, Some(Instant::now()));
    let error = request.await.unwrap().unwrap_err();
    assert_eq!(error, Error::TimeoutDueToLeaderFail);
    assert_eq!(error.to_string(), "etcdserver: request timed out, possibly due to previous leader failure");
    assert!(h.wait.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_proposal_made_long_before_an_election_is_not_blamed_on_it() {
    let h = harness(Config::default());
    tokio::time::advance(Duration::from_secs(3600)).await;
    let request = h.spawn_propose("x");
    tokio::task::yield_now().await;
    // Elected more than two election timeouts after the proposal: the leader itself
    // was fine when it was made.
    tokio::time::advance(2 * ELECTION + Duration::from_millis(1)).await;
    h.leadership.set_leader(Some(MEMBER), Instant::now());
    assert_eq!(request.await.unwrap().unwrap_err(), Error::Timeout);
}

#[tokio::test(start_paused = true)]
async fn no_leader_is_reported_when_the_deadline_passes_without_one() {
    let h = harness(Config::default());
    tokio::time::advance(Duration::from_secs(3600)).await;
    h.leadership.set_leader(None, Instant::now());
    // Raft does not take proposals without a leader: the proposal itself hangs.
    h.proposer.set_mode(ProposerMode::Hang);
    let (error, took) = time_out(&h).await;
    assert_eq!(error, Error::NoLeader);
    assert_eq!(error.to_string(), "etcdserver: no leader");
    assert_eq!(took, Duration::from_secs(7));
    assert!(h.wait.is_empty());
}

/// Member 0x12 of a three-member cluster.
fn three_members() -> Harness {
    harness_with(Config::default(), MemLeadership::new(MEMBER, vec![MEMBER, 2, 3]))
}

#[tokio::test(start_paused = true)]
async fn a_leader_cut_off_from_its_quorum_reports_connection_lost() {
    let h = three_members();
    tokio::time::advance(Duration::from_secs(3600)).await;
    h.leadership.set_leader(Some(MEMBER), Instant::now() - Duration::from_secs(60));

    // No peer connected: only itself, 1 of 3.
    assert_eq!(time_out(&h).await.0, Error::TimeoutDueToConnectionLost);
    // One peer connected since before the proposal: 2 of 3 is a quorum.
    h.leadership.set_connected(2, Some(Instant::now() - Duration::from_secs(1)));
    assert_eq!(time_out(&h).await.0, Error::Timeout);
    // A peer connected only since the proposal started does not count.
    h.leadership.set_connected(2, Some(Instant::now()));
    let error = time_out(&h).await.0;
    assert_eq!(error, Error::TimeoutDueToConnectionLost);
    assert_eq!(error.to_string(), "etcdserver: request timed out, possibly due to connection lost");
    assert!(h.wait.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_follower_cut_off_from_the_leader_reports_connection_lost() {
    let h = three_members();
    tokio::time::advance(Duration::from_secs(3600)).await;
    h.leadership.set_leader(Some(2), Instant::now() - Duration::from_secs(60));
    assert_eq!(time_out(&h).await.0, Error::TimeoutDueToConnectionLost, "leader not connected");
    h.leadership.set_connected(3, Some(Instant::now() - Duration::from_secs(60)));
    assert_eq!(time_out(&h).await.0, Error::TimeoutDueToConnectionLost, "another peer does not count");
    h.leadership.set_connected(2, Some(Instant::now() - Duration::from_secs(60)));
    assert_eq!(time_out(&h).await.0, Error::Timeout, "leader connected all along");
}
