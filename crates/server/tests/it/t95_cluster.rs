use std::collections::BTreeMap;

use etcd_client::GetOptions;

use crate::support::{Cluster, free_port, http_get, until_ok};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_replicate_and_any_member_serves_reads_and_writes() {
    let cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    for writer in 0..3 {
        let mut client = cluster.client(writer).await;
        until_ok("a write through a member", || {
            let mut client = client.clone();
            async move { client.put(format!("from-m{writer}"), "v", None).await }
        })
        .await;
        client.put(format!("again-m{writer}"), "w", None).await.unwrap();
    }
    // Linearizable reads on every member see every write, wherever it was made.
    for reader in 0..3 {
        let mut client = cluster.client(reader).await;
        let got = client.get("", Some(GetOptions::new().with_all_keys())).await.unwrap();
        assert_eq!(got.count(), 6, "member m{reader} (leader m{leader}) sees all writes");
    }
    let mut client = cluster.client(0).await;
    let members = client.member_list().await.unwrap();
    let mut names: Vec<&str> = members.members().iter().map(|m| m.name()).collect();
    names.sort_unstable();
    assert_eq!(names, ["m0", "m1", "m2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    let mut acked = BTreeMap::new();
    let client = cluster.client(leader).await;
    for n in 0..20 {
        let key = format!("before/{n:02}");
        let response = until_ok("a write", || {
            let (mut client, key) = (client.clone(), key.clone());
            async move { client.put(key, "v", None).await }
        })
        .await;
        acked.insert(key, response.header().unwrap().revision());
    }

    cluster.kill(leader);
    let killed = tokio::time::Instant::now();
    let new_leader = cluster.leader().await;
    // About two election timeouts (1 s each by default): the followers notice the silence
    // within one randomized timeout (1 to 2 s), then pre-vote and vote.
    assert!(killed.elapsed() < std::time::Duration::from_secs(4), "a new leader took {:?}", killed.elapsed());
    assert_ne!(new_leader, leader);
    // The two others take writes through either of them.
    let survivor = (leader + 1) % 3;
    let client = cluster.client(survivor).await;
    for n in 0..20 {
        let key = format!("after/{n:02}");
        let response = until_ok("a write after the leader died", || {
            let (mut client, key) = (client.clone(), key.clone());
            async move { client.put(key, "v", None).await }
        })
        .await;
        acked.insert(key, response.header().unwrap().revision());
    }
    // The old leader comes back, catches up, and agrees on everything.
    cluster.restart(leader);
    for member in 0..3 {
        let client = cluster.client(member).await;
        let stored = until_ok("a linearizable read on every member", || {
            let mut client = client.clone();
            async move {
                let all = client.get("", Some(GetOptions::new().with_all_keys())).await?;
                Ok::<_, etcd_client::Error>(
                    all.kvs()
                        .iter()
                        .map(|kv| (kv.key_str().unwrap().to_owned(), kv.mod_revision()))
                        .collect::<BTreeMap<_, _>>(),
                )
            }
        })
        .await;
        assert_eq!(stored, acked, "member m{member} holds every acknowledged write at its revision");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_resume_without_gap_and_leases_outlive_a_leader_failover() {
    use etcd_client::WatchOptions;
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    let mut client = cluster.client(leader).await;
    let lease = until_ok("a lease grant", || {
        let mut client = client.clone();
        async move { client.lease_grant(10, None).await }
    })
    .await
    .id();
    client.put("leased", "v", Some(etcd_client::PutOptions::new().with_lease(lease))).await.unwrap();
    let start = client.put("w/0", "0", None).await.unwrap().header().unwrap().revision();

    // A watcher on the leader sees the first writes, then loses its member.
    let mut watch =
        client.watch("w/", Some(WatchOptions::new().with_prefix().with_start_revision(start))).await.unwrap();
    for n in 1..5 {
        client.put(format!("w/{n}"), n.to_string(), None).await.unwrap();
    }
    let mut seen: Vec<(String, i64)> = Vec::new();
    while seen.len() < 5 {
        let response = watch.message().await.unwrap().unwrap();
        for event in response.events() {
            let kv = event.kv().unwrap();
            seen.push((kv.key_str().unwrap().to_owned(), kv.mod_revision()));
        }
    }
    let (mut keeper, _) = client.lease_keep_alive(lease).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let renewed = tokio::time::Instant::now();
    cluster.kill(leader);

    // It resumes on a survivor from the revision after the last one it saw.
    let survivor = (leader + 1) % 3;
    let mut client = cluster.client(survivor).await;
    for n in 5..10 {
        until_ok("a write after failover", || {
            let mut client = client.clone();
            async move { client.put(format!("w/{n}"), n.to_string(), None).await }
        })
        .await;
    }
    let resume = seen.last().unwrap().1 + 1;
    let mut watch = client
        .watch("w/", Some(WatchOptions::new().with_prefix().with_start_revision(resume)))
        .await
        .unwrap();
    while seen.len() < 10 {
        let response = watch.message().await.unwrap().unwrap();
        for event in response.events() {
            let kv = event.kv().unwrap();
            seen.push((kv.key_str().unwrap().to_owned(), kv.mod_revision()));
        }
    }
    let keys: Vec<String> = seen.iter().map(|(key, _)| key.clone()).collect();
    assert_eq!(keys, (0..10).map(|n| format!("w/{n}")).collect::<Vec<_>>(), "no gap, no duplicate");
    assert!(seen.windows(2).all(|pair| pair[0].1 < pair[1].1));

    // The lease, renewed just before the failover, is alive until its TTL has passed
    // since the renewal: the new leader gave it its remaining TTL again.
    let alive_until = renewed + std::time::Duration::from_secs(9);
    assert!(tokio::time::Instant::now() < alive_until, "the failover took too long to check the lease");
    while tokio::time::Instant::now() < alive_until {
        let ttl = client.lease_time_to_live(lease, None).await.unwrap().ttl();
        assert!(ttl > 0, "the lease expired early, {:?} after its renewal", renewed.elapsed());
        assert_eq!(client.get("leased", None).await.unwrap().kvs().len(), 1, "its key is still there");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_the_compacted_log_catches_up_from_a_snapshot() {
    // Keep only 20 entries after each compaction, so that a member that misses 200
    // writes can only catch up from a snapshot of the state machine.
    let mut cluster = Cluster::start_with(3, &["--snapshot-count=20"]);
    let leader = cluster.leader().await;
    let lagging = (leader + 1) % 3;
    let client = cluster.client(leader).await;
    until_ok("a first write", || {
        let mut client = client.clone();
        async move { client.put("first", "v", None).await }
    })
    .await;
    cluster.kill(lagging);
    let mut client = cluster.client(leader).await;
    let lease = client.lease_grant(600, None).await.unwrap().id();
    for n in 0..200 {
        let options = (n % 10 == 0).then(|| etcd_client::PutOptions::new().with_lease(lease));
        client.put(format!("missed/{n:03}"), n.to_string(), options).await.unwrap();
    }
    client.delete("missed/199", None).await.unwrap();
    let revision = client.put("last", "v", None).await.unwrap().header().unwrap().revision();

    // etcd's own snapshot dir is not Cairn's to clear.
    let etcd_snap = cluster.dir.path().join(format!("m{lagging}")).join("member").join("snap");
    std::fs::create_dir_all(&etcd_snap).unwrap();
    std::fs::write(etcd_snap.join("db"), b"etcd's").unwrap();
    cluster.restart(lagging);
    let behind = cluster.client(lagging).await;
    let all = until_ok("the lagging member to catch up", || {
        let mut behind = behind.clone();
        async move { behind.get("missed/", Some(GetOptions::new().with_prefix().with_serializable())).await }
    });
    let all = all.await;
    let mut behind = behind;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut count = all.count();
    while count != 199 {
        assert!(tokio::time::Instant::now() < deadline, "caught up to {count} keys only");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        count = behind
            .get("missed/", Some(GetOptions::new().with_prefix().with_serializable()))
            .await
            .unwrap()
            .count();
    }
    let last = behind.get("last", Some(GetOptions::new().with_serializable())).await.unwrap();
    assert_eq!(last.kvs()[0].mod_revision(), revision, "the same revisions as the leader");
    // The snapshot came as a stream saved to a file, removed once restored.
    let snap_dir = cluster.dir.path().join(format!("m{lagging}")).join("member").join("cairn-snap");
    let left: Vec<_> = std::fs::read_dir(&snap_dir).expect("the snapshot dir").collect();
    assert!(left.is_empty(), "{left:?} left in {}", snap_dir.display());
    assert_eq!(std::fs::read(etcd_snap.join("db")).unwrap(), b"etcd's");
    // Leases came with the snapshot, attached keys included.
    let ttl = behind
        .lease_time_to_live(lease, Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(ttl.keys().len(), 20);
    // And it goes on replicating normally.
    client.put("after", "v", None).await.unwrap();
    until_ok("a linearizable read on the caught-up member", || {
        let mut behind = behind.clone();
        async move {
            let got = behind.get("after", None).await.map_err(|error| error.to_string())?;
            if got.kvs().len() == 1 { Ok(()) } else { Err("not yet".to_owned()) }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_auth_changes_hold_on_every_member() {
    use cairn_api::etcdserverpb::auth_client::AuthClient;
    use cairn_api::etcdserverpb::kv_client::KvClient;
    use cairn_api::etcdserverpb::{AuthenticateRequest, PutRequest, RangeRequest};
    use etcd_client::Permission;

    let cluster = Cluster::start(3);
    cluster.leader().await;
    // Users and grants through member 0.
    let mut admin = cluster.client(0).await;
    until_ok("auth setup", || {
        let mut admin = admin.clone();
        async move { admin.user_add("root", "root-pw", None).await }
    })
    .await;
    admin.user_grant_role("root", "root").await.unwrap();
    admin.user_add("alice", "alice-pw", None).await.unwrap();
    admin.role_add("app").await.unwrap();
    admin.role_grant_permission("app", Permission::read_write("/app/").with_prefix()).await.unwrap();
    admin.user_grant_role("alice", "app").await.unwrap();
    admin.auth_enable().await.unwrap();

    // A token issued through member 1 works on member 2.
    let mut auth = AuthClient::connect(cluster.endpoint(1)).await.unwrap();
    let token = auth
        .authenticate(AuthenticateRequest { name: "alice".into(), password: "alice-pw".into() })
        .await
        .unwrap()
        .into_inner()
        .token;
    let mut kv = KvClient::connect(cluster.endpoint(2)).await.unwrap();
    fn with<T>(token: &str, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("token", token.parse().unwrap());
        request
    }
    let with_token = |message: PutRequest| with(&token, message);
    kv.put(with_token(PutRequest { key: b"/app/x".to_vec(), value: b"1".to_vec(), ..Default::default() }))
        .await
        .unwrap();
    let denied = kv
        .put(with_token(PutRequest { key: b"/other".to_vec(), value: b"1".to_vec(), ..Default::default() }))
        .await;
    assert_eq!(denied.unwrap_err().message(), "etcdserver: permission denied");

    // A change made through member 0 is enforced on member 2 at once.
    let mut root = etcd_client::Client::connect(
        [cluster.endpoint(0)],
        Some(etcd_client::ConnectOptions::new().with_user("root", "root-pw")),
    )
    .await
    .unwrap();
    root.role_revoke_permission(
        "app",
        "/app/",
        Some(etcd_client::RoleRevokePermissionOptions::new().with_range_end("/app0")),
    )
    .await
    .unwrap();
    let read = kv.range(with(&token, RangeRequest { key: b"/app/x".to_vec(), ..Default::default() })).await;
    assert_eq!(read.unwrap_err().message(), "etcdserver: permission denied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_linearizable_reads_on_followers_never_wait_for_a_retry() {
    // Both followers run read-index rounds at once; were their contexts to collide,
    // the leader would drop one round and it would only be answered after a retry.
    let metrics: Vec<_> = (0..3).map(|_| free_port()).collect();
    let cluster = Cluster::start_each(3, |n| vec![format!("--listen-metrics-urls=http://{}", metrics[n])]);
    let leader = cluster.leader().await;
    let mut client = cluster.client(leader).await;
    client.put("k", "v", None).await.unwrap();
    let mut readers = Vec::new();
    for follower in (0..3).filter(|&n| n != leader) {
        for _ in 0..8 {
            let client = cluster.client(follower).await;
            readers.push(tokio::spawn(async move {
                let mut client = client;
                for _ in 0..50 {
                    let got = client.get("k", None).await.expect("a linearizable read");
                    assert_eq!(got.kvs()[0].value(), b"v");
                }
            }));
        }
    }
    for reader in readers {
        reader.await.unwrap();
    }
    for (n, addr) in metrics.iter().enumerate() {
        let (_, body) = http_get(*addr, "/metrics");
        let slow = body
            .lines()
            .find(|line| line.starts_with("etcd_server_slow_read_indexes_total"))
            .unwrap_or_else(|| panic!("no slow_read_indexes_total on m{n}:\n{body}"));
        assert_eq!(slow.rsplit(' ').next(), Some("0"), "m{n}: {slow}");
    }
}

/// etcd's `MoveLeader`: the leader hands over to the voter named and answers once it
/// leads; a follower, an unknown member and a learner are refused as etcd refuses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_leader_hands_leadership_to_the_member_named() {
    let cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    let target = (leader + 1) % 3;
    let follower = (leader + 2) % 3;
    let id = |n: usize| {
        let cluster = &cluster;
        async move { cluster.client(n).await.status().await.unwrap().header().unwrap().member_id() }
    };
    let target_id = id(target).await;

    let refused = cluster.client(follower).await.move_leader(target_id).await.unwrap_err();
    assert_eq!(
        crate::support::status(refused),
        (tonic::Code::FailedPrecondition, "etcdserver: not leader".to_owned())
    );
    let unknown = cluster.client(leader).await.move_leader(0x1234).await.unwrap_err();
    assert_eq!(
        crate::support::status(unknown),
        (tonic::Code::FailedPrecondition, "etcdserver: bad leader transferee".to_owned())
    );

    cluster.client(leader).await.move_leader(target_id).await.unwrap();
    // Answered once the target leads: every member agrees on it at once or soon after.
    let status = cluster.client(target).await.status().await.unwrap();
    assert_eq!(status.leader(), target_id);
    assert_eq!(cluster.leader().await, target);
    // Writes go on under the new leader.
    let client = cluster.client(follower).await;
    until_ok("a write after the move", || {
        let mut client = client.clone();
        async move { client.put("after-move", "v", None).await }
    })
    .await;
}

/// `v3lock` through followers, across a leader change: a locker waiting on a follower
/// keeps its place while the leader is killed, and gets the lock once the holder
/// unlocks through the other follower under the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_waiter_on_a_follower_gets_the_lock_across_a_leader_change() {
    use etcd_client::LockOptions;
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    let followers: Vec<usize> = (0..3).filter(|&n| n != leader).collect();
    let mut holder = cluster.client(followers[0]).await;
    let lease = holder.lease_grant(60, None).await.unwrap().id();
    let held = until_ok("the lock through a follower", || {
        let mut holder = holder.clone();
        async move { holder.lock("job", Some(LockOptions::new().with_lease(lease))).await }
    })
    .await;
    let mut waiter = cluster.client(followers[1]).await;
    let waiter_lease = waiter.lease_grant(60, None).await.unwrap().id();
    let waiting = tokio::spawn(async move {
        waiter.lock("job", Some(LockOptions::new().with_lease(waiter_lease))).await.map(|l| l.key().to_vec())
    });
    let mut reader = cluster.client(followers[0]).await;
    until_ok("the waiter's key", || {
        let mut reader = reader.clone();
        async move {
            let count = reader
                .get("job/", Some(GetOptions::new().with_prefix()))
                .await
                .map_err(|e| e.to_string())?
                .count();
            if count == 2 { Ok(()) } else { Err(format!("{count} keys")) }
        }
    })
    .await;

    cluster.kill(leader);
    assert!(!waiting.is_finished(), "the waiter still waits for the holder");
    until_ok("an unlock under the new leader", || {
        let mut holder = holder.clone();
        let key = held.key().to_vec();
        async move { holder.unlock(key).await }
    })
    .await;
    let got =
        tokio::time::timeout(std::time::Duration::from_secs(30), waiting).await.unwrap().unwrap().unwrap();
    assert_eq!(got, format!("job/{waiter_lease:x}").into_bytes());
    let left = reader.get("job/", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(left.count(), 1, "only the new holder's key is left");
}
