//! `catch-up`: a member of a three-member cluster is killed, misses many writes, and
//! is started again; how long until it has applied everything the leader had, and
//! how much memory it took, on a fresh Cairn cluster and a fresh etcd cluster. Both
//! run with the same `--snapshot-count`, so that the member, further behind than the
//! log the leader keeps, catches up from a snapshot.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn_api::etcdserverpb::kv_client::KvClient;
use cairn_api::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_api::etcdserverpb::{PutRequest, RangeRequest, StatusRequest, StatusResponse};
use tonic::transport::Channel;

use crate::compare::Server;

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CatchUpOptions {
    /// The `cairn` binary (default: beside this one).
    #[arg(long)]
    cairn: Option<PathBuf>,
    /// The `etcd` binary; Cairn runs alone when it is not found.
    #[arg(long, default_value = "etcd")]
    etcd: PathBuf,
    /// Writes (puts of distinct keys) the stopped member misses.
    #[arg(long, default_value_t = 200_000)]
    writes: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    val_size: usize,
    /// Both servers' `--snapshot-count`.
    #[arg(long, default_value_t = 10_000)]
    snapshot_count: u64,
}

/// What one cluster did.
struct Figures {
    load: Duration,
    caught_up: Duration,
    /// The longest linearizable read on the leader while the member caught up: each
    /// needs the leader's raft thread and a quorum round, so a leader stalled by the
    /// snapshot would show here.
    leader_read_stall: Duration,
    applied: u64,
    peak_rss_bytes: u64,
}

/// A channel to `endpoint` that gives up connecting after 1 s and waits up to 10 min
/// for an answer (a count of millions of keys, a restore).
pub(crate) async fn channel(endpoint: &str) -> anyhow::Result<Channel> {
    Ok(tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(600))
        .connect()
        .await?)
}

async fn status(endpoint: &str) -> anyhow::Result<StatusResponse> {
    let mut maintenance = MaintenanceClient::new(channel(endpoint).await?);
    Ok(maintenance.status(StatusRequest {}).await?.into_inner())
}

/// The member that leads, asking each until one says who does.
async fn leader(server: &Server) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (n, endpoint) in server.endpoints.iter().enumerate() {
            if let Ok(status) = status(endpoint).await
                && status.leader != 0
                && status.header.as_ref().is_some_and(|header| header.member_id == status.leader)
            {
                return Ok(n);
            }
        }
        if Instant::now() > deadline {
            bail!("no leader");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Puts `writes` distinct keys, one per request, 64 at a time.
async fn load(endpoint: &str, options: &CatchUpOptions) -> anyhow::Result<()> {
    let channel = channel(endpoint).await?;
    let value = vec![b'v'; options.val_size];
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (mut kv, next, value, writes) =
            (KvClient::new(channel.clone()), Arc::clone(&next), value.clone(), options.writes);
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= writes {
                    return anyhow::Ok(());
                }
                let key = format!("key/{n:010}").into_bytes();
                kv.put(PutRequest { key, value: value.clone(), ..PutRequest::default() })
                    .await
                    .context("load")?;
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}

async fn measure(mut server: Server, options: &CatchUpOptions) -> anyhow::Result<Figures> {
    let leader = leader(&server).await?;
    let behind = (leader + 1) % server.endpoints.len();
    server.kill(behind)?;
    let started = Instant::now();
    load(&server.endpoints[leader], options).await?;
    let load = started.elapsed();
    let target = status(&server.endpoints[leader]).await?.raft_applied_index;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reads = tokio::spawn(crate::maintenance::probe(
        channel(&server.endpoints[leader]).await?,
        false,
        Arc::clone(&stop),
    ));
    server.restart(behind)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let applied = loop {
        if let Ok(status) = status(&server.endpoints[behind]).await
            && status.raft_applied_index >= target
        {
            break status.raft_applied_index;
        }
        if Instant::now() > deadline {
            bail!("the member did not catch up in {:?}", deadline - started);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let caught_up = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let leader_read_stall = reads.await??;
    let usage = crate::report::ProcessUsage::read(server.pid(behind)).context("the member's memory")?;
    // Everything is there, read from the member itself.
    let mut kv = KvClient::new(channel(&server.endpoints[behind]).await?);
    let count = kv
        .range(RangeRequest {
            key: b"key/".to_vec(),
            range_end: b"key0".to_vec(),
            count_only: true,
            serializable: true,
            ..RangeRequest::default()
        })
        .await?
        .into_inner()
        .count;
    if u64::try_from(count)? != options.writes {
        bail!("the member has {count} keys of {}", options.writes);
    }
    Ok(Figures { load, caught_up, leader_read_stall, applied, peak_rss_bytes: usage.peak_rss_bytes })
}

pub(crate) async fn run(options: CatchUpOptions) -> anyhow::Result<()> {
    let servers = crate::compare::servers(options.cairn.as_ref(), &options.etcd);
    println!(
        "3 members, --snapshot-count={}: one misses {} puts of {}-byte values (about {} MB), then starts again",
        options.snapshot_count,
        options.writes,
        options.val_size,
        options.writes * options.val_size as u64 / 1_000_000
    );
    let snapshot_count = format!("--snapshot-count={}", options.snapshot_count);
    let mut seconds = Vec::new();
    for (name, binary, is_etcd) in servers {
        // A gigabyte of values passes Cairn's default quota of 2 GiB on disk (see the
        // README): both get 8 GiB.
        let server = crate::compare::start(
            &binary,
            is_etcd,
            3,
            &[&snapshot_count, "--quota-backend-bytes=8589934592"],
        )?;
        crate::compare::warm_up(&server.endpoints, &crate::load::LoadOptions::defaults()).await?;
        let figures = measure(server, &options).await?;
        println!(
            "{name:>6}: load {:.1} s | caught up to applied index {} in {:.2} s, longest linearizable read on \
             the leader meanwhile {:.0} ms | peak RSS of the member {:.0} MB",
            figures.load.as_secs_f64(),
            figures.applied,
            figures.caught_up.as_secs_f64(),
            figures.leader_read_stall.as_secs_f64() * 1e3,
            figures.peak_rss_bytes as f64 / 1e6,
        );
        seconds.push(figures.caught_up.as_secs_f64());
    }
    if let [cairn, etcd] = seconds[..] {
        println!("catch-up time, Cairn / etcd: {:.2}x", cairn / etcd);
    }
    Ok(())
}
