use crate::support::{Background, Cairn, error_line, etcdctl, eventually, stdout};

/// The lease ID in `etcdctl lease grant` output: `lease <hex> granted with TTL(<n>s)`.
fn granted(output: &str) -> String {
    output.split_whitespace().nth(1).expect("a lease ID").to_owned()
}

#[test]
fn etcdctl_lease_grant_keep_alive_time_to_live_revoke_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let grant = stdout(&etcdctl(&cairn, &["lease", "grant", "100"]));
    let id = granted(&grant);
    assert_eq!(grant, format!("lease {id} granted with TTL(100s)\n"));
    assert_eq!(stdout(&etcdctl(&cairn, &["put", "--lease", &id, "leased", "v"])), "OK\n");
    let ttl = stdout(&etcdctl(&cairn, &["lease", "timetolive", &id, "--keys"]));
    assert!(ttl.starts_with(&format!("lease {id} granted with TTL(100s), remaining(")), "{ttl}");
    assert!(ttl.ends_with("attached keys([leased])\n"), "{ttl}");
    assert_eq!(stdout(&etcdctl(&cairn, &["lease", "list"])), format!("found 1 leases\n{id}\n"));

    let mut keep_alive = Background::etcdctl(&cairn, &["lease", "keep-alive", &id]);
    assert_eq!(keep_alive.until_lines(1)[0], format!("lease {id} keepalived with TTL(100)"));
    drop(keep_alive);

    // A put with an unknown lease is refused, as etcd refuses it.
    assert_eq!(
        error_line(&etcdctl(&cairn, &["put", "--lease", "1234", "k", "v"])),
        "Error: etcdserver: requested lease not found"
    );
    assert_eq!(stdout(&etcdctl(&cairn, &["lease", "revoke", &id])), format!("lease {id} revoked\n"));
    assert_eq!(stdout(&etcdctl(&cairn, &["get", "leased"])), "", "revoking deletes the attached keys");
    assert_eq!(
        stdout(&etcdctl(&cairn, &["lease", "timetolive", &id])),
        format!("lease {id} already expired\n")
    );
    assert_eq!(
        error_line(&etcdctl(&cairn, &["lease", "revoke", &id])),
        "Error: failed to revoke lease (etcdserver: requested lease not found)"
    );
    assert_eq!(stdout(&etcdctl(&cairn, &["lease", "list"])), "found 0 leases\n");

    // The largest TTL etcd grants, and one past it.
    let at_limit = stdout(&etcdctl(&cairn, &["lease", "grant", "9000000000"]));
    assert!(at_limit.ends_with("granted with TTL(9000000000s)\n"), "{at_limit}");
    assert_eq!(
        error_line(&etcdctl(&cairn, &["lease", "grant", "9000000001"])),
        "Error: failed to grant lease (etcdserver: too large lease TTL)"
    );
}

#[test]
fn an_expired_lease_takes_its_keys_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    // The smallest TTL is one and a half election timeouts, rounded up: 2 s by default.
    let id = granted(&stdout(&etcdctl(&cairn, &["lease", "grant", "1"])));
    let ttl = stdout(&etcdctl(&cairn, &["lease", "timetolive", &id]));
    assert!(ttl.starts_with(&format!("lease {id} granted with TTL(2s)")), "{ttl}");
    stdout(&etcdctl(&cairn, &["put", "--lease", &id, "short-lived", "v"]));
    stdout(&etcdctl(&cairn, &["put", "long-lived", "v"]));
    eventually("the lease expiring", || stdout(&etcdctl(&cairn, &["get", "short-lived"])).is_empty());
    assert_eq!(stdout(&etcdctl(&cairn, &["get", "long-lived", "--print-value-only"])), "v\n");
    assert_eq!(
        stdout(&etcdctl(&cairn, &["lease", "timetolive", &id])),
        format!("lease {id} already expired\n")
    );
}

#[test]
fn remaining_ttls_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &["--experimental-lease-checkpoint-interval=1s"]);
    let id = granted(&stdout(&etcdctl(&cairn, &["lease", "grant", "60"])));
    let remaining = |cairn: &Cairn| -> u64 {
        let ttl = stdout(&etcdctl(cairn, &["lease", "timetolive", &id]));
        let start = ttl.find("remaining(").expect("a remaining TTL") + "remaining(".len();
        ttl[start..].trim_end_matches(|c: char| !c.is_ascii_digit()).parse().unwrap()
    };
    eventually("the lease to run down a little", || remaining(&cairn) <= 55);
    let before = remaining(&cairn);
    let cairn = cairn.kill_and_restart();
    // As with etcd's checkpoints: the lease resumes from its last checkpoint (at most
    // a second and a tick old), not from its full TTL, and its clock stood still while
    // the member was down.
    let after = remaining(&cairn);
    assert!(after >= 1 && after <= before + 3, "remaining {after}s after the restart, {before}s before");
    assert!(after < 59, "the lease was not reset to its full TTL: {after}s");
}

#[test]
fn etcdctl_watch_key_prefix_revision_and_prev_kv() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    stdout(&etcdctl(&cairn, &["put", "w/a", "1"])); // revision 2
    // Watchers from revision 3 see the same events however late they are set up.
    let mut key = Background::etcdctl(&cairn, &["watch", "w/a", "--rev=3"]);
    let mut prefix = Background::etcdctl(&cairn, &["watch", "--prefix", "w/", "--prev-kv", "--rev=3"]);
    let mut history = Background::etcdctl(&cairn, &["watch", "w/a", "--rev=1"]);
    stdout(&etcdctl(&cairn, &["put", "w/a", "2"])); // 3
    stdout(&etcdctl(&cairn, &["put", "w/b", "3"])); // 4
    stdout(&etcdctl(&cairn, &["del", "w/a"])); // 5
    assert_eq!(key.until_lines(6), ["PUT", "w/a", "2", "DELETE", "w/a", ""]);
    assert_eq!(
        prefix.until_lines(13),
        ["PUT", "w/a", "1", "w/a", "2", "PUT", "w/b", "3", "DELETE", "w/a", "2", "w/a", ""],
        "with --prev-kv, each event shows the previous value first"
    );
    assert_eq!(history.until_lines(9), ["PUT", "w/a", "1", "PUT", "w/a", "2", "DELETE", "w/a", ""]);
}

