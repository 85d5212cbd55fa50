//! etcd's JSON gateway and HTTP endpoints on the client port: the same HTTP requests
//! go to Cairn and to a real etcd 3.4 (Debian's `etcd-server`), and the answers must
//! be the same, status and JSON, once the fields that name the cluster (its IDs and
//! raft term) are left out.

use std::process::Command;

use serde_json::Value;

use crate::support::{Cairn, Etcd, etcd34, free_port};

/// `curl -X POST` of `body` to `url`: the HTTP status and the body as JSON.
fn post(url: &str, body: &str, headers: &[&str]) -> (u16, Value) {
    let mut command = Command::new("curl");
    command.args(["-s", "-X", "POST", "-w", "\n%{http_code}", url, "-d", body]);
    for header in headers {
        command.args(["-H", header]);
    }
    let output = command.output().expect("curl is installed (.ci/run installs it)");
    let text = String::from_utf8(output.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    let json = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()));
    (status.parse().unwrap(), json)
}

/// `value` without what differs between two clusters that hold the same data.
fn normalized(mut value: Value) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                if let Some(Value::Object(header)) = map.get_mut("header") {
                    for field in ["cluster_id", "member_id", "raft_term"] {
                        header.remove(field);
                    }
                    // etcd 3.4 answers an alarm request without a header, 3.5 (and
                    // Cairn) with one that holds only the IDs and term.
                    if header.is_empty() {
                        map.remove("header");
                    }
                }
                for field in ["token", "TTL"] {
                    if map.contains_key("grantedTTL") || field == "token" {
                        map.remove(field);
                    }
                }
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut value);
    value
}

/// The first `lines` lines of a streaming answer (a watch), as JSON.
fn stream(url: &str, body: &str, lines: usize, during: impl FnOnce()) -> Vec<Value> {
    use std::io::BufRead;
    let mut child = Command::new("curl")
        .args(["-s", "-N", "-X", "POST", url, "-d", body])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut read = Vec::new();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    read.push(serde_json::from_str(&line).unwrap());
    during();
    while read.len() < lines {
        line.clear();
        reader.read_line(&mut line).unwrap();
        read.push(serde_json::from_str(&line).unwrap());
    }
    let _ = child.kill();
    let _ = child.wait();
    read
}

