//! etcd's watch protocol over the store, without a transport: the watchers of one
//! stream, what each create, cancel and progress request answers, the live changes
//! each watcher wants, and the catch-up of a watcher behind them from the change log,
//! a chunk at a time, so that a server can send each chunk's responses before it reads
//! the next one and a slow client holds at most what its outbound queue holds.
//!
//! Responses carry a header with the revision only; the server fills in the rest
//! (cluster and member IDs, raft term) as it sends them.

use std::collections::BTreeMap;

use cairn_api::etcdserverpb::watch_create_request::FilterType;
use cairn_api::etcdserverpb::{WatchCreateRequest, WatchResponse};
use cairn_api::mvccpb::Event;
use cairn_api::mvccpb::event::EventType;

use crate::requests::header;
use crate::{Batch, Error, KeySpan, Revisions};

/// Most bytes of events in a catch-up response, unless one revision alone is more.
const RESPONSE_BYTES: usize = 1024 * 1024;
/// Changes read from the log at a time while catching up.
pub const CATCH_UP_CHUNK: usize = 1000;

/// What a watch stream reads the store through.
pub trait WatchSource {
    /// The store's revisions now.
    fn revisions(&self) -> Result<Revisions, Error>;
    /// The changes in `span` from revision `from` on, at most [`CATCH_UP_CHUNK`] and
    /// ending between two revisions (as [`crate::events_since`]), with previous values
    /// when `prev_kv`; and the revisions of the snapshot they were read from.
    fn events_since(
        &self,
        span: KeySpan<'_>,
        from: u64,
        prev_kv: bool,
    ) -> Result<(Vec<(u64, Event)>, Revisions), Error>;
}

/// One watcher of a stream.
#[derive(Debug)]
struct Watcher {
    key: Vec<u8>,
    range_end: Vec<u8>,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    /// Whether responses over the size limit are split into fragments.
    fragment: bool,
    /// The next revision to deliver.
    next: u64,
}

impl Watcher {
    fn span(&self) -> KeySpan<'_> {
        KeySpan::new(&self.key, &self.range_end)
    }

    /// The events of one revision this watcher wants, as it wants them.
    fn select<'a>(&self, events: impl Iterator<Item = &'a Event>) -> Vec<Event> {
        let span = self.span();
        events
            .filter(|event| {
                let key = event.kv.as_ref().map(|kv| kv.key.as_slice()).unwrap_or_default();
                let put = event.r#type == EventType::Put as i32;
                let wanted = if put { !self.no_put } else { !self.no_delete };
                span.contains(key) && wanted
            })
            .map(|event| {
                let mut event = event.clone();
                if !self.prev_kv {
                    event.prev_kv = None;
                }
                event
            })
            .collect()
    }
}

/// etcd's cancellation of a watcher whose history was compacted: no reason text, the
/// compaction revision, and a header at revision 0.
fn compacted_response(watch_id: i64, compacted: u64) -> WatchResponse {
    WatchResponse {
        header: header(0),
        watch_id,
        canceled: true,
        compact_revision: compacted as i64,
        ..Default::default()
    }
}

/// The watchers of one stream.
#[derive(Debug)]
pub struct WatchStream {
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    /// The size from which a watcher that asked for fragments gets them.
    fragment_limit: usize,
}

/// Watchers still to be caught up from the log: what [`WatchStream::catch_up_step`]
/// works through, a chunk of the log at a time and one watcher's responses at a time.
#[derive(Debug, Default)]
#[must_use = "catch the watchers up with WatchStream::catch_up_step"]
pub struct CatchUp {
    ids: Vec<i64>,
    chunk: Option<Chunk>,
}

/// One read of the log, being handed out watcher by watcher.
#[derive(Debug)]
struct Chunk {
    events: Vec<(u64, Event)>,
    /// The watchers still to be served from it, with the revision each needs next.
    behind: std::vec::IntoIter<(i64, u64)>,
    /// Every watcher served from it has seen through this revision.
    seen_through: u64,
    /// The read saw every change up to now.
    complete: bool,
}

