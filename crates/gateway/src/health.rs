//! etcd's health endpoints, served beside the JSON API: `/health` (3.4 and 3.5),
//! `/livez` and `/readyz` (3.5), and `/version`, answered from a [`Probe`] of the
//! member: Cairn's own state, or any etcd v3 endpoint through [`GrpcProbe`].

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use cairn_api::etcdserverpb::alarm_request::AlarmAction;
use cairn_api::etcdserverpb::kv_client::KvClient;
use cairn_api::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_api::etcdserverpb::{AlarmRequest, AlarmType, RangeRequest, StatusRequest};
use tonic::transport::Channel;

/// How long a linearizable read may take before a member counts as unhealthy
/// (etcd's one second).
pub const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// What etcd's health endpoints ask of a member.
pub trait Probe: Clone + Send + Sync + 'static {
    /// The alarms raised in the cluster, as etcd names them (`NOSPACE`, `CORRUPT`);
    /// `None` when they cannot be listed.
    fn alarms(&self) -> impl Future<Output = Option<Vec<AlarmType>>> + Send;
    /// Whether the member knows a leader.
    fn has_leader(&self) -> impl Future<Output = bool> + Send;
    /// Whether a linearizable read completes within [`READ_TIMEOUT`].
    fn linearizable_read(&self) -> impl Future<Output = bool> + Send;
}

/// `/health`, `/livez`, `/readyz` and `/version` (reporting `version`, and the cluster
/// version etcd derives from it) over `probe`.
pub fn routes<P: Probe>(probe: P, version: &'static str) -> Router {
    Router::new()
        .route("/health", get(health::<P>))
        .route("/livez", get(|| async { (StatusCode::OK, "ok") }))
        .route("/readyz", get(readyz::<P>))
        .route("/version", get(move || async move { version_body(version) }))
        .with_state(probe)
}

fn version_body(version: &str) -> impl IntoResponse + use<> {
    let mut parts = version.split('.');
    let cluster = format!("{}.{}.0", parts.next().unwrap_or("3"), parts.next().unwrap_or("5"));
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"etcdserver":"{version}","etcdcluster":"{cluster}"}}"#),
    )
}

/// etcd's `/health`: unhealthy while an alarm is raised (unless `?exclude=NAME`
/// leaves it out), or without a leader; otherwise healthy when a linearizable read
/// completes in time, or at once with `?serializable=true`.
async fn health<P: Probe>(State(probe): State<P>, RawQuery(query): RawQuery) -> impl IntoResponse {
    let unhealthy = |reason: &str| {
        (StatusCode::SERVICE_UNAVAILABLE, format!(r#"{{"health":"false","reason":"{reason}"}}"#))
    };
    let healthy = || (StatusCode::OK, r#"{"health":"true","reason":""}"#.to_owned());
    let query = query.unwrap_or_default();
    let params: Vec<(&str, &str)> = query.split('&').filter_map(|pair| pair.split_once('=')).collect();
    let excluded: Vec<&str> =
        params.iter().filter(|(key, _)| *key == "exclude").map(|(_, value)| *value).collect();
    let Some(raised) = probe.alarms().await else { return unhealthy("ALARM ERROR") };
    if let Some(alarm) = raised.iter().find(|alarm| !excluded.contains(&alarm.as_str_name())) {
        return unhealthy(&format!("ALARM {}", alarm.as_str_name()));
    }
    if !probe.has_leader().await {
        return unhealthy("RAFT NO LEADER");
    }
    if params.contains(&("serializable", "true")) || probe.linearizable_read().await {
        healthy()
    } else {
        unhealthy("QGET ERROR")
    }
}

/// etcd 3.5's `/readyz`: no CORRUPT alarm, and a linearizable read completes in time.
async fn readyz<P: Probe>(State(probe): State<P>) -> impl IntoResponse {
    let corrupt = probe.alarms().await.is_none_or(|raised| raised.contains(&AlarmType::Corrupt));
    if corrupt {
        let body = "[-]data_corruption failed: alarm activated\nhealth check failed";
        return (StatusCode::SERVICE_UNAVAILABLE, body.to_owned());
    }
    if probe.linearizable_read().await {
        (StatusCode::OK, "ok".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "[-]linearizable_read failed\nhealth check failed".to_owned())
    }
}

/// A [`Probe`] of any etcd v3 endpoint, as etcd 3.5's checks ask it: the alarm list
/// (`Maintenance.Alarm`), the leader (`Maintenance.Status`), and a linearizable
/// `Range` of the key `health`.
#[derive(Debug, Clone)]
pub struct GrpcProbe(pub Channel);

impl Probe for GrpcProbe {
    async fn alarms(&self) -> Option<Vec<AlarmType>> {
        let request =
            AlarmRequest { action: AlarmAction::Get as i32, member_id: 0, alarm: AlarmType::None as i32 };
        let mut client = MaintenanceClient::new(self.0.clone());
        let listed = tokio::time::timeout(READ_TIMEOUT, client.alarm(request)).await.ok()?.ok()?.into_inner();
        Some(listed.alarms.iter().filter_map(|member| AlarmType::try_from(member.alarm).ok()).collect())
    }

    async fn has_leader(&self) -> bool {
        let mut client = MaintenanceClient::new(self.0.clone());
        let status = tokio::time::timeout(READ_TIMEOUT, client.status(StatusRequest {})).await;
        matches!(status, Ok(Ok(status)) if status.get_ref().leader != 0)
    }

    async fn linearizable_read(&self) -> bool {
        let mut client = KvClient::new(self.0.clone());
        let request = RangeRequest { key: b"health".to_vec(), ..Default::default() };
        matches!(tokio::time::timeout(READ_TIMEOUT, client.range(request)).await, Ok(Ok(_)))
    }
}
