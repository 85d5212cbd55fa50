use std::time::Duration;

use etcd_client::GetOptions;

use crate::support::{Cairn, Cluster, free_port, until_ok};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_serves_stale_reads_fails_the_rest_and_converges_after_healing() {
    let fast = ["--heartbeat-interval=50", "--election-timeout=500"];
    let (cluster, proxies) = Cluster::start_with_proxies(3, &fast).await;
    let leader = cluster.leader().await;
    let isolated = (leader + 1) % 3;
    let majority = cluster.client(leader).await;
    until_ok("a first write", || {
        let mut majority = majority.clone();
        async move { majority.put("k/00", "v", None).await }
    })
    .await;
    until_ok("the member to have the first write", || {
        let cluster = &cluster;
        async move { if cluster.contents(isolated).await.len() == 1 { Ok(()) } else { Err("not yet") } }
    })
    .await;

    proxies[isolated].cut();
    let mut majority = majority;
    for n in 1..10 {
        majority.put(format!("k/{n:02}"), "v", None).await.unwrap();
    }
    // The majority goes on; the cut-off member times out on writes and linearizable
    // reads, within the request timeout (5 s + 2 election timeouts), and still answers
    // serializable reads from what it has.
    let mut cut_off = cluster.client(isolated).await;
    let started = tokio::time::Instant::now();
    let write = cut_off.put("from-minority", "v", None).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "no hang past the request timeout");
    let message = write.to_string();
    assert!(
        message.contains("etcdserver: request timed out") || message.contains("etcdserver: no leader"),
        "{message}"
    );
    let read = cut_off.get("k/00", None).await.unwrap_err().to_string();
    assert!(read.contains("etcdserver: request timed out"), "{read}");
    let stale = cut_off.get("k/", Some(GetOptions::new().with_prefix().with_serializable())).await.unwrap();
    assert!(stale.count() >= 1 && stale.count() < 10, "the cut-off member answers from what it has");
    // A client that requires a leader is told at once that there is none.
    let options = etcd_client::ConnectOptions::new().with_require_leader(true);
    let mut requiring =
        etcd_client::Client::connect([cluster.endpoint(isolated)], Some(options)).await.unwrap();
    let refused =
        requiring.get("k/", Some(GetOptions::new().with_prefix().with_serializable())).await.unwrap_err();
    assert!(refused.to_string().contains("etcdserver: no leader"), "{refused}");

    proxies[isolated].heal();
    until_ok("the cut-off member to converge", || {
        let cluster = &cluster;
        async move {
            let (ours, theirs) = (cluster.contents(isolated).await, cluster.contents(leader).await);
            if ours == theirs && theirs.iter().filter(|(key, _, _)| key.starts_with("k/")).count() == 10 {
                Ok(())
            } else {
                Err("not yet")
            }
        }
    })
    .await;
    // Every member holds the same keys, revisions and values.
    let reference = cluster.contents(0).await;
    for n in 1..3 {
        assert_eq!(cluster.contents(n).await, reference, "member m{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_member_joins_a_compacted_cluster_from_a_snapshot_and_leaves_again() {
    let cluster = Cluster::start_with(3, &["--snapshot-count=20"]);
    let leader = cluster.leader().await;
    let client = cluster.client(leader).await;
    until_ok("a first write", || {
        let mut client = client.clone();
        async move { client.put("key/000", "v", None).await }
    })
    .await;
    let mut client = client;
    for n in 1..100 {
        client.put(format!("key/{n:03}"), n.to_string(), None).await.unwrap();
    }
    let peers: Vec<String> = client
        .member_list()
        .await
        .unwrap()
        .members()
        .iter()
        .map(|m| format!("{}={}", m.name(), m.peer_urls()[0]))
        .collect();
    let peer = free_port();
    // Refused as "unhealthy cluster" until this member has been connected to a quorum
    // for 5 s, as etcd refuses it.
    let added = until_ok("the member's addition", || {
        let mut client = client.clone();
        async move { client.member_add([format!("http://{peer}")], None).await }
    })
    .await;
    let id = added.member().unwrap().id();
    let initial = format!("{},m3=http://{peer}", peers.join(","));
    let args = vec![
        "--name=m3".to_owned(),
        format!("--listen-peer-urls=http://{peer}"),
        format!("--initial-advertise-peer-urls=http://{peer}"),
        format!("--initial-cluster={initial}"),
        "--initial-cluster-state=existing".to_owned(),
        "--initial-cluster-token=cluster-test".to_owned(),
        "--snapshot-count=20".to_owned(),
    ];
    let fourth = Cairn::start_on(free_port(), &cluster.dir.path().join("m3"), args);
    let mut fourth_client = fourth.client().await;
    let reference = cluster.contents(leader).await;
    until_ok("the fourth member to catch up from a snapshot", || {
        let mut fourth_client = fourth_client.clone();
        let reference = reference.clone();
        async move {
            let all = fourth_client
                .get("", Some(GetOptions::new().with_all_keys().with_serializable()))
                .await
                .map_err(|e| e.to_string())?;
            let ours: Vec<(String, i64, Vec<u8>)> = all
                .kvs()
                .iter()
                .map(|kv| (kv.key_str().unwrap().to_owned(), kv.mod_revision(), kv.value().to_vec()))
                .collect();
            if ours == reference {
                Ok(())
            } else {
                Err(format!("{} of {} keys", ours.len(), reference.len()))
            }
        }
    })
    .await;
    fourth_client.put("from-the-fourth", "v", None).await.unwrap();

    client.member_remove(id).await.unwrap();
    assert_eq!(client.member_list().await.unwrap().members().len(), 3);
    client.put("after-removal", "v", None).await.unwrap();
    let reference = cluster.contents(leader).await;
    for n in 0..3 {
        let contents = until_ok("every member to agree", || {
            let cluster = &cluster;
            let reference = reference.clone();
            async move {
                let contents = cluster.contents(n).await;
                if contents == reference { Ok(contents) } else { Err("not yet") }
            }
        })
        .await;
        assert_eq!(contents.len(), 102);
    }
    drop(fourth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_under_member_kills_are_linearizable() {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use etcd_client::{Compare, CompareOp, Txn, TxnOp};

    use crate::linearizability::{Call, Op, linearizable};

    const KEYS: usize = 10;
    const CLIENTS: usize = 4;
    const CALLS_PER_KEY: usize = 48;
    let mut cluster = Cluster::start_with(3, &["--heartbeat-interval=50", "--election-timeout=500"]);
    cluster.leader().await;
    let epoch = tokio::time::Instant::now();
    let micros = move || epoch.elapsed().as_micros() as u64;
    let history: Arc<Mutex<BTreeMap<usize, Vec<Call>>>> = Arc::default();
    // Clients run until the kills are over (or every key's history is full).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let endpoints: Vec<String> = (0..3).map(|m| cluster.endpoint(m)).collect();
            let (history, stop) = (Arc::clone(&history), Arc::clone(&stop));
            tokio::spawn(async move {
                let options = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(3));
                // Each client talks to one member, and moves to the next when a call fails.
                let mut member = n % 3;
                let connect = |member: usize| {
                    let (endpoint, options) = (endpoints[member].clone(), options.clone());
                    async move {
                        loop {
                            if let Ok(client) =
                                etcd_client::Client::connect([endpoint.clone()], Some(options.clone())).await
                            {
                                return client;
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                };
                let mut client = connect(member).await;
                let mut last_seen: Vec<Option<String>> = vec![None; KEYS];
                for round in 0.. {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    // The first key whose history has room, from a place of this client's.
                    let key = {
                        let history = history.lock().unwrap();
                        let room =
                            |key: &usize| history.get(key).is_none_or(|calls| calls.len() < CALLS_PER_KEY);
                        match (0..KEYS).map(|k| (k + n * 7 + round) % KEYS).find(room) {
                            Some(key) => key,
                            None => return,
                        }
                    };
                    let name = format!("reg/{key}");
                    let invoked = micros();
                    let call = match round % 3 {
                        0 => {
                            let value = format!("c{n}-{round}");
                            let result = client.put(name.clone(), value.clone(), None).await;
                            Call { invoked, answered: result.is_ok().then(micros), op: Op::Put(value) }
                        }
                        1 => match client.get(name.clone(), None).await {
                            Ok(got) => {
                                let value = got.kvs().first().map(|kv| kv.value_str().unwrap().to_owned());
                                last_seen[key] = value.clone();
                                Call { invoked, answered: Some(micros()), op: Op::Get(value) }
                            }
                            // A failed read changed nothing: leave it out.
                            Err(_) => {
                                member = (member + 1) % 3;
                                client = connect(member).await;
                                continue;
                            }
                        },
                        _ => {
                            let new = format!("c{n}-{round}");
                            let expected = last_seen[key].clone();
                            let compare = match &expected {
                                Some(value) => Compare::value(name.clone(), CompareOp::Equal, value.clone()),
                                None => Compare::version(name.clone(), CompareOp::Equal, 0),
                            };
                            let txn = Txn::new().when([compare]).and_then([TxnOp::put(
                                name.clone(),
                                new.clone(),
                                None,
                            )]);
                            match client.txn(txn).await {
                                Ok(response) => Call {
                                    invoked,
                                    answered: Some(micros()),
                                    op: Op::Cas { expected, new, swapped: response.succeeded() },
                                },
                                Err(_) => Call {
                                    invoked,
                                    answered: None,
                                    op: Op::Cas { expected, new, swapped: false },
                                },
                            }
                        }
                    };
                    let failed = call.answered.is_none();
                    history.lock().unwrap().entry(key).or_default().push(call);
                    if failed {
                        member = (member + 1) % 3;
                        client = connect(member).await;
                    }
                }
            })
        })
        .collect();

    // Kill and restart the leader twice while the clients run, each time once they
    // have made progress; stop them once they have made some more.
    let answered = |history: &Mutex<BTreeMap<usize, Vec<Call>>>| {
        history.lock().unwrap().values().flatten().filter(|call| call.answered.is_some()).count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for round in 1..=3 {
        while answered(&history) < round * 100 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if round < 3 {
            let victim = cluster.leader().await;
            cluster.kill(victim);
            cluster.leader().await;
            cluster.restart(victim);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let history = history.lock().unwrap();
    for (key, calls) in history.iter() {
        assert!(calls.len() <= 64, "key {key} has {} calls", calls.len());
        assert!(linearizable(calls), "the history of reg/{key} is not linearizable: {calls:#?}");
    }
    let answered = history.values().flatten().filter(|call| call.answered.is_some()).count();
    let failed = history.values().flatten().filter(|call| call.answered.is_none()).count();
    assert!(answered > 100, "only {answered} calls were answered");
    eprintln!("checked {answered} answered and {failed} failed calls over {} keys", history.len());
}
