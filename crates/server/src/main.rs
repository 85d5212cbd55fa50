//! The `cairn` binary: etcd's command line, serving etcd's v3 gRPC API as one member
//! of a raft cluster (a cluster of one by default).
//!
//! **Invariant:** a write is acknowledged only after its raft entry is fsync'd in the
//! write-ahead log and applied; `cairn` accepts etcd's flag names and forms (`--flag value`,
//! `--flag=value`, `ETCD_*` environment variables), and an unknown flag is an error.

use cairn_mvcc as watch;

mod alarms;
mod apply;
mod auth;
mod compactor;
mod config;
mod corrupt;
mod error;
mod flags;
mod grpc;
mod lease;
mod log_budget;
use cairn_backend::members;
mod metrics;
mod node;
mod storage;
use cairn_net::tls;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cairn_api::etcdserverpb::AlarmType;
use cairn_idgen::Generator;
use cairn_proposal::{Gate, Parts};
use cairn_wait::Wait;
use clap::Parser;
use tracing::info;

use crate::config::Config;

/// mimalloc: glibc's malloc was a fifth of the server's CPU under load (gRPC buffers
/// allocated on one thread and freed on another).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Errors end the process with one plain line, `Error: ` and the context chain
/// (`cannot open the database: storage: …`), whatever `RUST_BACKTRACE` says: a
/// configuration error names the flag and the reason, not a stack.
/// Where snapshots from the leader are saved as they arrive, in `<data-dir>/member`:
/// a directory of Cairn's own, cleared at every start (etcd keeps its database in
/// `member/snap`, which Cairn never touches).
const SNAPSHOTS_DIR: &str = "cairn-snap";

