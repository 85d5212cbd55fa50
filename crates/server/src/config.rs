//! etcd's command line: flag names, defaults and environment variables.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use cairn_net::listen::{bind, split_urls};
use clap::Parser;
use tokio::net::TcpListener;

/// Cairn's configuration, spelled as etcd's flags, with etcd's defaults.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about = "An etcd-compatible, raft-replicated key-value server")]
// etcd lets a later flag override an earlier one of the same name.
#[command(args_override_self = true)]
pub(crate) struct Config {
    /// `cairn snapshot save|status|restore` instead of a server.
    #[command(subcommand)]
    pub(crate) command: Option<cairn_utl::Command>,

    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub(crate) name: String,

    /// Path to the data directory (default: `<name>.cairn` in the working directory).
    #[arg(long, env = "ETCD_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// Comma-separated URLs to listen on for client traffic.
    #[arg(long, env = "ETCD_LISTEN_CLIENT_URLS", default_value = "http://localhost:2379")]
    listen_client_urls: String,

    /// Comma-separated client URLs of this member to advertise to the cluster.
    #[arg(long, env = "ETCD_ADVERTISE_CLIENT_URLS", default_value = "http://localhost:2379")]
    advertise_client_urls: String,

    /// Comma-separated URLs to listen on for peer traffic (unused by a single member).
    #[arg(long, env = "ETCD_LISTEN_PEER_URLS", default_value = "http://localhost:2380")]
    listen_peer_urls: String,

    /// Comma-separated peer URLs of this member to advertise to the cluster.
    #[arg(long, env = "ETCD_INITIAL_ADVERTISE_PEER_URLS", default_value = "http://localhost:2380")]
    initial_advertise_peer_urls: String,

    /// Initial cluster configuration for bootstrapping: `name=peer-url,...`.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    initial_cluster: Option<String>,

    /// Initial cluster state: `new` or `existing`.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new")]
    initial_cluster_state: String,

    /// Initial cluster token, which member and cluster IDs derive from.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_TOKEN", default_value = "etcd-cluster")]
    pub(crate) initial_cluster_token: String,

    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    pub(crate) max_request_bytes: usize,

    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub(crate) max_txn_ops: usize,

    /// Raise alarms when the backend size exceeds the given quota (0 defaults to
    /// 2 GiB; a negative value turns the quota off).
    #[arg(long, env = "ETCD_QUOTA_BACKEND_BYTES", default_value_t = 0, allow_negative_numbers = true)]
    quota_backend_bytes: i64,

    /// The logger: `zap`, etcd 3.5's only one (Cairn writes its own format).
    #[arg(long, env = "ETCD_LOGGER", default_value = "zap")]
    logger: String,

    /// The least severe log level written: debug, info, warn, error, panic or fatal.
    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info")]
    log_level: String,

    /// Where logs go: `default` or `stderr` (standard error), or `stdout`.
    #[arg(long, env = "ETCD_LOG_OUTPUTS", default_value = "default")]
    log_outputs: String,

    /// Pre-vote before an election; always on in cairn, so only true is accepted.
    #[arg(long, env = "ETCD_PRE_VOTE", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pre_vote: bool,

    /// Which metrics are exported: `basic` (the only set cairn has).
    #[arg(long, env = "ETCD_METRICS", default_value = "basic")]
    metrics: String,

    /// Rows a compaction deletes per transaction.
    #[arg(long, env = "ETCD_EXPERIMENTAL_COMPACTION_BATCH_LIMIT", default_value_t = 1000)]
    pub(crate) experimental_compaction_batch_limit: usize,

    /// How `--auto-compaction-retention` is read: `periodic` or `revision`.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_MODE", default_value = "periodic")]
    auto_compaction_mode: String,

    /// Auto-compaction retention: hours (or a duration such as `30m`) for periodic,
    /// revisions for revision; 0 turns auto-compaction off.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_RETENTION", default_value = "0")]
    auto_compaction_retention: String,

    /// How often the leader checks its data against its peers' (a duration; 0 is off).
    #[arg(long, env = "ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME", default_value = "0s")]
    experimental_corrupt_check_time: String,

