//! Auto-compaction's policy (etcd's `v3compactor`): when to compact, and to which
//! revision, for `--auto-compaction-mode` periodic or revision. [`Compactor`] reads no
//! clock: it is shown the time and the store revision at each step, so tests drive it
//! with any times.
//!
//! - **periodic** (retention `P`): the revision is sampled every `min(P, 1h) / 10`;
//!   the first compaction comes `P` after start, then one every `min(P, 1h)`, each to
//!   the oldest sample kept (about `P` ago). A failed one is retried at the next
//!   sample.
//! - **revision** (retention `N`): every 5 minutes, to `current - N` when that is
//!   positive and new.
//!
//! Every member samples; only the leader compacts (etcd pauses the others).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How often revision mode looks (etcd's `revInterval`).
pub const REVISION_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// An hour.
pub const HOUR: Duration = Duration::from_secs(3600);

/// What to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Keep what was written in the last period.
    Periodic(Duration),
    /// Keep the last so many revisions.
    Revision(u64),
}

/// When to compact, and to what.
#[derive(Debug)]
pub struct Compactor {
    retention: Retention,
    /// Periodic: revisions sampled, oldest first, at most `period / interval + 1`.
    samples: VecDeque<u64>,
    last_success: Instant,
    /// Periodic: how long after the last success the next compaction comes: the
    /// period the first time, then `min(period, 1h)`.
    wait: Duration,
    /// Revision: the last revision compacted to.
    previous: u64,
}

impl Compactor {
    /// A compactor started at `now` with the store at `revision`.
    pub fn new(retention: Retention, now: Instant, revision: u64) -> Self {
        let wait = match retention {
            Retention::Periodic(period) => period,
            Retention::Revision(_) => REVISION_INTERVAL,
        };
        Self { retention, samples: VecDeque::from([revision]), last_success: now, wait, previous: 0 }
    }

    /// How long between steps.
    pub fn interval(&self) -> Duration {
        match self.retention {
            Retention::Periodic(period) => period.min(HOUR) / 10,
            Retention::Revision(_) => REVISION_INTERVAL,
        }
    }

    /// One step at `now`, with the store at `revision`: the revision to compact to,
    /// if it is time and this member leads.
    pub fn step(&mut self, now: Instant, revision: u64, leads: bool) -> Option<u64> {
        match self.retention {
            Retention::Periodic(period) => {
                let due = leads && now.duration_since(self.last_success) >= self.wait;
                let target = due.then(|| self.samples[0]);
                if due {
                    self.wait = period.min(HOUR);
                }
                let keep = (period.as_nanos() / self.interval().as_nanos().max(1)) as usize + 1;
                self.samples.push_back(revision);
                while self.samples.len() > keep {
                    self.samples.pop_front();
                }
                target.filter(|target| *target > 0)
            }
            Retention::Revision(keep) => {
                let target = revision.checked_sub(keep).filter(|t| *t > 0 && *t != self.previous);
                target.filter(|_| leads)
            }
        }
    }

    /// The compaction to `revision` was applied (or one at or above it already was).
    pub fn succeeded(&mut self, now: Instant, revision: u64) {
        self.last_success = now;
        self.previous = revision;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Steps `compactor` every interval for `steps` steps from `start`, with the
    /// revision growing by `rate` per step; the compactions it asks for, as
    /// (step, revision).
    fn run(compactor: &mut Compactor, start: Instant, steps: u32, rate: u64, leads: bool) -> Vec<(u32, u64)> {
        let mut asked = Vec::new();
        for step in 1..=steps {
            let now = start + compactor.interval() * step;
            if let Some(target) = compactor.step(now, 1 + rate * u64::from(step), leads) {
                compactor.succeeded(now, target);
                asked.push((step, target));
            }
        }
        asked
    }

    #[test]
    fn periodic_compacts_after_the_period_then_every_period_to_a_period_ago() {
        let start = Instant::now();
        let mut compactor = Compactor::new(Retention::Periodic(Duration::from_secs(600)), start, 1);
        assert_eq!(compactor.interval(), Duration::from_secs(60));
        // 10 revisions a minute: compactions at 10, 20, 30 minutes, each to the
        // revision of 10 minutes before.
        assert_eq!(run(&mut compactor, start, 30, 10, true), [(10, 1), (20, 91), (30, 191)]);
    }

    #[test]
    fn periodic_over_an_hour_compacts_hourly_keeping_the_whole_period() {
        let start = Instant::now();
        let mut compactor = Compactor::new(Retention::Periodic(2 * HOUR), start, 1);
        assert_eq!(compactor.interval(), Duration::from_secs(360));
        let asked = run(&mut compactor, start, 40, 1, true);
        // First after 2 h (step 20), then hourly (every 10 steps), 2 h back.
        assert_eq!(asked, [(20, 1), (30, 10), (40, 20)]);
    }

    #[test]
    fn only_the_leader_compacts_but_every_member_keeps_sampling() {
        let start = Instant::now();
        let mut compactor = Compactor::new(Retention::Periodic(Duration::from_secs(600)), start, 1);
        assert!(run(&mut compactor, start, 15, 10, false).is_empty());
        // Leading from then on: due at once, to 10 minutes back.
        let now = start + compactor.interval() * 16;
        assert_eq!(compactor.step(now, 161, true), Some(51));
    }

    #[test]
    fn a_failed_periodic_compaction_is_retried_at_the_next_sample() {
        let start = Instant::now();
        let mut compactor = Compactor::new(Retention::Periodic(Duration::from_secs(600)), start, 1);
        let interval = compactor.interval();
        for step in 1..10 {
            assert_eq!(compactor.step(start + interval * step, u64::from(step) * 10, true), None);
        }
        assert_eq!(compactor.step(start + interval * 10, 100, true), Some(1));
        // Not reported done: asked again at the next step.
        assert_eq!(compactor.step(start + interval * 11, 110, true), Some(1));
        compactor.succeeded(start + interval * 11, 1);
        assert_eq!(compactor.step(start + interval * 12, 120, true), None, "then a period later");
    }

    #[test]
    fn revision_mode_keeps_the_last_revisions_every_five_minutes() {
        let start = Instant::now();
        let mut compactor = Compactor::new(Retention::Revision(100), start, 1);
        assert_eq!(compactor.interval(), Duration::from_secs(300));
        assert_eq!(compactor.step(start, 50, true), None, "nothing to compact yet");
        assert_eq!(compactor.step(start, 150, false), None, "a follower does not compact");
        assert_eq!(compactor.step(start, 150, true), Some(50));
        compactor.succeeded(start, 50);
        assert_eq!(compactor.step(start, 150, true), None, "nothing new");
        assert_eq!(compactor.step(start, 400, true), Some(300));
    }
}
