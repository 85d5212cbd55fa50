//! Side by side: a fresh Cairn and a fresh etcd for every run, the same workload
//! against each in turn, medians and Cairn/etcd ratios.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::load::{self, LoadOptions};
use crate::report::{self, ProcessUsage, Summary};

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CompareOptions {
    /// The `cairn` binary (default: beside this one).
    #[arg(long)]
    cairn: Option<PathBuf>,
    /// The `etcd` binary; the comparison runs Cairn alone when it is not found.
    #[arg(long, default_value = "etcd")]
    etcd: PathBuf,
    /// Runs per server; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Members per cluster (1 or more); clients spread over all of them.
    #[arg(long, default_value_t = 1)]
    members: usize,
    /// Write an SVG plot of each server's latency distribution (all runs) here.
    #[arg(long)]
    plot: Option<PathBuf>,
    #[command(flatten)]
    load: LoadOptions,
}

/// A cluster under test, on fresh ports and fresh data dirs.
pub(crate) struct Server {
    children: Vec<Child>,
    _data: tempfile::TempDir,
    pub(crate) endpoints: Vec<String>,
    /// How each member was started, to start it again.
    commands: Vec<(PathBuf, Vec<String>, bool)>,
}

impl Drop for Server {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Server {
    /// Kills member `n` (SIGKILL) and waits for it to exit.
    pub(crate) fn kill(&mut self, n: usize) -> anyhow::Result<()> {
        self.children[n].kill()?;
        self.children[n].wait()?;
        Ok(())
    }

    /// Starts member `n` again, on its data dir and ports.
    pub(crate) fn restart(&mut self, n: usize) -> anyhow::Result<()> {
        let (binary, args, is_etcd) = &self.commands[n];
        self.children[n] = spawn(binary, args, *is_etcd)?;
        Ok(())
    }

    /// Member `n`'s data dir.
    pub(crate) fn data_dir(&self, n: usize) -> PathBuf {
        self._data.path().join(format!("m{n}"))
    }

