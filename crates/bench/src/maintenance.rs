//! `maintenance`: the operations an operator runs on a large store, timed on a fresh
//! Cairn and a fresh etcd holding the same data: a snapshot streamed to nowhere
//! (MB/s), a compaction of half the revisions (how long it takes, and the longest a
//! write waited meanwhile), and a defragmentation (how long, the longest a read and a
//! write waited meanwhile, and the size before and after).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_api::etcdserverpb::kv_client::KvClient;
use cairn_api::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_api::etcdserverpb::request_op::Request as Op;
use cairn_api::etcdserverpb::{
    CompactionRequest, DefragmentRequest, PutRequest, RangeRequest, RequestOp, SnapshotRequest,
    StatusRequest, TxnRequest,
};
use tonic::transport::Channel;

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct MaintenanceOptions {
    /// The `cairn` binary (default: beside this one).
    #[arg(long)]
    cairn: Option<PathBuf>,
    /// The `etcd` binary; Cairn runs alone when it is not found.
    #[arg(long, default_value = "etcd")]
    etcd: PathBuf,
    /// Distinct keys; each is written twice, so the store holds twice as many
    /// revisions, and the compaction drops one version of each.
    #[arg(long, default_value_t = 500_000)]
    keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    val_size: usize,
}

/// What one server did.
#[derive(Debug, Default)]
struct Figures {
    load: Duration,
    size_loaded: i64,
    snapshot_bytes: u64,
    snapshot: Duration,
    compaction: Duration,
    compaction_write_stall: Duration,
    defrag: Duration,
    defrag_read_stall: Duration,
    defrag_write_stall: Duration,
    size_defragmented: i64,
}

const BATCH: u64 = 100;

async fn load(channel: &Channel, options: &MaintenanceOptions) -> anyhow::Result<()> {
    let keys = options.keys;
    let key = move |n: u64| format!("key/{:010}", n % keys).into_bytes();
    put_all(channel, keys * 2, BATCH, &vec![b'v'; options.val_size], key).await
}

/// Puts `key(n)` for every `n` below `total`, `batch` puts to a transaction, 32
/// transactions at a time.
pub(crate) async fn put_all(
    channel: &Channel,
    total: u64,
    batch: u64,
    value: &[u8],
    key: impl Fn(u64) -> Vec<u8> + Clone + Send + 'static,
) -> anyhow::Result<()> {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (mut kv, next, value, key) =
            (KvClient::new(channel.clone()), Arc::clone(&next), value.to_vec(), key.clone());
        tasks.spawn(async move {
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= total {
                    return anyhow::Ok(());
                }
                let success = (first..(first + batch).min(total))
                    .map(|n| RequestOp {
                        request: Some(Op::RequestPut(PutRequest {
                            key: key(n),
                            value: value.clone(),
                            ..PutRequest::default()
                        })),
                    })
                    .collect();
                kv.txn(TxnRequest { success, ..TxnRequest::default() }).await.context("load")?;
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}

/// Sends one request after another until `stop`, giving the longest any took.
pub(crate) async fn probe(channel: Channel, write: bool, stop: Arc<AtomicBool>) -> anyhow::Result<Duration> {
    let mut kv = KvClient::new(channel);
    let mut longest = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        if write {
            kv.put(PutRequest { key: b"probe".to_vec(), value: b"x".to_vec(), ..PutRequest::default() })
                .await?;
        } else {
            kv.range(RangeRequest { key: b"key/0000000001".to_vec(), ..RangeRequest::default() }).await?;
        }
        longest = longest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(longest)
}

async fn measure(endpoint: &str, options: &MaintenanceOptions) -> anyhow::Result<Figures> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))?
        .timeout(Duration::from_secs(600))
        .connect()
        .await?;
    let mut maintenance = MaintenanceClient::new(channel.clone()).max_decoding_message_size(usize::MAX);
    let mut figures = Figures::default();

    let started = Instant::now();
    load(&channel, options).await?;
    figures.load = started.elapsed();
    let status = maintenance.status(StatusRequest {}).await?.into_inner();
    figures.size_loaded = status.db_size;
    let revision = status.header.map_or(0, |header| header.revision);

    let started = Instant::now();
    let mut stream = maintenance.snapshot(SnapshotRequest {}).await?.into_inner();
    while let Some(message) = stream.message().await? {
        figures.snapshot_bytes += message.blob.len() as u64;
    }
    figures.snapshot = started.elapsed();

    let stop = Arc::new(AtomicBool::new(false));
    let writes = tokio::spawn(probe(channel.clone(), true, Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let mut kv = KvClient::new(channel.clone());
    kv.compact(CompactionRequest { revision, physical: true }).await?;
    figures.compaction = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    figures.compaction_write_stall = writes.await??;

    let stop = Arc::new(AtomicBool::new(false));
    let writes = tokio::spawn(probe(channel.clone(), true, Arc::clone(&stop)));
    let reads = tokio::spawn(probe(channel.clone(), false, Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    maintenance.defragment(DefragmentRequest {}).await?;
    figures.defrag = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    figures.defrag_write_stall = writes.await??;
    figures.defrag_read_stall = reads.await??;
    figures.size_defragmented = maintenance.status(StatusRequest {}).await?.into_inner().db_size;
    Ok(figures)
}

fn print(name: &str, figures: &Figures) {
    let mb = |bytes: f64| bytes / 1e6;
    let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
    println!(
        "{name:>6}: load {:.1} s, {:.0} MB | snapshot {:.0} MB in {:.2} s = {:.0} MB/s | compaction {:.2} s, \
         longest write meanwhile {:.0} ms | defrag {:.2} s to {:.0} MB, longest read {:.0} ms, write {:.0} ms",
        figures.load.as_secs_f64(),
        mb(figures.size_loaded as f64),
        mb(figures.snapshot_bytes as f64),
        figures.snapshot.as_secs_f64(),
        mb(figures.snapshot_bytes as f64) / figures.snapshot.as_secs_f64(),
        figures.compaction.as_secs_f64(),
        ms(figures.compaction_write_stall),
        figures.defrag.as_secs_f64(),
        mb(figures.size_defragmented as f64),
        ms(figures.defrag_read_stall),
        ms(figures.defrag_write_stall),
    );
}

pub(crate) async fn run(options: MaintenanceOptions) -> anyhow::Result<()> {
    let servers = crate::compare::servers(options.cairn.as_ref(), &options.etcd);
    println!(
        "{} keys written twice, {}-byte values ({} revisions, about {} MB of values)",
        options.keys,
        options.val_size,
        options.keys * 2,
        options.keys * 2 * options.val_size as u64 / 1_000_000
    );
    for (name, binary, is_etcd) in servers {
        // A gigabyte of values passes neither server's default quota of 2 GiB on disk in
        // Cairn's case (see the README); both get 8 GiB.
        let server = crate::compare::start(&binary, is_etcd, 1, &["--quota-backend-bytes=8589934592"])?;
        let options_for_warm_up = crate::load::LoadOptions::defaults();
        crate::compare::warm_up(&server.endpoints, &options_for_warm_up).await?;
        let figures = measure(&server.endpoints[0], &options).await?;
        print(name, &figures);
    }
    Ok(())
}
