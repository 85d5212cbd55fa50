//! The Maintenance service and the checks operators run on a cluster's data.

use std::path::Path;

use etcd_client::{Compare, ConnectOptions, Txn, TxnOp};

use crate::support::{Cairn, Cluster, start_refused, status, until_ok};

/// etcd's HashKV after each step of one history, as etcd 3.4.23 answered on this
/// machine kind (`etcdctl endpoint hashkv --rev=N` against `/usr/bin/etcd`):
/// (revision asked, hash, compact revision).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_kv_is_etcds_for_the_same_history() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let mut client = cairn.client().await;
    let expect = async |client: &mut etcd_client::Client, revision: i64, hash: u32, compacted: i64| {
        let answer = client.hash_kv(revision).await.unwrap();
        assert_eq!((answer.hash(), answer.compact_version()), (hash, compacted), "HashKV at {revision}");
    };
    client.put("a", "1", None).await.unwrap();
    client.put("b", "2", None).await.unwrap();
    client.delete("a", None).await.unwrap();
    client.put("a", "3", None).await.unwrap();
    // Three changes at one revision: their sub revisions are part of the hash.
    let txn = Txn::new().when([] as [Compare; 0]).and_then([
        TxnOp::put("c", "4", None),
        TxnOp::put("d", "5", None),
        TxnOp::delete("b", None),
    ]);
    client.txn(txn).await.unwrap();
    client.put("e", "6", None).await.unwrap();
    expect(&mut client, 0, 11_461_837, -1).await;
    expect(&mut client, 3, 1_827_592_406, -1).await;
    expect(&mut client, 6, 929_067_904, -1).await;

    client.compact(5, None).await.unwrap();
    expect(&mut client, 0, 1_184_495_221, 5).await;
    expect(&mut client, 6, 1_514_020_084, 5).await;
    let compacted = client.hash_kv(5).await.unwrap_err();
    assert_eq!(
        status(compacted),
        (tonic::Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted".to_owned())
    );

    client.delete("a", None).await.unwrap();
    client.delete("c", None).await.unwrap();
    expect(&mut client, 0, 416_403_255, 5).await;
    // A compaction at a deletion drops the deleted key's last change too.
    client.compact(9, None).await.unwrap();
    expect(&mut client, 0, 2_692_468_822, 9).await;
    client.delete("d", None).await.unwrap();
    client.put("z", "1", None).await.unwrap();
    expect(&mut client, 0, 3_959_741_471, 9).await;
    expect(&mut client, 10, 3_094_716_220, 9).await;
    let answer = client.hash_kv(10).await.unwrap();
    assert_eq!((answer.header().unwrap().revision(), answer.hash_revision()), (11, 10));
    let future = client.hash_kv(12).await.unwrap_err();
    assert_eq!(
        status(future),
        (tonic::Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_kv_takes_the_root_role_once_auth_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let mut setup = cairn.client().await;
    setup.user_add("root", "rootpw", None).await.unwrap();
    setup.user_grant_role("root", "root").await.unwrap();
    setup.user_add("alice", "alicepw", None).await.unwrap();
    setup.auth_enable().await.unwrap();
    let connect = |user: &str, password: &str| {
        let options = ConnectOptions::new().with_user(user, password);
        etcd_client::Client::connect([cairn.endpoint()], Some(options))
    };
    let mut alice = connect("alice", "alicepw").await.unwrap();
    let refused = alice.hash_kv(0).await.unwrap_err();
    // As etcd's authMaintenanceServer: the auth store's own error, unconverted.
    assert_eq!(status(refused), (tonic::Code::Unknown, "auth: permission denied".to_owned()));
    let mut root = connect("root", "rootpw").await.unwrap();
    assert_eq!(root.hash_kv(0).await.unwrap().compact_version(), -1);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Puts `key` = `value` through member 0 and waits until every running member has it.
async fn put_everywhere(cluster: &Cluster, value: &str) {
    let client = cluster.client(0).await;
    until_ok("a write", || {
        let mut client = client.clone();
        async move { client.put("k", value, None).await }
    })
    .await;
    for n in 0..3 {
        let client = cluster.client(n).await;
        until_ok("the write everywhere", || {
            let mut client = client.clone();
            async move {
                let got = client.get("k", None).await.map_err(|error| error.to_string())?;
                match got.kvs().first().map(|kv| kv.value()) {
                    Some(found) if found == value.as_bytes() => Ok(()),
                    other => Err(format!("m{n} has {other:?}")),
                }
            }
        })
        .await;
    }
}

fn stop_all(cluster: &mut Cluster) {
    for member in &mut cluster.members {
        assert!(member.take().unwrap().terminate().success());
    }
}

/// Writes k = "agreed" on `cluster` and stops it; then the same members (same names,
/// URLs, IDs) in a twin write another history of the same length, k = "diverged" at
/// revision 2 too, and stop. Stopped, not killed: a member's store is durable up to its
/// last applied entry only after a clean stop (a killed one replays the rest from its
/// log, after any check).
async fn diverged_twin(cluster: &mut Cluster) -> Cluster {
    put_everywhere(cluster, "agreed").await;
    stop_all(cluster);
    let mut twin = cluster.twin();
    put_everywhere(&twin, "diverged").await;
    stop_all(&mut twin);
    twin
}

/// `--experimental-initial-corrupt-check`: a member whose store holds other data than
/// its peers' at the same revision refuses to serve; with the same data it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_data_differs_from_its_peers_refuses_to_start() {
    let flag = "--experimental-initial-corrupt-check";
    let mut cluster = Cluster::start_with(3, &[flag]);
    let twin = diverged_twin(&mut cluster).await;
    let m2 = cluster.dir.path().join("m2");
    let good = cluster.dir.path().join("m2-good");
    std::fs::rename(&m2, &good).unwrap();
    copy_dir(&twin.dir.path().join("m2"), &m2);

    // Its peers restart with the check on: the diverged member is down, so they only
    // log that they cannot ask it.
    cluster.restart(0);
    cluster.restart(1);
    let (exit, stderr) = start_refused(&m2, cluster.args(2));
    assert!(!exit.success());
    assert!(stderr.contains("found data inconsistency with peers"), "{stderr}");

    // With the data it had, the member starts and serves.
    std::fs::remove_dir_all(&m2).unwrap();
    std::fs::rename(&good, &m2).unwrap();
    cluster.restart(2);
    let client = cluster.client(2).await;
    let got = until_ok("a read", || {
        let mut client = client.clone();
        async move { client.get("k", None).await }
    })
    .await;
    assert_eq!(got.kvs()[0].value(), b"agreed");
}

/// What an operator checks after a failover or a migration: every member, leader and
/// followers alike, gives the same HashKV at the same revision, before and after a
/// compaction and after a member restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_hashes_the_same_across_compaction_and_restart() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    let client = cluster.client(leader).await;
    let mut last = 0;
    for n in 0..20 {
        let response = until_ok("a write", || {
            let mut client = client.clone();
            async move { client.put(format!("k{}", n % 7), format!("v{n}"), None).await }
        })
        .await;
        last = response.header().unwrap().revision();
    }
    // Each member's hash at `revision` once it has applied the compaction at
    // `compacted` (a follower answers a future revision until it has applied it).
    let hashes = async |cluster: &Cluster, revision: i64, compacted: i64| {
        let mut hashes = Vec::new();
        for n in 0..3 {
            let client = cluster.client(n).await;
            let answer = until_ok("HashKV on every member", || {
                let mut client = client.clone();
                async move {
                    let answer = client.hash_kv(revision).await.map_err(|error| error.to_string())?;
                    if answer.compact_version() == compacted {
                        Ok(answer)
                    } else {
                        Err::<_, String>("not compacted yet".into())
                    }
                }
            })
            .await;
            hashes.push((answer.hash(), answer.compact_version()));
        }
        hashes
    };
    let before = hashes(&cluster, last, -1).await;
    assert!(before.iter().all(|hash| *hash == before[0]), "{before:?}");

    client.clone().compact(last - 5, None).await.unwrap();
    let after = hashes(&cluster, last, last - 5).await;
    assert!(after.iter().all(|hash| *hash == after[0]), "{after:?}");
    assert_eq!(after[0].1, last - 5);
    assert_ne!(after[0].0, before[0].0, "a compaction leaves older versions out of the hash");

    let follower = (leader + 1) % 3;
    cluster.kill(follower);
    cluster.restart(follower);
    assert_eq!(hashes(&cluster, last, last - 5).await, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defragment_gives_space_back_and_loses_no_write_made_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let mut client = cairn.client().await;
    // 300 versions of 30 keys, 10 KB each: about 3 MB of history.
    for i in 0..300 {
        client.put(format!("key{}", i % 30), vec![b'a' + (i % 26) as u8; 10_000], None).await.unwrap();
    }
    let revision = client.get("key0", None).await.unwrap().header().unwrap().revision();
    client.compact(revision, Some(etcd_client::CompactionOptions::new().with_physical())).await.unwrap();
    let before = client.status().await.unwrap().db_size();
    let marked = client.put("marker", "1", None).await.unwrap().header().unwrap().revision();
    let hash = client.hash_kv(marked).await.unwrap().hash();

    // Writes and reads go on while it runs; every acknowledged one must survive.
    let writer = {
        let mut client = cairn.client().await;
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..200 {
                client.put(format!("during/{i:03}"), "x", None).await.unwrap();
                assert!(!client.get("key1", None).await.unwrap().kvs().is_empty());
                acknowledged.push(format!("during/{i:03}"));
            }
            acknowledged
        })
    };
    client.defragment().await.unwrap();
    let acknowledged = writer.await.unwrap();
    let after = client.status().await.unwrap().db_size();
    assert!(after * 3 < before, "defragment shrank the file from {before} to only {after}");
    let during = client.get("during/", Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
    let keys: Vec<String> = during.kvs().iter().map(|kv| kv.key_str().unwrap().to_owned()).collect();
    assert_eq!(keys, acknowledged);
    // The history up to the marker hashes as before, also after a SIGKILL.
    assert_eq!(client.hash_kv(marked).await.unwrap().hash(), hash);
    let cairn = cairn.kill_and_restart();
    let mut client = cairn.client().await;
    assert_eq!(client.hash_kv(marked).await.unwrap().hash(), hash);
    let during = client.get("during/", Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(during.count(), 200);
    assert!(client.status().await.unwrap().db_size() < before / 3);
}

/// etcd 3.4's `etcdctl` sends the whole endpoint URL as `:authority` when it talks to
/// one endpoint; etcd accepts that, and so does Cairn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_with_a_scheme_in_its_endpoint_runs_every_per_member_command() {
    let cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    let endpoint = cluster.endpoint(leader);
    let mut client = cluster.client(leader).await;
    client.put("a", "1", None).await.unwrap();
    let leader_id = client.status().await.unwrap().header().unwrap().member_id();
    let ctl = |args: &[&str]| {
        let output = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .args(args)
            .output()
            .unwrap();
        crate::support::stdout(&output)
    };
    assert!(ctl(&["endpoint", "status"]).contains(&format!("{endpoint}, {:x}", leader_id)));
    assert!(ctl(&["endpoint", "hashkv"]).starts_with(&format!("{endpoint}, ")));
    assert_eq!(ctl(&["defrag"]).trim(), format!("Finished defragmenting etcd member[{endpoint}]"));
    let follower =
        cluster.members.iter().flatten().map(|m| m.addr).find(|a| format!("http://{a}") != endpoint);
    let target = {
        let mut follower_client =
            etcd_client::Client::connect([format!("http://{}", follower.unwrap())], None).await.unwrap();
        follower_client.status().await.unwrap().header().unwrap().member_id()
    };
    let moved = ctl(&["move-leader", &format!("{target:x}")]);
    assert_eq!(moved.trim(), format!("Leadership transferred from {:x} to {target:x}", leader_id));
}

/// `--quota-backend-bytes`: writes that would grow a store past it are refused with
/// etcd's error and raise NOSPACE on every member; reads, deletes, compaction and
/// defragmentation go on; once space is back and the alarm disarmed, writes work
/// again, and nothing acknowledged was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_quota_raises_nospace_and_lifts_after_compact_defrag_and_disarm() {
    const QUOTA: u64 = 4 * 1024 * 1024;
    let cluster = Cluster::start_with(3, &["--quota-backend-bytes=4194304"]);
    let mut client = cluster.client(0).await;
    let mut acknowledged = Vec::new();
    let refused = loop {
        assert!(acknowledged.len() < 1_000, "the quota never refused a write");
        let key = format!("fill/{:04}", acknowledged.len());
        match client.put(key.as_str(), vec![b'x'; 64 * 1024], None).await {
            Ok(_) => acknowledged.push(key),
            Err(error) => break status(error),
        }
    };
    let no_space = (tonic::Code::ResourceExhausted, "etcdserver: mvcc: database space exceeded".to_owned());
    assert_eq!(refused, no_space);
    // The refusal came from a member at the quota: this one, or one whose own apply
    // went over it first and raised NOSPACE for all.
    let mut largest = 0;
    for n in 0..3 {
        largest = largest.max(cluster.client(n).await.status().await.unwrap().db_size() as u64);
    }
    assert!(largest + 64 * 1024 >= QUOTA, "largest member {largest} bytes");
    // Every member lists the same alarms: NOSPACE, raised by the member that refused
    // the write and by any whose apply took its own store over the quota (as etcd).
    let alarms_of = async |n: usize| {
        let mut member = cluster.client(n).await;
        let alarms = member.alarm(etcd_client::AlarmAction::Get, etcd_client::AlarmType::None, None).await;
        let alarms = alarms.map_err(|e| e.to_string())?;
        Ok::<Vec<(u64, i32)>, String>(
            alarms.alarms().iter().map(|a| (a.member_id(), a.alarm() as i32)).collect(),
        )
    };
    let listed = until_ok("every member lists the same alarms", || async {
        let first = alarms_of(0).await?;
        for n in 1..3 {
            if alarms_of(n).await? != first {
                return Err(format!("member {n} differs"));
            }
        }
        if first.is_empty() { Err("no alarm yet".to_owned()) } else { Ok(first) }
    })
    .await;
    assert!(listed.iter().all(|(_, alarm)| *alarm == etcd_client::AlarmType::Nospace as i32), "{listed:?}");
    // Each member refuses what would grow the store.
    for n in 0..3 {
        let mut member = cluster.client(n).await;
        assert_eq!(status(member.put("small", "1", None).await.unwrap_err()), no_space);
        assert_eq!(status(member.lease_grant(60, None).await.unwrap_err()), no_space);
        // Reads are served, with every acknowledged write.
        let read =
            member.get("fill/", Some(etcd_client::GetOptions::new().with_prefix().with_keys_only())).await;
        let keys: Vec<String> =
            read.unwrap().kvs().iter().map(|kv| kv.key_str().unwrap().to_owned()).collect();
        assert!(acknowledged.iter().all(|key| keys.contains(key)), "member {n} lost an acknowledged write");
    }
    // Deleting, compacting and defragmenting still work, and give the space back.
    let deleted =
        client.delete("fill/", Some(etcd_client::DeleteOptions::new().with_prefix())).await.unwrap();
    let revision = deleted.header().unwrap().revision();
    client.compact(revision, Some(etcd_client::CompactionOptions::new().with_physical())).await.unwrap();
    for n in 0..3 {
        cluster.client(n).await.defragment().await.unwrap();
    }
    assert!((client.status().await.unwrap().db_size() as u64) < QUOTA / 2);
    // Still refused until the alarm is disarmed, as etcd.
    assert_eq!(status(client.put("small", "1", None).await.unwrap_err()), no_space);
    // etcdctl lists and disarms it in etcd's words.
    let ctl = |args: &[&str]| {
        let output = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", cluster.endpoint(0)))
            .args(args)
            .output()
            .unwrap();
        crate::support::stdout(&output)
    };
    let lines: String =
        listed.iter().map(|(member, _)| format!("memberID:{member} alarm:NOSPACE \n")).collect();
    assert_eq!(ctl(&["alarm", "list"]), lines);
    assert_eq!(ctl(&["alarm", "disarm"]), lines);
    assert_eq!(ctl(&["alarm", "list"]), "");
    for n in 0..3 {
        let member = cluster.client(n).await;
        until_ok("writes work again", || {
            let mut member = member.clone();
            async move { member.put(format!("after/{n}"), "1", None).await }
        })
        .await;
    }
}