    /// Number of committed transactions after which the raft log is compacted.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub(crate) snapshot_count: u64,

    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    heartbeat_interval: u64,

    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    election_timeout: u64,

    /// Specify auth token type and options: `simple` or `jwt,...`.
    #[arg(long, env = "ETCD_AUTH_TOKEN", default_value = "simple")]
    pub(crate) auth_token: String,

    /// The lifetime in seconds of a simple auth token after its last use.
    #[arg(long, env = "ETCD_AUTH_TOKEN_TTL", default_value_t = 300)]
    pub(crate) auth_token_ttl: u64,

    /// How often watchers that asked for progress notifications get one.
    #[arg(long, env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL", default_value = "10m")]
    experimental_watch_progress_notify_interval: String,

    /// How often the leader records every lease's remaining TTL, so that it survives
    /// a restart.
    #[arg(long, env = "ETCD_EXPERIMENTAL_LEASE_CHECKPOINT_INTERVAL", default_value = "5m")]
    experimental_lease_checkpoint_interval: String,

    /// Lease checkpoints are always on in cairn: only true is accepted.
    #[arg(long, env = "ETCD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    experimental_enable_lease_checkpoint: bool,

    /// Specify the cost / strength of the bcrypt algorithm for hashing auth passwords.
    #[arg(long, env = "ETCD_BCRYPT_COST", default_value_t = 10)]
    pub(crate) bcrypt_cost: u32,

    /// Comma-separated URLs to serve /metrics and /health on.
    #[arg(long, env = "ETCD_LISTEN_METRICS_URLS", default_value = "")]
    listen_metrics_urls: String,

    /// Reject reconfiguration requests that would cause quorum loss.
    #[arg(long, env = "ETCD_STRICT_RECONFIG_CHECK", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub(crate) strict_reconfig_check: bool,

    /// Cairn's own: below this many free bytes on the data dir's file system, the
    /// member raises the NOSPACE alarm, so that writes are refused before the disk is
    /// full (reads, deletes and compaction go on). Enough for a WAL segment and more.
    #[arg(long, env = "CAIRN_DISK_LOW_WATER_BYTES", default_value_t = 80 * 1024 * 1024)]
    pub(crate) disk_low_water_bytes: u64,

    /// Before serving, compare this member's HashKV with its peers' and refuse to start
    /// on a mismatch (only a member that already has data checks).
    #[arg(long, env = "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub(crate) experimental_initial_corrupt_check: bool,

    #[command(flatten)]
    client_tls: cairn_net::tls::ClientTlsFlags,

    #[command(flatten)]
    peer_tls: cairn_net::tls::PeerTlsFlags,
}

