//! The hostile world: clients on followers, leaders cut off from the majority,
//! watchers that fall behind a compaction, callers without permission.

use std::time::Duration;

use etcd_client::{Client, GetOptions, PutOptions};
use tokio::time::Instant;

use crate::support::{Cluster, until_ok};

/// Whether `key` is on the member at `endpoint`, read locally.
async fn holds(endpoint: &str, key: &str) -> bool {
    let Ok(mut client) = Client::connect([endpoint], None).await else { return false };
    let options = GetOptions::new().with_serializable();
    client.get(key, Some(options)).await.is_ok_and(|found| found.count() == 1)
}

/// Keeps `lease` alive through `client` every `every` until `until`, checking after
/// each answer that `key` is still on the member at `check` (read locally); a keep-alive
/// that fails (a leader election under way) is sent again on a new stream.
async fn keep_alive_until(
    client: &mut Client,
    lease: i64,
    every: Duration,
    until: Instant,
    check: &str,
    key: &str,
) {
    let mut stream = None;
    let mut ticks = tokio::time::interval(every);
    while Instant::now() < until {
        ticks.tick().await;
        if stream.is_none() {
            stream = client.lease_keep_alive(lease).await.ok();
        }
        let Some((keeper, responses)) = stream.as_mut() else { continue };
        let answered = match keeper.keep_alive().await {
            Ok(()) => responses.message().await,
            Err(error) => Err(error),
        };
        match answered {
            Ok(Some(response)) => assert!(response.ttl() > 0, "the lease was lost: {response:?}"),
            _ => stream = None,
        }
        assert!(holds(check, key).await, "{key} was deleted while its lease was kept alive");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_through_followers_reach_the_leader_even_across_its_death() {
    let fast = ["--heartbeat-interval=50", "--election-timeout=500"];
    let mut cluster = Cluster::start_with(3, &fast);
    let leader = cluster.leader().await;
    let mut client = cluster.client(leader).await;
    let lease = until_ok("a lease grant", || {
        let mut client = client.clone();
        async move { client.lease_grant(2, None).await }
    })
    .await
    .id();
    client.put("held", "v", Some(PutOptions::new().with_lease(lease))).await.unwrap();
    let followers: Vec<usize> = (0..3).filter(|&n| n != leader).collect();
    let ttl = Duration::from_secs(2);
    for (&through, &other) in followers.iter().zip(followers.iter().rev()) {
        // Three TTLs of keep-alives through this follower: the leader must see them.
        let mut follower = cluster.client(through).await;
        let until = Instant::now() + 3 * ttl;
        keep_alive_until(&mut follower, lease, ttl / 4, until, &cluster.endpoint(leader), "held").await;
        // The other follower reports the leader's remaining TTL, which runs down.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let seen = cluster.client(other).await.lease_time_to_live(lease, None).await.unwrap();
        assert_eq!(seen.granted_ttl(), 2);
        assert!(seen.ttl() <= 1, "a follower shows the leader's remaining TTL, not {}", seen.ttl());
    }

    // Keep-alives through a follower while the leader is killed: the new leader takes
    // the lease over and the key is never deleted.
    let through = followers[0];
    let mut follower = cluster.client(through).await;
    let until = Instant::now() + 3 * ttl;
    let check = cluster.endpoint(through);
    let keeping = keep_alive_until(&mut follower, lease, ttl / 4, until, &check, "held");
    let killing = async {
        tokio::time::sleep(ttl / 2).await;
        cluster.kill(leader);
    };
    tokio::join!(keeping, killing);
    assert!(holds(&cluster.endpoint(through), "held").await);
    assert!(holds(&cluster.endpoint(followers[1]), "held").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_majority_steps_down_and_keeps_no_lease_alive() {
    // etcd's default timing: an election timeout of one second.
    let election_timeout = Duration::from_secs(1);
    let (cluster, proxies) = Cluster::start_with_proxies(3, &[]).await;
    let leader = cluster.leader().await;
    let majority = (leader + 1) % 3;
    let mut client = cluster.client(leader).await;
    let lease = until_ok("a lease grant", || {
        let mut client = client.clone();
        async move { client.lease_grant(5, None).await }
    })
    .await
    .id();
    client.put("held", "v", Some(PutOptions::new().with_lease(lease))).await.unwrap();
    let (mut keeper, mut answers) = client.lease_keep_alive(lease).await.unwrap();
    let options = etcd_client::ConnectOptions::new().with_require_leader(true);
    let mut requiring = Client::connect([cluster.endpoint(leader)], Some(options)).await.unwrap();
    let mut watch = requiring.watch("w", None).await.unwrap();
    assert!(watch.message().await.unwrap().unwrap().created());

    proxies[leader].cut();
    let cut_at = Instant::now();
    // The client keeps the lease alive through the old leader every second; it may
    // count on the TTL of each answer from the moment it sent the keep-alive.
    let mut alive_until = cut_at + Duration::from_secs(5);
    let mut keep_alives_failed_at = None;
    let mut no_leader_at = None;
    let mut watch_cancelled_at = None;
    let mut watch_error = String::new();
    let deadline = cut_at + 4 * election_timeout;
    while Instant::now() < deadline
        && (keep_alives_failed_at.is_none() || no_leader_at.is_none() || watch_cancelled_at.is_none())
    {
        if keep_alives_failed_at.is_none() {
            let sent = Instant::now();
            let answer = match keeper.keep_alive().await {
                Ok(()) => tokio::time::timeout(Duration::from_millis(500), answers.message()).await,
                Err(error) => Ok(Err(error)),
            };
            match answer {
                Ok(Ok(Some(response))) if response.ttl() > 0 => {
                    alive_until = sent + Duration::from_secs(response.ttl() as u64)
                }
                // No answer in time, an error, or the stream ended: the client can no
                // longer count on the lease.
                _ => keep_alives_failed_at = Some(Instant::now()),
            }
        }
        if no_leader_at.is_none() {
            let status = cluster.client(leader).await.status().await.unwrap();
            if status.leader() == 0 {
                no_leader_at = Some(Instant::now());
            }
        }
        if watch_cancelled_at.is_none()
            && let Ok(ended) = tokio::time::timeout(Duration::from_millis(100), watch.message()).await
        {
            watch_error = format!("{ended:?}");
            watch_cancelled_at = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = |at: Option<Instant>| at.map(|at| at - cut_at);
    eprintln!(
        "cut off: no leader after {:?}, keep-alives failing after {:?}, require-leader watch ended after {:?}",
        after(no_leader_at),
        after(keep_alives_failed_at),
        after(watch_cancelled_at)
    );
    let within = |at: Option<Instant>, limit: Duration| at.is_some_and(|at| at - cut_at <= limit);
    assert!(within(no_leader_at, 2 * election_timeout + Duration::from_millis(300)), "steps down");
    assert!(within(keep_alives_failed_at, 2 * election_timeout + Duration::from_millis(300)));
    assert!(within(watch_cancelled_at, 3 * election_timeout), "the watch asked for a leader");
    assert!(watch_error.contains("etcdserver: no leader"), "{watch_error}");
    // It takes no write, and serves only serializable reads of what it has.
    let refused = cluster.client(leader).await.put("from-minority", "v", None).await.unwrap_err();
    assert!(refused.to_string().contains("etcdserver:"), "{refused}");
    assert!(holds(&cluster.endpoint(leader), "held").await, "the old leader expires nothing");

    // The majority elects a new leader and, with nobody keeping the lease alive,
    // deletes its key: never before the TTL the client was last granted ran out.
    let mut majority_client = cluster.client(majority).await;
    loop {
        let found = majority_client.get("held", None).await;
        if found.is_ok_and(|found| found.count() == 0) {
            break;
        }
        assert!(Instant::now() < cut_at + Duration::from_secs(30), "the lease never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deleted_at = Instant::now();
    assert!(
        deleted_at >= alive_until,
        "the key went {:?} before the client's lease ran out",
        alive_until - deleted_at
    );

    proxies[leader].heal();
    until_ok("the members to agree again", || {
        let cluster = &cluster;
        async move {
            let (ours, theirs) = (cluster.contents(leader).await, cluster.contents(majority).await);
            let statuses = futures::future::join_all((0..3).map(|n| async move {
                cluster.client(n).await.status().await.map(|status| status.leader()).unwrap_or(0)
            }))
            .await;
            let one_leader = statuses[0] != 0 && statuses.iter().all(|&leader| leader == statuses[0]);
            if ours == theirs && one_leader { Ok(()) } else { Err("not yet") }
        }
    })
    .await;
}
