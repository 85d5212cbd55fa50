//! The workloads and the clients that drive them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_api::etcdserverpb::kv_client::KvClient;
use cairn_api::etcdserverpb::request_op::Request as Op;
use cairn_api::etcdserverpb::{PutRequest, RangeRequest, RequestOp, TxnRequest};
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

/// What to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Workload {
    /// Puts of one key each.
    Put,
    /// Single-key ranges (gets).
    Range,
    /// Txns of one put each.
    TxnPut,
}

/// How to load the server.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct LoadOptions {
    /// The workload.
    #[arg(long, value_enum, default_value = "put")]
    pub(crate) workload: Workload,
    /// Concurrent clients (requests in flight).
    #[arg(long, default_value_t = 1)]
    pub(crate) clients: usize,
    /// gRPC connections the clients share.
    #[arg(long, default_value_t = 1)]
    pub(crate) conns: usize,
    /// Requests in all.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) total: u64,
    /// Key size in bytes.
    #[arg(long, default_value_t = 8)]
    pub(crate) key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub(crate) val_size: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) key_space: u64,
    /// Keys in order instead of at random.
    #[arg(long)]
    pub(crate) sequential_keys: bool,
    /// Serializable ranges instead of linearizable ones.
    #[arg(long)]
    pub(crate) serializable: bool,
}

/// What a run measured.
#[derive(Debug)]
pub(crate) struct LoadResult {
    pub(crate) elapsed: Duration,
    /// Every request's latency, sorted.
    pub(crate) latencies: Vec<Duration>,
}

fn key_of(n: u64, size: usize) -> Vec<u8> {
    let digits = format!("{n:0size$}");
    digits.as_bytes()[digits.len().saturating_sub(size)..].to_vec()
}

/// Runs the workload against `endpoints` (round-robin over connections).
pub(crate) async fn run(endpoints: &[String], options: &LoadOptions) -> anyhow::Result<LoadResult> {
    let mut channels = Vec::new();
    for n in 0..options.conns.max(1) {
        let endpoint = &endpoints[n % endpoints.len()];
        let channel = Channel::from_shared(format!("http://{endpoint}"))?
            .connect()
            .await
            .with_context(|| format!("cannot connect to {endpoint}"))?;
        channels.push(channel);
    }
    if options.workload == Workload::Range {
        // Something to read: the key space, once.
        prefill(&channels[0], options).await?;
    }
    let next = Arc::new(AtomicU64::new(0));
    let value = Arc::new(vec![b'v'; options.val_size]);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..options.clients.max(1) {
        let mut kv =
            KvClient::new(channels[client % channels.len()].clone()).max_decoding_message_size(usize::MAX);
        let (next, value, options) = (Arc::clone(&next), Arc::clone(&value), options.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            // A small per-client generator that can cross await points.
            let mut rng = rand::rngs::SmallRng::seed_from_u64(client as u64);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= options.total {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let key_number = if options.sequential_keys {
                    n % options.key_space
                } else {
                    rng.random_range(0..options.key_space)
                };
                let key = key_of(key_number, options.key_size);
                let sent = Instant::now();
                match options.workload {
                    Workload::Put => {
                        kv.put(PutRequest { key, value: value.to_vec(), ..Default::default() }).await?;
                    }
                    Workload::Range => {
                        kv.range(RangeRequest {
                            key,
                            serializable: options.serializable,
                            ..Default::default()
                        })
                        .await?;
                    }
                    Workload::TxnPut => {
                        let put = PutRequest { key, value: value.to_vec(), ..Default::default() };
                        let op = RequestOp { request: Some(Op::RequestPut(put)) };
                        kv.txn(TxnRequest { success: vec![op], ..Default::default() }).await?;
                    }
                }
                latencies.push(sent.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(options.total as usize);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(LoadResult { elapsed, latencies })
}

async fn prefill(channel: &Channel, options: &LoadOptions) -> anyhow::Result<()> {
    let mut kv = KvClient::new(channel.clone());
    let keys = options.key_space.min(10_000);
    for n in 0..keys {
        let put = PutRequest {
            key: key_of(n, options.key_size),
            value: vec![b'v'; options.val_size],
            ..Default::default()
        };
        kv.put(put).await?;
    }
    Ok(())
}