impl Config {
    /// The data directory: `--data-dir`, or `<name>.cairn` in the working directory.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| PathBuf::from(format!("{}.cairn", self.name)))
    }

    /// The heartbeat interval.
    pub(crate) fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval)
    }

    /// The election timeout.
    pub(crate) fn election_timeout(&self) -> Duration {
        Duration::from_millis(self.election_timeout)
    }

    /// The election timeout in heartbeats, as raft counts it.
    pub(crate) fn election_ticks(&self) -> usize {
        (self.election_timeout / self.heartbeat_interval.max(1)) as usize
    }

    /// This member's advertised peer URLs, sorted as etcd sorts them for its ID.
    pub(crate) fn peer_urls(&self) -> Vec<String> {
        let mut urls: Vec<String> =
            split_urls(&self.initial_advertise_peer_urls).map(str::to_owned).collect();
        urls.sort();
        urls
    }

    /// The initial cluster, name to sorted peer URLs: `--initial-cluster`, or this
    /// member alone with its advertised peer URLs.
    pub(crate) fn initial_members(&self) -> anyhow::Result<std::collections::BTreeMap<String, Vec<String>>> {
        match &self.initial_cluster {
            Some(cluster) => Ok(cairn_utl::snapshot::parse_initial_cluster(cluster)?),
            None => Ok([(self.name.clone(), self.peer_urls())].into()),
        }
    }

    /// The backend quota in bytes (etcd's `--quota-backend-bytes`): 0 means etcd's
    /// default of 2 GiB, a negative value none.
    pub(crate) fn quota(&self) -> Option<u64> {
        match self.quota_backend_bytes {
            0 => Some(DEFAULT_QUOTA_BYTES),
            n if n < 0 => None,
            n => Some(n as u64),
        }
    }

    /// The tracing filter `--log-level` asks for (etcd's panic and fatal are errors).
    pub(crate) fn log_level(&self) -> &'static str {
        match self.log_level.as_str() {
            "debug" => "debug",
            "warn" => "warn",
            "error" | "panic" | "fatal" => "error",
            _ => "info",
        }
    }

    /// Whether `--log-outputs` sends logs to standard output.
    pub(crate) fn logs_to_stdout(&self) -> bool {
        self.log_outputs == "stdout"
    }

    /// `--experimental-corrupt-check-time`: `None` when off.
    pub(crate) fn corrupt_check_interval(&self) -> anyhow::Result<Option<Duration>> {
        let text = &self.experimental_corrupt_check_time;
        let interval = go_duration("experimental-corrupt-check-time", text, "1h", true)?;
        Ok(Some(interval).filter(|interval| !interval.is_zero()))
    }

    /// `--auto-compaction-mode` and `--auto-compaction-retention`: `None` when off.
    pub(crate) fn auto_compaction(&self) -> anyhow::Result<Option<crate::compactor::Retention>> {
        crate::compactor::parse(&self.auto_compaction_mode, &self.auto_compaction_retention)
            .map_err(|why| anyhow::anyhow!("--auto-compaction-retention/--auto-compaction-mode: {why}"))
    }

    /// Whether this member joins a running cluster (`--initial-cluster-state=existing`).
    pub(crate) fn joins_existing(&self) -> bool {
        self.initial_cluster_state == "existing"
    }

    /// The addresses to listen on for peers, each with whether it is `https`.
    pub(crate) async fn peer_listeners(&self) -> anyhow::Result<Vec<(TcpListener, bool)>> {
        Ok(bind(&self.listen_peer_urls).await?)
    }

    /// This member's advertised client URLs.
    pub(crate) fn client_urls(&self) -> Vec<String> {
        split_urls(&self.advertise_client_urls).map(str::to_owned).collect()
    }

    /// `--experimental-lease-checkpoint-interval` (a Go duration).
    pub(crate) fn lease_checkpoint_interval(&self) -> anyhow::Result<Duration> {
        let text = &self.experimental_lease_checkpoint_interval;
        go_duration("experimental-lease-checkpoint-interval", text, "5m", false)
    }

    /// `--experimental-watch-progress-notify-interval` (a Go duration).
    pub(crate) fn watch_progress_notify_interval(&self) -> anyhow::Result<Duration> {
        let text = &self.experimental_watch_progress_notify_interval;
        go_duration("experimental-watch-progress-notify-interval", text, "10m", false)
    }

    /// The token provider `--auth-token` names, simple tokens living
    /// `--auth-token-ttl` seconds after their last use.
    pub(crate) fn token_provider(&self) -> anyhow::Result<std::sync::Arc<dyn cairn_auth::TokenProvider>> {
        let ttl = Duration::from_secs(self.auth_token_ttl);
        cairn_auth::provider_from_spec(&self.auth_token, ttl, std::sync::Arc::new(cairn_auth::SystemClock))
            .with_context(|| format!("invalid --auth-token {:?}", self.auth_token))
    }

    /// Checks what etcd checks at start, and what Cairn cannot do yet.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if self.heartbeat_interval == 0 {
            bail!("--heartbeat-interval must be positive");
        }
        if self.election_timeout < 5 * self.heartbeat_interval {
            bail!(
                "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
                self.election_timeout,
                self.heartbeat_interval
            );
        }
        if self.max_txn_ops == 0 {
            bail!("--max-txn-ops must be positive");
        }
        if !(cairn_auth::MIN_BCRYPT_COST..=cairn_auth::MAX_BCRYPT_COST).contains(&self.bcrypt_cost) {
            bail!("invalid --bcrypt-cost {}: must be between 4 and 31", self.bcrypt_cost);
        }
        cairn_auth::provider_from_spec(
            &self.auth_token,
            Duration::from_secs(300),
            std::sync::Arc::new(cairn_auth::SystemClock),
        )
        .with_context(|| format!("invalid --auth-token {:?}", self.auth_token))?;
        match self.initial_cluster_state.as_str() {
            "new" | "existing" => {}
            other => bail!("invalid --initial-cluster-state {other:?}: expected new or existing"),
        }
        let members = self.initial_members()?;
        let Some(mine) = members.get(&self.name) else {
            bail!("couldn't find local name {:?} in the initial cluster configuration", self.name);
        };
        if *mine != self.peer_urls() {
            bail!(
                "--initial-cluster has {} but missing from --initial-advertise-peer-urls={} (the member's peer URLs must match)",
                mine.join(","),
                self.peer_urls().join(",")
            );
        }
        let tls = self.client_tls_files();
        let https = split_urls(&self.listen_client_urls).any(|url| url.starts_with("https://"));
        if https && tls.cert_file.is_empty() && !tls.auto_tls {
            bail!("an https:// client URL needs --cert-file and --key-file, or --auto-tls");
        }
        let peer_https = split_urls(&self.listen_peer_urls).any(|url| url.starts_with("https://"))
            || split_urls(&self.initial_advertise_peer_urls).any(|url| url.starts_with("https://"));
        let peer = self.peer_tls_files();
        if peer_https && !peer.auto_tls && (peer.cert_file.is_empty() || peer.trusted_ca_file.is_empty()) {
            bail!(
                "https:// peer URLs need --peer-cert-file, --peer-key-file and --peer-trusted-ca-file, or --peer-auto-tls"
            );
        }
        // Flags of etcd's that Cairn does not act on yet are refused, never accepted
        // and ignored.
        if self.quota_backend_bytes > MAX_QUOTA_BYTES {
            tracing::warn!(
                quota = self.quota_backend_bytes,
                max = MAX_QUOTA_BYTES,
                "--quota-backend-bytes is above the suggested maximum"
            );
        }
        for (flag, urls) in [
            ("--listen-client-urls", &self.listen_client_urls),
            ("--listen-peer-urls", &self.listen_peer_urls),
        ] {
            if let Some(url) =
                split_urls(urls).find(|url| url.starts_with("unix://") || url.starts_with("unixs://"))
            {
                bail!(
                    "{flag} {url}: unix:// and unixs:// URLs are not supported; listen on http:// or https://host:port"
                );
            }
        }
        if self.logger != "zap" {
            bail!("--logger {:?} is not supported: etcd 3.5's only logger is zap", self.logger);
        }
        if !["debug", "info", "warn", "error", "panic", "fatal"].contains(&self.log_level.as_str()) {
            bail!("--log-level {:?} is not one of debug, info, warn, error, panic, fatal", self.log_level);
        }
        if !["default", "stderr", "stdout"].contains(&self.log_outputs.as_str()) {
            bail!(
                "--log-outputs {:?} is not supported: logs go to stderr (default) or stdout; write them to \
                 files or the journal outside cairn",
                self.log_outputs
            );
        }
        if !self.pre_vote {
            bail!("--pre-vote=false is not supported: cairn's members always pre-vote before an election");
        }
        if self.metrics != "basic" {
            bail!("--metrics {:?} is not supported: cairn exports etcd's basic metrics only", self.metrics);
        }
        if self.experimental_compaction_batch_limit == 0 {
            bail!("--experimental-compaction-batch-limit must be at least 1");
        }
        self.auto_compaction()?;
        self.corrupt_check_interval()?;
        if !self.experimental_enable_lease_checkpoint {
            bail!(
                "--experimental-enable-lease-checkpoint=false is not supported: cairn always checkpoints \
                 remaining lease TTLs"
            );
        }
        let _ = &self.listen_peer_urls;
        Ok(())
    }

    /// The client TLS flags.
    pub(crate) fn client_tls_files(&self) -> cairn_net::tls::TlsFiles {
        self.client_tls.files()
    }

    /// The peer TLS flags.
    pub(crate) fn peer_tls_files(&self) -> cairn_net::tls::TlsFiles {
        self.peer_tls.files()
    }

    /// Binds every `--listen-client-urls` address, each with whether it is `https`.
    pub(crate) async fn client_listeners(&self) -> anyhow::Result<Vec<(TcpListener, bool)>> {
        let listeners = bind(&self.listen_client_urls).await?;
        if listeners.is_empty() {
            bail!("--listen-client-urls is empty");
        }
        Ok(listeners)
    }

    /// Binds every `--listen-metrics-urls` address (none by default).
    pub(crate) async fn metrics_listeners(&self) -> anyhow::Result<Vec<TcpListener>> {
        plain(bind(&self.listen_metrics_urls).await?, "--listen-metrics-urls")
    }
}

