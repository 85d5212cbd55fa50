use std::collections::BTreeMap;
use std::sync::Arc;

use etcd_client::{EventType, WatchOptions, WatchStream};

use crate::support::Cairn;

const KEYS: usize = 10_000;
const WATCHERS_ON_ONE_STREAM: usize = 1_000;
const STREAMS: usize = 100;
const WRITERS: usize = 32;

fn key(n: usize) -> String {
    format!("key/{n:05}")
}

/// Reads `stream` until every watcher in `expected` (watch ID to how many keys it
/// watches) has seen that many events; returns each watcher's events as
/// `(key, mod_revision)` in arrival order.
async fn collect(
    stream: &mut WatchStream,
    expected: &BTreeMap<i64, usize>,
) -> BTreeMap<i64, Vec<(String, i64)>> {
    let mut seen: BTreeMap<i64, Vec<(String, i64)>> = expected.keys().map(|id| (*id, Vec::new())).collect();
    let mut complete = 0;
    while complete < expected.len() {
        let response = tokio::time::timeout(std::time::Duration::from_secs(60), stream.message())
            .await
            .expect("events arrive in time")
            .unwrap()
            .expect("the stream stays open");
        assert!(!response.canceled(), "a watcher was cancelled: {}", response.cancel_reason());
        let id = response.watch_id();
        for event in response.events() {
            assert_eq!(event.event_type(), EventType::Put);
            let kv = event.kv().unwrap();
            let list = seen.get_mut(&id).expect("a known watch ID");
            list.push((kv.key_str().unwrap().to_owned(), kv.mod_revision()));
            if list.len() == expected[&id] {
                complete += 1;
            }
        }
    }
    seen
}

/// Each watcher saw exactly its keys, once each, in revision order.
fn check(seen: &[(String, i64)], first: usize, count: usize) {
    let mut keys: Vec<&str> = seen.iter().map(|(key, _)| key.as_str()).collect();
    assert!(seen.windows(2).all(|pair| pair[0].1 < pair[1].1), "events in revision order");
    keys.sort_unstable();
    let expected: Vec<String> = (first..first + count).map(key).collect();
    assert_eq!(keys, expected.iter().map(String::as_str).collect::<Vec<_>>(), "exactly its keys, each once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_watchers_on_one_stream_and_a_hundred_streams_see_exactly_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let mut client = cairn.client().await;
    let start = client.get("key/", None).await.unwrap().header().unwrap().revision() + 1;

    // One stream, a thousand watchers of ten keys each.
    let per_watcher = KEYS / WATCHERS_ON_ONE_STREAM;
    let range = |first: usize, count: usize| {
        WatchOptions::new().with_range(key(first + count)).with_start_revision(start)
    };
    let mut shared_stream = client.watch(key(0), Some(range(0, per_watcher))).await.unwrap();
    for n in 1..WATCHERS_ON_ONE_STREAM {
        shared_stream.watch(key(n * per_watcher), Some(range(n * per_watcher, per_watcher))).await.unwrap();
    }
    // A hundred streams, one watcher of a hundred keys each.
    let per_stream = KEYS / STREAMS;
    let mut streams = Vec::new();
    for n in 0..STREAMS {
        let stream =
            client.watch(key(n * per_stream), Some(range(n * per_stream, per_stream))).await.unwrap();
        streams.push((n, stream));
    }

    // Ten thousand keys from concurrent writers.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (mut client, next) = (client.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= KEYS {
                        return;
                    }
                    client.put(key(n), "v", None).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }

    // The watch IDs of one stream are given out in creation order from 0.
    let expected: BTreeMap<i64, usize> =
        (0..WATCHERS_ON_ONE_STREAM as i64).map(|id| (id, per_watcher)).collect();
    let seen = collect(&mut shared_stream, &expected).await;
    for (id, events) in &seen {
        check(events, *id as usize * per_watcher, per_watcher);
    }
    for (n, mut stream) in streams {
        let seen = collect(&mut stream, &BTreeMap::from([(0, per_stream)])).await;
        check(&seen[&0], n * per_stream, per_stream);
    }
}
