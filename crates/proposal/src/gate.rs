//! The gate itself.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cairn_idgen::Generator;
use cairn_wait::Wait;
use opentelemetry::metrics::Meter;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, PendingGuard};
use crate::traits::{AuthSource, Header, IndexSource, Leadership, Proposer, Request};
use crate::{Error, Result};

/// etcd's `maxGapBetweenApplyAndCommitIndex`.
pub const DEFAULT_MAX_GAP: u64 = 5000;

/// etcd's `DefaultMaxRequestBytes`: 1.5 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 3 * 1024 * 1024 / 2;

/// The gate's limits and timing.
#[derive(Debug, Clone)]
pub struct Config {
    /// How far the committed index may run ahead of the applied index before
    /// requests are refused. Priority requests get twice this.
    pub max_gap: u64,
    /// The largest encoded request accepted, in bytes.
    pub max_request_bytes: usize,
    /// How long a request may take from proposal to result, unless the caller's
    /// deadline is sooner: etcd's `5 s + 2 × election timeout`.
    pub request_timeout: Duration,
    /// The raft election timeout, which sizes the "previous leader failure" window:
    /// a request proposed within two election timeouts before the current leader was
    /// elected timed out because of the election.
    pub election_timeout: Duration,
}

impl Config {
    /// etcd's defaults for a given election timeout (1 s in etcd).
    pub fn with_election_timeout(election_timeout: Duration) -> Self {
        Self {
            max_gap: DEFAULT_MAX_GAP,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            request_timeout: Duration::from_secs(5) + 2 * election_timeout,
            election_timeout,
        }
    }
}

impl Default for Config {
    /// etcd's defaults: gap 5000, 1.5 MiB, 1 s election timeout, so a 7 s timeout.
    fn default() -> Self {
        Self::with_election_timeout(Duration::from_secs(1))
    }
}

/// What a gate is made of.
#[derive(Debug)]
pub struct Parts<P, I, L, A, R> {
    /// Hands encoded requests to consensus.
    pub proposer: P,
    /// The applied and committed indexes.
    pub indexes: I,
    /// Leadership and connectivity, for classifying timeouts.
    pub leadership: L,
    /// Who is calling.
    pub auth: A,
    /// Request IDs.
    pub ids: Arc<Generator>,
    /// Where the apply loop hands back results, by request ID.
    pub wait: Wait<R>,
}

/// etcd's `processInternalRaftRequestOnce`: see the crate docs for the steps.
///
/// `R` is what the apply loop passes to [`Wait::trigger`] for a request: typically
/// the response or the apply error. The gate is `Send + Sync` when its parts are, and
/// shared by all request handlers.
pub struct Gate<P, I, L, A, R> {
    parts: Parts<P, I, L, A, R>,
    config: Config,
    shutdown: CancellationToken,
    metrics: Metrics,
}

/// How a proposal's wait ended.
enum Ended<T> {
    Done(T),
    Deadline,
    Canceled,
    Stopped,
}

