//! `scale`: a store of millions of keys on a fresh one-member Cairn and a fresh
//! one-member etcd: how fast it loads, the memory and disk it takes, how long the
//! server takes to be ready again after a SIGKILL, the memory after that restart,
//! and how long counting every key takes. The count also checks that the restart
//! lost none of the keys acknowledged before the kill.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn_api::etcdserverpb::kv_client::KvClient;
use cairn_api::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_api::etcdserverpb::{RangeRequest, StatusRequest};
use tonic::transport::Channel;

use crate::report::ProcessUsage;

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ScaleOptions {
    /// The `cairn` binary (default: beside this one).
    #[arg(long)]
    cairn: Option<PathBuf>,
    /// The `etcd` binary; Cairn runs alone when it is not found.
    #[arg(long, default_value = "etcd")]
    etcd: PathBuf,
    /// Distinct keys, each written once.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Key size in bytes (at least 12).
    #[arg(long, default_value_t = 32)]
    key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    val_size: usize,
    /// Puts per transaction while loading (etcd's default `--max-txn-ops` is 128).
    #[arg(long, default_value_t = 100)]
    batch: u64,
    /// Both servers' `--snapshot-count` (both default to 100,000), which bounds the
    /// raft log entries each keeps in memory.
    #[arg(long)]
    snapshot_count: Option<u64>,
}

/// What one server did.
struct Figures {
    load: Duration,
    rss_loaded: u64,
    db_size: i64,
    data_dir_bytes: u64,
    restart: Duration,
    rss_restarted: u64,
    count: Duration,
    /// Keys found by the count: every one was acknowledged before the SIGKILL.
    counted: u64,
    rss_counted: u64,
}

/// Key `n`: `key/` and `n` in decimal, zero-padded to `size` bytes.
fn key(n: u64, size: usize) -> Vec<u8> {
    format!("key/{n:0width$}", width = size.saturating_sub(4)).into_bytes()
}

/// Puts every key once, `batch` to a transaction, 32 transactions at a time.
async fn load(channel: &Channel, options: &ScaleOptions) -> anyhow::Result<()> {
    let key_size = options.key_size;
    let value = vec![b'v'; options.val_size];
    crate::maintenance::put_all(channel, options.keys, options.batch, &value, move |n| key(n, key_size)).await
}

/// Counts every loaded key (the warm-up's are elsewhere) with one linearizable
/// range, giving how long it took and how many it found.
async fn count_all(channel: &Channel) -> anyhow::Result<(Duration, u64)> {
    let mut kv = KvClient::new(channel.clone());
    let started = Instant::now();
    let count = kv
        .range(RangeRequest {
            key: b"key/".to_vec(),
            range_end: b"key0".to_vec(),
            count_only: true,
            ..RangeRequest::default()
        })
        .await?
        .into_inner()
        .count;
    Ok((started.elapsed(), u64::try_from(count)?))
}

/// The bytes of every file under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(metadata) if metadata.is_dir() => bytes_under(&entry.path()),
            Ok(metadata) => metadata.len(),
            Err(_) => 0,
        })
        .sum()
}

fn rss(server: &crate::compare::Server) -> anyhow::Result<u64> {
    Ok(ProcessUsage::read(server.pid(0)).context("the server's memory")?.rss_bytes)
}

