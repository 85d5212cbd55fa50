//! `etcdserverpb.Watch`: many watchers on one bidirectional stream.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use cairn_api::etcdserverpb::watch_create_request::FilterType;
use cairn_api::etcdserverpb::watch_request::RequestUnion;
use cairn_api::etcdserverpb::watch_server::Watch;
use cairn_api::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse};
use cairn_api::mvccpb::Event;
use cairn_api::mvccpb::event::EventType;
use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tonic::{Request, Response, Status, Streaming};

use super::{Credentials, Service};
use crate::error::Error;
use crate::storage::mvcc::{self, KeySpan, Revisions};
use crate::watch::Batch;

/// Responses queued for a slow client before the stream stops reading changes (and
/// later catches up from disk).
const OUTBOUND: usize = 128;
/// Most bytes of events in a catch-up response, unless one revision alone is more.
const RESPONSE_BYTES: usize = 1024 * 1024;
/// Changes read from disk at a time while catching up.
const CATCH_UP_CHUNK: usize = 1000;

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Watch for Service {
    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        let credentials = self.credentials(&request).await?;
        let lost = self.leader_lost_signal(request.metadata());
        let inbound = request.into_inner();
        let (outbound, responses) = mpsc::channel(OUTBOUND);
        let stream = WatchStreamTask {
            service: self.clone(),
            credentials,
            outbound,
            watchers: BTreeMap::new(),
            next_id: 0,
        };
        tokio::spawn(stream.run(inbound, lost));
        let responses = futures::stream::unfold(responses, |mut responses| async move {
            responses.recv().await.map(|response| (response, responses))
        });
        Ok(Response::new(Box::pin(responses)))
    }
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
fn compacted_response(watch_id: i64, compacted: u64, header: Option<ResponseHeader>) -> WatchResponse {
    WatchResponse {
        header,
        watch_id,
        canceled: true,
        compact_revision: compacted as i64,
        ..Default::default()
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

struct WatchStreamTask {
    service: Service,
    credentials: Credentials,
    /// Responses, and the error that ends the stream.
    outbound: mpsc::Sender<Result<WatchResponse, Status>>,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
}

/// The stream ended: the client went away.
struct Gone;

impl WatchStreamTask {
    /// Serves the stream until the client goes away, or, for a stream that asked for
    /// a leader (`lost` is set), until this member has lost its leader: then the
    /// stream ends with `etcdserver: no leader`, as etcd's `monitorLeader` ends it,
    /// and the client opens it again where there is a leader.
    async fn run(mut self, mut inbound: Streaming<WatchRequest>, mut lost: Option<super::LeaderLoss>) {
        let mut live = self.service.hub.subscribe();
        let mut progress = tokio::time::interval(self.service.config.watch_progress_notify_interval);
        progress.tick().await;
        loop {
            let step = tokio::select! {
                request = inbound.message() => match request {
                    Ok(Some(request)) => self.handle(request).await,
                    Ok(None) | Err(_) => return,
                },
                batch = live.recv() => match batch {
                    Ok(batch) => self.deliver(&batch).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Fell behind the live changes: subscribe again first, so that
                        // nothing is missed, then read what was missed from disk.
                        live = self.service.hub.subscribe();
                        self.catch_up_all().await
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = progress.tick() => self.notify_progress().await,
                () = super::leader_lost(&mut lost) => {
                    let no_leader = Error::Proposal(cairn_proposal::Error::NoLeader);
                    let _ = self.outbound.send(Err(no_leader.into())).await;
                    return;
                }
            };
            if step.is_err() {
                return;
            }
        }
    }

    fn header(&self, revision: u64) -> Option<ResponseHeader> {
        let mut header = Some(ResponseHeader { revision: revision as i64, ..ResponseHeader::default() });
        self.service.fill(&mut header);
        header
    }

    async fn send(&self, response: WatchResponse) -> Result<(), Gone> {
        self.outbound.send(Ok(response)).await.map_err(|_| Gone)
    }

    /// Sends a response with events, in fragments when the watcher asked for them and
    /// it is over the limit.
    async fn send_events(&self, response: WatchResponse, fragment: bool) -> Result<(), Gone> {
        if !fragment {
            return self.send(response).await;
        }
        let limit = self.service.config.max_request_bytes + super::GRPC_OVERHEAD_BYTES;
        for part in fragments(response, limit) {
            self.send(part).await?;
        }
        Ok(())
    }

    fn current_revision(&self) -> u64 {
        self.service.current_revision().unwrap_or_default()
    }

    async fn handle(&mut self, request: WatchRequest) -> Result<(), Gone> {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                // As etcd: cancelling an ID this stream does not have is ignored.
                if self.watchers.remove(&cancel.watch_id).is_none() {
                    return Ok(());
                }
                let header = self.header(self.current_revision());
                self.send(WatchResponse {
                    header,
                    watch_id: cancel.watch_id,
                    canceled: true,
                    ..Default::default()
                })
                .await
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                let current = self.current_revision();
                let header = self.header(sent_through(self.watchers.values(), current));
                self.send(WatchResponse { header, watch_id: -1, ..Default::default() }).await
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, create: WatchCreateRequest) -> Result<(), Gone> {
        let current = self.current_revision();
        let refuse = |watch_id: i64, reason: String| WatchResponse {
            watch_id,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..Default::default()
        };
        if let Err(status) = self.service.check_read(&self.credentials, &create.key, &create.range_end) {
            let response =
                WatchResponse { header: self.header(current), ..refuse(-1, status.message().to_owned()) };
            return self.send(response).await;
        }
        let id = if create.watch_id > 0 {
            if self.watchers.contains_key(&create.watch_id) {
                let reason = "mvcc: duplicate watch ID provided on the WatchStream".to_owned();
                let response =
                    WatchResponse { header: self.header(current), ..refuse(create.watch_id, reason) };
                return self.send(response).await;
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
            next: if start == 0 { current + 1 } else { start },
        };
        let header = self.header(current);
        self.send(WatchResponse { header, watch_id: id, created: true, ..Default::default() }).await?;
        if create.start_revision < 0 {
            // etcd's watchable store takes a negative start as history below its
            // compaction revision (-1 before the first compaction): cancelled at once.
            let compacted = self.service.view(|_, _, revisions| Ok(revisions.compacted)).unwrap_or(0);
            let mut response = compacted_response(id, compacted, self.header(0));
            if compacted == 0 {
                response.compact_revision = -1;
            }
            return self.send(response).await;
        }
        // A start before the compaction revision is cancelled by the catch-up below.
        self.watchers.insert(id, watcher);
        self.catch_up(&[id]).await
    }

    /// Delivers one published revision to every watcher that has not seen it. A
    /// watcher that missed revisions before it (after a snapshot from the leader)
    /// reads them from disk first.
    async fn deliver(&mut self, batch: &Arc<Batch>) -> Result<(), Gone> {
        let behind: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(_, watcher)| watcher.next < batch.revision)
            .map(|(id, _)| *id)
            .collect();
        self.catch_up(&behind).await?;
        let mut responses = Vec::new();
        for (id, watcher) in &mut self.watchers {
            if batch.revision < watcher.next {
                continue;
            }
            let events = watcher.select(batch.events.iter());
            watcher.next = batch.revision + 1;
            if !events.is_empty() {
                responses.push((*id, events, watcher.fragment));
            }
        }
        for (watch_id, events, fragment) in responses {
            let header = self.header(batch.revision);
            self.send_events(WatchResponse { header, watch_id, events, ..Default::default() }, fragment)
                .await?;
        }
        Ok(())
    }

    async fn catch_up_all(&mut self) -> Result<(), Gone> {
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        self.catch_up(&ids).await
    }

    /// Reads the changes the watchers `ids` have not seen yet from disk, up to now:
    /// one read for all of them, from the earliest revision any of them needs (as
    /// etcd syncs its unsynced watchers as a group).
    async fn catch_up(&mut self, ids: &[i64]) -> Result<(), Gone> {
        loop {
            let behind: Vec<(i64, u64)> = ids
                .iter()
                .filter_map(|id| self.watchers.get(id).map(|watcher| (*id, watcher.next)))
                .collect();
            let Some(from) = behind.iter().map(|(_, next)| *next).min() else { return Ok(()) };
            let read = match ids {
                [id] => self
                    .watchers
                    .get(id)
                    .map(|watcher| self.service.events_since(watcher.span(), from, watcher.prev_kv)),
                _ => {
                    let prev_kv =
                        behind.iter().any(|(id, _)| self.watchers.get(id).is_some_and(|w| w.prev_kv));
                    Some(self.service.events_since(KeySpan::From(b""), from, prev_kv))
                }
            };
            let Some(Ok((events, revisions))) = read else { return Ok(()) };
            let current = revisions.current;
            // A watcher whose next revision a compaction removed would get a history
            // with holes (older versions and deletions gone): as etcd, it is cancelled
            // and told where history now starts, so that its client lists again.
            let mut behind = behind;
            for (watch_id, _) in behind.extract_if(.., |(_, next)| *next < revisions.compacted) {
                self.watchers.remove(&watch_id);
                self.send(compacted_response(watch_id, revisions.compacted, self.header(0))).await?;
            }
            // A short read saw every change up to its snapshot's current revision.
            let complete = events.len() < CATCH_UP_CHUNK;
            let seen_through = match events.last() {
                Some((last, _)) if !complete => *last,
                _ => current,
            };
            // A watcher's events of the whole chunk go out together, as etcd's
            // syncWatchers batches a catching-up watcher's events. Each response goes
            // out as soon as it is made, so a slow client holds at most the outbound
            // queue.
            for &(watch_id, next) in &behind {
                let Some(watcher) = self.watchers.get(&watch_id) else { continue };
                let unseen = events.iter().filter(|(at, _)| *at >= next).map(|(_, event)| event);
                let fragment = watcher.fragment;
                for (revision, events) in in_responses(watcher.select(unseen)) {
                    let header = self.header(revision);
                    let response = WatchResponse { header, watch_id, events, ..Default::default() };
                    self.send_events(response, fragment).await?;
                }
            }
            for (id, _) in &behind {
                if let Some(watcher) = self.watchers.get_mut(id) {
                    watcher.next = watcher.next.max(seen_through + 1);
                }
            }
            if complete {
                return Ok(());
            }
        }
    }

    async fn notify_progress(&mut self) -> Result<(), Gone> {
        let current = self.current_revision();
        let progress: Vec<(i64, u64)> = self
            .watchers
            .iter()
            .filter(|(_, watcher)| watcher.progress_notify)
            .map(|(id, watcher)| (*id, sent_through(std::iter::once(watcher), current)))
            .collect();
        for (watch_id, revision) in progress {
            self.send(WatchResponse { header: self.header(revision), watch_id, ..Default::default() })
                .await?;
        }
        Ok(())
    }
}

/// The revision through which every change `watchers` want has been sent to the
/// client (`current` for none): what a progress notification may promise. Changes
/// published but still queued for the stream are not sent yet, and a client resuming
/// after the promised revision must not miss them.
fn sent_through<'a>(watchers: impl Iterator<Item = &'a Watcher>, current: u64) -> u64 {
    watchers.map(|watcher| watcher.next.saturating_sub(1)).min().unwrap_or(current).min(current)
}

impl Service {
    /// The changes in `span` from revision `from` on, a chunk at a time, with the
    /// previous values when `prev_kv`; and the revisions of the snapshot they were
    /// read from (what is current, and what is compacted away).
    fn events_since(
        &self,
        span: KeySpan<'_>,
        from: u64,
        prev_kv: bool,
    ) -> Result<(Vec<(u64, Event)>, Revisions), Error> {
        let read = |kv: &_, index: &_, revisions: Revisions| {
            let events = mvcc::events_since(kv, index, span, from, CATCH_UP_CHUNK, prev_kv)?;
            Ok((events, revisions))
        };
        Ok(self.view(read)?)
    }
}

#[cfg(test)]
mod tests {
    use cairn_api::mvccpb::KeyValue;

    use super::*;

    fn event(revision: i64, bytes: usize) -> Event {
        let kv = KeyValue {
            key: b"k".to_vec(),
            mod_revision: revision,
            value: vec![0; bytes],
            ..Default::default()
        };
        Event { kv: Some(kv), ..Default::default() }
    }

    fn shape(responses: &[(u64, Vec<Event>)]) -> Vec<(u64, Vec<i64>)> {
        let revisions =
            |events: &Vec<Event>| events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision).collect();
        responses.iter().map(|(revision, events)| (*revision, revisions(events))).collect()
    }

    #[test]
    fn a_large_response_is_split_into_fragments_under_the_limit() {
        use prost::Message as _;
        let events = vec![event(5, 600), event(5, 600), event(5, 600), event(5, 10)];
        let response = WatchResponse { watch_id: 7, events, ..Default::default() };
        let whole = response.encoded_len();
        // Under the limit, or a single event, it goes as it is.
        assert_eq!(fragments(response.clone(), whole + 1), std::slice::from_ref(&response));
        let single = WatchResponse { events: vec![event(5, 5000)], ..Default::default() };
        assert_eq!(fragments(single.clone(), 100), [single]);
        let parts = fragments(response.clone(), 1300);
        let sizes: Vec<usize> = parts.iter().map(|part| part.events.len()).collect();
        assert_eq!(sizes, [2, 2]);
        assert!(parts.iter().all(|part| part.encoded_len() < 1300 && part.watch_id == 7));
        assert_eq!(parts.iter().map(|part| part.fragment).collect::<Vec<_>>(), [true, false]);
        let rejoined: Vec<Event> = parts.into_iter().flat_map(|part| part.events).collect();
        assert_eq!(rejoined, response.events);
        // A limit smaller than any event: one event per fragment.
        assert_eq!(fragments(response, 10).len(), 4);
    }

    #[test]
    fn responses_hold_whole_revisions_up_to_the_byte_limit() {
        let third = RESPONSE_BYTES / 3;
        // Revision 3 alone is over the limit; 2 would not fit after 1 with 3's bulk.
        let events =
            vec![event(1, third), event(2, third), event(2, 10), event(3, RESPONSE_BYTES), event(4, 10)];
        assert_eq!(shape(&in_responses(events)), [(2, vec![1, 2, 2]), (3, vec![3]), (4, vec![4])]);
        let small: Vec<Event> = (1..=100).map(|revision| event(revision, 100)).collect();
        assert_eq!(in_responses(small).len(), 1);
        assert!(in_responses(Vec::new()).is_empty());
    }
}
