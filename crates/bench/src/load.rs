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

/// How long any one request or stream message may take before the run fails: a
/// stuck server ends the run with an error instead of hanging it.
const RESPONSE_DEADLINE: Duration = Duration::from_secs(30);

/// What to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Workload {
    /// Puts of one key each.
    Put,
    /// Single-key ranges (gets).
    Range,
    /// Txns of one put each.
    TxnPut,
    /// Puts watched by `--watchers` watchers of the whole key space on one stream;
    /// the figure is events delivered per second.
    Watch,
    /// Keep-alives of one lease over one stream per client.
    LeaseKeepalive,
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
    /// Requests in all [default: 10000, or no limit with `--duration`].
    #[arg(long)]
    pub(crate) total: Option<u64>,
    /// Seconds to send for, at most; the run also ends at `--total` requests.
    #[arg(long)]
    pub(crate) duration: Option<f64>,
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
    /// Watchers for the watch workload, all on one stream.
    #[arg(long, default_value_t = 1000)]
    pub(crate) watchers: usize,
    /// No progress bar (it is drawn only on a terminal anyway).
    #[arg(long)]
    pub(crate) quiet: bool,
}

impl LoadOptions {
    /// The options when no flag is given.
    pub(crate) fn defaults() -> Self {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            load: LoadOptions,
        }
        <Flags as clap::Parser>::parse_from(["load"]).load
    }

    /// The most requests the run sends.
    pub(crate) fn total(&self) -> u64 {
        self.total.unwrap_or(if self.duration.is_some() { u64::MAX } else { 10_000 })
    }
}

/// What a run may still send: request numbers up to `--total`, until `--duration`
/// has passed; and how many came back, for the progress bar.
#[derive(Debug)]
struct Budget {
    next: AtomicU64,
    done: AtomicU64,
    total: u64,
    started: Instant,
    duration: Option<Duration>,
}

impl Budget {
    fn new(options: &LoadOptions) -> Arc<Self> {
        Arc::new(Self {
            next: AtomicU64::new(0),
            done: AtomicU64::new(0),
            total: options.total(),
            started: Instant::now(),
            duration: options.duration.map(Duration::from_secs_f64),
        })
    }

    /// The next request's number, or `None` when the run is over.
    fn take(&self) -> Option<u64> {
        if self.duration.is_some_and(|duration| self.started.elapsed() >= duration) {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (n < self.total).then_some(n)
    }

    fn finished_one(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    /// Draws a progress bar on stderr, when it is a terminal, until dropped.
    fn show(self: &Arc<Self>, options: &LoadOptions) -> Option<Progress> {
        use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
        if options.quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            return None;
        }
        let by_time = self.duration.filter(|_| self.total == u64::MAX);
        let length = by_time.map_or(self.total, |duration| duration.as_millis() as u64);
        let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
        let template = if by_time.is_some() {
            "{bar:40} {elapsed}/{duration} {msg}"
        } else {
            "{bar:40} {pos}/{len} requests {msg}"
        };
        bar.set_style(
            ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let (budget, shown) = (Arc::clone(self), bar.clone());
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let done = budget.done.load(Ordering::Relaxed);
                let elapsed = budget.started.elapsed();
                shown.set_position(if by_time.is_some() { elapsed.as_millis() as u64 } else { done });
                shown.set_message(format!("{:.0} req/s", done as f64 / elapsed.as_secs_f64()));
            }
        });
        Some(Progress { bar, task })
    }
}

/// A progress bar on screen; cleared when dropped.
struct Progress {
    bar: indicatif::ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
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
            .connect_timeout(RESPONSE_DEADLINE)
            .timeout(RESPONSE_DEADLINE)
            .connect()
            .await
            .with_context(|| format!("cannot connect to {endpoint}"))?;
        channels.push(channel);
    }
    match options.workload {
        Workload::Watch => return watch(&channels[0], options).await,
        Workload::LeaseKeepalive => return keep_alive(&channels, options).await,
        Workload::Put | Workload::Range | Workload::TxnPut => {}
    }
    if options.workload == Workload::Range {
        // Something to read: the key space, once.
        prefill(&channels[0], options).await?;
    }
    let budget = Budget::new(options);
    let progress = budget.show(options);
    let value = Arc::new(vec![b'v'; options.val_size]);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..options.clients.max(1) {
        let mut kv =
            KvClient::new(channels[client % channels.len()].clone()).max_decoding_message_size(usize::MAX);
        let (budget, value, options) = (Arc::clone(&budget), Arc::clone(&value), options.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            // A small per-client generator that can cross await points.
            let mut rng = rand::rngs::SmallRng::seed_from_u64(client as u64);
            loop {
                let Some(n) = budget.take() else {
                    return Ok::<_, anyhow::Error>(latencies);
                };
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
                    Workload::Watch | Workload::LeaseKeepalive => {
                        anyhow::bail!("{:?} has its own driver", options.workload)
                    }
                }
                latencies.push(sent.elapsed());
                budget.finished_one();
            }
        }));
    }
    let mut latencies = Vec::with_capacity(options.total().min(10_000_000) as usize);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    drop(progress);
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

