use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Cairn, etcdctl, free_port, http_get, stdout};

#[test]
fn metrics_carry_etcds_names_and_health_answers_as_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_addr = free_port();
    let cairn = Cairn::start(dir.path(), &[&format!("--listen-metrics-urls=http://{metrics_addr}")]);
    stdout(&etcdctl(&cairn, &["put", "a", "1"]));
    stdout(&etcdctl(&cairn, &["put", "a", "2"]));

    let (status, body) = http_get(metrics_addr, "/health");
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", r#"{"health":"true","reason":""}"#));

    let (status, metrics) = http_get(metrics_addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let value = |name: &str| -> f64 {
        let line = metrics
            .lines()
            .find(|line| line.split([' ', '{']).next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing from\n{metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(value("etcd_server_has_leader"), 1.0);
    assert_eq!(value("etcd_server_is_leader"), 1.0);
    assert_eq!(value("etcd_server_leader_changes_seen_total"), 1.0);
    assert_eq!(value("etcd_server_proposals_pending"), 0.0);
    assert_eq!(value("etcd_server_proposals_failed_total"), 0.0);
    // The leader's empty entry and two puts.
    assert!(value("etcd_server_proposals_committed_total") >= 3.0);
    assert!(value("etcd_server_proposals_applied_total") >= 3.0);
    assert!(value("etcd_disk_wal_fsync_duration_seconds_count") >= 2.0);
    assert!(value("etcd_disk_backend_commit_duration_seconds_count") >= 1.0);
    assert!(value("etcd_mvcc_db_total_size_in_bytes") > 0.0);
    assert!(
        metrics.contains(r#"etcd_server_request_duration_seconds_count{outcome="success",type="put"} 2"#),
        "{metrics}"
    );
    assert!(
        !metrics.contains("_seconds_seconds")
            && !metrics.contains("target_info")
            && !metrics.contains("otel_scope")
    );
}

#[test]
fn the_readme_run_command_serves_etcdctls_default_endpoint() {
    // `cairn` with no flags, in a fresh working directory, as the README runs it.
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect("127.0.0.1:2379").is_err() {
        assert!(Instant::now() < deadline, "cairn did not listen on etcd's default port 2379");
        std::thread::sleep(Duration::from_millis(20));
    }
    let etcdctl =
        |args: &[&str]| Command::new("etcdctl").env("ETCDCTL_API", "3").args(args).output().unwrap();
    let put = etcdctl(&["put", "a", "1"]);
    let get = etcdctl(&["get", "a"]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(String::from_utf8_lossy(&put.stdout), "OK\n", "{}", String::from_utf8_lossy(&put.stderr));
    assert_eq!(String::from_utf8_lossy(&get.stdout), "a\n1\n");
    assert!(dir.path().join("default.cairn").join("member").is_dir(), "the default data dir");
}

/// As etcd's `/health`: a raised alarm makes the member unhealthy unless the probe
/// excludes it (`?exclude=NOSPACE`, as kubeadm-style probes ask), and
/// `?serializable=true` answers without a read index round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_a_raised_alarm_unless_excluded() {
    use etcd_client::{AlarmAction, AlarmOptions, AlarmType};
    let dir = tempfile::tempdir().unwrap();
    let metrics_addr = free_port();
    let cairn = Cairn::start(dir.path(), &[&format!("--listen-metrics-urls=http://{metrics_addr}")]);
    let mut client = cairn.client().await;
    let member = client.status().await.unwrap().header().unwrap().member_id();
    let health = |path: &'static str| http_get(metrics_addr, path);
    let healthy = ("HTTP/1.1 200 OK".to_owned(), r#"{"health":"true","reason":""}"#.to_owned());
    assert_eq!(health("/health?serializable=true"), healthy);

    let mut options = AlarmOptions::new();
    options.with_member(member);
    client.alarm(AlarmAction::Activate, AlarmType::Nospace, Some(options.clone())).await.unwrap();
    let alarmed = (
        "HTTP/1.1 503 Service Unavailable".to_owned(),
        r#"{"health":"false","reason":"ALARM NOSPACE"}"#.to_owned(),
    );
    assert_eq!(health("/health"), alarmed);
    assert_eq!(health("/health?serializable=true"), alarmed);
    assert_eq!(health("/health?exclude=NOSPACE"), healthy);
    assert_eq!(health("/health?exclude=CORRUPT"), alarmed);

    client.alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(options)).await.unwrap();
    assert_eq!(health("/health"), healthy);
}

/// The standard gRPC health service (`grpc.health.v1.Health`), which etcd registers
/// and gRPC health probes (Kubernetes' `grpc:` probe) call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_health_service_says_serving() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let channel = tonic::transport::Endpoint::from_shared(cairn.endpoint()).unwrap().connect().await.unwrap();
    let mut client = HealthClient::new(channel);
    let answer = client.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(answer.status(), ServingStatus::Serving);
}