/// The requests, in order, each with the path under `/v3` and its body.
const REQUESTS: &[(&str, &str)] = &[
    ("kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#),
    ("kv/put", r#"{"key":"Zm9v","value":"YmF6","prev_kv":true}"#),
    ("kv/put", r#"{"key":"YQ==","value":"MQ=="}"#),
    ("kv/range", r#"{"key":"Zm9v"}"#),
    (
        "kv/range",
        r#"{"key":"YQ==","range_end":"eg==","sort_order":"DESCEND","sort_target":"KEY","limit":"5"}"#,
    ),
    ("kv/range", r#"{"key":"Zm9v","count_only":true}"#),
    ("kv/range", r#"{"key":"AA==","range_end":"AA==","keys_only":true}"#),
    (
        "kv/txn",
        r#"{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"YmF6"}],
            "success":[{"request_put":{"key":"YmFy","value":"MQ=="}},{"request_range":{"key":"Zm9v"}}]}"#,
    ),
    (
        "kv/txn",
        r#"{"compare":[{"key":"Zm9v","target":"VERSION","version":"9"}],"failure":[{"request_range":{"key":"YQ=="}}]}"#,
    ),
    ("kv/deleterange", r#"{"key":"YmFy","prev_kv":true}"#),
    ("kv/range", r#"{"key":""}"#),
    ("kv/put", r#"{"key":"Zm9v","value":"eA==","lease":"12345"}"#),
    ("kv/compaction", r#"{"revision":"3"}"#),
    ("kv/range", r#"{"key":"Zm9v","revision":"2"}"#),
    ("kv/compaction", r#"{"revision":"2"}"#),
    ("lease/grant", r#"{"TTL":"60","ID":"4242"}"#),
    ("kv/put", r#"{"key":"bGVhc2Vk","value":"MQ==","lease":"4242"}"#),
    ("lease/timetolive", r#"{"ID":"4242","keys":true}"#),
    ("kv/lease/timetolive", r#"{"ID":"4242"}"#),
    ("lease/leases", "{}"),
    ("lease/grant", r#"{"TTL":"60","ID":"4242"}"#),
    ("lease/revoke", r#"{"ID":"4242"}"#),
    ("lease/revoke", r#"{"ID":"4242"}"#),
    ("kv/range", r#"{"key":"bGVhc2Vk"}"#),
    ("maintenance/alarm", r#"{"action":"GET"}"#),
    ("maintenance/hash", r#"{"revision":"0"}"#),
    ("auth/user/add", r#"{"name":"root","password":"pw"}"#),
    ("auth/role/add", r#"{"name":"root"}"#),
    ("auth/user/grant", r#"{"user":"root","role":"root"}"#),
    ("auth/user/add", r#"{"name":"alice","password":"pw2"}"#),
    ("auth/role/add", r#"{"name":"app"}"#),
    (
        "auth/role/grant",
        r#"{"name":"app","perm":{"permType":"READWRITE","key":"L2FwcC8=","range_end":"L2FwcDA="}}"#,
    ),
    ("auth/user/grant", r#"{"user":"alice","role":"app"}"#),
    ("auth/user/get", r#"{"name":"alice"}"#),
    ("auth/role/get", r#"{"role":"app"}"#),
    ("auth/user/list", "{}"),
    ("auth/role/list", "{}"),
    ("auth/enable", "{}"),
    ("kv/range", r#"{"key":"Zm9v"}"#),
    ("auth/authenticate", r#"{"name":"alice","password":"wrong"}"#),
];

/// Sends every request to `endpoint` (after `/v3`), and the authenticated ones that
/// follow: what it answered, in order.
fn answers(endpoint: &str) -> Vec<(String, u16, Value)> {
    let mut answers = Vec::new();
    for (path, body) in REQUESTS {
        let (status, mut json) = post(&format!("{endpoint}/v3/{path}"), body, &[]);
        if *path == "maintenance/hash" {
            // A hash of the whole backend, members and IDs included: the same shape,
            // another value.
            assert!(json["hash"].is_number(), "{json}");
            json["hash"] = Value::Null;
        }
        answers.push((path.to_string(), status, normalized(json)));
    }
    // With auth on: a token from authenticate, sent as `Authorization`.
    let (_, json) =
        post(&format!("{endpoint}/v3/auth/authenticate"), r#"{"name":"alice","password":"pw2"}"#, &[]);
    let token = json["token"].as_str().expect("a token").to_owned();
    let authorization = format!("Authorization: {token}");
    for (path, body) in [
        ("kv/put", r#"{"key":"L2FwcC94","value":"MQ=="}"#),
        ("kv/range", r#"{"key":"L2FwcC94"}"#),
        ("kv/range", r#"{"key":"Zm9v"}"#),
    ] {
        let (status, json) = post(&format!("{endpoint}/v3/{path}"), body, &[&authorization]);
        answers.push((format!("{path} as alice"), status, normalized(json)));
    }
    // The cluster's members: their names and URLs are each server's own.
    let (status, json) = post(&format!("{endpoint}/v3/cluster/member/list"), "{}", &[]);
    let members = json["members"].as_array().map(|members| {
        members
            .iter()
            .map(|m| (m["peerURLs"].as_array().map(Vec::len), m["clientURLs"].as_array().map(Vec::len)))
    });
    answers.push((
        "cluster/member/list".into(),
        status,
        serde_json::json!(format!("{:?}", members.map(Vec::from_iter))),
    ));
    // The 3.4 alias of the same API.
    let (status, json) = post(&format!("{endpoint}/v3beta/kv/range"), r#"{"key":"Zm9v"}"#, &[]);
    answers.push(("v3beta kv/range".into(), status, normalized(json)));
    answers
}

#[test]
fn every_route_family_answers_as_etcd_3_4_answers() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(&etcd34("etcd"), &dir.path().join("etcd"), "gateway", free_port());
    let cairn = Cairn::start(&dir.path().join("cairn"), &[]);
    let theirs = answers(&etcd.endpoint());
    let ours = answers(&cairn.endpoint());
    assert_eq!(ours.len(), theirs.len());
    for (ours, theirs) in ours.iter().zip(&theirs) {
        assert_eq!(ours, theirs, "Cairn's answer, then etcd's");
    }
}

#[test]
fn a_gateway_watch_streams_events_as_etcd_does() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(&etcd34("etcd"), &dir.path().join("etcd"), "gateway", free_port());
    let cairn = Cairn::start(&dir.path().join("cairn"), &[]);
    let watch = |endpoint: &str| {
        let put = || {
            post(&format!("{endpoint}/v3/kv/put"), r#"{"key":"Zm9v","value":"YmFy"}"#, &[]);
            post(&format!("{endpoint}/v3/kv/deleterange"), r#"{"key":"Zm9v"}"#, &[]);
        };
        let body = r#"{"create_request":{"key":"Zm9v","prev_kv":true}}"#;
        stream(&format!("{endpoint}/v3/watch"), body, 3, put).into_iter().map(normalized).collect::<Vec<_>>()
    };
    let ours = watch(&cairn.endpoint());
    let theirs = watch(&etcd.endpoint());
    // Watch IDs are the server's to choose; etcd starts at 0 as Cairn does.
    assert_eq!(ours, theirs);
    assert_eq!(ours[2]["result"]["events"][0]["type"], "DELETE");
}

#[test]
fn health_version_and_metrics_are_served_on_the_client_port() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let get = |path: &str| {
        let output = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", &format!("{}{path}", cairn.endpoint())])
            .output()
            .unwrap();
        let text = String::from_utf8(output.stdout).unwrap();
        let (body, status) = text.rsplit_once('\n').unwrap();
        (status.to_owned(), body.to_owned())
    };
    assert_eq!(get("/version"), ("200".into(), r#"{"etcdserver":"3.5.0","etcdcluster":"3.5.0"}"#.into()));
    assert_eq!(get("/health"), ("200".into(), r#"{"health":"true","reason":""}"#.into()));
    assert_eq!(get("/livez"), ("200".into(), "ok".into()));
    assert_eq!(get("/readyz"), ("200".into(), "ok".into()));
    let (status, metrics) = get("/metrics");
    assert_eq!(status, "200");
    assert!(metrics.contains("etcd_server_has_leader 1"), "{metrics}");
}

/// `--auto-tls`: one TLS listener serves gRPC (etcdctl) and HTTP/1.1 (the gateway),
/// told apart by ALPN.
#[test]
fn one_tls_listener_serves_grpc_and_http_1_1() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let cairn = Cairn::start_on(
        addr,
        dir.path(),
        vec![
            "--auto-tls".into(),
            format!("--listen-client-urls=https://{addr}"),
            format!("--advertise-client-urls=https://{addr}"),
        ],
    );
    let url = format!("https://{}", cairn.addr);
    let output = Command::new("curl")
        .args(["-s", "-k", "--http1.1", "-X", "POST", &format!("{url}/v3/kv/put"), "-d"])
        .arg(r#"{"key":"Zm9v","value":"YmFy"}"#)
        .output()
        .unwrap();
    let put: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(put["header"]["revision"], "2");
    let output = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            &format!("--endpoints={url}"),
            "--insecure-transport=false",
            "--insecure-skip-tls-verify",
            "get",
            "foo",
        ])
        .output()
        .unwrap();
    assert_eq!(crate::support::stdout(&output), "foo\nbar\n");
}

/// `v3lock` through a real client (the `etcd-client` crate calls the service): the
/// second locker waits until the first unlocks; a lease held twice locks once; and
/// through the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_contend_for_a_lock() {
    use etcd_client::LockOptions;
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let mut first = cairn.client().await;
    let lease = first.lease_grant(30, None).await.unwrap().id();
    let held = first.lock("job", Some(LockOptions::new().with_lease(lease))).await.unwrap();
    assert!(held.key().starts_with(b"job/"), "{:?}", held.key());
    // The same lease again: the lock it already holds.
    let again = first.lock("job", Some(LockOptions::new().with_lease(lease))).await.unwrap();
    assert_eq!(again.key(), held.key());

    let mut second = cairn.client().await;
    let waiting = tokio::spawn(async move { second.lock("job", None).await.unwrap().key().to_vec() });
    // Its key is written before it waits: once it is there, the second locker waits.
    let watcher = cairn.client().await;
    crate::support::until_ok("the second locker's key", || {
        let mut watcher = watcher.clone();
        async move {
            let keys = watcher.get("job/", Some(etcd_client::GetOptions::new().with_prefix())).await;
            let count = keys.map_err(|e| e.to_string())?.count();
            if count == 2 { Ok(()) } else { Err(format!("{count} keys")) }
        }
    })
    .await;
    assert!(!waiting.is_finished(), "the second locker waits");
    first.unlock(held.key()).await.unwrap();
    let second_key =
        tokio::time::timeout(std::time::Duration::from_secs(10), waiting).await.unwrap().unwrap();
    assert_ne!(second_key, held.key());
    // Lease 0: a lease of its own, 60 seconds.
    let owner = first.get(second_key.clone(), None).await.unwrap().kvs()[0].lease();
    let ttl = first.lease_time_to_live(owner, None).await.unwrap().granted_ttl();
    assert_eq!(ttl, 60);

    // The gateway's routes reach the same service.
    let url = cairn.endpoint();
    let body = format!(r#"{{"key":"{}"}}"#, base64_of(&second_key));
    let (status, _) = post(&format!("{url}/v3/lock/unlock"), &body, &[]);
    assert_eq!(status, 200);
    let (status, locked) = post(&format!("{url}/v3/lock/lock"), r#"{"name":"am9i"}"#, &[]);
    assert_eq!(status, 200, "{locked}");
    assert!(locked["key"].as_str().is_some());
}

fn base64_of(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `v3election`: campaign, leader, proclaim, observe, resign, and the next candidate
/// taking over; the leader read through the gateway too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_campaigns_proclaims_observes_and_resigns() {
    use etcd_client::{ProclaimOptions, ResignOptions};
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let mut a = cairn.client().await;
    let mut observer = cairn.client().await;
    let no_leader = observer.leader("office").await.unwrap_err();
    assert!(no_leader.to_string().contains("election: no leader"), "{no_leader}");
    let lease_a = a.lease_grant(30, None).await.unwrap().id();
    let won = a.campaign("office", "alice", lease_a).await.unwrap();
    let leader_key = won.leader().unwrap().clone();
    let mut observed = observer.observe("office").await.unwrap();
    let value = |response: etcd_client::LeaderResponse| response.kv().unwrap().value().to_vec();
    assert_eq!(value(observed.message().await.unwrap().unwrap()), b"alice");

    let mut b = cairn.client().await;
    let lease_b = b.lease_grant(30, None).await.unwrap().id();
    let candidate = tokio::spawn(async move { b.campaign("office", "bob", lease_b).await.unwrap() });
    a.proclaim("alice again", Some(ProclaimOptions::new().with_leader(leader_key.clone()))).await.unwrap();
    assert_eq!(value(observed.message().await.unwrap().unwrap()), b"alice again");
    assert_eq!(value(observer.leader("office").await.unwrap()), b"alice again");
    let (status, leader) =
        post(&format!("{}/v3/election/leader", cairn.endpoint()), r#"{"name":"b2ZmaWNl"}"#, &[]);
    assert_eq!((status, leader["kv"]["value"].as_str()), (200, Some("YWxpY2UgYWdhaW4=")));
    assert!(!candidate.is_finished(), "bob waits while alice leads");

    a.resign(Some(ResignOptions::new().with_leader(leader_key.clone()))).await.unwrap();
    let bob = tokio::time::timeout(std::time::Duration::from_secs(10), candidate).await.unwrap().unwrap();
    assert_eq!(bob.leader().unwrap().lease(), lease_b);
    assert_eq!(value(observed.message().await.unwrap().unwrap()), b"bob");
    // Alice is no longer the leader: her proclamation is refused.
    let refused = a.proclaim("mine", Some(ProclaimOptions::new().with_leader(leader_key))).await.unwrap_err();
    assert!(refused.to_string().contains("election: not leader"), "{refused}");
}

/// `v3election` through the gateway alone, as an HTTP client without gRPC would use
/// it: campaign, observe (a stream of lines), proclaim, leader, resign.
#[test]
fn an_election_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let url = cairn.endpoint();
    let (status, granted) = post(&format!("{url}/v3/lease/grant"), r#"{"TTL":"30"}"#, &[]);
    assert_eq!(status, 200, "{granted}");
    let lease = granted["ID"].as_str().unwrap().to_owned();
    // "office" and "alice" in base64.
    let campaign = format!(r#"{{"name":"b2ZmaWNl","lease":"{lease}","value":"YWxpY2U="}}"#);
    let (status, won) = post(&format!("{url}/v3/election/campaign"), &campaign, &[]);
    assert_eq!(status, 200, "{won}");
    let leader = won["leader"].clone();
    assert_eq!(leader["name"], "b2ZmaWNl");
    assert_eq!(leader["lease"].as_str(), Some(lease.as_str()));
    let proclaim = serde_json::json!({ "leader": leader, "value": "YWxpY2UgYWdhaW4=" }).to_string();
    let observed = stream(&format!("{url}/v3/election/observe"), r#"{"name":"b2ZmaWNl"}"#, 2, || {
        let (status, answer) = post(&format!("{url}/v3/election/proclaim"), &proclaim, &[]);
        assert_eq!(status, 200, "{answer}");
    });
    assert_eq!(observed[0]["result"]["kv"]["value"], "YWxpY2U=");
    assert_eq!(observed[1]["result"]["kv"]["value"], "YWxpY2UgYWdhaW4=");
    let (status, now) = post(&format!("{url}/v3/election/leader"), r#"{"name":"b2ZmaWNl"}"#, &[]);
    assert_eq!((status, now["kv"]["value"].as_str()), (200, Some("YWxpY2UgYWdhaW4=")));
    let resign = serde_json::json!({ "leader": leader }).to_string();
    let (status, _) = post(&format!("{url}/v3/election/resign"), &resign, &[]);
    assert_eq!(status, 200);
    let (status, none) = post(&format!("{url}/v3/election/leader"), r#"{"name":"b2ZmaWNl"}"#, &[]);
    assert_eq!((status, none["error"].as_str()), (500, Some("election: no leader")));
}