/// etcd's `Hash` covers the whole state but the applied index: members with the same
/// state agree, a write changes it, a restart does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_gives_the_same_hash_of_the_whole_state() {
    let mut cluster = Cluster::start(3);
    let mut client = cluster.client(0).await;
    client.put("a", "1", None).await.unwrap();
    client.lease_grant(100, None).await.unwrap();
    let revision = client.put("b", "2", None).await.unwrap().header().unwrap().revision();
    let hashes = async |cluster: &Cluster| {
        let mut hashes = Vec::new();
        for n in 0..3 {
            let member = cluster.client(n).await;
            let hashed = until_ok("member caught up", || {
                let mut member = member.clone();
                async move {
                    let answer = member.hash().await.map_err(|e| e.to_string())?;
                    let at = answer.header().unwrap().revision();
                    if at == revision { Ok(answer.hash()) } else { Err(format!("at {at}")) }
                }
            })
            .await;
            hashes.push(hashed);
        }
        hashes
    };
    let before = hashes(&cluster).await;
    assert!(before.iter().all(|hash| *hash == before[0]), "{before:?}");
    cluster.kill(1);
    cluster.restart(1);
    assert_eq!(hashes(&cluster).await, before);
    client.put("c", "3", None).await.unwrap();
    assert_ne!(client.hash().await.unwrap().hash(), before[0]);
}