    /// Member `n`'s process ID.
    pub(crate) fn pid(&self, n: usize) -> u32 {
        self.children[n].id()
    }
}

fn spawn(binary: &PathBuf, args: &[String], is_etcd: bool) -> anyhow::Result<Child> {
    let mut command = Command::new(binary);
    // The servers' logs go to this tool's stderr when asked (CAIRN_BENCH_LOGS=1).
    let logs = if std::env::var_os("CAIRN_BENCH_LOGS").is_some() { Stdio::inherit() } else { Stdio::null() };
    command.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(logs);
    if is_etcd {
        command.env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH);
    }
    command.spawn().with_context(|| format!("cannot start {}", binary.display()))
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

pub(crate) fn start(
    binary: &PathBuf,
    is_etcd: bool,
    members: usize,
    extra: &[&str],
) -> anyhow::Result<Server> {
    let data = tempfile::tempdir()?;
    let clients: Vec<SocketAddr> = (0..members).map(|_| free_port()).collect::<anyhow::Result<_>>()?;
    let peers: Vec<SocketAddr> = (0..members).map(|_| free_port()).collect::<anyhow::Result<_>>()?;
    let initial: Vec<String> =
        peers.iter().enumerate().map(|(n, peer)| format!("m{n}=http://{peer}")).collect();
    let mut server =
        Server { children: Vec::new(), _data: data, endpoints: Vec::new(), commands: Vec::new() };
    for n in 0..members {
        let mut args = vec![
            format!("--name=m{n}"),
            format!("--data-dir={}", server.data_dir(n).display()),
            format!("--listen-client-urls=http://{}", clients[n]),
            format!("--advertise-client-urls=http://{}", clients[n]),
            format!("--listen-peer-urls=http://{}", peers[n]),
            format!("--initial-advertise-peer-urls=http://{}", peers[n]),
            format!("--initial-cluster={}", initial.join(",")),
        ];
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        server.children.push(spawn(binary, &args, is_etcd)?);
        server.commands.push((binary.clone(), args, is_etcd));
        server.endpoints.push(clients[n].to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for client in &clients {
        while TcpStream::connect(client).is_err() {
            if Instant::now() > deadline {
                bail!("{} did not listen on {client}", binary.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(server)
}

async fn one_run(
    binary: &PathBuf,
    is_etcd: bool,
    members: usize,
    options: &LoadOptions,
) -> anyhow::Result<(Summary, Option<ProcessUsage>, Vec<Duration>)> {
    let server = start(binary, is_etcd, members, &[])?;
    warm_up(&server.endpoints, options).await?;
    let result = load::run(&server.endpoints, options).await?;
    // CPU and memory of all members together.
    let usages: Vec<ProcessUsage> =
        server.children.iter().filter_map(|child| ProcessUsage::read(child.id())).collect();
    let usage = (usages.len() == server.children.len()).then(|| ProcessUsage {
        cpu_seconds: usages.iter().map(|u| u.cpu_seconds).sum(),
        peak_rss_bytes: usages.iter().map(|u| u.peak_rss_bytes).sum(),
        rss_bytes: usages.iter().map(|u| u.rss_bytes).sum(),
    });
    Ok((report::summarize(&result), usage, result.latencies))
}

/// The first requests wait for a leader; a warm-up, retried until the cluster
/// answers, keeps that out of the figures.
pub(crate) async fn warm_up(endpoints: &[String], options: &LoadOptions) -> anyhow::Result<()> {
    let mut warm_up = options.clone();
    warm_up.total = Some(100);
    warm_up.duration = None;
    warm_up.quiet = true;
    warm_up.clients = 1;
    warm_up.workload = load::Workload::Put;
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(error) = load::run(endpoints, &warm_up).await {
        if Instant::now() > deadline {
            return Err(error.context("the cluster did not answer"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The `cairn` binary beside this one.
pub(crate) fn cairn_beside_this_binary() -> PathBuf {
    std::env::current_exe().unwrap_or_default().with_file_name("cairn")
}

/// The servers to measure, named, each with whether it is etcd: Cairn (`cairn`, or
/// the binary beside this one), then etcd when `etcd` runs.
pub(crate) fn servers(cairn: Option<&PathBuf>, etcd: &PathBuf) -> Vec<(&'static str, PathBuf, bool)> {
    let cairn = cairn.cloned().unwrap_or_else(cairn_beside_this_binary);
    let mut servers = vec![("cairn", cairn, false)];
    if installed(etcd) {
        servers.push(("etcd", etcd.clone(), true));
    }
    servers
}

/// Whether `binary` runs.
pub(crate) fn installed(binary: &PathBuf) -> bool {
    Command::new(binary).arg("--version").output().is_ok_and(|out| out.status.success())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

pub(crate) async fn run(options: CompareOptions) -> anyhow::Result<()> {
    let cairn = options.cairn.clone().unwrap_or_else(cairn_beside_this_binary);
    let etcd_found = installed(&options.etcd);
    let mut servers = vec![("cairn", cairn, false)];
    if etcd_found {
        servers.push(("etcd", options.etcd.clone(), true));
    } else {
        println!("etcd not found at {}: measuring Cairn alone", options.etcd.display());
    }
    let floor = crate::floor::measure().context("cannot measure the fsync and round-trip floor")?;
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    println!(
        "floor here: fsync {:.3} ms (4 KiB append + fdatasync, median) + loopback round trip {:.3} ms = {:.3} ms per write",
        ms(floor.fsync),
        ms(floor.round_trip),
        ms(floor.total())
    );
    let mut results: Vec<Vec<(Summary, Option<ProcessUsage>)>> = vec![Vec::new(); servers.len()];
    let mut latencies: Vec<Vec<Duration>> = vec![Vec::new(); servers.len()];
    for run in 0..options.runs {
        // Alternate, so that drift in the machine's state hits both alike.
        for (index, (name, binary, is_etcd)) in servers.iter().enumerate() {
            let (summary, usage, run_latencies) =
                one_run(binary, *is_etcd, options.members.max(1), &options.load).await?;
            if options.plot.is_some() {
                latencies[index].extend(run_latencies);
            }
            println!(
                "run {run} {name:>5}: {:>9.1} req/s, avg {:.3} ms, p99 {:.3} ms",
                summary.qps, summary.average_ms, summary.p99_ms
            );
            results[index].push((summary, usage));
        }
    }
    let limit = match (options.load.total, options.load.duration) {
        (None, Some(seconds)) => format!("{seconds} s"),
        _ => format!("{} requests", options.load.total()),
    };
    let title = format!(
        "{} member(s), {:?}, {} clients, {} conns, {limit}, {}-byte keys over {}, {}-byte values",
        options.members,
        options.load.workload,
        options.load.clients,
        options.load.conns,
        options.load.key_size,
        options.load.key_space,
        options.load.val_size,
    );
    println!("\n{title}; medians of {}:", options.runs);
    if let Some(path) = &options.plot {
        for series in &mut latencies {
            series.sort_unstable();
        }
        let named: Vec<(&str, &[Duration])> =
            servers.iter().zip(&latencies).map(|((name, _, _), series)| (*name, series.as_slice())).collect();
        std::fs::write(path, crate::plot::latency_svg(&title, &named))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!(
        "{:>6} {:>10} {:>9} {:>9} {:>9} {:>11} {:>9}",
        "server", "req/s", "avg ms", "p50 ms", "p99 ms", "cpu µs/req", "rss MiB"
    );
    let mut medians = Vec::new();
    for ((name, _, _), runs) in servers.iter().zip(&results) {
        let pick = |f: fn(&(Summary, Option<ProcessUsage>)) -> f64| median(runs.iter().map(f).collect());
        let row = [
            pick(|r| r.0.qps),
            pick(|r| r.0.average_ms),
            pick(|r| r.0.p50_ms),
            pick(|r| r.0.p99_ms),
            // Server CPU (all members) per measured request; start and warm-up included.
            pick(|r| r.1.map_or(f64::NAN, |u| u.cpu_seconds * 1e6 / r.0.requests.max(1) as f64)),
            pick(|r| r.1.map_or(f64::NAN, |u| u.peak_rss_bytes as f64 / 1048576.0)),
        ];
        println!(
            "{name:>6} {:>10.1} {:>9.3} {:>9.3} {:>9.3} {:>11.1} {:>9.1}",
            row[0], row[1], row[2], row[3], row[4], row[5]
        );
        medians.push(row);
    }
    if medians.len() == 2 {
        let ratio: Vec<f64> = medians[0].iter().zip(&medians[1]).map(|(c, e)| c / e).collect();
        println!(
            "{:>6} {:>10.2} {:>9.2} {:>9.2} {:>9.2} {:>11.2} {:>9.2}   (Cairn / etcd)",
            "ratio", ratio[0], ratio[1], ratio[2], ratio[3], ratio[4], ratio[5]
        );
    }
    let writes = matches!(options.load.workload, load::Workload::Put | load::Workload::TxnPut);
    if writes && options.load.clients == 1 {
        for ((name, _, _), row) in servers.iter().zip(&medians) {
            println!(
                "{name:>6}: average {:.2}x the floor of {:.3} ms",
                row[1] / ms(floor.total()),
                ms(floor.total())
            );
        }
    }
    Ok(())
}
