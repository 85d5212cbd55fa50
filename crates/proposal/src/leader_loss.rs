//! What ends a stream that asked for a leader (etcd's `WithRequireLeader` and
//! `monitorLeader`): the member has been without one for a grace period.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Watches since when a member has had no leader (`None` while it has one, as its
/// raft loop publishes it) and completes [`LeaderLoss::lost`] once that lasts
/// `grace`. A healthy election leaves a member leaderless for milliseconds and ends
/// nothing; a member cut off from the majority stays leaderless; a leader that
/// stepped down for want of a quorum can publish a start an election timeout in the
/// past, which ends such streams at once.
#[derive(Debug)]
pub struct LeaderLoss {
    leaderless_since: watch::Receiver<Option<Instant>>,
    grace: Duration,
}

impl LeaderLoss {
    /// A watch of `leaderless_since` with `grace`.
    pub fn new(leaderless_since: watch::Receiver<Option<Instant>>, grace: Duration) -> Self {
        Self { leaderless_since, grace }
    }

    /// Completes once the member has been leaderless for the grace period; never
    /// when the publisher is gone.
    pub async fn lost(&mut self) {
        loop {
            let since = *self.leaderless_since.borrow_and_update();
            let changed = match since {
                Some(since) => tokio::select! {
                    () = tokio::time::sleep_until(since + self.grace) => return,
                    changed = self.leaderless_since.changed() => changed,
                },
                None => self.leaderless_since.changed().await,
            };
            if changed.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// [`LeaderLoss::lost`] for a stream that may not have asked for a leader:
    /// never completes for `None`.
    pub async fn lost_if_asked(loss: &mut Option<Self>) {
        match loss {
            Some(loss) => loss.lost().await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_millis(500);

    /// Whether `loss` completes within `within`, on paused time.
    async fn completes(loss: &mut LeaderLoss, within: Duration) -> bool {
        tokio::time::timeout(within, loss.lost()).await.is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_leaderless_spell_longer_than_the_grace_ends_a_stream() {
        let (since, receiver) = watch::channel(None);
        let mut loss = LeaderLoss::new(receiver, GRACE);
        assert!(!completes(&mut loss, Duration::from_secs(5)).await, "a member with a leader");
        // A short election: leaderless, then a leader again before the grace ends.
        since.send_replace(Some(Instant::now()));
        assert!(!completes(&mut loss, GRACE / 2).await);
        since.send_replace(None);
        assert!(!completes(&mut loss, Duration::from_secs(5)).await);
        // Cut off: lost exactly at the grace.
        let start = Instant::now();
        since.send_replace(Some(start));
        assert!(completes(&mut loss, Duration::from_secs(5)).await);
        assert_eq!(Instant::now() - start, GRACE);
        // A leader that lost its quorum publishes a start in the past: lost at once.
        since.send_replace(Some(Instant::now() - GRACE));
        assert!(completes(&mut loss, Duration::ZERO).await);
        // A leader again, then no publisher: never.
        since.send_replace(None);
        drop(since);
        assert!(!completes(&mut loss, Duration::from_secs(5)).await);
        assert!(tokio::time::timeout(GRACE * 2, LeaderLoss::lost_if_asked(&mut None)).await.is_err());
    }
}
