//! `cairn-bench`: load for any etcd v3 endpoint, in the spirit of etcd's own
//! `benchmark` tool, and `compare`, which starts fresh Cairn and etcd servers and runs
//! the same workloads against each in turn.
//!
//! **Invariant:** every figure comes from requests that succeeded; a failed request
//! fails the run instead of being counted.

mod catchup;
mod compare;
mod floor;
mod load;
mod maintenance;
mod plot;
mod report;
mod scale;

use clap::{Parser, Subcommand};

/// The load generator shares the machine with the servers it measures: the less CPU
/// it takes per request, the more they get.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "cairn-bench", about = "Load for etcd v3 endpoints; Cairn against etcd side by side")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one workload against running endpoints.
    Run {
        /// Comma-separated endpoints, `host:port`.
        #[arg(long, default_value = "127.0.0.1:2379")]
        endpoints: String,
        /// The process ID of the server, to report its CPU time and peak memory.
        #[arg(long)]
        server_pid: Option<u32>,
        #[command(flatten)]
        load: load::LoadOptions,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Starts a fresh Cairn and, if installed, a fresh etcd for every run, and runs
    /// the same workload against each alternately.
    Compare(compare::CompareOptions),
    /// Times snapshot, compaction and defragmentation of a large store on a fresh
    /// Cairn and, if installed, a fresh etcd.
    Maintenance(maintenance::MaintenanceOptions),
    /// Kills a member of a fresh 3-member Cairn cluster and, if installed, a fresh
    /// etcd cluster, writes what it misses, starts it again and times its catch-up.
    CatchUp(catchup::CatchUpOptions),
    /// Loads millions of keys into a fresh Cairn and, if installed, a fresh etcd, and
    /// reports the load rate, memory, disk, restart time and a count of every key.
    Scale(scale::ScaleOptions),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Run { endpoints, server_pid, load, json } => {
            let endpoints: Vec<String> = endpoints.split(',').map(str::to_owned).collect();
            let result = runtime.block_on(load::run(&endpoints, &load))?;
            let usage = server_pid.and_then(report::ProcessUsage::read);
            report::print(&load, &result, usage.as_ref(), json);
        }
        Command::Compare(options) => runtime.block_on(compare::run(options))?,
        Command::Maintenance(options) => runtime.block_on(maintenance::run(options))?,
        Command::CatchUp(options) => runtime.block_on(catchup::run(options))?,
        Command::Scale(options) => runtime.block_on(scale::run(options))?,
    }
    Ok(())
}
