//! Auto-compaction (`--auto-compaction-mode` and `--auto-compaction-retention`): the
//! flags read as etcd reads them, and a task that shows `cairn-mvcc`'s [`Compactor`]
//! the real time and revision and proposes its compactions through raft.

use std::time::Duration;

pub(crate) use cairn_mvcc::compactor::{Compactor, HOUR, Retention};

/// Parses etcd's `--auto-compaction-mode` and `--auto-compaction-retention`: `None`
/// when off (a zero retention). A bare number is hours (periodic) or revisions
/// (revision); anything else is a Go duration, in revision mode too (where it counts
/// as nanoseconds, as etcd reads it).
pub(crate) fn parse(mode: &str, retention: &str) -> Result<Option<Retention>, String> {
    let parsed = match (mode, retention.parse::<u64>()) {
        ("periodic", Ok(hours)) => Retention::Periodic(HOUR * u32::try_from(hours).map_err(|_| "too long")?),
        ("revision", Ok(revisions)) => Retention::Revision(revisions),
        ("periodic", Err(_)) => Retention::Periodic(parse_go_duration(retention)?),
        ("revision", Err(_)) => Retention::Revision(parse_go_duration(retention)?.as_nanos() as u64),
        (other, _) => return Err(format!("unknown auto-compaction-mode {other:?}")),
    };
    Ok(match parsed {
        Retention::Periodic(period) if period.is_zero() => None,
        Retention::Revision(0) => None,
        retention => Some(retention),
    })
}

/// Go's `time.ParseDuration`, with etcd's error text.
fn parse_go_duration(text: &str) -> Result<Duration, String> {
    cairn_auth::parse_go_duration(text)
        .ok_or_else(|| format!("error parsing CompactionRetention: time: invalid duration {text:?}"))
}

/// Runs `compactor` until the process ends: each step reads the store revision and
/// whether this member leads, and compacts through `compact`, which answers whether
/// the compaction is done (applied, or already covered by an earlier one).
pub(crate) fn spawn<R, C, F>(mut compactor: Compactor, mut state: R, compact: C)
where
    R: FnMut() -> (u64, bool) + Send + 'static,
    C: Fn(u64) -> F + Send + 'static,
    F: std::future::Future<Output = bool> + Send,
{
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(compactor.interval()).await;
            let (revision, leads) = state();
            let now = tokio::time::Instant::now().into_std();
            if let Some(target) = compactor.step(now, revision, leads) {
                tracing::info!(revision = target, "starting auto compaction");
                if compact(target).await {
                    compactor.succeeded(tokio::time::Instant::now().into_std(), target);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_read_as_etcd_reads_it() {
        assert_eq!(parse("periodic", "0"), Ok(None));
        assert_eq!(parse("periodic", "2"), Ok(Some(Retention::Periodic(2 * HOUR))));
        assert_eq!(parse("periodic", "30m"), Ok(Some(Retention::Periodic(Duration::from_secs(1800)))));
        assert_eq!(parse("periodic", "1h30m"), Ok(Some(Retention::Periodic(Duration::from_secs(5400)))));
        assert_eq!(parse("periodic", "1.5s"), Ok(Some(Retention::Periodic(Duration::from_millis(1500)))));
        assert_eq!(parse("revision", "1000"), Ok(Some(Retention::Revision(1000))));
        assert_eq!(parse("revision", "5m"), Ok(Some(Retention::Revision(300_000_000_000))));
        assert!(parse("periodic", "soon").unwrap_err().contains("invalid duration"));
        assert!(parse("periodic", "-1h").is_err());
        assert_eq!(parse("daily", "1"), Err("unknown auto-compaction-mode \"daily\"".to_owned()));
    }
}