impl WatchStream {
    /// A stream without watchers; a watcher that asks for fragments gets responses
    /// of `fragment_limit` bytes or more split (the client's receive limit).
    pub fn new(fragment_limit: usize) -> Self {
        Self { watchers: BTreeMap::new(), next_id: 0, fragment_limit }
    }

    /// Answers a create request (its key range already checked for the caller's
    /// read permission) into `out`: created, or refused for a duplicate ID, or
    /// cancelled at once for a negative start revision (history below the
    /// compaction revision, -1 before the first). A created watcher starting in the
    /// past must then be caught up with the returned [`CatchUp`].
    pub fn create(
        &mut self,
        source: &impl WatchSource,
        create: WatchCreateRequest,
        out: &mut Vec<WatchResponse>,
    ) -> Result<CatchUp, Error> {
        let revisions = source.revisions()?;
        let id = if create.watch_id > 0 {
            if self.watchers.contains_key(&create.watch_id) {
                out.push(refusal(
                    create.watch_id,
                    revisions.current,
                    "mvcc: duplicate watch ID provided on the WatchStream",
                ));
                return Ok(CatchUp::default());
            }
            create.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        let start = u64::try_from(create.start_revision).unwrap_or(0);
        let watcher = Watcher {
            key: create.key,
            range_end: create.range_end,
            prev_kv: create.prev_kv,
            no_put: create.filters.contains(&(FilterType::Noput as i32)),
            no_delete: create.filters.contains(&(FilterType::Nodelete as i32)),
            progress_notify: create.progress_notify,
            fragment: create.fragment,
            next: if start == 0 { revisions.current + 1 } else { start },
        };
        out.push(WatchResponse {
            header: header(revisions.current),
            watch_id: id,
            created: true,
            ..Default::default()
        });
        if create.start_revision < 0 {
            // etcd's watchable store takes a negative start as history below its
            // compaction revision (-1 before the first compaction): cancelled at once.
            let mut response = compacted_response(id, revisions.compacted);
            if revisions.compacted == 0 {
                response.compact_revision = -1;
            }
            out.push(response);
            return Ok(CatchUp::default());
        }
        // A start before the compaction revision is cancelled by the catch-up.
        self.watchers.insert(id, watcher);
        Ok(CatchUp { ids: vec![id], chunk: None })
    }

    /// Cancels watcher `watch_id`: the answer, at revision `current`, or nothing for
    /// an ID this stream does not have (as etcd ignores it).
    pub fn cancel(&mut self, watch_id: i64, current: u64) -> Option<WatchResponse> {
        self.watchers.remove(&watch_id)?;
        Some(WatchResponse { header: header(current), watch_id, canceled: true, ..Default::default() })
    }

    /// The answer to a progress request, with the store at `current`: the revision
    /// through which every change the watchers want has been delivered.
    pub fn progress(&self, current: u64) -> WatchResponse {
        let revision = sent_through(self.watchers.values(), current);
        WatchResponse { header: header(revision), watch_id: -1, ..Default::default() }
    }

    /// The periodic progress notifications of the watchers that asked for them.
    pub fn notify_progress(&self, current: u64) -> Vec<WatchResponse> {
        self.watchers
            .iter()
            .filter(|(_, watcher)| watcher.progress_notify)
            .map(|(&watch_id, watcher)| {
                let revision = sent_through(std::iter::once(watcher), current);
                WatchResponse { header: header(revision), watch_id, ..Default::default() }
            })
            .collect()
    }

    /// The watchers that have not seen the revisions before `revision`: those a
    /// published batch finds behind (after a snapshot from the leader, say), to catch
    /// up before [`WatchStream::deliver`].
    pub fn behind(&self, revision: u64) -> CatchUp {
        let ids = self.watchers.iter().filter(|(_, watcher)| watcher.next < revision).map(|(id, _)| *id);
        CatchUp { ids: ids.collect(), chunk: None }
    }

    /// Every watcher: for a stream that fell behind the live feed.
    pub fn all(&self) -> CatchUp {
        CatchUp { ids: self.watchers.keys().copied().collect(), chunk: None }
    }

    /// Delivers one published revision to every watcher that has seen every revision
    /// before it. A watcher still behind it is left for a catch-up
    /// ([`WatchStream::behind`]), which reads this revision from the log too.
    pub fn deliver(&mut self, batch: &Batch) -> Vec<WatchResponse> {
        let mut responses = Vec::new();
        for (&watch_id, watcher) in &mut self.watchers {
            if batch.revision != watcher.next {
                continue;
            }
            let events = watcher.select(batch.events.iter());
            watcher.next = batch.revision + 1;
            if !events.is_empty() {
                let response =
                    WatchResponse { header: header(batch.revision), watch_id, events, ..Default::default() };
                push_events(&mut responses, response, watcher.fragment, self.fragment_limit);
            }
        }
        responses
    }

    /// One step of a catch-up: the responses of one watcher in `pending` from the
    /// current chunk of the log, reading the next chunk (one read for all of them,
    /// from the earliest revision any needs, as etcd syncs its unsynced watchers as a
    /// group) when the current one is done; `None` once every watcher has caught up.
    /// Sending each step's responses before the next step holds at most one watcher's
    /// share of a chunk in memory. A watcher whose next revision a compaction removed
    /// is cancelled with the compaction revision: its history would have holes, so its
    /// client must list again.
    pub fn catch_up_step(
        &mut self,
        source: &impl WatchSource,
        pending: &mut CatchUp,
    ) -> Result<Option<Vec<WatchResponse>>, Error> {
        loop {
            let Some(chunk) = &mut pending.chunk else {
                if pending.ids.is_empty() {
                    return Ok(None);
                }
                return self.read_chunk(source, pending).map(Some);
            };
            let Some((watch_id, next)) = chunk.behind.next() else {
                let complete = chunk.complete;
                pending.chunk = None;
                if complete {
                    pending.ids.clear();
                }
                continue;
            };
            let Some(watcher) = self.watchers.get_mut(&watch_id) else { continue };
            // A watcher's events of the whole chunk go out together, as etcd's
            // syncWatchers batches a catching-up watcher's events.
            let unseen = chunk.events.iter().filter(|(at, _)| *at >= next).map(|(_, event)| event);
            let mut responses = Vec::new();
            for (revision, events) in in_responses(watcher.select(unseen)) {
                let response =
                    WatchResponse { header: header(revision), watch_id, events, ..Default::default() };
                push_events(&mut responses, response, watcher.fragment, self.fragment_limit);
            }
            watcher.next = watcher.next.max(chunk.seen_through + 1);
            return Ok(Some(responses));
        }
    }

    /// Reads the next chunk of the log for the watchers in `pending`, answering the
    /// cancellations of those a compaction left behind.
    fn read_chunk(
        &mut self,
        source: &impl WatchSource,
        pending: &mut CatchUp,
    ) -> Result<Vec<WatchResponse>, Error> {
        pending.ids.retain(|id| self.watchers.contains_key(id));
        let mut behind: Vec<(i64, u64)> =
            pending.ids.iter().map(|id| (*id, self.watchers[id].next)).collect();
        let Some(from) = behind.iter().map(|(_, next)| *next).min() else {
            pending.ids.clear();
            return Ok(Vec::new());
        };
        let (events, revisions) = match pending.ids.as_slice() {
            [id] => {
                let watcher = &self.watchers[id];
                source.events_since(watcher.span(), from, watcher.prev_kv)?
            }
            _ => {
                let prev_kv = behind.iter().any(|(id, _)| self.watchers[id].prev_kv);
                source.events_since(KeySpan::From(b""), from, prev_kv)?
            }
        };
        let mut cancelled = Vec::new();
        for (watch_id, _) in behind.extract_if(.., |(_, next)| *next < revisions.compacted) {
            self.watchers.remove(&watch_id);
            cancelled.push(compacted_response(watch_id, revisions.compacted));
        }
        // A short read saw every change up to its snapshot's current revision.
        let complete = events.len() < CATCH_UP_CHUNK;
        let seen_through = match events.last() {
            Some((last, _)) if !complete => *last,
            _ => revisions.current,
        };
        pending.chunk = Some(Chunk { events, behind: behind.into_iter(), seen_through, complete });
        Ok(cancelled)
    }
}

fn refusal(watch_id: i64, current: u64, reason: &str) -> WatchResponse {
    WatchResponse {
        header: header(current),
        watch_id,
        created: true,
        canceled: true,
        cancel_reason: reason.to_owned(),
        ..Default::default()
    }
}

/// A create request refused before it reached a stream (for want of permission): the
/// answer at revision `current`, with `reason`.
pub fn refused(current: u64, reason: &str) -> WatchResponse {
    refusal(-1, current, reason)
}

fn push_events(out: &mut Vec<WatchResponse>, response: WatchResponse, fragment: bool, limit: usize) {
    if fragment {
        out.extend(fragments(response, limit));
    } else {
        out.push(response);
    }
}

/// etcd's `sendFragments`: a response of at least `limit` bytes with two events or
/// more is split into responses of as many events as stay under `limit` (at least
/// one each), all but the last marked `fragment`, for clients whose message limit
/// a large revision would pass.
fn fragments(response: WatchResponse, limit: usize) -> Vec<WatchResponse> {
    use prost::Message as _;
    if response.events.len() < 2 || response.encoded_len() < limit {
        return vec![response];
    }
    let mut parts = Vec::new();
    let mut events = response.events.into_iter().peekable();
    let empty = WatchResponse { events: Vec::new(), fragment: true, ..response };
    while events.peek().is_some() {
        let mut part = empty.clone();
        while let Some(event) = events
            .next_if(|event| part.events.is_empty() || part.encoded_len() + event.encoded_len() + 8 < limit)
        {
            part.events.push(event);
        }
        part.fragment = events.peek().is_some();
        parts.push(part);
    }
    parts
}

/// The revision of a change.
fn revision_of(event: &Event) -> u64 {
    event.kv.as_ref().map_or(0, |kv| u64::try_from(kv.mod_revision).unwrap_or(0))
}

/// `events` (in revision order) cut into responses of whole revisions holding at
/// most [`RESPONSE_BYTES`] (clients take 4 MiB by default), unless one revision alone
/// holds more; each with the revision of its last event.
fn in_responses(events: Vec<Event>) -> Vec<(u64, Vec<Event>)> {
    let mut responses: Vec<(u64, Vec<Event>)> = Vec::new();
    let mut bytes = 0;
    let mut events = events.into_iter().peekable();
    while let Some(first) = events.next() {
        let revision = revision_of(&first);
        let mut whole = vec![first];
        while let Some(event) = events.next_if(|event| revision_of(event) == revision) {
            whole.push(event);
        }
        let whole_bytes: usize = whole.iter().map(prost::Message::encoded_len).sum();
        match responses.last_mut() {
            Some((last, batch)) if bytes + whole_bytes <= RESPONSE_BYTES => {
                *last = revision;
                batch.extend(whole);
                bytes += whole_bytes;
            }
            _ => {
                responses.push((revision, whole));
                bytes = whole_bytes;
            }
        }
    }
    responses
}

/// The revision through which every change `watchers` want has been delivered
/// (`current` for none): what a progress notification may promise. Changes
/// published but not yet delivered are not covered, and a client resuming after the
/// promised revision must not miss them.
fn sent_through<'a>(watchers: impl Iterator<Item = &'a Watcher>, current: u64) -> u64 {
    watchers.map(|watcher| watcher.next.saturating_sub(1)).min().unwrap_or(current).min(current)
}
