//! Linearizable reads batched into read-index rounds, as etcd's
//! `linearizableReadLoop` batches them: every read waiting when a round starts is
//! answered by that round's index.

use std::time::{Duration, Instant};

use tokio::sync::oneshot::Sender;

/// A read waiting for an index: answered with it, or with an error.
pub type ReadReply<E> = Sender<Result<u64, E>>;

/// One round: its context and the reads its answer releases.
#[derive(Debug)]
struct Round<E> {
    context: Vec<u8>,
    replies: Vec<ReadReply<E>>,
    started: Instant,
}

/// The reads of one member waiting for read-index rounds, one round in flight at a
/// time. A round's context names the member as well as the round, since a leader
/// keeps one pending round per context: two members' rounds must never collide.
#[derive(Debug)]
pub struct ReadRounds<E> {
    member: u64,
    pending: Vec<ReadReply<E>>,
    in_flight: Option<Round<E>>,
    rounds: u64,
}

impl<E> ReadRounds<E> {
    /// No reads yet, for member `member`.
    pub fn new(member: u64) -> Self {
        Self { member, pending: Vec::new(), in_flight: None, rounds: 0 }
    }

    /// Queues a read for the next round.
    pub fn push(&mut self, reply: ReadReply<E>) {
        self.pending.push(reply);
    }

    /// Takes back the reads of a round unanswered for `retry` at `now` (its request or
    /// answer was lost, or leadership moved), to be asked again under a new context;
    /// true when it did (etcd counts these as slow read indexes).
    pub fn retry_stale(&mut self, now: Instant, retry: Duration) -> bool {
        let stale = |round: &mut Round<E>| now.saturating_duration_since(round.started) >= retry;
        match self.in_flight.take_if(stale) {
            Some(round) => {
                self.pending.extend(round.replies);
                true
            }
            None => false,
        }
    }

    /// Drops the waiting reads whose caller gave up (also while no round can start,
    /// so that they do not pile up without a leader).
    pub fn forget_gone(&mut self) {
        self.pending.retain(|reply| !reply.is_closed());
    }

    /// Starts a round for every read waiting (those whose caller gave up dropped) and
    /// returns its context for raft's `read_index`; `None` while a round is in flight
    /// or nothing waits.
    pub fn start(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.forget_gone();
        if self.in_flight.is_some() || self.pending.is_empty() {
            return None;
        }
        self.rounds += 1;
        let mut context = self.member.to_be_bytes().to_vec();
        context.extend_from_slice(&self.rounds.to_be_bytes());
        let replies = std::mem::take(&mut self.pending);
        self.in_flight = Some(Round { context: context.clone(), replies, started: now });
        Some(context)
    }

    /// Answers the round `context` names with `index`; an answer to a round since
    /// retried is ignored (the new round answers).
    pub fn answer(&mut self, context: &[u8], index: u64) {
        if let Some(round) = self.in_flight.take_if(|round| round.context == context) {
            for reply in round.replies {
                let _ = reply.send(Ok(index));
            }
        }
    }

    /// Fails every read waiting, in a round or not, with `error()`: a round confirms
    /// nothing about a leadership that ended.
    pub fn fail_all(&mut self, error: impl Fn() -> E) {
        let replies = self.in_flight.take().into_iter().flat_map(|round| round.replies);
        for reply in replies.chain(self.pending.drain(..)) {
            let _ = reply.send(Err(error()));
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;

    #[test]
    fn reads_share_a_round_and_a_lost_round_is_asked_again_under_a_new_context() {
        let start = Instant::now();
        let mut rounds = ReadRounds::<&str>::new(7);
        assert_eq!(rounds.start(start), None);
        let (first, mut first_answer) = oneshot::channel();
        let (second, mut second_answer) = oneshot::channel();
        let (gone, _) = oneshot::channel();
        rounds.push(first);
        rounds.push(second);
        rounds.push(gone);
        let context = rounds.start(start).unwrap();
        assert_eq!(context[..8], 7u64.to_be_bytes());
        // One round at a time.
        let (third, mut third_answer) = oneshot::channel();
        rounds.push(third);
        assert_eq!(rounds.start(start), None);
        assert!(!rounds.retry_stale(start + Duration::from_millis(499), Duration::from_millis(500)));
        assert!(rounds.retry_stale(start + Duration::from_millis(500), Duration::from_millis(500)));
        let retried = rounds.start(start + Duration::from_millis(500)).unwrap();
        assert_ne!(retried, context);
        // The old round's late answer releases nothing; the new one's releases all.
        rounds.answer(&context, 41);
        assert!(first_answer.try_recv().is_err());
        rounds.answer(&retried, 42);
        assert_eq!(
            (first_answer.try_recv(), second_answer.try_recv(), third_answer.try_recv()),
            (Ok(Ok(42)), Ok(Ok(42)), Ok(Ok(42)))
        );
    }

    #[test]
    fn a_leadership_change_fails_every_waiting_read() {
        let now = Instant::now();
        let mut rounds = ReadRounds::new(1);
        let (in_round, mut in_round_answer) = oneshot::channel();
        rounds.push(in_round);
        rounds.start(now).unwrap();
        let (queued, mut queued_answer) = oneshot::channel();
        rounds.push(queued);
        rounds.fail_all(|| "leader changed");
        assert_eq!(in_round_answer.try_recv(), Ok(Err("leader changed")));
        assert_eq!(queued_answer.try_recv(), Ok(Err("leader changed")));
        assert_eq!(rounds.start(now), None);
    }
}
