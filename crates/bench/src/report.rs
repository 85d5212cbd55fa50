//! Figures: throughput, latency percentiles and histogram, server CPU and memory.

use std::time::Duration;

use crate::load::{LoadOptions, LoadResult};

/// A server process's CPU time and peak resident memory, from `/proc`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcessUsage {
    pub(crate) cpu_seconds: f64,
    pub(crate) peak_rss_bytes: u64,
    /// Resident memory now.
    pub(crate) rss_bytes: u64,
}

impl ProcessUsage {
    pub(crate) fn read(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name, which may hold spaces, closed by ')'.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |field: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))?
                .trim()
                .trim_end_matches(" kB")
                .trim()
                .parse()
                .ok()
        };
        // Linux reports CPU time in clock ticks of 1/100 s on every common configuration.
        Some(Self {
            cpu_seconds: ticks / 100.0,
            peak_rss_bytes: kib("VmHWM:")? * 1024,
            rss_bytes: kib("VmRSS:")? * 1024,
        })
    }
}

/// The summary figures of a run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Summary {
    pub(crate) requests: usize,
    pub(crate) qps: f64,
    pub(crate) average_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

pub(crate) fn summarize(result: &LoadResult) -> Summary {
    let latencies = &result.latencies;
    let at = |quantile: f64| {
        let index =
            ((latencies.len() as f64 * quantile).ceil() as usize).clamp(1, latencies.len().max(1)) - 1;
        latencies.get(index).copied().map_or(0.0, ms)
    };
    let total: Duration = latencies.iter().sum();
    Summary {
        requests: latencies.len(),
        qps: latencies.len() as f64 / result.elapsed.as_secs_f64(),
        average_ms: if latencies.is_empty() { 0.0 } else { ms(total) / latencies.len() as f64 },
        p50_ms: at(0.50),
        p90_ms: at(0.90),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
    }
}

pub(crate) fn print(options: &LoadOptions, result: &LoadResult, usage: Option<&ProcessUsage>, json: bool) {
    let summary = summarize(result);
    if json {
        let usage_json = usage.map_or(String::from("null"), |u| {
            format!(r#"{{"cpu_seconds":{:.3},"peak_rss_bytes":{}}}"#, u.cpu_seconds, u.peak_rss_bytes)
        });
        println!(
            r#"{{"workload":"{:?}","clients":{},"conns":{},"requests":{},"seconds":{:.3},"qps":{:.1},"avg_ms":{:.3},"p50_ms":{:.3},"p90_ms":{:.3},"p99_ms":{:.3},"p999_ms":{:.3},"server":{}}}"#,
            options.workload,
            options.clients,
            options.conns,
            summary.requests,
            result.elapsed.as_secs_f64(),
            summary.qps,
            summary.average_ms,
            summary.p50_ms,
            summary.p90_ms,
            summary.p99_ms,
            summary.p999_ms,
            usage_json
        );
        return;
    }
    println!("Summary ({:?}, {} clients, {} conns):", options.workload, options.clients, options.conns);
    println!("  Total:        {:.4} secs.", result.elapsed.as_secs_f64());
    println!("  Requests/sec: {:.1}", summary.qps);
    println!("  Average:      {:.3} ms", summary.average_ms);
    println!("Latency distribution:");
    for (label, value) in [
        ("50%", summary.p50_ms),
        ("90%", summary.p90_ms),
        ("99%", summary.p99_ms),
        ("99.9%", summary.p999_ms),
    ] {
        println!("  {label} in {value:.3} ms.");
    }
    println!("Response time histogram:");
    for (upper, count) in histogram(&result.latencies) {
        let bar = "∎".repeat((count * 40 / result.latencies.len().max(1)).max(usize::from(count > 0)));
        println!("  {upper:>9.3} ms [{count:>7}]\t|{bar}");
    }
    if let Some(usage) = usage {
        println!(
            "Server: {:.2} CPU seconds, peak RSS {:.1} MiB",
            usage.cpu_seconds,
            usage.peak_rss_bytes as f64 / 1048576.0
        );
    }
}

/// Counts of latencies up to each of ten buckets evenly spread up to the slowest.
fn histogram(latencies: &[Duration]) -> Vec<(f64, usize)> {
    let Some(max) = latencies.last().copied().map(ms) else { return Vec::new() };
    let mut buckets: Vec<(f64, usize)> = (1..=10).map(|n| (max * n as f64 / 10.0, 0)).collect();
    for latency in latencies {
        let value = ms(*latency);
        if let Some(bucket) = buckets.iter_mut().find(|(upper, _)| value <= *upper) {
            bucket.1 += 1;
        }
    }
    buckets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_rates_of_a_known_run() {
        // 1..=1000 ms, in one second: the pth percentile is p*10 ms.
        let latencies: Vec<Duration> = (1..=1000).map(Duration::from_millis).collect();
        let result = LoadResult { elapsed: Duration::from_secs(1), latencies };
        let summary = summarize(&result);
        assert_eq!(summary.requests, 1000);
        assert!((summary.qps - 1000.0).abs() < 1e-9);
        assert!((summary.average_ms - 500.5).abs() < 1e-9);
        assert_eq!(
            (summary.p50_ms, summary.p90_ms, summary.p99_ms, summary.p999_ms),
            (500.0, 900.0, 990.0, 999.0)
        );
        let buckets = histogram(&result.latencies);
        assert_eq!(buckets.len(), 10);
        assert!(buckets.iter().all(|(_, count)| *count == 100));
    }

    #[test]
    fn this_process_usage_can_be_read() {
        let usage = ProcessUsage::read(std::process::id()).expect("/proc is readable");
        assert!(usage.peak_rss_bytes > 0);
    }
}