impl<P, I, L, A, R> Gate<P, I, L, A, R>
where
    P: Proposer,
    I: IndexSource,
    L: Leadership,
    A: AuthSource,
    R: Send,
{
    /// A gate over `parts`, recording metrics through the global meter provider.
    pub fn new(parts: Parts<P, I, L, A, R>, config: Config) -> Self {
        Self::with_meter(parts, config, &opentelemetry::global::meter("cairn-proposal"))
    }

    /// A gate over `parts`, recording metrics through `meter`.
    pub fn with_meter(parts: Parts<P, I, L, A, R>, config: Config, meter: &Meter) -> Self {
        Self { parts, config, shutdown: CancellationToken::new(), metrics: Metrics::new(meter) }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The parts, for the server to reach the same indexes, waiters and IDs.
    pub fn parts(&self) -> &Parts<P, I, L, A, R> {
        &self.parts
    }

    /// Fails every request in the gate, and every later one, with
    /// [`Error::Stopped`].
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    /// Proposes `request` for a caller who sent `metadata`, and returns what the apply
    /// loop hands back for it.
    ///
    /// # Errors
    ///
    /// See [`Error`]; [`Gate::propose_with`] adds a deadline and cancellation.
    pub async fn propose<Q: Request>(&self, request: Q, metadata: &[(&str, &str)]) -> Result<R> {
        self.propose_with(request, metadata, None, std::future::pending()).await
    }

    /// [`Gate::propose`], bounded by the caller's `deadline` when it is sooner than
    /// the request timeout, and abandoned with [`Error::Canceled`] when `cancel`
    /// completes first.
    ///
    /// # Errors
    ///
    /// In etcd's order: [`Error::TooManyRequests`]; [`Error::Auth`] for an invalid
    /// token; [`Error::RequestTooLarge`]; [`Error::DuplicateRequestId`]; then the
    /// proposer's error, or on the deadline [`Error::TimeoutDueToLeaderFail`],
    /// [`Error::NoLeader`], [`Error::TimeoutDueToConnectionLost`] or
    /// [`Error::Timeout`]; [`Error::Canceled`]; [`Error::Stopped`].
    pub async fn propose_with<Q: Request>(
        &self,
        request: Q,
        metadata: &[(&str, &str)],
        deadline: Option<Instant>,
        cancel: impl Future<Output = ()>,
    ) -> Result<R> {
        let started = Instant::now();
        let kind = request.kind();
        let result = self.process(started, request, metadata, deadline, cancel).await;
        let outcome = match &result {
            Ok(_) => "success",
            Err(error) => error.outcome(),
        };
        self.metrics.observe(kind, outcome, started.elapsed().as_secs_f64());
        result
    }

    async fn process<Q: Request>(
        &self,
        start: Instant,
        mut request: Q,
        metadata: &[(&str, &str)],
        deadline: Option<Instant>,
        cancel: impl Future<Output = ()>,
    ) -> Result<R> {
        if self.shutdown.is_cancelled() {
            return Err(Error::Stopped);
        }
        // 1. Refuse work while apply lags commit by more than the gap.
        let applied = self.parts.indexes.applied_index();
        let committed = self.parts.indexes.committed_index();
        let gap =
            if request.is_priority() { self.config.max_gap.saturating_mul(2) } else { self.config.max_gap };
        if committed > applied.saturating_add(gap) {
            return Err(Error::TooManyRequests);
        }

        // 2. Stamp the header; an Authenticate request carries no caller identity.
        let mut header = Header { id: self.parts.ids.next(), ..Header::default() };
        if !request.is_authenticate()
            && let Some(info) = self.parts.auth.auth_info(metadata)?
        {
            header.username = info.username;
            header.auth_revision = info.revision;
        }
        let header_id = header.id;
        request.set_header(header);

        // 3. Size.
        let data = request.encode();
        if data.len() > self.config.max_request_bytes {
            return Err(Error::RequestTooLarge { size: data.len(), limit: self.config.max_request_bytes });
        }

        // 4. Register the waiter; it unregisters itself when dropped on any path below.
        let wait_id = match request.legacy_id() {
            0 => header_id,
            legacy => legacy,
        };
        let waiter = self.parts.wait.register(wait_id).map_err(|_| Error::DuplicateRequestId(wait_id))?;

        // 5. Propose under the timeout, or the caller's deadline if sooner. The clock
        //    was read on entry: the few microseconds since make no difference to the
        //    classification of a timeout.
        let timeout = start + self.config.request_timeout;
        let deadline = deadline.map_or(timeout, |caller| caller.min(timeout));
        let mut cancel = std::pin::pin!(cancel);
        match self.until_done(self.parts.proposer.propose(data), deadline, cancel.as_mut()).await {
            Ended::Done(Ok(())) => {}
            Ended::Done(Err(error)) => return Err(self.failed(error)),
            Ended::Deadline => return Err(self.failed(self.classify_timeout(start))),
            Ended::Canceled => return Err(self.failed(Error::Canceled)),
            Ended::Stopped => return Err(Error::Stopped),
        }

        // 6. Await the applied result.
        let _pending = PendingGuard::new(&self.metrics.pending);
        match self.until_done(waiter, deadline, cancel.as_mut()).await {
            Ended::Done(Ok(result)) => Ok(result),
            // A closed registry means the server is going away.
            Ended::Done(Err(_)) | Ended::Stopped => Err(Error::Stopped),
            Ended::Deadline => Err(self.failed(self.classify_timeout(start))),
            Ended::Canceled => Err(self.failed(Error::Canceled)),
        }
    }

    /// Runs `work` until it completes, the deadline passes, the caller cancels or the
    /// gate stops. Work that is ready at once wins without registering with the timer,
    /// the shutdown signal or the caller's cancellation.
    async fn until_done<T>(
        &self,
        work: impl Future<Output = T>,
        deadline: Instant,
        cancel: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Ended<T> {
        tokio::select! {
            biased;
            done = work => Ended::Done(done),
            () = self.shutdown.cancelled() => Ended::Stopped,
            () = cancel => Ended::Canceled,
            () = tokio::time::sleep_until(deadline) => Ended::Deadline,
        }
    }

    /// Counts a failed proposal as etcd does (propose errors, timeouts and
    /// cancellations) and passes the error on.
    fn failed(&self, error: Error) -> Error {
        self.metrics.failed.add(1, &[]);
        error
    }

    /// etcd's `parseProposeCtxErr` for a deadline, for a proposal made at `start`.
    fn classify_timeout(&self, start: Instant) -> Error {
        let leadership = &self.parts.leadership;
        if let Some(elected) = leadership.leader_elected_at() {
            let previous_lost = elected.checked_sub(2 * self.config.election_timeout);
            // An election window reaching back before this process began counts as open.
            if previous_lost.is_none_or(|lost| lost < start) && start < elected {
                return Error::TimeoutDueToLeaderFail;
            }
        }
        let connected_before_start =
            |peer| leadership.connected_since(peer).is_some_and(|since| since < start);
        match leadership.leader() {
            None => Error::NoLeader,
            Some(leader) if leader == leadership.member_id() => {
                let members = leadership.members();
                let me = leadership.member_id();
                let connected =
                    members.iter().filter(|&&member| member == me || connected_before_start(member)).count();
                if connected < members.len() / 2 + 1 {
                    Error::TimeoutDueToConnectionLost
                } else {
                    Error::Timeout
                }
            }
            Some(leader) if !connected_before_start(leader) => Error::TimeoutDueToConnectionLost,
            Some(_) => Error::Timeout,
        }
    }
}

impl<P, I, L, A, R> std::fmt::Debug for Gate<P, I, L, A, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("config", &self.config).finish_non_exhaustive()
    }
}