/// etcd 3.5's `Downgrade`, for a cluster that supports no downgrade target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downgrade_is_refused_with_etcds_errors() {
    use cairn_api::etcdserverpb::DowngradeRequest;
    use cairn_api::etcdserverpb::downgrade_request::DowngradeAction;
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let mut client =
        cairn_api::etcdserverpb::maintenance_client::MaintenanceClient::connect(cairn.endpoint())
            .await
            .unwrap();
    let mut ask = async |action: DowngradeAction, version: &str| {
        let request = DowngradeRequest { action: action as i32, version: version.to_owned() };
        let error = client.downgrade(request).await.unwrap_err();
        (error.code(), error.message().to_owned())
    };
    let invalid = |text: &str| (tonic::Code::InvalidArgument, text.to_owned());
    assert_eq!(
        ask(DowngradeAction::Validate, "3.4").await,
        invalid("etcdserver: invalid downgrade target version")
    );
    assert_eq!(
        ask(DowngradeAction::Enable, "3.4.0").await,
        invalid("etcdserver: invalid downgrade target version")
    );
    assert_eq!(
        ask(DowngradeAction::Validate, "three").await,
        invalid("etcdserver: wrong downgrade target version format")
    );
    assert_eq!(
        ask(DowngradeAction::Cancel, "").await,
        (tonic::Code::FailedPrecondition, "etcdserver: no inflight downgrade job".to_owned())
    );
}