#[test]
fn etcdctl_lock_and_elect() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    // `lock` runs the command while holding the lock.
    assert_eq!(
        stdout(&etcdctl(&cairn, &["lock", "my-lock", "echo", "holding the lock"])),
        "holding the lock\n"
    );

    // A holder keeps the lock; a second waiter gets it once the holder goes away.
    // The holder's session lives 2 s after it is killed.
    let mut holder = Background::etcdctl(&cairn, &["lock", "--ttl=2", "shared"]);
    let held = holder.until_lines(1)[0].clone();
    assert!(held.starts_with("shared/"), "{held}");
    let mut waiter = Background::etcdctl(&cairn, &["lock", "shared"]);
    drop(holder);
    let taken = waiter.until_lines(1)[0].clone();
    assert!(taken.starts_with("shared/") && taken != held, "{taken}");

    // `elect` campaigns and prints the leader's proposal.
    let mut candidate = Background::etcdctl(&cairn, &["elect", "my-election", "proposal-1"]);
    let leader = candidate.until_lines(2);
    assert!(leader[0].starts_with("my-election/"), "{leader:?}");
    assert_eq!(leader[1], "proposal-1");
}

#[tokio::test]
async fn a_watcher_catching_up_on_big_values_gets_responses_a_client_can_take() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let mut client = cairn.client().await;
    // 25 values of 200 KB: 5 MB of history, over the 4 MiB a gRPC client takes in one
    // message by default.
    let value = vec![b'v'; 200 * 1024];
    let first = client.put("big/0", value.clone(), None).await.unwrap().header().unwrap().revision();
    for n in 1..25 {
        client.put(format!("big/{n}"), value.clone(), None).await.unwrap();
    }
    let options = etcd_client::WatchOptions::new().with_prefix().with_start_revision(first);
    let mut stream = client.watch("big/", Some(options)).await.unwrap();
    let mut seen = 0;
    while seen < 25 {
        let response = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
            .await
            .expect("events arrive in time")
            .expect("each response fits the client's limit")
            .expect("the stream stays open");
        seen += response.events().len();
    }
    assert_eq!(seen, 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_never_promises_a_revision_whose_events_are_still_to_come() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let mut client = cairn.client().await;
    let mut stream = client.watch("p/", Some(etcd_client::WatchOptions::new().with_prefix())).await.unwrap();
    let created = stream.message().await.unwrap().unwrap();
    assert!(created.created());

    const WRITES: usize = 2000;
    let mut writer = client.clone();
    let writes = tokio::spawn(async move {
        for n in 0..WRITES {
            writer.put(format!("p/{}", n % 50), "v", None).await.unwrap();
        }
    });
    // Ask for progress all along the writes; every event must come after no
    // progress notification that claimed its revision was already delivered.
    let (mut promised, mut seen, mut asked) = (0, 0, 0);
    while seen < WRITES {
        if asked < 200 {
            stream.request_progress().await.unwrap();
            asked += 1;
        }
        let response = tokio::time::timeout(std::time::Duration::from_secs(20), stream.message())
            .await
            .expect("responses arrive in time")
            .unwrap()
            .expect("the stream stays open");
        let revision = response.header().unwrap().revision();
        if response.events().is_empty() {
            assert!(revision >= promised, "progress went back from {promised} to {revision}");
            promised = revision;
        }
        for event in response.events() {
            let at = event.kv().unwrap().mod_revision();
            assert!(at > promised, "event at {at} arrived after progress promised {promised}");
            seen += 1;
        }
    }
    writes.await.unwrap();
    // Once everything is delivered, progress reaches the current revision.
    let current = client.get("p/", None).await.unwrap().header().unwrap().revision();
    stream.request_progress().await.unwrap();
    let progress = stream.message().await.unwrap().unwrap();
    assert_eq!((progress.events().len(), progress.header().unwrap().revision()), (0, current));
}

/// etcd's compaction revision is -1 until the first compaction: `Compact(0)` is then
/// accepted, and a watch from a negative revision asks for history below it, so it is
/// cancelled with that compaction revision.
#[tokio::test]
async fn compaction_at_zero_and_a_watch_from_a_negative_revision_answer_as_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let mut client = cairn.client().await;
    client.put("k", "v", None).await.unwrap();
    client.compact(0, None).await.expect("Compact(0) before any compaction is ok");
    let below = client.compact(-3, None).await.unwrap_err();
    assert_eq!(
        crate::support::status(below),
        (tonic::Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted".to_owned())
    );

    let cancelled_at = async |client: &mut etcd_client::Client| {
        let options = etcd_client::WatchOptions::new().with_start_revision(-5);
        let mut stream = client.watch("k", Some(options)).await.unwrap();
        loop {
            let response = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
                .await
                .expect("an answer in time")
                .unwrap()
                .expect("the stream stays open");
            if response.canceled() {
                assert!(response.events().is_empty());
                return response.compact_revision();
            }
        }
    };
    assert_eq!(cancelled_at(&mut client).await, -1);
    client.put("k", "w", None).await.unwrap();
    client.compact(2, None).await.unwrap();
    assert_eq!(cancelled_at(&mut client).await, 2);
}