/// Flag `--flag`'s Go duration (`1h30m`), zero only when `zero_is_allowed`.
fn go_duration(flag: &str, text: &str, example: &str, zero_is_allowed: bool) -> anyhow::Result<Duration> {
    match cairn_auth::parse_go_duration(text) {
        Some(duration) if zero_is_allowed || !duration.is_zero() => Ok(duration),
        _ => bail!("invalid --{flag} {text:?}: expected a duration such as {example}"),
    }
}

/// The listeners, which must all be plain `http`.
fn plain(listeners: Vec<(TcpListener, bool)>, flag: &str) -> anyhow::Result<Vec<TcpListener>> {
    if listeners.iter().any(|(_, tls)| *tls) {
        bail!("{flag}: TLS is not available yet in cairn for this listener");
    }
    Ok(listeners.into_iter().map(|(listener, _)| listener).collect())
}

/// etcd's backend quota when `--quota-backend-bytes` is 0.
const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Above this quota etcd warns that the backend may perform poorly.
const MAX_QUOTA_BYTES: i64 = 8 * 1024 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("cairn").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn flags_cairn_does_not_act_on_are_refused_not_ignored() {
        let error = parse(&["--experimental-enable-lease-checkpoint=false"]).validate().unwrap_err();
        assert!(error.to_string().contains("cairn always checkpoints"), "{error}");
        for accepted in [
            "--quota-backend-bytes=0",
            "--quota-backend-bytes=-1",
            "--quota-backend-bytes=8589934592",
            "--experimental-initial-corrupt-check",
            "--experimental-enable-lease-checkpoint",
            "--strict-reconfig-check=false",
        ] {
            parse(&[accepted]).validate().unwrap();
        }
    }

    #[test]
    fn logging_flags_are_etcds_or_refused() {
        assert_eq!(parse(&["--log-level=debug"]).log_level(), "debug");
        assert_eq!(parse(&["--log-level=fatal"]).log_level(), "error");
        assert!(parse(&["--log-outputs=stdout"]).logs_to_stdout());
        parse(&["--logger=zap", "--log-outputs=stderr"]).validate().unwrap();
        for (flag, says) in [
            ("--logger=capnslog", "only logger is zap"),
            ("--log-level=loud", "is not one of"),
            ("--log-outputs=/var/log/etcd.log", "logs go to stderr"),
            ("--experimental-compaction-batch-limit=0", "at least 1"),
            ("--listen-client-urls=unix:///tmp/etcd.sock", "unix:// and unixs:// URLs are not supported"),
            ("--listen-peer-urls=unixs://localhost:2380", "unix:// and unixs:// URLs are not supported"),
        ] {
            let error = parse(&[flag]).validate().unwrap_err().to_string();
            assert!(error.contains(says), "{flag}: {error}");
        }
    }

    #[test]
    fn auto_compaction_flags_are_etcds() {
        use crate::compactor::Retention;
        assert_eq!(parse(&[]).auto_compaction().unwrap(), None);
        let hourly = parse(&["--auto-compaction-retention=1"]).auto_compaction().unwrap();
        assert_eq!(hourly, Some(Retention::Periodic(Duration::from_secs(3600))));
        let revisions = parse(&["--auto-compaction-mode=revision", "--auto-compaction-retention=1000"]);
        assert_eq!(revisions.auto_compaction().unwrap(), Some(Retention::Revision(1000)));
        let error = parse(&["--auto-compaction-mode=weekly", "--auto-compaction-retention=1"])
            .validate()
            .unwrap_err();
        assert!(error.to_string().contains("unknown auto-compaction-mode \"weekly\""), "{error}");
        let error = parse(&["--auto-compaction-retention=soon"]).validate().unwrap_err();
        assert!(error.to_string().contains("invalid duration"), "{error}");
    }

    #[test]
    fn the_quota_is_etcds() {
        assert_eq!(parse(&[]).quota(), Some(2 * 1024 * 1024 * 1024));
        assert_eq!(parse(&["--quota-backend-bytes=-1"]).quota(), None);
        assert_eq!(parse(&["--quota-backend-bytes", "4096"]).quota(), Some(4096));
    }

    #[test]
    fn defaults_are_etcds() {
        let config = parse(&[]);
        assert_eq!(config.name, "default");
        assert_eq!(config.data_dir(), PathBuf::from("default.cairn"));
        assert_eq!(config.listen_client_urls, "http://localhost:2379");
        assert_eq!(config.max_request_bytes, 1_572_864);
        assert_eq!(config.max_txn_ops, 128);
        assert_eq!(config.snapshot_count, 100_000);
        assert_eq!(config.heartbeat(), Duration::from_millis(100));
        assert_eq!(config.election_ticks(), 10);
        assert_eq!(config.peer_urls(), ["http://localhost:2380"]);
        assert!(config.strict_reconfig_check);
        config.validate().unwrap();
    }

    #[test]
    fn both_flag_forms_and_repeats_are_accepted() {
        let config = parse(&["--name", "a", "--name=b", "--data-dir=/tmp/x", "--client-cert-auth=false"]);
        assert_eq!(config.name, "b");
        assert_eq!(config.data_dir(), PathBuf::from("/tmp/x"));
        assert!(!config.client_tls_files().client_cert_auth);
        let config = parse(&["--strict-reconfig-check=false", "--peer-auto-tls"]);
        assert!(!config.strict_reconfig_check);
        assert!(config.peer_tls_files().auto_tls);
        config.validate().unwrap();
    }

    #[test]
    fn an_unknown_flag_is_an_error() {
        let error = Config::try_parse_from(["cairn", "--no-such-flag"]).unwrap_err();
        assert!(error.to_string().contains("--no-such-flag"), "{error}");
    }

    #[test]
    fn what_cannot_work_yet_or_is_wrong_is_refused_clearly() {
        let refused = |args: &[&str]| parse(args).validate().unwrap_err().to_string();
        assert_eq!(
            refused(&["--listen-client-urls=https://127.0.0.1:2379"]),
            "an https:// client URL needs --cert-file and --key-file, or --auto-tls"
        );
        assert!(
            refused(&["--initial-cluster=default=http://a:2380,other=http://b:2380"]).contains("must match")
        );
        let three = "--initial-cluster=default=http://localhost:2380,b=http://b:2380,c=http://c:2380";
        parse(&[three]).validate().unwrap();
        assert_eq!(parse(&[three]).initial_members().unwrap().len(), 3);
        assert!(refused(&["--initial-cluster=other=http://b:2380"]).contains("couldn't find local name"));
        assert!(refused(&["--bcrypt-cost=3"]).contains("bcrypt-cost"));
        assert!(refused(&["--auth-token=magic"]).starts_with("invalid --auth-token"));
        assert!(refused(&["--election-timeout=200"]).contains("5 times"));
        assert!(refused(&["--initial-cluster-state=old"]).contains("new or existing"));
        parse(&["--initial-cluster=default=http://localhost:2380"]).validate().unwrap();
    }
}
