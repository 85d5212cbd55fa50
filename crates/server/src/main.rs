//! The `cairn` binary: etcd's command line, serving etcd's v3 gRPC API from a
//! single raft member.
//!
//! **Invariant:** a write is acknowledged only after its raft entry is fsync'd and
//! applied; `cairn` accepts etcd's flag names and forms (`--flag value`,
//! `--flag=value`, `ETCD_*` environment variables), and an unknown flag is an error.

mod apply;
mod auth;
mod config;
mod error;
mod grpc;
mod identity;
mod lease;
mod metrics;
mod node;
mod storage;
mod transport;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cairn_idgen::Generator;
use cairn_proposal::{Gate, Parts};
use cairn_wait::Wait;
use clap::Parser;
use tracing::info;

use crate::config::Config;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    config.validate()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?
        .block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    info!(name = %config.name, data_dir = %data_dir.display(), "starting cairn");
    // First, so that every instrument created below is live.
    let registry = metrics::install()?;
    let db = Arc::new(storage::open(&data_dir).context("cannot open the database")?);

    let initial = config.initial_members()?;
    let ids: std::collections::BTreeMap<&str, u64> = initial
        .iter()
        .map(|(name, urls)| (name.as_str(), identity::member_id(urls, &config.initial_cluster_token)))
        .collect();
    let member = ids[config.name.as_str()];
    let all: Vec<u64> = ids.values().copied().collect();
    let (member_id, cluster_id) = identity::load_or_store(&db, (member, identity::cluster_id(&all)))?;
    let members: Vec<cairn_api::etcdserverpb::Member> = initial
        .iter()
        .map(|(name, urls)| cairn_api::etcdserverpb::Member {
            id: ids[name.as_str()],
            name: name.clone(),
            peer_ur_ls: urls.clone(),
            client_ur_ls: if *name == config.name { config.client_urls() } else { Vec::new() },
            is_learner: false,
        })
        .collect();
    let peers: std::collections::HashMap<u64, Vec<String>> =
        initial.iter().map(|(name, urls)| (ids[name.as_str()], urls.clone())).collect();
    let transport = (peers.len() > 1).then(|| transport::Transport::start(cluster_id, member_id, &peers));
    info!(
        member_id = format_args!("{member_id:x}"),
        cluster_id = format_args!("{cluster_id:x}"),
        "member identity"
    );

    let tokens = config.token_provider()?;
    let auth = Arc::new(std::sync::RwLock::new(auth::load(&db, Arc::clone(&tokens))?));
    sweep_tokens(tokens);
    let lessor = Arc::new(std::sync::Mutex::new(lease::load(&db)?));
    let hub = watch::Hub::new();
    let wait = Wait::new();
    let node_config = node::NodeConfig {
        member_id,
        cluster_id,
        heartbeat: config.heartbeat(),
        election_ticks: config.election_ticks(),
        snapshot_count: config.snapshot_count,
        voters: all.clone(),
        disk: metrics::DiskMetrics::new(&metrics::meter()),
        min_lease_ttl: lease::min_ttl(config.election_timeout()),
    };
    let node = node::start(
        Arc::clone(&db),
        node_config,
        wait.clone(),
        Arc::clone(&auth),
        Arc::clone(&lessor),
        hub.clone(),
        transport.clone(),
    )
    .context("cannot start raft")?;
    let data_file = data_dir.join("member").join("cairn.redb");
    metrics::observe_node(&metrics::meter(), &node.shared, data_file.clone());

    let mut gate_config = cairn_proposal::Config::with_election_timeout(config.election_timeout());
    gate_config.max_request_bytes = config.max_request_bytes;
    let request_timeout = gate_config.request_timeout;
    let gate = Gate::new(
        Parts {
            proposer: node.proposer.clone(),
            indexes: Arc::clone(&node.shared),
            leadership: Arc::clone(&node.shared),
            auth: Arc::clone(&auth),
            ids: Arc::new(Generator::with_system_clock(member_id)),
            wait,
        },
        gate_config,
    );
    let service = grpc::Service::new(grpc::Inner {
        gate,
        proposer: node.proposer.clone(),
        shared: Arc::clone(&node.shared),
        db: Arc::clone(&db),
        auth,
        lessor,
        hub,
        config: grpc::ServiceConfig {
            members,
            max_txn_ops: config.max_txn_ops,
            max_request_bytes: config.max_request_bytes,
            request_timeout,
            bcrypt_cost: config.bcrypt_cost,
            watch_progress_notify_interval: config.watch_progress_notify_interval()?,
            data_file,
        },
    });

    service.spawn_lease_duties(config.lease_checkpoint_interval()?);
    if let Some(transport) = &transport {
        let proposer = node.proposer.clone();
        let peer_service = transport::PeerService {
            cluster_id: transport.cluster_id(),
            deliver: Arc::new(move |message| proposer.deliver(message)),
        };
        grpc::serve_peers(peer_service, config.peer_listeners().await?);
        info!(
            member = format_args!("{:x}", transport.member_id()),
            peers = peers.len() - 1,
            "serving peer traffic"
        );
    }
    let listeners = config.client_listeners().await?;
    metrics::serve(
        registry,
        Arc::clone(&node.shared),
        node.proposer.clone(),
        config.metrics_listeners().await?,
    );
    wait_for_leader(&node.shared, request_timeout).await;
    info!("published local member to cluster");
    info!("enabled capabilities for version 3.5");
    let served = grpc::serve(service, listeners, shutdown_signal()).await;
    node.stop();
    served
}

/// Forgets expired simple tokens once a second, as etcd does.
fn sweep_tokens(tokens: Arc<dyn cairn_auth::TokenProvider>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        loop {
            ticks.tick().await;
            tokens.sweep_expired();
        }
    });
}

/// Waits until the member sees a leader (itself, at once, when it is alone).
async fn wait_for_leader(shared: &node::Shared, patience: Duration) {
    let deadline = tokio::time::Instant::now() + patience;
    while shared.leader_id() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops cairn");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => info!("received SIGINT, shutting down"),
            _ = term.recv() => info!("received SIGTERM, shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
        info!("received Ctrl-C, shutting down");
    }
}
