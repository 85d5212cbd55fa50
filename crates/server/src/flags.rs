//! etcd 3.5's server flags that Cairn does not implement, each refused at start with
//! the reason, whether given on the command line (`--flag`, `-flag`, `--flag=value`)
//! or as its `ETCD_*` variable: never accepted and ignored.

/// Flag (without dashes) and why Cairn refuses it.
pub(crate) const REFUSED: &[(&str, &str)] = &[
    ("backend-batch-interval", "the state machine commits every 100 ms, not configurable"),
    ("backend-batch-limit", "the state machine commits by time (100 ms), not by count"),
    ("backend-bbolt-freelist-type", "the store is redb, not bbolt"),
    ("cipher-suites", "TLS cipher suites are rustls's safe defaults, not configurable"),
    ("client-cert-allowed-hostname", "client certificates are checked against --trusted-ca-file only"),
    ("cors", "the HTTP gateway does not serve cross-origin requests"),
    ("discovery", "discovery services are not supported: bootstrap with --initial-cluster"),
    ("discovery-fallback", "discovery services are not supported: bootstrap with --initial-cluster"),
    ("discovery-proxy", "discovery services are not supported: bootstrap with --initial-cluster"),
    ("discovery-srv", "DNS discovery is not supported: bootstrap with --initial-cluster"),
    ("discovery-srv-name", "DNS discovery is not supported: bootstrap with --initial-cluster"),
    ("enable-log-rotation", "logs go to standard error or output; rotate them outside"),
    ("enable-pprof", "pprof is Go's profiler; use --listen-metrics-urls for metrics"),
    ("enable-v2", "the v2 API is not served (etcd 3.5 deprecated it)"),
    ("experimental-bootstrap-defrag-threshold-megabytes", "defragment with etcdctl defrag instead"),
    ("experimental-distributed-tracing-address", "distributed tracing is not supported"),
    ("experimental-distributed-tracing-instance-id", "distributed tracing is not supported"),
    ("experimental-distributed-tracing-service-name", "distributed tracing is not supported"),
    ("experimental-enable-distributed-tracing", "distributed tracing is not supported"),
    ("experimental-enable-v2v3", "the v2 API is not served"),
    ("experimental-peer-skip-client-san-verification", "peer certificates are always verified"),
    ("experimental-txn-mode-write-with-shared-buffer", "a bbolt read-buffer option; the store is redb"),
    ("experimental-warning-apply-duration", "slow applies are measured in metrics, not configured"),
    ("force-new-cluster", "rewriting a member's membership in place is not supported"),
    ("grpc-keepalive-interval", "gRPC keepalive is tonic's default, not configurable"),
    ("grpc-keepalive-min-time", "gRPC keepalive is tonic's default, not configurable"),
    ("grpc-keepalive-timeout", "gRPC keepalive is tonic's default, not configurable"),
    ("host-whitelist", "the HTTP gateway does not check Host headers"),
    ("initial-election-tick-advance", "a new member always waits a full election timeout"),
    ("log-rotation-config-json", "logs go to standard error or output; rotate them outside"),
    ("max-snapshots", "raft snapshots are not kept as files: the state machine is the snapshot"),
    ("max-wals", "write-ahead log segments are removed once compacted, not counted"),
    ("peer-cert-allowed-cn", "peer certificates are checked against --peer-trusted-ca-file only"),
    ("peer-cert-allowed-hostname", "peer certificates are checked against --peer-trusted-ca-file only"),
    ("proxy", "proxy mode is not supported"),
    ("proxy-dial-timeout", "proxy mode is not supported"),
    ("proxy-failure-wait", "proxy mode is not supported"),
    ("proxy-read-timeout", "proxy mode is not supported"),
    ("proxy-refresh-interval", "proxy mode is not supported"),
    ("proxy-write-timeout", "proxy mode is not supported"),
    ("self-signed-cert-validity", "--auto-tls certificates are valid for one year"),
    ("socket-reuse-address", "listeners always set SO_REUSEADDR"),
    ("socket-reuse-port", "SO_REUSEPORT is not supported"),
    ("tls-min-version", "TLS 1.2 and 1.3 are accepted (rustls), not configurable"),
    ("tls-max-version", "TLS 1.2 and 1.3 are accepted (rustls), not configurable"),
    ("unsafe-no-fsync", "every write is synced; there is no unsafe mode"),
    ("v2-deprecation", "the v2 API is not served"),
    ("wal-dir", "the write-ahead log lives in <data-dir>/member/wal"),
];

/// The first refused flag in `args` or the environment (`ETCD_<FLAG>`), with why.
pub(crate) fn refused(
    args: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    for arg in args {
        let Some(name) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else { continue };
        let name = name.split('=').next().unwrap_or_default();
        if let Some((flag, why)) = REFUSED.iter().find(|(flag, _)| *flag == name) {
            return Some(format!("--{flag} is not supported by cairn: {why}"));
        }
    }
    for (flag, why) in REFUSED {
        let variable = format!("ETCD_{}", flag.to_uppercase().replace('-', "_"));
        if env(&variable).is_some() {
            return Some(format!("{variable} (--{flag}) is not supported by cairn: {why}"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_args(args: &[&str]) -> Option<String> {
        refused(args.iter().map(|arg| arg.to_string()), |_| None)
    }

    #[test]
    fn refused_flags_are_named_with_their_reason_in_every_spelling() {
        let why = "--max-wals is not supported by cairn: write-ahead log segments are removed once compacted, not counted";
        assert_eq!(refused_args(&["--name", "x", "--max-wals", "5"]).as_deref(), Some(why));
        assert_eq!(refused_args(&["--max-wals=5"]).as_deref(), Some(why));
        assert_eq!(refused_args(&["-max-wals=5"]).as_deref(), Some(why));
        assert_eq!(refused_args(&["--name", "max-wals"]), None, "a value is not a flag");
        let from_env = refused(Vec::new(), |name| (name == "ETCD_ENABLE_PPROF").then(|| "true".to_owned()));
        assert!(from_env.unwrap().starts_with("ETCD_ENABLE_PPROF (--enable-pprof) is not supported"));
    }
}