/// `--watchers` watchers on one stream, all watching every key; `--total` puts from
/// `--clients` writers. Each "latency" is one event's delay from the start, so that
/// the count of latencies is the events delivered.
async fn watch(channel: &Channel, options: &LoadOptions) -> anyhow::Result<LoadResult> {
    use cairn_api::etcdserverpb::watch_client::WatchClient;
    use cairn_api::etcdserverpb::watch_request::RequestUnion;
    use cairn_api::etcdserverpb::{WatchCreateRequest, WatchRequest};
    let (requests, outgoing) = tokio::sync::mpsc::channel(options.watchers.max(1));
    let stream = futures_stream(outgoing);
    let mut client = WatchClient::new(channel.clone()).max_decoding_message_size(usize::MAX);
    // Queue the requests before the call: a grpc-go server (etcd) sends no response
    // headers until it has something to answer.
    for _ in 0..options.watchers {
        let create = WatchCreateRequest { key: vec![0], range_end: vec![0], ..Default::default() };
        requests.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }).await?;
    }
    let mut responses = client.watch(stream).await?.into_inner();
    let mut created = 0;
    while created < options.watchers {
        let response = responses.message().await?.context("the watch stream ended")?;
        created += usize::from(response.created);
    }
    anyhow::ensure!(
        options.duration.is_none(),
        "the watch workload runs to --total puts, not for a duration"
    );
    let expected = options.total() as usize * options.watchers;
    let started = Instant::now();
    let writer = {
        let mut put_options = options.clone();
        put_options.workload = Workload::Put;
        let channel = channel.clone();
        tokio::spawn(async move { run_puts(&channel, &put_options).await })
    };
    let mut latencies = Vec::with_capacity(expected);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while latencies.len() < expected {
        let next = tokio::time::timeout_at(deadline, responses.message()).await;
        let Ok(response) = next else {
            anyhow::bail!("only {} of {expected} events arrived in two minutes", latencies.len());
        };
        let response = response?.context("the watch stream ended")?;
        let at = started.elapsed();
        latencies.extend(std::iter::repeat_n(at, response.events.len()));
    }
    writer.await??;
    let elapsed = started.elapsed();
    drop(requests);
    latencies.sort_unstable();
    Ok(LoadResult { elapsed, latencies })
}

async fn run_puts(channel: &Channel, options: &LoadOptions) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..options.clients.max(1) {
        let (mut kv, next, options) = (KvClient::new(channel.clone()), Arc::clone(&next), options.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= options.total() {
                    return Ok::<_, anyhow::Error>(());
                }
                let put = PutRequest {
                    key: key_of(n, options.key_size),
                    value: vec![b'v'; options.val_size],
                    ..Default::default()
                };
                kv.put(put).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// One lease; each client sends keep-alives for it over its own stream and waits for
/// each answer.
async fn keep_alive(channels: &[Channel], options: &LoadOptions) -> anyhow::Result<LoadResult> {
    use cairn_api::etcdserverpb::lease_client::LeaseClient;
    use cairn_api::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest};
    let mut lease = LeaseClient::new(channels[0].clone());
    let id = lease.lease_grant(LeaseGrantRequest { ttl: 600, id: 0 }).await?.into_inner().id;
    let budget = Budget::new(options);
    let progress = budget.show(options);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..options.clients.max(1) {
        let mut lease = LeaseClient::new(channels[client % channels.len()].clone());
        let budget = Arc::clone(&budget);
        tasks.push(tokio::spawn(async move {
            let (requests, outgoing) = tokio::sync::mpsc::channel(1);
            let mut latencies = Vec::new();
            if budget.take().is_none() {
                return Ok(latencies);
            }
            // The first request goes before the call: a grpc-go server (etcd) sends no
            // response headers until it has something to answer.
            let mut sent = Instant::now();
            requests.send(LeaseKeepAliveRequest { id }).await?;
            let mut responses = lease.lease_keep_alive(futures_stream(outgoing)).await?.into_inner();
            loop {
                let response = tokio::time::timeout(RESPONSE_DEADLINE, responses.message())
                    .await
                    .context("no keep-alive answer within the deadline")??
                    .context("the keep-alive stream ended")?;
                anyhow::ensure!(response.ttl > 0, "the lease is gone");
                latencies.push(sent.elapsed());
                budget.finished_one();
                if budget.take().is_none() {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                sent = Instant::now();
                requests.send(LeaseKeepAliveRequest { id }).await?;
            }
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    drop(progress);
    latencies.sort_unstable();
    Ok(LoadResult { elapsed, latencies })
}

/// A stream of the items sent into `receiver`.
fn futures_stream<T: Send + 'static>(
    receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}