/// `--auto-compaction-retention=2s` (periodic): the leader compacts through raft to
/// the revision of about two seconds before, first two seconds after start, then
/// every two seconds; every member follows. (Revision mode looks every five
/// minutes: its unit tests drive it with their own clock.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_auto_compaction_keeps_the_last_period_on_every_member() {
    let cluster =
        Cluster::start_with(3, &["--auto-compaction-mode=periodic", "--auto-compaction-retention=2s"]);
    let mut client = cluster.client(0).await;
    let started = std::time::Instant::now();
    let mut written: Vec<(std::time::Instant, i64)> = Vec::new();
    let mut compactions: Vec<(std::time::Instant, i64)> = Vec::new();
    while compactions.len() < 2 {
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "compacted {compactions:?}");
        let put = client.put("key", "value", None).await.unwrap();
        written.push((std::time::Instant::now(), put.header().unwrap().revision()));
        let compacted = client.hash_kv(0).await.unwrap().compact_version();
        if compacted > 0 && compactions.last().is_none_or(|(_, last)| *last != compacted) {
            compactions.push((std::time::Instant::now(), compacted));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for (seen, compacted) in &compactions {
        // Never a revision written in the last period (less the sampling step).
        let recent = written.iter().filter(|(at, _)| seen.duration_since(*at).as_millis() < 1_700);
        assert!(recent.clone().all(|(_, revision)| revision > compacted), "{compacted} is too recent");
    }
    // The first only after a period, the next a period later.
    assert!(compactions[0].0.duration_since(started).as_millis() >= 1_800, "{compactions:?}");
    assert!(compactions[1].0.duration_since(compactions[0].0).as_millis() >= 1_500, "{compactions:?}");
    for n in 1..3 {
        let member = cluster.client(n).await;
        let expected = compactions[1].1;
        until_ok("every member compacted", || {
            let mut member = member.clone();
            async move {
                let seen = member.hash_kv(0).await.map_err(|e| e.to_string())?.compact_version();
                if seen >= expected { Ok(()) } else { Err(format!("at {seen}")) }
            }
        })
        .await;
    }
}

