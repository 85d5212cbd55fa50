//! The hostile world: clients on followers, leaders cut off from the majority,
//! watchers that fall behind a compaction, callers without permission.

use std::time::Duration;

use cairn_api::etcdserverpb::{WatchCreateRequest, WatchResponse};
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
    // Three watchers of the cut-off member at once. The client keeps the lease alive
    // through it; it may count on the TTL of each answer from the moment it sent
    // the keep-alive.
    let deadline = cut_at + 4 * election_timeout;
    let keeping = async {
        let mut alive_until = cut_at + Duration::from_secs(5);
        while Instant::now() < deadline {
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
                _ => return (Some(Instant::now()), alive_until),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (None, alive_until)
    };
    let stepping_down = async {
        while Instant::now() < deadline {
            let status = cluster.client(leader).await.status().await.unwrap();
            if status.leader() == 0 {
                return Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    };
    let watching = async {
        match tokio::time::timeout_at(deadline, watch.message()).await {
            Ok(ended) => (Some(Instant::now()), format!("{ended:?}")),
            Err(_) => (None, String::new()),
        }
    };
    let ((keep_alives_failed_at, alive_until), no_leader_at, (watch_cancelled_at, watch_error)) =
        tokio::join!(keeping, stepping_down, watching);
    let after = |at: Option<Instant>| at.map(|at| at - cut_at);
    eprintln!(
        "cut off: no leader after {:?}, keep-alives failing after {:?}, require-leader watch ended after {:?}",
        after(no_leader_at),
        after(keep_alives_failed_at),
        after(watch_cancelled_at)
    );
    // Each limit is two election timeouts, plus a little for a loaded machine.
    let limit = 2 * election_timeout + Duration::from_millis(400);
    let within = |at: Option<Instant>| at.is_some_and(|at| at - cut_at <= limit);
    assert!(within(no_leader_at), "steps down");
    assert!(within(keep_alives_failed_at), "keep-alives fail");
    assert!(within(watch_cancelled_at), "the watch asked for a leader");
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

/// The revision after the last event in `responses`, checking that events run on
/// without a hole from `first`; and the compaction revision of a cancellation.
fn contiguous_from(first: i64, responses: &[WatchResponse]) -> (i64, Option<i64>) {
    let mut next = first;
    for response in responses {
        if response.canceled {
            return (next, Some(response.compact_revision));
        }
        for event in &response.events {
            let revision = event.kv.as_ref().unwrap().mod_revision;
            assert_eq!(revision, next, "a hole in the history before revision {revision}");
            next += 1;
        }
    }
    (next, None)
}

/// A watch stream on `channel` (tonic, no client library reading ahead) that sends
/// `creates` and then stays open; with `one_frame_each`, each in an HTTP/2 DATA
/// frame of its own, as a Go client sends them (tonic packs messages that are ready
/// together into one frame).
async fn raw_watch(
    channel: tonic::transport::Channel,
    creates: Vec<WatchCreateRequest>,
    one_frame_each: bool,
) -> tonic::Streaming<WatchResponse> {
    use cairn_api::etcdserverpb::watch_client::WatchClient;
    use cairn_api::etcdserverpb::watch_request::RequestUnion;
    let requests = creates.into_iter().map(|create| cairn_api::etcdserverpb::WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(create)),
    });
    let outgoing = futures::stream::unfold(requests, move |mut requests| async move {
        if one_frame_each {
            tokio::task::yield_now().await;
        }
        match requests.next() {
            Some(request) => Some((request, requests)),
            None => std::future::pending().await,
        }
    });
    WatchClient::new(channel).watch(outgoing).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_behind_a_compaction_is_cancelled_never_given_a_history_with_holes() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = crate::support::Cairn::start(dir.path(), &[]);
    let mut writer = cairn.client().await;
    let start = writer.put("w/0", "", None).await.unwrap().header().unwrap().revision() + 1;
    // A client that reads nothing for a while, with small HTTP/2 windows, so that
    // the server soon has to stop sending to it (client libraries read ahead).
    let channel = tonic::transport::Endpoint::from_shared(cairn.endpoint())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let create = WatchCreateRequest {
        key: b"w/".to_vec(),
        range_end: b"w0".to_vec(),
        start_revision: start,
        ..Default::default()
    };
    let mut watch = raw_watch(channel, vec![create], false).await;
    assert!(watch.message().await.unwrap().unwrap().created);
    // 6,000 revisions of puts and deletes (more than the live feed holds) go by and
    // are compacted away while the client reads nothing.
    let value = "v".repeat(4096);
    let mut last = 0;
    for n in 0..3000 {
        writer.put(format!("w/{}", n % 10), value.as_str(), None).await.unwrap();
        last = writer.delete(format!("w/{}", n % 10), None).await.unwrap().header().unwrap().revision();
    }
    writer.compact(last, Some(etcd_client::CompactionOptions::new().with_physical())).await.unwrap();
    writer.put("w/after", "", None).await.unwrap();

    let mut responses = Vec::new();
    loop {
        let response = tokio::time::timeout(Duration::from_secs(30), watch.message())
            .await
            .unwrap_or_else(|_| panic!("no answer after {:?}", contiguous_from(start, &responses)))
            .unwrap()
            .expect("the stream stays open");
        let canceled = response.canceled;
        responses.push(response);
        if canceled {
            break;
        }
    }
    let (next, compacted) = contiguous_from(start, &responses);
    assert_eq!(compacted, Some(last), "cancelled with the compaction revision");
    assert!(next < last, "the watcher fell behind the compaction (got through {next})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_keeps_up_sees_every_put_and_delete_across_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = crate::support::Cairn::start(dir.path(), &[]);
    let mut client = cairn.client().await;
    let start = client.put("k/0", "", None).await.unwrap().header().unwrap().revision() + 1;
    let mut watch = client
        .watch("k/", Some(etcd_client::WatchOptions::new().with_prefix().with_start_revision(start)))
        .await
        .unwrap();
    assert!(watch.message().await.unwrap().unwrap().created());
    let mut writer = cairn.client().await;
    let mut expected = Vec::new();
    let mut responses = Vec::new();
    for n in 0..200 {
        let key = format!("k/{}", n % 7);
        let put = writer.put(key.as_str(), n.to_string(), None).await.unwrap().header().unwrap().revision();
        expected.push((put, etcd_client::EventType::Put));
        let deleted = writer.delete(key.as_str(), None).await.unwrap().header().unwrap().revision();
        expected.push((deleted, etcd_client::EventType::Delete));
        if n % 20 == 19 {
            writer.compact(deleted, None).await.unwrap();
        }
        // The reader keeps up.
        while let Ok(Some(response)) =
            tokio::time::timeout(Duration::from_millis(1), watch.message()).await.map(Result::unwrap)
        {
            responses.push(response);
        }
    }
    while responses.iter().map(|response| response.events().len()).sum::<usize>() < expected.len() {
        let response = tokio::time::timeout(Duration::from_secs(10), watch.message()).await.unwrap();
        responses.push(response.unwrap().unwrap());
    }
    assert!(responses.iter().all(|response| !response.canceled()));
    let seen: Vec<(i64, etcd_client::EventType)> = responses
        .iter()
        .flat_map(|response| response.events())
        .map(|event| (event.kv().unwrap().mod_revision(), event.event_type()))
        .collect();
    assert_eq!(seen, expected);
}

/// Turns auth on with root and alice (read-write on `/app/`), and connects as each.
async fn root_and_alice(cairn: &crate::support::Cairn) -> (Client, Client) {
    use etcd_client::{ConnectOptions, Permission};
    let mut setup = cairn.client().await;
    setup.user_add("root", "rootpw", None).await.unwrap();
    setup.user_grant_role("root", "root").await.unwrap();
    setup.user_add("alice", "alicepw", None).await.unwrap();
    setup.role_add("app").await.unwrap();
    setup.role_grant_permission("app", Permission::read_write("/app/").with_prefix()).await.unwrap();
    setup.user_grant_role("alice", "app").await.unwrap();
    setup.auth_enable().await.unwrap();
    let connect = |user: &str, password: &str| {
        let options = ConnectOptions::new().with_user(user, password);
        Client::connect([cairn.endpoint()], Some(options))
    };
    (connect("root", "rootpw").await.unwrap(), connect("alice", "alicepw").await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_revocation_and_keys_need_permission_on_every_attached_key() {
    use etcd_client::LeaseTimeToLiveOptions;
    use tonic::Code;
    let dir = tempfile::tempdir().unwrap();
    let cairn = crate::support::Cairn::start(dir.path(), &[]);
    let (mut root, mut alice) = root_and_alice(&cairn).await;
    let mut anonymous = cairn.client().await;
    let status = crate::support::status;

    let lease = root.lease_grant(600, None).await.unwrap().id();
    root.put("secret", "s", Some(PutOptions::new().with_lease(lease))).await.unwrap();
    root.put("/app/a", "a", Some(PutOptions::new().with_lease(lease))).await.unwrap();
    let denied = (Code::PermissionDenied, "etcdserver: permission denied".to_owned());
    // Revoking would delete `secret`, which alice cannot write.
    assert_eq!(status(alice.lease_revoke(lease).await.unwrap_err()), denied);
    assert_eq!(
        status(anonymous.lease_revoke(lease).await.unwrap_err()),
        (Code::InvalidArgument, "etcdserver: user name is empty".to_owned())
    );
    // Nor may she attach her key to it, or list its keys (CVE-2023-32082).
    let attach = alice.put("/app/b", "b", Some(PutOptions::new().with_lease(lease))).await;
    assert_eq!(status(attach.unwrap_err()), denied);
    let keys = Some(LeaseTimeToLiveOptions::new().with_keys());
    assert_eq!(status(alice.lease_time_to_live(lease, keys.clone()).await.unwrap_err()), denied);
    assert_eq!(alice.lease_time_to_live(lease, None).await.unwrap().granted_ttl(), 600);
    assert_eq!(root.lease_time_to_live(lease, keys).await.unwrap().keys().len(), 2);
    assert_eq!(root.get("secret", None).await.unwrap().count(), 1, "nothing was revoked");
    // Her own lease on her own keys is hers to revoke; root revokes any.
    let own = alice.lease_grant(600, None).await.unwrap().id();
    alice.put("/app/c", "c", Some(PutOptions::new().with_lease(own))).await.unwrap();
    alice.lease_revoke(own).await.unwrap();
    root.lease_revoke(lease).await.unwrap();
    assert_eq!(root.get("secret", None).await.unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_of_over_a_hundred_thousand_leases_are_written_in_batches() {
    // 110,000 checkpoints in one proposal would pass the 1.5 MiB request limit.
    const LEASES: usize = 110_000;
    let dir = tempfile::tempdir().unwrap();
    let cairn = crate::support::Cairn::start(dir.path(), &["--experimental-lease-checkpoint-interval=1s"]);
    let client = cairn.client().await;
    let granting = tokio::time::Instant::now();
    let granters: Vec<_> = (0..64)
        .map(|n| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in (n..LEASES).step_by(64) {
                    ids.push(client.lease_grant(3600, None).await.unwrap().id());
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for granter in granters {
        ids.extend(granter.await.unwrap());
    }
    assert_eq!(ids.len(), LEASES);
    let sample = [ids[0], ids[LEASES / 2], ids[LEASES - 1]];
    // Once a full checkpoint (100 proposals of 1,000) is written, a restart resumes
    // every lease from its checkpointed remainder, not its full TTL.
    let mut cairn = cairn;
    for attempt in 1.. {
        // Nothing outside shows a lessor's checkpointed remainders but a restart. A
        // remainder is recorded once it is a whole second below the TTL, a restart
        // adds an election timeout to it, and a full round of 110 proposals takes a
        // while on a loaded debug build: give each try several rounds.
        tokio::time::sleep(Duration::from_secs(8)).await;
        cairn = cairn.kill_and_restart();
        let client = cairn.client().await;
        let mut ttls = Vec::new();
        for &id in &sample {
            let ttl = until_ok("a TTL after the restart", || {
                let mut client = client.clone();
                async move { client.lease_time_to_live(id, None).await }
            })
            .await;
            ttls.push(ttl.ttl());
        }
        // Resumed from the remainder plus an election timeout (1 s), not the full
        // TTL, which would read 3599 after the restart; and no lower than the TTL less
        // the time since the first grant (a loaded debug build takes minutes to grant
        // them all).
        let oldest = 3600 - granting.elapsed().as_secs() as i64 - 2;
        if ttls.iter().all(|&ttl| ttl < 3599 && ttl >= oldest) {
            break;
        }
        assert!(attempt < 4, "no checkpoint was written: TTLs {ttls:?} after a restart (at least {oldest})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_watchers_created_back_to_back_on_one_stream_each_get_their_event() {
    const WATCHERS: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let cairn = crate::support::Cairn::start(dir.path(), &[]);
    let channel = tonic::transport::Endpoint::from_shared(cairn.endpoint()).unwrap().connect().await.unwrap();
    // Every create leaves back to back in a frame of its own, as a Go client
    // multiplexing its watches sends them.
    let create = WatchCreateRequest { key: b"burst".to_vec(), ..Default::default() };
    let mut watch = raw_watch(channel.clone(), vec![create; WATCHERS], true).await;
    let mut created = std::collections::HashSet::new();
    while created.len() < WATCHERS {
        let response = tokio::time::timeout(Duration::from_secs(30), watch.message())
            .await
            .unwrap_or_else(|_| panic!("{} watchers created in time", created.len()))
            .unwrap_or_else(|status| panic!("the stream failed after {} creates: {status}", created.len()))
            .expect("the stream stays open");
        assert!(response.created && !response.canceled, "{response:?}");
        created.insert(response.watch_id);
    }
    let mut writer = cairn.client().await;
    let revision = writer.put("burst", "now", None).await.unwrap().header().unwrap().revision();
    let mut notified = std::collections::HashSet::new();
    while notified.len() < WATCHERS {
        let response = tokio::time::timeout(Duration::from_secs(30), watch.message())
            .await
            .unwrap_or_else(|_| panic!("{} watchers got their event in time", notified.len()))
            .unwrap()
            .expect("the stream stays open");
        assert_eq!(response.events.len(), 1);
        assert_eq!(response.events[0].kv.as_ref().unwrap().mod_revision, revision);
        assert!(notified.insert(response.watch_id), "one event per watcher");
    }
    assert_eq!(notified, created);
    // The connection the stream shares is still up.
    let mut kv = cairn_api::etcdserverpb::kv_client::KvClient::new(channel);
    let range = cairn_api::etcdserverpb::RangeRequest { key: b"burst".to_vec(), ..Default::default() };
    assert_eq!(kv.range(range).await.unwrap().into_inner().count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_asks_for_fragments_gets_a_large_revision_in_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = crate::support::Cairn::start(dir.path(), &[]);
    let mut writer = cairn.client().await;
    let value = "v".repeat(700 * 1024);
    for key in ["f/1", "f/2", "f/3"] {
        writer.put(key, value.as_str(), None).await.unwrap();
    }
    let channel = tonic::transport::Endpoint::from_shared(cairn.endpoint()).unwrap().connect().await.unwrap();
    let creates = [true, false]
        .map(|fragment| WatchCreateRequest {
            key: b"f/".to_vec(),
            range_end: b"f0".to_vec(),
            prev_kv: true,
            fragment,
            ..Default::default()
        })
        .to_vec();
    let mut watch = raw_watch(channel, creates, false).await;
    for _ in 0..2 {
        assert!(watch.message().await.unwrap().unwrap().created);
    }
    // One revision deletes all three, each event carrying its 700 KiB previous value:
    // 2.1 MiB, over the 2 MiB (request limit plus gRPC overhead) a fragment may hold.
    writer.delete("f/", Some(etcd_client::DeleteOptions::new().with_prefix())).await.unwrap();
    let (mut fragmented, mut whole) = (Vec::new(), Vec::new());
    while whole.is_empty() || fragmented.last().is_none_or(|last: &WatchResponse| last.fragment) {
        let response = watch.message().await.unwrap().unwrap();
        if response.watch_id == 0 { fragmented.push(response) } else { whole.push(response) }
    }
    let shape: Vec<(usize, bool)> =
        fragmented.iter().map(|part| (part.events.len(), part.fragment)).collect();
    assert_eq!(shape, [(2, true), (1, false)]);
    assert_eq!(whole.len(), 1);
    assert_eq!(whole[0].events.len(), 3);
    assert!(!whole[0].fragment);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_racing_auth_changes_are_retried_by_the_server_not_refused_as_stale() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = crate::support::Cairn::start(dir.path(), &[]);
    let (mut root, alice) = root_and_alice(&cairn).await;
    // Root changes the auth store (each change a new auth revision) while alice's
    // writes are between their stamp and their apply.
    let changing = async move {
        for n in 0..60 {
            root.user_add(format!("u{n}"), "pw", None).await.unwrap();
            root.user_delete(format!("u{n}")).await.unwrap();
        }
    };
    let writers = (0..4).map(|w| {
        let mut alice = alice.clone();
        async move {
            let mut refused = Vec::new();
            for n in 0..150 {
                if let Err(error) = alice.put(format!("/app/{w}/{n}"), "v", None).await {
                    refused.push(error.to_string());
                }
            }
            refused
        }
    });
    let (_, refused) = tokio::join!(changing, futures::future::join_all(writers));
    let refused: Vec<String> = refused.into_iter().flatten().collect();
    assert!(refused.is_empty(), "{} writes refused, first: {:?}", refused.len(), refused.first());
}

/// The newest WAL segment of a member's data dir, and where its valid records end
/// (records are `[length u32 LE][crc u32][body]`, the log ends at a zero length).
fn newest_segment(data_dir: &std::path::Path) -> (std::path::PathBuf, usize) {
    let wal = data_dir.join("member").join("wal");
    let mut segments: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .collect();
    segments.sort();
    let newest = segments.pop().unwrap();
    let bytes = std::fs::read(&newest).unwrap();
    let mut end = 0;
    while let Some(header) = bytes.get(end..end + 8) {
        let length = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
        if length == 0 {
            break;
        }
        end += 8 + length;
    }
    (newest, end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_wal_byte_is_refused_and_a_torn_tail_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = crate::support::Cairn::start(dir.path(), &[]);
    let mut client = cairn.client().await;
    for n in 0..2000 {
        client.put(format!("k/{n:04}"), format!("value {n}"), None).await.unwrap();
    }
    let (data_dir, _, args) = cairn.kill();
    let (segment, end) = newest_segment(&data_dir);
    let original = std::fs::read(&segment).unwrap();

    // A torn write after the last acknowledged record: a record's header and the
    // start of its body, the rest never written.
    let mut torn = original.clone();
    torn.resize(torn.len().max(end + 108), 0);
    let partial: Vec<u8> = [300u32.to_le_bytes(), 0xdead_beef_u32.to_le_bytes()].concat();
    torn[end..end + 8].copy_from_slice(&partial);
    torn[end + 8..end + 108].fill(0xab);
    std::fs::write(&segment, &torn).unwrap();
    let cairn = crate::support::Cairn::start(&data_dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let all = cairn.client().await.get("k/", Some(GetOptions::new().with_prefix().with_count_only())).await;
    assert_eq!(all.unwrap().count(), 2000, "every acknowledged key survives a torn tail");
    let (data_dir, _, args) = cairn.kill();

    // One flipped byte in the middle of the newest segment: refused, never half-read.
    let (segment, end) = newest_segment(&data_dir);
    let mut flipped = std::fs::read(&segment).unwrap();
    let at = end / 2;
    flipped[at] ^= 0x01;
    std::fs::write(&segment, &flipped).unwrap();
    let (status, stderr) = crate::support::start_refused(&data_dir, &args);
    assert!(!status.success());
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("corrupt write-ahead log"), "{stderr}");
    assert!(stderr.contains(&format!("segment {}, record at offset", segment.display())), "{stderr}");
    assert_eq!(std::fs::read(&segment).unwrap(), flipped, "the log is left as it was found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_member_loudly_and_the_restart_has_every_acknowledged_write() {
    let disk = crate::support::SmallDisk::mount(24);
    let data_dir = disk.path.join("data");
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("cairn.log");
    // No low-water mark: the disk really fills, as when something else fills it.
    let cairn = crate::support::Cairn::start_logged(&data_dir, &["--disk-low-water-bytes=0"], &log);
    let mut client = cairn.client().await;
    let value = "v".repeat(64 * 1024);
    let mut acked = Vec::new();
    for n in 0..10_000 {
        let key = format!("k/{n:05}");
        match client.put(key.as_str(), value.as_str(), None).await {
            Ok(_) => acked.push(key),
            Err(_) => break,
        }
    }
    assert!(acked.len() > 50, "the disk held only {} writes", acked.len());
    // The member stops by itself, saying why, instead of staying up unable to write.
    let status = cairn.wait_for_exit();
    assert!(!status.success());
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(stderr.contains("storage failed: stopping the member"), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // With room again, it starts with everything it acknowledged.
    disk.resize(96);
    let cairn = crate::support::Cairn::start(&data_dir, &["--disk-low-water-bytes=0"]);
    let mut client = cairn.client().await;
    let found = client.get("k/", Some(GetOptions::new().with_prefix().with_keys_only())).await.unwrap();
    let found: std::collections::HashSet<String> =
        found.kvs().iter().map(|kv| kv.key_str().unwrap().to_owned()).collect();
    let lost: Vec<&String> = acked.iter().filter(|key| !found.contains(*key)).collect();
    assert!(lost.is_empty(), "{} acknowledged writes lost, first {:?}", lost.len(), lost.first());
    client.put("after", "v", None).await.unwrap();
}

#[test]
fn membership_changes_need_the_root_role_when_auth_is_on() {
    use crate::support::{error_line, etcdctl, stdout};
    let dir = tempfile::tempdir().unwrap();
    let cairn = crate::support::Cairn::start(dir.path(), &[]);
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "alice:alicepw"],
        &["auth", "enable"],
    ] {
        stdout(&etcdctl(&cairn, args));
    }
    let add = ["member", "add", "evil", "--peer-urls=http://127.0.0.1:27999", "--learner"];
    assert_eq!(error_line(&etcdctl(&cairn, &add)), "Error: etcdserver: user name is empty");
    let as_alice: Vec<&str> = ["--user", "alice:alicepw"].iter().chain(&add).copied().collect();
    assert_eq!(error_line(&etcdctl(&cairn, &as_alice)), "Error: etcdserver: permission denied");
    let as_root: Vec<&str> = ["--user", "root:rootpw"].iter().chain(&add).copied().collect();
    let added = stdout(&etcdctl(&cairn, &as_root));
    let id = added.split_whitespace().nth(1).unwrap().to_owned();
    let update = ["member", "update", id.as_str(), "--peer-urls=http://127.0.0.1:27998"];
    for change in [&["member", "promote", id.as_str()][..], &["member", "remove", id.as_str()], &update] {
        assert_eq!(error_line(&etcdctl(&cairn, change)), "Error: etcdserver: user name is empty");
        let by_alice: Vec<&str> = ["--user", "alice:alicepw"].iter().chain(change).copied().collect();
        assert_eq!(error_line(&etcdctl(&cairn, &by_alice)), "Error: etcdserver: permission denied");
    }
    let remove: Vec<&str> = ["--user", "root:rootpw", "member", "remove", id.as_str()].to_vec();
    assert!(stdout(&etcdctl(&cairn, &remove)).contains("removed from cluster"));
}

#[test]
fn the_last_voter_is_never_removed() {
    use crate::support::{error_line, etcdctl, stdout};
    for strict in ["--strict-reconfig-check=true", "--strict-reconfig-check=false"] {
        let dir = tempfile::tempdir().unwrap();
        let cairn = crate::support::Cairn::start(dir.path(), &[strict]);
        let list = stdout(&etcdctl(&cairn, &["member", "list"]));
        let id = list.split(',').next().unwrap().to_owned();
        assert_eq!(
            error_line(&etcdctl(&cairn, &["member", "remove", &id])),
            "Error: etcdserver: re-configuration failed due to not enough started members"
        );
        assert_eq!(stdout(&etcdctl(&cairn, &["put", "still", "serving"])), "OK\n");
        // And after a restart, it still leads and serves.
        let cairn = cairn.kill_and_restart();
        assert_eq!(stdout(&etcdctl(&cairn, &["get", "still", "--print-value-only"])), "serving\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_that_would_endanger_the_quorum_are_refused() {
    use etcd_client::MemberAddOptions;
    let metrics: Vec<std::net::SocketAddr> = (0..3).map(|_| crate::support::free_port()).collect();
    let mut cluster = Cluster::start_each(3, |n| {
        vec![
            "--heartbeat-interval=50".to_owned(),
            "--election-timeout=500".to_owned(),
            format!("--listen-metrics-urls=http://{}", metrics[n]),
        ]
    });
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let mut client = cluster.client(leader).await;
    let learner_peer = crate::support::free_port();
    // A learner may join (once this member has been connected to a quorum for 5 s).
    let learner = until_ok("a learner's addition", || {
        let mut client = client.clone();
        let options = Some(MemberAddOptions::new().with_is_learner());
        async move { client.member_add([format!("http://{learner_peer}")], options).await }
    })
    .await;
    let learner = learner.member().unwrap().id();
    // A second one may not.
    let second = crate::support::free_port();
    let options = Some(MemberAddOptions::new().with_is_learner());
    let refused = client.member_add([format!("http://{second}")], options).await.unwrap_err();
    assert_eq!(
        crate::support::status(refused),
        (tonic::Code::FailedPrecondition, "etcdserver: too many learner members in cluster".into())
    );
    // The learner never started: it holds none of the log, so it is not promoted,
    // whether the leader or a follower (which asks the leader) is asked.
    for n in [leader, follower] {
        let refused = cluster.client(n).await.member_promote(learner).await.unwrap_err();
        assert_eq!(
            crate::support::status(refused),
            (
                tonic::Code::FailedPrecondition,
                "etcdserver: can only promote a learner member which is in sync with leader".into()
            )
        );
    }
    client.member_remove(learner).await.unwrap();

    // With one of three voters down, a fourth would need three of four to commit:
    // refused.
    let down = (leader + 2) % 3;
    let down_id = client
        .member_list()
        .await
        .unwrap()
        .members()
        .iter()
        .find(|m| m.name() == format!("m{down}"))
        .unwrap()
        .id();
    cluster.kill(down);
    // Once the leader has seen its connection to it drop (etcd's metric):
    let inactive = format!("etcd_network_active_peers{{Local=\"{:x}\",Remote=\"{down_id:x}\"}} 0", {
        client.status().await.unwrap().header().unwrap().member_id()
    });
    crate::support::eventually("the leader to see the member down", || {
        crate::support::http_get(metrics[leader], "/metrics").1.contains(&inactive)
    });
    let peer = crate::support::free_port();
    let refused = client.member_add([format!("http://{peer}")], None).await.unwrap_err();
    assert_eq!(
        crate::support::status(refused),
        (tonic::Code::Unavailable, "etcdserver: unhealthy cluster".into())
    );
    // The cluster goes on serving.
    until_ok("a write after the refusals", || {
        let mut client = client.clone();
        async move { client.put("after", "v", None).await }
    })
    .await;
    let members = client.member_list().await.unwrap();
    assert_eq!(members.members().len(), 3);
}

/// A key, its mod revision and its value, as a member holds them.
type Held = (Vec<u8>, i64, Vec<u8>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_cluster_cold_starts_from_its_data_dirs_with_the_original_command_lines() {
    let fast = ["--heartbeat-interval=50", "--election-timeout=500"];
    let mut cluster = Cluster::start_with(3, &fast);
    let leader = cluster.leader().await;
    let client = cluster.client(leader).await;
    until_ok("a first write", || {
        let mut client = client.clone();
        async move { client.put("before", "v", None).await }
    })
    .await;
    let mut client = client;
    let list = client.member_list().await.unwrap();
    let peers: Vec<String> =
        list.members().iter().map(|m| format!("{}={}", m.name(), m.peer_urls()[0])).collect();
    // A fourth member joins...
    let peer = crate::support::free_port();
    until_ok("the fourth member's addition", || {
        let mut client = client.clone();
        async move { client.member_add([format!("http://{peer}")], None).await }
    })
    .await;
    let fourth_args: Vec<String> = [
        "--name=m3".to_owned(),
        format!("--listen-peer-urls=http://{peer}"),
        format!("--initial-advertise-peer-urls=http://{peer}"),
        format!("--initial-cluster={},m3=http://{peer}", peers.join(",")),
        "--initial-cluster-state=existing".to_owned(),
        "--initial-cluster-token=cluster-test".to_owned(),
    ]
    .into_iter()
    .chain(fast.iter().map(|arg| arg.to_string()))
    .collect();
    let fourth_addr = crate::support::free_port();
    let fourth_dir = cluster.dir.path().join("m3");
    let fourth = crate::support::Cairn::start_on(fourth_addr, &fourth_dir, fourth_args.clone());
    until_ok("the fourth member to catch up", || {
        let endpoint = fourth.endpoint();
        async move {
            let mut client = Client::connect([endpoint], None).await.map_err(|e| e.to_string())?;
            let found = client.get("before", Some(GetOptions::new().with_serializable())).await;
            if found.map_err(|e| e.to_string())?.count() == 1 { Ok(()) } else { Err("not yet".to_owned()) }
        }
    })
    .await;
    // ...and an original one leaves.
    let leaving = (leader + 1) % 3;
    let leaving_id = list.members().iter().find(|m| m.name() == format!("m{leaving}")).unwrap().id();
    until_ok("an original member's removal", || {
        let mut client = client.clone();
        async move { client.member_remove(leaving_id).await }
    })
    .await;
    for n in 0..20 {
        client.put(format!("k/{n}"), "v", None).await.unwrap();
    }

    // Every member stops; the rest start again with their original command lines.
    drop(fourth);
    let stayed: Vec<usize> = (0..3).filter(|&n| n != leaving).collect();
    for n in 0..3 {
        cluster.kill(n);
    }
    for &n in &stayed {
        cluster.restart(n);
    }
    let fourth = crate::support::Cairn::start_on(fourth_addr, &fourth_dir, fourth_args);
    let mut fourth_client = fourth.client().await;
    until_ok("a write after the cold start", || {
        let mut client = fourth_client.clone();
        async move { client.put("after", "v", None).await }
    })
    .await;
    let contents = |endpoint: String| async move {
        let mut client = Client::connect([endpoint], None).await.unwrap();
        let all = client.get("", Some(GetOptions::new().with_all_keys().with_serializable())).await;
        all.map(|all| {
            all.kvs().iter().map(|kv| (kv.key().to_vec(), kv.mod_revision(), kv.value().to_vec())).collect()
        })
    };
    until_ok("all members to hold the same data", || {
        let endpoints: Vec<String> =
            stayed.iter().map(|&n| cluster.endpoint(n)).chain([fourth.endpoint()]).collect();
        async move {
            let mut all: Vec<Vec<Held>> = Vec::new();
            for endpoint in endpoints {
                all.push(contents(endpoint).await.map_err(|e| e.to_string())?);
            }
            let equal = all.windows(2).all(|pair| pair[0] == pair[1]);
            if equal && all[0].iter().any(|(key, _, _)| key == b"after") {
                Ok(())
            } else {
                Err("not yet".to_owned())
            }
        }
    })
    .await;
    let members = fourth_client.member_list().await.unwrap();
    assert_eq!(members.members().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_update_moves_a_members_peer_url_and_replication_follows_it() {
    use crate::support::{Proxy, etcdctl, stdout};
    let fast = ["--heartbeat-interval=50", "--election-timeout=500"];
    let (cluster, proxies) = Cluster::start_with_proxies(3, &fast).await;
    let leader = cluster.leader().await;
    let moved = (leader + 1) % 3;
    let mut client = cluster.client(leader).await;
    until_ok("a first write", || {
        let mut client = client.clone();
        async move { client.put("k/0", "v", None).await }
    })
    .await;
    let list = client.member_list().await.unwrap();
    let member = list.members().iter().find(|m| m.name() == format!("m{moved}")).unwrap().clone();
    // The member's peer port, reached through a new address from now on.
    let new_proxy = Proxy::start(cluster.peer_listen_addr(moved)).await;
    let new_url = format!("http://{}", new_proxy.addr);
    let cairn = cluster.members[leader].as_ref().unwrap();
    let updated = stdout(&etcdctl(
        cairn,
        &["member", "update", &format!("{:x}", member.id()), &format!("--peer-urls={new_url}")],
    ));
    assert_eq!(
        updated,
        format!(
            "Member {:16x} updated in cluster {:16x}\n",
            member.id(),
            list.header().unwrap().cluster_id()
        )
    );
    let listed = client.member_list().await.unwrap();
    let now = listed.members().iter().find(|m| m.id() == member.id()).unwrap();
    assert_eq!(now.peer_urls(), [new_url.as_str()]);
    // The old address goes dark: replication reaches the member through the new one.
    proxies[moved].cut();
    for n in 1..20 {
        client.put(format!("k/{n}"), "v", None).await.unwrap();
    }
    until_ok("the moved member to have every write", || {
        let endpoint = cluster.endpoint(moved);
        async move {
            let mut client = Client::connect([endpoint], None).await.map_err(|e| e.to_string())?;
            let options = GetOptions::new().with_prefix().with_serializable().with_count_only();
            let count = client.get("k/", Some(options)).await.map_err(|e| e.to_string())?.count();
            if count == 20 { Ok(()) } else { Err(format!("{count} of 20")) }
        }
    })
    .await;
    // Unknown members and taken URLs are refused as etcd refuses them.
    let unknown = client.member_update(0x1234, [new_url.clone()]).await.unwrap_err();
    assert_eq!(
        crate::support::status(unknown),
        (tonic::Code::NotFound, "etcdserver: member not found".into())
    );
    let other = list.members().iter().find(|m| m.id() != member.id()).unwrap();
    let taken = client.member_update(other.id(), [new_url]).await.unwrap_err();
    assert_eq!(
        crate::support::status(taken),
        (tonic::Code::FailedPrecondition, "etcdserver: Peer URLs already exists".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_on_the_peer_port_is_refused_and_counted() {
    use protobuf::Message as _;
    let dir = tempfile::tempdir().unwrap();
    let (peer, metrics) = (crate::support::free_port(), crate::support::free_port());
    let args = [
        format!("--listen-peer-urls=http://{peer}"),
        format!("--initial-advertise-peer-urls=http://{peer}"),
        format!("--initial-cluster=default=http://{peer}"),
        format!("--listen-metrics-urls=http://{metrics}"),
    ];
    let cairn =
        crate::support::Cairn::start(dir.path(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut client = cairn.client().await;
    let header = client.status().await.unwrap().header().unwrap().clone();
    // An append from a stranger carrying 4 MiB, more than any member sends.
    let mut message = raft::eraftpb::Message::default();
    message.set_msg_type(raft::eraftpb::MessageType::MsgAppend);
    message.to = header.member_id();
    message.from = 0x2a;
    message.term = 1_000;
    let entry = raft::eraftpb::Entry {
        index: 1_000_000,
        term: 1_000,
        data: vec![7; 4 << 20].into(),
        ..Default::default()
    };
    message.entries = vec![entry].into();
    let batch = cairn_api::cairnpb::RaftBatch {
        cluster_id: header.cluster_id(),
        from: 0x2a,
        messages: vec![message.write_to_bytes().unwrap()],
    };
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{peer}")).unwrap().connect().await.unwrap();
    let mut peer_client =
        cairn_api::cairnpb::peer_client::PeerClient::new(channel).max_encoding_message_size(64 << 20);
    peer_client.raft(futures::stream::iter([batch])).await.unwrap();
    let (_, body) = crate::support::http_get(metrics, "/metrics");
    assert!(body.contains(r#"etcd_network_peer_received_failures_total{From="2a"} 1"#), "{body}");
    // It changed nothing: the member still leads its term and serves.
    assert_eq!(client.status().await.unwrap().raft_term(), header.raft_term());
    client.put("still", "serving", None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filling_disk_raises_nospace_before_any_write_fails_and_writes_resume_after_disarm() {
    use crate::support::{etcdctl, stdout};
    let disk = crate::support::SmallDisk::mount(64);
    let data_dir = disk.path.join("data");
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("cairn.log");
    let low_water = format!("--disk-low-water-bytes={}", 24 << 20);
    let cairn = crate::support::Cairn::start_logged(&data_dir, &[low_water.as_str()], &log);
    let mut client = cairn.client().await;
    let value = "v".repeat(64 * 1024);
    let mut acked = Vec::new();
    let mut refusal = None;
    for n in 0..10_000 {
        let key = format!("k/{n:05}");
        match client.put(key.as_str(), value.as_str(), None).await {
            Ok(_) => acked.push(key),
            Err(error) => {
                refusal = Some(crate::support::status(error));
                break;
            }
        }
    }
    // Refused with etcd's error while the disk still had room: the member is up.
    assert_eq!(
        refusal,
        Some((tonic::Code::ResourceExhausted, "etcdserver: mvcc: database space exceeded".to_owned()))
    );
    assert!(acked.len() > 50, "only {} writes before NOSPACE", acked.len());
    let status = client.status().await.unwrap();
    assert!(status.errors().iter().any(|error| error.ends_with("alarm:NOSPACE ")), "{:?}", status.errors());
    assert!(stdout(&etcdctl(&cairn, &["alarm", "list"])).contains("alarm:NOSPACE"));
    // Reads, linearizable or not, and deletes go on.
    assert_eq!(client.get("k/00000", None).await.unwrap().count(), 1);
    let serializable = Some(GetOptions::new().with_serializable());
    assert_eq!(client.get("k/00001", serializable).await.unwrap().count(), 1);
    client.delete("k/00000", None).await.unwrap();
    acked.remove(0);
    // Space comes back; an operator disarms; writes resume, nothing acknowledged lost.
    disk.resize(512);
    assert_eq!(stdout(&etcdctl(&cairn, &["alarm", "disarm"])).lines().count(), 1);
    until_ok("a write after the disarm", || {
        let mut client = client.clone();
        async move { client.put("after", "v", None).await }
    })
    .await;
    let found = client.get("k/", Some(GetOptions::new().with_prefix().with_keys_only())).await.unwrap();
    let found: std::collections::HashSet<String> =
        found.kvs().iter().map(|kv| kv.key_str().unwrap().to_owned()).collect();
    assert!(acked.iter().all(|key| found.contains(key)), "acknowledged writes lost");
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!stderr.contains("storage failed"), "{stderr}");
}
