//! etcd's health endpoints over a probe: an in-memory member whose alarms, leader
//! and reads a test sets, and a real etcd through `GrpcProbe`.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use cairn_api::etcdserverpb::AlarmType;
use cairn_gateway::health::{GrpcProbe, Probe, routes};
use tower::ServiceExt as _;

/// The alarms (`None`: cannot be listed), whether there is a leader, whether reads complete.
type Condition = (Option<Vec<AlarmType>>, bool, bool);

/// A member as a test wants it.
#[derive(Clone, Default)]
struct Member(Arc<Mutex<Condition>>);

impl Member {
    fn set(&self, alarms: Option<Vec<AlarmType>>, leader: bool, reads: bool) {
        *self.0.lock().unwrap() = (alarms, leader, reads);
    }
}

impl Probe for Member {
    async fn alarms(&self) -> Option<Vec<AlarmType>> {
        self.0.lock().unwrap().0.clone()
    }
    async fn has_leader(&self) -> bool {
        self.0.lock().unwrap().1
    }
    async fn linearizable_read(&self) -> bool {
        self.0.lock().unwrap().2
    }
}

async fn get(router: &axum::Router, path: &str) -> (u16, String) {
    let request = Request::get(path).body(Body::empty()).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn healthy() -> (u16, String) {
    (200, r#"{"health":"true","reason":""}"#.to_owned())
}

fn unhealthy(reason: &str) -> (u16, String) {
    (503, format!(r#"{{"health":"false","reason":"{reason}"}}"#))
}

fn plain(status: u16, body: &str) -> (u16, String) {
    (status, body.to_owned())
}

#[tokio::test]
async fn health_and_readiness_answer_as_etcd_does() {
    let member = Member::default();
    let router = routes(member.clone(), "3.5.0");

    member.set(Some(vec![]), true, true);
    assert_eq!(get(&router, "/health").await, healthy());
    assert_eq!(get(&router, "/readyz").await, plain(200, "ok"));
    assert_eq!(get(&router, "/livez").await, plain(200, "ok"));
    assert_eq!(get(&router, "/version").await, plain(200, r#"{"etcdserver":"3.5.0","etcdcluster":"3.5.0"}"#));

    // A read that does not complete: unhealthy, unless serializable was asked for.
    member.set(Some(vec![]), true, false);
    assert_eq!(get(&router, "/health").await, unhealthy("QGET ERROR"));
    assert_eq!(get(&router, "/health?serializable=true").await, healthy());
    assert_eq!(get(&router, "/readyz").await, plain(503, "[-]linearizable_read failed\nhealth check failed"));

    member.set(Some(vec![]), false, true);
    assert_eq!(get(&router, "/health?serializable=true").await, unhealthy("RAFT NO LEADER"));

    // An alarm, unless excluded; CORRUPT also makes the member not ready.
    member.set(Some(vec![AlarmType::Nospace]), true, true);
    assert_eq!(get(&router, "/health").await, unhealthy("ALARM NOSPACE"));
    assert_eq!(get(&router, "/health?exclude=NOSPACE").await, healthy());
    assert_eq!(get(&router, "/health?exclude=CORRUPT").await, unhealthy("ALARM NOSPACE"));
    assert_eq!(get(&router, "/readyz").await, plain(200, "ok"));
    member.set(Some(vec![AlarmType::Corrupt]), true, true);
    let not_ready = plain(503, "[-]data_corruption failed: alarm activated\nhealth check failed");
    assert_eq!(get(&router, "/readyz").await, not_ready);
    member.set(None, true, true);
    assert_eq!(get(&router, "/health").await, unhealthy("ALARM ERROR"));
}

struct Etcd {
    child: Child,
    _dir: tempfile::TempDir,
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

#[tokio::test]
async fn a_real_etcd_is_healthy_through_its_grpc_api() {
    let binary = std::env::var("ETCD_BIN").unwrap_or_else(|_| "/usr/bin/etcd".into());
    let dir = tempfile::tempdir().unwrap();
    let client = format!("http://127.0.0.1:{}", free_port());
    let peer = format!("http://127.0.0.1:{}", free_port());
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
    let _etcd = Etcd { child, _dir: dir };
    let channel = tonic::transport::Endpoint::from_shared(client).unwrap().connect_lazy();
    let router = routes(GrpcProbe(channel), "3.4.0");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let answer = get(&router, "/health").await;
        if answer == healthy() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "etcd never became healthy: {answer:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(&router, "/readyz").await, plain(200, "ok"));
}