async fn measure(mut server: crate::compare::Server, options: &ScaleOptions) -> anyhow::Result<Figures> {
    let endpoint = server.endpoints[0].clone();
    let client = crate::catchup::channel(&endpoint).await?;
    let started = Instant::now();
    load(&client, options).await?;
    let load = started.elapsed();
    let rss_loaded = rss(&server)?;
    let db_size = MaintenanceClient::new(client).status(StatusRequest {}).await?.into_inner().db_size;
    let data_dir_bytes = bytes_under(&server.data_dir(0));

    server.kill(0)?;
    let started = Instant::now();
    server.restart(0)?;
    // Ready: a linearizable read of one key answers.
    let deadline = started + Duration::from_secs(600);
    let client = loop {
        let ready = async {
            let client = crate::catchup::channel(&endpoint).await?;
            KvClient::new(client.clone())
                .range(RangeRequest { key: key(0, options.key_size), ..RangeRequest::default() })
                .await?;
            anyhow::Ok(client)
        };
        match ready.await {
            Ok(client) => break client,
            Err(error) if Instant::now() > deadline => return Err(error.context("not ready after a restart")),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let restart = started.elapsed();
    let rss_restarted = rss(&server)?;
    let (count, counted) = count_all(&client).await?;
    let rss_counted = rss(&server)?;
    Ok(Figures {
        load,
        rss_loaded,
        db_size,
        data_dir_bytes,
        restart,
        rss_restarted,
        count,
        counted,
        rss_counted,
    })
}

pub(crate) async fn run(options: ScaleOptions) -> anyhow::Result<()> {
    if options.key_size < 12 || options.batch == 0 {
        bail!("--key-size must be at least 12 and --batch at least 1");
    }
    let servers = crate::compare::servers(options.cairn.as_ref(), &options.etcd);
    println!(
        "1 member: {} keys of {} bytes with {}-byte values ({} MB of keys and values), {} puts per txn",
        options.keys,
        options.key_size,
        options.val_size,
        options.keys * (options.key_size + options.val_size) as u64 / 1_000_000,
        options.batch,
    );
    println!(
        "{:>6} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9} {:>9} {:>9}",
        "server", "keys/s", "rss MB", "db MB", "dir MB", "restart s", "rss MB", "count ms", "rss MB", "B/key"
    );
    println!(
        "{:>6} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9} {:>9}",
        "", "load", "loaded", "", "", "", "restarted", "", "counted"
    );
    let mut rows = Vec::new();
    for (name, binary, is_etcd) in servers {
        // Millions of keys pass the default quota of 2 GiB: both get 16 GiB.
        let snapshot_count = options.snapshot_count.map(|count| format!("--snapshot-count={count}"));
        let mut flags = vec!["--quota-backend-bytes=17179869184"];
        flags.extend(snapshot_count.as_deref());
        let server = crate::compare::start(&binary, is_etcd, 1, &flags)?;
        crate::compare::warm_up(&server.endpoints, &crate::load::LoadOptions::defaults()).await?;
        let figures = measure(server, &options).await?;
        let mb = |bytes: f64| bytes / 1e6;
        let row = [
            options.keys as f64 / figures.load.as_secs_f64(),
            mb(figures.rss_loaded as f64),
            mb(figures.db_size as f64),
            mb(figures.data_dir_bytes as f64),
            figures.restart.as_secs_f64(),
            mb(figures.rss_restarted as f64),
            figures.count.as_secs_f64() * 1e3,
            mb(figures.rss_counted as f64),
            figures.rss_restarted as f64 / options.keys as f64,
        ];
        println!(
            "{name:>6} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>10.2} {:>10.0} {:>9.0} {:>9.0} {:>9.0}",
            row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8]
        );
        if figures.counted != options.keys {
            println!(
                "{name:>6}: LOST {} acknowledged keys: the count after the SIGKILL found {} of {}",
                options.keys.saturating_sub(figures.counted),
                figures.counted,
                options.keys
            );
        }
        rows.push(row);
    }
    if let [cairn, etcd] = &rows[..] {
        let ratio: Vec<f64> = cairn.iter().zip(etcd).map(|(c, e)| c / e).collect();
        println!(
            "{:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10.2} {:>10.2} {:>9.2} {:>9.2} {:>9.2}   (Cairn / etcd)",
            "ratio", ratio[0], ratio[1], ratio[2], ratio[3], ratio[4], ratio[5], ratio[6], ratio[7], ratio[8]
        );
    }
    Ok(())
}
