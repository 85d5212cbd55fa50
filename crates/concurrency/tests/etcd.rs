//! The services in front of a real etcd (3.4, from Debian's `etcd-server`, or the
//! binary `ETCD_BIN` names): contention for a lock, and an election's life.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cairn_api::etcdserverpb::RangeRequest;
use cairn_api::etcdserverpb::kv_client::KvClient;
use cairn_api::v3electionpb::election_client::ElectionClient;
use cairn_api::v3electionpb::{CampaignRequest, LeaderRequest, ProclaimRequest, ResignRequest};
use cairn_api::v3lockpb::lock_client::LockClient;
use cairn_api::v3lockpb::{LockRequest, UnlockRequest};
use cairn_concurrency::Concurrency;
use tonic::transport::Channel;

const DEADLINE: Duration = Duration::from_secs(20);

struct Etcd {
    child: Child,
    _dir: tempfile::TempDir,
    url: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn etcd() -> (Etcd, Channel) {
    let binary = std::env::var("ETCD_BIN").unwrap_or_else(|_| "/usr/bin/etcd".into());
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) =
        (format!("http://127.0.0.1:{}", free_port()), format!("http://127.0.0.1:{}", free_port()));
    let child = Command::new(&binary)
        .args(["--data-dir", &dir.path().display().to_string(), "--name", "default"])
        .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("default={peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("cannot start {binary} (apt install etcd-server, or set ETCD_BIN): {error}")
        });
    let etcd = Etcd { child, _dir: dir, url: client };
    let channel = tonic::transport::Endpoint::from_shared(etcd.url.clone()).unwrap().connect_lazy();
    let ready = async {
        while KvClient::new(channel.clone())
            .range(RangeRequest { key: b"x".to_vec(), ..Default::default() })
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(DEADLINE, ready).await.expect("etcd did not become ready");
    (etcd, channel)
}

/// The services in front of `etcd`, on a port of their own.
async fn serve(etcd: Channel) -> Channel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let concurrency = Concurrency::new(etcd);
    let router = tonic::transport::Server::builder()
        .add_service(concurrency.lock_server())
        .add_service(concurrency.election_server());
    tokio::spawn(router.serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)));
    tonic::transport::Endpoint::from_shared(format!("http://{address}")).unwrap().connect_lazy()
}

async fn keys_under(etcd: &Channel, prefix: &str) -> i64 {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    let range = RangeRequest { key: prefix.into(), range_end: end, count_only: true, ..Default::default() };
    KvClient::new(etcd.clone()).range(range).await.unwrap().into_inner().count
}

#[tokio::test]
async fn a_second_locker_waits_until_the_first_unlocks() {
    let (_etcd, etcd) = etcd().await;
    let services = serve(etcd.clone()).await;
    let mut first = LockClient::new(services.clone());
    let held = first.lock(LockRequest { name: b"job".to_vec(), lease: 0 }).await.unwrap().into_inner();
    assert!(held.key.starts_with(b"job/"));

    let mut second = LockClient::new(services.clone());
    let waiting =
        tokio::spawn(async move { second.lock(LockRequest { name: b"job".to_vec(), lease: 0 }).await });
    // The second key is in place: the second locker is waiting behind the first.
    tokio::time::timeout(DEADLINE, async {
        while keys_under(&etcd, "job/").await < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert!(!waiting.is_finished());

    first.unlock(UnlockRequest { key: held.key.clone() }).await.unwrap();
    let got = tokio::time::timeout(DEADLINE, waiting).await.unwrap().unwrap().unwrap().into_inner();
    assert_ne!(got.key, held.key);
    assert!(got.header.unwrap().revision > held.header.unwrap().revision);
}

#[tokio::test]
async fn an_election_is_won_observed_proclaimed_and_resigned() {
    let (_etcd, etcd) = etcd().await;
    let services = serve(etcd).await;
    let mut client = ElectionClient::new(services.clone());
    let name = b"leader".to_vec();
    let campaign = CampaignRequest { name: name.clone(), lease: 0, value: b"one".to_vec() };
    let leader = client.campaign(campaign).await.unwrap().into_inner().leader.unwrap();

    let mut observed = client.observe(LeaderRequest { name: name.clone() }).await.unwrap().into_inner();
    let first = tokio::time::timeout(DEADLINE, observed.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.kv.unwrap().value, b"one");

    client.proclaim(ProclaimRequest { leader: Some(leader.clone()), value: b"two".to_vec() }).await.unwrap();
    let second = tokio::time::timeout(DEADLINE, observed.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(second.kv.unwrap().value, b"two");
    let now = client.leader(LeaderRequest { name: name.clone() }).await.unwrap().into_inner();
    assert_eq!(now.kv.unwrap().value, b"two");

    client.resign(ResignRequest { leader: Some(leader) }).await.unwrap();
    let none = client.leader(LeaderRequest { name }).await.unwrap_err();
    assert_eq!(none.message(), "election: no leader");
}