/// `--experimental-corrupt-check-time`: the leader compares its data with its
/// peers' now and then; a member that holds other data at the same revision raises
/// CORRUPT, after which every member refuses writes with etcd's `DataLoss` and still
/// serves reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_diverges_while_running_raises_corrupt_and_writes_stop() {
    let flag = "--experimental-corrupt-check-time=500ms";
    let mut cluster = Cluster::start_with(3, &[flag]);
    let twin = diverged_twin(&mut cluster).await;
    let m2 = cluster.dir.path().join("m2");
    std::fs::remove_dir_all(&m2).unwrap();
    copy_dir(&twin.dir.path().join("m2"), &m2);
    for n in 0..3 {
        cluster.restart(n);
    }
    let client = cluster.client(0).await;
    until_ok("CORRUPT raised", || {
        let mut client = client.clone();
        async move {
            let listed =
                client.alarm(etcd_client::AlarmAction::Get, etcd_client::AlarmType::None, None).await;
            let alarms = listed.map_err(|e| e.to_string())?;
            let corrupt = alarms.alarms().iter().any(|a| a.alarm() == etcd_client::AlarmType::Corrupt);
            if corrupt { Ok(()) } else { Err(format!("{} alarms", alarms.alarms().len())) }
        }
    })
    .await;
    let corrupt = (tonic::Code::DataLoss, "etcdserver: corrupt cluster".to_owned());
    for n in 0..3 {
        let mut member = cluster.client(n).await;
        let refused = until_ok("the alarm applied", || {
            let mut member = member.clone();
            async move {
                match member.put("k", "more", None).await {
                    Err(error) => Ok(status(error)),
                    Ok(_) => Err("a write went through".to_owned()),
                }
            }
        })
        .await;
        assert_eq!(refused, corrupt, "member {n}");
        assert_eq!(status(member.delete("k", None).await.unwrap_err()), corrupt);
        assert_eq!(status(member.lease_grant(60, None).await.unwrap_err()), corrupt);
        // Reads, and txns that only read, are still served.
        assert_eq!(member.get("k", None).await.unwrap().kvs().len(), 1);
        let read_only = Txn::new().and_then([TxnOp::get("k", None)]);
        assert!(member.txn(read_only).await.unwrap().succeeded());
    }
}
