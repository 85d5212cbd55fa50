//! etcd's watch protocol on one stream, over a log kept in memory.

use std::cell::Cell;

use cairn_api::etcdserverpb::watch_create_request::FilterType;
use cairn_api::etcdserverpb::{WatchCreateRequest, WatchResponse};
use cairn_api::mvccpb::event::EventType;
use cairn_api::mvccpb::{Event, KeyValue};
use cairn_mvcc::watch::{CATCH_UP_CHUNK, WatchSource, WatchStream};
use cairn_mvcc::{Batch, Error, KeySpan, Revisions};

/// A change log: one put of `k<n % 3>` per revision from 2 on.
struct Log {
    revisions: Cell<Revisions>,
}

fn event(revision: u64) -> Event {
    let kv = KeyValue {
        key: format!("k{}", revision % 3).into_bytes(),
        value: vec![7; 100],
        mod_revision: revision as i64,
        ..KeyValue::default()
    };
    Event { r#type: EventType::Put as i32, kv: Some(kv), prev_kv: Some(KeyValue::default()) }
}

impl WatchSource for Log {
    fn revisions(&self) -> Result<Revisions, Error> {
        Ok(self.revisions.get())
    }

    fn events_since(
        &self,
        span: KeySpan<'_>,
        from: u64,
        _: bool,
    ) -> Result<(Vec<(u64, Event)>, Revisions), Error> {
        let revisions = self.revisions.get();
        let events = (from.max(2)..=revisions.current)
            .map(|revision| (revision, event(revision)))
            .filter(|(_, event)| span.contains(&event.kv.as_ref().unwrap().key))
            .take(CATCH_UP_CHUNK)
            .collect();
        Ok((events, revisions))
    }
}

fn log(current: u64, compacted: u64) -> Log {
    Log { revisions: Cell::new(Revisions { current, compacted }) }
}

fn create(key: &str, start_revision: i64) -> WatchCreateRequest {
    WatchCreateRequest { key: key.into(), start_revision, ..WatchCreateRequest::default() }
}

fn revision(response: &WatchResponse) -> i64 {
    response.header.as_ref().unwrap().revision
}

/// Every response of a whole catch-up.
fn catch_up_all(
    stream: &mut WatchStream,
    log: &Log,
    mut pending: cairn_mvcc::watch::CatchUp,
) -> Vec<WatchResponse> {
    let mut all = Vec::new();
    while let Some(responses) = stream.catch_up_step(log, &mut pending).unwrap() {
        all.extend(responses);
    }
    all
}

#[test]
fn a_watcher_from_the_past_catches_up_then_follows_the_live_feed() {
    let log = log(3_000, 0);
    let mut stream = WatchStream::new(usize::MAX);
    let mut created = Vec::new();
    let pending = stream.create(&log, create("k1", 2), &mut created).unwrap();
    assert!(created[0].created && revision(&created[0]) == 3_000);
    let caught = catch_up_all(&mut stream, &log, pending);
    let revisions: Vec<i64> =
        caught.iter().flat_map(|r| &r.events).map(|e| e.kv.as_ref().unwrap().mod_revision).collect();
    assert_eq!(
        revisions,
        (2..=3_000).filter(|r| r % 3 == 1).collect::<Vec<_>>(),
        "every change, once, in order"
    );
    assert!(caught.iter().all(|r| r.events.iter().all(|e| e.prev_kv.is_none())), "no prev_kv unless asked");

    // Live: a batch already seen is skipped, the next one delivered.
    assert!(stream.deliver(&Batch { revision: 3_000, events: vec![event(2_998)] }).is_empty());
    let live = stream.deliver(&Batch { revision: 3_001, events: vec![event(3_001)] });
    assert_eq!(live.len(), 1);
    assert_eq!(revision(&live[0]), 3_001);
    assert_eq!(stream.progress(3_001).header.unwrap().revision, 3_001);
}

#[test]
fn history_below_the_compaction_cancels_with_the_compaction_revision() {
    let log = log(100, 50);
    let mut stream = WatchStream::new(usize::MAX);
    let mut out = Vec::new();
    let pending = stream.create(&log, create("k1", 10), &mut out).unwrap();
    let caught = catch_up_all(&mut stream, &log, pending);
    assert_eq!((caught[0].canceled, caught[0].compact_revision, revision(&caught[0])), (true, 50, 0));
    assert!(stream.cancel(caught[0].watch_id, 100).is_none(), "gone");

    let mut out = Vec::new();
    let before_any = self::log(5, 0);
    let _ = stream.create(&before_any, create("k1", -1), &mut out).unwrap();
    assert_eq!(
        (out[1].canceled, out[1].compact_revision),
        (true, -1),
        "a negative start, before any compaction"
    );
}

#[test]
fn ids_filters_and_cancels_are_etcds() {
    let log = log(10, 0);
    let mut stream = WatchStream::new(usize::MAX);
    let mut out = Vec::new();
    let no_put =
        WatchCreateRequest { filters: vec![FilterType::Noput as i32], watch_id: 7, ..create("k1", 0) };
    let _ = stream.create(&log, no_put.clone(), &mut out).unwrap();
    let _ = stream.create(&log, no_put, &mut out).unwrap();
    assert_eq!(out[1].cancel_reason, "mvcc: duplicate watch ID provided on the WatchStream");
    let _ = stream.create(&log, create("k2", 0), &mut out).unwrap();
    assert_eq!(out[2].watch_id, 0, "IDs are given from 0");
    assert!(
        stream.deliver(&Batch { revision: 11, events: vec![event(10)] }).is_empty(),
        "k1 puts filtered out"
    );
    assert_eq!(stream.cancel(7, 11).unwrap().watch_id, 7);
    assert!(stream.cancel(7, 11).is_none(), "an unknown ID is ignored");
}

#[test]
fn a_large_revision_goes_in_fragments_to_a_watcher_that_asked() {
    let log = log(1, 0);
    let mut stream = WatchStream::new(2_000);
    let mut out = Vec::new();
    let fragmenting = WatchCreateRequest { fragment: true, ..create("k", 0) };
    let _ = stream
        .create(&log, WatchCreateRequest { range_end: b"l".to_vec(), ..fragmenting }, &mut out)
        .unwrap();
    let events: Vec<Event> = (0..60)
        .map(|n| event(2 + 3 * n))
        .map(|mut e| {
            e.kv.as_mut().unwrap().mod_revision = 2;
            e
        })
        .collect();
    let parts = stream.deliver(&Batch { revision: 2, events });
    assert!(parts.len() > 1);
    assert!(parts[..parts.len() - 1].iter().all(|p| p.fragment) && !parts.last().unwrap().fragment);
    assert_eq!(parts.iter().map(|p| p.events.len()).sum::<usize>(), 60);
}

/// A store that cannot be read.
struct Broken;

impl WatchSource for Broken {
    fn revisions(&self) -> Result<Revisions, Error> {
        Ok(Revisions { current: 10, compacted: 0 })
    }

    fn events_since(&self, _: KeySpan<'_>, _: u64, _: bool) -> Result<(Vec<(u64, Event)>, Revisions), Error> {
        Err(Error::Corrupt("kv"))
    }
}

#[test]
fn a_store_that_cannot_be_read_fails_the_catch_up_and_a_watcher_behind_is_not_skipped() {
    let mut stream = WatchStream::new(usize::MAX);
    let mut out = Vec::new();
    let mut pending = stream.create(&Broken, create("k1", 2), &mut out).unwrap();
    assert_eq!(stream.catch_up_step(&Broken, &mut pending).unwrap_err(), Error::Corrupt("kv"));
    // Its next revision is still 2: a live batch at 11 leaves it to a catch-up.
    assert!(stream.deliver(&Batch { revision: 11, events: vec![event(10)] }).is_empty());
    let behind = stream.behind(11);
    let caught = catch_up_all(&mut stream, &log(11, 0), behind);
    assert_eq!(caught.iter().map(|r| r.events.len()).sum::<usize>(), (2..=11).filter(|r| r % 3 == 1).count());
}