fn main() -> std::process::ExitCode {
    match start() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn start() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_none_or(|first| first != "snapshot")
        && let Some(refusal) = flags::refused(args, |name| std::env::var(name).ok())
    {
        anyhow::bail!(refusal);
    }
    let mut config = Config::parse();
    if let Some(command) = config.command.take() {
        return Ok(cairn_utl::run(command)?);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(config.log_level()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if config.logs_to_stdout() {
        builder
            .with_writer(std::io::stdout)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init();
    } else {
        builder
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
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
    let registry = cairn_gateway::metrics::install().map_err(anyhow::Error::msg)?;
    let store = Arc::new(storage::Store::open(&data_dir).context("cannot open the database")?);
    let db = store.get();

    let peer_tls = tls::peer_client_config(&config.peer_tls_files())?;
    let flags = cairn_utl::bootstrap::Flags {
        name: config.name.clone(),
        initial: config.initial_members()?,
        token: config.initial_cluster_token.clone(),
        existing: config.joins_existing(),
        peer_urls: config.peer_urls(),
    };
    let start = cairn_utl::bootstrap::start(&db, flags, peer_tls.as_ref()).await?;
    let cairn_utl::bootstrap::Start { member_id, cluster_id, members, voters, had_data } = start;
    let peers: std::collections::HashMap<u64, Vec<String>> = members
        .iter()
        .filter(|member| member.name != members::REMOVED)
        .map(|member| (member.id, member.peer_ur_ls.clone()))
        .collect();
    let multi_member = peers.len() > 1;
    let removed = Arc::new(tokio::sync::Notify::new());
    let transport = cairn_transport::Transport::start(
        cluster_id,
        member_id,
        &peers,
        Arc::clone(&removed),
        peer_tls.clone(),
    );
    let tokens = config.token_provider()?;
    let auth = Arc::new(std::sync::RwLock::new(cairn_apply::load_auth(&db, Arc::clone(&tokens))?));
    sweep_tokens(tokens);
    let (index, attached) = storage::mvcc::load_index(&db)?;
    // As etcd: only a member with data checks, before its raft starts.
    if config.experimental_initial_corrupt_check && had_data {
        let local = corrupt::local_hash(&db, &storage::mvcc::read_index(&index), member_id)?;
        corrupt::initial_check(
            local,
            member_id,
            &peers,
            peer_tls.as_ref(),
            cairn_proposal::Config::with_election_timeout(config.election_timeout()).request_timeout,
        )
        .await?;
    }
    let lessor = Arc::new(std::sync::Mutex::new(cairn_apply::load_lessor(&db, attached)?));
    let hub = watch::Hub::new();
    let wait = Wait::new();
    let alarms: alarms::SharedAlarms = Arc::new(std::sync::Mutex::new(alarms::load(&db)?));
    // From here on every user takes the database from `store`: a defragmentation
    // replaces it, and the old file's space comes back only once nothing holds it.
    drop(db);
    let quota_exceeded = Arc::new(tokio::sync::Notify::new());
    let node_config = node::NodeConfig {
        member_id,
        cluster_id,
        heartbeat: config.heartbeat(),
        election_ticks: config.election_ticks(),
        snapshot_count: config.snapshot_count,
        wal_dir: data_dir.join("member").join("wal"),
        snap_dir: data_dir.join("member").join(SNAPSHOTS_DIR),
        voters,
        removed: Arc::clone(&removed),
        min_lease_ttl: lease::min_ttl(config.election_timeout()),
        quota: config.quota(),
        compaction_batch: config.experimental_compaction_batch_limit,
        quota_exceeded: Arc::clone(&quota_exceeded),
    };
    let node = node::start(
        Arc::clone(&store),
        node_config,
        node::StateHandles {
            wait: wait.clone(),
            auth: Arc::clone(&auth),
            lessor: Arc::clone(&lessor),
            index: Arc::clone(&index),
            hub: hub.clone(),
            alarms: Arc::clone(&alarms),
        },
        Some(Arc::clone(&transport)),
    )
    .context("cannot start raft")?;
    let data_file = data_dir.join("member").join("cairn.redb");
    metrics::observe_node(&metrics::meter(), &node.shared, data_file);

    let mut gate_config = cairn_proposal::Config::with_election_timeout(config.election_timeout());
    gate_config.max_request_bytes = config.max_request_bytes;
    let request_timeout = gate_config.request_timeout;
    let gate = Gate::new(
        Parts {
            proposer: node.proposer.clone(),
            indexes: Arc::clone(&node.shared.status),
            leadership: Arc::clone(&node.shared.status),
            auth: auth::ServerAuth(Arc::clone(&auth)),
            ids: Arc::new(Generator::with_system_clock(member_id)),
            wait,
        },
        gate_config,
    );
    let service = grpc::Service::new(grpc::Inner {
        gate,
        proposer: node.proposer.clone(),
        shared: Arc::clone(&node.shared),
        db: Arc::clone(&store),
        index,
        auth,
        lessor,
        hub,
        alarms: Arc::clone(&alarms),
        config: grpc::ServiceConfig {
            quota: config.quota(),
            cluster_token: config.initial_cluster_token.clone(),
            max_txn_ops: config.max_txn_ops,
            max_request_bytes: config.max_request_bytes,
            request_timeout,
            bcrypt_cost: config.bcrypt_cost,
            strict_reconfig_check: config.strict_reconfig_check,
            watch_progress_notify_interval: config.watch_progress_notify_interval()?,
            leader_loss_grace: config.election_timeout() / 2,
        },
    });

    service.spawn_lease_duties(config.lease_checkpoint_interval()?);
    if let Some(interval) = config.corrupt_check_interval()? {
        service.spawn_corrupt_check(interval, peer_tls.clone());
    }
    if let Some(retention) = config.auto_compaction()? {
        info!(?retention, "auto-compaction on");
        let now = tokio::time::Instant::now().into_std();
        let compactor = compactor::Compactor::new(retention, now, service.current_revision()?);
        let (reader, writer) = (service.clone(), service.clone());
        compactor::spawn(
            compactor,
            move || {
                let revision = reader.current_revision().unwrap_or_default();
                (revision, reader.shared.leader_id() == reader.shared.member_id())
            },
            move |revision| {
                let service = writer.clone();
                async move { service.auto_compact(revision).await }
            },
        );
    }
    {
        let service = service.clone();
        let marks =
            alarms::Watermarks { low: config.disk_low_water_bytes, high: 2 * config.disk_low_water_bytes };
        let raised = {
            let alarms = Arc::clone(&alarms);
            move || alarms::lock(&alarms).contains(&(member_id, AlarmType::Nospace as i32))
        };
        alarms::watch_disk(data_dir.clone(), marks, raised, move || {
            let service = service.clone();
            async move { service.raise_no_space().await }
        });
    }
    {
        // An applied write left the store over its quota: raise NOSPACE (etcd raises
        // it from its apply loop).
        let service = service.clone();
        tokio::spawn(async move {
            loop {
                quota_exceeded.notified().await;
                service.raise_no_space().await;
            }
        });
    }
    let receiver = {
        let proposer = node.proposer.clone();
        let is_removed = Arc::clone(&node.shared);
        let received_failures = metrics::meter()
            .u64_counter("etcd_network_peer_received_failures")
            .with_description("The total number of receive failures from peers.")
            .build();
        // An append: raft's 1 MiB of entries, plus one entry of the largest request.
        let max_message = 1024 * 1024 + config.max_request_bytes + grpc::GRPC_OVERHEAD_BYTES;
        cairn_transport::Receiver::new(cluster_id, max_message, move |message| proposer.deliver(message))
            .removed(move |id| is_removed.is_removed(id))
            .snapshots_in(data_dir.join("member").join(SNAPSHOTS_DIR))
            .on_stream({
                let transport = Arc::clone(&transport);
                move |from| transport.wake(from)
            })
            .on_refused(move |from| {
                received_failures.add(1, &[opentelemetry::KeyValue::new("From", format!("{from:x}"))])
            })
    };
    // A batch holds many messages, each checked against its own limit as it is taken
    // apart; a snapshot comes in chunks of about 1 MiB.
    let peer_routes = tonic::service::Routes::default()
        .add_service(
            cairn_api::cairnpb::peer_server::PeerServer::new(receiver)
                .max_decoding_message_size(cairn_transport::MAX_PEER_MESSAGE + grpc::GRPC_OVERHEAD_BYTES),
        )
        .add_service(
            cairn_transport::MembershipService::new(cluster_id, Arc::new(service.clone())).into_server(),
        )
        .add_service(cairn_transport::LeasesService::server(Arc::new(service.clone())));
    let peer_server_tls =
        tls::server_config(&config.peer_tls_files(), &data_dir.join("fixtures").join("peer"))?;
    match config.peer_listeners().await {
        Ok(listeners) => {
            cairn_transport::serve(peer_routes, listeners, peer_server_tls);
            info!(
                member = format_args!("{:x}", transport.member_id()),
                peers = peers.len() - 1,
                "serving peer traffic"
            );
        }
        // Alone, a member needs its peer port only once another member is added.
        Err(error) if !multi_member => {
            tracing::warn!(%error, "cannot listen for peers; adding members needs --listen-peer-urls");
        }
        Err(error) => return Err(error),
    }
    let listeners = config.client_listeners().await?;
    let http =
        metrics::routes(&registry, Arc::clone(&node.shared), node.proposer.clone(), Arc::clone(&alarms));
    cairn_gateway::metrics::serve(http.clone(), config.metrics_listeners().await?);
    let _ = tokio::time::timeout(request_timeout, node.shared.leader_elected()).await;
    service.publish_member(&config.name, config.client_urls()).await;
    info!("published local member to cluster");
    info!("enabled capabilities for version 3.5");
    let stop = async move {
        tokio::select! {
            () = cairn_net::listen::shutdown_signal() => {}
            () = removed.notified() => info!("the member has been permanently removed from the cluster; stopping"),
        }
    };
    let tls = tls::server_config(&config.client_tls_files(), &data_dir.join("fixtures").join("client"))?;
    let served = grpc::serve(service, listeners, tls, http, stop).await;
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
