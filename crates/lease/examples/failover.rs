//! Two members' lessors across a leader change: the old leader grants and renews a
//! lease; the new one, which applied the same grant through raft but kept no expiry
//! times, takes over with an extension, so the lease outlives the TTL the client was
//! last granted, and then expires once nobody renews it.
//!
//! Run with `cargo run -p cairn-lease --example failover`.

use std::time::{Duration, Instant};

use cairn_lease::{Lessor, Renewal};

fn main() {
    let second = Duration::from_secs(1);
    let election_timeout = second;
    let t0 = Instant::now();
    let (mut old_leader, mut follower) = (Lessor::default(), Lessor::default());
    old_leader.promote(t0, Duration::ZERO);

    // Applied on every member, in the same order (through raft in a real server).
    for lessor in [&mut old_leader, &mut follower] {
        assert!(lessor.grant(42, 10, t0));
        lessor.attach(42, b"/services/api/1");
    }
    // Only the leader keeps expiry times and answers keep-alives.
    assert_eq!(follower.renew(42, t0 + 3 * second), Renewal::NotPrimary);
    assert_eq!(old_leader.renew(42, t0 + 3 * second), Renewal::Renewed(10));
    println!("t=3s: the client renewed lease 42 for 10 s through the leader");

    // The leader is cut off at t=4s; the follower is elected at t=6s.
    old_leader.demote();
    follower.promote(t0 + 6 * second, election_timeout);
    println!("t=6s: a new leader takes over, giving every lease its TTL again plus an election timeout");
    assert!(follower.take_expired(t0 + 13 * second, 100).is_empty());
    println!("t=13s: lease 42 is still alive (the client was promised until t=13s)");
    let expired = follower.take_expired(t0 + 18 * second, 100);
    assert_eq!(expired, [42]);
    let keys = follower.revoke(42).unwrap_or_default();
    println!("t=18s: lease 42 expired; revoking it deletes {:?}", String::from_utf8_lossy(&keys[0]));
}
